//! The validator's books: run state, the open-run index, worker health, and
//! the one transition that concludes a run.
//!
//! Concluding publishes the verdict and any dead letter with message ids
//! derived from the run id, *then* marks the run done with a compare-and-set.
//! A validator that dies in between publishes again on redelivery and
//! JetStream drops the copies; two validators racing for one run both publish
//! the same ids and only one wins the compare-and-set, which alone updates
//! health and metrics. So no run gets two verdicts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use loom_broker::{Broker, Bucket, SetOutcome, StateError};
use loom_config::{Config, Worker};
use loom_protocol::codec::encode;
use loom_protocol::state::{OpenRun, RunState, RunStatus, open_key, run_key};
use loom_protocol::{
    AttemptSummary, DeadLetter, DeadLetterReason, RunCommand, RunResult, Trigger, Verdict,
    VerdictKind, WIRE_VERSION, metrics,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::judge::Judgement;

/// Longest output tail kept in run state (per stream).
const STATE_TAIL: usize = 8 * 1024;
/// Longest output tail kept per attempt summary.
const ATTEMPT_TAIL: usize = 2 * 1024;

/// Why a handler could not finish; the message is delivered again later.
#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    /// A bucket could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A verdict, dead letter or request could not be published.
    #[error(transparent)]
    Publish(#[from] loom_broker::PublishError),
    /// A stream could not be read.
    #[error(transparent)]
    Read(#[from] loom_broker::ReadError),
    /// A run's last result came before its run command was recorded.
    #[error("the run command of run {run_id} is not recorded yet; its last result waits for it")]
    CommandNotRecorded {
        /// The run.
        run_id: Uuid,
    },
}

/// Access to the validator's state.
#[derive(Clone)]
pub struct Books {
    /// The mesh.
    pub broker: Broker,
    /// Run state and the open-run index.
    pub runs: Bucket,
    /// Worker health (and pauses, bundles: other writers' keys).
    pub workers: Bucket,
    /// The configuration.
    pub config: watch::Receiver<Arc<Config>>,
    /// Verdicts for the worker-health writer.
    pub health: crate::health::HealthQueue,
    /// The run states this validator wrote or read last.
    pub recent: Arc<crate::recent::RecentStates>,
}

/// Where a compare-and-set loop takes the state of its first round from.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// None: create the state.
    Create,
    /// What this validator last wrote, else the stored state.
    Recent,
    /// The stored state.
    Read,
}

/// A run's conclusion, ready to be recorded.
pub struct Conclusion {
    /// The judgement.
    pub judgement: Judgement,
    /// The dead letter's reason, if the run is dead.
    pub dead_letter: Option<DeadLetterReason>,
    /// The dead letter's description (defaults to the judgement's reason).
    pub description: Option<String>,
}

impl Books {
    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// The registry's definition of `worker`.
    pub fn worker(&self, worker: &str) -> Option<Arc<Worker>> {
        self.config.borrow().registry.shared(worker)
    }

    /// The state of run `run_id` of `worker`, with its revision, as stored.
    pub async fn run_state(
        &self,
        worker: &str,
        run_id: Uuid,
    ) -> Result<Option<(RunState, u64)>, StateError> {
        Ok(self
            .runs
            .get::<RunState>(&run_key(worker, run_id))
            .await?
            .map(|v| (v.value, v.revision)))
    }

    /// The state of run `run_id` of `worker` as this validator last wrote
    /// or read it, or else as stored (and then remembered, so the
    /// compare-and-set that follows needs no second read): possibly stale,
    /// so only for a decision that a compare-and-set of the same state
    /// confirms (see `recent`).
    pub async fn recent_run_state(
        &self,
        worker: &str,
        run_id: Uuid,
    ) -> Result<Option<(RunState, u64)>, StateError> {
        if let Some(known) = self.recent.get(run_id) {
            return Ok(Some(known));
        }
        let stored = self.run_state(worker, run_id).await?;
        if let Some((state, revision)) = &stored
            && state.status != RunStatus::Done
        {
            self.recent.put(run_id, state.clone(), *revision);
        }
        Ok(stored)
    }

    /// Changes a run's state with compare-and-set: `change` gets the current
    /// state (or `initial` when there is none) and says whether it changed
    /// it. Returns the state written, or `None` if nothing changed.
    pub async fn update_run(
        &self,
        worker: &str,
        run_id: Uuid,
        initial: impl Fn() -> RunState,
        change: impl Fn(&mut RunState) -> bool,
    ) -> Result<Option<RunState>, StateError> {
        self.change_run(worker, run_id, initial, change, Start::Recent)
            .await
    }

    /// Like [`Books::update_run`] for a run that is most likely new (its
    /// command, which usually comes before anything else about it): tries
    /// to create its state first, saving a read, and falls back to
    /// compare-and-set when the state exists.
    pub async fn record_new_run(
        &self,
        worker: &str,
        run_id: Uuid,
        initial: impl Fn() -> RunState,
        change: impl Fn(&mut RunState) -> bool,
    ) -> Result<Option<RunState>, StateError> {
        self.change_run(worker, run_id, initial, change, Start::Create)
            .await
    }

    /// The compare-and-set loop of both, starting from `start`; every round
    /// after a conflict reads the stored state.
    async fn change_run(
        &self,
        worker: &str,
        run_id: Uuid,
        initial: impl Fn() -> RunState,
        change: impl Fn(&mut RunState) -> bool,
        mut start: Start,
    ) -> Result<Option<RunState>, StateError> {
        let key = run_key(worker, run_id);
        loop {
            let (current, remembered) = match start {
                Start::Create => (None, false),
                Start::Recent => match self.recent.get(run_id) {
                    Some(known) => (Some(known), true),
                    None => (self.run_state(worker, run_id).await?, false),
                },
                Start::Read => (self.run_state(worker, run_id).await?, false),
            };
            start = Start::Read;
            let (mut state, revision) = match current {
                Some((state, revision)) => (state, Some(revision)),
                None => (initial(), None),
            };
            if !change(&mut state) && revision.is_some() {
                if remembered {
                    continue; // "no change" holds only for the stored state
                }
                return Ok(None);
            }
            state.updated_at = Utc::now();
            let outcome = match revision {
                Some(revision) => self.runs.update(&key, &state, revision).await?,
                None => self.runs.create(&key, &state).await?,
            };
            if let SetOutcome::Written(written) = outcome {
                if state.status == RunStatus::Done {
                    self.recent.forget(run_id);
                } else {
                    self.recent.put(run_id, state.clone(), written);
                }
                return Ok(Some(state));
            }
        }
    }

    /// Marks a run open for the watchdog until `deadline`.
    pub async fn open(
        &self,
        worker: &str,
        run_id: Uuid,
        deadline: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let entry = OpenRun {
            worker: worker.to_owned(),
            deadline,
        };
        self.runs.put(&open_key(run_id), &entry).await.map(|_| ())
    }

    /// Records a run's verdict: publishes it (and its dead letter), marks the
    /// run done (recording `last_attempt` in the same write, when the verdict
    /// judges a result), closes it for the watchdog and updates the worker's
    /// health. Does nothing if the run already has a verdict.
    pub async fn conclude(
        &self,
        worker: &str,
        run_id: Uuid,
        base: &RunState,
        last_attempt: Option<&RunResult>,
        conclusion: Conclusion,
    ) -> Result<(), BooksError> {
        let now = Utc::now();
        let Judgement { verdict, reason } = conclusion.judgement;
        let attempts = base.attempts.len().max(1) as u32;
        let message = Verdict {
            v: WIRE_VERSION,
            run_id,
            worker: worker.to_owned(),
            verdict,
            reason: reason.clone(),
            attempts,
            at: now,
        };
        let subjects = self.broker.subjects().clone();
        self.broker
            .publish(
                &subjects.verdict(worker),
                Some(&format!("verdict:{run_id}")),
                encode_or_empty(&message),
            )
            .await?;
        if let Some(dead_reason) = conclusion.dead_letter {
            let dead_letter = DeadLetter {
                v: WIRE_VERSION,
                run_id,
                worker: worker.to_owned(),
                reason: dead_reason,
                description: conclusion
                    .description
                    .clone()
                    .unwrap_or_else(|| reason.clone()),
                attempts: base.attempts.clone(),
                command: base.command.clone(),
                dead_at: now,
                replayed_by: None,
            };
            self.broker
                .publish(
                    &subjects.dead_letter(worker),
                    Some(&format!("dead:{run_id}")),
                    encode_or_empty(&dead_letter),
                )
                .await?;
        }
        let concluded = self
            .update_run(
                worker,
                run_id,
                || base.clone(),
                |state| {
                    if state.status == RunStatus::Done {
                        return false;
                    }
                    if let Some(result) = last_attempt {
                        add_attempt(state, result);
                    }
                    state.status = RunStatus::Done;
                    state.verdict = Some(verdict);
                    state.reason = Some(reason.clone());
                    state.verdict_at = Some(now);
                    true
                },
            )
            .await?;
        let Some(_) = concluded else {
            return Ok(()); // another validator concluded it first
        };
        self.runs.delete(&open_key(run_id)).await?;
        metrics::VERDICTS
            .with_label_values(&[worker, verdict.as_str()])
            .inc();
        if let Some(dead_reason) = conclusion.dead_letter {
            metrics::DEAD_LETTERS
                .with_label_values(&[worker, dead_reason.as_str()])
                .inc();
        }
        self.health.record(crate::health::HealthEvent {
            worker: worker.to_owned(),
            run_id,
            verdict,
            at: now,
        });
        let level_info = matches!(verdict, VerdictKind::Valid | VerdictKind::Cancelled);
        if level_info {
            tracing::info!(%run_id, worker, verdict = verdict.as_str(), %reason, "verdict");
        } else {
            tracing::warn!(%run_id, worker, verdict = verdict.as_str(), %reason, "verdict");
        }
        Ok(())
    }
}

/// A new run state for a run first seen through its command.
pub fn state_from_command(command: &RunCommand, deadline: Option<DateTime<Utc>>) -> RunState {
    RunState {
        run_id: command.run_id,
        worker: command.worker.clone(),
        trigger: command.trigger,
        scheduled_at: command.scheduled_at,
        deadline,
        command: Some(command.clone()),
        status: RunStatus::Queued,
        attempts: Vec::new(),
        verdict: None,
        reason: None,
        verdict_at: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        cost: Default::default(),
        updated_at: Utc::now(),
    }
}

/// A new run state for a run first seen through a result (its command not
/// yet processed).
pub fn state_from_result(result: &RunResult) -> RunState {
    RunState {
        run_id: result.run_id,
        worker: result.worker.clone(),
        trigger: Trigger::Manual,
        scheduled_at: result.started_at,
        deadline: None,
        command: None,
        status: RunStatus::Queued,
        attempts: Vec::new(),
        verdict: None,
        reason: None,
        verdict_at: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        cost: Default::default(),
        updated_at: Utc::now(),
    }
}

/// The summary of one attempt kept in run state and dead letters.
pub fn attempt_summary(result: &RunResult) -> AttemptSummary {
    AttemptSummary {
        attempt: result.attempt,
        agent_id: result.agent_id.clone(),
        outcome: result.outcome,
        exit_code: result.exit_code,
        started_at: result.started_at,
        duration_ms: u64::try_from((result.finished_at - result.started_at).num_milliseconds())
            .unwrap_or(0),
        cpu_ms: result.cpu_ms,
        stdout_tail: tail(&result.stdout_tail, ATTEMPT_TAIL),
        stderr_tail: tail(&result.stderr_tail, ATTEMPT_TAIL),
    }
}

/// Records `result` as an attempt of `state`, once: an attempt already
/// recorded (a result delivered again) changes nothing, so its cost is not
/// counted twice.
pub fn add_attempt(state: &mut RunState, result: &RunResult) {
    if state.attempts.iter().any(|a| a.attempt == result.attempt) {
        return;
    }
    state.attempts.push(attempt_summary(result));
    state.attempts.sort_by_key(|a| a.attempt);
    state.stdout_tail = tail(&result.stdout_tail, STATE_TAIL);
    state.stderr_tail = tail(&result.stderr_tail, STATE_TAIL);
    for (key, value) in &result.cost {
        *state.cost.entry(key.clone()).or_default() += value;
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn encode_or_empty<T: serde::Serialize>(message: &T) -> Vec<u8> {
    // Loom's own messages always encode; an empty body would be refused downstream.
    encode(message).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use loom_protocol::{Outcome, RunResult};
    use uuid::Uuid;

    use super::*;

    fn result(attempt: u32, cost: f64) -> RunResult {
        RunResult {
            v: 1,
            run_id: Uuid::nil(),
            worker: "w".into(),
            attempt,
            agent_id: "a".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            outcome: Outcome::Failed,
            exit_code: Some(1),
            stdout_tail: format!("attempt {attempt}\n"),
            stderr_tail: String::new(),
            stdout_bytes: 10,
            stderr_bytes: 0,
            cpu_ms: 0,
            max_rss_kb: 0,
            enforcement_digest: None,
            cost: [("usd".to_owned(), cost)].into(),
            last_attempt: false,
        }
    }

    #[test]
    fn an_attempt_delivered_twice_is_recorded_and_costed_once() {
        let mut state = state_from_result(&result(1, 0.5));
        add_attempt(&mut state, &result(2, 0.25));
        add_attempt(&mut state, &result(1, 0.5));
        add_attempt(&mut state, &result(1, 0.5));
        let attempts: Vec<u32> = state.attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(attempts, [1, 2]);
        assert_eq!(state.cost.get("usd"), Some(&0.75));
        // The tails are the last new attempt's.
        assert_eq!(state.stdout_tail, "attempt 1\n");
        add_attempt(&mut state, &result(2, 0.25));
        assert_eq!(state.stdout_tail, "attempt 1\n");
    }
}
