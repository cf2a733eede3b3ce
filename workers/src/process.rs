//! The worker's operating-system process: starting it in its own process
//! group with resource limits, signalling the group, and reaping it with its
//! resource usage.
//!
//! The child is reaped here with `wait4`, never by tokio or std, so that its
//! rusage (CPU time, peak memory) is ours to read. Reaping is split in two:
//! the executor first learns that the leader has exited without reaping it
//! (a pidfd that turns readable, [`exit_notifier`], or on kernels without
//! pidfds `waitid` with `WNOWAIT` on a blocking thread, [`wait_for_exit`]),
//! so the exited leader stays a zombie and keeps its process-group id
//! reserved while the executor signals the group; [`reap`] then collects
//! it. No signal is ever sent to a group id that might have been reused.
//!
//! This module knows nothing about timeouts or output; the executor decides
//! when to signal.

use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::Command;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::bundle::Limits;

/// How a reaped process ended and what it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The exit status, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub exit_signal: Option<i32>,
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// Peak resident set size, in KiB.
    pub max_rss_kb: u64,
}

/// One resource limit to set in the child.
#[derive(Debug, Clone, Copy)]
struct Rlimit {
    resource: Resource,
    soft: u64,
    hard: u64,
}

/// Arranges for the child of `command` to start with the limits' CPU,
/// address-space and open-file rlimits. Limits only tighten: each is capped
/// at the agent's own hard limit, so an unprivileged agent can apply them.
///
/// `RLIMIT_CPU` gets a hard limit one second above the soft one: SIGXCPU at
/// the soft limit, and SIGKILL a second later for a process that ignores it.
pub fn apply_rlimits(command: &mut Command, limits: &Limits) {
    let wanted = [
        (Resource::RLIMIT_CPU, limits.cpu_seconds, 1),
        (Resource::RLIMIT_AS, limits.memory_bytes, 0),
        (Resource::RLIMIT_NOFILE, limits.open_files, 0),
    ];
    let mut rlimits: [Option<Rlimit>; 3] = [None; 3];
    for (slot, (resource, value, hard_extra)) in rlimits.iter_mut().zip(wanted) {
        let Some(value) = value else { continue };
        let current_hard = getrlimit(resource).map_or(u64::MAX, |(_, hard)| hard);
        *slot = Some(Rlimit {
            resource,
            soft: value.min(current_hard),
            hard: value.saturating_add(hard_extra).min(current_hard),
        });
    }
    if rlimits.iter().all(Option::is_none) {
        return;
    }
    set_rlimits_before_exec(command, rlimits);
}

#[allow(unsafe_code)] // Reason: `pre_exec` is unsafe; the closure below is async-signal-safe.
fn set_rlimits_before_exec(command: &mut Command, rlimits: [Option<Rlimit>; 3]) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It only reads a `Copy` array it
    // owns and calls setrlimit(2) (nix's wrapper is a direct syscall that
    // neither allocates nor locks); an error becomes an `io::Error` from a raw
    // errno, which does not allocate either.
    unsafe {
        command.pre_exec(move || {
            for rlimit in rlimits.iter().flatten() {
                setrlimit(rlimit.resource, rlimit.soft, rlimit.hard)
                    .map_err(|errno| io::Error::from_raw_os_error(errno as i32))?;
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group `pgid`. A group that is already gone
/// is not an error.
pub fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, %error, "cannot signal a worker's process group")
        }
    }
}

/// Blocks until the child `pid` has exited, without reaping it. Run it on a
/// blocking thread.
pub fn wait_for_exit(pid: Pid) -> io::Result<()> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
}

/// A pidfd of the child `pid`: it turns readable when the child exits, and
/// reading that does not reap it. Fails on kernels older than 5.3 (ENOSYS),
/// where [`wait_for_exit`] on a blocking thread does the same job.
#[allow(unsafe_code)] // Reason: pidfd_open(2) has no wrapper in libc or nix.
pub fn exit_notifier(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps the child `pid` with `wait4`, returning its status and resource
/// usage. Blocks until it exits; run it on a blocking thread unless it is
/// known to have exited.
pub fn reap(pid: Pid) -> io::Result<Reaped> {
    wait4(pid, 0)?.ok_or_else(|| io::Error::other("wait4 returned no child"))
}

/// Reaps the child `pid` if it has exited, without blocking: `None` if it
/// is still running.
pub fn reap_if_exited(pid: Pid) -> io::Result<Option<Reaped>> {
    wait4(pid, libc::WNOHANG)
}

#[allow(unsafe_code)] // Reason: wait4(2) has no safe wrapper that returns rusage.
fn wait4(pid: Pid, flags: libc::c_int) -> io::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the types
        // wait4(2) expects, and it does not keep them past the call.
        let result = unsafe { libc::wait4(pid.as_raw(), &mut status, flags, &mut rusage) };
        if result == pid.as_raw() {
            break;
        }
        if result == 0 {
            return Ok(None);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let (exit_code, exit_signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(Some(Reaped {
        exit_code,
        exit_signal,
        cpu_ms: timeval_ms(rusage.ru_utime).saturating_add(timeval_ms(rusage.ru_stime)),
        max_rss_kb: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    }))
}

fn timeval_ms(time: libc::timeval) -> u64 {
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let micros = u64::try_from(time.tv_usec).unwrap_or(0);
    seconds.saturating_mul(1000).saturating_add(micros / 1000)
}
