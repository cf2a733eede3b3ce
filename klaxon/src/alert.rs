//! The alert model: what Klaxon tells people about a dead letter.
//!
//! An [`Alert`] is one notification, firing or resolved, for one group
//! ([`AlertKey`]: a worker and the reason its runs die). It is built from a
//! [`DeadLetter`] by [`Alert::firing`] and closed by [`Alert::resolved`]; the
//! sinks render it (log event, webhook JSON, Alertmanager labels and
//! annotations). This module only shapes words and fields: whether a dead
//! letter notifies at all is [`crate::group`]'s decision, and what failed was
//! the validator's.

use chrono::{DateTime, Utc};
use loom_protocol::{AttemptSummary, DeadLetter, DeadLetterReason, Outcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most bytes an alert's description holds: the dead letter's own
/// description first, then the end of the last attempt's stderr. Chat tools
/// and pagers truncate long texts anyway, and Alertmanager templates are
/// easier to read with a bounded annotation.
pub const DESCRIPTION_LIMIT: usize = 2048;

/// The most bytes of the dead letter's description kept in an alert's
/// description, so that some of the stderr tail always fits.
const DEAD_LETTER_DESCRIPTION_LIMIT: usize = 1024;

/// The most bytes of the dead letter's description repeated in a summary of
/// a run that has no attempts (a rejected message, a missed fire).
const SUMMARY_DETAIL_LIMIT: usize = 200;

/// What alerts are grouped by: one worker and one dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    /// The worker whose runs die (the subject token, known worker or not).
    pub worker: String,
    /// Why they die.
    pub reason: DeadLetterReason,
}

impl AlertKey {
    /// The group a dead letter belongs to.
    pub fn of(dead_letter: &DeadLetter) -> AlertKey {
        AlertKey {
            worker: dead_letter.worker.clone(),
            reason: dead_letter.reason,
        }
    }
}

