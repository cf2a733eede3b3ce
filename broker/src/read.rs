//! Reading what a stream holds now: an ordered consumer that delivers
//! exactly the messages pending when it was created, then stops. Used to
//! load state in bulk (every `fire.*` key of 100,000 workers in one pass)
//! and to read history (runs, cancel requests) without a durable consumer.
//!
//! The ordered consumer is named (`loom-read-<unique>`): the request that
//! creates a named consumer carries its filter in the subject
//! (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), so NATS permissions
//! can let a role read some subjects of a stream and not others (agents read
//! cancel requests, not results; see `deploy/nats/auth.conf`).

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;

use crate::Broker;
use crate::refusal::is_api_subject_of;

/// One stored message, as read.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its headers.
    pub headers: Option<async_nats::HeaderMap>,
    /// Its body.
    pub payload: bytes::Bytes,
    /// Its stream sequence.
    pub sequence: u64,
    /// When it was stored.
    pub stored_at: chrono::DateTime<chrono::Utc>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom {
    /// Every stored message.
    All,
    /// The last message of each subject (the current value of each key).
    LastPerSubject,
    /// Messages stored at or after this instant.
    Since(chrono::DateTime<chrono::Utc>),
}

/// A read that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {stream} ({filter}): {detail}")]
pub struct ReadError {
    /// The stream.
    pub stream: String,
    /// The subject filter.
    pub filter: String,
    /// What went wrong.
    pub detail: String,
}

impl Broker {
    /// Every message of `stream` matching `filter` from `from`, as stored now.
    /// A read the server refuses (the user may not read those subjects)
    /// fails at once, saying so.
    pub async fn read_stream(
        &self,
        stream: &str,
        filter: &str,
        from: ReadFrom,
    ) -> Result<Vec<StoredMessage>, ReadError> {
        self.guarded_read(
            stream,
            filter,
            self.read_stream_unguarded(stream, filter, from),
        )
        .await
    }

    /// The durable pull consumer `durable` of `stream`.
    pub async fn durable(
        &self,
        stream: &str,
        durable: &str,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, ReadError> {
        self.guarded_read(stream, durable, self.durable_unguarded(stream, durable))
            .await
    }

    /// The message stored at `sequence` of `stream`, if it is still there.
    pub async fn stored_message(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, ReadError> {
        let what = format!("#{sequence}");
        self.guarded_read(
            stream,
            &what,
            self.stored_message_unguarded(stream, sequence),
        )
        .await
    }

    /// Deletes the message at `sequence` of `stream`; whether it was there.
    pub async fn delete_stored(&self, stream: &str, sequence: u64) -> Result<bool, ReadError> {
        let what = format!("#{sequence}");
        self.guarded_read(
            stream,
            &what,
            self.delete_stored_unguarded(stream, sequence),
        )
        .await
    }

    /// Removes every message of `stream` on subjects matching `filter`; how many.
    pub async fn purge(&self, stream: &str, filter: &str) -> Result<u64, ReadError> {
        self.guarded_read(stream, filter, self.purge_unguarded(stream, filter))
            .await
    }

    /// Runs `operation` on `stream`, ending it at once with the server's
    /// refusal when the user may not make one of its requests.
    async fn guarded_read<T>(
        &self,
        stream: &str,
        filter: &str,
        operation: impl std::future::Future<Output = Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        self.refusals()
            .guard(|subject| is_api_subject_of(subject, stream), operation)
            .await
            .map_err(|detail| ReadError {
                stream: stream.to_owned(),
                filter: filter.to_owned(),
                detail,
            })?
    }

    async fn read_stream_unguarded(
        &self,
        stream: &str,
        filter: &str,
        from: ReadFrom,
    ) -> Result<Vec<StoredMessage>, ReadError> {
        let fail = |detail: String| ReadError {
            stream: stream.to_owned(),
            filter: filter.to_owned(),
            detail,
        };
        let handle = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let deliver_policy = match from {
            ReadFrom::All => DeliverPolicy::All,
            ReadFrom::LastPerSubject => DeliverPolicy::LastPerSubject,
            ReadFrom::Since(start) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                    start.timestamp_nanos_opt().unwrap_or(0),
                ))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
        };
        let consumer = handle
            .create_consumer(pull::OrderedConfig {
                name: Some(self.reader_name()),
                filter_subject: filter.to_owned(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        let pending = consumer.cached_info().num_pending;
        let mut messages = Vec::with_capacity(usize::try_from(pending).unwrap_or(0));
        if pending == 0 {
            return Ok(messages);
        }
        let mut stream = consumer.messages().await.map_err(|e| fail(e.to_string()))?;
        while (messages.len() as u64) < pending {
            let Some(message) = stream.next().await else {
                break;
            };
            let message = message.map_err(|e| fail(e.to_string()))?;
            let info = message.info().map_err(|e| fail(e.to_string()))?;
            let sequence = info.stream_sequence;
            let stored_at = chrono::DateTime::from_timestamp_nanos(
                i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
            );
            let message = message.message.clone();
            messages.push(StoredMessage {
                subject: message.subject.to_string(),
                headers: message.headers,
                payload: message.payload,
                sequence,
                stored_at,
            });
        }
        Ok(messages)
    }
}

impl Broker {
    /// A fresh name for a reading consumer: `loom-read-` and the unique part
    /// of a new inbox (letters and digits, as consumer names require).
    fn reader_name(&self) -> String {
        let inbox = self.client().new_inbox();
        let unique = inbox.rsplit('.').next().unwrap_or(inbox.as_str());
        format!("loom-read-{unique}")
    }

    async fn durable_unguarded(
        &self,
        stream: &str,
        durable: &str,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, ReadError> {
        let fail = |detail: String| ReadError {
            stream: stream.to_owned(),
            filter: durable.to_owned(),
            detail,
        };
        let handle = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        handle
            .get_consumer(durable)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    async fn stored_message_unguarded(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, ReadError> {
        let fail = |detail: String| ReadError {
            stream: stream.to_owned(),
            filter: format!("#{sequence}"),
            detail,
        };
        let handle = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        match handle.direct_get(sequence).await {
            Ok(message) => Ok(Some(StoredMessage {
                subject: message.subject.to_string(),
                headers: Some(message.headers),
                payload: message.payload,
                sequence: message.sequence,
                stored_at: chrono::DateTime::from_timestamp_nanos(
                    i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or(0),
                ),
            })),
            Err(error)
                if error.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(error) => Err(fail(error.to_string())),
        }
    }

    async fn delete_stored_unguarded(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<bool, ReadError> {
        let fail = |detail: String| ReadError {
            stream: stream.to_owned(),
            filter: format!("#{sequence}"),
            detail,
        };
        let handle = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        handle
            .delete_message(sequence)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    async fn purge_unguarded(&self, stream: &str, filter: &str) -> Result<u64, ReadError> {
        let fail = |detail: String| ReadError {
            stream: stream.to_owned(),
            filter: filter.to_owned(),
            detail,
        };
        let handle = self
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let response = handle
            .purge()
            .filter(filter)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(response.purged)
    }
}
