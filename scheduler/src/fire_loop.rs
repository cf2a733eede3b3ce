//! The leader's fire loop: one loop over a closed set of events.
//!
//! The next occurrence of every scheduled worker sits in a min-heap keyed by
//! instant (100,000 schedules cost a heap of 100,000 entries). When the first
//! one is due, the loop decides what it is (a fire to publish, or a fire that
//! does not run: disabled, paused, a DST gap, too late) and hands the result
//! to the dispatcher. A worker's persisted `last_fire` advances only past
//! fires whose job is done, in order, so a new leader resumes exactly where
//! this one stopped: nothing lost, and anything published twice is dropped by
//! JetStream's duplicate window (same message id, same run id).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use loom_broker::{Broker, Bucket, Change};
use loom_config::schedule::{Occurrence, OccurrenceKind};
use loom_config::{Config, Worker};
use loom_protocol::identity::fire_run_id;
use loom_protocol::state::{BundleRef, FireState, Pause, fire_key};
use loom_protocol::{
    DeadLetter, DeadLetterReason, RunCommand, SkipReason, SkippedFire, Trigger, WIRE_VERSION,
    metrics,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::dispatch::{self, Done, Job};
use crate::plan::{Missed, plan_catch_up};

/// How often handled fires are written to the workers bucket. A new leader
/// resumes from the last write; the fires after it that this leader already
/// published carry the same message ids and are dropped by JetStream's
/// duplicate window (minutes long, and at least twice the lease), so writing
/// every few seconds loses nothing. It keeps the writes off the fire path: at
/// 10,000 workers firing every second, a write per fire would double the
/// broker's work.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Jobs queued for the dispatcher before the loop waits for it.
const JOB_QUEUE: usize = 65_536;

/// What the fire loop reacts to.
enum Event {
    /// The first occurrence of the timeline is due.
    Due,
    /// A pause was set or lifted.
    Pause(Change<Pause>),
    /// An enforcement bundle got a new digest.
    Bundle(Change<BundleRef>),
    /// The configuration was reloaded.
    Reload,
    /// A job finished.
    Done(Done),
    /// Time to write handled fires.
    Flush,
    /// The term ended (lease lost, or shutdown).
    TermOver,
}

/// One worker on the timeline.
struct Entry {
    worker: Arc<Worker>,
    /// Bumped when the worker changes, so stale heap slots are ignored.
    generation: u64,
    /// The next occurrence, also in the heap.
    next: Option<Occurrence>,
    /// Fires handed to the dispatcher and not yet done, oldest first.
    outstanding: VecDeque<(DateTime<Utc>, bool, Option<Uuid>)>,
}

/// A heap slot: (instant, generation, worker).
type Slot = Reverse<(DateTime<Utc>, u64, Arc<str>)>;

/// What the fire loop needs from its role.
pub(crate) struct Context {
    pub broker: Broker,
    pub workers_bucket: Bucket,
    pub config: watch::Receiver<Arc<Config>>,
}

/// Fires for one term as leader, until `term_over` is cancelled.
pub(crate) async fn run_term(
    mut context: Context,
    term_over: CancellationToken,
) -> Result<(), loom_broker::StateError> {
    let config = context.config.borrow_and_update().clone();
    let (job_tx, job_rx) = mpsc::channel(JOB_QUEUE);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let dispatcher = tokio::spawn(dispatch::dispatch(
        context.broker.clone(),
        job_rx,
        done_tx,
        term_over.clone(),
    ));

    let workers = config.registry.len();
    let mut fire_loop = FireLoop {
        broker: context.broker.clone(),
        bucket: context.workers_bucket.clone(),
        config,
        entries: HashMap::with_capacity(workers),
        timeline: BinaryHeap::with_capacity(workers),
        pauses: HashMap::new(),
        bundles: HashMap::new(),
        dirty: HashMap::new(),
        flushing: None,
        jobs: job_tx,
        next_generation: 0,
    };
    fire_loop.start().await?;

    let pauses = context.workers_bucket.watch::<Pause>("pause.*").await?;
    let bundles = context
        .workers_bucket
        .watch::<BundleRef>("bundle.*")
        .await?;
    let mut pauses = std::pin::pin!(pauses);
    let mut bundles = std::pin::pin!(bundles);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let due_at = fire_loop.timeline.peek().map(|Reverse((at, _, _))| *at);
        let event = tokio::select! {
            biased;
            _ = term_over.cancelled() => Event::TermOver,
            Some(done) = done_rx.recv() => Event::Done(done),
            _ = sleep_until_utc(due_at) => Event::Due,
            Some(change) = pauses.next() => Event::Pause(change),
            Some(change) = bundles.next() => Event::Bundle(change),
            Ok(()) = context.config.changed() => Event::Reload,
            _ = flush.tick() => Event::Flush,
        };
        match event {
            Event::TermOver => break,
            Event::Done(done) => fire_loop.done(done),
            Event::Due => fire_loop.fire_due().await,
            Event::Pause(change) => fire_loop.pause_changed(change),
            Event::Bundle(change) => fire_loop.bundle_changed(change),
            Event::Reload => {
                let config = context.config.borrow_and_update().clone();
                fire_loop.reload(config).await;
            }
            Event::Flush => fire_loop.flush_in_background(),
        }
    }

    // Stop handing out work (replacing the only sender closes the channel),
    // let what is in flight finish or be abandoned to the next leader, then
    // record what is done.
    fire_loop.jobs = mpsc::channel(1).0;
    let _ = tokio::time::timeout(Duration::from_secs(5), dispatcher).await;
    while let Ok(done) = done_rx.try_recv() {
        fire_loop.done(done);
    }
    if let Some(flushing) = fire_loop.flushing.take()
        && let Ok(failed) = flushing.await
    {
        fire_loop.requeue(failed);
    }
    fire_loop.flush().await;
    metrics::WORKER_NEXT_RUN.reset();
    metrics::WORKER_INTERVAL.reset();
    Ok(())
}

