//! Decisions, as pure functions from values to values: what a new leader
//! does with the fires it finds overdue (catch-up), and what a fire does
//! while a run of its worker is in flight (overlap).

use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_broker::WorkerLoad;
use loom_config::schedule::{Occurrence, OccurrenceKind};
use loom_config::{CatchUp, Overlap, Schedule};
use loom_protocol::SkipReason;

/// At most this many missed fires are listed one by one (each gets a dead
/// letter and a ledger entry); the rest of a long outage is summarised.
pub const MISSED_LISTED: usize = 10;

/// Counting missed fires stops here (a worker firing every second, down
/// for weeks); the summary then says "at least".
pub const MISSED_COUNT_CAP: u64 = 1_000_000;

/// Fires that were missed: past their starting deadline when a leader could
/// publish them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missed {
    /// The most recent missed fires, oldest first, at most [`MISSED_LISTED`].
    pub listed: Vec<DateTime<Utc>>,
    /// Missed fires older than the listed ones, summarised: (first, last, count).
    pub summarised: Option<(DateTime<Utc>, DateTime<Utc>, u64)>,
    /// Whether counting stopped at [`MISSED_COUNT_CAP`].
    pub capped: bool,
}

impl Missed {
    /// How many fires were missed (at least, when capped).
    pub fn count(&self) -> u64 {
        self.listed.len() as u64 + self.summarised.map_or(0, |(_, _, n)| n)
    }
}

/// A fire within the starting deadline that does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRun {
    /// Its instant.
    pub instant: DateTime<Utc>,
    /// Why it does not run.
    pub reason: SkipReason,
    /// The local time it stands for, in the schedule's zone.
    pub local: chrono::NaiveDateTime,
}

/// What a new leader does with the fires since the last one handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpPlan {
    /// Fires to publish now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Fires within the starting deadline that do not run, with why.
    pub not_run: Vec<NotRun>,
    /// Fires past their starting deadline.
    pub missed: Missed,
}

/// Plans the fires of `schedule` after `last` up to `now`.
///
/// Fires late by at most `grace` (a leader failover) run whatever the
/// policy: a failover must not change what runs. Older fires within the
/// worker's `starting_deadline` follow its catch-up policy (`all` runs them,
/// `last` runs the most recent, `none` records them as missed). Fires past
/// the starting deadline are missed. Local times skipped by the DST rule are
/// recorded as not run.
pub fn plan_catch_up(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUp,
    starting_deadline: Duration,
    grace: Duration,
) -> CatchUpPlan {
    let mut plan = CatchUpPlan::default();
    let deadline_start = now - to_chrono(starting_deadline);
    let grace_start = now - to_chrono(grace.min(starting_deadline));

    // Missed: (last, deadline_start). Counted with a cap, the latest few listed.
    let mut listed = std::collections::VecDeque::with_capacity(MISSED_LISTED + 1);
    let mut older: Option<(DateTime<Utc>, DateTime<Utc>, u64)> = None;
    let mut counted = 0u64;
    let mut cursor = last;
    for occurrence in schedule.occurrences(last) {
        if occurrence.instant >= deadline_start {
            break;
        }
        cursor = occurrence.instant;
        if occurrence.kind != OccurrenceKind::Fire {
            continue;
        }
        counted += 1;
        listed.push_back(occurrence.instant);
        if listed.len() > MISSED_LISTED
            && let Some(oldest) = listed.pop_front()
        {
            older = Some(match older {
                None => (oldest, oldest, 1),
                Some((first, _, n)) => (first, oldest, n + 1),
            });
        }
        if counted >= MISSED_COUNT_CAP {
            plan.missed.capped = true;
            // Jump over the rest of the outage without counting it.
            cursor = deadline_start - chrono::Duration::seconds(1);
            break;
        }
    }
    plan.missed.listed = listed.into_iter().collect();
    plan.missed.summarised = older;

    // Within the deadline: (max(last, deadline_start), now].
    let start = cursor.max(last);
    let due: Vec<Occurrence> = schedule
        .occurrences(start)
        .skip_while(|o| o.instant < deadline_start)
        .take_while(|o| o.instant <= now)
        .collect();
    let latest_catch_up = due
        .iter()
        .filter(|o| o.kind == OccurrenceKind::Fire && o.instant < grace_start)
        .map(|o| o.instant)
        .max();
    for occurrence in due {
        let instant = occurrence.instant;
        match occurrence.kind {
            OccurrenceKind::Skipped(_) => plan.not_run.push(NotRun {
                instant,
                reason: SkipReason::DstGap,
                local: occurrence.local,
            }),
            OccurrenceKind::Fire if instant >= grace_start => plan.run.push(instant),
            OccurrenceKind::Fire => match policy {
                CatchUp::All => plan.run.push(instant),
                CatchUp::Last if Some(instant) == latest_catch_up => plan.run.push(instant),
                CatchUp::Last => plan.not_run.push(NotRun {
                    instant,
                    reason: SkipReason::CatchUp,
                    local: occurrence.local,
                }),
                CatchUp::None => plan.missed.listed.push(instant),
            },
        }
    }
    // `none` adds in-deadline fires to the missed list; keep it bounded.
    if plan.missed.listed.len() > MISSED_LISTED {
        let excess = plan.missed.listed.len() - MISSED_LISTED;
        let moved: Vec<_> = plan.missed.listed.drain(..excess).collect();
        for instant in moved {
            plan.missed.summarised = Some(match plan.missed.summarised {
                None => (instant, instant, 1),
                Some((first, _, n)) => (first, instant, n + 1),
            });
        }
    }
    plan
}

