//! dlib's bilinear `resize_image` (dlib/image_transforms/interpolation.h), pixel for pixel, for
//! RGB and for 8-bit grey images (dlib has an overload for each, and they round differently),
//! with the output rows spread over rayon's threads. For RGB images, with AVX2 or AVX-512
//! (with VBMI) a row's output bytes (channels) are computed 16 at a time, by one body written
//! over [`Lanes`](super::lanes::Lanes), their source bytes picked by byte shuffles (`vpshufb`,
//! or `vpermb`) from precomputed per-column tables; with SSE4.1 each pixel's three channels
//! form one vector. Grey images are resized by portable code only: they come only from
//! Python callers that load photos with `mode='L'`.
//!
//! Rows are stepped in double precision. Columns are processed in groups of four with
//! single-precision positions that are advanced by `4 * x_scale` each group; every channel is
//! blended in single precision (`tl * w_tl + tr * w_tr + bl * w_bl + br * w_br`, each weight a
//! product of a row and a column weight, summed left to right), then truncated (RGB) or
//! rounded half up (grey). The last columns, where the right neighbour of the fourth lane
//! would leave the image, are blended in double precision (RGB) or in single precision within
//! each row and double precision between them (grey), and truncated. The row positions are
//! accumulated serially first, so that every thread sees the values a serial pass would.

use image::{GrayImage, RgbImage};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::kernels::Isa;

/// The column positions of a resize, the same for every row.
struct Columns {
    /// The four-lane part: left source column and fraction, single precision.
    lanes: Vec<(usize, f32)>,
    /// The rest: left and right source columns and fraction, double precision.
    tail: Vec<(usize, usize, f64)>,
}

impl Columns {
    fn new(in_w: usize, out_w: usize, x_scale: f64) -> Self {
        // The four-lane part advances single-precision lanes by 4 * x_scale until the fourth
        // lane's right neighbour would leave the image.
        let step = (4.0 * x_scale) as f32;
        let start = -4.0 * x_scale;
        let mut positions: [f32; 4] = std::array::from_fn(|k| (start + k as f64 * x_scale) as f32);
        let mut lanes: Vec<(usize, f32)> = Vec::with_capacity(out_w);
        loop {
            for lane in &mut positions {
                *lane += step;
            }
            let left = positions.map(|x| x as i32);
            if left[3] as usize + 1 >= in_w || lanes.len() + 4 > out_w {
                break;
            }
            for k in 0..4 {
                lanes.push((left[k] as usize, positions[k] - left[k] as f32));
            }
        }
        let mut x = -x_scale + lanes.len() as f64 * x_scale;
        let tail = (lanes.len()..out_w)
            .map(|_| {
                x += x_scale;
                let left = x.floor() as usize;
                (left, (left + 1).min(in_w - 1), x - left as f64)
            })
            .collect();
        Self { lanes, tail }
    }
}

/// The four-lane columns of a resize as bytes, for the AVX2 and AVX-512 kernels: per chunk of
/// 16 output bytes (the channels of consecutive pixels), a source byte offset, each output
/// byte's top-left source byte as an offset from it (below 32) and its pixel's horizontal
/// fraction. Only the chunks whose reads (32 bytes from the offset and 32 from three bytes on)
/// stay inside a row.
pub(super) struct Chunks {
    pub starts: Vec<u32>,
    pub picks: Vec<[u8; 16]>,
    pub fractions: Vec<[f32; 16]>,
    /// Bytes per source row.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub row_len: usize,
}

impl Chunks {
    fn new(lanes: &[(usize, f32)], in_w: usize) -> Self {
        let row_len = in_w * 3;
        let count = lanes.len() * 3 / 16;
        let mut chunks = Self {
            starts: Vec::with_capacity(count),
            picks: Vec::with_capacity(count),
            fractions: Vec::with_capacity(count),
            row_len,
        };
        for k in 0..count {
            // Output byte `i` of the chunk: its top-left source byte and fraction.
            let byte = |i: usize| {
                let (left, lr) = lanes[(k * 16 + i) / 3];
                (left * 3 + (k * 16 + i) % 3, lr)
            };
            // The first channel of the chunk's first pixel.
            let start = lanes[k * 16 / 3].0 * 3;
            if byte(15).0 - start >= 32 || start + 3 + 32 > row_len {
                break;
            }
            chunks.starts.push(start as u32);
            chunks
                .picks
                .push(std::array::from_fn(|i| (byte(i).0 - start) as u8));
            chunks.fractions.push(std::array::from_fn(|i| byte(i).1));
        }
        chunks
    }
}

