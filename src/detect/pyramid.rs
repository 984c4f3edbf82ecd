//! Image pyramids as dlib builds them (dlib/image_transforms/image_pyramid.h, interpolation.h).
//!
//! dlib's `pyramid_down<N>` shrinks an image by the ratio (N-1)/N per level and maps points
//! between levels with fixed affine formulas; `pyramid_up` enlarges an image to the size that
//! `pyramid_down<2>` maps the image rectangle up to. Both resize with dlib's bilinear
//! `resize_image`, which steps through output columns in single-precision SIMD lanes of four;
//! `crate::kernels::resize` reproduces that arithmetic so the pixels are identical to dlib's.
//! dlib has one overload for RGB images and one for 8-bit grey images, which rounds
//! differently, so a grey photo is resized as grey ([`PyramidImage`]), as dlib's Python binding
//! does when it is given one.

use std::borrow::Cow;

use image::{GrayImage, ImageBuffer, Pixel, RgbImage};

use crate::geometry::{DRect, Rect};
use crate::kernels::resize::{resize_grey, resize_rgb};

/// An image dlib builds pyramids of: RGB, or 8-bit grey.
pub trait PyramidImage: Clone + Send + Sync {
    /// (width, height).
    fn dimensions(&self) -> (u32, u32);

    /// An empty image.
    fn empty() -> Self;

    /// dlib's `resize_image(in, out, interpolate_bilinear())` for this pixel type.
    fn resize_bilinear(&self, width: u32, height: u32) -> Self;

    /// dlib's `pyramid_down<2>` for this pixel type ([`pyramid_down_2`]).
    fn pyramid_down_2(&self) -> Self;

    /// The image as RGB. A grey image's samples go to all three channels, where each has the
    /// same gradient as the grey image, which is what FHOG reads from it.
    fn to_rgb(&self) -> Cow<'_, RgbImage>;
}

impl PyramidImage for RgbImage {
    fn dimensions(&self) -> (u32, u32) {
        self.dimensions()
    }

    fn empty() -> Self {
        RgbImage::new(0, 0)
    }

    fn resize_bilinear(&self, width: u32, height: u32) -> Self {
        resize_rgb(self, width, height)
    }

    fn pyramid_down_2(&self) -> Self {
        pyramid_down_2_of(self)
    }

    fn to_rgb(&self) -> Cow<'_, RgbImage> {
        Cow::Borrowed(self)
    }
}

impl PyramidImage for GrayImage {
    fn dimensions(&self) -> (u32, u32) {
        self.dimensions()
    }

    fn empty() -> Self {
        GrayImage::new(0, 0)
    }

    fn resize_bilinear(&self, width: u32, height: u32) -> Self {
        resize_grey(self, width, height)
    }

    fn pyramid_down_2(&self) -> Self {
        pyramid_down_2_of(self)
    }

    fn to_rgb(&self) -> Cow<'_, RgbImage> {
        let samples = self.as_raw().iter().flat_map(|&grey| [grey; 3]).collect();
        Cow::Owned(
            RgbImage::from_raw(self.width(), self.height(), samples)
                .unwrap_or_else(|| RgbImage::new(0, 0)),
        )
    }
}

/// dlib's `pyramid_down<N>`: the downsampling ratio and the point mapping between levels.
///
/// `N = 2` is dlib's specialised `pyramid_down_2_1`, whose mapping and filter differ from the
/// generic ones (`N > 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyramidDown {
    n: u32,
}

impl PyramidDown {
    /// `pyramid_down<N>`; `n` must be 2 or larger than 3.
    pub const fn new(n: u32) -> Self {
        assert!(
            n == 2 || n > 3,
            "only pyramid_down<2> and pyramid_down<N>, N > 3, are supported"
        );
        Self { n }
    }

    pub fn n(&self) -> u32 {
        self.n
    }

    /// Maps a point of a level to the next smaller level.
    pub fn point_down(&self, (x, y): (f64, f64)) -> (f64, f64) {
        if self.n == 2 {
            (x / 2.0 - 1.25, y / 2.0 - 0.75)
        } else {
            let ratio = (self.n as f64 - 1.0) / self.n as f64;
            ((x - 0.3) * ratio, (y - 0.3) * ratio)
        }
    }

    /// Maps a point of a level to the next larger level.
    pub fn point_up(&self, (x, y): (f64, f64)) -> (f64, f64) {
        if self.n == 2 {
            ((x + 1.25) * 2.0, (y + 0.75) * 2.0)
        } else {
            let ratio = self.n as f64 / (self.n as f64 - 1.0);
            (x * ratio + 0.3, y * ratio + 0.3)
        }
    }

