//! Tests of the workflow state machine: levels, retries, blocked and
//! skipped tasks, strategist rounds, questions and answers, max_rounds.

use super::*;
use loom_protocol::Trigger;

fn task(id: &str, worker: &str, depends_on: &[&str]) -> WorkflowTask {
    WorkflowTask {
        id: id.to_owned(),
        worker: worker.to_owned(),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        params: BTreeMap::new(),
    }
}

fn diamond() -> (Vec<WorkflowTask>, Vec<Vec<String>>) {
    let tasks = vec![
        task("a", "w", &[]),
        task("b", "w", &["a"]),
        task("c", "w", &["a"]),
        task("d", "w", &["b", "c"]),
    ];
    let levels = vec![
        vec!["a".to_owned()],
        vec!["b".to_owned(), "c".to_owned()],
        vec!["d".to_owned()],
    ];
    (tasks, levels)
}

fn no_plan(_: &[WorkflowTask]) -> Result<Vec<Vec<String>>, String> {
    Err("no spawning in this test".to_owned())
}

/// Plans any list as one level, refusing worker "nope".
fn flat_plan(tasks: &[WorkflowTask]) -> Result<Vec<Vec<String>>, String> {
    if let Some(bad) = tasks.iter().find(|t| t.worker == "nope") {
        return Err(format!(
            "task {:?} names worker \"nope\", which is not in the registry",
            bad.id
        ));
    }
    Ok(vec![tasks.iter().map(|t| t.id.clone()).collect()])
}

fn new(strategist: Option<&str>, max_rounds: u32) -> WorkflowRun {
    let (tasks, levels) = diamond();
    new_run(
        Uuid::now_v7(),
        "diamond",
        Trigger::Manual,
        BTreeMap::new(),
        &tasks,
        levels,
        strategist.map(str::to_owned),
        max_rounds,
        1,
        Utc::now(),
    )
}

fn published(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { task, .. } => Some(task.clone()),
            Effect::Escalate { .. } => None,
        })
        .collect()
}

/// Gives the in-flight attempt of `task` (in the last round) its verdict
/// and stdout.
fn conclude(run: &mut WorkflowRun, task: &str, verdict: VerdictKind, stdout: &str) {
    let round = run.rounds.last_mut().expect("round");
    let attempt = if task == STRATEGIST_TASK {
        round
            .strategist
            .as_mut()
            .and_then(|s| s.attempts.last_mut())
            .expect("strategist attempt")
    } else {
        round
            .tasks
            .iter_mut()
            .find(|t| t.task.id == task)
            .and_then(|t| t.attempts.last_mut())
            .expect("task attempt")
    };
    assert!(attempt.verdict.is_none(), "{task} already concluded");
    attempt.verdict = Some(verdict);
    attempt.stdout_tail = stdout.to_owned();
    attempt.status_line = status_line(stdout);
    attempt.cpu_ms = 10;
    attempt.cost.insert("usd".to_owned(), 0.5);
}

fn state(run: &WorkflowRun, task: &str) -> TaskState {
    run.rounds
        .last()
        .and_then(|r| r.tasks.iter().find(|t| t.task.id == task))
        .map(|t| t.state)
        .expect("task")
}

#[test]
fn a_diamond_runs_level_by_level() {
    let mut run = new(None, 5);
    let now = Utc::now();
    assert_eq!(published(&advance(&mut run, now, &no_plan)), ["a"]);
    assert!(
        advance(&mut run, now, &no_plan).is_empty(),
        "nothing until a has its verdict"
    );
    conclude(&mut run, "a", VerdictKind::Valid, "STATUS: ok\n");
    assert_eq!(published(&advance(&mut run, now, &no_plan)), ["b", "c"]);
    conclude(&mut run, "b", VerdictKind::Valid, "STATUS: ok\n");
    assert!(
        published(&advance(&mut run, now, &no_plan)).is_empty(),
        "c still runs"
    );
    conclude(&mut run, "c", VerdictKind::Valid, "STATUS: ok\n");
    assert_eq!(published(&advance(&mut run, now, &no_plan)), ["d"]);
    conclude(&mut run, "d", VerdictKind::Valid, "STATUS: ok\n");
    assert!(advance(&mut run, now, &no_plan).is_empty());
    assert_eq!(run.status, WorkflowStatus::Done);
    assert_eq!(
        run.outcome.as_deref(),
        Some("round 1 finished: 4/4 tasks valid, 0 blocked, 0 skipped")
    );
    let report = run.report(now);
    assert_eq!(report.runs, 4);
    assert_eq!(report.cpu_ms, 40);
    assert_eq!(report.cost["usd"], 2.0);
    assert_eq!(report.rounds[0].tasks_valid, 4);
}

