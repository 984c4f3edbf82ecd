//! The original Lambda function's payload: parsing with exact validation, and the callback URL.
//!
//! A payload is `{"api_url": "...", "sources": [{"pk", "type", "photo_url", "token"}, ...]}`.
//! Anything malformed is refused as a whole, before any source is processed, with an error that
//! names the source index and the field; the token is never part of an error or a log line.
//! JSON text is read straight into the payload's fields: any other field, and the contents of a
//! value of the wrong kind, are skipped as they are read, never held in memory.

use std::fmt;

use reqwest::Url;
use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

pub use crate::redact::Token;
use crate::redact::{loggable, loggable_url};

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

/// One JSON value as validation sees it: a string or a number is kept, anything else only
/// by its kind, its contents skipped as they are read and never stored.
#[derive(Debug)]
enum Scalar {
    Str(String),
    Number(serde_json::Number),
    Other(&'static str),
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Self::Str(_) => "a string",
            Self::Number(n) if n.is_i64() || n.is_u64() => "an integer",
            Self::Number(_) => "a float",
            Self::Other(kind) => kind,
        }
    }
}

/// What a visitor makes of a value of a kind it does not expect.
trait OfKind {
    fn of_kind(kind: &'static str) -> Self;
}

impl OfKind for Scalar {
    fn of_kind(kind: &'static str) -> Self {
        Self::Other(kind)
    }
}

/// The visitor methods for the kinds of JSON value a visitor only names: each skips the value
/// (an array's or object's contents with `IgnoredAny`, allocating nothing) and returns
/// [`OfKind::of_kind`].
macro_rules! only_kind {
    (bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(OfKind::of_kind("a boolean"))
        }
    };
    (numbers) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(OfKind::of_kind("an integer"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(OfKind::of_kind("an integer"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(OfKind::of_kind("a float"))
        }
    };
    (str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(OfKind::of_kind("a string"))
        }
    };
    (null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(OfKind::of_kind("null"))
        }
    };
    (array) => {
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(OfKind::of_kind("an array"))
        }
    };
    (object) => {
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
            Ok(OfKind::of_kind("an object"))
        }
    };
    ($($kind:ident)+) => {
        $(only_kind!($kind);)+
    };
}

struct ScalarVisitor;

impl<'de> de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Scalar::Other("a float"), Scalar::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    only_kind!(bool null array object);
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// An object key: one of the names the payload (or the Lambda event around it) uses, or
/// `None` for any other, which is not stored.
pub(crate) struct Key(pub(crate) Option<&'static str>);

/// Every key the payload and the Lambda event read.
const KEYS: [&str; 7] = [
    "api_url",
    "sources",
    "pk",
    "type",
    "photo_url",
    "token",
    "Records",
];

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(KEYS.iter().copied().find(|key| *key == v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A source as read: its four fields, or the kind of value it was instead of an object.
enum RawSource {
    Object {
        pk: Option<Scalar>,
        kind: Option<Scalar>,
        photo_url: Option<Scalar>,
        token: Option<Scalar>,
    },
    Other(&'static str),
}

impl OfKind for RawSource {
    fn of_kind(kind: &'static str) -> Self {
        Self::Other(kind)
    }
}

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> de::Visitor<'de> for SourceVisitor {
            type Value = RawSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a source")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawSource, A::Error> {
                let (mut pk, mut kind, mut photo_url, mut token) = (None, None, None, None);
                while let Some(Key(key)) = map.next_key()? {
                    let field = match key {
                        Some("pk") => &mut pk,
                        Some("type") => &mut kind,
                        Some("photo_url") => &mut photo_url,
                        Some("token") => &mut token,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *field = Some(map.next_value()?);
                }
                Ok(RawSource::Object {
                    pk,
                    kind,
                    photo_url,
                    token,
                })
            }
            only_kind!(bool numbers str null array);
        }
        deserializer.deserialize_any(SourceVisitor)
    }
}

/// The `sources` field as read: at most [`MAX_SOURCES`] sources kept, and how many there
/// were; or the kind of value it was instead of an array.
enum RawSources {
    List { sources: Vec<RawSource>, len: usize },
    Other(&'static str),
}

impl OfKind for RawSources {
    fn of_kind(kind: &'static str) -> Self {
        Self::Other(kind)
    }
}

impl<'de> Deserialize<'de> for RawSources {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourcesVisitor;
        impl<'de> de::Visitor<'de> for SourcesVisitor {
            type Value = RawSources;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of sources")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawSources, A::Error> {
                let mut sources = Vec::new();
                let mut len = 0;
                loop {
                    // Past the limit the payload is refused: its sources are only counted.
                    let more = if len < MAX_SOURCES {
                        seq.next_element::<RawSource>()?.map(|s| sources.push(s))
                    } else {
                        seq.next_element::<de::IgnoredAny>()?.map(|_| ())
                    };
                    if more.is_none() {
                        return Ok(RawSources::List { sources, len });
                    }
                    len += 1;
                }
            }
            only_kind!(bool numbers str null object);
        }
        deserializer.deserialize_any(SourcesVisitor)
    }
}

/// The fields of a payload object as read, before validation; other fields are skipped.
#[derive(Default)]
pub(crate) struct PayloadFields {
    api_url: Option<Scalar>,
    sources: Option<RawSources>,
}

