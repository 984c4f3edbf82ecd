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
        let resizes = self.resizes();
        for (channel, mean) in mean.into_iter().enumerate() {
            let layout = Layout {
                stride: self.cols,
                base: channel * plane_len,
                step: 1,
            };
            self.fill_channel(image, mean, channel, &resizes, out, layout);
        }
    }

    /// [`Self::fill`] channels-last: `rows x cols` positions of three floats.
    pub fn fill_channels_last(&self, image: &RgbImage, mean: [f32; 3], out: &mut [f32]) {
        let resizes = self.resizes();
        for (channel, mean) in mean.into_iter().enumerate() {
            let layout = Layout {
                stride: self.cols,
                base: channel,
                step: 3,
            };
            self.fill_channel(image, mean, channel, &resizes, out, layout);
        }
    }

    /// How each level below the first is made from the one above it, in order: what every
    /// value reads and with which weights (the device builds the pyramid from these too).
    pub fn resizes(&self) -> Vec<LevelResize> {
        self.levels
            .windows(2)
            .map(|pair| LevelResize::new(pair[0], pair[1]))
            .collect()
    }

    /// One channel of the tiled pyramid, position (r, c) going to `layout.at(r, c)`.
    fn fill_channel(
        &self,
        image: &RgbImage,
        mean: f32,
        channel: usize,
        resizes: &[LevelResize],
        out: &mut [f32],
        layout: Layout,
    ) {
        let Some(&first) = self.levels.first() else {
            return;
        };
        for (y, row) in image.rows().enumerate() {
            for (x, pixel) in row.enumerate() {
                let at = layout.at(first.top as usize + y, first.left as usize + x);
                out[at] = normalise(pixel[channel], mean);
            }
        }
        for resize in resizes {
            resize.apply(out, layout);
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

/// Level 0 of the pyramid: a photo's value as dlib's input layer gives it.
#[inline]
fn normalise(value: u8, mean: f32) -> f32 {
    (value as f32 - mean) / 256.0
}

/// Where a channel's values lie: position (r, c) at `base + (r * stride + c) * step`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    stride: usize,
    base: usize,
    step: usize,
}

impl Layout {
    #[inline]
    fn at(&self, row: usize, col: usize) -> usize {
        self.base + (row * self.stride + col) * self.step
    }
}

/// Where one output row of a level reads: the rows above and below (in the source level) and
/// the weight of the lower one.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct RowTap {
    pub top: u32,
    pub bottom: u32,
    pub weight: f64,
}

/// Where one output column of a level reads: the columns left and right (in the source level),
/// the weight of the right one, and which of dlib's two formulas computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct ColumnTap {
    pub left: u32,
    pub right: u32,
    pub weight: f32,
    /// 1: the column is one of a group of four, computed in single precision; 0: one of the
    /// last columns, blended down the rows in double precision.
    pub grouped: u32,
}

/// The bilinear resize of one level into the next, with the arithmetic of dlib's SSE
/// `resize_image` for float images: columns in groups of four with single-precision positions
/// (accumulated from group to group) and weights, the last columns in double precision. The
/// taps hold every position and weight, so that applying them is one formula per value
/// ([`LevelResize::value`]), the same on the CPU and on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelResize {
    /// The level read, in the tiled image.
    pub src: Rect,
    /// The level written, in the tiled image.
    pub dst: Rect,
    /// One per row of `dst`, relative to `src`.
    pub rows: Vec<RowTap>,
    /// One per column of `dst`, relative to `src`.
    pub columns: Vec<ColumnTap>,
}

impl LevelResize {
    fn new(src: Rect, dst: Rect) -> Self {
        let (in_nr, in_nc) = (src.height(), src.width());
        let (out_nr, out_nc) = (dst.height() as usize, dst.width() as usize);
        let x_scale = (in_nc - 1) as f64 / (out_nc as i64 - 1).max(1) as f64;
        let y_scale = (in_nr - 1) as f64 / (out_nr as i64 - 1).max(1) as f64;

        let mut rows = Vec::with_capacity(out_nr);
        let mut y = -y_scale;
        for _ in 0..out_nr {
            y += y_scale;
            let top = y.floor() as i64;
            rows.push(RowTap {
                top: top as u32,
                bottom: (top + 1).min(in_nr - 1) as u32,
                weight: y - top as f64,
            });
        }

        let mut columns = Vec::with_capacity(out_nc);
        let step = (4.0 * x_scale) as f32;
        let x0 = -4.0 * x_scale;
        let mut xs = [0, 1, 2, 3].map(|i| (x0 + i as f64 * x_scale) as f32);
        loop {
            for x in &mut xs {
                *x += step;
            }
            let left = xs.map(|x| x as i32 as i64);
            if left[3] + 1 >= in_nc || columns.len() + 4 > out_nc {
                break;
            }
            for (x, left) in xs.into_iter().zip(left) {
                columns.push(ColumnTap {
                    left: left as u32,
                    right: (left + 1) as u32,
                    weight: x - left as f32,
                    grouped: 1,
                });
            }
        }
        let mut x = -x_scale + columns.len() as f64 * x_scale;
        while columns.len() < out_nc {
            x += x_scale;
            let left = x.floor() as i64;
            columns.push(ColumnTap {
                left: left as u32,
                right: (left + 1).min(in_nc - 1) as u32,
                weight: (x - left as f64) as f32,
                grouped: 0,
            });
        }
        Self {
            src,
            dst,
            rows,
            columns,
        }
    }

