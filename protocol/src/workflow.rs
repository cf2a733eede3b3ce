//! Workflow runs (DESIGN §10) as they are kept in the workflows bucket and
//! shown by `loom workflow` and the dashboard: rounds of tasks, each task a
//! series of ordinary runs, the strategist's decisions, and the report.
//!
//! Keys of the workflows bucket: `run.<workflow run id>` (a
//! [`WorkflowRun`], written only by the leader scheduler), `answer.<id>`
//! (an [`Answer`], written by `loom workflow answer`, consumed by the
//! leader) and `fire.<workflow>` (the last scheduled start handled).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::messages::{Trigger, VerdictKind};

/// Key of a workflow run: `run.<id>`.
pub fn workflow_run_key(run_id: Uuid) -> String {
    format!("run.{run_id}")
}

/// Key of the answer to a workflow run's question: `answer.<id>`.
pub fn answer_key(run_id: Uuid) -> String {
    format!("answer.{run_id}")
}

/// Key of a scheduled workflow's last handled start: `fire.<workflow>`.
pub fn workflow_fire_key(workflow: &str) -> String {
    format!("fire.{workflow}")
}

/// One task: a worker to run once its dependencies are valid. The same
/// shape in the registry (`tasks = [...]`) and in a strategist's
/// `SPAWN_NEXT` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowTask {
    /// Unique within its round.
    pub id: String,
    /// The registry worker that performs it.
    pub worker: String,
    /// Tasks of the same round that must be valid first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Params of its runs (the workflow run's params come first, these win).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// What starts a workflow run: the body on `<prefix>.workflow.start.<name>`
/// (JSON or MessagePack; empty is a start without params).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowStart {
    /// The run's id; absent, it derives from where JetStream stored the start.
    pub run_id: Option<Uuid>,
    /// Params passed to every task.
    pub params: BTreeMap<String, String>,
    /// Why it starts (`manual` unless the scheduler fired it).
    pub trigger: Option<Trigger>,
    /// The instant it is for (a schedule's fire instant).
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// A workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Its id.
    pub run_id: Uuid,
    /// The workflow's registry name.
    pub workflow: String,
    /// Why it runs.
    pub trigger: Trigger,
    /// Params passed to every task.
    pub params: BTreeMap<String, String>,
    /// Where it stands.
    pub status: WorkflowStatus,
    /// Rounds so far, from round 1.
    pub rounds: Vec<Round>,
    /// The open question while it waits for an answer.
    pub question: Option<String>,
    /// Answers given so far, oldest first.
    pub answers: Vec<String>,
    /// Rounds allowed.
    pub max_rounds: u32,
    /// Retries of a task whose run is not valid.
    pub task_retries: u32,
    /// The strategist worker, if any.
    pub strategist: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it ended, in one sentence.
    pub outcome: Option<String>,
    /// When this was written.
    pub updated_at: DateTime<Utc>,
}

/// Where a workflow run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Tasks or the strategist are running.
    Running,
    /// Paused on a question (`loom workflow answer` resumes it).
    WaitingForAnswer,
    /// Ended: the strategist said DONE, or the only round finished.
    Done,
    /// Ended at `max_rounds` while the strategist still wanted more.
    MaxRounds,
    /// Ended without finishing: a strategist that failed or answered
    /// something unusable, or blocked tasks without a strategist to ask.
    Failed,
}

impl WorkflowStatus {
    /// The status as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::WaitingForAnswer => "waiting_for_answer",
            WorkflowStatus::Done => "done",
            WorkflowStatus::MaxRounds => "max_rounds",
            WorkflowStatus::Failed => "failed",
        }
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Done | WorkflowStatus::MaxRounds | WorkflowStatus::Failed
        )
    }
}

/// One round: its tasks by level, then the strategist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// From 1.
    pub number: u32,
    /// Task ids grouped by level.
    pub levels: Vec<Vec<String>>,
    /// The tasks, in definition order.
    pub tasks: Vec<TaskRun>,
    /// The strategist's run after the tasks, if there is a strategist.
    pub strategist: Option<StrategistRun>,
    /// When its first level was published.
    pub started_at: DateTime<Utc>,
    /// When its last task (and strategist) finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task within a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    /// What it is.
    pub task: WorkflowTask,
    /// Where it stands.
    pub state: TaskState,
    /// Its runs, one per attempt.
    pub attempts: Vec<TaskAttempt>,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Its level has not started.
    Pending,
    /// A run is in flight.
    Running,
    /// A run was valid with a status line.
    Valid,
    /// Every attempt failed.
    Blocked,
    /// A dependency is blocked or skipped.
    Skipped,
}

impl TaskState {
    /// The state as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Valid => "valid",
            TaskState::Blocked => "blocked",
            TaskState::Skipped => "skipped",
        }
    }

    /// Whether the task is settled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Valid | TaskState::Blocked | TaskState::Skipped
        )
    }
}

/// One run of a task or of the strategist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAttempt {
    /// The run.
    pub run_id: Uuid,
    /// When its command was published.
    pub dispatched_at: DateTime<Utc>,
    /// Its verdict, once given.
    pub verdict: Option<VerdictKind>,
    /// The verdict's reason.
    pub reason: Option<String>,
    /// Its `STATUS:` line, if the output ended with one.
    pub status_line: Option<String>,
    /// The tail of its stdout.
    pub stdout_tail: String,
    /// When its verdict was given.
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time of its last attempt, in milliseconds.
    pub duration_ms: u64,
    /// CPU time of all its attempts, in milliseconds.
    pub cpu_ms: u64,
    /// Cost the worker reported, by unit.
    pub cost: BTreeMap<String, f64>,
}

