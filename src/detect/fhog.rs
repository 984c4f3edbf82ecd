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

/// Feature planes per cell (dlib's `default_fhog_feature_extractor`).
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
    let visible_nr = (cells_nr * cell_size).min(height);
    let visible_nc = (cells_nc * cell_size).min(width);
    if visible_nr < 3 || visible_nc < 3 {
        return hist;
    }
    // Pixels 1..visible - 1 vote. dlib handles x in [1, simd_end) eight pixels at a time and
    // the rest one by one, with different rounding; both are reproduced.
    let (visible_nr, visible_nc) = (visible_nr - 1, visible_nc - 1);
    let simd_end = if visible_nc > 8 {
        1 + (visible_nc - 8).div_ceil(8) * 8
    } else {
        1
    };
    let cell = cell_size as f32;
    // Horizontal interpolation of every column: the left cell and the two weights.
    let columns: Vec<(usize, f32, f32)> = (1..visible_nc)
        .map(|x| {
            if x < simd_end {
                let xp = (x as f32 + 0.5) / cell + 0.5;
                let ixp = xp as i32;
                let vx0 = xp - ixp as f32;
                (ixp as usize, 1.0 - vx0, vx0)
            } else {
                let xp = ((x as f64 + 0.5) / f64::from(cell) - 0.5) as f32;
                let ixp = xp.floor() as i64;
                let vx0 = xp - ixp as f32;
                ((ixp + 1) as usize, 1.0 - vx0, vx0)
            }
        })
        .collect();
    let simd_count = simd_end - 1;

    let pixels = image.as_raw();
    let count = visible_nc - 1;
    let mut gx = vec![0f32; count];
    let mut gy = vec![0f32; count];
    let mut magnitude = vec![0f32; count];
    let mut orientation = vec![0u32; count];
    for y in 1..visible_nr {
        let yp = ((y as f64 + 0.5) / f64::from(cell) - 0.5) as f32;
        let iyp = yp.floor() as i64;
        let vy0 = yp - iyp as f32;
        let vy1 = 1.0 - vy0;
        let row = |r: usize| &pixels[r * width * 3..(r + 1) * width * 3];
        let rows = [row(y - 1), row(y), row(y + 1)];
        strongest_gradients(rows, &mut gx, &mut gy, &mut magnitude, simd_count);
        for v in magnitude.iter_mut() {
            *v = v.sqrt();
        }
        snap_orientations(&gx, &gy, &mut orientation);

        let top = (iyp + 1) as usize * hist_nc;
        let bottom = top + hist_nc;
        for (i, ((&(left, vx1, vx0), &v), &o)) in
            columns.iter().zip(&magnitude).zip(&orientation).enumerate()
        {
            let weights = if i < simd_count {
                let (vx1, vx0) = (vx1 * v, vx0 * v);
                [vy1 * vx1, vy0 * vx1, vy1 * vx0, vy0 * vx0]
            } else {
                [vy1 * vx1 * v, vy0 * vx1 * v, vy1 * vx0 * v, vy0 * vx0 * v]
            };
            let o = o as usize;
            hist[(top + left) * 18 + o] += weights[0];
            hist[(bottom + left) * 18 + o] += weights[1];
            hist[(top + left + 1) * 18 + o] += weights[2];
            hist[(bottom + left + 1) * 18 + o] += weights[3];
        }
    }
    hist
}

/// The gradient (x, y, squared length) at columns `1..` of a row (given with the rows above and
/// below), of the colour channel with the largest gradient. dlib's SIMD code (the first
/// `simd_count` columns) prefers the later channel on ties, its scalar code the earlier.
fn strongest_gradients(
    [above, here, below]: [&[u8]; 3],
    gx: &mut [f32],
    gy: &mut [f32],
    magnitude: &mut [f32],
    simd_count: usize,
) {
    let count = gx.len();
    let left = &here[..count * 3];
    let right = &here[2 * 3..(2 + count) * 3];
    let up = &above[3..(1 + count) * 3];
    let down = &below[3..(1 + count) * 3];
    for i in 0..count {
        let channel = |ch: usize| {
            let dx = i32::from(right[i * 3 + ch]) - i32::from(left[i * 3 + ch]);
            let dy = i32::from(down[i * 3 + ch]) - i32::from(up[i * 3 + ch]);
            (dx, dy, dx * dx + dy * dy)
        };
        let (red, green, blue) = (channel(0), channel(1), channel(2));
        let best = if i < simd_count {
            let first = if red.2 > green.2 { red } else { green };
            if first.2 > blue.2 { first } else { blue }
        } else {
            let first = if green.2 > red.2 { green } else { red };
            if blue.2 > first.2 { blue } else { first }
        };
        gx[i] = best.0 as f32;
        gy[i] = best.1 as f32;
        magnitude[i] = best.2 as f32;
    }
}

/// The signed orientation bin (0..18) of every gradient: the direction with the largest dot
/// product, 0 for a zero gradient.
fn snap_orientations(gx: &[f32], gy: &[f32], orientation: &mut [u32]) {
    let mut best_dot = vec![0f32; gx.len()];
    orientation.fill(0);
    for (o, &(dx, dy)) in DIRECTIONS.iter().enumerate() {
        let o = o as u32;
        for (((&x, &y), best), bin) in gx
            .iter()
            .zip(gy)
            .zip(best_dot.iter_mut())
            .zip(orientation.iter_mut())
        {
            // Branch-free form of: if dot > best {o} else if -dot > best {o + 9}.
            let dot = x * dx + y * dy;
            let positive = dot > *best;
            let (b, n) = if positive { (dot, o) } else { (*best, *bin) };
            let negative = -dot > b;
            (*best, *bin) = if negative { (-dot, o + 9) } else { (b, n) };
        }
    }
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
