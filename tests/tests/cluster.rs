//! Loom on a three-node JetStream cluster on one machine: every stream,
//! consumer and bucket is replicated three times, and a mesh of separate
//! role processes (two schedulers, two validators, three agents) keeps
//! completing runs when the NATS node that leads the run stream, and that
//! some roles are connected to, is killed mid-flow. Nothing is lost: every
//! second's fire and every manual run gets exactly one `valid` verdict, no
//! fire is published twice, and a run executes again only as a redelivery
//! (a higher attempt of the same run id), as DESIGN §8 allows. The same test
//! runs again on `deploy/nats/auth.conf`, each role logged in as its own
//! user. `loom init` moves a mesh from R1 to R3 in place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use loom_broker::{Broker, ReadFrom};
use loom_protocol::codec::decode;
use loom_protocol::state::FireState;
use loom_protocol::topology::Names;
use loom_protocol::{DeadLetter, SkippedFire, Verdict, VerdictKind};
use loom_testkit::{NatsCluster, free_port, http_get, loom_command};
use loom_tests::{eventually, repository, script};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Generous: seven role processes and three servers share two cores.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `loom` role process on the cluster.
struct Process {
    role: String,
    child: Child,
    http_port: u16,
    log: PathBuf,
}

impl Process {
    async fn ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}; log:\n{}", self.role, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready; log:\n{}",
                self.role,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        while self.exited().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not stop; log:\n{}", self.role, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A mesh whose `loom.toml` lists every node of a cluster.
struct ClusterMesh {
    cluster: NatsCluster,
    dir: tempfile::TempDir,
    broker: Broker,
    /// Whether every role logs in as its own user of `deploy/nats/auth.conf`.
    per_role_users: bool,
}

impl ClusterMesh {
    /// Writes `loom.toml` (`config`, with `@DIR@` replaced by the mesh's
    /// directory, then `data_dir` and the cluster's URLs), runs `loom init`
    /// and connects the test's own observer. With `per_role_users`, the
    /// cluster runs `deploy/nats/auth.conf` ([`auth_cluster`]): `loom init`
    /// and the observer log in as `admin`, triggers as `operator`, and each
    /// role as its own user.
    async fn new(
        cluster: NatsCluster,
        config: &str,
        setup: impl FnOnce(&Path),
        per_role_users: bool,
    ) -> ClusterMesh {
        let dir = tempfile::Builder::new()
            .prefix("loom-cluster-mesh-")
            .tempdir()
            .expect("tempdir");
        setup(dir.path());
        let urls = cluster
            .urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = config.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(
            dir.path().join("loom.toml"),
            format!("data_dir = \"data\"\n{config}\n[nats]\nurl = [{urls}]\n"),
        )
        .expect("write loom.toml");
        let mut settings = loom_config::NatsSettings::default();
        if per_role_users {
            settings.auth = loom_config::NatsAuth::UserPassword {
                user: "admin".to_owned(),
                password: password("admin"),
            };
        }
        let mesh = ClusterMesh {
            broker: loom_broker::connect(&settings, &cluster.urls(), "loom", "loom-test")
                .await
                .expect("connect to the cluster"),
            cluster,
            dir,
            per_role_users,
        };
        let init = mesh.loom(&["init"]);
        assert!(
            init.status.success(),
            "loom init failed: {}\n{}",
            String::from_utf8_lossy(&init.stderr),
            mesh.cluster.logs()
        );
        mesh
    }

    /// `loom <args>` as `admin`.
    fn loom(&self, args: &[&str]) -> std::process::Output {
        self.loom_as("admin", args)
    }

    /// `loom <args>` as `user` (when the mesh has a user per role).
    fn loom_as(&self, user: &str, args: &[&str]) -> std::process::Output {
        loom_command()
            .current_dir(self.dir.path())
            .args(args)
            .args(["--config", "loom.toml"])
            .envs(self.login(user))
            .output()
            .expect("run loom")
    }

    /// The variables that log a `loom` process in as `user`.
    fn login(&self, user: &str) -> Vec<(String, String)> {
        if !self.per_role_users {
            return Vec::new();
        }
        vec![
            ("LOOM_NATS__USER".to_owned(), user.to_owned()),
            ("LOOM_NATS__PASSWORD".to_owned(), password(user)),
        ]
    }

