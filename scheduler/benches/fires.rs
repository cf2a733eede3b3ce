//! Scheduler benchmark: prints figures, asserts nothing.
//!
//! 0. The broker's floor: 20 bursts of `WORKERS` run commands, one a second,
//!    published straight into the runs stream; the time to store each.
//! 1. Fire precision: `WORKERS` workers (default 10,000) firing every second
//!    for `SECONDS` (default 60); for every fire, the time JetStream stored
//!    it minus its instant: p50, p99, max, and fires per second.
//! 2. Footprint: a scheduler holding `SCHEDULES` schedules (default 100,000)
//!    that do not fire during the measurement (idle), then all firing in the
//!    same second (burst): CPU time per second of wall time, and RSS.
//!
//! The scheduler runs in this process (built with the bench's release
//! profile) against a real nats-server. Run with
//! `cargo bench -p loom-scheduler --bench fires`; set `WORKERS`, `SECONDS`,
//! `SCHEDULES` to change the sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use loom_broker::ReadFrom;
use loom_protocol::codec::{RunDefaults, decode_run_command};
use loom_protocol::topology::Topology;
use loom_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU time of this process, and its RSS and peak RSS in KiB.
fn process_usage() -> (Duration, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the ")": state is field 0, utime field 11, stime field 12 (clock ticks of 1/100 s).
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

fn registry(workers: u64, schedule: &str) -> String {
    let mut text = String::with_capacity(workers as usize * 96);
    text.push_str("[scheduler]\nlease_ttl = \"5s\"\n");
    for i in 0..workers {
        text.push_str(&format!("[workers.w{i:06}]\nschedule = \"{schedule}\"\ncommand = [\"true\"]\noverlap = \"allow\"\n"));
    }
    text
}

async fn start(
    server: &NatsServer,
    dir: &std::path::Path,
    config_text: &str,
) -> (
    loom_broker::Broker,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let file = dir.join("loom.toml");
    std::fs::write(
        &file,
        format!("{config_text}\n[nats]\nurl = \"{}\"\n", server.url()),
    )
    .expect("write config");
    let config = loom_config::Loader::new(Some(file))
        .with_env(Vec::<(String, String)>::new())
        .load()
        .expect("config");
    // As the loom binary does after loading a configuration.
    release_free_heap();
    let broker = loom_broker::connect(&config.nats, &[server.url()], "loom", "bench")
        .await
        .expect("connect");
    // The streams and buckets; not one consumer per worker (the consumers'
    // cost is the broker's, not the scheduler's).
    let topology = Topology::new(&config.mesh_settings(), &[]);
    broker
        .apply_topology(&topology, false)
        .await
        .expect("topology");
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(config));
    let shutdown = CancellationToken::new();
    let task = {
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _keep_sender = _tx;
            loom_scheduler::run(broker, rx, shutdown)
                .await
                .expect("scheduler");
        })
    };
    (broker, shutdown, task)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// JetStream's own time for a burst of fires on this machine: `bursts`
/// bursts, one a second, of `count` run-sized messages with message ids,
/// each published as fast as one connection can (all sent, then all acks
/// awaited) into the runs stream. The stream and its duplicate window grow
/// as they do under the precision phase, and the time to store a burst with
/// them, so the floor is measured over a series. Returns each burst's time
/// to store its last message.
async fn raw_bursts(count: u64, bursts: u64) -> Vec<Duration> {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("loom.toml");
    std::fs::write(&file, format!("[nats]\nurl = \"{}\"\n", server.url())).expect("write config");
    let config = loom_config::Loader::new(Some(file))
        .with_env(Vec::<(String, String)>::new())
        .load()
        .expect("config");
    let broker = loom_broker::connect(&config.nats, &[server.url()], "loom", "bench")
        .await
        .expect("connect");
    broker
        .apply_topology(&Topology::new(&config.mesh_settings(), &[]), false)
        .await
        .expect("topology");
    let broker = &broker;
    let first = Utc::now();
    let mut times = Vec::new();
    for burst in 0..bursts {
        let instant = first + chrono::Duration::seconds(burst as i64);
        let payloads: Vec<(String, String, Vec<u8>)> = (0..count)
            .map(|i| {
                let worker = format!("w{i:06}");
                let command = loom_protocol::RunCommand::new(
                    loom_protocol::identity::fire_run_id(&worker, instant),
                    &worker,
                    instant,
                    loom_protocol::Trigger::Schedule,
                );
                let id = loom_protocol::identity::fire_msg_id(&worker, instant);
                (
                    format!("loom.run.{worker}"),
                    id,
                    loom_protocol::codec::encode(&command).expect("encode"),
                )
            })
            .collect();
        let begin = Instant::now();
        // At most 4,096 in flight, as the scheduler's dispatcher does (the
        // client holds a permit per unacknowledged publish, 5,000 by default).
        futures::stream::iter(payloads)
            .map(|(subject, id, payload)| async move {
                broker
                    .publish(&subject, Some(&id), payload)
                    .await
                    .expect("stored");
            })
            .buffer_unordered(4096)
            .collect::<Vec<()>>()
            .await;
        times.push(begin.elapsed());
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(begin.elapsed())).await;
    }
    times
}

