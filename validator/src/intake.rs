//! What the validator does with each message it consumes: run commands
//! (every run enters the books, or is rejected), results (attempts are
//! recorded; the last one is judged), and JetStream's max-deliveries
//! advisories (a run whose agents kept dying).

use chrono::{DateTime, Utc};
use loom_protocol::codec::{RunDefaults, decode, decode_run_command};
use loom_protocol::identity::message_run_id;
use loom_protocol::state::{BundleRef, RunState, RunStatus, bundle_key};
use loom_protocol::subjects::SubjectKind;
use loom_protocol::{DeadLetterReason, RunResult, Trigger, VerdictKind, metrics};
use serde::Deserialize;
use uuid::Uuid;

use crate::books::{
    Books, BooksError, Conclusion, add_attempt, state_from_command, state_from_result,
};
use crate::judge::{Judgement, judge};

/// Where a consumed message was stored.
pub struct Stored<'a> {
    /// Its subject.
    pub subject: &'a str,
    /// Its body.
    pub payload: &'a [u8],
    /// Its stream sequence.
    pub sequence: u64,
    /// How many times it has been delivered to the validators (1 the first
    /// time).
    pub delivered: u64,
    /// When it was stored.
    pub published: DateTime<Utc>,
}

/// How many deliveries a run's last result waits for its run command to be
/// recorded (each redelivery comes half a second later); after that it is
/// judged without it.
const DELIVERIES_AWAITING_COMMAND: u64 = 10;

/// A message on a run subject.
pub async fn run_command(books: &Books, message: Stored<'_>) -> Result<(), BooksError> {
    let subjects = books.broker.subjects().clone();
    let Some(token) = subjects.worker_of(SubjectKind::Run, message.subject) else {
        tracing::warn!(
            subject = message.subject,
            "ignoring a message on a subject that is not a run subject"
        );
        return Ok(());
    };
    let runs_stream = books.broker.names().runs_stream();
    let defaults = RunDefaults::for_message(&runs_stream, message.sequence, message.published);
    let command = match decode_run_command(token, message.payload, defaults) {
        Ok(command) => command,
        Err(error) => {
            let run_id = message_run_id(&runs_stream, message.sequence, message.published);
            let description = format!("{error} (on {})", message.subject);
            return reject(books, token, run_id, None, description).await;
        }
    };
    let Some(worker) = books.worker(token) else {
        let config = books.config();
        let known: Vec<&str> = config.registry.workers().map(|w| &*w.name).collect();
        let description = format!(
            "unknown worker {token:?}: the registry defines {}",
            list(&known)
        );
        return reject(books, token, command.run_id, Some(command), description).await;
    };
    if command.trigger != Trigger::Schedule {
        metrics::RUNS_SCHEDULED
            .with_label_values(&[&worker.name, command.trigger.as_str()])
            .inc();
    }
    let config = books.config();
    let deadline = command.deadline.unwrap_or_else(|| {
        worker.run_deadline(
            command.scheduled_at,
            config.agent.ack_wait,
            config.validator.slack,
        )
    });
    let written = books
        .record_new_run(
            &worker.name,
            command.run_id,
            || state_from_command(&command, Some(deadline)),
            |state| {
                // A result may have arrived first: fill in what only the command knows.
                if state.command.is_some() {
                    return false;
                }
                state.command = Some(command.clone());
                state.trigger = command.trigger;
                state.scheduled_at = command.scheduled_at;
                state.deadline = Some(deadline);
                true
            },
        )
        .await?;
    if let Some(state) = written
        && state.status != RunStatus::Done
    {
        books.open(&worker.name, command.run_id, deadline).await?;
    }
    Ok(())
}

/// Gives a refused message verdict `rejected` and a dead letter on its own
/// subject token, known worker or not.
async fn reject(
    books: &Books,
    token: &str,
    run_id: Uuid,
    command: Option<loom_protocol::RunCommand>,
    description: String,
) -> Result<(), BooksError> {
    tracing::warn!(worker = token, %run_id, %description, "rejecting a run command");
    let now = Utc::now();
    let base = RunState {
        run_id,
        worker: token.to_owned(),
        trigger: command.as_ref().map_or(Trigger::Manual, |c| c.trigger),
        scheduled_at: command.as_ref().map_or(now, |c| c.scheduled_at),
        deadline: None,
        command,
        status: RunStatus::Queued,
        attempts: Vec::new(),
        verdict: None,
        reason: None,
        verdict_at: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        cost: Default::default(),
        updated_at: now,
    };
    let conclusion = Conclusion {
        judgement: Judgement {
            verdict: VerdictKind::Rejected,
            reason: description.clone(),
        },
        dead_letter: Some(DeadLetterReason::Rejected),
        description: Some(description),
    };
    books.conclude(token, run_id, &base, None, conclusion).await
}

