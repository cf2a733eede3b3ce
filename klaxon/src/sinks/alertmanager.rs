//! The Alertmanager sink: posts alerts to Alertmanager's API v2, which then
//! does routing, silences, inhibition and its own notifications.
//!
//! `POST <url>/api/v2/alerts` with a one-element array:
//!
//! ```json
//! [ { "labels": { "alertname": "LoomRunFailed", "worker": "staleness-detector",
//!                 "reason": "failed", "severity": "warning" },
//!     "annotations": { "summary": "...", "description": "...", "run_id": "0190..." },
//!     "startsAt": "2025-01-05T10:00:00.000Z" } ]
//! ```
//!
//! The labels are the group's identity, so Alertmanager sees one alert per
//! worker and reason. A resolved alert is the same labels with `endsAt` set
//! to the resolve time (now or past), which Alertmanager takes as resolved.
//! A firing alert has no `endsAt`: Alertmanager then keeps it active for its
//! `resolve_timeout` (default 5m) after the last post, so a group that stays
//! firing longer must be posted again before that ([`crate::GroupState::alert`]
//! gives the alert to re-post); Alertmanager deduplicates the posts.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use reqwest::header::HeaderMap;
use reqwest::{Client, Url};
use serde::Serialize;

use super::{SinkError, http};
use crate::alert::Alert;

/// The `alertname` label of every Loom alert.
pub const ALERT_NAME: &str = "LoomRunFailed";

const NAME: &str = "alertmanager";

/// An Alertmanager: its alerts endpoint and client.
#[derive(Debug, Clone)]
pub struct AlertmanagerSink {
    endpoint: Url,
    client: Client,
    generator_url: Option<String>,
}

/// One alert of API v2's `postableAlerts`.
#[derive(Serialize)]
struct PostableAlert<'a> {
    labels: BTreeMap<&'static str, &'a str>,
    annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

impl AlertmanagerSink {
    /// A sink for the Alertmanager at base URL `url` (e.g.
    /// `http://alertmanager:9093`, or with its `--web.route-prefix`).
    pub fn new(url: &str) -> Result<AlertmanagerSink, SinkError> {
        let mut endpoint = http::parse_url(NAME, url)?;
        let path = format!("{}/api/v2/alerts", endpoint.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        Ok(AlertmanagerSink {
            client: http::client(NAME, &endpoint)?,
            endpoint,
            generator_url: None,
        })
    }

    /// The same sink, with `generatorURL` set on every alert (a link back to
    /// Loom's dashboard, for instance).
    pub fn with_generator_url(mut self, generator_url: impl Into<String>) -> AlertmanagerSink {
        self.generator_url = Some(generator_url.into());
        self
    }

    /// The alerts endpoint, as errors and logs show it.
    pub fn url(&self) -> String {
        http::shown_url(&self.endpoint)
    }

    /// One POST of `alert`.
    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&[PostableAlert {
            labels: BTreeMap::from([
                ("alertname", ALERT_NAME),
                ("worker", alert.key.worker.as_str()),
                ("reason", alert.key.reason.as_str()),
                ("severity", alert.severity.as_str()),
            ]),
            annotations: BTreeMap::from([
                ("summary", alert.summary.clone()),
                ("description", alert.description.clone()),
                ("run_id", alert.run_id.hyphenated().to_string()),
            ]),
            starts_at: alert.starts_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            ends_at: alert
                .ends_at
                .map(|ends_at| ends_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            generator_url: self.generator_url.as_deref(),
        }])
        .map_err(|error| SinkError::Encode {
            sink: NAME,
            url: self.url(),
            detail: error.to_string(),
        })?;
        http::post_json(&self.client, NAME, &self.endpoint, HeaderMap::new(), body).await
    }
}
