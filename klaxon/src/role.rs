//! Klaxon's wiring to the mesh: dead letters in, alerts out.
//!
//! - Dead letters come from a durable consumer of the dead-letter stream
//!   (`klaxon`), so Klaxons side by side never take the same one. Copies of a
//!   letter marked replayed are not failures and are skipped.
//! - Klaxon counts each worker's dead letters since its last valid run
//!   (`failures.<worker>`), for `alert_after`.
//! - A group's decision (`alert.<worker>.<reason>`) is claimed with a
//!   compare-and-set *before* the sinks are called, so two Klaxons racing on
//!   one group notify once. A letter redelivered after a crash that had
//!   claimed its group delivers again: alerts are at least once, never lost.
//! - The letter is acknowledged after every sink took the alert or used up
//!   its retries (progress acks keep it meanwhile).
//! - Verdicts come from a second durable consumer: a valid run resets the
//!   count and resolves the worker's groups on every sink, even if it
//!   happened while Klaxon was down.
//! - Alertmanager forgets an alert with no end time after its
//!   `resolve_timeout`, so active groups are posted to it again every minute.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use chrono::Utc;
use futures::StreamExt;
use loom_broker::{Broker, Bucket, SetOutcome, StateError};
use loom_config::Config;
use loom_protocol::codec::decode;
use loom_protocol::state::{alert_key, failures_key};
use loom_protocol::{DeadLetter, Verdict, VerdictKind, metrics};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alert::Alert;
use crate::group::{GroupState, on_dead_letter, on_recovery};
use crate::sinks::{self, RetryPolicy, SinkKind};

/// How often active groups are posted to Alertmanager again.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Why Klaxon could not start.
#[derive(Debug, thiserror::Error)]
pub enum KlaxonError {
    /// Its buckets could not be opened.
    #[error("klaxon cannot open its state: {0}")]
    State(#[from] StateError),
    /// A configured sink is unusable.
    #[error("klaxon.sinks: {0}")]
    Sink(#[from] sinks::SinkError),
}

#[derive(Clone)]
struct Wiring {
    broker: Broker,
    bucket: Bucket,
    config: watch::Receiver<Arc<Config>>,
    sinks: Arc<Vec<SinkKind>>,
    retry: RetryPolicy,
    shutdown: CancellationToken,
}

/// Runs Klaxon until `shutdown`.
pub async fn run(
    broker: Broker,
    config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), KlaxonError> {
    let sinks = config
        .borrow()
        .klaxon
        .sinks
        .iter()
        .map(sinks::build)
        .collect::<Result<Vec<_>, _>>()?;
    let wiring = Wiring {
        bucket: broker.bucket(&broker.names().workers_bucket()).await?,
        broker: broker.clone(),
        config,
        sinks: Arc::new(sinks),
        retry: RetryPolicy::default(),
        shutdown: shutdown.clone(),
    };
    tracing::info!(sinks = ?wiring.sinks.iter().map(SinkKind::name).collect::<Vec<_>>(), "klaxon started");
    let names = broker.names().clone();
    tokio::join!(
        consume(
            wiring.clone(),
            names.dead_letter_stream(),
            names.klaxon_consumer(),
            Intake::DeadLetter
        ),
        consume(
            wiring.clone(),
            names.results_stream(),
            names.klaxon_consumer(),
            Intake::Verdict
        ),
        refresh(wiring.clone()),
    );
    tracing::info!("klaxon stopped");
    Ok(())
}

#[derive(Clone, Copy)]
enum Intake {
    DeadLetter,
    Verdict,
}

/// Handles one durable consumer's messages, one at a time, until shutdown.
async fn consume(wiring: Wiring, stream: String, durable: String, intake: Intake) {
    while !wiring.shutdown.is_cancelled() {
        let consumer = match wiring.broker.durable(&stream, &durable).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot open klaxon's consumer; retrying");
                tokio::select! {
                    _ = wiring.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(16)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull dead letters; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                _ = wiring.shutdown.cancelled() => return,
                next = messages.next() => match next {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "pull error (the stream keeps going)");
                        continue;
                    }
                    None => break,
                },
            };
            let redelivered = message.info().map(|i| i.delivered > 1).unwrap_or(false);
            let handled = async {
                match intake {
                    Intake::DeadLetter => dead_letter(&wiring, &message.payload, redelivered).await,
                    Intake::Verdict => verdict(&wiring, &message.payload).await,
                }
            };
            let outcome = with_progress(&message, handled).await;
            let kind = match outcome {
                Ok(()) => AckKind::Ack,
                Err(error) => {
                    tracing::warn!(%error, "cannot record an alert decision yet; retrying the message");
                    AckKind::Nak(Some(Duration::from_secs(2)))
                }
            };
            if let Err(error) = loom_broker::acknowledge_confirmed(&message, kind).await {
                tracing::warn!(%error, "the message may come again");
            }
        }
    }
}

