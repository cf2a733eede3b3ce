//! What operators see without reading logs, against a real nats-server and
//! real roles: agent presence (what each agent serves and runs, gone when it
//! stops), `loom status` (table and `--json`), `loom runs --json` marking a
//! run running on its agent, and `loom trigger --wait` following a run from
//! queued to running to its verdict.

use std::time::Duration;

use loom_protocol::VerdictKind;
use loom_protocol::state::{AgentPresence, presence_key};
use loom_tests::{Mesh, Role, eventually};
use serde_json::Value;

const CONFIG: &str = r#"
[agent]
ack_wait = "5s"

[workers.steady]
description = "succeeds at once"
command = ["/bin/sh", "-c", "echo 'STATUS: ok all good'"]
schedule = "0 4 * * SUN"
timezone = "America/Chicago"
output = { format = "status-line" }

[workers.slow]
description = "takes a few seconds"
command = ["/bin/sh", "-c", "sleep 3; echo done"]

[workers.broken]
description = "always fails"
command = ["/bin/sh", "-c", "echo oops >&2; exit 1"]
retries = 0

[workers.idle]
command = ["/bin/true"]
schedule = "@every 1h"
enabled = false
"#;

async fn mesh() -> Mesh {
    Mesh::new(CONFIG).await
}

async fn role(mesh: &Mesh, args: &[&str], envs: &[(&str, &str)]) -> Role {
    let mut role = mesh.spawn(args, envs);
    role.ready().await;
    role
}

/// The agent's presence, once it is written.
async fn presence(mesh: &Mesh, id: &str) -> AgentPresence {
    let bucket = mesh
        .broker
        .bucket(&mesh.broker.names().agents_bucket())
        .await
        .expect("agents bucket");
    eventually(Duration::from_secs(10), "the agent's presence", || async {
        bucket
            .get::<AgentPresence>(&presence_key(id))
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
    })
    .await
}

fn json_of(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "loom failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn worker<'a>(overview: &'a Value, name: &str) -> &'a Value {
    overview["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {overview}"))
}

