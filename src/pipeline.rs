//! The whole of `face_recognition.face_encodings(image)`: detect faces, find the five
//! landmarks of each, cut the aligned 150x150 chip and embed it into 128 numbers.
//!
//! The defaults are the original service's: dlib's HOG detector with one upsampling and no
//! jitter. Faces come out in the detector's order, as dlib returns them.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::detect::cnn::CnnFaceDetector;
use crate::detect::hog::HogDetector;
use crate::error::{Error, Result};
use crate::face::alignment::face_chips;
use crate::face::embedder::{DESCRIPTOR_LEN, FaceEmbedder};
use crate::face::jitter::jitter_chip;
use crate::face::landmarks::{Landmarks, ShapePredictor};
use crate::geometry::Rect;
use crate::weights::{WeightsLocation, files};

/// Chips embedded together (dlib uses 16 too); bounds memory on photos with many faces.
pub const EMBED_BATCH: usize = 16;

/// The most pixels the CNN detector takes after upsampling. Its activations need about
/// 230 bytes per input pixel, so this bounds a detection to about 4 GB; a 1200x900 album
/// photo upsampled once is 4.3 megapixels.
pub const CNN_MAX_PIXELS: u64 = 16_000_000;

/// The seed of the jitter generator.
const JITTER_SEED: u64 = 0x5eed_f00d;

/// Which face detector to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// dlib's HOG frontal face detector (the original service's).
    #[default]
    Hog,
    /// dlib's CNN (MMOD) face detector: better recall, much more computation.
    Cnn,
}

/// How to find and encode faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    pub detector: Detector,
    /// How many times the image is doubled before detection (finds smaller faces).
    pub upsample: u32,
    /// face_recognition's `num_jitters`: average the encodings of this many randomly
    /// jittered chips (0 and 1: no jitter).
    pub jitters: u32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            detector: Detector::Hog,
            upsample: 1,
            jitters: 1,
        }
    }
}

/// One face found in a photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Face {
    /// dlib rectangle: inclusive corners, not clipped to the image.
    pub rect: Rect,
    /// The detector's score; absent when the face location was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub landmarks: Landmarks,
    pub encoding: Vec<f32>,
}

/// The loaded models; load once, then encode many photos (from many threads).
pub struct FacePipeline {
    hog: HogDetector,
    cnn: CnnFaceDetector,
    shape_predictor: ShapePredictor,
    embedder: FaceEmbedder,
}

/// A VarBuilder over one memory-mapped safetensors file of the weights location.
fn var_builder(
    weights: &WeightsLocation,
    file: &str,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let path = weights.file(file)?;
    // SAFETY: the weights files are not modified while they are mapped.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device)? })
}

impl FacePipeline {
    /// Loads every model from `weights` onto `device`.
    pub fn load(weights: &WeightsLocation, device: &Device) -> Result<Self> {
        Ok(Self {
            hog: HogDetector::load(var_builder(weights, files::HOG_DETECTOR, device)?)?,
            cnn: CnnFaceDetector::load(var_builder(weights, files::CNN_DETECTOR, device)?)?,
            shape_predictor: ShapePredictor::load(var_builder(
                weights,
                files::SHAPE_PREDICTOR,
                device,
            )?)?,
            embedder: FaceEmbedder::load(var_builder(weights, files::FACE_EMBEDDER, device)?)?,
        })
    }

    /// Finds the faces in `image`: each one's rectangle and detector score, in dlib's order.
    pub fn detect(&self, image: &RgbImage, options: &EncodeOptions) -> Result<Vec<(Rect, f64)>> {
        Ok(match options.detector {
            Detector::Hog => self.hog.detect(image, options.upsample)?,
            Detector::Cnn => {
                check_cnn_size(image, options.upsample)?;
                self.cnn
                    .detect(image, options.upsample)?
                    .into_iter()
                    .map(|(rect, confidence)| (rect, f64::from(confidence)))
                    .collect()
            }
        })
    }

    /// The CNN detector, for running its halves separately (see [`crate::cnn`]).
    pub fn cnn(&self) -> &CnnFaceDetector {
        &self.cnn
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

    /// The landmarks and the aligned 150x150 chip of each face at `rects`: everything of
    /// encoding but the embedder.
    pub fn align(&self, image: &RgbImage, rects: &[Rect]) -> (Vec<Landmarks>, Vec<RgbImage>) {
        let landmarks = self.shape_predictor.predict_batch(image, rects);
        let chips = face_chips(image, &landmarks);
        (landmarks, chips)
    }

    fn encode_jittered(&self, image: &RgbImage, rects: &[Rect], jitters: u32) -> Result<Vec<Face>> {
        let (landmarks, chips) = self.align(image, rects);
        let encodings = if jitters <= 1 {
            self.embed_chips(&chips)?
        } else {
            self.embed_jittered(&chips, jitters as usize)?
        };
        Ok(rects
            .iter()
            .zip(landmarks)
            .zip(encodings)
            .map(|((&rect, landmarks), encoding)| Face {
                rect,
                score: None,
                landmarks,
                encoding: encoding.to_vec(),
            })
            .collect())
    }

    /// The mean encoding of `jitters` jittered copies of each chip. The generator is seeded
    /// the same way on every call, so the same photo always gives the same encodings.
    fn embed_jittered(
        &self,
        chips: &[RgbImage],
        jitters: usize,
    ) -> Result<Vec<[f32; DESCRIPTOR_LEN]>> {
        let mut rng = StdRng::seed_from_u64(JITTER_SEED);
        chips
            .iter()
            .map(|chip| {
                let copies: Vec<RgbImage> =
                    (0..jitters).map(|_| jitter_chip(chip, &mut rng)).collect();
                let mut mean = [0f32; DESCRIPTOR_LEN];
                for encoding in self.embed_chips(&copies)? {
                    for (sum, value) in mean.iter_mut().zip(encoding) {
                        *sum += value / jitters as f32;
                    }
                }
                Ok(mean)
            })
            .collect()
    }

    /// Encodes already aligned 150x150 face chips, in batches of [`EMBED_BATCH`].
    pub fn embed_chips(&self, chips: &[RgbImage]) -> Result<Vec<[f32; DESCRIPTOR_LEN]>> {
        let mut encodings = Vec::with_capacity(chips.len());
        for batch in chips.chunks(EMBED_BATCH) {
            encodings.extend(self.embedder.embed(batch)?);
        }
        Ok(encodings)
    }
}

/// Refuses a photo that upsampled `upsample` times is more than [`CNN_MAX_PIXELS`].
pub fn check_cnn_size(image: &RgbImage, upsample: u32) -> Result<()> {
    let scale = 4u64.saturating_pow(upsample);
    let pixels = u64::from(image.width()) * u64::from(image.height());
    if pixels.saturating_mul(scale) > CNN_MAX_PIXELS {
        return Err(Error::InvalidInput(format!(
            "{}x{} upsampled {} times is more than the CNN detector's {} megapixels",
            image.width(),
            image.height(),
            upsample,
            CNN_MAX_PIXELS / 1_000_000
        )));
    }
    Ok(())
}
