//! The command line: global options and one subcommand per role or task.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Configuration: loom.toml (--config or LOOM_CONFIG), then LOOM_* environment
variables (nested keys joined by __, e.g. LOOM_AGENT__CONCURRENCY=4), then flags.

Exit codes:
  0  success
  1  the command failed
  2  bad configuration or usage
  3  NATS unreachable, or it refused a request
  4  the embedded nats-server is missing or did not start
  5  an address or data directory is already in use";

/// Loom: scheduled workers across many machines, over NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "loom", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// The configuration file (loom.toml).
    #[arg(
        long,
        short = 'c',
        env = "LOOM_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `loom_broker=debug,info`.
    #[arg(
        long,
        env = "LOOM_LOG",
        global = true,
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,
    /// Log line format.
    #[arg(long, env = "LOOM_LOG_FORMAT", global = true, default_value = "text")]
    pub log_format: LogFormat,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: the single-machine mesh. Without a NATS
    /// URL it starts an embedded nats-server.
    Up,
    /// Create or update the JetStream topology (streams, consumers, buckets).
    /// Idempotent.
    Init(InitArgs),
    /// Validate the configuration and print each worker's next fires.
    Check(CheckArgs),
}

/// `loom init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Also delete run consumers of workers no longer in the registry (their
    /// pending runs are dropped).
    #[arg(long)]
    pub prune: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loom check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// How many upcoming fires to show per worker.
    #[arg(long, default_value_t = 3)]
    pub fires: usize,
    /// Compute fires after this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "INSTANT")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
