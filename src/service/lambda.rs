//! The Lambda function's handler, shared by the Lambda binary and the local invoke endpoint.
//!
//! An event is either the original's payload (a direct invocation) or an SQS event whose records
//! each carry one payload in their body. A direct invocation returns its [`InvocationReport`],
//! or an error when the payload is invalid or any source failed (after every other source was
//! posted), so that Lambda's retries and on-failure destination keep the failed work. An SQS
//! event returns `batchItemFailures` naming the records to retry. On Lambda the invocation's
//! deadline (`Context::deadline`) bounds the work, so that it always answers with a report.
//! The event is read straight into its typed form ([`Event`]): the fields neither form uses
//! are skipped as they are read, never held.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use candle_core::Device;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

use super::payload::{Key, PayloadFields};
use super::{
    DEFAULT_MEMORY_LIMIT, Destinations, InvocationReport, Payload, PayloadError, Service,
    ServiceConfig, ServiceError,
};
use crate::pipeline::{EncodeOptions, FaceEncoder, FacePipeline, PhotoEncoder};
use crate::weights::WeightsLocation;

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("invalid payload: {0}")]
    InvalidPayload(#[from] PayloadError),
    #[error("cannot write the result: {0}")]
    Output(String),
    #[error("{failed} of {total} sources failed: {summary}")]
    SourcesFailed {
        failed: usize,
        total: usize,
        summary: String,
    },
}

impl FunctionError {
    /// The `errorType` Lambda reports for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "InvalidPayload",
            Self::Output(_) => "Output",
            Self::SourcesFailed { .. } => "SourcesFailed",
        }
    }
}

