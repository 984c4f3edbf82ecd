//! The service's outbound HTTP client: downloading photos within limits and posting encodings back, both with
//! bounded retries (exponential backoff with jitter) of transient failures only.
//!
//! Transient: timeouts, connection errors, HTTP 5xx and 429 (whose `Retry-After`, in seconds or
//! as an HTTP date, is honoured up to a limit). Every other 4xx is final. Every address is
//! checked against the destination policy ([`super::destination`]) after DNS resolution and on
//! every redirect hop, and no proxy is used, so the check sees the real peer. Downloads follow a
//! few redirects, never from https to http, and send no `Referer`; a download is streamed into
//! memory reserved from the memory budget and stopped as soon as it passes the size limit.
//! Callbacks never follow redirects: a 3xx is a failure, so that neither the encodings nor the
//! token go anywhere but `api_url`. Only the first bytes of an error answer are read. URLs in
//! errors and logs lose their query string and credentials, since signed media URLs carry
//! secrets there.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::dns::Resolve;
use reqwest::{Client, StatusCode, Url, redirect};
use serde::Serialize;

use super::budget::{MemoryBudget, Reservation};
use super::destination::{self, Destinations, PolicyResolver, SystemResolver};
use crate::error::Report;
use crate::face::Encoding;
use crate::redact::{Token, loggable};

/// The body concrexit answers (with HTTP 400) for a source that was already processed.
const ALREADY_PROCESSED: &str = "This object is not processing.";

/// Limits and timeouts of the HTTP side.
#[derive(Clone)]
pub struct HttpConfig {
    /// Time allowed for one download attempt, body included (the original used 15 s).
    pub download_timeout: Duration,
    /// Time allowed for one callback attempt (the original used 30 s).
    pub callback_timeout: Duration,
    /// The largest photo downloaded, in bytes.
    pub max_download_bytes: u64,
    /// The most redirects followed for one download (callbacks follow none).
    pub max_redirects: usize,
    /// The most bytes of an error answer read (for the error message).
    pub max_error_body_bytes: usize,
    pub retry: RetryPolicy,
    /// Which addresses requests may go to.
    pub destinations: Destinations,
    /// Resolves host names; the policy then drops the addresses it refuses.
    pub resolver: Arc<dyn Resolve>,
    /// Certificate authorities trusted besides the system's (e.g. a private CA).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            download_timeout: Duration::from_secs(15),
            callback_timeout: Duration::from_secs(30),
            max_download_bytes: 50 * 1024 * 1024,
            max_redirects: 5,
            max_error_body_bytes: 4096,
            retry: RetryPolicy::default(),
            destinations: Destinations::default(),
            resolver: Arc::new(SystemResolver),
            extra_roots: Vec::new(),
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("download_timeout", &self.download_timeout)
            .field("callback_timeout", &self.callback_timeout)
            .field("max_download_bytes", &self.max_download_bytes)
            .field("max_redirects", &self.max_redirects)
            .field("max_error_body_bytes", &self.max_error_body_bytes)
            .field("retry", &self.retry)
            .field("destinations", &self.destinations)
            .field("extra_roots", &self.extra_roots.len())
            .finish_non_exhaustive()
    }
}

/// How often and how patiently transient failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay before the first retry, doubled for each further one.
    pub base_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first): half of the exponential delay
    /// plus a random part of the other half, or the server's `Retry-After` when it asked for
    /// one, never more than `max_delay`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exponential = self
            .base_delay
            .saturating_mul(1 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        exponential.mul_f64(0.5 + rand::random_range(0.0..0.5))
    }
}

/// Why a download or a callback failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("only http and https URLs are fetched, not {0}")]
    UnsupportedScheme(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("{0}")]
    Refused(String),
    #[error("redirect refused: {0}")]
    Redirect(String),
    #[error("HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot write the request body: {0}")]
    InvalidBody(String),
    #[error("memory budget unavailable")]
    Budget,
}

impl FetchError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Connection(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        let is_timeout = error.is_timeout();
        let is_redirect = error.is_redirect();
        if let Some(refused) = destination::find_refusal(&error) {
            return Self::Refused(refused.to_string());
        }
        let message = Report(&error.without_url()).to_string();
        if is_timeout {
            Self::Timeout(timeout)
        } else if is_redirect {
            Self::Redirect(message)
        } else {
            Self::Connection(message)
        }
    }
}

