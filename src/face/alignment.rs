//! Face alignment: the upright, scaled face chip dlib's ResNet reads, as
//! `dlib.get_face_chip(img, shape, 150, 0.25)` and `compute_face_descriptor` make it.
//!
//! [`get_face_chip_details`] fits a similarity transform from dlib's mean face to the
//! landmarks and describes the chip as a rotated rectangle in the image
//! (`get_face_chip_details`). As in dlib, 5-point and 68-point shapes each have a mean face of
//! their own ([`ChipLandmarks`]): all five points of the former; of the latter the nose, eyes
//! and upper lip (parts 27-54 and 60-64), not the jaw line, eyebrows or lower lip. [`extract_image_chip`] then samples it as dlib's
//! `extract_image_chips` does for one chip: when the chip shrinks the face by more than about
//! two, the region around the face is first reduced with `pyramid_down<2>` (a 5x5 binomial
//! filter in 16-bit integers, output `(n - 3) / 2` pixels a side) until it no longer does,
//! then each chip pixel is bilinearly interpolated in `f64`, truncated to `u8`, and pixels
//! whose 2x2 neighbourhood leaves the cropped region are black.

use image::RgbImage;

use crate::detect::pyramid::{PyramidDown, pyramid_down_2};
use crate::face::embedder::CHIP_SIZE;
use crate::face::landmarks::Landmarks;
use crate::geometry::{
    DPoint, DRect, Point, Rect, find_affine_transform, find_similarity_transform,
};

/// dlib's `pyramid_down<2>`, which shrinks the region around a face that a chip reduces
/// by more than about two.
const PYRAMID_DOWN_2: PyramidDown = PyramidDown::new(2);

/// Padding around the face in those chips, as a fraction of the face size.
pub const FACE_CHIP_PADDING: f64 = 0.25;

/// Landmarks a face chip is aligned from: the shapes of dlib's 5-point and 68-point models,
/// the two `get_face_chip_details` accepts.
pub trait ChipLandmarks {
    /// The parts the alignment fits, each with its position in dlib's mean face (the unit
    /// square of an unpadded chip), in the order dlib fits them.
    const MEAN_FACE: &'static [(usize, DPoint)];

    /// Every part of the shape.
    fn parts(&self) -> &[Point];
}

impl ChipLandmarks for Landmarks<5> {
    const MEAN_FACE: &'static [(usize, DPoint)] = &MEAN_FACE_5;

    fn parts(&self) -> &[Point] {
        self
    }
}

impl ChipLandmarks for Landmarks<68> {
    const MEAN_FACE: &'static [(usize, DPoint)] = &MEAN_FACE_68;

    fn parts(&self) -> &[Point] {
        self
    }
}

/// dlib's mean face for the 5-point model, in the order of [`Landmarks`].
const MEAN_FACE_5: [(usize, DPoint); 5] = [
    (0, DPoint::new(0.8595674595992, 0.2134981538014)),
    (1, DPoint::new(0.6460604764104, 0.2289674387677)),
    (2, DPoint::new(0.1205750620789, 0.2137274526848)),
    (3, DPoint::new(0.3340850613712, 0.2290642403242)),
    (4, DPoint::new(0.4901123135679, 0.6277975316475)),
];

