//! Stage one of loading: the files exactly as written, before validation.
//!
//! These structures mirror `loom.toml` and `workers.toml` key for key; their
//! doc comments are the user documentation of every key and its default.
//! Unknown keys are refused. Values that need checking (durations, zones,
//! schedules, paths, workflow tasks) stay as written here and become typed
//! values in [`crate::validate`], which knows the file, worker or workflow,
//! and field to blame.

use std::collections::BTreeMap;

use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Deserializer, Serialize};

use crate::schedule::{DstGap, DstRepeat};
use crate::settings::{CatchUp, OutputFormat, Overlap};

/// `loom.toml`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Subject prefix of the mesh; stream and bucket names derive from it.
    /// Default `loom`. Change it to run several meshes on one NATS account.
    pub prefix: Option<String>,
    /// How to reach NATS. Without `nats.url`, `loom up` starts an embedded
    /// nats-server and the other commands use the one it started.
    pub nats: RawNats,
    /// The HTTP server every role runs (`/metrics`, `/healthz`, `/readyz`).
    pub http: RawHttp,
    /// Where Loom keeps local state, such as the embedded nats-server's store.
    /// Relative to the config file. Default `.loom`.
    pub data_dir: Option<RelativePathBuf>,
    /// Stream policies.
    pub streams: RawStreams,
    /// Scheduler settings.
    pub scheduler: RawScheduler,
    /// Agent settings.
    pub agent: RawAgent,
    /// Validator settings.
    pub validator: RawValidator,
    /// Klaxon (alerting) settings.
    pub klaxon: RawKlaxon,
    /// Enforcement bundles.
    pub enforcement: RawEnforcement,
    /// Path of the worker registry (`workers.toml`), relative to this file.
    /// Workers may also be defined inline as `[workers.<name>]` tables.
    pub registry: Option<RelativePathBuf>,
    /// Workers defined inline, in the registry format.
    pub workers: BTreeMap<String, RawWorker>,
    /// Workflows defined inline, in the registry format.
    pub workflows: BTreeMap<String, RawWorkflow>,
}

/// `[nats]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNats {
    /// One server URL or a list, e.g. `"nats://127.0.0.1:4222"`.
    pub url: Option<OneOrMany>,
    /// Path of a credentials file (JWT and nkey seed).
    pub creds: Option<RelativePathBuf>,
    /// An nkey seed (`SU...`), or the path of a file holding one.
    pub nkey: Option<String>,
    /// An authentication token.
    pub token: Option<String>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`.
    pub password: Option<String>,
    /// TLS settings; setting any of them requires TLS.
    pub tls: RawTls,
}

/// `[nats.tls]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// CA certificate (PEM) to verify the server with.
    pub ca: Option<RelativePathBuf>,
    /// Client certificate (PEM), with `key`.
    pub cert: Option<RelativePathBuf>,
    /// Client private key (PEM), with `cert`.
    pub key: Option<RelativePathBuf>,
}

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list of values.
    Many(Vec<String>),
}

/// `[http]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Address the HTTP server listens on. Default `127.0.0.1:9810`.
    pub listen: Option<String>,
}

/// `[streams]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStreams {
    /// Replicas of every stream and bucket: 1 on one machine, 3 in a
    /// cluster. Default 1.
    pub replicas: Option<u32>,
    /// How long a run command nobody took is kept. Default `7d`.
    pub runs_max_age: Option<DurationText>,
    /// How long results, verdicts and run state are kept: the run history.
    /// Default `14d`.
    pub history: Option<DurationText>,
    /// How long dead letters are kept. Default `30d`.
    pub dead_letter_max_age: Option<DurationText>,
    /// Window within which a run command published twice with the same
    /// `Nats-Msg-Id` is stored once. Must cover a leader failover (at least
    /// twice `scheduler.lease_ttl`). Default `2m`.
    pub duplicate_window: Option<DurationText>,
}

/// `[scheduler]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScheduler {
    /// TTL of the leader lease: a standby takes over at most this long after
    /// the leader dies. Default `5s`.
    pub lease_ttl: Option<DurationText>,
}

