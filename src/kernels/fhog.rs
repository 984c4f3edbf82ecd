//! The orientation histograms of dlib's FHOG (the first half of `extract_fhog_features`,
//! dlib/image_transforms/fhog.h), split over bands of cell rows and vectorised.
//!
//! Per pixel, the gradient of the colour channel with the largest gradient magnitude is
//! snapped to one of 18 signed orientations and its magnitude is spread bilinearly over the
//! four nearest cells' histograms. dlib processes most pixels eight at a time with SIMD code
//! whose tie-breaking and rounding differ slightly from its scalar code for the pixels at the
//! right end of each row; both are reproduced, so the histograms equal dlib's up to float
//! rounding of summation order.
//!
//! Every bin receives its votes in dlib's order (pixel rows top to bottom, pixels left to
//! right), so splitting the work changes no bit: each band of histogram rows is filled by one
//! task, which processes every pixel row voting into the band (the rows on a band's edge,
//! which vote into two bands, are processed by both) and adds only the votes that land in it.
//! Per pixel row, the gradients, magnitudes, orientations and vote weights are computed for
//! the whole row in straight loops that the compiler vectorises (AVX2 when the CPU has it);
//! only the votes are added one by one.

use image::RgbImage;
use rayon::prelude::*;

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

/// Bins per cell.
const BINS: usize = 18;
/// Histogram rows per band at the least: a band repeats the gradients of the pixel rows on
/// its edges, about one in `MIN_BAND_ROWS` rows.
const MIN_BAND_ROWS: usize = 8;
/// Bands per thread, so that threads that finish early find work.
const BANDS_PER_THREAD: usize = 4;

/// Orientation histograms of `(cells_nr + 2) x (cells_nc + 2)` cells (one cell of padding all
/// round), 18 bins each.
pub fn histograms(
    image: &RgbImage,
    cell_size: usize,
    cells_nr: usize,
    cells_nc: usize,
) -> Vec<f32> {
    let (height, width) = (image.height() as usize, image.width() as usize);
    let hist_nc = cells_nc + 2;
    let hist_nr = cells_nr + 2;
    let mut hist = vec![0f32; hist_nr * hist_nc * BINS];
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
    let columns = Columns::new(cell, simd_end, visible_nc);
    // Per pixel row y (from 1): the histogram row of its upper votes and the two weights.
    let rows: Vec<(usize, f32, f32)> = (1..visible_nr)
        .map(|y| {
            let yp = ((y as f64 + 0.5) / f64::from(cell) - 0.5) as f32;
            let iyp = yp.floor() as i64;
            let vy0 = yp - iyp as f32;
            ((iyp + 1) as usize, vy0, 1.0 - vy0)
        })
        .collect();

    let band_rows =
        (hist_nr / (BANDS_PER_THREAD * rayon::current_num_threads())).max(MIN_BAND_ROWS);
    let pixels = image.as_raw();
    let row_len = width * 3;
    hist.par_chunks_mut(band_rows * hist_nc * BINS)
        .enumerate()
        .for_each(|(band, out)| {
            let first = band * band_rows;
            let last = first + out.len() / (hist_nc * BINS);
            let mut scratch = Scratch::new(columns.len());
            for (i, &(top, vy0, vy1)) in rows.iter().enumerate() {
                if top + 1 < first || top >= last {
                    continue;
                }
                let y = i + 1;
                let row = |r: usize| &pixels[r * row_len..(r + 1) * row_len];
                scratch.compute(&columns, [row(y - 1), row(y), row(y + 1)], vy0, vy1);
                let band_row = |r: usize| {
                    (first..last)
                        .contains(&r)
                        .then(|| (r - first) * hist_nc * BINS)
                };
                let hist_row = hist_nc * BINS;
                match (band_row(top), band_row(top + 1)) {
                    (Some(upper), Some(_)) => {
                        let (upper_row, lower_row) = out[upper..].split_at_mut(hist_row);
                        scratch.vote_both(&columns, upper_row, &mut lower_row[..hist_row]);
                    }
                    (Some(upper), None) => {
                        scratch.vote(&columns, &mut out[upper..upper + hist_row], 0)
                    }
                    (None, Some(lower)) => {
                        scratch.vote(&columns, &mut out[lower..lower + hist_row], 1)
                    }
                    (None, None) => {}
                }
            }
        });
    hist
}

