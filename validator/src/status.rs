//! The mesh at a glance, for `loom status`, the dashboard and the JSON API
//! (`docs/api.md`): every worker's health, schedule and recent figures, the
//! leader, the agents and what they run.
//!
//! Everything is read from JetStream (the workers, runs, leader and agents
//! buckets and the dead-letter stream) at the moment of the call, so any
//! process with a connection answers the same way. A call reads every run
//! in the history once; callers that answer often (the dashboard) cache the
//! answer for a few seconds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use loom_broker::Broker;
use loom_config::{Config, Worker};
use loom_protocol::VerdictKind;
use loom_protocol::state::{
    AgentPresence, LEADER_KEY, LeaderRecord, Pause, RunState, RunStatus, WorkerHealth,
};
use loom_protocol::{DeadLetter, SkippedFire};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::history::{self, HistoryError};

/// The answer of `GET /api/workers` and `loom status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// When this was read.
    pub generated_at: DateTime<Utc>,
    /// The scheduler holding the lease, if any.
    pub leader: Option<LeaderRecord>,
    /// The agents alive now, by id.
    pub agents: Vec<AgentView>,
    /// Every worker of the registry, in name order.
    pub workers: Vec<WorkerView>,
}

/// An agent alive now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// Its id.
    pub id: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// The workers it serves.
    pub workers: Vec<String>,
    /// How many runs it executes now.
    pub running: usize,
    /// How many it executes at once at most.
    pub concurrency: u32,
    /// When it last wrote its presence.
    pub seen_at: DateTime<Utc>,
}

/// One worker's line of the overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Registry name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Whether its schedule fires.
    pub enabled: bool,
    /// The schedule expression; `None` for manual-only workers.
    pub schedule: Option<String>,
    /// The schedule in words.
    pub schedule_description: Option<String>,
    /// Its IANA time zone.
    pub timezone: String,
    /// Labels an agent must serve.
    pub labels: Vec<String>,
    /// Its next fire, unless disabled or manual-only.
    pub next_run: Option<DateTime<Utc>>,
    /// Its pause, if paused now.
    pub paused: Option<Pause>,
    /// Its last run with a verdict.
    pub last_run: Option<LastRun>,
    /// When its last valid run got its verdict.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Runs in a row without a valid verdict.
    pub consecutive_failures: u32,
    /// Runs scheduled in the last 24 hours.
    pub runs_24h: u64,
    /// Valid runs over runs with a verdict in the last 24 hours.
    pub success_rate_24h: Option<f64>,
    /// The 95th percentile of the last attempts' durations over 24 hours.
    pub p95_duration_ms: Option<u64>,
    /// Runs without a verdict yet.
    pub open_runs: u64,
    /// Dead letters not replayed.
    pub dead_letters: u64,
    /// Where it stands.
    pub status: WorkerStatus,
}

/// A worker's last run with a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// The run.
    pub run_id: Uuid,
    /// Its scheduled instant.
    pub scheduled_at: DateTime<Utc>,
    /// Its verdict.
    pub verdict: VerdictKind,
    /// Why.
    pub reason: Option<String>,
    /// When the verdict was given.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a worker stands, most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Its last verdict was not valid, or it has dead letters not replayed.
    Failing,
    /// Paused now.
    Paused,
    /// A run is in flight and nothing failed.
    Running,
    /// Its last verdict was valid.
    Ok,
    /// No run has a verdict yet.
    NeverRun,
    /// Not enabled (manual runs still work).
    Disabled,
}

impl WorkerStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Failing => "failing",
            WorkerStatus::Paused => "paused",
            WorkerStatus::Running => "running",
            WorkerStatus::Ok => "ok",
            WorkerStatus::NeverRun => "never_run",
            WorkerStatus::Disabled => "disabled",
        }
    }
}

/// The answer of `GET /api/runs?worker=W`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRuns {
    /// The worker.
    pub worker: String,
    /// Its recent runs, newest first.
    pub runs: Vec<RunView>,
    /// Its fires that did not run in the last 24 hours, oldest first.
    pub skipped: Vec<SkippedFire>,
}