/// Sleeps until `at` on the wall clock; forever if there is nothing to wait for.
async fn sleep_until_utc(at: Option<DateTime<Utc>>) {
    match at {
        None => std::future::pending().await,
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep_until(Instant::now() + wait).await;
        }
    }
}

struct FireLoop {
    broker: Broker,
    bucket: Bucket,
    config: Arc<Config>,
    entries: HashMap<Arc<str>, Entry>,
    timeline: BinaryHeap<Slot>,
    pauses: HashMap<String, Pause>,
    bundles: HashMap<String, String>,
    /// Fire states to write at the next flush.
    dirty: HashMap<Arc<str>, FireState>,
    /// The flush in progress: it returns the writes that failed.
    flushing: Option<tokio::task::JoinHandle<HashMap<Arc<str>, FireState>>>,
    jobs: mpsc::Sender<Job>,
    next_generation: u64,
}

impl FireLoop {
    /// Loads the state of a new term and plans the fires missed since the
    /// last leader stopped.
    async fn start(&mut self) -> Result<(), loom_broker::StateError> {
        let now = Utc::now();
        let fire_states: HashMap<String, FireState> = self
            .bucket
            .snapshot::<FireState>(&self.broker, "fire.*")
            .await?
            .into_iter()
            .filter_map(|(key, state)| key.strip_prefix("fire.").map(|w| (w.to_owned(), state)))
            .collect();
        for (key, pause) in self
            .bucket
            .snapshot::<Pause>(&self.broker, "pause.*")
            .await?
        {
            if let Some(worker) = key.strip_prefix("pause.") {
                self.pauses.insert(worker.to_owned(), pause);
            }
        }
        for (key, bundle) in self
            .bucket
            .snapshot::<BundleRef>(&self.broker, "bundle.*")
            .await?
        {
            if let Some(name) = key.strip_prefix("bundle.") {
                self.bundles.insert(name.to_owned(), bundle.digest);
            }
        }
        let grace = (self.config.scheduler.lease_ttl * 2).max(Duration::from_secs(2));
        let config = self.config.clone();
        let mut catching_up = 0usize;
        for worker in config.registry.shared_workers() {
            let Some(schedule) = &worker.schedule else {
                continue;
            };
            let last = match fire_states.get(&*worker.name) {
                Some(state) => state.last_fire,
                None => {
                    // First sight: remember "now", so a fire between now and
                    // the next leader's start is never silently skipped.
                    self.dirty.insert(
                        worker.name.clone(),
                        FireState {
                            last_fire: now,
                            last_run_id: None,
                        },
                    );
                    now
                }
            };
            let plan = plan_catch_up(
                schedule,
                last,
                now,
                worker.catch_up,
                worker.starting_deadline,
                grace,
            );
            catching_up += plan.run.len();
            self.add_entry(worker.clone(), now.max(last));
            self.record_missed(worker, &plan.missed, now).await;
            for not_run in &plan.not_run {
                let detail = match not_run.reason {
                    SkipReason::CatchUp => format!(
                        "missed while the scheduler was down; catch_up = \"{}\" ran a later fire instead",
                        catch_up_name(worker.catch_up)
                    ),
                    _ => dst_gap_detail(not_run.local, worker),
                };
                self.not_run(worker, not_run.instant, not_run.reason, detail, None)
                    .await;
            }
            for instant in plan.run {
                self.handle_fire(worker, instant, now).await;
            }
        }
        // Workers that left the registry while no leader was watching.
        for name in fire_states.keys() {
            if config.registry.get(name).is_none()
                && let Err(error) = self.bucket.delete(&fire_key(name)).await
            {
                tracing::warn!(%error, worker = %name, "cannot forget a removed worker's fire state");
            }
        }
        tracing::info!(
            workers = self.entries.len(),
            catching_up,
            "leading: fire loop started"
        );
        Ok(())
    }

