//! `loom`, the one binary of the mesh: one subcommand per role and per
//! operator task. This crate wires roles together and maps errors to exit
//! codes; it holds no business logic of its own.
//!
//! Exit codes (documented in `loom --help` and the README):
//! 0 success; 1 the command failed; 2 bad configuration or usage;
//! 3 NATS unreachable or refused a request; 4 the embedded nats-server is
//! missing or did not start; 5 an address or data directory is already in use.

mod api;
mod args;
mod commands;
mod exit;
mod http;
mod memory;
mod mesh;
mod output;
mod runtime;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = args::Args::parse();
    let role = args.command.is_role();
    if !role {
        output::end_quietly_on_closed_stdout();
    }
    output::init_tracing(&args.global, role);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loom: cannot start the async runtime: {error}");
            return exit::FAILURE.into();
        }
    };
    let result = runtime.block_on(commands::run(args));
    // Give background tasks (the NATS client's) no chance to outlive main.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loom: {}", exit::describe(&error));
            exit::code(&error).into()
        }
    }
}
