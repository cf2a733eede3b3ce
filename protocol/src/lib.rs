//! Loom's wire contract: what travels between the roles of the mesh.
//!
//! This crate owns the subject names ([`subjects`]), the message types
//! ([`messages`]), the codec that turns them into bytes and back ([`codec`]),
//! and the JetStream topology (streams, consumers, buckets) described as plain
//! data ([`topology`]). Every name here is part of the public contract of
//! DESIGN §3 and §12: scripts, dashboards and alert rules depend on it.
//!
//! `protocol` does no I/O and knows nothing of tokio or NATS clients: roles
//! convert at their edge (the `broker` crate turns [`topology`] into
//! JetStream API calls).

pub mod codec;
pub mod identity;
pub mod messages;
pub mod metrics;
pub mod state;
pub mod subjects;
pub mod topology;
pub mod workflow;

pub use codec::{DecodeError, EncodeError};
pub use messages::{
    AttemptSummary, CancelRequest, DeadLetter, DeadLetterReason, Outcome, RunCommand, RunResult,
    SkipReason, SkippedFire, Trigger, Verdict, VerdictKind, WorkflowRef,
};
pub use subjects::Subjects;

/// The version every message written by this build carries in its `v` field.
///
/// Decoders accept any version up to this one; a message from a newer Loom is
/// refused with [`DecodeError::UnsupportedVersion`] rather than misread.
pub const WIRE_VERSION: u32 = 1;
