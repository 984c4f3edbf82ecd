//! The enqueue command (`facedetect enqueue`): fills the worker's queue from a payload file.
//!
//! The input is read as `batch` reads it (one JSON document or JSON lines) and every payload is
//! validated with the same errors before anything is sent: one invalid payload refuses the
//! whole input. Payloads with many sources are split into messages of at most
//! `sources_per_message` sources (concrexit's own batches are 20), each message a payload with
//! the same `api_url`. Messages go out with SendMessageBatch, ten per call within SQS's size
//! limit; entries that a call reports as failed are sent again a few times, then reported.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde_json::{Value, json};

use super::aws;
use crate::service::batch::{BatchError, BatchInput, parse_payloads, read_input};
use crate::service::{Payload, PayloadError};

/// SQS's largest message and largest SendMessageBatch request, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Entries per SendMessageBatch call (SQS's limit).
const BATCH_ENTRIES: usize = 10;
/// Sends of one entry in all, the first included.
const SEND_ATTEMPTS: u32 = 4;

/// Why nothing, or not everything, was sent.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Read(#[from] BatchError),
    #[error("no payload in the input")]
    Empty,
    #[error("{} invalid payload(s), nothing sent: {}", .0.len(), describe_invalid(.0))]
    Invalid(Vec<(usize, PayloadError)>),
    #[error("sources_per_message must be at least 1")]
    NoSourcesPerMessage,
    #[error(
        "line {line}: a message of {sources} sources is {bytes} bytes, over SQS's {MAX_MESSAGE_BYTES}; \
         use fewer sources per message (nothing sent)"
    )]
    TooLarge {
        line: usize,
        sources: usize,
        bytes: usize,
    },
    #[error("{failed} of {total} messages could not be sent ({sent} sent): {reason}")]
    Send {
        sent: usize,
        failed: usize,
        total: usize,
        reason: String,
    },
}

fn describe_invalid(errors: &[(usize, PayloadError)]) -> String {
    errors
        .iter()
        .map(|(line, error)| format!("line {line}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What went out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueSummary {
    pub payloads: usize,
    pub messages: usize,
    pub sources: usize,
}

/// One message to send: its body and how many sources it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub body: String,
    pub sources: usize,
}

/// Reads, validates and splits the input into messages; nothing is sent.
pub fn prepare(
    input: &BatchInput,
    sources_per_message: usize,
) -> Result<(usize, Vec<OutgoingMessage>), EnqueueError> {
    if sources_per_message == 0 {
        return Err(EnqueueError::NoSourcesPerMessage);
    }
    let text = read_input(input)?;
    let entries = parse_payloads(&text);
    if entries.is_empty() {
        return Err(EnqueueError::Empty);
    }
    let mut payloads = Vec::new();
    let mut invalid = Vec::new();
    for (line, entry) in entries {
        match entry {
            Ok(payload) => payloads.push((line, payload)),
            Err(error) => invalid.push((line, error)),
        }
    }
    if !invalid.is_empty() {
        return Err(EnqueueError::Invalid(invalid));
    }
    let mut messages = Vec::new();
    for (line, payload) in &payloads {
        for body in split(payload, sources_per_message) {
            let sources = body["sources"].as_array().map_or(0, Vec::len);
            let body = body.to_string();
            if body.len() > MAX_MESSAGE_BYTES {
                return Err(EnqueueError::TooLarge {
                    line: *line,
                    sources,
                    bytes: body.len(),
                });
            }
            messages.push(OutgoingMessage { body, sources });
        }
    }
    Ok((payloads.len(), messages))
}

/// The payload as messages of at most `per_message` sources each.
fn split(payload: &Payload, per_message: usize) -> Vec<Value> {
    payload
        .sources
        .chunks(per_message)
        .map(|sources| {
            let sources: Vec<Value> = sources
                .iter()
                .map(|source| {
                    json!({
                        "pk": source.pk,
                        "type": source.kind.as_str(),
                        "photo_url": source.photo_url,
                        "token": source.token.expose(),
                    })
                })
                .collect();
            json!({"api_url": payload.api_url.as_str(), "sources": sources})
        })
        .collect()
}

/// Validates the whole input, then sends it as messages to `queue_url`.
pub async fn run(
    sqs: &Client,
    queue_url: &str,
    input: &BatchInput,
    sources_per_message: usize,
) -> Result<EnqueueSummary, EnqueueError> {
    let (payloads, messages) = prepare(input, sources_per_message)?;
    let total = messages.len();
    let mut summary = EnqueueSummary {
        payloads,
        ..EnqueueSummary::default()
    };
    let mut failures = Vec::new();
    for batch in batches(&messages) {
        let failed = send_batch(sqs, queue_url, &batch).await;
        for (message, reason) in batch.iter().zip(&failed) {
            match reason {
                None => {
                    summary.messages += 1;
                    summary.sources += message.sources;
                }
                Some(reason) => failures.push(reason.clone()),
            }
        }
    }
    if !failures.is_empty() {
        failures.dedup();
        return Err(EnqueueError::Send {
            sent: summary.messages,
            failed: total - summary.messages,
            total,
            reason: failures.join("; "),
        });
    }
    Ok(summary)
}

/// Groups messages into SendMessageBatch calls: at most ten entries and
/// [`MAX_MESSAGE_BYTES`] of bodies per call.
fn batches(messages: &[OutgoingMessage]) -> Vec<Vec<&OutgoingMessage>> {
    let mut batches: Vec<Vec<&OutgoingMessage>> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let full = batches.last().is_none_or(|batch| {
            batch.len() == BATCH_ENTRIES || bytes + message.body.len() > MAX_MESSAGE_BYTES
        });
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += message.body.len();
        if let Some(batch) = batches.last_mut() {
            batch.push(message);
        }
    }
    batches
}

