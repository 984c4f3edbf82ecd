//! Random perturbations of a face chip, for face_recognition's `num_jitters`.
//!
//! With `num_jitters > 1`, dlib's `compute_face_descriptor` embeds that many randomly jittered
//! copies of each chip and averages the descriptors. A jittered copy is dlib's `jitter_image`:
//! the chip re-cut from a square shrunk by 3 pixels on each side, moved by up to 2% of its
//! size, scaled by 0.97 to 1, rotated by up to 3 degrees, and mirrored half of the time. The
//! random numbers come from a seeded generator of our own, so results are reproducible from
//! run to run but are not dlib's exact draws.

use image::RgbImage;
use image::imageops::flip_horizontal;
use rand::{Rng, RngExt};

use crate::face::alignment::{ChipDetails, extract_image_chip};
use crate::geometry::{DPoint, DRect, Rect};

const MAX_ROTATION_DEGREES: f64 = 3.0;
const MIN_OBJECT_HEIGHT: f64 = 0.97;
const MAX_OBJECT_HEIGHT: f64 = 0.99999;
const TRANSLATE_AMOUNT: f64 = 0.02;

/// One randomly jittered copy of a square chip, of the same size.
pub fn jitter_chip(chip: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let (cols, rows) = chip.dimensions();
    let inner = Rect::new(3, 3, i64::from(cols) - 4, i64::from(rows) - 4);
    let translate_x = rng.random_range(-TRANSLATE_AMOUNT..TRANSLATE_AMOUNT) * inner.width() as f64;
    let translate_y = rng.random_range(-TRANSLATE_AMOUNT..TRANSLATE_AMOUNT) * inner.height() as f64;
    let scale = rng.random_range(MIN_OBJECT_HEIGHT..MAX_OBJECT_HEIGHT);
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
    let angle = rng
        .random_range(-MAX_ROTATION_DEGREES..MAX_ROTATION_DEGREES)
        .to_radians();
    let jittered = extract_image_chip(
        chip,
        &ChipDetails {
            rect: crop,
            angle,
            rows,
            cols,
        },
    );
    if rng.random::<f64>() > 0.5 {
        flip_horizontal(&jittered)
    } else {
        jittered
    }
}
