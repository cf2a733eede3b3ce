//! Support for Klaxon's integration tests: dead-letter fixtures, free
//! loopback ports, and a real Alertmanager per test.
//!
//! The real Alertmanager comes from the shared harness, `loom_testkit::Alertmanager`.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses a part of it"
)]

use std::net::TcpListener;

use chrono::{DateTime, TimeZone, Utc};
use loom_protocol::{AttemptSummary, DeadLetter, DeadLetterReason, Outcome, WIRE_VERSION};
use uuid::Uuid;

/// A fixed instant, so that expected values can be written down.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 5, 10, 0, 0)
        .single()
        .expect("a valid instant")
}

/// A dead letter of `worker` for `reason`, dead at `dead_at`, after three
/// attempts that exited 1 with a Python traceback on stderr.
pub fn dead_letter(worker: &str, reason: DeadLetterReason, dead_at: DateTime<Utc>) -> DeadLetter {
    let attempts = (1..=3)
        .map(|attempt| AttemptSummary {
            attempt,
            agent_id: "agent-a".to_owned(),
            outcome: Outcome::Failed,
            exit_code: Some(1),
            started_at: dead_at - chrono::TimeDelta::minutes(i64::from(4 - attempt)),
            duration_ms: 1200,
            cpu_ms: 900,
            stdout_tail: String::new(),
            stderr_tail: format!(
                "Traceback (most recent call last):\n  File \"detect.py\", line 12\nValueError: stale index (attempt {attempt})\n"
            ),
        })
        .collect();
    DeadLetter {
        v: WIRE_VERSION,
        run_id: Uuid::now_v7(),
        worker: worker.to_owned(),
        reason,
        description: "run failed on its last attempt (3 of 3)".to_owned(),
        attempts,
        command: None,
        dead_at,
        replayed_by: None,
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("bind a free loopback port")
}

#[allow(unused_imports, reason = "only the Alertmanager tests use it")]
pub use loom_testkit::Alertmanager;
