//! End-to-end tests of Loom: the real `loom` binary against a real
//! nats-server (started by `loom-testkit`). The tests live in `tests/`; this
//! library holds what they share: paths, and [`Mesh`], a mesh of real role
//! processes on one real broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use loom_broker::{Broker, ReadFrom};
use loom_protocol::codec::{RunDefaults, decode, decode_run_command};
use loom_protocol::state::RunState;
use loom_protocol::subjects::SubjectKind;
use loom_protocol::{DeadLetter, RunCommand, SkippedFire, Verdict};
use loom_testkit::{NatsServer, free_port, http_get, loom_command};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The repository's root directory.
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example deployment's `loom.toml`.
pub fn example_config() -> PathBuf {
    repository().join("examples/value-first/loom.toml")
}

/// Waits until `check` returns `Some`, polling; panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A role process of a [`Mesh`].
pub struct Role {
    /// The process.
    pub child: Child,
    /// Its HTTP port.
    pub http_port: u16,
    log: PathBuf,
}

impl Role {
    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; its exit status.
    pub fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("role did not stop within {within:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "role exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "role not ready within 60s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process's `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.http_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// A mesh for one test: a real nats-server, a config directory, role
/// processes, and a client to observe what happens.
pub struct Mesh {
    /// The broker.
    pub server: NatsServer,
    /// The config directory (holds `loom.toml` and role logs).
    pub dir: tempfile::TempDir,
    /// A connection for the test's own observations.
    pub broker: Broker,
}

impl Mesh {
    /// A mesh whose `loom.toml` is `config` (with `nats.url` and
    /// `data_dir` added), with its topology in place.
    pub async fn new(config: &str) -> Mesh {
        Mesh::new_with_files(config, &[]).await
    }

    /// [`Mesh::new`], with `files` (relative path, content) written in the
    /// config directory first (bundles, schemas, scripts the config names).
    pub async fn new_with_files(config: &str, files: &[(&str, &str)]) -> Mesh {
        let server = NatsServer::start();
        let dir = tempfile::Builder::new()
            .prefix("loom-mesh-")
            .tempdir()
            .expect("tempdir");
        for (path, content) in files {
            let path = dir.path().join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create directories");
            }
            std::fs::write(path, content).expect("write a file");
        }
        let mesh_config = format!(
            "data_dir = \"data\"\n{config}\n[nats]\nurl = \"{}\"\n",
            server.url()
        );
        std::fs::write(dir.path().join("loom.toml"), mesh_config).expect("write loom.toml");
        let init = loom_command()
            .current_dir(dir.path())
            .args(["init", "--config", "loom.toml"])
            .output()
            .expect("loom init");
        assert!(
            init.status.success(),
            "loom init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let settings = loom_config::NatsSettings::default();
        let broker = loom_broker::connect(&settings, &[server.url()], "loom", "loom-test")
            .await
            .expect("connect");
        Mesh {
            server,
            dir,
            broker,
        }
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("loom.toml")
    }

    /// Rewrites the config file's body (nats and data_dir are kept).
    pub fn rewrite_config(&self, config: &str) {
        let mesh_config = format!(
            "data_dir = \"data\"\n{config}\n[nats]\nurl = \"{}\"\n",
            self.server.url()
        );
        std::fs::write(self.config_path(), mesh_config).expect("rewrite loom.toml");
    }

    /// Starts `loom <args...>` as a role of the mesh, with its own HTTP port
    /// and log file, and `envs` added to its environment.
    pub fn spawn(&self, args: &[&str], envs: &[(&str, &str)]) -> Role {
        let http_port = free_port();
        let log = self.dir.path().join(format!(
            "{}-{http_port}.log",
            args.first().copied().unwrap_or("role")
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = loom_command();
        command
            .current_dir(self.dir.path())
            .args(args)
            .args(["--config", "loom.toml"])
            .env("LOOM_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("LOOM_LOG", "info,loom_broker=debug")
            .stdout(Stdio::null())
            .stderr(file.try_clone().map(Stdio::from).unwrap_or(Stdio::null()));
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn loom");
        Role {
            child,
            http_port,
            log,
        }
    }

    /// Runs a one-shot `loom` command of the mesh; its output.
    pub fn loom(&self, args: &[&str]) -> std::process::Output {
        loom_command()
            .current_dir(self.dir.path())
            .args(args)
            .args(["--config", "loom.toml"])
            .output()
            .expect("run loom")
    }

    /// Every run command still stored for `worker` (runs no agent and
    /// validator have both taken yet), in stream order.
    pub async fn stored_runs(&self, worker: &str) -> Vec<RunCommand> {
        let names = self.broker.names();
        let messages = self
            .broker
            .read_stream(
                &names.runs_stream(),
                &self.broker.subjects().run(worker),
                ReadFrom::All,
            )
            .await
            .expect("read runs");
        messages
            .iter()
            .filter_map(|m| {
                let defaults =
                    RunDefaults::for_message(&names.runs_stream(), m.sequence, m.stored_at);
                decode_run_command(worker, &m.payload, defaults).ok()
            })
            .collect()
    }

    /// Every run command ever published for `worker`, as the stream stored
    /// it, with its store time; only while no consumer acknowledged them.
    pub async fn stored_runs_with_times(
        &self,
        worker: &str,
    ) -> Vec<(RunCommand, chrono::DateTime<chrono::Utc>)> {
        let names = self.broker.names();
        let messages = self
            .broker
            .read_stream(
                &names.runs_stream(),
                &self.broker.subjects().run(worker),
                ReadFrom::All,
            )
            .await
            .expect("read runs");
        messages
            .iter()
            .filter_map(|m| {
                let defaults =
                    RunDefaults::for_message(&names.runs_stream(), m.sequence, m.stored_at);
                decode_run_command(worker, &m.payload, defaults)
                    .ok()
                    .map(|c| (c, m.stored_at))
            })
            .collect()
    }

    /// The ledger of `worker`'s fires that did not run.
    pub async fn skipped(&self, worker: &str) -> Vec<SkippedFire> {
        self.read_all(
            &self.broker.names().results_stream(),
            &self.broker.subjects().skipped(worker),
            "skipped fire",
        )
        .await
    }

    /// Every verdict of `worker`.
    pub async fn verdicts(&self, worker: &str) -> Vec<Verdict> {
        self.read_all(
            &self.broker.names().results_stream(),
            &self.broker.subjects().verdict(worker),
            "verdict",
        )
        .await
    }

    /// Every dead letter message of `worker` (copies included).
    pub async fn dead_letters(&self, worker: &str) -> Vec<DeadLetter> {
        self.read_all(
            &self.broker.names().dead_letter_stream(),
            &self.broker.subjects().dead_letter(worker),
            "dead letter",
        )
        .await
    }

    /// Every result of `worker`.
    pub async fn results(&self, worker: &str) -> Vec<loom_protocol::RunResult> {
        self.read_all(
            &self.broker.names().results_stream(),
            &self.broker.subjects().result(worker),
            "run result",
        )
        .await
    }

    async fn read_all<T: serde::de::DeserializeOwned + loom_protocol::codec::Versioned>(
        &self,
        stream: &str,
        filter: &str,
        what: &'static str,
    ) -> Vec<T> {
        self.broker
            .read_stream(stream, filter, ReadFrom::All)
            .await
            .expect("read stream")
            .iter()
            .filter_map(|m| decode::<T>(what, &m.payload).ok())
            .collect()
    }

    /// The runs bucket (run states, open marks).
    pub async fn runs_bucket(&self) -> loom_broker::Bucket {
        self.broker
            .bucket(&self.broker.names().runs_bucket())
            .await
            .expect("runs bucket")
    }

    /// The run state of `run_id` of `worker`, if the validator has one.
    pub async fn run_state(&self, worker: &str, run_id: uuid::Uuid) -> Option<RunState> {
        let runs = self.runs_bucket().await;
        runs.get::<RunState>(&loom_protocol::state::run_key(worker, run_id))
            .await
            .expect("read run state")
            .map(|v| v.value)
    }

    /// Publishes `body` on `<prefix>.run.<worker>` as `nats pub` would.
    pub async fn publish_raw(&self, worker: &str, body: &[u8]) {
        self.broker
            .publish(&self.broker.subjects().run(worker), None, body.to_vec())
            .await
            .expect("publish");
    }

    /// Waits for `worker`'s verdict of `run_id`.
    pub async fn verdict_of(&self, worker: &str, run_id: uuid::Uuid, within: Duration) -> Verdict {
        eventually(
            within,
            &format!("the verdict of run {run_id} of {worker}"),
            || async {
                self.verdicts(worker)
                    .await
                    .into_iter()
                    .find(|v| v.run_id == run_id)
            },
        )
        .await
    }

    /// Waits until `worker` has at least `count` verdicts, and returns them
    /// all. Each look reads the whole stream, so looks are a quarter of a
    /// second apart.
    pub async fn verdicts_at_least(
        &self,
        worker: &str,
        count: usize,
        within: Duration,
    ) -> Vec<Verdict> {
        eventually(within, &format!("{count} verdicts of {worker}"), || async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let verdicts = self.verdicts(worker).await;
            (verdicts.len() >= count).then_some(verdicts)
        })
        .await
    }

    /// `loom trigger <worker> [params]`: the run id.
    pub fn trigger(&self, worker: &str, params: &[&str]) -> uuid::Uuid {
        let mut args = vec!["trigger", worker];
        for param in params {
            args.push("--param");
            args.push(param);
        }
        let output = self.loom(&args);
        assert!(
            output.status.success(),
            "loom trigger {worker} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no run id in {text:?}"))
    }

    /// A path inside the mesh's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The subject-kind helper, for assertions on subjects.
    pub fn subject(&self, kind: SubjectKind, worker: &str) -> String {
        self.broker.subjects().for_worker(kind, worker)
    }
}

/// Writes an executable shell script `name` in `dir` with `body`; its path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names (lower case) and values.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The exact body bytes.
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A real HTTP receiver for webhook tests, on a loopback port, recording
/// every POST.
pub struct WebhookReceiver {
    port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Listens on `port` (a free one if `None`).
    pub async fn start(port: Option<u16>) -> WebhookReceiver {
        use axum::routing::post;
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = std::sync::Arc::default();
        let store = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let store = store.clone();
                    async move {
                        let headers = headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    v.to_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect();
                        store.lock().expect("lock").push(Received {
                            headers,
                            body: body.to_vec(),
                        });
                        "ok"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            port,
            received,
            server,
        }
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
