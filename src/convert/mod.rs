//! Converts dlib's model files into safetensors.
//!
//! Each supported model has its own module that reads the dlib serialization with
//! [`crate::convert::dlib_format::DlibReader`], checks the structure it finds against what the
//! project's candle modules expect, and returns named tensors. [`convert_bytes`] tries every
//! known model kind and, when none fits, reports the error of the reader that got furthest
//! into the file (a reader that ran out of data got to its end), the most informative one.

pub mod cache;
pub mod dlib_format;
pub mod dnn;
pub mod hog;
pub mod mmod;
pub mod resnet;
pub mod shape_predictor;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::convert::dlib_format::DlibReader;
use crate::error::{Error, FormatError, Result};

/// A model kind the converter recognises.
struct ModelKind {
    name: &'static str,
    read: fn(&mut DlibReader) -> std::result::Result<HashMap<String, Tensor>, FormatError>,
}

const MODEL_KINDS: &[ModelKind] = &[
    ModelKind {
        name: "dlib face recognition resnet",
        read: resnet::read,
    },
    ModelKind {
        name: "dlib mmod face detector",
        read: mmod::read,
    },
    ModelKind {
        name: "dlib shape predictor",
        read: shape_predictor::read,
    },
    ModelKind {
        name: "dlib HOG frontal face detector",
        read: hog::read,
    },
];

/// Reads a dlib model file and returns the name of its kind and its tensors.
pub fn convert_bytes(
    bytes: &[u8],
) -> std::result::Result<(&'static str, HashMap<String, Tensor>), FormatError> {
    // A reader that ran out of data got as far as a reader can.
    let reached = |error: &FormatError| match error {
        FormatError::Truncated { .. } => bytes.len(),
        _ => error.offset(),
    };
    let mut furthest: Option<FormatError> = None;
    for kind in MODEL_KINDS {
        let mut reader = DlibReader::new(bytes);
        let attempt = (kind.read)(&mut reader).and_then(|tensors| {
            if reader.is_at_end() {
                Ok(tensors)
            } else {
                Err(reader.error(format!(
                    "unexpected trailing data after a {} model",
                    kind.name
                )))
            }
        });
        match attempt {
            Ok(tensors) => return Ok((kind.name, tensors)),
            Err(error) => {
                if furthest
                    .as_ref()
                    .is_none_or(|best| reached(&error) > reached(best))
                {
                    furthest = Some(error);
                }
            }
        }
    }
    Err(furthest.unwrap_or(FormatError::Invalid {
        offset: 0,
        message: "no model kinds are known".to_string(),
    }))
}

/// Converts the dlib model at `input` into a safetensors file at `output`.
pub fn convert_file(input: &Path, output: &Path) -> Result<&'static str> {
    let bytes = std::fs::read(input).map_err(|source| Error::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let (kind, tensors) = convert_bytes(&bytes).map_err(|source| Error::Format {
        path: input.to_path_buf(),
        source,
    })?;
    candle_core::safetensors::save(&tensors, output).map_err(|source| Error::Write {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(kind)
}
