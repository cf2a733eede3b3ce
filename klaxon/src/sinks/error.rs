//! Why a sink could not be built or could not deliver, and whether trying
//! again may help.

use std::time::Duration;

/// A sink's failure. The text is one sentence naming the sink and its URL
/// (without credentials or query string).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configured URL cannot be used.
    #[error("{sink} sink: url {url:?} is not a usable http or https url: {detail}")]
    InvalidUrl {
        /// `webhook` or `alertmanager`.
        sink: &'static str,
        /// The URL as configured.
        url: String,
        /// The parser's words.
        detail: String,
    },
    /// The HTTP client could not be set up (TLS roots, secret).
    #[error("{sink} sink for {url}: cannot set up the http client: {detail}")]
    Client {
        /// `webhook` or `alertmanager`.
        sink: &'static str,
        /// The target URL.
        url: String,
        /// The library's words.
        detail: String,
    },
    /// The alert could not be turned into a request body.
    #[error("{sink} sink for {url}: cannot encode the alert: {detail}")]
    Encode {
        /// `webhook` or `alertmanager`.
        sink: &'static str,
        /// The target URL.
        url: String,
        /// The encoder's words.
        detail: String,
    },
    /// The request did not get an answer: connection refused or reset,
    /// DNS failure, timeout.
    #[error("{sink} sink: request to {url} failed: {detail}")]
    Request {
        /// `webhook` or `alertmanager`.
        sink: &'static str,
        /// The target URL.
        url: String,
        /// What went wrong, cause by cause.
        detail: String,
        /// Whether another attempt may succeed.
        transient: bool,
    },
    /// The receiver answered with a status other than 2xx.
    #[error("{sink} sink: {url} answered {}: {body}", status_text(*status))]
    Status {
        /// `webhook` or `alertmanager`.
        sink: &'static str,
        /// The target URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, for the receiver's own words.
        body: String,
        /// The receiver's `Retry-After`, in seconds form, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The delivery was cancelled (shutdown) before it succeeded.
    #[error("{sink} sink: delivery to {url} cancelled after {attempts} attempts")]
    Cancelled {
        /// The sink's name.
        sink: &'static str,
        /// The target URL, or `the log`.
        url: String,
        /// Attempts started before the cancellation.
        attempts: u32,
    },
}

impl SinkError {
    /// Whether another attempt may succeed: connection failures, timeouts,
    /// 5xx and 429 may; a bad URL, an unencodable alert and other 4xx (the
    /// receiver refuses this request, and will again) may not.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Request { transient, .. } => *transient,
            SinkError::Status { status, .. } => *status == 429 || (500..600).contains(status),
            SinkError::InvalidUrl { .. }
            | SinkError::Client { .. }
            | SinkError::Encode { .. }
            | SinkError::Cancelled { .. } => false,
        }
    }

    /// The name of the sink that failed (`log`, `webhook`, `alertmanager`).
    pub fn sink(&self) -> &'static str {
        match self {
            SinkError::InvalidUrl { sink, .. }
            | SinkError::Client { sink, .. }
            | SinkError::Encode { sink, .. }
            | SinkError::Request { sink, .. }
            | SinkError::Status { sink, .. }
            | SinkError::Cancelled { sink, .. } => sink,
        }
    }

    /// How long the receiver asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}
