//! concrexit-facedetection: finds the faces in a photo and turns each into the same 128
//! numbers as dlib's `face_recognition` pipeline, with candle for the neural parts.

pub mod convert;
pub mod decode;
pub mod detect;
pub mod error;
pub mod face;
pub mod geometry;
pub mod logging;
pub mod nn;
pub mod pipeline;
pub mod service;
pub mod weights;

pub use error::{Error, Result};
