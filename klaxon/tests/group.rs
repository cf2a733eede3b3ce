//! The grouping, repeat and resolve decisions, table by table: each case is
//! a sequence of dead letters and recoveries with what each must do.

mod support;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use loom_klaxon::group::{GroupState, on_dead_letter, on_recovery};
use loom_klaxon::{AlertKey, AlertStatus, Severity};
use loom_protocol::DeadLetterReason;
use uuid::Uuid;

use support::{dead_letter, t0};

/// One thing that happens to a group, `at` minutes after [`t0`].
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A dead letter while the worker has `failures` consecutive failures.
    Dead { at: i64, failures: u32 },
    /// A valid run of the worker.
    Recovery { at: i64 },
}

/// What the step must return.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// No alert, and no group state.
    NoGroup,
    /// A firing alert carrying this suppressed count.
    Fires { suppressed: u32 },
    /// No alert; the group now counts this many suppressed dead letters.
    Suppressed { total: u32 },
    /// A resolved alert carrying this suppressed count.
    Resolves { suppressed: u32 },
    /// A recovery that sends nothing.
    Silent,
}

struct Case {
    name: &'static str,
    alert_after: u32,
    repeat_minutes: u64,
    steps: &'static [(Step, Expect)],
}

fn minutes(n: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(n)
}

fn run(case: &Case) {
    let mut state: Option<GroupState> = None;
    let mut firing_since: Option<DateTime<Utc>> = None;
    let repeat_interval = Duration::from_secs(case.repeat_minutes * 60);
    for (index, &(step, expect)) in case.steps.iter().enumerate() {
        let context = format!("{}: step {index} {step:?}", case.name);
        match step {
            Step::Dead { at, failures } => {
                let letter =
                    dead_letter("staleness-detector", DeadLetterReason::Failed, minutes(at));
                let (next, alert) = on_dead_letter(
                    state.clone(),
                    &letter,
                    failures,
                    case.alert_after,
                    repeat_interval,
                    minutes(at),
                );
                match expect {
                    Expect::NoGroup => {
                        assert_eq!(alert, None, "{context}");
                        assert_eq!(next, state, "{context}: state must be unchanged");
                        assert_eq!(next, None, "{context}");
                    }
                    Expect::Fires { suppressed } => {
                        let alert = alert.unwrap_or_else(|| panic!("{context}: no alert"));
                        let since = *firing_since.get_or_insert(minutes(at));
                        assert_eq!(alert.status, AlertStatus::Firing, "{context}");
                        assert_eq!(alert.suppressed, suppressed, "{context}");
                        assert_eq!(alert.starts_at, since, "{context}");
                        assert_eq!(alert.ends_at, None, "{context}");
                        assert_eq!(alert.run_id, letter.run_id, "{context}");
                        assert_eq!(alert.consecutive_failures, failures, "{context}");
                        assert_eq!(alert.dead_letter.as_ref(), Some(&letter), "{context}");
                        let next = next
                            .as_ref()
                            .unwrap_or_else(|| panic!("{context}: no state"));
                        assert_eq!(next.suppressed, 0, "{context}: suppressed resets");
                        assert_eq!(next.last_notified, Some(minutes(at)), "{context}");
                        assert_eq!(next.firing_since, since, "{context}");
                    }
                    Expect::Suppressed { total } => {
                        assert_eq!(alert, None, "{context}");
                        let next = next
                            .as_ref()
                            .unwrap_or_else(|| panic!("{context}: no state"));
                        assert_eq!(next.suppressed, total, "{context}");
                        assert_eq!(next.run_id, letter.run_id, "{context}: latest run");
                        assert_eq!(
                            next.last_notified,
                            state.as_ref().and_then(|state| state.last_notified),
                            "{context}: a suppressed dead letter is not a notification"
                        );
                    }
                    Expect::Resolves { .. } | Expect::Silent => {
                        panic!("{context}: a dead letter never resolves")
                    }
                }
                state = next;
            }
            Step::Recovery { at } => {
                let alert = on_recovery(state.take(), minutes(at));
                match expect {
                    Expect::Resolves { suppressed } => {
                        let alert = alert.unwrap_or_else(|| panic!("{context}: no alert"));
                        assert_eq!(alert.status, AlertStatus::Resolved, "{context}");
                        assert_eq!(alert.ends_at, Some(minutes(at)), "{context}");
                        assert_eq!(Some(alert.starts_at), firing_since, "{context}");
                        assert_eq!(alert.suppressed, suppressed, "{context}");
                        assert_eq!(alert.dead_letter, None, "{context}");
                    }
                    Expect::Silent => assert_eq!(alert, None, "{context}"),
                    _ => panic!("{context}: a recovery only resolves or stays silent"),
                }
                // The wiring deletes the group: the next failure starts anew.
                firing_since = None;
            }
        }
    }
}

