//! Felzenszwalb HOG features of an RGB image, as dlib's `extract_fhog_features`
//! (dlib/image_transforms/fhog.h) computes them for `scan_fhog_pyramid`.
//!
//! Per pixel, the gradient of the colour channel with the largest gradient magnitude is
//! snapped to one of 18 signed orientations and its magnitude is spread bilinearly over the
//! four nearest cells' histograms. Each cell then gets 31 features: 18 signed and 9 unsigned
//! orientation energies, each normalised by the four 2x2 blocks of cells around it and
//! truncated at 0.2, and 4 texture features (the per-block sums of the signed energies).
//! The features of an image border one cell wide are not computed, and the feature planes are
//! surrounded by zeros so that a `filter_rows_padding x filter_cols_padding` filter can be
//! centred on every cell.
//!
//! dlib processes most pixels eight at a time with SIMD code whose tie-breaking and rounding
//! differ slightly from its scalar code for the pixels at the right end of each row; both are
//! reproduced here, so the features equal dlib's up to float rounding of summation order.

use image::RgbImage;

use crate::kernels::fhog::histograms;

/// Feature planes per cell (dlib's `default_fhog_feature_extractor`).
pub const PLANES: usize = 31;

/// FHOG features: `PLANES` planes of `rows x cols` values, plane-major. Empty (zero rows and
/// columns) when the image is too small to have any feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Fhog {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Fhog {
    /// The value of `plane` at (`row`, `col`).
    pub fn get(&self, plane: usize, row: usize, col: usize) -> f32 {
        self.data[(plane * self.rows + row) * self.cols + col]
    }
}

/// dlib's `extract_fhog_features(img, hog, cell_size, filter_rows_padding,
/// filter_cols_padding)` for an RGB image and `cell_size > 1`.
pub fn extract_fhog(
    image: &RgbImage,
    cell_size: usize,
    filter_rows_padding: usize,
    filter_cols_padding: usize,
) -> Fhog {
    let empty = Fhog {
        rows: 0,
        cols: 0,
        data: Vec::new(),
    };
    let (height, width) = (image.height() as usize, image.width() as usize);
    let cells_nr = (height as f32 / cell_size as f32 + 0.5) as usize;
    let cells_nc = (width as f32 / cell_size as f32 + 0.5) as usize;
    if cells_nr < 3 || cells_nc < 3 {
        return empty;
    }
    let hist = histograms(image, cell_size, cells_nr, cells_nc);
    let norms = block_energies(&hist, cells_nr, cells_nc);
    features(
        &hist,
        &norms,
        cells_nr,
        cells_nc,
        filter_rows_padding,
        filter_cols_padding,
    )
}

/// The energy of every cell: the sum over the 9 unsigned orientations of the squared sums of
/// the two opposite signed bins.
fn block_energies(hist: &[f32], cells_nr: usize, cells_nc: usize) -> Vec<f32> {
    let hist_nc = cells_nc + 2;
    let mut norms = vec![0f32; cells_nr * cells_nc];
    for r in 0..cells_nr {
        for c in 0..cells_nc {
            let bins = &hist[((r + 1) * hist_nc + c + 1) * 18..][..18];
            let mut energy = 0f32;
            for o in 0..9 {
                let unsigned = bins[o] + bins[o + 9];
                energy += unsigned * unsigned;
            }
            norms[r * cells_nc + c] = energy;
        }
    }
    norms
}

/// Sum of four lanes as dlib's SSE4.1 dot product with ones adds them.
fn lane_sum(v: [f32; 4]) -> f32 {
    (v[0] + v[1]) + (v[2] + v[3])
}