    /// One output value from the four source values around it (top-left, top-right,
    /// bottom-left, bottom-right).
    #[inline]
    pub fn value(row: &RowTap, column: &ColumnTap, [tl, tr, bl, br]: [f32; 4]) -> f32 {
        let lr = column.weight;
        if column.grouped != 0 {
            let (tb, inv_tb) = (row.weight as f32, (1.0 - row.weight) as f32);
            let inv_lr = 1.0 - lr;
            inv_tb * inv_lr * tl + inv_tb * lr * tr + tb * inv_lr * bl + tb * lr * br
        } else {
            let upper = ((1.0 - lr) * tl + lr * tr) as f64;
            let lower = ((1.0 - lr) * bl + lr * br) as f64;
            ((1.0 - row.weight) * upper + row.weight * lower) as f32
        }
    }

    /// Writes the `dst` level of one channel from its `src` level.
    fn apply(&self, plane: &mut [f32], layout: Layout) {
        let (src_top, src_left) = (self.src.top as usize, self.src.left as usize);
        let (dst_top, dst_left) = (self.dst.top as usize, self.dst.left as usize);
        let read = |plane: &[f32], row: u32, col: u32| {
            plane[layout.at(src_top + row as usize, src_left + col as usize)]
        };
        for (r, row) in self.rows.iter().enumerate() {
            for (c, column) in self.columns.iter().enumerate() {
                let around = [
                    read(plane, row.top, column.left),
                    read(plane, row.top, column.right),
                    read(plane, row.bottom, column.left),
                    read(plane, row.bottom, column.right),
                ];
                plane[layout.at(dst_top + r, dst_left + c)] = Self::value(row, column, around);
            }
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

    /// dlib's SSE `resize_image` for float images as it loops: columns in groups of four with
    /// single-precision positions, the last ones in double precision. The reference for the
    /// taps.
    fn resize_like_dlib(plane: &mut [f32], stride: usize, src: Rect, dst: Rect) {
        let (in_nr, in_nc) = (src.height(), src.width());
        let (out_nr, out_nc) = (dst.height() as usize, dst.width() as usize);
        let x_scale = (in_nc - 1) as f64 / (out_nc as i64 - 1).max(1) as f64;
        let y_scale = (in_nr - 1) as f64 / (out_nr as i64 - 1).max(1) as f64;
        let at = |row: i64, col: i64| (src.top + row) as usize * stride + (src.left + col) as usize;
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
                    let (tl, tr) = (plane[at(top, left[i])], plane[at(top, left[i] + 1)]);
                    let (bl, br) = (plane[at(bottom, left[i])], plane[at(bottom, left[i] + 1)]);
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
                let (tl, tr) = (plane[at(top, left)], plane[at(top, right)]);
                let (bl, br) = (plane[at(bottom, left)], plane[at(bottom, right)]);
                let upper = ((1.0 - lr) * tl + lr * tr) as f64;
                let lower = ((1.0 - lr) * bl + lr * br) as f64;
                *value = ((1.0 - tb_frac) * upper + tb_frac * lower) as f32;
            }
            let start = (dst.top as usize + r) * stride + dst.left as usize;
            plane[start..start + out_nc].copy_from_slice(&out_row);
        }
    }

    /// The taps give dlib's pyramid value for value, on odd sizes too, planar and
    /// channels-last.
    #[test]
    fn the_taps_resize_exactly_as_dlib_does() {
        for (width, height) in [(37, 23), (64, 61), (101, 7), (9, 40), (300, 211)] {
            let image = RgbImage::from_fn(width, height, |x, y| {
                let v = |k: u32| ((x * k + y * (k + 5) + x * y / 7) % 251) as u8;
                image::Rgb([v(3), v(7), v(11)])
            });
            let mean = [122.782, 117.001, 104.298];
            let pyramid = TiledPyramid::new(height as usize, width as usize, 10, 11);
            let plane_len = pyramid.rows * pyramid.cols;
            let mut want = vec![0f32; 3 * plane_len];
            for (channel, plane) in want.chunks_exact_mut(plane_len).enumerate() {
                let first = pyramid.levels[0];
                for (x, y, pixel) in image.enumerate_pixels() {
                    let at = (first.top as usize + y as usize) * pyramid.cols
                        + first.left as usize
                        + x as usize;
                    plane[at] = (pixel[channel] as f32 - mean[channel]) / 256.0;
                }
                for pair in pyramid.levels.windows(2) {
                    resize_like_dlib(plane, pyramid.cols, pair[0], pair[1]);
                }
            }
            let mut planar = vec![0f32; 3 * plane_len];
            pyramid.fill(&image, mean, &mut planar);
            assert!(
                want.iter()
                    .zip(&planar)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{width}x{height} planar"
            );
            let mut last = vec![0f32; 3 * plane_len];
            pyramid.fill_channels_last(&image, mean, &mut last);
            for (i, value) in last.iter().enumerate() {
                let (position, channel) = (i / 3, i % 3);
                assert_eq!(
                    value.to_bits(),
                    want[channel * plane_len + position].to_bits(),
                    "{width}x{height} channels-last"
                );
            }
            assert!(
                pyramid.levels.len() > 1 || height < 12,
                "{width}x{height}: one level"
            );
        }
    }

    #[test]
    fn empty_image_has_no_levels() {
        let pyramid = TiledPyramid::new(0, 10, 10, 11);
        assert!(pyramid.levels.is_empty());
        assert_eq!((pyramid.rows, pyramid.cols), (0, 0));
    }
}
