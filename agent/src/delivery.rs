//! One delivery of a run, from the moment an agent pulls it to the moment it
//! acknowledges it: decode, check for cancellation, load the enforcement
//! bundle, execute with progress acks, store the result, then ack (done),
//! NAK with the worker's backoff (retry), or terminate (failed for good).
//!
//! The result is stored in JetStream *before* the delivery is acknowledged,
//! so a run is never acknowledged without a record of how it ended. Delivery
//! counts come from JetStream's metadata, so retries survive any process dying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use chrono::{DateTime, Utc};
use loom_broker::Broker;
use loom_config::{Config, Worker};
use loom_protocol::codec::{RunDefaults, decode_run_command, encode};
use loom_protocol::{Outcome, RunCommand, RunResult, metrics};
use loom_workers::{Execution, Executor, Invocation};
use tokio_util::sync::CancellationToken;

use crate::bundles::Bundles;
use crate::cancel::{Cancels, StopReason};
use crate::decide::{Acknowledge, Ended, acknowledge};

/// What every delivery needs from its agent.
pub struct Shared {
    /// The mesh.
    pub broker: Broker,
    /// The configuration (the registry defines what may run).
    pub config: tokio::sync::watch::Receiver<Arc<Config>>,
    /// Runs worker processes.
    pub executor: Executor,
    /// Cancel requests and running runs.
    pub cancels: Cancels,
    /// Enforcement bundles.
    pub bundles: Bundles,
    /// This agent's id.
    pub agent_id: String,
    /// The agent's environment, where declared secrets come from.
    pub secrets: BTreeMap<String, String>,
}

/// Handles one delivered message of `worker`'s run consumer.
pub async fn handle(shared: Arc<Shared>, worker_name: String, message: Message) {
    let message = Arc::new(message);
    let (attempt, sequence, published) = match message.info() {
        Ok(info) => (
            u32::try_from(info.delivered).unwrap_or(u32::MAX),
            info.stream_sequence,
            DateTime::from_timestamp_nanos(
                i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
            ),
        ),
        Err(error) => {
            tracing::error!(%error, worker = %worker_name, "a delivery without JetStream metadata; leaving it for redelivery");
            return;
        }
    };
    let defaults =
        RunDefaults::for_message(&shared.broker.names().runs_stream(), sequence, published);
    let command = match decode_run_command(&worker_name, &message.payload, defaults) {
        Ok(command) => command,
        Err(error) => {
            // The validator dead-letters it as rejected; agents only drop it.
            tracing::warn!(worker = %worker_name, sequence, %error, "refusing a run command that does not decode");
            acknowledge_with(&message, AckKind::Term).await;
            return;
        }
    };
    let config = shared.config.borrow().clone();
    let Some(worker) = config.registry.shared(&worker_name) else {
        tracing::warn!(worker = %worker_name, run_id = %command.run_id, "refusing a run of a worker this agent's registry does not define");
        acknowledge_with(&message, AckKind::Term).await;
        return;
    };
    let (running, _guard) = match shared.cancels.begin(&command, attempt) {
        Ok(running) => running,
        Err(reason) => {
            tracing::info!(run_id = %command.run_id, worker = %worker.name, %reason, "run cancelled before it started");
            let execution = not_started(
                Outcome::Cancelled,
                format!("cancelled before it started: {reason}"),
            );
            finish(
                &shared, &config, &worker, &command, attempt, &message, execution, None,
            )
            .await;
            return;
        }
    };
    metrics::AGENT_INFLIGHT.inc();
    let heartbeat = tokio::spawn(heartbeat(message.clone(), config.agent.ack_wait / 3));

    let (execution, digest) = match &worker.enforcement {
        None => (
            run(
                &shared,
                &worker,
                &command,
                attempt,
                None,
                running.token.clone(),
            )
            .await,
            None,
        ),
        Some(_) => match shared.bundles.for_run(&worker, &command).await {
            Ok(bundle) => {
                let execution = run(
                    &shared,
                    &worker,
                    &command,
                    attempt,
                    Some(&bundle),
                    running.token.clone(),
                )
                .await;
                let digest = if execution.bundle_modified {
                    format!("{}+modified", bundle.digest)
                } else {
                    bundle.digest.clone()
                };
                (execution, Some(digest))
            }
            Err(reason) => {
                tracing::warn!(run_id = %command.run_id, worker = %worker.name, %reason, "enforcement unavailable; not starting the worker");
                (not_started(Outcome::EnforcementUnavailable, reason), None)
            }
        },
    };
    metrics::AGENT_INFLIGHT.dec();

    let mut execution = execution;
    if let Some(StopReason::Cancelled(reason)) = running.reason.get()
        && execution.outcome == Outcome::Cancelled
    {
        // Say why, as the last line of stderr: the verdict's reason quotes it.
        if !execution.stderr_tail.is_empty() && !execution.stderr_tail.ends_with('\n') {
            execution.stderr_tail.push('\n');
        }
        execution
            .stderr_tail
            .push_str(&format!("cancelled: {reason}"));
    }
    if running.reason.get() == Some(&StopReason::Drain) {
        // Not a result: the attempt was interrupted. Another agent takes it now.
        heartbeat.abort();
        tracing::info!(run_id = %command.run_id, worker = %worker.name, "handing the run back: this agent is stopping");
        acknowledge_with(&message, AckKind::Nak(None)).await;
        return;
    }
    finish(
        &shared, &config, &worker, &command, attempt, &message, execution, digest,
    )
    .await;
    heartbeat.abort();
}

