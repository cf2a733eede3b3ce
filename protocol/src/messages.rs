//! The messages of the mesh (DESIGN §12): run commands, results, verdicts and
//! dead letters.
//!
//! Field names are part of the public contract and identical in both
//! encodings. Ids are hyphenated UUID strings, times are RFC 3339 strings in
//! UTC, durations are milliseconds. Every field is always written (absent
//! values as `null`) so that scripts can rely on the shape.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::WIRE_VERSION;

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A fire of the worker's schedule.
    Schedule,
    /// A person or program asked for it (`loom trigger`, `nats pub`).
    Manual,
    /// A retry published as a new message (retries normally stay in JetStream).
    Retry,
    /// `loom dlq replay` of a dead letter.
    Replay,
    /// `loom backfill` of a past range.
    Backfill,
    /// A task of a workflow run.
    Workflow,
}

impl Trigger {
    /// The name used on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
            Trigger::Replay => "replay",
            Trigger::Backfill => "backfill",
            Trigger::Workflow => "workflow",
        }
    }
}

/// Where a run sits inside a workflow run (DESIGN §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// The workflow run this task belongs to.
    pub run_id: Uuid,
    /// The round, from 1.
    pub round: u32,
    /// The task id within the workflow definition.
    pub task: String,
}

/// A request to run one worker once: what the scheduler, `loom trigger` or
/// `nats pub` put on `<prefix>.run.<worker>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCommand {
    /// Wire version, [`WIRE_VERSION`] when written by this build.
    pub v: u32,
    /// Stable across every attempt of the run (UUID v7): workers use it as an
    /// idempotency key.
    pub run_id: Uuid,
    /// The registry name of the worker.
    pub worker: String,
    /// The instant this run is for: the fire instant, or the publish time of a
    /// manual run.
    pub scheduled_at: DateTime<Utc>,
    /// Why the run exists.
    pub trigger: Trigger,
    /// Data for the worker: `LOOM_PARAM_<NAME>` variables and stdin.
    pub params: BTreeMap<String, String>,
    /// SHA-256 digest (lower-case hex) of the enforcement bundle the run must
    /// execute with, if the worker names one.
    pub enforcement_digest: Option<String>,
    /// By when the run must have a terminal verdict; past it the watchdog
    /// declares it `lost`.
    pub deadline: Option<DateTime<Utc>>,
    /// The run this one replays, for `loom dlq replay`.
    pub replay_of: Option<Uuid>,
    /// The workflow task this run is, absent for plain runs.
    pub workflow: Option<WorkflowRef>,
}

impl RunCommand {
    /// A command with no params, digest, deadline, replay or workflow link.
    pub fn new(
        run_id: Uuid,
        worker: impl Into<String>,
        scheduled_at: DateTime<Utc>,
        trigger: Trigger,
    ) -> Self {
        RunCommand {
            v: WIRE_VERSION,
            run_id,
            worker: worker.into(),
            scheduled_at,
            trigger,
            params: BTreeMap::new(),
            enforcement_digest: None,
            deadline: None,
            replay_of: None,
            workflow: None,
        }
    }
}

/// How one attempt of a run ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The process exited 0.
    Succeeded,
    /// The process exited non-zero, was killed by a signal, or could not start.
    Failed,
    /// The process outlived the worker's timeout and was terminated.
    TimedOut,
    /// The run was cancelled and the process terminated.
    Cancelled,
    /// The enforcement bundle could not be loaded or verified, so the process
    /// was never started.
    EnforcementUnavailable,
}

impl Outcome {
    /// The name used on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::EnforcementUnavailable => "enforcement_unavailable",
        }
    }
}

