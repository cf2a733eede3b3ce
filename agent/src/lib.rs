//! The agent role: pulls the runs of the workers it serves and executes them.
//!
//! It owns the pull loop over each worker's durable consumer (`pull`), one
//! delivery from pull to acknowledgement (`delivery`): progress acks
//! (heartbeats) while a worker runs, results stored before acks, retries by
//! NAK-with-delay ([`decide`]); cancellation (`cancel`), enforcement bundles
//! (`bundles`), its presence in the agents bucket (`presence`) and the
//! graceful drain on shutdown. How a process runs is the
//! `workers` crate's business; what a run's verdict is, the validator's: the
//! agent decides neither.

mod bundles;
mod cancel;
pub mod decide;
mod delivery;
mod presence;
mod pull;
mod serve;
mod slots;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use loom_broker::Broker;
use loom_config::Config;
use loom_protocol::metrics;
use loom_workers::{Executor, ExecutorSettings};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cancel::StopReason;
pub use serve::served_workers;

/// How an agent runs, beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Serve every worker whatever its labels (`loom up`: one machine does everything).
    pub all_labels: bool,
}

/// This agent's id: `agent.id`, or host name and process id.
pub fn agent_id(config: &Config) -> String {
    config.agent.id.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

/// Runs an agent until `shutdown`, then drains: stops pulling, lets running
/// workers finish within `agent.drain_timeout`, stops the rest and hands
/// their runs back for immediate redelivery.
pub async fn run(
    broker: Broker,
    mut config: watch::Receiver<Arc<Config>>,
    options: AgentOptions,
    shutdown: CancellationToken,
) {
    let initial = config.borrow_and_update().clone();
    let agent_id = agent_id(&initial);
    let executor = Executor::new(ExecutorSettings {
        run_root: initial.data_dir.join("runs"),
        spare_run_dirs: initial.agent.concurrency.get() as usize,
        ..ExecutorSettings::default()
    });
    let cancels = cancel::Cancels::default();
    let shared = Arc::new(delivery::Shared {
        broker: broker.clone(),
        config: config.clone(),
        executor,
        cancels: cancels.clone(),
        bundles: bundles::Bundles::new(broker.clone(), initial.data_dir.join("enforcement")),
        agent_id: agent_id.clone(),
        secrets: std::env::vars().collect::<BTreeMap<_, _>>(),
    });
    // Register the in-flight gauge now, so an idle agent exports 0 rather
    // than nothing until its first run.
    std::sync::LazyLock::force(&metrics::AGENT_INFLIGHT);
    let concurrency = initial.agent.concurrency.get() as usize;
    let slots = slots::Slots::new(concurrency);
    let runs = TaskTracker::new();
    let loops = TaskTracker::new();
    let intake = CancellationToken::new();
    loops.spawn(cancel::follow(
        broker.clone(),
        cancels.clone(),
        intake.clone(),
    ));

    let (served, served_changes) = watch::channel(Vec::new());
    let presence_stop = CancellationToken::new();
    let presence = tokio::spawn(presence::keep(
        broker.clone(),
        presence::Identity {
            id: agent_id.clone(),
            labels: initial.agent.labels.clone(),
            concurrency: initial.agent.concurrency.get(),
        },
        cancels.clone(),
        served_changes,
        presence_stop.clone(),
    ));

    let mut serving: HashMap<String, CancellationToken> = HashMap::new();
    let update = |config: &Config, serving: &mut HashMap<String, CancellationToken>| {
        let wanted = served_workers(config, options.all_labels);
        let mut names = wanted.to_vec();
        names.sort();
        served.send_replace(names);
        serving.retain(|worker, stop| {
            let keep = wanted.contains(worker);
            if !keep {
                tracing::info!(%worker, "no longer serving worker");
                stop.cancel();
                metrics::AGENT_SERVES.remove(worker);
            }
            keep
        });
        for worker in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = serving.entry(worker.clone()) {
                let stop = intake.child_token();
                metrics::AGENT_SERVES.set(&worker, 1.0);
                loops.spawn(pull::pull_loop(
                    shared.clone(),
                    worker,
                    slots.clone(),
                    runs.clone(),
                    stop.clone(),
                ));
                slot.insert(stop);
            }
        }
    };
    update(&initial, &mut serving);
    tracing::info!(%agent_id, concurrency, workers = serving.len(), "agent started");

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = config.changed() => {
                if changed.is_err() { break; }
                let current = config.borrow_and_update().clone();
                update(&current, &mut serving);
            }
        }
    }

    // Drain: no new runs; running ones get drain_timeout; the rest go back.
    metrics::AGENT_SERVES.reset();
    let drain_timeout = config.borrow().agent.drain_timeout;
    tracing::info!(running = cancels.running(), ?drain_timeout, "draining");
    intake.cancel();
    runs.close();
    if tokio::time::timeout(drain_timeout, runs.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = cancels.running(),
            "drain timeout: stopping the runs still going and handing them back"
        );
        cancels.stop_all(StopReason::Drain);
        let _ = tokio::time::timeout(Duration::from_secs(30), runs.wait()).await;
    }
    loops.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), loops.wait()).await;
    presence_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), presence).await;
    tracing::info!("agent stopped");
}
