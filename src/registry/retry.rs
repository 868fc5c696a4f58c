//! Retry policy for transient registry answers: capped exponential backoff with jitter, at least
//! the registry's `Retry-After`. Pure: the caller supplies the jitter and does the sleeping.

use std::time::Duration;

/// How transient failures (rate limited, unreachable) are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included (4 = the first try plus the reference's three
    /// retries).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles per retry.
    pub base_delay: Duration,
    /// Cap of the exponential backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited out in-process: the operation fails as
    /// rate limited and carries the delay, so the caller (a controller) requeues after it
    /// instead of holding a worker.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// No retries (one attempt).
    pub fn none() -> RetryPolicy {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// Decides after `attempts` failed attempts (1 after the first). `jitter` in `[0, 1)` spreads
    /// the backoff over `[half, full]` so many clients do not retry in lockstep.
    pub fn decide(&self, attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Decision {
        if attempts >= self.max_attempts {
            return Decision::GiveUp;
        }
        if let Some(wait) = retry_after
            && wait > self.max_retry_after
        {
            return Decision::GiveUp;
        }
        let exponent = attempts.saturating_sub(1).min(30);
        let backoff = self.base_delay.saturating_mul(1u32 << exponent).min(self.max_delay);
        let jitter = jitter.clamp(0.0, 1.0);
        let jittered = backoff.mul_f64(0.5 + jitter / 2.0);
        Decision::RetryAfter(retry_after.map_or(jittered, |wait| wait.max(jittered)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let policy = RetryPolicy { max_attempts: 10, base_delay: ms(100), max_delay: ms(500), ..Default::default() };
        assert_eq!(policy.decide(1, None, 0.0), Decision::RetryAfter(ms(50)));
        assert_eq!(policy.decide(2, None, 0.0), Decision::RetryAfter(ms(100)));
        assert_eq!(policy.decide(3, None, 0.0), Decision::RetryAfter(ms(200)));
        assert_eq!(policy.decide(4, None, 0.0), Decision::RetryAfter(ms(250)), "capped at max_delay, then jittered");
        assert_eq!(policy.decide(9, None, 1.0), Decision::RetryAfter(ms(500)));
        for attempt in 1..10 {
            let Decision::RetryAfter(d) = policy.decide(attempt, None, 0.5) else { panic!() };
            assert!(d <= policy.max_delay && d >= ms(50), "{attempt}: {d:?}");
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default();
        assert!(matches!(policy.decide(3, None, 0.0), Decision::RetryAfter(_)));
        assert_eq!(policy.decide(4, None, 0.0), Decision::GiveUp);
        assert_eq!(RetryPolicy::none().decide(1, None, 0.0), Decision::GiveUp);
    }

    #[test]
    fn retry_after_is_a_minimum_and_long_waits_are_left_to_the_caller() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.decide(1, Some(Duration::from_secs(3)), 0.0), Decision::RetryAfter(Duration::from_secs(3)));
        assert_eq!(policy.decide(1, Some(Duration::ZERO), 0.0), Decision::RetryAfter(ms(250)));
        assert_eq!(policy.decide(1, Some(Duration::from_secs(61)), 0.0), Decision::GiveUp);
        assert_eq!(policy.decide(1, Some(Duration::from_secs(60)), 0.0), Decision::RetryAfter(Duration::from_secs(60)));
    }
}
