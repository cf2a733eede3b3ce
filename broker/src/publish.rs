//! Publishing to JetStream and waiting until the message is stored.
//!
//! A publish that times out may still have been stored (the client buffers
//! while disconnected and flushes after reconnecting), so every retry reuses
//! the same `Nats-Msg-Id`: JetStream then stores the message once and answers
//! the retry with `duplicate = true`, which counts as success.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use loom_protocol::codec::CONTENT_TYPE_MSGPACK;
use loom_protocol::identity::MSG_ID_HEADER;
use tokio_util::sync::CancellationToken;

use crate::Broker;
use crate::refusal::Watch;

/// First delay between publish attempts; it doubles up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between publish attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What JetStream answered for a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Stream sequence of the message.
    pub sequence: u64,
    /// Whether it had been stored before (same `Nats-Msg-Id` in the window).
    pub duplicate: bool,
}

/// A publish that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish to {subject}: {detail}")]
pub struct PublishError {
    /// The subject.
    pub subject: String,
    /// The client's or server's words.
    pub detail: String,
}

/// A publish on its way: the message is sent, its ack is awaited by
/// [`PendingPublish::stored`].
pub struct PendingPublish {
    subject: String,
    ack: PublishAckFuture,
    refusal: Watch,
}

impl PendingPublish {
    /// Waits for JetStream's ack. A publish the server refuses (the user may
    /// not publish on the subject) fails at once, saying so.
    pub async fn stored(self) -> Result<Stored, PublishError> {
        let PendingPublish {
            subject,
            ack,
            refusal,
        } = self;
        let outcome = tokio::select! {
            biased;
            ack = ack => ack.map_err(|error| error.to_string()),
            refused = refusal.refused(|refused| refused == subject) => Err(refused),
        };
        match outcome {
            Ok(ack) => Ok(Stored {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(detail) => Err(PublishError { subject, detail }),
        }
    }
}

/// Headers of a Loom message: `Content-Type: application/msgpack`, and the
/// message id when there is one.
pub fn headers(msg_id: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", CONTENT_TYPE_MSGPACK);
    if let Some(id) = msg_id {
        headers.insert(MSG_ID_HEADER, id);
    }
    headers
}

impl Broker {
    /// Sends a message to a stream subject; the returned value waits for the ack.
    /// A connection holds at most 5,000 acks not yet awaited (async-nats's
    /// default): the next publish waits until one of them is awaited or
    /// dropped, so a caller that publishes many must await as it goes.
    pub async fn start_publish(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<PendingPublish, PublishError> {
        let refusal = self.refusals().watch();
        let ack = self
            .jetstream()
            .publish_with_headers(subject.to_owned(), headers(msg_id), payload.into())
            .await
            .map_err(|error| PublishError {
                subject: subject.to_owned(),
                detail: error.to_string(),
            })?;
        Ok(PendingPublish {
            subject: subject.to_owned(),
            ack,
            refusal,
        })
    }

    /// Publishes once and waits for the ack.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<Stored, PublishError> {
        self.start_publish(subject, msg_id, payload)
            .await?
            .stored()
            .await
    }

    /// Publishes until JetStream has stored the message, retrying with the
    /// same message id through broker outages. Gives up only when `cancel`
    /// is cancelled, returning the last error.
    pub async fn publish_until_stored(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<Stored, PublishError> {
        let mut delay = RETRY_INITIAL;
        loop {
            let error = match self.publish(subject, Some(msg_id), payload.clone()).await {
                Ok(stored) => return Ok(stored),
                Err(error) => error,
            };
            tracing::warn!(%error, msg_id, retry_in = ?delay, "publish not acknowledged; retrying with the same message id");
            tokio::select! {
                _ = cancel.cancelled() => return Err(error),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}
