//! Logging set-up and small helpers for what commands print.

use crate::args::{Global, LogFormat};

/// Installs the tracing subscriber: logs go to stderr, filtered by `--log`.
pub fn init_tracing(global: &Global, role: bool) {
    let log = global
        .log
        .clone()
        .unwrap_or_else(|| if role { "info" } else { "warn" }.to_owned());
    // The NATS client's own connection chatter stays quiet unless asked for:
    // Loom logs connection changes itself.
    let directives = if log.contains("async_nats") {
        log
    } else {
        format!("{log},async_nats=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Lets a one-shot command end quietly when whatever reads its output goes
/// away (`loom runs --json | head`), as Unix tools do, instead of failing on
/// a closed pipe. The Rust runtime ignores SIGPIPE; this restores the
/// default. Roles keep ignoring it: an agent writes to its workers' stdin,
/// and a worker that exits early must not take the agent with it. Sockets
/// are unaffected either way (they write with `MSG_NOSIGNAL`).
#[cfg(unix)]
#[allow(unsafe_code, reason = "one call into libc; see the SAFETY comment")]
pub fn end_quietly_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition before any thread
    // is started; no handler of this process is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Elsewhere there is no SIGPIPE.
#[cfg(not(unix))]
pub fn end_quietly_on_closed_stdout() {}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}