/// What an agent reports after one attempt of a run, on `<prefix>.result.<worker>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Wire version.
    pub v: u32,
    /// The run this attempt belongs to.
    pub run_id: Uuid,
    /// The worker that ran.
    pub worker: String,
    /// 1-based attempt number, from JetStream's delivery count.
    pub attempt: u32,
    /// The agent that ran the attempt.
    pub agent_id: String,
    /// When the process started (or the attempt began, if it never started).
    pub started_at: DateTime<Utc>,
    /// When the process ended.
    pub finished_at: DateTime<Utc>,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// The exit status, absent when the process was killed by a signal or
    /// never started.
    pub exit_code: Option<i32>,
    /// The last bytes of stdout (bounded), lossily decoded as UTF-8.
    pub stdout_tail: String,
    /// The last bytes of stderr (bounded), lossily decoded as UTF-8.
    pub stderr_tail: String,
    /// Total bytes the process wrote to stdout.
    pub stdout_bytes: u64,
    /// Total bytes the process wrote to stderr.
    pub stderr_bytes: u64,
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// Peak resident set size, in KiB.
    pub max_rss_kb: u64,
    /// The digest of the enforcement bundle the attempt ran with.
    pub enforcement_digest: Option<String>,
    /// Costs the worker reported (e.g. `usd`, `tokens`), summed into reports.
    pub cost: BTreeMap<String, f64>,
    /// Whether the agent will not deliver this run again: it succeeded, was
    /// cancelled, failed permanently, or used its last attempt. The validator
    /// gives a verdict only on the last attempt.
    #[serde(default)]
    pub last_attempt: bool,
}

/// The validator's judgement of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// The run succeeded and its output meets the worker's contract.
    Valid,
    /// The run exited 0 but its output breaks the contract.
    InvalidOutput,
    /// The run failed and has no attempts left.
    Failed,
    /// The run's last attempt timed out.
    TimedOut,
    /// The run was cancelled.
    Cancelled,
    /// The run executed with an enforcement digest other than the scheduled one.
    EnforcementViolation,
    /// No result arrived by the run's deadline.
    Lost,
    /// The run command was malformed or named an unknown worker.
    Rejected,
}

impl VerdictKind {
    /// The name used on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Valid => "valid",
            VerdictKind::InvalidOutput => "invalid_output",
            VerdictKind::Failed => "failed",
            VerdictKind::TimedOut => "timed_out",
            VerdictKind::Cancelled => "cancelled",
            VerdictKind::EnforcementViolation => "enforcement_violation",
            VerdictKind::Lost => "lost",
            VerdictKind::Rejected => "rejected",
        }
    }
}

/// A run's terminal verdict, on `<prefix>.verdict.<worker>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Wire version.
    pub v: u32,
    /// The run judged.
    pub run_id: Uuid,
    /// Its worker.
    pub worker: String,
    /// The judgement.
    pub verdict: VerdictKind,
    /// One sentence saying why, e.g. which contract rule failed.
    pub reason: String,
    /// How many attempts the run took.
    pub attempts: u32,
    /// When the verdict was given.
    pub at: DateTime<Utc>,
}

/// Why a run ended up in the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The message on a run subject was malformed or named an unknown worker.
    Rejected,
    /// The run failed on its last attempt.
    Failed,
    /// The run's output broke the worker's contract.
    InvalidOutput,
    /// The run's last attempt timed out.
    TimedOut,
    /// The enforcement bundle could not be loaded on the last attempt.
    EnforcementUnavailable,
    /// The run executed with an enforcement digest other than the scheduled one.
    EnforcementViolation,
    /// Agents died while running it until its deliveries ran out.
    AgentLost,
    /// No result arrived by the run's deadline.
    Lost,
    /// A scheduled fire was not run because it was past its starting deadline.
    Missed,
    /// A workflow's strategist asked a person a question.
    ClarificationNeeded,
}

impl DeadLetterReason {
    /// The name used on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Failed => "failed",
            DeadLetterReason::InvalidOutput => "invalid_output",
            DeadLetterReason::TimedOut => "timed_out",
            DeadLetterReason::EnforcementUnavailable => "enforcement_unavailable",
            DeadLetterReason::EnforcementViolation => "enforcement_violation",
            DeadLetterReason::AgentLost => "agent_lost",
            DeadLetterReason::Lost => "lost",
            DeadLetterReason::Missed => "missed",
            DeadLetterReason::ClarificationNeeded => "clarification_needed",
        }
    }
}

