//! Stage two: the validated configuration every role is handed.
//!
//! Everything here is already checked and typed (durations, zones,
//! schedules, absolute paths, workflow task levels), so nothing downstream
//! re-checks it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loom_protocol::Subjects;
use loom_protocol::topology::{MeshSettings, Topology, WorkerConsumer};
use serde::{Deserialize, Serialize};

pub use crate::plan::{TaskPlanError, plan_levels};
use crate::schedule::Schedule;

/// Deliveries a run consumer allows beyond the worker's attempts, so that a
/// run whose agent died mid-run (no result, the ack wait ran out) is taken by
/// another agent rather than given up.
pub const LOST_AGENT_REDELIVERIES: i64 = 2;

/// The whole validated configuration of one Loom process.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file it came from, if any.
    pub file: Option<PathBuf>,
    /// Subject prefix, e.g. `loom`.
    pub prefix: String,
    /// How to reach NATS.
    pub nats: NatsSettings,
    /// The HTTP server.
    pub http: HttpSettings,
    /// Local state directory (absolute).
    pub data_dir: PathBuf,
    /// Stream policies.
    pub streams: StreamSettings,
    /// Scheduler settings.
    pub scheduler: SchedulerSettings,
    /// Agent settings.
    pub agent: AgentSettings,
    /// Validator settings.
    pub validator: ValidatorSettings,
    /// Klaxon settings.
    pub klaxon: KlaxonSettings,
    /// Enforcement settings.
    pub enforcement: EnforcementSettings,
    /// The registry: workers and workflows.
    pub registry: Registry,
}

impl Config {
    /// The subjects of this mesh.
    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.prefix.clone())
    }

    /// The settings that shape the JetStream topology.
    pub fn mesh_settings(&self) -> MeshSettings {
        MeshSettings {
            prefix: self.prefix.clone(),
            replicas: self.streams.replicas,
            runs_max_age: self.streams.runs_max_age,
            history: self.streams.history,
            dead_letter_max_age: self.streams.dead_letter_max_age,
            duplicate_window: self.streams.duplicate_window,
            lease_ttl: self.scheduler.lease_ttl,
        }
    }

    /// The JetStream topology this configuration needs: the mesh's streams,
    /// buckets and a run consumer for every registry worker.
    pub fn topology(&self) -> Topology {
        let consumers: Vec<WorkerConsumer> = self
            .registry
            .workers()
            .map(|worker| worker.consumer(self.agent.ack_wait))
            .collect();
        Topology::new(&self.mesh_settings(), &consumers)
    }
}

/// How to reach NATS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NatsSettings {
    /// Server URLs; empty means "use the embedded server".
    pub urls: Vec<String>,
    /// How to authenticate.
    pub auth: NatsAuth,
    /// TLS, if required.
    pub tls: Option<TlsSettings>,
}

/// One way of authenticating to NATS. Its `Debug` output names the method
/// and the user, never a seed, token or password, so a logged config leaks
/// nothing.
#[derive(Clone, Default, PartialEq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A credentials file (JWT and seed).
    CredentialsFile(PathBuf),
    /// An nkey seed.
    NKey(String),
    /// A token.
    Token(String),
    /// User and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HIDDEN: &str = "<hidden>";
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::CredentialsFile(path) => {
                f.debug_tuple("CredentialsFile").field(path).finish()
            }
            NatsAuth::NKey(_) => f.debug_tuple("NKey").field(&HIDDEN).finish(),
            NatsAuth::Token(_) => f.debug_tuple("Token").field(&HIDDEN).finish(),
            NatsAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &HIDDEN)
                .finish(),
        }
    }
}

/// TLS files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsSettings {
    /// CA certificate to verify the server.
    pub ca: Option<PathBuf>,
    /// Client certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Listen address.
    pub listen: SocketAddr,
}

/// Stream policies.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Replicas per stream and bucket.
    pub replicas: usize,
    /// Age of an unconsumed run command.
    pub runs_max_age: Duration,
    /// Run history retention.
    pub history: Duration,
    /// Dead-letter retention.
    pub dead_letter_max_age: Duration,
    /// `Nats-Msg-Id` duplicate window.
    pub duplicate_window: Duration,
}

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerSettings {
    /// Leader lease TTL.
    pub lease_ttl: Duration,
}

