//! The tiled image pyramid that dlib's `input_rgb_image_pyramid<pyramid_down<6>>` feeds to
//! the MMOD face detector.
//!
//! dlib packs every level of a 5/6-rate image pyramid into one padded image: the levels go
//! down a first column under the original image and then back up a second column on the
//! right, so one pass of the network scans all scales. The levels below the first are made
//! by bilinear resizing of the previous level (dlib's `tt::resize_bilinear` on the CPU, i.e.
//! the SSE `resize_image` for float images). Positions found in the tiled image map back to
//! the original image through the level they fall in ([`TiledPyramid::to_image_space`]).

use image::RgbImage;

use crate::detect::pyramid::PyramidDown;
use crate::geometry::{DRect, Rect};

/// `pyramid_down<6>`: each level is 5/6 the size of the previous one.
const PYRAMID: PyramidDown = PyramidDown::new(6);
/// dlib stops the pyramid before a level gets lower than this.
const MIN_LEVEL_HEIGHT: i64 = 5;

/// Where each pyramid level lies in the tiled image, and the tiled image's size.
#[derive(Debug, Clone, PartialEq)]
pub struct TiledPyramid {
    /// One rectangle per level, level 0 being the original image.
    pub levels: Vec<Rect>,
    pub rows: usize,
    pub cols: usize,
}

impl TiledPyramid {
    /// The layout dlib computes for an image of `rows` x `cols` pixels
    /// (`compute_tiled_image_pyramid_details`).
    pub fn new(rows: usize, cols: usize, padding: usize, outer_padding: usize) -> Self {
        let (padding, outer) = (padding as i64, outer_padding as i64);
        let (mut nr, mut nc) = (rows as i64, cols as i64);
        if nr * nc == 0 {
            return Self {
                levels: Vec::new(),
                rows: 0,
                cols: 0,
            };
        }
        let mut levels = vec![Rect::new(0, 0, nc - 1, nr - 1)];
        let n = PYRAMID.n() as f64;
        let rate = (n - 1.0) / n;
        loop {
            nr = (rate * nr as f64).floor() as i64;
            nc = (rate * nc as f64).floor() as i64;
            if nr * nc == 0 || nr < MIN_LEVEL_HEIGHT {
                break;
            }
            levels.push(Rect::new(0, 0, nc - 1, nr - 1));
        }

        let first = levels[0];
        let total_height = levels.iter().map(|r| r.height() + padding).sum::<i64>() - 2 * padding;
        // The first column goes down until the next level fits beside the previous one and
        // the column holds at least half of the height; the rest go up a second column.
        let mut height = 0;
        let mut prev_width = 0;
        for level in &levels {
            if level.width() <= first.width() - prev_width - padding
                && (height - first.height()) * 2 >= total_height - first.height()
            {
                break;
            }
            height += level.height() + padding;
            prev_width = level.width();
        }
        height -= padding;
        let width = first.width();

        let mut y = outer;
        let mut placed = 0;
        while y < height + outer && placed < levels.len() {
            let level = levels[placed];
            levels[placed] = Rect::new(outer, y, outer + level.width() - 1, y + level.height() - 1);
            y += level.height() + padding;
            placed += 1;
        }
        y -= padding;
        while placed < levels.len() {
            let level = levels[placed];
            let (right, bottom) = (outer + width - 1, y - 1);
            let rect = Rect::new(
                right - (level.width() - 1),
                bottom - (level.height() - 1),
                right,
                bottom,
            );
            if !levels[0].intersect(&rect).is_empty() {
                break;
            }
            levels[placed] = rect;
            y -= level.height() + padding;
            placed += 1;
        }
        levels.truncate(placed);

        Self {
            levels,
            rows: (height + 2 * outer) as usize,
            cols: (width + 2 * outer) as usize,
        }
    }

    /// Writes the tiled pyramid of `image` as three planes (red, green, blue) of
    /// `rows x cols` floats into `out`, which must hold `3 * rows * cols` values and be zero
    /// outside the levels. Level 0 is `(pixel - mean) / 256`, as dlib's input layer.
    pub fn fill(&self, image: &RgbImage, mean: [f32; 3], out: &mut [f32]) {
        let plane_len = self.rows * self.cols;
        for channel in 0..3 {
            self.fill_channel(image, mean, out, (channel * plane_len, 1), channel);
        }
    }

    /// [`Self::fill`] channels-last: `rows x cols` positions of three floats.
    pub fn fill_channels_last(&self, image: &RgbImage, mean: [f32; 3], out: &mut [f32]) {
        for channel in 0..3 {
            self.fill_channel(image, mean, out, (channel, 3), channel);
        }
    }

    /// One channel of the tiled pyramid, position (r, c) going to `out[base + (r * cols + c)
    /// * step]`.
    fn fill_channel(
        &self,
        image: &RgbImage,
        mean: [f32; 3],
        out: &mut [f32],
        (base, step): (usize, usize),
        channel: usize,
    ) {
        let Some(&first) = self.levels.first() else {
            return;
        };
        for (y, row) in image.rows().enumerate() {
            let start = (first.top as usize + y) * self.cols + first.left as usize;
            for (x, pixel) in row.enumerate() {
                out[base + (start + x) * step] = (pixel[channel] as f32 - mean[channel]) / 256.0;
            }
        }
        let layout = Layout {
            stride: self.cols,
            base,
            step,
        };
        for pair in self.levels.windows(2) {
            resize_bilinear(out, layout, pair[0], pair[1]);
        }
    }

