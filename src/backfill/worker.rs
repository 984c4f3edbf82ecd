//! The queue worker (`facedetect worker`): takes payloads from an SQS queue and runs them
//! through the service, many at once, so that their photos share the device.
//!
//! Each message body is one payload exactly as the Lambda function takes it. The worker
//! long-polls (20 s, up to 10 messages, never more than it has room for), and while a message
//! is worked on it keeps it invisible to other consumers with a heartbeat that renews its
//! visibility timeout. Then:
//! - every source posted or already processed (concrexit's "not processing" answer to a
//!   repeated post): the message is deleted;
//! - a source failed: the message is not deleted; it becomes visible again after a backoff
//!   that doubles with each receive and never exceeds the visibility timeout, so it is retried
//!   and, past the queue's `maxReceiveCount`, moved to the dead-letter queue by the queue's
//!   redrive policy. Re-posting the sources that were done is harmless;
//! - the body is not a valid payload: the message is released at once (visibility 0) without
//!   any of it being processed, so it reaches the dead-letter queue after its few receives.
//!
//! One JSON log line per source (from the service, with the message id) and one per message.
//! On shutdown (SIGTERM from ECS, or SIGINT) the worker stops receiving, lets the messages in
//! flight finish for at most the grace period, releases those still unfinished (visibility 0)
//! and returns. A worker killed outright loses nothing either: the messages it held become
//! visible again when their visibility timeout runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::aws;
use crate::pipeline::FaceEncoder;
use crate::service::{Payload, Service};
use crate::shutdown::Shutdown;

/// The longest long poll SQS allows.
const WAIT_TIME: Duration = Duration::from_secs(20);
/// The most messages one ReceiveMessage returns.
const RECEIVE_MAX: usize = 10;
/// Entries per ChangeMessageVisibilityBatch call (SQS's limit).
const VISIBILITY_BATCH: usize = 10;
/// The longest pause after failed ReceiveMessage calls.
const MAX_RECEIVE_PAUSE: Duration = Duration::from_secs(20);

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue_url: String,
    /// How long a held message stays invisible past each heartbeat; `None`: the queue's own
    /// `VisibilityTimeout`.
    pub visibility_timeout: Option<Duration>,
    /// The most messages held at once.
    pub max_messages: usize,
    /// The wait before a message with a failed source is retried after its first receive,
    /// doubled with each further receive, at most the visibility timeout.
    pub retry_backoff: Duration,
    /// How long in-flight messages may still run after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("reading the attributes of queue {queue_url}: {message}")]
    QueueAttributes { queue_url: String, message: String },
    #[error("invalid setting: {0}")]
    Config(String),
}

/// What the worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Messages whose sources were all done, deleted.
    pub deleted: usize,
    /// Messages with a failed source, left to come back after a backoff.
    pub retried: usize,
    /// Messages whose body was not a valid payload, released unprocessed.
    pub invalid: usize,
    /// Messages still in flight when the grace period ran out, released.
    pub released: usize,
}

/// How one message ended.
enum MessageEnd {
    Deleted,
    Retried,
    Invalid,
}

/// What every message task shares.
struct Context<E> {
    sqs: Client,
    service: Arc<Service<E>>,
    queue_url: String,
    visibility: Duration,
    retry_backoff: Duration,
    /// Receipt handles of the messages being worked on, by message id: what a shutdown that
    /// runs out of time releases.
    held: Mutex<HashMap<String, String>>,
}

