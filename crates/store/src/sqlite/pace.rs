//! A carrier account's pace, shared by every worker of every instance.

use super::*;

#[async_trait]
impl Pace for SqliteStore {
    async fn reserve_rate_slots(
        &self,
        service_provider_id: i64,
        bucket: &str,
        interval: Duration,
        count: u32,
        horizon: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<RateSlots> {
        let bucket = bucket.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin rate"))?;
            let now_s = unix_seconds(now);
            let stored: Option<f64> = tx
                .query_row(
                    "SELECT NextSlot FROM RateBudget WHERE ServiceProviderId = ?1 AND Bucket = ?2",
                    params![service_provider_id, bucket],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("read rate budget"))?;
            let (first, granted, next) = pace(stored, now_s, interval, count, horizon);
            if granted > 0 {
                tx.execute(
                    "INSERT INTO RateBudget (ServiceProviderId, Bucket, NextSlot) VALUES (?1, ?2, ?3)
                     ON CONFLICT (ServiceProviderId, Bucket) DO UPDATE SET NextSlot = excluded.NextSlot",
                    params![service_provider_id, bucket, next],
                )
                .map_err(db("book rate slots"))?;
            }
            tx.commit().map_err(db("commit rate"))?;
            Ok(RateSlots { first: from_unix_seconds(first), granted, interval })
        })
        .await
    }
}
