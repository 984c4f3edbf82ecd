//! The original Lambda function's payload: parsing with exact validation, and the callback URL.
//!
//! A payload is `{"api_url": "...", "sources": [{"pk", "type", "photo_url", "token"}, ...]}`.
//! Anything malformed is refused as a whole, before any source is processed, with an error that
//! names the source index and the field; the token is never part of an error or a log line.

use std::fmt;

use reqwest::Url;
use serde::Serialize;
use serde_json::Value;

pub use super::redact::Token;
use super::redact::{loggable, loggable_url};

/// What a source's photo is: an album photo or a member's reference face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Photo,
    Reference,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Photo => "photo",
            Self::Reference => "reference",
        }
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most sources one payload may have (an Event invocation's 256 KB holds about 1000).
pub const MAX_SOURCES: usize = 1000;

/// One photo to encode and the place to deliver its encodings. `Debug` shows the photo URL
/// without its query string or credentials (signed URLs carry secrets there).
#[derive(Clone)]
pub struct Source {
    pub pk: u64,
    pub kind: SourceType,
    pub photo_url: String,
    pub token: Token,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("pk", &self.pk)
            .field("kind", &self.kind)
            .field("photo_url", &loggable_url(&self.photo_url))
            .field("token", &self.token)
            .finish()
    }
}

/// A validated payload.
#[derive(Clone)]
pub struct Payload {
    pub api_url: Url,
    pub sources: Vec<Source>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("api_url", &loggable(&self.api_url))
            .field("sources", &self.sources)
            .finish()
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("payload must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("payload field `{field}`: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("sources[{index}].{field}: {problem}")]
    SourceField {
        index: usize,
        field: &'static str,
        problem: String,
    },
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn missing_or(value: Option<&Value>, expected: &str) -> String {
    match value {
        None => "missing".to_string(),
        Some(value) => format!("expected {expected}, found {}", json_kind(value)),
    }
}

impl Payload {
    /// Parses and validates a payload given as JSON text.
    pub fn from_json(text: &[u8]) -> Result<Self, PayloadError> {
        let value: Value =
            serde_json::from_slice(text).map_err(|e| PayloadError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Validates a payload given as a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, PayloadError> {
        let Value::Object(object) = value else {
            return Err(PayloadError::NotAnObject(json_kind(value)));
        };
        let api_url = match object.get("api_url") {
            Some(Value::String(text)) => {
                parse_http_url(text).map_err(|problem| PayloadError::Field {
                    field: "api_url",
                    problem,
                })?
            }
            other => {
                return Err(PayloadError::Field {
                    field: "api_url",
                    problem: missing_or(other, "a string"),
                });
            }
        };
        let sources = match object.get("sources") {
            Some(Value::Array(sources)) if sources.is_empty() => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: "the list is empty; at least one source is required".to_string(),
                });
            }
            Some(Value::Array(sources)) if sources.len() > MAX_SOURCES => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: format!(
                        "{} sources, more than the limit of {MAX_SOURCES} per payload; split it",
                        sources.len()
                    ),
                });
            }
            Some(Value::Array(sources)) => sources,
            other => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: missing_or(other, "an array"),
                });
            }
        };
        let sources = sources
            .iter()
            .enumerate()
            .map(|(index, source)| parse_source(index, source))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { api_url, sources })
    }

    /// `{api_url}/api/facedetection/encodings/{type}/{pk}/`, with no doubled `/` whether or
    /// not `api_url` ends in one (a path prefix on `api_url` is kept).
    pub fn callback_url(&self, source: &Source) -> Url {
        let mut url = self.api_url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/api/facedetection/encodings/{}/{}/",
            source.kind, source.pk
        ));
        url
    }
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        scheme => Err(format!(
            "only http and https URLs are allowed, not {scheme}"
        )),
    }
}