/// Per voting column (pixel x = 1..): the left cell of its votes and the horizontal weights.
struct Columns {
    left: Vec<usize>,
    vx1: Vec<f32>,
    vx0: Vec<f32>,
    /// How many columns (from the first) dlib handles with its SIMD code.
    simd_count: usize,
}

impl Columns {
    fn new(cell: f32, simd_end: usize, visible_nc: usize) -> Self {
        let mut columns = Self {
            left: Vec::with_capacity(visible_nc),
            vx1: Vec::with_capacity(visible_nc),
            vx0: Vec::with_capacity(visible_nc),
            simd_count: simd_end - 1,
        };
        for x in 1..visible_nc {
            let (left, vx0) = if x < simd_end {
                let xp = (x as f32 + 0.5) / cell + 0.5;
                let ixp = xp as i32;
                (ixp as usize, xp - ixp as f32)
            } else {
                let xp = ((x as f64 + 0.5) / f64::from(cell) - 0.5) as f32;
                let ixp = xp.floor() as i64;
                ((ixp + 1) as usize, xp - ixp as f32)
            };
            columns.left.push(left);
            columns.vx0.push(vx0);
            columns.vx1.push(1.0 - vx0);
        }
        columns
    }

    fn len(&self) -> usize {
        self.left.len()
    }
}

/// One pixel row's votes: orientation bin and the weights for the upper and lower cells.
struct Scratch {
    gx: Vec<f32>,
    gy: Vec<f32>,
    magnitude: Vec<f32>,
    bin: Vec<u32>,
    /// Weights of the votes, `[upper left, lower left, upper right, lower right]` per pixel.
    weights: [Vec<f32>; 4],
}

impl Scratch {
    fn new(count: usize) -> Self {
        let zeros = || vec![0f32; count];
        Self {
            gx: zeros(),
            gy: zeros(),
            magnitude: zeros(),
            bin: vec![0; count],
            weights: [zeros(), zeros(), zeros(), zeros()],
        }
    }

    /// The votes of the pixel row `here` (with the rows above and below).
    fn compute(&mut self, columns: &Columns, rows: [&[u8]; 3], vy0: f32, vy1: f32) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.compute_avx2(columns, rows, vy0, vy1) };
        }
        self.compute_portable(columns, rows, vy0, vy1)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn compute_avx2(&mut self, columns: &Columns, rows: [&[u8]; 3], vy0: f32, vy1: f32) {
        self.compute_portable(columns, rows, vy0, vy1)
    }

    #[inline(always)]
    fn compute_portable(&mut self, columns: &Columns, rows: [&[u8]; 3], vy0: f32, vy1: f32) {
        let simd = columns.simd_count;
        strongest_gradients::<true>(
            rows,
            0,
            &mut self.gx[..simd],
            &mut self.gy[..simd],
            &mut self.magnitude[..simd],
        );
        strongest_gradients::<false>(
            rows,
            simd,
            &mut self.gx[simd..],
            &mut self.gy[simd..],
            &mut self.magnitude[simd..],
        );
        for v in self.magnitude.iter_mut() {
            *v = v.sqrt();
        }
        for ((bin, &x), &y) in self.bin.iter_mut().zip(&self.gx).zip(&self.gy) {
            *bin = snap(x, y);
        }
        let [w0, w1, w2, w3] = &mut self.weights;
        let all = w0
            .iter_mut()
            .zip(w1.iter_mut())
            .zip(w2.iter_mut())
            .zip(w3.iter_mut());
        for (i, ((((w0, w1), w2), w3), &v)) in all.zip(&self.magnitude).enumerate().take(simd) {
            let (vx1, vx0) = (columns.vx1[i] * v, columns.vx0[i] * v);
            (*w0, *w1, *w2, *w3) = (vy1 * vx1, vy0 * vx1, vy1 * vx0, vy0 * vx0);
        }
        let all = w0
            .iter_mut()
            .zip(w1.iter_mut())
            .zip(w2.iter_mut())
            .zip(w3.iter_mut());
        for (i, ((((w0, w1), w2), w3), &v)) in all.zip(&self.magnitude).enumerate().skip(simd) {
            let (vx1, vx0) = (columns.vx1[i], columns.vx0[i]);
            (*w0, *w1, *w2, *w3) = (vy1 * vx1 * v, vy0 * vx1 * v, vy1 * vx0 * v, vy0 * vx0 * v);
        }
    }

    /// Adds the row's votes into the two histogram rows it votes into, which follow each
    /// other. The four sums a pixel adds to are independent, so one loop keeps four chains of
    /// additions going where [`Self::vote`] keeps two.
    fn vote_both(&self, columns: &Columns, upper: &mut [f32], lower: &mut [f32]) {
        let [w0, w1, w2, w3] = &self.weights;
        let weights = w0.iter().zip(w1).zip(w2).zip(w3);
        for ((&left, &bin), (((&w0, &w1), &w2), &w3)) in
            columns.left.iter().zip(&self.bin).zip(weights)
        {
            let at = left * BINS + bin as usize;
            upper[at] += w0;
            lower[at] += w1;
            upper[at + BINS] += w2;
            lower[at + BINS] += w3;
        }
    }

    /// Adds the row's votes into one histogram row: the upper (`lower` 0) or lower (1) ones.
    fn vote(&self, columns: &Columns, hist_row: &mut [f32], lower: usize) {
        let (left_weights, right_weights) = (&self.weights[lower], &self.weights[2 + lower]);
        for (((&left, &bin), &wl), &wr) in columns
            .left
            .iter()
            .zip(&self.bin)
            .zip(left_weights)
            .zip(right_weights)
        {
            let at = left * BINS + bin as usize;
            hist_row[at] += wl;
            hist_row[at + BINS] += wr;
        }
    }
}