/// Agent settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Agent id, if configured (the agent derives one otherwise).
    pub id: Option<String>,
    /// Labels served.
    pub labels: Vec<String>,
    /// Workers served (empty: all that the labels allow).
    pub workers: Vec<String>,
    /// Runs at once.
    pub concurrency: NonZeroU32,
    /// Consumer ack wait.
    pub ack_wait: Duration,
    /// Drain time on shutdown.
    pub drain_timeout: Duration,
}

/// Validator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorSettings {
    /// Extra time before a silent run is declared lost.
    pub slack: Duration,
}

/// Klaxon settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KlaxonSettings {
    /// Alert sinks.
    pub sinks: Vec<Sink>,
    /// Repeat interval of a firing alert.
    pub repeat_interval: Duration,
}

/// One alert sink.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// Structured log lines.
    Log,
    /// JSON POST.
    Webhook {
        /// Where to POST.
        url: String,
        /// HMAC-SHA256 secret.
        secret: Option<String>,
    },
    /// Alertmanager API v2.
    Alertmanager {
        /// Base URL.
        url: String,
    },
}

/// Enforcement settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnforcementSettings {
    /// Directory of bundles (absolute).
    pub dir: Option<PathBuf>,
}

/// What a fire does while a run of its worker is in flight (Temporal's
/// overlap policies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Every fire waits its turn; at most one runs anywhere in the mesh.
    Forbid,
    /// At most one fire waits; further fires are skipped.
    BufferOne,
    /// A fire while a run is in flight is not run (recorded as skipped).
    #[default]
    Skip,
    /// The in-flight run is cancelled and the new one starts.
    Replace,
    /// Up to `concurrency` runs at once.
    Allow,
}

/// What to do with fires missed while the mesh was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run none of them (each is recorded as missed).
    None,
    /// Run the most recent one within the starting deadline.
    #[default]
    Last,
    /// Run every one within the starting deadline.
    All,
}

/// The output contract's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// The last non-empty stdout line is `STATUS: <word> [detail]`.
    StatusLine,
    /// Stdout is one JSON object.
    Json,
    /// Anything; the exit status decides.
    #[default]
    Text,
}

/// Retry delays: exponential, capped, with random spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per retry (at least 1).
    pub factor: f64,
    /// Spread as a fraction of the delay, 0 to 1.
    pub jitter: f64,
}

/// A worker's output contract.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputContract {
    /// Format.
    pub format: OutputFormat,
    /// Most stdout bytes.
    pub max_bytes: u64,
    /// JSON Schema file (absolute), with the `json` format.
    pub schema: Option<PathBuf>,
}

/// One validated worker of the registry.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Registry name (a subject token), shared with the registry's index and
    /// every role that keeps the worker by name.
    pub name: std::sync::Arc<str>,
    /// The file it is defined in, shared with the other workers of that file.
    pub source: std::sync::Arc<Path>,
    /// What it does.
    pub description: String,
    /// When it fires; `None` for manual-only workers.
    pub schedule: Option<Schedule>,
    /// Its time zone.
    pub timezone: chrono_tz::Tz,
    /// Program and arguments, the program resolved.
    pub command: Vec<String>,
    /// Whether its schedule fires.
    pub enabled: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Retry delays.
    pub backoff: Backoff,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Runs at once with [`Overlap::Allow`].
    pub concurrency: NonZeroU32,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// How late a fire may start.
    pub starting_deadline: Duration,
    /// Labels an agent must serve.
    pub labels: Vec<String>,
    /// Environment for the process.
    pub env: BTreeMap<String, String>,
    /// Agent variables passed through.
    pub secrets: Vec<String>,
    /// Enforcement bundle name.
    pub enforcement: Option<String>,
    /// Consecutive failed runs before Klaxon alerts.
    pub alert_after: NonZeroU32,
    /// Output contract.
    pub output: OutputContract,
}