/// A run of the history, and the agent running it now if one is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// The run's state (`status` is `running` while an agent executes it).
    #[serde(flatten)]
    pub state: RunState,
    /// The agent executing it now.
    pub running_on: Option<String>,
}

const DAY: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Reads the overview of every worker of `config`'s registry.
pub async fn overview(broker: &Broker, config: &Config) -> Result<Overview, HistoryError> {
    let now = Utc::now();
    let names = broker.names();
    let workers_bucket = broker.bucket(&names.workers_bucket()).await?;
    let healths: HashMap<String, WorkerHealth> = strip(
        workers_bucket
            .snapshot::<WorkerHealth>(broker, "health.*")
            .await?,
        "health.",
    );
    let pauses: HashMap<String, Pause> = strip(
        workers_bucket.snapshot::<Pause>(broker, "pause.*").await?,
        "pause.",
    );
    let runs_bucket = broker.bucket(&names.runs_bucket()).await?;
    let mut runs: HashMap<String, Vec<RunState>> = HashMap::new();
    for (_, run) in runs_bucket.snapshot::<RunState>(broker, "run.>").await? {
        runs.entry(run.worker.clone()).or_default().push(run);
    }
    let mut dead: HashMap<String, u64> = HashMap::new();
    for letter in history::dead_letters(broker, None).await? {
        if letter.replayed_by.is_none() {
            *dead.entry(letter.worker).or_default() += 1;
        }
    }
    let leader = broker
        .bucket(&names.leader_bucket())
        .await?
        .get::<LeaderRecord>(LEADER_KEY)
        .await?
        .map(|v| v.value);
    let presences = agents(broker).await?;
    let workers = config
        .registry
        .workers()
        .map(|worker| {
            view(
                worker,
                now,
                healths.get(&*worker.name),
                pauses.get(&*worker.name),
                runs.get(&*worker.name).map_or(&[][..], Vec::as_slice),
                dead.get(&*worker.name).copied().unwrap_or(0),
            )
        })
        .collect();
    Ok(Overview {
        generated_at: now,
        leader,
        agents: presences
            .into_iter()
            .map(|p| AgentView {
                running: p.running.len(),
                id: p.id,
                labels: p.labels,
                workers: p.workers,
                concurrency: p.concurrency,
                seen_at: p.seen_at,
            })
            .collect(),
        workers,
    })
}

/// The agents alive now, by id.
pub async fn agents(broker: &Broker) -> Result<Vec<AgentPresence>, HistoryError> {
    let bucket = broker.bucket(&broker.names().agents_bucket()).await?;
    let mut agents: Vec<AgentPresence> = bucket
        .snapshot::<AgentPresence>(broker, "agent.*")
        .await?
        .into_iter()
        .map(|(_, presence)| presence)
        .collect();
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(agents)
}

/// Which agent executes `run_id` now, according to `agents`.
pub fn running_on(agents: &[AgentPresence], run_id: Uuid) -> Option<&AgentPresence> {
    agents
        .iter()
        .find(|agent| agent.running.iter().any(|r| r.run_id == run_id))
}

/// The recent runs of `worker` (at most `limit`, newest first), marked
/// running where an agent executes them, and its skipped fires of the last
/// 24 hours.
pub async fn worker_runs(
    broker: &Broker,
    worker: &str,
    limit: usize,
) -> Result<WorkerRuns, HistoryError> {
    let states = history::runs_of(broker, worker, limit).await?;
    let presences = agents(broker).await?;
    let runs = states
        .into_iter()
        .map(|mut state| {
            // Presence lags a little behind verdicts: a run with its
            // verdict runs nowhere, whatever an agent last wrote.
            let agent = (state.status != RunStatus::Done)
                .then(|| running_on(&presences, state.run_id).map(|a| a.id.clone()))
                .flatten();
            if agent.is_some() {
                state.status = RunStatus::Running;
            }
            RunView {
                state,
                running_on: agent,
            }
        })
        .collect();
    let skipped = history::skipped_of(broker, worker, Utc::now() - DAY).await?;
    Ok(WorkerRuns {
        worker: worker.to_owned(),
        runs,
        skipped,
    })
}

