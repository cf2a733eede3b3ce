//! `loom check`: validate the configuration and show when each worker fires.

use chrono::{DateTime, Utc};
use loom_config::{Config, Worker};
use serde_json::json;

use crate::args::{CheckArgs, Global};
use crate::mesh::load_config;
use crate::output::print_json;

/// Loads the configuration (any error is the command's error) and prints
/// every worker with its next fires.
pub fn run(global: &Global, args: &CheckArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let from = args.from.unwrap_or_else(Utc::now);
    if args.json {
        print_json(&as_json(&config, from, args.fires));
    } else {
        print!("{}", as_text(&config, from, args.fires));
    }
    Ok(())
}

fn next_fires(worker: &Worker, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let Some(schedule) = &worker.schedule else {
        return Vec::new();
    };
    let mut fires = Vec::with_capacity(count);
    let mut after = from;
    while fires.len() < count {
        match schedule.next_fire(after) {
            Some(fire) => {
                fires.push(fire);
                after = fire;
            }
            None => break,
        }
    }
    fires
}

fn local(worker: &Worker, instant: DateTime<Utc>) -> String {
    instant
        .with_timezone(&worker.timezone)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn as_text(config: &Config, from: DateTime<Utc>, count: usize) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let workers: Vec<&Worker> = config.registry.workers().collect();
    let enabled = workers.iter().filter(|w| w.enabled).count();
    let source = config
        .file
        .as_ref()
        .map_or("defaults and environment".to_owned(), |f| {
            f.display().to_string()
        });
    let _ = writeln!(
        text,
        "{source}: valid; {} worker{}, {enabled} enabled",
        workers.len(),
        if workers.len() == 1 { "" } else { "s" }
    );
    for worker in workers {
        let _ = writeln!(text);
        let flag = if worker.enabled {
            "enabled"
        } else {
            "disabled"
        };
        let _ = writeln!(text, "{}  [{flag}]", worker.name);
        if !worker.description.is_empty() {
            let _ = writeln!(text, "  {}", worker.description);
        }
        match &worker.schedule {
            None => {
                let _ = writeln!(text, "  manual only (no schedule)");
            }
            Some(schedule) => {
                let _ = writeln!(
                    text,
                    "  {}  (\"{}\")",
                    schedule.describe(),
                    schedule.expression()
                );
                let label = if worker.enabled {
                    "next"
                } else {
                    "next (if enabled)"
                };
                for (i, fire) in next_fires(worker, from, count).into_iter().enumerate() {
                    let head = if i == 0 { label } else { "" };
                    let _ = writeln!(
                        text,
                        "  {head:<width$}  {}  {}",
                        local(worker, fire),
                        fire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        width = label.len()
                    );
                }
            }
        }
    }
    text
}

fn as_json(config: &Config, from: DateTime<Utc>, count: usize) -> serde_json::Value {
    let workers: Vec<serde_json::Value> = config
        .registry
        .workers()
        .map(|worker| {
            json!({
                "name": &*worker.name,
                "description": worker.description,
                "enabled": worker.enabled,
                "schedule": worker.schedule.as_ref().map(|s| s.expression()),
                "schedule_description": worker.schedule_description(),
                "timezone": worker.timezone.name(),
                "next_fires": next_fires(worker, from, count)
                    .into_iter()
                    .map(|fire| json!({
                        "utc": fire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "local": fire.with_timezone(&worker.timezone).to_rfc3339(),
                    }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "config": config.file.as_ref().map(|f| f.display().to_string()),
        "registry": config.registry.file.as_ref().map(|f| f.display().to_string()),
        "workers": workers,
    })
}
