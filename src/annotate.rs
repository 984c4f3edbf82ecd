//! Photos with their faces drawn, for `facedetect encode --annotate`: each face's rectangle as
//! dlib gives it (inclusive corners; what falls outside the photo is clipped), its five
//! landmarks and the detector's score above it, so that one can see what the pipeline found
//! and, by what is missing, what it did not.
//!
//! Drawing is imageproc's; the score is set in DejaVu Sans. Everything is drawn within a few
//! pixels of the face's rectangle and landmarks (the label: just above the rectangle).

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_circle_mut, draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size,
};
use imageproc::rect::Rect as DrawnRect;

use crate::face::landmarks::Landmarks;
use crate::geometry::Rect;
use crate::pipeline::Face;

/// The rectangle's colour: a green that stands out on skin and most backgrounds.
const RECT_COLOUR: Rgb<u8> = Rgb([0, 230, 64]);
/// The landmarks' colour.
const LANDMARK_COLOUR: Rgb<u8> = Rgb([255, 40, 40]);
/// The score's text, on a box of the rectangle's colour.
const TEXT_COLOUR: Rgb<u8> = Rgb([0, 0, 0]);
/// Space around the score's text in its box, in pixels.
const LABEL_MARGIN: i64 = 3;

/// Draws faces on photos, with its font loaded once.
pub struct Annotator {
    font: FontRef<'static>,
}

impl Default for Annotator {
    fn default() -> Self {
        Self::new()
    }
}

impl Annotator {
    pub fn new() -> Self {
        let font = FontRef::try_from_slice(dejavu::sans::regular())
            .expect("DejaVu Sans, bundled by the dejavu crate, is a valid font");
        Self { font }
    }

    /// The photo `image` with `faces` drawn on a copy.
    pub fn annotate(&self, image: &RgbImage, faces: &[Face]) -> RgbImage {
        let mut annotated = image.clone();
        for face in faces {
            self.drawing(face).draw(&mut annotated, &self.font);
        }
        annotated
    }

    /// What is drawn for `face`, and where.
    fn drawing(&self, face: &Face) -> FaceDrawing {
        let side = face.rect.width().min(face.rect.height()).max(1);
        // Sizes follow the face's, so that a small face is not hidden by its own drawing.
        let line_width = (side / 80).clamp(1, 4);
        let landmark_radius = (side / 30).clamp(2, 4);
        let label = face.score.map(|score| {
            let text = format!("{score:.2}");
            let scale = PxScale::from((side as f32 / 8.0).clamp(12.0, 32.0));
            let (text_width, text_height) = text_size(scale, &self.font, &text);
            let width = i64::from(text_width) + 2 * LABEL_MARGIN;
            let height = i64::from(text_height) + 2 * LABEL_MARGIN;
            // On the rectangle's top edge, outside it.
            let left = face.rect.left - line_width + 1;
            let top = face.rect.top - line_width + 1 - height;
            let area = Rect::new(left, top, left + width - 1, top + height - 1);
            Label { text, scale, area }
        });
        FaceDrawing {
            rect: face.rect,
            line_width,
            landmarks: face.landmarks,
            landmark_radius,
            label,
        }
    }
}

/// The shapes drawn for one face.
struct FaceDrawing {
    rect: Rect,
    /// Lines grow outwards from dlib's rectangle, whose own pixels are the innermost.
    line_width: i64,
    landmarks: Landmarks,
    landmark_radius: i64,
    label: Option<Label>,
}

/// The detector's score in a box.
struct Label {
    text: String,
    scale: PxScale,
    area: Rect,
}

impl FaceDrawing {
    fn draw(&self, image: &mut RgbImage, font: &FontRef) {
        for grow in 0..self.line_width {
            let outline = Rect::new(
                self.rect.left - grow,
                self.rect.top - grow,
                self.rect.right + grow,
                self.rect.bottom + grow,
            );
            if let Some(outline) = drawn_rect(&outline) {
                draw_hollow_rect_mut(image, outline, RECT_COLOUR);
            }
        }
        let radius = self.landmark_radius as i32;
        for point in &self.landmarks {
            if let (Ok(x), Ok(y)) = (i32::try_from(point.x), i32::try_from(point.y)) {
                draw_filled_circle_mut(image, (x, y), radius, LANDMARK_COLOUR);
            }
        }
        if let Some(label) = &self.label
            && let Some(area) = drawn_rect(&label.area)
        {
            draw_filled_rect_mut(image, area, RECT_COLOUR);
            let margin = LABEL_MARGIN as i32;
            let (x, y) = (area.left() + margin, area.top() + margin);
            draw_text_mut(image, TEXT_COLOUR, x, y, label.scale, font, &label.text);
        }
    }
}

/// imageproc's rectangle for one of dlib's, where its coordinates fit imageproc's types
/// (imageproc clips what it draws to the photo).
fn drawn_rect(rect: &Rect) -> Option<DrawnRect> {
    let (left, top) = (
        i32::try_from(rect.left).ok()?,
        i32::try_from(rect.top).ok()?,
    );
    let width = u32::try_from(rect.width()).ok()?;
    let height = u32::try_from(rect.height()).ok()?;
    (width > 0 && height > 0).then(|| DrawnRect::at(left, top).of_size(width, height))
}
