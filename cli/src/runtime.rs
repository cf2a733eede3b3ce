//! What every long-running command shares: the HTTP server, the NATS
//! connection (with the embedded server for `loom up`), the topology, the
//! configuration (reloaded on SIGHUP and when its files change), and an
//! orderly shutdown.
//!
//! Start-up order is chosen so that a failure leaves nothing behind: bind the
//! HTTP address (a taken port is reported before anything starts), lock the
//! data directory and start the embedded server (`loom up` without a URL),
//! connect, put the topology in place, then report ready. Shutdown runs the
//! other way: roles stop (they watch the shutdown token), tasks finish within
//! a deadline, the connection drains, the embedded server stops.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use loom_broker::Broker;
use loom_broker::embedded::{self, EmbeddedServer, ServerOptions};
use loom_config::Config;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::Global;
use crate::exit::InUse;
use crate::http::{self, Health};
use crate::mesh::{self, load_config_with};

/// The port the embedded server prefers, so that `nats pub` without `-s`
/// reaches it; another free port is used when it is taken.
const PREFERRED_EMBEDDED_PORT: u16 = 4222;

/// How long tasks get to finish after the shutdown signal.
const TASK_GRACE: Duration = Duration::from_secs(60);

/// How often the configuration files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// How a command treats the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Create or update it at start and after each reload (`loom up`, the
    /// scheduler: they own the registry, hence the run consumers).
    Apply,
    /// Wait until it exists (agents, validator, Klaxon).
    Await,
}

/// What the HTTP server serves besides `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// Nothing more (scheduler, agent, Klaxon).
    Probes,
    /// The dashboard and the JSON API too (the validator, `loom up`).
    Dashboard,
}

/// A running process's shared parts.
pub struct Runtime {
    /// The configuration, updated on reload.
    pub config: watch::Receiver<Arc<Config>>,
    /// The connection to the mesh.
    pub broker: Broker,
    /// Every task the process spawns.
    pub tasks: TaskTracker,
    /// Cancelled on SIGINT or SIGTERM.
    pub shutdown: CancellationToken,
    embedded: Option<EmbeddedGuard>,
    _lock: Option<DataDirLock>,
    failure: Arc<std::sync::Mutex<Option<anyhow::Error>>>,
}

