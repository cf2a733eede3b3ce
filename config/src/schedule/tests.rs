//! Owns the schedule engine's cross-cutting tests: the 2026 daylight-saving tables, the
//! brute-force oracle, property tests over many zones, the cron dialect, errors, jitter,
//! descriptions, and a timing probe (`cargo test --release -- --ignored --nocapture`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{
    DateTime, Datelike, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use proptest::prelude::*;
use serde::Deserialize;
use serde::de::IntoDeserializer;

use super::*;

const GAPS: [DstGap; 2] = [DstGap::Shift, DstGap::Skip];
const REPEATS: [DstRepeat; 3] = [DstRepeat::First, DstRepeat::Last, DstRepeat::Both];

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("test instant")
}

fn tz(name: &str) -> Tz {
    name.parse().expect("test zone")
}

fn sched(expr: &str, zone: Tz, gap: DstGap, repeat: DstRepeat) -> Schedule {
    Schedule::parse(expr, zone, gap, repeat, Duration::ZERO, "").expect("valid test schedule")
}

fn simple(expr: &str, zone: Tz) -> Schedule {
    sched(expr, zone, DstGap::Shift, DstRepeat::First)
}

fn fmt(o: &Occurrence) -> String {
    let t = o.instant.to_rfc3339_opts(SecondsFormat::Secs, true);
    match o.kind {
        OccurrenceKind::Fire => t,
        OccurrenceKind::Skipped(reason) => format!("{} {t}", reason.as_str()),
    }
}

/// Occurrences in `(from, to]`, formatted.
fn window(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    s.occurrences(from)
        .take_while(|o| o.instant <= to)
        .map(|o| fmt(&o))
        .collect()
}

fn fires(s: &Schedule, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    s.occurrences(from)
        .filter(|o| o.kind == OccurrenceKind::Fire)
        .take(n)
        .map(|o| o.instant)
        .collect()
}

/// Checks, from many starting points in `[from, to]`, that `next_fire` computed fresh and a
/// fresh `occurrences` walk agree with one long walk from `from`.
fn assert_walks_agree(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>, step_secs: i64) {
    let all: Vec<Occurrence> = s
        .occurrences(from)
        .take_while(|o| o.instant <= to + TimeDelta::days(2))
        .collect();
    let mut t = from;
    while t <= to {
        let rest: Vec<&Occurrence> = all.iter().filter(|o| o.instant > t).collect();
        let expected_fire = rest
            .iter()
            .find(|o| o.kind == OccurrenceKind::Fire)
            .map(|o| o.instant);
        if let Some(expected) = expected_fire {
            assert_eq!(s.next_fire(t), Some(expected), "next_fire({t}) for {:?}", s);
        }
        let fresh: Vec<Occurrence> = s.occurrences(t).take(rest.len().min(4)).collect();
        let long: Vec<Occurrence> = rest.iter().take(fresh.len()).map(|o| **o).collect();
        assert_eq!(fresh, long, "occurrences({t}) for {:?}", s);
        t += TimeDelta::seconds(step_secs);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Tables for the 2026 transitions.
//
// 2026 transitions (from chrono-tz 0.10.4, tzdb 2025b):
//   America/Chicago      2026-03-08 08:00Z  CST -06 -> CDT -05  (local 02:00-03:00 missing)
//                        2026-11-01 07:00Z  CDT -05 -> CST -06  (local 01:00-02:00 twice)
//   Europe/Berlin        2026-03-29 01:00Z  CET +01 -> CEST +02 (local 02:00-03:00 missing)
//                        2026-10-25 01:00Z  CEST +02 -> CET +01 (local 02:00-03:00 twice)
//   America/Santiago     2026-04-05 03:00Z  -03 -> -04          (local 23:00-24:00 on 4 April twice)
//                        2026-09-06 04:00Z  -04 -> -03          (local 00:00-01:00 on 6 September missing)
//   Australia/Lord_Howe  2026-04-04 15:00Z  +11 -> +10:30       (local 01:30-02:00 on 5 April twice)
//                        2026-10-03 15:30Z  +10:30 -> +11       (local 02:00-02:30 on 4 October missing)
// ---------------------------------------------------------------------------------------------

/// Expected occurrences, by the policy that matters for the case.
enum Expect {
    /// Neither policy matters.
    Same(&'static [&'static str]),
    /// A gap: shift, skip.
    Gap(&'static [&'static str], &'static [&'static str]),
    /// A fold: first, last, both.
    Fold(
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    ),
}

struct Case {
    zone: &'static str,
    expr: &'static str,
    from: &'static str,
    to: &'static str,
    expect: Expect,
}