/// Whether an alert reports a problem or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The worker's runs are dying.
    Firing,
    /// The worker has recovered (a valid run since).
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`, as the webhook body and logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// How urgent an alert is, from its dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The worker ran and failed: its own code or data is at fault, and the
    /// next scheduled run may well succeed.
    Warning,
    /// The mesh itself is failing the worker (runs missed, lost, rejected,
    /// agents dying, enforcement broken): nothing will get better alone.
    Critical,
}

impl Severity {
    /// The severity of alerts for dead letters with `reason`.
    pub fn for_reason(reason: DeadLetterReason) -> Severity {
        match reason {
            DeadLetterReason::Missed
            | DeadLetterReason::Lost
            | DeadLetterReason::AgentLost
            | DeadLetterReason::EnforcementUnavailable
            | DeadLetterReason::EnforcementViolation
            | DeadLetterReason::Rejected => Severity::Critical,
            DeadLetterReason::Failed
            | DeadLetterReason::InvalidOutput
            | DeadLetterReason::TimedOut
            | DeadLetterReason::ClarificationNeeded => Severity::Warning,
        }
    }

    /// `warning` or `critical`, the usual values of Alertmanager's
    /// `severity` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One notification about a group of dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The group: worker and reason.
    pub key: AlertKey,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// From the reason, see [`Severity::for_reason`].
    pub severity: Severity,
    /// One line, e.g. `worker staleness-detector failed: exit 1 after 3 attempts`.
    pub summary: String,
    /// The dead letter's description and the end of the last attempt's
    /// stderr, at most [`DESCRIPTION_LIMIT`] bytes.
    pub description: String,
    /// The run of the latest dead letter of the group.
    pub run_id: Uuid,
    /// When the group started firing.
    pub starts_at: DateTime<Utc>,
    /// When the group resolved; `None` while firing.
    pub ends_at: Option<DateTime<Utc>>,
    /// The worker's consecutive failed runs when the alert was made.
    pub consecutive_failures: u32,
    /// Dead letters grouped into this alert since the last notification,
    /// which therefore sent nothing of their own.
    pub suppressed: u32,
    /// The dead letter that triggered this notification, when there is one
    /// (a resolved alert made from persisted group state has none).
    pub dead_letter: Option<DeadLetter>,
}

impl Alert {
    /// A firing alert for `dead_letter`: summary and description are made
    /// from it, the severity from its reason.
    pub fn firing(
        dead_letter: &DeadLetter,
        consecutive_failures: u32,
        suppressed: u32,
        starts_at: DateTime<Utc>,
    ) -> Alert {
        Alert {
            key: AlertKey::of(dead_letter),
            status: AlertStatus::Firing,
            severity: Severity::for_reason(dead_letter.reason),
            summary: summary(dead_letter),
            description: description(dead_letter),
            run_id: dead_letter.run_id,
            starts_at,
            ends_at: None,
            consecutive_failures,
            suppressed,
            dead_letter: Some(dead_letter.clone()),
        }
    }

    /// The resolved form of `previous`, ended `at` (never before it
    /// started: Alertmanager refuses an end before the start). Labels,
    /// summary and description stay those of the firing alert, as
    /// Alertmanager's resolved notifications do.
    pub fn resolved(previous: &Alert, at: DateTime<Utc>) -> Alert {
        Alert {
            status: AlertStatus::Resolved,
            ends_at: Some(at.max(previous.starts_at)),
            ..previous.clone()
        }
    }
}

/// `worker <name> <what happened>: <how the last attempt ended> after <n> attempts`.
fn summary(dead_letter: &DeadLetter) -> String {
    let mut summary = format!(
        "worker {} {}",
        dead_letter.worker,
        what_happened(dead_letter.reason)
    );
    match dead_letter.attempts.last() {
        Some(last) => {
            let n_attempts = dead_letter.attempts.len();
            let plural = if n_attempts == 1 { "" } else { "s" };
            summary.push_str(&format!(
                ": {} after {n_attempts} attempt{plural}",
                how_it_ended(last)
            ));
        }
        None => {
            // No attempt ran (a rejected message, a missed fire): the dead
            // letter's own words are the only detail there is.
            let first_line = dead_letter.description.lines().next().unwrap_or("").trim();
            if !first_line.is_empty() {
                summary.push_str(": ");
                summary.push_str(&bounded_start(first_line, SUMMARY_DETAIL_LIMIT));
            }
        }
    }
    summary
}

fn what_happened(reason: DeadLetterReason) -> &'static str {
    match reason {
        DeadLetterReason::Failed => "failed",
        DeadLetterReason::InvalidOutput => "produced invalid output",
        DeadLetterReason::TimedOut => "timed out",
        DeadLetterReason::EnforcementUnavailable => "could not load its enforcement bundle",
        DeadLetterReason::EnforcementViolation => "ran with the wrong enforcement bundle",
        DeadLetterReason::AgentLost => "lost its agents",
        DeadLetterReason::Lost => "got no result by its deadline",
        DeadLetterReason::Missed => "missed a scheduled run",
        DeadLetterReason::Rejected => "had a run rejected",
        DeadLetterReason::ClarificationNeeded => "needs an answer from a person",
    }
}

fn how_it_ended(attempt: &AttemptSummary) -> String {
    if let Some(code) = attempt.exit_code {
        return format!("exit {code}");
    }
    match attempt.outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "no exit status",
        Outcome::TimedOut => "killed at its timeout",
        Outcome::Cancelled => "cancelled",
        Outcome::EnforcementUnavailable => "never started",
    }
    .to_owned()
}

/// The dead letter's description, then the end of the last attempt's stderr.
fn description(dead_letter: &DeadLetter) -> String {
    let mut description = bounded_start(
        dead_letter.description.trim_end(),
        DEAD_LETTER_DESCRIPTION_LIMIT,
    );
    let Some(last) = dead_letter.attempts.last() else {
        return description;
    };
    let stderr = last.stderr_tail.trim_end();
    if stderr.is_empty() {
        return description;
    }
    let heading = format!("\n\nstderr of attempt {}:\n", last.attempt);
    let room = DESCRIPTION_LIMIT.saturating_sub(description.len() + heading.len());
    if room > ELLIPSIS.len() {
        description.push_str(&heading);
        description.push_str(&bounded_end(stderr, room));
    }
    description
}

const ELLIPSIS: &str = "…";

/// `text`, or its first bytes and an ellipsis, in at most `limit` bytes.
fn bounded_start(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

/// `text`, or an ellipsis and its last bytes, in at most `limit` bytes: the
/// end of stderr is where the error usually is.
fn bounded_end(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut start = text.len() - limit.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{ELLIPSIS}{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cut_on_character_boundaries() {
        let text = "é".repeat(100); // 200 bytes
        let start = bounded_start(&text, 51);
        assert!(start.len() <= 51, "{}", start.len());
        assert!(start.ends_with(ELLIPSIS));
        let end = bounded_end(&text, 51);
        assert!(end.len() <= 51, "{}", end.len());
        assert!(end.starts_with(ELLIPSIS));
        assert_eq!(bounded_start("short", 51), "short");
        assert_eq!(bounded_end("short", 51), "short");
    }
}
