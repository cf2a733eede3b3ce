//! A real Alertmanager (Debian's `prometheus-alertmanager`) for one test:
//! on a free loopback port, with its own storage and a configuration that
//! routes every alert to a receiver that sends nothing, without clustering.
//! Dropping it kills the process and removes its directory. When no binary
//! can be found the test fails with the command that installs one; it never
//! skips.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http_get};

/// Every alert to one receiver that has no notifiers.
const CONFIG: &str = "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n";

/// How long Alertmanager may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The Alertmanager binary: `$LOOM_ALERTMANAGER`, then
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
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
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
        "no Alertmanager binary: run scripts/install-test-tools (apt-get install prometheus-alertmanager), \
         put alertmanager on PATH, or set LOOM_ALERTMANAGER"
    );
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// A running Alertmanager.
pub struct Alertmanager {
    child: Child,
    port: u16,
    // Declared after the child so the directory outlives the process.
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager and waits until `/-/ready` answers 200.
    ///
    /// # Panics
    /// When the binary is missing or it does not become ready (with its log).
    pub fn start() -> Alertmanager {
        let binary = alertmanager_binary();
        let mut last_log = String::new();
        // A free port can be taken by a parallel test before Alertmanager
        // binds it; a fresh one then does.
        for _ in 0..3 {
            let mut alertmanager = Alertmanager::spawn(&binary);
            if alertmanager.wait_ready() {
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
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, CONFIG)
            .unwrap_or_else(|error| panic!("cannot write alertmanager.yml: {error}"));
        let log = std::fs::File::create(dir.path().join("alertmanager.log"))
            .unwrap_or_else(|error| panic!("cannot create alertmanager.log: {error}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot clone the log file: {error}"));
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        Alertmanager { child, port, dir }
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if let Some((200, _)) = http_get(self.port, "/-/ready") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `http://127.0.0.1:<port>`: the base URL a sink is configured with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts it holds now (`GET /api/v2/alerts`, with `query` such as
    /// `?active=true`), as JSON values.
    pub fn alerts(&self, query: &str) -> Vec<serde_json::Value> {
        let (status, body) =
            http_get(self.port, &format!("/api/v2/alerts{query}")).unwrap_or_default();
        assert_eq!(
            status, 200,
            "GET /api/v2/alerts{query} answered {status}: {body}"
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("alerts are not JSON ({error}): {body}"))
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        // An error means it is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
