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
//! Per pixel row, the gradients, magnitudes and vote weights are computed for the whole row
//! in straight loops, with vector code for dlib's SIMD part (the gradients as 16-bit
//! differences whose squared lengths `vpmaddwd` sums) and for the orientations (with the nine
//! directions in registers), written once over [`Lanes`](super::lanes::Lanes) and run with
//! AVX2 or AVX-512; only the votes are added one by one.

use std::ops::Range;

use image::RgbImage;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::kernels::Isa;

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
    let hist_row = hist_nc * BINS;
    hist.par_chunks_mut(band_rows * hist_row)
        .enumerate()
        .for_each(|(band, out)| {
            // The band in two halves, whose pixel rows are processed in turn: the votes of a
            // row of each half go in one loop, eight independent chains of additions.
            let first = band * band_rows;
            let split = out.len() / hist_row / 2;
            let (upper, lower) = out.split_at_mut(split * hist_row);
            let mut halves = [
                Half::new(upper, first, columns.len(), hist_row),
                Half::new(lower, first + split, columns.len(), hist_row),
            ];
            let voting = |half: &Half| {
                let (first, last) = (half.first, half.first + half.hist.len() / hist_row);
                rows.iter()
                    .enumerate()
                    .filter(move |(_, (top, _, _))| top + 1 >= first && *top < last)
                    .map(|(i, &(top, vy0, vy1))| (i + 1, top, vy0, vy1))
            };
            let mut queues = [voting(&halves[0]), voting(&halves[1])];
            let row = |r: usize| &pixels[r * width * 3..(r + 1) * width * 3];
            loop {
                let next = [queues[0].next(), queues[1].next()];
                if next.iter().all(Option::is_none) {
                    break;
                }
                for (half, next) in halves.iter_mut().zip(next) {
                    half.voting = next.map(|(y, top, vy0, vy1)| {
                        let rows = [row(y - 1), row(y), row(y + 1)];
                        half.scratch.compute(&columns, rows, vy0, vy1);
                        top
                    });
                }
                let [a, b] = &mut halves;
                match (a.both_rows(), b.both_rows()) {
                    (Some(a), Some(b)) => vote_two(&columns, a, b),
                    _ => {
                        a.vote(&columns);
                        b.vote(&columns);
                    }
                }
            }
        });
    hist
}

/// A pixel row's votes and the upper and lower histogram rows they go to.
type RowVotes<'a> = (&'a Scratch, (&'a mut [f32], &'a mut [f32]));

/// One pixel's votes as [`vote_two`] walks them: where, and the four weights.
type PixelVotes<'a> = ((((&'a u32, &'a f32), &'a f32), &'a f32), &'a f32);

/// One half of a band of histogram rows, and the pixel row being voted into it.
struct Half<'a> {
    hist: &'a mut [f32],
    /// The first histogram row it holds.
    first: usize,
    scratch: Scratch,
    /// The histogram row of the upper votes of the pixel row in `scratch`, if any.
    voting: Option<usize>,
    hist_row: usize,
}

impl<'a> Half<'a> {
    fn new(hist: &'a mut [f32], first: usize, count: usize, hist_row: usize) -> Self {
        Self {
            hist,
            first,
            scratch: Scratch::new(count),
            voting: None,
            hist_row,
        }
    }

    /// The offset of histogram row `row` in the half, if it holds it.
    fn offset(&self, row: usize) -> Option<usize> {
        let rows = self.hist.len() / self.hist_row;
        (self.first..self.first + rows)
            .contains(&row)
            .then(|| (row - self.first) * self.hist_row)
    }

