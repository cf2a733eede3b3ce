//! Owns the human-readable description of a schedule ("daily at 03:00 America/Chicago",
//! "Mondays to Fridays at 09:30 UTC", "every 15 minutes", "every 1h30m"). Shapes it does not
//! recognise fall back to `cron "<expression>" in <zone>`.

use chrono_tz::Tz;

use super::cron_expr::CronSpec;

const DAY_PLURALS: [&str; 7] = [
    "Sundays",
    "Mondays",
    "Tuesdays",
    "Wednesdays",
    "Thursdays",
    "Fridays",
    "Saturdays",
];
const MONTHS: [&str; 13] = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// At most this many times of day are listed ("daily at 03:00, 09:00 and 15:00").
const MAX_TIMES: usize = 6;

/// Describes an `@every` interval of `secs` seconds, e.g. "every 1h30m".
pub(crate) fn describe_every(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::from("every ");
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

/// Describes a cron schedule in `tz`; `expression` is used by the fallback.
pub(crate) fn describe_cron(spec: &CronSpec, tz: Tz, expression: &str) -> String {
    describe_shape(spec, tz.name())
        .unwrap_or_else(|| format!("cron \"{expression}\" in {}", tz.name()))
}

fn bits(mask: u64, min: u32, max: u32) -> Vec<u32> {
    (min..=max).filter(|v| mask & (1 << v) != 0).collect()
}

/// `Some(n)` when `values` is exactly `0, n, 2n, ...` below `limit` and `n` divides `limit`.
fn even_step(values: &[u32], limit: u32) -> Option<u32> {
    let step = match values {
        [0] => return None,
        [0, second, ..] => *second,
        _ => return None,
    };
    let expected: Vec<u32> = (0..limit).step_by(step as usize).collect();
    (limit.is_multiple_of(step) && values == expected.as_slice()).then_some(step)
}

fn describe_shape(spec: &CronSpec, zone: &str) -> Option<String> {
    if spec.years.is_some() {
        return None;
    }
    let seconds = bits(spec.seconds, 0, 59);
    let minutes = bits(spec.minutes, 0, 59);
    let hours = bits(u64::from(spec.hours), 0, 23);
    let doms = bits(u64::from(spec.days_of_month), 1, 31);
    let months = bits(u64::from(spec.months), 1, 12);
    let dows = bits(u64::from(spec.days_of_week), 0, 6);
    let every_day = !spec.dom_restricted && !spec.dow_restricted && months.len() == 12;
    let all_hours = hours.len() == 24;

    // Sub-hourly cadences, every day.
    if every_day && all_hours && minutes.len() == 60 {
        return match (seconds.as_slice(), even_step(&seconds, 60)) {
            (s, _) if s.len() == 60 => Some("every second".to_owned()),
            ([0], _) => Some("every minute".to_owned()),
            (_, Some(n)) => Some(format!("every {n} seconds")),
            _ => None,
        };
    }
    if every_day
        && all_hours
        && seconds == [0]
        && let Some(n) = even_step(&minutes, 60)
    {
        return Some(format!("every {n} minutes"));
    }
    let [second] = seconds.as_slice() else {
        return None;
    };
    let clock = |h: Option<u32>, m: u32| match (h, *second) {
        (Some(h), 0) => format!("{h:02}:{m:02}"),
        (Some(h), s) => format!("{h:02}:{m:02}:{s:02}"),
        (None, 0) => format!(":{m:02}"),
        (None, s) => format!(":{m:02}:{s:02}"),
    };
    if all_hours {
        if !every_day || minutes.len() > MAX_TIMES {
            return None;
        }
        let list: Vec<String> = minutes.iter().map(|m| clock(None, *m)).collect();
        return Some(format!("hourly at {} {zone}", and_list(&list)));
    }
    if hours.len() * minutes.len() > MAX_TIMES {
        return None;
    }
    let times: Vec<String> = hours
        .iter()
        .flat_map(|h| minutes.iter().map(move |m| (*h, *m)))
        .map(|(h, m)| clock(Some(h), m))
        .collect();
    let at = format!("at {} {zone}", and_list(&times));
    if every_day {
        return Some(format!("daily {at}"));
    }
    if spec.dow_restricted && !spec.dom_restricted && months.len() == 12 {
        return Some(format!("{} {at}", describe_days(&dows)));
    }
    if spec.dom_restricted && !spec.dow_restricted {
        let days: Vec<String> = doms.iter().map(u32::to_string).collect();
        if months.len() == 12 {
            let noun = if days.len() == 1 { "day" } else { "days" };
            return Some(format!("monthly on {noun} {} {at}", and_list(&days)));
        }
        if let ([day], [month]) = (doms.as_slice(), months.as_slice()) {
            return Some(format!("yearly on {day} {} {at}", MONTHS[*month as usize]));
        }
    }
    None
}

/// "Sundays", "Mondays to Fridays", "Saturdays and Sundays", "Mondays, Wednesdays and Fridays".
/// Weeks are read Monday first, so `5-7` (Friday to Sunday) is one run.
fn describe_days(dows: &[u32]) -> String {
    let monday_first: Vec<u32> = [1, 2, 3, 4, 5, 6, 0]
        .into_iter()
        .filter(|d| dows.contains(d))
        .collect();
    let position = |d: u32| (d + 6) % 7;
    let contiguous = monday_first
        .windows(2)
        .all(|w| position(w[1]) == position(w[0]) + 1);
    if let (true, Some(first), Some(last)) = (
        monday_first.len() >= 3 && contiguous,
        monday_first.first(),
        monday_first.last(),
    ) {
        return format!(
            "{} to {}",
            DAY_PLURALS[*first as usize], DAY_PLURALS[*last as usize]
        );
    }
    let names: Vec<String> = monday_first
        .iter()
        .map(|d| DAY_PLURALS[*d as usize].to_owned())
        .collect();
    and_list(&names)
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
