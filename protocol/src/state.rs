//! What Loom keeps in its key-value buckets, and under which keys.
//!
//! Values are JSON so that `nats kv get` shows them to people. Each key has
//! one writer: the leader lease the schedulers, `fire.*` the leader scheduler,
//! `pause.*` the operator commands, `bundle.*` whoever publishes enforcement
//! bundles.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Key of the leader lease in the leader bucket.
pub const LEADER_KEY: &str = "scheduler";

/// Key of a worker's fire state: `fire.<worker>`.
pub fn fire_key(worker: &str) -> String {
    format!("fire.{worker}")
}

/// Key of a worker's pause: `pause.<worker>`.
pub fn pause_key(worker: &str) -> String {
    format!("pause.{worker}")
}

/// Key of the current digest of an enforcement bundle: `bundle.<name>`.
pub fn bundle_key(name: &str) -> String {
    format!("bundle.{name}")
}

/// Who holds the leader lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The scheduler's id.
    pub id: String,
    /// When it became leader.
    pub since: DateTime<Utc>,
}

/// Where the leader scheduler stands with a worker: the last fire it
/// published (or recorded as not run). A new leader resumes after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FireState {
    /// The last fire instant handled.
    pub last_fire: DateTime<Utc>,
    /// The run id of the last fire published, if it was.
    pub last_run_id: Option<Uuid>,
}

/// A worker's pause, set by `loom pause` and removed by `loom resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Paused until this instant; `None` until resumed.
    pub until: Option<DateTime<Utc>>,
    /// Why, for people.
    pub note: String,
    /// When it was paused.
    pub at: DateTime<Utc>,
}

impl Pause {
    /// Whether the pause holds at `instant`.
    pub fn holds_at(&self, instant: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| instant < until)
    }
}

/// The current published version of an enforcement bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// Lower-case hex SHA-256 of the bundle archive; its object name.
    pub digest: String,
    /// Archive size in bytes.
    pub size: u64,
    /// When this version was published.
    pub published_at: DateTime<Utc>,
}
