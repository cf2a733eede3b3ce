//! `loom runs`: a worker's recent runs (and, with `--json`, its skipped
//! fires of the last day: the shape of `GET /api/runs`).

use serde_json::json;

use crate::args::{Global, RunsArgs};
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Prints the runs, newest first.
pub async fn run(global: &Global, args: &RunsArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    loom_scheduler::operator::find_worker(&config, &args.worker)?;
    let broker = connect(&config, "runs").await?;
    let history = loom_validator::status::worker_runs(&broker, &args.worker, args.limit).await;
    broker.close().await;
    let history = history?;
    if args.json {
        print_json(&json!(history));
        return Ok(());
    }
    let runs = history.runs;
    if runs.is_empty() {
        println!("{} has no runs in the history", args.worker);
        return Ok(());
    }
    println!(
        "{:<36}  {:<20}  {:<8}  {:>8}  {:<8}  {:<24}  {:<14}  reason",
        "run", "scheduled (UTC)", "trigger", "attempts", "duration", "agent", "verdict"
    );
    for view in runs {
        let run = view.state;
        let last = run.attempts.last();
        let duration = last.map_or("-".to_owned(), |a| {
            format!("{:.1}s", a.duration_ms as f64 / 1000.0)
        });
        let agent = view
            .running_on
            .as_deref()
            .or(last.map(|a| a.agent_id.as_str()))
            .unwrap_or("-");
        let verdict = run.verdict.map_or_else(
            || format!("({})", status_name(run.status)),
            |v| v.as_str().to_owned(),
        );
        println!(
            "{:<36}  {:<20}  {:<8}  {:>8}  {:<8}  {:<24}  {:<14}  {}",
            run.run_id,
            run.scheduled_at.format("%Y-%m-%d %H:%M:%S"),
            run.trigger.as_str(),
            run.attempts.len(),
            duration,
            agent,
            verdict,
            run.reason.unwrap_or_default()
        );
    }
    Ok(())
}

fn status_name(status: loom_protocol::state::RunStatus) -> &'static str {
    use loom_protocol::state::RunStatus;
    match status {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Retrying => "retrying",
        RunStatus::Done => "done",
    }
}
