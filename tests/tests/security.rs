//! NATS security against a real nats-server: the checked-in per-role users
//! of `deploy/nats/auth.conf` run a whole mesh (scheduler, agent, validator
//! and Klaxon as separate processes, each its own user) without a single
//! permission violation; each forbidden action is refused by the server; and
//! every way Loom logs in (user and password, token, nkey, credentials file,
//! TLS with a client certificate) works, with the one sentence Loom prints
//! when the server refuses it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use loom_broker::{Broker, ReadFrom};
use loom_config::{NatsAuth, NatsSettings};
use loom_protocol::codec::decode;
use loom_protocol::{Verdict, VerdictKind};
use loom_testkit::creds::Operator;
use loom_testkit::tls::TestPki;
use loom_testkit::{NatsServer, free_port, http_get, loom_command};
use loom_tests::{eventually, repository};

const WAIT: Duration = Duration::from_secs(60);

/// The users of `deploy/nats/auth.conf` and the passwords the tests give them.
const USERS: [(&str, &str); 6] = [
    ("admin", "admin-secret"),
    ("scheduler", "scheduler-secret"),
    ("agent", "agent-secret"),
    ("validator", "validator-secret"),
    ("klaxon", "klaxon-secret"),
    ("operator", "operator-secret"),
];

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(name, _)| *name == user)
        .map(|(_, password)| *password)
        .unwrap_or_else(|| panic!("no user {user} in auth.conf"))
}

/// The checked-in authorization block.
fn auth_conf() -> String {
    let path = repository().join("deploy/nats/auth.conf");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// A server with the checked-in users. nats-server resolves `$NAME` from
/// variables defined earlier in the same file before the environment (and
/// an included file sees only the environment), so the passwords are
/// defined here and the block is inlined; the deployment file's own
/// `include` and environment are checked by
/// `the_deployment_config_takes_its_passwords_from_the_environment`.
fn secured_server() -> NatsServer {
    let mut config = String::new();
    for (user, password) in USERS {
        config.push_str(&format!(
            "NATS_LOOM_{}_PASSWORD: {password:?}\n",
            user.to_ascii_uppercase()
        ));
    }
    config.push_str(&auth_conf());
    NatsServer::start_configured(&config)
}

/// Lines of the server log that report a permission violation.
fn violations(server: &NatsServer) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|line| line.contains("Violation"))
        .map(str::to_owned)
        .collect()
}

fn login(user: &str) -> NatsSettings {
    NatsSettings {
        urls: Vec::new(),
        auth: NatsAuth::UserPassword {
            user: user.to_owned(),
            password: password(user).to_owned(),
        },
        tls: None,
    }
}

