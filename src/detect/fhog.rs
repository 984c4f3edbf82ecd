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
//! The orientation histograms are `kernels::histograms`; the normalisation here is
//! vectorised across the cells of a row (as wide as `kernels::run_widest` allows), each value
//! getting the operations of dlib's per-cell code.

use image::RgbImage;

use crate::kernels::histograms::histograms;
use crate::kernels::{self, Widths};

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
    features(
        &hist,
        cells_nr,
        cells_nc,
        filter_rows_padding,
        filter_cols_padding,
    )
}

/// The 31 normalised features of every inner cell, placed in zero-padded planes.
///
/// Vectorised across the cells of a row: the rows of cells are laid out bin by bin
/// ([`CellRow`]) and the normalisers of every 2x2 block computed once, three rows in turn,
/// and each row of cells is then processed `W` cells at a time. Every output value gets
/// exactly the operations, in the order, of dlib's per-cell code: each block's normaliser, the
/// truncation and scaling per block, the sum of the four blocks as dlib's SSE4.1 dot product
/// with ones adds them, and the texture sums three bins at a time.
fn features(
    hist: &[f32],
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
    let plane = rows * cols;
    // Cell rows r - 2, r - 1 and r.
    let mut ring: [CellRow; 3] = std::array::from_fn(|_| CellRow::new(cells_nc));
    for r in 0..cells_nr {
        ring.rotate_left(1);
        let [_, upper, lower] = &mut ring;
        lower.load(hist, r);
        if r >= 1 {
            upper.blocks(&lower.energy);
        }
        if r >= 2 {
            let out = (r - 2 + row_offset) * cols + col_offset;
            feature_row(&ring[0], &ring[1], &mut data, out, plane);
        }
    }
    Fhog { rows, cols, data }
}

/// One row of cells (without the histograms' padding): its bins, bin by bin (the row's values
/// of bin 0, then of bin 1, and so on), its energies, and per 2x2 block whose top left cell it
/// holds, dlib's truncation threshold `nn = 0.2 * sqrt(energy sum + eps)` and scale `0.1 / nn`.
struct CellRow {
    bins: Vec<f32>,
    energy: Vec<f32>,
    nn: Vec<f32>,
    scale: Vec<f32>,
}

impl CellRow {
    /// A row of `cells_nc` cells.
    fn new(cells_nc: usize) -> Self {
        Self {
            bins: vec![0.0; 18 * cells_nc],
            energy: vec![0.0; cells_nc],
            nn: vec![0.0; cells_nc - 1],
            scale: vec![0.0; cells_nc - 1],
        }
    }

    /// Bin `o` of the cells.
    fn bin(&self, o: usize) -> &[f32] {
        let nc = self.energy.len();
        &self.bins[o * nc..][..nc]
    }

    /// Loads row `r` of padded histograms of 18 interleaved bins, and computes its energies:
    /// the sum over the 9 unsigned orientations of the squared sums of the two opposite
    /// signed bins.
    fn load(&mut self, hist: &[f32], r: usize) {
        let nc = self.energy.len();
        let cells = &hist[((r + 1) * (nc + 2) + 1) * 18..][..nc * 18];
        for (o, bin) in self.bins.chunks_exact_mut(nc).enumerate() {
            for (value, cell) in bin.iter_mut().zip(cells.chunks_exact(18)) {
                *value = cell[o];
            }
        }
        self.energy.fill(0.0);
        for o in 0..9 {
            let (signed, opposite) = (&self.bins[o * nc..][..nc], &self.bins[(o + 9) * nc..][..nc]);
            for ((e, &a), &b) in self.energy.iter_mut().zip(signed).zip(opposite) {
                let unsigned = a + b;
                *e += unsigned * unsigned;
            }
        }
    }

    /// The blocks of this row's cells and those of the row `below` (its energies).
    fn blocks(&mut self, below: &[f32]) {
        const EPS: f32 = 0.0001;
        let top = &self.energy;
        let sums = top.iter().zip(&top[1..]).zip(below).zip(&below[1..]);
        for ((nn, scale), (((&a, &b), &c), &d)) in
            self.nn.iter_mut().zip(self.scale.iter_mut()).zip(sums)
        {
            *nn = 0.2 * (a + b + c + d + EPS).sqrt();
            *scale = 0.1 / *nn;
        }
    }
}

