//! Run history and dead-letter queries, for `loom runs`, `loom dlq`,
//! `loom cancel` and the dashboard.
//!
//! Dead letters are immutable stream messages; replaying one publishes a new
//! run (linked by `replay_of`) and then the dead letter again with
//! `replayed_by` set, so readers keep the latest copy of each run's letter.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use loom_broker::{Broker, ReadError, ReadFrom, StateError};
use loom_config::Config;
use loom_protocol::codec::{decode, encode};
use loom_protocol::state::{BundleRef, RunState, bundle_key, run_key_pattern};
use loom_protocol::subjects::SubjectKind;
use loom_protocol::{CancelRequest, DeadLetter, RunCommand, SkippedFire, Trigger, WIRE_VERSION};
use uuid::Uuid;

/// A query or request that failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// No run with that id is in the history.
    #[error("run {0} is not in the run history")]
    UnknownRun(Uuid),
    /// No dead letter for that run.
    #[error("run {0} has no dead letter")]
    NoDeadLetter(Uuid),
    /// The dead letter was replayed already.
    #[error("the dead letter of run {run_id} was replayed already, as run {replayed_by}")]
    AlreadyReplayed {
        /// The dead run.
        run_id: Uuid,
        /// Its replay.
        replayed_by: Uuid,
    },
    /// The dead letter has no command to replay (a malformed message).
    #[error(
        "the dead letter of run {0} holds no run command to replay (the message was malformed)"
    )]
    NothingToReplay(Uuid),
    /// The worker of a dead letter left the registry.
    #[error("run {run_id} belongs to worker {worker:?}, which is not in the registry")]
    UnknownWorker {
        /// The run.
        run_id: Uuid,
        /// Its worker.
        worker: String,
    },
    /// The run has its verdict already.
    #[error("run {run_id} already has its verdict ({verdict}); there is nothing to cancel")]
    Finished {
        /// The run.
        run_id: Uuid,
        /// Its verdict.
        verdict: String,
    },
    /// A bucket could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// A stream could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A message could not be published.
    #[error(transparent)]
    Publish(#[from] loom_broker::PublishError),
}

impl HistoryError {
    /// Whether the request itself was wrong (as opposed to the broker failing).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            HistoryError::State(_) | HistoryError::Read(_) | HistoryError::Publish(_)
        )
    }
}

/// The runs of `worker` in the history, newest first, at most `limit`.
pub async fn runs_of(
    broker: &Broker,
    worker: &str,
    limit: usize,
) -> Result<Vec<RunState>, HistoryError> {
    let runs = broker.bucket(&broker.names().runs_bucket()).await?;
    let mut states: Vec<RunState> = runs
        .snapshot::<RunState>(broker, &format!("run.{worker}.*"))
        .await?
        .into_iter()
        .map(|(_, state)| state)
        .collect();
    states.sort_by(|a, b| {
        b.scheduled_at
            .cmp(&a.scheduled_at)
            .then(b.run_id.cmp(&a.run_id))
    });
    states.truncate(limit);
    Ok(states)
}

/// The state of run `run_id`, wherever its worker.
pub async fn find_run(broker: &Broker, run_id: Uuid) -> Result<RunState, HistoryError> {
    let runs = broker.bucket(&broker.names().runs_bucket()).await?;
    runs.get_matching::<RunState>(&run_key_pattern(run_id))
        .await?
        .map(|state| state.value)
        .ok_or(HistoryError::UnknownRun(run_id))
}

/// The fires of `worker` that did not run since `since`, oldest first.
pub async fn skipped_of(
    broker: &Broker,
    worker: &str,
    since: DateTime<Utc>,
) -> Result<Vec<SkippedFire>, HistoryError> {
    let messages = broker
        .read_stream(
            &broker.names().results_stream(),
            &broker.subjects().skipped(worker),
            ReadFrom::Since(since),
        )
        .await?;
    Ok(messages
        .iter()
        .filter_map(|m| decode::<SkippedFire>("skipped fire", &m.payload).ok())
        .collect())
}

