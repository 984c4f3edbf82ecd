//! The queue worker (`facedetect worker`): takes payloads from an SQS queue and runs them
//! through the service, many at once, so that their photos share the device.
//!
//! Each message body is one payload exactly as the Lambda function takes it. The worker
//! long-polls (20 s, or the grace period if shorter; up to 10 messages, never more than it has
//! room for), and while a message is worked on it keeps it invisible to other consumers with a
//! heartbeat that renews its visibility timeout every third of it; a renewal that fails or
//! stalls is tried again at once, so one lost call cannot let the message be received again.
//! Every SQS call has a deadline ([`aws::ATTEMPT_TIMEOUT`], [`aws::OPERATION_TIMEOUT`]; the long
//! poll plus a margin for ReceiveMessage). Then:
//! - every source posted or already processed (concrexit's "not processing" answer to a
//!   repeated post): the message is deleted;
//! - a source failed: the message is not deleted; it becomes visible again after a backoff
//!   that doubles with each receive and never exceeds the visibility timeout, so it is retried
//!   and, past the queue's `maxReceiveCount`, moved to the dead-letter queue by the queue's
//!   redrive policy. Re-posting the sources that were done is harmless;
//! - the body is not a valid payload: the message is released at once (visibility 0) without
//!   any of it being processed, so it reaches the dead-letter queue after its few receives;
//! - no progress for the stall timeout (none of its sources finished, nor any of a message
//!   received before it, whose sources it may be queued behind): its work is dropped and the
//!   message released at once, so a stuck photo reaches the dead-letter queue instead of being
//!   kept hidden for hours.
//!
//! Held messages are keyed by receipt handle: a message received again while its first copy
//! still runs (a heartbeat that could not reach SQS in time) is two copies, each deleted or
//! released on its own.
//!
//! One JSON log line per source (from the service, with the message id) and one per message.
//! On shutdown (the first SIGTERM from ECS, or SIGINT) the worker stops receiving: the
//! ReceiveMessage call in flight is finished (its long poll ends within the grace period) and
//! what it brought released at once; the messages in flight may finish for at most the grace
//! period, those still unfinished are released (visibility 0, within [`RELEASE_TIMEOUT`]), and
//! it returns. A second signal releases them at once. A worker killed outright loses nothing
//! either: the messages it held become visible again when their visibility timeout runs out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
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
use crate::service::{Payload, Service, SourceReport};
use crate::shutdown::{Shutdown, Signals};

/// The longest long poll SQS allows.
const WAIT_TIME: Duration = Duration::from_secs(20);
/// The time one ReceiveMessage attempt may take beyond its long poll.
const RECEIVE_MARGIN: Duration = Duration::from_secs(5);
/// The most messages one ReceiveMessage returns.
const RECEIVE_MAX: usize = 10;
/// Entries per ChangeMessageVisibilityBatch call (SQS's limit).
const VISIBILITY_BATCH: usize = 10;
/// The longest pause after failed ReceiveMessage calls.
const MAX_RECEIVE_PAUSE: Duration = Duration::from_secs(20);
/// The longest pause before a failed heartbeat is tried again.
const HEARTBEAT_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long past the grace period a shutdown waits for the answer of the ReceiveMessage call
/// in flight (whose long poll is never longer than the grace period).
const RECEIVE_SHUTDOWN_MARGIN: Duration = Duration::from_secs(1);
/// The longest releasing the held messages may take at shutdown, once the grace period is
/// over: ECS's `stopTimeout` must leave room for it.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// How long in-flight messages may still run after a shutdown signal; also the longest
    /// long poll, so that the ReceiveMessage call in flight at a signal ends within it.
    pub shutdown_grace: Duration,
    /// How long a message may go without progress (one of its sources finishing, or one of a
    /// message received before it, which it may be waiting behind) before it is given up and
    /// released.
    pub stall_timeout: Duration,
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
    /// Messages that made no progress for the stall timeout, released unfinished.
    pub stalled: usize,
    /// Messages released at shutdown: those still in flight when the grace period ran out
    /// (or at a second signal), and those the last ReceiveMessage call brought.
    pub released: usize,
}

/// How one message ended.
enum MessageEnd {
    Deleted,
    Retried,
    Invalid,
    Stalled,
}

/// A message being worked on.
struct Held {
    message_id: String,
    /// Its place in the order messages were received.
    order: u64,
    /// When it last made progress.
    progressed: Instant,
}

