//! The watchdog: every run gets a terminal verdict by its deadline.
//!
//! It follows the open-run index (`open.<run_id>` in the runs bucket) with a
//! watch, so every validator watches every open run, including those another
//! validator recorded, and a restarted one picks them all up again. When a
//! deadline passes and the run still has no verdict, it is declared `lost`
//! and dead-lettered; racing validators conclude it once (see `books`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use loom_broker::Change;
use loom_protocol::state::{OpenRun, RunStatus, open_key};
use loom_protocol::{DeadLetterReason, VerdictKind, metrics};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::books::{Books, Conclusion};
use crate::judge::Judgement;

/// Watches open runs until `shutdown`.
pub async fn run(books: Books, shutdown: CancellationToken) {
    loop {
        let changes = match books.runs.watch::<OpenRun>("open.*").await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::error!(%error, "the watchdog cannot follow open runs; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        let mut changes = std::pin::pin!(changes);
        let mut open: HashMap<Uuid, OpenRun> = HashMap::new();
        let mut per_worker: HashMap<String, u64> = HashMap::new();
        metrics::WORKER_OPEN.reset();
        let mut deadlines: BinaryHeap<Reverse<(DateTime<Utc>, Uuid)>> = BinaryHeap::new();
        loop {
            let next = deadlines.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.next() => match change {
                    Some(Change::Put { key, value, .. }) => {
                        if let Some(run_id) = key.strip_prefix("open.").and_then(|id| id.parse().ok()) {
                            deadlines.push(Reverse((value.deadline, run_id)));
                            if !open.contains_key(&run_id) {
                                count(&mut per_worker, &value.worker, 1);
                            }
                            open.insert(run_id, value);
                        }
                    }
                    Some(Change::Removed { key }) => {
                        if let Some(run_id) = key.strip_prefix("open.").and_then(|id| id.parse::<Uuid>().ok())
                            && let Some(closed) = open.remove(&run_id)
                        {
                            count(&mut per_worker, &closed.worker, -1);
                        }
                    }
                    None => break, // the watch ended: start a new one
                },
                _ = sleep_until(next) => {
                    let now = Utc::now();
                    while let Some(Reverse((at, run_id))) = deadlines.peek().cloned() {
                        if at > now {
                            break;
                        }
                        deadlines.pop();
                        let Some(entry) = open.get(&run_id).cloned() else { continue };
                        if entry.deadline > now {
                            continue; // an updated deadline is in the heap too
                        }
                        if let Err(error) = expire(&books, run_id, &entry).await {
                            tracing::warn!(%error, %run_id, "cannot declare an overdue run lost yet; retrying");
                            deadlines.push(Reverse((now + chrono::Duration::seconds(5), run_id)));
                        }
                    }
                }
            }
        }
    }
}

/// Moves `worker`'s count of open runs by `delta` and exports it.
fn count(per_worker: &mut HashMap<String, u64>, worker: &str, delta: i64) {
    let slot = per_worker.entry(worker.to_owned()).or_insert(0);
    *slot = slot.saturating_add_signed(delta);
    metrics::WORKER_OPEN.set(worker, *slot as f64);
}

async fn sleep_until(at: Option<DateTime<Utc>>) {
    match at {
        None => std::future::pending().await,
        Some(at) => tokio::time::sleep((at - Utc::now()).to_std().unwrap_or(Duration::ZERO)).await,
    }
}

/// Declares an overdue run lost, unless it has its verdict by now.
async fn expire(
    books: &Books,
    run_id: Uuid,
    entry: &OpenRun,
) -> Result<(), crate::books::BooksError> {
    let state = books.run_state(&entry.worker, run_id).await?;
    let state = match state {
        Some((state, _)) if state.status == RunStatus::Done => {
            books.runs.delete(&open_key(run_id)).await?;
            return Ok(());
        }
        Some((state, _)) => state,
        None => {
            // The open mark outlived the state (expired history): nothing to judge.
            books.runs.delete(&open_key(run_id)).await?;
            return Ok(());
        }
    };
    let attempts = state.attempts.len();
    let description = format!(
        "no result by its deadline {} ({attempts} attempt{} reported)",
        entry
            .deadline
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        if attempts == 1 { "" } else { "s" }
    );
    let conclusion = Conclusion {
        judgement: Judgement {
            verdict: VerdictKind::Lost,
            reason: description.clone(),
        },
        dead_letter: Some(DeadLetterReason::Lost),
        description: Some(description),
    };
    books
        .conclude(&entry.worker, run_id, &state, None, conclusion)
        .await
}