impl PayloadFields {
    /// Reads the value of `key`: kept if it is a payload field, skipped otherwise.
    pub(crate) fn read_value<'de, A: de::MapAccess<'de>>(
        &mut self,
        key: Option<&str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match key {
            Some("api_url") => self.api_url = Some(map.next_value()?),
            Some("sources") => self.sources = Some(map.next_value()?),
            _ => {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(())
    }

    /// The validated payload.
    pub(crate) fn validate(self) -> Result<Payload, PayloadError> {
        let api_url = match self.api_url {
            Some(Scalar::Str(text)) => {
                parse_http_url(&text).map_err(|problem| PayloadError::Field {
                    field: "api_url",
                    problem,
                })?
            }
            other => {
                return Err(PayloadError::Field {
                    field: "api_url",
                    problem: missing_or(other.as_ref().map(Scalar::kind), "a string"),
                });
            }
        };
        let sources = match self.sources {
            Some(RawSources::List { len: 0, .. }) => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: "the list is empty; at least one source is required".to_string(),
                });
            }
            Some(RawSources::List { len, .. }) if len > MAX_SOURCES => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: format!(
                        "{len} sources, more than the limit of {MAX_SOURCES} per payload; split it"
                    ),
                });
            }
            Some(RawSources::List { sources, .. }) => sources,
            Some(RawSources::Other(kind)) => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: missing_or(Some(kind), "an array"),
                });
            }
            None => {
                return Err(PayloadError::Field {
                    field: "sources",
                    problem: missing_or(None, "an array"),
                });
            }
        };
        let sources = sources
            .into_iter()
            .enumerate()
            .map(|(index, source)| parse_source(index, source))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Payload { api_url, sources })
    }
}

/// A payload as read: its fields, or the kind of value it was instead of an object.
enum RawPayload {
    Object(PayloadFields),
    Other(&'static str),
}

impl OfKind for RawPayload {
    fn of_kind(kind: &'static str) -> Self {
        Self::Other(kind)
    }
}

impl<'de> Deserialize<'de> for RawPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl<'de> de::Visitor<'de> for PayloadVisitor {
            type Value = RawPayload;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a payload")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawPayload, A::Error> {
                let mut fields = PayloadFields::default();
                while let Some(Key(key)) = map.next_key()? {
                    fields.read_value(key, &mut map)?;
                }
                Ok(RawPayload::Object(fields))
            }
            only_kind!(bool numbers str null array);
        }
        deserializer.deserialize_any(PayloadVisitor)
    }
}

fn missing_or(kind: Option<&str>, expected: &str) -> String {
    match kind {
        None => "missing".to_string(),
        Some(kind) => format!("expected {expected}, found {kind}"),
    }
}

impl Payload {
    /// Parses and validates a payload given as JSON text, straight into its fields: what is
    /// not a payload field is skipped as it is read, never stored.
    pub fn from_json(text: &[u8]) -> Result<Self, PayloadError> {
        let raw: RawPayload =
            serde_json::from_slice(text).map_err(|e| PayloadError::Json(e.to_string()))?;
        raw.validate()
    }

    /// Validates a payload given as a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, PayloadError> {
        // A `Value` deserializes into anything; the error cannot happen.
        RawPayload::deserialize(value)
            .map_err(|e| PayloadError::Json(e.to_string()))?
            .validate()
    }

    /// The bytes this payload holds, about: its text and a fixed overhead per source.
    pub fn held_bytes(&self) -> u64 {
        let sources: usize = self
            .sources
            .iter()
            .map(|s| s.photo_url.len() + s.token.expose().len() + std::mem::size_of::<Source>())
            .sum();
        (self.api_url.as_str().len() + sources) as u64
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

impl RawPayload {
    fn validate(self) -> Result<Payload, PayloadError> {
        match self {
            Self::Object(fields) => fields.validate(),
            Self::Other(kind) => Err(PayloadError::NotAnObject(kind)),
        }
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

fn parse_source(index: usize, source: RawSource) -> Result<Source, PayloadError> {
    let error = |field: &'static str, problem: String| PayloadError::SourceField {
        index,
        field,
        problem,
    };
    let wrong = |field: &'static str, value: Option<Scalar>, expected: &str| {
        error(
            field,
            missing_or(value.as_ref().map(Scalar::kind), expected),
        )
    };
    let (pk, kind, photo_url, token) = match source {
        RawSource::Object {
            pk,
            kind,
            photo_url,
            token,
        } => (pk, kind, photo_url, token),
        RawSource::Other(kind) => {
            return Err(error("*", format!("expected an object, found {kind}")));
        }
    };
    let pk = match pk {
        Some(Scalar::Number(n)) => n
            .as_u64()
            .ok_or_else(|| error("pk", format!("expected a non-negative integer, found {n}")))?,
        other => return Err(wrong("pk", other, "an integer")),
    };
    let kind = match kind {
        Some(Scalar::Str(kind)) if kind == "photo" => SourceType::Photo,
        Some(Scalar::Str(kind)) if kind == "reference" => SourceType::Reference,
        Some(Scalar::Str(kind)) => {
            return Err(error(
                "type",
                format!("expected \"photo\" or \"reference\", found {kind:?}"),
            ));
        }
        other => return Err(wrong("type", other, "a string")),
    };
    let photo_url = match photo_url {
        Some(Scalar::Str(url)) if url.is_empty() => {
            return Err(error("photo_url", "is empty".to_string()));
        }
        Some(Scalar::Str(url)) => url,
        other => return Err(wrong("photo_url", other, "a string")),
    };
    let token = match token {
        Some(Scalar::Str(token)) => Token::new(token),
        other => return Err(wrong("token", other, "a string")),
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
