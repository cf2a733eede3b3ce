//! Owns the expression dialect: parsing Unix-style cron expressions (5, 6 or 7 fields) and the
//! `@` shorthands into value sets ([`CronSpec`]), and enumerating the matching wall-clock times
//! with the `cron` crate ([`CronEngine`]).
//!
//! The `cron` crate numbers days of the week 1-7 with 1 = Sunday and ANDs day-of-month with
//! day-of-week, unlike Unix cron. So this module parses every field itself and hands the crate a
//! normalised 7-field expression made only of `*` and explicit lists (days of the week as
//! names). When both day fields are restricted, Unix cron fires on a day matching EITHER, so the
//! engine then holds two crate schedules (one per day field) and merges their candidates.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

use super::error::{CronField, FieldProblem, ScheduleError};

/// A parsed expression: either a calendar (cron) schedule or a fixed epoch-anchored interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expression {
    /// A cron expression or one of the calendar shorthands.
    Cron(CronSpec),
    /// `@every <duration>`: whole seconds, at least 1.
    Every(u64),
}

/// The value sets of a cron expression, in Unix numbering (day of week 0 = Sunday).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CronSpec {
    /// Bit `n` set: second `n` (0-59) matches.
    pub seconds: u64,
    /// Bit `n` set: minute `n` (0-59) matches.
    pub minutes: u64,
    /// Bit `n` set: hour `n` (0-23) matches.
    pub hours: u32,
    /// Bit `n` set: day of month `n` (1-31) matches.
    pub days_of_month: u32,
    /// Bit `n` set: month `n` (1-12) matches.
    pub months: u16,
    /// Bit `n` set: weekday `n` (0 = Sunday .. 6 = Saturday) matches.
    pub days_of_week: u8,
    /// Sorted years, or `None` for any year.
    pub years: Option<Vec<u32>>,
    /// The day-of-month field was neither `*` nor `?`.
    pub dom_restricted: bool,
    /// The day-of-week field was neither `*` nor `?`.
    pub dow_restricted: bool,
    /// How many fields the (expanded) expression had: 5, 6 or 7.
    pub field_count: usize,
}

const ALL_SECONDS: u64 = (1 << 60) - 1;
const ALL_HOURS: u32 = (1 << 24) - 1;
const ALL_DAYS_OF_MONTH: u32 = ((1u64 << 32) - 2) as u32;
const ALL_MONTHS: u16 = ((1 << 13) - 2) as u16;
const ALL_DAYS_OF_WEEK: u8 = (1 << 7) - 1;

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// The last year the `cron` crate enumerates.
const LAST_YEAR: i32 = 2100;