async fn precision(workers: u64, seconds: u64) {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, shutdown, task) =
        start(&server, dir.path(), &registry(workers, "* * * * * *")).await;
    // Let the leader settle (first-sight fire states are written), then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = Utc::now();
    let (cpu_before, _, _) = process_usage();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu_after, rss, hwm) = process_usage();
    let elapsed = wall.elapsed();
    shutdown.cancel();
    let _ = task.await;

    let names = broker.names().clone();
    let messages = broker
        .read_stream(&names.runs_stream(), "loom.run.*", ReadFrom::All)
        .await
        .expect("read the runs");
    let to = from + chrono::Duration::seconds(seconds as i64);
    let mut delays: Vec<f64> = messages
        .iter()
        .filter_map(|m| {
            let worker = m.subject.strip_prefix("loom.run.")?;
            let defaults = RunDefaults::for_message(&names.runs_stream(), m.sequence, m.stored_at);
            let command = decode_run_command(worker, &m.payload, defaults).ok()?;
            let in_window = command.scheduled_at >= from && command.scheduled_at < to;
            in_window.then(|| {
                (m.stored_at - command.scheduled_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0
            })
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let expected = workers * seconds;
    println!("fire precision: {workers} workers firing every second, {seconds} s measured");
    println!(
        "  fires stored           {} of {expected} expected ({:.0} fires/s)",
        delays.len(),
        delays.len() as f64 / seconds as f64
    );
    println!(
        "  stored - instant (ms)  p50 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  scheduler process      {:.1}% of a core, RSS {} MiB (peak {} MiB)",
        (cpu_after - cpu_before).as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        rss / 1024,
        hwm / 1024
    );
}

async fn idle(schedules: u64) {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, rss_before, _) = process_usage();
    let loading = Instant::now();
    // A yearly schedule: nothing fires during the measurement.
    let text = registry(schedules, "0 0 1 1 *");
    let (broker, shutdown, task) = start(&server, dir.path(), &text).await;
    drop(text);
    let started = loading.elapsed();
    let (_, rss_loaded, _) = process_usage();
    // Settle: the new leader records every worker's first sight. The loom
    // binary releases free memory once a minute; here, once settled.
    tokio::time::sleep(Duration::from_secs(15)).await;
    release_free_heap();
    let (cpu_before, _, _) = process_usage();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (cpu_after, rss, hwm) = process_usage();
    println!("footprint: {schedules} schedules, idle (a process of its own)");
    println!(
        "  registry loaded and scheduler started in {:.1} s",
        started.as_secs_f64()
    );
    println!(
        "  RSS {} MiB before loading, {} MiB loaded, {} MiB idle (peak {} MiB)",
        rss_before / 1024,
        rss_loaded / 1024,
        rss / 1024,
        hwm / 1024
    );
    println!(
        "  CPU {:.2}% of a core over {:.0} s",
        (cpu_after - cpu_before).as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0,
        wall.elapsed().as_secs_f64()
    );

    shutdown.cancel();
    let _ = task.await;
    drop(broker);
}

async fn burst(schedules: u64) {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Every schedule fires at second 0 of every minute.
    let (broker, shutdown, task) =
        start(&server, dir.path(), &registry(schedules, "0 * * * * *")).await;
    let now = Utc::now();
    // The whole minute: a fraction of a second left in would put the count
    // of what is stored before the burst inside the burst.
    let next_minute = chrono::DurationRound::duration_trunc(now, chrono::Duration::minutes(1))
        .expect("a minute divides the time")
        + chrono::Duration::minutes(1);
    if (next_minute - now).num_seconds() < 20 {
        // Too close to settle: take the minute after.
        tokio::time::sleep(Duration::from_secs(25)).await;
        return Box::pin(burst_at(
            broker,
            shutdown,
            task,
            next_minute + chrono::Duration::seconds(60),
            schedules,
        ))
        .await;
    }
    burst_at(broker, shutdown, task, next_minute, schedules).await;
}

async fn burst_at(
    broker: loom_broker::Broker,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    at: DateTime<Utc>,
    schedules: u64,
) {
    let stored_now = || async {
        broker
            .jetstream()
            .get_stream(broker.names().runs_stream())
            .await
            .map(|s| s.cached_info().state.messages)
            .unwrap_or(0)
    };
    // Count only this burst's fires: what is stored just before it is the base.
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait.saturating_sub(Duration::from_millis(300))).await;
    let base = stored_now().await;
    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
    let (cpu_before, _, _) = process_usage();
    let wall = Instant::now();
    let mut done_at = None;
    while wall.elapsed() < Duration::from_secs(45) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stored_now().await >= base + schedules {
            done_at = Some(wall.elapsed());
            break;
        }
    }
    let (cpu_after, rss, hwm) = process_usage();
    println!("footprint: {schedules} schedules firing in the same second (a process of its own)");
    match done_at {
        Some(took) => println!(
            "  all {schedules} fires of {} stored within {:.1} s; {:.0}% of a core meanwhile; RSS {} MiB (peak {} MiB)",
            next_minute_instant(at),
            took.as_secs_f64(),
            (cpu_after - cpu_before).as_secs_f64() / took.as_secs_f64().max(0.001) * 100.0,
            rss / 1024,
            hwm / 1024
        ),
        None => println!(
            "  not all {schedules} fires stored within 45 s; RSS {} MiB (peak {} MiB)",
            rss / 1024,
            hwm / 1024
        ),
    }
    shutdown.cancel();
    let _ = task.await;
}