    /// [`Self::point_down`] applied `levels` times.
    pub fn point_down_levels(&self, point: (f64, f64), levels: u32) -> (f64, f64) {
        (0..levels).fold(point, |p, _| self.point_down(p))
    }

    /// [`Self::point_up`] applied `levels` times.
    pub fn point_up_levels(&self, point: (f64, f64), levels: u32) -> (f64, f64) {
        (0..levels).fold(point, |p, _| self.point_up(p))
    }

    /// Maps a rectangle `levels` levels down (its two corners; no rounding).
    pub fn rect_down(&self, rect: DRect, levels: u32) -> DRect {
        corners(rect, |p| self.point_down_levels(p, levels))
    }

    /// Maps a rectangle `levels` levels up (its two corners; no rounding).
    pub fn rect_up(&self, rect: DRect, levels: u32) -> DRect {
        corners(rect, |p| self.point_up_levels(p, levels))
    }

    /// The size (width, height) of the next smaller level of a `width` x `height` image:
    /// `(N-1)*size/N` in integer arithmetic, as dlib's `pyramid_down<N>` sizes its output.
    pub fn down_size(&self, width: u32, height: u32) -> (u32, u32) {
        let n = u64::from(self.n);
        let shrink = |size: u32| ((n - 1) * u64::from(size) / n) as u32;
        (shrink(width), shrink(height))
    }

    /// The next smaller level of an image (dlib's `pyramid_down<N>::operator()`): for `N > 3`
    /// a bilinear resize to [`Self::down_size`], for `N = 2` [`pyramid_down_2`].
    pub fn downsample<I: PyramidImage>(&self, image: &I) -> I {
        if self.n == 2 {
            return image.pyramid_down_2();
        }
        let (width, height) = image.dimensions();
        let (width, height) = self.down_size(width, height);
        image.resize_bilinear(width, height)
    }
}

/// dlib's `pyramid_down<2>` (the same arithmetic for RGB and grey images, per channel): a
/// separable [1 4 6 4 1] filter on every other column then every other row, in 16-bit
/// integers, divided by 256 with truncation; the output is `(n - 3) / 2` pixels a side.
/// `row(y)` gives row `y` of the `width` x `height` input, `P::CHANNEL_COUNT` bytes a pixel.
/// Images of 8 pixels or fewer a side give an empty level.
pub fn pyramid_down_2<'a, P: Pixel<Subpixel = u8>>(
    width: usize,
    height: usize,
    row: impl Fn(usize) -> &'a [u8],
) -> ImageBuffer<P, Vec<u8>> {
    if width <= 8 || height <= 8 {
        return ImageBuffer::new(0, 0);
    }
    let channels = usize::from(P::CHANNEL_COUNT);
    let out_width = (width - 3) / 2;
    let out_height = (height - 3) / 2;
    // Horizontal pass on every row, keeping every other column.
    let mut filtered = vec![0u16; height * out_width * channels];
    for (y, out_row) in filtered.chunks_exact_mut(out_width * channels).enumerate() {
        let row = row(y);
        for (x, out) in out_row.chunks_exact_mut(channels).enumerate() {
            let base = 2 * channels * x;
            for (c, value) in out.iter_mut().enumerate() {
                let at = |k: usize| u16::from(row[base + channels * k + c]);
                *value = at(0) + 4 * at(1) + 6 * at(2) + 4 * at(3) + at(4);
            }
        }
    }
    // Vertical pass on every other row.
    let mut pixels = vec![0u8; out_height * out_width * channels];
    let stride = out_width * channels;
    for (y, out_row) in pixels.chunks_exact_mut(stride).enumerate() {
        let center = 2 * y + 2;
        let row = |dy: usize| &filtered[(center + dy - 2) * stride..(center + dy - 1) * stride];
        let (r0, r1, r2, r3, r4) = (row(0), row(1), row(2), row(3), row(4));
        for (i, out) in out_row.iter_mut().enumerate() {
            let sum = r0[i] + 4 * r1[i] + 6 * r2[i] + 4 * r3[i] + r4[i];
            *out = (sum / 256) as u8;
        }
    }
    ImageBuffer::from_raw(out_width as u32, out_height as u32, pixels)
        .unwrap_or_else(|| ImageBuffer::new(0, 0))
}

/// [`pyramid_down_2`] of a whole image.
fn pyramid_down_2_of<P: Pixel<Subpixel = u8>>(
    image: &ImageBuffer<P, Vec<u8>>,
) -> ImageBuffer<P, Vec<u8>> {
    let row_len = usize::from(P::CHANNEL_COUNT) * image.width() as usize;
    let pixels = image.as_raw();
    pyramid_down_2(image.width() as usize, image.height() as usize, |y| {
        &pixels[y * row_len..(y + 1) * row_len]
    })
}

