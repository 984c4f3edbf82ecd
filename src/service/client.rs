//! The service's outbound HTTP client: downloading photos within limits and posting encodings back, both with
//! bounded retries (exponential backoff with jitter) of transient failures only.
//!
//! Transient: timeouts, connection errors, HTTP 5xx and 429. Every other 4xx is final. Only
//! http and https URLs are fetched, redirects are followed a few times at most, and a download
//! is streamed and stopped as soon as it passes the size limit. URLs in errors have their query
//! string removed, since signed media URLs carry credentials there.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::{Client, StatusCode, Url, redirect};
use serde::Serialize;

use super::payload::Token;

/// The body concrexit answers (with HTTP 400) for a source that was already processed.
const ALREADY_PROCESSED: &str = "This object is not processing.";

/// Limits and timeouts of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time allowed for one download attempt, body included (the original used 15 s).
    pub download_timeout: Duration,
    /// Time allowed for one callback attempt (the original used 30 s).
    pub callback_timeout: Duration,
    /// The largest photo downloaded, in bytes.
    pub max_download_bytes: u64,
    /// The most redirects followed for one request.
    pub max_redirects: usize,
    pub retry: RetryPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            download_timeout: Duration::from_secs(15),
            callback_timeout: Duration::from_secs(30),
            max_download_bytes: 50 * 1024 * 1024,
            max_redirects: 5,
            retry: RetryPolicy::default(),
        }
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
        let message = error_chain(&error.without_url());
        if is_timeout {
            Self::Timeout(timeout)
        } else if is_redirect {
            Self::Redirect(message)
        } else {
            Self::Connection(message)
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A URL as it may be logged: without its query string and fragment.
pub fn loggable_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<invalid URL>".to_string(),
    }
}

/// The body posted to concrexit.
#[derive(Debug, Serialize)]
pub struct CallbackBody<'a> {
    pub token: &'a Token,
    pub encodings: &'a [Vec<f32>],
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

/// The HTTP client of the service, shared by every source.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
    config: HttpConfig,
}

impl Http {
    pub fn new(config: HttpConfig) -> Result<Self, FetchError> {
        let client = Client::builder()
            .redirect(redirect::Policy::limited(config.max_redirects))
            .user_agent(concat!(
                "concrexit-facedetection/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| FetchError::Connection(error_chain(&e)))?;
        Ok(Self { client, config })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Downloads a photo, retrying transient failures.
    pub async fn download(&self, url: &str) -> Attempted<Bytes> {
        let url = match Url::parse(url) {
            Ok(url) => url,
            Err(e) => {
                return Attempted {
                    result: Err(FetchError::InvalidUrl(e.to_string())),
                    attempts: 0,
                };
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Attempted {
                result: Err(FetchError::UnsupportedScheme(url.scheme().to_string())),
                attempts: 0,
            };
        }
        self.retrying(|| self.download_once(url.clone())).await
    }

    async fn download_once(&self, url: Url) -> Result<Bytes, FetchError> {
        let timeout = self.config.download_timeout;
        let limit = self.config.max_download_bytes;
        let reqwest_error = |e| FetchError::from_reqwest(e, timeout);
        let mut response = self
            .client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(reqwest_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, &response, String::new()));
        }
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(FetchError::TooLarge { limit });
        }
        let mut body = BytesMut::new();
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
        let body = match serde_json::to_vec(body) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                return Attempted {
                    result: Err(FetchError::InvalidBody(e.to_string())),
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
        let response = self
            .client
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
        let headers_error = status_error(status, &response, String::new());
        let text = response.text().await.unwrap_or_default();
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

fn status_error(status: StatusCode, response: &reqwest::Response, body: String) -> FetchError {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    FetchError::Status {
        status: status.as_u16(),
        body,
        retry_after,
    }
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
    fn logged_urls_lose_their_query() {
        assert_eq!(
            loggable_url("https://h/media/p.jpg?sig=abc#x"),
            "https://h/media/p.jpg"
        );
    }
}
