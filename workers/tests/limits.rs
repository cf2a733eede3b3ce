//! Resource limits and resource usage against real subprocesses: the
//! bundle's rlimits (CPU, address space, open files), its output cap, the
//! `allowed_env` list, and the CPU time and peak memory read from `wait4`.

#![allow(clippy::unwrap_used)] // Reason: test helpers; a failure here is the test's failure.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loom_protocol::Outcome;
use support::{Harness, command, python3, worker};

#[tokio::test]
async fn rlimit_cpu_stops_a_busy_loop() {
    let harness = Harness::new();
    let bundle = harness.bundle(&[("limits.toml", "cpu_seconds = 1\n", false)]);
    let worker = worker(&[python3(), "-c", "while True: pass"]);
    let execution = harness
        .run_with(&worker, &command(), Some(&bundle), &BTreeMap::new())
        .await;
    assert_eq!(execution.outcome, Outcome::Failed, "{execution:?}");
    assert!(
        matches!(execution.exit_signal, Some(libc::SIGXCPU | libc::SIGKILL)),
        "{execution:?}"
    );
    // Not `cpu_ms >= 1000`: on this VM, under contention, rusage has been
    // seen reporting ~560 ms for a process the kernel stopped at its 1 s
    // RLIMIT_CPU. The signal is what this test is about.
    assert!(execution.cpu_ms > 0, "{execution:?}");
}

#[tokio::test]
async fn rlimit_as_makes_a_large_allocation_fail() {
    let harness = Harness::new();
    let bundle = harness.bundle(&[("limits.toml", "memory_bytes = 268435456\n", false)]);
    let script = "try:\n    b = bytearray(1 << 30)\n    print('allocated')\nexcept MemoryError:\n    print('MemoryError')\n";
    let worker = worker(&[python3(), "-c", script]);
    let execution = harness
        .run_with(&worker, &command(), Some(&bundle), &BTreeMap::new())
        .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    assert_eq!(execution.stdout_tail, "MemoryError\n");
}

#[tokio::test]
async fn rlimit_nofile_limits_open_files() {
    let harness = Harness::new();
    let bundle = harness.bundle(&[("limits.toml", "open_files = 16\n", false)]);
    let script = "files = []\n\
                  try:\n    while len(files) < 1000:\n        files.append(open('/dev/null'))\n\
                  except OSError as error:\n    print(len(files), error.errno)\n";
    let worker = worker(&[python3(), "-c", script]);
    let execution = harness
        .run_with(&worker, &command(), Some(&bundle), &BTreeMap::new())
        .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    let (opened, errno) = execution.stdout_tail.trim().split_once(' ').unwrap();
    assert!(opened.parse::<u32>().unwrap() < 16, "{opened}");
    assert_eq!(errno.parse::<i32>().unwrap(), libc::EMFILE);
}

#[tokio::test]
async fn limits_only_apply_to_runs_with_the_bundle() {
    let harness = Harness::new();
    let worker = worker(&["/bin/sh", "-c", "ulimit -n; ulimit -t"]);
    let without = harness.run(&worker, &command()).await;
    let bundle = harness.bundle(&[("limits.toml", "open_files = 32\ncpu_seconds = 7\n", false)]);
    let with = harness
        .run_with(&worker, &command(), Some(&bundle), &BTreeMap::new())
        .await;
    assert_eq!(with.stdout_tail, "32\n7\n");
    assert_ne!(without.stdout_tail, with.stdout_tail);
}

#[tokio::test]
async fn max_output_bytes_terminates_the_run() {
    let harness = Harness::new();
    let bundle = harness.bundle(&[("limits.toml", "max_output_bytes = 1000\n", false)]);
    let worker = worker(&["/usr/bin/yes"]);
    let started = Instant::now();
    let execution = harness
        .run_with(&worker, &command(), Some(&bundle), &BTreeMap::new())
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(execution.outcome, Outcome::Failed, "{execution:?}");
    assert!(execution.output_limit_exceeded);
    assert!(execution.stdout_bytes > 1000);
    assert_eq!(execution.exit_signal, Some(libc::SIGTERM));
}

#[tokio::test]
async fn output_past_the_cap_fails_even_when_the_process_exits_first() {
    let harness = Harness::new();
    let bundle = harness.bundle(&[("limits.toml", "max_output_bytes = 1000\n", false)]);
    // 600 bytes on each stream: under the cap apart, over it together.
    let script = "head -c 600 /dev/zero; head -c 600 /dev/zero >&2";
    let worker = worker(&["/bin/sh", "-c", script]);
    let execution = harness
        .run_with(&worker, &command(), Some(&bundle), &BTreeMap::new())
        .await;
    assert_eq!(execution.outcome, Outcome::Failed, "{execution:?}");
    assert!(execution.output_limit_exceeded);
    assert_eq!(execution.stdout_bytes + execution.stderr_bytes, 1200);
}

#[tokio::test]
async fn allowed_env_refuses_other_variables() {
    let harness = Harness::new();
    let bundle = harness.bundle(&[(
        "limits.toml",
        "allowed_env = [\"REPORT_DIR\", \"HUBSPOT_TOKEN\"]\n",
        false,
    )]);
    let secrets = BTreeMap::from([("HUBSPOT_TOKEN".to_owned(), "tok".to_owned())]);

    let mut allowed = worker(&["/bin/true"]);
    allowed
        .env
        .insert("REPORT_DIR".to_owned(), "/tmp".to_owned());
    allowed.secrets = vec!["HUBSPOT_TOKEN".to_owned()];
    let execution = harness
        .run_with(&allowed, &command(), Some(&bundle), &secrets)
        .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");

    let mut refused = allowed.clone();
    refused.env.insert("X".to_owned(), "1".to_owned());
    let execution = harness
        .run_with(&refused, &command(), Some(&bundle), &secrets)
        .await;
    assert_eq!(execution.outcome, Outcome::Failed);
    assert_eq!(
        execution.refused.as_deref(),
        Some(
            format!(
                "enforcement bundle {} does not allow variable \"X\"",
                &bundle.digest[..12]
            )
            .as_str()
        )
    );

    let mut secret_refused = allowed.clone();
    secret_refused.secrets.push("OTHER_TOKEN".to_owned());
    let execution = harness
        .run_with(&secret_refused, &command(), Some(&bundle), &secrets)
        .await;
    assert!(execution.refused.unwrap().contains("\"OTHER_TOKEN\""));
}

#[tokio::test]
async fn max_rss_reflects_a_50_mb_allocation() {
    let harness = Harness::new();
    // Multiplying writes every byte, so the pages are resident.
    let worker = worker(&[python3(), "-c", "b = b'x' * (50 << 20)\nprint(len(b))"]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    assert!(execution.max_rss_kb >= 50 * 1024, "{execution:?}");
    assert!(execution.max_rss_kb < 200 * 1024, "{execution:?}");
}

#[tokio::test]
async fn cpu_ms_reflects_a_busy_second() {
    let harness = Harness::new();
    let script = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 1.0:\n    pass\n";
    let worker = worker(&[python3(), "-c", script]);
    let execution = harness.run(&worker, &command()).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    assert!(execution.cpu_ms >= 1000, "{execution:?}");
    assert!(execution.cpu_ms < 3000, "{execution:?}");
}