/// The source positions of a resize of an `in_w` x `in_h` image to `out_w` x `out_h`: its
/// columns and each output row's source row position.
struct Positions {
    columns: Columns,
    rows: Vec<f64>,
}

impl Positions {
    fn new((in_w, in_h): (usize, usize), (out_w, out_h): (usize, usize)) -> Self {
        let x_scale = (in_w - 1) as f64 / (out_w.max(2) - 1) as f64;
        let y_scale = (in_h - 1) as f64 / (out_h.max(2) - 1) as f64;
        let rows = (0..out_h)
            .scan(-y_scale, |y, _| {
                *y += y_scale;
                Some(*y)
            })
            .collect();
        Self {
            columns: Columns::new(in_w, out_w, x_scale),
            rows,
        }
    }
}

/// The top and bottom source rows of output row position `y`, `row_len` bytes each, and the
/// vertical fraction.
fn source_rows(src: &[u8], row_len: usize, in_h: usize, y: f64) -> ((&[u8], &[u8]), f64) {
    let top = y.floor() as usize;
    let bottom = (top + 1).min(in_h - 1);
    let row = |r: usize| &src[r * row_len..(r + 1) * row_len];
    ((row(top), row(bottom)), y - top as f64)
}

/// dlib's `resize_image(in, out, interpolate_bilinear())` of an RGB image to `width` x
/// `height`.
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    if width == 0 || height == 0 || image.width() == 0 || image.height() == 0 {
        return out;
    }
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let out_w = width as usize;
    let positions = Positions::new((in_w, in_h), (out_w, height as usize));
    let chunks = Chunks::new(&positions.columns.lanes, in_w);
    let src = image.as_raw();
    let dst: &mut [u8] = &mut out;
    dst.par_chunks_exact_mut(out_w * 3)
        .zip(positions.rows)
        .for_each(|(row_out, y)| {
            let (rows, tb_frac) = source_rows(src, in_w * 3, in_h, y);
            resize_row(&positions.columns, &chunks, rows, tb_frac, row_out);
        });
    out
}

/// dlib's `resize_image(in, out, interpolate_bilinear())` of an 8-bit grey image to `width` x
/// `height`: the positions of [`resize_rgb`], with the grey overload's rounding.
pub fn resize_grey(image: &GrayImage, width: u32, height: u32) -> GrayImage {
    let mut out = GrayImage::new(width, height);
    if width == 0 || height == 0 || image.width() == 0 || image.height() == 0 {
        return out;
    }
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let out_w = width as usize;
    let positions = Positions::new((in_w, in_h), (out_w, height as usize));
    let src = image.as_raw();
    let dst: &mut [u8] = &mut out;
    dst.par_chunks_exact_mut(out_w)
        .zip(positions.rows)
        .for_each(|(row_out, y)| {
            let (rows, tb_frac) = source_rows(src, in_w, in_h, y);
            resize_grey_row(&positions.columns, rows, tb_frac, row_out);
        });
    out
}

/// One output row of a grey image from its top and bottom source rows. The four-lane part
/// rounds half up (`value + 0.5`, truncated); the last columns blend each row in single
/// precision, weigh the two rows in double precision, and truncate the single-precision result.
fn resize_grey_row(columns: &Columns, (top, bottom): (&[u8], &[u8]), tb_frac: f64, out: &mut [u8]) {
    let (lane_out, tail_out) = out.split_at_mut(columns.lanes.len());
    let (inv_tb, tb) = ((1.0 - tb_frac) as f32, tb_frac as f32);
    for (value, &(left, lr)) in lane_out.iter_mut().zip(&columns.lanes) {
        let inv_lr = 1.0 - lr;
        let blended = inv_tb * inv_lr * f32::from(top[left])
            + inv_tb * lr * f32::from(top[left + 1])
            + tb * inv_lr * f32::from(bottom[left])
            + tb * lr * f32::from(bottom[left + 1]);
        *value = (f64::from(blended) + 0.5) as u8;
    }
    for (value, &(left, right, lr)) in tail_out.iter_mut().zip(&columns.tail) {
        let lr = lr as f32;
        let across = |row: &[u8]| (1.0 - lr) * f32::from(row[left]) + lr * f32::from(row[right]);
        let blended =
            (1.0 - tb_frac) * f64::from(across(top)) + tb_frac * f64::from(across(bottom));
        *value = blended as f32 as u8;
    }
}

