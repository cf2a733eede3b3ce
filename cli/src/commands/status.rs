//! `loom status`: every worker at a glance, as the dashboard shows it.
//! Colour on a terminal (unless `NO_COLOR`), plain when piped; `--json`
//! prints the shape of `GET /api/workers`.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Local, Utc};
use loom_validator::status::{Overview, WorkerStatus, WorkerView};

use crate::args::{Global, StatusArgs};
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Prints the overview.
pub async fn run(global: &Global, args: &StatusArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let broker = connect(&config, "status").await?;
    let overview = loom_validator::status::overview(&broker, &config).await;
    broker.close().await;
    let overview = overview?;
    if args.json {
        print_json(&serde_json::to_value(&overview)?);
        return Ok(());
    }
    let mut out = anstream::stdout();
    write!(out, "{}", render(&overview, Utc::now()))?;
    Ok(())
}

/// The overview as a table, with ANSI styles (stripped by the writer when
/// the output is not a terminal).
fn render(overview: &Overview, now: DateTime<Utc>) -> String {
    let mut text = String::new();
    let leader = match &overview.leader {
        Some(leader) => format!("{} (since {})", leader.id, ago(leader.since, now)),
        None => paint(
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            "none",
        ),
    };
    text.push_str(&format!("leader: {leader}\n"));
    if overview.agents.is_empty() {
        text.push_str("agents: none alive\n");
    }
    for agent in &overview.agents {
        text.push_str(&format!(
            "agent {}: {}/{} running, serves {} worker(s), seen {}\n",
            agent.id,
            agent.running,
            agent.concurrency,
            agent.workers.len(),
            ago(agent.seen_at, now)
        ));
    }
    text.push('\n');
    let headers = [
        "WORKER", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "VERDICT", "24H OK", "P95", "DLQ",
        "NOTE",
    ];
    let rows: Vec<(WorkerStatus, [String; 10])> = overview
        .workers
        .iter()
        .map(|worker| (worker.status, row(worker, now)))
        .collect();
    let mut widths = headers.map(str::len);
    for (_, cells) in &rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String], status: Option<WorkerStatus>| {
        let mut line = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let padded = if index + 1 == cells.len() {
                cell.clone()
            } else {
                format!("{cell:<width$}  ")
            };
            match (index, status) {
                (1, Some(status)) => line.push_str(&paint(style(status), &padded)),
                _ => line.push_str(&padded),
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    let header_cells = headers.map(str::to_owned);
    text.push_str(&paint(Style::new().bold(), &line(&header_cells, None)));
    for (status, cells) in &rows {
        text.push_str(&line(cells, Some(*status)));
    }
    text
}

fn row(worker: &WorkerView, now: DateTime<Utc>) -> [String; 10] {
    let dash = || "-".to_owned();
    let next = worker.next_run.map_or_else(dash, |at| {
        format!(
            "{} ({})",
            at.with_timezone(&Local).format("%a %H:%M"),
            until(at, now)
        )
    });
    let (last, verdict) = match &worker.last_run {
        Some(run) => (
            ago(run.finished_at.unwrap_or(run.scheduled_at), now),
            run.verdict.as_str().to_owned(),
        ),
        None => (dash(), dash()),
    };
    let rate = worker.success_rate_24h.map_or_else(dash, |rate| {
        format!("{:.0}% of {}", rate * 100.0, worker.runs_24h)
    });
    let p95 = worker
        .p95_duration_ms
        .map_or_else(dash, |ms| format!("{:.1}s", ms as f64 / 1000.0));
    let note = match &worker.paused {
        Some(pause) => {
            let until = pause.until.map_or("until resumed".to_owned(), |at| {
                until(at, now).replace("in ", "for ")
            });
            if pause.note.is_empty() {
                format!("paused {until}")
            } else {
                format!("paused {until}: {}", pause.note)
            }
        }
        None if worker.consecutive_failures > 0 => {
            format!("{} failure(s) in a row", worker.consecutive_failures)
        }
        None => String::new(),
    };
    [
        worker.name.clone(),
        worker.status.as_str().replace('_', " "),
        worker
            .schedule_description
            .clone()
            .unwrap_or_else(|| "manual only".to_owned()),
        next,
        last,
        verdict,
        rate,
        p95,
        worker.dead_letters.to_string(),
        note,
    ]
}

fn style(status: WorkerStatus) -> Style {
    let colour = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match status {
        WorkerStatus::Failing => colour(AnsiColor::Red).bold(),
        WorkerStatus::Paused => colour(AnsiColor::Yellow),
        WorkerStatus::Running => colour(AnsiColor::Cyan),
        WorkerStatus::Ok => colour(AnsiColor::Green),
        WorkerStatus::NeverRun | WorkerStatus::Disabled => Style::new().dimmed(),
    }
}

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// "in 3h", "in 12m", "in 40s".
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("in {}", span((at - now).num_seconds().max(0)))
}

/// "3h ago", "12m ago", "just now".
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    if seconds < 5 {
        "just now".to_owned()
    } else {
        format!("{} ago", span(seconds))
    }
}

/// The largest unit that fits: `40s`, `12m`, `3h`, `2d`.
fn span(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_the_largest_unit_that_fits() {
        assert_eq!(span(40), "40s");
        assert_eq!(span(12 * 60 + 5), "12m");
        assert_eq!(span(3 * 3600 + 59), "3h");
        assert_eq!(span(2 * 86_400), "2d");
        let now = Utc::now();
        assert_eq!(until(now + chrono::Duration::hours(3), now), "in 3h");
        assert_eq!(ago(now - chrono::Duration::seconds(2), now), "just now");
        assert_eq!(ago(now - chrono::Duration::minutes(5), now), "5m ago");
    }
}