/// dlib's mean face for the 68-point model (the average positions of its parts 17-67), the
/// parts it aligns by: the nose (27-35), the eyes (36-47), the outer (48-54) and inner
/// (60-64) upper lip.
const MEAN_FACE_68: [(usize, DPoint); 33] = [
    (27, DPoint::new(0.490127, 0.203352)),
    (28, DPoint::new(0.490127, 0.307009)),
    (29, DPoint::new(0.490127, 0.409805)),
    (30, DPoint::new(0.490127, 0.515625)),
    (31, DPoint::new(0.36688, 0.587326)),
    (32, DPoint::new(0.426036, 0.609345)),
    (33, DPoint::new(0.490127, 0.628106)),
    (34, DPoint::new(0.554217, 0.609345)),
    (35, DPoint::new(0.613373, 0.587326)),
    (36, DPoint::new(0.121737, 0.216423)),
    (37, DPoint::new(0.187122, 0.178758)),
    (38, DPoint::new(0.265825, 0.179852)),
    (39, DPoint::new(0.334606, 0.231733)),
    (40, DPoint::new(0.260918, 0.245099)),
    (41, DPoint::new(0.182743, 0.244077)),
    (42, DPoint::new(0.645647, 0.231733)),
    (43, DPoint::new(0.714428, 0.179852)),
    (44, DPoint::new(0.793132, 0.178758)),
    (45, DPoint::new(0.858516, 0.216423)),
    (46, DPoint::new(0.79751, 0.244077)),
    (47, DPoint::new(0.719335, 0.245099)),
    (48, DPoint::new(0.254149, 0.780233)),
    (49, DPoint::new(0.340985, 0.745405)),
    (50, DPoint::new(0.428858, 0.727388)),
    (51, DPoint::new(0.490127, 0.742578)),
    (52, DPoint::new(0.551395, 0.727388)),
    (53, DPoint::new(0.639268, 0.745405)),
    (54, DPoint::new(0.726104, 0.780233)),
    (60, DPoint::new(0.290379, 0.784792)),
    (61, DPoint::new(0.428096, 0.778746)),
    (62, DPoint::new(0.490127, 0.785343)),
    (63, DPoint::new(0.552157, 0.778746)),
    (64, DPoint::new(0.689874, 0.784792)),
];

/// Where a chip lies in the image: a rectangle rotated by `angle` radians about its centre,
/// sampled into `rows` x `cols` pixels (dlib's `chip_details`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    pub rect: DRect,
    pub angle: f64,
    pub rows: u32,
    pub cols: u32,
}

impl ChipDetails {
    fn pixel_count(&self) -> f64 {
        f64::from(self.rows) * f64::from(self.cols)
    }
}

/// The chip of side `size` that puts the landmarks where dlib's mean face has them, with
/// `padding` (a fraction of the face) around the face.
pub fn get_face_chip_details<L: ChipLandmarks>(
    landmarks: &L,
    size: u32,
    padding: f64,
) -> ChipDetails {
    let size_f = f64::from(size);
    let from: Vec<DPoint> = L::MEAN_FACE
        .iter()
        .map(|(_, p)| {
            let scale = 2.0 * padding + 1.0;
            DPoint::new(
                (padding + p.x) / scale * size_f,
                (padding + p.y) / scale * size_f,
            )
        })
        .collect();
    let parts = landmarks.parts();
    let to: Vec<DPoint> = L::MEAN_FACE
        .iter()
        .map(|&(part, _)| DPoint::from(parts[part]))
        .collect();
    let tform = find_similarity_transform(&from, &to);
    // The image of the unit x vector carries the rotation and the scale.
    let axis = DPoint::new(tform.m[0][0], tform.m[1][0]);
    let angle = axis.y.atan2(axis.x);
    let scale = axis.length();
    let center = tform.apply(DPoint::new(size_f / 2.0, size_f / 2.0));
    ChipDetails {
        rect: DRect::centered(center, size_f * scale, size_f * scale),
        angle,
        rows: size,
        cols: size,
    }
}

/// The 150x150 chip for face recognition from a face's landmarks.
pub fn face_chip<L: ChipLandmarks>(image: &RgbImage, landmarks: &L) -> RgbImage {
    extract_image_chip(
        image,
        &get_face_chip_details(landmarks, CHIP_SIZE, FACE_CHIP_PADDING),
    )
}

/// Chips for many faces of one image, each extracted on its own as `face_recognition` does.
pub fn face_chips<L: ChipLandmarks>(image: &RgbImage, faces: &[L]) -> Vec<RgbImage> {
    faces
        .iter()
        .map(|landmarks| face_chip(image, landmarks))
        .collect()
}