/// Longest possible length of each month (February counts 29), indexed by month 1-12.
const MAX_MONTH_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl CronSpec {
    /// Whether the calendar date matches the day-of-month / day-of-week / month / year fields,
    /// with Unix cron's rule: when both day fields are restricted, either may match.
    fn matches_date(&self, date: NaiveDate) -> bool {
        let year_ok = match &self.years {
            None => true,
            Some(years) => {
                u32::try_from(date.year()).is_ok_and(|y| years.binary_search(&y).is_ok())
            }
        };
        if !year_ok || self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Whether the wall-clock time matches every field.
    pub fn matches(&self, local: NaiveDateTime) -> bool {
        self.seconds & (1 << local.second()) != 0
            && self.minutes & (1 << local.minute()) != 0
            && self.hours & (1 << local.hour()) != 0
            && self.matches_date(local.date())
    }

    /// The normalised 7-field expressions for the `cron` crate. One expression, or two (a
    /// day-of-month one and a day-of-week one) when both day fields are restricted; a side that
    /// can never fire (e.g. day 31 in February only) is left out.
    fn engine_expressions(&self) -> Vec<String> {
        let common = |dom: &str, dow: &str| {
            format!(
                "{} {} {} {} {} {} {}",
                render_bits(self.seconds, 0, 59),
                render_bits(self.minutes, 0, 59),
                render_bits(u64::from(self.hours), 0, 23),
                dom,
                render_bits(u64::from(self.months), 1, 12),
                dow,
                match &self.years {
                    None => "*".to_owned(),
                    Some(years) => join(years.iter().map(u32::to_string)),
                }
            )
        };
        let dom = render_bits(u64::from(self.days_of_month), 1, 31);
        let dow = if self.days_of_week == ALL_DAYS_OF_WEEK {
            "*".to_owned()
        } else {
            join(
                (0..7)
                    .filter(|d| self.days_of_week & (1 << d) != 0)
                    .map(|d| DAY_NAMES[d].to_owned()),
            )
        };
        if self.dom_restricted && self.dow_restricted {
            let mut out = Vec::with_capacity(2);
            if self.dom_side_possible() {
                out.push(common(&dom, "*"));
            }
            out.push(common("*", &dow));
            out
        } else {
            vec![common(&dom, &dow)]
        }
    }

    /// Whether some selected day of the month exists in some selected month.
    fn dom_side_possible(&self) -> bool {
        (1..=12).any(|m| {
            self.months & (1 << m) != 0
                && (1..=MAX_MONTH_DAYS[m]).any(|d| self.days_of_month & (1 << d) != 0)
        })
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

/// `*` when every value in `min..=max` is set, else the explicit comma list.
fn render_bits(bits: u64, min: u32, max: u32) -> String {
    if (min..=max).all(|v| bits & (1 << v) != 0) {
        "*".to_owned()
    } else {
        join(
            (min..=max)
                .filter(|v| bits & (1 << v) != 0)
                .map(|v| v.to_string()),
        )
    }
}

/// Parses a whole expression (already trimmed, non-empty).
pub(crate) fn parse_expression(expression: &str) -> Result<Expression, ScheduleError> {
    if expression.is_empty() {
        return Err(ScheduleError::Empty);
    }
    if let Some(rest) = expression.strip_prefix('@') {
        let (word, arg) = match rest.split_once(char::is_whitespace) {
            Some((word, arg)) => (word, arg.trim()),
            None => (rest, ""),
        };
        let expanded = match word.to_ascii_lowercase().as_str() {
            "every" => return parse_every(expression, arg).map(Expression::Every),
            _ if !arg.is_empty() => None,
            "yearly" | "annually" => Some("0 0 1 1 *"),
            "monthly" => Some("0 0 1 * *"),
            "weekly" => Some("0 0 * * 0"),
            "daily" | "midnight" => Some("0 0 * * *"),
            "hourly" => Some("0 * * * *"),
            _ => None,
        };
        return match expanded {
            Some(cron) => parse_cron(expression, cron).map(Expression::Cron),
            None => Err(ScheduleError::UnknownShorthand {
                expression: expression.to_owned(),
            }),
        };
    }
    parse_cron(expression, expression).map(Expression::Cron)
}

fn parse_every(expression: &str, arg: &str) -> Result<u64, ScheduleError> {
    let duration: Duration =
        humantime::parse_duration(arg).map_err(|e| ScheduleError::InvalidInterval {
            expression: expression.to_owned(),
            reason: if arg.is_empty() {
                "no duration given".to_owned()
            } else {
                e.to_string()
            },
        })?;
    if duration.is_zero() {
        return Err(ScheduleError::ZeroInterval {
            expression: expression.to_owned(),
        });
    }
    if duration.subsec_nanos() != 0 {
        return Err(ScheduleError::FractionalInterval {
            expression: expression.to_owned(),
        });
    }
    Ok(duration.as_secs())
}

/// Parses `text` (the cron fields) on behalf of `expression` (what the user wrote, for messages).
fn parse_cron(expression: &str, text: &str) -> Result<CronSpec, ScheduleError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (second, rest) = match fields.len() {
        5 => (None, &fields[..]),
        6 | 7 => (Some(fields[0]), &fields[1..]),
        count => {
            return Err(ScheduleError::FieldCount {
                expression: expression.to_owned(),
                count,
            });
        }
    };
    let p = FieldParser { expression };
    let seconds = match second {
        Some(text) => p.bits(CronField::Second, text)?,
        None => 1,
    };
    let minutes = p.bits(CronField::Minute, rest[0])?;
    let hours = p.bits(CronField::Hour, rest[1])? as u32;
    let days_of_month = p.bits(CronField::DayOfMonth, rest[2])? as u32;
    let months = p.bits(CronField::Month, rest[3])? as u16;
    let days_of_week = p.bits(CronField::DayOfWeek, rest[4])? as u8;
    let years = match rest.get(5) {
        Some(text) if *text != "*" => Some(p.values(CronField::Year, text)?),
        _ => None,
    };
    let spec = CronSpec {
        seconds,
        minutes,
        hours,
        days_of_month,
        months,
        days_of_week,
        years,
        dom_restricted: !is_star(rest[2]),
        dow_restricted: !is_star(rest[4]),
        field_count: fields.len(),
    };
    debug_assert!(spec.seconds & !ALL_SECONDS == 0 && spec.hours & !ALL_HOURS == 0);
    debug_assert!(spec.days_of_month & !ALL_DAYS_OF_MONTH == 0 && spec.months & !ALL_MONTHS == 0);
    let either_day = spec.dom_restricted && spec.dow_restricted;
    if !either_day && !spec.dom_side_possible() {
        return Err(ScheduleError::NeverFires {
            expression: expression.to_owned(),
            reason: format!(
                "day-of-month \"{}\" does not occur in month \"{}\"",
                rest[2], rest[3]
            ),
        });
    }
    Ok(spec)
}

/// `*`, `?` and `*/1` leave a field unrestricted (for the day-of-month / day-of-week rule).
fn is_star(text: &str) -> bool {
    matches!(text, "*" | "?" | "*/1")
}

struct FieldParser<'a> {
    expression: &'a str,
}

impl FieldParser<'_> {
    fn err(&self, field: CronField, value: &str, problem: FieldProblem) -> ScheduleError {
        ScheduleError::InvalidField {
            expression: self.expression.to_owned(),
            field,
            value: value.to_owned(),
            problem,
        }
    }

    /// The field as a bit set (not for years).
    fn bits(&self, field: CronField, text: &str) -> Result<u64, ScheduleError> {
        Ok(self
            .values(field, text)?
            .into_iter()
            .fold(0u64, |bits, v| bits | (1 << v)))
    }

    /// The field's values, sorted and de-duplicated; day of week 7 becomes 0.
    fn values(&self, field: CronField, text: &str) -> Result<Vec<u32>, ScheduleError> {
        let mut out = Vec::new();
        for element in text.split(',') {
            self.element(field, element, &mut out)?;
        }
        if field == CronField::DayOfWeek {
            for v in &mut out {
                if *v == 7 {
                    *v = 0;
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn element(
        &self,
        field: CronField,
        element: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), ScheduleError> {
        if element.is_empty() {
            return Err(self.err(field, element, FieldProblem::Empty));
        }
        if let Some(feature) = unsupported_feature(field, element) {
            return Err(ScheduleError::Unsupported {
                expression: self.expression.to_owned(),
                field,
                value: element.to_owned(),
                feature,
            });
        }
        if element == "?" {
            if matches!(field, CronField::DayOfMonth | CronField::DayOfWeek) {
                out.extend(field.min()..=star_max(field));
                return Ok(());
            }
            return Err(self.err(field, element, FieldProblem::QuestionMark));
        }
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => {
                let step = step
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| self.err(field, element, FieldProblem::BadStep))?;
                (range, Some(step))
            }
            None => (element, None),
        };
        let (start, end) = if range == "*" {
            (field.min(), star_max(field))
        } else if let Some((a, b)) = range.split_once('-') {
            if a.is_empty() || b.is_empty() {
                return Err(self.err(field, element, FieldProblem::NotANumber));
            }
            let start = self.atom(field, a)?;
            let mut end = self.atom(field, b)?;
            // `FRI-SUN`: a range ending on Sunday by name means Sunday at the end of the week.
            if field == CronField::DayOfWeek && end == 0 && start > 0 {
                end = 7;
            }
            if start > end {
                return Err(self.err(field, element, FieldProblem::ReversedRange));
            }
            (start, end)
        } else {
            let start = self.atom(field, range)?;
            // `a/n` means from a to the end of the field's range, every n.
            let end = if step.is_some() {
                star_max(field).max(start)
            } else {
                start
            };
            (start, end)
        };
        out.extend((start..=end).step_by(step.unwrap_or(1) as usize));
        Ok(())
    }

    /// One number or name.
    fn atom(&self, field: CronField, atom: &str) -> Result<u32, ScheduleError> {
        if !atom.is_empty() && atom.bytes().all(|b| b.is_ascii_digit()) {
            return match atom.parse::<u32>() {
                Ok(v) if (field.min()..=field.max()).contains(&v) => Ok(v),
                _ => Err(self.err(field, atom, FieldProblem::OutOfRange)),
            };
        }
        let names: &[&str] = match field {
            CronField::DayOfWeek => &DAY_NAMES,
            CronField::Month => &MONTH_NAMES,
            _ => &[],
        };
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(atom))
            .map(|i| i as u32 + field.min())
            .ok_or_else(|| self.err(field, atom, FieldProblem::NotANumber))
    }
}

/// Top of the range `*` stands for: day of week stops at 6 (Saturday), 7 is only an alias.
fn star_max(field: CronField) -> u32 {
    match field {
        CronField::DayOfWeek => 6,
        f => f.max(),
    }
}

/// Detects Quartz-style `L`, `W` and `#`, which Loom refuses.
fn unsupported_feature(field: CronField, element: &str) -> Option<char> {
    if element.contains('#') {
        return Some('#');
    }
    let upper = element.to_ascii_uppercase();
    match field {
        CronField::DayOfMonth if upper.contains('L') => Some('L'),
        CronField::DayOfMonth if upper.contains('W') => Some('W'),
        CronField::DayOfWeek => {
            // `L`, `5L`, `FRIL`: a last-weekday form. Day names never end in L.
            let stem = upper.strip_suffix('L')?;
            let is_day = stem.is_empty()
                || stem.bytes().all(|b| b.is_ascii_digit())
                || DAY_NAMES.contains(&stem);
            is_day.then_some('L')
        }
        _ => None,
    }
}

/// Enumerates wall-clock times matching a [`CronSpec`] with the `cron` crate, treating naive
/// local time as if it were UTC (so no time-zone logic happens inside the crate).
#[derive(Debug, Clone)]
pub(crate) struct CronEngine {
    schedules: Vec<cron::Schedule>,
}

impl CronEngine {
    /// The engine for `spec`, shared with every schedule of the same fields.
    ///
    /// A crate schedule holds a set of every matching value of every field
    /// (a few kilobytes), and registries repeat a handful of expressions over
    /// thousands of workers, so engines are interned by their normalised
    /// expressions (`5 4 * * *` and `5 4 * * ?` share one).
    pub fn shared(
        expression: &str,
        spec: &CronSpec,
    ) -> Result<std::sync::Arc<CronEngine>, ScheduleError> {
        static ENGINES: std::sync::LazyLock<super::intern::Interner<Vec<String>, CronEngine>> =
            std::sync::LazyLock::new(super::intern::Interner::new);
        ENGINES.get_or_make(spec.engine_expressions(), || {
            CronEngine::new(expression, spec)
        })
    }

    /// Builds the crate schedules for `spec`; `expression` is only used in errors.
    pub fn new(expression: &str, spec: &CronSpec) -> Result<CronEngine, ScheduleError> {
        let schedules = spec
            .engine_expressions()
            .into_iter()
            .map(|normalised| {
                cron::Schedule::from_str(&normalised).map_err(|e| ScheduleError::Engine {
                    expression: expression.to_owned(),
                    normalised: normalised.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CronEngine { schedules })
    }

    /// Matching wall-clock times strictly after `after`, in increasing order. Sub-second parts
    /// of `after` are ignored (every candidate is a whole second).
    pub fn after(&self, after: NaiveDateTime) -> Candidates<'_> {
        // The crate knows no year past 2100, and panics on arithmetic near chrono's limits.
        if after.year() > LAST_YEAR {
            return Candidates {
                cursors: Vec::new(),
            };
        }
        let start = DateTime::<Utc>::from_naive_utc_and_offset(after, Utc);
        let mut cursors: Vec<Cursor<'_>> = self
            .schedules
            .iter()
            .map(|s| {
                let mut iter = s.after(&start);
                let head = iter.next().map(|d| d.naive_utc());
                Cursor { iter, head }
            })
            .collect();
        cursors.retain(|c| c.head.is_some());
        Candidates { cursors }
    }
}

struct Cursor<'a> {
    iter: cron::ScheduleIterator<'a, Utc>,
    head: Option<NaiveDateTime>,
}

/// Iterator of matching wall-clock times (merged across the engine's crate schedules).
pub(crate) struct Candidates<'a> {
    cursors: Vec<Cursor<'a>>,
}

impl Iterator for Candidates<'_> {
    type Item = NaiveDateTime;

    fn next(&mut self) -> Option<NaiveDateTime> {
        let min = self.cursors.iter().filter_map(|c| c.head).min()?;
        for cursor in &mut self.cursors {
            if cursor.head == Some(min) {
                cursor.head = cursor.iter.next().map(|d| d.naive_utc());
            }
        }
        if self.cursors.len() > 1 {
            self.cursors.retain(|c| c.head.is_some());
        }
        Some(min)
    }
}
