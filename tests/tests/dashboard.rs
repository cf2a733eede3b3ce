//! The dashboard in a real headless Chromium, served by `loom up` on the
//! value-first example (plus one worker that always fails): every worker's
//! row, a failure seen as it happens, its output on the worker page, a
//! replay from the dead-letter page, the example workflow started from its
//! page and followed to its report, and a phone-sized screen without
//! horizontal scrolling. Screenshots land in `target/test-artifacts/`.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use loom_testkit::browser::{Browser, Window, artifact_path};
use loom_testkit::{free_port, http_get, loom_command};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

const EXAMPLE_WORKERS: [&str; 12] = [
    "content-queue-scanner",
    "data-integrity",
    "instruction-optimizer",
    "media-distribution",
    "media-linkedin-events",
    "media-post-production",
    "media-pre-production",
    "media-youtube-comments",
    "pattern-memory-analyzer",
    "relationship-sentinel",
    "staleness-detector",
    "website-health-scanner",
];

const FAILING_WORKER: &str = r#"
[workers.always-fails]
description = "Fails on purpose, for the dashboard test"
command = ["/bin/sh", "-c", "echo 'looking for the archive'; echo 'cannot reach the archive' >&2; exit 3"]
retries = 0
"#;

/// `loom up` on a copy of the example, with its embedded nats-server.
struct Up {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Up {
    fn start() -> Up {
        let dir = tempfile::Builder::new()
            .prefix("loom-dashboard-")
            .tempdir()
            .expect("tempdir");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/value-first");
        copy_dir(&example, dir.path());
        let workers = dir.path().join("workers.toml");
        let mut registry = std::fs::read_to_string(&workers).expect("read workers.toml");
        registry.push_str(FAILING_WORKER);
        std::fs::write(&workers, registry).expect("write workers.toml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("up.log")).expect("log file");
        let child = loom_command()
            .current_dir(dir.path())
            .args(["up", "--config", "loom.toml"])
            .env("LOOM_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn loom up");
        let mut up = Up { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(port, "/readyz"), Some((200, _))) {
            if let Ok(Some(status)) = up.child.try_wait() {
                panic!("loom up exited with {status}: {}", up.log());
            }
            assert!(Instant::now() < deadline, "loom up not ready: {}", up.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        up
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "loom up exited {status}: {}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "loom up did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    /// After a failure: SIGTERM first, since `loom up` stops its embedded
    /// nats-server on the way out and SIGKILL would leave that running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies the example, leaving out what a local run of it left behind.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read example dir").flatten() {
        let name = entry.file_name();
        if matches!(name.to_str(), Some(".loom" | "state")) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            // std::fs::copy keeps the permission bits: scripts stay executable.
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Runs `script` in the page; a string it returns (empty otherwise).
fn eval_string(browser: &Browser, script: &str, args: &[Value]) -> String {
    browser
        .execute(script, args)
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn attribute_of(browser: &Browser, selector: &str, attribute: &str) -> Option<String> {
    browser
        .find(selector)
        .and_then(|element| element.attribute(attribute))
}

fn screenshot(browser: &Browser, name: &str) {
    let path = artifact_path(name);
    browser.screenshot(&path);
    println!("screenshot: {}", path.display());
}

/// The page is no wider than the screen: nothing scrolls sideways.
fn assert_no_horizontal_overflow(browser: &Browser, page: &str) {
    let widths = browser.execute(
        "return [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]",
        &[],
    );
    let [document, body, viewport] = [0, 1, 2].map(|i| widths[i].as_u64().expect("a width"));
    assert_eq!(viewport, 390, "the phone viewport is 390 px wide");
    assert!(
        document <= viewport && body <= viewport,
        "{page} overflows sideways at phone width: document {document}px, body {body}px, viewport {viewport}px"
    );
}

#[test]
fn the_dashboard_shows_the_example_mesh_and_replays_a_failure() {
    let up = Up::start();
    let browser = Browser::start();
    browser.goto(&up.url("/"));

    // Every worker of the example has its row, with a status.
    browser.wait_until(WAIT, "thirteen worker rows", |b| {
        (b.find_all("#workers tbody tr[data-worker]").len() == 13).then_some(())
    });
    for name in EXAMPLE_WORKERS {
        let row = browser
            .find(&format!("tr[data-worker=\"{name}\"]"))
            .unwrap_or_else(|| panic!("no row for {name}"));
        let status = row
            .find("[data-status]")
            .and_then(|badge| badge.attribute("data-status"))
            .unwrap_or_default();
        let expected = if name == "media-linkedin-events" {
            "disabled"
        } else {
            "never_run"
        };
        assert_eq!(status, expected, "{name}");
        assert!(row.text().contains(name), "{name}");
    }
    assert_eq!(
        attribute_of(
            &browser,
            "tr[data-worker=\"media-linkedin-events\"] button[data-action=\"trigger\"]",
            "disabled"
        )
        .as_deref(),
        Some("true"),
        "a disabled worker cannot be triggered"
    );
    let staleness = browser
        .find("tr[data-worker=\"staleness-detector\"]")
        .unwrap();
    let schedule = staleness.find(".schedule-words").unwrap().text();
    assert_eq!(schedule, "Sundays at 04:00 America/Chicago");
    let next = staleness.find(".next-relative").unwrap().text();
    assert!(next.starts_with("in "), "the next run in words: {next}");
    // The header: the leader and the agent of `loom up`.
    let leader = browser.wait_until(WAIT, "a leader in the header", |b| {
        attribute_of(b, "#leader", "data-leader").filter(|id| id != "none" && id != "unknown")
    });
    let agents = browser.find_all("#agents li[data-agent]");
    assert_eq!(agents.len(), 1);
    assert!(agents[0].text().starts_with(&leader), "one process, one id");
    screenshot(&browser, "dashboard-workers.png");

    // Trigger the failing worker from its row: it turns failing.
    browser
        .find("tr[data-worker=\"always-fails\"] button[data-action=\"trigger\"]")
        .expect("trigger button")
        .click();
    browser.wait_until(WAIT, "always-fails to be marked failing", |b| {
        (attribute_of(b, "tr[data-worker=\"always-fails\"]", "data-status").as_deref()
            == Some("failing"))
        .then_some(())
    });
    // Its last verdict follows (the worker's health is written a moment later).
    browser.wait_until(WAIT, "the failed verdict in its row", |b| {
        b.find("tr[data-worker=\"always-fails\"] .last-verdict[data-verdict=\"failed\"]")
    });
    assert_eq!(browser.find("#dlq-count").unwrap().text(), "1");
    screenshot(&browser, "dashboard-failing.png");

    // Its page: the run, its verdict, its output.
    browser
        .find("tr[data-worker=\"always-fails\"] a.worker-link")
        .expect("worker link")
        .click();
    browser.wait_until(WAIT, "the failed run on the worker page", |b| {
        b.find("#runs tbody tr[data-verdict=\"failed\"]")
    });
    assert!(browser.current_url().ends_with("#/worker/always-fails"));
    let stderr = browser.find("#stderr").unwrap().text();
    assert_eq!(stderr.trim(), "cannot reach the archive");
    let stdout = browser.find("#stdout").unwrap().text();
    assert_eq!(stdout.trim(), "looking for the archive");
    let run = browser.find("#runs tbody tr").unwrap().text();
    assert!(run.contains("manual") && run.contains("done"), "{run}");
    screenshot(&browser, "dashboard-worker.png");

    // The dead-letter page: replay it; the letter is marked replayed.
    browser.find("#nav-dlq").expect("nav link").click();
    let replay = browser.wait_for("tr[data-letter] button[data-replay]", WAIT);
    let run_id = replay.attribute("data-replay").expect("run id");
    assert!(replay.is_enabled());
    replay.click();
    let letter = format!("tr[data-letter=\"{run_id}\"]");
    browser.wait_until(WAIT, "the letter to be marked replayed", |b| {
        (attribute_of(b, &letter, "data-replayed").as_deref() == Some("true")).then_some(())
    });
    let button = browser
        .find(&format!("button[data-replay=\"{run_id}\"]"))
        .unwrap();
    assert!(
        !button.is_enabled(),
        "a replayed letter cannot be replayed again"
    );
    assert!(browser.find(&letter).unwrap().text().contains("as "));
    screenshot(&browser, "dashboard-dead-letters.png");

    // The example workflow: started from its row, followed on its run's page
    // level by level to its report.
    browser.find("#nav-workflows").expect("nav link").click();
    let start = browser.wait_for(
        "tr[data-workflow=\"knowledge-sweep\"] button[data-start-workflow]",
        WAIT,
    );
    let row = browser
        .find("tr[data-workflow=\"knowledge-sweep\"]")
        .unwrap()
        .text();
    assert!(
        row.contains("manual only") && row.contains("3 in 2 levels"),
        "{row}"
    );
    start.click();
    browser.wait_until(WAIT, "the workflow run's page", |b| {
        b.current_url().contains("#/workflow-run/").then_some(())
    });
    browser.wait_until(WAIT, "the workflow run to be done", |b| {
        (attribute_of(b, "#workflow-run-status", "data-workflow-status").as_deref() == Some("done"))
            .then_some(())
    });
    browser.wait_until(WAIT, "the report's round", |b| {
        b.find("#workflow-report tr[data-round=\"1\"]")
            .filter(|row| row.text().contains("3/3"))
    });
    let tasks: Vec<(String, String)> = browser
        .find_all("#workflow-tasks tbody tr")
        .iter()
        .map(|row| {
            let level = row.find(".level").map(|c| c.text()).unwrap_or_default();
            let task = row.find(".task").map(|c| c.text()).unwrap_or_default();
            (level, task)
        })
        .collect();
    let expected = [("L0", "integrity"), ("L0", "staleness"), ("L1", "patterns")]
        .map(|(level, task)| (level.to_owned(), task.to_owned()));
    assert_eq!(tasks, expected, "tasks level by level");
    let valid = browser.find_all("#workflow-tasks .badge[data-task-state=\"valid\"]");
    assert_eq!(valid.len(), 3, "every task valid");
    assert!(
        browser
            .find("#workflow-question")
            .is_some_and(|q| !q.is_displayed())
    );
    let workflow_run = browser.current_url();
    screenshot(&browser, "dashboard-workflow-run.png");
    browser
        .find(".back a[href=\"#/workflows\"]")
        .expect("back link")
        .click();
    browser.wait_until(WAIT, "the run listed as done", |b| {
        b.find("#workflow-runs tbody tr[data-status=\"done\"]")
            .filter(|row| row.text().contains("3/3"))
    });
    screenshot(&browser, "dashboard-workflows.png");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    drop(browser);

    // A phone: cards instead of a wide table, nothing scrolls sideways.
    let phone = Browser::start_with(Window::PHONE);
    phone.goto(&up.url("/"));
    phone.wait_until(WAIT, "worker cards at phone width", |b| {
        (b.find_all("#workers tbody tr[data-worker]").len() == 13).then_some(())
    });
    assert_no_horizontal_overflow(&phone, "the workers page");
    screenshot(&phone, "dashboard-phone-workers.png");
    phone.goto(&up.url("/#/worker/always-fails"));
    phone.wait_until(WAIT, "the runs of always-fails", |b| {
        (b.find_all("#runs tbody tr").len() >= 2).then_some(())
    });
    assert_no_horizontal_overflow(&phone, "the worker page");
    screenshot(&phone, "dashboard-phone-worker.png");
    phone.goto(&up.url("/#/dlq"));
    phone.wait_for("tr[data-letter]", WAIT);
    assert_no_horizontal_overflow(&phone, "the dead-letter page");
    let replayed = eval_string(
        &phone,
        "return document.querySelector(arguments[0]).dataset.replayed",
        &[json!(letter)],
    );
    assert_eq!(replayed, "true");
    screenshot(&phone, "dashboard-phone-dead-letters.png");
    phone.goto(&workflow_run);
    phone.wait_for("#workflow-tasks tbody tr", WAIT);
    assert_no_horizontal_overflow(&phone, "the workflow run page");
    screenshot(&phone, "dashboard-phone-workflow-run.png");
    let errors = phone.console_errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    drop(phone);

    up.stop();
}
