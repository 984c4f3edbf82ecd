//! One vector algorithm for several register widths. [`Lanes`] is the handful of operations
//! the vector kernels need (loads, stores, arithmetic, comparisons, selects, the byte work of
//! the FHOG gradients and of the bilinear resize), implemented for AVX2's `__m256` (8 floats)
//! and AVX-512's `__m512` (16 floats), the way memchr's `Vector` trait serves several widths.
//! A kernel is written once as an `#[inline(always)]` function generic over `V: Lanes` and
//! instantiated inside a `#[target_feature(enable = ...)]` wrapper per instruction set, so that
//! every operation inlines into the wrapper and compiles to the instructions written by hand
//! before.
//!
//! Every operation is the same instruction (or the same result bit for bit) at each width, so
//! a kernel gives the same values at every width; dlib's own SIMD code, which the kernels
//! reproduce, is one of these widths' results lane by lane.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A vector of [`Lanes::LANES`] floats, with vectors of as many 32-bit integers
/// ([`Lanes::Ints`], also read as pairs of 16-bit integers or as bytes) and lane masks.
///
/// # Safety
/// Every function may use the instructions of its implementation's instruction set: the
/// caller must make sure that the CPU has them (`Isa::current`). Loads and stores read or
/// write `LANES` values (or the bytes said) from the pointer given, which must be valid for
/// them.
pub(crate) trait Lanes: Copy {
    /// Floats (and 32-bit integers) per vector.
    const LANES: usize;
    /// `LANES` 32-bit integers.
    type Ints: Copy;
    /// One bit of truth per lane, from a comparison.
    type Mask: Copy;
    /// The resize's byte picks of a chunk, as [`Lanes::pick`] uses them.
    type Picks: Copy;
    /// The sixteen bytes [`Lanes::pick`] picks, as [`Lanes::picked_floats`] reads them.
    type Picked: Copy;

