//! The retry policy every carrier client shares: bounded attempts, exponential backoff with equal jitter (half
//! of the capped backoff fixed, half random: a retry never comes straight back, and retries still spread), and
//! the carrier's `Retry-After` honoured.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, when the carrier fails (5xx, lost connection).
    pub max_attempts: u32,
    /// Attempts in all when the carrier throttles (429): throttling slows work down, it should rarely fail it.
    pub max_throttled_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_throttled_attempts: 12,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1). A `Retry-After` is a floor: we never
    /// come back sooner than the carrier asked.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let jittered = cap.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            // A little jitter on top, so throttled workers do not all come back in the same millisecond.
            Some(floor) => floor + cap.mul_f64(fastrand::f64() * 0.1),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            max_throttled_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d1 = p.delay(1, None);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3, None);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(p.delay(12, None) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            assert!(p.delay(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        }
    }
}
