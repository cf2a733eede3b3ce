//! Spawn overhead of the executor: runs per second of `/bin/true` spawned
//! raw with `tokio::process::Command` (stdout and stderr piped), against
//! `Executor::run` of a `/bin/true` worker, at the same concurrency
//! (2 × cores), about three seconds each. Prints both rates and their ratio.
//!
//! Run with `cargo bench -p loom-workers`; figures, never assertions.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_config::{Backoff, CatchUp, OutputContract, OutputFormat, Overlap, Worker};
use loom_protocol::{Outcome, RunCommand, Trigger};
use loom_workers::{Executor, ExecutorSettings, Invocation};
use tokio_util::sync::CancellationToken;

const MEASURE_FOR: Duration = Duration::from_secs(3);

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = 2 * cores;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot build a tokio runtime: {error}");
            std::process::exit(1);
        }
    };
    let run_root = std::env::temp_dir().join(format!("loom-bench-runs-{}", std::process::id()));
    let executor = Arc::new(Executor::new(ExecutorSettings {
        run_root: run_root.clone(),
        ..ExecutorSettings::default()
    }));
    let worker = Arc::new(true_worker());

    let raw = runtime.block_on(measure(concurrency, || async {
        let output = tokio::process::Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await;
        matches!(output, Ok(output) if output.status.success())
    }));
    let executed = runtime.block_on(measure(concurrency, move || {
        let executor = executor.clone();
        let worker = worker.clone();
        async move {
            let command =
                RunCommand::new(uuid::Uuid::now_v7(), "bench", Utc::now(), Trigger::Manual);
            let secrets = BTreeMap::new();
            let invocation = Invocation {
                command: &command,
                worker: &worker,
                attempt: 1,
                enforcement: None,
                secrets: &secrets,
            };
            executor
                .run(invocation, CancellationToken::new())
                .await
                .outcome
                == Outcome::Succeeded
        }
    }));
    let _ = std::fs::remove_dir_all(&run_root);

    println!("spawn benchmark: {cores} cores, {concurrency} runs at a time, {MEASURE_FOR:?} each");
    println!(
        "  (a) tokio::process::Command /bin/true: {:>8.1} runs/s ({} runs, {} failed)",
        raw.rate(),
        raw.runs,
        raw.failures
    );
    println!(
        "  (b) Executor::run /bin/true worker:     {:>8.1} runs/s ({} runs, {} failed)",
        executed.rate(),
        executed.runs,
        executed.failures
    );
    if raw.rate() > 0.0 {
        println!("  ratio b/a: {:.2}", executed.rate() / raw.rate());
    }
}

/// Runs completed in a measurement.
struct Measurement {
    runs: u64,
    failures: u64,
    elapsed: Duration,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.runs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Keeps `concurrency` calls of `run_once` going for [`MEASURE_FOR`].
async fn measure<F, Fut>(concurrency: usize, run_once: F) -> Measurement
where
    F: Fn() -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let runs = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + MEASURE_FOR;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let run_once = run_once.clone();
        let runs = runs.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if run_once().await {
                    runs.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Measurement {
        runs: runs.load(Ordering::Relaxed),
        failures: failures.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

fn true_worker() -> Worker {
    Worker {
        name: "bench".into(),
        source: std::path::Path::new("workers.toml").into(),
        description: "runs /bin/true".to_owned(),
        schedule: None,
        timezone: chrono_tz::UTC,
        command: vec!["/bin/true".to_owned()],
        enabled: true,
        timeout: Duration::from_secs(60),
        retries: 0,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
            factor: 1.0,
            jitter: 0.0,
        },
        overlap: Overlap::default(),
        concurrency: NonZeroU32::MIN,
        catch_up: CatchUp::default(),
        starting_deadline: Duration::from_secs(60),
        labels: Vec::new(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        enforcement: None,
        alert_after: NonZeroU32::MIN,
        output: OutputContract {
            format: OutputFormat::Text,
            max_bytes: 1 << 20,
            schema: None,
        },
    }
}
