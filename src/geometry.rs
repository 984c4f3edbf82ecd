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

    /// The rectangle both cover (empty when they do not meet).
    pub fn intersect(&self, other: &Rect) -> Rect {
        Rect::new(
            self.left.max(other.left),
            self.top.max(other.top),
            self.right.min(other.right),
            self.bottom.min(other.bottom),
        )
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

/// A real-valued 2-D point, as dlib's `dpoint` (`vector<double,2>`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DPoint {
    pub x: f64,
    pub y: f64,
}

impl DPoint {
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// The nearest integer point, rounding halves up as dlib does when it converts a real
    /// vector to a `point` (`floor(v + 0.5)`).
    pub fn round(self) -> Point {
        Point {
            x: floor_to_i64(self.x + 0.5),
            y: floor_to_i64(self.y + 0.5),
        }
    }

    pub fn length(self) -> f64 {
        (self.x * self.x + self.y * self.y).sqrt()
    }

    /// Rotates the point by `angle` radians about `center` (dlib's `rotate_point`).
    pub fn rotate_about(self, center: DPoint, angle: f64) -> DPoint {
        let (sin, cos) = angle.sin_cos();
        let (x, y) = (self.x - center.x, self.y - center.y);
        DPoint::new(cos * x - sin * y + center.x, sin * x + cos * y + center.y)
    }
}

/// `v.floor() as i64` for every `v` (saturating, NaN to 0) without a call to `floor`, which
/// baseline x86-64 lacks an instruction for.
#[inline]
fn floor_to_i64(v: f64) -> i64 {
    let truncated = v as i64;
    if (truncated as f64) > v {
        truncated.saturating_sub(1)
    } else {
        truncated
    }
}

impl From<Point> for DPoint {
    fn from(point: Point) -> Self {
        Self::new(point.x as f64, point.y as f64)
    }
}

/// An affine map `p -> m p + b`, as dlib's `point_transform_affine`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineTransform {
    /// Row-major 2x2 linear part.
    pub m: [[f64; 2]; 2],
    pub b: [f64; 2],
}

impl AffineTransform {
    pub fn apply(&self, p: DPoint) -> DPoint {
        DPoint::new(
            self.m[0][0] * p.x + self.m[0][1] * p.y + self.b[0],
            self.m[1][0] * p.x + self.m[1][1] * p.y + self.b[1],
        )
    }
}

/// The least-squares similarity transform (rotation, uniform scale, translation, no
/// reflection) mapping `from` onto `to`: dlib's `find_similarity_transform` (Umeyama's
/// method). In two dimensions Umeyama's `c R` has the closed form
/// `[[a, -b], [b, a]] / sigma_from` with `a = cov00 + cov11` and `b = cov10 - cov01`, which is
/// what dlib's SVD computes, reflection handling included. `from` and `to` must have the same,
/// non-zero length.
pub fn find_similarity_transform(from: &[DPoint], to: &[DPoint]) -> AffineTransform {
    let n = from.len().min(to.len()) as f64;
    let mean = |points: &[DPoint]| {
        let sum = points.iter().fold(DPoint::default(), |acc, p| {
            DPoint::new(acc.x + p.x, acc.y + p.y)
        });
        DPoint::new(sum.x / n, sum.y / n)
    };
    let (mean_from, mean_to) = (mean(from), mean(to));
    let mut sigma_from = 0.0;
    let mut cov = [[0.0f64; 2]; 2];
    for (f, t) in from.iter().zip(to) {
        let (fx, fy) = (f.x - mean_from.x, f.y - mean_from.y);
        let (tx, ty) = (t.x - mean_to.x, t.y - mean_to.y);
        sigma_from += fx * fx + fy * fy;
        cov[0][0] += tx * fx;
        cov[0][1] += tx * fy;
        cov[1][0] += ty * fx;
        cov[1][1] += ty * fy;
    }
    sigma_from /= n;
    for value in cov.iter_mut().flatten() {
        *value /= n;
    }
    let (a, b) = (cov[0][0] + cov[1][1], cov[1][0] - cov[0][1]);
    let m = if sigma_from != 0.0 {
        [
            [a / sigma_from, -b / sigma_from],
            [b / sigma_from, a / sigma_from],
        ]
    } else {
        // All `from` points coincide: `cov` vanishes and dlib's SVD yields the identity.
        [[1.0, 0.0], [0.0, 1.0]]
    };
    let b = [
        mean_to.x - (m[0][0] * mean_from.x + m[0][1] * mean_from.y),
        mean_to.y - (m[1][0] * mean_from.x + m[1][1] * mean_from.y),
    ];
    AffineTransform { m, b }
}

