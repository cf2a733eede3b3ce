//! Workflow runs, driven by the leader scheduler (DESIGN §10).
//!
//! The leader takes workflow starts from its durable consumer (published by
//! `loom workflow start`, `nats pub <prefix>.workflow.start.<name>`, or the
//! leader itself when a workflow's schedule fires), keeps every run's state
//! in the workflows bucket, publishes each task as an ordinary run carrying
//! its [`WorkflowRef`], and moves the run on as the validator gives verdicts
//! (read from the runs bucket). The state machine is [`advance`].
//!
//! Failover: task run ids derive from the workflow run, round, task and
//! attempt, and state is saved before runs are published, so a new leader
//! reads the state, publishes again whatever has no run state yet (JetStream
//! drops the duplicates) and goes on: no task runs twice, none is lost.

pub mod advance;
pub mod requests;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use loom_broker::{Broker, Bucket, StateError};
use loom_config::Config;
use loom_protocol::codec::encode;
use loom_protocol::identity::message_run_id;
use loom_protocol::state::{BundleRef, RunState, RunStatus, bundle_key, run_key};
use loom_protocol::subjects::SubjectKind;
use loom_protocol::workflow::{
    Answer, WorkflowRun, WorkflowStart, WorkflowTask, answer_key, workflow_fire_key,
    workflow_run_key,
};
use loom_protocol::{DeadLetter, DeadLetterReason, RunCommand, Trigger, WIRE_VERSION, WorkflowRef};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::advance::Effect;

/// How often active runs are checked for verdicts and answers even when no
/// verdict arrives.
const TICK: Duration = Duration::from_secs(1);

/// What the workflow driver works with.
#[derive(Clone)]
pub struct Context {
    /// The connection.
    pub broker: Broker,
    /// The registry.
    pub config: watch::Receiver<Arc<Config>>,
}

/// Drives workflow runs until `stop` (the end of the leader's term).
pub async fn run_term(context: Context, stop: CancellationToken) {
    let broker = &context.broker;
    let names = broker.names().clone();
    let (workflows, runs) = match (
        broker.bucket(&names.workflows_bucket()).await,
        broker.bucket(&names.runs_bucket()).await,
    ) {
        (Ok(w), Ok(r)) => (w, r),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot open the workflow buckets; workflows do not run in this term (run `loom init`)");
            return;
        }
    };
    let driver = Driver {
        broker: broker.clone(),
        config: context.config.clone(),
        workflows,
        runs,
        active: Arc::default(),
        loaded: Arc::default(),
    };
    let mut verdicts = match broker
        .client()
        .subscribe(broker.subjects().all(SubjectKind::Verdict))
        .await
    {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            tracing::warn!(%error, "cannot follow verdicts; workflows advance once a second");
            None
        }
    };
    // A new term publishes again what a previous leader may not have.
    let mut republished: HashSet<Uuid> = HashSet::new();
    driver.tick(&mut republished, true).await;
    let starts = tokio::spawn(take_starts(driver.clone(), stop.clone()));
    let schedules = tokio::spawn(fire_schedules(driver.clone(), stop.clone()));
    let mut ticks = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => driver.tick(&mut republished, false).await,
            Some(_) = async {
                match verdicts.as_mut() {
                    Some(v) => v.next().await,
                    None => std::future::pending().await,
                }
            } => {
                // Let the verdict's run state settle, then look.
                tokio::time::sleep(Duration::from_millis(20)).await;
                driver.tick(&mut republished, false).await;
            }
        }
    }
    let _ = starts.await;
    let _ = schedules.await;
}

#[derive(Clone)]
struct Driver {
    broker: Broker,
    config: watch::Receiver<Arc<Config>>,
    workflows: Bucket,
    runs: Bucket,
    /// Ids of the runs that have not ended: read from the bucket once per
    /// term, kept up to date by this leader (starts are added even before).
    active: Arc<std::sync::Mutex<HashSet<Uuid>>>,
    /// Whether `active` holds what the bucket held at the term's start.
    loaded: Arc<std::sync::atomic::AtomicBool>,
}