/// One attempt of a dead run, kept in its dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSummary {
    /// 1-based attempt number.
    pub attempt: u32,
    /// The agent that ran it.
    pub agent_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Its exit status, if it exited.
    pub exit_code: Option<i32>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
    /// CPU time (user and system), in milliseconds.
    #[serde(default)]
    pub cpu_ms: u64,
    /// The tail of its stdout.
    pub stdout_tail: String,
    /// The tail of its stderr.
    pub stderr_tail: String,
}

/// A run that finally failed, on `<prefix>.dlq.<worker>`: everything needed to
/// understand it and to replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Wire version.
    pub v: u32,
    /// The dead run, or a fresh id for a rejected message that had none.
    pub run_id: Uuid,
    /// The worker token of the subject the run was on (known worker or not).
    pub worker: String,
    /// Why it is dead.
    pub reason: DeadLetterReason,
    /// One sentence saying what went wrong, e.g. `malformed run command: ...`.
    pub description: String,
    /// One summary per attempt, oldest first.
    pub attempts: Vec<AttemptSummary>,
    /// The run command, absent when the message could not be decoded.
    pub command: Option<RunCommand>,
    /// When the run was declared dead.
    pub dead_at: DateTime<Utc>,
    /// The run that replayed this one, once `loom dlq replay` did.
    pub replayed_by: Option<Uuid>,
}

/// Why a fire did not run: the ledger of what did not run is as visible as
/// what did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A run of the worker was in flight (`overlap = "skip"` or `"buffer_one"`).
    Overlap,
    /// The local time did not exist (spring forward) and `dst_gap = "skip"`.
    DstGap,
    /// The worker was paused.
    Paused,
    /// The fire was past its starting deadline when the scheduler could
    /// publish it (also dead-lettered as `missed`).
    Missed,
    /// The worker is disabled.
    Disabled,
    /// A newer fire ran instead, by the worker's catch-up policy (`last`, `none`).
    CatchUp,
}

impl SkipReason {
    /// The name used on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::DstGap => "dst_gap",
            SkipReason::Paused => "paused",
            SkipReason::Missed => "missed",
            SkipReason::Disabled => "disabled",
            SkipReason::CatchUp => "catch_up",
        }
    }
}

/// One entry of the ledger of fires that did not run, on
/// `<prefix>.skipped.<worker>`. Many skips in a row (a long pause, a long
/// outage) are summarised in one entry with a `count` and a `last` instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFire {
    /// Wire version.
    pub v: u32,
    /// The worker.
    pub worker: String,
    /// The (first) fire instant that did not run.
    pub scheduled_at: DateTime<Utc>,
    /// Why.
    pub reason: SkipReason,
    /// One sentence with the circumstances.
    pub detail: String,
    /// How many fires this entry stands for (1 unless summarised).
    pub count: u64,
    /// The last fire instant this entry stands for, when `count > 1`.
    pub last: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// A request to cancel runs of a worker, on `<prefix>.cancel.<worker>`.
///
/// Agents cancel a matching run they are executing and refuse matching runs
/// they receive later (they replay recent requests when they start), so a
/// cancel reaches queued runs too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Wire version.
    pub v: u32,
    /// The worker whose runs are cancelled.
    pub worker: String,
    /// One run (`loom cancel <run-id>`).
    pub run_id: Option<Uuid>,
    /// Every run scheduled before this instant, except `keep` (overlap `replace`).
    pub before: Option<DateTime<Utc>>,
    /// A run never cancelled by this request: the one that replaces the others.
    pub keep: Option<Uuid>,
    /// Why, for the result and the logs.
    pub reason: String,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
}

impl CancelRequest {
    /// Whether this request cancels `command`.
    pub fn matches(&self, command: &RunCommand) -> bool {
        if command.worker != self.worker || self.keep == Some(command.run_id) {
            return false;
        }
        self.run_id == Some(command.run_id)
            || self
                .before
                .is_some_and(|before| command.scheduled_at < before)
    }
}