    /// The current pixel row's votes and both histogram rows they go to, when the half holds
    /// both.
    fn both_rows(&mut self) -> Option<RowVotes<'_>> {
        let top = self.voting?;
        let upper = self.offset(top)?;
        self.offset(top + 1)?;
        let row = self.hist_row;
        let rows = self.hist[upper..upper + 2 * row].split_at_mut(row);
        Some((&self.scratch, rows))
    }

    /// Adds the current pixel row's votes that land in the half.
    fn vote(&mut self, columns: &Columns) {
        let Some(top) = self.voting else {
            return;
        };
        let row = self.hist_row;
        match (self.offset(top), self.offset(top + 1)) {
            (Some(upper), Some(_)) => {
                let (upper_row, lower_row) = self.hist[upper..upper + 2 * row].split_at_mut(row);
                self.scratch.vote_both(columns, upper_row, lower_row);
            }
            (Some(upper), None) => {
                self.scratch
                    .vote(columns, &mut self.hist[upper..upper + row], 0)
            }
            (None, Some(lower)) => {
                self.scratch
                    .vote(columns, &mut self.hist[lower..lower + row], 1)
            }
            (None, None) => {}
        }
    }
}

/// [`Scratch::vote_both`] for two pixel rows at once, into four distinct histogram rows.
fn vote_two(
    columns: &Columns,
    (a, (a_upper, a_lower)): RowVotes<'_>,
    (b, (b_upper, b_lower)): RowVotes<'_>,
) {
    let end = columns.vote_end();
    for row in [&*a_upper, &*a_lower, &*b_upper, &*b_lower] {
        assert!(end <= row.len(), "histogram row too short");
    }
    fn votes(s: &Scratch) -> impl Iterator<Item = PixelVotes<'_>> {
        let [w0, w1, w2, w3] = &s.weights;
        s.at.iter().zip(w0).zip(w1).zip(w2).zip(w3)
    }
    for (((((&at_a, &a0), &a1), &a2), &a3), ((((&at_b, &b0), &b1), &b2), &b3)) in
        votes(a).zip(votes(b))
    {
        let (at_a, at_b) = (at_a as usize, at_b as usize);
        // SAFETY: `at + BINS < vote_end()` for every pixel, checked above for all four rows.
        unsafe {
            *a_upper.get_unchecked_mut(at_a) += a0;
            *a_lower.get_unchecked_mut(at_a) += a1;
            *b_upper.get_unchecked_mut(at_b) += b0;
            *b_lower.get_unchecked_mut(at_b) += b1;
            *a_upper.get_unchecked_mut(at_a + BINS) += a2;
            *a_lower.get_unchecked_mut(at_a + BINS) += a3;
            *b_upper.get_unchecked_mut(at_b + BINS) += b2;
            *b_lower.get_unchecked_mut(at_b + BINS) += b3;
        }
    }
}

/// Per voting column (pixel x = 1..): the left cell of its votes and the horizontal weights.
struct Columns {
    /// The first bin of the left cell, from the histogram row's start.
    first_bin: Vec<u32>,
    vx1: Vec<f32>,
    vx0: Vec<f32>,
    /// How many columns (from the first) dlib handles with its SIMD code.
    simd_count: usize,
}

impl Columns {
    fn new(cell: f32, simd_end: usize, visible_nc: usize) -> Self {
        let mut columns = Self {
            first_bin: Vec::with_capacity(visible_nc),
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
            columns.first_bin.push((left * BINS) as u32);
            columns.vx0.push(vx0);
            columns.vx1.push(1.0 - vx0);
        }
        columns
    }

    fn len(&self) -> usize {
        self.first_bin.len()
    }

    /// One past the last histogram value the votes reach (the last column's right cell).
    fn vote_end(&self) -> usize {
        self.first_bin
            .iter()
            .max()
            .map_or(0, |&first| first as usize + 2 * BINS)
    }
}

