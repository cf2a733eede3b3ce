//! Consuming a durable consumer with many messages in flight: each message
//! is handled, then acknowledged, up to [`IN_FLIGHT`] at once; a handler
//! that fails (the broker or a bucket unreachable) gets its message again a
//! little later.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use chrono::DateTime;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use loom_broker::Broker;
use tokio_util::sync::CancellationToken;

use crate::books::BooksError;
use crate::intake::Stored;

/// How long a last result waits before it looks for its run command again.
const AWAITING_COMMAND_DELAY: Duration = Duration::from_millis(500);

/// Messages handled at once per consumer.
const IN_FLIGHT: usize = 64;

/// Handles the messages of durable `durable` on `stream` until `shutdown`.
pub async fn consume<H, F>(
    broker: Broker,
    stream: String,
    durable: String,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(async_nats::jetstream::Message) -> F,
    F: Future<Output = (async_nats::jetstream::Message, Result<(), BooksError>)>,
{
    while !shutdown.is_cancelled() {
        let consumer = match broker.durable(&stream, &durable).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot open a validator consumer; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(IN_FLIGHT)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, %stream, %durable, "cannot pull; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Each message is handled and then acknowledged in one future, so
        // that messages are acknowledged as soon as each is handled.
        let handle = |message| {
            let handled = handler(message);
            async move {
                let (message, outcome) = handled.await;
                acknowledge(message, outcome).await;
            }
        };
        let mut running = FuturesUnordered::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(()) = running.next() => {}
                next = messages.next(), if running.len() < IN_FLIGHT => match next {
                    Some(Ok(message)) => running.push(handle(message)),
                    Some(Err(error)) => tracing::debug!(%error, %stream, "pull error (the stream keeps going)"),
                    None => break,
                },
            }
        }
        // Finish what was started before stopping.
        while running.next().await.is_some() {}
    }
}

async fn acknowledge(message: async_nats::jetstream::Message, outcome: Result<(), BooksError>) {
    let kind = match outcome {
        Ok(()) => AckKind::Ack,
        Err(error @ BooksError::CommandNotRecorded { .. }) => {
            tracing::debug!(%error, "waiting for a run command");
            AckKind::Nak(Some(AWAITING_COMMAND_DELAY))
        }
        Err(error) => {
            tracing::warn!(%error, subject = %message.subject, "cannot record this message yet; it will be delivered again");
            AckKind::Nak(Some(Duration::from_secs(2)))
        }
    };
    // Not waited for: a message whose acknowledgement is lost is delivered
    // again, and handling a message twice changes nothing.
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, subject = %message.subject, "cannot acknowledge; the message will be delivered again");
    }
}

/// Where a message was stored, from its JetStream metadata.
pub fn stored(message: &async_nats::jetstream::Message) -> Option<Stored<'_>> {
    let info = message.info().ok()?;
    Some(Stored {
        subject: message.subject.as_str(),
        payload: &message.payload,
        sequence: info.stream_sequence,
        delivered: u64::try_from(info.delivered).unwrap_or(1),
        published: DateTime::from_timestamp_nanos(
            i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
        ),
    })
}