/// dlib's `drectangle(p1, p2)`: the smallest rectangle holding both mapped corners.
fn corners(rect: DRect, map: impl Fn((f64, f64)) -> (f64, f64)) -> DRect {
    let (x1, y1) = map((rect.left, rect.top));
    let (x2, y2) = map((rect.right, rect.bottom));
    DRect::new(x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2))
}

/// The image enlarged `times` times with [`pyramid_up`], as dlib's detectors do for their
/// `upsample_num_times`.
pub fn upsample<I: PyramidImage>(image: &I, times: u32) -> I {
    (0..times).fold(image.clone(), |enlarged, _| pyramid_up(&enlarged))
}

/// Maps a detection in an image enlarged `times` times by [`upsample`] back to the image
/// (`pyramid_down<2>::rect_down`, rounded as dlib converts a `drectangle`).
pub fn rect_from_upsampled(rect: Rect, times: u32) -> Rect {
    PyramidDown::new(2)
        .rect_down(DRect::from(rect), times)
        .round()
}

/// dlib's `pyramid_up(img)`: enlarges the image to the rectangle that `pyramid_down<2>` maps
/// the image's rectangle up to, rounded to integers ((2*height + 1) x (2*width + 2) pixels),
/// with bilinear interpolation.
pub fn pyramid_up<I: PyramidImage>(image: &I) -> I {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return I::empty();
    }
    let (width, height) = upsampled_size((width, height), 1);
    image.resize_bilinear(width, height)
}

/// The (width, height) of a `width` x `height` image after [`upsample`] `times`.
pub fn upsampled_size((width, height): (u32, u32), times: u32) -> (u32, u32) {
    (0..times).fold((width, height), |(width, height), _| {
        if width == 0 || height == 0 {
            return (0, 0);
        }
        let whole = Rect::new(0, 0, i64::from(width) - 1, i64::from(height) - 1);
        let up = PyramidDown::new(2).rect_up(whole.into(), 1).round();
        ((up.right + 1) as u32, (up.bottom + 1) as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_down_2_maps_points_like_dlib() {
        let pyr = PyramidDown::new(2);
        assert_eq!(pyr.point_down((10.0, 10.0)), (3.75, 4.25));
        assert_eq!(pyr.point_up(pyr.point_down((7.0, 3.0))), (7.0, 3.0));
        // dlib: rect_down(rectangle(10,10,100,100)) == [(4, 4) (49, 49)] after rounding.
        let down = pyr.rect_down(Rect::new(10, 10, 100, 100).into(), 1).round();
        assert_eq!(down, Rect::new(4, 4, 49, 49));
    }

    #[test]
    fn upsampled_sizes_are_those_of_the_upsampled_images() {
        let image = RgbImage::new(13, 7);
        for times in 0..3 {
            assert_eq!(
                upsampled_size((13, 7), times),
                upsample(&image, times).dimensions()
            );
        }
        assert_eq!(upsampled_size((0, 7), 2), (0, 0));
    }

    #[test]
    fn pyramid_down_6_maps_rects_like_dlib() {
        let pyr = PyramidDown::new(6);
        // dlib: pyramid_down(6).rect_up(rectangle(10,10,100,100), 3) == [(18, 18) (174, 174)].
        let up = pyr.rect_up(Rect::new(10, 10, 100, 100).into(), 3).round();
        assert_eq!(up, Rect::new(18, 18, 174, 174));
        assert_eq!(pyr.down_size(37, 61), (30, 50));
    }

    #[test]
    fn pyramid_down_2_level_size_and_filter() {
        let image = RgbImage::from_pixel(21, 12, image::Rgb([200, 100, 7]));
        let level = PyramidDown::new(2).downsample(&image);
        assert_eq!(level.dimensions(), (9, 4));
        // The filter sums to 256, so a flat image stays flat.
        assert!(level.as_raw().chunks_exact(3).all(|p| p == [200, 100, 7]));
        let small = RgbImage::new(8, 100);
        assert_eq!(PyramidDown::new(2).downsample(&small).width(), 0);
    }

    #[test]
    fn pyramid_up_size_is_like_dlib() {
        // dlib: pyramid_down(2).rect_up(rectangle(0, 0, 6, 4)) == [(3, 2) (15, 10)].
        let up = pyramid_up(&RgbImage::new(7, 5));
        assert_eq!(up.dimensions(), (16, 11));
        assert_eq!(pyramid_up(&RgbImage::new(0, 0)).dimensions(), (0, 0));
    }
}