/// Runs the worker until `shutdown` fires, then drains within the grace period.
pub async fn run<E: FaceEncoder>(
    sqs: Client,
    service: Arc<Service<E>>,
    config: WorkerConfig,
    mut shutdown: Shutdown,
) -> Result<WorkerSummary, WorkerError> {
    if config.max_messages == 0 {
        return Err(WorkerError::Config(
            "max_messages must be at least 1".to_string(),
        ));
    }
    let attributes = queue_attributes(&sqs, &config.queue_url).await?;
    let visibility = match config.visibility_timeout {
        Some(visibility) => visibility,
        None => attributes.visibility_timeout.ok_or_else(|| {
            WorkerError::Config("the queue reports no VisibilityTimeout".to_string())
        })?,
    };
    if visibility < Duration::from_secs(1) || visibility > Duration::from_secs(43_200) {
        return Err(WorkerError::Config(format!(
            "the visibility timeout must be 1 s to 12 h, not {visibility:?}"
        )));
    }
    tracing::info!(
        queue_url = %config.queue_url,
        visibility_timeout_s = visibility.as_secs(),
        max_receive_count = attributes.max_receive_count,
        max_messages = config.max_messages,
        shutdown_grace_s = config.shutdown_grace.as_secs_f64(),
        "worker started"
    );
    let context = Arc::new(Context {
        sqs,
        service,
        queue_url: config.queue_url.clone(),
        visibility,
        retry_backoff: config.retry_backoff,
        held: Mutex::new(HashMap::new()),
    });
    let room = Arc::new(Semaphore::new(config.max_messages));
    let mut tasks = JoinSet::new();
    let mut summary = WorkerSummary::default();
    let mut receive_failures = 0u32;
    loop {
        // Receive only what there is room for, so that no message waits unheld.
        let permits = tokio::select! {
            _ = shutdown.recv() => break,
            permits = take_room(&room) => permits,
        };
        let received = tokio::select! {
            _ = shutdown.recv() => break,
            received = context.receive(permits.len()) => received,
        };
        match received {
            Ok(messages) => {
                receive_failures = 0;
                for (message, permit) in messages.into_iter().zip(permits) {
                    let context = Arc::clone(&context);
                    tasks.spawn(async move {
                        let end = context.handle(message).await;
                        drop(permit);
                        end
                    });
                }
            }
            Err(error) => {
                receive_failures += 1;
                let pause =
                    Duration::from_secs(1 << receive_failures.min(5)).min(MAX_RECEIVE_PAUSE);
                tracing::warn!(%error, pause_s = pause.as_secs(), "receiving messages failed");
                tokio::select! {
                    _ = shutdown.recv() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        while let Some(end) = tasks.try_join_next() {
            summary.count(end);
        }
    }

    tracing::info!(
        in_flight = tasks.len(),
        grace_s = config.shutdown_grace.as_secs_f64(),
        "stopped receiving; finishing the messages in flight"
    );
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while let Some(end) = tasks.join_next().await {
            summary.count(end);
        }
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        while let Some(end) = tasks.join_next().await {
            summary.count(end);
        }
        summary.released = context.release_held().await;
    }
    tracing::info!(
        deleted = summary.deleted,
        retried = summary.retried,
        invalid = summary.invalid,
        released = summary.released,
        "worker stopped"
    );
    Ok(summary)
}

impl WorkerSummary {
    fn count(&mut self, end: Result<MessageEnd, tokio::task::JoinError>) {
        match end {
            Ok(MessageEnd::Deleted) => self.deleted += 1,
            Ok(MessageEnd::Retried) => self.retried += 1,
            Ok(MessageEnd::Invalid) => self.invalid += 1,
            // Aborted at the end of the grace period: its message is released.
            Err(error) if error.is_cancelled() => {}
            Err(error) => tracing::error!(%error, "a message task failed"),
        }
    }
}

/// Waits for room for one message, then takes room for up to [`RECEIVE_MAX`].
async fn take_room(room: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    let Ok(first) = Arc::clone(room).acquire_owned().await else {
        return Vec::new();
    };
    let mut permits = vec![first];
    while permits.len() < RECEIVE_MAX {
        match Arc::clone(room).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// The queue attributes the worker uses.
struct QueueAttributes {
    visibility_timeout: Option<Duration>,
    /// From the redrive policy, for the log.
    max_receive_count: Option<u64>,
}

/// Reads the queue's attributes; this also checks that the queue exists and is reachable.
async fn queue_attributes(sqs: &Client, queue_url: &str) -> Result<QueueAttributes, WorkerError> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| WorkerError::QueueAttributes {
            queue_url: queue_url.to_string(),
            message: aws::describe(&e),
        })?;
    let attributes = output.attributes();
    let get = |name: QueueAttributeName| attributes.and_then(|a| a.get(&name));
    Ok(QueueAttributes {
        visibility_timeout: get(QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs),
        max_receive_count: get(QueueAttributeName::RedrivePolicy)
            .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
            .and_then(|policy| match &policy["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }),
    })
}

impl<E: FaceEncoder> Context<E> {
    async fn receive(&self, max: usize) -> Result<Vec<Message>, String> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, RECEIVE_MAX) as i32)
            .wait_time_seconds(WAIT_TIME.as_secs() as i32)
            .visibility_timeout(self.visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| aws::describe(&e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Works on one message from receipt to deletion or release.
    async fn handle(self: Arc<Self>, message: Message) -> MessageEnd {
        let started = Instant::now();
        let id = message.message_id.clone().unwrap_or_default();
        let receives: u32 = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let Some(receipt) = message.receipt_handle.clone() else {
            tracing::error!(message_id = %id, "message without a receipt handle: left to time out");
            return MessageEnd::Retried;
        };
        self.held_mut().insert(id.clone(), receipt.clone());
        let end = match Payload::from_json(message.body().unwrap_or("").as_bytes()) {
            Err(error) => {
                self.set_visibility(&id, &receipt, Duration::ZERO).await;
                tracing::warn!(
                    message_id = %id,
                    receive_count = receives,
                    action = "released",
                    %error,
                    total_ms = ms(started.elapsed()),
                    "message is not a valid payload: released unprocessed"
                );
                MessageEnd::Invalid
            }
            Ok(payload) => {
                self.process(&id, &receipt, receives, &payload, started)
                    .await
            }
        };
        self.held_mut().remove(&id);
        end
    }

    async fn process(
        &self,
        id: &str,
        receipt: &str,
        receives: u32,
        payload: &Payload,
        started: Instant,
    ) -> MessageEnd {
        let span = tracing::info_span!("message", message_id = %id);
        let work = self.service.run(payload).instrument(span);
        let report = tokio::select! {
            report = work => report,
            never = self.keep_invisible(id, receipt) => match never {},
        };
        let sources = report.sources.len();
        if report.failed == 0 {
            let deleted = self
                .sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(receipt)
                .send()
                .await;
            if let Err(error) = &deleted {
                tracing::error!(
                    message_id = %id,
                    error = %aws::describe(error),
                    "deleting a done message failed: it will come back and be re-posted"
                );
            }
            tracing::info!(
                message_id = %id,
                receive_count = receives,
                sources,
                posted = report.posted,
                already_processed = report.already_processed,
                failed = 0,
                action = if deleted.is_ok() { "deleted" } else { "delete_failed" },
                total_ms = ms(started.elapsed()),
                "message done"
            );
            MessageEnd::Deleted
        } else {
            let backoff = retry_delay(self.retry_backoff, receives, self.visibility);
            self.set_visibility(id, receipt, backoff).await;
            tracing::warn!(
                message_id = %id,
                receive_count = receives,
                sources,
                posted = report.posted,
                already_processed = report.already_processed,
                failed = report.failed,
                action = "retry",
                retry_in_s = backoff.as_secs(),
                failures = report.failure_summary(),
                total_ms = ms(started.elapsed()),
                "message has failed sources: left to be retried"
            );
            MessageEnd::Retried
        }
    }

    /// Renews the message's visibility timeout a few times per timeout, forever.
    async fn keep_invisible(&self, id: &str, receipt: &str) -> std::convert::Infallible {
        let period = (self.visibility / 3).max(Duration::from_millis(300));
        loop {
            tokio::time::sleep(period).await;
            self.set_visibility(id, receipt, self.visibility).await;
        }
    }

    async fn set_visibility(&self, id: &str, receipt: &str, timeout: Duration) {
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs() as i32)
            .send()
            .await;
        if let Err(error) = result {
            tracing::warn!(
                message_id = %id,
                visibility_s = timeout.as_secs(),
                error = %aws::describe(&error),
                "changing a message's visibility failed"
            );
        }
    }

    /// Makes every held message visible again at once; returns how many were released.
    async fn release_held(&self) -> usize {
        let held: Vec<(String, String)> = self.held_mut().drain().collect();
        let mut released = 0;
        for chunk in held.chunks(VISIBILITY_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (_, receipt))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            match self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => {
                    released += output.successful().len();
                    for failed in output.failed() {
                        tracing::warn!(
                            code = failed.code(),
                            error = failed.message(),
                            "releasing a message failed: it comes back when its visibility times out"
                        );
                    }
                }
                Err(error) => tracing::warn!(
                    error = %aws::describe(&error),
                    messages = chunk.len(),
                    "releasing messages failed: they come back when their visibility times out"
                ),
            }
        }
        for (id, _) in &held {
            tracing::info!(message_id = %id, action = "released", "message released at shutdown");
        }
        released
    }

    fn held_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The map stays consistent whatever panicked while holding it.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The wait before a message received `receives` times is retried: `base`, doubled for each
/// receive after the first, at most the visibility timeout.
fn retry_delay(base: Duration, receives: u32, visibility: Duration) -> Duration {
    base.saturating_mul(1 << receives.saturating_sub(1).min(20))
        .min(visibility)
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_per_receive_up_to_the_visibility_timeout() {
        let delay = |receives, visibility| {
            retry_delay(
                Duration::from_secs(30),
                receives,
                Duration::from_secs(visibility),
            )
        };
        assert_eq!(delay(1, 300), Duration::from_secs(30));
        assert_eq!(delay(2, 300), Duration::from_secs(60));
        assert_eq!(delay(4, 300), Duration::from_secs(240));
        assert_eq!(delay(5, 300), Duration::from_secs(300));
        assert_eq!(delay(0, 300), Duration::from_secs(30));
        assert_eq!(delay(1000, 300), Duration::from_secs(300));
        assert_eq!(delay(3, 10), Duration::from_secs(10));
    }
}
