//! Error reports to Sentry, as the original function sent them (sentry_sdk with its AWS Lambda
//! integration): with `SENTRY_DSN` set, every failed source (the `source failed` log line, with
//! its pk, type and the stage that failed), every error logged and every panic (which the panic
//! hook logs as an error) become Sentry events, the other log lines of the moment their
//! breadcrumbs; `SENTRY_ENVIRONMENT` names the environment (the stage), and the release is this
//! crate's version. Without `SENTRY_DSN` nothing is set up and nothing is sent.
//!
//! An event never carries a token or a signed URL: the service logs neither, and
//! [`scrub`] (Sentry's `before_send`) also cuts every URL in an event down to
//! [`redact::loggable_url`] and drops any field named like a token.
//!
//! The Lambda function flushes the events of an invocation before it answers ([`flush`]) and,
//! as the original's `timeout_warning`, sends a warning event when an invocation is still
//! running shortly before its deadline ([`DeadlineWarning`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
use sentry::protocol::{Event, Value};
use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

use crate::redact;

/// How long before the deadline an invocation still running is reported (sentry_sdk's
/// `timeout_warning` buffer, 1.5 s); the service stops its sources 1 s before it.
pub const DEADLINE_WARNING: Duration = Duration::from_millis(1500);

/// The most a flush waits for the events to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The client, kept for the life of the process once [`init`] has made it.
static CLIENT: OnceLock<Option<sentry::ClientInitGuard>> = OnceLock::new();

/// Starts the Sentry client from `SENTRY_DSN` and `SENTRY_ENVIRONMENT`, once per process; `false`
/// (and nothing set up) when `SENTRY_DSN` is unset or empty. A DSN that does not parse is
/// reported on stderr and ignored, so that a typo never stops the function.
pub fn init() -> bool {
    CLIENT
        .get_or_init(|| {
            let dsn = std::env::var("SENTRY_DSN")
                .ok()
                .filter(|d| !d.trim().is_empty())?;
            let dsn = dsn.trim();
            if let Err(error) = dsn.parse::<sentry::types::Dsn>() {
                eprintln!("SENTRY_DSN is not a Sentry DSN ({error}): nothing is reported");
                return None;
            }
            let mut options = sentry::ClientOptions::new()
                .dsn(dsn)
                .maybe_release(sentry::release_name!())
                .before_send(scrub);
            if let Some(environment) = std::env::var("SENTRY_ENVIRONMENT")
                .ok()
                .filter(|e| !e.is_empty())
            {
                options = options.environment(environment);
            }
            Some(sentry::init(options))
        })
        .is_some()
}

/// The tracing layers that turn log events into Sentry events and breadcrumbs; `None` without a
/// client ([`init`]).
pub fn layers<S>() -> Option<Vec<Box<dyn Layer<S> + Send + Sync>>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if !init() {
        return None;
    }
    Some(vec![
        BreadcrumbLayer::new()
            .with_filter(filter_fn(|metadata| !is_reported(metadata)))
            .boxed(),
        ErrorLayer::new()
            .enable_span_attributes()
            .with_filter(filter_fn(is_reported))
            .boxed(),
    ])
}

/// Whether a log event becomes a Sentry event: errors (panics included), and the warning of a
/// failed source (the one event with a source's `pk` and `outcome`).
fn is_reported(metadata: &Metadata<'_>) -> bool {
    let fields = metadata.fields();
    metadata.is_event()
        && (*metadata.level() == Level::ERROR
            || (*metadata.level() == Level::WARN
                && fields.field("pk").is_some()
                && fields.field("outcome").is_some()))
}

/// Sends what was captured, waiting at most `timeout` (2 s at most); at once without a client.
pub fn flush(timeout: Duration) {
    if let Some(client) = sentry::Hub::current().client() {
        client.flush(Some(timeout.min(FLUSH_TIMEOUT)));
    }
}

/// [`flush`] from async code, on a blocking thread.
pub async fn flush_async(timeout: Duration) {
    if sentry::Hub::current().client().is_some() {
        let _ = tokio::task::spawn_blocking(move || flush(timeout)).await;
    }
}

/// While alive, sends a warning event if the invocation is still running [`DEADLINE_WARNING`]
/// before `deadline` (sentry_sdk's `timeout_warning`); dropping it cancels the warning.
pub struct DeadlineWarning(Option<tokio::task::JoinHandle<()>>);