/// `[agent]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAgent {
    /// Unique id of this agent. Default: host name and process id.
    pub id: Option<String>,
    /// Labels this agent serves: it pulls the workers whose `labels` are all
    /// among these. Default: none (only workers without labels).
    pub labels: Vec<String>,
    /// Workers this agent serves. Default: every worker its labels allow.
    pub workers: Vec<String>,
    /// Runs executed at once by this agent. Default: the number of CPUs.
    pub concurrency: Option<u32>,
    /// How long a run may go without a progress ack before JetStream gives it
    /// to another agent (agents ack progress every third of it). Default `30s`.
    pub ack_wait: Option<DurationText>,
    /// On shutdown, how long running workers may take to finish before they
    /// are terminated and their runs handed back. Default `30s`.
    pub drain_timeout: Option<DurationText>,
}

/// `[validator]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawValidator {
    /// Extra time, beyond a run's timeouts and backoffs, before a run without
    /// a result is declared `lost`. Default `1m`.
    pub slack: Option<DurationText>,
}

/// `[klaxon]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKlaxon {
    /// Where alerts go. Default: `[{ kind = "log" }]`.
    pub sinks: Option<Vec<RawSink>>,
    /// How often an alert that stays firing is sent again. Default `4h`.
    pub repeat_interval: Option<DurationText>,
}

/// One alert sink.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum RawSink {
    /// Structured log lines.
    Log,
    /// JSON POST to `url`, signed with HMAC-SHA256 when `secret` is set.
    Webhook {
        /// Where to POST.
        url: String,
        /// Shared secret for the signature header.
        secret: Option<String>,
    },
    /// Alertmanager API v2 at `url`.
    Alertmanager {
        /// Base URL of Alertmanager, e.g. `http://alertmanager:9093`.
        url: String,
    },
}

/// `[enforcement]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEnforcement {
    /// Directory of enforcement bundles, one sub-directory per bundle name.
    pub dir: Option<RelativePathBuf>,
}

/// `workers.toml`: the registry of workers and workflows.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegistry {
    /// One table per worker.
    pub workers: BTreeMap<String, RawWorker>,
    /// One table per workflow.
    pub workflows: BTreeMap<String, RawWorkflow>,
}

/// `[workers.<name>]`: one worker. The name is its subject token.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// One line saying what the worker does.
    #[serde(default)]
    pub description: String,
    /// When it runs: 5-field cron (`0 4 * * SUN`, Unix day numbers 0/7 =
    /// Sunday), 6 or 7 fields with seconds first (and a year last),
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, or
    /// `@every 15m`. Absent: the worker runs only when triggered.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in, and the worker's `TZ`.
    /// Default `UTC`.
    pub timezone: Option<String>,
    /// The program and its arguments (never a shell string). A program path
    /// with a `/` is relative to the registry file; a bare name is looked up
    /// on `PATH`.
    pub command: Vec<String>,
    /// Whether the schedule fires. Default `true`.
    pub enabled: Option<bool>,
    /// How long one attempt may run before it is terminated. Default `1h`.
    pub timeout: Option<DurationText>,
    /// Attempts after the first when a run fails. Default 2.
    pub retries: Option<u32>,
    /// Delay between attempts.
    pub backoff: Option<RawBackoff>,
    /// What a fire does while a run of this worker is in flight:
    /// `forbid` (wait its turn), `buffer_one` (at most one waiting),
    /// `skip`, `replace` (cancel the running one), `allow` (up to
    /// `concurrency`). Default `skip`.
    pub overlap: Option<Overlap>,
    /// Runs at once with `overlap = "allow"`. Default 1.
    pub concurrency: Option<u32>,
    /// Fires missed while the mesh was down: `none`, `last` or `all`, within
    /// `starting_deadline`. Default `last`.
    pub catch_up: Option<CatchUp>,
    /// How late a fire may still start; later ones are recorded as missed.
    /// Default `1h`.
    pub starting_deadline: Option<DurationText>,
    /// Spread fires by up to this much, by a fixed offset derived from the
    /// worker's name. Default `0s`.
    pub jitter: Option<DurationText>,
    /// A local time that does not exist (spring forward): `shift` runs at the
    /// first instant after the gap, `skip` does not run. Default `shift`.
    pub dst_gap: Option<DstGap>,
    /// A local time that occurs twice (fall back): run at the `first`, the
    /// `last`, or `both`. Default `first`.
    pub dst_repeat: Option<DstRepeat>,
    /// Only agents serving all these labels run this worker.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Environment variables for the worker's process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables passed from the agent's environment to this worker only.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Name of the enforcement bundle the worker runs with.
    pub enforcement: Option<String>,
    /// Alert only once this many runs in a row have failed. Default 1.
    pub alert_after: Option<u32>,
    /// The output contract.
    pub output: Option<RawOutput>,
}

