//! Agent presence: the agent's entry in the agents bucket, which says what it
//! serves and which runs it executes now. The dashboard, `loom status` and
//! `loom trigger --wait` read it to show "running on agent X".
//!
//! The entry is rewritten shortly after every change (runs beginning or
//! ending are batched over [`SETTLE`]) and every [`PRESENCE_HEARTBEAT`];
//! the bucket's max age removes it when an agent dies, and the agent deletes
//! it itself when it stops. Writes never touch the run path: a slow broker
//! delays the presence, never a run.

use std::time::Duration;

use chrono::Utc;
use loom_broker::Broker;
use loom_protocol::state::{AgentPresence, PRESENCE_HEARTBEAT, presence_key};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cancel::Cancels;

/// How long changes are gathered before one write.
const SETTLE: Duration = Duration::from_millis(200);

/// What the agent is, for its presence.
pub struct Identity {
    /// Agent id.
    pub id: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its concurrency.
    pub concurrency: u32,
}

/// Keeps this agent's presence until `stop`, then deletes it.
pub async fn keep(
    broker: Broker,
    identity: Identity,
    cancels: Cancels,
    mut workers: watch::Receiver<Vec<String>>,
    stop: CancellationToken,
) {
    let key = presence_key(&identity.id);
    let bucket_name = broker.names().agents_bucket();
    let changed = cancels.changed();
    let started_at = Utc::now();
    let mut warned = false;
    loop {
        let presence = AgentPresence {
            id: identity.id.clone(),
            labels: identity.labels.clone(),
            workers: workers.borrow_and_update().clone(),
            concurrency: identity.concurrency,
            running: cancels.snapshot(),
            started_at,
            seen_at: Utc::now(),
        };
        let written = match broker.bucket(&bucket_name).await {
            Ok(bucket) => bucket.put(&key, &presence).await.map(|_| ()),
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => warned = false,
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(%error, "cannot write this agent's presence; dashboards will not show it until this is fixed (run `loom init`?)");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(PRESENCE_HEARTBEAT) => {}
            _ = changed.notified() => tokio::time::sleep(SETTLE).await,
            result = workers.changed() => if result.is_err() { break },
        }
    }
    if let Ok(bucket) = broker.bucket(&bucket_name).await
        && let Err(error) = bucket.delete(&key).await
    {
        tracing::debug!(%error, "cannot delete this agent's presence; it expires on its own");
    }
}
