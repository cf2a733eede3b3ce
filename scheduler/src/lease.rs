//! Leader election over a key-value lease with a TTL.
//!
//! One key (`scheduler` in the leader bucket) holds the leader's record. A
//! candidate takes it with `create`, which fails while anyone holds it. The
//! leader renews it with a compare-and-set every third of the TTL; the
//! bucket's max age expires it when renewals stop (a SIGKILLed leader), and
//! the limit marker that expiry leaves tells standbys at once. A leader that
//! cannot renew for most of the TTL steps down on its own clock, before its
//! lease can expire under a successor. A leader that stops cleanly deletes
//! the key, so a standby takes over without waiting for the TTL.
//!
//! The timing logic runs against [`LeaseStore`], implemented by the bucket
//! ([`KvLease`]) and, in unit tests, by an in-memory store under paused time.

use std::future::Future;
use std::time::Duration;

use loom_broker::{Bucket, Change, SetOutcome, StateError};
use loom_protocol::state::{LEADER_KEY, LeaderRecord};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the lease lives.
pub trait LeaseStore: Send + Sync {
    /// Takes the lease if nobody holds it: its revision, or `None` if held.
    fn acquire(
        &self,
        holder: &LeaderRecord,
    ) -> impl Future<Output = Result<Option<u64>, StateError>> + Send;
    /// Renews the lease held at `revision`: the new revision, or `None` if it
    /// is no longer ours.
    fn renew(
        &self,
        holder: &LeaderRecord,
        revision: u64,
    ) -> impl Future<Output = Result<Option<u64>, StateError>> + Send;
    /// Gives the lease up if still held at `revision`.
    fn release(&self, revision: u64) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Resolves when the lease may have become free (deleted or expired).
    fn freed(&self) -> impl Future<Output = ()> + Send;
}

/// The lease in the mesh's leader bucket.
pub struct KvLease {
    bucket: Bucket,
}

impl KvLease {
    /// The lease in `bucket` (the topology's leader bucket).
    pub fn new(bucket: Bucket) -> Self {
        KvLease { bucket }
    }
}

impl LeaseStore for KvLease {
    async fn acquire(&self, holder: &LeaderRecord) -> Result<Option<u64>, StateError> {
        match self.bucket.create(LEADER_KEY, holder).await? {
            SetOutcome::Written(revision) => Ok(Some(revision)),
            SetOutcome::Conflict => Ok(None),
        }
    }

    async fn renew(&self, holder: &LeaderRecord, revision: u64) -> Result<Option<u64>, StateError> {
        match self.bucket.update(LEADER_KEY, holder, revision).await? {
            SetOutcome::Written(revision) => Ok(Some(revision)),
            SetOutcome::Conflict => Ok(None),
        }
    }

    async fn release(&self, revision: u64) -> Result<(), StateError> {
        self.bucket
            .delete_at(LEADER_KEY, revision)
            .await
            .map(|_| ())
    }

    async fn freed(&self) {
        use futures::StreamExt;
        let Ok(changes) = self.bucket.watch::<LeaderRecord>(LEADER_KEY).await else {
            // The caller retries on its own timer; a failed watch only costs speed.
            return std::future::pending().await;
        };
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            if matches!(change, Change::Removed { .. }) {
                return;
            }
        }
    }
}

/// A term as leader: the revision that proves it, and when it was last renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// The lease's current revision (a fencing token).
    pub revision: u64,
    /// When the lease was last written by us, on the monotonic clock.
    pub renewed_at: Instant,
}

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermEnd {
    /// Someone else holds the lease, or it could not be renewed in time.
    Lost,
    /// We were asked to stop; the lease is still ours to release.
    Stopped,
}

/// Campaigns for and holds the lease.
pub struct Elector<S> {
    store: S,
    holder: LeaderRecord,
    ttl: Duration,
}

impl<S: LeaseStore> Elector<S> {
    /// An elector for `holder` with leases of `ttl`.
    pub fn new(store: S, holder: LeaderRecord, ttl: Duration) -> Self {
        Elector { store, holder, ttl }
    }

    /// How often the leader renews: a third of the TTL.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// How long the leader keeps firing without a successful renewal before it
    /// steps down: three quarters of the TTL, so it stops before the lease can
    /// expire and a successor start.
    pub fn step_down_after(&self) -> Duration {
        self.ttl * 3 / 4
    }

