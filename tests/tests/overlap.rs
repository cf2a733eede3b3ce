//! Overlap policies and backfill, end to end: a scheduler firing a slow
//! worker every second, agents running it, a validator judging it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_protocol::{Outcome, RunResult, SkipReason, VerdictKind};
use loom_tests::{Mesh, Role, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn config(overlap: &str, extra: &str, sleep: &str, schedule: &str) -> String {
    format!(
        r#"
[scheduler]
lease_ttl = "2s"
[agent]
ack_wait = "2s"
concurrency = 4
[validator]
slack = "1s"
[workers.slow]
schedule = "{schedule}"
command = ["/bin/sleep", "{sleep}"]
overlap = "{overlap}"
retries = 0
{extra}
"#
    )
}

async fn start(mesh: &Mesh) -> Vec<Role> {
    let mut roles = Vec::new();
    for name in ["agent", "validator", "scheduler"] {
        let mut role = mesh.spawn(&[name], &[]);
        role.ready().await;
        roles.push(role);
    }
    roles
}

/// Lets the schedule fire for `seconds`, then pauses the worker and waits
/// until every published fire has its verdict.
async fn fire_for(mesh: &Mesh, scheduler: &Role, seconds: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let pause = mesh.loom(&["pause", "slow"]);
    assert!(
        pause.status.success(),
        "{}",
        String::from_utf8_lossy(&pause.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published = published(scheduler);
    eventually(WAIT, "every published fire to have its verdict", || async {
        (mesh.verdicts("slow").await.len() as u64 >= published).then_some(())
    })
    .await;
    published
}

/// Fires the scheduler published (its own counter).
fn published(scheduler: &Role) -> u64 {
    scheduler
        .metrics()
        .lines()
        .find(|l| l.starts_with("loom_runs_scheduled_total{") && l.contains("worker=\"slow\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The most attempts that ran at the same moment.
fn max_concurrent(results: &[RunResult]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for result in results {
        edges.push((result.started_at, 1));
        edges.push((result.finished_at, -1));
    }
    // Ends sort before starts at the same instant: back-to-back is not overlap.
    edges.sort_by_key(|(at, delta)| (*at, *delta));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

async fn overlap_skips(mesh: &Mesh) -> usize {
    mesh.skipped("slow")
        .await
        .iter()
        .filter(|e| e.reason == SkipReason::Overlap)
        .count()
}

#[tokio::test]
async fn forbid_queues_every_fire_and_never_runs_two_at_once() {
    let mesh = Mesh::new(&config("forbid", "", "1.5", "* * * * * *")).await;
    let roles = start(&mesh).await;
    let published = fire_for(&mesh, &roles[2], 4).await;
    let results = mesh.results("slow").await;
    assert!(published >= 4, "published {published}");
    assert_eq!(results.len() as u64, published, "every fire ran, in turn");
    assert_eq!(max_concurrent(&results), 1, "never two at once");
    assert_eq!(overlap_skips(&mesh).await, 0, "forbid skips nothing");
}

#[tokio::test]
async fn skip_drops_fires_while_a_run_is_in_flight() {
    let mesh = Mesh::new(&config("skip", "", "2.5", "* * * * * *")).await;
    let roles = start(&mesh).await;
    let published = fire_for(&mesh, &roles[2], 6).await;
    let results = mesh.results("slow").await;
    assert_eq!(max_concurrent(&results), 1);
    assert_eq!(results.len() as u64, published);
    let skipped = overlap_skips(&mesh).await;
    assert!(skipped >= 2, "fires during a run are skipped ({skipped})");
    let entry = mesh
        .skipped("slow")
        .await
        .into_iter()
        .find(|e| e.reason == SkipReason::Overlap)
        .expect("an overlap skip");
    assert!(
        entry.detail.contains("overlap = \"skip\""),
        "{}",
        entry.detail
    );
}

#[tokio::test]
async fn buffer_one_keeps_at_most_one_fire_waiting() {
    let mesh = Mesh::new(&config("buffer_one", "", "3.5", "* * * * * *")).await;
    let roles = start(&mesh).await;
    let published = fire_for(&mesh, &roles[2], 8).await;
    let results = mesh.results("slow").await;
    assert_eq!(max_concurrent(&results), 1);
    assert_eq!(
        results.len() as u64,
        published,
        "the buffered fire runs too"
    );
    let skipped = overlap_skips(&mesh).await;
    assert!(
        skipped >= 2,
        "fires beyond the one buffered are skipped ({skipped})"
    );
    // With 3.5 s runs, a waiting fire starts right after the run before it.
    let mut starts: Vec<_> = results
        .iter()
        .map(|r| (r.started_at, r.finished_at))
        .collect();
    starts.sort();
    let back_to_back = starts
        .windows(2)
        .filter(|w| (w[1].0 - w[0].1).num_milliseconds() < 900)
        .count();
    assert!(
        back_to_back >= 1,
        "a buffered fire ran as soon as the slot freed: {starts:?}"
    );
}

#[tokio::test]
async fn replace_cancels_the_running_process_for_the_new_fire() {
    let mesh = Mesh::new(&config("replace", "", "30", "*/3 * * * * *")).await;
    let roles = start(&mesh).await;
    let published = fire_for(&mesh, &roles[2], 8).await;
    assert!(published >= 2, "published {published}");
    let results = mesh.results("slow").await;
    let cancelled: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Cancelled)
        .collect();
    assert!(
        cancelled.len() as u64 >= published - 1,
        "every run but the last was replaced: {results:?}"
    );
    for result in &cancelled {
        let ran = (result.finished_at - result.started_at).num_seconds();
        assert!(
            ran < 10,
            "the replaced process was stopped, not left to finish ({ran} s)"
        );
        assert!(
            result.stderr_tail.contains("replaced by the fire at"),
            "{}",
            result.stderr_tail
        );
    }
    let verdicts = mesh.verdicts("slow").await;
    assert!(
        verdicts
            .iter()
            .filter(|v| v.verdict == VerdictKind::Cancelled)
            .count()
            >= cancelled.len()
    );
    assert!(
        mesh.dead_letters("slow").await.is_empty(),
        "replacing is not failing"
    );
}

#[tokio::test]
async fn allow_runs_up_to_concurrency_at_once() {
    let mesh = Mesh::new(&config("allow", "concurrency = 2", "2.5", "* * * * * *")).await;
    let roles = start(&mesh).await;
    let published = fire_for(&mesh, &roles[2], 6).await;
    let results = mesh.results("slow").await;
    assert_eq!(results.len() as u64, published);
    assert_eq!(max_concurrent(&results), 2, "two at once, never three");
}

#[tokio::test]
async fn backfill_runs_past_fires_once_and_skips_those_that_ran() {
    let mesh = Mesh::new(&config("allow", "concurrency = 4", "0", "* * * * * *")).await;
    let before = Utc::now() - chrono::Duration::seconds(6);
    let mut roles = start(&mesh).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        roles[2].stop(Duration::from_secs(20)).success(),
        "the scheduler stops"
    );
    let ran = eventually(WAIT, "the scheduled runs to be judged", || async {
        let verdicts = mesh.verdicts("slow").await;
        (verdicts.len() as u64 >= published(&roles[2]).max(3)).then_some(verdicts.len())
    })
    .await;

    let from = before.to_rfc3339();
    // A fixed end: a second backfill must cover exactly the same fires.
    let to = Utc::now().to_rfc3339();
    let output = mesh.loom(&["backfill", "slow", "--from", &from, "--to", &to, "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let backfilled = report["published"].as_array().expect("published").len();
    let already = report["already_ran"].as_array().expect("already_ran").len();
    assert!(
        backfilled >= 5,
        "the fires before the scheduler started are published ({backfilled})"
    );
    assert!(
        already >= ran.saturating_sub(1),
        "the fires that ran are not run again ({already} of {ran})"
    );

    // Each backfilled run executes once, with the identity of its fire.
    eventually(WAIT, "the backfilled runs' verdicts", || async {
        (mesh.verdicts("slow").await.len() >= ran + backfilled).then_some(())
    })
    .await;
    let again = mesh.loom(&["backfill", "slow", "--from", &from, "--to", &to, "--json"]);
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(
        second["published"].as_array().expect("published").len(),
        0,
        "a second backfill runs nothing again"
    );

    let too_many = mesh.loom(&["backfill", "slow", "--from", "-1d", "--to", "now"]);
    assert_eq!(too_many.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&too_many.stderr).contains("more than --max 100"),
        "{}",
        String::from_utf8_lossy(&too_many.stderr)
    );
}
