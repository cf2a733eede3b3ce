//! The scheduler against a real nats-server: leader failover, catch-up,
//! the ledger of fires that did not run.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_protocol::SkipReason;
use loom_tests::{Mesh, Role, eventually};
use nix::sys::signal::Signal;

fn is_leader(role: &Role) -> Option<bool> {
    let metrics = role.metrics();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("loom_scheduler_is_leader "))?;
    Some(line.ends_with(" 1"))
}

/// Every fire of `worker` the stream holds, by instant, with how many copies.
async fn fires(mesh: &Mesh, worker: &str) -> BTreeMap<DateTime<Utc>, usize> {
    let mut fires = BTreeMap::new();
    for command in mesh.stored_runs(worker).await {
        *fires.entry(command.scheduled_at).or_insert(0) += 1;
    }
    fires
}

/// Asserts the fires are every second from the first to the last, once each.
fn assert_every_second_once(fires: &BTreeMap<DateTime<Utc>, usize>) {
    let first = *fires.keys().next().expect("some fires");
    let last = *fires.keys().last().expect("some fires");
    let expected = (last - first).num_seconds() + 1;
    let duplicates: Vec<_> = fires.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "fires published twice: {duplicates:?}"
    );
    let missing: Vec<DateTime<Utc>> = (0..expected)
        .map(|s| first + chrono::Duration::seconds(s))
        .filter(|t| !fires.contains_key(t))
        .collect();
    assert!(
        missing.is_empty(),
        "seconds never fired between {first} and {last}: {missing:?}"
    );
}

const EVERY_SECOND: &str = r#"
[workers.tick]
schedule = "* * * * * *"
command = ["true"]
overlap = "allow"
"#;

async fn two_schedulers(mesh: &Mesh) -> (Role, Role) {
    let mut a = mesh.spawn(&["scheduler"], &[]);
    let mut b = mesh.spawn(&["scheduler"], &[]);
    a.ready().await;
    b.ready().await;
    eventually(Duration::from_secs(20), "a leader", || async {
        match (is_leader(&a), is_leader(&b)) {
            (Some(x), Some(y)) if x != y => Some(()),
            _ => None,
        }
    })
    .await;
    if is_leader(&a) == Some(true) {
        (a, b)
    } else {
        (b, a)
    }
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_every_second_fires_exactly_once() {
    let mesh = Mesh::new(&format!("[scheduler]\nlease_ttl = \"2s\"\n{EVERY_SECOND}")).await;
    let (mut leader, standby) = two_schedulers(&mesh).await;
    assert_eq!(is_leader(&standby), Some(false), "exactly one leader");
    eventually(Duration::from_secs(10), "fires", || async {
        (fires(&mesh, "tick").await.len() >= 3).then_some(())
    })
    .await;

    leader.kill();
    let killed = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "the standby to take over",
        || async { (is_leader(&standby) == Some(true)).then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(2) + Duration::from_millis(1500),
        "takeover took {takeover:?} with a 2 s lease"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut standby = standby;
    assert!(standby.stop(Duration::from_secs(20)).success());

    let fires = fires(&mesh, "tick").await;
    assert!(fires.len() >= 7, "only {} fires", fires.len());
    assert_every_second_once(&fires);
}

#[tokio::test]
async fn a_stopped_leader_hands_over_without_waiting_for_the_lease() {
    // A long lease: a handover that waited for it would leave a visible gap.
    let mesh = Mesh::new(&format!(
        "[scheduler]\nlease_ttl = \"10s\"\n[streams]\nduplicate_window = \"1m\"\n{EVERY_SECOND}"
    ))
    .await;
    let (mut leader, mut standby) = two_schedulers(&mesh).await;
    eventually(Duration::from_secs(10), "fires", || async {
        (fires(&mesh, "tick").await.len() >= 2).then_some(())
    })
    .await;

    let stopped = std::time::Instant::now();
    assert!(
        leader.stop(Duration::from_secs(20)).success(),
        "the leader stops cleanly"
    );
    eventually(
        Duration::from_secs(5),
        "the standby to take over",
        || async { (is_leader(&standby) == Some(true)).then_some(()) },
    )
    .await;
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(3),
        "handover took {handover:?}; the lease is 10 s"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(standby.stop(Duration::from_secs(20)).success());
    assert_every_second_once(&fires(&mesh, "tick").await);
}

/// Counts the ledger's entries of `worker` by reason (summaries count in full).
async fn ledger(mesh: &Mesh, worker: &str) -> BTreeMap<&'static str, Vec<DateTime<Utc>>> {
    let mut by_reason: BTreeMap<&'static str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for entry in mesh.skipped(worker).await {
        let list = by_reason.entry(entry.reason.as_str()).or_default();
        list.push(entry.scheduled_at);
        if entry.count > 1 {
            // Summaries stand for every second from scheduled_at to last.
            let last = entry.last.expect("a summary has a last instant");
            let mut at = entry.scheduled_at + chrono::Duration::seconds(1);
            while at <= last {
                list.push(at);
                at += chrono::Duration::seconds(1);
            }
        }
    }
    by_reason
}

