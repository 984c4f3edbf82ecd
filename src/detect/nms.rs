//! Non-maximum suppression as dlib's detectors apply it (dlib/image_processing/box_overlap_testing.h):
//! detections sorted best first, each kept only when it overlaps none of those already kept.

use crate::geometry::Rect;

/// dlib's `test_box_overlap`: two boxes overlap when their intersection covers more than
/// `iou` of the box bounding both (not of their union), or more than `covered` of either box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxOverlap {
    pub iou: f64,
    pub covered: f64,
}

impl BoxOverlap {
    pub fn overlaps(&self, a: &Rect, b: &Rect) -> bool {
        let inner = a.intersect(b).area() as f64;
        if inner == 0.0 {
            return false;
        }
        let bounding = Rect::new(
            a.left.min(b.left),
            a.top.min(b.top),
            a.right.max(b.right),
            a.bottom.max(b.bottom),
        );
        inner / bounding.area() as f64 > self.iou
            || inner / a.area() as f64 > self.covered
            || inner / b.area() as f64 > self.covered
    }

    /// dlib's non-max suppression: walks detections sorted best first and keeps each one
    /// that overlaps none of those already kept.
    pub fn suppress<S>(&self, best_first: impl IntoIterator<Item = (Rect, S)>) -> Vec<(Rect, S)> {
        let mut kept: Vec<(Rect, S)> = Vec::new();
        for (rect, score) in best_first {
            if !kept.iter().any(|(other, _)| self.overlaps(other, &rect)) {
                kept.push((rect, score));
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_overlap_uses_the_bounding_box_and_coverage() {
        let overlap = BoxOverlap {
            iou: 0.2,
            covered: 0.78,
        };
        let a = Rect::new(0, 0, 9, 9);
        assert!(!overlap.overlaps(&a, &Rect::new(10, 0, 19, 9)));
        // Intersection 70 of a 130-pixel bounding box.
        assert!(overlap.overlaps(&a, &Rect::new(3, 0, 12, 9)));
        // Intersection 36: 36/164 = 0.22 of the union, but dlib divides by the bounding box,
        // 36/196 = 0.18, and each box is only 36% covered.
        assert!(!overlap.overlaps(&a, &Rect::new(4, 4, 13, 13)));
        // A small box inside a big one is covered entirely.
        assert!(overlap.overlaps(&Rect::new(0, 0, 99, 99), &Rect::new(10, 10, 19, 19)));
    }
}