    fn spawn(&self, role: &str, envs: &[(&str, &str)]) -> Process {
        let http_port = free_port();
        let log = self.dir.path().join(format!("{role}-{http_port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = loom_command();
        command
            .current_dir(self.dir.path())
            .args([role, "--config", "loom.toml"])
            .env("LOOM_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("LOOM_LOG", "info")
            .envs(self.login(role))
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        for (name, value) in envs {
            command.env(name, value);
        }
        Process {
            role: role.to_owned(),
            child: command.spawn().expect("spawn loom"),
            http_port,
            log,
        }
    }

    /// `loom trigger <worker>`: the run id. A trigger whose publish is not
    /// acknowledged fails and says so; it is tried again, as a user would.
    async fn trigger(&self, worker: &str) -> uuid::Uuid {
        eventually(PATIENCE, &format!("loom trigger {worker}"), || async {
            let output = self.loom_as("operator", &["trigger", worker]);
            if !output.status.success() {
                eprintln!(
                    "{} loom trigger {worker} failed, trying again: {}",
                    Utc::now().format("%H:%M:%S%.3f"),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                return None;
            }
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
        })
        .await
    }

    /// Every message of `stream` matching `filter`, decoded; `None` while the
    /// cluster cannot answer (a leader election under way).
    async fn read<T>(&self, stream: &str, filter: &str, what: &'static str) -> Option<Vec<T>>
    where
        T: serde::de::DeserializeOwned + loom_protocol::codec::Versioned,
    {
        let messages = self
            .broker
            .read_stream(stream, filter, ReadFrom::All)
            .await
            .ok()?;
        Some(
            messages
                .iter()
                .filter_map(|m| decode::<T>(what, &m.payload).ok())
                .collect(),
        )
    }

    async fn verdicts(&self, worker: &str) -> Option<Vec<Verdict>> {
        let names = self.broker.names();
        let subjects = self.broker.subjects();
        self.read(
            &names.results_stream(),
            &subjects.verdict(worker),
            "verdict",
        )
        .await
    }

    async fn dead_letters(&self, worker: &str) -> Option<Vec<DeadLetter>> {
        let names = self.broker.names();
        let subjects = self.broker.subjects();
        self.read(
            &names.dead_letter_stream(),
            &subjects.dead_letter(worker),
            "dead letter",
        )
        .await
    }

    async fn skipped(&self, worker: &str) -> Option<Vec<SkippedFire>> {
        let names = self.broker.names();
        let subjects = self.broker.subjects();
        self.read(
            &names.results_stream(),
            &subjects.skipped(worker),
            "skipped fire",
        )
        .await
    }

    /// The scheduler's persisted last fire of `worker`.
    async fn last_fire(&self, worker: &str) -> Option<DateTime<Utc>> {
        let bucket = self
            .broker
            .bucket(&self.broker.names().workers_bucket())
            .await
            .ok()?;
        let state = bucket
            .get::<FireState>(&loom_protocol::state::fire_key(worker))
            .await
            .ok()??;
        Some(state.value.last_fire)
    }

    /// The cluster info of stream `name`: its replica count as configured,
    /// its leader's node and its followers' names.
    async fn stream_placement(&self, name: &str) -> Option<(usize, Option<usize>, Vec<String>)> {
        let mut stream = self.broker.jetstream().get_stream(name).await.ok()?;
        let info = stream.info().await.ok()?;
        let replicas = info.config.num_replicas;
        let cluster = info.cluster.clone()?;
        let leader = cluster
            .leader
            .as_deref()
            .and_then(|l| self.cluster.node_named(l));
        let followers = cluster.replicas.iter().map(|p| p.name.clone()).collect();
        Some((replicas, leader, followers))
    }

    /// The node leading consumer `durable` of `stream`, and its followers.
    async fn consumer_placement(
        &self,
        stream: &str,
        durable: &str,
    ) -> Option<(Option<usize>, Vec<String>)> {
        let stream = self.broker.jetstream().get_stream(stream).await.ok()?;
        let info = stream.consumer_info(durable).await.ok()?;
        let cluster = info.cluster.clone()?;
        let leader = cluster
            .leader
            .as_deref()
            .and_then(|l| self.cluster.node_named(l));
        Some((
            leader,
            cluster.replicas.iter().map(|p| p.name.clone()).collect(),
        ))
    }

    /// Asks the leader of a stream (or, with `consumer`, of its consumer) to
    /// hand over to `node` (JetStream's step-down with a preferred server).
    async fn move_leader(&self, stream: &str, consumer: Option<&str>, node: usize) {
        let subject = match consumer {
            Some(durable) => format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{durable}"),
            None => format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
        };
        let body = serde_json::json!({ "placement": { "preferred": self.cluster.name(node) } });
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.broker
                .client()
                .request(subject, serde_json::to_vec(&body).expect("json").into()),
        )
        .await;
    }
}

/// One execution of a worker process, as its script recorded it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Execution {
    scheduled_at: DateTime<Utc>,
    run_id: uuid::Uuid,
    attempt: u32,
    worker: String,
}

/// Every execution recorded in `dir/ran.txt` so far.
fn executions(dir: &Path) -> Vec<Execution> {
    let text = std::fs::read_to_string(dir.join("ran.txt")).unwrap_or_default();
    // A line still being written is read next time.
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 4, "a torn line in ran.txt: {line:?}");
            Execution {
                worker: fields[0].to_owned(),
                scheduled_at: fields[1].parse().expect("LOOM_SCHEDULED_AT"),
                run_id: fields[2].parse().expect("LOOM_RUN_ID"),
                attempt: fields[3].parse().expect("LOOM_ATTEMPT"),
            }
        })
        .collect()
}

