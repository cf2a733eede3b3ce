//! Owns the mapping from matching wall-clock times to instants across daylight-saving
//! transitions: the gap rule ([`DstGap`]) and the repeat rule ([`DstRepeat`]), and the walk that
//! yields a cron schedule's occurrences in increasing instant order from any starting instant.
//!
//! How the walk works. Matching local times (candidates) come from the cron engine in
//! increasing wall-clock order. Each is classified with the zone:
//! - unique → one fire at that instant;
//! - in a gap → the transition instant (the first instant after the gap), as a fire (`shift`) or
//!   a skipped occurrence (`skip`);
//! - repeated (a fold) → its first instant, its second instant, or both.
//!
//! The *primary* stream maps every candidate to at most one event: its unique instant, its gap
//! instant, and for a repeated time its first instant (`first`, `both`) or its second instant
//! (`last`). That stream is already in increasing instant order. With `both`, the second
//! instants of a fold are produced by a separate *repeat* cursor over the fold's local range,
//! merged in instant order. Equal fire instants (several gap times shifting to the same
//! transition instant, plus the time just after the gap) collapse into one fire.
//!
//! Starting point. The walk from instant `a` starts at the wall-clock reading at `a`. If that
//! reading lies in a fold, the fold's transition is located and the walk starts where the rule
//! needs it to: at the fold's start for `last` (and for the repeat cursor of `both`) when `a` is
//! in the first pass, at the fold's end for `first` when `a` is in the second pass. So
//! `next_fire(a)` computed from scratch always agrees with walking the iterator.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone};
use chrono_tz::{GapInfo, Tz};
use serde::{Deserialize, Serialize};

use super::cron_expr::{Candidates, CronEngine};

/// What to do with a scheduled local time that does not exist because the clocks jump forward
/// (spring forward, e.g. 02:30 on 2026-03-08 in America/Chicago).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstGap {
    /// Fire at the first instant after the gap (the transition instant, e.g. 03:00 CDT).
    #[default]
    Shift,
    /// Do not run; the occurrence is reported as skipped at the transition instant.
    Skip,
}

/// What to do with a scheduled local time that happens twice because the clocks go back
/// (fall back, e.g. 01:30 on 2026-11-01 in America/Chicago).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstRepeat {
    /// Fire at the first occurrence only (still on summer time).
    #[default]
    First,
    /// Fire at the second occurrence only (back on standard time).
    Last,
    /// Fire at both occurrences.
    Both,
}

/// One nominal (un-jittered) occurrence found by the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    /// Unix seconds.
    pub instant: i64,
    /// The scheduled wall-clock time this occurrence stands for.
    pub local: NaiveDateTime,
    /// True when the local time fell in a gap and the policy is `skip`.
    pub skipped: bool,
}

/// How a local time maps to instants in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalMapping {
    /// Exists once.
    Single(i64),
    /// Does not exist; `end` is the first instant after the gap, `end_local` its wall time.
    Gap { end: i64, end_local: NaiveDateTime },
    /// Exists twice: `first` (old offset) and `second` (new offset).
    Fold {
        first: i64,
        second: i64,
        first_offset: i32,
        second_offset: i32,
    },
}

/// Unix seconds of a naive date-time read as UTC.
pub(crate) fn ts(local: NaiveDateTime) -> i64 {
    local.and_utc().timestamp()
}

/// The naive UTC date-time of Unix seconds `t`, if representable.
pub(crate) fn naive(t: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(t, 0).map(|d| d.naive_utc())
}

/// One second before `local` (so that "strictly after" the result includes `local`).
fn before(local: NaiveDateTime) -> Option<NaiveDateTime> {
    local.checked_sub_signed(TimeDelta::seconds(1))
}

/// The zone's UTC offset (seconds east) at instant `t`.
pub(crate) fn offset_at(tz: Tz, t: i64) -> Option<i32> {
    naive(t).map(|n| tz.offset_from_utc_datetime(&n).fix().local_minus_utc())
}

