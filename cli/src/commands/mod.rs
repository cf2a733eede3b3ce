//! One module per subcommand; [`run`] dispatches and owns the shutdown signal.

mod agent;
mod backfill;
mod cancel;
mod check;
mod dlq;
mod enforcement;
mod init;
mod klaxon;
mod pause;
pub(crate) mod roles;
mod runs;
mod scheduler;
mod status;
mod trigger;
mod up;
mod validator;
mod workflow;

use tokio_util::sync::CancellationToken;

use crate::args::{Args, Command};

/// Runs the chosen subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Up => up::run(&args.global, shutdown_on_signal()).await,
        Command::Init(init) => init::run(&args.global, init).await,
        Command::Check(check) => check::run(&args.global, check),
        Command::Scheduler => scheduler::run(&args.global, shutdown_on_signal()).await,
        Command::Agent(agent) => agent::run(&args.global, agent, shutdown_on_signal()).await,
        Command::Validator => validator::run(&args.global, shutdown_on_signal()).await,
        Command::Klaxon => klaxon::run(&args.global, shutdown_on_signal()).await,
        Command::Status(status) => status::run(&args.global, status).await,
        Command::Runs(runs) => runs::run(&args.global, runs).await,
        Command::Cancel(cancel) => cancel::run(&args.global, cancel).await,
        Command::Dlq(dlq) => dlq::run(&args.global, dlq).await,
        Command::Workflow(workflow) => workflow::run(&args.global, workflow).await,
        Command::Enforcement(command) => enforcement::run(&args.global, command).await,
        Command::Trigger(trigger) => trigger::run(&args.global, trigger).await,
        Command::Pause(pause) => pause::pause(&args.global, pause).await,
        Command::Resume(resume) => pause::resume(&args.global, resume).await,
        Command::Backfill(backfill) => backfill::run(&args.global, backfill).await,
    }
}

/// Parses an instant: RFC 3339, `now`, or a duration relative to now
/// (`2h` or `+2h` ahead, `-3d` back).
pub(crate) fn parse_when(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    use chrono::SubsecRound;
    let now = chrono::Utc::now().trunc_subsecs(0);
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&chrono::Utc));
    }
    let (sign, duration) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let duration = humantime::parse_duration(duration).map_err(|_| {
        crate::exit::Usage(format!(
            "{text:?} is neither an RFC 3339 instant (2026-11-24T09:00:00Z) nor a duration from now (2h, -3d)"
        ))
    })?;
    let duration = chrono::Duration::from_std(duration)?;
    Ok(if sign < 0 {
        now - duration
    } else {
        now + duration
    })
}

/// A token cancelled on the first SIGINT or SIGTERM. Only the binary installs
/// signal handlers; roles are handed the token.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot install signal handlers; stop loom with SIGKILL");
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
        cancel.cancel();
    });
    token
}
