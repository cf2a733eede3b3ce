//! `loom up`: the whole mesh in one process, for one machine.
//!
//! Start-up order is chosen so that a failure leaves nothing behind: bind the
//! HTTP address (a taken port is reported before anything starts), lock the
//! data directory, start the embedded nats-server when no URL is configured,
//! connect, apply the topology, then report ready. Shutdown runs the other
//! way: stop intake, let tasks finish, close the connection, stop the
//! embedded server, release the data directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use loom_broker::embedded::{self, EmbeddedServer, ServerOptions};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::Global;
use crate::exit::InUse;
use crate::http::{self, Health};
use crate::mesh::{self, load_config};

/// The port the embedded server prefers, so that `nats pub` without `-s`
/// reaches it; another free port is used when it is taken.
const PREFERRED_EMBEDDED_PORT: u16 = 4222;

/// How long tasks get to finish after the shutdown signal.
const TASK_GRACE: Duration = Duration::from_secs(10);

/// Runs until `shutdown` is cancelled.
pub async fn run(global: &Global, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let listener = http::bind(config.http.listen).await?;
    let health = Health::new();
    let registry = mesh::metrics_registry();
    let tasks = TaskTracker::new();
    {
        let (health, registry, shutdown) = (health.clone(), registry.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(error) = http::serve(listener, health, registry, shutdown).await {
                tracing::error!(%error, "the HTTP server stopped");
            }
        });
    }
    tracing::info!(listen = %config.http.listen, "serving /healthz, /readyz and /metrics");

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;

    let embedded = if config.nats.urls.is_empty() {
        let dir = config.data_dir.join("nats");
        let server = tokio::task::spawn_blocking(move || start_embedded(dir)).await??;
        tracing::info!(url = %server.url(), store = %server.dir().join("store").display(), "embedded nats-server started");
        let url_file = mesh::embedded_url_file(&config.data_dir);
        std::fs::write(&url_file, server.url())
            .with_context(|| format!("cannot write {}", url_file.display()))?;
        Some(EmbeddedGuard {
            server: Some(server),
            url_file,
        })
    } else {
        None
    };
    let urls = match &embedded {
        Some(guard) => vec![guard.url()],
        None => config.nats.urls.clone(),
    };

    let broker = loom_broker::connect(&config.nats, &urls, &config.prefix, "loom-up")
        .await
        .context("cannot reach the mesh")?;
    health.set_broker(broker.clone());
    let report = broker.apply_topology(&config.topology(), false).await?;
    for stale in &report.stale {
        tracing::warn!(consumer = %stale, "stale run consumer: its worker is not in the registry (`loom init --prune` deletes it)");
    }
    health.set_topology_ready();
    tracing::info!(
        workers = config.registry.len(),
        nats = %urls.join(","),
        "loom up is ready"
    );

    shutdown.cancelled().await;
    tracing::info!("stopping");
    tasks.close();
    if tokio::time::timeout(TASK_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks did not finish within {TASK_GRACE:?}; stopping anyway");
    }
    broker.close().await;
    if let Some(mut guard) = embedded {
        tokio::task::spawn_blocking(move || guard.stop()).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the embedded server in `dir`, on the preferred port when it is free.
fn start_embedded(dir: PathBuf) -> anyhow::Result<EmbeddedServer> {
    let binary = embedded::find_binary()?;
    let preferred = TcpListener::bind(("127.0.0.1", PREFERRED_EMBEDDED_PORT))
        .is_ok()
        .then_some(PREFERRED_EMBEDDED_PORT);
    let options = ServerOptions {
        binary,
        dir,
        port: preferred,
    };
    match EmbeddedServer::start(options.clone()) {
        // Taken between the check and the start: any free port will do.
        Err(embedded::EmbeddedError::PortInUse { .. }) if preferred.is_some() => {
            Ok(EmbeddedServer::start(ServerOptions {
                port: None,
                ..options
            })?)
        }
        other => Ok(other?),
    }
}

/// The embedded server and the file announcing its URL; both go away together.
struct EmbeddedGuard {
    server: Option<EmbeddedServer>,
    url_file: PathBuf,
}

impl EmbeddedGuard {
    fn url(&self) -> String {
        self.server
            .as_ref()
            .map(EmbeddedServer::url)
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = std::fs::remove_file(&self.url_file);
        if let Some(mut server) = self.server.take() {
            server.stop();
            tracing::info!("embedded nats-server stopped");
        }
    }
}

impl Drop for EmbeddedGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `loom up` per data directory: two would share one store.
struct DataDirLock {
    file: PathBuf,
}

impl DataDirLock {
    fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        let file = data_dir.join("loom-up.pid");
        if let Some(pid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            && pid != std::process::id() as i32
            && kill(Pid::from_raw(pid), None).is_ok()
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("loom"))
                .unwrap_or(false)
        {
            return Err(InUse::DataDir {
                dir: data_dir.display().to_string(),
                pid,
            }
            .into());
        }
        std::fs::write(&file, std::process::id().to_string())
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(DataDirLock { file })
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