async fn run(
    shared: &Shared,
    worker: &Worker,
    command: &RunCommand,
    attempt: u32,
    bundle: Option<&loom_workers::LoadedBundle>,
    cancel: CancellationToken,
) -> Execution {
    metrics::RUNS_STARTED
        .with_label_values(&[&worker.name])
        .inc();
    if attempt > 1 {
        metrics::RUN_RETRIES
            .with_label_values(&[&worker.name])
            .inc();
    }
    let lag = (Utc::now() - command.scheduled_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0) as f64
        / 1e6;
    metrics::RUN_START_LAG
        .with_label_values(&[&worker.name])
        .observe(lag);
    tracing::info!(run_id = %command.run_id, worker = %worker.name, attempt, trigger = command.trigger.as_str(), "run started");
    let invocation = Invocation {
        command,
        worker,
        attempt,
        enforcement: bundle,
        secrets: &shared.secrets,
    };
    shared.executor.run(invocation, cancel).await
}

/// An attempt that did not start a process.
fn not_started(outcome: Outcome, reason: String) -> Execution {
    let mut execution = Execution::not_started(Utc::now(), outcome, None, None);
    execution.stderr_tail = reason;
    execution
}

/// Stores the result, then acknowledges the delivery as the outcome says.
#[allow(clippy::too_many_arguments)]
async fn finish(
    shared: &Shared,
    config: &Config,
    worker: &Worker,
    command: &RunCommand,
    attempt: u32,
    message: &Message,
    execution: Execution,
    digest: Option<String>,
) {
    let ended = Ended {
        outcome: execution.outcome,
        exit_code: execution.exit_code,
        refused: execution.refused.is_some(),
    };
    let duration = execution.duration_ms() as f64 / 1000.0;
    let decision = acknowledge(worker, attempt, ended, fastrand::f64());
    let mut result = execution.into_result(command, attempt, &shared.agent_id, digest);
    result.last_attempt = !matches!(decision, Acknowledge::Retry(_));
    metrics::RUNS_FINISHED
        .with_label_values(&[&worker.name, result.outcome.as_str()])
        .inc();
    metrics::RUN_DURATION
        .with_label_values(&[&worker.name])
        .observe(duration);
    if let Err(error) = store_result(&shared.broker, &result, config.agent.ack_wait).await {
        // Without a stored result the delivery is not acknowledged: JetStream
        // redelivers it after the ack wait and another attempt reports.
        tracing::error!(%error, run_id = %command.run_id, "cannot store the run's result; leaving the delivery unacknowledged");
        return;
    }
    let kind = match decision {
        Acknowledge::Ack => AckKind::Ack,
        Acknowledge::Retry(delay) => AckKind::Nak(Some(delay)),
        Acknowledge::Term => AckKind::Term,
    };
    tracing::info!(
        run_id = %command.run_id,
        worker = %worker.name,
        attempt,
        outcome = result.outcome.as_str(),
        exit_code = ?result.exit_code,
        duration_s = duration,
        next = ?decision,
        "run finished"
    );
    acknowledge_with(message, kind).await;
}

/// Publishes the result until JetStream stores it (the same message id on
/// every try), for at most a few ack waits.
async fn store_result(
    broker: &Broker,
    result: &RunResult,
    ack_wait: Duration,
) -> Result<(), String> {
    let payload = encode(result).map_err(|e| e.to_string())?;
    let subject = broker.subjects().result(&result.worker);
    let id = format!("result:{}:{}", result.run_id, result.attempt);
    let never = CancellationToken::new();
    let stored = tokio::time::timeout(
        ack_wait * 3,
        broker.publish_until_stored(&subject, &id, payload, &never),
    )
    .await
    .map_err(|_| format!("not stored within {:?}", ack_wait * 3))?;
    stored.map(|_| ()).map_err(|e| e.to_string())
}

/// Tells JetStream the run is still being worked on, every `every`.
async fn heartbeat(message: Arc<Message>, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = message.ack_with(AckKind::Progress).await {
            tracing::warn!(%error, "cannot send a progress ack");
        }
    }
}

async fn acknowledge_with(message: &Message, kind: AckKind) {
    if let Err(error) = loom_broker::acknowledge_confirmed(message, kind).await {
        tracing::warn!(%error, "JetStream may deliver the run again");
    }
}
