//! Acknowledging JetStream deliveries with the server's confirmation.

use async_nats::jetstream::{AckKind, Message};

/// Why an acknowledgement was not confirmed: the message may be delivered
/// again.
#[derive(Debug, thiserror::Error)]
#[error("acknowledgement {kind:?} of a message on {subject} not confirmed: {detail}")]
pub struct AckError {
    /// The acknowledgement sent.
    pub kind: AckKind,
    /// The subject the message was stored on.
    pub subject: String,
    /// What went wrong.
    pub detail: String,
}

/// Sends `kind` for `message` and waits for the server to confirm it.
///
/// This is async-nats' `double_ack_with` done as a request over the
/// connection's one shared reply subscription: `double_ack_with` subscribes
/// a fresh inbox for every acknowledgement, a subscribe and an unsubscribe
/// on both the client and the server for each message.
pub async fn acknowledge_confirmed(message: &Message, kind: AckKind) -> Result<(), AckError> {
    let error = |detail: String| AckError {
        kind,
        subject: message.subject.to_string(),
        detail,
    };
    let Some(reply) = message.reply.clone() else {
        return Err(error("it has no reply subject".to_owned()));
    };
    message
        .context
        .client()
        .request(reply, kind.into())
        .await
        .map(drop)
        .map_err(|failure| error(failure.to_string()))
}
