//! The executor: runs one attempt of a run as a local subprocess and says
//! what happened (DESIGN §6 and §7).
//!
//! For each attempt it gives the run an empty directory, copies the
//! enforcement bundle into it read-only, starts the worker's argv (never a
//! shell) in its own process group with a cleared environment, the run
//! command as JSON on stdin and the bundle's rlimits, reads stdout and
//! stderr to their end, enforces the timeout, cancellation and the output
//! cap by terminating the group (SIGTERM, then SIGKILL after the grace
//! period), reaps the process with its resource usage, and checks that the
//! bundle copy was not modified.
//!
//! A run's processes end with it, like the containers of a Kubernetes pod:
//! once the main process has exited, for any reason, whatever is left of its
//! process group is killed. A process that leaves the group (`setsid`) is
//! out of reach; containing it needs cgroups, which are the deployment's
//! business.
//!
//! The executor never decides retries or verdicts and never talks to NATS:
//! the agent turns an [`Execution`] into a [`RunResult`] with
//! [`Execution::into_result`] and takes it from there.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_config::Worker;
use loom_protocol::{Outcome, RunCommand, RunResult, WIRE_VERSION};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt as _;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use crate::bundle::LoadedBundle;
use crate::environment::{self, EnvironmentBase, Refusal};
use crate::output::{self, OutputMeter, SharedTail};
use crate::process::{self, Reaped};
use crate::rundir::{self, RunDir, Spares};

/// How long the executor keeps reading output after the process group is
/// gone. Only a process that left the group can hold a pipe open that long;
/// its later output is dropped.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The `PATH` given to workers when the agent has none.
pub const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The `LANG` given to workers when the agent has none.
pub const FALLBACK_LANG: &str = "C.UTF-8";

/// How the executor runs attempts on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Run directories are created under it. Made absolute by
    /// [`Executor::new`], so `HOME` and `LOOM_ENFORCEMENT_DIR` are absolute.
    pub run_root: PathBuf,
    /// Time between SIGTERM and SIGKILL when a run is terminated.
    pub kill_grace: Duration,
    /// Bytes of stdout kept.
    pub stdout_tail_bytes: usize,
    /// Bytes of stderr kept.
    pub stderr_tail_bytes: usize,
    /// Keep run directories after the run (for debugging); by default they
    /// are emptied and kept as spares for later attempts, or removed.
    pub keep_run_dirs: bool,
    /// Emptied run directories kept for later attempts (an agent keeps one
    /// per run slot); 0 removes every run directory after its attempt.
    pub spare_run_dirs: usize,
    /// `PATH` given to workers.
    pub path: String,
    /// `LANG` given to workers.
    pub lang: String,
}

impl Default for ExecutorSettings {
    /// Runs under `<temp dir>/loom-runs`, a 10 s grace, 256 KiB of stdout
    /// and 64 KiB of stderr, 16 spare run directories, and the agent's own
    /// `PATH` and `LANG` (or [`FALLBACK_PATH`] and [`FALLBACK_LANG`]).
    fn default() -> Self {
        ExecutorSettings {
            run_root: std::env::temp_dir().join("loom-runs"),
            kill_grace: Duration::from_secs(10),
            stdout_tail_bytes: 256 * 1024,
            stderr_tail_bytes: 64 * 1024,
            keep_run_dirs: false,
            spare_run_dirs: 16,
            path: non_empty_var("PATH").unwrap_or_else(|| FALLBACK_PATH.to_owned()),
            lang: non_empty_var("LANG").unwrap_or_else(|| FALLBACK_LANG.to_owned()),
        }
    }
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// One attempt to run: what to run and with what.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// The run command (its params, id, trigger; written to stdin).
    pub command: &'a RunCommand,
    /// The worker's registry entry: argv, env, secrets, timeout, zone.
    pub worker: &'a Worker,
    /// The 1-based attempt number.
    pub attempt: u32,
    /// The verified bundle, when the worker has one.
    pub enforcement: Option<&'a LoadedBundle>,
    /// The agent's environment, to take the worker's declared secrets from.
    pub secrets: &'a BTreeMap<String, String>,
}

