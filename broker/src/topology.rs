//! Creating and updating the mesh's JetStream topology (streams, consumers,
//! key-value buckets, object stores) from its description in
//! `loom_protocol::topology`.
//!
//! Applying is idempotent: an object that already matches is left alone and
//! reported `unchanged`, one that differs is updated in place (consumers keep
//! their delivery state, so no finished run is replayed). Run consumers of
//! workers no longer in the registry are reported as stale and deleted only
//! when asked (`loom init --prune`): deleting one drops its pending runs.

use std::fmt;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{kv, object_store};
use futures::TryStreamExt;
use loom_protocol::topology::{
    BucketSpec, ConsumerSpec, ObjectStoreSpec, Retention, StreamSpec, Topology,
};

use crate::Broker;
use crate::refusal::is_api_subject_of;

/// What applying did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It did not exist and was created.
    Created,
    /// It existed with other settings and was updated.
    Updated,
    /// It existed as described.
    Unchanged,
    /// It was stale and deleted (`--prune`).
    Deleted,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
        })
    }
}

/// One line of a [`TopologyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `stream`, `consumer`, `bucket` or `object store`.
    pub kind: &'static str,
    /// Its name (`STREAM/consumer` for consumers).
    pub name: String,
    /// What was done.
    pub action: Action,
}

/// What [`Broker::apply_topology`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyReport {
    /// Every object of the topology, in order.
    pub applied: Vec<Applied>,
    /// Run consumers of workers no longer in the registry, left in place.
    pub stale: Vec<String>,
}

impl TopologyReport {
    /// Whether nothing had to change.
    pub fn unchanged(&self) -> bool {
        self.applied
            .iter()
            .all(|item| item.action == Action::Unchanged)
    }
}

/// Why the topology could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("cannot apply {kind} {name}: {detail}")]
pub struct TopologyError {
    /// `stream`, `consumer`, `bucket` or `object store`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// The server's or client's words.
    pub detail: String,
}

impl TopologyError {
    fn new(kind: &'static str, name: &str, detail: impl fmt::Display) -> Self {
        TopologyError {
            kind,
            name: name.to_owned(),
            detail: detail.to_string(),
        }
    }
}

impl Broker {
    /// Creates or updates every object of `topology`. With `prune`, deletes
    /// run consumers that the topology no longer has.
    pub async fn apply_topology(
        &self,
        topology: &Topology,
        prune: bool,
    ) -> Result<TopologyReport, TopologyError> {
        let mut report = TopologyReport::default();
        for spec in &topology.streams {
            let action = self
                .refusable("stream", &spec.name, &spec.name, self.apply_stream(spec))
                .await?;
            report.applied.push(Applied {
                kind: "stream",
                name: spec.name.clone(),
                action,
            });
        }
        for spec in &topology.consumers {
            let name = format!("{}/{}", spec.stream, spec.durable);
            let action = self
                .refusable("consumer", &name, &spec.stream, self.apply_consumer(spec))
                .await?;
            report.applied.push(Applied {
                kind: "consumer",
                name: format!("{}/{}", spec.stream, spec.durable),
                action,
            });
        }
        for spec in &topology.buckets {
            let stream = format!("KV_{}", spec.name);
            let action = self
                .refusable("bucket", &spec.name, &stream, self.apply_bucket(spec))
                .await?;
            report.applied.push(Applied {
                kind: "bucket",
                name: spec.name.clone(),
                action,
            });
        }
        for spec in &topology.object_stores {
            let stream = format!("OBJ_{}", spec.name);
            let action = self
                .refusable(
                    "object store",
                    &spec.name,
                    &stream,
                    self.apply_object_store(spec),
                )
                .await?;
            report.applied.push(Applied {
                kind: "object store",
                name: spec.name.clone(),
                action,
            });
        }
        let runs_stream = self.names().runs_stream();
        let stale = self
            .refusable(
                "stream",
                &runs_stream,
                &runs_stream,
                self.stale_run_consumers(topology),
            )
            .await?;
        for durable in stale {
            if prune {
                self.jetstream()
                    .delete_consumer_from_stream(&durable, &runs_stream)
                    .await
                    .map_err(|e| TopologyError::new("consumer", &durable, e))?;
                report.applied.push(Applied {
                    kind: "consumer",
                    name: format!("{runs_stream}/{durable}"),
                    action: Action::Deleted,
                });
            } else {
                report.stale.push(format!("{runs_stream}/{durable}"));
            }
        }
        Ok(report)
    }