fn parse_source(index: usize, value: &Value) -> Result<Source, PayloadError> {
    let error = |field: &'static str, problem: String| PayloadError::SourceField {
        index,
        field,
        problem,
    };
    let Value::Object(object) = value else {
        return Err(PayloadError::SourceField {
            index,
            field: "*",
            problem: format!("expected an object, found {}", json_kind(value)),
        });
    };
    let pk = match object.get("pk") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| error("pk", format!("expected a non-negative integer, found {n}")))?,
        other => return Err(error("pk", missing_or(other, "an integer"))),
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) if kind == "photo" => SourceType::Photo,
        Some(Value::String(kind)) if kind == "reference" => SourceType::Reference,
        Some(Value::String(kind)) => {
            return Err(error(
                "type",
                format!("expected \"photo\" or \"reference\", found {kind:?}"),
            ));
        }
        other => return Err(error("type", missing_or(other, "a string"))),
    };
    let photo_url = match object.get("photo_url") {
        Some(Value::String(url)) if url.is_empty() => {
            return Err(error("photo_url", "is empty".to_string()));
        }
        Some(Value::String(url)) => url.clone(),
        other => return Err(error("photo_url", missing_or(other, "a string"))),
    };
    let token = match object.get("token") {
        Some(Value::String(token)) => Token::new(token.clone()),
        other => return Err(error("token", missing_or(other, "a string"))),
    };
    Ok(Source {
        pk,
        kind,
        photo_url,
        token,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn source() -> Value {
        json!({"pk": 7, "type": "photo", "photo_url": "http://x/p.jpg", "token": "s3cret"})
    }

    #[test]
    fn callback_url_has_no_double_slash() {
        for api_url in ["https://thalia.nu", "https://thalia.nu/"] {
            let payload =
                Payload::from_value(&json!({"api_url": api_url, "sources": [source()]})).unwrap();
            assert_eq!(
                payload.callback_url(&payload.sources[0]).as_str(),
                "https://thalia.nu/api/facedetection/encodings/photo/7/"
            );
        }
        let payload =
            Payload::from_value(&json!({"api_url": "http://h:8/base/", "sources": [source()]}))
                .unwrap();
        assert_eq!(
            payload.callback_url(&payload.sources[0]).as_str(),
            "http://h:8/base/api/facedetection/encodings/photo/7/"
        );
    }

    #[test]
    fn errors_name_index_and_field_but_not_the_token() {
        let mut bad = source();
        bad["pk"] = json!("7");
        let err = Payload::from_value(&json!({"api_url": "https://a", "sources": [source(), bad]}))
            .unwrap_err();
        assert_eq!(
            err,
            PayloadError::SourceField {
                index: 1,
                field: "pk",
                problem: "expected an integer, found a string".to_string()
            }
        );
        // Every field of a source carrying the token wrong in turn: the error names the index
        // and the field, and never shows the token of any source.
        let fields: [(&str, Value); 6] = [
            ("pk", json!(-1)),
            ("type", json!("album")),
            ("photo_url", json!("")),
            ("photo_url", json!(["s3cret"])),
            ("token", json!(["s3cret"])),
            ("token", json!({"s3cret": 1})),
        ];
        for (field, value) in fields {
            let mut bad = source();
            bad[field] = value;
            let message =
                Payload::from_value(&json!({"api_url": "https://a", "sources": [source(), bad]}))
                    .unwrap_err()
                    .to_string();
            assert!(
                message.starts_with(&format!("sources[1].{field}")),
                "{message}"
            );
            assert!(!message.contains("s3cret"), "token in {message:?}");
        }
    }

    #[test]
    fn debug_shows_neither_the_token_nor_the_signed_url() {
        let mut signed = source();
        signed["photo_url"] = json!("https://user:pw@media/p.jpg?X-Amz-Signature=abcdef");
        let payload =
            Payload::from_value(&json!({"api_url": "https://a", "sources": [signed]})).unwrap();
        let shown = format!(
            "{payload:?} {:?} {}",
            payload.sources[0], payload.sources[0].token
        );
        for secret in ["s3cret", "abcdef", "X-Amz-Signature", "pw@"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://media/p.jpg"), "{shown}");
        assert_eq!(payload.sources[0].token.expose(), "s3cret");
    }

    #[test]
    fn sources_are_capped() {
        let sources: Vec<Value> = (0..=MAX_SOURCES).map(|_| source()).collect();
        let message = Payload::from_value(&json!({"api_url": "https://a", "sources": sources}))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("1001 sources, more than the limit of 1000"),
            "{message}"
        );
        let sources: Vec<Value> = (0..MAX_SOURCES).map(|_| source()).collect();
        assert!(Payload::from_value(&json!({"api_url": "https://a", "sources": sources})).is_ok());
    }
}