/// Samples `chip` out of `image` (dlib's `extract_image_chip` with bilinear interpolation).
pub fn extract_image_chip(image: &RgbImage, chip: &ChipDetails) -> RgbImage {
    let full = View::of(image);
    if chip.angle == 0.0
        && f64::from(chip.rows) == chip.rect.height()
        && f64::from(chip.cols) == chip.rect.width()
    {
        return copy_rect(&full, chip.rect.round());
    }

    // The margin around the chip that the pyramid levels it needs ask for: two pixels,
    // doubled and grown by two per halving.
    let mut grow = 2.0;
    let mut rect = PYRAMID_DOWN_2.rect_down(chip.rect, 1);
    while rect.area() > chip.pixel_count() {
        rect = PYRAMID_DOWN_2.rect_down(rect, 1);
        grow = grow * 2.0 + 2.0;
    }

    // The part of the image the chip needs, with that margin.
    let center = chip.rect.center();
    let rotated = [
        chip.rect.top_left(),
        chip.rect.top_right(),
        chip.rect.bottom_left(),
        chip.rect.bottom_right(),
    ]
    .iter()
    .fold(DRect::EMPTY, |acc, &corner| {
        acc.including(corner.rotate_about(center, chip.angle))
    });
    let image_rect = DRect::new(
        0.0,
        0.0,
        f64::from(image.width()) - 1.0,
        f64::from(image.height()) - 1.0,
    );
    let crop = rotated.grow(grow).intersect(&image_rect).round();
    let source = full.crop(crop);

    // The pyramid level to sample from, and the chip rectangle in its coordinates.
    let mut rect = chip.rect.translate(-crop.left as f64, -crop.top as f64);
    let mut levels = 0;
    while PYRAMID_DOWN_2.rect_down(rect, 1).area() > chip.pixel_count() {
        levels += 1;
        rect = PYRAMID_DOWN_2.rect_down(rect, 1);
    }
    let mut level: Option<RgbImage> = None;
    for _ in 0..levels {
        let view = level.as_ref().map_or(source, View::of);
        level = Some(pyramid_down_2(view.width, view.height, |y| view.row(y)));
    }
    let source = level.as_ref().map_or(source, View::of);

    // Chip corners map to the rotated rectangle's corners.
    let (last_col, last_row) = (f64::from(chip.cols) - 1.0, f64::from(chip.rows) - 1.0);
    let rect_center = rect.center();
    let from = [
        DPoint::new(0.0, 0.0),
        DPoint::new(last_col, 0.0),
        DPoint::new(0.0, last_row),
    ];
    let to = [rect.top_left(), rect.top_right(), rect.bottom_left()]
        .map(|corner| corner.rotate_about(rect_center, chip.angle));
    let mut out = RgbImage::new(chip.cols, chip.rows);
    let Some(transform) = find_affine_transform(&from, &to) else {
        // A chip of a single row or column: no affine map is determined; leave it black.
        return out;
    };
    let cols = chip.cols as usize;
    for (i, pixel) in out.chunks_exact_mut(3).enumerate() {
        let (c, r) = (i % cols, i / cols);
        // Pixels whose neighbourhood leaves the source stay black.
        source.bilinear(transform.apply(DPoint::new(c as f64, r as f64)), pixel);
    }
    out
}

/// A rectangular window onto RGB pixels.
#[derive(Clone, Copy)]
struct View<'a> {
    pixels: &'a [u8],
    /// Pixels per row of `pixels`.
    stride: usize,
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

impl<'a> View<'a> {
    fn of(image: &'a RgbImage) -> Self {
        Self {
            pixels: image.as_raw(),
            stride: image.width() as usize,
            left: 0,
            top: 0,
            width: image.width() as usize,
            height: image.height() as usize,
        }
    }

    /// The part of the view inside `rect` (clipped to it; empty when they do not overlap).
    fn crop(&self, rect: Rect) -> Self {
        let clip = |lo: i64, hi: i64, size: usize| {
            let lo = lo.clamp(0, size as i64) as usize;
            let hi = (hi + 1).clamp(lo as i64, size as i64) as usize;
            (lo, hi - lo)
        };
        let (x, width) = clip(rect.left, rect.right, self.width);
        let (y, height) = clip(rect.top, rect.bottom, self.height);
        Self {
            left: self.left + x,
            top: self.top + y,
            width,
            height,
            ..*self
        }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let offset = 3 * ((self.top + y) * self.stride + self.left + x);
        [
            self.pixels[offset],
            self.pixels[offset + 1],
            self.pixels[offset + 2],
        ]
    }