#[test]
fn a_failing_task_is_retried_once_then_blocked_and_its_dependents_skipped() {
    let mut run = new(None, 5);
    let now = Utc::now();
    advance(&mut run, now, &no_plan);
    conclude(&mut run, "a", VerdictKind::Valid, "STATUS: ok\n");
    advance(&mut run, now, &no_plan);
    // A valid verdict without a status line does not count.
    conclude(&mut run, "b", VerdictKind::Valid, "no status line\n");
    conclude(&mut run, "c", VerdictKind::Valid, "STATUS: ok\n");
    assert_eq!(
        published(&advance(&mut run, now, &no_plan)),
        ["b"],
        "b's retry"
    );
    let ids: Vec<Uuid> = run.rounds[0].tasks[1]
        .attempts
        .iter()
        .map(|a| a.run_id)
        .collect();
    assert_eq!(
        ids,
        [
            task_run_id(run.run_id, 1, "b", 1),
            task_run_id(run.run_id, 1, "b", 2)
        ]
    );
    conclude(&mut run, "b", VerdictKind::Failed, "");
    let effects = advance(&mut run, now, &no_plan);
    assert!(published(&effects).is_empty());
    assert_eq!(state(&run, "b"), TaskState::Blocked);
    assert_eq!(state(&run, "d"), TaskState::Skipped);
    assert_eq!(run.status, WorkflowStatus::Done);
    let report = run.report(now);
    assert_eq!(
        (
            report.rounds[0].tasks_valid,
            report.rounds[0].tasks_blocked,
            report.rounds[0].tasks_skipped
        ),
        (2, 1, 1)
    );
    assert_eq!(report.runs, 4, "a, b twice, c");
}

#[test]
fn the_strategist_spawns_a_round_then_says_done() {
    let mut run = new(Some("strategist"), 5);
    let now = Utc::now();
    advance(&mut run, now, &flat_plan);
    for (id, next) in [
        ("a", vec!["b", "c"]),
        ("b", vec![]),
        ("c", vec!["d"]),
        ("d", vec![STRATEGIST_TASK]),
    ] {
        conclude(&mut run, id, VerdictKind::Valid, "STATUS: ok\n");
        assert_eq!(published(&advance(&mut run, now, &flat_plan)), next);
    }
    conclude(
        &mut run,
        STRATEGIST_TASK,
        VerdictKind::Valid,
        "thinking\n[{\"id\": \"e\", \"worker\": \"w\"}]\nSTATUS: SPAWN_NEXT\n",
    );
    assert_eq!(published(&advance(&mut run, now, &flat_plan)), ["e"]);
    assert_eq!(run.rounds.len(), 2);
    assert_eq!(
        run.rounds[0]
            .strategist
            .as_ref()
            .and_then(|s| s.decision.clone()),
        Some(Decision::SpawnNext { tasks: 1 })
    );
    conclude(&mut run, "e", VerdictKind::Valid, "STATUS: ok\n");
    assert_eq!(
        published(&advance(&mut run, now, &flat_plan)),
        [STRATEGIST_TASK]
    );
    conclude(
        &mut run,
        STRATEGIST_TASK,
        VerdictKind::Valid,
        "STATUS: DONE\n",
    );
    advance(&mut run, now, &flat_plan);
    assert_eq!(run.status, WorkflowStatus::Done);
    assert_eq!(
        run.outcome.as_deref(),
        Some("the strategist said DONE after round 2")
    );
}

#[test]
fn the_strategist_gets_the_round_results_and_can_ask_a_question() {
    let mut run = new(Some("strategist"), 5);
    let now = Utc::now();
    advance(&mut run, now, &flat_plan);
    for id in ["a", "b", "c", "d"] {
        conclude(
            &mut run,
            id,
            VerdictKind::Valid,
            &format!("STATUS: ok {id}\n"),
        );
        advance(&mut run, now, &flat_plan);
    }
    let Some(Effect::Publish { params, .. }) = pending_publish(&run) else {
        panic!("the strategist is in flight");
    };
    let input: serde_json::Value = serde_json::from_str(&params["round"]).expect("json");
    assert_eq!(input["round"], 1);
    assert_eq!(input["tasks"][3]["status_line"], "STATUS: ok d");
    conclude(
        &mut run,
        STRATEGIST_TASK,
        VerdictKind::Valid,
        "STATUS: CLARIFICATION_NEEDED: which repo?\n",
    );
    let effects = advance(&mut run, now, &flat_plan);
    assert_eq!(run.status, WorkflowStatus::WaitingForAnswer);
    assert_eq!(run.question.as_deref(), Some("which repo?"));
    assert!(
        matches!(&effects[..], [Effect::Escalate { clarification: true, description }] if description.contains("which repo?"))
    );

    assert!(answer(&mut run, "loom", now));
    let Some(Effect::Publish {
        params,
        task,
        run_id,
        ..
    }) = pending_strategist(&run)
    else {
        panic!("the strategist runs again");
    };
    assert_eq!(task, STRATEGIST_TASK);
    assert_eq!(params["answer"], "loom");
    assert_eq!(run_id, task_run_id(run.run_id, 1, STRATEGIST_TASK, 2));
    conclude(
        &mut run,
        STRATEGIST_TASK,
        VerdictKind::Valid,
        "STATUS: DONE\n",
    );
    advance(&mut run, now, &flat_plan);
    assert_eq!(run.status, WorkflowStatus::Done);
    assert_eq!(run.answers, ["loom"]);
}