/// Runs `work`, sending progress acks for `message` every 10 s meanwhile,
/// so sink retries do not make JetStream deliver it to another Klaxon.
async fn with_progress<F: std::future::Future>(
    message: &async_nats::jetstream::Message,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(Duration::from_secs(10));
    ticks.tick().await;
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

async fn dead_letter(wiring: &Wiring, payload: &[u8], redelivered: bool) -> Result<(), StateError> {
    let letter: DeadLetter = match decode("dead letter", payload) {
        Ok(letter) => letter,
        Err(error) => {
            tracing::error!(%error, "an unreadable dead letter; it cannot be alerted on");
            return Ok(());
        }
    };
    if letter.replayed_by.is_some() {
        return Ok(()); // the replay marker of a letter already alerted on
    }
    let (alert_after, repeat_interval) = {
        let config = wiring.config.borrow();
        let alert_after = config
            .registry
            .get(&letter.worker)
            .map_or(1, |w| w.alert_after.get());
        (alert_after, config.klaxon.repeat_interval)
    };
    let failures = increment(&wiring.bucket, &failures_key(&letter.worker)).await?;
    let key = alert_key(&letter.worker, letter.reason.as_str());
    let now = Utc::now();
    let alert = loop {
        let current = wiring.bucket.get::<GroupState>(&key).await?;
        let (state, revision) = match current {
            Some(found) => (Some(found.value), Some(found.revision)),
            None => (None, None),
        };
        let claimed_before = redelivered
            && state
                .as_ref()
                .is_some_and(|s| s.run_id == letter.run_id && s.last_notified.is_some());
        if claimed_before {
            // This letter claimed its group and the process died before the
            // sinks heard: deliver again rather than lose the alert.
            let state = state.unwrap_or_else(|| unreachable!("checked above"));
            break Some(Alert::firing(
                &letter,
                failures,
                state.suppressed,
                state.firing_since,
            ));
        }
        let (next, alert) =
            on_dead_letter(state, &letter, failures, alert_after, repeat_interval, now);
        let Some(next) = next else { break None };
        let written = match revision {
            Some(revision) => wiring.bucket.update(&key, &next, revision).await?,
            None => wiring.bucket.create(&key, &next).await?,
        };
        if let SetOutcome::Written(_) = written {
            break alert;
        }
    };
    match alert {
        Some(alert) => deliver(wiring, &alert, &wiring.sinks).await,
        None => {
            tracing::info!(worker = %letter.worker, reason = letter.reason.as_str(), run_id = %letter.run_id, failures, "dead letter grouped into an alert already sent (or below alert_after)")
        }
    }
    Ok(())
}

async fn verdict(wiring: &Wiring, payload: &[u8]) -> Result<(), StateError> {
    let Ok(verdict) = decode::<Verdict>("verdict", payload) else {
        return Ok(());
    };
    if verdict.verdict != VerdictKind::Valid {
        return Ok(());
    }
    let counter = failures_key(&verdict.worker);
    match wiring.bucket.get::<u32>(&counter).await? {
        None | Some(loom_broker::Versioned { value: 0, .. }) => return Ok(()),
        Some(_) => wiring.bucket.put(&counter, &0u32).await?,
    };
    let groups = wiring
        .bucket
        .snapshot::<GroupState>(&wiring.broker, &format!("alert.{}.*", verdict.worker))
        .await?;
    for (key, state) in groups {
        let resolved = on_recovery(Some(state), verdict.at);
        wiring.bucket.delete(&key).await?;
        if let Some(alert) = resolved {
            tracing::info!(worker = %verdict.worker, run_id = %verdict.run_id, "worker recovered; resolving its alert");
            deliver(wiring, &alert, &wiring.sinks).await;
        }
    }
    Ok(())
}

/// Adds one to the counter at `key`; the new value.
async fn increment(bucket: &Bucket, key: &str) -> Result<u32, StateError> {
    loop {
        let current = bucket.get::<u32>(key).await?;
        let (value, written) = match current {
            Some(found) => (
                found.value + 1,
                bucket
                    .update(key, &(found.value + 1), found.revision)
                    .await?,
            ),
            None => (1, bucket.create(key, &1u32).await?),
        };
        if let SetOutcome::Written(_) = written {
            return Ok(value);
        }
    }
}

/// Delivers `alert` to every sink at once, each with retries.
async fn deliver(wiring: &Wiring, alert: &Alert, sinks: &[SinkKind]) {
    let deliveries = sinks.iter().map(|sink| async move {
        match sink.deliver_with_retries(alert, wiring.retry, &wiring.shutdown).await {
            Ok(attempts) => {
                metrics::KLAXON_ALERTS_SENT.with_label_values(&[sink.name()]).inc();
                tracing::info!(sink = sink.name(), worker = %alert.key.worker, status = alert.status.as_str(), attempts, "alert delivered");
            }
            Err(error) => {
                metrics::KLAXON_DELIVERY_FAILURES.with_label_values(&[sink.name()]).inc();
                tracing::error!(sink = sink.name(), worker = %alert.key.worker, %error, "alert not delivered; retries used up");
            }
        }
    });
    futures::future::join_all(deliveries).await;
}

/// Posts active groups to Alertmanager again, every minute.
async fn refresh(wiring: Wiring) {
    let alertmanagers: Vec<SinkKind> = wiring
        .sinks
        .iter()
        .filter(|sink| sink.name() == "alertmanager")
        .cloned()
        .collect();
    if alertmanagers.is_empty() {
        return;
    }
    let mut ticks = tokio::time::interval(REFRESH_EVERY);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = wiring.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let groups = match wiring
            .bucket
            .snapshot::<GroupState>(&wiring.broker, "alert.*.*")
            .await
        {
            Ok(groups) => groups,
            Err(error) => {
                tracing::warn!(%error, "cannot read active alerts to refresh them");
                continue;
            }
        };
        for (_, state) in groups
            .into_iter()
            .filter(|(_, s)| s.last_notified.is_some())
        {
            let alert = state.alert();
            for sink in &alertmanagers {
                if let Err(error) = sink.deliver(&alert).await {
                    tracing::warn!(%error, "cannot refresh an active alert in Alertmanager");
                }
            }
        }
    }
}
