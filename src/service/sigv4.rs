//! AWS Signature Version 4 for the local invoke endpoint, so that boto3 (which signs every
//! request and cannot send a bearer token) can use `serve --secret`: the secret is the AWS
//! secret access key, any access key id is accepted (and logged; the secret never is).
//!
//! A request is verified by signing it again with the secret, with the AWS SDK's own signer
//! (`aws-sigv4`), over exactly what was received: the method, the path and query as sent, the
//! headers the client listed as signed, the body, and the region, service and time of its
//! credential scope; the two signatures are then compared in constant time. A request dated
//! more than [`MAX_CLOCK_SKEW`] away from this machine's clock is refused before its body is
//! read, as AWS refuses it, so a captured request cannot be replayed later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use axum::http::{HeaderMap, Method, Uri, header};

/// The signing algorithm of Signature Version 4, as it starts the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's `X-Amz-Date` may be from this machine's clock, either way.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why a request signed with Signature Version 4 is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("malformed AWS Signature Version 4 request: {0}")]
    Malformed(&'static str),
    #[error(
        "request dated {0}, more than 5 minutes from this machine's clock: check the clocks, \
         or sign the request again"
    )]
    Skewed(String),
    #[error(
        "signature does not match: the request was not signed with the secret as the AWS \
         secret access key"
    )]
    Mismatch,
}

/// A parsed Signature Version 4 `Authorization` header whose date is within the allowed skew;
/// the signature is checked by [`SignedRequest::verify`], once the body is there.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// The access key id the client used: any value is accepted.
    pub access_key_id: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    time: SystemTime,
}

impl SignedRequest {
    /// The Signature Version 4 authorization of a request: `None` when its `Authorization`
    /// header is absent or of another scheme; an error when it is malformed or dated too far
    /// from `now`.
    pub fn parse(headers: &HeaderMap, now: SystemTime) -> Option<Result<Self, SigV4Error>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
        Some(Self::parse_fields(rest, headers, now))
    }

    fn parse_fields(
        fields: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Self, SigV4Error> {
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for field in fields.split(',') {
            let (name, value) = field
                .trim()
                .split_once('=')
                .ok_or(SigV4Error::Malformed("Authorization fields are name=value"))?;
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let credential = credential.ok_or(SigV4Error::Malformed("no Credential"))?;
        let signed_headers = signed_headers.ok_or(SigV4Error::Malformed("no SignedHeaders"))?;
        let signature = signature.ok_or(SigV4Error::Malformed("no Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(SigV4Error::Malformed(
                "Credential is not ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
            return Err(SigV4Error::Malformed("an empty part in Credential"));
        }
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|value| value.to_str().ok())
            .ok_or(SigV4Error::Malformed("no X-Amz-Date header"))?;
        let time = parse_amz_date(amz_date)
            .ok_or(SigV4Error::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?;
        if !amz_date.starts_with(date) || date.len() != 8 {
            return Err(SigV4Error::Malformed(
                "the Credential's date is not X-Amz-Date's",
            ));
        }
        let skew = now
            .duration_since(time)
            .unwrap_or_else(|ahead| ahead.duration());
        if skew > MAX_CLOCK_SKEW {
            return Err(SigV4Error::Skewed(amz_date.to_string()));
        }
        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
        if !signed_headers.iter().any(|name| name == "host") {
            return Err(SigV4Error::Malformed("the Host header is not signed"));
        }
        Ok(Self {
            access_key_id: access_key_id.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers,
            signature: signature.to_string(),
            time,
        })
    }

    /// Signs the received request again with `secret` and compares the signatures.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        secret: &str,
    ) -> Result<(), SigV4Error> {
        let mut signed = Vec::new();
        for name in &self.signed_headers {
            let mut present = false;
            for value in headers.get_all(name.as_str()) {
                let value = value
                    .to_str()
                    .map_err(|_| SigV4Error::Malformed("a signed header is not text"))?;
                signed.push((name.as_str(), value));
                present = true;
            }
            if !present {
                return Err(SigV4Error::Malformed("a signed header is missing"));
            }
        }
        // The Host header is among the signed ones, so the authority here is never used.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = SignableRequest::new(
            method.as_str(),
            format!("http://localhost{path}"),
            signed.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| SigV4Error::Malformed("the request line cannot be signed"))?;
        let identity = Credentials::new(
            self.access_key_id.as_str(),
            secret,
            None,
            None,
            "facedetect serve",
        )
        .into();
        let mut settings = SigningSettings::default();
        // Sign exactly the headers the client listed, no fewer.
        settings.excluded_headers = Some(Vec::new());
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(self.time)
            .settings(settings)
            .build()
            .map_err(|_| SigV4Error::Malformed("incomplete signing parameters"))?
            .into();
        let output =
            sign(request, &params).map_err(|_| SigV4Error::Malformed("cannot be signed again"))?;
        if constant_time_eq(output.signature().as_bytes(), self.signature.as_bytes()) {
            Ok(())
        } else {
            Err(SigV4Error::Mismatch)
        }
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `20250102T030405Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse_as_utc() {
        let time = parse_amz_date("20240229T235959Z").unwrap();
        assert_eq!(
            time.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_709_251_199
        );
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(UNIX_EPOCH));
        for bad in [
            "20240229T235959",
            "2024-02-29T23:59:59Z",
            "20241329T000000Z",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