impl Worker {
    /// The run consumer JetStream keeps for this worker. Overlap policies
    /// other than `allow` hold at most one run in flight across the mesh.
    pub fn consumer(&self, ack_wait: Duration) -> WorkerConsumer {
        WorkerConsumer {
            worker: self.name.to_string(),
            ack_wait,
            max_deliver: i64::from(self.retries) + 1 + LOST_AGENT_REDELIVERIES,
            max_ack_pending: match self.overlap {
                Overlap::Allow => i64::from(self.concurrency.get()),
                _ => 1,
            },
        }
    }

    /// The delay before retry number `retry` (1 for the first retry):
    /// `initial * factor^(retry-1)`, capped at `max`, then spread by
    /// `± jitter` using `unit`, a number in `[0, 1)` (random in production,
    /// fixed in tests).
    pub fn retry_delay(&self, retry: u32, unit: f64) -> Duration {
        let backoff = &self.backoff;
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (backoff.initial.as_secs_f64() * backoff.factor.powi(exponent))
            .min(backoff.max.as_secs_f64());
        let spread = base * backoff.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }

    /// By when a run scheduled at `scheduled_at` must have a terminal
    /// verdict: its starting deadline, every attempt's timeout, the longest
    /// backoffs between them, an ack wait for each delivery an agent may be
    /// lost on, and `slack`. Past it the validator declares the run `lost`.
    pub fn run_deadline(
        &self,
        scheduled_at: chrono::DateTime<chrono::Utc>,
        ack_wait: Duration,
        slack: Duration,
    ) -> chrono::DateTime<chrono::Utc> {
        let attempts = self.retries + 1;
        let mut budget = self.starting_deadline + self.timeout * attempts + slack;
        for retry in 1..attempts {
            budget += self.retry_delay(retry, 1.0);
        }
        budget += ack_wait * u32::try_from(LOST_AGENT_REDELIVERIES + 1).unwrap_or(3);
        let budget = chrono::Duration::from_std(budget).unwrap_or(chrono::Duration::days(365));
        scheduled_at + budget
    }

    /// A short description of when it runs: the schedule in words, or
    /// `manual only`.
    pub fn schedule_description(&self) -> String {
        match &self.schedule {
            Some(schedule) => schedule.describe(),
            None => "manual only".to_owned(),
        }
    }
}

/// Ceiling of max_rounds.
pub const MAX_ROUNDS_CEILING: u32 = 10;

/// One validated workflow of the registry (DESIGN §10): tasks naming
/// registry workers, run level by level, with an optional strategist after
/// each round.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Registry name (a subject token).
    pub name: String,
    /// The file it is defined in.
    pub source: PathBuf,
    /// What it does.
    pub description: String,
    /// When it fires; `None` for manual-only workflows.
    pub schedule: Option<Schedule>,
    /// Its time zone.
    pub timezone: chrono_tz::Tz,
    /// Whether its schedule fires.
    pub enabled: bool,
    /// Its tasks, in definition order.
    pub tasks: Vec<WorkflowTask>,
    /// Task ids grouped by level (topological order, see [`plan_levels`]);
    /// within a level in definition order.
    pub levels: Vec<Vec<String>>,
    /// The worker that runs after each round and decides what follows.
    pub strategist: Option<String>,
    /// Most rounds a run of it may take, 1 to [`MAX_ROUNDS_CEILING`].
    pub max_rounds: u32,
    /// Attempts after the first for a task whose output is invalid, before it
    /// is marked blocked.
    pub task_retries: u32,
}

impl Workflow {
    /// The task with this id.
    pub fn task(&self, id: &str) -> Option<&WorkflowTask> {
        self.tasks.iter().find(|task| task.id == id)
    }

    /// A short description of when it runs: the schedule in words, or
    /// `manual only`.
    pub fn schedule_description(&self) -> String {
        match &self.schedule {
            Some(schedule) => schedule.describe(),
            None => "manual only".to_owned(),
        }
    }
}

/// One task of a workflow: a run of a registry worker, after the tasks it
/// depends on. Also the shape of the tasks a strategist spawns; defined with
/// the wire types, since workflow state carries it.
pub use loom_protocol::workflow::WorkflowTask;

