//! Rectangles and points with dlib's conventions.
//!
//! A dlib `rectangle` has inclusive integer corners, so its width is `right - left + 1`,
//! and it is not clipped to the image: detections may extend past the borders.

use serde::{Deserialize, Serialize};

/// An integer rectangle with inclusive corners, as dlib's `rectangle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "[i64; 4]", from = "[i64; 4]")]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl Rect {
    pub fn new(left: i64, top: i64, right: i64, bottom: i64) -> Self {
        Self {
            left,
            top,
            right,
            bottom,
        }
    }

    pub fn width(&self) -> i64 {
        self.right - self.left + 1
    }

    pub fn height(&self) -> i64 {
        self.bottom - self.top + 1
    }

    pub fn is_empty(&self) -> bool {
        self.left > self.right || self.top > self.bottom
    }

    pub fn area(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.width() * self.height()
        }
    }
}

impl From<Rect> for [i64; 4] {
    fn from(rect: Rect) -> Self {
        [rect.left, rect.top, rect.right, rect.bottom]
    }
}

impl From<[i64; 4]> for Rect {
    fn from([left, top, right, bottom]: [i64; 4]) -> Self {
        Self::new(left, top, right, bottom)
    }
}

/// An integer pixel position, as dlib's `point`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "[i64; 2]", from = "[i64; 2]")]
pub struct Point {
    pub x: i64,
    pub y: i64,
}

impl From<Point> for [i64; 2] {
    fn from(point: Point) -> Self {
        [point.x, point.y]
    }
}

impl From<[i64; 2]> for Point {
    fn from([x, y]: [i64; 2]) -> Self {
        Self { x, y }
    }
}
