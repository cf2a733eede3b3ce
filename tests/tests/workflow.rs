//! Workflows end to end, against a real nats-server, real schedulers,
//! validator and agent, and real worker processes: a diamond run level by
//! level with its middle in parallel, a failing task retried then blocked,
//! a strategist that spawns a round, asks a question, or never stops, and a
//! leader killed mid-run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use loom_protocol::DeadLetterReason;
use loom_tests::{Mesh, Role, eventually, script};
use serde_json::Value;

/// `step` appends `<task> start|end <epoch seconds>` to `steps.log` around a
/// sleep, then says `STATUS: ok <task>`; `fail` always exits 1.
const WORKERS: &str = r#"
[scheduler]
lease_ttl = "3s"

[agent]
ack_wait = "5s"
concurrency = 4

[workers.step]
command = ["@DIR@/step.sh"]
secrets = ["STEPS"]
overlap = "allow"
concurrency = 4
retries = 0

[workers.fail]
command = ["/bin/sh", "-c", "echo broken >&2; exit 1"]
retries = 0

[workers.strategist]
command = ["@DIR@/strategist.sh"]
retries = 0
"#;

const STEP: &str = r#"#!/bin/sh
echo "$LOOM_PARAM_TASK start $(date +%s.%N)" >> "$STEPS"
sleep "${LOOM_PARAM_SLEEP:-1}"
echo "$LOOM_PARAM_TASK end $(date +%s.%N)" >> "$STEPS"
echo "working on $LOOM_PARAM_TASK"
echo "STATUS: ok $LOOM_PARAM_TASK"
"#;

/// A mesh with `workflows` added to the registry and `strategist` as the
/// strategist's script body.
async fn mesh(workflows: &str, strategist: &str) -> (Mesh, std::path::PathBuf) {
    let mesh = Mesh::new("").await;
    let dir = mesh.dir.path().to_owned();
    script(&dir, "step.sh", STEP);
    script(&dir, "strategist.sh", strategist);
    let config = format!("{WORKERS}\n{workflows}").replace("@DIR@", &dir.display().to_string());
    mesh.rewrite_config(&config);
    let init = mesh.loom(&["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    (mesh, dir.join("steps.log"))
}

async fn role(mesh: &Mesh, args: &[&str], steps: &Path) -> Role {
    let steps = steps.display().to_string();
    let mut role = mesh.spawn(args, &[("STEPS", &steps)]);
    role.ready().await;
    role
}

/// The whole mesh: one scheduler, a validator, an agent (passing `STEPS` on
/// to `step` as a secret).
async fn roles(mesh: &Mesh, steps: &Path) -> Vec<Role> {
    vec![
        role(mesh, &["scheduler"], steps).await,
        role(mesh, &["validator"], steps).await,
        role(mesh, &["agent"], steps).await,
    ]
}

fn start(mesh: &Mesh, workflow: &str) -> uuid::Uuid {
    let output = mesh.loom(&["workflow", "start", workflow]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a run id")
}

fn show(mesh: &Mesh, run: uuid::Uuid) -> Option<Value> {
    let output = mesh.loom(&["workflow", "show", &run.to_string(), "--json"]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("JSON"))
}

/// Waits until the run's status is `status`.
async fn until_status(mesh: &Mesh, run: uuid::Uuid, status: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("workflow run {status}"),
        || async { show(mesh, run).filter(|r| r["status"] == status) },
    )
    .await
}

fn report(mesh: &Mesh, run: uuid::Uuid) -> Value {
    let output = mesh.loom(&["workflow", "report", &run.to_string(), "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// Per task: (start, end) instants from the steps log.
fn spans(steps: &Path) -> BTreeMap<String, Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(steps).unwrap_or_default();
    let mut starts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut spans: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [task, what, at] = parts[..] else {
            continue;
        };
        let at: f64 = at.parse().expect("time");
        match what {
            "start" => starts.entry(task.to_owned()).or_default().push(at),
            _ => {
                let start = starts
                    .get_mut(task)
                    .and_then(|s| s.pop())
                    .expect("start before end");
                spans.entry(task.to_owned()).or_default().push((start, at));
            }
        }
    }
    spans
}

fn task<'a>(run: &'a Value, round: usize, id: &str) -> &'a Value {
    run["rounds"][round]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["task"]["id"] == id)
        .unwrap_or_else(|| panic!("task {id} in {run}"))
}

