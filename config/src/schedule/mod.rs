//! Owns Loom's schedule engine: parsing a worker's schedule (Unix cron with 5, 6 or 7 fields,
//! the `@daily`-style shorthands, or `@every <duration>`), evaluating it in an IANA time zone
//! with explicit daylight-saving rules, applying deterministic per-worker jitter, and
//! describing it for people.
//!
//! ```text
//! let s = Schedule::parse("30 2 * * *", chrono_tz::America::Chicago, DstGap::Shift,
//!                         DstRepeat::First, Duration::from_secs(60), "nightly-report")?;
//! let next = s.next_fire(Utc::now());
//! ```
//!
//! Submodules: `cron_expr` (dialect and candidate enumeration), `dst` (mapping local times
//! to instants across transitions), `jitter`, `describe`, `error`.

mod cron_expr;
mod describe;
mod dst;
mod error;
mod intern;
mod jitter;

#[cfg(test)]
mod tests;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use self::cron_expr::{CronEngine, CronSpec, Expression};
use self::dst::{Event, Walker};

pub use self::dst::{DstGap, DstRepeat};
pub use self::error::{CronField, FieldProblem, ScheduleError};

/// A parsed, ready-to-evaluate schedule.
///
/// Its definition (expression, zone, daylight-saving rules, jitter) is shared
/// with every schedule defined the same way, parsed once: 100,000 workers on
/// a handful of definitions hold a handful. Only the jitter offset, derived
/// from the worker's name, is its own.
#[derive(Debug, Clone)]
pub struct Schedule {
    definition: Arc<Definition>,
    /// Whole seconds, at most `i64::MAX - 1`.
    jitter_offset: i64,
}

/// What a schedule is, apart from its jitter offset.
#[derive(Debug)]
struct Definition {
    expression: String,
    timezone: Tz,
    dst_gap: DstGap,
    dst_repeat: DstRepeat,
    jitter: Duration,
    kind: Kind,
}

/// The key schedules are shared by: everything [`Schedule::parse`] reads
/// but the jitter key.
type DefinitionKey = (String, Tz, DstGap, DstRepeat, Duration);

static DEFINITIONS: LazyLock<intern::Interner<DefinitionKey, Definition>> =
    LazyLock::new(intern::Interner::new);

#[derive(Debug)]
enum Kind {
    Cron {
        spec: CronSpec,
        engine: std::sync::Arc<CronEngine>,
    },
    Every {
        interval: u64,
    },
}

/// One occurrence of a schedule: a fire, or a fire that is not run (a local time in a
/// daylight-saving gap under [`DstGap::Skip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Occurrence {
    /// When it happens (jitter included). For a skipped occurrence, the instant the gap ends,
    /// so it sorts in place.
    pub instant: DateTime<Utc>,
    /// The scheduled wall-clock time in the schedule's zone that this occurrence stands for,
    /// without jitter. For a fire shifted out of a gap this is the nominal time inside the gap
    /// (e.g. 02:30 although the fire is at 03:00); when several gap times collapse into one
    /// fire, it is the earliest of them. For `@every`, the wall time of the nominal instant.
    pub local: NaiveDateTime,
    /// Fire or skipped.
    pub kind: OccurrenceKind,
}

/// Whether an [`Occurrence`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OccurrenceKind {
    /// The worker runs.
    Fire,
    /// The worker does not run, for this reason.
    Skipped(SkipReason),
}

/// Why an occurrence is not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The local time fell in a daylight-saving gap and the gap rule is [`DstGap::Skip`].
    DstGap,
}

impl SkipReason {
    /// The reason as a stable snake_case string, e.g. `"dst_gap"` (for logs and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::DstGap => "dst_gap",
        }
    }
}

impl Schedule {
    /// Parses a schedule.
    ///
    /// `expression`: cron (5 fields `min hour dom month dow`, 6 with seconds first, 7 with a
    /// year last) or a shorthand (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
    /// `@midnight`, `@hourly`, `@every <duration>`); `timezone`: the zone cron fields are read
    /// in (ignored by `@every`); `dst_gap` / `dst_repeat`: the daylight-saving rules; `jitter`:
    /// max spread (whole seconds); `jitter_key`: usually the worker name.
    pub fn parse(
        expression: &str,
        timezone: Tz,
        dst_gap: DstGap,
        dst_repeat: DstRepeat,
        jitter: Duration,
        jitter_key: &str,
    ) -> Result<Schedule, ScheduleError> {
        let expression = expression.trim();
        let key = (expression.to_owned(), timezone, dst_gap, dst_repeat, jitter);
        let definition = DEFINITIONS.get_or_make(key, || {
            let kind = match cron_expr::parse_expression(expression)? {
                Expression::Cron(spec) => {
                    let engine = CronEngine::shared(expression, &spec)?;
                    Kind::Cron { spec, engine }
                }
                Expression::Every(interval) => Kind::Every { interval },
            };
            Ok::<_, ScheduleError>(Definition {
                expression: expression.to_owned(),
                timezone,
                dst_gap,
                dst_repeat,
                jitter,
                kind,
            })
        })?;
        Ok(Schedule {
            definition,
            jitter_offset: i64::try_from(jitter::offset_secs(jitter, jitter_key)).unwrap_or(0),
        })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.definition.expression
    }

    /// The zone the cron fields are evaluated in.
    pub fn timezone(&self) -> Tz {
        self.definition.timezone
    }

    /// The rule for local times in a spring-forward gap.
    pub fn dst_gap(&self) -> DstGap {
        self.definition.dst_gap
    }

