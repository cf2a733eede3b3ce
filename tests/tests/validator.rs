//! The validator and Klaxon against a real nats-server, real worker
//! processes, a real HTTP receiver and a real Alertmanager: a verdict for
//! every run, dead letters for final failures, alerts, nothing silent.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use loom_protocol::state::{RunState, RunStatus, WorkerHealth, health_key, run_key};
use loom_protocol::{DeadLetterReason, VerdictKind};
use loom_testkit::Alertmanager;
use loom_tests::{Mesh, Role, WebhookReceiver, eventually};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);

/// Agent and validator settings that keep tests short.
const QUICK: &str =
    "[agent]\nack_wait = \"2s\"\ndrain_timeout = \"2s\"\n[validator]\nslack = \"1s\"\n";

async fn roles(mesh: &Mesh, names: &[&str]) -> Vec<Role> {
    let mut roles = Vec::new();
    for name in names {
        let mut role = mesh.spawn(&[name], &[]);
        role.ready().await;
        roles.push(role);
    }
    roles
}

async fn health(mesh: &Mesh, worker: &str) -> WorkerHealth {
    let bucket = mesh
        .broker
        .bucket(&mesh.broker.names().workers_bucket())
        .await
        .expect("bucket");
    bucket
        .get::<WorkerHealth>(&health_key(worker))
        .await
        .expect("read")
        .map(|v| v.value)
        .unwrap_or_default()
}