impl DeadlineWarning {
    /// Arms the warning for the invocation `request_id` ending at `deadline`; does nothing
    /// without a client.
    pub fn arm(deadline: Instant, request_id: &str) -> Self {
        if sentry::Hub::current().client().is_none() {
            return Self(None);
        }
        let Some(at) = deadline.checked_sub(DEADLINE_WARNING) else {
            return Self(None);
        };
        let request_id = request_id.to_string();
        Self(Some(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let left_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            tracing::warn!(request_id, left_ms, "invocation near its deadline");
            sentry::with_scope(
                |scope| {
                    scope.set_tag("request_id", &request_id);
                    scope.set_extra("left_ms", Value::from(left_ms));
                },
                || {
                    sentry::capture_message(
                        "WARNING: the function's invocation is close to its timeout",
                        sentry::Level::Warning,
                    )
                },
            );
            flush_async(deadline.saturating_duration_since(Instant::now())).await;
        })))
    }
}

impl Drop for DeadlineWarning {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Sentry's `before_send`: every URL in the event's text cut down to [`redact::loggable_url`]
/// (its message, exceptions, fields, tags and breadcrumbs), fields named like a token dropped,
/// and a failed source's pk, type and stage made tags, so that Sentry can search and group by
/// them.
pub fn scrub(mut event: Event<'static>) -> Option<Event<'static>> {
    if let Some(message) = &mut event.message {
        *message = scrub_urls(message);
    }
    if let Some(entry) = &mut event.logentry {
        entry.message = scrub_urls(&entry.message);
        entry.params.iter_mut().for_each(scrub_value);
    }
    for exception in &mut event.exception.values {
        if let Some(value) = &mut exception.value {
            *value = scrub_urls(value);
        }
    }
    event.request = None;
    scrub_map(&mut event.extra);
    event
        .tags
        .retain(|key, _| !key.to_ascii_lowercase().contains("token"));
    for value in event.tags.values_mut() {
        *value = scrub_urls(value);
    }
    for breadcrumb in &mut event.breadcrumbs.values {
        if let Some(message) = &mut breadcrumb.message {
            *message = scrub_urls(message);
        }
        scrub_map(&mut breadcrumb.data);
    }
    let mut tags = Vec::new();
    for context in event.contexts.values_mut() {
        let sentry::protocol::Context::Other(fields) = context else {
            continue;
        };
        scrub_map(fields);
        for key in ["pk", "type", "stage", "outcome"] {
            if let Some(value) = fields.get(key) {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                tags.push((key.to_string(), text));
            }
        }
    }
    for (key, text) in tags {
        event.tags.entry(key).or_insert(text);
    }
    Some(event)
}

/// Scrubs the values of a map of fields, and drops the keys that name a token.
fn scrub_map(fields: &mut sentry::protocol::Map<String, Value>) {
    fields.retain(|key, _| !key.to_ascii_lowercase().contains("token"));
    fields.values_mut().for_each(scrub_value);
}

/// Scrubs every string of a JSON value, and drops the keys that name a token.
fn scrub_value(value: &mut Value) {
    match value {
        Value::String(text) => *text = scrub_urls(text),
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(fields) => {
            fields.retain(|key, _| !key.to_ascii_lowercase().contains("token"));
            fields.values_mut().for_each(scrub_value);
        }
        _ => {}
    }
}

/// `text` with every `http://` or `https://` URL in it cut down to [`redact::loggable_url`].
fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        // A closing bracket, a colon or sentence punctuation after a URL is not part of it.
        let trimmed = url.trim_end_matches([')', ']', ',', ';', ':', '.']);
        out.push_str(&redact::loggable_url(trimmed));
        out.push_str(&url[trimmed.len()..]);
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets_and_tokens_their_fields() {
        assert_eq!(
            scrub_urls("error sending request for url (https://h/p.jpg?X-Amz-Signature=abc): x"),
            "error sending request for url (https://h/p.jpg): x"
        );
        assert_eq!(
            scrub_urls("a http://u:pw@h:8/a?b=c, then https://k/z#f."),
            "a http://h:8/a, then https://k/z."
        );
        assert_eq!(scrub_urls("no url here"), "no url here");

        let mut event = Event::new();
        event.message = Some("posting to https://c/api?token=s3cret failed".into());
        event.extra.insert("token".into(), Value::from("s3cret"));
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("pk".to_string(), Value::from(7));
        fields.insert("type".to_string(), Value::from("photo"));
        event.contexts.insert(
            "Rust Tracing Fields".into(),
            sentry::protocol::Context::Other(fields),
        );
        let event = scrub(event).unwrap();
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(event.tags["pk"], "7");
        assert_eq!(event.tags["type"], "photo");
    }
}
