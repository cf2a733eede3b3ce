//! Agent benchmark: prints figures, asserts nothing.
//!
//! All against a real nats-server, with agents and a validator running in
//! this process (the bench's release build), on `/bin/true` runs:
//!
//! 1. The ceiling: this machine's own rate of spawning and reaping
//!    `/bin/true` with captured output from tokio, at the agent's
//!    concurrency, measured first in the same run.
//! 2. Start latency: runs published at a steady `RATE` per second (default
//!    200) for `SECONDS` (default 10); for each, the worker process's start
//!    minus the run's publish instant: p50, p99, max.
//! 3. Throughput: `RUNS` runs (default 3,000) published at once, until the
//!    last verdict (published → executed → result stored → verdict), with
//!    one agent and with two; as runs per second and as a share of the
//!    ceiling.
//! 4. The broker floor: the same runs through the same JetStream traffic
//!    (run stored, pulled and acknowledged; result stored and consumed; one
//!    state write; verdict stored), with tasks in this process standing in
//!    for the agent and the validator, each run holding a slot as long as a
//!    run took at the ceiling, and no process started. Its CPU per run added to the ceiling's gives the best
//!    share of the ceiling that a run to its verdict can reach on this
//!    machine, and each verdict phase is also given as a share of that best.
//! 5. Memory: this process's RSS with one agent idle, and its peak.
//!
//! With the ceiling and each throughput phase it prints the CPU time per
//! run: the workers' (this process's reaped children), Loom's (this
//! process: agents, validator and the publishing of the runs) and
//! nats-server's, so that a change shows where it saves.
//!
//! Run with `cargo bench -p loom-agent --bench runs`. `PHASES` picks phases
//! (a comma-separated subset of `latency,floor,results,verdicts`; all by
//! default),
//! to profile one of them alone; `DATA_DIR` puts the agents' data (and run)
//! directories under another parent, to compare file systems.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use chrono::Utc;
use futures::StreamExt;
use loom_broker::Broker;
use loom_config::Config;
use loom_protocol::codec::{decode, encode};
use loom_protocol::{RunCommand, RunResult, Trigger};
use loom_testkit::NatsServer;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs at once per agent: enough slots to hide the broker round-trips that
/// each run waits for (storing its result, confirming its ack).
const CONCURRENCY: usize = 32;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// CPU seconds used so far: by this process's threads (agents, validator,
/// publisher), by its reaped children (the workers), and by nats-server.
#[derive(Clone, Copy)]
struct CpuSeconds {
    own: f64,
    children: f64,
    broker: f64,
    broker_syscalls: f64,
    own_syscalls: f64,
}

impl CpuSeconds {
    fn now(broker_pid: Option<u32>) -> CpuSeconds {
        // Fields 14-17 of /proc/<pid>/stat: utime, stime, cutime, cstime,
        // in clock ticks (100 a second on Linux).
        let seconds = |pid: &str| -> [f64; 4] {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let mut fields = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace()
                .skip(11)
                .map(|v| v.parse::<f64>().unwrap_or(0.0) / 100.0);
            std::array::from_fn(|_| fields.next().unwrap_or(0.0))
        };
        let [user, system, children_user, children_system] = seconds("self");
        let [broker_user, broker_system, ..] =
            broker_pid.map_or([0.0; 4], |pid| seconds(&pid.to_string()));
        let syscalls = |pid: &str| -> f64 {
            std::fs::read_to_string(format!("/proc/{pid}/io"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum()
        };
        CpuSeconds {
            own: user + system,
            children: children_user + children_system,
            broker: broker_user + broker_system,
            broker_syscalls: broker_pid.map_or(0.0, |pid| syscalls(&pid.to_string())),
            own_syscalls: syscalls("self"),
        }
    }

    /// CPU and system calls per run since `before`.
    fn per_run_since(self, before: CpuSeconds, runs: u64) -> PerRun {
        let per = |now: f64, then: f64| (now - then) / runs.max(1) as f64;
        PerRun {
            workers_ms: per(self.children, before.children) * 1000.0,
            loom_ms: per(self.own, before.own) * 1000.0,
            broker_ms: per(self.broker, before.broker) * 1000.0,
            loom_syscalls: per(self.own_syscalls, before.own_syscalls),
            broker_syscalls: per(self.broker_syscalls, before.broker_syscalls),
        }
    }
}

/// What a run cost, on average.
struct PerRun {
    workers_ms: f64,
    loom_ms: f64,
    broker_ms: f64,
    loom_syscalls: f64,
    broker_syscalls: f64,
}

impl PerRun {
    fn total_ms(&self) -> f64 {
        self.workers_ms + self.loom_ms + self.broker_ms
    }
}

impl std::fmt::Display for PerRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU per run: {:.3} ms = workers {:.3} + loom {:.3} + nats-server {:.3}; read and write calls per run: loom {:.1}, nats-server {:.1}",
            self.total_ms(),
            self.workers_ms,
            self.loom_ms,
            self.broker_ms,
            self.loom_syscalls,
            self.broker_syscalls
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() as f64 - 1.0) * p).round() as usize).min(sorted.len() - 1)]
}

