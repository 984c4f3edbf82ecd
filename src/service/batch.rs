//! The batch command: runs one payload, or one payload per line (JSON lines), from a file or
//! stdin, with a progress bar on a terminal and a summary at the end. For backfills.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Outcome, Payload, PayloadError, Service};
use crate::error::Report;
use crate::pipeline::FaceEncoder;

/// Where the payloads come from.
#[derive(Debug, Clone)]
pub enum BatchInput {
    File(PathBuf),
    Stdin,
}

impl BatchInput {
    /// `-` is stdin, anything else a file.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            Self::Stdin
        } else {
            Self::File(PathBuf::from(arg))
        }
    }
}

/// Why a batch could not run.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("reading {what}")]
    Read {
        what: String,
        source: std::io::Error,
    },
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSummary {
    pub payloads: usize,
    pub invalid_payloads: usize,
    pub sources: usize,
    pub posted: usize,
    pub already_processed: usize,
    pub failed: usize,
    pub faces: usize,
}

impl BatchSummary {
    /// Whether every payload was valid and every source done.
    pub fn is_success(&self) -> bool {
        self.invalid_payloads == 0 && self.failed == 0
    }
}

impl fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} payloads ({} invalid), {} sources: {} posted, {} already processed, {} failed; {} faces found",
            self.payloads,
            self.invalid_payloads,
            self.sources,
            self.posted,
            self.already_processed,
            self.failed,
            self.faces
        )
    }
}

/// Splits the input into payloads: the whole text if it is one JSON value, otherwise one per
/// non-empty line. Each entry carries its line number (1-based) for error messages.
pub fn parse_payloads(text: &str) -> Vec<(usize, Result<Payload, PayloadError>)> {
    // Checked without building it: the payload is then read straight into its fields.
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        return vec![(1, Payload::from_json(text.as_bytes()))];
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, Payload::from_json(line.as_bytes())))
        .collect()
}

/// Runs every payload of the input, a few at a time, and returns the summary. Invalid payloads
/// and failed sources are reported on stderr as they happen.
pub async fn run<E: FaceEncoder>(
    service: &Service<E>,
    input: &BatchInput,
    parallel_payloads: usize,
) -> Result<BatchSummary, BatchError> {
    let text = read_input(input)?;
    let entries = parse_payloads(&text);
    let mut summary = BatchSummary {
        payloads: entries.len(),
        ..BatchSummary::default()
    };
    let mut payloads = Vec::new();
    for (line, entry) in entries {
        match entry {
            Ok(payload) => payloads.push((line, payload)),
            Err(error) => {
                summary.invalid_payloads += 1;
                eprintln!("line {line}: {error}");
            }
        }
    }
    summary.sources = payloads.iter().map(|(_, p)| p.sources.len()).sum();

    let progress = ProgressBar::new(summary.sources as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sources {elapsed_precise} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Each failure as it happens, with the line of its payload in the input.
    let observe = |line: usize, report: &super::SourceReport| {
        if let Outcome::Failed { stage, error, .. } = &report.outcome {
            let text = format!(
                "line {line}: {}: {}: {}",
                report.label(),
                stage.as_str(),
                Report(&**error)
            );
            if progress.is_hidden() {
                eprintln!("{text}");
            } else {
                progress.println(text);
            }
        }
        progress.inc(1);
    };
    let observe = &observe;
    let reports: Vec<_> = futures::stream::iter(&payloads)
        .map(|(line, payload)| async move {
            let line = *line;
            service
                .run_observed(payload, &move |report: &super::SourceReport| {
                    observe(line, report)
                })
                .await
        })
        .buffer_unordered(parallel_payloads.max(1))
        .collect()
        .await;
    progress.finish_and_clear();

    for report in reports {
        summary.posted += report.posted;
        summary.already_processed += report.already_processed;
        summary.failed += report.failed;
        summary.faces += report
            .sources
            .iter()
            .map(|s| match s.outcome {
                Outcome::Posted { faces } | Outcome::AlreadyProcessed { faces } => faces,
                // Found, though not delivered (the callback failed).
                Outcome::Failed { faces, .. } => faces.unwrap_or(0),
            })
            .sum::<usize>();
    }
    Ok(summary)
}

/// The whole input as text.
pub fn read_input(input: &BatchInput) -> Result<String, BatchError> {
    match input {
        BatchInput::File(path) => {
            std::fs::read_to_string(path).map_err(|source| BatchError::Read {
                what: path.display().to_string(),
                source,
            })
        }
        BatchInput::Stdin => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| BatchError::Read {
                    what: "stdin".to_string(),
                    source,
                })?;
            Ok(text)
        }
    }
}
