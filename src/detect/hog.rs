//! dlib's HOG frontal face detector (`get_frontal_face_detector()`, an
//! `object_detector<scan_fhog_pyramid<pyramid_down<6>>>`), as `face_recognition.face_locations`
//! runs it through dlib's Python binding.
//!
//! The image is first enlarged `upsample` times with `pyramid_up`. The scanner then builds a
//! `pyramid_down<6>` image pyramid until a level would be smaller than the minimum layer size,
//! extracts FHOG features per level ([`crate::detect::fhog`]) and slides each of
//! the detector's filters over them, the levels in parallel as soon as they are built. dlib
//! scores with the separable factorisation of every filter plane (see
//! [`crate::convert::hog`]): a row filter along each feature row, then a column filter down
//! each column, summed over planes and factors. Windows scoring at least the filter's threshold
//! become detections (confidence = score - threshold), mapped back to image rectangles; all
//! filters' detections are sorted by confidence and dlib's non-max suppression keeps those
//! that do not overlap a better one.
//!
//! The filtering has two implementations, chosen by the device:
//! - On the CPU, a separable filtering kernel in plain Rust does what dlib does: per filter and
//!   nonzero rank-1 term (305 in all), the row taps along the plane's rows, then the column taps
//!   down the result, added to the filter's scores, in bands of output rows filtered in
//!   parallel, with the outputs accumulated in vector registers (AVX2 when present). The
//!   matrix-product formulation below was limited by memory traffic and candle's per-op
//!   overhead on the CPU: on a 1200x900 photo at upsample 1 (2 cores) scoring took 570-690 ms
//!   of a 780 ms detection; the kernel does the same work in about 130 ms of one core (half
//!   that on two), so FHOG and the pyramid now dominate. Its scores differ from dlib's by at most 1e-6.
//! - On other devices (CUDA) the steps are matrix products: the row step multiplies every
//!   plane's row filters with the plane's horizontal windows, the column step multiplies the
//!   column filters with the row-filtered planes, one output per filter tap, and the taps are
//!   summed with their vertical offsets, in bands of rows to bound memory.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::sync::Arc;

use rayon::prelude::*;

use crate::detect::fhog::{self, extract_fhog};
use crate::detect::nms::BoxOverlap;
use crate::detect::pyramid::{self, PyramidDown, PyramidImage, rect_from_upsampled};
use crate::error::{Error, Result};
use crate::geometry::{DRect, Rect};
use crate::kernels::{self, Widths};
use crate::weights::Model;

/// Most filter output positions scored at once by the matrix products; larger levels are
/// scored in bands of rows.
const BAND_POSITIONS: usize = 16 * 1024;

/// Output rows per unit of parallel work of the CPU kernel.
const CPU_BAND_ROWS: usize = 64;

/// The detector: scanner settings, separable filters and non-max suppression thresholds.
pub struct HogDetector {
    cell_size: usize,
    /// Filter size in FHOG cells.
    filter_width: usize,
    filter_height: usize,
    /// Detection window size in FHOG cells (the filter without its padding).
    window_cells_width: usize,
    window_cells_height: usize,
    max_pyramid_levels: usize,
    min_layer_width: i64,
    min_layer_height: i64,
    pyramid: PyramidDown,
    overlap: BoxOverlap,
    /// Per filter: its threshold, row filters `[31, rank, filter_width]` and column filters
    /// arranged for the column step, `[filter_height, 31 * rank]`.
    filters: Vec<SeparableFilters>,
    device: Device,
    /// Whether the filters are scored by the CPU kernel rather than with tensors
    /// ([`crate::kernels::models_use_kernels`]).
    kernels: bool,
}

struct SeparableFilters {
    threshold: f64,
    rows: Tensor,
    cols: Tensor,
    /// The nonzero separable terms in dlib's order (plane, then rank), for the CPU kernel.
    terms: Vec<SeparableTerm>,
}

/// One rank-1 term of one filter plane: `row` along the feature rows, then `col` down the
/// columns.
struct SeparableTerm {
    plane: usize,
    row: Vec<f32>,
    col: Vec<f32>,
}

/// One detection of one filter before non-max suppression.
struct Candidate {
    confidence: f64,
    rect: Rect,
}

