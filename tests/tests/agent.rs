//! The agent against a real nats-server and real worker processes: results,
//! retries by NAK with backoff, exit codes 75 and 78, timeouts that end the
//! whole process group, output caps, the cleared environment and secrets,
//! sharing runs between agents, agents killed or drained mid-run,
//! cancellation, enforcement bundles, and runs published by hand.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_protocol::{DeadLetter, DeadLetterReason, Outcome, RunResult, VerdictKind};
use loom_tests::{Mesh, Role, eventually, script};

/// The agent settings of every test: a short ack wait, so a lost delivery
/// moves on quickly, yet long enough for progress acks on a busy machine.
const AGENT: &str = "[agent]\nack_wait = \"5s\"\n";

/// A mesh whose `loom.toml` is `config`, with `@DIR@` replaced by the mesh
/// directory; `setup` writes the files the config names (scripts, bundles)
/// before the topology is put in place.
async fn mesh_with(config: &str, setup: impl FnOnce(&Path)) -> Mesh {
    let mesh = Mesh::new("").await;
    setup(mesh.dir.path());
    mesh.rewrite_config(&config.replace("@DIR@", &mesh.dir.path().display().to_string()));
    let init = mesh.loom(&["init"]);
    assert!(
        init.status.success(),
        "loom init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    mesh
}

/// Starts a validator and waits until it is ready.
async fn validator(mesh: &Mesh) -> Role {
    let mut role = mesh.spawn(&["validator"], &[]);
    role.ready().await;
    role
}

/// Starts an agent with id `id` (and `envs`) and waits until it is ready.
async fn agent(mesh: &Mesh, id: &str, args: &[&str], envs: &[(&str, &str)]) -> Role {
    let mut all_args = vec!["agent"];
    all_args.extend_from_slice(args);
    let mut all_envs = vec![("LOOM_AGENT__ID", id)];
    all_envs.extend_from_slice(envs);
    let mut role = mesh.spawn(&all_args, &all_envs);
    role.ready().await;
    role
}

/// Every result of `run_id`, by attempt.
async fn results_of(mesh: &Mesh, worker: &str, run_id: uuid::Uuid) -> Vec<RunResult> {
    let mut results: Vec<RunResult> = mesh
        .results(worker)
        .await
        .into_iter()
        .filter(|r| r.run_id == run_id)
        .collect();
    results.sort_by_key(|r| r.attempt);
    results
}

/// Waits for the dead letters of `run_id`, then returns them all.
async fn dead_letters_of(mesh: &Mesh, worker: &str, run_id: uuid::Uuid) -> Vec<DeadLetter> {
    eventually(
        Duration::from_secs(15),
        &format!("the dead letter of run {run_id}"),
        || async {
            let letters: Vec<DeadLetter> = mesh
                .dead_letters(worker)
                .await
                .into_iter()
                .filter(|d| d.run_id == run_id)
                .collect();
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await
}

/// Waits until `path` exists.
async fn file_appears(path: &Path, within: Duration) {
    eventually(within, &format!("{}", path.display()), || async {
        path.exists().then_some(())
    })
    .await;
}

/// Whether process `pid` is gone: no such process, a zombie, or the pid
/// now belongs to something other than `sleep`.
fn process_gone(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return true;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("X");
    comm != "sleep" || matches!(state, "Z" | "X" | "x")
}

/// The value of `NAME=` on its own line of `text`.
fn variable<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test]
async fn a_successful_run_is_valid_with_one_attempt_by_this_agent() {
    let config = format!("{AGENT}[workers.ok]\ncommand = [\"/bin/sh\", \"-c\", \"echo hello\"]\n");
    let mesh = mesh_with(&config, |_| {}).await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("ok", &[]);
    let verdict = mesh.verdict_of("ok", run_id, Duration::from_secs(30)).await;
    assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    assert_eq!(verdict.attempts, 1);
    let results = results_of(&mesh, "ok", run_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    let result = &results[0];
    assert_eq!(result.attempt, 1);
    assert_eq!(result.agent_id, "agent-one");
    assert_eq!(result.outcome, Outcome::Succeeded);
    assert_eq!(result.exit_code, Some(0));
    assert!(result.started_at <= result.finished_at, "{result:?}");
    assert_eq!(result.stdout_tail, "hello\n");
    assert_eq!(result.stdout_bytes, 6);
}

#[tokio::test]
async fn a_failing_run_is_retried_with_backoff_then_dead_lettered() {
    let config = format!(
        "{AGENT}[workers.flaky]\ncommand = [\"/bin/sh\", \"-c\", \"echo boom >&2; exit 1\"]\n\
         retries = 2\nbackoff = {{ initial = \"1s\", max = \"5s\", factor = 2.0, jitter = 0.0 }}\n"
    );
    let mesh = mesh_with(&config, |_| {}).await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("flaky", &[]);
    let verdict = mesh
        .verdict_of("flaky", run_id, Duration::from_secs(40))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Failed, "{}", verdict.reason);
    assert_eq!(verdict.attempts, 3);
    assert!(verdict.reason.contains("exited 1"), "{}", verdict.reason);

    let results = results_of(&mesh, "flaky", run_id).await;
    let attempts: Vec<u32> = results.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "{results:?}");
    for result in &results {
        assert_eq!(result.outcome, Outcome::Failed);
        assert_eq!(result.exit_code, Some(1));
        assert_eq!(result.stderr_tail, "boom\n");
    }
    let first_gap = results[1].started_at - results[0].started_at;
    let second_gap = results[2].started_at - results[1].started_at;
    assert!(
        first_gap >= chrono::Duration::seconds(1),
        "the first retry started {first_gap} after the first attempt"
    );
    assert!(
        second_gap >= chrono::Duration::seconds(2),
        "the second retry started {second_gap} after the first retry"
    );

    let letters = dead_letters_of(&mesh, "flaky", run_id).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadLetterReason::Failed);
    let summaries: Vec<u32> = letters[0].attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(summaries, [1, 2, 3]);
}

