//! A local stand-in for AWS Lambda's Invoke API: `POST /2015-03-31/functions/{name}/invocations`
//! (any function name) runs the Lambda function's handler on the body, as Lambda and its runtime
//! interface emulator do, so concrexit's `boto3` client and the original README's curl command
//! work against it without AWS.
//!
//! `X-Amz-Invocation-Type: RequestResponse` (the default) answers with the result, or with
//! `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType"}` when the function
//! fails; `Event` answers 202 at once and runs the function in the background; `DryRun`
//! answers 204.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::lambda::{self, FunctionError};
use super::{FaceEncoder, Service};

/// The largest request payload Lambda accepts for a synchronous invocation.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The invoke endpoint's routes.
pub fn router<E: FaceEncoder>(service: Arc<Service<E>>) -> Router {
    Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::<E>),
        )
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .with_state(service)
}

/// Serves the invoke endpoint on `addr` until Ctrl-C.
pub async fn run<E: FaceEncoder>(
    addr: SocketAddr,
    service: Arc<Service<E>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        "invoke endpoint at POST /2015-03-31/functions/{{name}}/invocations"
    );
    axum::serve(listener, router(service))
        .with_graceful_shutdown(async {
            // Without a Ctrl-C handler the server simply runs until the process is killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
}

async fn invoke<E: FaceEncoder>(
    State(service): State<Arc<Service<E>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .map(|value| value.to_str().unwrap_or("?"))
        .unwrap_or("RequestResponse");
    let event: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(event) => event,
            Err(e) => {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {e}"),
                );
            }
        }
    };
    match invocation_type {
        "RequestResponse" => match lambda::handle(&service, &event).await {
            Ok(result) => function_response(StatusCode::OK, &result, None),
            Err(error) => function_error(&error),
        },
        "Event" => {
            tokio::spawn(async move {
                if let Err(error) = lambda::handle(&service, &event).await {
                    tracing::error!(error_type = error.error_type(), %error, "invocation failed");
                }
            });
            StatusCode::ACCEPTED.into_response()
        }
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        other => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!(
                "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, not {other:?}"
            ),
        ),
    }
}

fn function_response(status: StatusCode, body: &Value, function_error: Option<&str>) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    if let Some(kind) = function_error.and_then(|kind| HeaderValue::from_str(kind).ok()) {
        headers.insert("x-amz-function-error", kind);
    }
    response
}

/// A function error, answered as Lambda does: 200 with `X-Amz-Function-Error`.
fn function_error(error: &FunctionError) -> Response {
    tracing::error!(error_type = error.error_type(), %error, "invocation failed");
    let body = json!({
        "errorMessage": error.to_string(),
        "errorType": error.error_type(),
    });
    function_response(StatusCode::OK, &body, Some("Unhandled"))
}

/// An error of the Invoke API itself, in the shape AWS SDKs read.
fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"Type": "User", "message": message});
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(kind) = HeaderValue::from_str(kind) {
        headers.insert("x-amzn-errortype", kind);
    }
    response
}