const CASES: &[Case] = &[
    // America/Chicago, spring forward.
    Case {
        zone: "America/Chicago",
        expr: "30 2 * * *",
        from: "2026-03-06T12:00:00Z",
        to: "2026-03-10T12:00:00Z",
        expect: Expect::Gap(
            &[
                "2026-03-07T08:30:00Z",
                "2026-03-08T08:00:00Z",
                "2026-03-09T07:30:00Z",
                "2026-03-10T07:30:00Z",
            ],
            &[
                "2026-03-07T08:30:00Z",
                "dst_gap 2026-03-08T08:00:00Z",
                "2026-03-09T07:30:00Z",
                "2026-03-10T07:30:00Z",
            ],
        ),
    },
    Case {
        zone: "America/Chicago",
        expr: "30 1 * * *",
        from: "2026-03-06T12:00:00Z",
        to: "2026-03-10T12:00:00Z",
        expect: Expect::Same(&[
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z",
        ]),
    },
    // America/Chicago, fall back.
    Case {
        zone: "America/Chicago",
        expr: "30 1 * * *",
        from: "2026-10-30T12:00:00Z",
        to: "2026-11-03T12:00:00Z",
        expect: Expect::Fold(
            &[
                "2026-10-31T06:30:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-02T07:30:00Z",
                "2026-11-03T07:30:00Z",
            ],
            &[
                "2026-10-31T06:30:00Z",
                "2026-11-01T07:30:00Z",
                "2026-11-02T07:30:00Z",
                "2026-11-03T07:30:00Z",
            ],
            &[
                "2026-10-31T06:30:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:30:00Z",
                "2026-11-02T07:30:00Z",
                "2026-11-03T07:30:00Z",
            ],
        ),
    },
    Case {
        zone: "America/Chicago",
        expr: "30 2 * * *",
        from: "2026-10-30T12:00:00Z",
        to: "2026-11-03T12:00:00Z",
        expect: Expect::Same(&[
            "2026-10-31T07:30:00Z",
            "2026-11-01T08:30:00Z",
            "2026-11-02T08:30:00Z",
            "2026-11-03T08:30:00Z",
        ]),
    },
    // Europe/Berlin, spring forward.
    Case {
        zone: "Europe/Berlin",
        expr: "30 2 * * *",
        from: "2026-03-27T12:00:00Z",
        to: "2026-03-31T12:00:00Z",
        expect: Expect::Gap(
            &[
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z",
            ],
            &[
                "2026-03-28T01:30:00Z",
                "dst_gap 2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z",
            ],
        ),
    },
    Case {
        zone: "Europe/Berlin",
        expr: "30 1 * * *",
        from: "2026-03-27T12:00:00Z",
        to: "2026-03-31T12:00:00Z",
        expect: Expect::Same(&[
            "2026-03-28T00:30:00Z",
            "2026-03-29T00:30:00Z",
            "2026-03-29T23:30:00Z",
            "2026-03-30T23:30:00Z",
        ]),
    },
    // Europe/Berlin, fall back.
    Case {
        zone: "Europe/Berlin",
        expr: "30 2 * * *",
        from: "2026-10-23T12:00:00Z",
        to: "2026-10-27T12:00:00Z",
        expect: Expect::Fold(
            &[
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z",
            ],
            &[
                "2026-10-24T00:30:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z",
            ],
            &[
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z",
            ],
        ),
    },
    Case {
        zone: "Europe/Berlin",
        expr: "30 1 * * *",
        from: "2026-10-23T12:00:00Z",
        to: "2026-10-27T12:00:00Z",
        expect: Expect::Same(&[
            "2026-10-23T23:30:00Z",
            "2026-10-24T23:30:00Z",
            "2026-10-26T00:30:00Z",
            "2026-10-27T00:30:00Z",
        ]),
    },
    // America/Santiago: the September gap is at midnight.
    Case {
        zone: "America/Santiago",
        expr: "0 0 * * *",
        from: "2026-09-04T12:00:00Z",
        to: "2026-09-08T12:00:00Z",
        expect: Expect::Gap(
            &[
                "2026-09-05T04:00:00Z",
                "2026-09-06T04:00:00Z",
                "2026-09-07T03:00:00Z",
                "2026-09-08T03:00:00Z",
            ],
            &[
                "2026-09-05T04:00:00Z",
                "dst_gap 2026-09-06T04:00:00Z",
                "2026-09-07T03:00:00Z",
                "2026-09-08T03:00:00Z",
            ],
        ),
    },
    Case {
        zone: "America/Santiago",
        expr: "30 0 * * *",
        from: "2026-09-04T12:00:00Z",
        to: "2026-09-08T12:00:00Z",
        expect: Expect::Gap(
            &[
                "2026-09-05T04:30:00Z",
                "2026-09-06T04:00:00Z",
                "2026-09-07T03:30:00Z",
                "2026-09-08T03:30:00Z",
            ],
            &[
                "2026-09-05T04:30:00Z",
                "dst_gap 2026-09-06T04:00:00Z",
                "2026-09-07T03:30:00Z",
                "2026-09-08T03:30:00Z",
            ],
        ),
    },
    // America/Santiago, April: midnight itself is unique (the repeated hour is 23:00-24:00).
    Case {
        zone: "America/Santiago",
        expr: "0 0 * * *",
        from: "2026-04-03T12:00:00Z",
        to: "2026-04-07T12:00:00Z",
        expect: Expect::Same(&[
            "2026-04-04T03:00:00Z",
            "2026-04-05T04:00:00Z",
            "2026-04-06T04:00:00Z",
            "2026-04-07T04:00:00Z",
        ]),
    },
    Case {
        zone: "America/Santiago",
        expr: "30 0 * * *",
        from: "2026-04-03T12:00:00Z",
        to: "2026-04-07T12:00:00Z",
        expect: Expect::Same(&[
            "2026-04-04T03:30:00Z",
            "2026-04-05T04:30:00Z",
            "2026-04-06T04:30:00Z",
            "2026-04-07T04:30:00Z",
        ]),
    },
    Case {
        zone: "America/Santiago",
        expr: "30 23 * * *",
        from: "2026-04-03T12:00:00Z",
        to: "2026-04-07T12:00:00Z",
        expect: Expect::Fold(
            &[
                "2026-04-04T02:30:00Z",
                "2026-04-05T02:30:00Z",
                "2026-04-06T03:30:00Z",
                "2026-04-07T03:30:00Z",
            ],
            &[
                "2026-04-04T02:30:00Z",
                "2026-04-05T03:30:00Z",
                "2026-04-06T03:30:00Z",
                "2026-04-07T03:30:00Z",
            ],
            &[
                "2026-04-04T02:30:00Z",
                "2026-04-05T02:30:00Z",
                "2026-04-05T03:30:00Z",
                "2026-04-06T03:30:00Z",
                "2026-04-07T03:30:00Z",
            ],
        ),
    },
    // Australia/Lord_Howe: 30-minute shifts.
    Case {
        zone: "Australia/Lord_Howe",
        expr: "15 2 * * *",
        from: "2026-10-02T00:00:00Z",
        to: "2026-10-06T00:00:00Z",
        expect: Expect::Gap(
            &[
                "2026-10-02T15:45:00Z",
                "2026-10-03T15:30:00Z",
                "2026-10-04T15:15:00Z",
                "2026-10-05T15:15:00Z",
            ],
            &[
                "2026-10-02T15:45:00Z",
                "dst_gap 2026-10-03T15:30:00Z",
                "2026-10-04T15:15:00Z",
                "2026-10-05T15:15:00Z",
            ],
        ),
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "45 1 * * *",
        from: "2026-10-02T00:00:00Z",
        to: "2026-10-06T00:00:00Z",
        expect: Expect::Same(&[
            "2026-10-02T15:15:00Z",
            "2026-10-03T15:15:00Z",
            "2026-10-04T14:45:00Z",
            "2026-10-05T14:45:00Z",
        ]),
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "45 1 * * *",
        from: "2026-04-03T00:00:00Z",
        to: "2026-04-07T00:00:00Z",
        expect: Expect::Fold(
            &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z",
                "2026-04-05T15:15:00Z",
                "2026-04-06T15:15:00Z",
            ],
            &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T15:15:00Z",
                "2026-04-05T15:15:00Z",
                "2026-04-06T15:15:00Z",
            ],
            &[
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z",
                "2026-04-04T15:15:00Z",
                "2026-04-05T15:15:00Z",
                "2026-04-06T15:15:00Z",
            ],
        ),
    },
    Case {
        zone: "Australia/Lord_Howe",
        expr: "15 2 * * *",
        from: "2026-04-03T00:00:00Z",
        to: "2026-04-07T00:00:00Z",
        expect: Expect::Same(&[
            "2026-04-03T15:15:00Z",
            "2026-04-04T15:45:00Z",
            "2026-04-05T15:45:00Z",
            "2026-04-06T15:45:00Z",
        ]),
    },
];

#[test]
fn transitions_2026_table() {
    for case in CASES {
        for gap in GAPS {
            for repeat in REPEATS {
                let s = sched(case.expr, tz(case.zone), gap, repeat);
                let expected: &[&str] = match case.expect {
                    Expect::Same(e) => e,
                    Expect::Gap(shift, skip) => match gap {
                        DstGap::Shift => shift,
                        DstGap::Skip => skip,
                    },
                    Expect::Fold(first, last, both) => match repeat {
                        DstRepeat::First => first,
                        DstRepeat::Last => last,
                        DstRepeat::Both => both,
                    },
                };
                let (from, to) = (utc(case.from), utc(case.to));
                assert_eq!(
                    window(&s, from, to),
                    expected,
                    "{} {} gap={gap:?} repeat={repeat:?}",
                    case.zone,
                    case.expr
                );
                assert_walks_agree(&s, from, to, 450);
            }
        }
    }
}

#[test]
fn chicago_fall_back_between_the_two_half_past_ones() {
    // 01:45 CDT (06:45Z) lies between 01:30 CDT (06:30Z) and 01:30 CST (07:30Z).
    let after = utc("2026-11-01T06:45:00Z");
    let zone = chrono_tz::America::Chicago;
    let next = |repeat| sched("30 1 * * *", zone, DstGap::Shift, repeat).next_fire(after);
    assert_eq!(next(DstRepeat::First), Some(utc("2026-11-02T07:30:00Z")));
    assert_eq!(next(DstRepeat::Last), Some(utc("2026-11-01T07:30:00Z")));
    assert_eq!(next(DstRepeat::Both), Some(utc("2026-11-01T07:30:00Z")));
    // And from inside the second pass (01:10 CST).
    let after = utc("2026-11-01T07:10:00Z");
    let next = |repeat| sched("30 1 * * *", zone, DstGap::Shift, repeat).next_fire(after);
    assert_eq!(next(DstRepeat::First), Some(utc("2026-11-02T07:30:00Z")));
    assert_eq!(next(DstRepeat::Last), Some(utc("2026-11-01T07:30:00Z")));
    assert_eq!(next(DstRepeat::Both), Some(utc("2026-11-01T07:30:00Z")));
}

#[test]
fn gap_times_collapse_into_one_fire() {
    // */15: 02:00, 02:15, 02:30, 02:45 (all missing) and 03:00 map to 08:00Z.
    let zone = chrono_tz::America::Chicago;
    let (from, to) = (utc("2026-03-08T07:30:00Z"), utc("2026-03-08T08:30:00Z"));
    let shift = sched("*/15 * * * *", zone, DstGap::Shift, DstRepeat::First);
    assert_eq!(
        window(&shift, from, to),
        [
            "2026-03-08T07:45:00Z",
            "2026-03-08T08:00:00Z",
            "2026-03-08T08:15:00Z",
            "2026-03-08T08:30:00Z"
        ]
    );
    let first_at_gap = shift.occurrences(utc("2026-03-08T07:50:00Z")).next();
    let local_0200 =
        NaiveDateTime::parse_from_str("2026-03-08 02:00", "%Y-%m-%d %H:%M").expect("time");
    assert_eq!(first_at_gap.map(|o| o.local), Some(local_0200));

    let skip = sched("*/15 * * * *", zone, DstGap::Skip, DstRepeat::First);
    let occurrences: Vec<Occurrence> = skip
        .occurrences(from)
        .take_while(|o| o.instant <= to)
        .collect();
    let skipped: Vec<String> = occurrences
        .iter()
        .filter(|o| o.kind != OccurrenceKind::Fire)
        .map(|o| o.local.format("%H:%M").to_string())
        .collect();
    assert_eq!(skipped, ["02:00", "02:15", "02:30", "02:45"]);
    assert_eq!(
        occurrences.iter().map(fmt).collect::<Vec<_>>(),
        [
            "2026-03-08T07:45:00Z",
            "dst_gap 2026-03-08T08:00:00Z",
            "dst_gap 2026-03-08T08:00:00Z",
            "dst_gap 2026-03-08T08:00:00Z",
            "dst_gap 2026-03-08T08:00:00Z",
            "2026-03-08T08:00:00Z",
            "2026-03-08T08:15:00Z",
            "2026-03-08T08:30:00Z"
        ]
    );
    assert_eq!(
        skip.next_fire(utc("2026-03-08T07:45:00Z")),
        Some(utc("2026-03-08T08:00:00Z"))
    );
}