#[tokio::test]
async fn each_verdict_from_real_output_to_the_verdict_and_its_state() {
    let config = format!(
        r#"{QUICK}
[enforcement]
dir = "bundles"
[workers.ok]
command = ["/bin/sh", "-c", "echo working; echo 'STATUS: ok 3 documents'"]
output = {{ format = "status-line" }}
[workers.nostatus]
command = ["/bin/sh", "-c", "echo done"]
output = {{ format = "status-line" }}
[workers.fails]
command = ["/bin/sh", "-c", "echo 'no such table' >&2; exit 3"]
retries = 0
[workers.slow]
command = ["/bin/sleep", "30"]
timeout = "1s"
retries = 0
[workers.long]
command = ["/bin/sleep", "60"]
retries = 0
[workers.tamper]
command = ["/bin/sh", "-c", "chmod -R u+w \"$LOOM_ENFORCEMENT_DIR\"; echo changed >> \"$LOOM_ENFORCEMENT_DIR/rules.txt\"; echo STATUS: ok"]
enforcement = "standard"
output = {{ format = "status-line" }}
"#
    );
    let mesh = Mesh::new_with_files(
        &config,
        &[
            ("bundles/standard/rules.txt", "no network\n"),
            ("bundles/standard/limits.toml", "open_files = 256\n"),
        ],
    )
    .await;
    let push = mesh.loom(&["enforcement", "push"]);
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let _roles = roles(&mesh, &["agent", "validator"]).await;

    let expect = [
        ("ok", VerdictKind::Valid, "STATUS: ok 3 documents"),
        (
            "nostatus",
            VerdictKind::InvalidOutput,
            "the last line of stdout is \"done\", not `STATUS: <word> [detail]`",
        ),
        (
            "fails",
            VerdictKind::Failed,
            "attempt 1 exited 3: no such table",
        ),
        (
            "slow",
            VerdictKind::TimedOut,
            "attempt 1 ran past its timeout of 1s and was terminated",
        ),
        (
            "tamper",
            VerdictKind::EnforcementViolation,
            "the worker modified its enforcement bundle",
        ),
    ];
    let mut runs = Vec::new();
    for (worker, _, _) in &expect {
        runs.push(mesh.trigger(worker, &[]));
    }
    let long = mesh.trigger("long", &[]);
    eventually(WAIT, "the long run to start", || async {
        mesh.run_state("long", long).await.map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cancel = mesh.loom(&["cancel", &long.to_string()]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );

    for ((worker, kind, reason), run_id) in expect.iter().zip(&runs) {
        let verdict = mesh.verdict_of(worker, *run_id, WAIT).await;
        assert_eq!(
            (verdict.verdict, verdict.reason.as_str()),
            (*kind, *reason),
            "{worker}"
        );
        let state = mesh.run_state(worker, *run_id).await.expect("run state");
        assert_eq!(state.status, RunStatus::Done, "{worker}");
        assert_eq!(state.verdict, Some(*kind), "{worker}");
        assert_eq!(state.attempts.len(), 1, "{worker}");
    }
    let cancelled = mesh.verdict_of("long", long, WAIT).await;
    assert_eq!(cancelled.verdict, VerdictKind::Cancelled);
    assert_eq!(
        cancelled.reason,
        "cancelled: cancelled by an operator (loom cancel)"
    );

    // Dead letters for the failures, none for the valid and the cancelled run.
    for (worker, reason) in [
        ("nostatus", DeadLetterReason::InvalidOutput),
        ("fails", DeadLetterReason::Failed),
        ("slow", DeadLetterReason::TimedOut),
        ("tamper", DeadLetterReason::EnforcementViolation),
    ] {
        let letters = eventually(WAIT, "a dead letter", || async {
            let letters = mesh.dead_letters(worker).await;
            (!letters.is_empty()).then_some(letters)
        })
        .await;
        assert_eq!(letters.len(), 1, "{worker}: one dead letter");
        assert_eq!(letters[0].reason, reason, "{worker}");
        assert_eq!(letters[0].attempts.len(), 1, "{worker}");
        assert!(
            letters[0].command.is_some(),
            "{worker}: the dead letter keeps the command"
        );
    }
    assert!(mesh.dead_letters("ok").await.is_empty());
    assert!(mesh.dead_letters("long").await.is_empty());

    let ok = health(&mesh, "ok").await;
    assert_eq!(
        (ok.last_verdict, ok.consecutive_failures),
        (Some(VerdictKind::Valid), 0)
    );
    assert!(ok.last_success_at.is_some());
    let fails = health(&mesh, "fails").await;
    assert_eq!(
        (fails.last_verdict, fails.consecutive_failures),
        (Some(VerdictKind::Failed), 1)
    );
}

#[tokio::test]
async fn json_output_that_breaks_its_schema_names_the_field() {
    let config = format!(
        "{QUICK}\n[workers.report]\ncommand = [\"/bin/sh\", \"-c\", \"echo '{{\\\"count\\\": \\\"three\\\"}}'\"]\n[workers.report.output]\nformat = \"json\"\nschema = \"report.schema.json\"\n"
    );
    let schema =
        r#"{"type":"object","required":["count"],"properties":{"count":{"type":"integer"}}}"#;
    let mesh = Mesh::new_with_files(&config, &[("report.schema.json", schema)]).await;
    let _roles = roles(&mesh, &["agent", "validator"]).await;
    let run = mesh.trigger("report", &[]);
    let verdict = mesh.verdict_of("report", run, WAIT).await;
    assert_eq!(verdict.verdict, VerdictKind::InvalidOutput);
    assert!(
        verdict
            .reason
            .starts_with("stdout does not match the output schema: field /count: "),
        "{}",
        verdict.reason
    );
}

#[tokio::test]
async fn a_run_nobody_serves_is_lost_by_its_deadline() {
    // No agent serves label `gpu`: the run is never picked up.
    let config = "[agent]\nack_wait = \"1s\"\n[validator]\nslack = \"1s\"\n[workers.orphan]\ncommand = [\"true\"]\nlabels = [\"gpu\"]\ntimeout = \"1s\"\nretries = 0\nstarting_deadline = \"1s\"\n";
    let mesh = Mesh::new(config).await;
    let _roles = roles(&mesh, &["agent", "validator"]).await;
    let run = mesh.trigger("orphan", &[]);
    let verdict = mesh.verdict_of("orphan", run, WAIT).await;
    assert_eq!(verdict.verdict, VerdictKind::Lost);
    assert!(
        verdict.reason.starts_with("no result by its deadline"),
        "{}",
        verdict.reason
    );
    let letters = mesh.dead_letters("orphan").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Lost);
}

#[tokio::test]
async fn an_agent_killed_on_every_delivery_gives_agent_lost() {
    // The worker kills its parent, the agent: every delivery loses its agent.
    let config = "[agent]\nack_wait = \"1s\"\n[validator]\nslack = \"1s\"\n[workers.killer]\ncommand = [\"/bin/sh\", \"-c\", \"kill -9 $PPID; sleep 5\"]\nretries = 0\n";
    let mesh = Mesh::new(config).await;
    let _validator = roles(&mesh, &["validator"]).await;
    let run = mesh.trigger("killer", &[]);
    let mut agents: Vec<Role> = Vec::new();
    let verdict = eventually(Duration::from_secs(60), "verdict agent_lost", || {
        // Replace each agent the worker killed.
        if agents
            .last_mut()
            .is_none_or(|a| matches!(a.child.try_wait(), Ok(Some(_))))
        {
            agents.push(mesh.spawn(&["agent"], &[]));
        }
        let mesh = &mesh;
        async move {
            mesh.verdicts("killer")
                .await
                .into_iter()
                .find(|v| v.run_id == run)
        }
    })
    .await;
    assert_eq!(verdict.verdict, VerdictKind::Lost);
    assert!(
        verdict
            .reason
            .starts_with("agents were lost while running it"),
        "{}",
        verdict.reason
    );
    let letters = mesh.dead_letters("killer").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::AgentLost);
    assert!(
        agents.len() >= 3,
        "each of the {} deliveries lost its agent",
        agents.len()
    );
    // The run left the runs stream: it is dead-lettered, not pending.
    assert!(mesh.stored_runs("killer").await.is_empty());
}

