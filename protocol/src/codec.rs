//! The wire codec: MessagePack with named fields, JSON accepted.
//!
//! Loom writes MessagePack (header `Content-Type: application/msgpack`) with
//! struct fields as map keys and ids and times as strings, so the same field
//! names work in both encodings. Decoders accept either: a body whose first
//! non-blank byte is `{` is read as JSON, anything else as MessagePack.
//!
//! Run subjects get special care ([`decode_run_command`]): an empty or partial
//! JSON body is a manual run with defaults filled in, so that people can drive
//! Loom with `nats pub`. Decoding never panics on any input; it returns a
//! [`DecodeError`] whose text is the description a dead letter carries.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::WIRE_VERSION;
use crate::messages::{RunCommand, Trigger, WorkflowRef};

/// The `Content-Type` header value of every message Loom writes.
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";

/// The encoding a body was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON (first non-blank byte `{`).
    Json,
    /// MessagePack (anything else).
    MessagePack,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Json => "JSON",
            Encoding::MessagePack => "MessagePack",
        })
    }
}

/// A message could not be encoded. Only a bug can cause this: every Loom
/// message is representable in MessagePack.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode message as MessagePack: {0}")]
pub struct EncodeError(#[from] rmp_serde::encode::Error);

/// Why a body could not be turned into a message. The text is one sentence
/// fit for a dead letter's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is neither valid JSON nor valid MessagePack of the expected shape.
    #[error("malformed {what}: not valid {encoding}: {detail}")]
    Malformed {
        /// What was being decoded, e.g. `run command`.
        what: &'static str,
        /// The encoding it was read as.
        encoding: Encoding,
        /// The decoder's own words.
        detail: String,
    },
    /// The message was written by a newer Loom.
    #[error("unsupported {what} version {found}; this build reads up to {supported}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The `v` field found.
        found: u32,
        /// [`WIRE_VERSION`].
        supported: u32,
    },
    /// A run command names another worker than the subject it was published on.
    #[error(
        "run command for worker {body_worker:?} was published on the subject of worker {subject_worker:?}"
    )]
    WorkerMismatch {
        /// The worker token of the subject.
        subject_worker: String,
        /// The `worker` field of the body.
        body_worker: String,
    },
    /// A param value is not a string, number or boolean.
    #[error("malformed run command: param {name:?} must be a string, number or boolean")]
    BadParam {
        /// The param's name.
        name: String,
    },
}

impl DecodeError {
    /// Whether the body could not be parsed at all (as opposed to parsing into
    /// something Loom refuses).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            DecodeError::Malformed { .. } | DecodeError::BadParam { .. }
        )
    }
}

/// Encodes any Loom message as MessagePack with named fields and
/// string-encoded ids and times.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, EncodeError> {
    let mut buffer = Vec::with_capacity(256);
    let mut serializer = rmp_serde::Serializer::new(&mut buffer)
        .with_struct_map()
        .with_human_readable();
    message.serialize(&mut serializer)?;
    Ok(buffer)
}

/// Encodes any Loom message as JSON, for people and `--json` output.
pub fn encode_json<T: Serialize>(message: &T) -> Vec<u8> {
    // Loom's messages hold only strings, numbers, maps and lists, which JSON
    // always represents; an error here would be a bug in a message type.
    serde_json::to_vec(message).unwrap_or_default()
}

/// Which encoding a body is in: JSON if its first non-blank byte is `{`.
pub fn sniff(body: &[u8]) -> Encoding {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Encoding::Json,
        _ => Encoding::MessagePack,
    }
}

/// Decodes a message written by Loom (or by hand in JSON). `what` names the
/// message kind in errors, e.g. `"run result"`.
pub fn decode<T: DeserializeOwned + Versioned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, DecodeError> {
    let encoding = sniff(body);
    let message: T = decode_as(what, encoding, body)?;
    check_version(what, message.version())?;
    Ok(message)
}

