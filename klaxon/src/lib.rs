//! Klaxon, the alert manager: turns dead letters into alerts.
//!
//! It owns the alert sinks (log, webhook, Alertmanager), grouping of dead
//! letters per worker and reason, repeat intervals for alerts that stay
//! firing, and resolution when the worker recovers. It never decides what
//! failed: the validator does, and Klaxon only reports its dead letters.
//!
//! The data flows in this order:
//! - [`alert`]: the [`Alert`] model, built from a [`DeadLetter`](loom_protocol::DeadLetter).
//! - [`group`]: pure decisions, from values to values: does this dead letter
//!   notify, is it counted into an alert already sent, does a recovery resolve
//!   anything. The group state is plain serde data that the wiring persists.
//! - [`sinks`]: where notifications go, each delivered once or with retries
//!   and exponential backoff.
//!
//! - [`role`]: the wiring to the mesh: consuming dead letters and verdicts,
//!   persisting [`GroupState`], calling the sinks. Everything above it is
//!   free of NATS.

pub mod alert;
pub mod group;
pub mod role;
pub mod sinks;

pub use alert::{Alert, AlertKey, AlertStatus, Severity};
pub use group::{GroupState, on_dead_letter, on_recovery};
pub use role::{KlaxonError, run};
pub use sinks::{RetryPolicy, SinkError, SinkKind};