/// Spawns and reaps `/bin/true` with piped output, `concurrency` at a time, for `duration`.
async fn spawn_ceiling(concurrency: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let output = tokio::process::Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .output()
                    .await;
                if output.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

fn config(dir: &std::path::Path, url: &str, agent_id: &str) -> Config {
    let file = dir.join(format!("{agent_id}.toml"));
    std::fs::write(
        &file,
        format!(
            "data_dir = \"data-{agent_id}\"\n[agent]\nid = \"{agent_id}\"\nconcurrency = {}\n[nats]\nurl = \"{url}\"\n[workers.true]\ncommand = [\"/bin/true\"]\noverlap = \"allow\"\nconcurrency = 256\nretries = 0\n",
            env_number("AGENT_CONCURRENCY", CONCURRENCY as u64)
        ),
    )
    .expect("write config");
    loom_config::Loader::new(Some(file))
        .with_env(Vec::<(String, String)>::new())
        .load()
        .expect("config")
}

struct Roles {
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _senders: Vec<tokio::sync::watch::Sender<Arc<Config>>>,
}

impl Roles {
    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn start_roles(
    broker: &Broker,
    dir: &std::path::Path,
    url: &str,
    agents: usize,
    validator: bool,
) -> Roles {
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    for n in 0..agents {
        let (tx, rx) =
            tokio::sync::watch::channel(Arc::new(config(dir, url, &format!("agent-{n}"))));
        senders.push(tx);
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            loom_agent::run(broker, rx, loom_agent::AgentOptions::default(), shutdown).await;
        }));
    }
    if validator {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(config(dir, url, "validator")));
        senders.push(tx);
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let _ = loom_validator::run(broker, rx, shutdown).await;
        }));
    }
    // Let the pull loops start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Roles {
        shutdown,
        tasks,
        _senders: senders,
    }
}

fn command(run_id: Uuid) -> Vec<u8> {
    encode(&RunCommand::new(
        run_id,
        "true",
        Utc::now(),
        Trigger::Manual,
    ))
    .expect("encode")
}

