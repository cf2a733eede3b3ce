//! The validator role: gives every run a verdict.
//!
//! It consumes every run command (each run enters the books, or is rejected
//! with a dead letter when malformed or unknown), every result (attempts are
//! recorded and the last one judged against the worker's output contract,
//! [`judge`]), and JetStream's max-deliveries advisories (a run whose agents
//! kept dying). Its watchdog turns silence into `lost` by each run's
//! deadline. It keeps run state and worker health in KV ([`books`]) and
//! answers run history and dead-letter queries ([`history`]) and the mesh
//! overview of `loom status` and the dashboard ([`status`]). It never
//! executes a worker.
//!
//! Any number of validators may run side by side: they share durable
//! consumers, and a run is concluded once (compare-and-set on its state,
//! verdicts and dead letters published with ids derived from the run).

pub mod books;
mod consume;
pub mod health;
pub mod history;
mod intake;
pub mod judge;
mod recent;
pub mod status;
mod watchdog;

use std::sync::Arc;

use loom_broker::{Broker, StateError};
use loom_config::Config;
use loom_protocol::metrics;
use loom_protocol::state::WorkerHealth;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::books::Books;

/// Why the validator could not start.
#[derive(Debug, thiserror::Error)]
#[error("the validator cannot open its state: {0}")]
pub struct ValidatorError(#[from] StateError);

/// Runs a validator until `shutdown`.
pub async fn run(
    broker: Broker,
    config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), ValidatorError> {
    let names = broker.names().clone();
    let (health, health_events) = health::HealthQueue::new();
    let books = Books {
        runs: broker.bucket(&names.runs_bucket()).await?,
        workers: broker.bucket(&names.workers_bucket()).await?,
        broker: broker.clone(),
        config,
        health,
        recent: Arc::new(recent::RecentStates::new(recent::CAPACITY)),
    };
    let health_writer = tokio::spawn(health::write_health(books.workers.clone(), health_events));
    // Export every worker's last success at once, not only after its next run.
    if let Ok(healths) = books
        .workers
        .snapshot::<WorkerHealth>(&broker, "health.*")
        .await
    {
        for (key, health) in healths {
            if let (Some(worker), Some(at)) = (key.strip_prefix("health."), health.last_success_at)
            {
                metrics::WORKER_LAST_SUCCESS.set(worker, at.timestamp() as f64);
            }
        }
    }

    let tasks = TaskTracker::new();
    let consumer = names.validator_consumer();
    {
        let books = books.clone();
        tasks.spawn(consume::consume(
            broker.clone(),
            names.runs_stream(),
            consumer.clone(),
            move |message| {
                let books = books.clone();
                async move {
                    let outcome = match consume::stored(&message) {
                        Some(stored) => intake::run_command(&books, stored).await,
                        None => Ok(()),
                    };
                    (message, outcome)
                }
            },
            shutdown.clone(),
        ));
    }
    {
        let books = books.clone();
        tasks.spawn(consume::consume(
            broker.clone(),
            names.results_stream(),
            consumer.clone(),
            move |message| {
                let books = books.clone();
                async move {
                    let outcome = match consume::stored(&message) {
                        Some(stored) => intake::run_result(&books, stored).await,
                        None => Ok(()),
                    };
                    (message, outcome)
                }
            },
            shutdown.clone(),
        ));
    }
    {
        let books = books.clone();
        tasks.spawn(consume::consume(
            broker.clone(),
            names.advisories_stream(),
            consumer,
            move |message| {
                let books = books.clone();
                async move {
                    let outcome = match consume::stored(&message) {
                        Some(stored) => intake::max_deliveries(&books, stored).await,
                        None => Ok(()),
                    };
                    (message, outcome)
                }
            },
            shutdown.clone(),
        ));
    }
    tasks.spawn(watchdog::run(books, shutdown.clone()));
    tracing::info!("validator started");
    tasks.close();
    tasks.wait().await;
    // Every sender is gone with the tasks: the writer records the rest and ends.
    let _ = health_writer.await;
    tracing::info!("validator stopped");
    Ok(())
}