fn decode_as<T: DeserializeOwned>(
    what: &'static str,
    encoding: Encoding,
    body: &[u8],
) -> Result<T, DecodeError> {
    let malformed = |detail: String| DecodeError::Malformed {
        what,
        encoding,
        detail,
    };
    match encoding {
        Encoding::Json => serde_json::from_slice(body).map_err(|e| malformed(e.to_string())),
        Encoding::MessagePack => {
            if body.is_empty() {
                return Err(malformed("the body is empty".to_owned()));
            }
            let mut deserializer =
                rmp_serde::Deserializer::from_read_ref(body).with_human_readable();
            T::deserialize(&mut deserializer).map_err(|e| malformed(e.to_string()))
        }
    }
}

fn check_version(what: &'static str, found: u32) -> Result<(), DecodeError> {
    if found > WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            what,
            found,
            supported: WIRE_VERSION,
        });
    }
    Ok(())
}

/// Messages that carry a `v` field.
pub trait Versioned {
    /// The message's wire version.
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 {
                self.v
            }
        }
    )*};
}
versioned!(
    crate::RunCommand,
    crate::RunResult,
    crate::Verdict,
    crate::DeadLetter,
    crate::messages::SkippedFire,
    crate::messages::CancelRequest
);

/// A run command as it may arrive on a run subject: every field optional.
/// Unknown fields are refused so that a typo (`"param"`) is an error rather
/// than a run without params.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    v: Option<u32>,
    run_id: Option<Uuid>,
    worker: Option<String>,
    scheduled_at: Option<DateTime<Utc>>,
    trigger: Option<Trigger>,
    #[serde(default)]
    params: BTreeMap<String, ParamValue>,
    enforcement_digest: Option<String>,
    deadline: Option<DateTime<Utc>>,
    replay_of: Option<Uuid>,
    workflow: Option<WorkflowRef>,
}

/// A param value as people write it in JSON: `7`, `"7"` and `true` are all
/// accepted and become strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ParamValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Flag(bool),
    Other(serde::de::IgnoredAny),
}

/// What [`decode_run_command`] fills in for fields a manual run leaves out.
#[derive(Debug, Clone, Copy)]
pub struct RunDefaults {
    /// The run id of a run that names none (a fresh UUID v7).
    pub run_id: Uuid,
    /// The scheduled instant of a run that names none (now).
    pub now: DateTime<Utc>,
}

impl RunDefaults {
    /// Defaults for a message JetStream stored at `sequence` of `stream` at
    /// `published`: every reader derives the same run id and instant.
    pub fn for_message(stream: &str, sequence: u64, published: DateTime<Utc>) -> Self {
        RunDefaults {
            run_id: crate::identity::message_run_id(stream, sequence, published),
            now: published,
        }
    }
}