async fn latency(broker: &Broker, rate: u64, seconds: u64) {
    let mut results = broker
        .client()
        .subscribe("loom.result.true")
        .await
        .expect("subscribe");
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let begin = tokio::time::Instant::now();
    let mut published = std::collections::HashMap::new();
    for n in 0..total {
        tokio::time::sleep_until(begin + interval * n as u32).await;
        let run_id = Uuid::now_v7();
        let body = command(run_id);
        let sent_at = Utc::now();
        // The command's scheduled_at is its publish instant, taken just above.
        broker
            .start_publish("loom.run.true", None, body)
            .await
            .expect("publish");
        published.insert(run_id, sent_at);
    }
    let mut lags = Vec::with_capacity(total as usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (lags.len() as u64) < total {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, results.next()).await else {
            break;
        };
        if let Ok(result) = decode::<RunResult>("run result", &message.payload)
            && let Some(sent) = published.get(&result.run_id)
        {
            lags.push((result.started_at - *sent).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);
    println!("start latency: {rate} runs/s for {seconds} s, one agent (concurrency {CONCURRENCY})");
    println!("  runs started           {} of {total}", lags.len());
    println!(
        "  start - publish (ms)   p50 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );
}

async fn throughput(broker: &Broker, runs: u64, subject: &str) -> f64 {
    let mut verdicts = broker
        .client()
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    let begin = Instant::now();
    // Acks are awaited a batch at a time: the broker's connection holds at
    // most 5,000 unawaited acks and blocks the next publish beyond that.
    let mut left = runs;
    while left > 0 {
        let batch = left.min(1_000);
        left -= batch;
        let mut pending = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            pending.push(
                broker
                    .start_publish("loom.run.true", None, command(Uuid::now_v7()))
                    .await
                    .expect("publish"),
            );
        }
        for ack in pending {
            ack.stored().await.expect("stored");
        }
    }
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen < runs {
        match tokio::time::timeout_at(deadline, verdicts.next()).await {
            Ok(Some(_)) => seen += 1,
            _ => break,
        }
    }
    let elapsed = begin.elapsed().as_secs_f64();
    if seen < runs {
        println!("  only {seen} of {runs} verdicts within 120 s");
    }
    seen as f64 / elapsed
}

/// Handles each message of durable `durable` on `stream` with `handle`,
/// `in_flight` at once, until `stop`.
async fn consume_each<H, F>(
    broker: Broker,
    stream: String,
    durable: String,
    in_flight: usize,
    handle: H,
    stop: CancellationToken,
) where
    H: Fn(async_nats::jetstream::Message) -> F,
    F: std::future::Future<Output = ()>,
{
    let consumer = broker.durable(&stream, &durable).await.expect("consumer");
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(in_flight)
        .messages()
        .await
        .expect("pull");
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(()) = running.next() => {}
            next = messages.next(), if running.len() < in_flight => match next {
                Some(Ok(message)) => running.push(handle(message)),
                _ => return,
            },
        }
    }
}

