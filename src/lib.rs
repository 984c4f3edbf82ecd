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
//! photo; [`pipeline::DeviceBatcher`] runs them for many photos at once with the network passes
//! gathered for a device. Every entry point (`facedetect encode`, `batch`, `serve`, the Lambda
//! function, the backfill worker) goes through [`pipeline`]; everything else either feeds it
//! (the weights, the converter) or serves it (the payload and callback layer, the queue).
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
//! - [`face`]: from a face's rectangle to its [`face::Encoding`]: [`face::landmarks`] (the
//!   shape predictor: dlib's 5-point model, or its 68-point one read from its `.dat`),
//!   [`face::alignment`] (the aligned chip), [`face::embedder`] (the face recognition ResNet),
//!   and [`face::jitter`] for `num_jitters`.
//! - [`pipeline`]: the stages above as every entry point runs them, configured by the detector
//!   and its upsampling: one photo at a time ([`pipeline::per_photo`]), batched across photos
//!   for a device ([`pipeline::device_batch`]), photo files for `encode`
//!   ([`pipeline::files`]), the device passes planned ([`pipeline::device_plan`]) and measured
//!   ([`pipeline::throughput`]).
//! - [`plan`]: how the models' work on a device is split into passes, every buffer below
//!   candle's 32-bit element limits and within a device-memory budget.
//! - [`nn`]: dlib's DNN layer rules that the embedder and the CNN detector share.
//! - `kernels` (crate-private): the CPU's primitives in plain Rust and the only place that
//!   chooses an instruction set, by run-time feature detection (`FACEDETECT_CPU_KERNELS` caps
//!   it): the direct convolution both networks run on, FHOG's orientation histograms and
//!   pyramid resampling, each with the arithmetic of the dlib code it replaces, their vector
//!   code written once over a lane trait for AVX2 and AVX-512; candle's tensors are the path on
//!   a GPU, and on the CPU with `FACEDETECT_CPU_KERNELS=none` ([`models_use_kernels`]). The
//!   embedder's ResNet on the convolution lives with the embedder.
//! - [`geometry`]: dlib's rectangles, points and transforms.
//! - [`weights`]: where the converted weights are (a directory or a Hugging Face Hub
//!   repository) and how every model loads from them ([`weights::Model`]).
//! - [`convert`]: dlib's model files (`.dat`, `.svm`) to safetensors; the runtime never
//!   needs it, it checks each file against the architecture its model declares.
//! - [`service`]: the original Lambda function's payload and callback around the pipeline
//!   (download, encode, post back, with retries, a memory budget and a destination policy),
//!   shared by the Lambda handler ([`service::lambda`]), the local invoke endpoint
//!   ([`service::serve`]) and the batch command ([`service::batch`]); [`redact`]
//!   keeps tokens and signed URLs out of logs.
//! - [`annotate`] (with the `cli` feature): photos with their faces drawn, for
//!   `facedetect encode --annotate`.
//! - [`backfill`] (with the `cli` feature): the album backfill's SQS queue worker
//!   ([`backfill::worker`]) and its enqueue command.
//! - [`shutdown`]: the one shutdown signal `serve` and the worker stop on (SIGTERM, Ctrl-C).
//! - [`logging`]: the log output of both binaries; [`telemetry`]: their error reports to Sentry;
//!   [`error`]: the library's error types.
//!
//! # Layers
//!
//! A module uses only modules of the layers below its own (tests/it/layers.rs checks the
//! sources), so there is no import cycle and nothing reaches upwards:
//!
//! ```text
//!  backfill                          the queue worker
//!  service, annotate                 payload, download, callback, the Lambda handler, serve;
//!                                    photos with their faces drawn
//!  pipeline, convert                 the stages together; dlib's files into the models
//!  face                              landmarks, chips, embedder
//!  detect                            the detectors
//!  logging, plan, weights, kernels,  log output; passes, weights, hot loops, photos
//!  decode
//!  telemetry                         error reports to Sentry
//!  error, geometry, nn, redact, shutdown
//! ```
//!
//! The binaries are thin: `src/main.rs` (`facedetect`: encode, serve, batch, worker, enqueue,
//! bench-device, plan, convert-dlib) parses arguments and calls into the library, and
//! `src/bin/lambda.rs` (`facedetect-lambda`, the AWS Lambda function) starts
//! [`service::lambda::cold_start`].

#[cfg(feature = "cli")]
pub mod annotate;
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
pub mod redact;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod weights;

pub use error::{Error, Result};
pub use kernels::models_use_kernels;
