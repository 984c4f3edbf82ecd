//! A local stand-in for AWS Lambda's Invoke API: `POST /2015-03-31/functions/{name}/invocations`
//! (any function name) runs the Lambda function's handler on the body, as Lambda and its runtime
//! interface emulator do, so concrexit's `boto3` client and the original README's curl command
//! work against it without AWS.
//!
//! `X-Amz-Invocation-Type: RequestResponse` (the default) answers with the result, or with
//! `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType"}` when the function
//! fails; `Event` answers 202 at once and runs the function in the background; `DryRun`
//! answers 204.
//!
//! It is no open relay: requests from browsers (with an `Origin` header) are refused, a shared
//! secret, when set, must come as `Authorization: Bearer <secret>` or as the AWS secret access
//! key of an AWS Signature Version 4 signature, as boto3 signs (see [`super::sigv4`]), and
//! must be set to listen on anything but loopback (see [`check_listen`]). A signed request's
//! header and date are checked before anything else; its body is read (bounded, and only with
//! an invocation slot) to check the signature before the request does anything. At most a
//! bounded number of
//! invocations are accepted and not yet finished: past that it answers 429
//! `TooManyRequestsException`, as Lambda does when throttled, so that the caller retries. On
//! shutdown ([`crate::shutdown`]: Ctrl-C or SIGTERM) it stops accepting, then finishes the
//! accepted Event work, for a bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::lambda::{self, FunctionError};
use super::sigv4::{self, SignedRequest};
use super::{Destinations, Service};
use crate::pipeline::FaceEncoder;
use crate::shutdown::Shutdown;

/// The largest request payload Lambda accepts for a synchronous invocation.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// How the endpoint admits requests.
#[derive(Clone)]
pub struct ServeOptions {
    /// The secret every request must present, as `Authorization: Bearer <secret>` or as the
    /// AWS secret access key of a Signature Version 4 signature, if any.
    pub secret: Option<String>,
    /// The most invocations accepted and not yet finished, Event and RequestResponse together.
    pub max_invocations: usize,
    /// How long shutdown waits for accepted Event work to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            secret: None,
            max_invocations: 16,
            shutdown_grace: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_invocations", &self.max_invocations)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

/// Why the endpoint may not listen where it was asked to.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {0} without a secret: anyone who can reach it could make this \
     machine fetch and post anywhere; set --secret (or FACEDETECT_SERVE_SECRET), or listen on \
     127.0.0.1"
)]
pub struct NeedsSecret(pub SocketAddr);

/// Listening beyond this machine (a non-loopback address) requires a secret.
pub fn check_listen(addr: SocketAddr, options: &ServeOptions) -> Result<(), NeedsSecret> {
    let has_secret = options.secret.as_ref().is_some_and(|s| !s.is_empty());
    if addr.ip().is_loopback() || has_secret {
        Ok(())
    } else {
        Err(NeedsSecret(addr))
    }
}

/// Where an endpoint listening on `host` fetches photos from and posts encodings to, unless
/// told: this machine too when it listens on loopback (a developer's concrexit), the public
/// internet only otherwise.
pub fn default_destinations(host: std::net::IpAddr) -> Destinations {
    if host.is_loopback() {
        Destinations::Local
    } else {
        Destinations::Public
    }
}

/// The endpoint's shared state.
struct Endpoint<E> {
    service: Arc<Service<E>>,
    secret: Option<String>,
    /// One permit per invocation accepted and not finished.
    invocations: Arc<Semaphore>,
}

/// The invoke endpoint's routes, and the count of invocations it has accepted, for shutdown.
pub fn router<E: FaceEncoder>(service: Arc<Service<E>>, options: &ServeOptions) -> Router {
    router_with_invocations(service, options).0
}

fn router_with_invocations<E: FaceEncoder>(
    service: Arc<Service<E>>,
    options: &ServeOptions,
) -> (Router, Arc<Semaphore>) {
    let invocations = Arc::new(Semaphore::new(options.max_invocations.max(1)));
    let endpoint = Arc::new(Endpoint {
        service,
        secret: options.secret.clone().filter(|s| !s.is_empty()),
        invocations: invocations.clone(),
    });
    let router = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::<E>),
        )
        .with_state(endpoint);
    (router, invocations)
}

/// Serves the invoke endpoint on `addr` until Ctrl-C or SIGTERM, then finishes the accepted
/// Event work (for at most the shutdown grace).
pub async fn run<E: FaceEncoder>(
    addr: SocketAddr,
    service: Arc<Service<E>>,
    options: ServeOptions,
) -> std::io::Result<()> {
    check_listen(addr, &options).map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(addr).await?;
    serve_until(listener, service, options, Shutdown::on_signals()?).await
}