/// The broker floor: the JetStream traffic of a run to its verdict, and
/// nothing else. Tasks in this process stand in for an agent (pull the run,
/// hold it for `hold`, publish its result with its message id and wait
/// until it is stored, acknowledge the run with confirmation) and a
/// validator (acknowledge the run command; for the result: write the run's
/// state once, publish the verdict with its message id, acknowledge). No
/// process is started and no output is checked.
async fn broker_floor(mesh: &Mesh, runs: u64, hold: Duration) -> (f64, PerRun) {
    let broker = &mesh.broker;
    let names = broker.names().clone();
    let subjects = broker.subjects().clone();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    // The agent.
    {
        let (b, subjects) = (broker.clone(), subjects.clone());
        tasks.push(tokio::spawn(consume_each(
            broker.clone(),
            names.runs_stream(),
            names.run_consumer("true"),
            CONCURRENCY,
            move |message| {
                let (broker, subjects) = (b.clone(), subjects.clone());
                async move {
                    let command: RunCommand = decode("run", &message.payload).expect("command");
                    tokio::time::sleep(hold).await; // as long as a run takes a slot at the ceiling
                    let now = Utc::now();
                    let result = RunResult {
                        v: loom_protocol::WIRE_VERSION,
                        run_id: command.run_id,
                        worker: command.worker.clone(),
                        attempt: 1,
                        agent_id: "floor".into(),
                        started_at: now,
                        finished_at: now,
                        outcome: loom_protocol::Outcome::Succeeded,
                        exit_code: Some(0),
                        stdout_tail: String::new(),
                        stderr_tail: String::new(),
                        stdout_bytes: 0,
                        stderr_bytes: 0,
                        cpu_ms: 0,
                        max_rss_kb: 0,
                        enforcement_digest: None,
                        cost: Default::default(),
                        last_attempt: true,
                    };
                    broker
                        .publish(
                            &subjects.result("true"),
                            Some(&format!("result:{}:1", command.run_id)),
                            encode(&result).expect("encode"),
                        )
                        .await
                        .expect("store the result");
                    loom_broker::acknowledge_confirmed(&message, AckKind::Ack)
                        .await
                        .expect("ack");
                }
            },
            stop.clone(),
        )));
    }
    // The validator: run commands, then results.
    tasks.push(tokio::spawn(consume_each(
        broker.clone(),
        names.runs_stream(),
        names.validator_consumer(),
        64,
        |message| async move {
            let _: RunCommand = decode("run", &message.payload).expect("command");
            let _ = message.ack_with(AckKind::Ack).await;
        },
        stop.clone(),
    )));
    {
        let runs_bucket = broker.bucket(&names.runs_bucket()).await.expect("bucket");
        let (b, subjects) = (broker.clone(), subjects.clone());
        tasks.push(tokio::spawn(consume_each(
            broker.clone(),
            names.results_stream(),
            names.validator_consumer(),
            64,
            move |message| {
                let (broker, subjects, runs_bucket) =
                    (b.clone(), subjects.clone(), runs_bucket.clone());
                async move {
                    let result: RunResult = decode("result", &message.payload).expect("result");
                    let state = serde_json::json!({
                        "run_id": result.run_id,
                        "worker": result.worker,
                        "status": "done",
                        "verdict": "valid",
                        "attempts": [{ "attempt": 1, "agent_id": result.agent_id, "exit_code": 0 }],
                    });
                    runs_bucket
                        .create(
                            &loom_protocol::state::run_key("true", result.run_id),
                            &state,
                        )
                        .await
                        .expect("write the state");
                    let verdict = loom_protocol::Verdict {
                        v: loom_protocol::WIRE_VERSION,
                        run_id: result.run_id,
                        worker: result.worker.clone(),
                        verdict: loom_protocol::VerdictKind::Valid,
                        reason: "floor".into(),
                        attempts: 1,
                        at: Utc::now(),
                    };
                    broker
                        .publish(
                            &subjects.verdict("true"),
                            Some(&format!("verdict:{}", result.run_id)),
                            encode(&verdict).expect("encode"),
                        )
                        .await
                        .expect("store the verdict");
                    let _ = message.ack_with(AckKind::Ack).await;
                }
            },
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = CpuSeconds::now(mesh.server.pid());
    let rate = throughput(broker, runs, "loom.verdict.true").await;
    let cpu = CpuSeconds::now(mesh.server.pid()).per_run_since(before, runs);
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    (rate, cpu)
}

/// A nats-server of its own, with Loom's streams, buckets and consumers, and
/// a broker connected to it. Each phase gets one, so that no phase sees the
/// messages of another (the validator's consumer starts from the first
/// message of its streams).
struct Mesh {
    server: NatsServer,
    dir: tempfile::TempDir,
    broker: Broker,
}

async fn fresh_mesh() -> Mesh {
    let server = NatsServer::start();
    // `DATA_DIR` puts the agents' data directory (and so their run
    // directories) under another parent, to compare filesystems.
    let dir = match std::env::var_os("DATA_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let base = config(dir.path(), &server.url(), "init");
    let broker = loom_broker::connect(&base.nats, &[server.url()], "loom", "bench")
        .await
        .expect("connect");
    broker
        .apply_topology(&base.topology(), false)
        .await
        .expect("topology");
    Mesh {
        server,
        dir,
        broker,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rate = env_number("RATE", 200);
    let seconds = env_number("SECONDS", 10);
    let runs = env_number("RUNS", 3_000);
    let phases =
        std::env::var("PHASES").unwrap_or_else(|_| "latency,floor,results,verdicts".to_owned());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    runtime.block_on(async {
        // The machine's best: the higher of two concurrencies.
        let at_8 = spawn_ceiling(8, Duration::from_secs(4)).await;
        let before = CpuSeconds::now(None);
        let at_32 = spawn_ceiling(32, Duration::from_secs(4)).await;
        let ceiling_cpu = CpuSeconds::now(None).per_run_since(before, (at_32 * 4.0) as u64);
        let ceiling = at_8.max(at_32);
        println!("spawn ceiling: tokio spawning and reaping /bin/true with captured output");
        println!("  {at_8:.0} runs/s 8 at a time, {at_32:.0} runs/s 32 at a time; ceiling {ceiling:.0} runs/s");
        println!("  {} (32 at a time; \"loom\" is the spawning process)", ceiling_cpu);

        // The broker's share that no code of Loom's can save, with runs
        // flowing as they do at the ceiling (a message costs more CPU when
        // fewer share a read or a write, so an unpaced floor would be too
        // low): with it, the best share of the spawn ceiling any run to its
        // verdict can reach on this machine, if the two only add up.
        let mut best_to_verdict = None;
        if phase("floor") {
            let mesh = fresh_mesh().await;
            let hold = Duration::from_secs_f64(CONCURRENCY as f64 / at_32);
            let (rate, cpu) = broker_floor(&mesh, runs, hold).await;
            let spawning = ceiling_cpu.total_ms();
            let floor = cpu.total_ms();
            let best = spawning / (spawning + floor);
            best_to_verdict = Some(best);
            println!(
                "broker floor: {runs} runs published at once to verdict through the same JetStream traffic, each holding one of {CONCURRENCY} slots {:.1} ms as at the ceiling, no process, no checks: {rate:.0} runs/s",
                hold.as_secs_f64() * 1000.0
            );
            println!("  {cpu}");
            println!(
                "  spawning {spawning:.3} ms + floor {floor:.3} ms per run: at best {:.0}% of the spawn ceiling to verdict",
                best * 100.0
            );
        }

        // One agent, idle, then at a steady rate (no validator: latency only).
        if phase("latency") {
        let mesh = fresh_mesh().await;
        let (rss_start, _) = rss_kib();
        let roles = start_roles(&mesh.broker, mesh.dir.path(), &mesh.server.url(), 1, false).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss_idle, _) = rss_kib();
        println!("memory: process RSS {} MiB before the agent, {} MiB with one agent idle", rss_start / 1024, rss_idle / 1024);
        latency(&mesh.broker, rate, seconds).await;
        roles.stop().await;
        drop(mesh);
        }

        for (agents, validator) in [(1usize, false), (2, false), (1, true), (2, true)] {
            if !phase(if validator { "verdicts" } else { "results" }) {
                continue;
            }
            let mesh = fresh_mesh().await;
            let roles =
                start_roles(&mesh.broker, mesh.dir.path(), &mesh.server.url(), agents, validator).await;
            let (subject, reached, with) = if validator {
                ("loom.verdict.true", "verdict", "and a validator")
            } else {
                ("loom.result.true", "stored result", "no validator")
            };
            let before = CpuSeconds::now(mesh.server.pid());
            let rate = throughput(&mesh.broker, runs, subject).await;
            let cpu = CpuSeconds::now(mesh.server.pid()).per_run_since(before, runs);
            let of_best = match best_to_verdict {
                Some(best) if validator => {
                    format!("; {:.0}% of that best", rate / (ceiling * best) * 100.0)
                }
                _ => String::new(),
            };
            println!(
                "throughput: {runs} runs published at once, {agents} agent(s) {with}: {rate:.0} runs/s to {reached} ({:.0}% of the spawn ceiling{of_best})",
                rate / ceiling * 100.0
            );
            println!("  {cpu}");
            roles.stop().await;
        }
        let (rss, peak) = rss_kib();
        println!("memory: process RSS {} MiB after the load, peak {} MiB", rss / 1024, peak / 1024);
    });
}
