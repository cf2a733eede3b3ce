//! `loom workflow`: start workflow runs, follow them, read their reports,
//! answer their questions. The leader scheduler does the work; these
//! commands talk to it through the workflow start subject and the
//! workflows bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use loom_broker::Broker;
use loom_config::Config;
use loom_protocol::workflow::{WorkflowRun, WorkflowStatus};
use loom_scheduler::workflow::requests::{self, WorkflowRequestError};
use uuid::Uuid;

use crate::args::{Global, WorkflowCommand};
use crate::exit::Usage;
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Runs one `loom workflow` subcommand.
pub async fn run(global: &Global, command: &WorkflowCommand) -> anyhow::Result<()> {
    let config = load_config(global)?;
    if let WorkflowCommand::Start { workflow, .. } = command {
        requests::find_workflow(&config, workflow).map_err(|error| Usage(error.to_string()))?;
    }
    let broker = connect(&config, "workflow").await?;
    let result = act(&broker, &config, command).await;
    broker.close().await;
    result
}

async fn act(broker: &Broker, config: &Config, command: &WorkflowCommand) -> anyhow::Result<()> {
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
            let run_id = requests::start(broker, config, workflow, parsed).await?;
            println!("{run_id}");
            if !*wait {
                return Ok(());
            }
            let run = wait_for_end(broker, run_id).await?;
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
            let runs = requests::list_runs(broker, workflow.as_deref()).await?;
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
            let run = find(broker, *run_id).await?;
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
            let run = find(broker, *run_id).await?;
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
            let run = requests::answer(broker, *run_id, text)
                .await
                .map_err(usage_or_broker)?;
            println!(
                "answered workflow run {run_id} ({}); it resumes",
                run.question.unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// A refused request exits 2 (usage); a broker failure keeps its own code.
fn usage_or_broker(error: WorkflowRequestError) -> anyhow::Error {
    if error.is_usage() {
        Usage(error.to_string()).into()
    } else {
        error.into()
    }
}

async fn find(broker: &Broker, run_id: Uuid) -> anyhow::Result<WorkflowRun> {
    requests::find_run(broker, run_id)
        .await
        .map_err(usage_or_broker)
}

/// Polls the run until it ends (or waits for an answer, which is an end for
/// a waiting command too).
async fn wait_for_end(broker: &Broker, run_id: Uuid) -> anyhow::Result<WorkflowRun> {
    loop {
        match requests::find_run(broker, run_id).await {
            Ok(run) if run.status.is_final() || run.status == WorkflowStatus::WaitingForAnswer => {
                return Ok(run);
            }
            // Not taken by the leader yet, or still running.
            Ok(_) | Err(WorkflowRequestError::UnknownRun(_)) => {}
            Err(error) => return Err(error.into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
