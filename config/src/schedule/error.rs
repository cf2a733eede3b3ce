//! Owns [`ScheduleError`], the error returned when a schedule expression is rejected, and the
//! small vocabulary ([`CronField`], [`FieldProblem`]) its messages are built from.
//!
//! Every message is one lower-case clause that reads well after the word "schedule", e.g.
//! `schedule "0 4 * * Mun" is not a valid cron expression: day-of-week "Mun" is not a day name or number 0-7`.

use std::fmt;

/// Why a schedule expression was rejected.
///
/// Match on the variant (and, for [`ScheduleError::InvalidField`], on [`FieldProblem`]) rather
/// than on the message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is empty or only white space.
    #[error("expression is empty")]
    Empty,

    /// A cron expression with the wrong number of fields.
    #[error(
        "\"{expression}\" has {count} field{plural}; expected 5 (minute hour day month weekday), 6 (with seconds first) or 7 (with a year last)",
        plural = if *count == 1 { "" } else { "s" }
    )]
    FieldCount {
        /// The expression as given.
        expression: String,
        /// How many white-space separated fields it has.
        count: usize,
    },

    /// One element of one cron field is malformed or out of range.
    #[error(
        "\"{expression}\" is not a valid cron expression: {field} \"{value}\" {}",
        problem.describe(*field)
    )]
    InvalidField {
        /// The expression as given.
        expression: String,
        /// The field holding the bad element.
        field: CronField,
        /// The bad element (one comma-separated part of the field, or the whole field).
        value: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },

    /// A cron feature Loom deliberately does not support: `L` (last), `W` (nearest weekday) or
    /// `#` (nth weekday of the month).
    #[error(
        "\"{expression}\" is not a valid cron expression: {field} \"{value}\" uses `{feature}` ({}), which is not supported",
        feature_name(*feature)
    )]
    Unsupported {
        /// The expression as given.
        expression: String,
        /// The field using the feature.
        field: CronField,
        /// The field's text.
        value: String,
        /// The feature character: `L`, `W` or `#`.
        feature: char,
    },

    /// A cron expression whose day-of-month and month fields can never coincide, e.g. `0 0 30 2 *`.
    #[error("\"{expression}\" never fires: {reason}")]
    NeverFires {
        /// The expression as given.
        expression: String,
        /// Which fields cannot coincide.
        reason: String,
    },

    /// An `@...` shorthand that is not one of the known ones.
    #[error(
        "\"{expression}\" is not a known shorthand; expected @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>"
    )]
    UnknownShorthand {
        /// The expression as given.
        expression: String,
    },

    /// `@every` with a zero duration.
    #[error("\"{expression}\" has a zero interval")]
    ZeroInterval {
        /// The expression as given.
        expression: String,
    },

    /// `@every` with a duration that is not whole seconds (e.g. `1500ms`).
    #[error("\"{expression}\" has an interval that is not a whole number of seconds")]
    FractionalInterval {
        /// The expression as given.
        expression: String,
    },

    /// `@every` with something that is not a duration.
    #[error("\"{expression}\" has an invalid interval: {reason}")]
    InvalidInterval {
        /// The expression as given.
        expression: String,
        /// The duration parser's complaint.
        reason: String,
    },

    /// The cron engine refused the normalised form of an expression this module accepted. This
    /// is a bug in Loom, not in the expression.
    #[error(
        "\"{expression}\" could not be prepared for evaluation (normalised to \"{normalised}\"): {reason}"
    )]
    Engine {
        /// The expression as given.
        expression: String,
        /// The normalised expression handed to the cron engine.
        normalised: String,
        /// The cron engine's complaint.
        reason: String,
    },
}

fn feature_name(feature: char) -> &'static str {
    match feature {
        'L' => "last day",
        'W' => "nearest weekday",
        '#' => "nth weekday of the month",
        _ => "unknown feature",
    }
}

/// One field of a cron expression, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    /// Seconds, 0-59 (6- and 7-field expressions only).
    Second,
    /// Minutes, 0-59.
    Minute,
    /// Hours, 0-23.
    Hour,
    /// Day of the month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or JAN-DEC.
    Month,
    /// Day of the week, 0-7 (0 and 7 = Sunday) or SUN-SAT.
    DayOfWeek,
    /// Year, 1970-2100 (7-field expressions only).
    Year,
}

impl CronField {
    /// The field's name as used in messages, e.g. `day-of-week`.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
            CronField::Year => "year",
        }
    }

    /// Smallest value the field accepts.
    pub fn min(self) -> u32 {
        match self {
            CronField::Second | CronField::Minute | CronField::Hour | CronField::DayOfWeek => 0,
            CronField::DayOfMonth | CronField::Month => 1,
            CronField::Year => 1970,
        }
    }

    /// Largest value the field accepts (7 for day-of-week, which means Sunday like 0).
    pub fn max(self) -> u32 {
        match self {
            CronField::Second | CronField::Minute => 59,
            CronField::Hour => 23,
            CronField::DayOfMonth => 31,
            CronField::Month => 12,
            CronField::DayOfWeek => 7,
            CronField::Year => 2100,
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with one element of a cron field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldProblem {
    /// Not a number (nor, for month and day-of-week, a name).
    NotANumber,
    /// A number outside the field's range.
    OutOfRange,
    /// A step (`/n`) that is zero or not a number.
    BadStep,
    /// A range whose start is after its end, e.g. `5-1`.
    ReversedRange,
    /// An empty element, e.g. the middle of `1,,2`.
    Empty,
    /// `?` outside day-of-month and day-of-week.
    QuestionMark,
}

impl FieldProblem {
    /// The problem as the tail of a sentence about `field`.
    pub fn describe(self, field: CronField) -> String {
        let (min, max) = (field.min(), field.max());
        match self {
            FieldProblem::NotANumber => match field {
                CronField::DayOfWeek => "is not a day name or number 0-7".to_owned(),
                CronField::Month => "is not a month name or number 1-12".to_owned(),
                _ => format!("is not a number {min}-{max}"),
            },
            FieldProblem::OutOfRange => format!("is out of range {min}-{max}"),
            FieldProblem::BadStep => {
                "has a step that is not a whole number of at least 1".to_owned()
            }
            FieldProblem::ReversedRange => {
                "is a reversed range; write the smaller value first".to_owned()
            }
            FieldProblem::Empty => "has an empty list element".to_owned(),
            FieldProblem::QuestionMark => {
                "uses `?`, which is only allowed in day-of-month and day-of-week".to_owned()
            }
        }
    }
}