    /// Puts `worker` on the timeline with its first occurrence after `after`.
    fn add_entry(&mut self, worker: Arc<Worker>, after: DateTime<Utc>) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let name: Arc<str> = worker.name.clone();
        let outstanding = self
            .entries
            .remove(&name)
            .map(|entry| entry.outstanding)
            .unwrap_or_default();
        let next = worker
            .schedule
            .as_ref()
            .and_then(|s| s.occurrences(after).next());
        if let Some(occurrence) = &next {
            self.timeline
                .push(Reverse((occurrence.instant, generation, name.clone())));
        }
        self.entries.insert(
            name.clone(),
            Entry {
                worker,
                generation,
                next,
                outstanding,
            },
        );
        self.export_next_run(&name);
    }

    fn export_next_run(&self, name: &str) {
        let Some(entry) = self.entries.get(name) else {
            metrics::WORKER_NEXT_RUN.remove(name);
            metrics::WORKER_INTERVAL.remove(name);
            return;
        };
        // The next occurrence is usually a fire; a DST skip is rare enough to
        // compute the fire after it.
        let next_fire = match &entry.next {
            Some(occurrence) if occurrence.kind == OccurrenceKind::Fire => Some(occurrence.instant),
            Some(occurrence) => entry
                .worker
                .schedule
                .as_ref()
                .and_then(|s| s.next_fire(occurrence.instant)),
            None => None,
        };
        match next_fire {
            Some(at) if entry.worker.enabled => {
                // Share the timeline's name: 100,000 workers, no copies.
                let shared = self.entries.get_key_value(name).map(|(key, _)| key.clone());
                // The gap to the fire after it: how late "overdue" is.
                let interval = entry
                    .worker
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_fire(at))
                    .map(|after| (after - at).num_seconds() as f64);
                match shared {
                    Some(key) => {
                        metrics::WORKER_NEXT_RUN.set_shared(&key, at.timestamp() as f64);
                        if let Some(seconds) = interval {
                            metrics::WORKER_INTERVAL.set_shared(&key, seconds);
                        }
                    }
                    None => {
                        metrics::WORKER_NEXT_RUN.set(name, at.timestamp() as f64);
                        if let Some(seconds) = interval {
                            metrics::WORKER_INTERVAL.set(name, seconds);
                        }
                    }
                }
            }
            _ => {
                metrics::WORKER_NEXT_RUN.remove(name);
                metrics::WORKER_INTERVAL.remove(name);
            }
        }
    }

    /// Handles every occurrence that is due.
    async fn fire_due(&mut self) {
        let now = Utc::now();
        while let Some(Reverse((at, generation, name))) = self.timeline.peek().cloned() {
            if at > now {
                break;
            }
            self.timeline.pop();
            let Some(entry) = self.entries.get_mut(&name) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            let Some(occurrence) = entry.next.take() else {
                continue;
            };
            let worker = entry.worker.clone();
            entry.next = worker
                .schedule
                .as_ref()
                .and_then(|s| s.occurrences(occurrence.instant).next());
            if let Some(next) = &entry.next {
                self.timeline
                    .push(Reverse((next.instant, generation, name.clone())));
            }
            self.export_next_run(&name);
            match occurrence.kind {
                OccurrenceKind::Fire => self.handle_fire(&worker, occurrence.instant, now).await,
                OccurrenceKind::Skipped(_) => {
                    let detail = dst_gap_detail(occurrence.local, &worker);
                    self.not_run(
                        &worker,
                        occurrence.instant,
                        SkipReason::DstGap,
                        detail,
                        None,
                    )
                    .await;
                }
            }
        }
    }

    /// Decides one fire: publish it, or record why it does not run.
    async fn handle_fire(
        &mut self,
        worker: &Arc<Worker>,
        instant: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        if !worker.enabled {
            let detail = "the worker is disabled (enabled = false)".to_owned();
            return self
                .not_run(worker, instant, SkipReason::Disabled, detail, None)
                .await;
        }
        if let Some(pause) = self
            .pauses
            .get(&*worker.name)
            .filter(|p| p.holds_at(instant))
        {
            let detail = match (&pause.until, pause.note.is_empty()) {
                (Some(until), _) => format!("paused until {until}: {}", pause.note),
                (None, false) => format!("paused: {}", pause.note),
                (None, true) => "paused".to_owned(),
            };
            return self
                .not_run(worker, instant, SkipReason::Paused, detail, None)
                .await;
        }
        let late = (now - instant).to_std().unwrap_or(Duration::ZERO);
        if late > worker.starting_deadline {
            let missed = Missed {
                listed: vec![instant],
                ..Missed::default()
            };
            return self.record_missed(worker, &missed, now).await;
        }
        let command = self.command(worker, instant);
        self.dispatch(
            worker,
            instant,
            Job::Fire {
                worker: worker.clone(),
                command: Box::new(command),
            },
        )
        .await;
    }

    fn command(&self, worker: &Worker, instant: DateTime<Utc>) -> RunCommand {
        let mut command = RunCommand::new(
            fire_run_id(&worker.name, instant),
            &*worker.name,
            instant,
            Trigger::Schedule,
        );
        command.enforcement_digest = worker
            .enforcement
            .as_ref()
            .and_then(|name| self.bundles.get(name).cloned());
        command.deadline = Some(worker.run_deadline(
            instant,
            self.config.agent.ack_wait,
            self.config.validator.slack,
        ));
        command
    }

    /// Records fires past their starting deadline: ledger entries and dead
    /// letters, one per listed fire and one summary for the rest.
    async fn record_missed(&mut self, worker: &Arc<Worker>, missed: &Missed, now: DateTime<Utc>) {
        let deadline = humantime::format_duration(worker.starting_deadline);
        let at =
            |instant: DateTime<Utc>| instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some((first, last, count)) = missed.summarised {
            let at_least = if missed.capped { "at least " } else { "" };
            let detail = format!(
                "{at_least}{count} fires from {} to {} were not run: the scheduler could publish them only at {}, past their starting deadline of {deadline}",
                at(first),
                at(last),
                at(now)
            );
            let mut entry =
                dispatch::skipped(&worker.name, first, SkipReason::Missed, detail.clone());
            entry.count = count;
            entry.last = Some(last);
            let dead_letter = self.missed_dead_letter(worker, last, detail, now);
            self.dispatch(
                worker,
                last,
                Job::NotRun {
                    entry: Box::new(entry),
                    dead_letter: Some(Box::new(dead_letter)),
                },
            )
            .await;
        }
        for &instant in &missed.listed {
            let detail = format!(
                "the fire at {} was not run: the scheduler could publish it only at {}, past its starting deadline of {deadline}",
                at(instant),
                at(now)
            );
            let entry =
                dispatch::skipped(&worker.name, instant, SkipReason::Missed, detail.clone());
            let dead_letter = self.missed_dead_letter(worker, instant, detail, now);
            self.dispatch(
                worker,
                instant,
                Job::NotRun {
                    entry: Box::new(entry),
                    dead_letter: Some(Box::new(dead_letter)),
                },
            )
            .await;
        }
    }

    fn missed_dead_letter(
        &self,
        worker: &Worker,
        instant: DateTime<Utc>,
        description: String,
        now: DateTime<Utc>,
    ) -> DeadLetter {
        let command = self.command(worker, instant);
        DeadLetter {
            v: WIRE_VERSION,
            run_id: command.run_id,
            worker: worker.name.to_string(),
            reason: DeadLetterReason::Missed,
            description,
            attempts: Vec::new(),
            command: Some(command),
            dead_at: now,
            replayed_by: None,
        }
    }

    async fn not_run(
        &mut self,
        worker: &Arc<Worker>,
        instant: DateTime<Utc>,
        reason: SkipReason,
        detail: String,
        dead_letter: Option<DeadLetter>,
    ) {
        let entry: SkippedFire = dispatch::skipped(&worker.name, instant, reason, detail);
        self.dispatch(
            worker,
            instant,
            Job::NotRun {
                entry: Box::new(entry),
                dead_letter: dead_letter.map(Box::new),
            },
        )
        .await;
    }

    async fn dispatch(&mut self, worker: &Worker, instant: DateTime<Utc>, job: Job) {
        if let Some(entry) = self.entries.get_mut(&*worker.name) {
            entry.outstanding.push_back((instant, false, None));
        }
        if self.jobs.send(job).await.is_err() {
            tracing::warn!(worker = %worker.name, %instant, "the dispatcher has stopped; the next leader handles this fire");
        }
    }

    /// A job finished: advance the worker's watermark over every fire done in order.
    fn done(&mut self, done: Done) {
        let Some(entry) = self.entries.get_mut(&done.worker) else {
            return;
        };
        if let Some(slot) = entry
            .outstanding
            .iter_mut()
            .find(|(instant, finished, _)| *instant == done.instant && !finished)
        {
            slot.1 = true;
            slot.2 = done.run_id;
        }
        let mut advanced: Option<FireState> = None;
        while let Some(&(instant, true, run_id)) = entry.outstanding.front() {
            entry.outstanding.pop_front();
            let last_run_id = run_id.or(advanced.as_ref().and_then(|s| s.last_run_id));
            advanced = Some(FireState {
                last_fire: instant,
                last_run_id,
            });
        }
        if let Some(state) = advanced {
            let merged = match self.dirty.remove(&done.worker) {
                Some(previous) if state.last_run_id.is_none() => FireState {
                    last_run_id: previous.last_run_id,
                    ..state
                },
                _ => state,
            };
            self.dirty.insert(done.worker, merged);
        }
    }

    /// Starts writing the fire states whose watermark moved, unless a write
    /// is still in progress; the fire loop does not wait for it.
    fn flush_in_background(&mut self) {
        if let Some(flushing) = &self.flushing {
            if !flushing.is_finished() {
                return;
            }
            if let Some(flushing) = self.flushing.take()
                && let Some(Ok(failed)) = futures::FutureExt::now_or_never(flushing)
            {
                self.requeue(failed);
            }
        }
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let bucket = self.bucket.clone();
        self.flushing = Some(tokio::spawn(write_fire_states(bucket, dirty)));
    }

    /// Writes the fire states whose watermark moved, and waits.
    async fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let failed = write_fire_states(self.bucket.clone(), dirty).await;
        self.requeue(failed);
    }

    /// Puts back writes that failed, unless a newer state is waiting.
    fn requeue(&mut self, failed: HashMap<Arc<str>, FireState>) {
        for (worker, state) in failed {
            self.dirty.entry(worker).or_insert(state);
        }
    }

    fn pause_changed(&mut self, change: Change<Pause>) {
        match change {
            Change::Put { key, value, .. } => {
                if let Some(worker) = key.strip_prefix("pause.") {
                    tracing::info!(worker, until = ?value.until, note = %value.note, "worker paused");
                    self.pauses.insert(worker.to_owned(), value);
                }
            }
            Change::Removed { key } => {
                if let Some(worker) = key.strip_prefix("pause.")
                    && self.pauses.remove(worker).is_some()
                {
                    tracing::info!(worker, "worker resumed");
                }
            }
        }
    }

    fn bundle_changed(&mut self, change: Change<BundleRef>) {
        match change {
            Change::Put { key, value, .. } => {
                if let Some(name) = key.strip_prefix("bundle.") {
                    self.bundles.insert(name.to_owned(), value.digest);
                }
            }
            Change::Removed { key } => {
                if let Some(name) = key.strip_prefix("bundle.") {
                    self.bundles.remove(name);
                }
            }
        }
    }

    /// A new registry: added workers start from now, changed ones take their
    /// new schedule from their next fire, removed ones leave the timeline.
    async fn reload(&mut self, config: Arc<Config>) {
        let now = Utc::now();
        let mut added = 0;
        let mut changed = 0;
        let mut removed = 0;
        let names: Vec<Arc<str>> = self.entries.keys().cloned().collect();
        for name in names {
            if config
                .registry
                .get(&name)
                .and_then(|w| w.schedule.as_ref())
                .is_none()
            {
                self.entries.remove(&name);
                self.export_next_run(&name);
                removed += 1;
                if let Err(error) = self.bucket.delete(&fire_key(&name)).await {
                    tracing::warn!(%error, worker = %name, "cannot forget a removed worker's fire state");
                }
            }
        }
        for worker in config.registry.shared_workers() {
            if worker.schedule.is_none() {
                continue;
            }
            let previous = self.entries.get(&*worker.name).map(|e| e.worker.clone());
            match previous {
                None => {
                    self.dirty.insert(
                        worker.name.clone(),
                        FireState {
                            last_fire: now,
                            last_run_id: None,
                        },
                    );
                    self.add_entry(worker.clone(), now);
                    added += 1;
                }
                Some(old) if !same_worker(&old, worker) => {
                    self.add_entry(worker.clone(), now);
                    changed += 1;
                }
                Some(_) => {}
            }
        }
        self.config = config;
        tracing::info!(added, changed, removed, "registry reloaded");
    }
}

