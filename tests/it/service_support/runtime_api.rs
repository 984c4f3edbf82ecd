//! A Lambda Runtime API emulator: hands queued events to a runtime polling
//! `/2018-06-01/runtime/invocation/next` and collects what it posts to `/response` and
//! `/error`, as the Lambda service does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::Notify;

/// How an invocation ended: the function's result, or its error.
pub type Answer = Result<Value, Value>;

#[derive(Default)]
pub struct RuntimeApi {
    queue: Mutex<VecDeque<(String, Value, Duration)>>,
    queued: Notify,
    answers: Mutex<HashMap<String, Answer>>,
    pub init_error: Mutex<Option<Value>>,
    /// When the runtime first asked for an invocation: the end of its init phase, as Lambda
    /// counts it ("Init Duration").
    first_poll: Mutex<Option<Instant>>,
}

impl RuntimeApi {
    /// Starts the emulator; returns it and the `host:port` for `AWS_LAMBDA_RUNTIME_API`.
    pub async fn start() -> (Arc<Self>, String) {
        let api = Arc::new(Self::default());
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api.clone());
        let addr = super::spawn_server(router).await;
        (api, addr.to_string())
    }

    /// Queues an invocation with the given request id (15 minutes to run, Lambda's most).
    pub fn invoke(&self, id: &str, event: Value) {
        self.invoke_with_time(id, event, Duration::from_secs(900));
    }

    /// Queues an invocation whose deadline is `time` after it is handed out.
    pub fn invoke_with_time(&self, id: &str, event: Value, time: Duration) {
        self.queue
            .lock()
            .unwrap()
            .push_back((id.to_string(), event, time));
        self.queued.notify_one();
    }

    /// Waits until the runtime has finished its init and polls for an invocation; returns when
    /// it first polled.
    pub async fn initialised(&self, timeout: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(at) = *self.first_poll.lock().unwrap() {
                return at;
            }
            if let Some(error) = self.init_error.lock().unwrap().clone() {
                panic!("the function failed to start: {error}");
            }
            assert!(
                started.elapsed() < timeout,
                "the function did not poll within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the answer to an invocation.
    pub async fn answer(&self, id: &str, timeout: Duration) -> Answer {
        let started = Instant::now();
        loop {
            if let Some(answer) = self.answers.lock().unwrap().remove(id) {
                return answer;
            }
            if let Some(error) = self.init_error.lock().unwrap().clone() {
                panic!("the function failed to start: {error}");
            }
            assert!(
                started.elapsed() < timeout,
                "no answer to {id} in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    api.first_poll
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    let (id, event, time) = loop {
        let notified = api.queued.notified();
        if let Some(item) = api.queue.lock().unwrap().pop_front() {
            break item;
        }
        notified.await;
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + time.as_millis();
    (
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:facedetection".to_string(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_string(),
            ),
            ("content-type", "application/json".to_string()),
        ],
        event.to_string(),
    )
        .into_response()
}

fn record(api: &RuntimeApi, id: String, answer: Answer) -> StatusCode {
    api.answers.lock().unwrap().insert(id, answer);
    StatusCode::ACCEPTED
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&api, id, Ok(value))
}

async fn error(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&api, id, Err(value))
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: Bytes) -> StatusCode {
    *api.init_error.lock().unwrap() = Some(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::ACCEPTED
}