/// Serves on `listener` until `shutdown` fires, then stops accepting, waits for the
/// requests in progress and for the accepted Event work, at most the shutdown grace for the
/// latter. Returns once that is done.
pub async fn serve_until<E: FaceEncoder>(
    listener: TcpListener,
    service: Arc<Service<E>>,
    options: ServeOptions,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let (router, invocations) = router_with_invocations(service, &options);
    tracing::info!(
        address = %listener.local_addr()?,
        secret = options.secret.is_some(),
        max_invocations = options.max_invocations,
        "invoke endpoint at POST /2015-03-31/functions/{{name}}/invocations"
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await?;
    let all = u32::try_from(options.max_invocations.max(1)).unwrap_or(u32::MAX);
    let busy = all as usize - invocations.available_permits();
    tracing::info!(
        invocations = busy,
        grace_s = options.shutdown_grace.as_secs_f64(),
        "shutting down: finishing accepted work"
    );
    match tokio::time::timeout(options.shutdown_grace, invocations.acquire_many(all)).await {
        Ok(_) => tracing::info!("accepted work finished"),
        Err(_) => tracing::error!(
            unfinished = all as usize - invocations.available_permits(),
            "shutdown grace over: unfinished invocations dropped"
        ),
    }
    Ok(())
}

/// How a request proved it knows the secret, as far as its headers tell.
enum Credential {
    /// No secret is set, or the bearer token matched.
    Accepted,
    /// A well-formed, recently dated Signature Version 4 header: the signature is checked once
    /// the body is read.
    Signed(SignedRequest),
}

const NO_SECRET: &str = "missing or wrong secret (Authorization: Bearer <secret>, or an AWS \
     Signature Version 4 signature with the secret as the AWS secret access key)";

/// Why a request is refused: it comes from a browser, or lacks the secret.
fn admission(headers: &HeaderMap, secret: Option<&str>) -> Result<Credential, String> {
    if headers.contains_key(header::ORIGIN) {
        return Err("requests from browsers (with an Origin header) are refused".to_string());
    }
    let Some(secret) = secret else {
        return Ok(Credential::Accepted);
    };
    if let Some(signed) = SignedRequest::parse(headers, std::time::SystemTime::now()) {
        return signed.map(Credential::Signed).map_err(|e| e.to_string());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    if given.is_some_and(|given| sigv4::constant_time_eq(given, secret.as_bytes())) {
        Ok(Credential::Accepted)
    } else {
        Err(NO_SECRET.to_string())
    }
}

fn refused(why: &str, access_key_id: Option<&str>) -> Response {
    tracing::warn!(why, access_key_id, "request refused");
    aws_error(StatusCode::FORBIDDEN, "AccessDeniedException", why)
}

/// The answer to an invocation type that runs nothing (DryRun) or is not one.
fn invocation_type_answer(invocation_type: &str) -> Option<Response> {
    match invocation_type {
        "RequestResponse" | "Event" => None,
        "DryRun" => Some(StatusCode::NO_CONTENT.into_response()),
        other => Some(aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!(
                "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, not {other:?}"
            ),
        )),
    }
}

/// Admission first (browser, secret, invocation type, room), then the body is read: a request
/// that is refused never has its body held in memory.
async fn invoke<E: FaceEncoder>(
    State(endpoint): State<Arc<Endpoint<E>>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let credential = match admission(headers, endpoint.secret.as_deref()) {
        Ok(credential) => credential,
        Err(why) => return refused(&why, None),
    };
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .map(|value| value.to_str().unwrap_or("?"))
        .unwrap_or("RequestResponse");
    // A signed request's type is answered only once its signature is checked, below.
    if matches!(credential, Credential::Accepted)
        && let Some(answer) = invocation_type_answer(invocation_type)
    {
        return answer;
    }
    let Ok(permit) = endpoint.invocations.clone().try_acquire_owned() else {
        tracing::warn!(
            invocation_type,
            "throttled: too many invocations in progress"
        );
        return aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate Exceeded.",
        );
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_PAYLOAD_BYTES).await else {
        return aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {MAX_PAYLOAD_BYTES} bytes"),
        );
    };
    if let (Credential::Signed(signed), Some(secret)) = (&credential, endpoint.secret.as_deref()) {
        let access_key_id = signed.access_key_id.as_str();
        if let Err(error) = signed.verify(&parts.method, &parts.uri, headers, &body, secret) {
            return refused(&error.to_string(), Some(access_key_id));
        }
        tracing::info!(access_key_id, invocation_type, "signed request accepted");
        if let Some(answer) = invocation_type_answer(invocation_type) {
            return answer;
        }
    }
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
    drop(body);
    let service = endpoint.service.clone();
    if invocation_type == "Event" {
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = lambda::handle(&service, &event).await {
                tracing::error!(error_type = error.error_type(), %error, "invocation failed");
            }
        });
        return StatusCode::ACCEPTED.into_response();
    }
    let _permit = permit;
    match lambda::handle(&service, &event).await {
        Ok(result) => function_response(StatusCode::OK, &result, None),
        Err(error) => function_error(&error),
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
