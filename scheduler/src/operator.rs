//! Operator requests: manual triggers, pause and resume, backfill.
//!
//! These do not go through the leader: a trigger is a run command published
//! on the worker's run subject (as `nats pub` would), a pause is a key every
//! scheduler watches, a backfill publishes the fires of a past range with
//! the very identities those fires have (so one that already ran is not run
//! again).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use loom_broker::{Broker, PublishError, StateError};
use loom_config::schedule::OccurrenceKind;
use loom_config::{Config, Worker};
use loom_protocol::codec::encode;
use loom_protocol::identity::{fire_msg_id, fire_run_id};
use loom_protocol::state::{BundleRef, Pause, bundle_key, pause_key, run_key};
use loom_protocol::{RunCommand, Trigger};
use uuid::Uuid;

/// Why an operator request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The registry has no such worker.
    #[error("worker {name:?} is not in the registry{hint}")]
    UnknownWorker {
        /// The name given.
        name: String,
        /// `; did you mean "x"?`, or empty.
        hint: String,
    },
    /// The worker is disabled.
    #[error("worker {0:?} is disabled (enabled = false in {1}); enable it to trigger it")]
    Disabled(String, String),
    /// The worker has no schedule to backfill.
    #[error("worker {0:?} has no schedule, so it has no past fires to backfill")]
    NoSchedule(String),
    /// The range holds more fires than allowed.
    #[error(
        "worker {worker:?} fires {count} times from {from} to {to}, more than --max {max}; narrow the range or raise --max"
    )]
    TooManyFires {
        /// The worker.
        worker: String,
        /// Fires in the range.
        count: usize,
        /// The bound.
        max: usize,
        /// Range start.
        from: DateTime<Utc>,
        /// Range end.
        to: DateTime<Utc>,
    },
    /// The range is empty or reversed.
    #[error("backfill range is empty: --from {from} is not before --to {to}")]
    EmptyRange {
        /// Range start.
        from: DateTime<Utc>,
        /// Range end.
        to: DateTime<Utc>,
    },
    /// A pause end is not in the future.
    #[error("--until {0} is not in the future")]
    PastUntil(DateTime<Utc>),
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A bucket could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl OperatorError {
    /// Whether the request itself was wrong (as opposed to the broker failing).
    pub fn is_usage(&self) -> bool {
        !matches!(self, OperatorError::Publish(_) | OperatorError::State(_))
    }
}

/// The worker named `name`, or the error that says it does not exist.
pub fn find_worker<'c>(config: &'c Config, name: &str) -> Result<&'c Worker, OperatorError> {
    config.registry.get(name).ok_or_else(|| {
        let names: Vec<&str> = config.registry.workers().map(|w| &*w.name).collect();
        let hint = closest(name, &names)
            .map(|near| format!("; did you mean {near:?}?"))
            .unwrap_or_default();
        OperatorError::UnknownWorker {
            name: name.to_owned(),
            hint,
        }
    })
}

fn closest<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .filter(|candidate| {
            candidate.contains(name) || name.contains(candidate) || shares_prefix(name, candidate)
        })
        .min_by_key(|candidate| candidate.len().abs_diff(name.len()))
}

fn shares_prefix(a: &str, b: &str) -> bool {
    a.len() >= 4 && b.len() >= 4 && a[..4] == b[..4]
}

/// The digest currently published for the worker's bundle, if it names one.
async fn current_digest(broker: &Broker, worker: &Worker) -> Result<Option<String>, StateError> {
    let Some(bundle) = &worker.enforcement else {
        return Ok(None);
    };
    let bucket = broker.bucket(&broker.names().workers_bucket()).await?;
    Ok(bucket
        .get::<BundleRef>(&bundle_key(bundle))
        .await?
        .map(|v| v.value.digest))
}

/// Publishes a manual run of `worker` with `params` and returns its command.
pub async fn trigger(
    broker: &Broker,
    config: &Config,
    worker: &str,
    params: BTreeMap<String, String>,
) -> Result<RunCommand, OperatorError> {
    let worker = find_worker(config, worker)?;
    if !worker.enabled {
        return Err(OperatorError::Disabled(
            worker.name.to_string(),
            worker.source.display().to_string(),
        ));
    }
    let now = Utc::now();
    let mut command = RunCommand::new(Uuid::now_v7(), &*worker.name, now, Trigger::Manual);
    command.params = params;
    command.enforcement_digest = current_digest(broker, worker).await?;
    command.deadline =
        Some(worker.run_deadline(now, config.agent.ack_wait, config.validator.slack));
    let payload = encode(&command).map_err(|e| PublishError {
        subject: broker.subjects().run(&worker.name),
        detail: e.to_string(),
    })?;
    let msg_id = format!("manual:{}", command.run_id);
    broker
        .publish(&broker.subjects().run(&worker.name), Some(&msg_id), payload)
        .await?;
    Ok(command)
}

