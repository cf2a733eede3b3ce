//! What Loom keeps in its key-value buckets, and under which keys.
//!
//! Values are JSON so that `nats kv get` shows them to people. Each key has
//! one writer: the leader lease the schedulers, `fire.*` the leader scheduler,
//! `pause.*` the operator commands, `bundle.*` whoever publishes enforcement
//! bundles, `agent.*` in the agents bucket each agent its own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::{AttemptSummary, RunCommand, Trigger, VerdictKind};

/// Key of the leader lease in the leader bucket.
pub const LEADER_KEY: &str = "scheduler";

/// Key of a worker's fire state: `fire.<worker>`.
pub fn fire_key(worker: &str) -> String {
    format!("fire.{worker}")
}

/// Key of a worker's pause: `pause.<worker>`.
pub fn pause_key(worker: &str) -> String {
    format!("pause.{worker}")
}

/// Key of a worker's health, kept by the validator: `health.<worker>`.
pub fn health_key(worker: &str) -> String {
    format!("health.{worker}")
}

/// Key of a run's state in the runs bucket: `run.<worker>.<run_id>`, so one
/// worker's history reads with a subject filter.
pub fn run_key(worker: &str, run_id: Uuid) -> String {
    format!("run.{worker}.{run_id}")
}

/// The keys a run's state may have, whatever its worker: `run.*.<run_id>`,
/// for a look-up by run id alone (one direct get; earlier versions kept an
/// index key `id.<run_id>` for it, one more write per run).
pub fn run_key_pattern(run_id: Uuid) -> String {
    format!("run.*.{run_id}")
}

/// Key marking a run as open (no verdict yet) in the runs bucket:
/// `open.<run_id>`. The watchdog loads only these.
pub fn open_key(run_id: Uuid) -> String {
    format!("open.{run_id}")
}

/// Key of one alert group's state, kept by Klaxon: `alert.<worker>.<reason>`.
pub fn alert_key(worker: &str, reason: &str) -> String {
    format!("alert.{worker}.{reason}")
}

/// Key of Klaxon's count of a worker's dead letters since its last valid
/// run: `failures.<worker>`.
pub fn failures_key(worker: &str) -> String {
    format!("failures.{worker}")
}

/// Key of the current digest of an enforcement bundle: `bundle.<name>`.
pub fn bundle_key(name: &str) -> String {
    format!("bundle.{name}")
}

/// Key of an agent's presence in the agents bucket: `agent.<id>`, the id's
/// characters that cannot be in a key replaced by `_`.
pub fn presence_key(agent_id: &str) -> String {
    let token: String = agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("agent.{token}")
}

/// How often an agent rewrites its presence when nothing changes.
pub const PRESENCE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a presence outlives its last write: an agent that died vanishes
/// from the agents bucket after this (the bucket's max age).
pub const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// An agent's presence: what it serves and what it runs now. Each agent
/// writes its own key on every change and every [`PRESENCE_HEARTBEAT`], and
/// deletes it when it stops; the key expires after [`PRESENCE_TTL`] if the
/// agent dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPresence {
    /// The agent's id (as in results).
    pub id: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// The workers it serves, sorted.
    pub workers: Vec<String>,
    /// How many runs it executes at once.
    pub concurrency: u32,
    /// The runs executing on it now.
    pub running: Vec<RunningAttempt>,
    /// When the agent started.
    pub started_at: DateTime<Utc>,
    /// When it wrote this.
    pub seen_at: DateTime<Utc>,
}

/// A run executing on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningAttempt {
    /// The run.
    pub run_id: Uuid,
    /// Its worker.
    pub worker: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// When the worker process started.
    pub started_at: DateTime<Utc>,
}

/// Who holds the leader lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The scheduler's id.
    pub id: String,
    /// When it became leader.
    pub since: DateTime<Utc>,
}

/// Where the leader scheduler stands with a worker: the last fire it
/// published (or recorded as not run). A new leader resumes after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FireState {
    /// The last fire instant handled.
    pub last_fire: DateTime<Utc>,
    /// The run id of the last fire published, if it was.
    pub last_run_id: Option<Uuid>,
}

/// A worker's pause, set by `loom pause` and removed by `loom resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Paused until this instant; `None` until resumed.
    pub until: Option<DateTime<Utc>>,
    /// Why, for people.
    pub note: String,
    /// When it was paused.
    pub at: DateTime<Utc>,
}

impl Pause {
    /// Whether the pause holds at `instant`.
    pub fn holds_at(&self, instant: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| instant < until)
    }
}

/// The current published version of an enforcement bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// Lower-case hex SHA-256 of the bundle archive; its object name.
    pub digest: String,
    /// Archive size in bytes.
    pub size: u64,
    /// When this version was published.
    pub published_at: DateTime<Utc>,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Published; no attempt has reported yet.
    Queued,
    /// An agent executes it now. Never stored: views (the run history of
    /// the API, `loom trigger --wait`) derive it from agent presence.
    Running,
    /// An attempt failed and another will follow.
    Retrying,
    /// It has its verdict.
    Done,
}

/// A run's state, kept by the validator under the run id: the run history
/// that `loom runs` and the dashboard read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run.
    pub run_id: Uuid,
    /// Its worker.
    pub worker: String,
    /// Why it exists.
    pub trigger: Trigger,
    /// Its scheduled instant.
    pub scheduled_at: DateTime<Utc>,
    /// By when it must have a verdict.
    pub deadline: Option<DateTime<Utc>>,
    /// Its command, once the validator has seen it.
    pub command: Option<RunCommand>,
    /// Where it stands.
    pub status: RunStatus,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<AttemptSummary>,
    /// Its verdict, once given.
    pub verdict: Option<VerdictKind>,
    /// Why, with the verdict.
    pub reason: Option<String>,
    /// When the verdict was given.
    pub verdict_at: Option<DateTime<Utc>>,
    /// The last attempt's stdout tail (bounded), for people.
    pub stdout_tail: String,
    /// The last attempt's stderr tail (bounded), for people.
    pub stderr_tail: String,
    /// Costs reported, summed over attempts.
    pub cost: std::collections::BTreeMap<String, f64>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The watchdog's entry for an open run: `open.<run_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRun {
    /// Its worker.
    pub worker: String,
    /// By when it must have a verdict.
    pub deadline: DateTime<Utc>,
}

/// A worker's health, kept by the validator: `health.<worker>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHealth {
    /// The last run with a verdict.
    pub last_run_id: Option<Uuid>,
    /// When that verdict was given.
    pub last_run_at: Option<DateTime<Utc>>,
    /// That verdict.
    pub last_verdict: Option<VerdictKind>,
    /// When the last valid run got its verdict.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Runs in a row without a valid verdict (cancelled runs do not count).
    pub consecutive_failures: u32,
}