    /// `value` in every lane.
    unsafe fn splat(value: f32) -> Self;
    /// `LANES` floats from `from`.
    unsafe fn load(from: *const f32) -> Self;
    /// The lanes to `to`.
    unsafe fn store(self, to: *mut f32);
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
    unsafe fn mul(self, other: Self) -> Self;
    /// `vmaxps`: `self > other ? self : other`, lane by lane.
    unsafe fn max(self, other: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    /// The lanes without their sign bits.
    unsafe fn abs(self) -> Self;
    /// `self > other`, ordered: false when either is NaN.
    unsafe fn gt(self, other: Self) -> Self::Mask;
    /// `self < other`, ordered.
    unsafe fn lt(self, other: Self) -> Self::Mask;
    /// `mask ? if_true : if_false`, lane by lane.
    unsafe fn select(mask: Self::Mask, if_true: Self, if_false: Self) -> Self;

    /// `value` in every integer lane.
    unsafe fn splat_int(value: i32) -> Self::Ints;
    /// `LANES` integers from `from`.
    unsafe fn load_ints(from: *const u32) -> Self::Ints;
    /// The integer lanes to `to`.
    unsafe fn store_ints(ints: Self::Ints, to: *mut u32);
    /// Lane by lane, wrapping.
    unsafe fn add_ints(a: Self::Ints, b: Self::Ints) -> Self::Ints;
    /// `a > b`, signed.
    unsafe fn gt_ints(a: Self::Ints, b: Self::Ints) -> Self::Mask;
    /// `mask ? if_true : if_false`, lane by lane.
    unsafe fn select_ints(
        mask: Self::Mask,
        if_true: Self::Ints,
        if_false: Self::Ints,
    ) -> Self::Ints;
    /// The integers as floats.
    unsafe fn to_floats(ints: Self::Ints) -> Self;
    /// Bitwise or.
    unsafe fn or(a: Self::Ints, b: Self::Ints) -> Self::Ints;

    /// The `LANES` three-byte pixels from `from`, each four pixels' twelve bytes in 16 bytes of
    /// the vector (the last pixel's three bytes repeated after them); reads `3 * LANES` bytes.
    unsafe fn load_pixels(from: *const u8) -> Self::Ints;
    /// A byte shuffle for [`Lanes::shuffle_bytes`]: the 32 bytes of `table` in every 32 bytes.
    unsafe fn byte_table(table: &[i8; 32]) -> Self::Ints;
    /// `vpshufb`: each byte of each 16 bytes becomes the byte of those 16 that `table`'s byte
    /// names (its low four bits), or zero where `table`'s byte is negative.
    unsafe fn shuffle_bytes(bytes: Self::Ints, table: Self::Ints) -> Self::Ints;
    /// `a - b` in 16-bit lanes, wrapping.
    unsafe fn sub_i16(a: Self::Ints, b: Self::Ints) -> Self::Ints;
    /// `vpmaddwd` of `a` with itself: per 32-bit lane, the sum of the squares of its two 16-bit
    /// halves.
    unsafe fn squared_length_i16(a: Self::Ints) -> Self::Ints;
    /// The low 16 bits of each 32-bit lane, sign-extended.
    unsafe fn low_i16(a: Self::Ints) -> Self::Ints;
    /// The high 16 bits of each 32-bit lane, sign-extended.
    unsafe fn high_i16(a: Self::Ints) -> Self::Ints;

    /// The byte picks of a resize chunk: 16 offsets, each below 32.
    unsafe fn picks(picks: &[u8; 16]) -> Self::Picks;
    /// The bytes at `picks` in the 32 bytes from `from`.
    unsafe fn pick(from: *const u8, picks: Self::Picks) -> Self::Picked;
    /// Picked bytes `half * LANES..(half + 1) * LANES` (`half` below `16 / LANES`) as floats.
    unsafe fn picked_floats(picked: Self::Picked, half: usize) -> Self;
    /// The low bytes of the lanes' values truncated to integers (`value as i32 as u8`), of the
    /// first `16 / LANES` vectors of `values`, to the 16 bytes from `to`.
    unsafe fn store_low_bytes(values: [Self; 2], to: *mut u8);
}

#[cfg(target_arch = "x86_64")]
impl Lanes for __m256 {
    const LANES: usize = 8;
    type Ints = __m256i;
    /// All bits of a lane set where true.
    type Mask = __m256i;
    /// The shuffle and, in each byte's bit 7, whether it picks from the upper 16 bytes.
    type Picks = (__m128i, __m128i);
    type Picked = __m128i;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        unsafe { _mm256_set1_ps(value) }
    }
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        unsafe { _mm256_loadu_ps(from) }
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        unsafe { _mm256_storeu_ps(to, self) }
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        unsafe { _mm256_add_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        unsafe { _mm256_sub_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        unsafe { _mm256_mul_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        unsafe { _mm256_max_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        unsafe { _mm256_sqrt_ps(self) }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe { _mm256_and_ps(self, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX))) }
    }
    #[inline(always)]
    unsafe fn gt(self, other: Self) -> Self::Mask {
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(self, other)) }
    }
    #[inline(always)]
    unsafe fn lt(self, other: Self) -> Self::Mask {
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(self, other)) }
    }
    #[inline(always)]
    unsafe fn select(mask: Self::Mask, if_true: Self, if_false: Self) -> Self {
        unsafe { _mm256_blendv_ps(if_false, if_true, _mm256_castsi256_ps(mask)) }
    }

    #[inline(always)]
    unsafe fn splat_int(value: i32) -> Self::Ints {
        unsafe { _mm256_set1_epi32(value) }
    }
    #[inline(always)]
    unsafe fn load_ints(from: *const u32) -> Self::Ints {
        unsafe { _mm256_loadu_si256(from.cast()) }
    }
    #[inline(always)]
    unsafe fn store_ints(ints: Self::Ints, to: *mut u32) {
        unsafe { _mm256_storeu_si256(to.cast(), ints) }
    }
    #[inline(always)]
    unsafe fn add_ints(a: Self::Ints, b: Self::Ints) -> Self::Ints {
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn gt_ints(a: Self::Ints, b: Self::Ints) -> Self::Mask {
        unsafe { _mm256_cmpgt_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn select_ints(
        mask: Self::Mask,
        if_true: Self::Ints,
        if_false: Self::Ints,
    ) -> Self::Ints {
        unsafe { _mm256_blendv_epi8(if_false, if_true, mask) }
    }
    #[inline(always)]
    unsafe fn to_floats(ints: Self::Ints) -> Self {
        unsafe { _mm256_cvtepi32_ps(ints) }
    }
    #[inline(always)]
    unsafe fn or(a: Self::Ints, b: Self::Ints) -> Self::Ints {
        unsafe { _mm256_or_si256(a, b) }
    }

    #[inline(always)]
    unsafe fn load_pixels(from: *const u8) -> Self::Ints {
        unsafe {
            let head = _mm256_castsi128_si256(_mm_loadu_si128(from.cast()));
            let bytes = _mm256_inserti128_si256::<1>(head, _mm_loadl_epi64(from.add(16).cast()));
            _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 1, 2, 3, 3, 4, 5, 6))
        }
    }
    #[inline(always)]
    unsafe fn byte_table(table: &[i8; 32]) -> Self::Ints {
        unsafe { _mm256_loadu_si256(table.as_ptr().cast()) }
    }
    #[inline(always)]
    unsafe fn shuffle_bytes(bytes: Self::Ints, table: Self::Ints) -> Self::Ints {
        unsafe { _mm256_shuffle_epi8(bytes, table) }
    }
    #[inline(always)]
    unsafe fn sub_i16(a: Self::Ints, b: Self::Ints) -> Self::Ints {
        unsafe { _mm256_sub_epi16(a, b) }
    }
    #[inline(always)]
    unsafe fn squared_length_i16(a: Self::Ints) -> Self::Ints {
        unsafe { _mm256_madd_epi16(a, a) }
    }
    #[inline(always)]
    unsafe fn low_i16(a: Self::Ints) -> Self::Ints {
        unsafe { _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(a)) }
    }
    #[inline(always)]
    unsafe fn high_i16(a: Self::Ints) -> Self::Ints {
        unsafe { _mm256_srai_epi32::<16>(a) }
    }

    #[inline(always)]
    unsafe fn picks(picks: &[u8; 16]) -> Self::Picks {
        unsafe {
            let picks = _mm_loadu_si128(picks.as_ptr().cast());
            (picks, _mm_slli_epi16::<3>(picks))
        }
    }
    /// Two byte shuffles, of the lower and of the upper 16 bytes, blended.
    #[inline(always)]
    unsafe fn pick(from: *const u8, (picks, upper): Self::Picks) -> Self::Picked {
        unsafe {
            let (low, high) = (
                _mm_loadu_si128(from.cast()),
                _mm_loadu_si128(from.add(16).cast()),
            );
            _mm_blendv_epi8(
                _mm_shuffle_epi8(low, picks),
                _mm_shuffle_epi8(high, picks),
                upper,
            )
        }
    }
    #[inline(always)]
    unsafe fn picked_floats(picked: Self::Picked, half: usize) -> Self {
        unsafe {
            let bytes = if half == 0 {
                picked
            } else {
                _mm_unpackhi_epi64(picked, picked)
            };
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes))
        }
    }
    #[inline(always)]
    unsafe fn store_low_bytes([first, second]: [Self; 2], to: *mut u8) {
        unsafe {
            let low_byte = _mm256_set1_epi32(0xff);
            let bytes = |v| _mm256_and_si256(_mm256_cvttps_epi32(v), low_byte);
            let words =
                _mm256_permute4x64_epi64::<0xd8>(_mm256_packus_epi32(bytes(first), bytes(second)));
            let bytes = _mm_packus_epi16(
                _mm256_castsi256_si128(words),
                _mm256_extracti128_si256::<1>(words),
            );
            _mm_storeu_si128(to.cast(), bytes);
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for __m512 {
    const LANES: usize = 16;
    type Ints = __m512i;
    type Mask = __mmask16;
    /// The picks, each in the low byte of a 32-bit lane.
    type Picks = __m512i;
    /// The bytes, each in the low byte of a 32-bit lane.
    type Picked = __m512i;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        unsafe { _mm512_set1_ps(value) }
    }
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        unsafe { _mm512_loadu_ps(from) }
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        unsafe { _mm512_storeu_ps(to, self) }
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        unsafe { _mm512_add_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        unsafe { _mm512_sub_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        unsafe { _mm512_mul_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        unsafe { _mm512_max_ps(self, other) }
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        unsafe { _mm512_sqrt_ps(self) }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe { _mm512_abs_ps(self) }
    }
    #[inline(always)]
    unsafe fn gt(self, other: Self) -> Self::Mask {
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self, other) }
    }
    #[inline(always)]
    unsafe fn lt(self, other: Self) -> Self::Mask {
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self, other) }
    }
    #[inline(always)]
    unsafe fn select(mask: Self::Mask, if_true: Self, if_false: Self) -> Self {
        unsafe { _mm512_mask_mov_ps(if_false, mask, if_true) }
    }

    #[inline(always)]
    unsafe fn splat_int(value: i32) -> Self::Ints {
        unsafe { _mm512_set1_epi32(value) }
    }
    #[inline(always)]
    unsafe fn load_ints(from: *const u32) -> Self::Ints {
        unsafe { _mm512_loadu_si512(from.cast()) }
    }
    #[inline(always)]
    unsafe fn store_ints(ints: Self::Ints, to: *mut u32) {
        unsafe { _mm512_storeu_si512(to.cast(), ints) }
    }
    #[inline(always)]
    unsafe fn add_ints(a: Self::Ints, b: Self::Ints) -> Self::Ints {
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn gt_ints(a: Self::Ints, b: Self::Ints) -> Self::Mask {
        unsafe { _mm512_cmpgt_epi32_mask(a, b) }
    }
    #[inline(always)]
    unsafe fn select_ints(
        mask: Self::Mask,
        if_true: Self::Ints,
        if_false: Self::Ints,
    ) -> Self::Ints {
        unsafe { _mm512_mask_blend_epi32(mask, if_false, if_true) }
    }
    #[inline(always)]
    unsafe fn to_floats(ints: Self::Ints) -> Self {
        unsafe { _mm512_cvtepi32_ps(ints) }
    }
    #[inline(always)]
    unsafe fn or(a: Self::Ints, b: Self::Ints) -> Self::Ints {
        unsafe { _mm512_or_si512(a, b) }
    }

    #[inline(always)]
    unsafe fn load_pixels(from: *const u8) -> Self::Ints {
        unsafe {
            let head = _mm512_castsi256_si512(_mm256_loadu_si256(from.cast()));
            let bytes = _mm512_inserti32x4::<2>(head, _mm_loadu_si128(from.add(32).cast()));
            let spread = _mm512_setr_epi32(0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12);
            _mm512_permutexvar_epi32(spread, bytes)
        }
    }
    #[inline(always)]
    unsafe fn byte_table(table: &[i8; 32]) -> Self::Ints {
        unsafe { _mm512_broadcast_i64x4(_mm256_loadu_si256(table.as_ptr().cast())) }
    }
    #[inline(always)]
    unsafe fn shuffle_bytes(bytes: Self::Ints, table: Self::Ints) -> Self::Ints {
        unsafe { _mm512_shuffle_epi8(bytes, table) }
    }
    #[inline(always)]
    unsafe fn sub_i16(a: Self::Ints, b: Self::Ints) -> Self::Ints {
        unsafe { _mm512_sub_epi16(a, b) }
    }
    #[inline(always)]
    unsafe fn squared_length_i16(a: Self::Ints) -> Self::Ints {
        unsafe { _mm512_madd_epi16(a, a) }
    }
    #[inline(always)]
    unsafe fn low_i16(a: Self::Ints) -> Self::Ints {
        unsafe { _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(a)) }
    }
    #[inline(always)]
    unsafe fn high_i16(a: Self::Ints) -> Self::Ints {
        unsafe { _mm512_srai_epi32::<16>(a) }
    }

    #[inline(always)]
    unsafe fn picks(picks: &[u8; 16]) -> Self::Picks {
        unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(picks.as_ptr().cast())) }
    }
    /// One `vpermb` (AVX-512 VBMI) straight into 32-bit lanes.
    #[inline(always)]
    unsafe fn pick(from: *const u8, picks: Self::Picks) -> Self::Picked {
        unsafe {
            let window = _mm256_loadu_si256(from.cast());
            _mm512_maskz_permutexvar_epi8(
                0x1111_1111_1111_1111,
                picks,
                _mm512_castsi256_si512(window),
            )
        }
    }
    #[inline(always)]
    unsafe fn picked_floats(picked: Self::Picked, _half: usize) -> Self {
        unsafe { _mm512_cvtepi32_ps(picked) }
    }
    #[inline(always)]
    unsafe fn store_low_bytes([values, _]: [Self; 2], to: *mut u8) {
        unsafe { _mm_storeu_si128(to.cast(), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(values))) }
    }
}