/// Pauses `worker`: every scheduler records its fires as skipped until
/// `until` (or until resumed).
pub async fn pause(
    broker: &Broker,
    config: &Config,
    worker: &str,
    until: Option<DateTime<Utc>>,
    note: &str,
) -> Result<Pause, OperatorError> {
    let worker = find_worker(config, worker)?;
    let now = Utc::now();
    if let Some(until) = until
        && until <= now
    {
        return Err(OperatorError::PastUntil(until));
    }
    let pause = Pause {
        until,
        note: note.to_owned(),
        at: now,
    };
    let bucket = broker.bucket(&broker.names().workers_bucket()).await?;
    bucket.put(&pause_key(&worker.name), &pause).await?;
    Ok(pause)
}

/// Resumes `worker`; whether it was paused. Fires skipped while paused stay
/// skipped: resuming never releases a burst of old fires.
pub async fn resume(broker: &Broker, config: &Config, worker: &str) -> Result<bool, OperatorError> {
    let worker = find_worker(config, worker)?;
    let bucket = broker.bucket(&broker.names().workers_bucket()).await?;
    let key = pause_key(&worker.name);
    let was_paused = bucket.get::<Pause>(&key).await?.is_some();
    if was_paused {
        bucket.delete(&key).await?;
    }
    Ok(was_paused)
}

/// What a backfill did with each fire of its range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Fires published now.
    pub published: Vec<(DateTime<Utc>, Uuid)>,
    /// Fires that had already run (their run is in the run history).
    pub already_ran: Vec<(DateTime<Utc>, Uuid)>,
    /// Fires published recently enough that JetStream dropped this copy.
    pub duplicates: Vec<(DateTime<Utc>, Uuid)>,
}

/// Publishes the fires of `worker` in `[from, to]`, at most `max` of them,
/// with the identities the real fires have: a fire whose run is in the run
/// history is not run again, and one published within the duplicate window
/// is dropped by JetStream. Runs queue on the worker's consumer, so they
/// execute one at a time, in order (up to `concurrency` with `overlap =
/// "allow"`).
pub async fn backfill(
    broker: &Broker,
    config: &Config,
    worker: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: usize,
) -> Result<BackfillReport, OperatorError> {
    let worker = find_worker(config, worker)?;
    let Some(schedule) = &worker.schedule else {
        return Err(OperatorError::NoSchedule(worker.name.to_string()));
    };
    if from >= to {
        return Err(OperatorError::EmptyRange { from, to });
    }
    let fires: Vec<DateTime<Utc>> = schedule
        .occurrences(from - chrono::Duration::seconds(1))
        .take_while(|o| o.instant <= to)
        .filter(|o| o.kind == OccurrenceKind::Fire && o.instant >= from)
        .map(|o| o.instant)
        .take(max + 1)
        .collect();
    if fires.len() > max {
        let count = schedule
            .occurrences(from - chrono::Duration::seconds(1))
            .take_while(|o| o.instant <= to)
            .filter(|o| o.kind == OccurrenceKind::Fire && o.instant >= from)
            .count();
        return Err(OperatorError::TooManyFires {
            worker: worker.name.to_string(),
            count,
            max,
            from,
            to,
        });
    }
    let runs = broker.bucket(&broker.names().runs_bucket()).await?;
    let digest = current_digest(broker, worker).await?;
    let mut report = BackfillReport::default();
    for instant in fires {
        let run_id = fire_run_id(&worker.name, instant);
        if runs
            .get::<serde_json::Value>(&run_key(&worker.name, run_id))
            .await?
            .is_some()
        {
            report.already_ran.push((instant, run_id));
            continue;
        }
        let mut command = RunCommand::new(run_id, &*worker.name, instant, Trigger::Backfill);
        command.enforcement_digest = digest.clone();
        command.deadline =
            Some(worker.run_deadline(Utc::now(), config.agent.ack_wait, config.validator.slack));
        let payload = encode(&command).map_err(|e| PublishError {
            subject: broker.subjects().run(&worker.name),
            detail: e.to_string(),
        })?;
        let stored = broker
            .publish(
                &broker.subjects().run(&worker.name),
                Some(&fire_msg_id(&worker.name, instant)),
                payload,
            )
            .await?;
        if stored.duplicate {
            report.duplicates.push((instant, run_id));
        } else {
            report.published.push((instant, run_id));
        }
    }
    Ok(report)
}
