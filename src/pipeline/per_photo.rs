//! The pipeline one photo at a time: [`FacePipeline`] holds the four loaded models and runs
//! `face_recognition.face_encodings(image)` on the calling thread (detect, five landmarks per
//! face, the aligned 150x150 chip, 128 numbers), faces in the detector's order as dlib returns
//! them; [`PhotoEncoder`] is that pipeline with its [`EncodeOptions`] fixed, the service's
//! [`FaceEncoder`] on the CPU.

use std::sync::Arc;

use candle_core::Device;
use image::RgbImage;
use serde::Serialize;

use super::{Detector, EncodeOptions, FaceEncoder};

use crate::detect::cnn::CnnFaceDetector;
use crate::detect::hog::HogDetector;
use crate::error::Result;
use crate::face::alignment::face_chips;
use crate::face::embedder::FaceEmbedder;
use crate::face::jitter::{DlibRand, jitter_chip};
use crate::face::landmarks::{Landmarks, ShapePredictor};
use crate::face::{ENCODING_LEN, Encoding};
use crate::geometry::Rect;
use crate::weights::{Model, WeightsLocation, files};

/// Bytes the HOG detector holds per pixel of the upsampled image, at most: the pyramid's RGB
/// levels (3 bytes a pixel, 36/11 of the first level's pixels in all, since each
/// `pyramid_down<6>` level has 25/36 of the pixels of the one above) and, for levels being
/// scored, their FHOG histograms, features and filter scores (about 3.5 bytes a pixel), counted
/// as if every level were scored at once; rounded up. Measured peaks stay below it (see the
/// memory test in tests/).
pub const HOG_BYTES_PER_UPSAMPLED_PIXEL: u64 = 24;

/// Bytes the CNN detector's activations take per pixel after upsampling.
pub const CNN_BYTES_PER_UPSAMPLED_PIXEL: u64 = 230;

/// Memory the shape predictor, the chips and the embedder take for one group of
/// [`FACE_GROUP`] faces, whatever the photo's size, rounded up.
pub const ENCODE_BYTES: u64 = 160 * 1024 * 1024;

/// Faces of a photo aligned and embedded at a time (the embedder's batch): their chips are
/// made a group at a time, so that the number of faces found bounds the time taken, never the
/// memory.
pub const FACE_GROUP: usize = crate::face::embedder::EMBED_BATCH;

/// One face found in a photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Face {
    /// dlib rectangle: inclusive corners, not clipped to the image.
    pub rect: Rect,
    /// The detector's score; absent when the face location was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub landmarks: Landmarks,
    pub encoding: Encoding,
}

impl Face {
    /// The faces at `rects` with their landmarks and encodings, in order; no score.
    pub fn at(rects: &[Rect], landmarks: Vec<Landmarks>, encodings: Vec<Encoding>) -> Vec<Face> {
        rects
            .iter()
            .zip(landmarks)
            .zip(encodings)
            .map(|((&rect, landmarks), encoding)| Face {
                rect,
                score: None,
                landmarks,
                encoding,
            })
            .collect()
    }
}

/// The loaded models; load once, then encode many photos (from many threads).
pub struct FacePipeline {
    hog: HogDetector,
    cnn: CnnFaceDetector,
    shape_predictor: ShapePredictor,
    embedder: FaceEmbedder,
}

impl FacePipeline {
    /// Loads every model from `weights` onto `device`.
    pub fn load(weights: &WeightsLocation, device: &Device) -> Result<Self> {
        Ok(Self {
            hog: HogDetector::from_file(&weights.file(files::HOG_DETECTOR)?, device)?,
            cnn: CnnFaceDetector::from_file(&weights.file(files::CNN_DETECTOR)?, device)?,
            shape_predictor: ShapePredictor::from_file(
                &weights.file(files::SHAPE_PREDICTOR)?,
                device,
            )?,
            embedder: FaceEmbedder::from_file(&weights.file(files::FACE_EMBEDDER)?, device)?,
        })
    }

    /// Finds the faces in `image`: each one's rectangle and detector score, in dlib's order.
    pub fn detect(&self, image: &RgbImage, options: &EncodeOptions) -> Result<Vec<(Rect, f64)>> {
        Ok(match options.detector {
            Detector::Hog => self.hog.detect(image, options.upsample)?,
            Detector::Cnn => self
                .cnn
                .detect(image, options.upsample)?
                .into_iter()
                .map(|(rect, confidence)| (rect, f64::from(confidence)))
                .collect(),
        })
    }

    /// The most memory [`FacePipeline::encode`] takes on a photo of `pixels` pixels, beyond
    /// the photo itself: the enlarged copies and the detector's working memory, or the
    /// embedder's, whichever is larger.
    pub fn working_bytes(pixels: u64, options: &EncodeOptions) -> u64 {
        let scale = 4u64.saturating_pow(options.upsample);
        let upsampled = pixels.saturating_mul(scale);
        let per_pixel = match options.detector {
            Detector::Hog => HOG_BYTES_PER_UPSAMPLED_PIXEL,
            Detector::Cnn => CNN_BYTES_PER_UPSAMPLED_PIXEL,
        };
        // `upsample` starts from a copy of the photo.
        let copy = if options.upsample > 0 { 3 * pixels } else { 0 };
        upsampled
            .saturating_mul(per_pixel)
            .saturating_add(copy)
            .max(ENCODE_BYTES)
    }

    /// The HOG detector, for images other than RGB ones (see [`crate::detect::hog`]).
    pub fn hog(&self) -> &HogDetector {
        &self.hog
    }

    /// The CNN detector, for running its halves separately (see [`crate::detect::cnn`]).
    pub fn cnn(&self) -> &CnnFaceDetector {
        &self.cnn
    }

