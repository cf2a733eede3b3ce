//! The scheduler role: turns the worker registry into run commands.
//!
//! It owns leader election over a JetStream KV lease ([`lease`]), the fire
//! loop of the leader (`fire_loop`, with `dispatch` publishing its
//! decisions), catch-up after downtime and overlap decisions ([`plan`]),
//! the operator's requests: manual triggers, pause and resume, backfill
//! ([`operator`]), and workflow runs ([`workflow`]). It never executes a
//! worker.
//!
//! Run it with [`run`]: standbys campaign, the leader fires, and on shutdown
//! the leader stops firing, records what it handled and gives the lease up
//! so a standby takes over at once.

mod dispatch;
pub mod enforcement;
mod fire_loop;
pub mod lease;
pub mod operator;
pub mod plan;
pub mod workflow;

use std::sync::Arc;

use chrono::Utc;
use loom_broker::{Broker, StateError};
use loom_config::Config;
use loom_protocol::metrics;
use loom_protocol::state::LeaderRecord;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lease::{Elector, KvLease, TermEnd};

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Its buckets could not be opened.
    #[error("the scheduler cannot open its state: {0}")]
    State(#[from] StateError),
}

/// This process's scheduler id: host name and process id.
pub fn scheduler_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Runs a scheduler until `shutdown` is cancelled: campaigns for the lease,
/// fires while it leads, campaigns again if it loses the lease.
pub async fn run(
    broker: Broker,
    config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    metrics::SCHEDULER_LEADER.set(0);
    let names = broker.names().clone();
    let leader_bucket = broker.bucket(&names.leader_bucket()).await?;
    let workers_bucket = broker.bucket(&names.workers_bucket()).await?;
    let id = scheduler_id();
    let lease_ttl = config.borrow().scheduler.lease_ttl;
    let elector = Elector::new(
        KvLease::new(leader_bucket),
        LeaderRecord {
            id: id.clone(),
            since: Utc::now(),
        },
        lease_ttl,
    );
    tracing::info!(%id, ?lease_ttl, "scheduler started; campaigning for the leader lease");
    // Bundles first: the fires of this scheduler stamp their digests.
    let bundles = tokio::spawn(keep_bundles_published(
        broker.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    loop {
        let Some(term) = elector.campaign(&shutdown).await else {
            bundles.abort();
            tracing::info!("scheduler stopped");
            return Ok(());
        };
        tracing::info!(%id, revision = term.revision, "leading");
        metrics::SCHEDULER_LEADER.set(1);

        let term_over = CancellationToken::new();
        let hold_stop = CancellationToken::new();
        let fire_stop = CancellationToken::new();
        let fire_context = fire_loop::Context {
            broker: broker.clone(),
            workers_bucket: workers_bucket.clone(),
            config: config.clone(),
        };
        let ((end, last_term), fired) = tokio::join!(
            async {
                let held = elector.hold(term, &hold_stop, &term_over).await;
                fire_stop.cancel();
                held
            },
            async {
                // The fire loop stops when the term ends or on shutdown.
                let relay = tokio::spawn({
                    let (shutdown, term_over, stop) =
                        (shutdown.clone(), term_over.clone(), fire_stop.clone());
                    async move {
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = term_over.cancelled() => {}
                        }
                        stop.cancel();
                    }
                });
                let workflows = tokio::spawn(workflow::run_term(
                    workflow::Context {
                        broker: broker.clone(),
                        config: config.clone(),
                    },
                    fire_stop.clone(),
                ));
                let fired = fire_loop::run_term(fire_context, fire_stop.clone()).await;
                fire_stop.cancel();
                let _ = workflows.await;
                relay.abort();
                // The fire loop is done (or failed): stop renewing.
                hold_stop.cancel();
                fired
            }
        );
        metrics::SCHEDULER_LEADER.set(0);
        let failed = fired.is_err();
        if let Err(error) = fired {
            tracing::error!(%error, "the fire loop failed; stepping down");
        }
        if end == TermEnd::Stopped {
            elector.release(last_term).await;
            tracing::info!("gave the leader lease up");
        }
        if shutdown.is_cancelled() {
            bundles.abort();
            tracing::info!("scheduler stopped");
            return Ok(());
        }
        if failed {
            // Let another scheduler try before this one does again.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(lease_ttl) => {}
            }
        }
        tracing::warn!("no longer leading; campaigning again");
    }
}

/// Publishes the registry's enforcement bundles now and after every reload.
/// A bundle that cannot be published is reported; its workers' runs then
/// fail closed with `enforcement_unavailable`.
async fn keep_bundles_published(
    broker: Broker,
    mut config: watch::Receiver<Arc<Config>>,
    shutdown: CancellationToken,
) {
    loop {
        let current = config.borrow_and_update().clone();
        if let Err(error) = enforcement::publish_bundles(&broker, &current).await {
            tracing::error!(%error, "cannot publish an enforcement bundle");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}