impl Driver {
    /// Moves every active run on.
    async fn tick(&self, republished: &mut HashSet<Uuid>, republish_missing: bool) {
        let Some(active) = self.active_ids().await else {
            return;
        };
        for id in active {
            match self
                .workflows
                .get::<WorkflowRun>(&workflow_run_key(id))
                .await
            {
                Ok(Some(run)) if !run.value.status.is_final() => {
                    if let Err(error) = self.step(run.value, republished, republish_missing).await {
                        tracing::warn!(%error, "cannot move a workflow run on; trying again");
                    }
                }
                Ok(_) => self.track(id, false),
                Err(error) => tracing::warn!(%error, run_id = %id, "cannot read a workflow run"),
            }
        }
    }

    /// The runs that have not ended, read from the bucket the first time.
    async fn active_ids(&self) -> Option<Vec<Uuid>> {
        use std::sync::atomic::Ordering;
        if !self.loaded.load(Ordering::SeqCst) {
            let all = match self
                .workflows
                .snapshot::<WorkflowRun>(&self.broker, "run.*")
                .await
            {
                Ok(all) => all,
                Err(error) => {
                    tracing::warn!(%error, "cannot read workflow runs");
                    return None;
                }
            };
            for (_, run) in all {
                self.track(run.run_id, !run.status.is_final());
            }
            self.loaded.store(true, Ordering::SeqCst);
        }
        self.active
            .lock()
            .ok()
            .map(|ids| ids.iter().copied().collect())
    }

    /// Records that run `id` is active, or has ended.
    fn track(&self, id: Uuid, active: bool) {
        if let Ok(mut ids) = self.active.lock() {
            if active {
                ids.insert(id);
            } else {
                ids.remove(&id);
            }
        }
    }

    /// Fills in verdicts, takes an answer, advances, saves, publishes.
    async fn step(
        &self,
        mut run: WorkflowRun,
        republished: &mut HashSet<Uuid>,
        republish_missing: bool,
    ) -> Result<(), StateError> {
        let config = self.config.borrow().clone();
        let now = Utc::now();
        let mut changed = false;
        let mut effects = Vec::new();
        if run.status == loom_protocol::workflow::WorkflowStatus::WaitingForAnswer
            && let Some(answer) = self
                .workflows
                .get::<Answer>(&answer_key(run.run_id))
                .await?
        {
            advance::answer(&mut run, &answer.value.text, now);
            effects.extend(advance::pending_strategist(&run));
            changed = true;
            tracing::info!(workflow = %run.workflow, run_id = %run.run_id, "workflow run answered; resuming");
        }
        // Verdicts of attempts in flight.
        let mut missing = Vec::new();
        let strategist = run.strategist.clone();
        for round in &mut run.rounds {
            let mut attempts: Vec<(&str, &mut loom_protocol::workflow::TaskAttempt)> = Vec::new();
            for task in &mut round.tasks {
                let worker = task.task.worker.as_str();
                attempts.extend(task.attempts.iter_mut().map(|a| (worker, a)));
            }
            if let (Some(strategist_run), Some(worker)) = (&mut round.strategist, &strategist) {
                attempts.extend(
                    strategist_run
                        .attempts
                        .iter_mut()
                        .map(|a| (worker.as_str(), a)),
                );
            }
            for (worker, attempt) in attempts {
                if attempt.verdict.is_some() {
                    continue;
                }
                match self
                    .runs
                    .get::<RunState>(&run_key(worker, attempt.run_id))
                    .await?
                {
                    Some(state) if state.value.status == RunStatus::Done => {
                        fill(attempt, &state.value);
                        changed = true;
                    }
                    Some(_) => {}
                    None => missing.push(attempt.run_id),
                }
            }
        }
        let before = run.clone();
        effects.extend(advance::advance(&mut run, now, &|tasks| {
            plan(&config, tasks)
        }));
        changed |= run.status != before.status || run.rounds != before.rounds;
        // A new term: runs saved but perhaps never published.
        if republish_missing {
            for id in missing {
                if republished.insert(id)
                    && let Some(effect) = advance::publish_of(&run, id)
                {
                    effects.push(effect);
                }
            }
        }
        if changed {
            self.workflows
                .put(&workflow_run_key(run.run_id), &run)
                .await?;
            if run.status != loom_protocol::workflow::WorkflowStatus::WaitingForAnswer {
                let _ = self.workflows.delete(&answer_key(run.run_id)).await;
            }
        }
        for effect in effects {
            self.perform(&config, &run, effect).await;
        }
        Ok(())
    }

