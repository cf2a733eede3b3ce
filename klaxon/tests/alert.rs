//! The alert model: severities, summaries and descriptions made from dead
//! letters, and the resolved form of an alert.

mod support;

use chrono::TimeDelta;
use loom_klaxon::alert::DESCRIPTION_LIMIT;
use loom_klaxon::{Alert, AlertKey, AlertStatus, Severity};
use loom_protocol::{DeadLetterReason, Outcome};

use support::{dead_letter, t0};

#[test]
fn severity_follows_the_reason() {
    use DeadLetterReason::*;
    let table = [
        (Missed, Severity::Critical),
        (Lost, Severity::Critical),
        (AgentLost, Severity::Critical),
        (EnforcementUnavailable, Severity::Critical),
        (EnforcementViolation, Severity::Critical),
        (Rejected, Severity::Critical),
        (Failed, Severity::Warning),
        (InvalidOutput, Severity::Warning),
        (TimedOut, Severity::Warning),
        (ClarificationNeeded, Severity::Warning),
    ];
    for (reason, severity) in table {
        assert_eq!(Severity::for_reason(reason), severity, "{reason:?}");
        let alert = Alert::firing(&dead_letter("w", reason, t0()), 1, 0, t0());
        assert_eq!(alert.severity, severity, "{reason:?}");
    }
}

#[test]
fn a_firing_alert_is_made_from_its_dead_letter() {
    let letter = dead_letter("staleness-detector", DeadLetterReason::Failed, t0());
    let alert = Alert::firing(&letter, 4, 2, t0() - TimeDelta::hours(1));
    assert_eq!(
        alert.key,
        AlertKey {
            worker: "staleness-detector".to_owned(),
            reason: DeadLetterReason::Failed
        }
    );
    assert_eq!(alert.status, AlertStatus::Firing);
    assert_eq!(
        alert.summary,
        "worker staleness-detector failed: exit 1 after 3 attempts"
    );
    assert_eq!(
        alert.description,
        "run failed on its last attempt (3 of 3)\n\n\
         stderr of attempt 3:\n\
         Traceback (most recent call last):\n  File \"detect.py\", line 12\n\
         ValueError: stale index (attempt 3)"
    );
    assert_eq!(alert.run_id, letter.run_id);
    assert_eq!(alert.starts_at, t0() - TimeDelta::hours(1));
    assert_eq!(alert.ends_at, None);
    assert_eq!(alert.consecutive_failures, 4);
    assert_eq!(alert.suppressed, 2);
    assert_eq!(alert.dead_letter, Some(letter));
}

#[test]
fn summaries_say_how_the_last_attempt_ended() {
    let mut letter = dead_letter("etl", DeadLetterReason::TimedOut, t0());
    let last = letter.attempts.last_mut().expect("attempts");
    last.outcome = Outcome::TimedOut;
    last.exit_code = None;
    assert_eq!(
        Alert::firing(&letter, 1, 0, t0()).summary,
        "worker etl timed out: killed at its timeout after 3 attempts"
    );

    letter.attempts.truncate(1);
    letter.attempts[0].outcome = Outcome::EnforcementUnavailable;
    letter.attempts[0].exit_code = None;
    letter.reason = DeadLetterReason::EnforcementUnavailable;
    assert_eq!(
        Alert::firing(&letter, 1, 0, t0()).summary,
        "worker etl could not load its enforcement bundle: never started after 1 attempt"
    );
}

#[test]
fn a_dead_letter_without_attempts_is_summarised_by_its_description() {
    let mut letter = dead_letter("ghost", DeadLetterReason::Rejected, t0());
    letter.attempts.clear();
    letter.description = "unknown worker \"ghost\": no registry entry\nsecond line".to_owned();
    let alert = Alert::firing(&letter, 1, 0, t0());
    assert_eq!(
        alert.summary,
        "worker ghost had a run rejected: unknown worker \"ghost\": no registry entry"
    );
    assert_eq!(alert.description, letter.description);
    assert_eq!(alert.severity, Severity::Critical);
}

#[test]
fn descriptions_are_bounded_and_keep_the_end_of_stderr() {
    let mut letter = dead_letter("noisy", DeadLetterReason::Failed, t0());
    letter.description = "d".repeat(10_000);
    let last = letter.attempts.last_mut().expect("attempts");
    last.stderr_tail = format!("{}\nfatal: the real error", "é".repeat(10_000));
    let alert = Alert::firing(&letter, 1, 0, t0());
    assert!(
        alert.description.len() <= DESCRIPTION_LIMIT,
        "{} bytes",
        alert.description.len()
    );
    assert!(alert.description.len() > DESCRIPTION_LIMIT - 16);
    assert!(alert.description.starts_with("ddd"));
    assert!(alert.description.contains("stderr of attempt 3:"));
    assert!(alert.description.ends_with("fatal: the real error"));
}

#[test]
fn resolving_keeps_the_alert_and_sets_its_end() {
    let letter = dead_letter("etl", DeadLetterReason::Failed, t0());
    let firing = Alert::firing(&letter, 3, 1, t0());
    let resolved = Alert::resolved(&firing, t0() + TimeDelta::minutes(9));
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.ends_at, Some(t0() + TimeDelta::minutes(9)));
    assert_eq!(
        Alert {
            status: AlertStatus::Firing,
            ends_at: None,
            ..resolved
        },
        firing
    );

    // Alertmanager refuses an end before the start.
    let early = Alert::resolved(&firing, t0() - TimeDelta::minutes(1));
    assert_eq!(early.ends_at, Some(t0()));
}