/// What happened to one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// `Succeeded`, `Failed`, `TimedOut` or `Cancelled`.
    pub outcome: Outcome,
    /// The exit status; `None` when killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    pub exit_signal: Option<i32>,
    /// Why the run was not started, for a permanent reason (a missing
    /// secret, a variable the bundle does not allow, a program that cannot
    /// be executed): one sentence. The outcome is then `Failed`.
    pub refused: Option<String>,
    /// Why the run was not started, for a local reason another attempt may
    /// not meet (the run directory or the bundle copy could not be made, the
    /// process could not be forked): one sentence. The outcome is then
    /// `Failed`.
    pub setup_error: Option<String>,
    /// When the process started (or the attempt began, if it never started).
    pub started_at: DateTime<Utc>,
    /// When the process was reaped (or the attempt gave up).
    pub finished_at: DateTime<Utc>,
    /// The last bytes of stdout, lossy UTF-8, starting on a character
    /// boundary.
    pub stdout_tail: String,
    /// The last bytes of stderr, likewise.
    pub stderr_tail: String,
    /// Total bytes written to stdout.
    pub stdout_bytes: u64,
    /// Total bytes written to stderr.
    pub stderr_bytes: u64,
    /// User plus system CPU time of the process (and its reaped
    /// descendants), in milliseconds.
    pub cpu_ms: u64,
    /// Peak resident set size, in KiB.
    pub max_rss_kb: u64,
    /// The bundle's `max_output_bytes` was exceeded; the process group was
    /// terminated and the outcome is `Failed` (unless a timeout or
    /// cancellation came first).
    pub output_limit_exceeded: bool,
    /// The run's copy of the bundle no longer had the bundle's digest after
    /// the run: the worker wrote to it.
    pub bundle_modified: bool,
    /// Costs the worker reported with `LOOM_COST:` lines, summed per key.
    pub cost: BTreeMap<String, f64>,
}

impl Execution {
    /// An attempt that never started a process.
    pub fn not_started(
        began: DateTime<Utc>,
        outcome: Outcome,
        refused: Option<String>,
        setup_error: Option<String>,
    ) -> Self {
        Execution {
            outcome,
            exit_code: None,
            exit_signal: None,
            refused,
            setup_error,
            started_at: began,
            finished_at: Utc::now(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            cpu_ms: 0,
            max_rss_kb: 0,
            output_limit_exceeded: false,
            bundle_modified: false,
            cost: BTreeMap::new(),
        }
    }

    fn refused(began: DateTime<Utc>, refusal: &Refusal) -> Self {
        Execution::not_started(began, Outcome::Failed, Some(refusal.to_string()), None)
    }

    fn setup_failed(began: DateTime<Utc>, error: impl std::fmt::Display) -> Self {
        Execution::not_started(began, Outcome::Failed, None, Some(error.to_string()))
    }

    /// Wall time from start to finish, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        let millis = (self.finished_at - self.started_at).num_milliseconds();
        u64::try_from(millis).unwrap_or(0)
    }

    /// The RunResult for this attempt. When the run was not started, its
    /// refusal or setup error is given as the stderr tail, so that the
    /// result says why.
    pub fn into_result(
        self,
        command: &RunCommand,
        attempt: u32,
        agent_id: &str,
        enforcement_digest: Option<String>,
    ) -> RunResult {
        let stderr_tail = match (&self.refused, &self.setup_error) {
            (Some(reason), _) | (None, Some(reason)) if self.stderr_tail.is_empty() => {
                reason.clone()
            }
            _ => self.stderr_tail,
        };
        RunResult {
            v: WIRE_VERSION,
            run_id: command.run_id,
            worker: command.worker.clone(),
            attempt,
            agent_id: agent_id.to_owned(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome: self.outcome,
            exit_code: self.exit_code,
            stdout_tail: self.stdout_tail,
            stderr_tail,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            cpu_ms: self.cpu_ms,
            max_rss_kb: self.max_rss_kb,
            enforcement_digest,
            cost: self.cost,
            // The agent decides retries; it sets this before publishing.
            last_attempt: false,
        }
    }
}

/// Why the executor stopped waiting for the process on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
    OutputLimit,
}