#[tokio::test]
async fn catch_up_modes_after_downtime_and_missed_fires_are_dead_letters() {
    let workers = ["none", "last", "all"]
        .iter()
        .map(|mode| format!("[workers.{mode}]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\noverlap = \"allow\"\ncatch_up = \"{mode}\"\nstarting_deadline = \"4s\"\n"))
        .collect::<String>();
    // Lease 1 s: fires up to 2 s late count as a failover, not as downtime.
    let mesh = Mesh::new(&format!(
        "[scheduler]\nlease_ttl = \"1s\"\n[streams]\nduplicate_window = \"1m\"\n{workers}"
    ))
    .await;
    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    scheduler.ready().await;
    eventually(Duration::from_secs(10), "fires", || async {
        (fires(&mesh, "all").await.len() >= 2).then_some(())
    })
    .await;
    assert!(scheduler.stop(Duration::from_secs(20)).success());
    let down_from = Utc::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let up_at = Utc::now();
    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    scheduler.ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(scheduler.stop(Duration::from_secs(20)).success());

    for mode in ["none", "last", "all"] {
        let published = fires(&mesh, mode).await;
        let skipped = ledger(&mesh, mode).await;
        // Every second from the first fire to the last is accounted for once:
        // published, or in the ledger with a reason.
        let mut accounted: BTreeMap<DateTime<Utc>, usize> = published.clone();
        for instants in skipped.values() {
            for at in instants {
                *accounted.entry(*at).or_insert(0) += 1;
            }
        }
        assert_every_second_once(&accounted);

        // The outage: fires from shortly after the stop to shortly before the restart.
        let outage = |at: &DateTime<Utc>| {
            *at > down_from + chrono::Duration::seconds(1)
                && *at < up_at - chrono::Duration::seconds(3)
        };
        let ran_in_outage = published.keys().filter(|at| outage(at)).count();
        let missed = skipped.get("missed").map_or(0, |m| m.len());
        let caught_up = skipped.get("catch_up").map_or(0, |m| m.len());
        let dead: usize = mesh
            .dead_letters(mode)
            .await
            .iter()
            .filter(|d| d.reason == loom_protocol::DeadLetterReason::Missed)
            .count();
        assert_eq!(dead, missed, "{mode}: every missed fire is a dead letter");
        match mode {
            "none" => {
                assert_eq!(ran_in_outage, 0, "none: no fire of the outage runs");
                assert!(
                    missed >= 6,
                    "none: the outage's fires are missed ({missed})"
                );
                assert_eq!(caught_up, 0);
            }
            "last" => {
                assert!(
                    ran_in_outage <= 1,
                    "last: at most the latest fire of the outage runs ({ran_in_outage})"
                );
                assert!(
                    caught_up >= 1,
                    "last: older fires within the deadline are recorded as catch_up"
                );
                assert!(
                    missed >= 3,
                    "last: fires past the deadline are missed ({missed})"
                );
            }
            _ => {
                assert!(
                    ran_in_outage >= 1,
                    "all: the fires within the deadline run ({ran_in_outage})"
                );
                assert_eq!(caught_up, 0);
                assert!(
                    missed >= 3,
                    "all: fires past the deadline are missed ({missed})"
                );
            }
        }
    }
}