    /// The rule for local times repeated at fall-back.
    pub fn dst_repeat(&self) -> DstRepeat {
        self.definition.dst_repeat
    }

    /// The configured maximum jitter.
    pub fn jitter(&self) -> Duration {
        self.definition.jitter
    }

    /// The deterministic per-key offset actually added to every occurrence (whole seconds,
    /// at most [`Schedule::jitter`]).
    pub fn jitter_offset(&self) -> Duration {
        Duration::from_secs(self.jitter_offset.unsigned_abs())
    }

    /// The interval of an `@every` schedule; `None` for calendar schedules.
    pub fn every_interval(&self) -> Option<Duration> {
        match self.definition.kind {
            Kind::Every { interval } => Some(Duration::from_secs(interval)),
            Kind::Cron { .. } => None,
        }
    }

    /// Whether a wall-clock time matches every cron field (Unix rules, including day-of-month
    /// OR day-of-week when both are restricted). Always false for `@every`, which has no
    /// wall-clock fields.
    pub fn matches_local(&self, local: NaiveDateTime) -> bool {
        match &self.definition.kind {
            Kind::Cron { spec, .. } => spec.matches(local),
            Kind::Every { .. } => false,
        }
    }

    /// First fire strictly after `after`. `None` only if the schedule has no future fire (e.g.
    /// a 7-field expression whose years are past, or beyond the year 2100).
    pub fn next_fire(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset = self.jitter_offset;
        let nominal_after = after.timestamp().checked_sub(offset)?;
        let nominal = match &self.definition.kind {
            Kind::Every { interval } => next_multiple(nominal_after, *interval)?,
            Kind::Cron { engine, .. } => {
                let mut walk = Walker::new(
                    self.definition.timezone,
                    engine,
                    self.definition.dst_gap,
                    self.definition.dst_repeat,
                    nominal_after.max(CRON_FLOOR),
                    true,
                );
                walk.find(|e| !e.skipped)?.instant
            }
        };
        DateTime::from_timestamp(nominal.checked_add(offset)?, 0)
    }

    /// Every occurrence strictly after `after`, in increasing instant order: fires, and fires
    /// not run (local times in a DST gap under [`DstGap::Skip`]). Fire instants strictly
    /// increase; skipped occurrences share the instant at which their gap ends.
    pub fn occurrences(&self, after: DateTime<Utc>) -> impl Iterator<Item = Occurrence> + '_ {
        let offset = self.jitter_offset;
        let nominal_after = after.timestamp().checked_sub(offset);
        let inner = match (&self.definition.kind, nominal_after) {
            (_, None) => Inner::Done,
            (Kind::Every { interval }, Some(a)) => Inner::Every {
                next: next_multiple(a, *interval),
                interval: *interval,
            },
            (Kind::Cron { engine, .. }, Some(a)) => Inner::Cron(Box::new(Walker::new(
                self.definition.timezone,
                engine,
                self.definition.dst_gap,
                self.definition.dst_repeat,
                a.max(CRON_FLOOR),
                false,
            ))),
        };
        Occurrences {
            inner,
            offset,
            timezone: self.definition.timezone,
        }
    }

    /// Human-readable, e.g. "daily at 03:00 America/Chicago", "Sundays at 04:00
    /// America/Chicago", "Mondays to Fridays at 09:30 UTC", "hourly at :15 Europe/Berlin",
    /// "every 15 minutes", "every 15m" (for `@every`), "monthly on day 1 at 00:00 UTC";
    /// otherwise `cron "<expr>" in <zone>`.
    pub fn describe(&self) -> String {
        match &self.definition.kind {
            Kind::Every { interval } => describe::describe_every(*interval),
            Kind::Cron { spec, .. } => {
                describe::describe_cron(spec, self.definition.timezone, &self.definition.expression)
            }
        }
    }
}

/// Cron schedules never fire before 1970 (the cron engine's first year), so walks start no
/// earlier than this (1969-12-01T00:00:00Z, early enough for any zone's offset).
const CRON_FLOOR: i64 = -31 * 86_400;

/// The first multiple of `interval` strictly greater than `after` (Unix seconds).
fn next_multiple(after: i64, interval: u64) -> Option<i64> {
    let interval = i64::try_from(interval).ok()?;
    after
        .div_euclid(interval)
        .checked_add(1)?
        .checked_mul(interval)
}

enum Inner<'a> {
    Done,
    Every { next: Option<i64>, interval: u64 },
    Cron(Box<Walker<'a>>),
}

/// The iterator behind [`Schedule::occurrences`].
struct Occurrences<'a> {
    inner: Inner<'a>,
    offset: i64,
    timezone: Tz,
}

impl Iterator for Occurrences<'_> {
    type Item = Occurrence;

    fn next(&mut self) -> Option<Occurrence> {
        let event = match &mut self.inner {
            Inner::Done => return None,
            Inner::Every { next, interval } => {
                let instant = (*next)?;
                *next = i64::try_from(*interval)
                    .ok()
                    .and_then(|i| instant.checked_add(i));
                let local = DateTime::from_timestamp(instant, 0)?
                    .with_timezone(&self.timezone)
                    .naive_local();
                Event {
                    instant,
                    local,
                    skipped: false,
                }
            }
            Inner::Cron(walk) => walk.next()?,
        };
        let instant = DateTime::from_timestamp(event.instant.checked_add(self.offset)?, 0)?;
        Some(Occurrence {
            instant,
            local: event.local,
            kind: if event.skipped {
                OccurrenceKind::Skipped(SkipReason::DstGap)
            } else {
                OccurrenceKind::Fire
            },
        })
    }
}