/// Classifies a local time; `None` only at the edges of the zone data.
pub(crate) fn classify(tz: Tz, local: NaiveDateTime) -> Option<LocalMapping> {
    let secs = ts(local);
    match tz.offset_from_local_datetime(&local) {
        LocalResult::Single(o) => Some(LocalMapping::Single(
            secs - i64::from(o.fix().local_minus_utc()),
        )),
        LocalResult::Ambiguous(a, b) => {
            let (oa, ob) = (a.fix().local_minus_utc(), b.fix().local_minus_utc());
            // The larger offset is the earlier instant (old offset, before the clocks went back).
            let (first_offset, second_offset) = if oa >= ob { (oa, ob) } else { (ob, oa) };
            Some(LocalMapping::Fold {
                first: secs - i64::from(first_offset),
                second: secs - i64::from(second_offset),
                first_offset,
                second_offset,
            })
        }
        LocalResult::None => {
            let end = GapInfo::new(&local, &tz)?.end?;
            Some(LocalMapping::Gap {
                end: end.timestamp(),
                end_local: end.naive_local(),
            })
        }
    }
}

/// The transition instant of a fold: the smallest `t` in `(first, second]` whose offset is no
/// longer `first_offset`.
fn fold_transition(tz: Tz, first: i64, second: i64, first_offset: i32) -> Option<i64> {
    let (mut lo, mut hi) = (first, second);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, mid)? == first_offset {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Local range `[start, end)` of a fold and its transition instant, from one of its local times.
#[derive(Debug, Clone, Copy)]
struct Fold {
    transition: i64,
    start: NaiveDateTime,
    end: NaiveDateTime,
}

fn fold_of(tz: Tz, first: i64, second: i64, first_offset: i32, second_offset: i32) -> Option<Fold> {
    let transition = fold_transition(tz, first, second, first_offset)?;
    Some(Fold {
        transition,
        start: naive(transition + i64::from(second_offset))?,
        end: naive(transition + i64::from(first_offset))?,
    })
}

/// Safety net: the walk gives up (ends) after this many candidates without producing an event.
/// Real schedules never come near it; it only guards against an unforeseen non-terminating loop.
const MAX_CANDIDATES_PER_EVENT: u32 = 1_000_000;

/// Walks a cron schedule's occurrences strictly after an instant, in increasing instant order.
pub(crate) struct Walker<'a> {
    tz: Tz,
    engine: &'a CronEngine,
    gap: DstGap,
    repeat: DstRepeat,
    /// Events must be strictly after this (Unix seconds, sub-seconds already handled).
    after: i64,
    /// Only fires are wanted: skipped gap times may be jumped over.
    fires_only: bool,
    primary: Option<Candidates<'a>>,
    primary_head: Option<Event>,
    repeats: Vec<RepeatCursor<'a>>,
    /// Fold local times before this are already covered by a repeat cursor (`both` only).
    repeat_covered_until: Option<NaiveDateTime>,
    last_fire: Option<i64>,
}

/// Second occurrences of the local times of one fold, for `DstRepeat::Both`.
struct RepeatCursor<'a> {
    candidates: Candidates<'a>,
    until: NaiveDateTime,
    head: Option<Event>,
}

impl RepeatCursor<'_> {
    fn advance(&mut self, tz: Tz, after: i64) {
        self.head = None;
        for local in self.candidates.by_ref() {
            if local >= self.until {
                return;
            }
            if let Some(LocalMapping::Fold { second, .. }) = classify(tz, local)
                && second > after
            {
                self.head = Some(Event {
                    instant: second,
                    local,
                    skipped: false,
                });
                return;
            }
        }
    }
}