/// The body posted to concrexit.
#[derive(Debug, Serialize)]
pub struct CallbackBody<'a> {
    pub token: &'a Token,
    pub encodings: &'a [Encoding],
}

/// How a callback ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// concrexit accepted the encodings.
    Accepted,
    /// concrexit already had this source's encodings from an earlier run.
    AlreadyProcessed,
}

/// The result of a retried operation and the number of attempts it took.
#[derive(Debug)]
pub struct Attempted<T> {
    pub result: Result<T, FetchError>,
    pub attempts: u32,
}

/// The HTTP clients of the service, shared by every source.
#[derive(Debug, Clone)]
pub struct Http {
    /// Follows a few redirects, within the destination policy.
    downloads: Client,
    /// Follows none.
    callbacks: Client,
    config: HttpConfig,
}

/// What both clients share: the resolver behind the destination policy, no proxy (the policy
/// must see the real peer), no `Referer`, the user agent.
fn client_builder(config: &HttpConfig) -> reqwest::ClientBuilder {
    Client::builder()
        .dns_resolver(Arc::new(PolicyResolver::new(
            config.destinations,
            config.resolver.clone(),
        )))
        .no_proxy()
        .referer(false)
        .tls_certs_merge(config.extra_roots.clone())
        .user_agent(concat!(
            "concrexit-facedetection/",
            env!("CARGO_PKG_VERSION")
        ))
}

/// Downloads follow at most `max` redirects, to http(s) URLs the policy allows, never from
/// https to http. Names are checked again when the next hop connects.
fn download_redirects(max: usize, policy: Destinations) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(format!("too many redirects (more than {max})"));
        }
        let next = attempt.url();
        let from_https = attempt
            .previous()
            .last()
            .is_some_and(|previous| previous.scheme() == "https");
        if from_https && next.scheme() != "https" {
            let refused =
                destination::Refused(format!("redirect from https to {}", loggable(next)));
            return attempt.error(refused);
        }
        if let Err(destination::Refused(why)) = destination::check_url(policy, next) {
            let refused = destination::Refused(format!("redirect to {}: {why}", loggable(next)));
            return attempt.error(refused);
        }
        attempt.follow()
    })
}

impl Http {
    pub fn new(config: HttpConfig) -> Result<Self, FetchError> {
        let build_error = |e: reqwest::Error| FetchError::Connection(Report(&e).to_string());
        let downloads = client_builder(&config)
            .redirect(download_redirects(
                config.max_redirects,
                config.destinations,
            ))
            .build()
            .map_err(build_error)?;
        let callbacks = client_builder(&config)
            .redirect(redirect::Policy::none())
            .build()
            .map_err(build_error)?;
        Ok(Self {
            downloads,
            callbacks,
            config,
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Checks a URL against the scheme and destination rules before any request.
    fn checked_url(&self, url: &str) -> Result<Url, FetchError> {
        let url = Url::parse(url).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::UnsupportedScheme(url.scheme().to_string()));
        }
        destination::check_url(self.config.destinations, &url)
            .map_err(|refused| FetchError::Refused(refused.to_string()))?;
        Ok(url)
    }

    /// Downloads a photo, retrying transient failures. Each attempt first reserves the size
    /// limit from the budget's download pool; the reservation shrinks to the photo's size and
    /// is returned with it, to be dropped with the bytes.
    pub async fn download(
        &self,
        url: &str,
        budget: &MemoryBudget,
    ) -> Attempted<(Bytes, Reservation)> {
        let url = match self.checked_url(url) {
            Ok(url) => url,
            Err(error) => {
                return Attempted {
                    result: Err(error),
                    attempts: 0,
                };
            }
        };
        self.retrying(|| async {
            let mut reservation = budget
                .reserve_download(self.config.max_download_bytes)
                .await
                .ok_or(FetchError::Budget)?;
            let bytes = self.download_once(url.clone(), &mut reservation).await?;
            reservation.shrink_to(bytes.len() as u64);
            Ok((bytes, reservation))
        })
        .await
    }

    async fn download_once(
        &self,
        url: Url,
        reservation: &mut Reservation,
    ) -> Result<Bytes, FetchError> {
        let timeout = self.config.download_timeout;
        let limit = self.config.max_download_bytes.min(reservation.bytes());
        let reqwest_error = |e| FetchError::from_reqwest(e, timeout);
        let mut response = self
            .downloads
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(reqwest_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, &response, String::new()));
        }
        let announced = response.content_length();
        if announced.is_some_and(|length| length > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        if let Some(length) = announced {
            reservation.shrink_to(length);
        }
        // Room for the whole body at once, so it is never copied while growing; pages not
        // written are never touched.
        let capacity = announced.unwrap_or(limit);
        let mut body = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(usize::MAX));
        let limit = announced.unwrap_or(limit);
        while let Some(chunk) = response.chunk().await.map_err(reqwest_error)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Posts encodings to concrexit, retrying transient failures.
    pub async fn post_encodings(&self, url: &Url, body: &CallbackBody<'_>) -> Attempted<Delivery> {
        let checked = destination::check_url(self.config.destinations, url)
            .map_err(|refused| FetchError::Refused(refused.to_string()))
            .and_then(|()| {
                serde_json::to_vec(body)
                    .map(Bytes::from)
                    .map_err(|e| FetchError::InvalidBody(e.to_string()))
            });
        let body = match checked {
            Ok(body) => body,
            Err(error) => {
                return Attempted {
                    result: Err(error),
                    attempts: 0,
                };
            }
        };
        self.retrying(|| self.post_once(url.clone(), body.clone()))
            .await
    }

