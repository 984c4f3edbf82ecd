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

/// Number of feature planes.
pub const PLANES: usize = 31;

/// Unit vectors of the 9 unsigned orientations, in dlib's single precision.
const DIRECTIONS: [(f32, f32); 9] = [
    (1.0000, 0.0000),
    (0.9397, 0.3420),
    (0.7660, 0.6428),
    (0.500, 0.8660),
    (0.1736, 0.9848),
    (-0.1736, 0.9848),
    (-0.5000, 0.8660),
    (-0.7660, 0.6428),
    (-0.9397, 0.3420),
];

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

/// Orientation histograms of `(cells_nr + 2) x (cells_nc + 2)` cells (one cell of padding all
/// round), 18 bins each.
fn histograms(image: &RgbImage, cell_size: usize, cells_nr: usize, cells_nc: usize) -> Vec<f32> {
    let (height, width) = (image.height() as usize, image.width() as usize);
    let hist_nc = cells_nc + 2;
    let mut hist = vec![0f32; (cells_nr + 2) * hist_nc * 18];
    let visible_nr = (cells_nr * cell_size).min(height) as i64 - 1;
    let visible_nc = (cells_nc * cell_size).min(width) as i64 - 1;
    if visible_nr < 2 || visible_nc < 2 {
        return hist;
    }
    let visible_nc = visible_nc as usize;
    // dlib handles x in [1, simd_end) eight pixels at a time, the rest one by one.
    let simd_end = if visible_nc > 8 {
        1 + (visible_nc - 8).div_ceil(8) * 8
    } else {
        1
    };
    let pixels = image.as_raw();
    let cell = cell_size as f32;
    let mut gradients = vec![(0f32, 0f32, 0f32); visible_nc];

    for y in 1..visible_nr as usize {
        let yp = ((y as f64 + 0.5) / f64::from(cell) - 0.5) as f32;
        let iyp = yp.floor() as i64;
        let vy0 = yp - iyp as f32;
        let vy1 = 1.0 - vy0;
        let row = |r: usize| &pixels[r * width * 3..(r + 1) * width * 3];
        let (above, here, below) = (row(y - 1), row(y), row(y + 1));
        for (x, gradient) in gradients.iter_mut().enumerate().skip(1) {
            *gradient = strongest_gradient(above, here, below, x, x < simd_end);
        }
        let hist_row = (iyp + 1) as usize;
        for (x, &(gx, gy, len)) in gradients.iter().enumerate().skip(1) {
            let orientation = snap_orientation(gx, gy);
            let v = len.sqrt();
            // Bin weights: (top-left, bottom-left, top-right, bottom-right) and the left cell.
            let (weights, left) = if x < simd_end {
                let xp = (x as f32 + 0.5) / cell + 0.5;
                let ixp = xp as i32;
                let vx0 = xp - ixp as f32;
                let vx1 = (1.0 - vx0) * v;
                let vx0 = vx0 * v;
                ([vy1 * vx1, vy0 * vx1, vy1 * vx0, vy0 * vx0], ixp as usize)
            } else {
                let xp = ((x as f64 + 0.5) / f64::from(cell) - 0.5) as f32;
                let ixp = xp.floor() as i64;
                let vx0 = xp - ixp as f32;
                let vx1 = 1.0 - vx0;
                (
                    [vy1 * vx1 * v, vy0 * vx1 * v, vy1 * vx0 * v, vy0 * vx0 * v],
                    (ixp + 1) as usize,
                )
            };
            let bin = |r: usize, c: usize| (r * hist_nc + c) * 18 + orientation;
            hist[bin(hist_row, left)] += weights[0];
            hist[bin(hist_row + 1, left)] += weights[1];
            hist[bin(hist_row, left + 1)] += weights[2];
            hist[bin(hist_row + 1, left + 1)] += weights[3];
        }
    }
    hist
}

/// The gradient (x, y, squared length) of the colour channel with the largest gradient at
/// column `x`. dlib's SIMD code prefers the later channel on ties, its scalar code the earlier.
fn strongest_gradient(
    above: &[u8],
    here: &[u8],
    below: &[u8],
    x: usize,
    simd: bool,
) -> (f32, f32, f32) {
    let channel = |ch: usize| {
        let gx = i32::from(here[(x + 1) * 3 + ch]) - i32::from(here[(x - 1) * 3 + ch]);
        let gy = i32::from(below[x * 3 + ch]) - i32::from(above[x * 3 + ch]);
        (gx, gy, gx * gx + gy * gy)
    };
    let (red, green, blue) = (channel(0), channel(1), channel(2));
    let best = if simd {
        let first = if red.2 > green.2 { red } else { green };
        if first.2 > blue.2 { first } else { blue }
    } else {
        let first = if green.2 > red.2 { green } else { red };
        if blue.2 > first.2 { blue } else { first }
    };
    (best.0 as f32, best.1 as f32, best.2 as f32)
}

/// The signed orientation bin (0..18) whose direction has the largest dot product with the
/// gradient; 0 for a zero gradient.
fn snap_orientation(gx: f32, gy: f32) -> usize {
    let mut best_dot = 0f32;
    let mut best = 0;
    for (o, &(dx, dy)) in DIRECTIONS.iter().enumerate() {
        let dot = gx * dx + gy * dy;
        if dot > best_dot {
            best_dot = dot;
            best = o;
        } else if -dot > best_dot {
            best_dot = -dot;
            best = o + 9;
        }
    }
    best
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