/// One output row from its top and bottom source rows.
fn resize_row(
    columns: &Columns,
    // The chunk tables serve the x86 vector kernels only.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] chunks: &Chunks,
    (top, bottom): (&[u8], &[u8]),
    tb_frac: f64,
    out: &mut [u8],
) {
    let (lane_out, tail_out) = out.split_at_mut(columns.lanes.len() * 3);
    let weights = ((1.0 - tb_frac) as f32, tb_frac as f32);
    #[cfg(target_arch = "x86_64")]
    if Isa::current() >= Isa::Avx512 && std::is_x86_feature_detected!("avx512vbmi") {
        // SAFETY: the CPU has AVX-512 F and BW (`Isa::current`) and VBMI.
        unsafe { x86::lanes_avx512(&columns.lanes, chunks, (top, bottom), weights, lane_out) };
    } else if Isa::current() >= Isa::Avx2 {
        // SAFETY: the CPU has AVX2 (`Isa::current`).
        unsafe { x86::lanes_avx2(&columns.lanes, chunks, (top, bottom), weights, lane_out) };
    } else if Isa::current() >= Isa::Sse41 {
        // SAFETY: the CPU has SSE4.1 (`Isa::current`).
        unsafe { x86::lanes_sse41(&columns.lanes, (top, bottom), weights, lane_out) };
    } else {
        lanes_portable(&columns.lanes, (top, bottom), weights, lane_out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    lanes_portable(&columns.lanes, (top, bottom), weights, lane_out);
    for (pixel, &(left, right, lr)) in tail_out.chunks_exact_mut(3).zip(&columns.tail) {
        for ch in 0..3 {
            let value = (1.0 - tb_frac)
                * ((1.0 - lr) * f64::from(top[left * 3 + ch])
                    + lr * f64::from(top[right * 3 + ch]))
                + tb_frac
                    * ((1.0 - lr) * f64::from(bottom[left * 3 + ch])
                        + lr * f64::from(bottom[right * 3 + ch]));
            pixel[ch] = value as u8;
        }
    }
}

/// The four-lane columns of a row, one channel at a time.
fn lanes_portable(
    lanes: &[(usize, f32)],
    (top, bottom): (&[u8], &[u8]),
    (inv_tb, tb): (f32, f32),
    out: &mut [u8],
) {
    for (pixel, &(left, lr)) in out.chunks_exact_mut(3).zip(lanes) {
        let inv_lr = 1.0 - lr;
        let (tlf, trf) = (inv_tb * inv_lr, inv_tb * lr);
        let (blf, brf) = (tb * inv_lr, tb * lr);
        let (tl, tr) = (
            &top[left * 3..left * 3 + 3],
            &top[left * 3 + 3..left * 3 + 6],
        );
        let (bl, br) = (
            &bottom[left * 3..left * 3 + 3],
            &bottom[left * 3 + 3..left * 3 + 6],
        );
        for ch in 0..3 {
            let value = tlf * f32::from(tl[ch])
                + trf * f32::from(tr[ch])
                + blf * f32::from(bl[ch])
                + brf * f32::from(br[ch]);
            pixel[ch] = value as i32 as u8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::kernels::lanes::Lanes;

    /// Four bytes from `row` at `at` as floats, the fourth zero when it lies past the row.
    #[target_feature(enable = "sse4.1")]
    fn pixel(row: &[u8], at: usize) -> __m128 {
        let word = match row.get(at..at + 4) {
            Some(bytes) => u32::from_le_bytes(bytes.try_into().expect("four bytes")),
            None => u32::from_le_bytes([row[at], row[at + 1], row[at + 2], 0]),
        };
        _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(word as i32)))
    }

    /// [`super::lanes_portable`] with AVX2: 16 output bytes (channels) at a time, in two
    /// vectors of eight floats, their source bytes picked by byte shuffles of the 16 bytes
    /// below and above; the pixels after the chunks go to [`lanes_sse41`].
    ///
    /// # Safety
    /// The CPU must have AVX2; `chunks` must have been made for these lanes and a row as long
    /// as `top` and `bottom`, and `out` must hold three bytes per lane.
    #[target_feature(enable = "avx2")]
    pub unsafe fn lanes_avx2(
        lanes: &[(usize, f32)],
        chunks: &super::Chunks,
        rows: (&[u8], &[u8]),
        weights: (f32, f32),
        out: &mut [u8],
    ) {
        // SAFETY: the caller's.
        unsafe { lanes_vector::<__m256>(lanes, chunks, rows, weights, out) }
    }

    /// [`lanes_avx2`] with the 16 output bytes of a chunk in one vector of 16 floats, their
    /// source bytes picked straight into 32-bit lanes by `vpermb`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VBMI; `chunks` must have been made for these lanes
    /// and a row as long as `top` and `bottom`, and `out` must hold three bytes per lane.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx2")]
    pub unsafe fn lanes_avx512(
        lanes: &[(usize, f32)],
        chunks: &super::Chunks,
        rows: (&[u8], &[u8]),
        weights: (f32, f32),
        out: &mut [u8],
    ) {
        // SAFETY: the caller's.
        unsafe { lanes_vector::<__m512>(lanes, chunks, rows, weights, out) }
    }

    /// [`super::lanes_portable`] for 16 output bytes (channels) at a time, in `16 / V::LANES`
    /// vectors, for the chunks of [`super::Chunks`]: each output byte's top-left and
    /// top-right source bytes are picked from the 32 bytes of the row from the chunk's offset
    /// and from three bytes on, and blended with the same products and sums, in the same
    /// order. The pixels after the chunks go to [`lanes_sse41`].
    ///
    /// # Safety
    /// The CPU must have `V`'s instructions and SSE4.1; `chunks` must have been made for these
    /// lanes and a row as long as `top` and `bottom`, and `out` must hold three bytes per lane.
    #[inline(always)]
    unsafe fn lanes_vector<V: Lanes>(
        lanes: &[(usize, f32)],
        chunks: &super::Chunks,
        (top, bottom): (&[u8], &[u8]),
        (inv_tb, tb): (f32, f32),
        out: &mut [u8],
    ) {
        assert!(out.len() >= lanes.len() * 3 && top.len() == bottom.len());
        assert!(chunks.starts.len() * 16 <= lanes.len() * 3 && chunks.row_len == top.len());
        let parts = chunks
            .starts
            .iter()
            .zip(&chunks.picks)
            .zip(&chunks.fractions);
        // SAFETY: the CPU has `V`'s instructions (the caller's); `Chunks::new` keeps only
        // chunks whose reads (32 bytes from the offset and from three bytes on) stay inside a
        // row, and chunk `k`'s 16 output bytes lie inside the lanes' output.
        unsafe {
            let (inv_tb_v, tb_v) = (V::splat(inv_tb), V::splat(tb));
            let one = V::splat(1.0);
            for (k, ((&at, picks), fractions)) in parts.enumerate() {
                // No closures here: they would not inline into the caller's instruction set.
                let picks = V::picks(picks);
                let (top_at, bottom_at) = (
                    top.as_ptr().add(at as usize),
                    bottom.as_ptr().add(at as usize),
                );
                let (tl, tr) = (V::pick(top_at, picks), V::pick(top_at.add(3), picks));
                let (bl, br) = (V::pick(bottom_at, picks), V::pick(bottom_at.add(3), picks));
                let mut values = [one; 2];
                for (half, value) in values.iter_mut().enumerate().take(16 / V::LANES) {
                    let lr = V::load(fractions.as_ptr().add(half * V::LANES));
                    let inv_lr = one.sub(lr);
                    let tl = inv_tb_v.mul(inv_lr).mul(V::picked_floats(tl, half));
                    let tr = inv_tb_v.mul(lr).mul(V::picked_floats(tr, half));
                    let bl = tb_v.mul(inv_lr).mul(V::picked_floats(bl, half));
                    let br = tb_v.mul(lr).mul(V::picked_floats(br, half));
                    *value = tl.add(tr).add(bl).add(br);
                }
                V::store_low_bytes(values, out.as_mut_ptr().add(k * 16));
            }
        }
        let done = chunks.starts.len() * 16 / 3;
        // SAFETY: AVX2 and AVX-512 imply SSE4.1.
        unsafe {
            lanes_sse41(
                &lanes[done..],
                (top, bottom),
                (inv_tb, tb),
                &mut out[done * 3..],
            )
        };
    }

    /// [`super::lanes_portable`] with the three channels of a pixel in one vector (the same
    /// products and sums, in the same order, per channel).
    ///
    /// # Safety
    /// The CPU must have SSE4.1.
    #[target_feature(enable = "sse4.1")]
    pub unsafe fn lanes_sse41(
        lanes: &[(usize, f32)],
        (top, bottom): (&[u8], &[u8]),
        (inv_tb, tb): (f32, f32),
        out: &mut [u8],
    ) {
        let vertical = _mm_setr_ps(inv_tb, inv_tb, tb, tb);
        // Picks the low byte of each 32-bit lane (`as i32 as u8`).
        let low_bytes = _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        for (pixel_out, &(left, lr)) in out.chunks_exact_mut(3).zip(lanes) {
            let horizontal = _mm_setr_ps(1.0 - lr, lr, 1.0 - lr, lr);
            // [tl, tr, bl, br] weights.
            let w = _mm_mul_ps(vertical, horizontal);
            let at = left * 3;
            let value = {
                let tl = _mm_mul_ps(pixel(top, at), _mm_shuffle_ps::<0x00>(w, w));
                let tr = _mm_mul_ps(pixel(top, at + 3), _mm_shuffle_ps::<0x55>(w, w));
                let bl = _mm_mul_ps(pixel(bottom, at), _mm_shuffle_ps::<0xaa>(w, w));
                let br = _mm_mul_ps(pixel(bottom, at + 3), _mm_shuffle_ps::<0xff>(w, w));
                _mm_add_ps(_mm_add_ps(_mm_add_ps(tl, tr), bl), br)
            };
            let bytes = _mm_shuffle_epi8(_mm_cvttps_epi32(value), low_bytes);
            let word = (_mm_cvtsi128_si32(bytes) as u32).to_le_bytes();
            pixel_out.copy_from_slice(&word[..3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector kernel the CPU has gives the portable kernel's bytes, on random rows of
    /// pyramid-like and odd sizes (so that chunks, leftover pixels and row ends all occur).
    #[test]
    fn vector_lanes_equal_portable() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (in_w, out_w) in [
            (1200, 2399),
            (2399, 1999),
            (1999, 1666),
            (37, 31),
            (17, 29),
            (101, 50),
            (6, 5),
        ] {
            let x_scale = (in_w - 1) as f64 / (out_w.max(2) - 1) as f64;
            let columns = Columns::new(in_w, out_w, x_scale);
            let chunks = Chunks::new(&columns.lanes, in_w);
            // On pyramid sizes the chunks cover all but the row's end.
            if in_w > 1000 {
                assert!(chunks.starts.len() * 16 + 64 > columns.lanes.len() * 3);
            }
            let rows: Vec<Vec<u8>> = (0..2)
                .map(|_| (0..in_w * 3).map(|_| next() as u8).collect())
                .collect();
            let (top, bottom) = (&rows[0][..], &rows[1][..]);
            for _ in 0..8 {
                let tb = (next() % 1000) as f32 / 1000.0;
                let weights = (1.0 - tb, tb);
                let mut expected = vec![0; columns.lanes.len() * 3];
                lanes_portable(&columns.lanes, (top, bottom), weights, &mut expected);
                #[cfg(target_arch = "x86_64")]
                for isa in [Isa::Sse41, Isa::Avx2, Isa::Avx512] {
                    let vbmi = std::is_x86_feature_detected!("avx512vbmi");
                    if Isa::current() < isa || isa == Isa::Avx512 && !vbmi {
                        continue;
                    }
                    let mut got = vec![0; expected.len()];
                    // SAFETY: the CPU has `isa` (`Isa::current`), with VBMI for AVX-512;
                    // `chunks` were made for these lanes and rows.
                    unsafe {
                        match isa {
                            Isa::Avx512 => x86::lanes_avx512(
                                &columns.lanes,
                                &chunks,
                                (top, bottom),
                                weights,
                                &mut got,
                            ),
                            Isa::Avx2 => x86::lanes_avx2(
                                &columns.lanes,
                                &chunks,
                                (top, bottom),
                                weights,
                                &mut got,
                            ),
                            _ => x86::lanes_sse41(&columns.lanes, (top, bottom), weights, &mut got),
                        }
                    }
                    let wrong = got.iter().zip(&expected).position(|(a, b)| a != b);
                    assert_eq!(wrong, None, "{isa:?}, {in_w} -> {out_w}, tb {tb}");
                }
            }
        }
    }
}