#[tokio::test]
async fn garbage_and_unknown_workers_are_rejected_and_the_mesh_keeps_working() {
    let config =
        format!("{QUICK}\n[workers.ok]\ncommand = [\"/bin/sh\", \"-c\", \"echo STATUS: ok\"]\n");
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["agent", "validator"]).await;
    mesh.publish_raw("ok", b"\xc1\xff\x00garbage").await;
    mesh.publish_raw("ok", br#"{"param": {"x": 1}}"#).await;
    mesh.publish_raw("ghost", br#"{"params": {"x": "1"}}"#)
        .await;

    let ok_letters = eventually(WAIT, "two rejected dead letters of ok", || async {
        let letters = mesh.dead_letters("ok").await;
        (letters.len() >= 2).then_some(letters)
    })
    .await;
    assert!(
        ok_letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Rejected)
    );
    assert!(
        ok_letters.iter().any(|l| l
            .description
            .starts_with("malformed run command: not valid MessagePack")),
        "{ok_letters:?}"
    );
    assert!(
        ok_letters.iter().any(|l| l
            .description
            .starts_with("malformed run command: not valid JSON: unknown field `param`")),
        "{ok_letters:?}"
    );
    let ghost = eventually(WAIT, "the unknown worker's dead letter", || async {
        mesh.dead_letters("ghost").await.into_iter().next()
    })
    .await;
    assert_eq!(ghost.reason, DeadLetterReason::Rejected);
    assert_eq!(
        ghost.description,
        "unknown worker \"ghost\": the registry defines ok"
    );
    assert!(
        ghost.command.is_some(),
        "the decodable command is kept for a replay once the worker exists"
    );
    let rejected = mesh.verdicts("ghost").await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].verdict, VerdictKind::Rejected);

    let run = mesh.trigger("ok", &[]);
    assert_eq!(
        mesh.verdict_of("ok", run, WAIT).await.verdict,
        VerdictKind::Valid,
        "the mesh keeps working"
    );
}

