//! Pacing the cloud's mutating calls, pure (the caller passes the time and the randomness):
//! a token bucket that never lets more than `rate` calls a second through (after a burst of
//! `burst`), and exponential backoff with full jitter after throttling
//! (`RequestLimitExceeded`) or a fault.

use std::time::Duration;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date (time since an origin the caller chooses).
    at: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now`. `rate` must be positive; `burst` at least 1.
    pub fn new(rate: f64, burst: f64, now: Duration) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket { rate: rate.max(f64::MIN_POSITIVE), burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Take a token at `now`, or say how long to wait before one is there.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The wait before retry `attempt` (0 for the first retry): uniformly random (`jitter` in
/// [0, 1)) up to `base` × 2^attempt, capped at `cap` ("full jitter": retrying clients spread out
/// instead of returning in step).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_rate_after_the_burst() {
        let mut bucket = TokenBucket::new(5.0, 2.0, Duration::ZERO);
        // The burst, then a wait of a fifth of a second per call.
        assert_eq!(bucket.take(Duration::ZERO), Ok(()));
        assert_eq!(bucket.take(Duration::ZERO), Ok(()));
        let wait = bucket.take(Duration::ZERO).expect_err("empty");
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        // Simulated time: a caller taking as fast as allowed for 10 s makes 2 + 5 × 10 calls.
        let (mut now, mut calls) = (Duration::ZERO, 2);
        let mut bucket2 = bucket.clone();
        while now <= Duration::from_secs(10) {
            match bucket2.take(now) {
                Ok(()) => calls += 1,
                Err(wait) => now += wait,
            }
        }
        assert_eq!(calls, 2 + 50, "calls in 10 s at 5/s after a burst of 2");
        // Idle time fills the bucket up to the burst, not beyond.
        let mut idle = TokenBucket::new(5.0, 2.0, Duration::ZERO);
        let _ = (idle.take(Duration::ZERO), idle.take(Duration::ZERO));
        let later = Duration::from_secs(60);
        assert!(idle.take(later).is_ok() && idle.take(later).is_ok() && idle.take(later).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_below_it() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, base, cap, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(2, base, cap, 0.0), Duration::ZERO);
    }
}
