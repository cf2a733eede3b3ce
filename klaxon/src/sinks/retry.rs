//! How often and how patiently a sink retries: the policy and its backoff
//! delays, a pure function of the attempt number.

use std::time::Duration;

/// How [`SinkKind::deliver_with_retries`](super::SinkKind::deliver_with_retries)
/// retries transient failures: exponential backoff from `initial`, doubling
/// after each failed attempt, capped at `max`, for at most `max_attempts`
/// attempts in all. The default (1 s, 30 s, 8) waits 91 s in all before it
/// gives up, long enough to ride out a receiver's restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt.
    pub initial: Duration,
    /// The longest wait between two attempts (also the cap on a receiver's
    /// `Retry-After`).
    pub max: Duration,
    /// Attempts in all, the first included; 0 counts as 1.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based) before the next:
    /// `initial × 2^(attempt − 1)`, at most `max`. Deterministic: one Klaxon
    /// sends to each receiver, so there is no herd to spread with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1 << doublings)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// Attempts in all, at least 1.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_initial_up_to_max() {
        let policy = RetryPolicy::default();
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 30),
            (7, 30),
            (40, 30),
            (u32::MAX, 30),
        ];
        for (attempt, seconds) in table {
            assert_eq!(
                policy.delay(attempt),
                Duration::from_secs(seconds),
                "after attempt {attempt}"
            );
        }
    }

    #[test]
    fn default_policy_waits_91_seconds_over_8_attempts() {
        let policy = RetryPolicy::default();
        let total: Duration = (1..policy.attempts()).map(|n| policy.delay(n)).sum();
        assert_eq!(total, Duration::from_secs(91));
    }

    #[test]
    fn zero_attempts_means_one() {
        let policy = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.attempts(), 1);
    }

    #[test]
    fn a_huge_initial_delay_saturates_at_max() {
        let policy = RetryPolicy {
            initial: Duration::MAX,
            max: Duration::from_millis(5),
            max_attempts: 3,
        };
        assert_eq!(policy.delay(3), Duration::from_millis(5));
    }
}
