//! `facedetect._native`: the Rust side of the Python package `facedetect`, a thin layer over
//! the library's public API. The Python modules (python/facedetect/) give it face_recognition's
//! API; this module only moves images, rectangles and numbers across, and runs the library with
//! the GIL released, so that Python threads run it in parallel.
//!
//! Images come as `(bytes, height, width, channels)`: the C-ordered 8-bit samples of a numpy
//! array with 1 (grey) or 3 (RGB) channels. Rectangles are dlib's `(left, top, right, bottom)`
//! with inclusive corners. Library errors become `RuntimeError` (`OSError` for a file that
//! cannot be read), as dlib raises them, and a panic becomes a `RuntimeError` too.
//!
//! The work runs on the module's own thread pool ([`threads`]), which a forked child rebuilds
//! and whose size `set_num_threads` sets.

mod threads;

use std::ffi::CString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use candle_core::Device;
use concrexit_facedetection::convert::cache;
use concrexit_facedetection::error::{Error, Result};
use concrexit_facedetection::face::alignment::{
    ChipLandmarks, extract_image_chip, get_face_chip_details,
};
use concrexit_facedetection::face::embedder::CHIP_SIZE;
use concrexit_facedetection::face::jitter::DlibRand;
use concrexit_facedetection::face::landmarks::ShapePredictor;
use concrexit_facedetection::geometry::{Point, Rect};
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;
use image::{GrayImage, RgbImage};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyRuntimeWarning, PyValueError};
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

/// Runs `work` on the module's thread pool without the GIL, with its errors and panics turned
/// into Python exceptions.
fn native<T: Send>(py: Python<'_>, work: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    py.detach(|| threads::install(|| catch_unwind(AssertUnwindSafe(work))))
        .map_err(PyRuntimeError::new_err)?
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
/// `.dat` (converted into the library's cache on first use) when it is first needed. Where the
/// cache cannot be written (no home, a read-only one), the model is converted in memory, with
/// one `RuntimeWarning`.
#[pyclass(frozen, module = "facedetect._native")]
struct Models {
    pipeline: FacePipeline,
    /// dlib's `shape_predictor_68_face_landmarks.dat`, if known.
    dat_68: Option<PathBuf>,
    shape_predictor_68: OnceLock<ShapePredictor<68>>,
    /// Why the 68-point model was converted in memory, if it was.
    cache_warning: OnceLock<String>,
    warned: AtomicBool,
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
        let loaded = match cache::shape_predictor::<68>(dat, None) {
            Ok(loaded) => loaded,
            Err(cache_error) => {
                // dlib reads the .dat itself: so does the conversion in memory. An error of the
                // .dat's own (unreadable, not a model) is this one's.
                let loaded = cache::shape_predictor_uncached::<68>(dat)?;
                let _ = self.cache_warning.set(format!(
                    "facedetect: the 68-point landmark model was converted in memory, as its cache \
                     could not be used ({}); each process converts it again",
                    message(&cache_error)
                ));
                loaded
            }
        };
        // Another thread may have loaded it meanwhile; either copy is the same model.
        Ok(self.shape_predictor_68.get_or_init(|| loaded))
    }

    /// Issues the warning of a 68-point model converted in memory, once.
    fn warn_once(&self, py: Python<'_>) -> PyResult<()> {
        match self.cache_warning.get() {
            Some(text) if !self.warned.swap(true, Ordering::Relaxed) => {
                let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
                PyErr::warn(py, py.get_type::<PyRuntimeWarning>().as_any(), &text, 1)
            }
            _ => Ok(()),
        }
    }
}

