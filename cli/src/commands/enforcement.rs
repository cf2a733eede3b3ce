//! `loom enforcement push`: publish enforcement bundles.

use serde_json::json;

use crate::args::{EnforcementCommand, Global};
use crate::exit::Usage;
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Publishes the bundles and prints each one's digest.
pub async fn run(global: &Global, command: &EnforcementCommand) -> anyhow::Result<()> {
    let EnforcementCommand::Push { json } = command;
    let config = load_config(global)?;
    if config.enforcement.dir.is_none() {
        return Err(Usage(
            "enforcement.dir is not set in the configuration: there are no bundles to push"
                .to_owned(),
        )
        .into());
    }
    let broker = connect(&config, "enforcement").await?;
    let published = loom_scheduler::enforcement::publish_bundles(&broker, &config).await;
    broker.close().await;
    let published = published?;
    if *json {
        print_json(&json!(published
            .iter()
            .map(|p| json!({"name": p.name, "digest": p.digest, "size": p.size, "changed": p.changed}))
            .collect::<Vec<_>>()));
        return Ok(());
    }
    if published.is_empty() {
        println!("no worker names an enforcement bundle");
    }
    for bundle in published {
        let state = if bundle.changed {
            "published"
        } else {
            "unchanged"
        };
        println!(
            "{:<20} {}  {} bytes  {state}",
            bundle.name, bundle.digest, bundle.size
        );
    }
    Ok(())
}
