//! Which runs are cancelled: every cancel request of the last day, replayed
//! from the history stream when the agent starts and followed live after.
//! A request cancels a matching run that is executing here, and a matching
//! run delivered later is reported cancelled without starting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use loom_broker::{Broker, ReadFrom};
use loom_protocol::codec::decode;
use loom_protocol::state::RunningAttempt;
use loom_protocol::{CancelRequest, RunCommand};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long cancel requests are remembered.
pub const MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Why a running run is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A cancel request (`loom cancel`, overlap `replace`).
    Cancelled(String),
    /// The agent is shutting down: hand the run to another agent.
    Drain,
}

/// A run executing here: how to stop it and why it was stopped.
#[derive(Clone)]
pub struct Running {
    command: RunCommand,
    attempt: u32,
    started_at: DateTime<Utc>,
    /// Cancelled to stop the worker process.
    pub token: CancellationToken,
    /// Set once, by whoever stops it first.
    pub reason: Arc<OnceLock<StopReason>>,
}

impl Running {
    /// Stops the run for `reason` (the first reason given wins).
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}

#[derive(Default)]
struct State {
    /// Woken whenever a run begins or ends here (agent presence follows it).
    changed: Arc<Notify>,
    requests: Vec<CancelRequest>,
    running: HashMap<Uuid, Running>,
}

/// The agent's view of cancel requests and of its running runs.
#[derive(Clone, Default)]
pub struct Cancels {
    state: Arc<Mutex<State>>,
}

/// Removes a run from the running set when dropped.
pub struct RunningGuard {
    cancels: Cancels,
    run_id: Uuid,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.cancels.state.lock() {
            state.running.remove(&self.run_id);
            state.changed.notify_one();
        }
    }
}

impl Cancels {
    /// Records a request and stops the matching runs executing here.
    pub fn record(&self, request: CancelRequest) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for running in state.running.values() {
            if request.matches(&running.command) {
                tracing::info!(run_id = %running.command.run_id, worker = %running.command.worker, reason = %request.reason, "cancelling a running run");
                running.stop(StopReason::Cancelled(request.reason.clone()));
            }
        }
        let horizon = Utc::now() - chrono::Duration::from_std(MEMORY).unwrap_or_default();
        state.requests.retain(|r| r.requested_at > horizon);
        state.requests.push(request);
    }

    /// Registers attempt `attempt` of `command` as running, unless a request
    /// cancels it: then the request's reason.
    pub fn begin(
        &self,
        command: &RunCommand,
        attempt: u32,
    ) -> Result<(Running, RunningGuard), String> {
        let Ok(mut state) = self.state.lock() else {
            return Err("the agent's cancel index is unusable".to_owned());
        };
        if let Some(request) = state.requests.iter().find(|r| r.matches(command)) {
            return Err(request.reason.clone());
        }
        let running = Running {
            command: command.clone(),
            attempt,
            started_at: Utc::now(),
            token: CancellationToken::new(),
            reason: Arc::new(OnceLock::new()),
        };
        state.running.insert(command.run_id, running.clone());
        state.changed.notify_one();
        Ok((
            running,
            RunningGuard {
                cancels: self.clone(),
                run_id: command.run_id,
            },
        ))
    }

    /// Stops every run executing here.
    pub fn stop_all(&self, reason: StopReason) {
        if let Ok(state) = self.state.lock() {
            for running in state.running.values() {
                running.stop(reason.clone());
            }
        }
    }

    /// The runs executing here, oldest first.
    pub fn snapshot(&self) -> Vec<RunningAttempt> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        let mut running: Vec<RunningAttempt> = state
            .running
            .values()
            .map(|r| RunningAttempt {
                run_id: r.command.run_id,
                worker: r.command.worker.clone(),
                attempt: r.attempt,
                started_at: r.started_at,
            })
            .collect();
        running.sort_by_key(|r| (r.started_at, r.run_id));
        running
    }

    /// Woken whenever a run begins or ends here.
    pub fn changed(&self) -> Arc<Notify> {
        self.state
            .lock()
            .map(|s| s.changed.clone())
            .unwrap_or_default()
    }

    /// How many runs are executing here.
    pub fn running(&self) -> usize {
        self.state.lock().map(|s| s.running.len()).unwrap_or(0)
    }
}

/// Follows cancel requests until `shutdown`: subscribes first, then replays
/// the last day's history, so none falls in between.
pub async fn follow(broker: Broker, cancels: Cancels, shutdown: CancellationToken) {
    let pattern = broker
        .subjects()
        .all(loom_protocol::subjects::SubjectKind::Cancel);
    let mut live = match broker.client().subscribe(pattern.clone()).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%error, "cannot follow cancel requests; runs cannot be cancelled on this agent");
            return;
        }
    };
    let since = Utc::now() - chrono::Duration::from_std(MEMORY).unwrap_or_default();
    match broker
        .read_stream(
            &broker.names().results_stream(),
            &pattern,
            ReadFrom::Since(since),
        )
        .await
    {
        Ok(history) => {
            for message in history {
                if let Ok(request) = decode::<CancelRequest>("cancel request", &message.payload) {
                    cancels.record(request);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot replay recent cancel requests"),
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            message = live.next() => match message {
                Some(message) => match decode::<CancelRequest>("cancel request", &message.payload) {
                    Ok(request) => cancels.record(request),
                    Err(error) => tracing::warn!(%error, subject = %message.subject, "ignoring an unreadable cancel request"),
                },
                None => return,
            },
        }
    }
}