const DIAMOND: &str = r#"
[workflows.diamond]
tasks = [
  { id = "a", worker = "step", params = { task = "a" } },
  { id = "b", worker = "step", depends_on = ["a"], params = { task = "b", sleep = "2" } },
  { id = "c", worker = "step", depends_on = ["a"], params = { task = "c", sleep = "2" } },
  { id = "d", worker = "step", depends_on = ["b", "c"], params = { task = "d" } },
]
"#;

#[tokio::test]
async fn a_diamond_runs_in_three_levels_with_the_middle_in_parallel() {
    let (mesh, steps) = mesh(DIAMOND, "#!/bin/sh\nexit 1\n").await;
    let _roles = roles(&mesh, &steps).await;

    let output = mesh.loom(&["workflow", "start", "diamond", "--wait"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: uuid::Uuid = stdout
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("run id");
    assert!(
        stdout.contains("done after 1 round(s): round 1 finished: 4/4 tasks valid"),
        "{stdout}"
    );

    let spans = spans(&steps);
    let one = |t: &str| {
        assert_eq!(spans[t].len(), 1, "{t} ran once: {spans:?}");
        spans[t][0]
    };
    let (a, b, c, d) = (one("a"), one("b"), one("c"), one("d"));
    assert!(a.1 <= b.0 && a.1 <= c.0, "level 2 after level 1: {spans:?}");
    assert!(b.0 < c.1 && c.0 < b.1, "b and c overlap: {spans:?}");
    assert!(b.1 <= d.0 && c.1 <= d.0, "level 3 after level 2: {spans:?}");

    let shown = show(&mesh, run).expect("the run");
    assert_eq!(
        shown["rounds"][0]["levels"],
        serde_json::json!([["a"], ["b", "c"], ["d"]])
    );
    assert_eq!(
        task(&shown, 0, "b")["attempts"][0]["status_line"],
        "STATUS: ok b"
    );
    let report = report(&mesh, run);
    assert_eq!(report["status"], "done");
    assert_eq!(report["runs"], 4);
    assert_eq!(report["rounds"][0]["tasks_total"], 4);
    assert_eq!(report["rounds"][0]["tasks_valid"], 4);
    // The figures add up: CPU time is the sum over the tasks' attempts.
    let cpu: u64 = shown["rounds"][0]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["attempts"][0]["cpu_ms"].as_u64().expect("cpu"))
        .sum();
    assert_eq!(report["cpu_ms"], cpu);
    let list = mesh.loom(&["workflow", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&run.to_string()));
}

#[tokio::test]
async fn a_failing_task_is_retried_once_then_blocked_and_its_dependents_skipped() {
    let workflows = r#"
[workflows.partial]
tasks = [
  { id = "a", worker = "step", params = { task = "a", sleep = "0" } },
  { id = "broken", worker = "fail", depends_on = ["a"] },
  { id = "after", worker = "step", depends_on = ["broken"], params = { task = "after" } },
  { id = "side", worker = "step", depends_on = ["a"], params = { task = "side", sleep = "0" } },
]
"#;
    let (mesh, steps) = mesh(workflows, "#!/bin/sh\nexit 1\n").await;
    let _roles = roles(&mesh, &steps).await;
    let run = start(&mesh, "partial");
    let shown = until_status(&mesh, run, "done").await;
    assert_eq!(task(&shown, 0, "broken")["state"], "blocked");
    assert_eq!(
        task(&shown, 0, "broken")["attempts"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        task(&shown, 0, "broken")["attempts"][1]["verdict"],
        "failed"
    );
    assert_eq!(task(&shown, 0, "after")["state"], "skipped");
    assert_eq!(task(&shown, 0, "after")["attempts"], serde_json::json!([]));
    assert_eq!(task(&shown, 0, "side")["state"], "valid");
    assert!(
        !spans(&steps).contains_key("after"),
        "a skipped task never runs"
    );
    let report = report(&mesh, run);
    assert_eq!(report["rounds"][0]["tasks_valid"], 2);
    assert_eq!(report["rounds"][0]["tasks_blocked"], 1);
    assert_eq!(report["rounds"][0]["tasks_skipped"], 1);
    assert_eq!(report["runs"], 4, "a, side, broken twice");
}

const ONE: &str = r#"
[workflows.planned]
strategist = "strategist"
max_rounds = 2
tasks = [{ id = "first", worker = "step", params = { task = "first", sleep = "0" } }]
"#;

#[tokio::test]
async fn a_strategist_spawns_one_more_round_then_says_done() {
    let strategist = r#"#!/bin/sh
case "$LOOM_PARAM_ROUND" in
  *'"round":1,'*) echo '[{"id": "extra", "worker": "step", "params": {"task": "extra", "sleep": "0"}}]'
                  echo "STATUS: SPAWN_NEXT" ;;
  *) echo "STATUS: DONE" ;;
esac
"#;
    let (mesh, steps) = mesh(ONE, strategist).await;
    let _roles = roles(&mesh, &steps).await;
    let run = start(&mesh, "planned");
    let shown = until_status(&mesh, run, "done").await;
    assert_eq!(shown["rounds"].as_array().map(Vec::len), Some(2));
    assert_eq!(task(&shown, 1, "extra")["state"], "valid");
    assert_eq!(
        shown["rounds"][0]["strategist"]["decision"],
        serde_json::json!({"kind": "spawn_next", "tasks": 1})
    );
    assert_eq!(
        shown["rounds"][1]["strategist"]["decision"],
        serde_json::json!({"kind": "done"})
    );
    assert_eq!(shown["outcome"], "the strategist said DONE after round 2");
    let report = report(&mesh, run);
    assert_eq!(report["runs"], 4, "two tasks, two strategist runs");
}