/// Every second from `first` to `last`, both included.
fn seconds(first: DateTime<Utc>, last: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    (0..=(last - first).num_seconds())
        .map(|s| first + chrono::Duration::seconds(s))
        .collect()
}

/// The users of `deploy/nats/auth.conf`.
const USERS: [&str; 6] = [
    "admin",
    "scheduler",
    "agent",
    "validator",
    "klaxon",
    "operator",
];

/// The test password of `user`.
fn password(user: &str) -> String {
    format!("{user}-test-password")
}

/// A three-node cluster running `deploy/nats/auth.conf`, its password
/// variables (`$NATS_LOOM_<USER>_PASSWORD`, read from the server's
/// environment in production) replaced by test passwords in each node's copy.
fn auth_cluster() -> NatsCluster {
    let path = repository().join("deploy/nats/auth.conf");
    let mut auth = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for user in USERS {
        let variable = format!("$NATS_LOOM_{}_PASSWORD", user.to_ascii_uppercase());
        auth = auth.replace(&variable, &format!("\"{}\"", password(user)));
    }
    NatsCluster::start_with(3, |_, node_dir| {
        std::fs::write(node_dir.join("auth.conf"), &auth).expect("write auth.conf");
        "include ./auth.conf\n".to_owned()
    })
}

/// Every stream of the mesh, buckets and object store included.
fn replicated(names: &Names) -> Vec<String> {
    let mut streams = vec![
        names.runs_stream(),
        names.results_stream(),
        names.dead_letter_stream(),
        names.advisories_stream(),
        format!("OBJ_{}", names.enforcement_store()),
    ];
    for bucket in [
        names.leader_bucket(),
        names.workers_bucket(),
        names.runs_bucket(),
        names.workflows_bucket(),
        names.agents_bucket(),
    ] {
        streams.push(format!("KV_{bucket}"));
    }
    streams
}

const CONFIG: &str = r#"
[streams]
replicas = 3
[scheduler]
lease_ttl = "2s"
[agent]
ack_wait = "5s"

[workers.tick]
schedule = "* * * * * *"
command = ["./record.sh"]
overlap = "allow"
concurrency = 16
catch_up = "all"
starting_deadline = "10m"
env = { OUT = "@DIR@/ran.txt" }

[workers.manual]
command = ["./record.sh"]
overlap = "allow"
concurrency = 16
env = { OUT = "@DIR@/ran.txt" }
"#;

/// The worker of both workers: one line per execution in `$OUT`.
const RECORD: &str = r#"printf '%s %s %s %s\n' "$LOOM_WORKER" "$LOOM_SCHEDULED_AT" "$LOOM_RUN_ID" "$LOOM_ATTEMPT" >> "$OUT""#;

#[tokio::test]
async fn a_killed_nats_node_loses_no_run_and_runs_none_twice() {
    survive_a_node_kill(false).await;
}

#[tokio::test]
async fn with_a_user_per_role_a_killed_nats_node_loses_no_run() {
    survive_a_node_kill(true).await;
}

