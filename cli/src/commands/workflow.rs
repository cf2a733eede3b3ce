//! `loom workflow`: start workflow runs, follow them, read their reports,
//! answer their questions. The leader scheduler does the work; these
//! commands talk to it through the workflow start subject and the
//! workflows bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use loom_broker::{Broker, Bucket};
use loom_protocol::workflow::{
    Answer, WorkflowRun, WorkflowStart, WorkflowStatus, answer_key, workflow_run_key,
};
use uuid::Uuid;

use crate::args::{Global, WorkflowCommand};
use crate::exit::Usage;
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Runs one `loom workflow` subcommand.
pub async fn run(global: &Global, command: &WorkflowCommand) -> anyhow::Result<()> {
    let config = load_config(global)?;
    if let WorkflowCommand::Start { workflow, .. } = command
        && config.registry.workflow(workflow).is_none()
    {
        let known: Vec<&str> = config
            .registry
            .workflows()
            .map(|w| w.name.as_str())
            .collect();
        return Err(Usage(format!(
            "workflow {workflow:?} is not in the registry (workflows: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    }
    let broker = connect(&config, "workflow").await?;
    let result = act(&broker, command).await;
    broker.close().await;
    result
}

async fn act(broker: &Broker, command: &WorkflowCommand) -> anyhow::Result<()> {
    let bucket = broker.bucket(&broker.names().workflows_bucket()).await?;
    match command {
        WorkflowCommand::Start {
            workflow,
            params,
            wait,
        } => {
            let mut parsed = BTreeMap::new();
            for param in params {
                let Some((name, value)) = param.split_once('=') else {
                    return Err(Usage(format!("--param {param:?} is not NAME=VALUE")).into());
                };
                parsed.insert(name.to_owned(), value.to_owned());
            }
            let run_id = Uuid::now_v7();
            let start = WorkflowStart {
                run_id: Some(run_id),
                params: parsed,
                trigger: None,
                scheduled_at: None,
            };
            broker
                .publish(
                    &broker.subjects().workflow_start(workflow),
                    Some(&format!("workflow-start:{run_id}")),
                    serde_json::to_vec(&start)?,
                )
                .await?;
            println!("{run_id}");
            if !*wait {
                return Ok(());
            }
            let run = wait_for_end(&bucket, run_id).await?;
            println!(
                "{} after {} round(s): {}",
                run.status.as_str(),
                run.rounds.len(),
                run.outcome.clone().unwrap_or_default()
            );
            if run.status == WorkflowStatus::Done {
                Ok(())
            } else {
                anyhow::bail!(
                    "workflow run {run_id} of {workflow} ended {}",
                    run.status.as_str()
                )
            }
        }
        WorkflowCommand::List { workflow, json } => {
            let mut runs: Vec<WorkflowRun> = bucket
                .snapshot::<WorkflowRun>(broker, "run.*")
                .await?
                .into_iter()
                .map(|(_, run)| run)
                .filter(|run| workflow.as_ref().is_none_or(|w| &run.workflow == w))
                .collect();
            runs.sort_by_key(|run| std::cmp::Reverse((run.started_at, run.run_id)));
            if *json {
                print_json(&serde_json::to_value(&runs)?);
                return Ok(());
            }
            if runs.is_empty() {
                println!("no workflow runs in the history");
                return Ok(());
            }
            println!(
                "{:<36}  {:<24}  {:<18}  {:>5}  {:<20}  outcome",
                "run", "workflow", "status", "round", "started (UTC)"
            );
            for run in runs {
                println!(
                    "{:<36}  {:<24}  {:<18}  {:>5}  {:<20}  {}",
                    run.run_id,
                    run.workflow,
                    run.status.as_str(),
                    run.rounds.len(),
                    run.started_at.format("%Y-%m-%d %H:%M:%S"),
                    run.question
                        .as_ref()
                        .map(|q| format!("asks: {q}"))
                        .or(run.outcome.clone())
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        WorkflowCommand::Show { run_id, json } => {
            let run = find(&bucket, *run_id).await?;
            if *json {
                print_json(&serde_json::to_value(&run)?);
                return Ok(());
            }
            println!(
                "workflow {} run {}: {}",
                run.workflow,
                run.run_id,
                run.status.as_str()
            );
            if let Some(question) = &run.question {
                println!("question: {question}");
            }
            for round in &run.rounds {
                println!("round {}:", round.number);
                for (level, ids) in round.levels.iter().enumerate() {
                    for id in ids {
                        let Some(task) = round.tasks.iter().find(|t| &t.task.id == id) else {
                            continue;
                        };
                        let last = task.attempts.last();
                        println!(
                            "  L{level} {:<20} {:<24} {:<8} attempts {}  {}",
                            task.task.id,
                            task.task.worker,
                            task.state.as_str(),
                            task.attempts.len(),
                            last.and_then(|a| a.status_line.clone().or(a.reason.clone()))
                                .unwrap_or_default()
                        );
                    }
                }
                if let Some(strategist) = &round.strategist {
                    println!(
                        "  strategist: {}",
                        strategist
                            .decision
                            .as_ref()
                            .map_or("(running)".to_owned(), |d| format!("{d:?}"))
                    );
                }
            }
            if let Some(outcome) = &run.outcome {
                println!("outcome: {outcome}");
            }
            Ok(())
        }
        WorkflowCommand::Report { run_id, json } => {
            let run = find(&bucket, *run_id).await?;
            let report = run.report(Utc::now());
            if *json {
                print_json(&serde_json::to_value(&report)?);
                return Ok(());
            }
            println!(
                "workflow {} run {}: {} ({})",
                report.workflow,
                report.run_id,
                report.status.as_str(),
                report.outcome.clone().unwrap_or_default()
            );
            println!("round  valid/total  blocked  skipped  duration  decision");
            for round in &report.rounds {
                println!(
                    "{:>5}  {:>11}  {:>7}  {:>7}  {:>7.1}s  {}",
                    round.round,
                    format!("{}/{}", round.tasks_valid, round.tasks_total),
                    round.tasks_blocked,
                    round.tasks_skipped,
                    round.duration_ms as f64 / 1000.0,
                    round
                        .decision
                        .as_ref()
                        .map_or("-".to_owned(), |d| format!("{d:?}"))
                );
            }
            let cost: Vec<String> = report
                .cost
                .iter()
                .map(|(unit, n)| format!("{n} {unit}"))
                .collect();
            println!(
                "{} runs, {:.1}s in all, {:.1}s CPU{}",
                report.runs,
                report.duration_ms as f64 / 1000.0,
                report.cpu_ms as f64 / 1000.0,
                if cost.is_empty() {
                    String::new()
                } else {
                    format!(", cost {}", cost.join(", "))
                }
            );
            Ok(())
        }
        WorkflowCommand::Answer { run_id, text } => {
            let run = find(&bucket, *run_id).await?;
            if run.status != WorkflowStatus::WaitingForAnswer {
                return Err(Usage(format!(
                    "workflow run {run_id} is {}, not waiting for an answer",
                    run.status.as_str()
                ))
                .into());
            }
            bucket
                .put(
                    &answer_key(*run_id),
                    &Answer {
                        text: text.clone(),
                        at: Utc::now(),
                    },
                )
                .await?;
            println!(
                "answered workflow run {run_id} ({}); it resumes",
                run.question.unwrap_or_default()
            );
            Ok(())
        }
    }
}

async fn find(bucket: &Bucket, run_id: Uuid) -> anyhow::Result<WorkflowRun> {
    bucket
        .get::<WorkflowRun>(&workflow_run_key(run_id))
        .await?
        .map(|v| v.value)
        .ok_or_else(|| Usage(format!("workflow run {run_id} is not in the history")).into())
}

/// Polls the run until it ends (or waits for an answer, which is an end for
/// a waiting command too).
async fn wait_for_end(bucket: &Bucket, run_id: Uuid) -> anyhow::Result<WorkflowRun> {
    loop {
        if let Some(run) = bucket.get::<WorkflowRun>(&workflow_run_key(run_id)).await?
            && (run.value.status.is_final() || run.value.status == WorkflowStatus::WaitingForAnswer)
        {
            return Ok(run.value);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