/// The gradient (x, y, squared length) of pixels `first + 1..` of a row (given with the rows
/// above and below), of the colour channel with the largest gradient. dlib's SIMD code
/// (`SIMD` true) prefers the later channel on ties, its scalar code the earlier.
#[inline(always)]
fn strongest_gradients<const SIMD: bool>(
    [above, here, below]: [&[u8]; 3],
    first: usize,
    gx: &mut [f32],
    gy: &mut [f32],
    magnitude: &mut [f32],
) {
    let count = gx.len();
    let left = &here[first * 3..(first + count) * 3];
    let right = &here[(first + 2) * 3..(first + 2 + count) * 3];
    let up = &above[(first + 1) * 3..(first + 1 + count) * 3];
    let down = &below[(first + 1) * 3..(first + 1 + count) * 3];
    let pixels = left
        .chunks_exact(3)
        .zip(right.chunks_exact(3))
        .zip(up.chunks_exact(3))
        .zip(down.chunks_exact(3));
    for ((((l, r), u), d), ((gx, gy), m)) in
        pixels.zip(gx.iter_mut().zip(gy.iter_mut()).zip(magnitude.iter_mut()))
    {
        let channel = |ch: usize| {
            let dx = i32::from(r[ch]) - i32::from(l[ch]);
            let dy = i32::from(d[ch]) - i32::from(u[ch]);
            (dx, dy, dx * dx + dy * dy)
        };
        let (red, green, blue) = (channel(0), channel(1), channel(2));
        let best = if SIMD {
            let first = if red.2 > green.2 { red } else { green };
            if first.2 > blue.2 { first } else { blue }
        } else {
            let first = if green.2 > red.2 { green } else { red };
            if blue.2 > first.2 { blue } else { first }
        };
        *gx = best.0 as f32;
        *gy = best.1 as f32;
        *m = best.2 as f32;
    }
}

/// The signed orientation bin (0..18) of a gradient: the direction with the largest dot
/// product, 0 for a zero gradient.
#[inline(always)]
fn snap(x: f32, y: f32) -> u32 {
    let mut best = 0f32;
    let mut bin = 0u32;
    for (o, &(dx, dy)) in DIRECTIONS.iter().enumerate() {
        let dot = x * dx + y * dy;
        if dot > best {
            (best, bin) = (dot, o as u32);
        }
        if -dot > best {
            (best, bin) = (-dot, o as u32 + 9);
        }
    }
    bin
}
