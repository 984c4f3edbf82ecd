//! dlib's bilinear `resize_image` for RGB images (dlib/image_transforms/interpolation.h),
//! pixel for pixel, with the output rows spread over rayon's threads and each pixel's three
//! channels computed in one vector.
//!
//! Rows are stepped in double precision. Columns are processed in groups of four with
//! single-precision positions that are advanced by `4 * x_scale` each group; every channel is
//! blended in single precision (`tl * w_tl + tr * w_tr + bl * w_bl + br * w_br`, each weight a
//! product of a row and a column weight, summed left to right) and truncated. The last
//! columns, where the right neighbour of the fourth lane would leave the image, are blended
//! in double precision and truncated. The row positions are accumulated serially first, so
//! that every thread sees the values a serial pass would.

use image::RgbImage;
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

/// The four-lane columns of a resize in pairs, for the AVX2 kernel: each pair's byte offsets
/// in a row and the horizontal weights `[1 - lr, lr, 1 - lr, lr]` of both pixels. Only the
/// pairs whose reads (four bytes at each offset and three bytes on) stay inside a row, and
/// whose output (written eight bytes at a time) is followed by two more bytes of lanes.
pub(super) struct Pairs {
    pub offsets: Vec<(u32, u32)>,
    pub weights: Vec<[f32; 8]>,
    /// Bytes per source row.
    pub row_len: usize,
}

impl Pairs {
    fn new(lanes: &[(usize, f32)], in_w: usize) -> Self {
        let row_len = in_w * 3;
        let mut pairs = Self {
            offsets: Vec::with_capacity(lanes.len() / 2),
            weights: Vec::with_capacity(lanes.len() / 2),
            row_len,
        };
        for (k, pair) in lanes.chunks_exact(2).enumerate() {
            let ((left0, lr0), (left1, lr1)) = (pair[0], pair[1]);
            // The second pixel's right neighbour is read from 3 bytes past its left one.
            if left1 * 3 + 3 + 4 > row_len || k * 6 + 8 > lanes.len() * 3 {
                break;
            }
            pairs.offsets.push(((left0 * 3) as u32, (left1 * 3) as u32));
            pairs.weights.push([
                1.0 - lr0,
                lr0,
                1.0 - lr0,
                lr0,
                1.0 - lr1,
                lr1,
                1.0 - lr1,
                lr1,
            ]);
        }
        pairs
    }
}

/// dlib's `resize_image(in, out, interpolate_bilinear())` of an RGB image to `width` x
/// `height`.
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    if width == 0 || height == 0 || image.width() == 0 || image.height() == 0 {
        return out;
    }
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let x_scale = (in_w - 1) as f64 / (out_w.max(2) - 1) as f64;
    let y_scale = (in_h - 1) as f64 / (out_h.max(2) - 1) as f64;
    let columns = Columns::new(in_w, out_w, x_scale);
    let pairs = Pairs::new(&columns.lanes, in_w);
    let rows: Vec<f64> = (0..out_h)
        .scan(-y_scale, |y, _| {
            *y += y_scale;
            Some(*y)
        })
        .collect();
    let src = image.as_raw();
    let dst: &mut [u8] = &mut out;
    dst.par_chunks_exact_mut(out_w * 3)
        .zip(rows)
        .for_each(|(row_out, y)| {
            let top = y.floor() as usize;
            let bottom = (top + 1).min(in_h - 1);
            let rows = (
                &src[top * in_w * 3..(top + 1) * in_w * 3],
                &src[bottom * in_w * 3..(bottom + 1) * in_w * 3],
            );
            resize_row(&columns, &pairs, rows, y - top as f64, row_out);
        });
    out
}

