//! Shared helpers for the workers tests: a worker definition, a run command,
//! an executor under a temporary run root with a short kill grace, bundles
//! made on the fly, and process liveness checks.

#![allow(dead_code)] // Reason: each test binary uses a different subset of these helpers.
#![allow(clippy::unwrap_used)] // Reason: test helpers; a failure here is the test's failure.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use loom_config::{Backoff, CatchUp, OutputContract, OutputFormat, Overlap, Worker};
use loom_protocol::{RunCommand, Trigger};
use loom_workers::{Execution, Executor, ExecutorSettings, Invocation, LoadedBundle};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The kill grace used by tests.
pub const GRACE: Duration = Duration::from_millis(200);

/// A worker called `w` running `argv`, in America/Chicago, with a 10 s
/// timeout.
pub fn worker(argv: &[&str]) -> Worker {
    Worker {
        name: "w".into(),
        source: std::path::Path::new("workers.toml").into(),
        description: "a test worker".to_owned(),
        schedule: None,
        timezone: chrono_tz::America::Chicago,
        command: argv.iter().map(|arg| (*arg).to_owned()).collect(),
        enabled: true,
        timeout: Duration::from_secs(10),
        retries: 0,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
            factor: 1.0,
            jitter: 0.0,
        },
        overlap: Overlap::default(),
        concurrency: NonZeroU32::MIN,
        catch_up: CatchUp::default(),
        starting_deadline: Duration::from_secs(60),
        labels: Vec::new(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        enforcement: None,
        alert_after: NonZeroU32::MIN,
        output: OutputContract {
            format: OutputFormat::Text,
            max_bytes: 1 << 20,
            schema: None,
        },
    }
}

/// The scheduled instant of test run commands.
pub fn scheduled_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).single().unwrap()
}

/// A scheduled run command for worker `w`.
pub fn command() -> RunCommand {
    RunCommand::new(uuid::Uuid::now_v7(), "w", scheduled_at(), Trigger::Schedule)
}

/// An executor whose run root is inside a temporary directory.
pub struct Harness {
    /// Holds the run root (and anything else a test puts there).
    pub temp: TempDir,
    /// The executor under test.
    pub executor: Executor,
}

impl Harness {
    /// Default settings with a 200 ms grace.
    pub fn new() -> Self {
        Harness::with(|_| {})
    }

    /// Default settings with a 200 ms grace, then `adjust`.
    pub fn with(adjust: impl FnOnce(&mut ExecutorSettings)) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let mut settings = ExecutorSettings {
            run_root: temp.path().join("runs"),
            kill_grace: GRACE,
            ..ExecutorSettings::default()
        };
        adjust(&mut settings);
        Harness {
            executor: Executor::new(settings),
            temp,
        }
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.temp.path().join(name)
    }

    /// Runs attempt 1 of `command` with no bundle and no agent secrets.
    pub async fn run(&self, worker: &Worker, command: &RunCommand) -> Execution {
        self.run_with(worker, command, None, &BTreeMap::new()).await
    }

    /// Runs attempt 1 of `command` with a bundle and agent secrets.
    pub async fn run_with(
        &self,
        worker: &Worker,
        command: &RunCommand,
        bundle: Option<&LoadedBundle>,
        secrets: &BTreeMap<String, String>,
    ) -> Execution {
        let invocation = Invocation {
            command,
            worker,
            attempt: 1,
            enforcement: bundle,
            secrets,
        };
        self.executor
            .run(invocation, CancellationToken::new())
            .await
    }

    /// Makes a bundle directory with `files` (path, content, executable),
    /// packs it and unpacks it into a cache, as an agent would.
    pub fn bundle(&self, files: &[(&str, &str, bool)]) -> LoadedBundle {
        let dir = self.path("bundle-src");
        write_tree(&dir, files);
        let packed = loom_workers::pack(&dir).unwrap();
        loom_workers::unpack(&packed.archive, &packed.digest, &self.path("cache")).unwrap()
    }
}

/// Writes `files` (path, content, executable) under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &str, bool)]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).unwrap();
    for (path, content, executable) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A real python3 (not a pyenv shim, which needs the agent's `HOME`).
pub fn python3() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("the workers tests need python3 at /usr/bin/python3 or /usr/local/bin/python3")
}

/// Whether process `pid` is alive: it exists and is not a zombie (orphans
/// may stay zombies when PID 1 does not reap them).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// The processes of `pids` still alive after waiting up to `limit` for them
/// to end. A SIGKILL takes effect a moment after `kill` returns, when the
/// killed process next runs, so a process killed as a run ended may still be
/// alive when the run's future returns.
pub async fn alive_after(pids: &[i32], limit: Duration) -> Vec<i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|pid| is_alive(*pid)).collect();
        if alive.is_empty() || std::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether any process of group `pgid` is alive (zombies do not count).
pub fn group_is_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command: state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2].parse::<i32>() == Ok(pgid) && !matches!(fields[0], "Z" | "X")
    })
}

/// Reads the pids a worker wrote, one per line.
pub fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Parses `env` output into a map.
pub fn parse_env(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
