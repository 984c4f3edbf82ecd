//! `facedetect._native`: the Rust side of the Python package `facedetect`, a thin layer over
//! the library's public API. The Python modules (python/facedetect/) give it face_recognition's
//! API; this module only moves images, rectangles and numbers across, and runs the library with
//! the GIL released, so that Python threads run it in parallel.
//!
//! Images come as `(bytes, height, width, channels)`: the C-ordered 8-bit samples of a numpy
//! array with 1 (grey) or 3 (RGB) channels. Rectangles are dlib's `(left, top, right, bottom)`
//! with inclusive corners. Library errors become `RuntimeError` (`OSError` for a file that
//! cannot be read), as dlib raises them, and a panic becomes a `RuntimeError` too.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use candle_core::Device;
use concrexit_facedetection::convert::cache;
use concrexit_facedetection::error::{Error, Result};
use concrexit_facedetection::face::alignment::face_chips;
use concrexit_facedetection::face::jitter::DlibRand;
use concrexit_facedetection::face::landmarks::ShapePredictor;
use concrexit_facedetection::geometry::{Point, Rect};
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;
use image::{GrayImage, RgbImage};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// An image as the Python side passes it: samples, height, width, channels.
type ImageArg<'py> = (Bound<'py, PyBytes>, u32, u32, u32);

/// A dlib rectangle as `(left, top, right, bottom)`.
type RectTuple = (i64, i64, i64, i64);

/// A detection: the rectangle and the detector's score (HOG) or confidence (CNN).
type Detection = (i64, i64, i64, i64, f64);

/// The message of an error with its causes, as one line.
fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn to_py_err(error: Error) -> PyErr {
    match &error {
        Error::Io { .. } => PyOSError::new_err(message(&error)),
        _ => PyRuntimeError::new_err(message(&error)),
    }
}

/// Runs `work` without the GIL, with its errors and panics turned into Python exceptions.
fn native<T: Send>(py: Python<'_>, work: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(work)))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            PyRuntimeError::new_err(format!("internal error: {what}"))
        })?
        .map_err(to_py_err)
}

/// The samples of an image argument, checked against its shape.
fn samples<'a>(
    data: &'a Bound<'_, PyBytes>,
    height: u32,
    width: u32,
    channels: u32,
) -> PyResult<&'a [u8]> {
    let bytes = data.as_bytes();
    let expected = u64::from(height) * u64::from(width) * u64::from(channels);
    if !matches!(channels, 1 | 3) || bytes.len() as u64 != expected {
        return Err(PyRuntimeError::new_err(
            "Unsupported image type, must be 8bit gray or RGB image.",
        ));
    }
    Ok(bytes)
}

/// The RGB image of grey or RGB samples (grey samples are copied to all three channels, as
/// dlib's `assign_image` converts them).
fn rgb_image(bytes: &[u8], height: u32, width: u32, channels: u32) -> Result<RgbImage> {
    let rgb = if channels == 1 {
        bytes.iter().flat_map(|&grey| [grey; 3]).collect()
    } else {
        bytes.to_vec()
    };
    RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| Error::InvalidInput(format!("{width}x{height} samples do not fit")))
}

fn rects(tuples: &[RectTuple]) -> Vec<Rect> {
    tuples
        .iter()
        .map(|&(left, top, right, bottom)| Rect::new(left, top, right, bottom))
        .collect()
}

fn detections(found: impl IntoIterator<Item = (Rect, f64)>) -> Vec<Detection> {
    found
        .into_iter()
        .map(|(rect, score)| (rect.left, rect.top, rect.right, rect.bottom, score))
        .collect()
}

/// The loaded models: dlib's HOG and CNN face detectors, the 5-point shape predictor and the
/// face recognition ResNet, on the CPU, and the 68-point shape predictor, read from dlib's
/// `.dat` (converted into the library's cache on first use) when it is first needed.
#[pyclass(frozen, module = "facedetect._native")]
struct Models {
    pipeline: FacePipeline,
    /// dlib's `shape_predictor_68_face_landmarks.dat`, if known.
    dat_68: Option<PathBuf>,
    shape_predictor_68: OnceLock<ShapePredictor<68>>,
}

/// dlib's random generator for jitters, as each dlib face encoder holds one and keeps it
/// between calls: a fresh one jitters as a fresh encoder does.
#[pyclass(frozen, module = "facedetect._native")]
struct JitterGenerator {
    rng: Mutex<DlibRand>,
}

#[pymethods]
impl JitterGenerator {
    #[new]
    fn new() -> Self {
        Self {
            rng: Mutex::new(DlibRand::new()),
        }
    }
}

impl Models {
    /// The 68-point shape predictor, loaded on the first call.
    fn shape_predictor_68(&self) -> Result<&ShapePredictor<68>> {
        if let Some(loaded) = self.shape_predictor_68.get() {
            return Ok(loaded);
        }
        let dat = self.dat_68.as_deref().ok_or_else(|| {
            Error::Weights(
                "the 68-point landmark model is read from the face_recognition_models \
                 package: pip install face_recognition_models"
                    .to_string(),
            )
        })?;
        let loaded = cache::shape_predictor::<68>(dat, None)?;
        // Another thread may have loaded it meanwhile; either copy is the same model.
        Ok(self.shape_predictor_68.get_or_init(|| loaded))
    }
}