#[tokio::test]
async fn a_strategist_that_asks_pauses_the_run_until_an_answer() {
    let strategist = r#"#!/bin/sh
if [ -z "$LOOM_PARAM_ANSWER" ]; then
  echo "STATUS: CLARIFICATION_NEEDED: which repository?"
else
  echo "told: $LOOM_PARAM_ANSWER"
  echo "STATUS: DONE"
fi
"#;
    let (mesh, steps) = mesh(ONE, strategist).await;
    let _roles = roles(&mesh, &steps).await;
    let run = start(&mesh, "planned");
    let waiting = until_status(&mesh, run, "waiting_for_answer").await;
    assert_eq!(waiting["question"], "which repository?");
    let letter = eventually(
        Duration::from_secs(15),
        "the clarification dead letter",
        || async {
            mesh.dead_letters("planned")
                .await
                .into_iter()
                .find(|l| l.run_id == run)
        },
    )
    .await;
    assert_eq!(letter.reason, DeadLetterReason::ClarificationNeeded);
    assert!(
        letter.description.contains("which repository?"),
        "{}",
        letter.description
    );

    let answered = mesh.loom(&["workflow", "answer", &run.to_string(), "the loom repo"]);
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let done = until_status(&mesh, run, "done").await;
    assert_eq!(done["answers"], serde_json::json!(["the loom repo"]));
    let strategist = &done["rounds"][0]["strategist"];
    assert_eq!(strategist["answer"], "the loom repo");
    assert!(
        strategist["attempts"][1]["stdout_tail"]
            .as_str()
            .is_some_and(|t| t.contains("told: the loom repo")),
        "{strategist}"
    );
    // Answering a run that does not wait is refused.
    let again = mesh.loom(&["workflow", "answer", &run.to_string(), "more"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is done, not waiting for an answer"));
}

#[tokio::test]
async fn max_rounds_stops_a_strategist_that_never_says_done() {
    let strategist = r#"#!/bin/sh
echo '[{"id": "more", "worker": "step", "params": {"task": "more", "sleep": "0"}}]'
echo "STATUS: SPAWN_NEXT"
"#;
    let (mesh, steps) = mesh(ONE, strategist).await;
    let _roles = roles(&mesh, &steps).await;
    let run = start(&mesh, "planned");
    let shown = until_status(&mesh, run, "max_rounds").await;
    assert_eq!(shown["rounds"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        shown["outcome"],
        "stopped at max_rounds (2): the strategist still asked for another round"
    );
    let report = report(&mesh, run);
    assert_eq!(report["status"], "max_rounds");
}

#[tokio::test]
async fn a_workflow_start_by_nats_publish_runs_too() {
    let (mesh, steps) = mesh(DIAMOND, "#!/bin/sh\nexit 1\n").await;
    let _roles = roles(&mesh, &steps).await;
    mesh.broker
        .publish(
            &mesh.broker.subjects().workflow_start("diamond"),
            None,
            br#"{"params": {"sleep": "0"}}"#.to_vec(),
        )
        .await
        .expect("publish");
    let run = eventually(Duration::from_secs(20), "a workflow run", || async {
        let output = mesh.loom(&["workflow", "list", "--json"]);
        let runs: Value = serde_json::from_slice(&output.stdout).ok()?;
        runs[0]["run_id"]
            .as_str()
            .and_then(|id| id.parse::<uuid::Uuid>().ok())
    })
    .await;
    let shown = until_status(&mesh, run, "done").await;
    assert_eq!(shown["trigger"], "manual");
    // The start's params reach every task; the task's own win.
    assert_eq!(shown["params"]["sleep"], "0");
}

#[tokio::test]
async fn the_leader_killed_mid_workflow_hands_over_and_every_task_runs_once() {
    let (mesh, steps) = mesh(DIAMOND, "#!/bin/sh\nexit 1\n").await;
    let mut first = role(&mesh, &["scheduler"], &steps).await;
    let _validator = role(&mesh, &["validator"], &steps).await;
    let _agent = role(&mesh, &["agent"], &steps).await;
    // The first scheduler leads before the second one starts.
    eventually(Duration::from_secs(10), "a leader", || async {
        first
            .metrics()
            .contains("loom_scheduler_is_leader 1")
            .then_some(())
    })
    .await;
    let _second = role(&mesh, &["scheduler"], &steps).await;

    let run = start(&mesh, "diamond");
    // Kill the leader while the middle level runs.
    eventually(
        Duration::from_secs(20),
        "the middle level running",
        || async { spans_started(&steps, "b").then_some(()) },
    )
    .await;
    first.kill();
    let shown = until_status(&mesh, run, "done").await;
    for id in ["a", "b", "c", "d"] {
        assert_eq!(
            task(&shown, 0, id)["attempts"].as_array().map(Vec::len),
            Some(1),
            "{id}"
        );
    }
    let spans = spans(&steps);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(
            spans.get(id).map(Vec::len),
            Some(1),
            "{id} ran once: {spans:?}"
        );
    }
}

fn spans_started(steps: &Path, task: &str) -> bool {
    std::fs::read_to_string(steps)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{task} start")))
}

#[tokio::test]
async fn check_refuses_a_cycle_and_an_unknown_worker_with_their_messages() {
    let mesh = Mesh::new("").await;
    let cycle = r#"
[workers.w]
command = ["/bin/true"]

[workflows.loop]
tasks = [
  { id = "a", worker = "w", depends_on = ["c"] },
  { id = "b", worker = "w", depends_on = ["a"] },
  { id = "c", worker = "w", depends_on = ["b"] },
]
"#;
    mesh.rewrite_config(cycle);
    let output = mesh.loom(&["check"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("workflow \"loop\": tasks form a cycle: a → b → c → a"),
        "{stderr}"
    );

    let unknown = "[workers.w]\ncommand = [\"/bin/true\"]\n\n[workflows.lost]\ntasks = [{ id = \"a\", worker = \"nope\" }]\n";
    mesh.rewrite_config(unknown);
    let output = mesh.loom(&["check"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "workflow \"lost\": task \"a\" names worker \"nope\", which is not in the registry"
        ),
        "{stderr}"
    );
}