/// Decodes the body of a message on `<prefix>.run.<subject_worker>`.
///
/// An empty (or blank) body is a manual run with defaults. A JSON or
/// MessagePack body may leave out any field: the run id, the scheduled
/// instant (`now`) and the trigger (`manual`) are filled in from `defaults`,
/// and the worker from the subject. A body naming another worker than its
/// subject is refused.
pub fn decode_run_command(
    subject_worker: &str,
    body: &[u8],
    defaults: RunDefaults,
) -> Result<RunCommand, DecodeError> {
    const WHAT: &str = "run command";
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        decode_as(WHAT, sniff(body), body)?
    };
    check_version(WHAT, request.v.unwrap_or(WIRE_VERSION))?;
    if let Some(body_worker) = &request.worker
        && body_worker != subject_worker
    {
        return Err(DecodeError::WorkerMismatch {
            subject_worker: subject_worker.to_owned(),
            body_worker: body_worker.clone(),
        });
    }
    let mut params = BTreeMap::new();
    for (name, value) in request.params {
        let text = match value {
            ParamValue::Text(text) => text,
            ParamValue::Integer(number) => number.to_string(),
            ParamValue::Float(number) => number.to_string(),
            ParamValue::Flag(flag) => flag.to_string(),
            ParamValue::Other(_) => return Err(DecodeError::BadParam { name }),
        };
        params.insert(name, text);
    }
    Ok(RunCommand {
        v: WIRE_VERSION,
        run_id: request.run_id.unwrap_or(defaults.run_id),
        worker: subject_worker.to_owned(),
        scheduled_at: request.scheduled_at.unwrap_or(defaults.now),
        trigger: request.trigger.unwrap_or(Trigger::Manual),
        params,
        enforcement_digest: request.enforcement_digest,
        deadline: request.deadline,
        replay_of: request.replay_of,
        workflow: request.workflow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;
    use chrono::TimeZone;

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn defaults() -> RunDefaults {
        RunDefaults {
            run_id: Uuid::parse_str("0190f0e8-0000-7000-8000-000000000001").expect("uuid"),
            now: instant("2026-03-08T08:30:00Z"),
        }
    }

    fn full_command() -> RunCommand {
        let mut command = RunCommand::new(
            Uuid::parse_str("0190f0e8-0000-7000-8000-0000000000aa").expect("uuid"),
            "staleness-detector",
            instant("2026-03-08T09:00:00Z"),
            Trigger::Schedule,
        );
        command.params.insert("days".into(), "7".into());
        command.enforcement_digest = Some("ab".repeat(32));
        command.deadline = Some(instant("2026-03-08T10:00:00Z"));
        command.workflow = Some(WorkflowRef {
            run_id: Uuid::nil(),
            round: 2,
            task: "t1".into(),
        });
        command
    }

    #[test]
    fn messagepack_round_trips_with_named_fields_and_string_ids() {
        let command = full_command();
        let bytes = encode(&command).expect("encode");
        // Named fields: the keys are in the bytes. String ids: the hyphenated uuid is too.
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "run_id",
            "scheduled_at",
            "enforcement_digest",
            "0190f0e8-0000-7000-8000-0000000000aa",
            "2026-03-08T09:00:00Z",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let back: RunCommand = decode("run command", &bytes).expect("decode");
        assert_eq!(back, command);
        let via_run_subject =
            decode_run_command("staleness-detector", &bytes, defaults()).expect("decode run");
        assert_eq!(via_run_subject, command);
    }

    #[test]
    fn json_round_trips_every_message_type() {
        let result = RunResult {
            v: 1,
            run_id: Uuid::nil(),
            worker: "w".into(),
            attempt: 2,
            agent_id: "host-1".into(),
            started_at: instant("2026-01-01T00:00:00Z"),
            finished_at: instant("2026-01-01T00:00:01.5Z"),
            outcome: Outcome::TimedOut,
            exit_code: None,
            stdout_tail: "STATUS: ok".into(),
            stderr_tail: String::new(),
            stdout_bytes: 10,
            stderr_bytes: 0,
            cpu_ms: 3,
            max_rss_kb: 2048,
            enforcement_digest: None,
            cost: BTreeMap::from([("usd".to_owned(), 0.25)]),
            last_attempt: true,
        };
        let json = encode_json(&result);
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(value["outcome"], "timed_out");
        assert_eq!(value["exit_code"], serde_json::Value::Null);
        assert_eq!(value["run_id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(
            decode::<RunResult>("run result", &json).expect("decode"),
            result
        );

        let verdict = Verdict {
            v: 1,
            run_id: Uuid::nil(),
            worker: "w".into(),
            verdict: VerdictKind::EnforcementViolation,
            reason: "digest differs".into(),
            attempts: 1,
            at: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("time"),
        };
        let bytes = encode(&verdict).expect("encode");
        assert_eq!(
            decode::<Verdict>("verdict", &bytes).expect("decode"),
            verdict
        );

        let dead = DeadLetter {
            v: 1,
            run_id: Uuid::nil(),
            worker: "w".into(),
            reason: DeadLetterReason::AgentLost,
            description: "agents died".into(),
            attempts: vec![],
            command: Some(full_command()),
            dead_at: instant("2026-01-01T00:00:00Z"),
            replayed_by: None,
        };
        let value: serde_json::Value = serde_json::from_slice(&encode_json(&dead)).expect("json");
        assert_eq!(value["reason"], "agent_lost");
        let bytes = encode(&dead).expect("encode");
        assert_eq!(
            decode::<DeadLetter>("dead letter", &bytes).expect("decode"),
            dead
        );
    }

    #[test]
    fn empty_body_on_a_run_subject_is_a_manual_run_with_defaults() {
        for body in [&b""[..], b"  \n", b"{}"] {
            let command = decode_run_command("staleness-detector", body, defaults()).expect("ok");
            assert_eq!(command.worker, "staleness-detector");
            assert_eq!(command.trigger, Trigger::Manual);
            assert_eq!(command.run_id, defaults().run_id);
            assert_eq!(command.scheduled_at, defaults().now);
            assert!(command.params.is_empty());
            assert_eq!(command.v, WIRE_VERSION);
        }
    }

    #[test]
    fn json_params_become_strings() {
        let body = br#"{"params":{"days":"7","limit":20,"ratio":0.5,"dry":true}}"#;
        let command = decode_run_command("w", body, defaults()).expect("ok");
        assert_eq!(command.params["days"], "7");
        assert_eq!(command.params["limit"], "20");
        assert_eq!(command.params["ratio"], "0.5");
        assert_eq!(command.params["dry"], "true");
        assert_eq!(command.trigger, Trigger::Manual);
    }

    #[test]
    fn nested_param_is_refused_by_name() {
        let error = decode_run_command("w", br#"{"params":{"days":[1]}}"#, defaults()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::BadParam {
                name: "days".into()
            }
        );
        assert!(error.is_malformed());
    }

    #[test]
    fn typo_in_a_field_name_is_refused() {
        let error = decode_run_command("w", br#"{"param":{}}"#, defaults()).unwrap_err();
        assert!(error.is_malformed());
        assert!(
            error
                .to_string()
                .starts_with("malformed run command: not valid JSON: unknown field `param`"),
            "{error}"
        );
    }

    #[test]
    fn garbage_is_malformed_with_a_clear_description() {
        let error = decode_run_command("w", b"\xc1\xff not anything", defaults()).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Malformed {
                encoding: Encoding::MessagePack,
                ..
            }
        ));
        assert!(
            error
                .to_string()
                .starts_with("malformed run command: not valid MessagePack")
        );
        let error = decode_run_command("w", b"{not json", defaults()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("malformed run command: not valid JSON: key must be a string"),
            "{error}"
        );
    }

    #[test]
    fn worker_in_body_must_match_subject() {
        let error = decode_run_command("a", br#"{"worker":"b"}"#, defaults()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::WorkerMismatch {
                subject_worker: "a".into(),
                body_worker: "b".into()
            }
        );
        assert!(decode_run_command("a", br#"{"worker":"a"}"#, defaults()).is_ok());
    }

    #[test]
    fn newer_versions_are_refused_not_misread() {
        let error = decode_run_command("w", br#"{"v":2}"#, defaults()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::UnsupportedVersion {
                what: "run command",
                found: 2,
                supported: 1
            }
        );
    }

    #[test]
    fn empty_body_is_an_error_for_messages_that_need_one() {
        let error = decode::<RunResult>("run result", b"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "malformed run result: not valid MessagePack: the body is empty"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Arbitrary bytes on a run subject never panic the decoder.
            #[test]
            fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_run_command("w", &body, defaults());
                let _ = decode::<RunResult>("run result", &body);
                let _ = decode::<DeadLetter>("dead letter", &body);
            }

            /// Arbitrary bytes after a `{` (JSON path) never panic either.
            #[test]
            fn arbitrary_json_like_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
                let mut body = b"{".to_vec();
                body.extend(tail);
                let _ = decode_run_command("w", &body, defaults());
            }

            /// Truncating a valid message anywhere gives an error, not a panic.
            #[test]
            fn truncated_messages_are_errors(cut in 0usize..400) {
                let bytes = encode(&full_command()).expect("encode");
                let cut = cut.min(bytes.len().saturating_sub(1));
                let result = decode_run_command("staleness-detector", &bytes[..cut], defaults());
                if cut > 0 {
                    prop_assert!(result.is_err());
                }
            }

            /// Params of any string content survive both encodings.
            #[test]
            fn params_round_trip(name in "[a-z_]{1,12}", value in ".{0,40}") {
                let mut command = full_command();
                command.params.insert(name, value);
                let bytes = encode(&command).expect("encode");
                prop_assert_eq!(&decode_run_command("staleness-detector", &bytes, defaults()).expect("mp"), &command);
                let json = encode_json(&command);
                prop_assert_eq!(&decode_run_command("staleness-detector", &json, defaults()).expect("json"), &command);
            }
        }
    }
}