#[tokio::test]
async fn pause_until_records_paused_fires_and_resumes_without_a_burst() {
    let mesh = Mesh::new(&format!("[scheduler]\nlease_ttl = \"2s\"\n{EVERY_SECOND}")).await;
    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    scheduler.ready().await;
    eventually(Duration::from_secs(10), "fires", || async {
        (fires(&mesh, "tick").await.len() >= 2).then_some(())
    })
    .await;

    let output = mesh.loom(&["pause", "tick", "--until", "4s", "--note", "maintenance"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    // An indefinite pause, then resume: the paused seconds never run.
    assert!(mesh.loom(&["pause", "tick"]).status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resume = mesh.loom(&["resume", "tick"]);
    assert_eq!(
        String::from_utf8_lossy(&resume.stdout).trim(),
        "resumed tick"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(scheduler.stop(Duration::from_secs(20)).success());

    let published = fires(&mesh, "tick").await;
    let paused = ledger(&mesh, "tick")
        .await
        .remove("paused")
        .unwrap_or_default();
    assert!(
        paused.len() >= 5,
        "paused fires are recorded ({})",
        paused.len()
    );
    for at in &paused {
        assert!(!published.contains_key(at), "a paused fire ran: {at}");
    }
    let entries = mesh.skipped("tick").await;
    assert!(
        entries
            .iter()
            .any(|e| e.reason == SkipReason::Paused && e.detail.contains("maintenance")),
        "the note is in the ledger"
    );
    // Both pauses ended: fires resumed after each, and every second is accounted for once.
    let mut accounted = published.clone();
    for at in paused {
        *accounted.entry(at).or_insert(0) += 1;
    }
    assert_every_second_once(&accounted);
    let last_paused = mesh
        .skipped("tick")
        .await
        .iter()
        .map(|e| e.scheduled_at)
        .max()
        .expect("paused");
    assert!(
        published.keys().any(|at| *at > last_paused),
        "fires resumed after the pause"
    );
}

#[tokio::test]
async fn disabled_workers_and_dst_gaps_are_in_the_ledger() {
    // A yearly fire at 02:30 Chicago on 8 March: in 2026 that local time does
    // not exist. The worker's last fire is seeded before it, so the new
    // leader's catch-up walks over the gap.
    let config = r#"
[scheduler]
lease_ttl = "2s"
[workers.gap]
schedule = "30 2 8 3 *"
timezone = "America/Chicago"
dst_gap = "skip"
catch_up = "all"
starting_deadline = "3650d"
command = ["true"]
[workers.off]
schedule = "* * * * * *"
command = ["true"]
enabled = false
"#;
    let mesh = Mesh::new(config).await;
    let workers = mesh
        .broker
        .bucket(&mesh.broker.names().workers_bucket())
        .await
        .expect("bucket");
    let seeded = loom_protocol::state::FireState {
        last_fire: "2026-03-01T00:00:00Z".parse().expect("instant"),
        last_run_id: None,
    };
    workers
        .put(&loom_protocol::state::fire_key("gap"), &seeded)
        .await
        .expect("seed");
    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    scheduler.ready().await;
    let entry = eventually(Duration::from_secs(15), "the DST skip", || async {
        mesh.skipped("gap")
            .await
            .into_iter()
            .find(|e| e.reason == SkipReason::DstGap)
    })
    .await;
    assert_eq!(
        entry.scheduled_at,
        "2026-03-08T08:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("instant")
    );
    assert!(
        entry.detail.contains("does not exist in America/Chicago"),
        "{}",
        entry.detail
    );
    eventually(Duration::from_secs(10), "disabled fires", || async {
        (ledger(&mesh, "off")
            .await
            .get("disabled")
            .map_or(0, |d| d.len())
            >= 2)
            .then_some(())
    })
    .await;
    assert!(
        fires(&mesh, "off").await.is_empty(),
        "a disabled worker's fires never run"
    );
    assert!(scheduler.stop(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn a_reloaded_registry_adds_changes_and_removes_workers() {
    let before = r#"
[scheduler]
lease_ttl = "2s"
[workers.kept]
schedule = "* * * * * *"
command = ["true"]
overlap = "allow"
[workers.removed]
schedule = "* * * * * *"
command = ["true"]
overlap = "allow"
[workers.changed]
schedule = "0 0 1 1 *"
command = ["true"]
"#;
    let mesh = Mesh::new(before).await;
    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    scheduler.ready().await;
    eventually(Duration::from_secs(10), "fires", || async {
        (fires(&mesh, "removed").await.len() >= 2).then_some(())
    })
    .await;
    assert!(
        fires(&mesh, "changed").await.is_empty(),
        "a yearly worker does not fire yet"
    );

    mesh.rewrite_config(
        r#"
[scheduler]
lease_ttl = "2s"
[workers.kept]
schedule = "* * * * * *"
command = ["true"]
overlap = "allow"
[workers.changed]
schedule = "* * * * * *"
command = ["true"]
overlap = "allow"
[workers.added]
schedule = "* * * * * *"
command = ["true"]
overlap = "allow"
"#,
    );
    let reloaded = Utc::now();
    eventually(
        Duration::from_secs(15),
        "the added worker to fire",
        || async { (fires(&mesh, "added").await.len() >= 2).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the changed worker's new schedule",
        || async { (fires(&mesh, "changed").await.len() >= 2).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let removed_after = fires(&mesh, "removed")
        .await
        .keys()
        .filter(|at| **at > reloaded + chrono::Duration::seconds(4))
        .count();
    assert_eq!(removed_after, 0, "the removed worker stopped firing");
    assert!(
        scheduler.log().contains("configuration reloaded"),
        "{}",
        scheduler.log()
    );
    // SIGHUP reloads too.
    scheduler.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(5), "a SIGHUP reload", || async {
        (scheduler.log().matches("configuration reloaded").count() >= 2).then_some(())
    })
    .await;
    assert!(scheduler.stop(Duration::from_secs(20)).success());
}

#[tokio::test]
async fn triggering_an_unknown_or_disabled_worker_is_a_clear_error() {
    let mesh = Mesh::new("[workers.off]\ncommand = [\"true\"]\nenabled = false\n[workers.staleness-detector]\ncommand = [\"true\"]\n").await;
    let unknown = mesh.loom(&["trigger", "staleness-detectr"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "loom: worker \"staleness-detectr\" is not in the registry; did you mean \"staleness-detector\"?"
    );
    let disabled = mesh.loom(&["trigger", "off"]);
    assert_eq!(disabled.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&disabled.stderr).contains("worker \"off\" is disabled"),
        "{}",
        String::from_utf8_lossy(&disabled.stderr)
    );
    let bad_param = mesh.loom(&["trigger", "staleness-detector", "--param", "days"]);
    assert_eq!(bad_param.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad_param.stderr).trim(),
        "loom: --param \"days\" is not NAME=VALUE"
    );
}
