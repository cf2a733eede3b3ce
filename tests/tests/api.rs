//! The JSON API of docs/api.md, served by `loom up` over a real nats-server
//! with real worker processes: the exact shapes of `/api/workers`,
//! `/api/runs`, `/api/dlq` and `/api/workflows`, the actions (trigger,
//! replay, pause, resume, workflow start and answer) with their status
//! codes, the dashboard's files, and 503 while NATS is down.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use loom_tests::{Mesh, Role};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Three workers, written out of name order: the API answers in name order.
const CONFIG: &str = r#"
[agent]
ack_wait = "2s"
drain_timeout = "2s"
[validator]
slack = "1s"

[workers.dormant]
description = "Never fires: disabled"
command = ["true"]
schedule = "@hourly"
enabled = false

[workers.alpha]
description = "Says all is well"
command = ["/bin/sh", "-c", "echo working; echo 'STATUS: ok 3 documents'"]
schedule = "0 4 * * SUN"
timezone = "America/Chicago"
labels = ["media"]
output = { format = "status-line" }

[workers.broken]
description = "Always fails"
command = ["/bin/sh", "-c", "echo 'no such table' >&2; exit 3"]
retries = 0
"#;

/// An HTTP answer: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One request over a plain socket (HTTP/1.1, `Connection: close`).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body.as_bytes()).expect("send body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn get(port: u16, path: &str) -> Answer {
    request(port, "GET", path, &[], "")
}

fn post(port: u16, path: &str, body: &str) -> Answer {
    request(port, "POST", path, &[], body)
}

/// `GET` answering 200 with JSON.
fn get_json(port: u16, path: &str) -> Value {
    let answer = get(port, path);
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

/// `POST` answering `status` with JSON.
fn post_json(port: u16, path: &str, body: &str, status: u16) -> Value {
    let answer = post(port, path, body);
    assert_eq!(answer.status, status, "POST {path}: {}", answer.body);
    answer.json()
}

/// An error answer: exactly `{"error": "<one sentence>"}`.
fn assert_error(value: &Value, contains: &str) {
    let object = value.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{value}");
    let message = object["error"].as_str().expect("error is a string");
    assert!(message.contains(contains), "{message:?} lacks {contains:?}");
}

/// Polls `check` every 200 ms until it returns `Some`, for at most [`WAIT`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn worker<'a>(overview: &'a Value, name: &str) -> &'a Value {
    overview["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {overview}"))
}

/// The JSON type of each key of `object`, checked against `expected`
/// (`"string"`, `"number"`, `"bool"`, `"array"`, `"object"`, `"null"`, or
/// alternatives joined by `|`); no key more, no key less.
fn assert_shape(object: &Value, expected: &[(&str, &str)]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"));
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut wanted: Vec<&str> = expected.iter().map(|(key, _)| *key).collect();
    wanted.sort_unstable();
    assert_eq!(keys, wanted, "keys of {object}");
    for (key, kinds) in expected {
        let value = &map[*key];
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert!(
            kinds.split('|').any(|k| k == kind),
            "{key} is {kind} ({value}), expected {kinds}"
        );
    }
}

fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{text} is not RFC 3339"
    );
}

const WORKER_SHAPE: &[(&str, &str)] = &[
    ("name", "string"),
    ("description", "string"),
    ("enabled", "bool"),
    ("schedule", "string|null"),
    ("schedule_description", "string|null"),
    ("timezone", "string"),
    ("labels", "array"),
    ("next_run", "string|null"),
    ("paused", "object|null"),
    ("last_run", "object|null"),
    ("last_success_at", "string|null"),
    ("consecutive_failures", "number"),
    ("runs_24h", "number"),
    ("success_rate_24h", "number|null"),
    ("p95_duration_ms", "number|null"),
    ("open_runs", "number"),
    ("dead_letters", "number"),
    ("status", "string"),
];

async fn up(mesh: &Mesh) -> Role {
    let mut role = mesh.spawn(&["up"], &[]);
    role.ready().await;
    role
}

