//! Publishing what the fire loop decided: run commands, ledger entries,
//! dead letters and cancel requests, many at once, each retried with its
//! own `Nats-Msg-Id` until JetStream stores it or the term ends.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use loom_broker::{Broker, PublishError};
use loom_config::{Overlap, Worker};
use loom_protocol::codec::encode;
use loom_protocol::identity::fire_msg_id;
use loom_protocol::{
    CancelRequest, DeadLetter, RunCommand, SkipReason, SkippedFire, WIRE_VERSION, metrics,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::plan::{OverlapDecision, decide_overlap, needs_load};

/// Jobs published at once, at most.
const MAX_IN_FLIGHT: usize = 4096;

/// Something to publish for one fire of one worker.
pub(crate) enum Job {
    /// A fire to run, subject to the worker's overlap policy.
    Fire {
        /// The worker.
        worker: Arc<Worker>,
        /// Its command (boxed: commands are large next to the other job).
        command: Box<RunCommand>,
    },
    /// A fire that does not run: a ledger entry, and a dead letter if missed.
    NotRun {
        /// The ledger entry.
        entry: Box<SkippedFire>,
        /// The dead letter of a missed fire.
        dead_letter: Option<Box<DeadLetter>>,
    },
}

/// A job that is done: its fire is handled for good.
#[derive(Debug)]
pub(crate) struct Done {
    /// The worker.
    pub worker: std::sync::Arc<str>,
    /// The fire instant.
    pub instant: DateTime<Utc>,
    /// The run published, if one was.
    pub run_id: Option<Uuid>,
}

/// Runs jobs from `jobs` concurrently until the channel closes and every
/// job has finished, or the term ends (unfinished jobs are then left for the
/// next leader: their fires were not recorded as handled).
pub(crate) async fn dispatch(
    broker: Broker,
    mut jobs: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
    term_over: CancellationToken,
) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            job = jobs.recv(), if open && running.len() < MAX_IN_FLIGHT => match job {
                Some(job) => running.push(run(broker.clone(), job, term_over.clone())),
                None => open = false,
            },
            Some(result) = running.next() => match result {
                Ok(finished) => {
                    let _ = done.send(finished);
                }
                Err(error) => tracing::warn!(%error, "a fire was not published before the term ended; the next leader publishes it"),
            },
            else => break,
        }
    }
}

async fn run(broker: Broker, job: Job, term_over: CancellationToken) -> Result<Done, PublishError> {
    match job {
        Job::Fire { worker, command } => fire(&broker, &worker, *command, &term_over).await,
        Job::NotRun { entry, dead_letter } => {
            record(&broker, &entry, &term_over).await?;
            if let Some(dead_letter) = dead_letter {
                let subject = broker.subjects().dead_letter(&dead_letter.worker);
                let id = format!(
                    "missed:{}",
                    fire_msg_id(&dead_letter.worker, entry.scheduled_at)
                );
                let stored = broker
                    .publish_until_stored(&subject, &id, encoded(&dead_letter)?, &term_over)
                    .await?;
                if !stored.duplicate {
                    metrics::DEAD_LETTERS
                        .with_label_values(&[&dead_letter.worker, "missed"])
                        .inc();
                }
            }
            Ok(Done {
                worker: entry.worker.into(),
                instant: entry.last.unwrap_or(entry.scheduled_at),
                run_id: None,
            })
        }
    }
}