/// The 31 normalised features of every inner cell, placed in zero-padded planes.
fn features(
    hist: &[f32],
    norms: &[f32],
    cells_nr: usize,
    cells_nc: usize,
    filter_rows_padding: usize,
    filter_cols_padding: usize,
) -> Fhog {
    let (hog_nr, hog_nc) = (cells_nr - 2, cells_nc - 2);
    let rows = hog_nr + filter_rows_padding - 1;
    let cols = hog_nc + filter_cols_padding - 1;
    let (row_offset, col_offset) = ((filter_rows_padding - 1) / 2, (filter_cols_padding - 1) / 2);
    let mut data = vec![0f32; PLANES * rows * cols];
    let hist_nc = cells_nc + 2;
    let norm = |r: usize, c: usize| norms[r * cells_nc + c];
    const EPS: f32 = 0.0001;
    for y in 0..hog_nr {
        for x in 0..hog_nc {
            // The four 2x2 blocks that contain cell (y + 1, x + 1), one per lane.
            let z1 = [
                norm(y + 1, x + 1),
                norm(y, x + 1),
                norm(y + 1, x),
                norm(y, x),
            ];
            let z2 = [
                norm(y + 1, x + 2),
                norm(y, x + 2),
                norm(y + 1, x + 1),
                norm(y, x + 1),
            ];
            let z3 = [
                norm(y + 2, x + 1),
                norm(y + 1, x + 1),
                norm(y + 2, x),
                norm(y + 1, x),
            ];
            let z4 = [
                norm(y + 2, x + 2),
                norm(y + 1, x + 2),
                norm(y + 2, x + 1),
                norm(y + 1, x + 1),
            ];
            let nn: [f32; 4] =
                std::array::from_fn(|k| 0.2 * (z1[k] + z2[k] + z3[k] + z4[k] + EPS).sqrt());
            let n: [f32; 4] = std::array::from_fn(|k| 0.1 / nn[k]);
            let bins = &hist[((y + 2) * hist_nc + x + 2) * 18..][..18];
            let at = (y + row_offset) * cols + x + col_offset;
            let mut set = |plane: usize, value: f32| data[plane * rows * cols + at] = value;
            let clip =
                |value: f32| -> [f32; 4] { std::array::from_fn(|k| value.min(nn[k]) * n[k]) };

            let mut texture = [0f32; 4];
            for o in (0..18).step_by(3) {
                let (h0, h1, h2) = (clip(bins[o]), clip(bins[o + 1]), clip(bins[o + 2]));
                set(o, lane_sum(h0));
                set(o + 1, lane_sum(h1));
                set(o + 2, lane_sum(h2));
                for k in 0..4 {
                    texture[k] += h0[k] + h1[k] + h2[k];
                }
            }
            for o in 0..9 {
                set(18 + o, lane_sum(clip(bins[o] + bins[o + 9])));
            }
            for (k, t) in texture.iter().enumerate() {
                set(27 + k, t * (2.0 * 0.2357));
            }
        }
    }
    Fhog { rows, cols, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn feature_planes_have_dlibs_size_and_zero_border() {
        // 80x80 pixels: 10x10 cells, 8x8 features, padded for a 10x10 filter to 17x17.
        let image = RgbImage::from_fn(80, 80, |x, y| Rgb([(x * 3) as u8, (y * 5) as u8, 7]));
        let features = extract_fhog(&image, 8, 10, 10);
        assert_eq!((features.rows, features.cols), (17, 17));
        assert_eq!(features.data.len(), PLANES * 17 * 17);
        // Features sit at offset (4, 4); everything outside is zero.
        for plane in 0..PLANES {
            for r in 0..17 {
                for c in 0..17 {
                    if !(4..12).contains(&r) || !(4..12).contains(&c) {
                        assert_eq!(features.get(plane, r, c), 0.0);
                    }
                }
            }
        }
        assert!(features.data.iter().any(|&v| v > 0.0));
        assert!(features.data.iter().all(|&v| (0.0..=2.0).contains(&v)));
    }

    #[test]
    fn flat_and_tiny_images() {
        let flat = extract_fhog(&RgbImage::from_pixel(64, 48, Rgb([50, 60, 70])), 8, 10, 10);
        assert_eq!((flat.rows, flat.cols), (4 + 9, 6 + 9));
        assert!(flat.data.iter().all(|&v| v == 0.0));
        // Fewer than 3 cells (rounded) in a direction: no features.
        assert_eq!(extract_fhog(&RgbImage::new(19, 100), 8, 10, 10).rows, 0);
        assert_eq!(extract_fhog(&RgbImage::new(1, 1), 8, 10, 10).data.len(), 0);
        assert_eq!(extract_fhog(&RgbImage::new(20, 20), 8, 1, 1).rows, 1);
    }
}
