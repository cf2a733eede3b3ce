//! The workflow state machine, as pure functions over a [`WorkflowRun`]:
//! given the verdicts filled in so far, settle tasks, start the next level,
//! run the strategist, act on its decision. I/O (reading verdicts, saving
//! state, publishing runs) is the caller's.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use loom_protocol::VerdictKind;
use loom_protocol::workflow::{
    Decision, Round, STRATEGIST_TASK, StrategistRun, TaskAttempt, TaskRun, TaskState, WorkflowRun,
    WorkflowStatus, WorkflowTask, task_run_id,
};
use uuid::Uuid;

/// What the caller must do after an [`advance`], in order, once the new
/// state is saved.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish a run of `worker` with id `run_id` (a task's or the
    /// strategist's attempt) and these params.
    Publish {
        /// The run.
        run_id: Uuid,
        /// Its worker.
        worker: String,
        /// The round.
        round: u32,
        /// The task id ([`STRATEGIST_TASK`] for the strategist).
        task: String,
        /// Its params.
        params: BTreeMap<String, String>,
    },
    /// Raise a dead letter: the run waits for an answer, or failed.
    Escalate {
        /// Why: a question (`clarification_needed`) or a failure.
        clarification: bool,
        /// One sentence.
        description: String,
    },
}

/// Checks a strategist's new tasks; the levels or why they are refused.
pub type Planner<'a> = &'a dyn Fn(&[WorkflowTask]) -> Result<Vec<Vec<String>>, String>;

/// The most a task's stdout tail may take in the strategist's input.
const TAIL_FOR_STRATEGIST: usize = 1024;

/// A new workflow run in round 1, not yet advanced.
#[allow(clippy::too_many_arguments)]
pub fn new_run(
    run_id: Uuid,
    workflow: &str,
    trigger: loom_protocol::Trigger,
    params: BTreeMap<String, String>,
    tasks: &[WorkflowTask],
    levels: Vec<Vec<String>>,
    strategist: Option<String>,
    max_rounds: u32,
    task_retries: u32,
    now: DateTime<Utc>,
) -> WorkflowRun {
    WorkflowRun {
        run_id,
        workflow: workflow.to_owned(),
        trigger,
        params,
        status: WorkflowStatus::Running,
        rounds: vec![round(1, tasks, levels, now)],
        question: None,
        answers: Vec::new(),
        max_rounds,
        task_retries,
        strategist,
        started_at: now,
        finished_at: None,
        outcome: None,
        updated_at: now,
    }
}

fn round(
    number: u32,
    tasks: &[WorkflowTask],
    levels: Vec<Vec<String>>,
    now: DateTime<Utc>,
) -> Round {
    Round {
        number,
        levels,
        tasks: tasks
            .iter()
            .map(|task| TaskRun {
                task: task.clone(),
                state: TaskState::Pending,
                attempts: Vec::new(),
            })
            .collect(),
        strategist: None,
        started_at: now,
        finished_at: None,
    }
}

/// The `STATUS:` line ending `stdout`, if it ends with one.
pub fn status_line(stdout: &str) -> Option<String> {
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    let rest = last.strip_prefix("STATUS:")?.trim();
    (!rest.is_empty()).then(|| last.to_owned())
}

/// Whether an attempt counts as done well: a valid verdict and a status line.
fn succeeded(attempt: &TaskAttempt) -> bool {
    attempt.verdict == Some(VerdictKind::Valid) && attempt.status_line.is_some()
}

/// Failed attempts since the last success (or the start).
fn trailing_failures(attempts: &[TaskAttempt]) -> u32 {
    attempts
        .iter()
        .rev()
        .take_while(|a| a.verdict.is_some() && !succeeded(a))
        .count() as u32
}

fn attempt(run_id: Uuid, now: DateTime<Utc>) -> TaskAttempt {
    TaskAttempt {
        run_id,
        dispatched_at: now,
        verdict: None,
        reason: None,
        status_line: None,
        stdout_tail: String::new(),
        finished_at: None,
        duration_ms: 0,
        cpu_ms: 0,
        cost: BTreeMap::new(),
    }
}