/// A result on a result subject.
pub async fn run_result(books: &Books, message: Stored<'_>) -> Result<(), BooksError> {
    let result: RunResult = match decode("run result", message.payload) {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(subject = message.subject, %error, "dropping a result that does not decode; its run will be declared lost at its deadline");
            return Ok(());
        }
    };
    let worker = books.worker(&result.worker);
    let last = result.last_attempt || worker.as_ref().is_some_and(|w| result.attempt > w.retries);
    if !last {
        let recorded = books
            .update_run(
                &result.worker,
                result.run_id,
                || state_from_result(&result),
                |state| {
                    if state.status == RunStatus::Done {
                        return false;
                    }
                    add_attempt(state, &result);
                    state.status = RunStatus::Retrying;
                    true
                },
            )
            .await?;
        if recorded.is_some() {
            tracing::info!(run_id = %result.run_id, worker = %result.worker, attempt = result.attempt, outcome = result.outcome.as_str(), "attempt failed; the agent retries");
        }
        return Ok(());
    }
    // The last attempt is judged, and recorded with the verdict in one write.
    // Possibly stale, which the compare-and-set in `conclude` finds out.
    let mut state = match books
        .recent_run_state(&result.worker, result.run_id)
        .await?
    {
        Some((state, _)) if state.status == RunStatus::Done => {
            return Ok(()); // already judged (a redelivered result)
        }
        Some((state, _)) => state,
        None => state_from_result(&result),
    };
    if state.command.is_none() && message.delivered < DELIVERIES_AWAITING_COMMAND {
        // The run command is on its way through the other consumer: wait for
        // it, so that a dead letter carries the command to replay.
        return Err(BooksError::CommandNotRecorded {
            run_id: result.run_id,
        });
    }
    add_attempt(&mut state, &result);
    let expected = expected_digest(books, worker.as_deref(), &state).await?;
    let judgement = judge(worker.as_deref(), &result, expected.as_deref());
    let dead_letter = judgement.dead_letter_reason(&result);
    let conclusion = Conclusion {
        judgement,
        dead_letter,
        description: None,
    };
    books
        .conclude(
            &result.worker,
            result.run_id,
            &state,
            Some(&result),
            conclusion,
        )
        .await
}

/// The digest a run had to execute with: the one it was scheduled with, or
/// for a run published without one, the bundle's current digest.
async fn expected_digest(
    books: &Books,
    worker: Option<&loom_config::Worker>,
    state: &RunState,
) -> Result<Option<String>, BooksError> {
    let Some(bundle) = worker.and_then(|w| w.enforcement.as_ref()) else {
        return Ok(None);
    };
    if let Some(digest) = state
        .command
        .as_ref()
        .and_then(|c| c.enforcement_digest.clone())
    {
        return Ok(Some(digest));
    }
    Ok(books
        .workers
        .get::<BundleRef>(&bundle_key(bundle))
        .await?
        .map(|v| v.value.digest))
}

/// JetStream's max-deliveries advisory (the fields Loom reads).
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    stream_seq: u64,
    deliveries: u64,
}

/// A run whose deliveries ran out without a result: its agents kept dying.
pub async fn max_deliveries(books: &Books, message: Stored<'_>) -> Result<(), BooksError> {
    let advisory: MaxDeliveries = match serde_json::from_slice(message.payload) {
        Ok(advisory) => advisory,
        Err(error) => {
            tracing::warn!(%error, "ignoring an unreadable max-deliveries advisory");
            return Ok(());
        }
    };
    let runs_stream = books.broker.names().runs_stream();
    if advisory.stream != runs_stream {
        return Ok(());
    }
    let Some(stored) = books
        .broker
        .stored_message(&runs_stream, advisory.stream_seq)
        .await?
    else {
        return Ok(()); // already dead-lettered and removed
    };
    let subjects = books.broker.subjects().clone();
    let Some(token) = subjects.worker_of(SubjectKind::Run, &stored.subject) else {
        return Ok(());
    };
    let defaults = RunDefaults::for_message(&runs_stream, stored.sequence, stored.stored_at);
    let Ok(command) = decode_run_command(token, &stored.payload, defaults) else {
        books
            .broker
            .delete_stored(&runs_stream, stored.sequence)
            .await?;
        return Ok(());
    };
    let base = books
        .update_run(
            token,
            command.run_id,
            || state_from_command(&command, command.deadline),
            |_| false,
        )
        .await?;
    let current = match base {
        Some(state) => state,
        None => match books.run_state(token, command.run_id).await? {
            Some((state, _)) => state,
            None => state_from_command(&command, command.deadline),
        },
    };
    if current.status != RunStatus::Done {
        let description = format!(
            "agents were lost while running it: JetStream delivered it {} times without a result",
            advisory.deliveries
        );
        let conclusion = Conclusion {
            judgement: Judgement {
                verdict: VerdictKind::Lost,
                reason: description.clone(),
            },
            dead_letter: Some(DeadLetterReason::AgentLost),
            description: Some(description),
        };
        books
            .conclude(token, command.run_id, &current, None, conclusion)
            .await?;
    }
    // JetStream keeps a message that ran out of deliveries; it is dead-lettered now.
    books
        .broker
        .delete_stored(&runs_stream, stored.sequence)
        .await?;
    Ok(())
}

fn list(names: &[&str]) -> String {
    match names.len() {
        0 => "no workers".to_owned(),
        n if n <= 8 => names.join(", "),
        n => format!("{} and {} more", names[..8].join(", "), n - 8),
    }
}