/// Writes fire states, many at once; returns those that could not be written.
async fn write_fire_states(
    bucket: Bucket,
    states: HashMap<Arc<str>, FireState>,
) -> HashMap<Arc<str>, FireState> {
    use futures::stream::StreamExt;
    let writes = futures::stream::iter(states)
        .map(|(worker, state)| {
            let bucket = bucket.clone();
            async move {
                let result = bucket.put(&fire_key(&worker), &state).await;
                (worker, state, result)
            }
        })
        .buffer_unordered(1024);
    let results: Vec<_> = writes.collect().await;
    let mut failed = HashMap::new();
    for (worker, state, result) in results {
        if let Err(error) = result {
            tracing::warn!(%error, "cannot record handled fires; retrying");
            failed.insert(worker, state);
        }
    }
    failed
}

/// Whether a worker's definition is unchanged (schedules are compared by
/// what they are made of).
fn same_worker(a: &Worker, b: &Worker) -> bool {
    let schedule = |w: &Worker| {
        w.schedule.as_ref().map(|s| {
            (
                s.expression().to_owned(),
                s.timezone(),
                s.dst_gap(),
                s.dst_repeat(),
                s.jitter(),
            )
        })
    };
    schedule(a) == schedule(b)
        && a.command == b.command
        && a.enabled == b.enabled
        && a.timeout == b.timeout
        && a.retries == b.retries
        && a.backoff == b.backoff
        && a.overlap == b.overlap
        && a.concurrency == b.concurrency
        && a.catch_up == b.catch_up
        && a.starting_deadline == b.starting_deadline
        && a.labels == b.labels
        && a.env == b.env
        && a.secrets == b.secrets
        && a.enforcement == b.enforcement
        && a.alert_after == b.alert_after
        && a.output == b.output
}

fn dst_gap_detail(local: chrono::NaiveDateTime, worker: &Worker) -> String {
    format!(
        "the local time {local} does not exist in {} (daylight saving) and dst_gap = \"skip\"",
        worker.timezone.name()
    )
}

fn catch_up_name(policy: loom_config::CatchUp) -> &'static str {
    match policy {
        loom_config::CatchUp::None => "none",
        loom_config::CatchUp::Last => "last",
        loom_config::CatchUp::All => "all",
    }
}
