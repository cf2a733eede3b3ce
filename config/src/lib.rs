//! Loom's configuration: `loom.toml`, the worker registry, and schedules.
//!
//! Loading has two stages. [`raw`] mirrors the files key for key (figment
//! merges defaults, `loom.toml`, `LOOM_*` environment variables with `__`
//! for nesting, and command-line overrides, in that order). [`validate`]
//! turns that into the typed [`Config`] every role is handed, refusing bad
//! input with a [`ConfigError`] that names the file, the worker and the
//! field. [`schedule`] parses cron expressions and computes fire instants in
//! IANA time zones with explicit daylight-saving rules.
//!
//! This crate does not talk to NATS and does not start anything.

pub mod error;
pub mod load;
pub mod raw;
pub mod schedule;
pub mod settings;
pub mod validate;

pub use error::{ConfigError, Origin};
pub use load::{Loader, load};
pub use schedule::{DstGap, DstRepeat, Schedule};
pub use settings::*;