    async fn perform(&self, config: &Config, run: &WorkflowRun, effect: Effect) {
        match effect {
            Effect::Publish {
                run_id,
                worker,
                round,
                task,
                params,
            } => {
                let Some(definition) = config.registry.get(&worker) else {
                    tracing::error!(%worker, workflow = %run.workflow, "a workflow task names a worker that left the registry");
                    return;
                };
                let now = Utc::now();
                let mut command = RunCommand::new(run_id, &worker, now, Trigger::Workflow);
                command.params = params;
                command.workflow = Some(WorkflowRef {
                    run_id: run.run_id,
                    round,
                    task: task.clone(),
                });
                command.deadline = Some(definition.run_deadline(
                    now,
                    config.agent.ack_wait,
                    config.validator.slack,
                ));
                if let Some(bundle) = &definition.enforcement {
                    let workers = self
                        .broker
                        .bucket(&self.broker.names().workers_bucket())
                        .await;
                    if let Ok(workers) = workers
                        && let Ok(Some(reference)) =
                            workers.get::<BundleRef>(&bundle_key(bundle)).await
                    {
                        command.enforcement_digest = Some(reference.value.digest);
                    }
                }
                let Ok(payload) = encode(&command) else {
                    return;
                };
                let subject = self.broker.subjects().run(&worker);
                match self
                    .broker
                    .publish(&subject, Some(&format!("workflow:{run_id}")), payload)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(workflow = %run.workflow, workflow_run = %run.run_id, round, %task, %worker, %run_id, "workflow task published")
                    }
                    // Saved already: the next term (or tick after restart) publishes it again.
                    Err(error) => {
                        tracing::warn!(%error, %run_id, "cannot publish a workflow task yet")
                    }
                }
            }
            Effect::Escalate {
                clarification,
                description,
            } => {
                let reason = if clarification {
                    DeadLetterReason::ClarificationNeeded
                } else {
                    DeadLetterReason::Failed
                };
                let msg_id = format!(
                    "workflow:{}:{}:{}",
                    run.run_id,
                    reason.as_str(),
                    run.answers.len()
                );
                raise(
                    &self.broker,
                    &run.workflow,
                    run.run_id,
                    reason,
                    description,
                    &msg_id,
                )
                .await;
            }
        }
    }

    /// Starts a workflow run; an unknown workflow is dead-lettered.
    async fn start(
        &self,
        workflow: &str,
        start: WorkflowStart,
        fallback_id: Uuid,
    ) -> Result<(), StateError> {
        let config = self.config.borrow().clone();
        let run_id = start.run_id.unwrap_or(fallback_id);
        if self
            .workflows
            .get::<WorkflowRun>(&workflow_run_key(run_id))
            .await?
            .is_some()
        {
            return Ok(()); // delivered again
        }
        let Some(definition) = config.registry.workflow(workflow) else {
            raise(
                &self.broker,
                workflow,
                run_id,
                DeadLetterReason::Rejected,
                format!("a start of workflow {workflow:?}, which is not in the registry"),
                &format!("workflow-start:{run_id}"),
            )
            .await;
            tracing::warn!(%workflow, "refused a start of an unknown workflow");
            return Ok(());
        };
        let now = Utc::now();
        let mut run = advance::new_run(
            run_id,
            workflow,
            start.trigger.unwrap_or(Trigger::Manual),
            start.params,
            &definition.tasks,
            definition.levels.clone(),
            definition.strategist.clone(),
            definition.max_rounds,
            definition.task_retries,
            start.scheduled_at.unwrap_or(now),
        );
        let effects = advance::advance(&mut run, now, &|tasks| plan(&config, tasks));
        self.workflows
            .put(&workflow_run_key(run.run_id), &run)
            .await?;
        self.track(run.run_id, !run.status.is_final());
        tracing::info!(%workflow, run_id = %run.run_id, "workflow run started");
        for effect in effects {
            self.perform(&config, &run, effect).await;
        }
        Ok(())
    }
}