async fn connect_as(server: &NatsServer, user: &str) -> Broker {
    loom_broker::connect(&login(user), &[server.url()], "loom", "loom-test")
        .await
        .unwrap_or_else(|error| panic!("connect as {user}: {error}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A deployment directory: `loom.toml` (with `body` and the server's URL)
/// and the files it names.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(url: &str, body: &str, files: &[(&str, &str)]) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("loom-security-")
            .tempdir()
            .expect("tempdir");
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, content).expect("write a file");
        }
        let site = Site { dir };
        site.write_config(url, body);
        site
    }

    fn write_config(&self, url: &str, body: &str) {
        std::fs::write(
            self.dir.path().join("loom.toml"),
            format!("data_dir = \"data\"\n{body}\n[nats]\nurl = \"{url}\"\n"),
        )
        .expect("write loom.toml");
    }

    /// `loom <args>` logged in as `user` through the environment.
    fn loom_as(&self, user: &str, args: &[&str]) -> Output {
        loom_command()
            .current_dir(self.dir.path())
            .args(args)
            .args(["--config", "loom.toml"])
            .env("LOOM_NATS__USER", user)
            .env("LOOM_NATS__PASSWORD", password(user))
            .output()
            .expect("run loom")
    }

    /// `loom <role>` logged in as the user of the same name.
    fn spawn(&self, role: &str) -> RoleProcess {
        let http_port = free_port();
        let log = self.dir.path().join(format!("{role}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = loom_command()
            .current_dir(self.dir.path())
            .args([role, "--config", "loom.toml"])
            .env("LOOM_NATS__USER", role)
            .env("LOOM_NATS__PASSWORD", password(role))
            .env("LOOM_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("LOOM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn loom");
        RoleProcess {
            child,
            http_port,
            log,
        }
    }
}

/// A role process, killed on drop.
struct RoleProcess {
    child: Child,
    http_port: u16,
    log: PathBuf,
}

impl RoleProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited with {status} before it was ready:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {WAIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("did not stop within 30s:\n{}", self.log());
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn verdicts(observer: &Broker, worker: &str) -> Vec<Verdict> {
    observer
        .read_stream(
            &observer.names().results_stream(),
            &observer.subjects().verdict(worker),
            ReadFrom::All,
        )
        .await
        .expect("read verdicts")
        .iter()
        .filter_map(|m| decode::<Verdict>("verdict", &m.payload).ok())
        .collect()
}

const MESH: &str = r#"
[agent]
ack_wait = "2s"
drain_timeout = "2s"
[validator]
slack = "1s"
[enforcement]
dir = "bundles"
[workers.ok]
command = ["/bin/sh", "-c", "echo 'STATUS: ok fine'"]
output = { format = "status-line" }
schedule = "@every 3s"
enforcement = "standard"
[workers.bad]
command = ["/bin/sh", "-c", "echo 'no such table' >&2; exit 3"]
retries = 0
[workflows.flow]
tasks = [ { id = "a", worker = "ok" } ]
"#;

/// The enforcement bundle `MESH` names.
const BUNDLE: &[(&str, &str)] = &[("bundles/standard/rules.txt", "no network\n")];

const LATE_WORKER: &str = r#"
[workers.late]
command = ["/bin/sh", "-c", "echo 'STATUS: ok late'"]
output = { format = "status-line" }
"#;

#[tokio::test]
async fn each_role_runs_as_its_own_user_without_a_permission_violation() {
    let mut server = secured_server();
    let site = Site::new(&server.url(), MESH, BUNDLE);
    // The topology is created by the privileged user, as `loom init` is in
    // production; the scheduler publishes the enforcement bundle itself.
    let init = site.loom_as("admin", &["init"]);
    assert!(init.status.success(), "loom init: {}", stderr(&init));

    let mut roles = Vec::new();
    for role in ["scheduler", "agent", "validator", "klaxon"] {
        let mut process = site.spawn(role);
        process.ready().await;
        roles.push(process);
    }
    let observer = connect_as(&server, "admin").await;

    // A scheduled run, its bundle loaded by the agent, judged valid.
    let scheduled = eventually(WAIT, "a valid verdict of a scheduled run", || async {
        verdicts(&observer, "ok")
            .await
            .into_iter()
            .find(|v| v.verdict == VerdictKind::Valid)
    })
    .await;
    assert_eq!(scheduled.worker, "ok");

    // The operator triggers and waits; reads runs, status, dead letters.
    let trigger = site.loom_as("operator", &["trigger", "ok", "--wait"]);
    assert!(trigger.status.success(), "trigger: {}", stderr(&trigger));
    assert!(
        stdout(&trigger).contains("valid after 1 attempt(s): STATUS: ok fine"),
        "{}",
        stdout(&trigger)
    );
    let bad = site.loom_as("operator", &["trigger", "bad"]);
    assert!(bad.status.success(), "trigger bad: {}", stderr(&bad));
    let bad_run: uuid::Uuid = stdout(&bad)
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .expect("a run id");
    let failed = eventually(WAIT, "the failed verdict", || async {
        verdicts(&observer, "bad")
            .await
            .into_iter()
            .find(|v| v.run_id == bad_run)
    })
    .await;
    assert_eq!(failed.verdict, VerdictKind::Failed);
    // Klaxon took the dead letter and recorded its alert.
    let workers = observer
        .bucket(&observer.names().workers_bucket())
        .await
        .expect("workers bucket");
    eventually(WAIT, "Klaxon's alert state for bad", || async {
        workers
            .get::<serde_json::Value>("alert.bad.failed")
            .await
            .expect("read the alert")
            .map(|_| ())
    })
    .await;

    let runs = site.loom_as("operator", &["runs", "ok"]);
    assert!(runs.status.success(), "runs: {}", stderr(&runs));
    assert!(stdout(&runs).contains("valid"), "{}", stdout(&runs));
    let status = site.loom_as("operator", &["status"]);
    assert!(status.status.success(), "status: {}", stderr(&status));
    let dead = site.loom_as("operator", &["dlq", "list"]);
    assert!(dead.status.success(), "dlq list: {}", stderr(&dead));
    assert!(stdout(&dead).contains(&bad_run.to_string()));
    // A run found by its id alone, whatever its worker.
    let cancel = site.loom_as("operator", &["cancel", &bad_run.to_string()]);
    assert_eq!(cancel.status.code(), Some(2), "cancel: {}", stderr(&cancel));
    assert!(
        stderr(&cancel).contains(&format!(
            "run {bad_run} already has its verdict (failed); there is nothing to cancel"
        )),
        "{}",
        stderr(&cancel)
    );

    // A workflow started by the operator, run by the scheduler.
    let start = site.loom_as("operator", &["workflow", "start", "flow"]);
    assert!(start.status.success(), "workflow start: {}", stderr(&start));
    let workflow_run = stdout(&start)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    eventually(WAIT, "the workflow run to finish", || async {
        let show = site.loom_as("operator", &["workflow", "show", &workflow_run]);
        stdout(&show).contains(": done").then_some(())
    })
    .await;

    // A worker added to the registry: the scheduler creates its run consumer.
    site.write_config(&server.url(), &format!("{MESH}{LATE_WORKER}"));
    let runs_stream = observer
        .jetstream()
        .get_stream(observer.names().runs_stream())
        .await
        .expect("runs stream");
    eventually(WAIT, "the scheduler to create run-late", || async {
        runs_stream.consumer_info("run-late").await.ok().map(|_| ())
    })
    .await;
    // The agent serves it after its own reload.
    eventually(WAIT, "a valid run of the late worker", || async {
        let trigger = site.loom_as("operator", &["trigger", "late", "--wait"]);
        stdout(&trigger).contains("valid after").then_some(())
    })
    .await;

    // A broker crash and restart: every role reconnects and its readers
    // (key-value watches, ordered consumers) start over, still within their
    // permissions.
    server.restart();
    eventually(WAIT, "a valid run after the broker restart", || async {
        let trigger = site.loom_as("operator", &["trigger", "ok", "--wait"]);
        stdout(&trigger).contains("valid after").then_some(())
    })
    .await;

    for role in &mut roles {
        role.stop();
    }
    assert_eq!(violations(&server), Vec::<String>::new());
    for role in &roles {
        let log = role.log();
        assert!(!log.contains("refused"), "{log}");
    }
}

/// The server's refusals a client logged in as `user` receives.
async fn client_as(
    server: &NatsServer,
    user: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        user.to_owned(),
        password(user).to_owned(),
    )
    .event_callback(move |event| {
        let sender = sender.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                let _ = sender.send(error.to_string());
            }
        }
    })
    .connect(server.url())
    .await
    .unwrap_or_else(|error| panic!("connect as {user}: {error}"));
    (client, receiver)
}

