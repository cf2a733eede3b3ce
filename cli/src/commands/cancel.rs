//! `loom cancel`: stop a run.

use crate::args::{CancelArgs, Global};
use crate::mesh::{connect, load_config};

/// Sends the cancel request and says which run of which worker it targets.
pub async fn run(global: &Global, args: &CancelArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let broker = connect(&config, "cancel").await?;
    let state = loom_validator::history::cancel(&broker, args.run_id, &args.reason).await;
    broker.close().await;
    let state = state?;
    println!(
        "cancel requested for run {} of {}",
        args.run_id, state.worker
    );
    Ok(())
}