/// The least-squares affine transform mapping `from` onto `to` (dlib's
/// `find_affine_transform`, `Q pinv(P)` with `P` the points in homogeneous coordinates),
/// solved about the centroid of `from` for accuracy. Returns `None` when the points do not
/// determine one (fewer than three, or all on one line).
pub fn find_affine_transform(from: &[DPoint], to: &[DPoint]) -> Option<AffineTransform> {
    let n = from.len().min(to.len());
    if n < 3 {
        return None;
    }
    let mean = |points: &[DPoint]| {
        let sum = points[..n].iter().fold(DPoint::default(), |acc, p| {
            DPoint::new(acc.x + p.x, acc.y + p.y)
        });
        DPoint::new(sum.x / n as f64, sum.y / n as f64)
    };
    let (mean_from, mean_to) = (mean(from), mean(to));
    // m = (sum t' f'^T) (sum f' f'^T)^-1 over the centred points f', t'.
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    let mut tf = [[0.0f64; 2]; 2];
    for (f, t) in from.iter().zip(to) {
        let (fx, fy) = (f.x - mean_from.x, f.y - mean_from.y);
        let (tx, ty) = (t.x - mean_to.x, t.y - mean_to.y);
        sxx += fx * fx;
        sxy += fx * fy;
        syy += fy * fy;
        tf[0][0] += tx * fx;
        tf[0][1] += tx * fy;
        tf[1][0] += ty * fx;
        tf[1][1] += ty * fy;
    }
    let det = sxx * syy - sxy * sxy;
    if det.abs() <= 1e-12 * (sxx * syy).max(f64::MIN_POSITIVE) {
        return None;
    }
    let inverse = [[syy / det, -sxy / det], [-sxy / det, sxx / det]];
    let m = [
        [
            tf[0][0] * inverse[0][0] + tf[0][1] * inverse[1][0],
            tf[0][0] * inverse[0][1] + tf[0][1] * inverse[1][1],
        ],
        [
            tf[1][0] * inverse[0][0] + tf[1][1] * inverse[1][0],
            tf[1][0] * inverse[0][1] + tf[1][1] * inverse[1][1],
        ],
    ];
    let b = [
        mean_to.x - (m[0][0] * mean_from.x + m[0][1] * mean_from.y),
        mean_to.y - (m[1][0] * mean_from.x + m[1][1] * mean_from.y),
    ];
    Some(AffineTransform { m, b })
}

/// A real-valued rectangle, as dlib's `drectangle`: corners `(left, top)` and
/// `(right, bottom)`, width `right - left + 1`, empty when `left > right` or `top > bottom`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DRect {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

impl DRect {
    /// The empty rectangle dlib starts unions from.
    pub const EMPTY: DRect = DRect::new(0.0, 0.0, -1.0, -1.0);

    pub const fn new(left: f64, top: f64, right: f64, bottom: f64) -> Self {
        Self {
            left,
            top,
            right,
            bottom,
        }
    }

    /// The rectangle of width `width` and height `height` centred on `center` (dlib's
    /// `centered_drect`, which treats the size as a pixel count: corners are `(size - 1) / 2`
    /// from the centre).
    pub fn centered(center: DPoint, width: f64, height: f64) -> Self {
        let (half_w, half_h) = ((width - 1.0) / 2.0, (height - 1.0) / 2.0);
        Self::new(
            center.x - half_w,
            center.y - half_h,
            center.x + half_w,
            center.y + half_h,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }

    pub fn width(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.right - self.left + 1.0
        }
    }