/// The registry: every worker and every workflow, by name. Both are shared
/// (`Arc`) with the roles that keep them, so a registry of 100,000 workers is
/// held once.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// The registry file, when the workers came from one.
    pub file: Option<PathBuf>,
    workers: BTreeMap<std::sync::Arc<str>, std::sync::Arc<Worker>>,
    workflows: BTreeMap<String, std::sync::Arc<Workflow>>,
}

impl Registry {
    /// A registry of these workers (and no workflows).
    pub fn new(file: Option<PathBuf>, workers: impl IntoIterator<Item = Worker>) -> Self {
        Registry {
            file,
            workers: workers
                .into_iter()
                .map(|worker| (worker.name.clone(), std::sync::Arc::new(worker)))
                .collect(),
            workflows: BTreeMap::new(),
        }
    }

    /// The same registry with these workflows (replacing any it had).
    pub fn with_workflows(mut self, workflows: BTreeMap<String, Workflow>) -> Self {
        self.workflows = workflows
            .into_iter()
            .map(|(name, workflow)| (name, std::sync::Arc::new(workflow)))
            .collect();
        self
    }

    /// Every worker, in name order.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values().map(|worker| worker.as_ref())
    }

    /// Every worker, shared, in name order.
    pub fn shared_workers(&self) -> impl Iterator<Item = &std::sync::Arc<Worker>> {
        self.workers.values()
    }

    /// The worker called `name`.
    pub fn get(&self, name: &str) -> Option<&Worker> {
        self.workers.get(name).map(|worker| worker.as_ref())
    }

    /// The worker called `name`, shared.
    pub fn shared(&self, name: &str) -> Option<std::sync::Arc<Worker>> {
        self.workers.get(name).cloned()
    }

    /// Every workflow, in name order.
    pub fn workflows(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values().map(|workflow| workflow.as_ref())
    }

    /// The workflow called `name`.
    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.get(name).map(|workflow| workflow.as_ref())
    }

    /// The workflow called `name`, shared.
    pub fn shared_workflow(&self, name: &str) -> Option<std::sync::Arc<Workflow>> {
        self.workflows.get(name).cloned()
    }

    /// The same registry in fresh allocations. Workers built while a large
    /// file was parsed sit scattered among the parser's freed memory, which
    /// then cannot be returned to the system; copies made once that memory
    /// is free sit together, and the scattered originals go.
    pub fn compacted(&self) -> Registry {
        let mut sources: std::collections::HashMap<&Path, std::sync::Arc<Path>> =
            std::collections::HashMap::new();
        Registry {
            file: self.file.clone(),
            workers: self
                .workers
                .values()
                .map(|worker| {
                    // A clone would share the name and the file name with
                    // the scattered originals: copy them too.
                    let mut copy = Worker::clone(worker);
                    copy.name = std::sync::Arc::from(&*worker.name);
                    copy.source = sources
                        .entry(&*worker.source)
                        .or_insert_with(|| std::sync::Arc::from(&*worker.source))
                        .clone();
                    (copy.name.clone(), std::sync::Arc::new(copy))
                })
                .collect(),
            workflows: self
                .workflows
                .iter()
                .map(|(name, workflow)| {
                    (name.clone(), std::sync::Arc::new(Workflow::clone(workflow)))
                })
                .collect(),
        }
    }

    /// How many workers there are (workflows not counted).
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers (workflows not counted).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_credentials_hides_the_secrets() {
        let shown = [
            NatsAuth::NKey("SUAPRIVATESEED".to_owned()),
            NatsAuth::Token("s3cret-token".to_owned()),
            NatsAuth::UserPassword {
                user: "agent".to_owned(),
                password: "hunter2".to_owned(),
            },
        ]
        .map(|auth| format!("{auth:?}"));
        assert_eq!(
            shown,
            [
                r#"NKey("<hidden>")"#,
                r#"Token("<hidden>")"#,
                r#"UserPassword { user: "agent", password: "<hidden>" }"#,
            ]
        );
        let settings = NatsSettings {
            urls: vec!["nats://a:4222".to_owned()],
            auth: NatsAuth::Token("s3cret-token".to_owned()),
            tls: None,
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