/// Moves the run as far as its verdicts allow; what to publish and raise.
pub fn advance(run: &mut WorkflowRun, now: DateTime<Utc>, plan: Planner<'_>) -> Vec<Effect> {
    let mut effects = Vec::new();
    // Each pass settles one step; a new round or level may allow another.
    for _ in 0..64 {
        if run.status != WorkflowStatus::Running {
            break;
        }
        let before = effects.len();
        let changed = step(run, now, plan, &mut effects);
        if !changed && effects.len() == before {
            break;
        }
    }
    run.updated_at = now;
    effects
}

/// One step; whether anything changed.
fn step(
    run: &mut WorkflowRun,
    now: DateTime<Utc>,
    plan: Planner<'_>,
    effects: &mut Vec<Effect>,
) -> bool {
    let run_id = run.run_id;
    let retries = run.task_retries;
    let params = run.params.clone();
    let Some(round) = run.rounds.last_mut() else {
        return false;
    };
    let number = round.number;
    let mut changed = false;

    // Settle running tasks whose last attempt has its verdict.
    let mut blocked = Vec::new();
    for task in &mut round.tasks {
        if task.state != TaskState::Running {
            continue;
        }
        let Some(last) = task.attempts.last() else {
            continue;
        };
        if last.verdict.is_none() {
            continue;
        }
        changed = true;
        if succeeded(last) {
            task.state = TaskState::Valid;
        } else if trailing_failures(&task.attempts) <= retries {
            let next = task.attempts.len() as u32 + 1;
            let id = task_run_id(run_id, number, &task.task.id, next);
            task.attempts.push(attempt(id, now));
            effects.push(publish(id, number, &task.task, &params));
        } else {
            task.state = TaskState::Blocked;
            blocked.push(task.task.id.clone());
        }
    }
    if !blocked.is_empty() {
        skip_dependents(round, &blocked);
    }

    // Start the first level that is not settled, once those before are.
    for level in round.levels.clone() {
        let states: Vec<TaskState> = level
            .iter()
            .filter_map(|id| round.tasks.iter().find(|t| &t.task.id == id))
            .map(|t| t.state)
            .collect();
        if states.iter().all(|s| s.is_final()) {
            continue;
        }
        for id in &level {
            let valid: BTreeSet<String> = round
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Valid)
                .map(|t| t.task.id.clone())
                .collect();
            let Some(task) = round.tasks.iter_mut().find(|t| &t.task.id == id) else {
                continue;
            };
            if task.state != TaskState::Pending {
                continue;
            }
            changed = true;
            if task.task.depends_on.iter().all(|d| valid.contains(d)) {
                let next = task.attempts.len() as u32 + 1;
                let id = task_run_id(run_id, number, &task.task.id, next);
                task.attempts.push(attempt(id, now));
                task.state = TaskState::Running;
                effects.push(publish(id, number, &task.task, &params));
            } else {
                task.state = TaskState::Skipped;
            }
        }
        return changed;
    }

    // Every task is settled: the round's end.
    if round.tasks.iter().all(|t| t.state != TaskState::Valid) {
        let blocked: Vec<&str> = round
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Blocked)
            .map(|t| t.task.id.as_str())
            .collect();
        round.finished_at.get_or_insert(now);
        let question = format!(
            "every task of round {number} is blocked or skipped (blocked: {}); answer to retry the round",
            blocked.join(", ")
        );
        ask(run, question, effects, now);
        return true;
    }
    let Some(strategist) = run.strategist.clone() else {
        let round = run.rounds.last_mut().expect("a round");
        round.finished_at.get_or_insert(now);
        let summary = tally(round);
        finish(
            run,
            WorkflowStatus::Done,
            format!("round {number} finished: {summary}"),
            now,
        );
        return true;
    };
    let strategist_params =
        strategist_params(run, run.rounds.last().and_then(|r| r.strategist.as_ref()));
    let round = run.rounds.last_mut().expect("a round");
    let strategist_run = round.strategist.get_or_insert_with(|| StrategistRun {
        attempts: Vec::new(),
        decision: None,
        answer: None,
    });
    let strategist_task = WorkflowTask {
        id: STRATEGIST_TASK.to_owned(),
        worker: strategist.clone(),
        depends_on: Vec::new(),
        params: BTreeMap::new(),
    };
    let last = strategist_run.attempts.last().cloned();
    match last {
        // Not run yet (or run again after an answer).
        None => {
            let id = task_run_id(run_id, number, STRATEGIST_TASK, 1);
            strategist_run.attempts.push(attempt(id, now));
            effects.push(publish(id, number, &strategist_task, &strategist_params));
            true
        }
        Some(_) if strategist_run.decision.is_some() => false,
        Some(last) if last.verdict.is_none() => false,
        Some(last) if !succeeded(&last) => {
            if trailing_failures(&strategist_run.attempts) <= retries {
                let next = strategist_run.attempts.len() as u32 + 1;
                let id = task_run_id(run_id, number, STRATEGIST_TASK, next);
                strategist_run.attempts.push(attempt(id, now));
                effects.push(publish(id, number, &strategist_task, &strategist_params));
                true
            } else {
                let reason = format!(
                    "the strategist {strategist} failed {} time(s) after round {number}: {}",
                    trailing_failures(&strategist_run.attempts),
                    last.reason.clone().unwrap_or_default()
                );
                strategist_run.decision = Some(Decision::Unusable {
                    reason: reason.clone(),
                });
                round.finished_at.get_or_insert(now);
                fail(run, reason, effects, now);
                true
            }
        }
        Some(last) => {
            let decision = decide(&last, plan);
            strategist_run.decision = Some(decision.0.clone());
            round.finished_at.get_or_insert(now);
            match decision {
                (Decision::Done, _) => {
                    finish(
                        run,
                        WorkflowStatus::Done,
                        format!("the strategist said DONE after round {number}"),
                        now,
                    );
                }
                (Decision::SpawnNext { .. }, Some((tasks, levels))) => {
                    if number >= run.max_rounds {
                        finish(
                            run,
                            WorkflowStatus::MaxRounds,
                            format!(
                                "stopped at max_rounds ({}): the strategist still asked for another round",
                                run.max_rounds
                            ),
                            now,
                        );
                    } else {
                        let next = self::round(number + 1, &tasks, levels, now);
                        run.rounds.push(next);
                    }
                }
                (Decision::ClarificationNeeded { question }, _) => {
                    ask(run, question, effects, now);
                }
                (other, _) => {
                    let reason = match other {
                        Decision::Unusable { reason } if !reason.trim().is_empty() => reason,
                        _ => "the strategist's answer was unusable".to_owned(),
                    };
                    fail(run, format!("after round {number}: {reason}"), effects, now);
                }
            }
            true
        }
    }
}