/// The features of the inner cells of `middle` into `data`, plane `p`'s first value at
/// `p * plane + out`; `top` is the row above. Run by [`kernels::run_widest`], a vector of cells
/// at a time.
fn feature_row(top: &CellRow, middle: &CellRow, data: &mut [f32], out: usize, plane: usize) {
    kernels::run_widest(FeatureRow {
        top,
        middle,
        data,
        out,
        plane,
    })
}

/// The arguments of [`feature_row`].
struct FeatureRow<'a> {
    top: &'a CellRow,
    middle: &'a CellRow,
    data: &'a mut [f32],
    out: usize,
    plane: usize,
}

impl Widths for FeatureRow<'_> {
    #[inline(always)]
    fn run<const LANES: usize>(self) {
        feature_row_cells::<LANES>(self.top, self.middle, self.data, self.out, self.plane)
    }
}

/// [`feature_row`] `W` cells at a time, then the rest one by one.
#[inline(always)]
fn feature_row_cells<const W: usize>(
    top: &CellRow,
    middle: &CellRow,
    data: &mut [f32],
    out: usize,
    plane: usize,
) {
    let hog_nc = middle.energy.len() - 2;
    let mut x = 0;
    while x + W <= hog_nc {
        feature_cells::<W>(top, middle, x, data, out, plane);
        x += W;
    }
    while x < hog_nc {
        feature_cells::<1>(top, middle, x, data, out, plane);
        x += 1;
    }
}

/// The features of the `W` inner cells of `middle` from feature column `x` on, each as dlib
/// computes a cell's: the four 2x2 blocks around the cell (one per lane of dlib's code)
/// truncate and scale each bin, and the lanes are summed.
#[inline(always)]
fn feature_cells<const W: usize>(
    top: &CellRow,
    middle: &CellRow,
    x: usize,
    data: &mut [f32],
    out: usize,
    plane: usize,
) {
    // dlib's lanes: the blocks whose top left cells are right of the cell's, above and right,
    // left, and above and left.
    let corners = [(middle, x + 1), (top, x + 1), (middle, x), (top, x)];
    let mut nn = [[0f32; W]; 4];
    let mut scale = [[0f32; W]; 4];
    for (k, &(row, at)) in corners.iter().enumerate() {
        nn[k].copy_from_slice(&row.nn[at..][..W]);
        scale[k].copy_from_slice(&row.scale[at..][..W]);
    }
    let bin = |o: usize| &middle.bin(o)[x + 1..][..W];
    let mut set = |p: usize, values: &[f32; W]| {
        data[p * plane + out + x..][..W].copy_from_slice(values);
    };

    let mut texture = [[0f32; W]; 4];
    let mut h = [[[0f32; W]; 4]; 3];
    let mut value = [0f32; W];
    for o in (0..18).step_by(3) {
        for (j, h) in h.iter_mut().enumerate() {
            value.copy_from_slice(bin(o + j));
            set(o + j, &clip(&value, &nn, &scale, h));
        }
        for k in 0..4 {
            for i in 0..W {
                texture[k][i] += h[0][k][i] + h[1][k][i] + h[2][k][i];
            }
        }
    }
    for o in 0..9 {
        let (signed, opposite) = (bin(o), bin(o + 9));
        for i in 0..W {
            value[i] = signed[i] + opposite[i];
        }
        set(18 + o, &clip(&value, &nn, &scale, &mut h[0]));
    }
    for (k, texture) in texture.iter().enumerate() {
        for (v, &t) in value.iter_mut().zip(texture) {
            *v = t * (2.0 * 0.2357);
        }
        set(27 + k, &value);
    }
}

/// Truncates `value` at each block's `nn` and scales it (into `clipped`, one row per block),
/// and sums the blocks as dlib's SSE4.1 dot product with ones adds them. The truncation is
/// `minps`'s `value < nn ? value : nn`: the same as `f32::min`, `nn` being a number.
#[inline(always)]
fn clip<const W: usize>(
    value: &[f32; W],
    nn: &[[f32; W]; 4],
    scale: &[[f32; W]; 4],
    clipped: &mut [[f32; W]; 4],
) -> [f32; W] {
    for k in 0..4 {
        for i in 0..W {
            let truncated = if value[i] < nn[k][i] {
                value[i]
            } else {
                nn[k][i]
            };
            clipped[k][i] = truncated * scale[k][i];
        }
    }
    let mut sum = [0f32; W];
    for i in 0..W {
        sum[i] = (clipped[0][i] + clipped[1][i]) + (clipped[2][i] + clipped[3][i]);
    }
    sum
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
