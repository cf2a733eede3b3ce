//! Operator requests about workflows: start a run, answer its question, and
//! read the runs and their reports. `loom workflow` and the dashboard's API
//! both call these, so they refuse the same things with the same words.
//!
//! None of them goes through the leader directly: a start is published on
//! the workflow start subject (the leader's durable consumer takes it), an
//! answer is a key the leader reads on its next tick, and runs are read from
//! the workflows bucket the leader writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use loom_broker::{Broker, Bucket, PublishError, StateError};
use loom_config::{Config, Workflow};
use loom_protocol::workflow::{
    Answer, WorkflowRun, WorkflowStart, WorkflowStatus, answer_key, workflow_run_key,
};
use serde::Serialize;
use uuid::Uuid;

/// Why a workflow request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowRequestError {
    /// The registry has no such workflow.
    #[error("workflow {name:?} is not in the registry (workflows: {known})")]
    UnknownWorkflow {
        /// The name given.
        name: String,
        /// The registry's workflows, or `none`.
        known: String,
    },
    /// No run with this id in the history.
    #[error("workflow run {0} is not in the history")]
    UnknownRun(Uuid),
    /// An answer for a run that asks nothing.
    #[error("workflow run {run_id} is {}, not waiting for an answer", status.as_str())]
    NotWaiting {
        /// The run.
        run_id: Uuid,
        /// Where it stands.
        status: WorkflowStatus,
    },
    /// An empty answer.
    #[error("the answer to workflow run {0} is empty")]
    EmptyAnswer(Uuid),
    /// The start could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The workflows bucket could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl WorkflowRequestError {
    /// Whether the request itself was wrong (as opposed to the broker failing).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            WorkflowRequestError::Publish(_) | WorkflowRequestError::State(_)
        )
    }
}

/// The workflow named `name`, or the error that lists the ones there are.
pub fn find_workflow<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c Workflow, WorkflowRequestError> {
    config.registry.workflow(name).ok_or_else(|| {
        let known: Vec<&str> = config
            .registry
            .workflows()
            .map(|w| w.name.as_str())
            .collect();
        WorkflowRequestError::UnknownWorkflow {
            name: name.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        }
    })
}

/// Publishes a manual start of workflow `name` with `params`; the new run's
/// id. The leader creates the run when it takes the start.
pub async fn start(
    broker: &Broker,
    config: &Config,
    name: &str,
    params: BTreeMap<String, String>,
) -> Result<Uuid, WorkflowRequestError> {
    let workflow = find_workflow(config, name)?;
    let run_id = Uuid::now_v7();
    let start = WorkflowStart {
        run_id: Some(run_id),
        params,
        trigger: None,
        scheduled_at: None,
    };
    let subject = broker.subjects().workflow_start(&workflow.name);
    let payload = serde_json::to_vec(&start).map_err(|e| PublishError {
        subject: subject.clone(),
        detail: e.to_string(),
    })?;
    broker
        .publish(&subject, Some(&format!("workflow-start:{run_id}")), payload)
        .await?;
    Ok(run_id)
}

/// Gives the waiting run `run_id` its answer; the run as it was (with the
/// question answered). The leader resumes it on its next tick.
pub async fn answer(
    broker: &Broker,
    run_id: Uuid,
    text: &str,
) -> Result<WorkflowRun, WorkflowRequestError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(WorkflowRequestError::EmptyAnswer(run_id));
    }
    let bucket = workflows(broker).await?;
    let run = find_in(&bucket, run_id).await?;
    if run.status != WorkflowStatus::WaitingForAnswer {
        return Err(WorkflowRequestError::NotWaiting {
            run_id,
            status: run.status,
        });
    }
    let answer = Answer {
        text: text.to_owned(),
        at: Utc::now(),
    };
    bucket.put(&answer_key(run_id), &answer).await?;
    Ok(run)
}

/// The run `run_id`.
pub async fn find_run(broker: &Broker, run_id: Uuid) -> Result<WorkflowRun, WorkflowRequestError> {
    find_in(&workflows(broker).await?, run_id).await
}

/// Every workflow run in the history (of `workflow` only, when given),
/// newest first.
pub async fn list_runs(
    broker: &Broker,
    workflow: Option<&str>,
) -> Result<Vec<WorkflowRun>, WorkflowRequestError> {
    let bucket = workflows(broker).await?;
    let mut runs: Vec<WorkflowRun> = bucket
        .snapshot::<WorkflowRun>(broker, "run.*")
        .await?
        .into_iter()
        .map(|(_, run)| run)
        .filter(|run| workflow.is_none_or(|name| run.workflow == name))
        .collect();
    runs.sort_by_key(|run| std::cmp::Reverse((run.started_at, run.run_id)));
    Ok(runs)
}

/// One line of a run list: where a run stands without its rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: Uuid,
    /// Its workflow.
    pub workflow: String,
    /// Where it stands.
    pub status: WorkflowStatus,
    /// Why it runs.
    pub trigger: loom_protocol::Trigger,
    /// Rounds so far.
    pub rounds: usize,
    /// Tasks with a valid verdict, over every round.
    pub tasks_valid: usize,
    /// Tasks, over every round.
    pub tasks_total: usize,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end (or to now), in milliseconds.
    pub duration_ms: u64,
    /// The open question while it waits for an answer.
    pub question: Option<String>,
    /// Why it ended.
    pub outcome: Option<String>,
}

impl RunSummary {
    /// The summary of `run`, with durations measured to `now` while it runs.
    pub fn of(run: &WorkflowRun, now: DateTime<Utc>) -> RunSummary {
        let report = run.report(now);
        RunSummary {
            run_id: run.run_id,
            workflow: run.workflow.clone(),
            status: run.status,
            trigger: run.trigger,
            rounds: run.rounds.len(),
            tasks_valid: report.rounds.iter().map(|r| r.tasks_valid).sum(),
            tasks_total: report.rounds.iter().map(|r| r.tasks_total).sum(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: report.duration_ms,
            question: run.question.clone(),
            outcome: run.outcome.clone(),
        }
    }
}

async fn workflows(broker: &Broker) -> Result<Bucket, StateError> {
    broker.bucket(&broker.names().workflows_bucket()).await
}

async fn find_in(bucket: &Bucket, run_id: Uuid) -> Result<WorkflowRun, WorkflowRequestError> {
    bucket
        .get::<WorkflowRun>(&workflow_run_key(run_id))
        .await?
        .map(|versioned| versioned.value)
        .ok_or(WorkflowRequestError::UnknownRun(run_id))
}