#[tokio::test]
async fn the_overview_and_the_run_history_have_the_documented_shapes() {
    let mut mesh = Mesh::new(CONFIG).await;
    let mut up = up(&mesh).await;
    let port = up.http_port;

    // Before any run: the registry in name order, nothing run.
    let overview = eventually("a leader and an agent in the overview", || {
        let overview = get_json(port, "/api/workers");
        (!overview["leader"].is_null() && !overview["agents"].as_array()?.is_empty())
            .then_some(overview)
    });
    assert_shape(
        &overview,
        &[
            ("generated_at", "string"),
            ("leader", "object"),
            ("agents", "array"),
            ("workers", "array"),
        ],
    );
    assert_timestamp(&overview["generated_at"]);
    assert_shape(
        &overview["leader"],
        &[("id", "string"), ("since", "string")],
    );
    assert_timestamp(&overview["leader"]["since"]);
    let agent = &overview["agents"][0];
    assert_shape(
        agent,
        &[
            ("id", "string"),
            ("labels", "array"),
            ("workers", "array"),
            ("running", "number"),
            ("concurrency", "number"),
            ("seen_at", "string"),
        ],
    );
    assert_eq!(agent["workers"], json!(["alpha", "broken", "dormant"]));
    let names: Vec<&str> = overview["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "broken", "dormant"]);
    for worker in overview["workers"].as_array().unwrap() {
        assert_shape(worker, WORKER_SHAPE);
    }
    let alpha = worker(&overview, "alpha");
    assert_eq!(alpha["status"], "never_run");
    assert_eq!(alpha["description"], "Says all is well");
    assert_eq!(alpha["schedule"], "0 4 * * SUN");
    assert_eq!(alpha["timezone"], "America/Chicago");
    assert_eq!(alpha["labels"], json!(["media"]));
    assert_timestamp(&alpha["next_run"]);
    assert!(
        alpha["schedule_description"]
            .as_str()
            .unwrap()
            .contains("Sunday")
    );
    assert_eq!(alpha["runs_24h"], 0);
    assert_eq!(alpha["success_rate_24h"], Value::Null);
    assert_eq!(alpha["p95_duration_ms"], Value::Null);
    let broken = worker(&overview, "broken");
    assert_eq!(broken["schedule"], Value::Null);
    assert_eq!(broken["next_run"], Value::Null);
    assert_eq!(broken["status"], "never_run");
    let dormant = worker(&overview, "dormant");
    assert_eq!(dormant["status"], "disabled");
    assert_eq!(dormant["enabled"], false);
    assert_eq!(dormant["next_run"], Value::Null);

    // A triggered run shows up in the history, then ends valid.
    let triggered = post_json(port, "/api/workers/alpha/trigger", "", 200);
    assert_shape(&triggered, &[("run_id", "string")]);
    let run_id = triggered["run_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&run_id).is_ok(), "{run_id}");
    let runs = eventually("the run to be done", || {
        let runs = get_json(port, "/api/runs?worker=alpha");
        (runs["runs"][0]["status"] == "done").then_some(runs)
    });
    assert_shape(
        &runs,
        &[
            ("worker", "string"),
            ("runs", "array"),
            ("skipped", "array"),
        ],
    );
    assert_eq!(runs["worker"], "alpha");
    let run = &runs["runs"][0];
    assert_eq!(run["run_id"], run_id.as_str());
    for key in [
        "run_id",
        "worker",
        "trigger",
        "scheduled_at",
        "deadline",
        "status",
        "attempts",
        "verdict",
        "reason",
        "verdict_at",
        "stdout_tail",
        "stderr_tail",
        "cost",
        "running_on",
    ] {
        assert!(run.get(key).is_some(), "a run has no {key}: {run}");
    }
    assert_eq!(run["worker"], "alpha");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["verdict"], "valid");
    assert_eq!(run["reason"], "STATUS: ok 3 documents");
    assert_eq!(run["running_on"], Value::Null);
    assert_eq!(run["stdout_tail"], "working\nSTATUS: ok 3 documents\n");
    assert!(run["cost"].is_object());
    assert_timestamp(&run["verdict_at"]);
    let attempt = &run["attempts"][0];
    for (key, kind) in [
        ("attempt", "number"),
        ("agent_id", "string"),
        ("outcome", "string"),
        ("exit_code", "number"),
        ("started_at", "string"),
        ("duration_ms", "number"),
        ("stdout_tail", "string"),
        ("stderr_tail", "string"),
    ] {
        let value = attempt
            .get(key)
            .unwrap_or_else(|| panic!("an attempt has no {key}: {attempt}"));
        assert_shape(&json!({ key: value }), &[(key, kind)]);
    }
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["outcome"], "succeeded");
    assert_eq!(attempt["exit_code"], 0);
    assert_eq!(attempt["agent_id"], agent["id"]);

    // The overview follows (its cache lasts about 2 s).
    let alpha = eventually("alpha to be ok", || {
        let overview = get_json(port, "/api/workers");
        let alpha = worker(&overview, "alpha").clone();
        (alpha["status"] == "ok").then_some(alpha)
    });
    assert_shape(&alpha, WORKER_SHAPE);
    assert_shape(
        &alpha["last_run"],
        &[
            ("run_id", "string"),
            ("scheduled_at", "string"),
            ("verdict", "string"),
            ("reason", "string|null"),
            ("finished_at", "string|null"),
        ],
    );
    assert_eq!(alpha["last_run"]["run_id"], run_id.as_str());
    assert_eq!(alpha["last_run"]["verdict"], "valid");
    assert_eq!(alpha["runs_24h"], 1);
    assert_eq!(alpha["success_rate_24h"], 1.0);
    assert!(alpha["p95_duration_ms"].is_u64(), "{alpha}");
    assert_timestamp(&alpha["last_success_at"]);

    // limit, unknown workers and bad queries.
    assert_eq!(
        get_json(port, "/api/runs?worker=alpha&limit=0")["runs"],
        json!([])
    );
    let unknown = get(port, "/api/runs?worker=alpah");
    assert_eq!(unknown.status, 404);
    assert_error(&unknown.json(), "worker \"alpah\" is not in the registry");
    let missing = get(port, "/api/runs");
    assert_eq!(missing.status, 400);
    assert_error(&missing.json(), "worker=<name>");
    let bad_limit = get(port, "/api/runs?worker=alpha&limit=many");
    assert_eq!(bad_limit.status, 400);
    assert_error(&bad_limit.json(), "limit");
    let nowhere = get(port, "/api/nowhere");
    assert_eq!(nowhere.status, 404);
    assert_error(&nowhere.json(), "/api/nowhere");

    // The dashboard's files, with their types; the page loads nothing else.
    let index = get(port, "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        index
            .header("content-security-policy")
            .is_some_and(
                |csp| csp.contains("default-src 'none'") && csp.contains("connect-src 'self'")
            ),
        "{:?}",
        index.headers
    );
    assert!(index.body.contains("/assets/app.js"));
    assert!(!index.body.contains("http://") && !index.body.contains("https://"));
    for (path, kind) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let file = get(port, path);
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(file.header("content-type"), Some(kind), "{path}");
        assert!(file.body.len() > 1000, "{path} is nearly empty");
    }

    // Without NATS the API says so at once, and recovers with it.
    mesh.server.kill();
    eventually("503 with the broker down", || {
        let answer = get(port, "/api/workers");
        (answer.status == 503).then(|| assert_error(&answer.json(), "disconnected from NATS"))
    });
    let trigger = post(port, "/api/workers/alpha/trigger", "");
    assert_eq!(trigger.status, 503, "{}", trigger.body);
    mesh.server.restart();
    eventually("the API back with the broker", || {
        (get(port, "/api/workers").status == 200).then_some(())
    });

    assert!(up.stop(WAIT).success(), "{}", up.log());
}