#[tokio::test]
async fn presence_shows_what_an_agent_serves_and_runs_and_goes_when_it_stops() {
    let mesh = mesh().await;
    let _validator = role(&mesh, &["validator"], &[]).await;
    let mut agent = role(
        &mesh,
        &["agent", "--concurrency", "2"],
        &[("LOOM_AGENT__ID", "agent-p")],
    )
    .await;

    let idle = presence(&mesh, "agent-p").await;
    assert_eq!(idle.id, "agent-p");
    assert_eq!(idle.concurrency, 2);
    assert_eq!(idle.workers, ["broken", "idle", "slow", "steady"]);
    assert!(idle.running.is_empty(), "{idle:?}");

    let run_id = mesh.trigger("slow", &[]);
    let bucket = mesh
        .broker
        .bucket(&mesh.broker.names().agents_bucket())
        .await
        .expect("agents bucket");
    let running = eventually(
        Duration::from_secs(10),
        "the run in the presence",
        || async {
            let presence = bucket
                .get::<AgentPresence>(&presence_key("agent-p"))
                .await
                .ok()
                .flatten()?
                .value;
            presence.running.first().cloned()
        },
    )
    .await;
    assert_eq!(running.run_id, run_id);
    assert_eq!(running.worker, "slow");
    assert_eq!(running.attempt, 1);

    // While it runs, the history marks it running on this agent.
    let runs = json_of(&mesh.loom(&["runs", "slow", "--json"]));
    let run = &runs["runs"][0];
    assert_eq!(run["run_id"], run_id.to_string(), "{runs}");
    assert_eq!(run["status"], "running", "{runs}");
    assert_eq!(run["running_on"], "agent-p", "{runs}");
    let overview = json_of(&mesh.loom(&["status", "--json"]));
    let agents = overview["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1, "{overview}");
    assert_eq!(agents[0]["id"], "agent-p");
    assert_eq!(agents[0]["running"], 1);
    assert_eq!(worker(&overview, "slow")["status"], "running");

    let verdict = mesh
        .verdict_of("slow", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    let runs = json_of(&mesh.loom(&["runs", "slow", "--json"]));
    assert_eq!(runs["runs"][0]["status"], "done", "{runs}");
    assert_eq!(runs["runs"][0]["running_on"], Value::Null, "{runs}");

    // A stopped agent takes its presence with it.
    assert!(agent.stop(Duration::from_secs(20)).success());
    let gone = bucket
        .get::<AgentPresence>(&presence_key("agent-p"))
        .await
        .expect("read presence");
    assert_eq!(gone, None);
    let overview = json_of(&mesh.loom(&["status", "--json"]));
    assert_eq!(overview["agents"], Value::Array(vec![]), "{overview}");
}

#[tokio::test]
async fn status_json_gives_every_worker_its_health_and_figures() {
    let mesh = mesh().await;
    let _scheduler = role(&mesh, &["scheduler"], &[]).await;
    let _validator = role(&mesh, &["validator"], &[]).await;
    let _agent = role(&mesh, &["agent"], &[("LOOM_AGENT__ID", "agent-s")]).await;

    let before = json_of(&mesh.loom(&["status", "--json"]));
    assert_eq!(worker(&before, "steady")["status"], "never_run", "{before}");
    assert_eq!(worker(&before, "idle")["status"], "disabled", "{before}");

    let ok = mesh.trigger("steady", &[]);
    let failed = mesh.trigger("broken", &[]);
    assert_eq!(
        mesh.verdict_of("steady", ok, Duration::from_secs(30))
            .await
            .verdict,
        VerdictKind::Valid
    );
    assert_eq!(
        mesh.verdict_of("broken", failed, Duration::from_secs(30))
            .await
            .verdict,
        VerdictKind::Failed
    );
    let paused = mesh.loom(&["pause", "slow", "--note", "maintenance"]);
    assert!(paused.status.success());

    let overview = eventually(
        Duration::from_secs(15),
        "health and dead letter in the overview",
        || async {
            let overview = json_of(&mesh.loom(&["status", "--json"]));
            let ready = worker(&overview, "steady")["last_run"]["run_id"] == ok.to_string()
                && worker(&overview, "broken")["dead_letters"] == 1;
            ready.then_some(overview)
        },
    )
    .await;

    let names: Vec<&str> = overview["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["broken", "idle", "slow", "steady"]);
    assert!(overview["generated_at"].is_string());
    assert!(overview["leader"]["id"].is_string(), "{overview}");

    let steady = worker(&overview, "steady");
    assert_eq!(steady["status"], "ok");
    assert_eq!(steady["description"], "succeeds at once");
    assert_eq!(steady["schedule"], "0 4 * * SUN");
    assert_eq!(
        steady["schedule_description"],
        "Sundays at 04:00 America/Chicago"
    );
    assert_eq!(steady["timezone"], "America/Chicago");
    assert!(steady["next_run"].is_string());
    assert_eq!(steady["last_run"]["verdict"], "valid");
    assert_eq!(steady["last_run"]["reason"], "STATUS: ok all good");
    assert!(steady["last_success_at"].is_string());
    assert_eq!(steady["consecutive_failures"], 0);
    assert_eq!(steady["runs_24h"], 1);
    assert_eq!(steady["success_rate_24h"], 1.0);
    assert!(steady["p95_duration_ms"].is_u64());
    assert_eq!(steady["open_runs"], 0);
    assert_eq!(steady["dead_letters"], 0);
    assert_eq!(steady["paused"], Value::Null);

    let broken = worker(&overview, "broken");
    assert_eq!(broken["status"], "failing");
    assert_eq!(broken["last_run"]["verdict"], "failed");
    assert_eq!(broken["consecutive_failures"], 1);
    assert_eq!(broken["success_rate_24h"], 0.0);
    assert_eq!(broken["schedule"], Value::Null);
    assert_eq!(broken["next_run"], Value::Null);

    let slow = worker(&overview, "slow");
    assert_eq!(slow["status"], "paused");
    assert_eq!(slow["paused"]["note"], "maintenance");
    assert_eq!(slow["success_rate_24h"], Value::Null);

    let idle = worker(&overview, "idle");
    assert_eq!(idle["status"], "disabled");
    assert_eq!(idle["enabled"], false);
    assert_eq!(idle["next_run"], Value::Null);

    // The table, piped: plain text, one line per worker.
    let table = mesh.loom(&["status"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).expect("utf-8");
    assert!(!text.contains('\x1b'), "colour when piped:\n{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
            .to_owned()
    };
    assert!(line("broken").contains("failing"), "{text}");
    assert!(
        line("steady").contains("Sundays at 04:00 America/Chicago"),
        "{text}"
    );
    assert!(line("steady").contains("100% of 1"), "{text}");
    assert!(
        line("slow").contains("paused until resumed: maintenance"),
        "{text}"
    );
    assert!(text.contains("leader: "), "{text}");
    assert!(text.contains("agent agent-s: 0/"), "{text}");
}

#[tokio::test]
async fn trigger_wait_reports_queued_then_running_on_the_agent_then_the_verdict() {
    let mesh = mesh().await;
    let _validator = role(&mesh, &["validator"], &[]).await;
    let _agent = role(&mesh, &["agent"], &[("LOOM_AGENT__ID", "agent-w")]).await;

    let dir = mesh.dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        loom_testkit::loom_command()
            .current_dir(dir)
            .args(["trigger", "slow", "--wait", "--config", "loom.toml"])
            .output()
            .expect("loom trigger")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Piped: one line per phase on stderr, no terminal control codes.
    let phases: Vec<&str> = stderr.lines().collect();
    assert_eq!(phases, ["queued", "running on agent-w"], "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].parse::<uuid::Uuid>().is_ok(), "{stdout}");
    assert!(lines[1].starts_with("valid after 1 attempt(s)"), "{stdout}");
}