/// Sends one batch, sending entries that failed again (a few times, with a growing pause,
/// unless SQS says the fault is the sender's). Returns, per message, `None` when it was sent
/// or why it was not.
async fn send_batch(
    sqs: &Client,
    queue_url: &str,
    batch: &[&OutgoingMessage],
) -> Vec<Option<String>> {
    let mut outcome: Vec<Option<String>> = vec![Some("not sent".to_string()); batch.len()];
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    for attempt in 1..=SEND_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(200 << (attempt - 2))).await;
        }
        let entries = pending
            .iter()
            .map(|&i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&batch[i].body)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>();
        let entries = match entries {
            Ok(entries) => entries,
            Err(reason) => {
                for &i in &pending {
                    outcome[i] = Some(reason.clone());
                }
                return outcome;
            }
        };
        let output = match sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) => {
                let reason = aws::describe(&error);
                for &i in &pending {
                    outcome[i] = Some(reason.clone());
                }
                continue;
            }
        };
        for done in output.successful() {
            if let Ok(i) = done.id().parse::<usize>()
                && i < batch.len()
            {
                outcome[i] = None;
            }
        }
        let mut retry = Vec::new();
        for failed in output.failed() {
            let Ok(i) = failed.id().parse::<usize>() else {
                continue;
            };
            if i >= batch.len() {
                continue;
            }
            outcome[i] = Some(format!(
                "{}: {}",
                failed.code(),
                failed.message().unwrap_or("no message")
            ));
            if !failed.sender_fault() {
                retry.push(i);
            }
        }
        pending = retry;
        if pending.is_empty() {
            break;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> OutgoingMessage {
        OutgoingMessage {
            body: "x".repeat(bytes),
            sources: 1,
        }
    }

    #[test]
    fn batches_hold_ten_entries_within_the_size_limit() {
        let messages: Vec<_> = (0..23).map(|_| message(100)).collect();
        let sizes: Vec<usize> = batches(&messages).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);

        let messages: Vec<_> = (0..5).map(|_| message(100 * 1024)).collect();
        let sizes: Vec<usize> = batches(&messages).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(batches(&[]).is_empty());
    }
}