/// The publish of the strategist's latest attempt.
fn pending_publish(run: &WorkflowRun) -> Option<Effect> {
    let last = run.rounds.last()?.strategist.as_ref()?.attempts.last()?;
    publish_of(run, last.run_id)
}

#[test]
fn max_rounds_stops_a_strategist_that_never_says_done() {
    let mut run = new(Some("strategist"), 2);
    let now = Utc::now();
    advance(&mut run, now, &flat_plan);
    for id in ["a", "b", "c", "d"] {
        conclude(&mut run, id, VerdictKind::Valid, "STATUS: ok\n");
        advance(&mut run, now, &flat_plan);
    }
    let spawn = "[{\"id\": \"again\", \"worker\": \"w\"}]\nSTATUS: SPAWN_NEXT\n";
    conclude(&mut run, STRATEGIST_TASK, VerdictKind::Valid, spawn);
    advance(&mut run, now, &flat_plan);
    conclude(&mut run, "again", VerdictKind::Valid, "STATUS: ok\n");
    advance(&mut run, now, &flat_plan);
    conclude(&mut run, STRATEGIST_TASK, VerdictKind::Valid, spawn);
    assert!(published(&advance(&mut run, now, &flat_plan)).is_empty());
    assert_eq!(run.status, WorkflowStatus::MaxRounds);
    assert_eq!(run.rounds.len(), 2);
    assert_eq!(
        run.outcome.as_deref(),
        Some("stopped at max_rounds (2): the strategist still asked for another round")
    );
}

#[test]
fn a_refused_spawn_list_fails_the_run_with_a_dead_letter() {
    let mut run = new(Some("strategist"), 5);
    let now = Utc::now();
    advance(&mut run, now, &flat_plan);
    for id in ["a", "b", "c", "d"] {
        conclude(&mut run, id, VerdictKind::Valid, "STATUS: ok\n");
        advance(&mut run, now, &flat_plan);
    }
    conclude(
        &mut run,
        STRATEGIST_TASK,
        VerdictKind::Valid,
        "[{\"id\": \"x\", \"worker\": \"nope\"}]\nSTATUS: SPAWN_NEXT\n",
    );
    let effects = advance(&mut run, now, &flat_plan);
    assert_eq!(run.status, WorkflowStatus::Failed);
    assert_eq!(
        run.outcome.as_deref(),
        Some(
            "after round 1: SPAWN_NEXT refused: task \"x\" names worker \"nope\", which is not in the registry"
        )
    );
    assert!(matches!(
        &effects[..],
        [Effect::Escalate {
            clarification: false,
            ..
        }]
    ));
}

#[test]
fn a_round_with_every_task_blocked_asks_and_an_answer_runs_it_again() {
    let (tasks, _) = diamond();
    let mut run = new_run(
        Uuid::now_v7(),
        "one",
        Trigger::Manual,
        BTreeMap::new(),
        &tasks[..1],
        vec![vec!["a".to_owned()]],
        None,
        5,
        0,
        Utc::now(),
    );
    let now = Utc::now();
    advance(&mut run, now, &no_plan);
    conclude(&mut run, "a", VerdictKind::Failed, "");
    let effects = advance(&mut run, now, &no_plan);
    assert_eq!(run.status, WorkflowStatus::WaitingForAnswer);
    assert!(matches!(
        &effects[..],
        [Effect::Escalate {
            clarification: true,
            ..
        }]
    ));
    assert!(answer(&mut run, "fixed the input", now));
    assert_eq!(published(&advance(&mut run, now, &no_plan)), ["a"]);
    assert_eq!(
        run.rounds[0].tasks[0].attempts.len(),
        2,
        "a new attempt with its own run id"
    );
    conclude(&mut run, "a", VerdictKind::Valid, "STATUS: ok\n");
    advance(&mut run, now, &no_plan);
    assert_eq!(run.status, WorkflowStatus::Done);
}

#[test]
fn status_lines_are_the_last_non_empty_line() {
    assert_eq!(
        status_line("x\nSTATUS: ok 3\n\n").as_deref(),
        Some("STATUS: ok 3")
    );
    assert_eq!(status_line("STATUS: ok\nmore"), None);
    assert_eq!(status_line("STATUS:"), None);
    assert_eq!(status_line(""), None);
}