    fn row(&self, y: usize) -> &'a [u8] {
        let start = 3 * ((self.top + y) * self.stride + self.left);
        &self.pixels[start..start + 3 * self.width]
    }

    /// dlib's `interpolate_bilinear` into `out`, which is left untouched when the 2x2
    /// neighbourhood leaves the view.
    fn bilinear(&self, p: DPoint, out: &mut [u8]) {
        let (Some(x), Some(y)) = (
            neighbourhood_start(p.x, self.width),
            neighbourhood_start(p.y, self.height),
        ) else {
            return;
        };
        let (lr, tb) = (p.x - x as f64, p.y - y as f64);
        let upper = 3 * ((self.top + y) * self.stride + self.left + x);
        let lower = upper + 3 * self.stride;
        let (upper, lower) = (
            &self.pixels[upper..upper + 6],
            &self.pixels[lower..lower + 6],
        );
        for (c, value) in out.iter_mut().take(3).enumerate() {
            let top_row = (1.0 - lr) * f64::from(upper[c]) + lr * f64::from(upper[c + 3]);
            let bottom_row = (1.0 - lr) * f64::from(lower[c]) + lr * f64::from(lower[c + 3]);
            *value = ((1.0 - tb) * top_row + tb * bottom_row) as u8;
        }
    }
}

/// `floor(v)` when both `floor(v)` and `floor(v) + 1` are indices below `size`.
#[inline]
fn neighbourhood_start(v: f64, size: usize) -> Option<usize> {
    // floor(v) >= 0 exactly when v >= 0, and floor(v) + 1 < size exactly when v < size - 1;
    // NaN fails both. For non-negative v truncation is floor.
    (v >= 0.0 && v < size as f64 - 1.0).then_some(v as usize)
}

/// Copies `rect` out of the view unscaled, black where it leaves the image (dlib's
/// `basic_extract_image_chip`).
fn copy_rect(source: &View, rect: Rect) -> RgbImage {
    let width = rect.width().max(0) as u32;
    let height = rect.height().max(0) as u32;
    RgbImage::from_fn(width, height, |c, r| {
        let (x, y) = (rect.left + i64::from(c), rect.top + i64::from(r));
        if (0..source.width as i64).contains(&x) && (0..source.height as i64).contains(&y) {
            image::Rgb(source.pixel(x as usize, y as usize))
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    #[test]
    fn unscaled_upright_chip_is_a_copy() {
        let image = gradient(40, 30);
        let chip = ChipDetails {
            rect: DRect::new(30.0, -2.0, 39.0 + 5.0, 7.0),
            angle: 0.0,
            rows: 10,
            cols: 15,
        };
        let out = extract_image_chip(&image, &chip);
        assert_eq!(out.dimensions(), (15, 10));
        assert_eq!(out.get_pixel(0, 2), image.get_pixel(30, 0));
        assert_eq!(out.get_pixel(9, 9), image.get_pixel(39, 7));
        assert_eq!(out.get_pixel(10, 5).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(3, 1).0, [0, 0, 0]);
    }

    #[test]
    fn scaled_chip_interpolates_and_blacks_out_the_outside() {
        // A 30-pixel square sampled into 20 (no pyramid): chip pixel (c, r) samples
        // (-10 + 29 c / 19, 10 + 29 r / 19) of a linear ramp, truncated.
        let image = gradient(200, 200);
        let chip = ChipDetails {
            rect: DRect::new(-10.0, 10.0, 19.0, 39.0),
            angle: 0.0,
            rows: 20,
            cols: 20,
        };
        let out = extract_image_chip(&image, &chip);
        assert_eq!(out.get_pixel(6, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(7, 0).0, [0, 10, 10]);
        assert_eq!(out.get_pixel(10, 3).0, [5, 14, 19]);
    }
}
