//! The HTTP plumbing the webhook and Alertmanager sinks share: one client
//! per sink, one POST per attempt, and the answer turned into a
//! [`SinkError`] that says whether to try again.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Url};

use super::SinkError;

/// How long one request may take, connecting included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` of every request: `loom/<version>`.
pub(crate) const USER_AGENT: &str = concat!("loom/", env!("CARGO_PKG_VERSION"));

/// The most bytes of an error response kept in a [`SinkError::Status`].
const ERROR_BODY_LIMIT: usize = 300;

/// Parses a configured URL, refusing anything but http and https.
pub(crate) fn parse_url(sink: &'static str, url: &str) -> Result<Url, SinkError> {
    let invalid = |detail: String| SinkError::InvalidUrl {
        sink,
        url: url.to_owned(),
        detail,
    };
    let parsed = Url::parse(url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    Ok(parsed)
}

/// `url` as errors and logs show it: without user, password, query or
/// fragment, the usual places of credentials.
pub(crate) fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    // These setters fail only for URLs that cannot have credentials, which
    // then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The client of one sink: a per-request timeout, no redirects (a POST
/// that is redirected is a misconfigured URL, better reported than
/// followed as a GET), and Loom's user agent.
pub(crate) fn client(sink: &'static str, url: &Url) -> Result<Client, SinkError> {
    Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .map_err(|error| SinkError::Client {
            sink,
            url: shown_url(url),
            detail: causes(&error),
        })
}

/// POSTs `body` as JSON to `url` once; any 2xx is success.
pub(crate) async fn post_json(
    client: &Client,
    sink: &'static str,
    url: &Url,
    mut headers: HeaderMap,
    body: Vec<u8>,
) -> Result<(), SinkError> {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let response = client
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|error| request_error(sink, url, &error))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // The body is only for the error message: a receiver that fails to send
    // it leaves the message shorter, not the delivery in a different state.
    let text = response.text().await.unwrap_or_default();
    Err(SinkError::Status {
        sink,
        url: shown_url(url),
        status: status.as_u16(),
        body: bounded(text.trim(), ERROR_BODY_LIMIT),
        retry_after,
    })
}

fn request_error(sink: &'static str, url: &Url, error: &reqwest::Error) -> SinkError {
    let what = if error.is_timeout() {
        format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "no answer".to_owned()
    };
    let causes = causes(error);
    SinkError::Request {
        sink,
        url: shown_url(url),
        detail: if causes.is_empty() {
            what
        } else {
            format!("{what}: {causes}")
        },
        // A request that could not even be built fails the same way again;
        // anything on the way (connect, TLS, timeout, reset) may not.
        transient: !error.is_builder(),
    }
}

/// The causes of `error`, outermost first, joined with `: ` (reqwest's own
/// text names the full URL, which may carry credentials, so it is left out).
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn bounded(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_drop_credentials_and_queries() {
        let url = Url::parse("https://user:pw@example.com:8443/hook?token=abc#x").unwrap();
        assert_eq!(shown_url(&url), "https://example.com:8443/hook");
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_accepted() {
        assert!(parse_url("webhook", "http://127.0.0.1:1/hook").is_ok());
        assert!(parse_url("webhook", "https://example.com").is_ok());
        for bad in ["ftp://example.com", "not a url", "http://", "file:///tmp/x"] {
            let error = parse_url("webhook", bad).unwrap_err();
            assert!(
                matches!(error, SinkError::InvalidUrl { .. }),
                "{bad}: {error}"
            );
        }
    }
}
