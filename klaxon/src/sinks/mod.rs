//! Where alerts go: the log, a webhook, an Alertmanager.
//!
//! [`build`] turns a configured [`loom_config::Sink`] into a [`SinkKind`];
//! [`SinkKind::deliver`] tries once, [`SinkKind::deliver_with_retries`]
//! retries transient failures with exponential backoff ([`RetryPolicy`])
//! until it succeeds, gives up, or is cancelled. A sink only delivers: which
//! alerts to send is [`crate::group`]'s decision, and counting them in
//! `loom_klaxon_alerts_sent_total{sink}` (label [`SinkKind::name`]) is the
//! wiring's.

mod alertmanager;
mod error;
mod http;
mod log;
mod retry;
mod webhook;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::alert::Alert;

pub use alertmanager::{ALERT_NAME, AlertmanagerSink};
pub use error::SinkError;
pub use retry::RetryPolicy;
pub use webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSink};

/// One configured sink, ready to deliver.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// A structured `tracing` event per alert.
    Log,
    /// A JSON POST, signed when a secret is set.
    Webhook(WebhookSink),
    /// Alertmanager's API v2.
    Alertmanager(AlertmanagerSink),
}

/// Builds the sink `sink` configures: parses its URL and sets up its HTTP
/// client. Fails on a URL that is not http(s) or an empty webhook secret.
pub fn build(sink: &loom_config::Sink) -> Result<SinkKind, SinkError> {
    Ok(match sink {
        loom_config::Sink::Log => SinkKind::Log,
        loom_config::Sink::Webhook { url, secret } => {
            SinkKind::Webhook(WebhookSink::new(url, secret.as_deref())?)
        }
        loom_config::Sink::Alertmanager { url } => {
            SinkKind::Alertmanager(AlertmanagerSink::new(url)?)
        }
    })
}

impl SinkKind {
    /// `log`, `webhook` or `alertmanager`: the `sink` label of
    /// `loom_klaxon_alerts_sent_total`.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Log => "log",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Alertmanager(_) => "alertmanager",
        }
    }

    /// Where the sink delivers, as logs and errors show it.
    pub fn target(&self) -> String {
        match self {
            SinkKind::Log => "the log".to_owned(),
            SinkKind::Webhook(sink) => sink.url(),
            SinkKind::Alertmanager(sink) => sink.url(),
        }
    }

    /// Delivers `alert` with one attempt. A webhook delivery gets a fresh
    /// `X-Loom-Delivery` id.
    pub async fn deliver(&self, alert: &Alert) -> Result<(), SinkError> {
        self.attempt(alert, Uuid::now_v7()).await
    }

    /// Delivers `alert`, retrying transient failures (connection refused,
    /// timeouts, 5xx, 429) by `policy`, and returns the attempts it took.
    /// Other failures (4xx, a bad URL) end it at once. Every failed attempt
    /// is logged. Every attempt carries the same `X-Loom-Delivery` id.
    /// Cancelling `cancel` stops it at once, waiting or in flight, with
    /// [`SinkError::Cancelled`]; the last error is returned when the attempts
    /// run out.
    pub async fn deliver_with_retries(
        &self,
        alert: &Alert,
        policy: RetryPolicy,
        cancel: &CancellationToken,
    ) -> Result<u32, SinkError> {
        let delivery = Uuid::now_v7();
        let max_attempts = policy.attempts();
        let mut attempt = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(self.cancelled(attempt));
            }
            attempt += 1;
            let result = tokio::select! {
                biased;
                // An attempt cut short by cancellation counts as started.
                () = cancel.cancelled() => return Err(self.cancelled(attempt)),
                result = self.attempt(alert, delivery) => result,
            };
            let error = match result {
                Ok(()) => return Ok(attempt),
                Err(error) => error,
            };
            if !error.is_transient() || attempt >= max_attempts {
                tracing::error!(
                    sink = self.name(),
                    worker = alert.key.worker.as_str(),
                    reason = alert.key.reason.as_str(),
                    run_id = %alert.run_id,
                    %delivery,
                    attempt,
                    transient = error.is_transient(),
                    error = %error,
                    "alert delivery failed, giving up"
                );
                return Err(error);
            }
            let delay = policy
                .delay(attempt)
                .max(error.retry_after().unwrap_or_default().min(policy.max));
            tracing::warn!(
                sink = self.name(),
                worker = alert.key.worker.as_str(),
                reason = alert.key.reason.as_str(),
                run_id = %alert.run_id,
                %delivery,
                attempt,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "alert delivery failed, retrying"
            );
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(self.cancelled(attempt)),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn cancelled(&self, attempts: u32) -> SinkError {
        SinkError::Cancelled {
            sink: self.name(),
            url: self.target(),
            attempts,
        }
    }

    async fn attempt(&self, alert: &Alert, delivery: Uuid) -> Result<(), SinkError> {
        match self {
            SinkKind::Log => {
                log::deliver(alert);
                Ok(())
            }
            SinkKind::Webhook(sink) => sink.deliver(alert, delivery).await,
            SinkKind::Alertmanager(sink) => sink.deliver(alert).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_configured_sink_builds_with_its_metric_name() {
        let table = [
            (loom_config::Sink::Log, "log", "the log"),
            (
                loom_config::Sink::Webhook {
                    url: "https://hooks.example.com/loom?token=abc".to_owned(),
                    secret: Some("s3cret".to_owned()),
                },
                "webhook",
                "https://hooks.example.com/loom",
            ),
            (
                loom_config::Sink::Alertmanager {
                    url: "http://alertmanager:9093/".to_owned(),
                },
                "alertmanager",
                "http://alertmanager:9093/api/v2/alerts",
            ),
            (
                loom_config::Sink::Alertmanager {
                    url: "http://example.com/am".to_owned(),
                },
                "alertmanager",
                "http://example.com/am/api/v2/alerts",
            ),
        ];
        for (config, name, target) in table {
            let sink = build(&config).unwrap();
            assert_eq!(sink.name(), name);
            assert_eq!(sink.target(), target);
        }
    }

    #[test]
    fn a_bad_url_names_the_sink_and_the_url() {
        let error = build(&loom_config::Sink::Alertmanager {
            url: "alertmanager:9093".to_owned(),
        })
        .unwrap_err();
        assert!(matches!(error, SinkError::InvalidUrl { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert!(
            error
                .to_string()
                .starts_with("alertmanager sink: url \"alertmanager:9093\" is not a usable"),
            "{error}"
        );
    }
}
