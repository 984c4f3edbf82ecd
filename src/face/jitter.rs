//! Random perturbations of a face chip, for face_recognition's `num_jitters`.
//!
//! With `num_jitters > 1`, dlib's `compute_face_descriptor` embeds that many randomly jittered
//! copies of each chip and averages the descriptors. A jittered copy is dlib's `jitter_image`:
//! the chip re-cut from a square shrunk by 3 pixels on each side, moved by up to 2% of its
//! size, scaled by 0.97 to 1, rotated by up to 3 degrees, and mirrored half of the time.
//!
//! The random numbers are dlib's own: [`DlibRand`] is `dlib::rand` (a 32-bit Mersenne Twister
//! with its default seed, 10,000 draws discarded, doubles made of two 24-bit draws), and the
//! draws are taken in the order dlib's `jitter_image` takes them. A fresh generator gives the
//! jitters of the first call on a fresh dlib face encoder (face_recognition's first
//! `face_encodings` call in a process); dlib's encoder keeps its generator between calls.

use image::RgbImage;
use image::imageops::flip_horizontal;
use rand_mt::Mt;

use crate::face::alignment::{ChipDetails, extract_image_chip};
use crate::geometry::{DPoint, DRect, Rect};

const MAX_ROTATION_DEGREES: f64 = 3.0;
const MIN_OBJECT_HEIGHT: f64 = 0.97;
const MAX_OBJECT_HEIGHT: f64 = 0.99999;
const TRANSLATE_AMOUNT: f64 = 0.02;

/// dlib's `dlib::rand` (dlib/rand/rand_kernel_1.h), default-constructed.
#[derive(Clone)]
pub struct DlibRand {
    mt: Mt,
}

impl DlibRand {
    /// The state of a default-constructed `dlib::rand`: `mt19937` with its default seed,
    /// "primed" by 10,000 draws.
    pub fn new() -> Self {
        let mut mt = Mt::new(Mt::DEFAULT_SEED);
        for _ in 0..10_000 {
            mt.next_u32();
        }
        Self { mt }
    }

    /// `get_random_double()`: 48 random bits over `2^48 - 1 + 0.05`, below 1.
    pub fn random_double(&mut self) -> f64 {
        const MAX: f64 = 16_777_215.0 * 16_777_216.0 + 16_777_215.0 + 0.05;
        let high = f64::from(self.mt.next_u32() & 0xFF_FFFF);
        let low = f64::from(self.mt.next_u32() & 0xFF_FFFF);
        let value = (high * 16_777_216.0 + low) / MAX;
        if value < 1.0 {
            value
        } else {
            1.0 - f64::EPSILON
        }
    }

    /// `get_double_in_range(begin, end)`.
    pub fn double_in_range(&mut self, begin: f64, end: f64) -> f64 {
        begin + self.random_double() * (end - begin)
    }
}

impl Default for DlibRand {
    fn default() -> Self {
        Self::new()
    }
}

/// One randomly jittered copy of a square chip, of the same size.
pub fn jitter_chip(chip: &RgbImage, rng: &mut DlibRand) -> RgbImage {
    let (cols, rows) = chip.dimensions();
    let inner = Rect::new(3, 3, i64::from(cols) - 4, i64::from(rows) - 4);
    // dlib draws the vertical shift first: the two draws are the arguments of one `dpoint`
    // constructor call, which GCC evaluates right to left.
    let translate_y =
        rng.double_in_range(-TRANSLATE_AMOUNT, TRANSLATE_AMOUNT) * inner.height() as f64;
    let translate_x =
        rng.double_in_range(-TRANSLATE_AMOUNT, TRANSLATE_AMOUNT) * inner.width() as f64;
    let scale = rng.double_in_range(MIN_OBJECT_HEIGHT, MAX_OBJECT_HEIGHT);
    // dlib works on integer points and rectangles here: the centre, the shift and the box.
    let box_size = (inner.height() as f64 / scale) as i64;
    let shift = DPoint::new(translate_x, translate_y).round();
    let center_x = (inner.left + inner.right + 1) / 2 + shift.x;
    let center_y = (inner.top + inner.bottom + 1) / 2 + shift.y;
    let left = center_x - box_size / 2;
    let top = center_y - box_size / 2;
    let crop = DRect::new(
        left as f64,
        top as f64,
        (left + box_size - 1) as f64,
        (top + box_size - 1) as f64,
    );
    // `* pi / 180`, in that order, as dlib writes it.
    let angle = rng.double_in_range(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
        * std::f64::consts::PI
        / 180.0;
    let jittered = extract_image_chip(
        chip,
        &ChipDetails {
            rect: crop,
            angle,
            rows,
            cols,
        },
    );
    if rng.random_double() > 0.5 {
        flip_horizontal(&jittered)
    } else {
        jittered
    }
}