/// The pipes of a started child, ready for tokio.
struct Pipes {
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

/// Runs attempts of worker runs as local subprocesses.
#[derive(Debug, Clone)]
pub struct Executor {
    settings: ExecutorSettings,
    spares: Arc<Spares>,
}

impl Executor {
    /// An executor with these settings (`run_root` made absolute). Removes
    /// the spare run directories that stopped agents left in the run root.
    pub fn new(mut settings: ExecutorSettings) -> Self {
        if let Ok(absolute) = std::path::absolute(&settings.run_root) {
            settings.run_root = absolute;
        }
        let spares = Arc::new(Spares::new(&settings.run_root, settings.spare_run_dirs));
        Executor { settings, spares }
    }

    /// Its settings.
    pub fn settings(&self) -> &ExecutorSettings {
        &self.settings
    }

    /// The run directory of an attempt: `<run_root>/<run_id>-<attempt>`.
    pub fn run_dir(&self, command: &RunCommand, attempt: u32) -> PathBuf {
        rundir::path_for(&self.settings.run_root, &command.run_id, attempt)
    }

    /// Runs one attempt; never panics, never returns Err: every failure is
    /// an [`Execution`]. Cancelling `cancel` terminates the run's process
    /// group (SIGTERM, then SIGKILL after the grace period) and gives
    /// `Cancelled`; a token cancelled before the start starts nothing.
    /// Dropping the future instead kills the group at once (SIGKILL, no
    /// grace) and leaves the run directory behind; prefer the token.
    pub async fn run(&self, invocation: Invocation<'_>, cancel: CancellationToken) -> Execution {
        let began = Utc::now();
        let worker = invocation.worker;
        let dir = self.run_dir(invocation.command, invocation.attempt);
        let enforcement_copy = rundir::enforcement_path(&dir);
        let base = EnvironmentBase {
            path: &self.settings.path,
            lang: &self.settings.lang,
            home: &dir,
            enforcement: invocation
                .enforcement
                .map(|bundle| (enforcement_copy.as_path(), bundle)),
        };
        let environment = match environment::build(
            base,
            worker,
            invocation.command,
            invocation.attempt,
            invocation.secrets,
        ) {
            Ok(environment) => environment,
            Err(refusal) => return self.refuse(&invocation, began, &refusal),
        };
        if worker.command.is_empty() {
            let refusal = Refusal::EmptyCommand {
                worker: worker.name.to_string(),
            };
            return self.refuse(&invocation, began, &refusal);
        }
        if cancel.is_cancelled() {
            return Execution::not_started(began, Outcome::Cancelled, None, None);
        }

        // File-system work (copying, hashing, removing trees a worker may
        // have filled) runs on blocking threads, so that it never stalls the
        // agent's runtime and its progress acks.
        let prepared = match invocation.enforcement {
            // The usual case is one rename (or mkdir), too quick to need a
            // thread.
            None if rundir::create_empty(&dir, &self.spares) => Ok(Ok(RunDir {
                path: dir.clone(),
                enforcement: None,
            })),
            _ => {
                let dir = dir.clone();
                let bundle = invocation.enforcement.cloned();
                let spares = self.spares.clone();
                tokio::task::spawn_blocking(move || rundir::prepare(&dir, bundle.as_ref(), &spares))
                    .await
            }
        };
        let run_dir = match prepared {
            Ok(Ok(run_dir)) => run_dir,
            Ok(Err(error)) => {
                tracing::warn!(run_id = %invocation.command.run_id, worker = %worker.name, %error, "cannot prepare a run directory");
                self.finish_dir(dir, None).await;
                return Execution::setup_failed(began, error);
            }
            Err(error) => {
                self.finish_dir(dir, None).await;
                return Execution::setup_failed(
                    began,
                    format!(
                        "preparing the run directory of worker {:?} failed: {error}",
                        worker.name
                    ),
                );
            }
        };
        let mut execution = self
            .execute(&invocation, &run_dir, environment, &cancel, began)
            .await;
        let check = invocation
            .enforcement
            .zip(run_dir.enforcement)
            .map(|(bundle, copy)| (copy, bundle.digest.clone()));
        execution.bundle_modified = self.finish_dir(dir, check).await;
        if execution.bundle_modified {
            tracing::warn!(run_id = %invocation.command.run_id, worker = %worker.name, digest = ?invocation.enforcement.map(|bundle| &bundle.digest), "the worker modified its copy of the enforcement bundle");
        }
        tracing::debug!(
            run_id = %invocation.command.run_id,
            worker = %worker.name,
            attempt = invocation.attempt,
            outcome = execution.outcome.as_str(),
            exit_code = ?execution.exit_code,
            exit_signal = ?execution.exit_signal,
            duration_ms = execution.duration_ms(),
            "worker process finished"
        );
        execution
    }

