//! `loom up`: every role of the mesh in one process, for one machine, on an
//! embedded nats-server unless `nats.url` is set, with the dashboard and the
//! JSON API on `http.listen`.

use tokio_util::sync::CancellationToken;

use crate::args::Global;
use crate::commands::roles;
use crate::runtime::{Runtime, Topology};

/// Runs until `shutdown` is cancelled.
pub async fn run(global: &Global, shutdown: CancellationToken) -> anyhow::Result<()> {
    let runtime =
        Runtime::start_serving_dashboard(global, "up", Topology::Apply, true, shutdown).await?;
    roles::spawn_scheduler(&runtime);
    roles::spawn_agent(&runtime, loom_agent::AgentOptions { all_labels: true });
    roles::spawn_validator(&runtime);
    roles::spawn_klaxon(&runtime);
    tracing::info!(
        workers = runtime.config.borrow().registry.len(),
        "loom up is ready"
    );
    runtime.run_until_shutdown().await
}