#[tokio::test]
async fn dead_letters_replays_and_the_worker_actions() {
    let mesh = Mesh::new(CONFIG).await;
    let mut up = up(&mesh).await;
    let port = up.http_port;

    assert_eq!(get_json(port, "/api/dlq"), json!({ "dead_letters": [] }));

    // A final failure becomes a dead letter; the worker is failing.
    let failed = post_json(port, "/api/workers/broken/trigger", "", 200)["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let letters = eventually("broken's dead letter", || {
        let letters = get_json(port, "/api/dlq?worker=broken");
        (!letters["dead_letters"].as_array()?.is_empty()).then_some(letters)
    });
    assert_shape(&letters, &[("dead_letters", "array")]);
    let letter = &letters["dead_letters"][0];
    for key in [
        "run_id",
        "worker",
        "reason",
        "description",
        "attempts",
        "command",
        "dead_at",
        "replayed_by",
    ] {
        assert!(
            letter.get(key).is_some(),
            "a dead letter has no {key}: {letter}"
        );
    }
    assert_eq!(letter["run_id"], failed.as_str());
    assert_eq!(letter["worker"], "broken");
    assert_eq!(letter["reason"], "failed");
    assert_eq!(letter["replayed_by"], Value::Null);
    assert_eq!(letter["attempts"].as_array().unwrap().len(), 1);
    assert_timestamp(&letter["dead_at"]);
    assert_eq!(
        get_json(port, "/api/dlq")["dead_letters"],
        letters["dead_letters"]
    );
    assert_eq!(
        get_json(port, "/api/dlq?worker=alpha"),
        json!({ "dead_letters": [] })
    );
    let broken = eventually("broken to be failing", || {
        let overview = get_json(port, "/api/workers");
        let broken = worker(&overview, "broken").clone();
        (broken["status"] == "failing").then_some(broken)
    });
    assert_eq!(broken["dead_letters"], 1);
    assert_eq!(broken["last_run"]["verdict"], "failed");
    assert_eq!(broken["consecutive_failures"], 1);
    assert_eq!(broken["success_rate_24h"], 0.0);
    let runs = get_json(port, "/api/runs?worker=broken");
    assert_eq!(runs["runs"][0]["verdict"], "failed");
    assert_eq!(runs["runs"][0]["stderr_tail"], "no such table\n");

    // Replay: a new run, once.
    let replay_path = format!("/api/dlq/{failed}/replay");
    let replayed = post_json(port, &replay_path, "", 200);
    assert_shape(&replayed, &[("run_id", "string")]);
    let replay_id = replayed["run_id"].as_str().unwrap().to_owned();
    assert_ne!(replay_id, failed);
    let again = post(port, &replay_path, "");
    assert_eq!(again.status, 409, "{}", again.body);
    assert_error(&again.json(), "was replayed already");
    let letters = get_json(port, "/api/dlq?worker=broken");
    let original = letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["run_id"] == failed.as_str())
        .expect("the replayed letter is still listed");
    assert_eq!(original["replayed_by"], replay_id.as_str());
    let unknown_run = post(
        port,
        "/api/dlq/01a20000-0000-7000-8000-000000000000/replay",
        "",
    );
    assert_eq!(unknown_run.status, 404);
    assert_error(&unknown_run.json(), "has no dead letter");
    let not_an_id = post(port, "/api/dlq/yesterday/replay", "");
    assert_eq!(not_an_id.status, 400);
    assert_error(&not_an_id.json(), "is not a run id");

    // Trigger: unknown 404, disabled 409, params in the body.
    let unknown = post(port, "/api/workers/nosuch/trigger", "");
    assert_eq!(unknown.status, 404);
    assert_error(&unknown.json(), "worker \"nosuch\" is not in the registry");
    let disabled = post(port, "/api/workers/dormant/trigger", "");
    assert_eq!(disabled.status, 409);
    assert_error(&disabled.json(), "is disabled");
    let with_params = post_json(
        port,
        "/api/workers/alpha/trigger",
        r#"{"params": {"day": "monday"}}"#,
        200,
    );
    let with_params = with_params["run_id"].as_str().unwrap().to_owned();
    let params = eventually("the run with params in the history", || {
        let runs = get_json(port, "/api/runs?worker=alpha");
        let run = runs["runs"]
            .as_array()?
            .iter()
            .find(|r| r["run_id"] == with_params.as_str())?
            .clone();
        (!run["command"].is_null()).then(|| run["command"]["params"].clone())
    });
    assert_eq!(params, json!({ "day": "monday" }));
    let bad_body = post(port, "/api/workers/alpha/trigger", r#"{"param": {}}"#);
    assert_eq!(bad_body.status, 400);
    assert_error(&bad_body.json(), "the request body is not");

    // Pause and resume.
    let pause = post_json(
        port,
        "/api/workers/alpha/pause",
        r#"{"until": null, "note": "maintenance"}"#,
        200,
    );
    assert_shape(
        &pause,
        &[("until", "null"), ("note", "string"), ("at", "string")],
    );
    assert_eq!(pause["note"], "maintenance");
    let alpha = eventually("alpha to be paused", || {
        let overview = get_json(port, "/api/workers");
        let alpha = worker(&overview, "alpha").clone();
        (alpha["status"] == "paused").then_some(alpha)
    });
    assert_eq!(alpha["paused"], pause);
    let until = post_json(
        port,
        "/api/workers/broken/pause",
        r#"{"until": "2h", "note": ""}"#,
        200,
    );
    assert_timestamp(&until["until"]);
    let past = post(
        port,
        "/api/workers/broken/pause",
        r#"{"until": "2020-01-01T00:00:00Z"}"#,
    );
    assert_eq!(past.status, 400);
    assert_error(&past.json(), "is not in the future");
    assert_eq!(
        post_json(port, "/api/workers/alpha/resume", "", 200),
        json!({ "resumed": true })
    );
    assert_eq!(
        post_json(port, "/api/workers/alpha/resume", "", 200),
        json!({ "resumed": false })
    );
    let alpha = eventually("alpha to be no longer paused", || {
        let overview = get_json(port, "/api/workers");
        let alpha = worker(&overview, "alpha").clone();
        (alpha["status"] != "paused").then_some(alpha)
    });
    assert_eq!(alpha["paused"], Value::Null);
    let unknown = post(port, "/api/workers/nosuch/pause", "");
    assert_eq!(unknown.status, 404);
    assert_error(&unknown.json(), "is not in the registry");

    // A page of another origin cannot act through a visitor's browser.
    let forged = request(
        port,
        "POST",
        "/api/workers/alpha/trigger",
        &[("Origin", "http://attacker.example")],
        "",
    );
    assert_eq!(forged.status, 403);
    assert_error(&forged.json(), "another origin");
    let same = request(
        port,
        "POST",
        "/api/workers/alpha/resume",
        &[("Origin", &format!("http://127.0.0.1:{port}"))],
        "",
    );
    assert_eq!(same.status, 200, "{}", same.body);

    assert!(up.stop(WAIT).success(), "{}", up.log());
}

