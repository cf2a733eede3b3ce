//! `loom klaxon`: turn dead letters into alerts. Run one or more; a dead
//! letter is alerted on by one of them.

use tokio_util::sync::CancellationToken;

use crate::args::Global;
use crate::commands::roles;
use crate::runtime::{Runtime, Topology};

/// Runs until `shutdown` is cancelled.
pub async fn run(global: &Global, shutdown: CancellationToken) -> anyhow::Result<()> {
    let runtime = Runtime::start(global, "klaxon", Topology::Await, false, shutdown).await?;
    roles::spawn_klaxon(&runtime);
    runtime.run_until_shutdown().await
}