async fn refused(receiver: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .expect("the server refuses within 5s")
        .expect("an error")
}

#[tokio::test]
async fn forbidden_actions_are_refused_by_the_server() {
    let server = secured_server();
    let site = Site::new(&server.url(), MESH, BUNDLE);
    let init = site.loom_as("admin", &["init"]);
    assert!(init.status.success(), "loom init: {}", stderr(&init));

    // Publishes each user may not make, and the server's exact refusal.
    let cases: [(&str, &str); 14] = [
        // An agent cannot command runs, judge them, or touch shared state.
        ("agent", "loom.run.ok"),
        ("agent", "loom.verdict.ok"),
        ("agent", "loom.dlq.ok"),
        ("agent", "$KV.loom_workers.pause.ok"),
        ("agent", "$KV.loom_leader.scheduler"),
        (
            "agent",
            "$KV.loom_runs.run.ok.01a20000-0000-7000-8000-000000000000",
        ),
        // ...nor take the validator's deliveries or read results.
        ("agent", "$JS.API.CONSUMER.MSG.NEXT.LOOM_RUNS.validator"),
        (
            "agent",
            "$JS.API.CONSUMER.CREATE.LOOM_RESULTS.r.loom.result.*",
        ),
        // An operator reads and triggers, nothing else.
        ("operator", "$KV.loom_workers.pause.ok"),
        ("operator", "$JS.API.STREAM.DELETE.LOOM_RUNS"),
        ("operator", "$JS.API.STREAM.PURGE.LOOM_DLQ"),
        ("operator", "loom.cancel.ok"),
        // Roles cannot change the topology.
        ("scheduler", "$JS.API.STREAM.DELETE.LOOM_RESULTS"),
        ("klaxon", "loom.verdict.ok"),
    ];
    for (user, subject) in cases {
        let (client, mut errors) = client_as(&server, user).await;
        client
            .publish(subject.to_owned(), "{}".into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        assert_eq!(
            refused(&mut errors).await,
            format!("nats: Permissions Violation for Publish to \"{subject}\""),
            "{user} publishing to {subject}"
        );
    }

    // Subscriptions: nobody but the scheduler and the operator follows
    // verdicts live, and nobody reads the whole mesh.
    let (client, mut errors) = client_as(&server, "agent").await;
    let _subscription = client.subscribe("loom.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    assert_eq!(
        refused(&mut errors).await,
        "nats: Permissions Violation for Subscription to \"loom.>\""
    );
}

#[tokio::test]
async fn loom_reports_a_refused_action_at_once_naming_the_user_and_subject() {
    let server = secured_server();
    let site = Site::new(&server.url(), MESH, BUNDLE);
    let init = site.loom_as("admin", &["init"]);
    assert!(init.status.success(), "loom init: {}", stderr(&init));

    let started = Instant::now();
    let trigger = site.loom_as("agent", &["trigger", "ok"]);
    assert_eq!(trigger.status.code(), Some(3));
    assert_eq!(
        stderr(&trigger),
        "loom: cannot publish to loom.run.ok: the NATS server does not let user \"agent\" publish to loom.run.ok (Permissions Violation for Publish to \"loom.run.ok\")"
    );

    let pause = site.loom_as("operator", &["pause", "ok"]);
    assert_eq!(pause.status.code(), Some(3));
    assert_eq!(
        stderr(&pause),
        "loom: key-value bucket loom_workers, key \"pause.ok\": the NATS server does not let user \"operator\" publish to $KV.loom_workers.pause.ok (Permissions Violation for Publish to \"$KV.loom_workers.pause.ok\")"
    );

    let purge = site.loom_as("operator", &["dlq", "purge"]);
    assert_eq!(purge.status.code(), Some(3), "{}", stderr(&purge));
    assert!(
        stderr(&purge).contains(
            "the NATS server does not let user \"operator\" publish to $JS.API.STREAM.PURGE.LOOM_DLQ"
        ),
        "{}",
        stderr(&purge)
    );
    // Refusals are reported as they happen, not after a request timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_deployment_config_takes_its_passwords_from_the_environment() {
    let binary = loom_broker::embedded::find_binary().expect("nats-server");
    let config = repository().join("deploy/nats/nats-server.conf");
    let check = |without: Option<&str>| {
        let mut command = Command::new(&binary);
        command.env_clear().arg("-c").arg(&config).arg("-t");
        for (user, password) in USERS {
            let name = format!("NATS_LOOM_{}_PASSWORD", user.to_ascii_uppercase());
            if Some(name.as_str()) != without {
                command.env(name, password);
            }
        }
        command.output().expect("run nats-server -t")
    };
    let valid = check(None);
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    let missing = check(Some("NATS_LOOM_AGENT_PASSWORD"));
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("variable reference for 'NATS_LOOM_AGENT_PASSWORD'"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// `loom init` in a fresh directory whose `[nats]` table is `nats` (the URL
/// included), with `files` beside `loom.toml`: its output.
fn init_with(nats: &str, files: &[(&str, &str)]) -> Output {
    loom_in(nats, files, &["init"])
}

/// `loom <args>` in a fresh directory, as [`init_with`].
fn loom_in(nats: &str, files: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tempfile::Builder::new()
        .prefix("loom-login-")
        .tempdir()
        .expect("tempdir");
    for (path, content) in files {
        std::fs::write(dir.path().join(path), content).expect("write a file");
    }
    std::fs::write(
        dir.path().join("loom.toml"),
        format!("[workers.w]\ncommand = [\"/bin/true\"]\n[nats]\n{nats}\n"),
    )
    .expect("write loom.toml");
    loom_command()
        .current_dir(dir.path())
        .args(args)
        .args(["--config", "loom.toml"])
        .output()
        .expect("run loom")
}

fn assert_connects(output: &Output) {
    assert!(
        output.status.success() && stdout(output).contains("topology of mesh \"loom\""),
        "{}",
        stderr(output)
    );
}

fn assert_refused(output: &Output, sentence: &str) {
    assert_eq!(output.status.code(), Some(3), "{}", stderr(output));
    assert_eq!(
        stderr(output),
        format!("loom: cannot reach the mesh: {sentence}")
    );
}

#[test]
fn user_and_password_and_token_logins() {
    let users = NatsServer::start_configured(
        "authorization { users = [ { user: ops, password: \"s3cret\" } ] }\n",
    );
    let url = users.url();
    assert_connects(&init_with(
        &format!("url = \"{url}\"\nuser = \"ops\"\npassword = \"s3cret\""),
        &[],
    ));
    assert_refused(
        &init_with(
            &format!("url = \"{url}\"\nuser = \"ops\"\npassword = \"wrong\""),
            &[],
        ),
        &format!(
            "NATS at {url} refused the login of user \"ops\": check nats.user and nats.password"
        ),
    );
    assert_refused(
        &init_with(&format!("url = \"{url}\""), &[]),
        &format!(
            "NATS at {url} refused the login: it requires credentials and none are set (set nats.user and nats.password, nats.token, nats.nkey or nats.creds)"
        ),
    );

    let token = NatsServer::start_configured("authorization { token: \"t0ken\" }\n");
    let url = token.url();
    assert_connects(&init_with(
        &format!("url = \"{url}\"\ntoken = \"t0ken\""),
        &[],
    ));
    assert_refused(
        &init_with(&format!("url = \"{url}\"\ntoken = \"nope\""), &[]),
        &format!("NATS at {url} refused the token in nats.token"),
    );
}

#[test]
fn nkey_logins_with_the_seed_inline_and_in_a_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let server = NatsServer::start_configured(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    ));
    let url = server.url();
    assert_connects(&init_with(
        &format!("url = \"{url}\"\nnkey = \"{seed}\""),
        &[],
    ));
    assert_connects(&init_with(
        &format!("url = \"{url}\"\nnkey = \"user.nk\""),
        &[("user.nk", &format!("{seed}\n"))],
    ));
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    assert_refused(
        &init_with(&format!("url = \"{url}\"\nnkey = \"{stranger}\""), &[]),
        &format!(
            "NATS at {url} refused the nkey in nats.nkey: no user of the server has its public key"
        ),
    );
    assert_refused(
        &init_with(&format!("url = \"{url}\"\nnkey = \"SUNOTASEED\""), &[]),
        "nats.nkey does not hold a valid user nkey seed (58 characters starting with \"SU\")",
    );
}

#[test]
fn credentials_file_logins() {
    let operator = Operator::new("loom-test");
    let server = NatsServer::start_configured(&operator.server_config());
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = operator.user_creds(dir.path(), "scheduler");
    assert_connects(&init_with(
        &format!("url = \"{url}\"\ncreds = \"{}\"", creds.display()),
        &[],
    ));
    // Credentials of another operator's account are not trusted.
    let stranger = Operator::new("elsewhere").user_creds(dir.path(), "stranger");
    assert_refused(
        &init_with(
            &format!("url = \"{url}\"\ncreds = \"{}\"", stranger.display()),
            &[],
        ),
        &format!(
            "NATS at {url} refused the credentials in nats.creds {}: the server does not trust the account or user they name",
            stranger.display()
        ),
    );
    let missing = dir.path().join("missing.creds");
    let output = init_with(
        &format!("url = \"{url}\"\ncreds = \"{}\"", missing.display()),
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).starts_with(&format!(
            "loom: cannot reach the mesh: cannot read nats.creds {}:",
            missing.display()
        )),
        "{}",
        stderr(&output)
    );
}