/// What a fire does, given the worker's overlap policy and its runs in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapDecision {
    /// Publish the run.
    Publish,
    /// Do not run it; record it as skipped for overlap.
    Skip,
    /// Cancel the runs in flight, then publish.
    ReplaceThenPublish,
}

/// Whether the overlap policy needs the worker's load to decide.
pub fn needs_load(policy: Overlap) -> bool {
    matches!(
        policy,
        Overlap::Skip | Overlap::BufferOne | Overlap::Replace
    )
}

/// Decides a fire under `policy`. `forbid` and `allow` always publish: the
/// worker's run consumer holds the queue and limits how many run at once.
pub fn decide_overlap(policy: Overlap, load: WorkerLoad) -> OverlapDecision {
    match policy {
        Overlap::Forbid | Overlap::Allow => OverlapDecision::Publish,
        Overlap::Skip if load.busy() => OverlapDecision::Skip,
        Overlap::BufferOne if load.waiting >= 1 => OverlapDecision::Skip,
        Overlap::Replace if load.busy() => OverlapDecision::ReplaceThenPublish,
        Overlap::Skip | Overlap::BufferOne | Overlap::Replace => OverlapDecision::Publish,
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_config::{DstGap, DstRepeat};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    fn every_minute() -> Schedule {
        Schedule::parse(
            "* * * * *",
            chrono_tz::UTC,
            DstGap::Shift,
            DstRepeat::First,
            Duration::ZERO,
            "w",
        )
        .expect("schedule")
    }

    const MIN: Duration = Duration::from_secs(60);

    /// The scheduler was down from 10:00:30 to 10:10:30: fires 10:01 ... 10:10.
    fn outage(policy: CatchUp, deadline: Duration) -> CatchUpPlan {
        plan_catch_up(
            &every_minute(),
            at("2026-01-01T10:00:30Z"),
            at("2026-01-01T10:10:30Z"),
            policy,
            deadline,
            Duration::from_secs(10),
        )
    }

    fn minutes(range: std::ops::RangeInclusive<u32>) -> Vec<DateTime<Utc>> {
        range
            .map(|m| at(&format!("2026-01-01T10:{m:02}:00Z")))
            .collect()
    }

    #[test]
    fn all_runs_every_fire_within_the_deadline_and_misses_the_rest() {
        let plan = outage(CatchUp::All, 5 * MIN);
        assert_eq!(plan.run, minutes(6..=10));
        assert_eq!(plan.missed.listed, minutes(1..=5));
        assert!(plan.not_run.is_empty());
    }

    #[test]
    fn last_runs_only_the_most_recent() {
        let plan = outage(CatchUp::Last, 5 * MIN);
        assert_eq!(plan.run, minutes(10..=10));
        let not_run: Vec<_> = plan.not_run.iter().map(|n| (n.instant, n.reason)).collect();
        assert_eq!(
            not_run,
            minutes(6..=9)
                .into_iter()
                .map(|t| (t, SkipReason::CatchUp))
                .collect::<Vec<_>>()
        );
        assert_eq!(plan.missed.listed, minutes(1..=5));
    }

    #[test]
    fn none_runs_nothing_and_records_every_fire_as_missed() {
        let plan = outage(CatchUp::None, 5 * MIN);
        assert!(plan.run.is_empty());
        assert_eq!(plan.missed.listed, minutes(1..=10));
        assert_eq!(plan.missed.count(), 10);
    }

    #[test]
    fn fires_within_the_failover_grace_run_whatever_the_policy() {
        // Down for 25 s only (a failover): the one fire in it runs even with `none`.
        let plan = plan_catch_up(
            &every_minute(),
            at("2026-01-01T10:00:50Z"),
            at("2026-01-01T10:01:05Z"),
            CatchUp::None,
            5 * MIN,
            Duration::from_secs(10),
        );
        assert_eq!(plan.run, minutes(1..=1));
        assert!(plan.missed.listed.is_empty());
    }

    #[test]
    fn a_long_outage_is_listed_then_summarised() {
        // Down for 10 hours, deadline 1 hour: 540 missed fires.
        let plan = plan_catch_up(
            &every_minute(),
            at("2026-01-01T00:00:30Z"),
            at("2026-01-01T10:00:30Z"),
            CatchUp::Last,
            60 * MIN,
            Duration::from_secs(10),
        );
        assert_eq!(plan.missed.listed.len(), MISSED_LISTED);
        assert_eq!(plan.missed.count(), 540);
        let (first, last, n) = plan.missed.summarised.expect("summary");
        assert_eq!((first, n), (at("2026-01-01T00:01:00Z"), 530));
        assert_eq!(last, at("2026-01-01T08:50:00Z"));
        assert_eq!(plan.missed.listed[0], at("2026-01-01T08:51:00Z"));
        assert_eq!(plan.run, vec![at("2026-01-01T10:00:00Z")]);
        assert_eq!(plan.not_run.len(), 59);
    }

    #[test]
    fn nothing_overdue_plans_nothing() {
        let plan = plan_catch_up(
            &every_minute(),
            at("2026-01-01T10:00:30Z"),
            at("2026-01-01T10:00:45Z"),
            CatchUp::All,
            MIN,
            Duration::from_secs(10),
        );
        assert_eq!(plan, CatchUpPlan::default());
    }

    #[test]
    fn dst_skips_within_the_deadline_are_recorded() {
        let schedule = Schedule::parse(
            "30 2 * * *",
            chrono_tz::America::Chicago,
            DstGap::Skip,
            DstRepeat::First,
            Duration::ZERO,
            "w",
        )
        .expect("schedule");
        // 2026-03-08 02:30 Chicago does not exist; the scheduler was down over it.
        let plan = plan_catch_up(
            &schedule,
            at("2026-03-08T07:00:00Z"),
            at("2026-03-08T09:00:00Z"),
            CatchUp::All,
            3 * 60 * MIN,
            Duration::from_secs(10),
        );
        assert_eq!(plan.not_run.len(), 1);
        assert_eq!(
            (plan.not_run[0].instant, plan.not_run[0].reason),
            (at("2026-03-08T08:00:00Z"), SkipReason::DstGap)
        );
        assert_eq!(plan.not_run[0].local.to_string(), "2026-03-08 02:30:00");
        assert!(plan.run.is_empty());
    }

    #[test]
    fn overlap_decisions() {
        let idle = WorkerLoad::default();
        let running = WorkerLoad {
            waiting: 0,
            in_progress: 1,
        };
        let queued = WorkerLoad {
            waiting: 1,
            in_progress: 1,
        };
        use OverlapDecision::*;
        let table = [
            (Overlap::Forbid, idle, Publish),
            (Overlap::Forbid, queued, Publish),
            (Overlap::Allow, queued, Publish),
            (Overlap::Skip, idle, Publish),
            (Overlap::Skip, running, Skip),
            (Overlap::BufferOne, running, Publish),
            (Overlap::BufferOne, queued, Skip),
            (Overlap::Replace, idle, Publish),
            (Overlap::Replace, running, ReplaceThenPublish),
        ];
        for (policy, load, expected) in table {
            assert_eq!(
                decide_overlap(policy, load),
                expected,
                "{policy:?} with {load:?}"
            );
        }
    }
}