async fn fire(
    broker: &Broker,
    worker: &Worker,
    command: RunCommand,
    term_over: &CancellationToken,
) -> Result<Done, PublishError> {
    let instant = command.scheduled_at;
    let decision = if needs_load(worker.overlap) {
        let load = load_until_known(broker, &worker.name, term_over).await?;
        decide_overlap(worker.overlap, load)
    } else {
        OverlapDecision::Publish
    };
    match decision {
        OverlapDecision::Skip => {
            let detail = match worker.overlap {
                Overlap::BufferOne => {
                    "a run was already waiting behind the one in flight (overlap = \"buffer_one\")"
                }
                _ => "a run of the worker was still in flight (overlap = \"skip\")",
            };
            let entry = skipped(
                &worker.name,
                instant,
                SkipReason::Overlap,
                detail.to_owned(),
            );
            record(broker, &entry, term_over).await?;
            return Ok(Done {
                worker: worker.name.clone(),
                instant,
                run_id: None,
            });
        }
        OverlapDecision::ReplaceThenPublish => {
            let request = CancelRequest {
                v: WIRE_VERSION,
                worker: worker.name.to_string(),
                run_id: None,
                before: Some(instant),
                keep: Some(command.run_id),
                reason: format!(
                    "replaced by the fire at {} (overlap = \"replace\")",
                    instant.to_rfc3339()
                ),
                requested_at: Utc::now(),
            };
            let subject = broker.subjects().cancel(&worker.name);
            let id = format!("replace:{}", fire_msg_id(&worker.name, instant));
            broker
                .publish_until_stored(&subject, &id, encoded(&request)?, term_over)
                .await?;
            tracing::info!(worker = %worker.name, %instant, "cancelling the runs in flight: a newer fire replaces them");
        }
        OverlapDecision::Publish => {}
    }
    let subject = broker.subjects().run(&worker.name);
    let stored = broker
        .publish_until_stored(
            &subject,
            &fire_msg_id(&worker.name, instant),
            encoded(&command)?,
            term_over,
        )
        .await?;
    if stored.duplicate {
        tracing::info!(worker = %worker.name, %instant, "fire was already published (by a previous leader)");
    } else {
        metrics::RUNS_SCHEDULED
            .with_label_values(&[&worker.name, "schedule"])
            .inc();
        tracing::debug!(worker = %worker.name, %instant, run_id = %command.run_id, "fire published");
    }
    Ok(Done {
        worker: worker.name.clone(),
        instant,
        run_id: Some(command.run_id),
    })
}

/// The worker's load, retried while the broker cannot answer.
async fn load_until_known(
    broker: &Broker,
    worker: &str,
    term_over: &CancellationToken,
) -> Result<loom_broker::WorkerLoad, PublishError> {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        match broker.worker_load(worker).await {
            Ok(load) => return Ok(load),
            Err(error) => {
                tracing::warn!(%error, worker, "cannot read the worker's runs in flight; retrying");
                tokio::select! {
                    _ = term_over.cancelled() => return Err(PublishError { subject: broker.subjects().run(worker), detail: error.to_string() }),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

async fn record(
    broker: &Broker,
    entry: &SkippedFire,
    term_over: &CancellationToken,
) -> Result<(), PublishError> {
    let subject = broker.subjects().skipped(&entry.worker);
    let id = format!("skipped:{}", fire_msg_id(&entry.worker, entry.scheduled_at));
    let stored = broker
        .publish_until_stored(&subject, &id, encoded(entry)?, term_over)
        .await?;
    if !stored.duplicate {
        metrics::FIRES_SKIPPED
            .with_label_values(&[&entry.worker, entry.reason.as_str()])
            .inc_by(entry.count);
        if entry.reason == SkipReason::Disabled {
            tracing::debug!(worker = %entry.worker, scheduled_at = %entry.scheduled_at, "fire not run: {}", entry.detail);
        } else {
            tracing::info!(worker = %entry.worker, scheduled_at = %entry.scheduled_at, reason = entry.reason.as_str(), count = entry.count, "fire not run: {}", entry.detail);
        }
    }
    Ok(())
}

fn encoded<T: serde::Serialize>(message: &T) -> Result<Vec<u8>, PublishError> {
    encode(message).map_err(|error| PublishError {
        subject: String::new(),
        detail: error.to_string(),
    })
}

/// A ledger entry for one fire.
pub(crate) fn skipped(
    worker: &str,
    instant: DateTime<Utc>,
    reason: SkipReason,
    detail: String,
) -> SkippedFire {
    SkippedFire {
        v: WIRE_VERSION,
        worker: worker.to_owned(),
        scheduled_at: instant,
        reason,
        detail,
        count: 1,
        last: None,
        at: Utc::now(),
    }
}
