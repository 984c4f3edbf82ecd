//! Error types of the library.

use std::path::PathBuf;

/// A dlib-serialized file that is not what the reader expects.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("file ends early at byte {offset} while reading {what}")]
    Truncated { offset: usize, what: String },
    #[error("at byte {offset}: expected {expected}, found {found:?}")]
    Unexpected {
        offset: usize,
        expected: String,
        found: String,
    },
    #[error("at byte {offset}: {message}")]
    Invalid { offset: usize, message: String },
}

/// Errors of the face pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The source is not repeated in the message: a report of the error chain (anyhow's
    // `{:#}`) already appends it.
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a dlib model this converter reads (dlib's face recognition ResNet, \
         shape predictor (5- or 68-point) or MMOD face detector, a .dat file, or its HOG \
         frontal face detector, a .svm or .dat file)"
    )]
    Format { path: PathBuf, source: FormatError },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model weights: {0}")]
    Weights(String),
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("batched model: {0}")]
    Batch(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Safetensors(#[from] safetensors::SafeTensorError),
}

impl FormatError {
    /// The byte offset at which reading failed.
    pub fn offset(&self) -> usize {
        match self {
            Self::Truncated { offset, .. }
            | Self::Unexpected { offset, .. }
            | Self::Invalid { offset, .. } => *offset,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
