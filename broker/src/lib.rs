//! Loom's one adapter to NATS JetStream.
//!
//! Every broker interaction of every role lives here, so a reader finds them
//! in one place: connecting with the configured credentials and TLS
//! ([`connect`]), creating and updating the topology ([`topology`]), and the
//! embedded nats-server that `loom up` and the tests start ([`embedded`]).
//! An operation the server refuses for lack of a permission fails at once
//! with a sentence naming the user and the subject (`refusal`), rather than
//! by timing out.
//!
//! The broker crate knows the wire format only through `loom-protocol`, and
//! knows nothing of what roles decide.

pub mod ack;
pub mod connect;
pub mod embedded;
pub mod objects;
pub mod publish;
pub mod read;
mod refusal;
pub mod state;
pub mod topology;

pub use ack::{AckError, acknowledge_confirmed};
pub use connect::{Broker, ConnectError, connect};
pub use embedded::{EmbeddedError, EmbeddedServer, ServerOptions};
pub use objects::ObjectError;
pub use publish::{PendingPublish, PublishError, Stored};
pub use read::{ReadError, ReadFrom, StoredMessage};
pub use state::{Bucket, Change, SetOutcome, StateError, Versioned, WorkerLoad};
pub use topology::{Action, TopologyError, TopologyReport};
