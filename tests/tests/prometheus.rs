//! The alert rules in `deploy/prometheus`: promtool accepts them, their unit
//! tests pass, and a real Prometheus scraping a real `loom up` fires
//! `LoomWorkerFailing` for a worker whose runs fail, with every rule
//! evaluating cleanly on the real series.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use loom_testkit::prometheus::{Alert, Prometheus, promtool};
use loom_testkit::{free_port, http_get, loom_command};
use loom_tests::repository;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the failing worker may take to fire its alert: `loom up`
/// starting, a few fires, two scrapes and a rule evaluation.
const ALERT_WITHIN: Duration = Duration::from_secs(90);

fn rules_file() -> PathBuf {
    repository().join("deploy/prometheus/loom-rules.yml")
}

fn rules_test_file() -> PathBuf {
    repository().join("deploy/prometheus/loom-rules.test.yml")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn promtool_accepts_the_rule_file() {
    let output = promtool(["check".as_ref(), "rules".as_ref(), rules_file().as_os_str()]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("SUCCESS: 5 rules found"),
        "{}",
        describe(&output)
    );
}

#[test]
fn the_rules_pass_their_promtool_unit_tests() {
    let output = promtool([
        "test".as_ref(),
        "rules".as_ref(),
        rules_test_file().as_os_str(),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
}

/// A `loom up` in a temporary directory, logging to a file (a pipe nobody
/// reads would fill up and stall it); stopped on drop.
struct Up {
    child: Child,
    http_port: u16,
    dir: tempfile::TempDir,
}

impl Up {
    fn start(workers: &str) -> Up {
        let dir = tempfile::Builder::new()
            .prefix("loom-prometheus-up-")
            .tempdir()
            .expect("tempdir");
        let http_port = free_port();
        std::fs::write(
            dir.path().join("loom.toml"),
            format!("[http]\nlisten = \"127.0.0.1:{http_port}\"\n{workers}"),
        )
        .expect("write loom.toml");
        let log = std::fs::File::create(dir.path().join("loom-up.log")).expect("create the log");
        let child = loom_command()
            .current_dir(dir.path())
            .args(["up", "--config", "loom.toml"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("spawn loom up");
        let mut up = Up {
            child,
            http_port,
            dir,
        };
        up.wait_ready();
        up
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("loom up exited early with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "loom up was not ready within 60s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("loom-up.log")).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "loom up did not stop within 30s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM so the embedded nats-server is stopped too.
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn summary(alerts: &[Alert]) -> String {
    alerts
        .iter()
        .map(|alert| format!("{} {:?}", alert.state, alert.labels))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_worker_whose_runs_fail_fires_loom_worker_failing_in_a_real_prometheus() {
    let mut up = Up::start(
        "[workers.doomed]\n\
         command = [\"/bin/sh\", \"-c\", \"echo 'no such table' >&2; exit 3\"]\n\
         schedule = \"@every 1s\"\n\
         retries = 0\n\
         [workers.fine]\n\
         command = [\"true\"]\n\
         schedule = \"@every 2s\"\n",
    );
    let prometheus = Prometheus::start(&[up.target()], &[rules_file()]);

    let deadline = Instant::now() + ALERT_WITHIN;
    let failing = loop {
        let alerts = prometheus.alerts();
        if let Some(alert) = alerts
            .iter()
            .find(|alert| alert.name() == "LoomWorkerFailing" && alert.is_firing())
        {
            break alert.clone();
        }
        assert!(
            Instant::now() < deadline,
            "LoomWorkerFailing did not fire within {ALERT_WITHIN:?}; alerts:\n{}\n\
             dead letters: {}\nPrometheus log:\n{}\nloom up log:\n{}",
            summary(&alerts),
            prometheus.query("loom_dead_letters_total"),
            prometheus.log(),
            up.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // One alert per worker and reason, without the scrape's instance and job.
    let expected: BTreeMap<String, String> = [
        ("alertname", "LoomWorkerFailing"),
        ("reason", "failed"),
        ("severity", "warning"),
        ("worker", "doomed"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    assert_eq!(failing.labels, expected);
    assert_eq!(
        failing.annotations.get("summary").map(String::as_str),
        Some("Loom worker doomed is failing (failed)")
    );

    let alerts = prometheus.alerts();
    assert!(
        !alerts
            .iter()
            .any(|alert| alert.name() == "LoomWorkerFailing"
                && alert.labels.get("worker").map(String::as_str) == Some("fine")),
        "a worker whose runs are valid has no alert:\n{}",
        summary(&alerts)
    );
    // The mesh is otherwise healthy: a leader, an agent serving each worker.
    for healthy in ["LoomNoSchedulerLeader", "LoomNoAgentForWorker"] {
        assert!(
            !alerts
                .iter()
                .any(|alert| alert.name() == healthy && alert.is_firing()),
            "{healthy} fired for a healthy mesh:\n{}",
            summary(&alerts)
        );
    }

    // Every rule evaluated on the real series without an error (a
    // many-to-many match, say), and the series the joins need are there.
    let groups = prometheus.rule_groups();
    let rules: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(rules.len(), 5, "{groups:?}");
    for rule in rules {
        assert_eq!(
            rule["health"], "ok",
            "rule {} does not evaluate: {}",
            rule["name"], rule["lastError"]
        );
    }
    for series in [
        "loom_scheduler_is_leader",
        "loom_agent_serving{worker=\"doomed\"}",
        "loom_worker_interval_seconds{worker=\"doomed\"}",
        "loom_worker_open_runs{worker=\"doomed\"}",
    ] {
        let result = &prometheus.query(series)["result"];
        assert!(
            result.as_array().is_some_and(|result| !result.is_empty()),
            "Prometheus has no {series}: {result}"
        );
    }

    let status = up.stop();
    assert!(
        status.success(),
        "loom up exited with {status}; log:\n{}",
        up.log()
    );
}