    fn refuse(
        &self,
        invocation: &Invocation<'_>,
        began: DateTime<Utc>,
        refusal: &Refusal,
    ) -> Execution {
        tracing::warn!(run_id = %invocation.command.run_id, worker = %invocation.worker.name, reason = %refusal, "run refused");
        Execution::refused(began, refusal)
    }

    /// After an attempt: checks the bundle copy (`check`: the copy and the
    /// digest it must have), then empties the run directory for a later
    /// attempt (or removes it) unless it is to be kept, on a blocking thread
    /// unless the worker left the directory empty. Returns whether the copy
    /// was modified.
    async fn finish_dir(&self, dir: PathBuf, check: Option<(PathBuf, String)>) -> bool {
        let keep = self.settings.keep_run_dirs;
        // The usual case, a directory left empty, takes two renames and a
        // look inside: too quick to need a thread.
        if check.is_none() && !keep && self.spares.give_back_if_empty(&dir) {
            return false;
        }
        let spares = self.spares.clone();
        let checked = check.is_some();
        let finished = tokio::task::spawn_blocking(move || {
            let modified =
                check.is_some_and(|(copy, digest)| !rundir::copy_matches(&copy, &digest));
            if !keep {
                spares.give_back(&dir);
            }
            modified
        })
        .await;
        // A check that could not run proves nothing: count the copy as modified.
        finished.unwrap_or(checked)
    }

