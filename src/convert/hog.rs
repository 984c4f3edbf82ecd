//! Reads dlib's HOG frontal face detector, an `object_detector<scan_fhog_pyramid<pyramid_down<6>>>`
//! (dlib/image_processing/object_detector.h, scan_fhog_pyramid.h, box_overlap_testing.h).
//!
//! The file holds the scanner settings (cell size, padding, detection window, pyramid limits),
//! the non-max suppression thresholds and one linear weight vector per filter: 31 FHOG planes
//! of `fhog_height x fhog_width` weights followed by the detection threshold. dlib does not score
//! with these full filters: when it loads the detector it factors every plane's filter with an
//! SVD, drops singular values below `max(1e-4, 0.001 * largest)` and scores with the remaining
//! separable pairs (a column filter `u * sqrt(s)` and a row filter `v * sqrt(s)`). The
//! converter does that factoring once and stores the separable filters, zero-padded to the
//! largest rank, as `row_filters` `[filters, 31, rank, fhog_width]` and `col_filters`
//! `[filters, 31, rank, fhog_height]`, plus `thresholds` `[filters]` and the scalar settings.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::convert::dlib_format::DlibReader;
use crate::detect::fhog::PLANES;
use crate::error::FormatError;

type Result<T> = std::result::Result<T, FormatError>;

/// The `N` of the detector's `pyramid_down<N>`: part of the C++ type, not of the file.
pub const PYRAMID_DOWN: i64 = 6;

