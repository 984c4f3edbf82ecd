//! A local stand-in for AWS Lambda's Invoke API: `POST /2015-03-31/functions/{name}/invocations`
//! (any function name) runs the Lambda function's handler on the body, as Lambda and its runtime
//! interface emulator do, so concrexit's `boto3` client and the original README's curl command
//! work against it without AWS.
//!
//! `X-Amz-Invocation-Type: RequestResponse` (the default) answers with the result, or with
//! `X-Amz-Function-Error: Unhandled` and `{"errorMessage", "errorType"}` when the function
//! fails; `Event` answers 202 at once and runs the function in the background; `DryRun`
//! answers 204. Either way the work runs to its end once accepted, as on Lambda: a caller that
//! hangs up does not cancel it.
//!
//! It is no open relay: requests from browsers (with an `Origin` header) are refused, a shared
//! secret, when set, must come as `Authorization: Bearer <secret>` or as the AWS secret access
//! key of an AWS Signature Version 4 signature, as boto3 signs (see [`super::sigv4`]), and
//! must be set to listen on anything but loopback (see [`check_listen`]).
//!
//! Every peer is bounded in time and memory. At most [`ServeOptions::max_connections`] are
//! open; a request's head must arrive within [`ServeOptions::header_timeout`] (an idle
//! connection is closed after as long), its body within [`ServeOptions::body_timeout`], and
//! bodies larger than Lambda's 6 MiB are refused. Authentication is decided before a request
//! takes an invocation slot: the bearer form from the headers alone; a signed request's body
//! is needed for its signature, so it is read under an allowance of its own
//! ([`UNVERIFIED_BODY_BYTES`]), never an invocation slot, and its signature checked before
//! anything else. At most [`ServeOptions::max_invocations`] invocations are accepted and not
//! yet finished, and an accepted request's bytes are reserved from the service's memory
//! budget: past either it answers 429 `TooManyRequestsException`, as Lambda does when
//! throttled, so that the caller retries. The body is read straight into the typed event
//! ([`lambda::Event`]), fields it does not use skipped.
//!
//! On shutdown ([`crate::shutdown`]: Ctrl-C or SIGTERM) it stops accepting, lets the requests
//! in progress and the accepted work finish, and returns when they have or when
//! [`ServeOptions::shutdown_grace`] is over, whichever comes first, whatever the clients do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::budget::Reservation;
use super::lambda::{self, Event, FunctionError};
use super::sigv4::{self, SignedRequest};
use super::{Destinations, Service};
use crate::pipeline::FaceEncoder;
use crate::shutdown::{Shutdown, Signals};

/// The largest request payload Lambda accepts for a synchronous invocation.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The bytes of signed requests' bodies read before their signature is checked, all such
/// requests together: enough for a few of the largest, and never an invocation slot, so that
/// clients without the secret cannot keep those who have it out.
pub const UNVERIFIED_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How the endpoint admits requests.
#[derive(Clone)]
pub struct ServeOptions {
    /// The secret every request must present, as `Authorization: Bearer <secret>` or as the
    /// AWS secret access key of a Signature Version 4 signature, if any.
    pub secret: Option<String>,
    /// The most invocations accepted and not yet finished, Event and RequestResponse together.
    pub max_invocations: usize,
    /// How long shutdown waits for the requests in progress and the accepted work, at most.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's head; a connection idle as long between
    /// requests is closed too.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, once its head has arrived.
    pub body_timeout: Duration,
    /// The most connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            secret: None,
            max_invocations: 16,
            shutdown_grace: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 128,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_invocations", &self.max_invocations)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
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
    /// One permit per KiB of signed bodies read and not yet verified.
    unverified: Arc<Semaphore>,
    body_timeout: Duration,
}

/// The invoke endpoint's routes.
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
        unverified: Arc::new(Semaphore::new(UNVERIFIED_BODY_BYTES / 1024)),
        body_timeout: options.body_timeout,
    });
    let router = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::<E>),
        )
        .with_state(endpoint);
    (router, invocations)
}

/// Serves the invoke endpoint on `addr` until Ctrl-C or SIGTERM, then finishes the requests in
/// progress and the accepted work for at most the shutdown grace; a second signal ends it at
/// once.
pub async fn run<E: FaceEncoder>(
    addr: SocketAddr,
    service: Arc<Service<E>>,
    options: ServeOptions,
) -> std::io::Result<()> {
    check_listen(addr, &options).map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(addr).await?;
    let Signals {
        first,
        second: mut again,
    } = Signals::install()?;
    tokio::select! {
        served = serve_until(listener, service, options, first) => served,
        () = again.recv() => {
            tracing::warn!("second signal: exiting now, unfinished invocations dropped");
            Ok(())
        }
    }
}

/// Serves on `listener` until `shutdown` fires, then stops accepting and waits for the
/// requests in progress and the accepted work, at most the shutdown grace: connections still
/// open then are closed, and unfinished work is left to end with the process.
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
        max_connections = options.max_connections,
        header_timeout_s = options.header_timeout.as_secs_f64(),
        body_timeout_s = options.body_timeout.as_secs_f64(),
        "invoke endpoint at POST /2015-03-31/functions/{{name}}/invocations"
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let open = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // A connection past the bound waits in the listen backlog.
        let permit = tokio::select! {
            () = shutdown.recv() => break,
            permit = open.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let (stream, _peer) = tokio::select! {
            () = shutdown.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: let connections close first.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        connections.spawn(serve_connection(connection, shutdown.clone(), permit));
    }
    drop(listener);
    let all = u32::try_from(options.max_invocations.max(1)).unwrap_or(u32::MAX);
    tracing::info!(
        invocations = all as usize - invocations.available_permits(),
        connections = connections.len(),
        grace_s = options.shutdown_grace.as_secs_f64(),
        "shutting down: finishing the requests in progress and the accepted work"
    );
    let finished = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
        invocations.acquire_many(all).await
    })
    .await;
    match finished {
        Ok(_) => tracing::info!("accepted work finished"),
        Err(_) => tracing::error!(
            unfinished = all as usize - invocations.available_permits(),
            connections = connections.len(),
            "shutdown grace over: open connections closed, unfinished invocations dropped"
        ),
    }
    // Dropping the set aborts the connections still open.
    Ok(())
}

