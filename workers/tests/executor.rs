//! The executor against real subprocesses (`/bin/sh`, python3): the
//! environment, stdin, exit statuses, refusals, the process group on
//! timeout and cancellation, output capture and costs, and the RunResult.

#![allow(clippy::unwrap_used)] // Reason: test helpers; a failure here is the test's failure.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loom_protocol::{Outcome, RunCommand, WIRE_VERSION};
use loom_workers::{Execution, Invocation};
use support::{
    GRACE, Harness, alive_after, command, group_is_alive, parse_env, python3, read_pids, worker,
};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn success_with_the_full_environment() {
    let harness = Harness::new();
    let mut worker = worker(&["/bin/sh", "-c", "exec /usr/bin/env"]);
    worker
        .env
        .insert("REPORT_DIR".to_owned(), "/var/lib/loom/reports".to_owned());
    let mut command = command();
    command.params.insert("days".to_owned(), "7".to_owned());

    let invocation = Invocation {
        command: &command,
        worker: &worker,
        attempt: 2,
        enforcement: None,
        secrets: &BTreeMap::new(),
    };
    let execution = harness
        .executor
        .run(invocation, CancellationToken::new())
        .await;

    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    assert_eq!(execution.exit_code, Some(0));
    assert_eq!(execution.exit_signal, None);
    assert_eq!(execution.refused, None);
    let mut env = parse_env(&execution.stdout_tail);
    // Bookkeeping some shells (bash) export; dash exports none of these.
    env.remove("SHLVL");
    env.remove("_");
    let run_dir = harness.executor.run_dir(&command, 2);
    let run_dir = run_dir.to_str().unwrap();
    let expected: BTreeMap<String, String> = [
        ("PATH", harness.executor.settings().path.as_str()),
        ("HOME", run_dir),
        // The shell adds PWD: it shows the working directory is the run directory.
        ("PWD", run_dir),
        ("LANG", harness.executor.settings().lang.as_str()),
        ("TZ", "America/Chicago"),
        ("REPORT_DIR", "/var/lib/loom/reports"),
        ("LOOM_RUN_ID", &command.run_id.to_string()),
        ("LOOM_WORKER", "w"),
        ("LOOM_ATTEMPT", "2"),
        ("LOOM_SCHEDULED_AT", "2026-03-01T10:00:00Z"),
        ("LOOM_TRIGGER", "schedule"),
        ("LOOM_PARAM_DAYS", "7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, expected);
    // The run directory is removed afterwards.
    assert!(!std::path::Path::new(run_dir).exists());
}

#[tokio::test]
async fn the_agents_environment_is_not_inherited() {
    let harness = Harness::new();
    let worker = worker(&["/usr/bin/env"]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded);
    let env = parse_env(&execution.stdout_tail);
    let given = ["PATH", "HOME", "LANG", "TZ"];
    let agents: Vec<String> = std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| !given.contains(&key.as_str()))
        .collect();
    // Otherwise the check below would prove nothing.
    assert!(
        !agents.is_empty(),
        "the test process has no variable of its own"
    );
    let leaked: Vec<&String> = agents.iter().filter(|key| env.contains_key(*key)).collect();
    assert!(leaked.is_empty(), "leaked from the agent: {leaked:?}");
}

#[tokio::test]
async fn a_declared_secret_is_visible_and_an_undeclared_one_is_not() {
    let harness = Harness::new();
    let mut worker = worker(&["/usr/bin/env"]);
    worker.secrets = vec!["HUBSPOT_TOKEN".to_owned()];
    let secrets = BTreeMap::from([
        ("HUBSPOT_TOKEN".to_owned(), "tok-123".to_owned()),
        ("OTHER_TOKEN".to_owned(), "nope".to_owned()),
    ]);
    let execution = harness.run_with(&worker, &command(), None, &secrets).await;
    assert_eq!(execution.outcome, Outcome::Succeeded);
    let env = parse_env(&execution.stdout_tail);
    assert_eq!(
        env.get("HUBSPOT_TOKEN").map(String::as_str),
        Some("tok-123")
    );
    assert!(!env.contains_key("OTHER_TOKEN"));
}

#[tokio::test]
async fn a_missing_secret_is_refused() {
    let harness = Harness::new();
    let mut worker = worker(&["/bin/true"]);
    worker.secrets = vec!["HUBSPOT_TOKEN".to_owned()];
    let command = command();
    let execution = harness.run(&worker, &command).await;
    assert_eq!(execution.outcome, Outcome::Failed);
    assert_eq!(execution.exit_code, None);
    assert_eq!(
        execution.refused.as_deref(),
        Some("secret \"HUBSPOT_TOKEN\" of worker \"w\" is not set in the agent's environment")
    );
    assert!(!harness.executor.run_dir(&command, 1).exists());
}

#[tokio::test]
async fn params_become_mangled_variables_and_the_command_is_on_stdin() {
    let harness = Harness::new();
    let script = "env | grep '^LOOM_PARAM_' | sort; echo ---; cat";
    let worker = worker(&["/bin/sh", "-c", script]);
    let mut command = command();
    for (name, value) in [("days", "7"), ("dry-run", "yes"), ("ünïcode", "ü")] {
        command.params.insert(name.to_owned(), value.to_owned());
    }
    let execution = harness.run(&worker, &command).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    let (params, stdin) = execution.stdout_tail.split_once("---\n").unwrap();
    assert_eq!(
        params,
        "LOOM_PARAM_DAYS=7\nLOOM_PARAM_DRY_RUN=yes\nLOOM_PARAM__N_CODE=ü\n"
    );
    let decoded: RunCommand = serde_json::from_str(stdin).unwrap();
    assert_eq!(decoded, command);
}

#[tokio::test]
async fn non_zero_exits_are_failures_with_their_codes() {
    let harness = Harness::new();
    for code in [1, 75, 78] {
        let worker = worker(&["/bin/sh", "-c", &format!("echo failing >&2; exit {code}")]);
        let execution = harness.run(&worker, &command()).await;
        assert_eq!(execution.outcome, Outcome::Failed);
        assert_eq!(execution.exit_code, Some(code));
        assert_eq!(execution.exit_signal, None);
        assert_eq!(execution.stderr_tail, "failing\n");
        assert_eq!(execution.refused, None);
    }
}

#[tokio::test]
async fn death_by_signal_is_a_failure_with_the_signal() {
    let harness = Harness::new();
    let worker = worker(&["/bin/sh", "-c", "kill -KILL $$"]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Failed);
    assert_eq!(execution.exit_code, None);
    assert_eq!(execution.exit_signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn a_missing_program_is_refused() {
    let harness = Harness::new();
    let worker = worker(&["/nonexistent/loom-test-program", "--flag"]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Failed);
    assert_eq!(execution.exit_code, None);
    let refused = execution.refused.unwrap();
    assert!(
        refused.starts_with(
            "cannot start \"/nonexistent/loom-test-program\" for worker \"w\": No such file"
        ),
        "{refused}"
    );
}

#[tokio::test]
async fn a_program_that_is_not_executable_is_refused() {
    let harness = Harness::new();
    let script = harness.path("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let worker = worker(&[script.to_str().unwrap()]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Failed);
    assert!(execution.refused.unwrap().contains("cannot start"));
}

#[tokio::test]
async fn a_leftover_run_directory_is_replaced() {
    let harness = Harness::new();
    let command = command();
    let dir = harness.executor.run_dir(&command, 1);
    std::fs::create_dir_all(dir.join("old")).unwrap();
    std::fs::write(dir.join("old/stale.txt"), "stale").unwrap();
    let worker = worker(&["/bin/sh", "-c", "ls -A; touch made-here"]);
    let execution = harness.run(&worker, &command).await;
    assert_eq!(execution.outcome, Outcome::Succeeded);
    assert_eq!(execution.stdout_tail, "");
    assert!(!dir.exists());
}

#[tokio::test]
async fn run_directories_are_kept_when_asked() {
    let harness = Harness::with(|settings| settings.keep_run_dirs = true);
    let command = command();
    let worker = worker(&["/bin/sh", "-c", "echo kept > result.txt"]);
    let execution = harness.run(&worker, &command).await;
    assert_eq!(execution.outcome, Outcome::Succeeded);
    let dir = harness.executor.run_dir(&command, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("result.txt")).unwrap(),
        "kept\n"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_a_grandchild() {
    let harness = Harness::new();
    let pids = harness.path("pids");
    let script = "sleep 30 & echo $! > \"$PIDS\"; echo $$ >> \"$PIDS\"; sleep 30";
    let mut worker = worker(&["/bin/sh", "-c", script]);
    worker
        .env
        .insert("PIDS".to_owned(), pids.display().to_string());
    worker.timeout = Duration::from_millis(300);

    let started = Instant::now();
    let execution = harness.run(&worker, &command()).await;
    let elapsed = started.elapsed();

    assert_eq!(execution.outcome, Outcome::TimedOut, "{execution:?}");
    assert_eq!(execution.exit_code, None);
    assert_eq!(execution.exit_signal, Some(libc::SIGTERM));
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let alive = alive_after(&pids, Duration::from_secs(3)).await;
    assert!(alive.is_empty(), "processes {alive:?} outlived the run");
    // The shell is the group leader: its pid is the group id.
    assert!(!group_is_alive(pids[1]));
}

#[tokio::test]
async fn leftovers_are_killed_when_the_main_process_exits() {
    let harness = Harness::new();
    let pids = harness.path("pids");
    // The background sleep keeps stdout open: the run must not wait for it.
    let script = "sleep 30 & echo $! > \"$PIDS\"; echo done";
    let mut worker = worker(&["/bin/sh", "-c", script]);
    worker
        .env
        .insert("PIDS".to_owned(), pids.display().to_string());

    let started = Instant::now();
    let execution = harness.run(&worker, &command()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(execution.outcome, Outcome::Succeeded);
    assert_eq!(execution.stdout_tail, "done\n");
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 1);
    let alive = alive_after(&pids, Duration::from_secs(3)).await;
    assert!(alive.is_empty(), "the background process outlived the run");
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let harness = Harness::new();
    let mut worker = worker(&["/bin/sh", "-c", "trap '' TERM; sleep 30"]);
    worker.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let execution = harness.run(&worker, &command()).await;
    let elapsed = started.elapsed();
    assert_eq!(execution.outcome, Outcome::TimedOut);
    assert_eq!(execution.exit_signal, Some(libc::SIGKILL));
    assert!(elapsed >= Duration::from_millis(300) + GRACE, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn cancellation_terminates_the_run() {
    let harness = Harness::new();
    let worker = worker(&["/bin/sh", "-c", "sleep 30"]);
    let command = command();
    let secrets = BTreeMap::new();
    let invocation = Invocation {
        command: &command,
        worker: &worker,
        attempt: 1,
        enforcement: None,
        secrets: &secrets,
    };
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (execution, ()) = tokio::join!(harness.executor.run(invocation, cancel.clone()), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    assert_eq!(execution.outcome, Outcome::Cancelled, "{execution:?}");
    assert_eq!(execution.exit_signal, Some(libc::SIGTERM));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn dropping_the_run_kills_its_group() {
    let harness = Harness::new();
    let pids = harness.path("pids");
    let script = "sleep 30 & echo $! > \"$PIDS\"; echo $$ >> \"$PIDS\"; sleep 30";
    let mut worker = worker(&["/bin/sh", "-c", script]);
    worker
        .env
        .insert("PIDS".to_owned(), pids.display().to_string());
    let command = command();
    let abandoned =
        tokio::time::timeout(Duration::from_millis(300), harness.run(&worker, &command)).await;
    assert!(abandoned.is_err(), "the run should still have been going");
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let alive = alive_after(&pids, Duration::from_secs(3)).await;
    assert!(
        alive.is_empty(),
        "processes {alive:?} outlived the abandoned run"
    );
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_starts_nothing() {
    let harness = Harness::new();
    let mark = harness.path("mark");
    let mut worker = worker(&["/bin/sh", "-c", "touch \"$MARK\""]);
    worker
        .env
        .insert("MARK".to_owned(), mark.display().to_string());
    let command = command();
    let secrets = BTreeMap::new();
    let invocation = Invocation {
        command: &command,
        worker: &worker,
        attempt: 1,
        enforcement: None,
        secrets: &secrets,
    };
    let cancel = CancellationToken::new();
    cancel.cancel();
    let execution = harness.executor.run(invocation, cancel).await;
    assert_eq!(execution.outcome, Outcome::Cancelled);
    assert_eq!(execution.exit_code, None);
    assert!(!mark.exists());
}

#[tokio::test]
async fn the_stdout_tail_is_bounded_while_the_totals_count_everything() {
    let harness = Harness::with(|settings| {
        settings.stdout_tail_bytes = 1000;
        settings.stderr_tail_bytes = 100;
    });
    // 1 MiB on each stream: a pipe not read concurrently would block.
    let script = "import sys\n\
                  sys.stdout.buffer.write(b'x' * (1 << 20) + b'END')\n\
                  sys.stdout.flush()\n\
                  sys.stderr.buffer.write(b'y' * (1 << 20) + b'ERR')\n";
    let worker = worker(&[python3(), "-c", script]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    assert_eq!(execution.stdout_bytes, (1 << 20) + 3);
    assert_eq!(execution.stderr_bytes, (1 << 20) + 3);
    assert_eq!(execution.stdout_tail.len(), 1000);
    assert!(execution.stdout_tail.ends_with("xxEND"));
    assert_eq!(execution.stderr_tail.len(), 100);
    assert!(execution.stderr_tail.ends_with("yyERR"));
}

#[tokio::test]
async fn a_tail_cut_inside_a_character_starts_at_the_next_one() {
    let harness = Harness::with(|settings| settings.stdout_tail_bytes = 4);
    let worker = worker(&["/bin/sh", "-c", "printf 'aé€'"]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.stdout_tail, "€");
    assert_eq!(execution.stdout_bytes, 6);
}

#[tokio::test]
async fn cost_lines_are_summed() {
    let harness = Harness::new();
    let script = "echo 'LOOM_COST: {\"usd\": 0.12, \"tokens\": 3400}'; \
                  echo working; \
                  echo 'LOOM_COST: {\"usd\": 0.5}'; \
                  echo 'LOOM_COST: garbage'; \
                  echo 'STATUS: ok'";
    let worker = worker(&["/bin/sh", "-c", script]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded);
    assert_eq!(execution.cost.len(), 2, "{:?}", execution.cost);
    assert!((execution.cost["usd"] - 0.62).abs() < 1e-9);
    assert!((execution.cost["tokens"] - 3400.0).abs() < 1e-9);
}

#[tokio::test]
async fn a_worker_that_does_not_read_stdin_still_succeeds() {
    let harness = Harness::new();
    let worker = worker(&["/bin/true"]);
    let mut command = command();
    // Far more than a pipe buffer, so the write cannot complete.
    for name in ["a", "b", "c", "d"] {
        command
            .params
            .insert(name.to_owned(), "z".repeat(100 * 1024));
    }
    let execution = harness.run(&worker, &command).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
}

#[tokio::test]
async fn a_param_too_large_for_the_environment_is_refused() {
    let harness = Harness::new();
    let worker = worker(&["/bin/true"]);
    let mut command = command();
    // Linux caps one environment string at 128 KiB.
    command.params.insert("big".to_owned(), "z".repeat(1 << 20));
    let execution = harness.run(&worker, &command).await;
    assert_eq!(execution.outcome, Outcome::Failed);
    let refused = execution.refused.unwrap();
    assert!(
        refused.starts_with("cannot start \"/bin/true\" for worker \"w\": Argument list too long"),
        "{refused}"
    );
}

#[test]
fn into_result_fills_every_field() {
    let command = command();
    let started_at = support::scheduled_at();
    let finished_at = started_at + chrono::Duration::milliseconds(1500);
    let execution = Execution {
        outcome: Outcome::Failed,
        exit_code: Some(75),
        exit_signal: None,
        refused: None,
        setup_error: None,
        started_at,
        finished_at,
        stdout_tail: "out".to_owned(),
        stderr_tail: "err".to_owned(),
        stdout_bytes: 10,
        stderr_bytes: 20,
        cpu_ms: 30,
        max_rss_kb: 40,
        output_limit_exceeded: false,
        bundle_modified: false,
        cost: BTreeMap::from([("usd".to_owned(), 0.5)]),
    };
    assert_eq!(execution.duration_ms(), 1500);
    let result = execution.into_result(&command, 3, "agent-1", Some("ab".repeat(32)));
    let expected = loom_protocol::RunResult {
        v: WIRE_VERSION,
        run_id: command.run_id,
        worker: "w".to_owned(),
        attempt: 3,
        agent_id: "agent-1".to_owned(),
        started_at,
        finished_at,
        outcome: Outcome::Failed,
        exit_code: Some(75),
        stdout_tail: "out".to_owned(),
        stderr_tail: "err".to_owned(),
        stdout_bytes: 10,
        stderr_bytes: 20,
        cpu_ms: 30,
        max_rss_kb: 40,
        enforcement_digest: Some("ab".repeat(32)),
        cost: BTreeMap::from([("usd".to_owned(), 0.5)]),
        last_attempt: false,
    };
    assert_eq!(result, expected);
}

#[tokio::test]
async fn a_refused_runs_result_says_why_in_its_stderr_tail() {
    let harness = Harness::new();
    let mut worker = worker(&["/bin/true"]);
    worker.secrets = vec!["HUBSPOT_TOKEN".to_owned()];
    let command = command();
    let execution = harness.run(&worker, &command).await;
    let refused = execution.refused.clone().unwrap();
    let result = execution.into_result(&command, 1, "agent-1", None);
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.exit_code, None);
    assert_eq!(result.stderr_tail, refused);
}

#[tokio::test]
async fn a_run_directory_is_emptied_and_reused_by_the_next_attempt() {
    let harness = Harness::new();
    // The first worker fills its directory, hides a file in a subdirectory
    // it makes unwritable, and takes every permission off the directory.
    let messy = worker(&[
        "/bin/sh",
        "-c",
        "stat -c %i .; mkdir -p sub/deeper; echo x > sub/deeper/f; echo y > .hidden; \
         chmod 0500 sub; chmod 0 .",
    ]);
    let first = harness.run(&messy, &command()).await;
    assert_eq!(first.outcome, Outcome::Succeeded, "{}", first.stderr_tail);
    let looker = worker(&["/bin/sh", "-c", "stat -c '%i %a' .; ls -A"]);
    let second_command = command();
    let second = harness.run(&looker, &second_command).await;
    assert_eq!(second.outcome, Outcome::Succeeded, "{}", second.stderr_tail);

    // The same directory (by inode), empty, with the run directory's mode.
    assert_eq!(
        second.stdout_tail,
        format!("{} 700\n", first.stdout_tail.trim())
    );
    assert!(!harness.executor.run_dir(&second_command, 1).exists());
    // Between runs it waits in the run root as a spare, empty.
    let spares: Vec<_> = std::fs::read_dir(harness.path("runs"))
        .unwrap()
        .map(|item| item.unwrap().path())
        .collect();
    assert_eq!(spares.len(), 1, "{spares:?}");
    assert_eq!(std::fs::read_dir(&spares[0]).unwrap().count(), 0);
}

#[tokio::test]
async fn a_run_directory_replaced_by_a_link_is_not_followed_when_emptied() {
    let harness = Harness::new();
    let outside = harness.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), "mine").unwrap();
    let mut worker = worker(&[
        "/bin/sh",
        "-c",
        "d=$(pwd); cd /; rmdir \"$d\" && ln -s \"$OUTSIDE\" \"$d\"",
    ]);
    worker
        .env
        .insert("OUTSIDE".to_owned(), outside.display().to_string());
    let command = command();
    let execution = harness.run(&worker, &command).await;
    assert_eq!(
        execution.outcome,
        Outcome::Succeeded,
        "{}",
        execution.stderr_tail
    );

    assert_eq!(
        std::fs::read_to_string(outside.join("keep.txt")).unwrap(),
        "mine"
    );
    // The link is gone and no spare was kept.
    assert!(std::fs::symlink_metadata(harness.executor.run_dir(&command, 1)).is_err());
    assert_eq!(std::fs::read_dir(harness.path("runs")).unwrap().count(), 0);
}

#[tokio::test]
async fn spares_of_stopped_agents_are_removed_at_start() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("runs");
    // Pid 1 is running; a pid above the kernel's largest is not; this
    // process's own pid is an earlier process's (as after a restart in a
    // container).
    let own = std::process::id();
    for name in [
        ".spare-1-0".to_owned(),
        ".spare-4194305-0".to_owned(),
        format!(".spare-{own}-7"),
        "0190-run-1".to_owned(),
    ] {
        std::fs::create_dir_all(root.join(name)).unwrap();
    }
    std::fs::write(root.join(".spare-4194305-0/left.txt"), "left").unwrap();
    let _executor = loom_workers::Executor::new(loom_workers::ExecutorSettings {
        run_root: root.clone(),
        ..loom_workers::ExecutorSettings::default()
    });
    let mut left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, [".spare-1-0", "0190-run-1"]);
}

#[tokio::test]
async fn without_spares_every_run_directory_is_removed() {
    let harness = Harness::with(|settings| settings.spare_run_dirs = 0);
    let worker = worker(&["/bin/sh", "-c", "echo x > f"]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded);
    assert_eq!(std::fs::read_dir(harness.path("runs")).unwrap().count(), 0);
}
