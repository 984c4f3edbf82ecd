//! What became of each source of an invocation, and the invocation's result built from them.
//! A failure keeps its typed cause ([`SourceError`]) until it is rendered: in the report's
//! `error` (the invoke response, the batch summary) and in the source's log line.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::client::FetchError;
use super::payload::SourceType;
use crate::error::Report;

/// A step of processing one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Download,
    Decode,
    Detect,
    Encode,
    Callback,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Decode => "decode",
            Self::Detect => "detect",
            Self::Encode => "encode",
            Self::Callback => "callback",
        }
    }
}

/// Time spent in each stage, in milliseconds; absent for stages not reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detect_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_ms: Option<f64>,
}

impl Timings {
    pub fn record(&mut self, stage: Stage, elapsed: Duration) {
        let ms = Some(elapsed.as_secs_f64() * 1000.0);
        match stage {
            Stage::Download => self.download_ms = ms,
            Stage::Decode => self.decode_ms = ms,
            Stage::Detect => self.detect_ms = ms,
            Stage::Encode => self.encode_ms = ms,
            Stage::Callback => self.callback_ms = ms,
        }
    }
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Downloading the photo, or posting its encodings, failed.
    #[error(transparent)]
    Http(#[from] FetchError),
    /// Decoding, detecting or encoding failed.
    #[error(transparent)]
    Pipeline(#[from] crate::Error),
    #[error(
        "too large to {task}: {:.1} MP, limit {:.1} MP (memory budget {} MiB)",
        *pixels as f64 / 1e6,
        *limit_pixels as f64 / 1e6,
        budget / (1024 * 1024)
    )]
    TooLarge {
        /// What the encoder does: "detect with the HOG detector at upsample 1".
        task: String,
        pixels: u64,
        /// The most pixels a photo may have to fit the budget.
        limit_pixels: u64,
        /// The memory budget for photos being worked on, in bytes.
        budget: u64,
    },
    #[error(
        "not started: {:.1} s left before the invocation's deadline, less than the {} s a \
         source is given",
        left.as_secs_f64(),
        margin.as_secs()
    )]
    NotStarted { left: Duration, margin: Duration },
    #[error("stopped: the invocation's deadline was reached")]
    DeadlineReached,
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("encoding {index} has a number that is not finite")]
    NotFinite { index: usize },
    #[error("encoding task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("the service is shutting down")]
    Closed,
}

/// The error with its causes, as the report says it.
fn render<S: Serializer>(error: &Arc<SourceError>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&Report(&**error))
}

/// How a source ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The encodings were delivered.
    Posted { faces: usize },
    /// concrexit already had this source's encodings from an earlier run.
    AlreadyProcessed { faces: usize },
    /// The source could not be done.
    Failed {
        stage: Stage,
        #[serde(serialize_with = "render")]
        error: Arc<SourceError>,
        /// The faces found, when the failure came after encoding (a failed callback).
        #[serde(skip_serializing_if = "Option::is_none")]
        faces: Option<usize>,
    },
}

impl Outcome {
    /// A failure before the callback: no faces to report.
    pub fn failed(stage: Stage, error: SourceError) -> Self {
        Self::Failed {
            stage,
            error: Arc::new(error),
            faces: None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Posted { .. } => "posted",
            Self::AlreadyProcessed { .. } => "already_processed",
            Self::Failed { .. } => "failed",
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// The outcome of one source with what it took.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The source's position in the payload.
    pub index: usize,
    pub pk: u64,
    #[serde(rename = "type")]
    pub kind: SourceType,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub download_attempts: u32,
    pub callback_attempts: u32,
    pub timings: Timings,
}

impl SourceReport {
    /// `sources[i] (photo 12)`: how errors refer to a source.
    pub fn label(&self) -> String {
        format!("sources[{}] ({} {})", self.index, self.kind, self.pk)
    }
}

/// The result of processing a payload: one report per source, in payload order.
#[derive(Debug, Clone, Serialize)]
pub struct InvocationReport {
    pub posted: usize,
    pub already_processed: usize,
    pub failed: usize,
    pub sources: Vec<SourceReport>,
}

impl InvocationReport {
    pub fn new(mut sources: Vec<SourceReport>) -> Self {
        sources.sort_by_key(|source| source.index);
        let count = |name| sources.iter().filter(|s| s.outcome.name() == name).count();
        Self {
            posted: count("posted"),
            already_processed: count("already_processed"),
            failed: count("failed"),
            sources,
        }
    }

    pub fn failures(&self) -> impl Iterator<Item = &SourceReport> {
        self.sources.iter().filter(|s| s.outcome.is_failure())
    }

    /// One line naming every failed source and why.
    pub fn failure_summary(&self) -> String {
        self.failures()
            .map(|report| match &report.outcome {
                Outcome::Failed { stage, error, .. } => {
                    format!(
                        "{}: {}: {}",
                        report.label(),
                        stage.as_str(),
                        Report(&**error)
                    )
                }
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
