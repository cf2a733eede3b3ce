//! Loom's configuration: `loom.toml`, the registry of workers and
//! workflows, and schedules.
//!
//! Loading has two stages. [`raw`] mirrors the files key for key (figment
//! merges defaults, `loom.toml`, `LOOM_*` environment variables with `__`
//! for nesting, and command-line overrides, in that order). [`validate`]
//! turns that into the typed [`Config`] every role is handed, refusing bad
//! input with a [`ConfigError`] that names the file, the worker (or
//! workflow) and the field. [`schedule`] parses cron expressions and computes
//! fire instants in IANA time zones with explicit daylight-saving rules.
//! [`plan`] checks a workflow's tasks and groups them into levels.
//!
//! This crate does not talk to NATS, does not start anything and does not
//! run workflows.

pub mod error;
pub mod load;
pub mod plan;
pub mod raw;
pub mod schedule;
pub mod settings;
pub mod validate;

pub use error::{ConfigError, Origin};
pub use load::{Loader, load};
pub use schedule::{DstGap, DstRepeat, Schedule};
pub use settings::*;