impl Model for HogDetector {
    /// Loads the tensors written by the converter (`weights/frontal_face_detector.safetensors`).
    fn load(vb: VarBuilder) -> Result<Self> {
        let device = vb.device().clone();
        let kernels = kernels::models_use_kernels(&device)?;
        let int = |name: &str| -> Result<i64> {
            Ok(vb
                .get_unchecked_dtype(name, DType::I64)?
                .to_scalar::<i64>()?)
        };
        let positive = |name: &str| -> Result<usize> {
            let value = int(name)?;
            usize::try_from(value)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| Error::Weights(format!("{name} must be positive, found {value}")))
        };
        let float = |name: &str| -> Result<f64> {
            Ok(vb
                .get_unchecked_dtype(name, DType::F64)?
                .to_scalar::<f64>()?)
        };

        let cell_size = positive("cell_size")?;
        let padding = usize::try_from(int("padding")?)
            .map_err(|_| Error::Weights("negative padding".to_string()))?;
        let pyramid_down = positive("pyramid_down")?;
        if pyramid_down < 4 {
            return Err(Error::Weights(format!(
                "pyramid_down<{pyramid_down}> is not supported (only N > 3)"
            )));
        }

        let row_filters = vb.get_unchecked_dtype("row_filters", DType::F32)?;
        let col_filters = vb.get_unchecked_dtype("col_filters", DType::F32)?;
        let thresholds = vb
            .get_unchecked_dtype("thresholds", DType::F64)?
            .to_vec1::<f64>()?;
        let (count, planes, rank, filter_width) = row_filters.dims4()?;
        let (col_count, col_planes, col_rank, filter_height) = col_filters.dims4()?;
        if planes != fhog::PLANES
            || (col_count, col_planes, col_rank) != (count, planes, rank)
            || thresholds.len() != count
            || filter_width <= 2 * padding
            || filter_height <= 2 * padding
        {
            return Err(Error::Weights(format!(
                "inconsistent filters: row_filters {:?}, col_filters {:?}, {} thresholds, padding {padding}",
                row_filters.dims(),
                col_filters.dims(),
                thresholds.len()
            )));
        }
        let row_values = row_filters.flatten_all()?.to_vec1::<f32>()?;
        let col_values = col_filters.flatten_all()?.to_vec1::<f32>()?;
        let filters = thresholds
            .iter()
            .enumerate()
            .map(|(i, &threshold)| {
                let mut terms = Vec::new();
                for plane in 0..planes {
                    for r in 0..rank {
                        let term = (i * planes + plane) * rank + r;
                        let row = &row_values[term * filter_width..(term + 1) * filter_width];
                        let col = &col_values[term * filter_height..(term + 1) * filter_height];
                        if row.iter().chain(col).any(|&v| v != 0.0) {
                            terms.push(SeparableTerm {
                                plane,
                                row: row.to_vec(),
                                col: col.to_vec(),
                            });
                        }
                    }
                }
                let rows = row_filters.get(i)?.contiguous()?;
                let cols = col_filters
                    .get(i)?
                    .reshape((planes * rank, filter_height))?
                    .t()?
                    .contiguous()?;
                Ok(SeparableFilters {
                    threshold,
                    rows,
                    cols,
                    terms,
                })
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(Self {
            cell_size,
            filter_width,
            filter_height,
            window_cells_width: filter_width - 2 * padding,
            window_cells_height: filter_height - 2 * padding,
            max_pyramid_levels: positive("max_pyramid_levels")?,
            min_layer_width: positive("min_pyramid_layer_width")? as i64,
            min_layer_height: positive("min_pyramid_layer_height")? as i64,
            pyramid: PyramidDown::new(pyramid_down as u32),
            overlap: BoxOverlap {
                iou: float("overlap_iou_threshold")?,
                covered: float("overlap_percent_covered_threshold")?,
            },
            filters,
            device,
            kernels,
        })
    }
}

impl HogDetector {
    /// The faces in `image` with their confidences, best first, after enlarging the image
    /// `upsample` times: dlib's `fhog_object_detector.run(image, upsample, 0.0)`.
    ///
    /// A grey image is scanned as grey, as dlib's binding scans one: its pyramid levels are
    /// resized with dlib's grey rounding, which differs from the RGB image of the same samples.
    pub fn detect<I: PyramidImage>(&self, image: &I, upsample: u32) -> Result<Vec<(Rect, f64)>> {
        if upsample == 0 {
            return self.detect_unscaled(image);
        }
        Ok(self
            .detect_unscaled(&pyramid::upsample(image, upsample))?
            .into_iter()
            .map(|(rect, score)| (rect_from_upsampled(rect, upsample), score))
            .collect())
    }