#[test]
fn every_second_schedule_across_transitions() {
    let zone = chrono_tz::America::Chicago;
    for gap in GAPS {
        for repeat in REPEATS {
            let s = sched("* * * * * *", zone, gap, repeat);
            // Spring: the second after 01:59:59 CST is 03:00:00 CDT.
            assert_eq!(
                s.next_fire(utc("2026-03-08T07:59:59Z")),
                Some(utc("2026-03-08T08:00:00Z"))
            );
            // Fall: 01:59:59 CDT is followed by 01:00:00 CST (except under `first`).
            let after_fold_first_pass = s.next_fire(utc("2026-11-01T06:59:59Z"));
            let expected = match repeat {
                DstRepeat::First => utc("2026-11-01T08:00:00Z"),
                DstRepeat::Last | DstRepeat::Both => utc("2026-11-01T07:00:00Z"),
            };
            assert_eq!(after_fold_first_pass, Some(expected), "{gap:?} {repeat:?}");
            let mid_first_pass = s.next_fire(utc("2026-11-01T06:20:00Z"));
            let expected = match repeat {
                DstRepeat::First | DstRepeat::Both => utc("2026-11-01T06:20:01Z"),
                DstRepeat::Last => utc("2026-11-01T07:00:00Z"),
            };
            assert_eq!(mid_first_pass, Some(expected), "{gap:?} {repeat:?}");
            let mid_second_pass = s.next_fire(utc("2026-11-01T07:20:00Z"));
            let expected = match repeat {
                DstRepeat::First => utc("2026-11-01T08:00:00Z"),
                DstRepeat::Last | DstRepeat::Both => utc("2026-11-01T07:20:01Z"),
            };
            assert_eq!(mid_second_pass, Some(expected), "{gap:?} {repeat:?}");
        }
    }
    // Both: the whole fold fires twice, every second, in instant order.
    let s = sched("* * * * * *", zone, DstGap::Shift, DstRepeat::Both);
    let from = utc("2026-11-01T05:59:59Z");
    let fired = fires(&s, from, 3 * 3600);
    let expected: Vec<DateTime<Utc>> = (0..3 * 3600)
        .map(|i| from + TimeDelta::seconds(i + 1))
        .collect();
    assert_eq!(fired, expected);
}

#[test]
fn whole_day_gap_samoa_2011() {
    // Pacific/Apia skipped 30 December 2011: 2011-12-29 23:59:59 -10 was followed by
    // 2011-12-31 00:00:00 +14 (transition 2011-12-30T10:00:00Z).
    let zone = tz("Pacific/Apia");
    let from = utc("2011-12-28T12:00:00Z");
    let to = utc("2012-01-01T12:00:00Z");
    let shift = sched("0 12 * * *", zone, DstGap::Shift, DstRepeat::First);
    assert_eq!(
        window(&shift, from, to),
        [
            "2011-12-28T22:00:00Z",
            "2011-12-29T22:00:00Z",
            "2011-12-30T10:00:00Z",
            "2011-12-30T22:00:00Z",
            "2011-12-31T22:00:00Z"
        ]
    );
    let skip = sched("0 12 * * *", zone, DstGap::Skip, DstRepeat::First);
    assert_eq!(
        window(&skip, from, to),
        [
            "2011-12-28T22:00:00Z",
            "2011-12-29T22:00:00Z",
            "dst_gap 2011-12-30T10:00:00Z",
            "2011-12-30T22:00:00Z",
            "2011-12-31T22:00:00Z"
        ]
    );
    assert_walks_agree(&shift, from, to, 3600);
    assert_walks_agree(&skip, from, to, 3600);
}

// ---------------------------------------------------------------------------------------------
// 2. Brute-force oracle.
// ---------------------------------------------------------------------------------------------

/// Expected occurrence: (instant, local, skipped).
type Expected = (DateTime<Utc>, NaiveDateTime, bool);

fn wall(zone: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&zone).naive_local()
}

/// What the oracle saw at one UTC minute.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// A matching wall minute the clock jumped over, belonging to the instant after the jump.
    Gap,
    /// A matching wall minute shown at this instant, the `nth` of `count` times it is shown.
    Wall { nth: u32, count: u32 },
}

/// Brute-force oracle for minute-granularity schedules over `(from, to]` (minute-aligned, and
/// only for zones whose transitions fall on whole minutes). It never asks the zone how a local
/// time maps to instants: it reads the wall clock at every UTC minute, counts how often each
/// wall minute is shown (with a day of context either side), and treats a jump of the wall
/// clock by more than a minute as a gap whose skipped wall minutes belong to the instant after
/// the jump.
struct Oracle {
    seen: Vec<(DateTime<Utc>, NaiveDateTime, Seen)>,
}