use Expect::*;
use Step::*;

#[test]
fn alert_after_1_notifies_on_the_first_dead_letter() {
    run(&Case {
        name: "alert_after 1",
        alert_after: 1,
        repeat_minutes: 60,
        steps: &[
            (Dead { at: 0, failures: 1 }, Fires { suppressed: 0 }),
            (Dead { at: 5, failures: 2 }, Suppressed { total: 1 }),
        ],
    });
}

#[test]
fn alert_after_3_waits_for_the_third_consecutive_failure() {
    run(&Case {
        name: "alert_after 3",
        alert_after: 3,
        repeat_minutes: 60,
        steps: &[
            (Dead { at: 0, failures: 1 }, NoGroup),
            (
                Dead {
                    at: 10,
                    failures: 2,
                },
                NoGroup,
            ),
            (
                Dead {
                    at: 20,
                    failures: 3,
                },
                Fires { suppressed: 0 },
            ),
            (
                Dead {
                    at: 30,
                    failures: 4,
                },
                Suppressed { total: 1 },
            ),
        ],
    });
}

#[test]
fn alert_after_0_counts_as_1() {
    run(&Case {
        name: "alert_after 0",
        alert_after: 0,
        repeat_minutes: 60,
        steps: &[(Dead { at: 0, failures: 1 }, Fires { suppressed: 0 })],
    });
}

#[test]
fn dead_letters_within_the_repeat_interval_are_counted_then_carried() {
    run(&Case {
        name: "repeat interval",
        alert_after: 1,
        repeat_minutes: 60,
        steps: &[
            (Dead { at: 0, failures: 1 }, Fires { suppressed: 0 }),
            (
                Dead {
                    at: 10,
                    failures: 2,
                },
                Suppressed { total: 1 },
            ),
            (
                Dead {
                    at: 20,
                    failures: 3,
                },
                Suppressed { total: 2 },
            ),
            (
                Dead {
                    at: 59,
                    failures: 4,
                },
                Suppressed { total: 3 },
            ),
            // Exactly one interval after the last notification: due.
            (
                Dead {
                    at: 60,
                    failures: 5,
                },
                Fires { suppressed: 3 },
            ),
            (
                Dead {
                    at: 61,
                    failures: 6,
                },
                Suppressed { total: 1 },
            ),
            // The interval counts from the last notification, not the start.
            (
                Dead {
                    at: 119,
                    failures: 7,
                },
                Suppressed { total: 2 },
            ),
            (
                Dead {
                    at: 130,
                    failures: 8,
                },
                Fires { suppressed: 2 },
            ),
            // A long silence, then one dead letter: due at once, none carried.
            (
                Dead {
                    at: 600,
                    failures: 9,
                },
                Fires { suppressed: 0 },
            ),
        ],
    });
}

#[test]
fn a_zero_repeat_interval_notifies_every_dead_letter() {
    run(&Case {
        name: "repeat 0",
        alert_after: 1,
        repeat_minutes: 0,
        steps: &[
            (Dead { at: 0, failures: 1 }, Fires { suppressed: 0 }),
            (Dead { at: 0, failures: 2 }, Fires { suppressed: 0 }),
            (Dead { at: 1, failures: 3 }, Fires { suppressed: 0 }),
        ],
    });
}

#[test]
fn a_clock_that_steps_back_suppresses_instead_of_repeating() {
    run(&Case {
        name: "clock back",
        alert_after: 1,
        repeat_minutes: 60,
        steps: &[
            (
                Dead {
                    at: 100,
                    failures: 1,
                },
                Fires { suppressed: 0 },
            ),
            (
                Dead {
                    at: 30,
                    failures: 2,
                },
                Suppressed { total: 1 },
            ),
        ],
    });
}