/// Reads a strategist's answer: the decision, and for SPAWN_NEXT the new
/// tasks with their levels.
#[allow(clippy::type_complexity)]
fn decide(
    last: &TaskAttempt,
    plan: Planner<'_>,
) -> (Decision, Option<(Vec<WorkflowTask>, Vec<Vec<String>>)>) {
    let line = last.status_line.clone().unwrap_or_default();
    let rest = line.trim().strip_prefix("STATUS:").unwrap_or("").trim();
    if rest == "DONE" || rest.starts_with("DONE ") {
        return (Decision::Done, None);
    }
    if let Some(question) = rest.strip_prefix("CLARIFICATION_NEEDED") {
        let question = question.trim_start_matches(':').trim();
        let question = if question.is_empty() {
            "the strategist needs clarification (it asked no question)".to_owned()
        } else {
            question.to_owned()
        };
        return (Decision::ClarificationNeeded { question }, None);
    }
    if rest == "SPAWN_NEXT" || rest.starts_with("SPAWN_NEXT ") {
        let body: Vec<&str> = {
            let lines: Vec<&str> = last.stdout_tail.lines().collect();
            let end = lines
                .iter()
                .rposition(|l| !l.trim().is_empty())
                .unwrap_or(0);
            lines[..end].to_vec()
        };
        let text = body.join("\n");
        let Some(start) = text.find('[') else {
            return unusable("SPAWN_NEXT without a JSON list of tasks before the status line");
        };
        let tasks: Vec<WorkflowTask> = match serde_json::from_str(text[start..].trim()) {
            Ok(tasks) => tasks,
            Err(error) => {
                return unusable(&format!(
                    "SPAWN_NEXT with a task list that is not valid JSON: {error}"
                ));
            }
        };
        return match plan(&tasks) {
            Ok(levels) => (
                Decision::SpawnNext { tasks: tasks.len() },
                Some((tasks, levels)),
            ),
            Err(error) => unusable(&format!("SPAWN_NEXT refused: {error}")),
        };
    }
    unusable(&format!(
        "the strategist answered {line:?}; expected STATUS: DONE, SPAWN_NEXT or CLARIFICATION_NEEDED: <question>"
    ))
}

