//! Grouping, repeat and resolve decisions: pure functions from values to
//! values, so that they are tested with tables and the wiring only persists
//! and delivers what they return.
//!
//! Dead letters are grouped per **(worker, reason)** ([`AlertKey`]). Every
//! dead letter of a group is, in Alertmanager's terms, the same alert (same
//! labels) firing again, so a group behaves like one Alertmanager alert
//! routed with `send_resolved: true`:
//!
//! - **`alert_after`** (the worker's setting) plays the part of a `for:`
//!   clause: while the worker's consecutive failed runs are fewer than
//!   `alert_after`, a dead letter notifies nothing and creates no group
//!   ([`on_dead_letter`] returns the state it was given). The first dead
//!   letter at or past the threshold notifies at once and starts the group;
//!   its alert's `starts_at` is that dead letter's time.
//! - **`repeat_interval`** (`klaxon.repeat_interval`, default 4h) is
//!   Alertmanager's `repeat_interval`: a group that keeps failing is not
//!   sent again until `repeat_interval` has passed since its last
//!   notification. Dead letters that arrive sooner are counted in
//!   [`GroupState::suppressed`] and send nothing. The first dead letter at
//!   or past `last_notified + repeat_interval` notifies again, carrying the
//!   suppressed count (the dead letters it stands for besides itself), and
//!   the count starts again from zero. A single Klaxon notifies per dead
//!   letter, so there is no separate `group_wait`/`group_interval`: a group
//!   holds one alert, and nothing new can join it between notifications.
//! - **Recovery** (a valid run of the worker) resolves every group of the
//!   worker: [`on_recovery`] returns a resolved alert, with the recovery
//!   time as `ends_at`, only for a group that has notified; a group that
//!   never did resolves silently, as Alertmanager sends no resolved
//!   notification for an alert it never sent. Either way the wiring then
//!   deletes the group's state.
//!
//! The wiring counts `consecutive_failures` per worker (it resets on a
//! valid run), keeps one [`GroupState`] per key (JSON in a KV bucket), and
//! passes `now` in: nothing here reads a clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use loom_protocol::DeadLetter;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::alert::{Alert, AlertKey, AlertStatus, Severity};

/// What Klaxon remembers about one group between dead letters; persisted as
/// JSON, so its field names are a storage format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group: worker and reason.
    pub key: AlertKey,
    /// When the group started firing (its alerts' `starts_at`).
    pub firing_since: DateTime<Utc>,
    /// When the group last notified. [`on_dead_letter`] always sets it; a
    /// state whose notification is not sent yet can carry `None`, and then
    /// the next qualifying dead letter notifies and a recovery is silent.
    pub last_notified: Option<DateTime<Utc>>,
    /// Dead letters grouped since the last notification without one of
    /// their own.
    pub suppressed: u32,
    /// The run of the group's latest dead letter.
    pub run_id: Uuid,
    /// The worker's consecutive failed runs at the latest dead letter.
    pub consecutive_failures: u32,
    /// Notifications sent for the group (firing ones).
    pub notifications: u32,
    /// The summary of the latest dead letter, for the resolved alert.
    pub summary: String,
    /// The description of the latest dead letter, for the resolved alert.
    pub description: String,
}

impl GroupState {
    /// The firing alert this group stands for now, without its dead letter
    /// (the state does not keep it). Useful to re-post active groups to
    /// Alertmanager before its `resolve_timeout` ends them.
    pub fn alert(&self) -> Alert {
        Alert {
            key: self.key.clone(),
            status: AlertStatus::Firing,
            severity: Severity::for_reason(self.key.reason),
            summary: self.summary.clone(),
            description: self.description.clone(),
            run_id: self.run_id,
            starts_at: self.firing_since,
            ends_at: None,
            consecutive_failures: self.consecutive_failures,
            suppressed: self.suppressed,
            dead_letter: None,
        }
    }
}

/// Decides what a dead letter does to its group: the new state (to persist;
/// `None` means there is still no group) and the alert to send, if any. See
/// the module doc for the rules. `state` must be the group of
/// `dead_letter` (same worker and reason); `alert_after` 0 counts as 1.
pub fn on_dead_letter(
    state: Option<GroupState>,
    dead_letter: &DeadLetter,
    consecutive_failures: u32,
    alert_after: u32,
    repeat_interval: Duration,
    now: DateTime<Utc>,
) -> (Option<GroupState>, Option<Alert>) {
    if consecutive_failures < alert_after {
        return (state, None);
    }
    // A repeat interval too long for chrono never elapses.
    let repeat_interval = TimeDelta::from_std(repeat_interval).unwrap_or(TimeDelta::MAX);
    let firing_since = match &state {
        Some(state) => state.firing_since,
        // A dead letter stamped later than our clock (skew between hosts)
        // must not start an alert in the future.
        None => dead_letter.dead_at.min(now),
    };
    let (suppressed, notifications) = match &state {
        None => (0, 0),
        Some(state) => (state.suppressed, state.notifications),
    };
    let due = match state.as_ref().and_then(|state| state.last_notified) {
        None => true,
        Some(last_notified) => now.signed_duration_since(last_notified) >= repeat_interval,
    };
    let alert = Alert::firing(dead_letter, consecutive_failures, suppressed, firing_since);
    let mut next = GroupState {
        key: alert.key.clone(),
        firing_since,
        last_notified: state.as_ref().and_then(|state| state.last_notified),
        suppressed,
        run_id: dead_letter.run_id,
        consecutive_failures,
        notifications,
        summary: alert.summary.clone(),
        description: alert.description.clone(),
    };
    if due {
        next.last_notified = Some(now);
        next.suppressed = 0;
        next.notifications = notifications.saturating_add(1);
        (Some(next), Some(alert))
    } else {
        next.suppressed = suppressed.saturating_add(1);
        (Some(next), None)
    }
}

/// Decides what a recovery of the worker does to one of its groups: a
/// resolved alert, ended `now`, if the group ever notified; nothing if it
/// did not (or there is no group). The wiring deletes the state either way.
pub fn on_recovery(state: Option<GroupState>, now: DateTime<Utc>) -> Option<Alert> {
    let state = state?;
    state.last_notified?;
    Some(Alert::resolved(&state.alert(), now))
}