    /// `object_detector::operator()` on the image as given.
    fn detect_unscaled<I: PyramidImage>(&self, image: &I) -> Result<Vec<(Rect, f64)>> {
        let levels = self.level_count(image);
        // The image pyramid is built level after level (each resize split over rows); each
        // level's features are extracted and scored in parallel with the rest as soon as it is
        // done. Nothing here blocks a rayon thread, so concurrent detections cannot starve the
        // pool.
        let mut per_level: Vec<Result<Vec<Vec<Candidate>>>> =
            (0..levels).map(|_| Ok(Vec::new())).collect();
        rayon::scope(|tasks| {
            let mut slots = per_level.iter_mut();
            if let Some(slot) = slots.next() {
                tasks.spawn(|_| *slot = self.level_candidates(image, 0));
            }
            let mut current: Option<Arc<I>> = None;
            for (slot, level) in slots.zip(1..) {
                let next = Arc::new(self.pyramid.downsample(current.as_deref().unwrap_or(image)));
                let level_image = Arc::clone(&next);
                tasks.spawn(move |_| *slot = self.level_candidates(level_image.as_ref(), level));
                current = Some(next);
            }
        });
        let mut per_filter: Vec<Vec<Candidate>> = self.filters.iter().map(|_| Vec::new()).collect();
        for level in per_level {
            for (all, found) in per_filter.iter_mut().zip(level?) {
                all.extend(found);
            }
        }

        // Each filter's detections best first, then all of them best first.
        let mut all = Vec::new();
        for mut candidates in per_filter {
            candidates.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
            all.extend(candidates);
        }
        all.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        Ok(self.overlap.suppress(
            all.into_iter()
                .map(|candidate| (candidate.rect, candidate.confidence)),
        ))
    }

    /// The number of pyramid levels dlib's `create_fhog_pyramid` builds: the image rectangle
    /// is shrunk (and rounded) until it is smaller than the minimum layer size.
    fn level_count(&self, image: &impl PyramidImage) -> usize {
        let (width, height) = image.dimensions();
        let mut rect = Rect::new(0, 0, i64::from(width) - 1, i64::from(height) - 1);
        let mut levels = 0;
        loop {
            rect = self.pyramid.rect_down(rect.into(), 1).round();
            levels += 1;
            if !(rect.width() >= self.min_layer_width
                && rect.height() >= self.min_layer_height
                && levels < self.max_pyramid_levels)
            {
                return levels;
            }
        }
    }

    /// Each filter's windows of one pyramid level scoring at least its threshold.
    fn level_candidates(
        &self,
        level_image: &impl PyramidImage,
        level: u32,
    ) -> Result<Vec<Vec<Candidate>>> {
        let features = extract_fhog(
            &level_image.to_rgb(),
            self.cell_size,
            self.filter_height,
            self.filter_width,
        );
        let mut per_filter: Vec<Vec<Candidate>> = self.filters.iter().map(|_| Vec::new()).collect();
        if features.rows < self.filter_height || features.cols < self.filter_width {
            return Ok(per_filter);
        }
        let scores = self.score_level(&features)?;
        let out_rows = features.rows - self.filter_height + 1;
        let out_cols = features.cols - self.filter_width + 1;
        let filter_scores = scores.chunks_exact(out_rows * out_cols);
        for ((filter, candidates), scores) in
            self.filters.iter().zip(&mut per_filter).zip(filter_scores)
        {
            for (index, &score) in scores.iter().enumerate() {
                if f64::from(score) >= filter.threshold {
                    // Saliency image coordinates of the window centre.
                    let row = index / out_cols + self.filter_height / 2;
                    let col = index % out_cols + self.filter_width / 2;
                    candidates.push(Candidate {
                        confidence: f64::from(score) - filter.threshold,
                        rect: self.window_rect(row as i64, col as i64, level),
                    });
                }
            }
        }
        Ok(per_filter)
    }

    /// Scores of every filter at every window position of one level, `[filters, out_rows,
    /// out_cols]` flattened, where `out = features - filter + 1`.
    fn score_level(&self, features: &fhog::Fhog) -> Result<Vec<f32>> {
        if self.kernels {
            Ok(self.score_level_cpu(features))
        } else {
            self.score_level_tensors(features)
        }
    }

    /// [`Self::score_level`] with the separable filtering kernel, each filter's output split
    /// into bands of rows that are filtered in parallel.
    fn score_level_cpu(&self, features: &fhog::Fhog) -> Vec<f32> {
        let out_rows = features.rows - self.filter_height + 1;
        let out_cols = features.cols - self.filter_width + 1;
        let mut scores = vec![0.0; self.filters.len() * out_rows * out_cols];
        scores
            .par_chunks_mut(out_rows * out_cols)
            .zip(&self.filters)
            .for_each(|(filter_scores, filter)| {
                filter_scores
                    .par_chunks_mut(CPU_BAND_ROWS * out_cols)
                    .enumerate()
                    .for_each(|(band, scores)| {
                        self.score_band_cpu(filter, features, band * CPU_BAND_ROWS, scores)
                    });
            });
        scores
    }

