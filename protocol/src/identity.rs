//! The identity of a scheduled fire: its `Nats-Msg-Id` and its run id.
//!
//! Both derive from the worker name and the fire instant alone, so every
//! scheduler (a new leader after a failover included) and `loom backfill`
//! publish the very same command for the same fire: JetStream's duplicate
//! window drops a second publish, and the run id lets anyone check whether a
//! fire already ran.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `Nats-Msg-Id` of a fire: `<worker>@<instant in RFC 3339, UTC>`.
pub fn fire_msg_id(worker: &str, instant: DateTime<Utc>) -> String {
    format!(
        "{worker}@{}",
        instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    )
}

/// The run id of a fire: a UUID v7 whose timestamp is the fire instant and
/// whose random bits are a hash of its message id, so the same fire always
/// has the same id and ids still sort by time.
pub fn fire_run_id(worker: &str, instant: DateTime<Utc>) -> Uuid {
    let digest = Sha256::digest(fire_msg_id(worker, instant).as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(instant.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// The run id of a run command that names none (an empty or partial body
/// published by hand): derived from where JetStream stored it, so that the
/// agents, every redelivery, and the validator all see the same id. A UUID
/// v7 with the publish time as its timestamp.
pub fn message_run_id(stream: &str, sequence: u64, published: DateTime<Utc>) -> Uuid {
    let digest = Sha256::digest(format!("{stream}#{sequence}").as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(published.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// The `Nats-Msg-Id` header name.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn message_id_is_worker_at_utc_instant() {
        let at = instant("2026-03-08T03:00:00-05:00");
        assert_eq!(
            fire_msg_id("staleness-detector", at),
            "staleness-detector@2026-03-08T08:00:00Z"
        );
    }

    #[test]
    fn a_hand_published_run_gets_its_id_from_its_stream_position() {
        let published = instant("2026-03-08T08:00:00.250Z");
        let id = message_run_id("LOOM_RUNS", 42, published);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id, message_run_id("LOOM_RUNS", 42, published));
        assert_ne!(id, message_run_id("LOOM_RUNS", 43, published));
    }

    #[test]
    fn run_id_is_a_stable_v7_per_fire() {
        let at = instant("2026-03-08T08:00:00Z");
        let id = fire_run_id("w", at);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id, fire_run_id("w", at), "same fire, same id");
        assert_ne!(id, fire_run_id("v", at), "another worker, another id");
        let later = fire_run_id("w", instant("2026-03-08T08:00:01Z"));
        assert_ne!(id, later);
        assert!(id < later, "ids sort by fire instant");
    }
}