    async fn post_once(&self, url: Url, body: Bytes) -> Result<Delivery, FetchError> {
        let timeout = self.config.callback_timeout;
        let reqwest_error = |e| FetchError::from_reqwest(e, timeout);
        let mut response = self
            .callbacks
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(reqwest_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(Delivery::Accepted);
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|location| response.url().join(location).ok())
                .map_or_else(|| "nowhere".to_string(), |url| loggable(&url));
            return Err(FetchError::Redirect(format!(
                "HTTP {} to {location}: callbacks never follow redirects",
                status.as_u16()
            )));
        }
        let headers_error = status_error(status, &response, String::new());
        let text = read_prefix(&mut response, self.config.max_error_body_bytes).await;
        if status == StatusCode::BAD_REQUEST && is_already_processed(&text) {
            return Ok(Delivery::AlreadyProcessed);
        }
        Err(match headers_error {
            FetchError::Status {
                status,
                retry_after,
                ..
            } => FetchError::Status {
                status,
                body: snippet(&text),
                retry_after,
            },
            other => other,
        })
    }

    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Attempted<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        let policy = &self.config.retry;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = attempt().await;
            match &result {
                Err(error) if error.is_transient() && attempts < policy.max_attempts => {
                    let delay = policy.delay(attempts, error.retry_after());
                    tracing::debug!(attempt = attempts, %error, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                _ => return Attempted { result, attempts },
            }
        }
    }
}

/// At most the first `limit` bytes of a response body, as text (lossy); the rest is not read.
async fn read_prefix(response: &mut reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn status_error(status: StatusCode, response: &reqwest::Response, body: String) -> FetchError {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    FetchError::Status {
        status: status.as_u16(),
        body,
        retry_after,
    }
}

/// `Retry-After` as seconds or as an HTTP date (a date in the past means now).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

fn is_already_processed(body: &str) -> bool {
    serde_json::from_str::<Vec<String>>(body)
        .is_ok_and(|messages| messages.iter().any(|m| m == ALREADY_PROCESSED))
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for retry in 1..=8 {
            let full = Duration::from_millis(100 * (1 << (retry - 1))).min(policy.max_delay);
            let delay = policy.delay(retry, None);
            assert!(delay >= full / 2 && delay <= full, "{retry}: {delay:?}");
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(60))),
            policy.max_delay
        );
    }

    #[test]
    fn transient_errors() {
        let status = |status| FetchError::Status {
            status,
            body: String::new(),
            retry_after: None,
        };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(403).is_transient());
        assert!(!status(404).is_transient());
        assert!(FetchError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!FetchError::TooLarge { limit: 1 }.is_transient());
    }

    #[test]
    fn already_processed_body() {
        assert!(is_already_processed(
            r#"["This object is not processing."]"#
        ));
        assert!(!is_already_processed(r#"["Invalid token."]"#));
        assert!(!is_already_processed("This object is not processing."));
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
