//! A real Prometheus and promtool (Debian's `prometheus` package), for the
//! alert rule tests.
//!
//! [`Prometheus`] runs one server for one test: on a free loopback port, with
//! its own storage, scraping the given targets every second and evaluating
//! the given rule files every second. Dropping it kills the process and
//! removes its directory. [`promtool`] runs `promtool` (rule checks and rule
//! unit tests). When a binary cannot be found the test fails with the
//! command that installs it; it never skips. Talking to Prometheus's HTTP
//! API needs only GETs, so this module uses [`http_get`] and no HTTP client.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http_get};

/// How long Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `prometheus` binary: on `PATH`, then `/usr/bin/prometheus`.
///
/// # Panics
/// When there is none, with the command that installs it.
pub fn prometheus_binary() -> PathBuf {
    find_binary("prometheus")
}

/// The `promtool` binary: on `PATH`, then `/usr/bin/promtool`.
///
/// # Panics
/// When there is none, with the command that installs it.
pub fn promtool_binary() -> PathBuf {
    find_binary("promtool")
}

/// Runs `promtool <args>` and returns its output, whatever its exit status.
///
/// # Panics
/// When promtool is missing or cannot be started.
pub fn promtool<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let binary = promtool_binary();
    Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()))
}

fn find_binary(name: &str) -> PathBuf {
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    for dir in on_path
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/usr/bin")])
    {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "no {name} binary on PATH or in /usr/bin: run scripts/install-test-tools \
         (apt-get install prometheus), or put {name} on PATH"
    );
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// One alert as Prometheus's `/api/v1/alerts` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Its annotations, templates expanded.
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

impl Alert {
    /// The `alertname` label.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Whether it is firing (not merely pending).
    pub fn is_firing(&self) -> bool {
        self.state == "firing"
    }

    fn from_json(value: &serde_json::Value) -> Alert {
        let strings = |field: &str| -> BTreeMap<String, String> {
            value[field]
                .as_object()
                .map(|object| {
                    object
                        .iter()
                        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Alert {
            labels: strings("labels"),
            annotations: strings("annotations"),
            state: value["state"].as_str().unwrap_or("").to_owned(),
        }
    }
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    port: u16,
    // Declared after the child so the directory outlives the process.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`)
    /// as job `loom` every second, with `rule_files` evaluated every
    /// second, and waits until `/-/ready` answers 200.
    ///
    /// # Panics
    /// When the binary is missing or it does not become ready (with its log).
    pub fn start(targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let binary = prometheus_binary();
        let config = config(targets, rule_files);
        let mut last_log = String::new();
        // A free port can be taken by a parallel test before Prometheus binds
        // it; a fresh one then does.
        for _ in 0..3 {
            let mut prometheus = Prometheus::spawn(&binary, &config);
            if prometheus.wait_ready() {
                return prometheus;
            }
            last_log = prometheus.log();
        }
        panic!(
            "{} did not become ready within {READY_TIMEOUT:?}; its log:\n{last_log}",
            binary.display()
        );
    }

    fn spawn(binary: &Path, config: &str) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("loom-prometheus-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)
            .unwrap_or_else(|error| panic!("cannot write prometheus.yml: {error}"));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .unwrap_or_else(|error| panic!("cannot create prometheus.log: {error}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot clone the log file: {error}"));
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        Prometheus { child, port, dir }
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

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `data` of an instant query (`GET /api/v1/query`): `resultType`
    /// and `result`.
    ///
    /// # Panics
    /// When Prometheus does not answer with status `success` (a bad
    /// expression, for one), with its answer.
    pub fn query(&self, expr: &str) -> serde_json::Value {
        self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))
    }

    /// Every pending and firing alert (`GET /api/v1/alerts`).
    ///
    /// # Panics
    /// When Prometheus does not answer with status `success`.
    pub fn alerts(&self) -> Vec<Alert> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .map(|alerts| alerts.iter().map(Alert::from_json).collect())
            .unwrap_or_default()
    }

    /// Every rule group as `GET /api/v1/rules` reports it, with each rule's
    /// `health` and `lastError`.
    ///
    /// # Panics
    /// When Prometheus does not answer with status `success`.
    pub fn rule_groups(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/rules")["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET <path>` on the HTTP API: the answer's `data`.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.port, path)
            .unwrap_or_else(|| panic!("Prometheus did not answer GET {path}"));
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|error| {
            panic!("GET {path} answered {status} with no JSON ({error}): {body}")
        });
        assert!(
            status == 200 && answer["status"] == "success",
            "GET {path} answered {status}: {body}"
        );
        answer["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // An error means it is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration: one job, `loom`, scraping every target each second;
/// rules evaluated each second. Paths and targets are quoted as YAML
/// strings (JSON's quoting is valid YAML).
fn config(targets: &[String], rule_files: &[PathBuf]) -> String {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    config.push_str("rule_files:\n");
    for rule_file in rule_files {
        let absolute = std::path::absolute(rule_file)
            .unwrap_or_else(|error| panic!("rule file {}: {error}", rule_file.display()));
        config.push_str(&format!("  - {}\n", quote(&absolute.to_string_lossy())));
    }
    config.push_str("scrape_configs:\n  - job_name: loom\n    static_configs:\n      - targets:\n");
    for target in targets {
        config.push_str(&format!("          - {}\n", quote(target)));
    }
    config
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a
/// query string.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode(r#"max by (worker) (x{a="b"}) > 0"#),
            "max%20by%20%28worker%29%20%28x%7Ba%3D%22b%22%7D%29%20%3E%200"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn the_config_scrapes_each_target_and_loads_each_rule_file() {
        let config = config(
            &["127.0.0.1:9810".to_owned(), "127.0.0.1:9811".to_owned()],
            &[PathBuf::from("/etc/loom/rules.yml")],
        );
        assert!(config.contains("scrape_interval: 1s"), "{config}");
        assert!(config.contains("evaluation_interval: 1s"), "{config}");
        assert!(config.contains("  - \"/etc/loom/rules.yml\"\n"), "{config}");
        assert!(config.contains("- \"127.0.0.1:9810\"\n"), "{config}");
        assert!(config.contains("- \"127.0.0.1:9811\"\n"), "{config}");
    }
}