/// Parses the whole detector and returns its tensors.
pub fn read(reader: &mut DlibReader) -> Result<HashMap<String, Tensor>> {
    reader.expect_int(2, "object_detector version")?;
    reader.expect_int(1, "scan_fhog_pyramid version")?;
    // The scanner's cached feature pyramid: a dlib::array (max_size, size), empty when saved.
    reader.expect_int(0, "empty feature cache (max size)")?;
    reader.expect_int(0, "empty feature cache (size)")?;
    let cell_size = positive(reader, "cell size")?;
    let padding = reader.read_int()?;
    if padding < 0 {
        return Err(reader.error(format!("negative padding {padding}")));
    }
    let window_width = positive(reader, "detection window width")?;
    let window_height = positive(reader, "detection window height")?;
    let max_pyramid_levels = positive(reader, "maximum pyramid levels")?;
    let min_layer_width = positive(reader, "minimum pyramid layer width")?;
    let min_layer_height = positive(reader, "minimum pyramid layer height")?;
    let _nuclear_norm_strength = reader.read_f64()?;

    let (fhog_width, fhog_height) =
        fhog_window_size(window_width, window_height, cell_size, padding);
    let dims = (fhog_width * fhog_height) as usize * PLANES;
    reader.expect_int(dims as i64, "number of feature dimensions")?;

    let iou = reader.read_f64()?;
    let percent_covered = reader.read_f64()?;
    for (name, value) in [("IoU", iou), ("percent covered", percent_covered)] {
        if !(0.0..=1.0).contains(&value) {
            return Err(reader.error(format!("overlap {name} threshold {value} is not in [0, 1]")));
        }
    }

    let count = reader.read_usize()?;
    if count == 0 {
        return Err(reader.error("a detector without filters"));
    }
    let mut thresholds = Vec::with_capacity(count);
    let mut separable = Vec::with_capacity(count);
    for _ in 0..count {
        let weights = read_weight_vector(reader, dims + 1)?;
        thresholds.push(weights[dims]);
        let planes: Vec<SeparableFilter> = weights[..dims]
            .chunks_exact((fhog_width * fhog_height) as usize)
            .map(|plane| separate(plane, fhog_height as usize, fhog_width as usize))
            .collect();
        separable.push(planes);
    }

    let rank = separable
        .iter()
        .flatten()
        .map(|filter| filter.rows.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let (fw, fh) = (fhog_width as usize, fhog_height as usize);
    let mut row_filters = vec![0f32; count * PLANES * rank * fw];
    let mut col_filters = vec![0f32; count * PLANES * rank * fh];
    for (plane_index, filter) in separable.iter().flatten().enumerate() {
        for (k, (row, col)) in filter.rows.iter().zip(&filter.cols).enumerate() {
            let slot = plane_index * rank + k;
            row_filters[slot * fw..(slot + 1) * fw].copy_from_slice(row);
            col_filters[slot * fh..(slot + 1) * fh].copy_from_slice(col);
        }
    }

    let tensor_error =
        |error: candle_core::Error| reader.error(format!("building tensors: {error}"));
    let cpu = Device::Cpu;
    let mut tensors = HashMap::new();
    for (name, value) in [
        ("cell_size", cell_size),
        ("padding", padding),
        ("window_width", window_width),
        ("window_height", window_height),
        ("max_pyramid_levels", max_pyramid_levels),
        ("min_pyramid_layer_width", min_layer_width),
        ("min_pyramid_layer_height", min_layer_height),
        ("pyramid_down", PYRAMID_DOWN),
    ] {
        tensors.insert(
            name.to_string(),
            Tensor::new(value, &cpu).map_err(tensor_error)?,
        );
    }
    for (name, value) in [
        ("overlap_iou_threshold", iou),
        ("overlap_percent_covered_threshold", percent_covered),
    ] {
        tensors.insert(
            name.to_string(),
            Tensor::new(value, &cpu).map_err(tensor_error)?,
        );
    }
    tensors.insert(
        "thresholds".to_string(),
        Tensor::new(thresholds, &cpu).map_err(tensor_error)?,
    );
    tensors.insert(
        "row_filters".to_string(),
        Tensor::from_vec(row_filters, (count, PLANES, rank, fw), &cpu).map_err(tensor_error)?,
    );
    tensors.insert(
        "col_filters".to_string(),
        Tensor::from_vec(col_filters, (count, PLANES, rank, fh), &cpu).map_err(tensor_error)?,
    );
    Ok(tensors)
}

fn positive(reader: &mut DlibReader, what: &str) -> Result<i64> {
    let value = reader.read_int()?;
    if value > 0 {
        Ok(value)
    } else {
        Err(reader.error(format!("{what} must be positive, found {value}")))
    }
}

/// A `matrix<double,0,1>` of exactly `len` elements, in double precision.
fn read_weight_vector(reader: &mut DlibReader, len: usize) -> Result<Vec<f64>> {
    let start = reader.position();
    let rows = reader.read_int()?.unsigned_abs() as usize;
    let cols = reader.read_int()?.unsigned_abs() as usize;
    if rows != len || cols != 1 {
        return Err(FormatError::Unexpected {
            offset: start,
            expected: format!("a {len}x1 weight vector"),
            found: format!("{rows}x{cols}"),
        });
    }
    (0..len).map(|_| reader.read_f64()).collect()
}

/// The filter size in FHOG cells (width, height) of a detection window: dlib's
/// `compute_fhog_window_size`, i.e. the window centred on the origin mapped to FHOG
/// coordinates and grown by the padding.
pub fn fhog_window_size(
    window_width: i64,
    window_height: i64,
    cell_size: i64,
    padding: i64,
) -> (i64, i64) {
    // centered_rect(point(0,0), w, h), then image_to_fhog on both corners (C++ integer division).
    let to_fhog = |p: i64| (p - 1) / cell_size - 1;
    let span = |size: i64| {
        let first = -size / 2;
        let last = first + size - 1;
        to_fhog(last) - to_fhog(first) + 1 + 2 * padding
    };
    (span(window_width), span(window_height))
}

/// The separable pairs dlib keeps for one filter plane.
struct SeparableFilter {
    /// Row (horizontal) filters, `v * sqrt(s)`.
    rows: Vec<Vec<f32>>,
    /// Column (vertical) filters, `u * sqrt(s)`.
    cols: Vec<Vec<f32>>,
}

/// Factors a `height x width` filter as dlib's `build_fhog_filterbank` does: singular values
/// sorted in decreasing order, those below `max(1e-4, 0.001 * largest)` dropped.
fn separate(plane: &[f64], height: usize, width: usize) -> SeparableFilter {
    let (u, s, v) = svd(plane, height, width);
    let largest = s.iter().copied().fold(0.0, f64::max);
    let thresh = f64::max(1e-4, largest * 0.001);
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut filter = SeparableFilter {
        rows: Vec::new(),
        cols: Vec::new(),
    };
    for j in order.into_iter().filter(|&j| s[j] >= thresh) {
        let scale = s[j].sqrt();
        filter.cols.push(
            (0..height)
                .map(|r| (u[r * s.len() + j] * scale) as f32)
                .collect(),
        );
        filter.rows.push(
            (0..width)
                .map(|c| (v[c * s.len() + j] * scale) as f32)
                .collect(),
        );
    }
    filter
}

/// Singular value decomposition of a row-major `m x n` matrix by one-sided Jacobi rotations.
/// Returns `U` (`m x k`), the singular values (`k`) and `V` (`n x k`), with `k = n`; columns
/// of `U` for zero singular values are left unnormalised (they are never used).
fn svd(a: &[f64], m: usize, n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut u = a.to_vec();
    let mut v: Vec<f64> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for r in 0..m {
                    let (x, y) = (u[r * n + p], u[r * n + q]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for (matrix, rows) in [(&mut u, m), (&mut v, n)] {
                    for r in 0..rows {
                        let (x, y) = (matrix[r * n + p], matrix[r * n + q]);
                        matrix[r * n + p] = c * x - s * y;
                        matrix[r * n + q] = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let singular: Vec<f64> = (0..n)
        .map(|j| {
            (0..m)
                .map(|r| u[r * n + j] * u[r * n + j])
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    for (j, &sigma) in singular.iter().enumerate() {
        if sigma > 0.0 {
            for r in 0..m {
                u[r * n + j] /= sigma;
            }
        }
    }
    (u, singular, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhog_window_of_the_frontal_face_detector_is_10_by_10() {
        assert_eq!(fhog_window_size(80, 80, 8, 0), (10, 10));
        assert_eq!(fhog_window_size(64, 64, 8, 1), (10, 10));
    }

    #[test]
    fn svd_reconstructs_a_matrix_and_finds_its_rank() {
        // A rank-2 4x3 matrix: outer products of (1,2,3,4)x(1,0,-1) and (0,1,1,0)x(2,1,0).
        let a: Vec<f64> = (0..12)
            .map(|i| {
                let (r, c) = (i / 3, i % 3);
                let x = [1.0, 2.0, 3.0, 4.0][r] * [1.0, 0.0, -1.0][c];
                x + [0.0, 1.0, 1.0, 0.0][r] * [2.0, 1.0, 0.0][c]
            })
            .collect();
        let filter = separate(&a, 4, 3);
        assert_eq!(filter.rows.len(), 2);
        for r in 0..4 {
            for c in 0..3 {
                let sum: f64 = filter
                    .rows
                    .iter()
                    .zip(&filter.cols)
                    .map(|(row, col)| f64::from(row[c]) * f64::from(col[r]))
                    .sum();
                assert!((sum - a[r * 3 + c]).abs() < 1e-5, "({r},{c}): {sum}");
            }
        }
    }
}
