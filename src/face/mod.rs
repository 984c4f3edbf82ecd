//! From a face's rectangle to its encoding: the stages after detection.
//!
//! [`landmarks`] finds the landmarks of the face in its rectangle (dlib's `shape_predictor`,
//! with the 5-point model or face_recognition's `large` 68-point one), [`alignment`] cuts the
//! upright 150x150 chip they define (`get_face_chip`), and [`embedder`] turns the chip into 128 numbers (dlib's face
//! recognition ResNet). [`jitter`] makes the randomly perturbed copies of a chip that
//! face_recognition's `num_jitters` averages over.

pub mod alignment;
pub mod embedder;
pub mod jitter;
pub mod landmarks;