#[tokio::test]
async fn a_replay_reruns_the_dead_run_and_links_both() {
    // Each run has a fresh directory: the worker's flag lives outside it.
    let flag = tempfile::tempdir().expect("tempdir");
    let flag_file = flag.path().join("ok");
    let config = format!(
        "{QUICK}\n[workers.flip]\ncommand = [\"/bin/sh\", \"-c\", \"test -f {} && echo STATUS: ok || exit 1\"]\nretries = 0\n",
        flag_file.display()
    );
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["agent", "validator"]).await;
    let first = mesh.trigger("flip", &[]);
    assert_eq!(
        mesh.verdict_of("flip", first, WAIT).await.verdict,
        VerdictKind::Failed
    );
    std::fs::write(&flag_file, "").expect("flag");
    let replay = mesh.loom(&["dlq", "replay", &first.to_string()]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let new_run: uuid::Uuid = String::from_utf8_lossy(&replay.stdout)
        .split_whitespace()
        .next()
        .expect("run id")
        .parse()
        .expect("uuid");
    assert_eq!(
        mesh.verdict_of("flip", new_run, WAIT).await.verdict,
        VerdictKind::Valid,
        "the replay ran again"
    );
    let state = mesh.run_state("flip", new_run).await.expect("state");
    let command = state.command.expect("command");
    assert_eq!(
        command.replay_of,
        Some(first),
        "the new run links to the dead one"
    );
    assert_eq!(command.trigger, loom_protocol::Trigger::Replay);
    let letters = mesh.dead_letters("flip").await;
    let latest = letters
        .iter()
        .rev()
        .find(|l| l.run_id == first)
        .expect("letter");
    assert_eq!(
        latest.replayed_by,
        Some(new_run),
        "the dead letter is marked replayed"
    );
    let again = mesh.loom(&["dlq", "replay", &first.to_string()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("was replayed already"));
}

#[tokio::test]
async fn validators_restarted_or_side_by_side_give_each_run_one_verdict() {
    let config = format!(
        "{QUICK}\n[workers.quick]\ncommand = [\"/bin/sh\", \"-c\", \"echo STATUS: ok\"]\noverlap = \"allow\"\nconcurrency = 8\n"
    );
    let mesh = Mesh::new(&config).await;
    let _agent = roles(&mesh, &["agent"]).await;
    let mut first = mesh.spawn(&["validator"], &[]);
    first.ready().await;
    let second = roles(&mesh, &["validator"]).await;
    let mut runs = Vec::new();
    for i in 0..40 {
        runs.push(mesh.trigger("quick", &[&format!("n={i}")]));
        if i == 15 {
            first.kill(); // mid-stream
        }
        if i == 25 {
            let restarted = mesh.spawn(&["validator"], &[]);
            first = restarted;
        }
    }
    first.ready().await;
    eventually(Duration::from_secs(60), "40 verdicts", || async {
        let verdicts = mesh.verdicts("quick").await;
        runs.iter()
            .all(|r| verdicts.iter().any(|v| v.run_id == *r))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per_run: BTreeMap<uuid::Uuid, usize> = BTreeMap::new();
    for verdict in mesh.verdicts("quick").await {
        *per_run.entry(verdict.run_id).or_insert(0) += 1;
        assert_eq!(verdict.verdict, VerdictKind::Valid);
    }
    assert_eq!(per_run.len(), 40, "every run has a verdict");
    assert!(
        per_run.values().all(|n| *n == 1),
        "a run got two verdicts: {per_run:?}"
    );
    drop(second);
}

type HmacSha256 = Hmac<Sha256>;

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test]
async fn a_final_failure_reaches_the_webhook_once_signed_and_grouped() {
    let receiver = WebhookReceiver::start(None).await;
    let config = format!(
        "{QUICK}\n[klaxon]\nsinks = [{{ kind = \"webhook\", url = \"{}\", secret = \"s3cret\" }}]\nrepeat_interval = \"1h\"\n[workers.fails]\ncommand = [\"/bin/sh\", \"-c\", \"echo boom >&2; exit 1\"]\nretries = 0\n[workers.patient]\ncommand = [\"false\"]\nretries = 0\nalert_after = 2\n",
        receiver.url()
    );
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["agent", "validator", "klaxon"]).await;
    let run = mesh.trigger("fails", &[]);
    mesh.verdict_of("fails", run, WAIT).await;
    let posts = eventually(WAIT, "the webhook POST", || async {
        let posts = receiver.received();
        (!posts.is_empty()).then_some(posts)
    })
    .await;
    let post = &posts[0];
    let body = post.json();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["worker"], "fails");
    assert_eq!(body["reason"], "failed");
    assert_eq!(body["run_id"], run.to_string());
    assert_eq!(body["dead_letter"]["run_id"], run.to_string());
    assert_eq!(
        post.headers["x-loom-signature"],
        signature("s3cret", &post.body),
        "the signature verifies"
    );
    assert_eq!(post.headers["content-type"], "application/json");

    // Two more failures within the repeat interval are grouped, not sent.
    for _ in 0..2 {
        let again = mesh.trigger("fails", &[]);
        mesh.verdict_of("fails", again, WAIT).await;
    }
    // alert_after = 2: the first failure stays quiet, the second alerts.
    let quiet = mesh.trigger("patient", &[]);
    mesh.verdict_of("patient", quiet, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.json()["worker"] != "patient"),
        "alert_after holds the first failure back"
    );
    let loud = mesh.trigger("patient", &[]);
    mesh.verdict_of("patient", loud, WAIT).await;
    eventually(WAIT, "the patient worker's alert", || async {
        receiver
            .received()
            .iter()
            .any(|r| r.json()["worker"] == "patient")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fails_posts = receiver
        .received()
        .iter()
        .filter(|r| r.json()["worker"] == "fails")
        .count();
    assert_eq!(fails_posts, 1, "three failures, one notification");
}

#[tokio::test]
async fn a_webhook_that_is_down_then_up_gets_the_alert_once() {
    let port = loom_testkit::free_port();
    let config = format!(
        "{QUICK}\n[klaxon]\nsinks = [{{ kind = \"webhook\", url = \"http://127.0.0.1:{port}/hook\" }}]\n[workers.fails]\ncommand = [\"false\"]\nretries = 0\n"
    );
    let mesh = Mesh::new(&config).await;
    let roles = roles(&mesh, &["agent", "validator", "klaxon"]).await;
    let run = mesh.trigger("fails", &[]);
    mesh.verdict_of("fails", run, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let receiver = WebhookReceiver::start(Some(port)).await;
    eventually(Duration::from_secs(60), "the delayed POST", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once");
    assert!(
        roles[2].log().contains("alert delivered"),
        "{}",
        roles[2].log()
    );
}

#[tokio::test]
async fn alertmanager_shows_the_alert_firing_then_resolved_after_a_valid_run() {
    let alertmanager = Alertmanager::start();
    let flag = tempfile::tempdir().expect("tempdir");
    let flag_file = flag.path().join("healthy");
    let config = format!(
        "{QUICK}\n[klaxon]\nsinks = [{{ kind = \"alertmanager\", url = \"{}\" }}]\n[workers.flip]\ncommand = [\"/bin/sh\", \"-c\", \"test -f {} && echo STATUS: ok || exit 1\"]\nretries = 0\n",
        alertmanager.url(),
        flag_file.display()
    );
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["agent", "validator", "klaxon"]).await;
    let failed = mesh.trigger("flip", &[]);
    mesh.verdict_of("flip", failed, WAIT).await;
    let alert = eventually(WAIT, "the alert in Alertmanager", || async {
        alertmanager.alerts("?active=true").into_iter().next()
    })
    .await;
    assert_eq!(alert["labels"]["alertname"], "LoomRunFailed");
    assert_eq!(alert["labels"]["worker"], "flip");
    assert_eq!(alert["labels"]["reason"], "failed");
    assert_eq!(alert["labels"]["severity"], "warning");

    std::fs::write(&flag_file, "").expect("flag");
    let recovered = mesh.trigger("flip", &[]);
    assert_eq!(
        mesh.verdict_of("flip", recovered, WAIT).await.verdict,
        VerdictKind::Valid
    );
    eventually(WAIT, "the alert to resolve", || async {
        alertmanager.alerts("?active=true").is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn missed_fires_are_dead_letters_and_alert_like_failures() {
    let receiver = WebhookReceiver::start(None).await;
    let config = format!(
        "[scheduler]\nlease_ttl = \"1s\"\n[klaxon]\nsinks = [{{ kind = \"webhook\", url = \"{}\" }}]\n[workers.nightly]\nschedule = \"* * * * * *\"\ncommand = [\"true\"]\ncatch_up = \"none\"\nstarting_deadline = \"1s\"\noverlap = \"allow\"\n",
        receiver.url()
    );
    let mesh = Mesh::new(&config).await;
    let workers = mesh
        .broker
        .bucket(&mesh.broker.names().workers_bucket())
        .await
        .expect("bucket");
    let long_ago = loom_protocol::state::FireState {
        last_fire: chrono::Utc::now() - chrono::Duration::seconds(30),
        last_run_id: None,
    };
    workers
        .put(&loom_protocol::state::fire_key("nightly"), &long_ago)
        .await
        .expect("seed");
    let _roles = roles(&mesh, &["klaxon", "scheduler"]).await;
    let missed = eventually(WAIT, "missed dead letters", || async {
        let letters: Vec<_> = mesh
            .dead_letters("nightly")
            .await
            .into_iter()
            .filter(|l| l.reason == DeadLetterReason::Missed)
            .collect();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert!(
        missed
            .iter()
            .all(|l| l.description.contains("starting deadline of 1s")),
        "{missed:?}"
    );
    assert!(
        missed.iter().all(|l| l.command.is_some()),
        "a missed fire's dead letter holds the command to replay"
    );
    let post = eventually(WAIT, "the missed-fire alert", || async {
        receiver.received().into_iter().next()
    })
    .await;
    assert_eq!(post.json()["reason"], "missed");
    assert_eq!(post.json()["severity"], "critical");
}

#[tokio::test]
async fn two_klaxons_side_by_side_send_each_dead_letter_once() {
    let receiver = WebhookReceiver::start(None).await;
    let workers: String = (1..=4)
        .map(|n| format!("[workers.fails{n}]\ncommand = [\"false\"]\nretries = 0\n"))
        .collect();
    let config = format!(
        "{QUICK}\n[klaxon]\nsinks = [{{ kind = \"webhook\", url = \"{}\" }}]\n{workers}",
        receiver.url()
    );
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["agent", "validator", "klaxon", "klaxon"]).await;
    for n in 1..=4 {
        let worker = format!("fails{n}");
        let run = mesh.trigger(&worker, &[]);
        mesh.verdict_of(&worker, run, WAIT).await;
    }
    eventually(WAIT, "four alerts", || async {
        (receiver.received().len() >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut workers: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["worker"].as_str().unwrap_or_default().to_owned())
        .collect();
    workers.sort();
    assert_eq!(
        workers,
        ["fails1", "fails2", "fails3", "fails4"],
        "one alert per dead letter, none twice"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_purged() {
    let config = format!(
        "{QUICK}\n[workers.a]\ncommand = [\"false\"]\nretries = 0\n[workers.b]\ncommand = [\"false\"]\nretries = 0\n"
    );
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["agent", "validator"]).await;
    let a = mesh.trigger("a", &[]);
    let b = mesh.trigger("b", &[]);
    mesh.verdict_of("a", a, WAIT).await;
    mesh.verdict_of("b", b, WAIT).await;
    eventually(WAIT, "two dead letters", || async {
        (mesh.dead_letters("a").await.len() + mesh.dead_letters("b").await.len() == 2).then_some(())
    })
    .await;

    let list = mesh.loom(&["dlq", "list", "--json"]);
    let letters: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(letters.as_array().expect("list").len(), 2);
    let only_a = mesh.loom(&["dlq", "list", "--worker", "a", "--json"]);
    let only_a: serde_json::Value = serde_json::from_slice(&only_a.stdout).expect("json");
    assert_eq!(only_a.as_array().expect("list").len(), 1);
    assert_eq!(only_a[0]["run_id"], a.to_string());
    let show = mesh.loom(&["dlq", "show", &b.to_string()]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(shown["reason"], "failed");
    assert_eq!(shown["attempts"][0]["exit_code"], 1);

    let purge = mesh.loom(&["dlq", "purge", "--worker", "a"]);
    assert_eq!(
        String::from_utf8_lossy(&purge.stdout).trim(),
        "1 dead-letter message(s) deleted"
    );
    let left = mesh.loom(&["dlq", "list", "--json"]);
    let left: serde_json::Value = serde_json::from_slice(&left.stdout).expect("json");
    assert_eq!(left.as_array().expect("list").len(), 1, "only b's is left");
    let unknown = mesh.loom(&["dlq", "show", &a.to_string()]);
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        format!("loom: run {a} has no dead letter")
    );
}

/// A last result that reaches the validator before its run command (the two
/// come through different consumers) waits for the command, so the dead
/// letter still carries the command that `loom dlq replay` needs.
#[tokio::test]
async fn a_result_before_its_command_waits_for_it_and_the_dead_letter_keeps_the_command() {
    let config = format!("{QUICK}\n[workers.late]\ncommand = [\"/bin/false\"]\nretries = 0\n");
    let mesh = Mesh::new(&config).await;
    let _roles = roles(&mesh, &["validator"]).await;
    let run_id = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    let result = loom_protocol::RunResult {
        v: loom_protocol::WIRE_VERSION,
        run_id,
        worker: "late".into(),
        attempt: 1,
        agent_id: "agent-by-hand".into(),
        started_at: now,
        finished_at: now,
        outcome: loom_protocol::Outcome::Failed,
        exit_code: Some(1),
        stdout_tail: String::new(),
        stderr_tail: "boom\n".into(),
        stdout_bytes: 0,
        stderr_bytes: 5,
        cpu_ms: 0,
        max_rss_kb: 0,
        enforcement_digest: None,
        cost: Default::default(),
        last_attempt: true,
    };
    let subjects = mesh.broker.subjects().clone();
    mesh.broker
        .publish(
            &subjects.result("late"),
            None,
            loom_protocol::codec::encode(&result).expect("encode"),
        )
        .await
        .expect("publish the result");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        mesh.verdicts("late").await.is_empty(),
        "no verdict before the command is recorded"
    );

    let command =
        loom_protocol::RunCommand::new(run_id, "late", now, loom_protocol::Trigger::Manual);
    mesh.broker
        .publish(
            &subjects.run("late"),
            None,
            loom_protocol::codec::encode(&command).expect("encode"),
        )
        .await
        .expect("publish the command");
    let verdict = mesh.verdict_of("late", run_id, WAIT).await;
    assert_eq!(verdict.verdict, VerdictKind::Failed);
    let letter = eventually(WAIT, "the dead letter", || async {
        mesh.dead_letters("late").await.into_iter().next()
    })
    .await;
    assert_eq!(letter.run_id, run_id);
    assert_eq!(letter.reason, DeadLetterReason::Failed);
    assert_eq!(
        letter.command.map(|c| c.run_id),
        Some(run_id),
        "the dead letter carries the run command"
    );
    assert_eq!(letter.attempts.len(), 1);
}

/// `loom cancel` finds a run by its id alone, whatever its worker, among
/// the states of several workers; a run whose state was deleted is unknown.
#[tokio::test]
async fn a_run_is_found_by_its_id_alone_until_its_state_is_deleted() {
    let mesh = Mesh::new(QUICK).await;
    let runs = mesh.runs_bucket().await;
    let state = |worker: &str, run_id| {
        let now = chrono::Utc::now();
        RunState {
            run_id,
            worker: worker.to_owned(),
            trigger: loom_protocol::Trigger::Manual,
            scheduled_at: now,
            deadline: None,
            command: None,
            status: RunStatus::Done,
            attempts: Vec::new(),
            verdict: Some(VerdictKind::Valid),
            reason: Some("recorded by the test".to_owned()),
            verdict_at: Some(now),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            cost: Default::default(),
            updated_at: now,
        }
    };
    let (alpha, beta, gone) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    for (worker, run_id) in [("alpha", alpha), ("beta", beta), ("alpha", gone)] {
        runs.put(&run_key(worker, run_id), &state(worker, run_id))
            .await
            .expect("write a run state");
    }
    runs.delete(&run_key("alpha", gone)).await.expect("delete");

    let cancel = |run_id: uuid::Uuid| {
        let output = mesh.loom(&["cancel", &run_id.to_string()]);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for run_id in [alpha, beta] {
        let (code, stderr) = cancel(run_id);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "run {run_id} already has its verdict (valid); there is nothing to cancel"
            )),
            "{stderr}"
        );
    }
    for run_id in [gone, uuid::Uuid::now_v7()] {
        let (code, stderr) = cancel(run_id);
        assert!(code.is_some_and(|code| code != 0), "{stderr}");
        assert!(
            stderr.contains(&format!("run {run_id} is not in the run history")),
            "{stderr}"
        );
    }
}