/// One output row from its top and bottom source rows.
fn resize_row(
    columns: &Columns,
    pairs: &Pairs,
    (top, bottom): (&[u8], &[u8]),
    tb_frac: f64,
    out: &mut [u8],
) {
    let (lane_out, tail_out) = out.split_at_mut(columns.lanes.len() * 3);
    let weights = ((1.0 - tb_frac) as f32, tb_frac as f32);
    #[cfg(target_arch = "x86_64")]
    if Isa::current() >= Isa::Avx2 {
        // SAFETY: the CPU has AVX2 (`Isa::current`).
        unsafe { x86::lanes_avx2(&columns.lanes, pairs, (top, bottom), weights, lane_out) };
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

    /// Four bytes from `row` at `at` as floats, the fourth zero when it lies past the row.
    #[target_feature(enable = "sse4.1")]
    fn pixel(row: &[u8], at: usize) -> __m128 {
        let word = match row.get(at..at + 4) {
            Some(bytes) => u32::from_le_bytes(bytes.try_into().expect("four bytes")),
            None => u32::from_le_bytes([row[at], row[at + 1], row[at + 2], 0]),
        };
        _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(word as i32)))
    }

    /// [`lanes_sse41`] two pixels at a time, one in each half of an AVX register, for the
    /// pairs of [`super::Pairs`]; the pixels after them go to [`lanes_sse41`].
    ///
    /// # Safety
    /// The CPU must have AVX2; `pairs` must have been made for these lanes and a row as long
    /// as `top` and `bottom`, and `out` must hold three bytes per lane.
    #[target_feature(enable = "avx2")]
    pub unsafe fn lanes_avx2(
        lanes: &[(usize, f32)],
        pairs: &super::Pairs,
        (top, bottom): (&[u8], &[u8]),
        (inv_tb, tb): (f32, f32),
        out: &mut [u8],
    ) {
        assert!(out.len() >= lanes.len() * 3 && top.len() == bottom.len());
        assert!(pairs.offsets.len() * 2 <= lanes.len() && pairs.row_len == top.len());
        let vertical = _mm256_setr_ps(inv_tb, inv_tb, tb, tb, inv_tb, inv_tb, tb, tb);
        // Picks the low byte of each 32-bit lane (`as i32 as u8`), in each half.
        let low_bytes = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let (top_row, bottom_row, target) = (top.as_ptr(), bottom.as_ptr(), out.as_mut_ptr());
        for (k, (&(at0, at1), horizontal)) in pairs.offsets.iter().zip(&pairs.weights).enumerate() {
            // SAFETY: `Pairs::new` keeps only pairs whose four-byte reads (at the offsets and
            // three bytes on) stay inside a row and whose eight-byte write stays inside the
            // lanes' output.
            unsafe {
                let load = |row: *const u8, at0: usize, at1: usize| {
                    let word = |at: usize| u64::from(row.add(at).cast::<u32>().read_unaligned());
                    let bits = (word(at0) | word(at1) << 32) as i64;
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bits)))
                };
                let (at0, at1) = (at0 as usize, at1 as usize);
                // [tl, tr, bl, br] weights of each pixel.
                let w = _mm256_mul_ps(vertical, _mm256_loadu_ps(horizontal.as_ptr()));
                let tl = _mm256_mul_ps(load(top_row, at0, at1), _mm256_permute_ps::<0x00>(w));
                let tr = _mm256_mul_ps(
                    load(top_row, at0 + 3, at1 + 3),
                    _mm256_permute_ps::<0x55>(w),
                );
                let bl = _mm256_mul_ps(load(bottom_row, at0, at1), _mm256_permute_ps::<0xaa>(w));
                let br = _mm256_mul_ps(
                    load(bottom_row, at0 + 3, at1 + 3),
                    _mm256_permute_ps::<0xff>(w),
                );
                let value = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(tl, tr), bl), br);
                let bytes = _mm256_shuffle_epi8(_mm256_cvttps_epi32(value), low_bytes);
                let first = _mm256_extract_epi32::<0>(bytes) as u32 as u64;
                let second = _mm256_extract_epi32::<4>(bytes) as u32 as u64;
                // Six bytes of the pair and two that the next pixels overwrite.
                target
                    .add(k * 6)
                    .cast::<u64>()
                    .write_unaligned(first & 0xff_ffff | (second & 0xff_ffff) << 24);
            }
        }
        let done = pairs.offsets.len() * 2;
        // SAFETY: AVX2 implies SSE4.1.
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
