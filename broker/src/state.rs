//! Loom's key-value buckets: typed JSON values, compare-and-set, watches;
//! and the load of a worker's run consumer.

use std::sync::Arc;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Broker;
use crate::refusal::{Refusals, is_api_subject_of};

/// A key-value operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("key-value bucket {bucket}, key {key:?}: {detail}")]
pub struct StateError {
    /// The bucket.
    pub bucket: String,
    /// The key, or empty for bucket-wide operations.
    pub key: String,
    /// What went wrong.
    pub detail: String,
}

/// The header JetStream's key-value layer marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// One of the mesh's buckets, with typed JSON values. Cheap to clone: the
/// clones share one handle (a key-value store's handle carries its stream's
/// whole configuration).
#[derive(Clone)]
pub struct Bucket {
    name: Arc<str>,
    store: Arc<kv::Store>,
    refusals: Refusals,
}

/// A value and the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision, for compare-and-set.
    pub revision: u64,
}

/// A change seen by [`Bucket::watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change<T> {
    /// The key holds a new value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: T,
        /// Its revision.
        revision: u64,
    },
    /// The key was deleted, purged, or expired (with limit markers).
    Removed {
        /// The key.
        key: String,
    },
}

/// Whether a compare-and-set found the revision it expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Written, at this new revision.
    Written(u64),
    /// Someone else wrote first (or, for create, the key exists).
    Conflict,
}

impl Broker {
    /// Opens a bucket of the topology by name.
    pub async fn bucket(&self, name: &str) -> Result<Bucket, StateError> {
        let fail = |detail: String| StateError {
            bucket: name.to_owned(),
            key: String::new(),
            detail,
        };
        let stream = format!("KV_{name}");
        let store = self
            .refusals()
            .guard(
                |subject| is_api_subject_of(subject, &stream),
                self.jetstream().get_key_value(name),
            )
            .await
            .map_err(fail)?
            .map_err(|e| fail(e.to_string()))?;
        Ok(Bucket {
            name: name.into(),
            store: Arc::new(store),
            refusals: self.refusals().clone(),
        })
    }

    /// Runs of `worker` waiting to be delivered and delivered but not yet
    /// acknowledged (running, or waiting for a retry), from its run consumer.
    pub async fn worker_load(&self, worker: &str) -> Result<WorkerLoad, StateError> {
        let stream_name = self.names().runs_stream();
        let durable = self.names().run_consumer(worker);
        let error = |detail: String| StateError {
            bucket: stream_name.clone(),
            key: durable.clone(),
            detail,
        };
        let stream = self
            .jetstream()
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| error(e.to_string()))?;
        let info = stream
            .consumer_info(&durable)
            .await
            .map_err(|e| error(e.to_string()))?;
        Ok(WorkerLoad {
            waiting: info.num_pending,
            in_progress: u64::try_from(info.num_ack_pending).unwrap_or(0),
        })
    }
}

/// How many runs of a worker JetStream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerLoad {
    /// Not yet delivered to any agent.
    pub waiting: u64,
    /// Delivered and not acknowledged: running, or waiting for a retry.
    pub in_progress: u64,
}

impl WorkerLoad {
    /// Whether any run is queued or in progress.
    pub fn busy(&self) -> bool {
        self.waiting + self.in_progress > 0
    }
}