/// Checks a strategist's new tasks against the registry; their levels.
fn plan(config: &Config, tasks: &[WorkflowTask]) -> Result<Vec<Vec<String>>, String> {
    loom_config::plan_levels(tasks, |w| config.registry.get(w).is_some()).map_err(|e| e.to_string())
}

/// Copies a run's verdict into its attempt.
fn fill(attempt: &mut loom_protocol::workflow::TaskAttempt, state: &RunState) {
    attempt.verdict = state.verdict;
    attempt.reason = state.reason.clone();
    attempt.stdout_tail = state.stdout_tail.clone();
    attempt.status_line = advance::status_line(&state.stdout_tail);
    attempt.finished_at = state.verdict_at;
    attempt.duration_ms = state.attempts.last().map_or(0, |a| a.duration_ms);
    attempt.cpu_ms = state.attempts.iter().map(|a| a.cpu_ms).sum();
    attempt.cost = state.cost.clone();
}

fn metrics_dead_letter(workflow: &str, reason: DeadLetterReason) {
    loom_protocol::metrics::DEAD_LETTERS
        .with_label_values(&[workflow, reason.as_str()])
        .inc();
}

/// Takes workflow starts from the durable consumer until `stop`.
async fn take_starts(driver: Driver, stop: CancellationToken) {
    let broker = driver.broker.clone();
    let names = broker.names().clone();
    let subjects = broker.subjects().clone();
    while !stop.is_cancelled() {
        let consumer = match broker
            .durable(&names.results_stream(), &names.workflow_consumer())
            .await
        {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot open the workflow start consumer; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(16)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull workflow starts; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.next() => match next {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "workflow start pull error");
                        continue;
                    }
                    None => break,
                },
            };
            let Some(workflow) = subjects
                .worker_of(SubjectKind::WorkflowStart, &message.subject)
                .map(str::to_owned)
            else {
                let _ = loom_broker::acknowledge_confirmed(&message, AckKind::Term).await;
                continue;
            };
            let (sequence, published) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    DateTime::from_timestamp_nanos(
                        i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
                    ),
                ),
                Err(_) => (0, Utc::now()),
            };
            let fallback = message_run_id(&names.results_stream(), sequence, published);
            let start = match parse_start(&message.payload) {
                Ok(start) => start,
                Err(error) => {
                    reject(&broker, &workflow, fallback, &error).await;
                    let _ = loom_broker::acknowledge_confirmed(&message, AckKind::Ack).await;
                    continue;
                }
            };
            let kind = match driver.start(&workflow, start, fallback).await {
                Ok(()) => AckKind::Ack,
                Err(error) => {
                    tracing::warn!(%error, %workflow, "cannot start the workflow run yet");
                    AckKind::Nak(Some(Duration::from_secs(2)))
                }
            };
            let _ = loom_broker::acknowledge_confirmed(&message, kind).await;
        }
    }
}

