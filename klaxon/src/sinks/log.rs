//! The log sink: one structured `tracing` event per notification, `warn`
//! when firing and `info` when resolved, with the fields `worker`, `reason`,
//! `severity`, `run_id`, `summary`, `consecutive_failures` and `suppressed`.
//! It cannot fail; where the event goes is the subscriber's business (the
//! binary installs it).

use crate::alert::{Alert, AlertStatus};

/// Writes `alert` as one event.
pub(crate) fn deliver(alert: &Alert) {
    let worker = alert.key.worker.as_str();
    let reason = alert.key.reason.as_str();
    let severity = alert.severity.as_str();
    match alert.status {
        AlertStatus::Firing => tracing::warn!(
            worker,
            reason,
            severity,
            run_id = %alert.run_id,
            summary = alert.summary.as_str(),
            consecutive_failures = alert.consecutive_failures,
            suppressed = alert.suppressed,
            "alert firing"
        ),
        AlertStatus::Resolved => tracing::info!(
            worker,
            reason,
            severity,
            run_id = %alert.run_id,
            summary = alert.summary.as_str(),
            consecutive_failures = alert.consecutive_failures,
            suppressed = alert.suppressed,
            "alert resolved"
        ),
    }
}
