//! Face detection: where the faces are, as dlib rectangles with a score, best first.
//!
//! Two detectors, both as dlib runs them from Python:
//! - [`hog`]: the HOG frontal face detector (`get_frontal_face_detector()`), the original
//!   service's; it scores [`fhog`] features of every level of an image [`pyramid`] with linear
//!   filters.
//! - [`cnn`]: the CNN (MMOD) face detector (`cnn_face_detection_model_v1`), a fully
//!   convolutional network scanning a [`tiled_pyramid`] of the photo, which the device that
//!   runs the network writes itself ([`pyramid_fill`]).
//!
//! Both enlarge the photo first with [`pyramid::upsample`] and map their windows back with
//! [`pyramid::rect_from_upsampled`], and both end with dlib's non-maximum suppression
//! ([`nms`]).

pub mod cnn;
pub mod fhog;
pub mod hog;
pub mod nms;
pub mod pyramid;
pub mod pyramid_fill;
pub mod tiled_pyramid;
