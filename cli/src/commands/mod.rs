//! One module per subcommand; [`run`] dispatches and owns the shutdown signal.

mod check;
mod init;
mod up;

use tokio_util::sync::CancellationToken;

use crate::args::{Args, Command};

/// Runs the chosen subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Up => up::run(&args.global, shutdown_on_signal()).await,
        Command::Init(init) => init::run(&args.global, init).await,
        Command::Check(check) => check::run(&args.global, check),
    }
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
