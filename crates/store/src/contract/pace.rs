//! The shared pace and lease renewal.

use super::*;

/// Books a carrier account's pace as `workers` workers would, every `step_ms` of synthetic time for `seconds`;
/// returns every granted slot (Unix seconds).
pub async fn book_pace(stores: &[&dyn Store], rate: f64, seconds: u32, step_ms: i64) -> Vec<f64> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let batch = (rate / 20.0).max(1.0) as u32;
    let mut slots = Vec::new();
    let mut at = 0;
    while at < i64::from(seconds) * 1000 {
        let now = t(0) + chrono::Duration::milliseconds(at);
        let booked = futures::future::join_all(
            stores.iter().map(|s| s.reserve_rate_slots(SP, "calls", interval, batch, Duration::from_millis(100), now)),
        )
        .await;
        for b in booked {
            let b = b.expect("book");
            let first = b.first.timestamp_micros() as f64 / 1e6;
            slots.extend((0..b.granted).map(|i| first + f64::from(i) * interval.as_secs_f64()));
        }
        at += step_ms;
    }
    slots.sort_by(f64::total_cmp);
    slots
}

/// The most slots in any window of one second (half-open: a call exactly one second after another is in the next
/// window; ten microseconds of rounding are forgiven: Unix seconds near 2030 keep about a quarter microsecond).
pub fn busiest_second(slots: &[f64]) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..slots.len() {
        while slots[end] - slots[start] >= 1.0 - 1e-5 {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

pub async fn the_shared_pace_never_books_more_than_its_rate(store: &dyn Store) {
    let rate = 200.0;
    let slots = book_pace(&[store, store], rate, 5, 10).await;
    assert!(busiest_second(&slots) as f64 <= rate, "at most {rate} slots in any second: {}", busiest_second(&slots));
    assert!(slots.len() as f64 >= rate * 4.5, "and the whole pace is used: {} slots in 5 s", slots.len());
    assert!(slots.windows(2).all(|w| w[1] - w[0] >= 1.0 / rate - 1e-5), "no slot handed out twice");
    // Far booked ahead: nothing more until the horizon comes back.
    let interval = Duration::from_secs_f64(1.0 / rate);
    let now = t(0);
    let other = store.reserve_rate_slots(SP, "activations", interval, 10, Duration::from_millis(100), now).await;
    assert_eq!(other.expect("book").granted, 10, "each kind of call has its own pace");
}

pub async fn leases_are_renewed_by_their_holder_only(store: &dyn Store) {
    let id = new_bulk(store).await;
    assert_eq!(store.pending_rows(id).await.expect("pending"), 3);
    let mine = store.claim_rows(id, "a", 2, Duration::from_secs(30), t(0)).await.expect("claim");
    assert_eq!(store.pending_rows(id).await.expect("pending"), 1);
    // Renewed at t(20) for 30 s more: still held at t(40), when the first lease would have ended.
    assert_eq!(store.renew_leases(id, "a", t(50)).await.expect("renew"), 2);
    assert_eq!(store.renew_leases(id, "b", t(50)).await.expect("renew"), 0, "b holds nothing");
    assert_eq!(
        store.claim_rows(id, "b", 10, Duration::from_secs(30), t(40)).await.expect("claim").len(),
        1,
        "only the pending row"
    );
    // Not renewed again: taken over once the renewed lease ends.
    let taken = store.claim_rows(id, "c", 10, Duration::from_secs(30), t(51)).await.expect("claim");
    assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), mine.iter().map(|r| r.id).collect::<Vec<_>>());
    assert!(taken.iter().all(|r| r.claims == 2));
    close(store, &[id]).await;
}