impl Bucket {
    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, key: &str, detail: impl std::fmt::Display) -> StateError {
        StateError {
            bucket: self.name.to_string(),
            key: key.to_owned(),
            detail: detail.to_string(),
        }
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, StateError> {
        serde_json::from_slice(bytes).map_err(|e| self.error(key, format!("unreadable value: {e}")))
    }

    fn encode<T: Serialize>(&self, key: &str, value: &T) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(value).map_err(|e| self.error(key, e))
    }

    /// The value of `key` and its revision, if the key holds one.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StateError> {
        let stream = format!("KV_{}", self.name);
        let entry = self
            .refusals
            .guard(
                |subject| is_api_subject_of(subject, &stream),
                self.store.entry(key),
            )
            .await
            .map_err(|refusal| self.error(key, refusal))?
            .map_err(|e| self.error(key, e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(Versioned {
                value: self.decode(key, &entry.value)?,
                revision: entry.revision,
            })),
            _ => Ok(None),
        }
    }

    /// The value of the last key matching `pattern` (a key with `*` for
    /// whole tokens, such as `run.*.<id>`) and its revision, if that key
    /// holds one. One direct get, however many keys match.
    pub async fn get_matching<T: DeserializeOwned>(
        &self,
        pattern: &str,
    ) -> Result<Option<Versioned<T>>, StateError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = format!("KV_{}", self.name);
        let found = self
            .refusals
            .guard(
                |subject| is_api_subject_of(subject, &stream),
                self.store
                    .stream
                    .direct_get_last_for_subject(format!("$KV.{}.{pattern}", self.name)),
            )
            .await
            .map_err(|refusal| self.error(pattern, refusal))?;
        let message = match found {
            Ok(message) => message,
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.error(pattern, error)),
        };
        // A deleted or purged key's last message is its marker.
        let removed = message
            .headers
            .get(KV_OPERATION)
            .is_some_and(|operation| operation.as_str() != "PUT");
        if removed {
            return Ok(None);
        }
        Ok(Some(Versioned {
            value: self.decode(pattern, &message.payload)?,
            revision: message.sequence,
        }))
    }

    /// Runs a write of `key`; a write the server refuses (the user may not
    /// write that key) fails at once, saying so.
    async fn write<T>(
        &self,
        key: &str,
        operation: impl std::future::Future<Output = T>,
    ) -> Result<T, StateError> {
        let subject = format!("$KV.{}.{key}", self.name);
        self.refusals
            .guard(|refused| refused == subject, operation)
            .await
            .map_err(|refusal| self.error(key, refusal))
    }

    /// Writes `value` whatever the key holds.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, StateError> {
        let bytes = self.encode(key, value)?;
        self.write(key, self.store.put(key, bytes.into()))
            .await?
            .map_err(|e| self.error(key, e))
    }

    /// Writes `value` only if the key holds nothing.
    pub async fn create<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<SetOutcome, StateError> {
        let bytes = self.encode(key, value)?;
        match self
            .write(key, self.store.create(key, bytes.into()))
            .await?
        {
            Ok(revision) => Ok(SetOutcome::Written(revision)),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                Ok(SetOutcome::Conflict)
            }
            Err(error) => Err(self.error(key, error)),
        }
    }

    /// Writes `value` only if the key is still at `revision`.
    pub async fn update<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<SetOutcome, StateError> {
        let bytes = self.encode(key, value)?;
        match self
            .write(key, self.store.update(key, bytes.into(), revision))
            .await?
        {
            Ok(revision) => Ok(SetOutcome::Written(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Ok(SetOutcome::Conflict)
            }
            Err(error) => Err(self.error(key, error)),
        }
    }

    /// Deletes `key` (watchers see it removed).
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.write(key, self.store.delete(key))
            .await?
            .map_err(|e| self.error(key, e))
    }

    /// Deletes `key` only if it is still at `revision`.
    pub async fn delete_at(&self, key: &str, revision: u64) -> Result<SetOutcome, StateError> {
        match self
            .write(key, self.store.delete_expect_revision(key, Some(revision)))
            .await?
        {
            Ok(()) => Ok(SetOutcome::Written(revision)),
            Err(error) if error.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                Ok(SetOutcome::Conflict)
            }
            Err(error) => Err(self.error(key, error)),
        }
    }

    /// Every current value under keys matching `pattern` (e.g. `fire.*`), read
    /// in one pass; keys that were deleted are left out. Values that cannot be
    /// read are skipped with a warning.
    pub async fn snapshot<T: DeserializeOwned>(
        &self,
        broker: &Broker,
        pattern: &str,
    ) -> Result<Vec<(String, T)>, StateError> {
        let prefix = format!("$KV.{}.", self.name);
        let messages = broker
            .read_stream(
                &format!("KV_{}", self.name),
                &format!("{prefix}{pattern}"),
                crate::ReadFrom::LastPerSubject,
            )
            .await
            .map_err(|e| self.error(pattern, e))?;
        let mut values = Vec::with_capacity(messages.len());
        for message in messages {
            let removed = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if removed || message.payload.is_empty() {
                continue;
            }
            let key = message
                .subject
                .strip_prefix(&prefix)
                .unwrap_or(&message.subject)
                .to_owned();
            match serde_json::from_slice(&message.payload) {
                Ok(value) => values.push((key, value)),
                Err(error) => {
                    tracing::warn!(bucket = %self.name, %key, %error, "unreadable value ignored")
                }
            }
        }
        Ok(values)
    }

    /// Every current value under keys matching `pattern` (`pause.*`), then
    /// every change, as a stream. Values that cannot be read are skipped with
    /// a warning rather than ending the watch.
    pub async fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        pattern: &str,
    ) -> Result<impl futures::Stream<Item = Change<T>> + Send + use<T>, StateError> {
        let stream = format!("KV_{}", self.name);
        let watch = self
            .refusals
            .guard(
                |subject| is_api_subject_of(subject, &stream),
                self.store.watch_with_history(pattern),
            )
            .await
            .map_err(|refusal| self.error(pattern, refusal))?
            .map_err(|e| self.error(pattern, e))?;
        let bucket = self.name.clone();
        Ok(watch.filter_map(move |entry| {
            let bucket = bucket.clone();
            async move {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(error) => {
                        tracing::warn!(%bucket, %error, "key-value watch error");
                        return None;
                    }
                };
                match entry.operation {
                    kv::Operation::Put => match serde_json::from_slice(&entry.value) {
                        Ok(value) => Some(Change::Put {
                            key: entry.key,
                            value,
                            revision: entry.revision,
                        }),
                        Err(error) => {
                            tracing::warn!(%bucket, key = %entry.key, %error, "unreadable value ignored");
                            None
                        }
                    },
                    kv::Operation::Delete | kv::Operation::Purge => Some(Change::Removed { key: entry.key }),
                }
            }
        }))
    }
}
