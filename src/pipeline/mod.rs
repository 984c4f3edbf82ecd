//! The face pipeline every entry point runs: `facedetect encode`, `batch` and `serve`, the
//! Lambda function and the backfill worker.
//!
//! `face_recognition.face_encodings(image)` stage by stage: detect the faces, find the five
//! landmarks of each, cut the aligned 150x150 chip and embed it into 128 numbers. Two ways to
//! run it, both configured by [`EncodeOptions`] (the detector and its upsampling; HOG at
//! upsample 1 is the original service's default):
//! - [`per_photo`]: the loaded models ([`FacePipeline`]) run one photo at a time, on the
//!   thread that asks; [`PhotoEncoder`] is that with its options fixed, for the service;
//! - [`device_batch`]: the same models with their network passes gathered across photos from
//!   many threads, to keep a GPU busy ([`DeviceBatcher`], the backfill worker's);
//! - [`throughput`] measures the batched pipeline on a folder of photos
//!   (`facedetect bench-device`).
//!
//! Both implement [`FaceEncoder`], the two timed steps (detect, then encode) the service
//! layer runs each downloaded photo through.

pub mod device_batch;
pub mod device_plan;
pub mod files;
pub mod per_photo;
pub mod throughput;

use candle_core::Device;
use image::RgbImage;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::face::Encoding;

pub use device_batch::{BatchChoice, BatchSizes, DeviceBatcher};
pub use per_photo::{Face, FacePipeline, PhotoEncoder};

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// The first NVIDIA GPU, with candle's CUDA backend (the `cuda` feature).
    Cuda,
}

impl DeviceKind {
    /// Opens the device: CUDA device 0 with one stream for every thread
    /// ([`device_batch::cuda_device`]). An unavailable GPU, or a build without the `cuda`
    /// feature, is an error, never a fall-back to the CPU.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda if cfg!(feature = "cuda") => device_batch::cuda_device(0),
            Self::Cuda => Err(Error::NoCudaSupport),
        }
    }
}

/// Which face detector to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// dlib's HOG frontal face detector (the original service's).
    #[default]
    Hog,
    /// dlib's CNN (MMOD) face detector: better recall, much more computation.
    Cnn,
}

impl Detector {
    /// The detector's name in messages: "HOG", "CNN".
    pub fn name(self) -> &'static str {
        match self {
            Self::Hog => "HOG",
            Self::Cnn => "CNN",
        }
    }
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
    /// The original service's: HOG, one upsampling, no jitter.
    fn default() -> Self {
        Self {
            detector: Detector::Hog,
            upsample: 1,
            jitters: 1,
        }
    }
}

impl EncodeOptions {
    /// The options with this detector and upsampling, and no jitter.
    pub fn detecting(detector: Detector, upsample: u32) -> Self {
        Self {
            detector,
            upsample,
            jitters: 1,
        }
    }

    /// What detection does, for errors: "detect with the HOG detector at upsample 1".
    pub fn task(&self) -> String {
        format!(
            "detect with the {} detector at upsample {}",
            self.detector.name(),
            self.upsample
        )
    }
}

/// Turns a decoded photo into face encodings, in two timed steps.
pub trait FaceEncoder: Send + Sync + 'static {
    /// What detection found, handed to [`FaceEncoder::encode`].
    type Faces: Send;

    /// What the encoder does, for errors: "detect with the HOG detector at upsample 1".
    fn task(&self) -> String;

    /// The most memory detecting and encoding the faces of a photo of `pixels` pixels takes,
    /// beyond the decoded photo itself.
    fn working_bytes(&self, pixels: u64) -> u64;

    /// Finds the faces in the photo.
    fn detect(&self, image: &RgbImage) -> Result<Self::Faces>;

    /// Computes one encoding per face found.
    fn encode(&self, image: &RgbImage, faces: Self::Faces) -> Result<Vec<Encoding>>;
}
