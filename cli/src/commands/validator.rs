//! `loom validator`: verdicts, the watchdog and dead letters, and the
//! dashboard and JSON API on `http.listen`. Run one or more; they share the
//! work and never judge a run twice.

use tokio_util::sync::CancellationToken;

use crate::args::Global;
use crate::commands::roles;
use crate::runtime::{Runtime, Topology};

/// Runs until `shutdown` is cancelled.
pub async fn run(global: &Global, shutdown: CancellationToken) -> anyhow::Result<()> {
    let runtime =
        Runtime::start_serving_dashboard(global, "validator", Topology::Await, false, shutdown)
            .await?;
    roles::spawn_validator(&runtime);
    runtime.run_until_shutdown().await
}
