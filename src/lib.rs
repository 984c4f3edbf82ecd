//! concrexit-facedetection: finds the faces in a photo and turns each into the same 128
//! numbers as dlib's `face_recognition` pipeline, with candle for the neural parts.
//!
//! # Data flow
//!
//! `face_recognition.face_encodings(image)`, stage by stage, each a port of the dlib code it
//! names and checked against dlib's outputs in tests/it/:
//!
//! ```text
//!  photo bytes ─ decode ─▶ RGB image ─ detect ─▶ rectangles ─ face::landmarks ─▶ 5 points
//!                                      (hog | cnn)                                   │
//!  128 floats ◀─ face::embedder ─ 150x150 chip ◀─ face::alignment ───────────────────┘
//! ```
//!
//! [`pipeline::FacePipeline`] holds the four loaded models and runs these stages for one
//! photo; everything else either feeds it (the weights, the converter) or serves it (the
//! command line, the Lambda function).
//!
//! # Layout
//!
//! - [`decode`]: photo bytes to 8-bit RGB as PIL gives them (libjpeg-turbo, libwebp-exact
//!   WebP), EXIF orientation applied, pixel count limited before decoding.
//! - [`detect`]: the two face detectors, dlib's HOG frontal face detector ([`detect::hog`] on
//!   [`detect::fhog`] features of a [`detect::pyramid`]) and its CNN (MMOD) detector
//!   ([`detect::cnn`] on a [`detect::tiled_pyramid`], which a device writes itself with
//!   [`detect::pyramid_fill`]), and the non-maximum suppression both end with
//!   ([`detect::nms`]).
//! - [`face`]: from a face's rectangle to its encoding: [`face::landmarks`] (the shape
//!   predictor: dlib's 5-point model, or its 68-point one read from its `.dat`),
//!   [`face::alignment`] (the aligned chip), [`face::embedder`] (the face
//!   recognition ResNet), and [`face::jitter`] for `num_jitters`.
//! - [`pipeline`]: the orchestration above, with the original service's defaults.
//! - [`plan`]: how the models' work on a device is split into passes, every buffer below
//!   candle's 32-bit element limits and within a device-memory budget.
//! - [`nn`]: dlib's DNN layer rules that the embedder and the CNN detector share.
//! - `kernels` (crate-private): the hot loops on the CPU in plain Rust, vectorised with run-time
//!   feature detection (`FACEDETECT_CPU_KERNELS` caps it): the direct convolution both networks
//!   run on, the embedder's ResNet on it, FHOG histograms and pyramid resampling, each with the
//!   arithmetic of the dlib code it replaces; candle's tensors are the path on a GPU, and on
//!   the CPU with `FACEDETECT_CPU_KERNELS=none` ([`models_use_kernels`]).
//! - [`geometry`]: dlib's rectangles, points and transforms.
//! - [`weights`]: where the converted weights are (a directory or a Hugging Face Hub
//!   repository) and how every model loads from them ([`weights::Model`]).
//! - [`convert`]: dlib's model files (`.dat`, `.svm`) to safetensors; the runtime never
//!   needs it, it checks each file against the architecture its model declares.
//! - [`service`]: the original Lambda function's payload and callback around the pipeline
//!   (download, encode, post back, with retries, a memory budget and a destination policy),
//!   shared by the Lambda handler ([`service::lambda`]), the local invoke endpoint
//!   ([`service::serve`]) and the batch command ([`service::batch`]).
//! - [`backfill`] (with the `cli` feature): the album backfill, the pipeline batched across
//!   photos for a device ([`backfill::device_batch`]) behind an SQS queue worker
//!   ([`backfill::worker`]) and its enqueue command.
//! - [`logging`]: the log output of both binaries; [`error`]: the library's error type.
//!
//! The binaries are thin: `src/main.rs` (`facedetect`: encode, serve, batch, worker, enqueue,
//! bench-device, plan, convert-dlib) and
//! `src/bin/lambda.rs` (`facedetect-lambda`, the AWS Lambda function).

#[cfg(feature = "cli")]
pub mod backfill;
pub mod convert;
pub mod decode;
pub mod detect;
pub mod error;
pub mod face;
pub mod geometry;
pub(crate) mod kernels;
pub mod logging;
pub mod nn;
pub mod pipeline;
pub mod plan;
pub mod service;
pub mod weights;

pub use error::{Error, Result};
pub use kernels::models_use_kernels;
