//! How one run executes on this machine: the subprocess executor, the
//! enforcement bundles and their limits, and the worker process contract
//! (DESIGN §6 and §7).
//!
//! This crate owns everything about one attempt once an agent has decided
//! to run it: the run directory, the cleared environment, the process group,
//! the timeout and cancellation, output capture, resource usage (`wait4`
//! rusage), resource limits (setrlimit in the child) and the read-only copy
//! of the enforcement bundle, checked against its digest after the run.
//! It also packs bundles into their canonical, digest-named archives and
//! unpacks verified copies into a local cache.
//!
//! This crate knows nothing about NATS: it is handed a run command and a
//! worker definition and gives back what happened ([`Execution`]). Fetching
//! bundles, acking, retrying and judging results belong to the agent and
//! the validator.
//!
//! Module map, following one attempt: [`environment`] decides the variables
//! (or refuses the run), [`rundir`] prepares the directory and the bundle
//! copy (from [`bundle`]), [`process`] starts, signals and reaps the
//! process, [`output`] captures stdout and stderr, [`cost`] reads reported
//! costs, and [`executor`] ties them together.

pub mod bundle;
pub mod cost;
pub mod environment;
pub mod executor;
pub mod output;
pub mod process;
pub mod rundir;
mod tree;

pub use bundle::{BundleError, Limits, LoadedBundle, PackedBundle, digest_of_dir, pack, unpack};
pub use environment::{Refusal, param_env_name};
pub use executor::{Execution, Executor, ExecutorSettings, Invocation};