/// The strategist's run after a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategistRun {
    /// Its runs, one per attempt.
    pub attempts: Vec<TaskAttempt>,
    /// What it decided, once it has.
    pub decision: Option<Decision>,
    /// The answer it was given, when it ran after a question.
    pub answer: Option<String>,
}

/// A strategist's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decision {
    /// `STATUS: DONE`.
    Done,
    /// `STATUS: SPAWN_NEXT` with this many new tasks.
    SpawnNext {
        /// How many tasks the next round has.
        tasks: usize,
    },
    /// `STATUS: CLARIFICATION_NEEDED: <question>`.
    ClarificationNeeded {
        /// The question.
        question: String,
    },
    /// Anything else: the run ends failed.
    Unusable {
        /// What was wrong.
        reason: String,
    },
}

/// `loom workflow answer`: the answer to a waiting run's question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The answer.
    pub text: String,
    /// When it was given.
    pub at: DateTime<Utc>,
}

/// The run id of a task's (or strategist's) attempt: derived from the
/// workflow run, round, task and attempt, so a new leader that publishes
/// the same attempt again publishes the same run (and JetStream drops the
/// duplicate).
pub fn task_run_id(workflow_run: Uuid, round: u32, task: &str, attempt: u32) -> Uuid {
    let digest = Sha256::digest(format!("{workflow_run}/{round}/{task}/{attempt}").as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    // The timestamp bits come from the workflow run's id (a v7), so ids stay
    // stable however late they are computed.
    let millis = workflow_run
        .get_timestamp()
        .map(|t| {
            let (seconds, nanos) = t.to_unix();
            seconds * 1000 + u64::from(nanos) / 1_000_000
        })
        .unwrap_or(millis);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// The strategist's task id in [`task_run_id`].
pub const STRATEGIST_TASK: &str = "@strategist";

/// The report of a workflow run: per round, tasks valid/total, blocked and
/// skipped, duration and the strategist's decision; and the totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The workflow run.
    pub run_id: Uuid,
    /// Its workflow.
    pub workflow: String,
    /// Where it stands.
    pub status: WorkflowStatus,
    /// Why it ended.
    pub outcome: Option<String>,
    /// Per round.
    pub rounds: Vec<RoundReport>,
    /// Runs published (tasks and strategist, every attempt).
    pub runs: u64,
    /// From start to end (or to now), in milliseconds.
    pub duration_ms: u64,
    /// CPU time of every run, in milliseconds.
    pub cpu_ms: u64,
    /// Cost the workers reported, summed by unit.
    pub cost: BTreeMap<String, f64>,
}

/// One round of a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// From 1.
    pub round: u32,
    /// Tasks.
    pub tasks_total: usize,
    /// Valid tasks.
    pub tasks_valid: usize,
    /// Blocked tasks.
    pub tasks_blocked: usize,
    /// Skipped tasks.
    pub tasks_skipped: usize,
    /// From its first publish to its end, in milliseconds.
    pub duration_ms: u64,
    /// The strategist's decision.
    pub decision: Option<Decision>,
}

impl WorkflowRun {
    /// The run's report, from its state.
    pub fn report(&self, now: DateTime<Utc>) -> Report {
        let mut runs = 0;
        let mut cpu_ms = 0;
        let mut cost: BTreeMap<String, f64> = BTreeMap::new();
        let mut add = |attempt: &TaskAttempt| {
            runs += 1;
            cpu_ms += attempt.cpu_ms;
            for (unit, amount) in &attempt.cost {
                *cost.entry(unit.clone()).or_default() += amount;
            }
        };
        let rounds = self
            .rounds
            .iter()
            .map(|round| {
                let count = |state| round.tasks.iter().filter(|t| t.state == state).count();
                for task in &round.tasks {
                    task.attempts.iter().for_each(&mut add);
                }
                if let Some(strategist) = &round.strategist {
                    strategist.attempts.iter().for_each(&mut add);
                }
                RoundReport {
                    round: round.number,
                    tasks_total: round.tasks.len(),
                    tasks_valid: count(TaskState::Valid),
                    tasks_blocked: count(TaskState::Blocked),
                    tasks_skipped: count(TaskState::Skipped),
                    duration_ms: millis(round.started_at, round.finished_at.unwrap_or(now)),
                    decision: round.strategist.as_ref().and_then(|s| s.decision.clone()),
                }
            })
            .collect();
        Report {
            run_id: self.run_id,
            workflow: self.workflow.clone(),
            status: self.status,
            outcome: self.outcome.clone(),
            rounds,
            runs,
            duration_ms: millis(self.started_at, self.finished_at.unwrap_or(now)),
            cpu_ms,
            cost,
        }
    }
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_run_ids_are_stable_and_distinct() {
        let run = Uuid::now_v7();
        let a1 = task_run_id(run, 1, "a", 1);
        assert_eq!(a1, task_run_id(run, 1, "a", 1));
        assert_ne!(a1, task_run_id(run, 1, "a", 2));
        assert_ne!(a1, task_run_id(run, 2, "a", 1));
        assert_ne!(a1, task_run_id(run, 1, "b", 1));
        assert_eq!(a1.get_version_num(), 7);
    }
}