fn next_minute_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Asks glibc to return free heap pages to the system, so that RSS shows
/// what is live rather than what the allocator kept after loading.
#[allow(unsafe_code, reason = "a benchmark's diagnostic call into glibc")]
fn release_free_heap() {
    // SAFETY: malloc_trim only releases free memory of this process's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs one phase in a fresh process, so that each phase's memory figures
/// are its own (a process keeps the heap it once grew).
fn run_phase(phase: &str) {
    let exe = std::env::current_exe().expect("this benchmark's path");
    let status = std::process::Command::new(exe)
        .env("LOOM_BENCH_PHASE", phase)
        .status()
        .expect("run a phase");
    if !status.success() {
        println!("phase {phase} failed: {status}");
    }
}

fn main() {
    let workers = env_number("WORKERS", 10_000);
    let seconds = env_number("SECONDS", 60);
    let schedules = env_number("SCHEDULES", 100_000);
    let Ok(phase) = std::env::var("LOOM_BENCH_PHASE") else {
        for phase in ["ceiling", "precision", "idle", "burst"] {
            run_phase(phase);
        }
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match phase.as_str() {
            "ceiling" => {
                let bursts = 20;
                let times = raw_bursts(workers, bursts).await;
                let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
                let first = ms[0];
                ms.sort_by(f64::total_cmp);
                println!(
                    "JetStream floor: {bursts} bursts of {workers} run commands with message ids, one a second, each published at once on one connection"
                );
                println!(
                    "  time to store a whole burst (ms)  first {first:.0}  median {:.0}  max {:.0}",
                    percentile(&ms, 0.5),
                    ms.last().copied().unwrap_or(f64::NAN)
                );
            }
            "precision" => precision(workers, seconds).await,
            "config" => {
                let dir = tempfile::tempdir().expect("tempdir");
                let file = dir.path().join("loom.toml");
                std::fs::write(&file, registry(schedules, "0 0 1 1 *")).expect("write");
                let (_, before, _) = process_usage();
                let config = loom_config::Loader::new(Some(file)).with_env(Vec::<(String, String)>::new()).load().expect("config");
                let (_, loaded, peak) = process_usage();
                release_free_heap();
                let (_, live, _) = process_usage();
                drop(config);
                release_free_heap();
                let (_, after, _) = process_usage();
                println!("configuration of {schedules} workers: RSS {} MiB before, {} MiB loaded (peak {}), {} MiB live, {} MiB after dropping it", before / 1024, loaded / 1024, peak / 1024, live / 1024, after / 1024);
            }
            "idle" => idle(schedules).await,
            _ => burst(schedules).await,
        }
    });
}
