//! A carrier account's pace, shared by every worker of every instance.

use super::*;

#[async_trait]
impl Pace for MssqlStore {
    async fn reserve_rate_slots(
        &self,
        service_provider_id: i64,
        bucket: &str,
        interval: Duration,
        count: u32,
        horizon: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<RateSlots> {
        let q = proc_call!(
            "EXEC dbo.usp_RateBudget_Reserve @ServiceProviderId = @P1, @Bucket = @P2, @IntervalSeconds = @P3, @Count = @P4,
                  @HorizonSeconds = @P5, @NowSeconds = @P6",
            service_provider_id,
            bucket,
            interval.as_secs_f64(),
            i32::try_from(count).unwrap_or(i32::MAX),
            horizon.as_secs_f64(),
            now.timestamp_micros() as f64 / 1e6,
        );
        let rows = self.first("reserve rate slots", q).await?;
        let r = need(rows.first(), "FirstSlot")?;
        let first: f64 = need(r.get("FirstSlot"), "FirstSlot")?;
        let granted: i32 = need(r.get("Granted"), "Granted")?;
        Ok(RateSlots {
            first: DateTime::from_timestamp_micros((first * 1e6).round() as i64).unwrap_or(now),
            granted: u32::try_from(granted).unwrap_or(0),
            interval,
        })
    }
}
