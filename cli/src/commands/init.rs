//! `loom init`: create or update the JetStream topology, idempotently.

use serde_json::json;

use crate::args::{Global, InitArgs};
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Applies the topology and prints what was done to each object.
pub async fn run(global: &Global, args: &InitArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let broker = connect(&config, "init").await?;
    let report = broker
        .apply_topology(&config.topology(), args.prune)
        .await?;
    if args.json {
        print_json(&json!({
            "applied": report.applied.iter().map(|item| json!({
                "kind": item.kind,
                "name": item.name,
                "action": item.action.to_string(),
            })).collect::<Vec<_>>(),
            "stale": report.stale,
        }));
    } else {
        for item in &report.applied {
            println!("{:<13} {:<32} {}", item.kind, item.name, item.action);
        }
        for stale in &report.stale {
            println!(
                "{:<13} {stale:<32} stale: its worker is not in the registry (delete it with --prune)",
                "consumer"
            );
        }
        let count = |action| report.applied.iter().filter(|i| i.action == action).count();
        use loom_broker::Action;
        println!(
            "topology of mesh \"{}\": {} created, {} updated, {} unchanged{}",
            config.prefix,
            count(Action::Created),
            count(Action::Updated),
            count(Action::Unchanged),
            match count(Action::Deleted) {
                0 => String::new(),
                n => format!(", {n} deleted"),
            }
        );
    }
    broker.close().await;
    Ok(())
}
