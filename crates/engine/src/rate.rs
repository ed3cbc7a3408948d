//! Carrier limits slow work down, never fail it. A carrier's limit is per account, so every worker of every
//! instance draws from one pace per account kept in the store (`Pace::reserve_rate_slots`): call slots one
//! `1 / rate` apart for all of them together, booked a few at a time so a call rarely costs a database round trip.
//! One bulk change alone can use the whole pace; two bulk changes of one account share it. Without a store (client
//! tests, tools) a local token bucket paces one process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::warn;

use crate::ports::Pace;

/// The share of an account's limit left unused, so late calls (a slot used up to `STALE` after its time, a busy
/// machine) never push a second over it: (1 + 0.015) × 0.97 < 1.
const HEADROOM: f64 = 0.03;
/// How much of the pace one reservation books: about 50 ms of calls.
const BOOKING: Duration = Duration::from_millis(50);
/// How far ahead the pace may be booked: a worker does not hoard slots other workers could use now.
const HORIZON: Duration = Duration::from_millis(100);
/// A slot not used within this is dropped (its worker was busy): late calls would bunch up in the next second.
const STALE: Duration = Duration::from_millis(15);
/// How far behind a bulk change's own pace (`MaxPerMinute`) may catch up: slots missed while its worker or the
/// database was busy are booked and used late rather than lost, so the pace holds over the minute it is counted
/// in. Any minute still sees at most 61.5 s of slots, 0.97 × 61.5 / 60 < 1 of `MaxPerMinute`; the account's pace,
/// which catches up nothing, still guards the carrier's limit.
pub const BULK_CATCH_UP: Duration = Duration::from_millis(1500);

/// A pace of calls: local (one process) or shared through the store (every worker of the account).
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
    shared: Option<SharedPace>,
}

impl std::fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket").field("rate", &self.rate).field("shared", &self.shared.is_some()).finish()
    }
}

/// The slots this process booked of an account's shared pace, used in order.
struct SharedPace {
    store: Arc<dyn Pace>,
    service_provider_id: i64,
    bucket: std::borrow::Cow<'static, str>,
    interval: Duration,
    batch: u32,
    /// How far in the past a slot may be booked and used (zero: never before now).
    catch_up: Duration,
    slots: tokio::sync::Mutex<VecDeque<DateTime<Utc>>>,
}

fn usable(rate_per_second: f64) -> f64 {
    if rate_per_second.is_finite() && rate_per_second > 0.0 { rate_per_second } else { 1.0 }
}

impl TokenBucket {
    /// A local bucket for one process. `burst` is kept small (a tenth of a second's worth, at least one) so that
    /// work is spread evenly and a carrier counting calls over any window never sees more than its limit.
    pub fn new(rate_per_second: f64) -> Self {
        let rate = usable(rate_per_second);
        let burst = (rate / 10.0).max(1.0);
        Self { rate, burst, state: Mutex::new((burst, Instant::now())), shared: None }
    }

    /// The account's pace shared through `store` by every worker: `rate_per_second` less a small headroom.
    pub fn shared(
        store: Arc<dyn Pace>,
        service_provider_id: i64,
        bucket: impl Into<std::borrow::Cow<'static, str>>,
        rate_per_second: f64,
    ) -> Self {
        let bucket = bucket.into();
        let rate = usable(rate_per_second);
        let paced = rate * (1.0 - HEADROOM);
        let interval = Duration::from_secs_f64(1.0 / paced);
        let batch = ((paced * BOOKING.as_secs_f64()).floor() as u32).max(1);
        let shared = SharedPace {
            store,
            service_provider_id,
            bucket,
            interval,
            batch,
            catch_up: Duration::ZERO,
            slots: tokio::sync::Mutex::new(VecDeque::new()),
        };
        Self { rate, burst: 1.0, state: Mutex::new((1.0, Instant::now())), shared: Some(shared) }
    }

