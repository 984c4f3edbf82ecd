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

/// Why a batched model gave no results for a caller's items.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("batched model: cannot start the {name} thread")]
    Spawn {
        name: String,
        source: std::sync::Arc<std::io::Error>,
    },
    #[error("batched model: the model thread has stopped")]
    Stopped,
    #[error("batched model: the batch gave {got} results for {expected} items")]
    ResultCount { got: usize, expected: usize },
    #[error("batched model: the model panicked on this batch")]
    Panicked,
    /// The model failed on the batch these items were part of.
    #[error(transparent)]
    Failed(std::sync::Arc<Error>),
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
    /// A URL where a photo file was expected.
    #[error("encode reads files; use batch or serve for URLs")]
    UrlGiven,
    #[error(
        "this facedetect was built without the `cuda` feature; build it with \
             scripts/build-cuda.sh (cargo build --release --features cuda)"
    )]
    NoCudaSupport,
    #[error("cannot open CUDA device {ordinal} (no NVIDIA GPU, or its driver is not loaded)")]
    NoCudaDevice {
        ordinal: usize,
        source: candle_core::Error,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
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

/// An error with its causes, for the edges where errors become text (a callback's failure
/// reason, a log field): `reading x.jpg: No such file or directory`, as anyhow's `{:#}` says
/// it.
pub struct Report<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
