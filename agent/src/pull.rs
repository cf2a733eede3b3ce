//! Pulling runs: one loop per served worker on its durable consumer, shared
//! with every other agent that serves the worker. A loop asks for at most as
//! many runs as the agent has free slots, so it never holds more than it can
//! start; a run that arrives in a race for the last slot waits (with
//! progress acks) for the next one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{Consumer, pull};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{self, Shared};

/// How long one pull request waits for runs.
const PULL_EXPIRY: Duration = Duration::from_secs(1);

/// Most runs asked for in one pull.
const MAX_PULL: usize = 32;

/// Pulls `worker`'s runs until `stop`; runs execute on `tasks`, one slot each.
pub async fn pull_loop(
    shared: Arc<Shared>,
    worker: String,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let Some(consumer) = consumer(&shared, &worker, &stop).await else {
        return;
    };
    tracing::info!(%worker, "serving worker");
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        // Wait for a free slot without holding it: another worker's run may take it first.
        tokio::select! {
            _ = stop.cancelled() => break,
            permit = slots.acquire() => drop(permit),
        }
        let wanted = slots.available_permits().clamp(1, MAX_PULL);
        let batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => {
                failures = 0;
                batch
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(%worker, %error, "cannot pull runs; retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                biased;
                next = batch.next() => next,
                _ = stop.cancelled() => {
                    // Runs still arriving on this pull go back at once.
                    hand_back_rest(batch).await;
                    return;
                }
            };
            let message = match next {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(%worker, %error, "pull ended early");
                    break;
                }
            };
            let every = shared.config.borrow().agent.ack_wait / 3;
            let Ok(permit) = acquire_keeping_alive(&slots, &message, every).await else {
                return;
            };
            let (shared, worker) = (shared.clone(), worker.clone());
            tasks.spawn(async move {
                delivery::handle(shared, worker, message).await;
                drop(permit);
            });
        }
    }
}

/// Takes a slot for `message`, sending progress acks while it waits so the
/// run is not redelivered elsewhere meanwhile.
async fn acquire_keeping_alive(
    slots: &Arc<Semaphore>,
    message: &async_nats::jetstream::Message,
    every: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
    // Usually a slot is free: no timer needed.
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    let acquire = slots.clone().acquire_owned();
    tokio::pin!(acquire);
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticks.tick().await;
    loop {
        tokio::select! {
            permit = &mut acquire => return permit,
            _ = ticks.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

async fn hand_back_rest(mut batch: async_nats::jetstream::consumer::pull::Batch) {
    let drained = tokio::time::timeout(PULL_EXPIRY * 2, async {
        while let Some(Ok(message)) = batch.next().await {
            let _ = message.double_ack_with(AckKind::Nak(None)).await;
        }
    });
    let _ = drained.await;
}

/// The worker's run consumer, waiting for it to exist (a worker just added
/// to the registry gets its consumer from the scheduler's reload).
async fn consumer(
    shared: &Shared,
    worker: &str,
    stop: &CancellationToken,
) -> Option<Consumer<pull::Config>> {
    let names = shared.broker.names();
    let mut warned = false;
    loop {
        let found = async {
            let stream = shared
                .broker
                .jetstream()
                .get_stream(names.runs_stream())
                .await
                .ok()?;
            stream
                .get_consumer::<pull::Config>(&names.run_consumer(worker))
                .await
                .ok()
        };
        if let Some(consumer) = found.await {
            return Some(consumer);
        }
        if !warned {
            tracing::warn!(%worker, "the worker's run consumer does not exist yet; waiting for it");
            warned = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
