//! `loom scheduler`: the scheduler role on its own. Run two or more; one
//! leads, the others stand by.

use tokio_util::sync::CancellationToken;

use crate::args::Global;
use crate::commands::roles;
use crate::runtime::{Runtime, Topology};

/// Runs until `shutdown` is cancelled.
pub async fn run(global: &Global, shutdown: CancellationToken) -> anyhow::Result<()> {
    let runtime = Runtime::start(global, "scheduler", Topology::Apply, false, shutdown).await?;
    roles::spawn_scheduler(&runtime);
    runtime.run_until_shutdown().await
}