/// Serves one connection until it closes, or until shutdown and then its request in progress
/// is answered (the caller bounds that by the grace).
async fn serve_connection(
    connection: hyper::server::conn::http1::Connection<
        TokioIo<tokio::net::TcpStream>,
        TowerToHyperService<Router>,
    >,
    mut shutdown: Shutdown,
    _open: OwnedSemaphorePermit,
) {
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.recv() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // A client too slow with its head, or gone mid-request.
        tracing::info!(%error, "connection closed");
    }
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

fn throttled(invocation_type: &str, why: &'static str) -> Response {
    tracing::warn!(invocation_type, why, "throttled");
    aws_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequestsException",
        "Rate Exceeded.",
    )
}

fn too_large() -> Response {
    aws_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestTooLargeException",
        &format!("Request must be smaller than {MAX_PAYLOAD_BYTES} bytes"),
    )
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

/// The body's length as its `Content-Length` announces it, if it does.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a body of at most [`MAX_PAYLOAD_BYTES`] within `timeout`; the error is the answer.
async fn read_body(body: axum::body::Body, timeout: Duration) -> Result<bytes::Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_PAYLOAD_BYTES)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        // Past the limit, or the client went away: either way nothing more is read.
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            tracing::warn!(
                timeout_s = timeout.as_secs_f64(),
                "request refused: the body did not arrive in time"
            );
            let mut answer = aws_error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                &format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            );
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(answer)
        }
    }
}

/// What an accepted request holds until its invocation ends: its slot and its memory.
type Held = (OwnedSemaphorePermit, Reservation);

/// Admission first (browser, secret, invocation type, room), then the body is read: a request
/// without the secret never takes an invocation slot or the memory budget, and a signed one's
/// body is read only under the allowance for unverified bodies.
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
    let declared = declared_length(headers);
    if declared.is_some_and(|length| length > MAX_PAYLOAD_BYTES as u64) {
        return too_large();
    }
    let room = declared.unwrap_or(MAX_PAYLOAD_BYTES as u64);
    let (body, held) = match credential {
        Credential::Accepted => {
            if let Some(answer) = invocation_type_answer(invocation_type) {
                return answer;
            }
            let held = match endpoint.admit(room) {
                Ok(held) => held,
                Err(why) => return throttled(invocation_type, why),
            };
            match read_body(body, endpoint.body_timeout).await {
                Ok(body) => (body, held),
                Err(answer) => return answer,
            }
        }
        Credential::Signed(signed) => {
            let kib = u32::try_from(room.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
            let Ok(_unverified) = endpoint.unverified.clone().try_acquire_many_owned(kib) else {
                return throttled(invocation_type, "too many signed bodies being read");
            };
            let body = match read_body(body, endpoint.body_timeout).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let secret = endpoint.secret.as_deref().unwrap_or_default();
            let access_key_id = signed.access_key_id.as_str();
            if let Err(error) = signed.verify(&parts.method, &parts.uri, headers, &body, secret) {
                return refused(&error.to_string(), Some(access_key_id));
            }
            tracing::info!(access_key_id, invocation_type, "signed request accepted");
            if let Some(answer) = invocation_type_answer(invocation_type) {
                return answer;
            }
            match endpoint.admit(body.len() as u64) {
                Ok(held) => (body, held),
                Err(why) => return throttled(invocation_type, why),
            }
        }
    };
    let text: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let event = match Event::from_json(text) {
        Ok(event) => event,
        Err(e) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                &format!("Could not parse request body into json: {e}"),
            );
        }
    };
    drop(body);
    let (permit, mut reservation) = held;
    reservation.shrink_to(event.held_bytes());
    // The work runs to its end in a task of its own, whether or not the caller waits for it.
    let service = endpoint.service.clone();
    let work = tokio::spawn(async move {
        let _held = (permit, reservation);
        let result = lambda::handle_until(&service, event, None).await;
        if let Err(error) = &result {
            tracing::error!(error_type = error.error_type(), %error, "invocation failed");
        }
        result
    });
    if invocation_type == "Event" {
        return StatusCode::ACCEPTED.into_response();
    }
    match work.await {
        Ok(Ok(result)) => function_response(StatusCode::OK, &result, None),
        Ok(Err(error)) => function_error(&error),
        Err(error) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            &format!("the invocation ended abnormally: {error}"),
        ),
    }
}

impl<E: FaceEncoder> Endpoint<E> {
    /// An invocation slot and `bytes` of the memory budget for an authenticated request, at
    /// once; the error says why not (answered 429).
    fn admit(&self, bytes: u64) -> Result<Held, &'static str> {
        let Ok(permit) = self.invocations.clone().try_acquire_owned() else {
            return Err("too many invocations in progress");
        };
        let Some(reservation) = self.service.budget().try_reserve_request(bytes) else {
            return Err("the memory budget has no room for the request");
        };
        Ok((permit, reservation))
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