    /// The 5-point shape predictor, for landmarks without encodings.
    pub fn shape_predictor(&self) -> &ShapePredictor {
        &self.shape_predictor
    }

    /// The face embedder, for embedding chips of many photos together.
    pub fn embedder(&self) -> &FaceEmbedder {
        &self.embedder
    }

    /// Finds the faces in `image` and encodes each.
    pub fn encode(&self, image: &RgbImage, options: &EncodeOptions) -> Result<Vec<Face>> {
        let detections = self.detect(image, options)?;
        let (rects, scores): (Vec<Rect>, Vec<f64>) = detections.into_iter().unzip();
        let mut faces = self.encode_jittered(image, &rects, options.jitters)?;
        for (face, score) in faces.iter_mut().zip(scores) {
            face.score = Some(score);
        }
        Ok(faces)
    }

    /// Encodes the faces at known locations (face_recognition's `known_face_locations`).
    pub fn encode_at(&self, image: &RgbImage, rects: &[Rect]) -> Result<Vec<Face>> {
        self.encode_jittered(image, rects, 1)
    }

    /// Encodes the faces at known locations, each the mean of `jitters` jittered chips, as
    /// face_recognition applies `num_jitters` together with `known_face_locations`.
    pub fn encode_at_jittered(
        &self,
        image: &RgbImage,
        rects: &[Rect],
        jitters: u32,
    ) -> Result<Vec<Face>> {
        self.encode_jittered(image, rects, jitters)
    }

    /// The landmarks and the aligned 150x150 chip of each face at `rects`: everything of
    /// encoding but the embedder.
    pub fn align(&self, image: &RgbImage, rects: &[Rect]) -> (Vec<Landmarks>, Vec<RgbImage>) {
        let landmarks = self.shape_predictor.predict_batch(image, rects);
        let chips = face_chips(image, &landmarks);
        (landmarks, chips)
    }

    fn encode_jittered(&self, image: &RgbImage, rects: &[Rect], jitters: u32) -> Result<Vec<Face>> {
        let (landmarks, encodings) = self.encode_in_groups(image, rects, jitters)?;
        Ok(Face::at(rects, landmarks, encodings))
    }

    /// The landmarks and encodings of the faces at `rects`, [`FACE_GROUP`] faces at a time,
    /// the jitters of all drawn from one generator in order (so the same as all at once).
    fn encode_in_groups(
        &self,
        image: &RgbImage,
        rects: &[Rect],
        jitters: u32,
    ) -> Result<(Vec<Landmarks>, Vec<Encoding>)> {
        let mut rng = DlibRand::new();
        let mut landmarks = Vec::with_capacity(rects.len());
        let mut encodings = Vec::with_capacity(rects.len());
        for group in rects.chunks(FACE_GROUP) {
            let (group_landmarks, chips) = self.align(image, group);
            encodings.extend(self.embed_chips_jittered(&chips, jitters, &mut rng)?);
            landmarks.extend(group_landmarks);
        }
        Ok((landmarks, encodings))
    }

    /// Encodes already aligned 150x150 face chips, each the mean of `jitters` jittered copies
    /// (0 and 1: the chip itself), drawn from `rng` in dlib's order. The pipeline's own calls
    /// start from a fresh generator, so the same photo always gives the same encodings: those
    /// of face_recognition's first `face_encodings` call in a process.
    pub fn embed_chips_jittered(
        &self,
        chips: &[RgbImage],
        jitters: u32,
        rng: &mut DlibRand,
    ) -> Result<Vec<Encoding>> {
        if jitters <= 1 {
            return self.embed_chips(chips);
        }
        chips
            .iter()
            .map(|chip| {
                let copies: Vec<RgbImage> = (0..jitters).map(|_| jitter_chip(chip, rng)).collect();
                // dlib's `mean`: the sum in order, then one division.
                let mut sum = [0f32; ENCODING_LEN];
                for encoding in self.embed_chips(&copies)? {
                    for (total, value) in sum.iter_mut().zip(&encoding) {
                        *total += value;
                    }
                }
                Ok(Encoding::from(sum.map(|total| total / jitters as f32)))
            })
            .collect()
    }

    /// Encodes already aligned 150x150 face chips.
    pub fn embed_chips(&self, chips: &[RgbImage]) -> Result<Vec<Encoding>> {
        self.embedder.embed(chips)
    }
}

/// The per-photo pipeline with its options fixed: what the service runs on the CPU (`batch`,
/// `serve`, the Lambda function). Shares the loaded models.
pub struct PhotoEncoder {
    pipeline: Arc<FacePipeline>,
    options: EncodeOptions,
}

impl PhotoEncoder {
    /// The pipeline detecting as `options` say and encoding each face found.
    pub fn new(pipeline: Arc<FacePipeline>, options: EncodeOptions) -> Self {
        Self { pipeline, options }
    }

    /// The options every photo is encoded with.
    pub fn options(&self) -> &EncodeOptions {
        &self.options
    }
}

impl FaceEncoder for PhotoEncoder {
    type Faces = Vec<Rect>;

    fn task(&self) -> String {
        self.options.task()
    }

    fn working_bytes(&self, pixels: u64) -> u64 {
        FacePipeline::working_bytes(pixels, &self.options)
    }

    fn detect(&self, image: &RgbImage) -> Result<Vec<Rect>> {
        let detections = self.pipeline.detect(image, &self.options)?;
        Ok(detections.into_iter().map(|(rect, _score)| rect).collect())
    }

    fn encode(&self, image: &RgbImage, rects: Vec<Rect>) -> Result<Vec<Encoding>> {
        let (_landmarks, encodings) =
            self.pipeline
                .encode_in_groups(image, &rects, self.options.jitters)?;
        Ok(encodings)
    }
}
