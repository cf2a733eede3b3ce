//! Pulling runs: one loop per served worker on its durable consumer, shared
//! with every other agent that serves the worker.
//!
//! A loop keeps pull requests outstanding for as many runs as the agent has
//! free slots, and no more, so it never holds more runs than it can start.
//! Requests overlap: when a slot is given back, the loop asks for one more
//! run at once, without waiting for the requests already out, so a slot is
//! empty only for the round trip of its own request. The slots are shared
//! by every served worker, so two loops may ask for the same free slot; a
//! run that loses that race waits (with progress acks) for the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{Consumer, pull};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{self, Shared};
use crate::slots::{Slot, Slots};

/// How long one pull request waits for runs.
const PULL_EXPIRY: Duration = Duration::from_secs(1);

/// Most runs asked for in one pull.
const MAX_PULL: usize = 32;

/// Pulls `worker`'s runs until `stop`; runs execute on `tasks`, one slot each.
pub async fn pull_loop(
    shared: Arc<Shared>,
    worker: String,
    slots: Arc<Slots>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let Some(consumer) = consumer(&shared, &worker, &stop).await else {
        return;
    };
    tracing::info!(%worker, "serving worker");
    let requested = Arc::new(AtomicUsize::new(0));
    let pulls = TaskTracker::new();
    let mut changes = slots.watch();
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        changes.borrow_and_update();
        let uncovered = slots
            .free()
            .saturating_sub(requested.load(Ordering::Acquire));
        if uncovered == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = changes.changed() => continue,
            }
        }
        let wanted = uncovered.min(MAX_PULL);
        let batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        match batch {
            Ok(batch) => {
                failures = 0;
                requested.fetch_add(wanted, Ordering::AcqRel);
                pulls.spawn(place_runs(
                    Pull {
                        batch,
                        wanted,
                        requested: requested.clone(),
                    },
                    shared.clone(),
                    worker.clone(),
                    slots.clone(),
                    tasks.clone(),
                    stop.clone(),
                ));
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
            }
        }
    }
    // Runs still arriving on outstanding pulls go back at once.
    pulls.close();
    pulls.wait().await;
}

/// One outstanding pull request: its messages, and its share of the loop's
/// count of runs asked for and not yet arrived.
struct Pull {
    batch: pull::Batch,
    wanted: usize,
    requested: Arc<AtomicUsize>,
}

impl Pull {
    /// One run arrived: it is no longer owed.
    fn arrived(&mut self) {
        if self.wanted > 0 {
            self.wanted -= 1;
            self.requested.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Pull {
    /// The pull has ended (all arrived, expired or failed): what did not
    /// arrive is no longer owed.
    fn drop(&mut self) {
        self.requested.fetch_sub(self.wanted, Ordering::AcqRel);
    }
}

/// Places each run of one pull in a slot and starts it on `tasks`.
async fn place_runs(
    mut pull: Pull,
    shared: Arc<Shared>,
    worker: String,
    slots: Arc<Slots>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                hand_back_rest(&mut pull.batch).await;
                return;
            }
            next = pull.batch.next() => next,
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
        let Some(slot) = take_keeping_alive(&slots, &message, every, &stop).await else {
            // Stopping before a slot came free: the run goes back at once.
            let _ = loom_broker::acknowledge_confirmed(&message, AckKind::Nak(None)).await;
            hand_back_rest(&mut pull.batch).await;
            return;
        };
        // Only now, with the slot taken, may the loop ask for another run.
        pull.arrived();
        let (shared, worker) = (shared.clone(), worker.clone());
        tasks.spawn(async move {
            delivery::handle(shared, worker, message).await;
            drop(slot);
        });
    }
    // The loop asks again for whatever this pull did not bring.
    drop(pull);
    slots.nudge();
}

/// Takes a slot for `message`, sending progress acks while it waits so the
/// run is not redelivered elsewhere meanwhile; `None` if `stop` comes first.
async fn take_keeping_alive(
    slots: &Arc<Slots>,
    message: &async_nats::jetstream::Message,
    every: Duration,
    stop: &CancellationToken,
) -> Option<Slot> {
    // Usually a slot is free: no timer needed.
    if let Some(slot) = slots.try_take() {
        return Some(slot);
    }
    let take = slots.take();
    tokio::pin!(take);
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticks.tick().await;
    loop {
        tokio::select! {
            slot = &mut take => return slot.ok(),
            _ = stop.cancelled() => return None,
            _ = ticks.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

async fn hand_back_rest(batch: &mut pull::Batch) {
    let drained = tokio::time::timeout(PULL_EXPIRY * 2, async {
        while let Some(Ok(message)) = batch.next().await {
            let _ = loom_broker::acknowledge_confirmed(&message, AckKind::Nak(None)).await;
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
