//! concrexit-facedetection: finds the faces in a photo and turns each into the same 128
//! numbers as dlib's `face_recognition` pipeline, with candle for the neural parts.

pub mod alignment;
pub mod backfill;
pub mod cnn;
pub mod convert;
pub mod decode;
pub mod dlib_format;
pub mod embedder;
pub mod error;
pub mod fhog;
pub mod geometry;
pub mod hog;
pub mod jitter;
pub mod landmarks;
pub mod pipeline;
pub mod pyramid;
pub mod service;
pub mod tiled_pyramid;
pub mod weights;

pub use error::{Error, Result};
