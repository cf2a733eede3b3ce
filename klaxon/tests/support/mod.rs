//! Support for Klaxon's integration tests: dead-letter fixtures, free
//! loopback ports, and a real Alertmanager per test.
//!
//! [`Alertmanager::start`] runs the Alertmanager binary on a free loopback
//! port with its own temporary storage and a minimal configuration (every
//! alert routed to a receiver that sends nothing), without clustering, and
//! waits until `/-/ready` answers 200. Dropping it kills the process and
//! removes the directory. When no binary can be found the test fails and
//! says how to install one; it never skips.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses a part of it"
)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The Alertmanager binary to test against: `$LOOM_ALERTMANAGER`, then
/// `prometheus-alertmanager` or `alertmanager` on `PATH`, then
/// `/usr/bin/prometheus-alertmanager`.
///
/// # Panics
/// When none exists, with the command that installs one.
pub fn alertmanager_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LOOM_ALERTMANAGER") {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "LOOM_ALERTMANAGER={} is not an executable file",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    for name in ["prometheus-alertmanager", "alertmanager"] {
        for dir in &on_path {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    let debian = PathBuf::from("/usr/bin/prometheus-alertmanager");
    if is_executable(&debian) {
        return debian;
    }
    panic!(
        "no Alertmanager binary: set LOOM_ALERTMANAGER, or put prometheus-alertmanager or \
         alertmanager on PATH; on Debian or Ubuntu: apt-get install prometheus-alertmanager"
    );
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Every alert to one receiver that has no notifiers: Alertmanager keeps
/// and serves the alerts and sends nothing anywhere.
const CONFIG: &str = "\
route:
  receiver: \"null\"
receivers:
  - name: \"null\"
";

/// How long Alertmanager may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A real Alertmanager for one test, killed and removed on drop.
pub struct Alertmanager {
    child: Child,
    port: u16,
    // Declared after the child so the directory outlives the process.
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager on a free loopback port and waits until it is
    /// ready.
    ///
    /// # Panics
    /// When the binary is missing or Alertmanager does not become ready;
    /// the message carries its log.
    pub async fn start() -> Alertmanager {
        let binary = alertmanager_binary();
        let mut last_log = String::new();
        // The free port can be taken between our probe and Alertmanager's
        // bind by a parallel test; a fresh port then fixes it.
        for _ in 0..3 {
            let mut alertmanager = Alertmanager::spawn(&binary);
            if alertmanager.wait_ready().await {
                return alertmanager;
            }
            last_log = alertmanager.log();
        }
        panic!(
            "{} did not become ready within {READY_TIMEOUT:?}; its log:\n{last_log}",
            binary.display()
        );
    }

    fn spawn(binary: &Path) -> Alertmanager {
        let dir = tempfile::Builder::new()
            .prefix("loom-alertmanager-")
            .tempdir()
            .expect("create a temporary directory");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, CONFIG).expect("write alertmanager.yml");
        let storage = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("alertmanager.log"))
            .expect("create alertmanager.log");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        Alertmanager { child, port, dir }
    }

    /// Whether `/-/ready` answered 200 before the deadline (false when the
    /// process exited, e.g. because its port was taken).
    async fn wait_ready(&mut self) -> bool {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let ready = client
                .get(format!("{}/-/ready", self.url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
            if ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `http://127.0.0.1:<port>`, the base URL a sink is configured with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        // Errors mean it is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
