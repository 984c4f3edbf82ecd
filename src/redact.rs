//! What of a payload may never reach a log line or an error message, and how it is kept out:
//! the callback [`Token`] prints as `<redacted>`, and URLs are logged without credentials,
//! query string or fragment ([`loggable_url`]), where signed photo URLs carry their secrets.

use std::fmt;

use reqwest::Url;
use serde::{Serialize, Serializer};

/// A callback token: shown as `<redacted>` by `Debug` and `Display`, sent only in callback bodies.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the callback body.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A URL as it may be logged: without credentials, query string and fragment.
pub fn loggable_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(url) => loggable(&url),
        Err(_) => "<invalid URL>".to_string(),
    }
}

/// [`loggable_url`] of a parsed URL.
pub fn loggable(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    // Only URLs that cannot have credentials refuse these, and they have none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let token = Token::new("s3cret");
        assert_eq!(format!("{token} {token:?}"), "<redacted> Token(<redacted>)");
        assert_eq!(token.expose(), "s3cret");
    }

    #[test]
    fn logged_urls_lose_their_query_and_credentials() {
        assert_eq!(
            loggable_url("https://h/media/p.jpg?sig=abc#x"),
            "https://h/media/p.jpg"
        );
        assert_eq!(
            loggable_url("https://user:pa55@h:8/p.jpg"),
            "https://h:8/p.jpg"
        );
    }
}
