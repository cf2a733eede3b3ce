//! Enforcement bundles on the agent: the digest a run must execute with, and
//! the verified bundle for it, fetched from the object store once and kept
//! in a local cache (re-verified before reuse).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use loom_broker::Broker;
use loom_config::Worker;
use loom_protocol::RunCommand;
use loom_protocol::state::{BundleRef, bundle_key};
use loom_workers::LoadedBundle;

/// The bundles this agent has loaded, by digest.
#[derive(Clone)]
pub struct Bundles {
    broker: Broker,
    cache_dir: PathBuf,
    loaded: Arc<Mutex<HashMap<String, Arc<LoadedBundle>>>>,
}

impl Bundles {
    /// A cache in `cache_dir`.
    pub fn new(broker: Broker, cache_dir: PathBuf) -> Self {
        Bundles {
            broker,
            cache_dir,
            loaded: Arc::default(),
        }
    }

    /// The bundle `command` must run with, loaded and verified; or one
    /// sentence saying why it cannot be had (the run then fails closed with
    /// `enforcement_unavailable`).
    pub async fn for_run(
        &self,
        worker: &Worker,
        command: &RunCommand,
    ) -> Result<Arc<LoadedBundle>, String> {
        let Some(name) = &worker.enforcement else {
            return Err(format!(
                "worker {:?} names no enforcement bundle",
                worker.name
            ));
        };
        let digest = match &command.enforcement_digest {
            Some(digest) => digest.clone(),
            // A run published by hand carries no digest: the current one.
            None => self.current_digest(name).await?,
        };
        if let Some(bundle) = self
            .loaded
            .lock()
            .ok()
            .and_then(|l| l.get(&digest).cloned())
            && bundle.dir.is_dir()
        {
            return Ok(bundle);
        }
        let archive = self.broker.get_bundle(&digest).await.map_err(|e| {
            format!("enforcement bundle {name:?} ({digest}) cannot be fetched: {e}")
        })?;
        let cache_dir = self.cache_dir.clone();
        let expected = digest.clone();
        let bundle = tokio::task::spawn_blocking(move || {
            loom_workers::unpack(&archive, &expected, &cache_dir)
        })
        .await
        .map_err(|e| format!("enforcement bundle {name:?} ({digest}) cannot be unpacked: {e}"))?
        .map_err(|e| format!("enforcement bundle {name:?} ({digest}) is unusable: {e}"))?;
        let bundle = Arc::new(bundle);
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(digest, bundle.clone());
        }
        Ok(bundle)
    }

    async fn current_digest(&self, name: &str) -> Result<String, String> {
        let bucket = self
            .broker
            .bucket(&self.broker.names().workers_bucket())
            .await
            .map_err(|e| format!("cannot look up enforcement bundle {name:?}: {e}"))?;
        match bucket.get::<BundleRef>(&bundle_key(name)).await {
            Ok(Some(current)) => Ok(current.value.digest),
            Ok(None) => Err(format!(
                "enforcement bundle {name:?} has not been published (run `loom enforcement push`)"
            )),
            Err(e) => Err(format!("cannot look up enforcement bundle {name:?}: {e}")),
        }
    }
}