fn tls_table(ca: &Path, client: Option<&TestPki>) -> String {
    let mut table = format!("tls = {{ ca = \"{}\"", ca.display());
    if let Some(pki) = client {
        table.push_str(&format!(
            ", cert = \"{}\", key = \"{}\"",
            pki.client_cert().display(),
            pki.client_key().display()
        ));
    }
    table.push_str(" }");
    table
}

#[test]
fn tls_with_a_client_certificate() {
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let server = NatsServer::start_configured(&pki.server_tls_block(true));
    let url = server.url();

    assert_connects(&init_with(
        &format!("url = \"{url}\"\n{}", tls_table(&pki.ca(), Some(&pki))),
        &[],
    ));
    assert_refused(
        &init_with(
            &format!("url = \"{url}\"\n{}", tls_table(&pki.ca(), None)),
            &[],
        ),
        &format!(
            "TLS with NATS at {url} failed: the server requires a client certificate (set nats.tls.cert and nats.tls.key)"
        ),
    );
    assert_refused(
        &init_with(
            &format!("url = \"{url}\"\n{}", tls_table(&pki.ca(), Some(&other))),
            &[],
        ),
        &format!(
            "TLS with NATS at {url} failed: the server does not accept the client certificate in nats.tls.cert {} (it is not signed by a CA the server trusts)",
            other.client_cert().display()
        ),
    );
    assert_refused(
        &init_with(
            &format!("url = \"{url}\"\n{}", tls_table(&other.ca(), Some(&pki))),
            &[],
        ),
        &format!(
            "TLS with NATS at {url} failed: the server's certificate is not signed by the CA in nats.tls.ca {}",
            other.ca().display()
        ),
    );
    assert_refused(
        &init_with(&format!("url = \"{url}\""), &[]),
        &format!(
            "TLS with NATS at {url} failed: the server's certificate is not signed by a CA this machine trusts (set nats.tls.ca to the CA that signed it)"
        ),
    );

    let plain = NatsServer::start();
    assert_refused(
        &init_with(
            &format!("url = \"{}\"\n{}", plain.url(), tls_table(&pki.ca(), None)),
            &[],
        ),
        &format!(
            "TLS with NATS at {} failed: the server does not speak TLS, but nats.tls is set (use the server's TLS address or remove nats.tls)",
            plain.url()
        ),
    );
    let swapped = init_with(
        &format!(
            "url = \"{url}\"\ntls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
            pki.ca().display(),
            pki.client_key().display(),
            pki.client_cert().display()
        ),
        &[],
    );
    assert_refused(
        &swapped,
        &format!(
            "cannot read nats.tls.cert {}: it does not hold a PEM certificate",
            pki.client_key().display()
        ),
    );
}

#[test]
fn tls_and_a_role_user_together() {
    let pki = TestPki::generate();
    let mut config = String::new();
    for (user, password) in USERS {
        config.push_str(&format!(
            "NATS_LOOM_{}_PASSWORD: {password:?}\n",
            user.to_ascii_uppercase()
        ));
    }
    config.push_str(&auth_conf());
    config.push_str(&pki.server_tls_block(true));
    let server = NatsServer::start_configured(&config);
    let nats = |user: &str| {
        format!(
            "url = \"{}\"\nuser = \"{user}\"\npassword = \"{}\"\n{}",
            server.url(),
            password(user),
            tls_table(&pki.ca(), Some(&pki))
        )
    };
    assert_connects(&loom_in(&nats("admin"), &[], &["init"]));
    let runs = loom_in(&nats("operator"), &[], &["runs", "w"]);
    assert!(runs.status.success(), "{}", stderr(&runs));
    assert_eq!(violations(&server), Vec::<String>::new());
}
