//! `loom backfill`: publish the fires of a past range.

use serde_json::json;

use crate::args::{BackfillArgs, Global};
use crate::commands::parse_when;
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Publishes the range's fires and reports each one.
pub async fn run(global: &Global, args: &BackfillArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    loom_scheduler::operator::find_worker(&config, &args.worker)?;
    let (from, to) = (parse_when(&args.from)?, parse_when(&args.to)?);
    let broker = connect(&config, "backfill").await?;
    let report =
        loom_scheduler::operator::backfill(&broker, &config, &args.worker, from, to, args.max)
            .await?;
    broker.close().await;
    let rows = |items: &[(chrono::DateTime<chrono::Utc>, uuid::Uuid)]| {
        items
            .iter()
            .map(|(at, id)| json!({"scheduled_at": at.to_rfc3339(), "run_id": id.to_string()}))
            .collect::<Vec<_>>()
    };
    if args.json {
        print_json(&json!({
            "published": rows(&report.published),
            "already_ran": rows(&report.already_ran),
            "duplicates": rows(&report.duplicates),
        }));
        return Ok(());
    }
    for (at, id) in &report.published {
        println!("published     {at}  {id}");
    }
    for (at, id) in &report.already_ran {
        println!("already ran   {at}  {id}");
    }
    for (at, id) in &report.duplicates {
        println!("just published {at}  {id}");
    }
    println!(
        "backfill of {}: {} published, {} already ran, {} published moments ago",
        args.worker,
        report.published.len(),
        report.already_ran.len(),
        report.duplicates.len()
    );
    Ok(())
}