    /// Maps a rectangle in tiled-image coordinates to the original image
    /// (dlib's `tiled_pyramid_to_image`): the level nearest the rectangle's centre decides
    /// the scale.
    pub fn to_image_space(&self, rect: DRect) -> DRect {
        let center = (
            ((rect.left + rect.right) / 2.0 + 0.5).floor() as i64,
            ((rect.top + rect.bottom) / 2.0 + 0.5).floor() as i64,
        );
        let level = self.nearest_level(center);
        let origin = self.levels[level];
        let (dx, dy) = (origin.left as f64, origin.top as f64);
        let local = DRect::new(
            rect.left - dx,
            rect.top - dy,
            rect.right - dx,
            rect.bottom - dy,
        );
        PYRAMID.rect_up(local, level as u32)
    }

    /// dlib's `nearest_rect`: the first level containing the point, otherwise the first
    /// level closest to it.
    fn nearest_level(&self, (x, y): (i64, i64)) -> usize {
        let mut best = 0;
        let mut best_dist = f64::INFINITY;
        for (i, r) in self.levels.iter().enumerate() {
            let dx = x.clamp(r.left, r.right) - x;
            let dy = y.clamp(r.top, r.bottom) - y;
            if dx == 0 && dy == 0 {
                return i;
            }
            let dist = ((dx * dx + dy * dy) as f64).sqrt();
            if dist < best_dist {
                best_dist = dist;
                best = i;
            }
        }
        best
    }
}

/// Where a channel's values lie: position (r, c) at `base + (r * stride + c) * step`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    stride: usize,
    base: usize,
    step: usize,
}

/// Bilinear resize of the `src` region of a channel into its `dst` region, with the
/// arithmetic of dlib's SSE `resize_image` for float images: columns in groups of four
/// with single-precision positions and weights, the last columns in double precision.
fn resize_bilinear(plane: &mut [f32], layout: Layout, src: Rect, dst: Rect) {
    let Layout {
        stride,
        base,
        step: spacing,
    } = layout;
    let (in_nr, in_nc) = (src.height(), src.width());
    let (out_nr, out_nc) = (dst.height() as usize, dst.width() as usize);
    let x_scale = (in_nc - 1) as f64 / (out_nc as i64 - 1).max(1) as f64;
    let y_scale = (in_nr - 1) as f64 / (out_nr as i64 - 1).max(1) as f64;
    let src_at = |row: i64, col: i64| {
        base + ((src.top + row) as usize * stride + (src.left + col) as usize) * spacing
    };

    let mut out_row = vec![0f32; out_nc];
    let mut y = -y_scale;
    for r in 0..out_nr {
        y += y_scale;
        let top = y.floor() as i64;
        let bottom = (top + 1).min(in_nr - 1);
        let tb_frac = y - top as f64;
        let (tb, inv_tb) = (tb_frac as f32, (1.0 - tb_frac) as f32);

        let x0 = -4.0 * x_scale;
        let step = (4.0 * x_scale) as f32;
        let mut xs = [0, 1, 2, 3].map(|i| (x0 + i as f64 * x_scale) as f32);
        let mut c = 0;
        loop {
            for x in &mut xs {
                *x += step;
            }
            let left = xs.map(|x| x as i32 as i64);
            if left[3] + 1 >= in_nc || c + 4 > out_nc {
                break;
            }
            for i in 0..4 {
                let lr = xs[i] - left[i] as f32;
                let inv_lr = 1.0 - lr;
                let (tl, tr) = (plane[src_at(top, left[i])], plane[src_at(top, left[i] + 1)]);
                let (bl, br) = (
                    plane[src_at(bottom, left[i])],
                    plane[src_at(bottom, left[i] + 1)],
                );
                out_row[c + i] =
                    inv_tb * inv_lr * tl + inv_tb * lr * tr + tb * inv_lr * bl + tb * lr * br;
            }
            c += 4;
        }
        let mut x = -x_scale + c as f64 * x_scale;
        for value in &mut out_row[c..] {
            x += x_scale;
            let left = x.floor() as i64;
            let right = (left + 1).min(in_nc - 1);
            let lr = (x - left as f64) as f32;
            let (tl, tr) = (plane[src_at(top, left)], plane[src_at(top, right)]);
            let (bl, br) = (plane[src_at(bottom, left)], plane[src_at(bottom, right)]);
            let upper = ((1.0 - lr) * tl + lr * tr) as f64;
            let lower = ((1.0 - lr) * bl + lr * br) as f64;
            *value = ((1.0 - tb_frac) * upper + tb_frac * lower) as f32;
        }

        let start = (dst.top as usize + r) * stride + dst.left as usize;
        for (c, &value) in out_row.iter().enumerate() {
            plane[base + (start + c) * spacing] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_photo_stays_inside_the_tiled_image() {
        let pyramid = TiledPyramid::new(900, 1200, 10, 11);
        assert_eq!(pyramid.levels[0], Rect::new(11, 11, 1210, 910));
        assert_eq!(pyramid.cols, 1222);
        let bounds = Rect::new(0, 0, pyramid.cols as i64 - 1, pyramid.rows as i64 - 1);
        for (i, level) in pyramid.levels.iter().enumerate() {
            assert_eq!(bounds.intersect(level), *level, "level {i}");
            for other in &pyramid.levels[..i] {
                assert!(level.intersect(other).is_empty(), "level {i} overlaps");
            }
        }
    }

    #[test]
    fn empty_image_has_no_levels() {
        let pyramid = TiledPyramid::new(0, 10, 10, 11);
        assert!(pyramid.levels.is_empty());
        assert_eq!((pyramid.rows, pyramid.cols), (0, 0));
    }
}