#[pymethods]
impl Models {
    /// Loads the models from the converted weights at `weights` (a directory, or
    /// `hf://owner/name[@revision]` as `FACEDETECT_WEIGHTS` takes it); the 68-point model will
    /// be read from `dat_68`.
    #[new]
    #[pyo3(signature = (weights, dat_68=None))]
    fn new(py: Python<'_>, weights: String, dat_68: Option<PathBuf>) -> PyResult<Self> {
        native(py, move || {
            let weights = WeightsLocation::parse(&weights)?;
            Ok(Self {
                pipeline: FacePipeline::load(&weights, &Device::Cpu)?,
                dat_68,
                shape_predictor_68: OnceLock::new(),
            })
        })
    }

    /// The faces `model` ("hog" or "cnn") finds after upsampling `upsample` times, in dlib's
    /// order, each `(left, top, right, bottom, score)`.
    fn detect(
        &self,
        py: Python<'_>,
        image: ImageArg<'_>,
        upsample: u32,
        cnn: bool,
    ) -> PyResult<Vec<Detection>> {
        let (data, height, width, channels) = image;
        let bytes = samples(&data, height, width, channels)?;
        native(py, || {
            if channels == 1 && !cnn {
                // dlib's binding scans a grey image as grey, which resizes it differently.
                let grey = GrayImage::from_raw(width, height, bytes.to_vec()).ok_or_else(|| {
                    Error::InvalidInput(format!("{width}x{height} samples do not fit"))
                })?;
                return Ok(detections(self.pipeline.hog().detect(&grey, upsample)?));
            }
            let image = rgb_image(bytes, height, width, channels)?;
            let options = EncodeOptions {
                detector: if cnn { Detector::Cnn } else { Detector::Hog },
                upsample,
                jitters: 1,
            };
            Ok(detections(self.pipeline.detect(&image, &options)?))
        })
    }

    /// The CNN detector's faces in each image, images of one size run as one batch.
    fn detect_cnn_batch(
        &self,
        py: Python<'_>,
        images: Vec<ImageArg<'_>>,
        upsample: u32,
    ) -> PyResult<Vec<Vec<Detection>>> {
        let inputs = images
            .iter()
            .map(|(data, height, width, channels)| {
                Ok((
                    samples(data, *height, *width, *channels)?,
                    *height,
                    *width,
                    *channels,
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        native(py, || {
            let images = inputs
                .iter()
                .map(|&(bytes, height, width, channels)| rgb_image(bytes, height, width, channels))
                .collect::<Result<Vec<_>>>()?;
            let found = self.pipeline.cnn().detect_batch(&images, upsample)?;
            Ok(found
                .into_iter()
                .map(|faces| {
                    detections(
                        faces
                            .into_iter()
                            .map(|(rect, confidence)| (rect, f64::from(confidence))),
                    )
                })
                .collect())
        })
    }

    /// The landmarks of the face in each rectangle, each `[(x, y), ...]`: 5 points with
    /// `small`, else 68.
    fn landmarks(
        &self,
        py: Python<'_>,
        image: ImageArg<'_>,
        rects: Vec<RectTuple>,
        small: bool,
    ) -> PyResult<Vec<Vec<(i64, i64)>>> {
        let (data, height, width, channels) = image;
        let bytes = samples(&data, height, width, channels)?;
        native(py, || {
            let image = rgb_image(bytes, height, width, channels)?;
            let rects = self::rects(&rects);
            let points = |landmarks: &[Point]| landmarks.iter().map(|p| (p.x, p.y)).collect();
            Ok(if small {
                let found = self
                    .pipeline
                    .shape_predictor()
                    .predict_batch(&image, &rects);
                found.iter().map(|landmarks| points(landmarks)).collect()
            } else {
                let found = self.shape_predictor_68()?.predict_batch(&image, &rects);
                found.iter().map(|landmarks| points(landmarks)).collect()
            })
        })
    }

    /// The 128 numbers of the face in each rectangle (aligned on its 5 landmarks with `small`,
    /// else on its 68), each the mean over `jitters` jittered chips when `jitters` > 1, drawn from
    /// `generator` in dlib's order.
    fn encodings(
        &self,
        py: Python<'_>,
        image: ImageArg<'_>,
        rects: Vec<RectTuple>,
        jitters: u32,
        small: bool,
        generator: Bound<'_, JitterGenerator>,
    ) -> PyResult<Vec<Vec<f32>>> {
        let generator = generator.get();
        let (data, height, width, channels) = image;
        let bytes = samples(&data, height, width, channels)?;
        native(py, || {
            let image = rgb_image(bytes, height, width, channels)?;
            let rects = self::rects(&rects);
            let chips = if small {
                face_chips(
                    &image,
                    &self
                        .pipeline
                        .shape_predictor()
                        .predict_batch(&image, &rects),
                )
            } else {
                face_chips(
                    &image,
                    &self.shape_predictor_68()?.predict_batch(&image, &rects),
                )
            };
            let mut rng = generator.rng.lock().unwrap_or_else(PoisonError::into_inner);
            let encodings = self
                .pipeline
                .embed_chips_jittered(&chips, jitters, &mut rng)?;
            Ok(encodings.iter().map(|encoding| encoding.to_vec()).collect())
        })
    }
}

/// The module `facedetect._native`.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Models>()?;
    module.add_class::<JitterGenerator>()
}