    /// Whether every stream, bucket and object store of `topology` exists:
    /// what `/readyz` requires of a role that does not create them itself.
    pub async fn topology_exists(&self, topology: &Topology) -> Result<bool, TopologyError> {
        let names = topology
            .streams
            .iter()
            .map(|s| s.name.clone())
            .chain(topology.buckets.iter().map(|b| format!("KV_{}", b.name)))
            .chain(
                topology
                    .object_stores
                    .iter()
                    .map(|o| format!("OBJ_{}", o.name)),
            );
        for name in names {
            let config = self
                .refusable("stream", &name, &name, self.stream_config(&name))
                .await?;
            if config.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs `operation` on `stream` for the object `kind` `name`, ending it
    /// at once with the server's refusal when the user may not make one of
    /// its requests (only `admin` may change the topology).
    async fn refusable<T>(
        &self,
        kind: &'static str,
        name: &str,
        stream: &str,
        operation: impl std::future::Future<Output = Result<T, TopologyError>>,
    ) -> Result<T, TopologyError> {
        self.refusals()
            .guard(|subject| is_api_subject_of(subject, stream), operation)
            .await
            .map_err(|detail| TopologyError::new(kind, name, detail))?
    }

    async fn stream_config(&self, name: &str) -> Result<Option<stream::Config>, TopologyError> {
        match self.jetstream().get_stream(name).await {
            Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
            Err(error) => match error.kind() {
                GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(TopologyError::new("stream", name, error)),
            },
        }
    }

    async fn apply_stream(&self, spec: &StreamSpec) -> Result<Action, TopologyError> {
        let desired = stream::Config {
            name: spec.name.clone(),
            description: Some(spec.description.clone()),
            subjects: spec.subjects.clone(),
            retention: match spec.retention {
                Retention::Interest => RetentionPolicy::Interest,
                Retention::Limits => RetentionPolicy::Limits,
            },
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age: spec.max_age,
            duplicate_window: spec.duplicate_window,
            num_replicas: spec.replicas,
            allow_direct: true,
            ..Default::default()
        };
        let fail = |e: &dyn fmt::Display| TopologyError::new("stream", &spec.name, e);
        match self.stream_config(&spec.name).await? {
            None => {
                self.jetstream()
                    .create_stream(desired)
                    .await
                    .map_err(|e| fail(&e))?;
                Ok(Action::Created)
            }
            Some(existing) if stream_matches(&existing, &desired) => Ok(Action::Unchanged),
            Some(existing) => {
                if existing.retention != desired.retention {
                    return Err(fail(&format!(
                        "it exists with {:?} retention and Loom needs {:?}; JetStream cannot change a stream's retention, so delete the stream (losing its messages) and run `loom init` again",
                        existing.retention, desired.retention
                    )));
                }
                self.jetstream()
                    .update_stream(desired)
                    .await
                    .map_err(|e| fail(&e))?;
                Ok(Action::Updated)
            }
        }
    }

    async fn apply_consumer(&self, spec: &ConsumerSpec) -> Result<Action, TopologyError> {
        let name = format!("{}/{}", spec.stream, spec.durable);
        let fail = |e: &dyn fmt::Display| TopologyError::new("consumer", &name, e);
        let desired = pull::Config {
            durable_name: Some(spec.durable.clone()),
            description: Some(spec.description.clone()),
            filter_subject: spec.filter_subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: spec.max_ack_pending,
            ..Default::default()
        };
        let stream = self
            .jetstream()
            .get_stream(&spec.stream)
            .await
            .map_err(|e| fail(&e))?;
        let existing = match stream.consumer_info(&spec.durable).await {
            Ok(info) => Some(info.config),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
            {
                None
            }
            Err(error) => return Err(fail(&error)),
        };
        let action = match &existing {
            None => Action::Created,
            Some(existing)
                if existing.filter_subject == desired.filter_subject
                    && existing.ack_wait == desired.ack_wait
                    && existing.max_deliver == desired.max_deliver
                    && existing.max_ack_pending == desired.max_ack_pending
                    && existing.description == desired.description
                    && existing.ack_policy == desired.ack_policy =>
            {
                return Ok(Action::Unchanged);
            }
            Some(_) => Action::Updated,
        };
        stream
            .create_consumer(desired)
            .await
            .map_err(|e| fail(&e))?;
        Ok(action)
    }

    async fn apply_bucket(&self, spec: &BucketSpec) -> Result<Action, TopologyError> {
        let fail = |e: &dyn fmt::Display| TopologyError::new("bucket", &spec.name, e);
        let action = match self.stream_config(&format!("KV_{}", spec.name)).await? {
            None => Action::Created,
            Some(existing)
                if existing.max_age == spec.max_age
                    && existing.max_messages_per_subject == spec.history
                    && existing.num_replicas == spec.replicas
                    && existing.description.as_deref() == Some(spec.description.as_str())
                    && existing.subject_delete_marker_ttl == spec.limit_markers =>
            {
                return Ok(Action::Unchanged);
            }
            Some(_) => Action::Updated,
        };
        self.jetstream()
            .create_or_update_key_value(kv::Config {
                bucket: spec.name.clone(),
                description: spec.description.clone(),
                history: spec.history,
                max_age: spec.max_age,
                storage: StorageType::File,
                num_replicas: spec.replicas,
                limit_markers: spec.limit_markers,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&e))?;
        Ok(action)
    }

    async fn apply_object_store(&self, spec: &ObjectStoreSpec) -> Result<Action, TopologyError> {
        match self.stream_config(&format!("OBJ_{}", spec.name)).await? {
            None => {}
            Some(existing) if existing.num_replicas == spec.replicas => {
                return Ok(Action::Unchanged);
            }
            Some(mut existing) => {
                // `streams.replicas` changed (one node to a cluster, say):
                // the object store's stream follows, like every other.
                existing.num_replicas = spec.replicas;
                self.jetstream()
                    .update_stream(existing)
                    .await
                    .map_err(|e| TopologyError::new("object store", &spec.name, e))?;
                return Ok(Action::Updated);
            }
        }
        self.jetstream()
            .create_object_store(object_store::Config {
                bucket: spec.name.clone(),
                description: Some(spec.description.clone()),
                storage: StorageType::File,
                num_replicas: spec.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| TopologyError::new("object store", &spec.name, e))?;
        Ok(Action::Created)
    }

    /// Run consumers on the runs stream that `topology` does not have.
    async fn stale_run_consumers(&self, topology: &Topology) -> Result<Vec<String>, TopologyError> {
        let runs_stream = self.names().runs_stream();
        let fail = |e: &dyn fmt::Display| TopologyError::new("stream", &runs_stream, e);
        let stream = self
            .jetstream()
            .get_stream(&runs_stream)
            .await
            .map_err(|e| fail(&e))?;
        let names: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| fail(&e))?;
        let wanted: Vec<&str> = topology
            .consumers
            .iter()
            .filter(|c| c.stream == runs_stream)
            .map(|c| c.durable.as_str())
            .collect();
        Ok(names
            .into_iter()
            .filter(|name| name.starts_with("run-") && !wanted.contains(&name.as_str()))
            .collect())
    }
}

fn stream_matches(existing: &stream::Config, desired: &stream::Config) -> bool {
    existing.subjects == desired.subjects
        && existing.retention == desired.retention
        && existing.storage == desired.storage
        && existing.max_age == desired.max_age
        && existing.duplicate_window == desired.duplicate_window
        && existing.num_replicas == desired.num_replicas
        && existing.description == desired.description
        && existing.allow_direct == desired.allow_direct
}