impl Runtime {
    /// Starts the shared parts for `role` (its NATS client name). Only `loom
    /// up` passes `allow_embedded`.
    pub async fn start(
        global: &Global,
        role: &str,
        topology: Topology,
        allow_embedded: bool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Runtime> {
        Runtime::start_with(global, &[], role, topology, allow_embedded, shutdown).await
    }

    /// [`Runtime::start`], serving the dashboard and the JSON API as well.
    pub async fn start_serving_dashboard(
        global: &Global,
        role: &str,
        topology: Topology,
        allow_embedded: bool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Runtime> {
        let routes = Http::Dashboard;
        Runtime::launch(
            global,
            &[],
            role,
            topology,
            allow_embedded,
            routes,
            shutdown,
        )
        .await
    }

    /// [`Runtime::start`] with flags overriding configuration keys, kept
    /// across reloads.
    pub async fn start_with(
        global: &Global,
        overrides: &[(&str, serde_json::Value)],
        role: &str,
        topology: Topology,
        allow_embedded: bool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Runtime> {
        let routes = Http::Probes;
        Runtime::launch(
            global,
            overrides,
            role,
            topology,
            allow_embedded,
            routes,
            shutdown,
        )
        .await
    }

    async fn launch(
        global: &Global,
        overrides: &[(&str, serde_json::Value)],
        role: &str,
        topology: Topology,
        allow_embedded: bool,
        routes: Http,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Runtime> {
        let overrides: mesh::Overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let config = Arc::new(load_config_with(global.config.as_deref(), &overrides)?);
        // Made before the HTTP server starts: the JSON API reads the registry.
        let (config_tx, config_rx) = watch::channel(config.clone());
        crate::memory::release_free_memory();
        let listener = http::bind(config.http.listen).await?;
        let health = Health::new();
        let registry = mesh::metrics_registry();
        let tasks = TaskTracker::new();
        {
            let extra = match routes {
                Http::Probes => axum::Router::new(),
                Http::Dashboard => crate::api::router(health.clone(), config_rx.clone()),
            };
            let (health, registry, shutdown) = (health.clone(), registry.clone(), shutdown.clone());
            tasks.spawn(async move {
                if let Err(error) = http::serve(listener, health, registry, extra, shutdown).await {
                    tracing::error!(%error, "the HTTP server stopped");
                }
            });
        }
        match routes {
            Http::Probes => {
                tracing::info!(listen = %config.http.listen, "serving /healthz, /readyz and /metrics");
            }
            Http::Dashboard => {
                tracing::info!(listen = %config.http.listen, "serving the dashboard (/), the JSON API (/api), /healthz, /readyz and /metrics");
            }
        }

        let (embedded, lock) = if allow_embedded && config.nats.urls.is_empty() {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
            let lock = DataDirLock::acquire(&config.data_dir)?;
            let dir = config.data_dir.join("nats");
            let server = tokio::task::spawn_blocking(move || start_embedded(dir)).await??;
            tracing::info!(url = %server.url(), store = %server.dir().join("store").display(), "embedded nats-server started");
            let url_file = mesh::embedded_url_file(&config.data_dir);
            std::fs::write(&url_file, server.url())
                .with_context(|| format!("cannot write {}", url_file.display()))?;
            (
                Some(EmbeddedGuard {
                    server: Some(server),
                    url_file,
                }),
                Some(lock),
            )
        } else {
            (None, None)
        };
        let urls = match &embedded {
            Some(guard) => vec![guard.url()],
            None => mesh::nats_urls(&config)?,
        };
        let broker =
            loom_broker::connect(&config.nats, &urls, &config.prefix, &format!("loom-{role}"))
                .await
                .context("cannot reach the mesh")?;
        health.set_broker(broker.clone());

        match topology {
            Topology::Apply => apply_topology(&broker, &config).await?,
            Topology::Await => await_topology(&broker, &config, &shutdown).await?,
        }
        health.set_topology_ready();

        tasks.spawn(crate::memory::release_periodically(shutdown.clone()));
        tasks.spawn(watch_config(
            global.config.clone(),
            overrides,
            config_tx,
            broker.clone(),
            topology,
            shutdown.clone(),
        ));
        Ok(Runtime {
            config: config_rx,
            broker,
            tasks,
            shutdown,
            embedded,
            _lock: lock,
            failure: Arc::default(),
        })
    }

    /// Runs a role as a task of this process. A role that fails stops the
    /// process, which then exits with the role's error.
    pub fn spawn_role<F>(&self, role: &'static str, run: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (failure, shutdown) = (self.failure.clone(), self.shutdown.clone());
        self.tasks.spawn(async move {
            if let Err(error) = run.await {
                tracing::error!(role, error = %crate::exit::describe(&error), "role failed; stopping");
                if let Ok(mut slot) = failure.lock() {
                    slot.get_or_insert(error.context(format!("the {role} failed")));
                }
                shutdown.cancel();
            }
        });
    }

    /// Waits for the shutdown signal, then stops everything in order.
    pub async fn run_until_shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        self.stop().await
    }

    /// Stops: tasks finish (roles watch the shutdown token), the connection
    /// drains, the embedded server stops.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        tracing::info!("stopping");
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(TASK_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("tasks did not finish within {TASK_GRACE:?}; stopping anyway");
        }
        self.broker.close().await;
        if let Some(mut guard) = self.embedded.take() {
            tokio::task::spawn_blocking(move || guard.stop()).await?;
        }
        tracing::info!("stopped");
        match self.failure.lock().ok().and_then(|mut slot| slot.take()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

async fn apply_topology(broker: &Broker, config: &Config) -> anyhow::Result<()> {
    let report = broker.apply_topology(&config.topology(), false).await?;
    for stale in &report.stale {
        tracing::warn!(consumer = %stale, "stale run consumer: its worker is not in the registry (`loom init --prune` deletes it)");
    }
    Ok(())
}

async fn await_topology(
    broker: &Broker,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let topology = config.topology();
    let mut warned = false;
    loop {
        if broker.topology_exists(&topology).await? {
            return Ok(());
        }
        if !warned {
            tracing::warn!(
                "the mesh's streams do not exist yet; waiting for `loom init` or a scheduler to create them"
            );
            warned = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Reloads the configuration on SIGHUP and when its files change. A
/// configuration that does not load is reported and ignored: the running one
/// stays.
async fn watch_config(
    file: Option<PathBuf>,
    overrides: mesh::Overrides,
    config: watch::Sender<Arc<Config>>,
    broker: Broker,
    topology: Topology,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the configuration reloads on file changes only");
            None
        }
    };
    let mut stamps = file_stamps(&config.borrow());
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup => "SIGHUP",
            _ = tokio::time::sleep(RELOAD_POLL) => {
                let now = file_stamps(&config.borrow());
                if now == stamps { continue; }
                "a configuration file changed"
            }
        };
        let loaded = load_config_with(file.as_deref(), &overrides);
        match loaded {
            Ok(new) => {
                if topology == Topology::Apply
                    && let Err(error) = apply_topology(&broker, &new).await
                {
                    tracing::error!(error = %crate::exit::describe(&error), "reload: cannot update the topology; keeping the running configuration");
                    continue;
                }
                stamps = file_stamps(&new);
                tracing::info!(
                    reason,
                    workers = new.registry.len(),
                    "configuration reloaded"
                );
                config.send_replace(Arc::new(new));
            }
            Err(error) => {
                // The files' current stamps: the error is logged once per change.
                stamps = file_stamps(&config.borrow());
                tracing::error!(reason, error = %crate::exit::describe(&error), "reload: the configuration does not load; keeping the running one");
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn file_stamps(config: &Config) -> Vec<(PathBuf, Option<SystemTime>)> {
    [config.file.clone(), config.registry.file.clone()]
        .into_iter()
        .flatten()
        .map(|path| {
            let stamp = modified(&path);
            (path, stamp)
        })
        .collect()
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
        config: None,
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