/// Dead letters, newest first, of one worker or all.
pub async fn dead_letters_newest_first(
    broker: &Broker,
    worker: Option<&str>,
) -> Result<Vec<DeadLetter>, HistoryError> {
    let mut letters = history::dead_letters(broker, worker).await?;
    letters.sort_by_key(|letter| std::cmp::Reverse(letter.dead_at));
    Ok(letters)
}

fn strip<T>(entries: Vec<(String, T)>, prefix: &str) -> HashMap<String, T> {
    entries
        .into_iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(prefix)?.to_owned(), value)))
        .collect()
}

/// One worker's line from what was read.
fn view(
    worker: &Worker,
    now: DateTime<Utc>,
    health: Option<&WorkerHealth>,
    pause: Option<&Pause>,
    runs: &[RunState],
    dead_letters: u64,
) -> WorkerView {
    let health = health.cloned().unwrap_or_default();
    let paused = pause.filter(|p| p.holds_at(now)).cloned();
    let last_run = health.last_run_id.and_then(|id| {
        let verdict = health.last_verdict?;
        let state = runs.iter().find(|r| r.run_id == id);
        Some(LastRun {
            run_id: id,
            scheduled_at: state.map_or(health.last_run_at.unwrap_or(now), |s| s.scheduled_at),
            verdict,
            reason: state.and_then(|s| s.reason.clone()),
            finished_at: health.last_run_at,
        })
    });
    let recent: Vec<&RunState> = runs.iter().filter(|r| r.scheduled_at > now - DAY).collect();
    let judged: Vec<&&RunState> = recent.iter().filter(|r| r.verdict.is_some()).collect();
    let valid = judged
        .iter()
        .filter(|r| r.verdict == Some(VerdictKind::Valid))
        .count();
    let success_rate_24h = (!judged.is_empty()).then(|| valid as f64 / judged.len() as f64);
    let mut durations: Vec<u64> = recent
        .iter()
        .filter_map(|r| r.attempts.last().map(|a| a.duration_ms))
        .collect();
    durations.sort_unstable();
    let p95_duration_ms = percentile(&durations, 0.95);
    let open_runs = runs.iter().filter(|r| r.status != RunStatus::Done).count() as u64;
    let failing = health
        .last_verdict
        .is_some_and(|v| v != VerdictKind::Valid && v != VerdictKind::Cancelled)
        || dead_letters > 0;
    let status = if !worker.enabled && worker.schedule.is_some() {
        WorkerStatus::Disabled
    } else if failing {
        WorkerStatus::Failing
    } else if paused.is_some() {
        WorkerStatus::Paused
    } else if open_runs > 0 {
        WorkerStatus::Running
    } else if health.last_verdict.is_some() {
        WorkerStatus::Ok
    } else {
        WorkerStatus::NeverRun
    };
    let next_run = match (&worker.schedule, worker.enabled) {
        (Some(schedule), true) => schedule.next_fire(now),
        _ => None,
    };
    WorkerView {
        name: worker.name.to_string(),
        description: worker.description.clone(),
        enabled: worker.enabled,
        schedule: worker.schedule.as_ref().map(|s| s.expression().to_owned()),
        schedule_description: worker.schedule.as_ref().map(|s| s.describe()),
        timezone: worker.timezone.name().to_owned(),
        labels: worker.labels.clone(),
        next_run,
        paused,
        last_run,
        last_success_at: health.last_success_at,
        consecutive_failures: health.consecutive_failures,
        runs_24h: recent.len() as u64,
        success_rate_24h,
        p95_duration_ms,
        open_runs,
        dead_letters,
        status,
    }
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[u64], quantile: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 0.95), None);
        assert_eq!(percentile(&[7], 0.95), Some(7));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 0.95), Some(95));
        assert_eq!(percentile(&hundred, 0.5), Some(50));
        assert_eq!(percentile(&[1, 2, 3], 0.95), Some(3));
    }
}