/// The chip of dlib's `compute_face_descriptor` for a face of `N` parts.
fn chip<const N: usize>(image: &RgbImage, parts: &[(i64, i64)], padding: f64) -> RgbImage
where
    [Point; N]: ChipLandmarks,
{
    let mut landmarks = [Point { x: 0, y: 0 }; N];
    for (landmark, &(x, y)) in landmarks.iter_mut().zip(parts) {
        *landmark = Point { x, y };
    }
    extract_image_chip(
        image,
        &get_face_chip_details(&landmarks, CHIP_SIZE, padding),
    )
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
                cache_warning: OnceLock::new(),
                warned: AtomicBool::new(false),
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
        let found = native(py, || {
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
        })?;
        self.warn_once(py)?;
        Ok(found)
    }

    /// The 128 numbers of each face of an image, given by its landmarks (5 or 68 parts, as
    /// dlib's `compute_face_descriptor` takes a `full_object_detection`): its chip aligned on
    /// them with `padding` around it, each the mean over `jitters` jittered chips when `jitters`
    /// > 1, drawn from `generator` in dlib's order.
    fn descriptors(
        &self,
        py: Python<'_>,
        image: ImageArg<'_>,
        shapes: Vec<Vec<(i64, i64)>>,
        jitters: u32,
        padding: f64,
        generator: Bound<'_, JitterGenerator>,
    ) -> PyResult<Vec<Vec<f32>>> {
        let generator = generator.get();
        let (data, height, width, channels) = image;
        let bytes = samples(&data, height, width, channels)?;
        native(py, || {
            let image = rgb_image(bytes, height, width, channels)?;
            let chips = shapes
                .iter()
                .map(|parts| match parts.len() {
                    5 => Ok(chip::<5>(&image, parts, padding)),
                    68 => Ok(chip::<68>(&image, parts, padding)),
                    _ => Err(Error::InvalidInput(
                        "The full_object_detection must use the iBUG 300W 68 point face landmark \
                         style or dlib's 5 point style."
                            .to_string(),
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            self.embed(&chips, jitters, generator)
        })
    }

    /// The 128 numbers of each aligned 150x150 chip (as `dlib.get_face_chip` makes them).
    fn chip_descriptors(
        &self,
        py: Python<'_>,
        chips: Vec<ImageArg<'_>>,
        jitters: u32,
        generator: Bound<'_, JitterGenerator>,
    ) -> PyResult<Vec<Vec<f32>>> {
        let generator = generator.get();
        let inputs = chips
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
            let chips = inputs
                .iter()
                .map(|&(bytes, height, width, channels)| rgb_image(bytes, height, width, channels))
                .collect::<Result<Vec<_>>>()?;
            self.embed(&chips, jitters, generator)
        })
    }
}

impl Models {
    /// The encodings of aligned chips, jittered from `generator` when `jitters` > 1.
    fn embed(
        &self,
        chips: &[RgbImage],
        jitters: u32,
        generator: &JitterGenerator,
    ) -> Result<Vec<Vec<f32>>> {
        let mut rng = generator.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let encodings = self
            .pipeline
            .embed_chips_jittered(chips, jitters, &mut rng)?;
        Ok(encodings.iter().map(|encoding| encoding.to_vec()).collect())
    }
}

/// Sets the number of threads the package's work runs on (at least 1).
#[pyfunction]
fn set_num_threads(threads: i64) -> PyResult<()> {
    let threads = usize::try_from(threads)
        .ok()
        .filter(|&threads| threads >= 1)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "the number of threads must be at least 1, not {threads}"
            ))
        })?;
    threads::set_num_threads(threads);
    Ok(())
}

/// The number of threads the package's work runs on.
#[pyfunction]
fn get_num_threads() -> PyResult<usize> {
    threads::num_threads().map_err(PyValueError::new_err)
}

/// The module `facedetect._native`.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Models>()?;
    module.add_class::<JitterGenerator>()?;
    module.add_function(wrap_pyfunction!(set_num_threads, module)?)?;
    module.add_function(wrap_pyfunction!(get_num_threads, module)?)?;
    module.add("NUM_THREADS_VAR", threads::NUM_THREADS_VAR)
}