#[tokio::test]
async fn the_validator_serves_the_api_and_other_roles_only_their_probes() {
    let mesh = Mesh::new(CONFIG).await;
    let mut validator = mesh.spawn(&["validator"], &[]);
    validator.ready().await;
    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    scheduler.ready().await;

    let overview = get_json(validator.http_port, "/api/workers");
    assert_eq!(overview["workers"].as_array().map(Vec::len), Some(3));
    assert_eq!(get(validator.http_port, "/").status, 200);

    for path in ["/api/workers", "/", "/assets/app.js"] {
        assert_eq!(get(scheduler.http_port, path).status, 404, "{path}");
    }
    assert_eq!(get(scheduler.http_port, "/readyz").status, 200);

    assert!(validator.stop(WAIT).success(), "{}", validator.log());
    assert!(scheduler.stop(WAIT).success(), "{}", scheduler.log());
}

/// A two-task workflow whose strategist asks once, then says DONE.
const WORKFLOW_CONFIG: &str = r#"
[agent]
ack_wait = "5s"

[workers.task]
command = ["/bin/sh", "-c", "echo 'STATUS: ok'"]
retries = 0

[workers.planner]
command = ["/bin/sh", "-c", "if [ -z \"$LOOM_PARAM_ANSWER\" ]; then echo 'STATUS: CLARIFICATION_NEEDED: which branch?'; else echo 'STATUS: DONE'; fi"]
retries = 0