    /// Lets a shared pace book and use slots up to `catch_up` in the past (a pace counted per minute, not a
    /// carrier's limit per second), a quarter second of them a booking: a slow pace booked one slot a round trip
    /// falls behind whenever a round trip takes longer than a slot (a busy database).
    pub fn catching_up(mut self, catch_up: Duration) -> Self {
        if let Some(shared) = &mut self.shared {
            shared.catch_up = catch_up;
            let quarter_second = (0.25 / shared.interval.as_secs_f64()).ceil();
            if !catch_up.is_zero() && quarter_second.is_finite() {
                shared.batch = shared.batch.max(quarter_second as u32);
            }
        }
        self
    }

    /// The account's limit this bucket keeps to (calls a second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits until a call may be made.
    pub async fn acquire(&self) {
        match &self.shared {
            Some(shared) => shared.acquire().await,
            None => self.acquire_local().await,
        }
    }

    async fn acquire_local(&self) {
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

impl SharedPace {
    async fn acquire(&self) {
        let slot = loop {
            // One task books for the process at a time; the others wait for its slots.
            let mut slots = self.slots.lock().await;
            let now = Utc::now();
            let stale = now - chrono::Duration::from_std(STALE.max(self.catch_up)).unwrap_or_default();
            while slots.front().is_some_and(|s| *s < stale) {
                slots.pop_front();
            }
            if let Some(slot) = slots.pop_front() {
                // Half a booking left: book the next one now, so the slots are in hand before these run out.
                if slots.len() < (self.batch / 2) as usize {
                    self.book(&mut slots, now).await;
                }
                break slot;
            }
            self.book(&mut slots, now).await;
        };
        if let Ok(wait) = (slot - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Books the next slots into `slots`; when the pace is booked ahead by others, waits until it may book again.
    async fn book(&self, slots: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>) {
        let granted_before = slots.len();
        // Catching up: the pace books from `catch_up` ago (never before its next free slot), as far ahead as ever.
        let since = now - chrono::Duration::from_std(self.catch_up).unwrap_or_default();
        match self
            .store
            .reserve_rate_slots(
                self.service_provider_id,
                &self.bucket,
                self.interval,
                self.batch,
                HORIZON + self.catch_up,
                since,
            )
            .await
        {
            Ok(booked) if booked.granted > 0 => {
                let step = chrono::Duration::from_std(booked.interval).unwrap_or_default();
                slots.extend((0..booked.granted).map(|i| booked.first + step * i as i32));
            }
            // Slots still in hand: no need to wait for the pace's horizon.
            Ok(_) if granted_before > 0 => {}
            Ok(booked) => {
                // The pace is booked ahead by other workers: ask again when its horizon reaches now.
                let horizon = chrono::Duration::from_std(HORIZON).unwrap_or_default();
                let wait = (booked.first - horizon - now).to_std().unwrap_or(Duration::from_millis(1));
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
            Err(e) => {
                warn!(service_provider_id = self.service_provider_id, bucket = %self.bucket, error = %e,
                      "could not book carrier call slots; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The buckets of one worker process, by service provider and kind of call.
#[derive(Default)]
pub struct RateLimiters {
    buckets: Mutex<HashMap<(i64, &'static str), Arc<TokenBucket>>>,
    /// Where the paces are shared; `None`: local buckets (one process only).
    store: Option<Arc<dyn Pace>>,
}

impl RateLimiters {
    /// Paces shared through `store` by every worker of every instance.
    pub fn shared(store: Arc<dyn Pace>) -> Self {
        Self { buckets: Mutex::default(), store: Some(store) }
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
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let make = || match &self.store {
            Some(store) => TokenBucket::shared(store.clone(), service_provider_id, limit, account_rate_per_second),
            None => TokenBucket::new(account_rate_per_second),
        };
        let bucket = buckets.entry((service_provider_id, limit)).or_insert_with(|| Arc::new(make()));
        // The account's limit changed in the database: the next message uses the new one.
        if (bucket.rate() - usable(account_rate_per_second)).abs() > f64::EPSILON {
            *bucket = Arc::new(make());
        }
        bucket.clone()
    }

    /// A bulk change's own pace (its `MaxPerMinute`), shared through the store by every worker of every instance
    /// like the account's; a local bucket when there is no store. Not kept: the message that works the bulk change
    /// holds it.
    pub fn for_bulk_change(&self, service_provider_id: i64, bulk_change_id: i64, per_minute: u32) -> Arc<TokenBucket> {
        let rate = f64::from(per_minute.max(1)) / 60.0;
        Arc::new(match &self.store {
            Some(store) => {
                TokenBucket::shared(store.clone(), service_provider_id, format!("bulk-{bulk_change_id}"), rate)
                    .catching_up(BULK_CATCH_UP)
            }
            None => TokenBucket::new(rate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A booking: asked from, slots granted, first slot.
    type Booking = (DateTime<Utc>, u32, DateTime<Utc>);

    /// The pacing rule of both stores (`store::sqlite::pace`) in memory, recording each booking.
    #[derive(Default)]
    struct MemPace {
        next: std::sync::Mutex<Option<DateTime<Utc>>>,
        bookings: std::sync::Mutex<Vec<Booking>>,
    }

    #[async_trait::async_trait]
    impl Pace for MemPace {
        async fn reserve_rate_slots(
            &self,
            _service_provider_id: i64,
            _bucket: &str,
            interval: Duration,
            count: u32,
            horizon: Duration,
            now: DateTime<Utc>,
        ) -> crate::ports::StoreResult<crate::ports::RateSlots> {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let first = next.map_or(now, |n| n.max(now));
            let step = chrono::Duration::from_std(interval).unwrap_or_default();
            let ahead = chrono::Duration::from_std(horizon).unwrap_or_default();
            let granted = if first > now + ahead { 0 } else { count };
            *next = Some(first + step * granted as i32);
            self.bookings.lock().unwrap_or_else(|p| p.into_inner()).push((now, granted, first));
            Ok(crate::ports::RateSlots { first, granted, interval })
        }
    }

    #[tokio::test]
    async fn a_bulk_changes_pace_books_a_quarter_second_at_once_and_uses_slots_it_fell_behind_on() {
        let pace = Arc::new(MemPace::default());
        // 600 a minute: 103 ms apart once the headroom is taken; three slots a booking.
        let bucket = TokenBucket::shared(pace.clone(), 7, "bulk-1", 10.0).catching_up(BULK_CATCH_UP);
        let started = Utc::now();
        for _ in 0..6 {
            bucket.acquire().await;
        }
        let bookings = pace.bookings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Three slots a booking, the next booked when one is left: six calls, three round trips (not six).
        assert_eq!(bookings.iter().map(|b| b.1).collect::<Vec<_>>(), vec![3, 3, 3], "{bookings:?}");
        // An idle pace books from its catch-up window: the first slots are in the past and used, not dropped.
        let behind = chrono::Duration::from_std(BULK_CATCH_UP).unwrap_or_default();
        assert!(bookings[0].2 <= started - behind + chrono::Duration::milliseconds(50), "{bookings:?}");
        // The account's pace catches up nothing: its first slot is now.
        let account = Arc::new(MemPace::default());
        TokenBucket::shared(account.clone(), 7, "calls", 10.0).acquire().await;
        let first = account.bookings.lock().unwrap_or_else(|p| p.into_inner())[0];
        assert!(first.2 >= started && first.1 == 1, "{first:?}");
    }

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
        let limiters = RateLimiters::default();
        let per_second = crate::carrier::thingspace::THINGSPACE_ACTIVATIONS_PER_SECOND;
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
        // ThingSpace's 100 a minute, plus the one token of burst at the start.
        assert!((100..=101).contains(&within_a_minute), "{within_a_minute} activation requests in a minute");
    }
}