    /// How often a standby retries even without hearing the lease was freed.
    pub fn retry_every(&self) -> Duration {
        self.ttl / 2
    }

    /// Waits until this candidate holds the lease; `None` if `stop` came first.
    pub async fn campaign(&self, stop: &CancellationToken) -> Option<Term> {
        loop {
            match self.store.acquire(&self.holder).await {
                Ok(Some(revision)) => {
                    return Some(Term {
                        revision,
                        renewed_at: Instant::now(),
                    });
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot reach the leader lease; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = self.store.freed() => {}
                _ = tokio::time::sleep(self.retry_every()) => {}
            }
        }
    }

    /// Renews the lease until it is lost or `stop` is cancelled. `term_over`
    /// is cancelled as soon as the term ends, for whoever acts as leader.
    pub async fn hold(
        &self,
        mut term: Term,
        stop: &CancellationToken,
        term_over: &CancellationToken,
    ) -> (TermEnd, Term) {
        // The step-down deadline counts from the last *successful* renewal only.
        let mut next_attempt = term.renewed_at + self.renew_every();
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break TermEnd::Stopped,
                _ = tokio::time::sleep_until(next_attempt) => {}
            }
            let deadline = term.renewed_at + self.step_down_after();
            let attempt =
                tokio::time::timeout_at(deadline, self.store.renew(&self.holder, term.revision));
            match attempt.await {
                Ok(Ok(Some(revision))) => {
                    term = Term {
                        revision,
                        renewed_at: Instant::now(),
                    };
                    next_attempt = term.renewed_at + self.renew_every();
                }
                Ok(Ok(None)) => {
                    tracing::warn!("the leader lease is held by another scheduler; stepping down");
                    break TermEnd::Lost;
                }
                Ok(Err(error)) if Instant::now() < deadline => {
                    tracing::warn!(%error, "cannot renew the leader lease; retrying");
                    next_attempt = (Instant::now() + self.renew_every() / 4).min(deadline);
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(after = ?self.step_down_after(), "could not renew the leader lease in time; stepping down");
                    break TermEnd::Lost;
                }
            }
        };
        term_over.cancel();
        (end, term)
    }

    /// Gives the lease up so a standby takes over at once.
    pub async fn release(&self, term: Term) {
        if let Err(error) = self.store.release(term.revision).await {
            tracing::warn!(%error, "could not release the leader lease; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    const TTL: Duration = Duration::from_secs(6);

    /// The lease with the bucket's semantics: an entry expires `TTL` after
    /// its last write; create fails while it lives; update needs the revision.
    #[derive(Default)]
    struct Memory {
        entry: Mutex<Option<(String, u64, Instant)>>,
        revision: Mutex<u64>,
        freed: tokio::sync::Notify,
        /// When set, every call fails as if the broker were unreachable.
        down: AtomicBool,
    }

    fn unreachable() -> StateError {
        StateError {
            bucket: "loom_leader".into(),
            key: LEADER_KEY.into(),
            detail: "no responders".into(),
        }
    }

    impl Memory {
        fn live(&self) -> Option<(String, u64)> {
            let mut entry = self.entry.lock().expect("lock");
            if entry
                .as_ref()
                .is_some_and(|(_, _, expires)| Instant::now() >= *expires)
            {
                *entry = None;
            }
            entry
                .as_ref()
                .map(|(id, revision, _)| (id.clone(), *revision))
        }

        fn write(&self, id: &str) -> u64 {
            let mut revision = self.revision.lock().expect("lock");
            *revision += 1;
            *self.entry.lock().expect("lock") =
                Some((id.to_owned(), *revision, Instant::now() + TTL));
            *revision
        }

        fn holder(&self) -> Option<String> {
            self.live().map(|(id, _)| id)
        }
    }

    impl LeaseStore for Arc<Memory> {
        async fn acquire(&self, holder: &LeaderRecord) -> Result<Option<u64>, StateError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(unreachable());
            }
            Ok(match self.live() {
                Some(_) => None,
                None => Some(self.write(&holder.id)),
            })
        }

        async fn renew(
            &self,
            holder: &LeaderRecord,
            revision: u64,
        ) -> Result<Option<u64>, StateError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(unreachable());
            }
            Ok(match self.live() {
                Some((_, current)) if current == revision => Some(self.write(&holder.id)),
                _ => None,
            })
        }

        async fn release(&self, revision: u64) -> Result<(), StateError> {
            if self.live().is_some_and(|(_, current)| current == revision) {
                *self.entry.lock().expect("lock") = None;
                self.freed.notify_waiters();
            }
            Ok(())
        }

        async fn freed(&self) {
            self.freed.notified().await;
        }
    }

    fn elector(store: &Arc<Memory>, id: &str) -> Arc<Elector<Arc<Memory>>> {
        let record = LeaderRecord {
            id: id.to_owned(),
            since: chrono::Utc::now(),
        };
        Arc::new(Elector::new(store.clone(), record, TTL))
    }

    /// Runs `elector` as a scheduler would: campaign, hold until the term ends.
    fn candidate(
        elector: Arc<Elector<Arc<Memory>>>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<Option<(TermEnd, Term)>> {
        tokio::spawn(async move {
            let term = elector.campaign(&stop).await?;
            Some(elector.hold(term, &stop, &CancellationToken::new()).await)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn one_leader_renews_while_the_standby_waits() {
        let store = Arc::new(Memory::default());
        let stop = CancellationToken::new();
        let a = candidate(elector(&store, "a"), stop.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let b = candidate(elector(&store, "b"), stop.clone());
        for _ in 0..20 {
            tokio::time::sleep(TTL).await;
            assert_eq!(
                store.holder().as_deref(),
                Some("a"),
                "the leader keeps its lease"
            );
        }
        assert!(!b.is_finished(), "the standby is still campaigning");
        stop.cancel();
        assert_eq!(
            a.await.expect("join").map(|(end, _)| end),
            Some(TermEnd::Stopped)
        );
        assert_eq!(b.await.expect("join"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_leader_is_replaced_within_the_ttl() {
        let store = Arc::new(Memory::default());
        let a_stop = CancellationToken::new();
        let a = candidate(elector(&store, "a"), a_stop.clone());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let b = elector(&store, "b");
        let b_stop = CancellationToken::new();
        let b_task = {
            let b = b.clone();
            let stop = b_stop.clone();
            tokio::spawn(async move { b.campaign(&stop).await })
        };
        tokio::time::sleep(TTL).await;
        // SIGKILL: the leader vanishes without releasing.
        a.abort();
        let died = Instant::now();
        let term = b_task.await.expect("join").expect("b becomes leader");
        let waited = term.renewed_at - died;
        assert!(waited <= TTL + b.retry_every(), "takeover took {waited:?}");
        assert_eq!(store.holder().as_deref(), Some("b"));
        drop(a_stop);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once() {
        let store = Arc::new(Memory::default());
        let a = elector(&store, "a");
        let never = CancellationToken::new();
        let term = a.campaign(&never).await.expect("leader");
        let b = elector(&store, "b");
        let b_task = tokio::spawn(async move { b.campaign(&CancellationToken::new()).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let released = Instant::now();
        a.release(term).await;
        let b_term = b_task.await.expect("join").expect("b becomes leader");
        assert_eq!(b_term.renewed_at, released, "no wait for the TTL");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
        let store = Arc::new(Memory::default());
        let a = elector(&store, "a");
        let never = CancellationToken::new();
        let term = a.campaign(&never).await.expect("leader");
        store.down.store(true, Ordering::SeqCst);
        let term_over = CancellationToken::new();
        let (end, last) = a.hold(term, &never, &term_over).await;
        assert_eq!(end, TermEnd::Lost);
        assert!(term_over.is_cancelled());
        let stepped_down = Instant::now();
        assert!(stepped_down - last.renewed_at <= a.step_down_after());
        assert!(
            stepped_down < last.renewed_at + TTL,
            "stepped down before the lease could pass to another"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_lease_was_taken_steps_down() {
        let store = Arc::new(Memory::default());
        let a = elector(&store, "a");
        let never = CancellationToken::new();
        let term = a.campaign(&never).await.expect("leader");
        // The lease changes hands behind a's back (e.g. it expired during a pause).
        *store.entry.lock().expect("lock") = None;
        store.write("b");
        let (end, _) = a.hold(term, &never, &CancellationToken::new()).await;
        assert_eq!(end, TermEnd::Lost);
    }
}