[workflows.release]
description = "Build, then check"
strategist = "planner"
max_rounds = 3
tasks = [
  { id = "build", worker = "task" },
  { id = "check", worker = "task", depends_on = ["build"] },
]
"#;

const WORKFLOW_RUN_SHAPE: &[(&str, &str)] = &[
    ("run_id", "string"),
    ("workflow", "string"),
    ("status", "string"),
    ("trigger", "string"),
    ("rounds", "number"),
    ("tasks_valid", "number"),
    ("tasks_total", "number"),
    ("started_at", "string"),
    ("finished_at", "string|null"),
    ("duration_ms", "number"),
    ("question", "string|null"),
    ("outcome", "string|null"),
];

#[tokio::test]
async fn workflows_are_listed_started_shown_and_answered() {
    let mesh = Mesh::new(WORKFLOW_CONFIG).await;
    let mut up = up(&mesh).await;
    let port = up.http_port;

    // The registry's workflow, before any run.
    let listed = get_json(port, "/api/workflows");
    assert_eq!(listed["runs"], json!([]));
    let definition = &listed["workflows"][0];
    assert_shape(
        definition,
        &[
            ("name", "string"),
            ("description", "string"),
            ("schedule", "null"),
            ("schedule_description", "null"),
            ("timezone", "string"),
            ("enabled", "bool"),
            ("next_run", "null"),
            ("tasks", "array"),
            ("levels", "array"),
            ("strategist", "string"),
            ("max_rounds", "number"),
            ("task_retries", "number"),
        ],
    );
    assert_eq!(definition["levels"], json!([["build"], ["check"]]));
    assert_eq!(definition["strategist"], "planner");

    // Start it; it stops on the strategist's question.
    let started = post_json(port, "/api/workflows/release/start", "", 200);
    let run_id = started["run_id"].as_str().expect("a run id").to_owned();
    let path = format!("/api/workflow-runs/{run_id}");
    let waiting = eventually("the run to wait for an answer", || {
        let answer = get(port, &path);
        (answer.status == 200 && answer.json()["run"]["status"] == "waiting_for_answer")
            .then(|| answer.json())
    });
    assert_eq!(waiting["run"]["question"], "which branch?");
    assert_eq!(waiting["report"]["rounds"][0]["tasks_valid"], 2);
    let listed = get_json(port, "/api/workflows?workflow=release");
    let summary = &listed["runs"][0];
    assert_shape(summary, WORKFLOW_RUN_SHAPE);
    assert_eq!(summary["run_id"], run_id.as_str());
    assert_eq!(summary["status"], "waiting_for_answer");
    assert_eq!(summary["question"], "which branch?");
    assert_eq!(
        (
            summary["tasks_valid"].clone(),
            summary["tasks_total"].clone()
        ),
        (json!(2), json!(2))
    );

    // An empty answer is refused; a real one resumes the run to its end.
    let empty = post(port, &format!("{path}/answer"), r#"{"text": "  "}"#);
    assert_eq!(empty.status, 400, "{}", empty.body);
    assert_error(&empty.json(), "is empty");
    let answered = post_json(port, &format!("{path}/answer"), r#"{"text": "main"}"#, 200);
    assert_eq!(
        answered,
        json!({ "run_id": run_id, "question": "which branch?" })
    );
    let done = eventually("the run to be done", || {
        let shown = get_json(port, &path);
        (shown["run"]["status"] == "done").then_some(shown)
    });
    assert_eq!(done["run"]["answers"], json!(["main"]));
    assert_eq!(done["report"]["runs"], 4, "two tasks, two strategist runs");
    assert_eq!(
        done["report"]["rounds"][0]["decision"],
        json!({ "kind": "done" })
    );

    // Refusals, each with its status and sentence.
    let again = post(port, &format!("{path}/answer"), r#"{"text": "again"}"#);
    assert_eq!(again.status, 409);
    assert_error(&again.json(), "is done, not waiting for an answer");
    let unknown = post(port, "/api/workflows/nosuch/start", "");
    assert_eq!(unknown.status, 404);
    assert_error(
        &unknown.json(),
        "workflow \"nosuch\" is not in the registry (workflows: release)",
    );
    let filter = get(port, "/api/workflows?workflow=nosuch");
    assert_eq!(filter.status, 404);
    let missing = get(
        port,
        &format!("/api/workflow-runs/{}", uuid::Uuid::now_v7()),
    );
    assert_eq!(missing.status, 404);
    assert_error(&missing.json(), "is not in the history");
    let malformed = get(port, "/api/workflow-runs/not-a-run");
    assert_eq!(malformed.status, 400);
    assert_error(&malformed.json(), "is not a workflow run id");
    let forged = request(
        port,
        "POST",
        "/api/workflows/release/start",
        &[("Origin", "http://attacker.example")],
        "",
    );
    assert_eq!(forged.status, 403);

    assert!(up.stop(WAIT).success(), "{}", up.log());
}