    /// Starts the process in a prepared run directory and sees it to its end.
    async fn execute(
        &self,
        invocation: &Invocation<'_>,
        run_dir: &RunDir,
        environment: BTreeMap<String, String>,
        cancel: &CancellationToken,
        began: DateTime<Utc>,
    ) -> Execution {
        let worker = invocation.worker;
        let limits = invocation.enforcement.map(|bundle| &bundle.limits);
        let (program, args) = match worker.command.split_first() {
            Some(split) => split,
            None => return Execution::not_started(began, Outcome::Failed, None, None),
        };
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(&environment)
            .current_dir(&run_dir.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(limits) = limits {
            process::apply_rlimits(&mut command, limits);
        }

        let started_at = Utc::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => return start_failure(began, program, worker, &error),
        };
        // The std `Child` is dropped without waiting: the process is reaped
        // below with wait4, and nothing else may reap it.
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let pipes = take_pipes(&mut child);
        drop(child);
        let mut guard = KillOnDrop { pid, armed: true };
        let mut exited = exit_of(pid);

        let pipes = match pipes {
            Ok(pipes) => pipes,
            Err(error) => {
                process::signal_group(pid, Signal::SIGKILL);
                let _ = exited.await;
                guard.armed = false;
                let _ = reap_exited(pid).await;
                return Execution::setup_failed(
                    began,
                    format!(
                        "cannot attach to the pipes of worker {:?}: {error}",
                        worker.name
                    ),
                );
            }
        };

        let meter = Arc::new(OutputMeter::new(
            limits.and_then(|limits| limits.max_output_bytes),
        ));
        let stdout_tail = output::shared_tail(self.settings.stdout_tail_bytes);
        let stderr_tail = output::shared_tail(self.settings.stderr_tail_bytes);
        let stdout_task = tokio::spawn(output::capture(
            pipes.stdout,
            stdout_tail.clone(),
            meter.clone(),
        ));
        let stderr_task = tokio::spawn(output::capture(
            pipes.stderr,
            stderr_tail.clone(),
            meter.clone(),
        ));
        let input = loom_protocol::codec::encode_json(invocation.command);
        let mut stdin = pipes.stdin;
        // A worker that does not read stdin gets EPIPE on our side or an
        // unread pipe; either way the write is abandoned with the run. A
        // command that fits in the pipe (the usual case) is written at once,
        // and the pipe closed so that the worker reads its end.
        let written = stdin.try_write(&input).unwrap_or(0);
        let stdin_task = if written < input.len() {
            Some(tokio::spawn(async move {
                let _ = stdin.write_all(&input[written..]).await;
            }))
        } else {
            drop(stdin);
            None
        };

        let ending = tokio::select! {
            biased;
            result = &mut exited => {
                log_wait_error(result, worker);
                Ending::Exited
            }
            () = cancel.cancelled() => Ending::Cancelled,
            () = meter.exceeded() => Ending::OutputLimit,
            () = tokio::time::sleep(worker.timeout) => Ending::TimedOut,
        };
        if ending != Ending::Exited {
            tracing::debug!(run_id = %invocation.command.run_id, worker = %worker.name, ?ending, "terminating a worker's process group");
            process::signal_group(pid, Signal::SIGTERM);
            match tokio::time::timeout(self.settings.kill_grace, &mut exited).await {
                Ok(result) => log_wait_error(result, worker),
                Err(_elapsed) => {
                    process::signal_group(pid, Signal::SIGKILL);
                    log_wait_error(exited.await, worker);
                }
            }
        }
        // The main process has exited but is not reaped yet, so its group id
        // cannot have been reused: end whatever is left of the group.
        process::signal_group(pid, Signal::SIGKILL);
        guard.armed = false;
        let reaped = reap_exited(pid).await.unwrap_or_else(|error| {
            tracing::error!(worker = %worker.name, %error, "cannot reap a worker process");
            Reaped::default()
        });
        let finished_at = Utc::now();

        let stdout_abort = stdout_task.abort_handle();
        let stderr_abort = stderr_task.abort_handle();
        let drained = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, async {
            let _ = stdout_task.await;
            let _ = stderr_task.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(worker = %worker.name, "a process outside the run's group still holds its output open; dropping the rest");
            stdout_abort.abort();
            stderr_abort.abort();
        }
        if let Some(task) = stdin_task {
            task.abort();
        }

        let (stdout_text, stdout_bytes, stdout_truncated) = snapshot(&stdout_tail);
        let (stderr_text, stderr_bytes, _) = snapshot(&stderr_tail);
        let output_limit_exceeded = meter.is_exceeded();
        let outcome = match ending {
            Ending::TimedOut => Outcome::TimedOut,
            Ending::Cancelled => Outcome::Cancelled,
            Ending::OutputLimit => Outcome::Failed,
            Ending::Exited if reaped.exit_code == Some(0) && !output_limit_exceeded => {
                Outcome::Succeeded
            }
            Ending::Exited => Outcome::Failed,
        };
        Execution {
            outcome,
            exit_code: reaped.exit_code,
            exit_signal: reaped.exit_signal,
            refused: None,
            setup_error: None,
            started_at,
            finished_at,
            cost: crate::cost::parse_costs(&stdout_text, stdout_truncated),
            stdout_tail: stdout_text,
            stderr_tail: stderr_text,
            stdout_bytes,
            stderr_bytes,
            cpu_ms: reaped.cpu_ms,
            max_rss_kb: reaped.max_rss_kb,
            output_limit_exceeded,
            bundle_modified: false,
        }
    }
}

/// Ends a run's process group if the future running it is dropped before
/// the process is reaped (the caller stopped waiting instead of cancelling):
/// the group is killed and the leader reaped on a thread of its own, so no
/// process and no zombie outlives an abandoned run.
struct KillOnDrop {
    pid: Pid,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let pid = self.pid;
        // The leader is alive or a zombie (it is only reaped after the guard
        // is disarmed), so the group id is still its own.
        process::signal_group(pid, Signal::SIGKILL);
        let reaper = std::thread::Builder::new()
            .name("loom-reaper".to_owned())
            .spawn(move || process::reap(pid));
        if let Err(error) = reaper {
            tracing::error!(pid = pid.as_raw(), %error, "cannot start a thread to reap an abandoned worker process");
        }
    }
}