#[allow(clippy::type_complexity)]
fn unusable(reason: &str) -> (Decision, Option<(Vec<WorkflowTask>, Vec<Vec<String>>)>) {
    (
        Decision::Unusable {
            reason: reason.to_owned(),
        },
        None,
    )
}

/// Gives a waiting run its answer: the strategist runs again with it, or
/// without a strategist the blocked and skipped tasks of the round run again.
/// Whether the run was waiting.
pub fn answer(run: &mut WorkflowRun, text: &str, now: DateTime<Utc>) -> bool {
    if run.status != WorkflowStatus::WaitingForAnswer {
        return false;
    }
    run.answers.push(text.to_owned());
    run.question = None;
    run.status = WorkflowStatus::Running;
    let strategist = run.strategist.is_some();
    let Some(round) = run.rounds.last_mut() else {
        return true;
    };
    let all_blocked = round.tasks.iter().all(|t| t.state != TaskState::Valid);
    if strategist && !all_blocked {
        if let Some(strategist) = round.strategist.as_mut() {
            strategist.decision = None;
            strategist.answer = Some(text.to_owned());
            // A fresh attempt: the next one published carries the answer.
            let next = strategist.attempts.len() as u32 + 1;
            let id = task_run_id(run.run_id, round.number, STRATEGIST_TASK, next);
            strategist.attempts.push(attempt(id, now));
        }
    } else {
        round.finished_at = None;
        for task in &mut round.tasks {
            if matches!(task.state, TaskState::Blocked | TaskState::Skipped) {
                task.state = TaskState::Pending;
                // Keep the attempts (their run ids stay unique): the next
                // attempt is numbered after them.
                if let Some(last) = task.attempts.last_mut()
                    && last.verdict.is_none()
                {
                    last.verdict = Some(VerdictKind::Failed);
                }
            }
        }
    }
    true
}

/// The strategist attempt that an [`answer`] created, to publish.
pub fn pending_strategist(run: &WorkflowRun) -> Option<Effect> {
    let strategist = run.rounds.last()?.strategist.as_ref()?;
    let last = strategist.attempts.last()?;
    if last.verdict.is_some() || strategist.answer.is_none() || strategist.decision.is_some() {
        return None;
    }
    publish_of(run, last.run_id)
}

/// The publish of attempt `run_id` (a task's or the strategist's), rebuilt
/// from the run's state: what a new leader publishes again.
pub fn publish_of(run: &WorkflowRun, run_id: Uuid) -> Option<Effect> {
    for round in &run.rounds {
        if let Some(task) = round
            .tasks
            .iter()
            .find(|t| t.attempts.iter().any(|a| a.run_id == run_id))
        {
            return Some(publish(run_id, round.number, &task.task, &run.params));
        }
        if let Some(strategist) = &round.strategist
            && strategist.attempts.iter().any(|a| a.run_id == run_id)
        {
            return Some(Effect::Publish {
                run_id,
                worker: run.strategist.clone()?,
                round: round.number,
                task: STRATEGIST_TASK.to_owned(),
                params: strategist_params(run, Some(strategist)),
            });
        }
    }
    None
}