/// What every message task shares.
struct Context<E> {
    sqs: Client,
    service: Arc<Service<E>>,
    queue_url: String,
    visibility: Duration,
    retry_backoff: Duration,
    stall_timeout: Duration,
    /// The long poll of each ReceiveMessage call.
    wait_time: Duration,
    /// The messages being worked on, by receipt handle (each copy of a message received
    /// twice is held, deleted and released on its own): what a shutdown that runs out of time
    /// releases.
    held: Mutex<HashMap<String, Held>>,
}

/// Runs the worker until the first of `signals` fires, then drains within the grace period,
/// or at once when the second fires.
pub async fn run<E: FaceEncoder>(
    sqs: Client,
    service: Arc<Service<E>>,
    config: WorkerConfig,
    signals: Signals,
) -> Result<WorkerSummary, WorkerError> {
    if config.max_messages == 0 {
        return Err(WorkerError::Config(
            "max_messages must be at least 1".to_string(),
        ));
    }
    if config.stall_timeout.is_zero() {
        return Err(WorkerError::Config(
            "the stall timeout must be positive".to_string(),
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
    // Whole seconds, at least one (a zero wait would poll an empty queue without pause).
    let wait_time = Duration::from_secs(
        config
            .shutdown_grace
            .as_secs()
            .clamp(1, WAIT_TIME.as_secs()),
    );
    tracing::info!(
        queue_url = %config.queue_url,
        visibility_timeout_s = visibility.as_secs(),
        max_receive_count = attributes.max_receive_count,
        max_messages = config.max_messages,
        shutdown_grace_s = config.shutdown_grace.as_secs_f64(),
        stall_timeout_s = config.stall_timeout.as_secs_f64(),
        wait_time_s = wait_time.as_secs(),
        "worker started"
    );
    let context = Arc::new(Context {
        sqs,
        service,
        queue_url: config.queue_url.clone(),
        visibility,
        retry_backoff: config.retry_backoff,
        stall_timeout: config.stall_timeout,
        wait_time,
        held: Mutex::new(HashMap::new()),
    });
    let Signals {
        first: mut shutdown,
        second: mut forced,
    } = signals;
    let room = Arc::new(Semaphore::new(config.max_messages));
    let mut tasks = JoinSet::new();
    let mut summary = WorkerSummary::default();
    let mut receive_failures = 0u32;
    let mut order = 0u64;
    let stopping = loop {
        // Receive only what there is room for, so that no message waits unheld.
        let permits = tokio::select! {
            _ = shutdown.recv() => break Instant::now(),
            permits = take_room(&room) => permits,
        };
        let receive = context.receive(permits.len());
        tokio::pin!(receive);
        let received = tokio::select! {
            received = &mut receive => received,
            _ = shutdown.recv() => {
                let stopping = Instant::now();
                let deadline =
                    stopping + config.shutdown_grace.max(wait_time) + RECEIVE_SHUTDOWN_MARGIN;
                summary.released += context.finish_receive(receive, deadline, &mut forced).await;
                break stopping;
            }
        };
        match received {
            Ok(messages) => {
                receive_failures = 0;
                let received_at = Instant::now();
                for (message, permit) in messages.into_iter().zip(permits) {
                    let context = Arc::clone(&context);
                    order += 1;
                    let place = order;
                    tasks.spawn(async move {
                        let end = context.handle(message, place, received_at).await;
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
                    _ = shutdown.recv() => break Instant::now(),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        while let Some(end) = tasks.try_join_next() {
            summary.count(end);
        }
    };

    tracing::info!(
        in_flight = tasks.len(),
        grace_s = config.shutdown_grace.as_secs_f64(),
        "stopped receiving; finishing the messages in flight"
    );
    let deadline = stopping + config.shutdown_grace;
    tokio::select! {
        _ = async {
            while let Some(end) = tasks.join_next().await {
                summary.count(end);
            }
        } => {}
        _ = tokio::time::sleep_until(deadline.into()) => {}
        _ = forced.recv() => tracing::warn!(
            in_flight = tasks.len(),
            "second shutdown signal: releasing the messages in flight at once"
        ),
    }
    if !tasks.is_empty() {
        tasks.abort_all();
        while let Some(end) = tasks.join_next().await {
            summary.count(end);
        }
        summary.released += context.release_held().await;
    }
    tracing::info!(
        deleted = summary.deleted,
        retried = summary.retried,
        invalid = summary.invalid,
        stalled = summary.stalled,
        released = summary.released,
        shutdown_ms = ms(stopping.elapsed()),
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
            Ok(MessageEnd::Stalled) => self.stalled += 1,
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

/// One call's own timeouts, for its `customize().config_override(..)`.
fn timeouts(attempt: Duration, operation: Duration) -> aws_sdk_sqs::config::Builder {
    aws_sdk_sqs::Config::builder().timeout_config(aws::timeouts(attempt, operation))
}

impl<E: FaceEncoder> Context<E> {
    async fn receive(&self, max: usize) -> Result<Vec<Message>, String> {
        let attempt = self.wait_time + RECEIVE_MARGIN;
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, RECEIVE_MAX) as i32)
            .wait_time_seconds(self.wait_time.as_secs() as i32)
            .visibility_timeout(self.visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(timeouts(attempt, attempt + RECEIVE_MARGIN))
            .send()
            .await
            .map_err(|e| aws::describe(&e))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// After the shutdown signal: waits until `deadline` for the ReceiveMessage call in flight
    /// to answer (its long poll ends before) and releases what it brought at once; returns
    /// how many messages were released. A second signal abandons the call.
    async fn finish_receive(
        &self,
        receive: Pin<&mut impl Future<Output = Result<Vec<Message>, String>>>,
        deadline: Instant,
        forced: &mut Shutdown,
    ) -> usize {
        let abandoned = "what it may have received comes back when its visibility times out";
        let answer = tokio::select! {
            answer = tokio::time::timeout_at(deadline.into(), receive) => answer,
            _ = forced.recv() => {
                tracing::warn!("second shutdown signal: the ReceiveMessage call in flight is abandoned; {abandoned}");
                return 0;
            }
        };
        match answer {
            Ok(Ok(messages)) => {
                let messages = messages
                    .into_iter()
                    .filter_map(|m| Some((m.receipt_handle?, m.message_id.unwrap_or_default())))
                    .collect();
                self.release(messages, "message received at shutdown: released")
                    .await
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "receiving messages failed at shutdown");
                0
            }
            Err(_) => {
                tracing::warn!(
                    "the ReceiveMessage call in flight did not answer by the shutdown deadline; {abandoned}"
                );
                0
            }
        }
    }

    /// Works on one message from receipt to deletion or release.
    async fn handle(
        self: Arc<Self>,
        message: Message,
        order: u64,
        received: Instant,
    ) -> MessageEnd {
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
        self.held_mut().insert(
            receipt.clone(),
            Held {
                message_id: id.clone(),
                order,
                progressed: started,
            },
        );
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
                let message = Received {
                    id: &id,
                    receipt: &receipt,
                    order,
                    receives,
                    received,
                };
                self.process(message, &payload, started).await
            }
        };
        // Messages received after it may have waited behind its sources.
        self.progress(order);
        self.held_mut().remove(&receipt);
        end
    }

    async fn process(
        &self,
        message: Received<'_>,
        payload: &Payload,
        started: Instant,
    ) -> MessageEnd {
        let Received {
            id,
            receipt,
            order,
            receives,
            received,
        } = message;
        let span = tracing::info_span!("message", message_id = %id);
        let observe = |_: &SourceReport| self.progress(order);
        let work = self
            .service
            .run_observed(payload, &observe)
            .instrument(span);
        let report = tokio::select! {
            report = work => report,
            never = self.keep_invisible(id, receipt, received) => match never {},
            () = self.stalled(receipt) => {
                self.set_visibility(id, receipt, Duration::ZERO).await;
                tracing::warn!(
                    message_id = %id,
                    receive_count = receives,
                    action = "released",
                    stall_timeout_s = self.stall_timeout.as_secs_f64(),
                    total_ms = ms(started.elapsed()),
                    "message made no progress: released"
                );
                return MessageEnd::Stalled;
            }
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

    /// Renews the message's visibility timeout every third of it, forever. A renewal that
    /// fails or does not answer within half that period is tried again at once (after a
    /// short pause), so that a stalled call cannot let the timeout run out.
    async fn keep_invisible(&self, id: &str, receipt: &str, received: Instant) -> Infallible {
        let period = (self.visibility / 3).max(Duration::from_millis(300));
        let limit = (period / 2).min(aws::ATTEMPT_TIMEOUT);
        let pause = (period / 10).min(HEARTBEAT_RETRY_PAUSE);
        let mut hidden_until = received + self.visibility;
        let mut next = received + period;
        let mut failures = 0u32;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let sent = Instant::now();
            match self
                .change_visibility(receipt, self.visibility, Some(limit))
                .await
            {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(message_id = %id, failures, "heartbeat renewed after failing");
                    }
                    failures = 0;
                    hidden_until = sent + self.visibility;
                    next = sent + period;
                }
                Err(error) => {
                    failures += 1;
                    let now = Instant::now();
                    let left = hidden_until.saturating_duration_since(now);
                    if left.is_zero() {
                        tracing::error!(
                            message_id = %id,
                            failures,
                            %error,
                            "heartbeat failing past the visibility timeout: the message may be received again"
                        );
                    } else {
                        tracing::warn!(
                            message_id = %id,
                            failures,
                            %error,
                            visible_in_ms = ms(left),
                            "heartbeat failed: trying again"
                        );
                    }
                    next = now + pause;
                }
            }
        }
    }

    /// Returns once the message has made no progress for the stall timeout.
    async fn stalled(&self, receipt: &str) {
        loop {
            let progressed = self.held_mut().get(receipt).map(|held| held.progressed);
            let Some(progressed) = progressed else {
                return std::future::pending().await;
            };
            let due = progressed + self.stall_timeout;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// Records progress for the message received `order`-th and those received after it,
    /// which may have been waiting for its sources to make room.
    fn progress(&self, order: u64) {
        let now = Instant::now();
        for held in self.held_mut().values_mut() {
            if held.order >= order {
                held.progressed = now;
            }
        }
    }

    /// Changes a message's visibility timeout, logging a failure.
    async fn set_visibility(&self, id: &str, receipt: &str, timeout: Duration) {
        if let Err(error) = self.change_visibility(receipt, timeout, None).await {
            tracing::warn!(
                message_id = %id,
                visibility_s = timeout.as_secs(),
                %error,
                "changing a message's visibility failed"
            );
        }
    }

    /// One ChangeMessageVisibility call, within `limit` (attempt and operation) or the
    /// client's own timeouts.
    async fn change_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
        limit: Option<Duration>,
    ) -> Result<(), String> {
        let request = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs() as i32);
        let result = match limit {
            Some(limit) => {
                request
                    .customize()
                    .config_override(timeouts(limit, limit))
                    .send()
                    .await
            }
            None => request.send().await,
        };
        result.map(|_| ()).map_err(|e| aws::describe(&e))
    }

    /// Makes every held message visible again at once; returns how many were released.
    async fn release_held(&self) -> usize {
        let held = self
            .held_mut()
            .drain()
            .map(|(receipt, held)| (receipt, held.message_id))
            .collect();
        self.release(held, "message released at shutdown").await
    }

    /// Makes these messages, (receipt handle, message id), visible again at once, within
    /// [`RELEASE_TIMEOUT`] in all; logs `what` for each one released and returns how many
    /// were.
    async fn release(&self, messages: Vec<(String, String)>, what: &'static str) -> usize {
        let calls = messages.chunks(VISIBILITY_BATCH).map(|chunk| async move {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (receipt, _))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            let answer = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .customize()
                .config_override(timeouts(RELEASE_TIMEOUT / 2, RELEASE_TIMEOUT))
                .send()
                .await;
            let output = match answer {
                Ok(output) => output,
                Err(error) => {
                    tracing::warn!(
                        error = %aws::describe(&error),
                        messages = chunk.len(),
                        "releasing messages failed: they come back when their visibility times out"
                    );
                    return 0;
                }
            };
            let id_of = |entry: &str| {
                entry
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| chunk.get(i))
                    .map_or("", |(_, id)| id.as_str())
            };
            for failed in output.failed() {
                tracing::warn!(
                    message_id = id_of(failed.id()),
                    code = failed.code(),
                    error = failed.message(),
                    "releasing a message failed: it comes back when its visibility times out"
                );
            }
            for done in output.successful() {
                tracing::info!(message_id = id_of(done.id()), action = "released", "{what}");
            }
            output.successful().len()
        });
        futures::future::join_all(calls).await.into_iter().sum()
    }

    fn held_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // The map stays consistent whatever panicked while holding it.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A message as its task works on it.
struct Received<'a> {
    id: &'a str,
    receipt: &'a str,
    order: u64,
    receives: u32,
    /// When the ReceiveMessage call that brought it answered.
    received: Instant,
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
