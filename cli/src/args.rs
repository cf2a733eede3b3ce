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
    /// Log filter, e.g. `info` or `loom_broker=debug,info`. Default: `info`
    /// for the roles (`up`, `scheduler`, `agent`, ...), `warn` for one-shot
    /// commands.
    #[arg(long, env = "LOOM_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
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

impl Command {
    /// Whether the command runs until stopped (a role), rather than once.
    pub fn is_role(&self) -> bool {
        matches!(
            self,
            Command::Up | Command::Scheduler | Command::Agent(_) | Command::Validator
        )
    }
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
    /// Run the scheduler role: leader election and fires. Run two or more.
    Scheduler,
    /// Run an agent: pull and execute the runs of the workers it serves.
    Agent(AgentArgs),
    /// Run the validator: verdicts, the watchdog, dead letters. Run one or more.
    Validator,
    /// Run Klaxon: dead letters become alerts. Run one or more.
    Klaxon,
    /// Show every worker's health: schedule, next and last run, 24 h figures.
    Status(StatusArgs),
    /// Show a worker's recent runs.
    Runs(RunsArgs),
    /// Cancel a run: the agent running it stops it.
    Cancel(CancelArgs),
    /// Dead letters: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Workflows: start, list, show, report, answer.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Enforcement bundles.
    #[command(subcommand)]
    Enforcement(EnforcementCommand),
    /// Run a worker now. Prints the run id on the first line.
    Trigger(TriggerArgs),
    /// Pause a worker: its fires are recorded as skipped until resumed.
    Pause(PauseArgs),
    /// Resume a paused worker (without running the fires it skipped).
    Resume(WorkerArg),
    /// Publish the fires of a past range of a worker's schedule.
    Backfill(BackfillArgs),
}

/// `loom agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Labels served (overrides agent.labels), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "LABEL,...")]
    pub labels: Option<Vec<String>>,
    /// Workers served (overrides agent.workers), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "WORKER,...")]
    pub workers: Option<Vec<String>>,
    /// Runs executed at once (overrides agent.concurrency).
    #[arg(long)]
    pub concurrency: Option<u32>,
}

/// `loom status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the overview as JSON (the shape of `GET /api/workers`).
    #[arg(long)]
    pub json: bool,
}

/// `loom runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The worker's registry name.
    pub worker: String,
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print the runs as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loom cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run's id.
    pub run_id: uuid::Uuid,
    /// Why, recorded in the run's result.
    #[arg(long, default_value = "cancelled by an operator (loom cancel)")]
    pub reason: String,
}

/// `loom enforcement`.
#[derive(Debug, Subcommand)]
pub enum EnforcementCommand {
    /// Publish the bundles the registry's workers name, from enforcement.dir.
    Push {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `loom workflow`.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Start a workflow run; prints its id on the first line.
    Start {
        /// The workflow's registry name.
        workflow: String,
        /// A param for every task, `name=value`; repeat for more.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Wait until the run ends, print its outcome, and exit non-zero
        /// unless it is done.
        #[arg(long)]
        wait: bool,
    },
    /// List workflow runs, newest first.
    List {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a workflow run: rounds, tasks, attempts, the strategist.
    Show {
        /// The workflow run's id.
        run_id: uuid::Uuid,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A workflow run's report: per round, tasks valid/total, durations,
    /// decisions; summed CPU time and cost.
    Report {
        /// The workflow run's id.
        run_id: uuid::Uuid,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer the question a workflow run waits on; the run resumes.
    Answer {
        /// The workflow run's id.
        run_id: uuid::Uuid,
        /// The answer, passed to the strategist (`LOOM_PARAM_ANSWER`).
        text: String,
    },
}

/// `loom dlq`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// Only this worker's.
        #[arg(long)]
        worker: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full (JSON).
    Show {
        /// The dead run's id.
        run_id: uuid::Uuid,
    },
    /// Run dead runs again, as new runs linked by `replay_of`.
    Replay {
        /// One dead run.
        run_id: Option<uuid::Uuid>,
        /// Every not yet replayed dead letter of this worker.
        #[arg(long, conflicts_with = "run_id")]
        worker: Option<String>,
        /// Every not yet replayed dead letter.
        #[arg(long, conflicts_with_all = ["run_id", "worker"])]
        all: bool,
    },
    /// Delete dead letters.
    Purge {
        /// Only this worker's.
        #[arg(long)]
        worker: Option<String>,
    },
}

/// A worker name.
#[derive(Debug, clap::Args)]
pub struct WorkerArg {
    /// The worker's registry name.
    pub worker: String,
}

/// `loom trigger`.
#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// The worker's registry name.
    pub worker: String,
    /// A param for the run, `name=value`; repeat for more. Workers see
    /// `LOOM_PARAM_<NAME>`.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Wait for the run's verdict, print it, and exit non-zero unless it is `valid`.
    #[arg(long)]
    pub wait: bool,
}

/// `loom pause`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The worker's registry name.
    pub worker: String,
    /// Until when: an RFC 3339 instant or a duration from now (`2h`, `3d`).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Why, shown in the ledger and on the dashboard.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// `loom backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The worker's registry name.
    pub worker: String,
    /// Range start: an RFC 3339 instant or a duration before now (`-3d`).
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub from: String,
    /// Range end (inclusive), like --from.
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub to: String,
    /// Refuse ranges with more fires than this.
    #[arg(long, default_value_t = 100)]
    pub max: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