    pub fn height(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.bottom - self.top + 1.0
        }
    }

    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    pub fn center(&self) -> DPoint {
        DPoint::new(
            (self.left + self.right) / 2.0,
            (self.top + self.bottom) / 2.0,
        )
    }

    pub fn top_left(&self) -> DPoint {
        DPoint::new(self.left, self.top)
    }

    pub fn top_right(&self) -> DPoint {
        DPoint::new(self.right, self.top)
    }

    pub fn bottom_left(&self) -> DPoint {
        DPoint::new(self.left, self.bottom)
    }

    pub fn bottom_right(&self) -> DPoint {
        DPoint::new(self.right, self.bottom)
    }

    /// The smallest rectangle holding both (an empty operand leaves the other unchanged).
    pub fn union(&self, other: &DRect) -> DRect {
        if other.is_empty() {
            *self
        } else if self.is_empty() {
            *other
        } else {
            DRect::new(
                self.left.min(other.left),
                self.top.min(other.top),
                self.right.max(other.right),
                self.bottom.max(other.bottom),
            )
        }
    }

    /// The smallest rectangle holding `self` and the point `p`.
    pub fn including(&self, p: DPoint) -> DRect {
        self.union(&DRect::new(p.x, p.y, p.x, p.y))
    }

    pub fn intersect(&self, other: &DRect) -> DRect {
        DRect::new(
            self.left.max(other.left),
            self.top.max(other.top),
            self.right.min(other.right),
            self.bottom.min(other.bottom),
        )
    }

    /// Moves every side outwards by `amount`.
    pub fn grow(&self, amount: f64) -> DRect {
        DRect::new(
            self.left - amount,
            self.top - amount,
            self.right + amount,
            self.bottom + amount,
        )
    }

    pub fn translate(&self, dx: f64, dy: f64) -> DRect {
        DRect::new(
            self.left + dx,
            self.top + dy,
            self.right + dx,
            self.bottom + dy,
        )
    }

    /// The integer rectangle with each corner rounded to the nearest integer, halves away
    /// from zero (dlib's `drectangle` to `rectangle` conversion, `lround`).
    pub fn round(&self) -> Rect {
        Rect::new(
            self.left.round() as i64,
            self.top.round() as i64,
            self.right.round() as i64,
            self.bottom.round() as i64,
        )
    }
}

impl From<Rect> for DRect {
    fn from(rect: Rect) -> Self {
        DRect::new(
            rect.left as f64,
            rect.top as f64,
            rect.right as f64,
            rect.bottom as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn similarity_transform_recovers_rotation_scale_and_shift() {
        let (angle, scale, shift) = (0.3f64, 2.5, DPoint::new(10.0, -4.0));
        let from = [
            DPoint::new(0.0, 0.0),
            DPoint::new(3.0, 1.0),
            DPoint::new(-2.0, 5.0),
            DPoint::new(1.0, -1.0),
        ];
        let to: Vec<DPoint> = from
            .iter()
            .map(|p| {
                let r = p.rotate_about(DPoint::default(), angle);
                DPoint::new(scale * r.x + shift.x, scale * r.y + shift.y)
            })
            .collect();
        let t = find_similarity_transform(&from, &to);
        assert!(close(t.m[0][0], scale * angle.cos()) && close(t.m[1][0], scale * angle.sin()));
        assert!(close(t.m[0][1], -t.m[1][0]) && close(t.m[1][1], t.m[0][0]));
        assert!(close(t.b[0], shift.x) && close(t.b[1], shift.y));
    }

    #[test]
    fn similarity_transform_never_reflects() {
        // A mirrored point set: the best non-reflecting fit, as dlib's Umeyama gives.
        let from = [
            DPoint::new(0.0, 0.0),
            DPoint::new(1.0, 0.0),
            DPoint::new(0.0, 2.0),
        ];
        let to = [
            DPoint::new(0.0, 0.0),
            DPoint::new(-1.0, 0.0),
            DPoint::new(0.0, 2.0),
        ];
        let t = find_similarity_transform(&from, &to);
        let det = t.m[0][0] * t.m[1][1] - t.m[0][1] * t.m[1][0];
        assert!(det >= 0.0);
    }

    #[test]
    fn affine_transform_through_three_points() {
        let from = [
            DPoint::new(0.0, 0.0),
            DPoint::new(149.0, 0.0),
            DPoint::new(0.0, 149.0),
        ];
        let to = [
            DPoint::new(812.5, 40.25),
            DPoint::new(1100.0, 90.0),
            DPoint::new(760.0, 330.0),
        ];
        let t = find_affine_transform(&from, &to).expect("three corners determine it");
        for (f, expected) in from.iter().zip(&to) {
            let got = t.apply(*f);
            assert!((got.x - expected.x).abs() < 1e-9 && (got.y - expected.y).abs() < 1e-9);
        }
        let line = [
            DPoint::new(0.0, 0.0),
            DPoint::new(1.0, 1.0),
            DPoint::new(2.0, 2.0),
        ];
        assert!(find_affine_transform(&line, &to).is_none());
    }

    #[test]
    fn floor_without_libm_is_floor() {
        for v in [
            0.0,
            -0.0,
            0.5,
            -0.5,
            -1.0,
            2.999999999,
            -2.000000001,
            1e300,
            -1e300,
            9.3e18,
            -9.3e18,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            assert_eq!(floor_to_i64(v), v.floor() as i64, "{v}");
        }
    }

    #[test]
    fn rounding_follows_dlib() {
        assert_eq!(DPoint::new(2.5, -2.5).round(), Point { x: 3, y: -2 });
        assert_eq!(
            DRect::new(0.5, -0.5, 9.5, 1.49).round(),
            Rect::new(1, -1, 10, 1)
        );
    }
}
