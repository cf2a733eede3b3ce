//! The webhook sink: an HTTP POST of the alert as JSON, signed when a
//! secret is configured.
//!
//! # Request
//!
//! `POST <url>` with `Content-Type: application/json`,
//! `User-Agent: loom/<version>`, a 10 s timeout, and this body (times are
//! RFC 3339 in UTC, `ends_at` is `null` while firing, `dead_letter` is the
//! DeadLetter of DESIGN §12 or `null`):
//!
//! ```json
//! { "status": "firing", "worker": "staleness-detector", "reason": "failed",
//!   "severity": "warning", "summary": "worker staleness-detector failed: exit 1 after 3 attempts",
//!   "description": "...", "run_id": "0190...", "starts_at": "2025-01-05T10:00:00Z",
//!   "ends_at": null, "consecutive_failures": 3, "suppressed": 0, "dead_letter": { ... } }
//! ```
//!
//! Headers:
//! - `X-Loom-Delivery: <uuid>`: one id per notification, the same on every
//!   retry of it, so a receiver that saw it already can drop the repeat
//!   (delivery is at least once).
//! - `X-Loom-Signature: sha256=<hex>` when the sink has a `secret`: the
//!   lower-case hex HMAC-SHA256 of the exact body bytes, keyed with the
//!   secret (the scheme of GitHub's `X-Hub-Signature-256`).
//!
//! Any 2xx answer is success. 5xx, 429 and failures to connect are retried
//! by the caller's policy (a `Retry-After` in seconds is honoured up to the
//! policy's longest wait); other answers, redirects included, are not.
//!
//! # Verifying the signature
//!
//! A receiver should:
//! 1. read the raw body bytes, before any JSON parsing (re-encoding changes
//!    the bytes);
//! 2. compute `HMAC-SHA256(key = secret, message = body)`, hex-encode it in
//!    lower case and prefix `sha256=`;
//! 3. compare that with `X-Loom-Signature` in constant time, and refuse the
//!    request (401) when the header is missing or differs.
//!
//! In Python:
//!
//! ```python
//! import hashlib, hmac
//! def verified(secret: bytes, body: bytes, header: str) -> bool:
//!     expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest(expected, header or "")
//! ```
//!
//! From a shell: `printf %s "$body" | openssl dgst -sha256 -hmac "$secret"`.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use loom_protocol::DeadLetter;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Url};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use super::{SinkError, http};
use crate::alert::Alert;

/// The header carrying the notification's id.
pub const DELIVERY_HEADER: &str = "x-loom-delivery";
/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-loom-signature";

const NAME: &str = "webhook";

/// A webhook receiver: its URL, its client and its signing key.
#[derive(Clone)]
pub struct WebhookSink {
    url: Url,
    client: Client,
    mac: Option<Hmac<Sha256>>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("WebhookSink")
            .field("url", &self.url())
            .field("signed", &self.mac.is_some())
            .finish()
    }
}

/// The JSON body, field for field.
#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    worker: &'a str,
    reason: &'static str,
    severity: &'static str,
    summary: &'a str,
    description: &'a str,
    run_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    suppressed: u32,
    dead_letter: Option<&'a DeadLetter>,
}

impl WebhookSink {
    /// A sink posting to `url`, signing with `secret` when there is one. An
    /// empty secret is refused: it is almost always an unset variable, and
    /// a signature anyone can forge is worse than none.
    pub fn new(url: &str, secret: Option<&str>) -> Result<WebhookSink, SinkError> {
        let url = http::parse_url(NAME, url)?;
        let client_error = |detail: String| SinkError::Client {
            sink: NAME,
            url: http::shown_url(&url),
            detail,
        };
        let mac = match secret {
            None => None,
            Some("") => return Err(client_error("the signing secret is empty".to_owned())),
            Some(secret) => Some(
                Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .map_err(|error| client_error(format!("unusable secret: {error}")))?,
            ),
        };
        Ok(WebhookSink {
            client: http::client(NAME, &url)?,
            url,
            mac,
        })
    }

    /// The URL, as errors and logs show it (no credentials or query).
    pub fn url(&self) -> String {
        http::shown_url(&self.url)
    }

    /// One POST of `alert` as notification `delivery`.
    pub(crate) async fn deliver(&self, alert: &Alert, delivery: Uuid) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&Body {
            status: alert.status.as_str(),
            worker: &alert.key.worker,
            reason: alert.key.reason.as_str(),
            severity: alert.severity.as_str(),
            summary: &alert.summary,
            description: &alert.description,
            run_id: alert.run_id,
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
            consecutive_failures: alert.consecutive_failures,
            suppressed: alert.suppressed,
            dead_letter: alert.dead_letter.as_ref(),
        })
        .map_err(|error| SinkError::Encode {
            sink: NAME,
            url: self.url(),
            detail: error.to_string(),
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(DELIVERY_HEADER),
            header_value(&delivery.hyphenated().to_string()),
        );
        if let Some(mac) = &self.mac {
            let mut mac = mac.clone();
            mac.update(&body);
            let signature = format!("sha256={}", lower_hex(&mac.finalize().into_bytes()));
            headers.insert(
                HeaderName::from_static(SIGNATURE_HEADER),
                header_value(&signature),
            );
        }
        http::post_json(&self.client, NAME, &self.url, headers, body).await
    }
}

/// A header value from ASCII text we made (a UUID, `sha256=` and hex).
fn header_value(ascii: &str) -> HeaderValue {
    HeaderValue::from_str(ascii).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn an_empty_secret_is_refused() {
        let error = WebhookSink::new("http://127.0.0.1:1/hook", Some("")).unwrap_err();
        assert!(error.to_string().contains("secret is empty"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let sink = WebhookSink::new("http://127.0.0.1:1/hook", Some("hunter2")).unwrap();
        let shown = format!("{sink:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("signed: true"), "{shown}");
    }
}
