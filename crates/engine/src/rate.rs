//! Token buckets, one per service provider: carrier limits slow work down, never fail it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled at `rate` tokens a second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `burst` is kept small (a tenth of a second's worth, at least one) so that work is spread evenly and a
    /// carrier counting calls over any window never sees more than its limit.
    pub fn new(rate_per_second: f64) -> Self {
        let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 { rate_per_second } else { 1.0 };
        let burst = (rate / 10.0).max(1.0);
        Self { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = match self.state.lock() {
                    Ok(s) => s,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let now = Instant::now();
                let (tokens, last) = *state;
                let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
                if tokens >= 1.0 {
                    *state = (tokens - 1.0, now);
                    return;
                }
                *state = (tokens, now);
                Duration::from_secs_f64((1.0 - tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The buckets of one worker process, by service provider id.
#[derive(Debug)]
pub struct RateLimiters {
    buckets: Mutex<HashMap<(i64, &'static str), Arc<TokenBucket>>>,
    /// How many worker instances may call one account at once; each takes an equal share of its limit.
    share: u32,
}

impl Default for RateLimiters {
    fn default() -> Self {
        Self::shared_by(1)
    }
}

impl RateLimiters {
    /// Buckets for one of `workers` instances that may run at once (the event source's MaximumConcurrency):
    /// a carrier's limit is per account, so each instance keeps to `limit / workers`.
    pub fn shared_by(workers: u32) -> Self {
        Self { buckets: Mutex::default(), share: workers.max(1) }
    }

    pub fn for_provider(&self, service_provider_id: i64, account_rate_per_second: f64) -> Arc<TokenBucket> {
        self.for_provider_limit(service_provider_id, "calls", account_rate_per_second)
    }

    /// A second limit of one account on one kind of call (ThingSpace: activation requests, 100 a minute).
    pub fn for_provider_limit(
        &self,
        service_provider_id: i64,
        limit: &'static str,
        account_rate_per_second: f64,
    ) -> Arc<TokenBucket> {
        let rate_per_second = account_rate_per_second / f64::from(self.share.max(1));
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket =
            buckets.entry((service_provider_id, limit)).or_insert_with(|| Arc::new(TokenBucket::new(rate_per_second)));
        if (bucket.rate() - rate_per_second).abs() > f64::EPSILON && rate_per_second > 0.0 {
            *bucket = Arc::new(TokenBucket::new(rate_per_second));
        }
        bucket.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_calls_at_its_rate() {
        let bucket = TokenBucket::new(100.0);
        let start = Instant::now();
        for _ in 0..110 {
            bucket.acquire().await;
        }
        // 10 tokens of burst, then 100 more at 100/s: one second of (virtual) time.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((0.99..1.02).contains(&elapsed), "elapsed {elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn thingspace_activations_keep_to_100_a_minute_apart_from_other_calls() {
        let limiters = RateLimiters::shared_by(2);
        let per_second = crate::worker::THINGSPACE_ACTIVATIONS_PER_SECOND;
        let activations = limiters.for_provider_limit(7, "activations", per_second);
        assert!(!Arc::ptr_eq(&activations, &limiters.for_provider(7, per_second)), "its own bucket");
        let start = Instant::now();
        let mut within_a_minute = 0;
        loop {
            activations.acquire().await;
            if start.elapsed() > Duration::from_secs(60) {
                break;
            }
            within_a_minute += 1;
        }
        // Two instances share the account: each sends at most half of ThingSpace's 100 a minute (plus its one
        // token of burst at the start).
        assert!((50..=51).contains(&within_a_minute), "{within_a_minute} activation requests in a minute");
    }

    #[test]
    fn instances_share_the_account_limit() {
        let limiters = RateLimiters::shared_by(4);
        assert_eq!(limiters.for_provider(10, 200.0).rate(), 50.0);
        assert_eq!(RateLimiters::default().for_provider(10, 200.0).rate(), 200.0);
        assert_eq!(RateLimiters::shared_by(0).for_provider(10, 200.0).rate(), 200.0, "zero means one");
    }
}