/// A start's body: empty, or JSON (`{"params": {...}}`, optionally `run_id`).
pub fn parse_start(body: &[u8]) -> Result<WorkflowStart, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(WorkflowStart::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        format!("the body is not a workflow start (empty, or JSON like {{\"params\": {{\"k\": \"v\"}}}}): {e}")
    })
}

async fn reject(broker: &Broker, workflow: &str, run_id: Uuid, error: &str) {
    raise(
        broker,
        workflow,
        run_id,
        DeadLetterReason::Rejected,
        format!("a start of workflow {workflow:?} was refused: {error}"),
        &format!("workflow-start:{run_id}"),
    )
    .await;
}

/// Publishes a workflow's dead letter on `<prefix>.dlq.<workflow>` (no
/// command to replay: the run itself waits or has ended).
async fn raise(
    broker: &Broker,
    workflow: &str,
    run_id: Uuid,
    reason: DeadLetterReason,
    description: String,
    msg_id: &str,
) {
    let letter = DeadLetter {
        v: WIRE_VERSION,
        run_id,
        worker: workflow.to_owned(),
        reason,
        description,
        attempts: Vec::new(),
        command: None,
        dead_at: Utc::now(),
        replayed_by: None,
    };
    let Ok(payload) = encode(&letter) else {
        return;
    };
    let subject = broker.subjects().dead_letter(workflow);
    match broker.publish(&subject, Some(msg_id), payload).await {
        Ok(_) => metrics_dead_letter(workflow, reason),
        Err(error) => {
            tracing::error!(%error, %workflow, "cannot raise the workflow's dead letter")
        }
    }
}

/// Publishes the starts of scheduled workflows when they fall due, once
/// each (message id `<workflow>@<instant>`, last start kept in KV).
async fn fire_schedules(driver: Driver, stop: CancellationToken) {
    loop {
        let config = driver.config.borrow().clone();
        let now = Utc::now();
        let mut next_wake = now + chrono::Duration::seconds(30);
        for workflow in config.registry.workflows() {
            let (Some(schedule), true) = (&workflow.schedule, workflow.enabled) else {
                continue;
            };
            let key = workflow_fire_key(&workflow.name);
            let last: Option<DateTime<Utc>> = match driver.workflows.get(&key).await {
                Ok(value) => value.map(|v| v.value),
                Err(error) => {
                    tracing::warn!(%error, "cannot read a workflow's last start");
                    continue;
                }
            };
            // Without a record, start from now: no burst of past fires.
            let after = last.unwrap_or(now - chrono::Duration::milliseconds(1));
            let Some(due) = schedule.next_fire(after) else {
                continue;
            };
            if due <= now {
                // Only the latest fire that is due runs (catch-up `last`).
                let mut latest = due;
                while let Some(next) = schedule.next_fire(latest) {
                    if next > now {
                        break;
                    }
                    latest = next;
                }
                let start = WorkflowStart {
                    run_id: Some(loom_protocol::identity::fire_run_id(&workflow.name, latest)),
                    params: BTreeMap::new(),
                    trigger: Some(Trigger::Schedule),
                    scheduled_at: Some(latest),
                };
                let body = serde_json::to_vec(&start).unwrap_or_default();
                let msg_id = loom_protocol::identity::fire_msg_id(&workflow.name, latest);
                let subject = driver.broker.subjects().workflow_start(&workflow.name);
                match driver.broker.publish(&subject, Some(&msg_id), body).await {
                    Ok(_) => {
                        if let Err(error) = driver.workflows.put(&key, &latest).await {
                            tracing::warn!(%error, "cannot record a workflow's start");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot start a scheduled workflow yet"),
                }
                next_wake = now;
            } else {
                if last.is_none() {
                    let _ = driver.workflows.put(&key, &now).await;
                }
                next_wake = next_wake.min(due);
            }
        }
        let wait = (next_wake - Utc::now())
            .to_std()
            .unwrap_or(Duration::from_millis(50))
            .max(Duration::from_millis(50));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
