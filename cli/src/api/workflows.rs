//! The workflow part of the API: the registry's workflows with their runs,
//! one run with its report, and the two actions `loom workflow start` and
//! `loom workflow answer` take. Each handler calls what the command calls
//! (`loom_scheduler::workflow::requests`).

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use loom_broker::Broker;
use loom_config::Workflow;
use loom_protocol::workflow::WorkflowTask;
use loom_scheduler::workflow::requests::{self, RunSummary, WorkflowRequestError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Api, ApiError, ParamsBody, json_response, parse_body, parse_query, parse_run_id, path_segment,
    same_origin, within,
};

/// How many runs `/api/workflows` answers without `limit`.
const DEFAULT_RUNS_LIMIT: usize = 50;

impl ApiError {
    fn workflow(broker: Option<&Broker>, error: WorkflowRequestError) -> ApiError {
        match error {
            WorkflowRequestError::UnknownWorkflow { .. } | WorkflowRequestError::UnknownRun(_) => {
                ApiError::new(StatusCode::NOT_FOUND, error.to_string())
            }
            WorkflowRequestError::NotWaiting { .. } => {
                ApiError::new(StatusCode::CONFLICT, error.to_string())
            }
            error if error.is_usage() => ApiError::bad_request(error.to_string()),
            error => ApiError::failed(broker, error),
        }
    }
}

/// A workflow of the registry, as the dashboard lists it.
#[derive(Debug, Serialize)]
struct Definition<'a> {
    name: &'a str,
    description: &'a str,
    schedule: Option<&'a str>,
    schedule_description: Option<String>,
    timezone: String,
    enabled: bool,
    next_run: Option<DateTime<Utc>>,
    tasks: &'a [WorkflowTask],
    levels: &'a [Vec<String>],
    strategist: Option<&'a str>,
    max_rounds: u32,
    task_retries: u32,
}

impl<'a> Definition<'a> {
    fn of(workflow: &'a Workflow, now: DateTime<Utc>) -> Definition<'a> {
        let schedule = workflow.schedule.as_ref();
        Definition {
            name: &workflow.name,
            description: &workflow.description,
            schedule: schedule.map(|s| s.expression()),
            schedule_description: schedule.map(|s| s.describe()),
            timezone: workflow.timezone.to_string(),
            enabled: workflow.enabled,
            next_run: schedule
                .filter(|_| workflow.enabled)
                .and_then(|s| s.next_fire(now)),
            tasks: &workflow.tasks,
            levels: &workflow.levels,
            strategist: workflow.strategist.as_deref(),
            max_rounds: workflow.max_rounds,
            task_retries: workflow.task_retries,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct WorkflowsQuery {
    workflow: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/workflows?workflow=W&limit=N`: the registry's workflows and
/// their runs, newest first.
pub(super) async fn list(
    State(api): State<Api>,
    query: Result<Query<WorkflowsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parse_query(query, "workflow=<name>&limit=<number>")?;
    let config = api.config();
    if let Some(name) = &query.workflow {
        requests::find_workflow(&config, name).map_err(|error| ApiError::workflow(None, error))?;
    }
    let broker = api.broker()?;
    let runs = within(async {
        requests::list_runs(&broker, query.workflow.as_deref())
            .await
            .map_err(|error| ApiError::workflow(Some(&broker), error))
    })
    .await?;
    let now = Utc::now();
    let definitions: Vec<Definition> = config
        .registry
        .workflows()
        .filter(|w| query.workflow.as_ref().is_none_or(|name| &w.name == name))
        .map(|w| Definition::of(w, now))
        .collect();
    let runs: Vec<RunSummary> = runs
        .iter()
        .take(query.limit.unwrap_or(DEFAULT_RUNS_LIMIT))
        .map(|run| RunSummary::of(run, now))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "workflows": definitions, "runs": runs }),
    ))
}

/// `GET /api/workflow-runs/<run_id>`: the run, as `loom workflow show
/// --json`, and its report, as `loom workflow report --json`.
pub(super) async fn show(
    State(api): State<Api>,
    run_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let run_id = parse_run_id(run_id, "a workflow run id")?;
    let broker = api.broker()?;
    let run = within(async {
        requests::find_run(&broker, run_id)
            .await
            .map_err(|error| ApiError::workflow(Some(&broker), error))
    })
    .await?;
    let report = run.report(Utc::now());
    Ok(json_response(
        StatusCode::OK,
        &json!({ "run": run, "report": report }),
    ))
}

/// `POST /api/workflows/<name>/start`, as `loom workflow start <name>`.
pub(super) async fn start(
    State(api): State<Api>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let name = path_segment(name)?;
    let body: ParamsBody = parse_body(&body, r#"{"params": {"name": "value"}}"#)?;
    let config = api.config();
    requests::find_workflow(&config, &name).map_err(|error| ApiError::workflow(None, error))?;
    let broker = api.broker()?;
    let run_id = within(async {
        requests::start(&broker, &config, &name, body.params)
            .await
            .map_err(|error| ApiError::workflow(Some(&broker), error))
    })
    .await?;
    tracing::info!(%run_id, workflow = %name, "workflow started from the API");
    Ok(json_response(StatusCode::OK, &json!({ "run_id": run_id })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnswerBody {
    #[serde(default)]
    text: String,
}

/// `POST /api/workflow-runs/<run_id>/answer`, as `loom workflow answer`.
pub(super) async fn answer(
    State(api): State<Api>,
    headers: HeaderMap,
    run_id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let run_id = parse_run_id(run_id, "a workflow run id")?;
    let body: AnswerBody = parse_body(&body, r#"{"text": "..."}"#)?;
    let broker = api.broker()?;
    let run = within(async {
        requests::answer(&broker, run_id, &body.text)
            .await
            .map_err(|error| ApiError::workflow(Some(&broker), error))
    })
    .await?;
    tracing::info!(%run_id, workflow = %run.workflow, "workflow question answered from the API");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "run_id": run_id, "question": run.question }),
    ))
}