/// One pixel row's votes: where in a histogram row they go and the weights for the upper and
/// lower cells.
struct Scratch {
    gx: Vec<f32>,
    gy: Vec<f32>,
    magnitude: Vec<f32>,
    /// The left cell's bin of the pixel's orientation, from the histogram row's start.
    at: Vec<u32>,
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
            at: vec![0; count],
            weights: [zeros(), zeros(), zeros(), zeros()],
        }
    }

    /// The votes of the pixel row `here` (with the rows above and below).
    fn compute(&mut self, columns: &Columns, rows: [&[u8]; 3], vy0: f32, vy1: f32) {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Isa::current();
            if isa >= Isa::Avx512 {
                // SAFETY: the CPU supports AVX-512 F and BW (`Isa::current`).
                return unsafe { vector::compute_avx512(self, columns, rows, (vy0, vy1)) };
            }
            if isa >= Isa::Avx2 {
                // SAFETY: the CPU supports AVX2 (`Isa::current`).
                return unsafe { vector::compute_avx2(self, columns, rows, (vy0, vy1)) };
            }
        }
        self.compute_portable(columns, rows, vy0, vy1);
        for ((at, &x), &y) in self.at.iter_mut().zip(&self.gx).zip(&self.gy) {
            *at += snap(x, y);
        }
    }

    /// The row's gradients, magnitudes and vote weights, and in `at` the left cells' first
    /// bins, to which the callers add the orientations' bins.
    fn compute_portable(&mut self, columns: &Columns, rows: [&[u8]; 3], vy0: f32, vy1: f32) {
        let simd = columns.simd_count;
        strongest_gradients::<true>(
            rows,
            0,
            &mut self.gx[..simd],
            &mut self.gy[..simd],
            &mut self.magnitude[..simd],
        );
        self.simd_weights(columns, 0..simd, (vy0, vy1));
        self.finish(columns, rows, vy0, vy1);
    }

    /// The vote weights of pixels `range` of dlib's SIMD part, from their squared gradient
    /// lengths in `magnitude`.
    #[inline(always)]
    fn simd_weights(&mut self, columns: &Columns, range: Range<usize>, (vy0, vy1): (f32, f32)) {
        let [w0, w1, w2, w3] = &mut self.weights;
        let all = w0[range.clone()]
            .iter_mut()
            .zip(&mut w1[range.clone()])
            .zip(&mut w2[range.clone()])
            .zip(&mut w3[range.clone()]);
        let columns = columns.vx1[range.clone()]
            .iter()
            .zip(&columns.vx0[range.clone()]);
        for (((((w0, w1), w2), w3), &m), (&vx1, &vx0)) in
            all.zip(&self.magnitude[range]).zip(columns)
        {
            let v = m.sqrt();
            let (vx1, vx0) = (vx1 * v, vx0 * v);
            (*w0, *w1, *w2, *w3) = (vy1 * vx1, vy0 * vx1, vy1 * vx0, vy0 * vx0);
        }
    }

    /// The rest of [`Self::compute_portable`] after dlib's SIMD part (the first `simd_count`
    /// pixels): the gradients and vote weights of dlib's scalar part, and `at`.
    #[inline(always)]
    fn finish(&mut self, columns: &Columns, rows: [&[u8]; 3], vy0: f32, vy1: f32) {
        let simd = columns.simd_count;
        strongest_gradients::<false>(
            rows,
            simd,
            &mut self.gx[simd..],
            &mut self.gy[simd..],
            &mut self.magnitude[simd..],
        );
        self.at.copy_from_slice(&columns.first_bin);
        let [w0, w1, w2, w3] = &mut self.weights;
        let all = w0
            .iter_mut()
            .zip(w1.iter_mut())
            .zip(w2.iter_mut())
            .zip(w3.iter_mut());
        for (i, ((((w0, w1), w2), w3), &m)) in all.zip(&self.magnitude).enumerate().skip(simd) {
            let v = m.sqrt();
            let (vx1, vx0) = (columns.vx1[i], columns.vx0[i]);
            (*w0, *w1, *w2, *w3) = (vy1 * vx1 * v, vy0 * vx1 * v, vy1 * vx0 * v, vy0 * vx0 * v);
        }
    }

    /// Adds the row's votes into the two histogram rows it votes into, which follow each
    /// other. The four sums a pixel adds to are independent, so one loop keeps four chains of
    /// additions going where [`Self::vote`] keeps two.
    fn vote_both(&self, columns: &Columns, upper: &mut [f32], lower: &mut [f32]) {
        let end = columns.vote_end();
        assert!(
            end <= upper.len() && end <= lower.len(),
            "histogram row too short"
        );
        let [w0, w1, w2, w3] = &self.weights;
        let weights = w0.iter().zip(w1).zip(w2).zip(w3);
        for (&at, (((&w0, &w1), &w2), &w3)) in self.at.iter().zip(weights) {
            let at = at as usize;
            // SAFETY: `at + BINS < vote_end()`, checked above for the whole row.
            unsafe {
                *upper.get_unchecked_mut(at) += w0;
                *lower.get_unchecked_mut(at) += w1;
                *upper.get_unchecked_mut(at + BINS) += w2;
                *lower.get_unchecked_mut(at + BINS) += w3;
            }
        }
    }

    /// Adds the row's votes into one histogram row: the upper (`lower` 0) or lower (1) ones.
    fn vote(&self, columns: &Columns, hist_row: &mut [f32], lower: usize) {
        let end = columns.vote_end();
        assert!(end <= hist_row.len(), "histogram row too short");
        let (left_weights, right_weights) = (&self.weights[lower], &self.weights[2 + lower]);
        for ((&at, &wl), &wr) in self.at.iter().zip(left_weights).zip(right_weights) {
            let at = at as usize;
            // SAFETY: `at + BINS < vote_end()`, checked above for the whole row.
            unsafe {
                *hist_row.get_unchecked_mut(at) += wl;
                *hist_row.get_unchecked_mut(at + BINS) += wr;
            }
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
/// product, 0 for a zero gradient. dlib tests `dot > best` and then `-dot > best` per
/// direction; at most one can hold (best is never negative), so one test of `|dot|` and the
/// sign decide the same.
#[inline(always)]
fn snap(x: f32, y: f32) -> u32 {
    let mut best = 0f32;
    let mut bin = 0u32;
    for (o, &(dx, dy)) in DIRECTIONS.iter().enumerate() {
        let dot = x * dx + y * dy;
        if dot.abs() > best {
            best = dot.abs();
            bin = if dot < 0.0 { o as u32 + 9 } else { o as u32 };
        }
    }
    bin
}

/// [`snap`] and [`strongest_gradients`] (dlib's SIMD part) for whole rows, a vector of pixels
/// at a time: written once over [`Lanes`], compiled for AVX2 and for AVX-512.
#[cfg(target_arch = "x86_64")]
mod vector {
    use std::arch::x86_64::{__m256, __m512};

    use super::{Columns, DIRECTIONS, Scratch, snap, strongest_gradients};
    use crate::kernels::lanes::Lanes;

    /// [`Scratch::compute`] with AVX2, eight pixels at a time.
    #[target_feature(enable = "avx2")]
    pub fn compute_avx2(
        scratch: &mut Scratch,
        columns: &Columns,
        rows: [&[u8]; 3],
        vy: (f32, f32),
    ) {
        // SAFETY: the CPU has AVX2 (this function's features).
        unsafe { compute::<__m256>(scratch, columns, rows, vy) }
    }

    /// [`Scratch::compute`] with AVX-512, sixteen pixels at a time.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub fn compute_avx512(
        scratch: &mut Scratch,
        columns: &Columns,
        rows: [&[u8]; 3],
        vy: (f32, f32),
    ) {
        // SAFETY: the CPU has AVX-512 F and BW (this function's features).
        unsafe { compute::<__m512>(scratch, columns, rows, vy) }
    }

    /// [`Scratch::compute`], `V::LANES` pixels at a time.
    ///
    /// # Safety
    /// The CPU must have `V`'s instructions.
    #[inline(always)]
    unsafe fn compute<V: Lanes>(
        scratch: &mut Scratch,
        columns: &Columns,
        rows: [&[u8]; 3],
        (vy0, vy1): (f32, f32),
    ) {
        // SAFETY: the caller's.
        unsafe { gradients::<V>(scratch, columns, rows, (vy0, vy1)) };
        scratch.finish(columns, rows, vy0, vy1);
        // SAFETY: the caller's.
        unsafe { snap_all::<V>(&mut scratch.at, &scratch.gx, &scratch.gy) };
    }

    /// Byte shuffles that put channel `c` of the four pixels in each 16 bytes (twelve bytes
    /// from the first) into the low (`HIGH` false) or high word of each pixel's 32 bits.
    const fn channel_picks<const HIGH: bool>(c: usize) -> [i8; 32] {
        let mut picks = [-1i8; 32];
        let mut k = 0;
        while k < 8 {
            picks[k * 4 + if HIGH { 2 } else { 0 }] = ((k % 4) * 3 + c) as i8;
            k += 1;
        }
        picks
    }

    /// The gradients and vote weights of dlib's SIMD part of a row (its first `simd_count`
    /// pixels), as [`strongest_gradients::<true>`] and [`Scratch::simd_weights`], `V::LANES`
    /// pixels at a time: per channel, the byte shuffles put `(right, down)` and `(left, up)`
    /// into the two 16-bit halves of 32-bit lanes, one subtraction gives `(dx, dy)` and
    /// `vpmaddwd` its squared length; the channels are chosen with the same comparisons.
    ///
    /// # Safety
    /// The CPU must have `V`'s instructions.
    #[inline(always)]
    unsafe fn gradients<V: Lanes>(
        scratch: &mut Scratch,
        columns: &Columns,
        rows: [&[u8]; 3],
        (vy0, vy1): (f32, f32),
    ) {
        let [above, here, below] = rows;
        let count = columns.simd_count;
        assert!(scratch.gx.len() >= count && scratch.gy.len() >= count);
        assert!(scratch.weights.iter().all(|w| w.len() >= count));
        assert!(columns.vx0.len() >= count && columns.vx1.len() >= count);
        assert!(here.len() >= (count + 2) * 3 && above.len() >= (count + 1) * 3);
        assert!(below.len() >= (count + 1) * 3);
        let done = count / V::LANES * V::LANES;
        // SAFETY: the CPU has `V`'s instructions (the caller's); the loads of pixels read
        // `3 * V::LANES` bytes from pixel `i` or `i + 2` of a row, and the loads and stores of
        // floats `V::LANES` values from `i`, with `i + V::LANES <= count`: inside the rows and
        // slices (asserted above).
        unsafe {
            let low = [
                V::byte_table(&channel_picks::<false>(0)),
                V::byte_table(&channel_picks::<false>(1)),
                V::byte_table(&channel_picks::<false>(2)),
            ];
            let high = [
                V::byte_table(&channel_picks::<true>(0)),
                V::byte_table(&channel_picks::<true>(1)),
                V::byte_table(&channel_picks::<true>(2)),
            ];
            let (vy0_v, vy1_v) = (V::splat(vy0), V::splat(vy1));
            for i in (0..done).step_by(V::LANES) {
                let pixels = [
                    V::load_pixels(here.as_ptr().add(i * 3)),
                    V::load_pixels(here.as_ptr().add((i + 2) * 3)),
                    V::load_pixels(above.as_ptr().add((i + 1) * 3)),
                    V::load_pixels(below.as_ptr().add((i + 1) * 3)),
                ];
                let red = channel::<V>(pixels, low[0], high[0]);
                let green = channel::<V>(pixels, low[1], high[1]);
                let blue = channel::<V>(pixels, low[2], high[2]);
                // Red over green only when strictly stronger, blue unless strictly weaker.
                let red_wins = V::gt_ints(red.1, green.1);
                let first = (
                    V::select_ints(red_wins, red.0, green.0),
                    V::select_ints(red_wins, red.1, green.1),
                );
                let first_wins = V::gt_ints(first.1, blue.1);
                let delta = V::select_ints(first_wins, first.0, blue.0);
                let squared = V::select_ints(first_wins, first.1, blue.1);
                let (dx, dy) = (V::low_i16(delta), V::high_i16(delta));
                let v = V::to_floats(squared).sqrt();
                let vx1 = V::load(columns.vx1.as_ptr().add(i)).mul(v);
                let vx0 = V::load(columns.vx0.as_ptr().add(i)).mul(v);
                V::to_floats(dx).store(scratch.gx.as_mut_ptr().add(i));
                V::to_floats(dy).store(scratch.gy.as_mut_ptr().add(i));
                let [w0, w1, w2, w3] = &mut scratch.weights;
                vy1_v.mul(vx1).store(w0.as_mut_ptr().add(i));
                vy0_v.mul(vx1).store(w1.as_mut_ptr().add(i));
                vy1_v.mul(vx0).store(w2.as_mut_ptr().add(i));
                vy0_v.mul(vx0).store(w3.as_mut_ptr().add(i));
            }
        }
        strongest_gradients::<true>(
            rows,
            done,
            &mut scratch.gx[done..count],
            &mut scratch.gy[done..count],
            &mut scratch.magnitude[done..count],
        );
        scratch.simd_weights(columns, done..count, (vy0, vy1));
    }

    /// `(dx, dy)` of one channel of the pixels (`[left, right, up, down]`, as
    /// [`Lanes::load_pixels`] loads them) in the two 16-bit halves of each lane, and its
    /// squared length: the byte shuffles `low` and `high` put the channel's `(right, down)` and
    /// `(left, up)` side by side, and one subtraction gives both differences. A function, not
    /// a closure, so that it inlines into the caller's instruction set.
    ///
    /// # Safety
    /// The CPU must have `V`'s instructions.
    #[inline(always)]
    unsafe fn channel<V: Lanes>(
        [l, r, u, d]: [V::Ints; 4],
        low: V::Ints,
        high: V::Ints,
    ) -> (V::Ints, V::Ints) {
        // SAFETY: the caller's.
        unsafe {
            let ahead = V::or(V::shuffle_bytes(r, low), V::shuffle_bytes(d, high));
            let behind = V::or(V::shuffle_bytes(l, low), V::shuffle_bytes(u, high));
            let delta = V::sub_i16(ahead, behind);
            (delta, V::squared_length_i16(delta))
        }
    }

    // Directions o and 9 - o (o in 1..5) are mirrored: x * -dx == -(x * dx) exactly, so their
    // dot products are a + b and b - a, with a = x * dx and b = y * dy.
    const _: () = {
        let mut o = 1;
        while o < 5 {
            assert!(DIRECTIONS[9 - o].0 == -DIRECTIONS[o].0);
            assert!(DIRECTIONS[9 - o].1 == DIRECTIONS[o].1);
            o += 1;
        }
    };

    /// Adds the orientation bin of gradient (`gx`, `gy`) to each `at`, `V::LANES` pixels at a
    /// time: per direction, the same products and sum as [`snap`] (the mirrored directions'
    /// products negated, which is exact), and its test `|dot| > best` as a mask; `best` then
    /// becomes `vmaxps(|dot|, best)`, which is `|dot|` exactly when the test holds. The
    /// winning dot product's sign adds the 9 of the opposite orientation at the end.
    ///
    /// # Safety
    /// The CPU must have `V`'s instructions.
    #[inline(always)]
    pub(super) unsafe fn snap_all<V: Lanes>(at: &mut [u32], gx: &[f32], gy: &[f32]) {
        assert!(gx.len() == at.len() && gy.len() == at.len());
        let lanes = V::LANES;
        let done = at.len() / lanes * lanes;
        // SAFETY: the CPU has `V`'s instructions (the caller's); the chunks hold `V::LANES`
        // values each.
        unsafe {
            let zero = V::splat(0.0);
            let mut directions = [(zero, zero); 9];
            for (vector, &(dx, dy)) in directions.iter_mut().zip(&DIRECTIONS) {
                *vector = (V::splat(dx), V::splat(dy));
            }
            let (nine, no_bin) = (V::splat_int(9), V::splat_int(0));
            let pixels = gx.chunks_exact(lanes).zip(gy.chunks_exact(lanes));
            for (at, (x, y)) in at.chunks_exact_mut(lanes).zip(pixels) {
                let (x, y) = (V::load(x.as_ptr()), V::load(y.as_ptr()));
                let first = V::load_ints(at.as_ptr());
                let mut dots = [zero; 9];
                for (o, &(dx, dy)) in directions.iter().enumerate().take(5) {
                    let (a, b) = (x.mul(dx), y.mul(dy));
                    dots[o] = a.add(b);
                    if o > 0 {
                        dots[9 - o] = b.sub(a);
                    }
                }
                let (mut best, mut best_dot) = (zero, zero);
                let mut bin = no_bin;
                for (o, &dot) in dots.iter().enumerate() {
                    let magnitude = dot.abs();
                    let better = magnitude.gt(best);
                    bin = V::select_ints(better, V::splat_int(o as i32), bin);
                    best_dot = V::select(better, dot, best_dot);
                    best = magnitude.max(best);
                }
                let negative = best_dot.lt(zero);
                let bin = V::add_ints(bin, V::select_ints(negative, nine, no_bin));
                V::store_ints(V::add_ints(first, bin), at.as_mut_ptr());
            }
        }
        for ((at, &x), &y) in at[done..].iter_mut().zip(&gx[done..]).zip(&gy[done..]) {
            *at += snap(x, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's votes (orientation bins and weights) with AVX-512 and AVX2 equal the portable
    /// code's, on random rows of odd widths, with bytes from wide and from narrow ranges
    /// (where channels tie often).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_rows_equal_portable() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (width, range) in [
            (4usize, 256),
            (12, 256),
            (27, 4),
            (61, 3),
            (1197, 256),
            (1203, 2),
        ] {
            // As `histograms` with cells of 8 covering the row.
            let visible_nc = width - 1;
            let simd_end = if visible_nc > 8 {
                1 + (visible_nc - 8).div_ceil(8) * 8
            } else {
                1
            };
            let columns = Columns::new(8.0, simd_end, visible_nc);
            let rows: Vec<Vec<u8>> = (0..3)
                .map(|_| (0..width * 3).map(|_| (next() % range) as u8).collect())
                .collect();
            let rows = [&rows[0][..], &rows[1][..], &rows[2][..]];
            let (vy0, vy1) = (0.3125, 0.6875);
            let mut expected = Scratch::new(columns.len());
            expected.compute_portable(&columns, rows, vy0, vy1);
            for ((at, &x), &y) in expected.at.iter_mut().zip(&expected.gx).zip(&expected.gy) {
                *at += snap(x, y);
            }
            for isa in [Isa::Avx512, Isa::Avx2] {
                if Isa::current() < isa {
                    continue;
                }
                let mut got = Scratch::new(columns.len());
                if isa == Isa::Avx512 {
                    // SAFETY: the CPU has AVX-512 (`Isa::current`).
                    unsafe { vector::compute_avx512(&mut got, &columns, rows, (vy0, vy1)) };
                } else {
                    // SAFETY: the CPU has AVX2 (`Isa::current`).
                    unsafe { vector::compute_avx2(&mut got, &columns, rows, (vy0, vy1)) };
                }
                let context = format!("{isa:?}, width {width}, bytes below {range}");
                assert_eq!(got.at, expected.at, "{context}");
                assert_eq!(got.gx, expected.gx, "{context}");
                assert_eq!(got.gy, expected.gy, "{context}");
                assert_eq!(got.weights, expected.weights, "{context}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn snap_avx2(at: &mut [u32], gx: &[f32], gy: &[f32]) {
        // SAFETY: the CPU has AVX2 (this function's features).
        unsafe { vector::snap_all::<std::arch::x86_64::__m256>(at, gx, gy) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn snap_avx512(at: &mut [u32], gx: &[f32], gy: &[f32]) {
        // SAFETY: the CPU has AVX-512 F (this function's features).
        unsafe { vector::snap_all::<std::arch::x86_64::__m512>(at, gx, gy) }
    }

    /// The vector versions of [`snap`] give its bin for every gradient that integer pixels
    /// make (both components in -255..=255), added to what `at` held; the count is odd, so
    /// the leftovers after the last full vector are covered too.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_snaps_equal_scalar() {
        let (gx, gy): (Vec<f32>, Vec<f32>) = (-255..=255)
            .flat_map(|x| (-255..=255).map(move |y| (x as f32, y as f32)))
            .unzip();
        let start = |i: usize| (i % 7) as u32 * 18;
        let expected: Vec<u32> = (0..gx.len())
            .map(|i| start(i) + snap(gx[i], gy[i]))
            .collect();
        for isa in [Isa::Avx512, Isa::Avx2] {
            if Isa::current() < isa {
                continue;
            }
            let mut at: Vec<u32> = (0..gx.len()).map(start).collect();
            if isa == Isa::Avx512 {
                // SAFETY: the CPU has AVX-512 (`Isa::current`).
                unsafe { snap_avx512(&mut at, &gx, &gy) };
            } else {
                // SAFETY: the CPU has AVX2 (`Isa::current`).
                unsafe { snap_avx2(&mut at, &gx, &gy) };
            }
            assert!(at == expected, "{isa:?}");
        }
    }
}