    /// Writes `filter`'s scores of the output rows from `first_row` on into `scores`, dlib's
    /// `float_spatially_filter_image_separable` per term: the row filter along the feature
    /// rows the band needs, then the column filter down the row-filtered rows, added up over
    /// the terms. The row-filtered rows and the band's sums keep the feature planes' row
    /// stride, so that each pass runs over the whole band as one line of floats (the last
    /// `filter_width - 1` values of each row are not outputs and are dropped at the end).
    fn score_band_cpu(
        &self,
        filter: &SeparableFilters,
        features: &fhog::Fhog,
        first_row: usize,
        scores: &mut [f32],
    ) {
        let cols = features.cols;
        let out_cols = cols - self.filter_width + 1;
        let band_rows = scores.len() / out_cols;
        let in_rows = band_rows + self.filter_height - 1;
        let mut row_filtered = vec![0.0f32; in_rows * cols];
        let mut band = vec![0.0f32; band_rows * cols];
        // The last row's extra values would read past the plane.
        let row_len = (in_rows - 1) * cols + out_cols;
        let band_len = (band_rows - 1) * cols + out_cols;
        for term in &filter.terms {
            let start = (term.plane * features.rows + first_row) * cols;
            let plane = &features.data[start..start + in_rows * cols];
            apply_taps(
                &mut row_filtered[..row_len],
                &term.row,
                |n| &plane[n..],
                false,
            );
            apply_taps(
                &mut band[..band_len],
                &term.col,
                |m| &row_filtered[m * cols..],
                true,
            );
        }
        for (scores, band) in scores.chunks_exact_mut(out_cols).zip(band.chunks(cols)) {
            scores.copy_from_slice(&band[..out_cols]);
        }
    }

