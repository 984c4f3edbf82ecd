//! What became of each source of an invocation, and the invocation's result built from them.

use std::time::Duration;

use serde::Serialize;

use super::payload::SourceType;

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

/// How a source ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The encodings were delivered.
    Posted { faces: usize },
    /// concrexit already had this source's encodings from an earlier run.
    AlreadyProcessed { faces: usize },
    /// The source could not be done.
    Failed {
        stage: Stage,
        error: String,
        /// The faces found, when the failure came after encoding (a failed callback).
        #[serde(skip_serializing_if = "Option::is_none")]
        faces: Option<usize>,
    },
}

impl Outcome {
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
                    format!("{}: {}: {error}", report.label(), stage.as_str())
                }
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