/// `[workflows.<name>]`: one workflow (DESIGN §10). The name is a subject
/// token, like a worker's.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    /// One line saying what the workflow does.
    #[serde(default)]
    pub description: String,
    /// When it runs, in the same syntax as a worker's `schedule`. Absent: the
    /// workflow runs only when triggered.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in. Default `UTC`.
    pub timezone: Option<String>,
    /// Whether the schedule fires. Default `true`.
    pub enabled: Option<bool>,
    /// Spread fires by up to this much, by a fixed offset derived from the
    /// workflow's name. Default `0s`.
    pub jitter: Option<DurationText>,
    /// A local time that does not exist (spring forward): `shift` or `skip`,
    /// as for a worker. Default `shift`.
    pub dst_gap: Option<DstGap>,
    /// A local time that occurs twice (fall back): `first`, `last` or `both`,
    /// as for a worker. Default `first`.
    pub dst_repeat: Option<DstRepeat>,
    /// The tasks, at least one: `[{ id = "a", worker = "w", depends_on =
    /// ["b"], params = { k = "v" } }]`. They run level by level: a task
    /// starts once every task it depends on has a verdict.
    #[serde(default)]
    pub tasks: Vec<RawTask>,
    /// A registry worker that runs after each round and answers `DONE`,
    /// `SPAWN_NEXT` or `CLARIFICATION_NEEDED` on its status line. Default:
    /// none; a run ends once its tasks have verdicts.
    pub strategist: Option<String>,
    /// Most rounds one run of the workflow may take, 1 to 10. Default 5.
    pub max_rounds: Option<u32>,
    /// Attempts after the first for a task whose output is invalid, before
    /// it is marked blocked and its dependents are skipped. Default 1.
    pub task_retries: Option<u32>,
}

/// One entry of a workflow's `tasks`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    /// Id of the task within the workflow: letters, digits, `-` and `_`.
    pub id: String,
    /// The registry worker that runs it.
    pub worker: String,
    /// Ids of the tasks of this workflow it runs after. Default: none.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Params of its run, reaching the worker as `LOOM_PARAM_<NAME>`.
    /// Default: none.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// `backoff = { initial, max, factor, jitter }`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackoff {
    /// Delay before the first retry. Default `30s`.
    pub initial: Option<DurationText>,
    /// Longest delay. Default `30m`.
    pub max: Option<DurationText>,
    /// Growth per retry. Default 2.0.
    pub factor: Option<f64>,
    /// Random spread, as a fraction of the delay (0 to 1). Default 0.2.
    pub jitter: Option<f64>,
}

/// `[workers.<name>.output]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutput {
    /// `status-line` (last non-empty stdout line is `STATUS: <word> [detail]`),
    /// `json` (stdout is one JSON object) or `text`. Default `text`.
    pub format: Option<OutputFormat>,
    /// Most stdout bytes a valid run may write. Default 1 MiB.
    pub max_bytes: Option<u64>,
    /// JSON Schema file the output must match (with `format = "json"`),
    /// relative to the registry file.
    pub schema: Option<String>,
}

/// A duration as written: text such as `"30s"` or `"1h30m"`, or a number of
/// seconds. Parsed during validation, which can name the field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Integer(i64),
            Float(f64),
        }
        Ok(DurationText(match Written::deserialize(deserializer)? {
            Written::Text(text) => text,
            Written::Integer(seconds) => format!("{seconds}s"),
            Written::Float(seconds) if seconds >= 0.0 => {
                format!("{}ms", (seconds * 1000.0).round() as u64)
            }
            Written::Float(seconds) => format!("{seconds}s"),
        }))
    }
}