impl Oracle {
    fn new(
        zone: Tz,
        matches: &dyn Fn(NaiveDateTime) -> bool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Oracle {
        let minute = TimeDelta::minutes(1);
        let (ctx_from, ctx_to) = (from - TimeDelta::days(1), to + TimeDelta::days(1));
        let mut total: HashMap<NaiveDateTime, u32> = HashMap::new();
        let mut t = ctx_from;
        while t <= ctx_to {
            *total.entry(wall(zone, t)).or_default() += 1;
            t += minute;
        }
        let mut shown: HashMap<NaiveDateTime, u32> = HashMap::new();
        let mut seen = Vec::new();
        let mut t = ctx_from;
        while t <= to {
            let local = wall(zone, t);
            let nth = {
                let n = shown.entry(local).or_default();
                *n += 1;
                *n
            };
            if t > from {
                let previous = wall(zone, t - minute);
                let mut skipped = previous + minute;
                while skipped < local {
                    if matches(skipped) {
                        seen.push((t, skipped, Seen::Gap));
                    }
                    skipped += minute;
                }
                if matches(local) {
                    let count = total.get(&local).copied().unwrap_or(1);
                    seen.push((t, local, Seen::Wall { nth, count }));
                }
            }
            t += minute;
        }
        Oracle { seen }
    }

    /// The expected occurrences under the given rules.
    fn expected(&self, gap: DstGap, repeat: DstRepeat) -> Vec<Expected> {
        let mut out: Vec<Expected> = self
            .seen
            .iter()
            .filter_map(|&(instant, local, seen)| match seen {
                Seen::Gap => Some((instant, local, gap == DstGap::Skip)),
                Seen::Wall { nth, count } => {
                    let fire = count == 1
                        || match repeat {
                            DstRepeat::First => nth == 1,
                            DstRepeat::Last => nth == count,
                            DstRepeat::Both => true,
                        };
                    fire.then_some((instant, local, false))
                }
            })
            .collect();
        out.sort_by_key(|(instant, local, _)| (*instant, *local));
        let mut last_fire: Option<DateTime<Utc>> = None;
        out.retain(|(instant, _, skipped)| {
            if *skipped {
                return true;
            }
            let keep = last_fire.is_none_or(|l| *instant > l);
            last_fire = Some(*instant);
            keep
        });
        out
    }
}

fn actual(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Expected> {
    s.occurrences(from)
        .take_while(|o| o.instant <= to)
        .map(|o| (o.instant, o.local, o.kind != OccurrenceKind::Fire))
        .collect()
}

/// For every rule combination: compares the walk from `from` with the oracle, and fresh walks
/// and `next_fire` from every 17 minutes inside the window (so also from inside folds and
/// gaps) with the oracle's suffix.
fn assert_matches_oracle(expr: &str, zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) {
    let probe = simple(expr, zone);
    let oracle = Oracle::new(zone, &|local| probe.matches_local(local), from, to);
    for gap in GAPS {
        for repeat in REPEATS {
            let s = sched(expr, zone, gap, repeat);
            let expected = oracle.expected(gap, repeat);
            let context = format!("{expr:?} in {} gap={gap:?} repeat={repeat:?}", zone.name());
            assert_eq!(actual(&s, from, to), expected, "{context} from {from}");
            let mut p = from;
            while p < to {
                let suffix: Vec<Expected> = expected
                    .iter()
                    .filter(|e| e.0 > p)
                    .take(4)
                    .copied()
                    .collect();
                let fresh: Vec<Expected> = actual(&s, p, to).into_iter().take(4).collect();
                assert_eq!(fresh, suffix, "{context} from {p}");
                if let Some(next) = suffix.iter().find(|e| !e.2) {
                    assert_eq!(s.next_fire(p), Some(next.0), "{context} next_fire({p})");
                }
                p += TimeDelta::minutes(17);
            }
        }
    }
}

#[test]
fn oracle_around_transitions() {
    // Windows of 14 hours either side of each transition.
    let transitions = [
        ("America/Chicago", "2026-03-08T08:00:00Z"),
        ("America/Chicago", "2026-11-01T07:00:00Z"),
        ("Europe/Berlin", "2026-03-29T01:00:00Z"),
        ("Europe/Berlin", "2026-10-25T01:00:00Z"),
        ("America/Santiago", "2026-04-05T03:00:00Z"),
        ("America/Santiago", "2026-09-06T04:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T15:00:00Z"),
        ("Australia/Lord_Howe", "2026-10-03T15:30:00Z"),
        ("America/St_Johns", "2026-11-01T04:30:00Z"),
        ("Antarctica/Troll", "2026-10-25T01:00:00Z"),
    ];
    let exprs = [
        "*/15 * * * *",
        "30 1 * * *",
        "30 2 * * *",
        "*/7 0-3,23 * * *",
        "45 23 * * *",
        "* 2 * * *",
        "15,45 1,2 * * 0",
    ];
    for (zone, transition) in transitions {
        let t = utc(transition);
        for expr in exprs {
            assert_matches_oracle(
                expr,
                tz(zone),
                t - TimeDelta::hours(14),
                t + TimeDelta::hours(14),
            );
        }
    }
}

#[test]
fn oracle_whole_day_gaps_and_odd_shifts() {
    // Pacific/Apia 2011 and Pacific/Kwajalein 1993 skipped a whole day; Asia/Pyongyang moved
    // forward by 30 minutes in 2018.
    let windows = [
        (
            "Pacific/Apia",
            "2011-12-29T00:00:00Z",
            "2011-12-31T00:00:00Z",
        ),
        (
            "Pacific/Kwajalein",
            "1993-08-19T00:00:00Z",
            "1993-08-22T00:00:00Z",
        ),
        (
            "Asia/Pyongyang",
            "2018-05-03T12:00:00Z",
            "2018-05-05T00:00:00Z",
        ),
    ];
    for (zone, from, to) in windows {
        for expr in ["0 12 * * *", "*/30 * * * *", "0 0 * * *"] {
            assert_matches_oracle(expr, tz(zone), utc(from), utc(to));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Property tests.
// ---------------------------------------------------------------------------------------------

/// Zones with daylight-saving or other transitions in 2020-2032, to bias the sampling.
const DST_ZONES: &[&str] = &[
    "America/Chicago",
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "America/St_Johns",
    "America/Asuncion",
    "Europe/Berlin",
    "Europe/London",
    "Africa/Casablanca",
    "Asia/Jerusalem",
    "Asia/Tehran",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Antarctica/Troll",
];

/// The first transition strictly after `t` within `horizon`, if any (UTC offset change).
fn next_transition(zone: Tz, t: DateTime<Utc>, horizon: TimeDelta) -> Option<DateTime<Utc>> {
    let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix();
    let start = offset(t);
    let step = TimeDelta::hours(6);
    let mut lo = t;
    while lo - t < horizon {
        let hi = lo + step;
        if offset(hi) != start {
            let (mut a, mut b) = (lo.timestamp(), hi.timestamp());
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                let m = DateTime::from_timestamp(mid, 0)?;
                if offset(m) == start {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            return DateTime::from_timestamp(b, 0);
        }
        lo = hi;
    }
    None
}

#[derive(Debug, Clone)]
struct Generated {
    zone: Tz,
    minutes: Vec<u32>,
    hours: Option<Vec<u32>>,
    doms: Option<Vec<u32>>,
    dows: Option<Vec<u32>>,
    gap: DstGap,
    repeat: DstRepeat,
    start: DateTime<Utc>,
    near_transition: Option<i64>,
}

impl Generated {
    fn expression(&self) -> String {
        let list = |v: &Option<Vec<u32>>| match v {
            None => "*".to_owned(),
            Some(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        };
        format!(
            "{} {} {} * {}",
            list(&Some(self.minutes.clone())),
            list(&self.hours),
            list(&self.doms),
            list(&self.dows)
        )
    }

    /// Independent matcher: Unix semantics written directly from the generated parts.
    fn matches(&self, local: NaiveDateTime) -> bool {
        use chrono::Timelike;
        let in_list = |v: &Option<Vec<u32>>, x: u32| v.as_ref().is_none_or(|v| v.contains(&x));
        let dow_now = local.weekday().num_days_from_sunday();
        let dom_ok = in_list(&self.doms, local.day());
        let dow_ok = self
            .dows
            .as_ref()
            .is_none_or(|v| v.iter().any(|d| d % 7 == dow_now));
        let day_ok = if self.doms.is_some() && self.dows.is_some() {
            dom_ok || dow_ok
        } else {
            dom_ok && dow_ok
        };
        local.second() == 0
            && self.minutes.contains(&local.minute())
            && in_list(&self.hours, local.hour())
            && day_ok
    }
}

fn generated() -> impl Strategy<Value = Generated> {
    let zone = prop_oneof![
        (0..chrono_tz::TZ_VARIANTS.len()).prop_map(|i| chrono_tz::TZ_VARIANTS[i]),
        (0..DST_ZONES.len()).prop_map(|i| tz(DST_ZONES[i])),
    ];
    let minutes = prop_oneof![
        proptest::collection::vec(0u32..60, 1..4),
        (1u32..31).prop_map(|step| (0..60).step_by(step as usize).collect()),
    ];
    let hours = proptest::option::weighted(0.7, proptest::collection::vec(0u32..24, 1..5));
    let doms = proptest::option::weighted(0.2, proptest::collection::vec(1u32..29, 1..4));
    let dows = proptest::option::weighted(0.3, proptest::collection::vec(0u32..8, 1..4));
    let start = 1_577_836_800i64..1_956_528_000i64; // 2020-01-01 .. 2032-01-01
    let near = proptest::option::of(0i64..2 * 86_400);
    (
        zone,
        minutes,
        hours,
        doms,
        dows,
        any::<bool>(),
        0usize..3,
        start,
        near,
    )
        .prop_map(
            |(zone, minutes, hours, doms, dows, skip, repeat, start, near)| Generated {
                zone,
                minutes,
                hours,
                doms,
                dows,
                gap: if skip { DstGap::Skip } else { DstGap::Shift },
                repeat: REPEATS[repeat],
                start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
                near_transition: near,
            },
        )
}

fn check_generated(g: &Generated) -> Result<(), TestCaseError> {
    let expr = g.expression();
    let s = Schedule::parse(&expr, g.zone, g.gap, g.repeat, Duration::ZERO, "")
        .map_err(|e| TestCaseError::fail(format!("{expr}: {e}")))?;
    let transition = next_transition(g.zone, g.start, TimeDelta::days(400));
    let start = match (g.near_transition, transition) {
        (Some(before), Some(t)) => t - TimeDelta::seconds(before),
        _ => g.start,
    };

    // Walk.
    let occurrences: Vec<Occurrence> = s.occurrences(start).take(60).collect();
    let fire_instants: Vec<DateTime<Utc>> = occurrences
        .iter()
        .filter(|o| o.kind == OccurrenceKind::Fire)
        .map(|o| o.instant)
        .collect();
    prop_assert!(
        fire_instants.windows(2).all(|w| w[0] < w[1]),
        "fires not increasing"
    );
    prop_assert!(occurrences.windows(2).all(|w| w[0].instant <= w[1].instant));
    prop_assert!(occurrences.iter().all(|o| o.instant > start));

    // Fresh next_fire agrees with the walk, from the start, from each fire, and from just
    // before each fire.
    if let Some(first) = fire_instants.first() {
        prop_assert_eq!(s.next_fire(start), Some(*first));
    }
    for w in fire_instants.windows(2) {
        prop_assert_eq!(s.next_fire(w[0]), Some(w[1]), "after {}", w[0]);
        prop_assert_eq!(s.next_fire(w[1] - TimeDelta::seconds(1)), Some(w[1]));
        let mid = w[0] + (w[1] - w[0]) / 2;
        prop_assert_eq!(s.next_fire(mid), Some(w[1]), "from mid {}", mid);
    }

    // Each occurrence's local time matches, and maps to its instant as the rules say.
    let mut fires_per_local: HashMap<NaiveDateTime, Vec<DateTime<Utc>>> = HashMap::new();
    for o in &occurrences {
        prop_assert!(g.matches(o.local), "{} does not match {expr}", o.local);
        match g.zone.from_local_datetime(&o.local) {
            chrono::LocalResult::Single(x) => {
                prop_assert_eq!(o.kind, OccurrenceKind::Fire);
                prop_assert_eq!(o.instant, x.with_timezone(&Utc));
            }
            chrono::LocalResult::None => {
                // A gap: the instant is the transition, whose wall clock jumps over `local`.
                let before = wall(g.zone, o.instant - TimeDelta::seconds(1));
                let after = wall(g.zone, o.instant);
                prop_assert!(
                    before < o.local && o.local < after,
                    "{} not in gap at {}",
                    o.local,
                    o.instant
                );
                let kind = match g.gap {
                    DstGap::Shift => OccurrenceKind::Fire,
                    DstGap::Skip => OccurrenceKind::Skipped(SkipReason::DstGap),
                };
                prop_assert_eq!(o.kind, kind);
            }
            chrono::LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (first, second) = (a.min(b), a.max(b));
                prop_assert!(o.instant == first || o.instant == second);
                fires_per_local.entry(o.local).or_default().push(o.instant);
                let allowed = match g.repeat {
                    DstRepeat::First => o.instant == first,
                    DstRepeat::Last => o.instant == second,
                    DstRepeat::Both => true,
                };
                prop_assert!(
                    allowed,
                    "{} fired at {} under {:?}",
                    o.local,
                    o.instant,
                    g.repeat
                );
            }
        }
    }
    // A repeated local time whose both instants lie inside the walked range fires exactly as
    // the repeat rule says.
    if let Some(last) = fire_instants.last() {
        for (local, instants) in &fires_per_local {
            if let chrono::LocalResult::Ambiguous(a, b) = g.zone.from_local_datetime(local) {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (first, second) = (a.min(b), a.max(b));
                if first > start && second < *last {
                    let expected = match g.repeat {
                        DstRepeat::First => vec![first],
                        DstRepeat::Last => vec![second],
                        DstRepeat::Both => vec![first, second],
                    };
                    prop_assert_eq!(instants, &expected, "{}", local);
                }
            }
        }
    }

    // Oracle on a window around the zone's next transition.
    if let Some(t) = transition {
        let from = DateTime::from_timestamp(t.timestamp() / 60 * 60, 0).unwrap_or(t)
            - TimeDelta::hours(30);
        let to = from + TimeDelta::hours(54);
        let expected =
            Oracle::new(g.zone, &|local| g.matches(local), from, to).expected(g.gap, g.repeat);
        prop_assert_eq!(
            actual(&s, from, to),
            expected,
            "{} in {}",
            expr,
            g.zone.name()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_schedules_hold_their_invariants(g in generated()) {
        check_generated(&g)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Dialect.
// ---------------------------------------------------------------------------------------------

fn weekdays(expr: &str, n: usize) -> Vec<Weekday> {
    let s = simple(expr, chrono_tz::UTC);
    let mut days: Vec<Weekday> = fires(&s, utc("2026-06-01T00:00:00Z"), n)
        .iter()
        .map(|t| t.weekday())
        .collect();
    days.sort_by_key(|d| d.num_days_from_monday());
    days.dedup();
    days
}

#[test]
fn day_of_week_numbers_are_unix() {
    use Weekday::*;
    assert_eq!(weekdays("0 9 * * 0", 10), [Sun]);
    assert_eq!(weekdays("0 9 * * 7", 10), [Sun]);
    assert_eq!(weekdays("0 9 * * 1", 10), [Mon]);
    assert_eq!(weekdays("0 9 * * 6", 10), [Sat]);
    assert_eq!(weekdays("0 9 * * 1-5", 30), [Mon, Tue, Wed, Thu, Fri]);
    assert_eq!(weekdays("0 9 * * MON-FRI", 30), [Mon, Tue, Wed, Thu, Fri]);
    assert_eq!(weekdays("0 9 * * mon-fri", 30), [Mon, Tue, Wed, Thu, Fri]);
    assert_eq!(weekdays("0 9 * * 5-7", 30), [Fri, Sat, Sun]);
    assert_eq!(weekdays("0 9 * * FRI-SUN", 30), [Fri, Sat, Sun]);
    assert_eq!(weekdays("0 9 * * */2", 30), [Tue, Thu, Sat, Sun]);
    assert_eq!(weekdays("0 9 * * 0,7", 10), [Sun]);
    assert_eq!(weekdays("0 9 ? * Sat,sun", 10), [Sat, Sun]);
    assert_eq!(weekdays("0 9 * * 1/2", 30), [Mon, Wed, Fri]);
    // The same numbers and names in 6- and 7-field form.
    assert_eq!(weekdays("0 0 9 * * 0", 10), [Sun]);
    assert_eq!(weekdays("0 0 9 * * 7 *", 10), [Sun]);
}

#[test]
fn day_of_month_or_day_of_week() {
    // Vixie cron: both restricted -> either matches. 2026-07-01 is a Wednesday.
    let s = simple("0 0 1 * MON", chrono_tz::UTC);
    let got: Vec<String> = fires(&s, utc("2026-06-27T00:00:00Z"), 7)
        .iter()
        .map(|t| t.format("%m-%d %a").to_string())
        .collect();
    assert_eq!(
        got,
        [
            "06-29 Mon",
            "07-01 Wed",
            "07-06 Mon",
            "07-13 Mon",
            "07-20 Mon",
            "07-27 Mon",
            "08-01 Sat"
        ]
    );
    // Only one restricted: plain AND.
    let s = simple("0 0 13 * *", chrono_tz::UTC);
    assert!(
        fires(&s, utc("2026-01-01T00:00:00Z"), 5)
            .iter()
            .all(|t| t.day() == 13)
    );
    let s = simple("0 0 * * FRI", chrono_tz::UTC);
    assert!(
        fires(&s, utc("2026-01-01T00:00:00Z"), 5)
            .iter()
            .all(|t| t.weekday() == Weekday::Fri)
    );
    // `?` leaves a field unrestricted.
    let s = simple("0 0 13 * ?", chrono_tz::UTC);
    assert!(
        fires(&s, utc("2026-01-01T00:00:00Z"), 5)
            .iter()
            .all(|t| t.day() == 13)
    );
}

#[test]
fn seconds_and_years() {
    let s = simple("*/20 * * * * *", chrono_tz::UTC);
    assert_eq!(
        fires(&s, utc("2026-01-01T00:00:00Z"), 4),
        [
            utc("2026-01-01T00:00:20Z"),
            utc("2026-01-01T00:00:40Z"),
            utc("2026-01-01T00:01:00Z"),
            utc("2026-01-01T00:01:20Z")
        ]
    );
    let s = simple("15 30 9 * * MON-FRI", chrono_tz::UTC);
    assert_eq!(
        s.next_fire(utc("2026-06-06T00:00:00Z")),
        Some(utc("2026-06-08T09:30:15Z"))
    );
    let s = simple("0 0 12 1 JAN * 2027", tz("Europe/Berlin"));
    assert_eq!(
        s.next_fire(utc("2026-06-01T00:00:00Z")),
        Some(utc("2027-01-01T11:00:00Z"))
    );
    assert_eq!(s.next_fire(utc("2027-01-01T11:00:00Z")), None);
    let past = simple("0 0 0 1 1 * 2020-2022", chrono_tz::UTC);
    assert_eq!(past.next_fire(utc("2026-01-01T00:00:00Z")), None);
    assert_eq!(past.occurrences(utc("2026-01-01T00:00:00Z")).next(), None);
    let s = simple("0 0 0 29 2 * 2026-2030", chrono_tz::UTC);
    assert_eq!(
        s.next_fire(utc("2026-01-01T00:00:00Z")),
        Some(utc("2028-02-29T00:00:00Z"))
    );
}

#[test]
fn field_syntax() {
    let utc0 = utc("2026-01-01T00:00:00Z");
    let minutes = |expr: &str| -> Vec<u32> {
        use chrono::Timelike;
        fires(&simple(expr, chrono_tz::UTC), utc0, 8)
            .iter()
            .map(|t| t.minute())
            .collect()
    };
    assert_eq!(minutes("*/15 0 * * *"), [15, 30, 45, 0, 15, 30, 45, 0]);
    assert_eq!(minutes("10-20/5 0 * * *"), [10, 15, 20, 10, 15, 20, 10, 15]);
    assert_eq!(minutes("50/4 0 * * *"), [50, 54, 58, 50, 54, 58, 50, 54]);
    assert_eq!(minutes("5,1,3 0 * * *"), [1, 3, 5, 1, 3, 5, 1, 3]);
    let months = |expr: &str| -> Vec<u32> {
        fires(&simple(expr, chrono_tz::UTC), utc0, 4)
            .iter()
            .map(|t| t.month())
            .collect()
    };
    assert_eq!(months("0 0 2 JAN-MAR *"), [1, 2, 3, 1]);
    assert_eq!(months("0 0 2 jun,Dec *"), [6, 12, 6, 12]);
    assert_eq!(months("0 0 2 */4 *"), [1, 5, 9, 1]);
}

#[test]
fn shorthands() {
    let zone = tz("Europe/Berlin");
    let from = utc("2026-03-15T10:00:00Z");
    for (short, long) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ] {
        let (a, b) = (simple(short, zone), simple(long, zone));
        assert_eq!(fires(&a, from, 5), fires(&b, from, 5), "{short}");
        assert_eq!(a.expression(), short);
        assert_eq!(a.describe(), b.describe(), "{short}");
    }
    assert_eq!(
        simple("@weekly", zone).next_fire(from),
        Some(utc("2026-03-21T23:00:00Z"))
    );
}

#[test]
fn every_is_epoch_anchored_and_ignores_the_zone() {
    for zone in [
        chrono_tz::UTC,
        chrono_tz::America::Chicago,
        tz("Asia/Kathmandu"),
    ] {
        let s = simple("@every 15m", zone);
        assert_eq!(s.every_interval(), Some(Duration::from_secs(900)));
        assert_eq!(
            s.next_fire(utc("2026-03-08T07:52:13Z")),
            Some(utc("2026-03-08T08:00:00Z"))
        );
        assert_eq!(
            s.next_fire(utc("2026-03-08T08:00:00Z")),
            Some(utc("2026-03-08T08:15:00Z"))
        );
        let all = fires(&s, utc("2026-11-01T05:50:00Z"), 12);
        assert!(all.iter().all(|t| t.timestamp() % 900 == 0));
        assert!(
            all.windows(2)
                .all(|w| w[1] - w[0] == TimeDelta::minutes(15))
        );
    }
    let s = simple("@every 7s", chrono_tz::UTC);
    let t = s.next_fire(utc("2026-01-01T00:00:00Z")).expect("fire");
    assert_eq!(t.timestamp() % 7, 0);
    assert!(t - utc("2026-01-01T00:00:00Z") <= TimeDelta::seconds(7));
    assert_eq!(
        simple("@every 1h30m", chrono_tz::UTC).every_interval(),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        simple("@every 90s", chrono_tz::UTC).every_interval(),
        Some(Duration::from_secs(90))
    );
    // Sub-second `after` is still strictly before the next multiple.
    let s = simple("@every 1s", chrono_tz::UTC);
    let after = utc("2026-01-01T00:00:00.5Z");
    assert_eq!(s.next_fire(after), Some(utc("2026-01-01T00:00:01Z")));
    let occ: Vec<Occurrence> = simple("@every 1h", tz("Asia/Kolkata"))
        .occurrences(utc("2026-01-01T00:10:00Z"))
        .take(1)
        .collect();
    let local = NaiveDateTime::parse_from_str("2026-01-01 06:30", "%Y-%m-%d %H:%M").expect("time");
    assert_eq!(occ[0].local, local);
}

#[test]
fn sub_second_after() {
    let s = simple("* * * * * *", chrono_tz::UTC);
    assert_eq!(
        s.next_fire(utc("2026-01-01T00:00:00.999Z")),
        Some(utc("2026-01-01T00:00:01Z"))
    );
    assert_eq!(
        s.next_fire(utc("2026-01-01T00:00:01Z")),
        Some(utc("2026-01-01T00:00:02Z"))
    );
}

fn err(expr: &str) -> ScheduleError {
    match Schedule::parse(
        expr,
        chrono_tz::UTC,
        DstGap::Shift,
        DstRepeat::First,
        Duration::ZERO,
        "",
    ) {
        Ok(s) => panic!("{expr:?} parsed: {s:?}"),
        Err(e) => e,
    }
}

fn field_err(expr: &str) -> (CronField, String, FieldProblem) {
    match err(expr) {
        ScheduleError::InvalidField {
            field,
            value,
            problem,
            ..
        } => (field, value, problem),
        other => panic!("{expr:?}: unexpected {other:?}"),
    }
}

#[test]
fn errors_by_kind() {
    use CronField::*;
    use FieldProblem::*;
    assert!(matches!(err(""), ScheduleError::Empty));
    assert!(matches!(err("   "), ScheduleError::Empty));
    assert!(matches!(
        err("*/5 * * *"),
        ScheduleError::FieldCount { count: 4, .. }
    ));
    assert!(matches!(
        err("0 0 0 * * * * *"),
        ScheduleError::FieldCount { count: 8, .. }
    ));
    assert!(matches!(
        err("0 0 L * *"),
        ScheduleError::Unsupported {
            feature: 'L',
            field: DayOfMonth,
            ..
        }
    ));
    assert!(matches!(
        err("0 0 15W * *"),
        ScheduleError::Unsupported {
            feature: 'W',
            field: DayOfMonth,
            ..
        }
    ));
    assert!(matches!(
        err("0 0 LW * *"),
        ScheduleError::Unsupported { feature: 'L', .. }
    ));
    assert!(matches!(
        err("0 0 * * 5L"),
        ScheduleError::Unsupported {
            feature: 'L',
            field: DayOfWeek,
            ..
        }
    ));
    assert!(matches!(
        err("0 0 * * FRIL"),
        ScheduleError::Unsupported { feature: 'L', .. }
    ));
    assert!(matches!(
        err("0 0 * * 5#3"),
        ScheduleError::Unsupported {
            feature: '#',
            field: DayOfWeek,
            ..
        }
    ));
    assert_eq!(
        field_err("60 * * * *"),
        (Minute, "60".to_owned(), OutOfRange)
    );
    assert_eq!(field_err("0 24 * * *"), (Hour, "24".to_owned(), OutOfRange));
    assert_eq!(
        field_err("0 0 0 * *"),
        (DayOfMonth, "0".to_owned(), OutOfRange)
    );
    assert_eq!(
        field_err("0 0 32 * *"),
        (DayOfMonth, "32".to_owned(), OutOfRange)
    );
    assert_eq!(
        field_err("0 0 * 13 *"),
        (Month, "13".to_owned(), OutOfRange)
    );
    assert_eq!(
        field_err("0 0 * * 8"),
        (DayOfWeek, "8".to_owned(), OutOfRange)
    );
    assert_eq!(
        field_err("60 0 0 * * *"),
        (Second, "60".to_owned(), OutOfRange)
    );
    assert_eq!(
        field_err("0 0 0 * * * 1969"),
        (Year, "1969".to_owned(), OutOfRange)
    );
    assert_eq!(
        field_err("0 4 * * Mun"),
        (DayOfWeek, "Mun".to_owned(), NotANumber)
    );
    assert_eq!(
        field_err("0 4 * Jun-Foo *"),
        (Month, "Foo".to_owned(), NotANumber)
    );
    assert_eq!(field_err("x * * * *"), (Minute, "x".to_owned(), NotANumber));
    assert_eq!(
        field_err("-5 * * * *"),
        (Minute, "-5".to_owned(), NotANumber)
    );
    assert_eq!(
        field_err("0 0 0 * * * ?"),
        (Year, "?".to_owned(), QuestionMark)
    );
    assert_eq!(
        field_err("*/0 * * * *"),
        (Minute, "*/0".to_owned(), BadStep)
    );
    assert_eq!(
        field_err("*/x * * * *"),
        (Minute, "*/x".to_owned(), BadStep)
    );
    assert_eq!(
        field_err("5-1 * * * *"),
        (Minute, "5-1".to_owned(), ReversedRange)
    );
    assert_eq!(field_err("1,,2 * * * *"), (Minute, "".to_owned(), Empty));
    assert_eq!(
        field_err("? * * * *"),
        (Minute, "?".to_owned(), QuestionMark)
    );
    assert!(matches!(
        err("0 0 30 2 *"),
        ScheduleError::NeverFires { .. }
    ));
    assert!(matches!(
        err("0 0 31 4,6 *"),
        ScheduleError::NeverFires { .. }
    ));
    assert!(matches!(
        err("@every 0s"),
        ScheduleError::ZeroInterval { .. }
    ));
    assert!(matches!(
        err("@every banana"),
        ScheduleError::InvalidInterval { .. }
    ));
    assert!(matches!(
        err("@every"),
        ScheduleError::InvalidInterval { .. }
    ));
    assert!(matches!(
        err("@every 1500ms"),
        ScheduleError::FractionalInterval { .. }
    ));
    assert!(matches!(
        err("@foo"),
        ScheduleError::UnknownShorthand { .. }
    ));
    assert!(matches!(
        err("@daily 3"),
        ScheduleError::UnknownShorthand { .. }
    ));
    // Still accepted: February 29 and the OR form with an impossible day of month.
    assert!(
        Schedule::parse(
            "0 0 29 2 *",
            chrono_tz::UTC,
            DstGap::Shift,
            DstRepeat::First,
            Duration::ZERO,
            ""
        )
        .is_ok()
    );
    let s = simple("0 0 31 2 MON", chrono_tz::UTC);
    assert!(
        fires(&s, utc("2026-01-01T00:00:00Z"), 3)
            .iter()
            .all(|t| t.weekday() == Weekday::Mon && t.month() == 2)
    );
}

#[test]
fn error_messages() {
    let message = |expr: &str| format!("schedule {}", err(expr));
    assert_eq!(
        message("0 4 * * Mun"),
        "schedule \"0 4 * * Mun\" is not a valid cron expression: day-of-week \"Mun\" is not a day name or number 0-7"
    );
    assert_eq!(
        message("@every 0s"),
        "schedule \"@every 0s\" has a zero interval"
    );
    assert_eq!(
        message("*/5 * * *"),
        "schedule \"*/5 * * *\" has 4 fields; expected 5 (minute hour day month weekday), 6 (with seconds first) or 7 (with a year last)"
    );
    assert_eq!(
        message("0 0 L * *"),
        "schedule \"0 0 L * *\" is not a valid cron expression: day-of-month \"L\" uses `L` (last day), which is not supported"
    );
    assert_eq!(
        message("0 0 * 13 *"),
        "schedule \"0 0 * 13 *\" is not a valid cron expression: month \"13\" is out of range 1-12"
    );
    assert_eq!(message(""), "schedule expression is empty");
}

// ---------------------------------------------------------------------------------------------
// 5. Jitter.
// ---------------------------------------------------------------------------------------------

fn jittered(expr: &str, zone: Tz, gap: DstGap, jitter: u64, key: &str) -> Schedule {
    Schedule::parse(
        expr,
        zone,
        gap,
        DstRepeat::Both,
        Duration::from_secs(jitter),
        key,
    )
    .expect("valid")
}

#[test]
fn schedules_defined_alike_share_one_definition_and_keep_their_own_jitter() {
    let zone = chrono_tz::America::Chicago;
    let alpha = jittered("30 2 * * *", zone, DstGap::Shift, 3600, "alpha");
    let beta = jittered(" 30 2 * * * ", zone, DstGap::Shift, 3600, "beta");
    assert!(std::sync::Arc::ptr_eq(&alpha.definition, &beta.definition));
    assert_ne!(alpha.jitter_offset(), beta.jitter_offset());
    let after = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    assert_eq!(
        beta.next_fire(after)
            .map(|at| at - alpha.next_fire(after).expect("fires")),
        Some(
            TimeDelta::from_std(beta.jitter_offset()).expect("small")
                - TimeDelta::from_std(alpha.jitter_offset()).expect("small")
        )
    );
    // Anything else that differs makes a definition of its own.
    let others = [
        jittered("30 2 * * *", chrono_tz::UTC, DstGap::Shift, 3600, "alpha"),
        jittered("30 2 * * *", zone, DstGap::Skip, 3600, "alpha"),
        jittered("30 2 * * *", zone, DstGap::Shift, 60, "alpha"),
        jittered("30 3 * * *", zone, DstGap::Shift, 3600, "alpha"),
    ];
    for other in &others {
        assert!(!std::sync::Arc::ptr_eq(
            &alpha.definition,
            &other.definition
        ));
    }
}

#[test]
fn jitter_is_deterministic_bounded_and_key_dependent() {
    let zone = chrono_tz::America::Chicago;
    let a = jittered("30 2 * * *", zone, DstGap::Shift, 300, "nightly-report");
    let b = jittered("30 2 * * *", zone, DstGap::Shift, 300, "nightly-report");
    assert_eq!(a.jitter_offset(), b.jitter_offset());
    assert_eq!(a.jitter(), Duration::from_secs(300));
    let offsets: Vec<Duration> = (0..200)
        .map(|i| {
            jittered("@hourly", zone, DstGap::Shift, 300, &format!("worker-{i}")).jitter_offset()
        })
        .collect();
    assert!(offsets.iter().all(|o| *o <= Duration::from_secs(300)));
    let mut distinct = offsets.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 100,
        "only {} distinct offsets",
        distinct.len()
    );
    assert_ne!(
        jittered("@hourly", zone, DstGap::Shift, 3600, "alpha").jitter_offset(),
        jittered("@hourly", zone, DstGap::Shift, 3600, "beta").jitter_offset()
    );
    // Pinned values: these must never change between versions.
    let pinned = |key: &str| jittered("@hourly", zone, DstGap::Shift, 3600, key).jitter_offset();
    let sha_prefix = |key: &str| {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(key.as_bytes());
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    assert_eq!(
        pinned("alpha"),
        Duration::from_secs(sha_prefix("alpha") % 3601)
    );
    assert_eq!(
        pinned(""),
        Duration::from_secs(0xe3b0_c442_98fc_1c14 % 3601)
    );
    assert_eq!(
        jittered("@hourly", zone, DstGap::Shift, 0, "alpha").jitter_offset(),
        Duration::ZERO
    );
}

#[test]
fn jitter_applies_to_every_occurrence() {
    let zone = chrono_tz::America::Chicago;
    for (expr, gap, from) in [
        ("*/15 * * * *", DstGap::Skip, "2026-03-08T07:00:00Z"),
        ("30 1 * * *", DstGap::Shift, "2026-10-30T00:00:00Z"),
        ("@every 15m", DstGap::Shift, "2026-03-08T07:00:00Z"),
    ] {
        let plain = jittered(expr, zone, gap, 0, "w");
        let jit = jittered(expr, zone, gap, 600, "worker-7");
        let offset = TimeDelta::from_std(jit.jitter_offset()).expect("small");
        assert!(offset > TimeDelta::zero());
        let from = utc(from);
        let a: Vec<Occurrence> = plain.occurrences(from - offset).take(20).collect();
        let b: Vec<Occurrence> = jit.occurrences(from).take(20).collect();
        let shifted: Vec<Occurrence> = a
            .iter()
            .map(|o| Occurrence {
                instant: o.instant + offset,
                ..*o
            })
            .collect();
        assert_eq!(b, shifted, "{expr}");
        for o in b.iter().filter(|o| o.kind == OccurrenceKind::Fire) {
            let before = o.instant - TimeDelta::seconds(1);
            assert_eq!(jit.next_fire(before), Some(o.instant));
        }
        assert_walks_agree(&jit, from, from + TimeDelta::days(1), 900);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. describe().
// ---------------------------------------------------------------------------------------------

#[test]
fn describe_common_shapes() {
    let chicago = chrono_tz::America::Chicago;
    let examples = [
        ("0 3 * * *", "daily at 03:00 America/Chicago"),
        ("0 3 * * 0", "Sundays at 03:00 America/Chicago"),
        ("0 4 * * SUN", "Sundays at 04:00 America/Chicago"),
        ("0 6 * * *", "daily at 06:00 America/Chicago"),
        ("0 3 * * 1", "Mondays at 03:00 America/Chicago"),
        ("0 3 * * 6", "Saturdays at 03:00 America/Chicago"),
        ("0 14 * * 5", "Fridays at 14:00 America/Chicago"),
        ("0 16 * * *", "daily at 16:00 America/Chicago"),
        ("0 10 * * *", "daily at 10:00 America/Chicago"),
        ("0 8 * * *", "daily at 08:00 America/Chicago"),
        ("0 18 * * 7", "Sundays at 18:00 America/Chicago"),
        (
            "30 9 * * 1-5",
            "Mondays to Fridays at 09:30 America/Chicago",
        ),
    ];
    for (expr, text) in examples {
        assert_eq!(simple(expr, chicago).describe(), text, "{expr}");
    }
    let cases = [
        (
            "30 9 * * MON-FRI",
            chrono_tz::UTC,
            "Mondays to Fridays at 09:30 UTC",
        ),
        (
            "15 * * * *",
            tz("Europe/Berlin"),
            "hourly at :15 Europe/Berlin",
        ),
        ("15,45 * * * *", chrono_tz::UTC, "hourly at :15 and :45 UTC"),
        ("0,30 * * * *", chrono_tz::UTC, "every 30 minutes"),
        ("*/15 * * * *", chicago, "every 15 minutes"),
        ("0 */5 * * * *", chicago, "every 5 minutes"),
        ("* * * * *", chicago, "every minute"),
        ("* * * * * *", chicago, "every second"),
        ("*/10 * * * * *", chicago, "every 10 seconds"),
        ("@every 15m", chicago, "every 15m"),
        ("@every 1h30m", chicago, "every 1h30m"),
        ("@every 90s", chicago, "every 1m30s"),
        ("@every 1d", chicago, "every 24h"),
        ("0 0 1 * *", chrono_tz::UTC, "monthly on day 1 at 00:00 UTC"),
        ("@monthly", chrono_tz::UTC, "monthly on day 1 at 00:00 UTC"),
        (
            "0 12 1,15 * *",
            chrono_tz::UTC,
            "monthly on days 1 and 15 at 12:00 UTC",
        ),
        (
            "@yearly",
            chrono_tz::UTC,
            "yearly on 1 January at 00:00 UTC",
        ),
        ("@daily", chrono_tz::UTC, "daily at 00:00 UTC"),
        ("@hourly", chrono_tz::UTC, "hourly at :00 UTC"),
        ("@weekly", chrono_tz::UTC, "Sundays at 00:00 UTC"),
        (
            "0 6,18 * * *",
            chrono_tz::UTC,
            "daily at 06:00 and 18:00 UTC",
        ),
        (
            "0 7 * * 6,0",
            chrono_tz::UTC,
            "Saturdays and Sundays at 07:00 UTC",
        ),
        (
            "0 7 * * 1,3,5",
            chrono_tz::UTC,
            "Mondays, Wednesdays and Fridays at 07:00 UTC",
        ),
        (
            "0 7 * * 5-7",
            chrono_tz::UTC,
            "Fridays to Sundays at 07:00 UTC",
        ),
        ("30 0 7 * * *", chrono_tz::UTC, "daily at 07:00:30 UTC"),
        ("0 0 1 * MON", chrono_tz::UTC, "cron \"0 0 1 * MON\" in UTC"),
        ("*/7 * * * *", chrono_tz::UTC, "cron \"*/7 * * * *\" in UTC"),
        (
            "0 0 0 1 1 * 2030",
            chrono_tz::UTC,
            "cron \"0 0 0 1 1 * 2030\" in UTC",
        ),
        ("0 9 * 1-6 1", chrono_tz::UTC, "cron \"0 9 * 1-6 1\" in UTC"),
    ];
    for (expr, zone, text) in cases {
        assert_eq!(simple(expr, zone).describe(), text, "{expr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Misc: serde names, accessors, timing probe.
// ---------------------------------------------------------------------------------------------

fn de<T: for<'a> Deserialize<'a>>(s: &str) -> Result<T, serde::de::value::Error> {
    T::deserialize(s.into_deserializer())
}

#[test]
fn serde_names_and_defaults() {
    assert_eq!(de::<DstGap>("shift"), Ok(DstGap::Shift));
    assert_eq!(de::<DstGap>("skip"), Ok(DstGap::Skip));
    assert_eq!(de::<DstRepeat>("first"), Ok(DstRepeat::First));
    assert_eq!(de::<DstRepeat>("last"), Ok(DstRepeat::Last));
    assert_eq!(de::<DstRepeat>("both"), Ok(DstRepeat::Both));
    assert!(de::<DstRepeat>("Both").is_err());
    assert_eq!(de::<SkipReason>("dst_gap"), Ok(SkipReason::DstGap));
    assert_eq!(SkipReason::DstGap.as_str(), "dst_gap");
    assert_eq!(DstGap::default(), DstGap::Shift);
    assert_eq!(DstRepeat::default(), DstRepeat::First);
}

#[test]
fn accessors() {
    let s = Schedule::parse(
        "  0 3 * * *  ",
        chrono_tz::America::Chicago,
        DstGap::Skip,
        DstRepeat::Last,
        Duration::from_secs(10),
        "k",
    )
    .expect("valid");
    assert_eq!(s.expression(), "0 3 * * *");
    assert_eq!(s.timezone(), chrono_tz::America::Chicago);
    assert_eq!(s.dst_gap(), DstGap::Skip);
    assert_eq!(s.dst_repeat(), DstRepeat::Last);
    assert_eq!(s.every_interval(), None);
    let local = NaiveDateTime::parse_from_str("2026-01-01 03:00", "%Y-%m-%d %H:%M").expect("time");
    assert!(s.matches_local(local));
    assert!(!s.matches_local(local + TimeDelta::minutes(1)));
}

#[test]
fn far_future_and_far_past() {
    let s = simple("0 0 * * *", chrono_tz::UTC);
    assert_eq!(s.next_fire(utc("2100-12-31T00:00:00Z")), None);
    assert_eq!(s.next_fire(DateTime::<Utc>::MAX_UTC), None);
    assert_eq!(
        s.next_fire(utc("1960-01-01T00:00:00Z")),
        Some(utc("1970-01-01T00:00:00Z"))
    );
    assert_eq!(
        simple("@every 1s", chrono_tz::UTC).next_fire(DateTime::<Utc>::MAX_UTC),
        None
    );
    let j = jittered("0 0 * * *", chrono_tz::UTC, DstGap::Shift, 3600, "x");
    assert_eq!(
        j.next_fire(DateTime::<Utc>::MIN_UTC).map(|t| t.year()),
        Some(1970)
    );
}

/// Timing probe: `cargo test --release -- --ignored --nocapture next_fire_timing`.
#[test]
#[ignore]
fn next_fire_timing() {
    let cases = [
        ("* * * * * *", chrono_tz::UTC),
        ("* * * * * *", chrono_tz::America::Chicago),
        ("*/15 * * * *", chrono_tz::America::Chicago),
        ("30 2 * * *", chrono_tz::America::Chicago),
        ("0 9 * * MON-FRI", tz("Europe/Berlin")),
        ("0 0 1 * MON", chrono_tz::America::Chicago),
        ("@every 15m", chrono_tz::UTC),
    ];
    let base = utc("2026-01-01T00:00:00Z");
    for (expr, zone) in cases {
        let s = Schedule::parse(
            expr,
            zone,
            DstGap::Shift,
            DstRepeat::Both,
            Duration::from_secs(30),
            "w",
        )
        .expect("valid");
        let n: i64 = 200_000;
        let started = Instant::now();
        let mut sink = 0i64;
        for i in 0..n {
            let after = base + TimeDelta::seconds((i * 7919) % 31_000_000);
            sink ^= s.next_fire(after).map_or(0, |t| t.timestamp());
        }
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        println!("{expr:>18} {:<16} {ns:>8.0} ns/call ({sink})", zone.name());
    }
    // Every-second schedule with `after` inside the 2026 Chicago transitions, per rule.
    for (gap, repeat) in [
        (DstGap::Shift, DstRepeat::First),
        (DstGap::Skip, DstRepeat::Last),
        (DstGap::Skip, DstRepeat::Both),
    ] {
        let s = sched("* * * * * *", chrono_tz::America::Chicago, gap, repeat);
        for base in [utc("2026-11-01T05:30:00Z"), utc("2026-03-08T07:30:00Z")] {
            let n: i64 = 20_000;
            let started = Instant::now();
            let mut sink = 0i64;
            for i in 0..n {
                let after = base + TimeDelta::seconds((i * 7919) % 10_800);
                sink ^= s.next_fire(after).map_or(0, |t| t.timestamp());
            }
            let ns = started.elapsed().as_nanos() as f64 / n as f64;
            println!("every second around {base} {gap:?}/{repeat:?}: {ns:.0} ns/call ({sink})");
        }
    }
}

/// Exhaustive sweep (slow; `cargo test --release -- --ignored oracle_sweep`, about 35 s): every
/// transition of every zone in 2020-2032 (4,920 of them), ±6 hours, a few shapes, every rule
/// combination. Widened once to 1971-2032 (27,741 transitions on whole minutes), it also passed.
#[test]
#[ignore]
fn oracle_sweep_all_zones_2020_2032() {
    let (start, end) = (utc("2020-01-01T00:00:00Z"), utc("2032-01-01T00:00:00Z"));
    let mut windows = 0;
    for zone in chrono_tz::TZ_VARIANTS {
        let mut t = start;
        while let Some(transition) = next_transition(zone, t, end - t) {
            let offset = |t: DateTime<Utc>| zone.offset_from_utc_datetime(&t.naive_utc()).fix();
            let whole_minutes = transition.timestamp() % 60 == 0
                && offset(transition).local_minus_utc() % 60 == 0
                && offset(transition - TimeDelta::seconds(1)).local_minus_utc() % 60 == 0;
            t = transition;
            if !whole_minutes {
                continue; // the oracle works in whole UTC minutes
            }
            for expr in ["*/15 * * * *", "30 0-3,23 * * *", "*/10 1,2 * * *"] {
                assert_matches_oracle(
                    expr,
                    zone,
                    transition - TimeDelta::hours(6),
                    transition + TimeDelta::hours(6),
                );
            }
            windows += 1;
        }
    }
    println!("{windows} transitions checked");
}