impl<'a> Walker<'a> {
    /// A walk over occurrences strictly after Unix second `after` (pass the floor of a
    /// fractional instant). Returns an empty walk if `after` is outside chrono's range.
    pub fn new(
        tz: Tz,
        engine: &'a CronEngine,
        gap: DstGap,
        repeat: DstRepeat,
        after: i64,
        fires_only: bool,
    ) -> Walker<'a> {
        let mut walker = Walker {
            tz,
            engine,
            gap,
            repeat,
            after,
            fires_only,
            primary: None,
            primary_head: None,
            repeats: Vec::new(),
            repeat_covered_until: None,
            last_fire: None,
        };
        walker.start();
        walker
    }

    fn start(&mut self) -> Option<()> {
        let tz = self.tz;
        let wall = naive(
            self.after
                .checked_add(i64::from(offset_at(tz, self.after)?))?,
        )?;
        let mut primary_from = wall;
        if let Some(LocalMapping::Fold {
            first,
            second,
            first_offset,
            second_offset,
        }) = classify(tz, wall)
        {
            // `after` is inside a fold: the local times just before `wall` may still occur later.
            let fold = fold_of(tz, first, second, first_offset, second_offset)?;
            let first_pass = self.after < fold.transition;
            match (self.repeat, first_pass) {
                (DstRepeat::First, true) | (DstRepeat::Last, false) => {}
                (DstRepeat::Last, true) => primary_from = before(fold.start)?,
                (DstRepeat::First, false) => primary_from = before(fold.end)?,
                (DstRepeat::Both, true) => self.add_repeat(before(fold.start)?, fold.end),
                (DstRepeat::Both, false) => {
                    self.add_repeat(wall, fold.end);
                    primary_from = before(fold.end)?;
                }
            }
        }
        self.primary = Some(self.engine.after(primary_from));
        self.advance_primary();
        Some(())
    }

    fn add_repeat(&mut self, from: NaiveDateTime, until: NaiveDateTime) {
        let mut cursor = RepeatCursor {
            candidates: self.engine.after(from),
            until,
            head: None,
        };
        cursor.advance(self.tz, self.after);
        self.repeat_covered_until = Some(until);
        if cursor.head.is_some() {
            self.repeats.push(cursor);
        }
    }

    /// Computes the next primary event into `primary_head`.
    fn advance_primary(&mut self) {
        self.primary_head = None;
        let mut budget = MAX_CANDIDATES_PER_EVENT;
        while budget > 0 {
            budget -= 1;
            let Some(local) = self.primary.as_mut().and_then(Iterator::next) else {
                return;
            };
            match classify(self.tz, local) {
                None => {}
                Some(LocalMapping::Single(instant)) if instant > self.after => {
                    self.primary_head = Some(Event {
                        instant,
                        local,
                        skipped: false,
                    });
                    return;
                }
                Some(LocalMapping::Single(_)) => {}
                Some(LocalMapping::Gap { end, end_local }) => {
                    let skipped = self.gap == DstGap::Skip;
                    // Later gap times map to the same instant: under `shift` they collapse into
                    // this fire, under `skip` they are only needed when skips are reported.
                    if !skipped || self.fires_only || end <= self.after {
                        self.primary = before(end_local).map(|from| self.engine.after(from));
                    }
                    if end > self.after && !(skipped && self.fires_only) {
                        self.primary_head = Some(Event {
                            instant: end,
                            local,
                            skipped,
                        });
                        return;
                    }
                }
                Some(LocalMapping::Fold {
                    first,
                    second,
                    first_offset,
                    second_offset,
                }) => {
                    if self.repeat == DstRepeat::Both
                        && self.repeat_covered_until.is_none_or(|u| local >= u)
                    {
                        let fold = fold_of(self.tz, first, second, first_offset, second_offset);
                        if let Some((fold, from)) = fold.zip(before(local)) {
                            self.add_repeat(from, fold.end);
                        }
                    }
                    let instant = if self.repeat == DstRepeat::Last {
                        second
                    } else {
                        first
                    };
                    if instant > self.after {
                        self.primary_head = Some(Event {
                            instant,
                            local,
                            skipped: false,
                        });
                        return;
                    }
                    if self.repeat != DstRepeat::Last {
                        // The rest of this fold's first occurrences are past too if `after` is
                        // already beyond the transition: jump to the fold's end.
                        let fold = fold_of(self.tz, first, second, first_offset, second_offset);
                        if let Some(fold) = fold.filter(|f| f.transition <= self.after) {
                            self.primary = before(fold.end).map(|from| self.engine.after(from));
                        }
                    }
                }
            }
        }
        // Budget exhausted: end the walk rather than loop on.
        self.primary = None;
    }
}

impl Iterator for Walker<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            // Pick the earliest head among the primary stream and the repeat cursors.
            let mut best: Option<(Event, Option<usize>)> = self.primary_head.map(|e| (e, None));
            for (i, cursor) in self.repeats.iter().enumerate() {
                if let Some(e) = cursor.head
                    && best.is_none_or(|(b, _)| (e.instant, e.local) < (b.instant, b.local))
                {
                    best = Some((e, Some(i)));
                }
            }
            let (event, source) = best?;
            match source {
                None => self.advance_primary(),
                Some(i) => {
                    let (tz, after) = (self.tz, self.after);
                    self.repeats[i].advance(tz, after);
                    if self.repeats[i].head.is_none() {
                        self.repeats.swap_remove(i);
                    }
                }
            }
            if !event.skipped {
                if self.last_fire.is_some_and(|last| event.instant <= last) {
                    continue; // collapsed into the previous fire at the same instant
                }
                self.last_fire = Some(event.instant);
            }
            return Some(event);
        }
    }
}