#[tokio::test]
async fn exit_75_is_retried_and_exit_78_is_not() {
    let config = format!(
        "{AGENT}[workers.tempfail]\ncommand = [\"/bin/sh\", \"-c\", \"exit 75\"]\nretries = 1\n\
         backoff = {{ initial = \"1s\", max = \"1s\", factor = 1.0, jitter = 0.0 }}\n\
         [workers.config-error]\ncommand = [\"/bin/sh\", \"-c\", \"exit 78\"]\nretries = 2\n\
         backoff = {{ initial = \"1s\", max = \"1s\", factor = 1.0, jitter = 0.0 }}\n"
    );
    let mesh = mesh_with(&config, |_| {}).await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let tempfail = mesh.trigger("tempfail", &[]);
    let permanent = mesh.trigger("config-error", &[]);

    let verdict = mesh
        .verdict_of("tempfail", tempfail, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Failed, "{}", verdict.reason);
    let results = results_of(&mesh, "tempfail", tempfail).await;
    let attempts: Vec<(u32, Option<i32>)> =
        results.iter().map(|r| (r.attempt, r.exit_code)).collect();
    assert_eq!(attempts, [(1, Some(75)), (2, Some(75))]);
    let letters = dead_letters_of(&mesh, "tempfail", tempfail).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Failed);
    assert_eq!(letters[0].attempts.len(), 2);

    let verdict = mesh
        .verdict_of("config-error", permanent, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Failed, "{}", verdict.reason);
    assert_eq!(verdict.attempts, 1);
    let letters = dead_letters_of(&mesh, "config-error", permanent).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Failed);
    assert_eq!(letters[0].attempts.len(), 1);
    // Longer than the backoff: a retry would have reported by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let results = results_of(&mesh, "config-error", permanent).await;
    let attempts: Vec<(u32, Option<i32>)> =
        results.iter().map(|r| (r.attempt, r.exit_code)).collect();
    assert_eq!(attempts, [(1, Some(78))], "exit 78 is never retried");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let config = format!(
        "{AGENT}[workers.slow]\ncommand = [\"./slow.sh\"]\ntimeout = \"1s\"\nretries = 0\n\
         env = {{ PID_FILE = \"@DIR@/grandchild.pid\" }}\n"
    );
    let mesh = mesh_with(&config, |dir| {
        script(
            dir,
            "slow.sh",
            "sleep 300 &\necho $! > \"$PID_FILE.tmp\"\nmv \"$PID_FILE.tmp\" \"$PID_FILE\"\nsleep 60",
        );
    })
    .await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("slow", &[]);
    let verdict = mesh
        .verdict_of("slow", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::TimedOut, "{}", verdict.reason);
    let results = results_of(&mesh, "slow", run_id).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::TimedOut);

    let pid: i32 = std::fs::read_to_string(mesh.path("grandchild.pid"))
        .expect("the worker wrote its grandchild's pid")
        .trim()
        .parse()
        .expect("a pid");
    eventually(
        Duration::from_secs(5),
        "the grandchild to be gone",
        || async { process_gone(pid).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn output_over_max_bytes_is_invalid_and_the_tail_is_bounded() {
    let config = format!(
        "{AGENT}[workers.chatty]\ncommand = [\"./chatty.sh\"]\n[workers.chatty.output]\nmax_bytes = 1000\n"
    );
    let mesh = mesh_with(&config, |dir| {
        script(dir, "chatty.sh", "head -c 300000 /dev/zero | tr '\\000' x");
    })
    .await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("chatty", &[]);
    let verdict = mesh
        .verdict_of("chatty", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::InvalidOutput);
    assert!(
        verdict.reason.contains("300000 bytes"),
        "the reason names the byte count: {}",
        verdict.reason
    );
    let results = results_of(&mesh, "chatty", run_id).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::Succeeded);
    assert_eq!(results[0].stdout_bytes, 300_000);
    let kept = results[0].stdout_tail.len();
    assert!(
        kept > 0 && kept < 300_000 && kept <= 256 * 1024,
        "the stdout tail is bounded ({kept} bytes)"
    );
}

#[tokio::test]
async fn a_worker_sees_only_its_declared_environment_and_secrets() {
    let config = format!(
        "{AGENT}[workers.with-secret]\ncommand = [\"/usr/bin/env\"]\nsecrets = [\"API_TOKEN\"]\n\
         [workers.without-secret]\ncommand = [\"/usr/bin/env\"]\n"
    );
    let mesh = mesh_with(&config, |_| {}).await;
    let _validator = validator(&mesh).await;
    let _agent = agent(
        &mesh,
        "agent-one",
        &[],
        &[("LEAKY", "1"), ("API_TOKEN", "s3cret")],
    )
    .await;

    let with = mesh.trigger("with-secret", &[]);
    let without = mesh.trigger("without-secret", &[]);
    for (worker, run_id) in [("with-secret", with), ("without-secret", without)] {
        let verdict = mesh
            .verdict_of(worker, run_id, Duration::from_secs(30))
            .await;
        assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    }

    let seen = results_of(&mesh, "with-secret", with).await[0]
        .stdout_tail
        .clone();
    assert_eq!(variable(&seen, "API_TOKEN"), Some("s3cret"), "{seen}");
    assert_eq!(variable(&seen, "LEAKY"), None, "{seen}");
    assert_eq!(
        variable(&seen, "LOOM_RUN_ID"),
        Some(with.to_string().as_str())
    );
    assert_eq!(variable(&seen, "LOOM_WORKER"), Some("with-secret"));
    assert_eq!(variable(&seen, "TZ"), Some("UTC"));

    let seen = results_of(&mesh, "without-secret", without).await[0]
        .stdout_tail
        .clone();
    assert_eq!(variable(&seen, "API_TOKEN"), None, "{seen}");
    assert_eq!(variable(&seen, "LEAKY"), None, "{seen}");
    assert_eq!(
        variable(&seen, "LOOM_RUN_ID"),
        Some(without.to_string().as_str())
    );
    assert_eq!(variable(&seen, "LOOM_WORKER"), Some("without-secret"));
    assert_eq!(variable(&seen, "TZ"), Some("UTC"));
}

#[tokio::test]
async fn three_agents_share_300_runs_and_each_runs_once() {
    const RUNS: usize = 300;
    let config = format!(
        "{AGENT}[workers.count]\ncommand = [\"./count.sh\"]\noverlap = \"allow\"\nconcurrency = 8\n\
         env = {{ OUT = \"@DIR@/ran.txt\" }}\n"
    );
    let mesh = mesh_with(&config, |dir| {
        script(
            dir,
            "count.sh",
            "printf '%s\\n' \"$LOOM_RUN_ID\" >> \"$OUT\"",
        );
    })
    .await;
    let _validator = validator(&mesh).await;
    let mut agents = Vec::new();
    for id in ["agent-a", "agent-b", "agent-c"] {
        agents.push(agent(&mesh, id, &["--concurrency", "4"], &[]).await);
    }

    for n in 0..RUNS {
        mesh.publish_raw("count", format!(r#"{{"params":{{"n":"{n}"}}}}"#).as_bytes())
            .await;
    }
    let valid = mesh
        .verdicts_at_least("count", RUNS, Duration::from_secs(120))
        .await;
    assert!(
        valid.iter().all(|v| v.verdict == VerdictKind::Valid),
        "{:?}",
        valid.iter().find(|v| v.verdict != VerdictKind::Valid)
    );
    let verdict_ids: BTreeSet<uuid::Uuid> = valid.iter().map(|v| v.run_id).collect();
    assert_eq!(verdict_ids.len(), RUNS, "one verdict per run");

    let ran = std::fs::read_to_string(mesh.path("ran.txt")).expect("ran.txt");
    let lines: Vec<&str> = ran.lines().collect();
    let distinct: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(distinct.len(), RUNS, "every run ran");
    assert_eq!(lines.len(), RUNS, "no run ran twice");
    let ran_ids: BTreeSet<uuid::Uuid> = distinct
        .iter()
        .map(|l| l.parse().expect("a run id"))
        .collect();
    assert_eq!(
        ran_ids, verdict_ids,
        "the runs that ran are the runs judged"
    );

    let results = mesh.results("count").await;
    assert_eq!(results.len(), RUNS);
    assert!(results.iter().all(|r| r.attempt == 1));
    let agent_ids: BTreeSet<&str> = results.iter().map(|r| r.agent_id.as_str()).collect();
    assert!(
        agent_ids.len() >= 2,
        "runs are shared between agents: {agent_ids:?}"
    );
}

/// With a backlog, an agent keeps exactly its `--concurrency` runs going: it
/// asks for a run whenever a slot is free, never for more than are free.
/// Each run counts the runs going when it starts (its own marker included),
/// which can only undercount, never overcount.
#[tokio::test]
async fn an_agent_runs_as_many_runs_at_once_as_its_slots_and_no_more() {
    const RUNS: usize = 12;
    let config = format!(
        "{AGENT}[workers.slow]\ncommand = [\"./slow.sh\"]\noverlap = \"allow\"\nconcurrency = 16\n\
         env = {{ OUT = \"@DIR@\" }}\n"
    );
    let mesh = mesh_with(&config, |dir| {
        std::fs::create_dir(dir.join("running")).expect("running/");
        script(
            dir,
            "slow.sh",
            "touch \"$OUT/running/$LOOM_RUN_ID\"\n\
             ls \"$OUT/running\" | wc -l >> \"$OUT/counts.txt\"\n\
             sleep 0.3\n\
             rm \"$OUT/running/$LOOM_RUN_ID\"",
        );
    })
    .await;
    let _validator = validator(&mesh).await;
    for _ in 0..RUNS {
        mesh.publish_raw("slow", b"").await;
    }
    let _agent = agent(&mesh, "agent-slots", &["--concurrency", "2"], &[]).await;
    let verdicts = mesh
        .verdicts_at_least("slow", RUNS, Duration::from_secs(60))
        .await;
    assert!(verdicts.iter().all(|v| v.verdict == VerdictKind::Valid));
    let counts = std::fs::read_to_string(mesh.path("counts.txt")).expect("counts.txt");
    let counts: Vec<usize> = counts
        .lines()
        .map(|line| line.trim().parse().expect("a count"))
        .collect();
    assert_eq!(counts.len(), RUNS, "every run ran once");
    assert_eq!(counts.iter().max(), Some(&2), "runs at once: {counts:?}");
}

#[tokio::test]
async fn a_run_of_a_killed_agent_is_completed_by_another() {
    // A 2 s ack wait: the killed agent's progress acks stop, and the run moves on.
    let config = "[agent]\nack_wait = \"2s\"\n[workers.long]\ncommand = [\"./long.sh\"]\n\
                  env = { MARK = \"@DIR@/started\" }\n";
    let mesh = mesh_with(config, |dir| {
        script(
            dir,
            "long.sh",
            "touch \"$MARK.$LOOM_ATTEMPT\"\nsleep 3\necho done",
        );
    })
    .await;
    let _validator = validator(&mesh).await;
    let mut first = agent(&mesh, "agent-a", &[], &[]).await;

    let run_id = mesh.trigger("long", &[]);
    file_appears(&mesh.path("started.1"), Duration::from_secs(20)).await;
    first.kill();
    let _second = agent(&mesh, "agent-b", &[], &[]).await;

    let verdict = mesh
        .verdict_of("long", run_id, Duration::from_secs(40))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    let results = results_of(&mesh, "long", run_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].attempt, 2);
    assert_eq!(results[0].agent_id, "agent-b");
    assert_eq!(results[0].outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn a_drained_agent_hands_its_run_back_at_once() {
    // A long ack wait: a run handed back at once is not one that waited for it.
    let config = "[agent]\nack_wait = \"20s\"\n[workers.long]\ncommand = [\"./long.sh\"]\n\
                  env = { MARK = \"@DIR@/started\" }\n";
    let mesh = mesh_with(config, |dir| {
        script(
            dir,
            "long.sh",
            "touch \"$MARK.$LOOM_ATTEMPT\"\nif [ \"$LOOM_ATTEMPT\" = 1 ]; then sleep 20; fi\necho done",
        );
    })
    .await;
    let _validator = validator(&mesh).await;
    let mut first = agent(
        &mesh,
        "agent-a",
        &[],
        &[("LOOM_AGENT__DRAIN_TIMEOUT", "1s")],
    )
    .await;
    let run_id = mesh.trigger("long", &[]);
    file_appears(&mesh.path("started.1"), Duration::from_secs(20)).await;
    // The second agent starts once the first holds the run (one run at a
    // time for this worker), so the first attempt is the first agent's.
    let _second = agent(&mesh, "agent-b", &[], &[]).await;

    let stopping = Instant::now();
    let status = first.stop(Duration::from_secs(30));
    let exited_at = Utc::now();
    assert!(
        status.success(),
        "the agent exits 0: {status}\n{}",
        first.log()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the drain took {:?} with a 1 s drain timeout",
        stopping.elapsed()
    );

    let verdict = mesh
        .verdict_of("long", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    let results = results_of(&mesh, "long", run_id).await;
    assert_eq!(
        results.len(),
        1,
        "the interrupted attempt has no result: {results:?}"
    );
    let result = &results[0];
    assert_eq!(result.attempt, 2);
    assert_eq!(result.agent_id, "agent-b");
    let delay = result.started_at - exited_at;
    assert!(
        delay < chrono::Duration::seconds(8),
        "attempt 2 started {delay} after the first agent exited; the ack wait is 20 s"
    );
}

#[tokio::test]
async fn a_run_that_ends_within_the_drain_timeout_completes() {
    let config = format!(
        "{AGENT}[workers.short]\ncommand = [\"./short.sh\"]\nenv = {{ MARK = \"@DIR@/started\" }}\n"
    );
    let mesh = mesh_with(&config, |dir| {
        script(
            dir,
            "short.sh",
            "touch \"$MARK.$LOOM_ATTEMPT\"\nsleep 2\necho done",
        );
    })
    .await;
    let _validator = validator(&mesh).await;
    let mut first = agent(
        &mesh,
        "agent-a",
        &[],
        &[("LOOM_AGENT__DRAIN_TIMEOUT", "20s")],
    )
    .await;
    let run_id = mesh.trigger("short", &[]);
    file_appears(&mesh.path("started.1"), Duration::from_secs(20)).await;
    let status = first.stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "the agent exits 0: {status}\n{}",
        first.log()
    );

    let verdict = mesh
        .verdict_of("short", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    let results = results_of(&mesh, "short", run_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].attempt, 1);
    assert_eq!(results[0].agent_id, "agent-a");
    assert_eq!(results[0].outcome, Outcome::Succeeded);
    assert_eq!(results[0].stdout_tail, "done\n");
}

#[tokio::test]
async fn a_cancelled_run_stops_and_is_not_retried() {
    let config = format!(
        "{AGENT}[workers.sleepy]\ncommand = [\"./sleepy.sh\"]\nretries = 2\n\
         backoff = {{ initial = \"1s\", max = \"1s\", factor = 1.0, jitter = 0.0 }}\n\
         env = {{ MARK = \"@DIR@/started\" }}\n"
    );
    let mesh = mesh_with(&config, |dir| {
        script(dir, "sleepy.sh", "touch \"$MARK.$LOOM_ATTEMPT\"\nsleep 60");
    })
    .await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("sleepy", &[]);
    file_appears(&mesh.path("started.1"), Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(10),
        "the validator to know the run",
        || async { mesh.run_state("sleepy", run_id).await },
    )
    .await;
    let cancel = mesh.loom(&[
        "cancel",
        &run_id.to_string(),
        "--reason",
        "the test does not need it",
    ]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let cancelled = Instant::now();
    let verdict = mesh
        .verdict_of("sleepy", run_id, Duration::from_secs(20))
        .await;
    assert!(
        cancelled.elapsed() < Duration::from_secs(10),
        "the verdict took {:?}",
        cancelled.elapsed()
    );
    assert_eq!(
        verdict.verdict,
        VerdictKind::Cancelled,
        "{}",
        verdict.reason
    );
    assert!(
        verdict.reason.contains("the test does not need it"),
        "{}",
        verdict.reason
    );
    let results = results_of(&mesh, "sleepy", run_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].outcome, Outcome::Cancelled);
    assert!(
        results[0]
            .stderr_tail
            .ends_with("cancelled: the test does not need it"),
        "{:?}",
        results[0].stderr_tail
    );
    // Longer than the backoff: a retry would have started by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !mesh.path("started.2").exists(),
        "a cancelled run is not retried"
    );
    assert_eq!(results_of(&mesh, "sleepy", run_id).await.len(), 1);
}

/// Writes the bundle `bundles/standard` in `dir`.
fn write_bundle(dir: &Path) {
    let bundle = dir.join("bundles/standard");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(bundle.join("rules.txt"), "never delete a document\n").expect("rules");
    std::fs::write(bundle.join("limits.toml"), "open_files = 64\n").expect("limits");
}

#[tokio::test]
async fn a_bundle_never_published_fails_closed() {
    let config = format!(
        "{AGENT}[enforcement]\ndir = \"bundles\"\n[workers.enforced]\n\
         command = [\"/bin/sh\", \"-c\", \"echo ran\"]\nenforcement = \"standard\"\nretries = 0\n"
    );
    let mesh = mesh_with(&config, write_bundle).await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("enforced", &[]);
    let verdict = mesh
        .verdict_of("enforced", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Failed, "{}", verdict.reason);
    let results = results_of(&mesh, "enforced", run_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].outcome, Outcome::EnforcementUnavailable);
    assert_eq!(results[0].stdout_tail, "", "the worker never ran");
    assert!(
        results[0].stderr_tail.contains("has not been published"),
        "{}",
        results[0].stderr_tail
    );
    let letters = dead_letters_of(&mesh, "enforced", run_id).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::EnforcementUnavailable);
}

#[tokio::test]
async fn a_pushed_bundle_is_loaded_for_the_run() {
    let config = format!(
        "{AGENT}[enforcement]\ndir = \"bundles\"\n[workers.enforced]\ncommand = [\"./enforced.sh\"]\n\
         enforcement = \"standard\"\nretries = 0\n"
    );
    let mesh = mesh_with(&config, |dir| {
        write_bundle(dir);
        script(
            dir,
            "enforced.sh",
            "cat \"$LOOM_ENFORCEMENT_DIR/rules.txt\"\necho \"DIGEST=$LOOM_ENFORCEMENT_DIGEST\"\necho \"NOFILE=$(ulimit -n)\"\necho \"UID=$(id -u)\"\n\
             if [ \"$(id -u)\" != 0 ]; then\n\
             if (echo tampered >> \"$LOOM_ENFORCEMENT_DIR/rules.txt\") 2>/dev/null; then echo WRITE=allowed; else echo WRITE=denied; fi\n\
             fi",
        );
    })
    .await;
    let push = mesh.loom(&["enforcement", "push", "--json"]);
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let pushed: serde_json::Value = serde_json::from_slice(&push.stdout).expect("JSON");
    let digest = pushed
        .as_array()
        .and_then(|bundles| bundles.iter().find(|b| b["name"] == "standard"))
        .and_then(|bundle| bundle["digest"].as_str())
        .unwrap_or_else(|| panic!("no digest of bundle standard in {pushed}"))
        .to_owned();
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    let run_id = mesh.trigger("enforced", &[]);
    let verdict = mesh
        .verdict_of("enforced", run_id, Duration::from_secs(30))
        .await;
    assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    let results = results_of(&mesh, "enforced", run_id).await;
    assert_eq!(results.len(), 1, "{results:?}");
    let result = &results[0];
    assert_eq!(result.enforcement_digest.as_deref(), Some(digest.as_str()));
    let seen = &result.stdout_tail;
    assert!(
        seen.starts_with("never delete a document\n"),
        "the worker reads the rules: {seen}"
    );
    assert_eq!(variable(seen, "DIGEST"), Some(digest.as_str()), "{seen}");
    assert_eq!(variable(seen, "NOFILE"), Some("64"), "{seen}");
    // Root writes anyway (the copy is then reported modified); others cannot.
    if variable(seen, "UID") != Some("0") {
        assert_eq!(variable(seen, "WRITE"), Some("denied"), "{seen}");
    }
}

#[tokio::test]
async fn runs_published_by_hand_run_with_stable_ids() {
    let config = format!("{AGENT}[workers.report]\ncommand = [\"/usr/bin/env\"]\n");
    let mesh = mesh_with(&config, |_| {}).await;
    let _validator = validator(&mesh).await;
    let _agent = agent(&mesh, "agent-one", &[], &[]).await;

    mesh.publish_raw("report", b"").await;
    mesh.publish_raw("report", br#"{"params":{"days":"7"}}"#)
        .await;
    let verdicts = mesh
        .verdicts_at_least("report", 2, Duration::from_secs(30))
        .await;
    assert_eq!(verdicts.len(), 2);
    for verdict in &verdicts {
        assert_eq!(verdict.verdict, VerdictKind::Valid, "{}", verdict.reason);
    }
    let results = mesh.results("report").await;
    assert_eq!(results.len(), 2, "{results:?}");
    let with_days: Vec<&RunResult> = results
        .iter()
        .filter(|r| variable(&r.stdout_tail, "LOOM_PARAM_DAYS") == Some("7"))
        .collect();
    assert_eq!(with_days.len(), 1, "only the JSON run has the param");
    for result in &results {
        assert_eq!(
            variable(&result.stdout_tail, "LOOM_TRIGGER"),
            Some("manual")
        );
        assert_eq!(
            variable(&result.stdout_tail, "LOOM_RUN_ID"),
            Some(result.run_id.to_string().as_str())
        );
        let state = mesh
            .run_state("report", result.run_id)
            .await
            .unwrap_or_else(|| panic!("no run state for {}", result.run_id));
        assert_eq!(state.run_id, result.run_id);
        assert!(
            verdicts.iter().any(|v| v.run_id == result.run_id),
            "the verdict is of the run that ran"
        );
    }
}
