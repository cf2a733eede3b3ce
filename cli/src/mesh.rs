//! What every command needs to reach the mesh: the loaded configuration,
//! the NATS URLs (configured, or those of the embedded server a `loom up`
//! on the same data directory started), the connection, and the metrics
//! registry every role registers into.

use std::path::{Path, PathBuf};

use anyhow::Context;
use loom_broker::Broker;
use loom_config::Config;

use crate::args::Global;

/// File in the data directory where `loom up` writes its embedded server's URL.
pub const EMBEDDED_URL_FILE: &str = "embedded-nats.url";

/// Loads and validates the configuration named by `--config` / `LOOM_CONFIG`.
pub fn load_config(global: &Global) -> anyhow::Result<Config> {
    load_config_with(global.config.as_deref(), &[])
}

/// Flags that override configuration keys: (dotted key, value).
pub type Overrides = Vec<(String, serde_json::Value)>;

/// Loads `file` with the environment and `overrides` on top (flags win).
pub fn load_config_with(
    file: Option<&Path>,
    overrides: &[(String, serde_json::Value)],
) -> anyhow::Result<Config> {
    let mut loader = loom_config::Loader::new(file.map(Path::to_path_buf));
    for (key, value) in overrides {
        loader = loader.with_override(key, value);
    }
    Ok(loader.load()?)
}

/// The URLs to connect to: `nats.url`, or else the embedded server that a
/// running `loom up` with the same data directory announced.
pub fn nats_urls(config: &Config) -> anyhow::Result<Vec<String>> {
    if !config.nats.urls.is_empty() {
        return Ok(config.nats.urls.clone());
    }
    let file = embedded_url_file(&config.data_dir);
    match std::fs::read_to_string(&file) {
        Ok(url) if !url.trim().is_empty() => Ok(vec![url.trim().to_owned()]),
        _ => Err(loom_broker::ConnectError::Unreachable {
            urls: "(none configured)".to_owned(),
            detail: format!(
                "nats.url is not set and no `loom up` is running with data dir {} (start one, or set nats.url)",
                config.data_dir.display()
            ),
        }
        .into()),
    }
}

/// `<data_dir>/embedded-nats.url`.
pub fn embedded_url_file(data_dir: &Path) -> PathBuf {
    data_dir.join(EMBEDDED_URL_FILE)
}

/// Connects to the mesh's NATS as `role`.
pub async fn connect(config: &Config, role: &str) -> anyhow::Result<Broker> {
    let urls = nats_urls(config)?;
    let broker = loom_broker::connect(&config.nats, &urls, &config.prefix, &format!("loom-{role}"))
        .await
        .context("cannot reach the mesh")?;
    Ok(broker)
}

/// The process's metrics registry (the default one, where roles register
/// their families), with the process's own metrics (CPU, memory, open
/// files) and `loom_build_info` added once.
pub fn metrics_registry() -> prometheus::Registry {
    static INIT: std::sync::Once = std::sync::Once::new();
    let registry = prometheus::default_registry().clone();
    INIT.call_once(|| {
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        if let Ok(build_info) = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("loom_build_info", "Loom's version; always 1."),
            &["version"],
        ) {
            build_info
                .with_label_values(&[env!("CARGO_PKG_VERSION")])
                .set(1);
            let _ = registry.register(Box::new(build_info));
        }
    });
    registry
}
