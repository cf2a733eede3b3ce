//! `loom agent`: pull and execute runs. Run as many as needed.

use tokio_util::sync::CancellationToken;

use crate::args::{AgentArgs, Global};
use crate::commands::roles;
use crate::runtime::{Runtime, Topology};

/// Runs until `shutdown` is cancelled, then drains.
pub async fn run(
    global: &Global,
    args: &AgentArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut overrides = Vec::new();
    if let Some(labels) = &args.labels {
        overrides.push(("agent.labels", serde_json::json!(labels)));
    }
    if let Some(workers) = &args.workers {
        overrides.push(("agent.workers", serde_json::json!(workers)));
    }
    if let Some(concurrency) = args.concurrency {
        overrides.push(("agent.concurrency", serde_json::json!(concurrency)));
    }
    let runtime = Runtime::start_with(
        global,
        &overrides,
        "agent",
        Topology::Await,
        false,
        shutdown,
    )
    .await?;
    roles::spawn_agent(&runtime, loom_agent::AgentOptions::default());
    runtime.run_until_shutdown().await
}