/// The strategist's params: the run's, the round's results as `round`, and
/// the answer it runs after, if any.
fn strategist_params(
    run: &WorkflowRun,
    strategist: Option<&StrategistRun>,
) -> BTreeMap<String, String> {
    let mut params = run.params.clone();
    params.insert("round".to_owned(), strategist_input(run));
    if let Some(answer) = strategist.and_then(|s| s.answer.as_ref()) {
        params.insert("answer".to_owned(), answer.clone());
    }
    params
}

fn publish(
    run_id: Uuid,
    round: u32,
    task: &WorkflowTask,
    params: &BTreeMap<String, String>,
) -> Effect {
    let mut all = params.clone();
    all.extend(task.params.clone());
    Effect::Publish {
        run_id,
        worker: task.worker.clone(),
        round,
        task: task.id.clone(),
        params: all,
    }
}

/// Marks every task that depends, directly or not, on `blocked` as skipped.
fn skip_dependents(round: &mut Round, blocked: &[String]) {
    let mut dead: BTreeSet<String> = blocked.iter().cloned().collect();
    loop {
        let mut grew = false;
        for task in &mut round.tasks {
            if task.state == TaskState::Pending
                && task.task.depends_on.iter().any(|d| dead.contains(d))
            {
                task.state = TaskState::Skipped;
                dead.insert(task.task.id.clone());
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
}

fn tally(round: &Round) -> String {
    let count = |state| round.tasks.iter().filter(|t| t.state == state).count();
    format!(
        "{}/{} tasks valid, {} blocked, {} skipped",
        count(TaskState::Valid),
        round.tasks.len(),
        count(TaskState::Blocked),
        count(TaskState::Skipped)
    )
}

fn ask(run: &mut WorkflowRun, question: String, effects: &mut Vec<Effect>, now: DateTime<Utc>) {
    run.status = WorkflowStatus::WaitingForAnswer;
    run.question = Some(question.clone());
    run.updated_at = now;
    effects.push(Effect::Escalate {
        clarification: true,
        description: format!(
            "workflow {} run {} needs clarification: {question} (answer with `loom workflow answer {} \"...\"`)",
            run.workflow, run.run_id, run.run_id
        ),
    });
}

fn fail(run: &mut WorkflowRun, reason: String, effects: &mut Vec<Effect>, now: DateTime<Utc>) {
    effects.push(Effect::Escalate {
        clarification: false,
        description: format!(
            "workflow {} run {} failed: {reason}",
            run.workflow, run.run_id
        ),
    });
    finish(run, WorkflowStatus::Failed, reason, now);
}

fn finish(run: &mut WorkflowRun, status: WorkflowStatus, outcome: String, now: DateTime<Utc>) {
    run.status = status;
    run.outcome = Some(outcome);
    run.finished_at = Some(now);
}

/// The strategist's input: the round's results as JSON (the `round` param,
/// so on its stdin with the command and in `LOOM_PARAM_ROUND`).
fn strategist_input(run: &WorkflowRun) -> String {
    let Some(round) = run.rounds.last() else {
        return "{}".to_owned();
    };
    let tasks: Vec<serde_json::Value> = round
        .tasks
        .iter()
        .map(|task| {
            let last = task.attempts.last();
            serde_json::json!({
                "id": task.task.id,
                "worker": task.task.worker,
                "state": task.state.as_str(),
                "attempts": task.attempts.len(),
                "verdict": last.and_then(|a| a.verdict).map(|v| v.as_str()),
                "status_line": last.and_then(|a| a.status_line.clone()),
                "stdout_tail": last.map(|a| tail(&a.stdout_tail)),
            })
        })
        .collect();
    serde_json::json!({
        "workflow": run.workflow,
        "run_id": run.run_id,
        "round": round.number,
        "max_rounds": run.max_rounds,
        "tasks": tasks,
        "answers": run.answers,
    })
    .to_string()
}

fn tail(text: &str) -> &str {
    if text.len() <= TAIL_FOR_STRATEGIST {
        return text;
    }
    let mut start = text.len() - TAIL_FOR_STRATEGIST;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests;
