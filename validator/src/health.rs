//! Worker health (`health.<worker>`): the last verdict, the last success,
//! failures in a row.
//!
//! Every verdict changes its worker's health, and a busy worker gets many
//! verdicts at once: written one by one with compare-and-set they would
//! conflict and retry endlessly. So one writer per validator drains the
//! verdicts queued so far, applies them in order per worker, and writes each
//! worker's health once per batch (still by compare-and-set, for validators
//! side by side).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use loom_broker::{Bucket, SetOutcome, StateError};
use loom_protocol::state::{WorkerHealth, health_key};
use loom_protocol::{VerdictKind, metrics};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Most verdicts applied in one batch.
const BATCH: usize = 4096;

/// One verdict, as health sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEvent {
    /// The worker.
    pub worker: String,
    /// The run.
    pub run_id: Uuid,
    /// Its verdict.
    pub verdict: VerdictKind,
    /// When it was given.
    pub at: DateTime<Utc>,
}

/// Applies one verdict to a worker's health.
pub fn apply(health: &mut WorkerHealth, event: &HealthEvent) {
    health.last_run_id = Some(event.run_id);
    health.last_run_at = Some(event.at);
    health.last_verdict = Some(event.verdict);
    match event.verdict {
        VerdictKind::Valid => {
            health.last_success_at = Some(event.at);
            health.consecutive_failures = 0;
        }
        VerdictKind::Cancelled => {}
        _ => health.consecutive_failures += 1,
    }
}

/// Where concluded runs send their verdicts for the health writer.
#[derive(Clone)]
pub struct HealthQueue {
    sender: mpsc::UnboundedSender<HealthEvent>,
}

impl HealthQueue {
    /// A queue and its receiving end, for [`write_health`].
    pub fn new() -> (HealthQueue, mpsc::UnboundedReceiver<HealthEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (HealthQueue { sender }, receiver)
    }

    /// Queues a verdict.
    pub fn record(&self, event: HealthEvent) {
        if self.sender.send(event).is_err() {
            tracing::warn!("the health writer has stopped; a worker's health misses a verdict");
        }
    }
}

/// Writes worker health until every sender is gone (the validator stopping),
/// then writes what is left.
pub async fn write_health(bucket: Bucket, mut receiver: mpsc::UnboundedReceiver<HealthEvent>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let mut by_worker: HashMap<String, Vec<HealthEvent>> = HashMap::new();
        for event in batch {
            by_worker
                .entry(event.worker.clone())
                .or_default()
                .push(event);
        }
        for (worker, events) in by_worker {
            if let Err(error) = write(&bucket, &worker, &events).await {
                tracing::warn!(%error, %worker, "cannot record the worker's health");
            }
        }
    }
}

async fn write(bucket: &Bucket, worker: &str, events: &[HealthEvent]) -> Result<(), StateError> {
    let key = health_key(worker);
    loop {
        let current = bucket.get::<WorkerHealth>(&key).await?;
        let (mut health, revision) = match current {
            Some(found) => (found.value, Some(found.revision)),
            None => (WorkerHealth::default(), None),
        };
        for event in events {
            apply(&mut health, event);
        }
        let outcome = match revision {
            Some(revision) => bucket.update(&key, &health, revision).await?,
            None => bucket.create(&key, &health).await?,
        };
        if let SetOutcome::Written(_) = outcome {
            if let Some(success) = health.last_success_at {
                metrics::WORKER_LAST_SUCCESS.set(worker, success.timestamp() as f64);
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(verdict: VerdictKind, second: u32) -> HealthEvent {
        HealthEvent {
            worker: "w".into(),
            run_id: Uuid::nil(),
            verdict,
            at: DateTime::from_timestamp(i64::from(second), 0).expect("instant"),
        }
    }

    #[test]
    fn failures_count_up_and_a_success_resets_them() {
        let mut health = WorkerHealth::default();
        for (verdict, second) in [
            (VerdictKind::Failed, 1),
            (VerdictKind::TimedOut, 2),
            (VerdictKind::Cancelled, 3),
            (VerdictKind::Lost, 4),
        ] {
            apply(&mut health, &event(verdict, second));
        }
        assert_eq!(
            health.consecutive_failures, 3,
            "cancelled runs do not count"
        );
        assert_eq!(health.last_verdict, Some(VerdictKind::Lost));
        assert_eq!(health.last_success_at, None);
        apply(&mut health, &event(VerdictKind::Valid, 5));
        assert_eq!(health.consecutive_failures, 0);
        assert_eq!(health.last_success_at.map(|t| t.timestamp()), Some(5));
    }
}