/// The text, total and truncation of a captured stream.
fn snapshot(tail: &SharedTail) -> (String, u64, bool) {
    let tail = output::lock(tail);
    (tail.to_text(), tail.total(), tail.is_truncated())
}

fn log_wait_error(result: io::Result<()>, worker: &Worker) {
    if let Err(error) = result {
        tracing::error!(worker = %worker.name, %error, "cannot wait for a worker process");
    }
}

/// Resolves when the child `pid` has exited, without reaping it: through its
/// pidfd on the runtime, or where the kernel has no pidfds, on a blocking
/// thread.
fn exit_of(pid: Pid) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send>> {
    match process::exit_notifier(pid).and_then(watch_readable) {
        Ok(pidfd) => Box::pin(async move { pidfd.readable().await.map(drop) }),
        Err(_) => Box::pin(async move {
            tokio::task::spawn_blocking(move || process::wait_for_exit(pid))
                .await
                .map_err(io::Error::other)?
        }),
    }
}

#[allow(unsafe_code)] // Reason: `AsyncFd::register_with_interest` is unsafe.
fn watch_readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes the descriptor's only owner, so it is
    // neither closed nor replaced while registered.
    Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? })
}

/// Reaps the child `pid`, which has exited: at once, or should the kernel
/// not have it ready yet, on a blocking thread.
async fn reap_exited(pid: Pid) -> io::Result<Reaped> {
    if let Some(reaped) = process::reap_if_exited(pid)? {
        return Ok(reaped);
    }
    tokio::task::spawn_blocking(move || process::reap(pid))
        .await
        .map_err(io::Error::other)?
}

/// Moves the child's pipes into tokio.
fn take_pipes(child: &mut Child) -> io::Result<Pipes> {
    let missing = || io::Error::other("a standard stream was not piped");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    Ok(Pipes {
        stdin: pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
        stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
        stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
    })
}

/// The execution of an attempt whose process could not be started: refused
/// when the same attempt would fail again (no such program, not executable,
/// not a program, arguments and environment too large for exec), a setup
/// error when the cause is local and may pass (no memory, too many
/// processes).
fn start_failure(
    began: DateTime<Utc>,
    program: &str,
    worker: &Worker,
    error: &io::Error,
) -> Execution {
    let permanent = matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
    ) || matches!(
        error.raw_os_error(),
        Some(
            libc::ENOEXEC
                | libc::ENOTDIR
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::EISDIR
                | libc::E2BIG
        )
    );
    let refusal = Refusal::CannotStart {
        program: program.to_owned(),
        worker: worker.name.to_string(),
        detail: error.to_string(),
    };
    tracing::warn!(worker = %worker.name, program, %error, permanent, "cannot start a worker process");
    if permanent {
        Execution::refused(began, &refusal)
    } else {
        Execution::setup_failed(began, refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings() {
        let settings = ExecutorSettings::default();
        assert_eq!(settings.run_root, std::env::temp_dir().join("loom-runs"));
        assert_eq!(settings.kill_grace, Duration::from_secs(10));
        assert_eq!(settings.stdout_tail_bytes, 256 * 1024);
        assert_eq!(settings.stderr_tail_bytes, 64 * 1024);
        assert!(!settings.keep_run_dirs);
        assert!(!settings.path.is_empty());
        assert!(!settings.lang.is_empty());
    }
}