    /// [`Self::score_level`] as matrix products on the device.
    fn score_level_tensors(&self, features: &fhog::Fhog) -> Result<Vec<f32>> {
        let (rows, cols) = (features.rows, features.cols);
        let out_rows = rows - self.filter_height + 1;
        let out_cols = cols - self.filter_width + 1;
        let planes = Tensor::from_slice(&features.data, (fhog::PLANES, rows, cols), &self.device)?;
        let band = (BAND_POSITIONS / out_cols).max(1);
        let mut bands = Vec::new();
        for start in (0..out_rows).step_by(band) {
            let band_rows = band.min(out_rows - start);
            let input = planes.narrow(1, start, band_rows + self.filter_height - 1)?;
            bands.push(self.score_band(&input)?);
        }
        Ok(Tensor::cat(&bands, 1)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The separable filtering of a band of feature rows `[31, rows, cols]`, giving
    /// `[filters, rows - filter_height + 1, cols - filter_width + 1]`.
    fn score_band(&self, planes: &Tensor) -> Result<Tensor> {
        let (count, rows, cols) = planes.dims3()?;
        let out_rows = rows - self.filter_height + 1;
        let out_cols = cols - self.filter_width + 1;
        // Horizontal windows of every plane: [31, filter_width, rows * out_cols].
        let taps = (0..self.filter_width)
            .map(|n| planes.narrow(2, n, out_cols))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let windows =
            Tensor::stack(&taps, 1)?.reshape((count, self.filter_width, rows * out_cols))?;
        let mut scores = Vec::with_capacity(self.filters.len());
        for filter in &self.filters {
            // Row step: [31, rank, width] x [31, width, positions] -> [31 * rank, positions].
            let row_filtered = filter.rows.matmul(&windows)?;
            let (planes_count, rank, positions) = row_filtered.dims3()?;
            let row_filtered = row_filtered.reshape((planes_count * rank, positions))?;
            // Column step, one output row per column-filter tap, then the taps summed with
            // their vertical offsets.
            let per_tap =
                filter
                    .cols
                    .matmul(&row_filtered)?
                    .reshape((self.filter_height, rows, out_cols))?;
            let mut score = per_tap.get(0)?.narrow(0, 0, out_rows)?;
            for m in 1..self.filter_height {
                score = (score + per_tap.get(m)?.narrow(0, m, out_rows)?)?;
            }
            scores.push(score);
        }
        Ok(Tensor::stack(&scores, 0)?)
    }

    /// The image rectangle of the detection window centred on saliency position (`row`,
    /// `col`) of pyramid `level`: dlib's `fhog_to_image` of the window, mapped up the pyramid.
    fn window_rect(&self, row: i64, col: i64, level: u32) -> Rect {
        let (width, height) = (
            self.window_cells_width as i64,
            self.window_cells_height as i64,
        );
        let left = col - width / 2;
        let top = row - height / 2;
        let cell = self.cell_size as i64;
        let to_image = |p: i64, padding: usize| {
            let p = (p + 1 - (padding as i64 - 1) / 2) * cell + 1;
            if p >= 0 { p + cell / 2 } else { p - cell / 2 }
        };
        let in_level = Rect::new(
            to_image(left, self.filter_width),
            to_image(top, self.filter_height),
            to_image(left + width - 1, self.filter_width),
            to_image(top + height - 1, self.filter_height),
        );
        self.pyramid.rect_up(DRect::from(in_level), level).round()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// `out[c] (+)= sum_n taps[n] * source(n)[c]`, the taps summed in order: one filter pass over
/// a row. Run by [`kernels::run_widest`] at the widest vector width the CPU allows: the same
/// arithmetic, wider, with blocks of outputs wide enough for eight vector registers, so that
/// the additions into each (one per tap, in order) overlap instead of waiting for each other.
fn apply_taps<'a>(out: &mut [f32], taps: &[f32], source: impl Fn(usize) -> &'a [f32], add: bool) {
    kernels::run_widest(Taps {
        out,
        taps,
        source,
        add,
    })
}

/// The arguments of [`apply_taps`].
struct Taps<'o, F> {
    out: &'o mut [f32],
    taps: &'o [f32],
    source: F,
    add: bool,
}

impl<'a, F: Fn(usize) -> &'a [f32]> Widths for Taps<'_, F> {
    /// Blocks of eight vectors of `LANES` outputs, then of 32 and 8 outputs, are accumulated
    /// at a time so that they stay in vector registers for all the taps; the last few one by
    /// one.
    #[inline(always)]
    fn run<const LANES: usize>(self) {
        let Self {
            out,
            taps,
            source,
            add,
        } = self;
        let blocks_end = apply_taps_in_blocks::<LANES, 8>(out, 0, taps, &source, add);
        let blocks_end = apply_taps_in_blocks::<4, 8>(out, blocks_end, taps, &source, add);
        let blocks_end = apply_taps_in_blocks::<8, 1>(out, blocks_end, taps, &source, add);
        for (c, o) in out.iter_mut().enumerate().skip(blocks_end) {
            let s = taps
                .iter()
                .enumerate()
                .fold(0.0f32, |sum, (n, &tap)| sum + source(n)[c] * tap);
            *o = if add { *o + s } else { s };
        }
    }
}

/// [`apply_taps`] for the outputs from `start` on in whole blocks of `ROWS` rows of `LANES`;
/// returns where the blocks end.
#[inline(always)]
fn apply_taps_in_blocks<'a, const LANES: usize, const ROWS: usize>(
    out: &mut [f32],
    start: usize,
    taps: &[f32],
    source: &impl Fn(usize) -> &'a [f32],
    add: bool,
) -> usize {
    let block_len = LANES * ROWS;
    let end = start + (out.len() - start) / block_len * block_len;
    for block in (start..end).step_by(block_len) {
        let mut sum = [[0.0f32; LANES]; ROWS];
        let sum = sum.as_flattened_mut();
        for (n, &tap) in taps.iter().enumerate() {
            let input = &source(n)[block..block + block_len];
            for (s, &x) in sum.iter_mut().zip(input) {
                *s += x * tap;
            }
        }
        let out = &mut out[block..block + block_len];
        for (o, &s) in out.iter_mut().zip(&*sum) {
            *o = if add { *o + s } else { s };
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_kernel_and_matrix_products_agree() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/weights/frontal_face_detector.safetensors"
        );
        let detector =
            HogDetector::from_file(std::path::Path::new(path), &Device::Cpu).expect("detector");
        let image = image::RgbImage::from_fn(300, 200, |x, y| {
            let v = |k: u32| ((x * k + y * (k + 5) + x * y / 7) % 251) as u8;
            image::Rgb([v(3), v(7), v(11)])
        });
        let features = extract_fhog(
            &image,
            detector.cell_size,
            detector.filter_height,
            detector.filter_width,
        );
        let kernel = detector.score_level_cpu(&features);
        let products = detector.score_level_tensors(&features).expect("scores");
        assert_eq!(kernel.len(), products.len());
        let worst = kernel
            .iter()
            .zip(&products)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
    }
}
