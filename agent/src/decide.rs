//! What an agent does with a delivery once an attempt has ended: the one
//! place where outcomes become acknowledgements.

use std::time::Duration;

use loom_config::Worker;
use loom_protocol::Outcome;

/// Exit status of a retryable failure (`EX_TEMPFAIL`).
pub const EXIT_TEMPFAIL: i32 = 75;
/// Exit status of a permanent failure (`EX_CONFIG`): never retried.
pub const EXIT_CONFIG: i32 = 78;

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The outcome.
    pub outcome: Outcome,
    /// The exit status, if the process exited.
    pub exit_code: Option<i32>,
    /// The run could not be started for a reason retrying cannot fix
    /// (a missing secret, a program that does not exist).
    pub refused: bool,
}

/// What to tell JetStream about the delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acknowledge {
    /// Done: remove it from the worker's queue.
    Ack,
    /// Failed with attempts left: deliver again after this delay.
    Retry(Duration),
    /// Failed for good (or cancelled): never deliver again.
    Term,
}

/// Decides the acknowledgement of attempt `attempt` (1-based) of a run of
/// `worker`. `unit` is a number in `[0, 1)` for the backoff's spread.
pub fn acknowledge(worker: &Worker, attempt: u32, ended: Ended, unit: f64) -> Acknowledge {
    match ended.outcome {
        Outcome::Succeeded => Acknowledge::Ack,
        Outcome::Cancelled => Acknowledge::Term,
        _ if ended.refused || ended.exit_code == Some(EXIT_CONFIG) => Acknowledge::Term,
        _ if attempt > worker.retries => Acknowledge::Term,
        _ => Acknowledge::Retry(worker.retry_delay(attempt, unit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(retries: u32) -> Worker {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("loom-agent-decide-{retries}.toml"));
        std::fs::write(
            &file,
            format!("[workers.w]\ncommand = [\"true\"]\nretries = {retries}\nbackoff = {{ initial = \"10s\", max = \"1m\", factor = 2.0, jitter = 0.0 }}\n"),
        )
        .expect("write");
        let config = loom_config::Loader::new(Some(file))
            .with_env(Vec::<(String, String)>::new())
            .load()
            .expect("config");
        config.registry.get("w").expect("w").clone()
    }

    fn ended(outcome: Outcome, exit_code: Option<i32>) -> Ended {
        Ended {
            outcome,
            exit_code,
            refused: false,
        }
    }

    #[test]
    fn success_acks_and_cancellation_terminates() {
        let w = worker(3);
        assert_eq!(
            acknowledge(&w, 1, ended(Outcome::Succeeded, Some(0)), 0.5),
            Acknowledge::Ack
        );
        assert_eq!(
            acknowledge(&w, 1, ended(Outcome::Cancelled, None), 0.5),
            Acknowledge::Term
        );
    }

    #[test]
    fn failures_retry_with_backoff_until_attempts_run_out() {
        let w = worker(2);
        for exit in [Some(1), Some(EXIT_TEMPFAIL), None] {
            assert_eq!(
                acknowledge(&w, 1, ended(Outcome::Failed, exit), 0.5),
                Acknowledge::Retry(Duration::from_secs(10))
            );
            assert_eq!(
                acknowledge(&w, 2, ended(Outcome::Failed, exit), 0.5),
                Acknowledge::Retry(Duration::from_secs(20))
            );
            assert_eq!(
                acknowledge(&w, 3, ended(Outcome::Failed, exit), 0.5),
                Acknowledge::Term
            );
        }
        assert_eq!(
            acknowledge(&w, 1, ended(Outcome::TimedOut, None), 0.5),
            Acknowledge::Retry(Duration::from_secs(10))
        );
        assert_eq!(
            acknowledge(&w, 1, ended(Outcome::EnforcementUnavailable, None), 0.5),
            Acknowledge::Retry(Duration::from_secs(10))
        );
    }

    #[test]
    fn exit_78_and_refused_runs_are_never_retried() {
        let w = worker(5);
        assert_eq!(
            acknowledge(&w, 1, ended(Outcome::Failed, Some(EXIT_CONFIG)), 0.5),
            Acknowledge::Term
        );
        let refused = Ended {
            refused: true,
            ..ended(Outcome::Failed, None)
        };
        assert_eq!(acknowledge(&w, 1, refused, 0.5), Acknowledge::Term);
    }

    #[test]
    fn no_retries_means_one_attempt() {
        let w = worker(0);
        assert_eq!(
            acknowledge(&w, 1, ended(Outcome::Failed, Some(1)), 0.5),
            Acknowledge::Term
        );
    }
}