/// The mesh on three nodes, one of them killed mid-flow; with
/// `per_role_users`, on `deploy/nats/auth.conf` with each role as its user.
async fn survive_a_node_kill(per_role_users: bool) {
    // Built first, so the clock below measures the test, not the build.
    loom_testkit::loom_binary();
    let started = Instant::now();
    let cluster = if per_role_users {
        auth_cluster()
    } else {
        NatsCluster::start(3)
    };
    let record = |dir: &Path| {
        script(dir, "record.sh", RECORD);
    };
    let mesh = ClusterMesh::new(cluster, CONFIG, record, per_role_users).await;
    let names = mesh.broker.names().clone();

    // Every stream, bucket and object store is R3, and so is every consumer.
    let replicated = replicated(&names);
    for stream in &replicated {
        let (replicas, leader, followers) =
            eventually(PATIENCE, &format!("the cluster info of {stream}"), || {
                mesh.stream_placement(stream)
            })
            .await;
        assert_eq!(replicas, 3, "{stream} is not R3");
        assert!(leader.is_some(), "{stream} has no leader");
        assert_eq!(followers.len(), 2, "{stream} followers: {followers:?}");
    }
    for (stream, durable) in [
        (names.runs_stream(), names.run_consumer("tick")),
        (names.runs_stream(), names.validator_consumer()),
        (names.results_stream(), names.validator_consumer()),
    ] {
        let (leader, followers) = eventually(
            PATIENCE,
            &format!("the cluster info of {stream}/{durable}"),
            || mesh.consumer_placement(&stream, &durable),
        )
        .await;
        assert!(leader.is_some(), "{stream}/{durable} has no leader");
        assert_eq!(followers.len(), 2, "{stream}/{durable}: {followers:?}");
    }

    // Two schedulers, two validators, three agents: separate processes.
    let mut roles = Vec::new();
    for role in ["validator", "validator", "scheduler", "scheduler"] {
        roles.push(mesh.spawn(role, &[]));
    }
    for id in ["agent-a", "agent-b", "agent-c"] {
        roles.push(mesh.spawn("agent", &[("LOOM_AGENT__ID", id)]));
    }
    for role in &mut roles {
        role.ready().await;
    }
    eventually(PATIENCE, "fires with valid verdicts", || async {
        let verdicts = mesh.verdicts("tick").await?;
        (verdicts
            .iter()
            .filter(|v| v.verdict == VerdictKind::Valid)
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    let mut manual = Vec::new();
    for _ in 0..3 {
        manual.push(mesh.trigger("manual").await);
    }

    // The victim: the node serving the most Loom connections, made leader
    // of the run stream, of the tick consumer and of the lease bucket.
    let victim = (0..mesh.cluster.len())
        .max_by_key(|&node| {
            mesh.cluster
                .client_names(node)
                .unwrap_or_default()
                .iter()
                .filter(|name| name.starts_with("loom-") && *name != "loom-test")
                .count()
        })
        .expect("nodes");
    let tick_consumer = names.run_consumer("tick");
    let lease_stream = format!("KV_{}", names.leader_bucket());
    mesh.move_leader(&names.runs_stream(), Some(&tick_consumer), victim)
        .await;
    mesh.move_leader(&lease_stream, None, victim).await;
    for _ in 0..20 {
        let runs = mesh.stream_placement(&names.runs_stream()).await;
        if runs.is_some_and(|(_, leader, _)| leader == Some(victim)) {
            break;
        }
        mesh.move_leader(&names.runs_stream(), None, victim).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let connected: Vec<String> = mesh
        .cluster
        .client_names(victim)
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name.starts_with("loom-"))
        .collect();
    let mut led = Vec::new();
    for stream in &replicated {
        if let Some((_, Some(leader), _)) = mesh.stream_placement(stream).await
            && leader == victim
        {
            led.push(stream.clone());
        }
    }
    if let Some((Some(leader), _)) = mesh
        .consumer_placement(&names.runs_stream(), &tick_consumer)
        .await
        && leader == victim
    {
        led.push(format!("{}/{tick_consumer}", names.runs_stream()));
    }
    let meta_leader = mesh.cluster.meta_leader();
    eprintln!(
        "{} killing node {} at {:?}: meta leader {}, leads {led:?}, serves {connected:?}",
        Utc::now().format("%H:%M:%S%.3f"),
        mesh.cluster.name(victim),
        started.elapsed(),
        meta_leader == Some(victim),
    );
    assert!(
        connected.iter().any(|name| name != "loom-test"),
        "no role is connected to the node about to be killed: {connected:?}"
    );
    assert!(
        led.contains(&names.runs_stream()),
        "the node about to be killed does not lead {}: it leads {led:?}",
        names.runs_stream()
    );

    let mut mesh = mesh;
    let killed_at = Utc::now();
    mesh.cluster.kill(victim);

    // Runs keep coming: manual ones during the outage, and fires well after it.
    for _ in 0..3 {
        manual.push(mesh.trigger("manual").await);
    }
    let after = killed_at + chrono::Duration::seconds(6);
    eventually(PATIENCE, "valid fires after the kill", || async {
        let ran_after: BTreeSet<uuid::Uuid> = executions(mesh.dir.path())
            .into_iter()
            .filter(|e| e.worker == "tick" && e.scheduled_at >= after)
            .map(|e| e.run_id)
            .collect();
        let verdicts = mesh.verdicts("tick").await?;
        let valid_after = verdicts
            .iter()
            .filter(|v| v.verdict == VerdictKind::Valid && ran_after.contains(&v.run_id))
            .count();
        (valid_after >= 3).then_some(())
    })
    .await;
    for _ in 0..2 {
        manual.push(mesh.trigger("manual").await);
    }
    for role in &mut roles {
        assert!(
            role.exited().is_none(),
            "{} exited when a NATS node died; log:\n{}",
            role.role,
            role.log()
        );
    }

    // A fire whose publish failed during the outage is retried (up to 5 s
    // apart), so it may be stored after later fires; the recorded last fire
    // passes it only once it is stored. Stop the schedulers only when the
    // recorded last fire is past the outage: a fire still being retried
    // then would be left for a next leader, and this test stops both.
    eventually(
        PATIENCE,
        "the recorded last fire past the outage",
        || async { mesh.last_fire("tick").await.filter(|fire| *fire >= after) },
    )
    .await;

    // Fires stop; every fire and manual run then gets its verdict.
    for role in roles.iter_mut().filter(|r| r.role == "scheduler") {
        role.stop();
    }
    let last_fire = eventually(PATIENCE, "the last fire", || mesh.last_fire("tick")).await;
    let verdicts = eventually(PATIENCE, "a verdict for every run", || async {
        let ran = executions(mesh.dir.path());
        let first = ran
            .iter()
            .filter(|e| e.worker == "tick")
            .map(|e| e.scheduled_at)
            .min()?;
        let fired: BTreeSet<DateTime<Utc>> = ran
            .iter()
            .filter(|e| e.worker == "tick")
            .map(|e| e.scheduled_at)
            .collect();
        if seconds(first, last_fire).iter().any(|s| !fired.contains(s)) {
            return None;
        }
        let tick = mesh.verdicts("tick").await?;
        let manual_verdicts = mesh.verdicts("manual").await?;
        let judged: BTreeSet<uuid::Uuid> = tick
            .iter()
            .chain(&manual_verdicts)
            .map(|v| v.run_id)
            .collect();
        let all_judged = ran.iter().all(|e| judged.contains(&e.run_id))
            && manual.iter().all(|id| judged.contains(id));
        all_judged.then_some((tick, manual_verdicts))
    })
    .await;
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ran = executions(mesh.dir.path());
    let (tick_verdicts, manual_verdicts) = (
        eventually(PATIENCE, "tick verdicts", || mesh.verdicts("tick")).await,
        eventually(PATIENCE, "manual verdicts", || mesh.verdicts("manual")).await,
    );
    assert!(tick_verdicts.len() >= verdicts.0.len());
    assert!(manual_verdicts.len() >= verdicts.1.len());

    // Every second from the first fire to the last ran and is judged once,
    // valid. The last is the scheduler's recorded last fire, or a later one
    // stored just before the schedulers stopped and not yet recorded.
    let mut fire_runs: BTreeMap<DateTime<Utc>, BTreeSet<uuid::Uuid>> = BTreeMap::new();
    for execution in ran.iter().filter(|e| e.worker == "tick") {
        fire_runs
            .entry(execution.scheduled_at)
            .or_default()
            .insert(execution.run_id);
    }
    let first_fire = *fire_runs.keys().next().expect("fires ran");
    let last_fire = last_fire.max(*fire_runs.keys().last().expect("fires ran"));
    let expected = seconds(first_fire, last_fire);
    let missing: Vec<&DateTime<Utc>> = expected
        .iter()
        .filter(|s| !fire_runs.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "fires that never ran: {missing:?}");
    let twice: Vec<_> = fire_runs.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "fires published as two runs: {twice:?}");
    assert!(
        fire_runs.keys().any(|s| *s >= after),
        "no fire ran after the kill"
    );

    let mut per_run: BTreeMap<uuid::Uuid, Vec<&Verdict>> = BTreeMap::new();
    for verdict in tick_verdicts.iter().chain(&manual_verdicts) {
        per_run.entry(verdict.run_id).or_default().push(verdict);
    }
    let run_ids: BTreeSet<uuid::Uuid> = fire_runs
        .values()
        .flatten()
        .copied()
        .chain(manual.iter().copied())
        .collect();
    for run_id in &run_ids {
        let judged = per_run.get(run_id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(judged.len(), 1, "run {run_id} has verdicts {judged:?}");
        assert_eq!(
            judged[0].verdict,
            VerdictKind::Valid,
            "run {run_id}: {}",
            judged[0].reason
        );
    }
    let unknown: Vec<&uuid::Uuid> = per_run.keys().filter(|id| !run_ids.contains(id)).collect();
    assert!(
        unknown.is_empty(),
        "verdicts of runs that never ran: {unknown:?}"
    );
    let manual_ran: BTreeSet<uuid::Uuid> = ran
        .iter()
        .filter(|e| e.worker == "manual")
        .map(|e| e.run_id)
        .collect();
    assert_eq!(
        manual_ran,
        manual.iter().copied().collect(),
        "the manual runs that ran are the ones triggered"
    );

    // A run executes again only as a redelivery: never the same attempt twice.
    let mut attempts: BTreeMap<(uuid::Uuid, u32), usize> = BTreeMap::new();
    for execution in &ran {
        *attempts
            .entry((execution.run_id, execution.attempt))
            .or_default() += 1;
    }
    let repeated: Vec<_> = attempts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "the same delivery executed twice: {repeated:?}"
    );
    let redelivered: BTreeSet<uuid::Uuid> = ran
        .iter()
        .filter(|e| e.attempt > 1)
        .map(|e| e.run_id)
        .collect();

    let skipped = eventually(PATIENCE, "the ledger", || mesh.skipped("tick")).await;
    assert!(skipped.is_empty(), "fires that did not run: {skipped:?}");
    for worker in ["tick", "manual"] {
        let letters = eventually(PATIENCE, "dead letters", || mesh.dead_letters(worker)).await;
        assert!(letters.is_empty(), "dead letters of {worker}: {letters:?}");
    }
    for role in &mut roles {
        assert!(
            role.exited().is_none() || role.role == "scheduler",
            "{} exited; log:\n{}",
            role.role,
            role.log()
        );
    }
    eprintln!(
        "{} fires from {first_fire} to {last_fire} and {} manual runs: one valid verdict each; \
         {} runs executed again as redeliveries {redelivered:?}; {} executions in all; {:?} in all",
        expected.len(),
        manual.len(),
        redelivered.len(),
        ran.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn loom_init_moves_an_r1_mesh_to_r3_streams_buckets_and_object_store_alike() {
    let cluster = NatsCluster::start(3);
    let config = "[workers.w]\ncommand = [\"true\"]\n";
    let mesh = ClusterMesh::new(cluster, config, |_| {}, false).await;
    let names = mesh.broker.names().clone();
    for stream in replicated(&names) {
        let (replicas, _, followers) =
            eventually(PATIENCE, &stream, || mesh.stream_placement(&stream)).await;
        assert_eq!((replicas, followers.len()), (1, 0), "{stream} starts R1");
    }

    let text = std::fs::read_to_string(mesh.dir.path().join("loom.toml")).expect("loom.toml");
    std::fs::write(
        mesh.dir.path().join("loom.toml"),
        text.replacen(
            "data_dir = \"data\"\n",
            "data_dir = \"data\"\n[streams]\nreplicas = 3\n",
            1,
        ),
    )
    .expect("rewrite loom.toml");
    let init = mesh.loom(&["init"]);
    assert!(
        init.status.success(),
        "loom init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    for stream in replicated(&names) {
        let (replicas, leader, followers) =
            eventually(PATIENCE, &format!("{stream} on three nodes"), || async {
                let placement = mesh.stream_placement(&stream).await?;
                (placement.2.len() == 2).then_some(placement)
            })
            .await;
        assert_eq!(replicas, 3, "{stream} is not R3 after loom init");
        assert!(leader.is_some(), "{stream} has no leader");
        assert_eq!(followers.len(), 2, "{stream}: {followers:?}");
    }
    eventually(PATIENCE, "the run consumer on three nodes", || async {
        let (_, followers) = mesh
            .consumer_placement(&names.runs_stream(), &names.run_consumer("w"))
            .await?;
        (followers.len() == 2).then_some(())
    })
    .await;
    let again = mesh.loom(&["init"]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 created, 0 updated"),
        "a second loom init changes nothing: {}",
        String::from_utf8_lossy(&again.stdout)
    );
}