impl From<FunctionError> for lambda_runtime::Diagnostic {
    fn from(error: FunctionError) -> Self {
        Self {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

/// An invocation's event, read straight from its JSON text: the original's payload (a direct
/// invocation) or an SQS event (an object with `Records`). Fields neither uses are skipped as
/// they are read, never stored.
#[derive(Debug)]
pub enum Event {
    Direct(Result<Payload, PayloadError>),
    /// Its records, typed as they are read: a malformed one makes the text no event at all.
    Sqs(SqsEvent),
}

impl Event {
    /// The event in JSON text; an error only when the text is not JSON.
    pub fn from_json(text: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The bytes the event holds, about, once read.
    pub fn held_bytes(&self) -> u64 {
        match self {
            Self::Direct(Ok(payload)) => payload.held_bytes(),
            Self::Sqs(event) => event
                .records
                .iter()
                .map(|record| record.body.as_ref().map_or(0, String::len) as u64 + 1024)
                .sum(),
            Self::Direct(Err(_)) => 0,
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> de::Visitor<'de> for EventVisitor {
            type Value = Event;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Lambda event")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
                let mut fields = PayloadFields::default();
                let mut records: Option<Vec<SqsMessage>> = None;
                while let Some(Key(key)) = map.next_key()? {
                    if key == Some("Records") {
                        records = Some(map.next_value()?);
                    } else {
                        fields.read_value(key, &mut map)?;
                    }
                }
                Ok(match records {
                    Some(records) => {
                        let mut event = SqsEvent::default();
                        event.records = records;
                        Event::Sqs(event)
                    }
                    None => Event::Direct(fields.validate()),
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Event, E> {
                Ok(not_an_object("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Event, E> {
                Ok(not_an_object("an integer"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Event, E> {
                Ok(not_an_object("an integer"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Event, E> {
                Ok(not_an_object("a float"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Event, E> {
                Ok(not_an_object("a string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Event, E> {
                Ok(not_an_object("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Event, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(not_an_object("an array"))
            }
        }
        deserializer.deserialize_any(EventVisitor)
    }
}

fn not_an_object(kind: &'static str) -> Event {
    Event::Direct(Err(PayloadError::NotAnObject(kind)))
}

/// Handles one invocation's event given as a JSON value (as tests and embedders hold it).
pub async fn handle<E: FaceEncoder>(
    service: &Service<E>,
    event: &Value,
) -> Result<Value, FunctionError> {
    let event = Event::from_json(event.to_string().as_bytes())
        .map_err(|e| FunctionError::InvalidPayload(PayloadError::Json(e.to_string())))?;
    handle_until(service, event, None).await
}

/// Handles one invocation's event, finishing before `deadline` when there is one.
pub async fn handle_until<E: FaceEncoder>(
    service: &Service<E>,
    event: Event,
    deadline: Option<Instant>,
) -> Result<Value, FunctionError> {
    let payload = match event {
        Event::Sqs(event) => {
            let response = handle_sqs(service, &event, deadline).await;
            return serde_json::to_value(response)
                .map_err(|e| FunctionError::Output(e.to_string()));
        }
        Event::Direct(payload) => payload?,
    };
    let report = service.run_until(&payload, deadline, &|_| {}).await;
    if report.failed > 0 {
        return Err(FunctionError::SourcesFailed {
            failed: report.failed,
            total: report.sources.len(),
            summary: report.failure_summary(),
        });
    }
    serde_json::to_value(&report).map_err(|e| FunctionError::Output(e.to_string()))
}

/// Runs every record's payload; a record is reported for retry when its payload is invalid or
/// any of its sources failed.
pub async fn handle_sqs<E: FaceEncoder>(
    service: &Service<E>,
    event: &SqsEvent,
    deadline: Option<Instant>,
) -> SqsBatchResponse {
    let results = futures::future::join_all(event.records.iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let report = match Payload::from_json(record.body.as_deref().unwrap_or("").as_bytes()) {
            Ok(payload) => Ok(service.run_until(&payload, deadline, &|_| {}).await),
            Err(error) => Err(error),
        };
        (id, report)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (id, result) in results {
        let retry = match result {
            Ok(InvocationReport { failed, .. }) => failed > 0,
            Err(error) => {
                tracing::warn!(message_id = %id, %error, "SQS record with an invalid payload");
                true
            }
        };
        if retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The service's settings on Lambda: the memory the function was given
/// (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB), and the destinations in
/// `FACEDETECT_DESTINATIONS`, private networks by default (a VPC).
pub fn lambda_config() -> Result<ServiceConfig, ServiceError> {
    let memory_mb = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|mb| mb.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MEMORY_LIMIT / (1024 * 1024));
    let destinations = match std::env::var("FACEDETECT_DESTINATIONS") {
        Ok(text) => text
            .parse::<Destinations>()
            .map_err(|e| ServiceError::Config(format!("FACEDETECT_DESTINATIONS: {e}")))?,
        Err(_) => Destinations::Private,
    };
    Ok(ServiceConfig::new(memory_mb, destinations))
}

/// The Lambda function from its cold start: loads the models from the weights
/// [`WeightsLocation::discover`] finds onto the CPU, then answers invocations with the
/// original's options ([`EncodeOptions::default`]: HOG, upsample 1) and [`lambda_config`]
/// until the process ends.
pub async fn cold_start() -> Result<(), lambda_runtime::Error> {
    let started = Instant::now();
    let pipeline = FacePipeline::load(&WeightsLocation::discover()?, &Device::Cpu)?;
    tracing::info!(
        load_ms = started.elapsed().as_secs_f64() * 1000.0,
        "models loaded"
    );
    let encoder = PhotoEncoder::new(Arc::new(pipeline), EncodeOptions::default());
    let service = Service::new(Arc::new(encoder), lambda_config()?)?;
    run_lambda(Arc::new(service)).await
}

/// Runs the Lambda function: polls the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`) for
/// invocations and answers each with [`handle_until`] before its deadline, until the process
/// ends.
pub async fn run_lambda<E: FaceEncoder>(
    service: Arc<Service<E>>,
) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Event>| {
            let service = service.clone();
            async move {
                let deadline = instant_of(event.context.deadline());
                let warning =
                    crate::telemetry::DeadlineWarning::arm(deadline, &event.context.request_id);
                let result = handle_until(&service, event.payload, Some(deadline)).await;
                drop(warning);
                // What the invocation reported is sent before it answers: Lambda may freeze
                // the process right after.
                let left = deadline.saturating_duration_since(Instant::now());
                crate::telemetry::flush_async(left.saturating_sub(ANSWER_MARGIN)).await;
                result
            }
        },
    ))
    .await
}

/// Time left to answer after the events are flushed.
const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_millis(300);

/// The monotonic instant of a wall-clock deadline (now, if it has passed).
fn instant_of(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}
