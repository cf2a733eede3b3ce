//! Operations the NATS server refuses because the user lacks a permission.
//!
//! A denied publish is not answered: the server sends the client a
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` and drops the
//! message, so the request or publish ack waiting for it would only time out.
//! The connection's event callback hands every such refusal to [`Refusals`];
//! an operation run through [`Refusals::guard`] ends as soon as the server
//! refuses a subject it uses, with a sentence naming the user and the subject.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// How many refusals are buffered for operations still waiting, and how
/// many claimed ones are remembered.
const CAPACITY: usize = 64;

/// One refusal: a number, and the server's words.
type Refusal = (u64, String);

/// The refusals of one connection, and who it logged in as.
#[derive(Clone, Debug)]
pub(crate) struct Refusals {
    sender: broadcast::Sender<Refusal>,
    login: String,
    next: Arc<AtomicU64>,
    claimed: Arc<Mutex<VecDeque<u64>>>,
}

/// A refusal being watched for, made before the operation sends anything.
pub(crate) struct Watch {
    receiver: broadcast::Receiver<Refusal>,
    login: String,
    claimed: Arc<Mutex<VecDeque<u64>>>,
}

impl Refusals {
    /// Refusals of a connection that logged in as `login` (e.g. `user "agent"`).
    pub(crate) fn new(login: String) -> Refusals {
        Refusals {
            sender: broadcast::channel(CAPACITY).0,
            login,
            next: Arc::default(),
            claimed: Arc::default(),
        }
    }

    /// Records the server's words for an error it sent; the refusal's number.
    pub(crate) fn record(&self, words: &str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // No receiver means no operation is waiting: nothing to tell.
        let _ = self.sender.send((id, words.to_owned()));
        id
    }

    /// Whether an operation reported refusal `id` as its own failure (so
    /// the connection need not log it as well).
    pub(crate) fn claimed(&self, id: u64) -> bool {
        self.claimed
            .lock()
            .map(|claimed| claimed.contains(&id))
            .unwrap_or(false)
    }

    /// Starts watching; call before the operation sends its first message.
    pub(crate) fn watch(&self) -> Watch {
        Watch {
            receiver: self.sender.subscribe(),
            login: self.login.clone(),
            claimed: self.claimed.clone(),
        }
    }

    /// Runs `operation`. If meanwhile the server refuses a publish to a
    /// subject for which `concerns` holds, returns that refusal in words
    /// instead of waiting for the operation to time out.
    pub(crate) async fn guard<T>(
        &self,
        concerns: impl Fn(&str) -> bool,
        operation: impl Future<Output = T>,
    ) -> Result<T, String> {
        let watch = self.watch();
        tokio::select! {
            biased;
            outcome = operation => Ok(outcome),
            refusal = watch.refused(concerns) => Err(refusal),
        }
    }
}

impl Watch {
    /// Waits for a refusal of a subject `concerns` accepts; the sentence
    /// that explains it. Never ends when there is none.
    pub(crate) async fn refused(mut self, concerns: impl Fn(&str) -> bool) -> String {
        loop {
            match self.receiver.recv().await {
                Ok((id, words)) => {
                    if let Some((action, subject)) = violation(&words)
                        && concerns(subject)
                    {
                        if let Ok(mut claimed) = self.claimed.lock() {
                            if claimed.len() == CAPACITY {
                                claimed.pop_front();
                            }
                            claimed.push_back(id);
                        }
                        return format!(
                            "the NATS server does not let {} {action} {subject} ({words})",
                            self.login
                        );
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// Whether `subject` is a JetStream API request about `stream`
/// (`$JS.API.STREAM.INFO.<stream>`, `$JS.API.CONSUMER.CREATE.<stream>.…`,
/// `$JS.API.DIRECT.GET.<stream>.…`).
pub(crate) fn is_api_subject_of(subject: &str, stream: &str) -> bool {
    subject.starts_with("$JS.API.") && subject.split('.').any(|token| token == stream)
}

/// The action and subject of a permissions violation, from the server's
/// words: `Permissions Violation for Publish to "loom.run.w"` gives
/// `("publish to", "loom.run.w")`.
fn violation(words: &str) -> Option<(&'static str, &str)> {
    let rest = words.split("Permissions Violation for ").nth(1)?;
    let (action, rest) = if let Some(rest) = rest.strip_prefix("Publish to ") {
        ("publish to", rest)
    } else if let Some(rest) = rest.strip_prefix("Subscription to ") {
        ("subscribe to", rest)
    } else {
        return None;
    };
    let subject = rest.trim_start_matches('"');
    let end = subject.find('"').unwrap_or(subject.len());
    Some((action, &subject[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_action_and_subject_of_a_violation() {
        assert_eq!(
            violation("nats: Permissions Violation for Publish to \"loom.run.w\""),
            Some(("publish to", "loom.run.w"))
        );
        assert_eq!(
            violation("Permissions Violation for Subscription to \"loom.>\" using queue \"q\""),
            Some(("subscribe to", "loom.>"))
        );
        assert_eq!(violation("nats: slow consumer"), None);
    }

    #[test]
    fn knows_which_api_requests_concern_a_stream() {
        assert!(is_api_subject_of(
            "$JS.API.STREAM.INFO.KV_loom_runs",
            "KV_loom_runs"
        ));
        assert!(is_api_subject_of(
            "$JS.API.CONSUMER.CREATE.LOOM_RESULTS.r.loom.result.*",
            "LOOM_RESULTS"
        ));
        assert!(!is_api_subject_of(
            "$JS.API.STREAM.INFO.LOOM_RUNS",
            "LOOM_RESULTS"
        ));
        assert!(!is_api_subject_of("$KV.loom_runs.x", "loom_runs"));
    }

    #[tokio::test]
    async fn a_guarded_operation_ends_with_the_refusal_of_its_subject() {
        let refusals = Refusals::new("user \"agent\"".to_owned());
        let sender = refusals.clone();
        let outcome = refusals
            .guard(|subject| subject == "loom.run.w", async move {
                let other = sender.record("Permissions Violation for Publish to \"loom.other.w\"");
                assert_eq!(other, 0);
                sender.record("Permissions Violation for Publish to \"loom.run.w\"");
                std::future::pending::<()>().await
            })
            .await;
        assert_eq!(
            outcome,
            Err("the NATS server does not let user \"agent\" publish to loom.run.w (Permissions Violation for Publish to \"loom.run.w\")".to_owned())
        );
        assert!(
            !refusals.claimed(0),
            "the other subject's refusal is nobody's"
        );
        assert!(refusals.claimed(1), "the operation's refusal is claimed");
        let done = refusals.guard(|_| true, async { 7 }).await;
        assert_eq!(done, Ok(7));
    }
}
