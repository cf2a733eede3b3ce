//! Publishing enforcement bundles: each bundle directory named by a worker
//! is packed (deterministically), stored in the object store under its
//! SHA-256 digest, and recorded as the bundle's current digest
//! (`bundle.<name>`), which the scheduler stamps into every run command.

use std::collections::BTreeSet;

use chrono::Utc;
use loom_broker::Broker;
use loom_config::Config;
use loom_protocol::state::{BundleRef, bundle_key};

/// One bundle as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Bundle name.
    pub name: String,
    /// Its digest.
    pub digest: String,
    /// Archive size in bytes.
    pub size: u64,
    /// Whether this digest is new (not published before).
    pub changed: bool,
}

/// Why a bundle could not be published.
#[derive(Debug, thiserror::Error)]
pub enum EnforcementError {
    /// The bundle directory is unusable.
    #[error("enforcement bundle {name:?}: {source}")]
    Bundle {
        /// Bundle name.
        name: String,
        /// What is wrong with it.
        source: loom_workers::BundleError,
    },
    /// The object store refused it.
    #[error(transparent)]
    Store(#[from] loom_broker::ObjectError),
    /// The current digest could not be recorded.
    #[error(transparent)]
    State(#[from] loom_broker::StateError),
}

/// Publishes every bundle a worker of `config` names, from `enforcement.dir`.
pub async fn publish_bundles(
    broker: &Broker,
    config: &Config,
) -> Result<Vec<Published>, EnforcementError> {
    let Some(dir) = &config.enforcement.dir else {
        return Ok(Vec::new());
    };
    let names: BTreeSet<&str> = config
        .registry
        .workers()
        .filter_map(|w| w.enforcement.as_deref())
        .collect();
    let workers = broker.bucket(&broker.names().workers_bucket()).await?;
    let mut published = Vec::new();
    for name in names {
        let bundle_dir = dir.join(name);
        let packed = tokio::task::spawn_blocking(move || loom_workers::pack(&bundle_dir))
            .await
            .map_err(|e| EnforcementError::Bundle {
                name: name.to_owned(),
                source: loom_workers::BundleError::Io {
                    path: dir.join(name),
                    source: std::io::Error::other(e.to_string()),
                },
            })?
            .map_err(|source| EnforcementError::Bundle {
                name: name.to_owned(),
                source,
            })?;
        broker.put_bundle(&packed.digest, &packed.archive).await?;
        let key = bundle_key(name);
        let current = workers
            .get::<BundleRef>(&key)
            .await?
            .map(|v| v.value.digest);
        let changed = current.as_deref() != Some(packed.digest.as_str());
        if changed {
            let reference = BundleRef {
                digest: packed.digest.clone(),
                size: packed.archive.len() as u64,
                published_at: Utc::now(),
            };
            workers.put(&key, &reference).await?;
            tracing::info!(bundle = name, digest = %packed.digest, "enforcement bundle published");
        }
        published.push(Published {
            name: name.to_owned(),
            digest: packed.digest,
            size: packed.archive.len() as u64,
            changed,
        });
    }
    Ok(published)
}