/// Dead letters, the latest copy of each, oldest first; of one worker or all.
pub async fn dead_letters(
    broker: &Broker,
    worker: Option<&str>,
) -> Result<Vec<DeadLetter>, HistoryError> {
    let subjects = broker.subjects();
    let filter = match worker {
        Some(worker) => subjects.dead_letter(worker),
        None => subjects.all(SubjectKind::DeadLetter),
    };
    let messages = broker
        .read_stream(&broker.names().dead_letter_stream(), &filter, ReadFrom::All)
        .await?;
    let mut latest: HashMap<Uuid, usize> = HashMap::new();
    let mut letters: Vec<DeadLetter> = Vec::new();
    for message in messages {
        let Ok(letter) = decode::<DeadLetter>("dead letter", &message.payload) else {
            continue;
        };
        match latest.get(&letter.run_id) {
            Some(&index) => letters[index] = letter,
            None => {
                latest.insert(letter.run_id, letters.len());
                letters.push(letter);
            }
        }
    }
    Ok(letters)
}

/// The dead letter of run `run_id`.
pub async fn dead_letter(broker: &Broker, run_id: Uuid) -> Result<DeadLetter, HistoryError> {
    dead_letters(broker, None)
        .await?
        .into_iter()
        .find(|letter| letter.run_id == run_id)
        .ok_or(HistoryError::NoDeadLetter(run_id))
}

/// Replays a dead letter: publishes a new run of its command (trigger
/// `replay`, `replay_of` the dead run) and marks the letter replayed.
pub async fn replay(
    broker: &Broker,
    config: &Config,
    letter: &DeadLetter,
) -> Result<RunCommand, HistoryError> {
    if let Some(replayed_by) = letter.replayed_by {
        return Err(HistoryError::AlreadyReplayed {
            run_id: letter.run_id,
            replayed_by,
        });
    }
    let old = letter
        .command
        .as_ref()
        .ok_or(HistoryError::NothingToReplay(letter.run_id))?;
    let worker =
        config
            .registry
            .get(&letter.worker)
            .ok_or_else(|| HistoryError::UnknownWorker {
                run_id: letter.run_id,
                worker: letter.worker.clone(),
            })?;
    let now = Utc::now();
    let mut command = RunCommand::new(Uuid::now_v7(), &*worker.name, now, Trigger::Replay);
    command.params = old.params.clone();
    command.replay_of = Some(letter.run_id);
    command.workflow = old.workflow.clone();
    command.deadline =
        Some(worker.run_deadline(now, config.agent.ack_wait, config.validator.slack));
    command.enforcement_digest = match &worker.enforcement {
        None => None,
        Some(bundle) => {
            let workers = broker.bucket(&broker.names().workers_bucket()).await?;
            workers
                .get::<BundleRef>(&bundle_key(bundle))
                .await?
                .map(|v| v.value.digest)
        }
    };
    let subjects = broker.subjects();
    broker
        .publish(
            &subjects.run(&worker.name),
            Some(&format!("replay:{}", letter.run_id)),
            encode(&command).unwrap_or_default(),
        )
        .await?;
    let mut marked = letter.clone();
    marked.replayed_by = Some(command.run_id);
    broker
        .publish(
            &subjects.dead_letter(&letter.worker),
            Some(&format!("replayed:{}", letter.run_id)),
            encode(&marked).unwrap_or_default(),
        )
        .await?;
    Ok(command)
}

/// Deletes dead letters, of one worker or all; how many messages went.
pub async fn purge(broker: &Broker, worker: Option<&str>) -> Result<u64, HistoryError> {
    let subjects = broker.subjects();
    let filter = match worker {
        Some(worker) => subjects.dead_letter(worker),
        None => subjects.all(SubjectKind::DeadLetter),
    };
    Ok(broker
        .purge(&broker.names().dead_letter_stream(), &filter)
        .await?)
}

/// Asks the agents to cancel run `run_id`: the one running it stops it, and
/// one that receives it later reports it cancelled without starting it.
pub async fn cancel(broker: &Broker, run_id: Uuid, reason: &str) -> Result<RunState, HistoryError> {
    let state = find_run(broker, run_id).await?;
    if let Some(verdict) = state.verdict {
        return Err(HistoryError::Finished {
            run_id,
            verdict: verdict.as_str().to_owned(),
        });
    }
    let request = CancelRequest {
        v: WIRE_VERSION,
        worker: state.worker.clone(),
        run_id: Some(run_id),
        before: None,
        keep: None,
        reason: reason.to_owned(),
        requested_at: Utc::now(),
    };
    broker
        .publish(
            &broker.subjects().cancel(&state.worker),
            Some(&format!("cancel:{run_id}")),
            encode(&request).unwrap_or_default(),
        )
        .await?;
    Ok(state)
}