#[test]
fn recovery_resolves_only_groups_that_notified() {
    run(&Case {
        name: "recovery after a notification",
        alert_after: 1,
        repeat_minutes: 60,
        steps: &[
            (Dead { at: 0, failures: 1 }, Fires { suppressed: 0 }),
            (Dead { at: 5, failures: 2 }, Suppressed { total: 1 }),
            (Recovery { at: 30 }, Resolves { suppressed: 1 }),
            // A new failure after recovery is a new group, notified at once.
            (
                Dead {
                    at: 31,
                    failures: 1,
                },
                Fires { suppressed: 0 },
            ),
            (Recovery { at: 40 }, Resolves { suppressed: 0 }),
        ],
    });
    run(&Case {
        name: "recovery below alert_after",
        alert_after: 3,
        repeat_minutes: 60,
        steps: &[
            (Dead { at: 0, failures: 1 }, NoGroup),
            (Dead { at: 5, failures: 2 }, NoGroup),
            (Recovery { at: 30 }, Silent),
            // The count starts again: two more failures are still below 3.
            (
                Dead {
                    at: 40,
                    failures: 1,
                },
                NoGroup,
            ),
        ],
    });
    run(&Case {
        name: "recovery of nothing",
        alert_after: 1,
        repeat_minutes: 60,
        steps: &[(Recovery { at: 0 }, Silent)],
    });
}

#[test]
fn a_group_not_yet_notified_notifies_on_its_next_dead_letter_and_recovers_silently() {
    let letter = dead_letter("indexer", DeadLetterReason::Lost, t0());
    let pending = GroupState {
        key: AlertKey::of(&letter),
        firing_since: t0(),
        last_notified: None,
        suppressed: 2,
        run_id: letter.run_id,
        consecutive_failures: 3,
        notifications: 0,
        summary: "worker indexer got no result by its deadline".to_owned(),
        description: String::new(),
    };
    assert_eq!(on_recovery(Some(pending.clone()), minutes(1)), None);

    let later = dead_letter("indexer", DeadLetterReason::Lost, minutes(1));
    let (state, alert) = on_dead_letter(
        Some(pending),
        &later,
        4,
        3,
        Duration::from_secs(3600),
        minutes(1),
    );
    let alert = alert.expect("a pending group notifies");
    assert_eq!(alert.suppressed, 2);
    assert_eq!(alert.starts_at, t0());
    assert_eq!(alert.severity, Severity::Critical);
    let state = state.expect("state");
    assert_eq!(state.last_notified, Some(minutes(1)));
    assert_eq!(state.notifications, 1);
}

#[test]
fn a_dead_letter_stamped_in_the_future_starts_its_group_now() {
    let letter = dead_letter("indexer", DeadLetterReason::Failed, minutes(5));
    let (state, alert) = on_dead_letter(None, &letter, 1, 1, Duration::from_secs(60), t0());
    assert_eq!(alert.expect("alert").starts_at, t0());
    assert_eq!(state.expect("state").firing_since, t0());
}

#[test]
fn the_resolved_alert_keeps_the_group_identity() {
    let letter = dead_letter("indexer", DeadLetterReason::TimedOut, t0());
    let (state, firing) = on_dead_letter(None, &letter, 2, 1, Duration::from_secs(60), t0());
    let firing = firing.expect("firing");
    let resolved = on_recovery(state, minutes(3)).expect("resolved");
    assert_eq!(resolved.key, firing.key);
    assert_eq!(resolved.severity, firing.severity);
    assert_eq!(resolved.summary, firing.summary);
    assert_eq!(resolved.run_id, firing.run_id);
    assert_eq!(resolved.starts_at, firing.starts_at);
    assert_eq!(resolved.consecutive_failures, 2);
}

#[test]
fn group_state_round_trips_through_json_with_stable_field_names() {
    let letter = dead_letter("staleness-detector", DeadLetterReason::AgentLost, t0());
    let (state, _) = on_dead_letter(None, &letter, 1, 1, Duration::from_secs(60), t0());
    let mut state = state.expect("state");
    state.suppressed = 7;
    let json = serde_json::to_string(&state).expect("encode");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["key"]["worker"], "staleness-detector");
    assert_eq!(value["key"]["reason"], "agent_lost");
    assert_eq!(value["firing_since"], "2025-01-05T10:00:00Z");
    assert_eq!(value["last_notified"], "2025-01-05T10:00:00Z");
    assert_eq!(value["suppressed"], 7);
    assert_eq!(value["run_id"], letter.run_id.to_string());
    let back: GroupState = serde_json::from_str(&json).expect("decode");
    assert_eq!(back, state);

    let never_notified = GroupState {
        last_notified: None,
        run_id: Uuid::nil(),
        ..state
    };
    let json = serde_json::to_string(&never_notified).expect("encode");
    assert!(json.contains("\"last_notified\":null"), "{json}");
    assert_eq!(
        serde_json::from_str::<GroupState>(&json).expect("decode"),
        never_notified
    );
}
