//! Rows a worker holds: claimed with a lease, renewed, and the sweeps that bring back work nobody holds.

use super::*;

#[async_trait]
impl Leases for MssqlStore {
    async fn claim_rows(
        &self,
        bulk_change_id: i64,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(5));
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_ClaimRows @BulkChangeId = @P1, @Worker = @P2, @Limit = @P3, @LeaseUntil = @P4, @Now = @P5",
            bulk_change_id,
            worker,
            limit.min(i32::MAX as u32) as i32,
            naive(until),
            naive(now),
        );
        // Two result sets: the claimed rows, then their devices (in the bulk change's tenant).
        let sets = self.exec("claim rows", q).await?;
        let mut rows = Vec::new();
        let mut devices = std::collections::HashMap::new();
        for set in &sets {
            for r in set {
                if r.columns().iter().any(|c| c.name() == "BulkChangeId") {
                    rows.push(change_row(r)?);
                } else {
                    let d = device(r)?;
                    devices.insert(d.id, d);
                }
            }
        }
        for row in &mut rows {
            row.device = row.device_id.and_then(|id| devices.remove(&id));
        }
        Ok(rows)
    }

    async fn renew_leases(&self, bulk_change_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<u64> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_RenewLeases @BulkChangeId = @P1, @Worker = @P2, @Until = @P3",
            bulk_change_id,
            worker,
            naive(until),
        );
        let rows = self.first("renew leases", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i64, _>("Held")).map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    async fn next_lease_expiry(&self, bulk_change_id: i64) -> StoreResult<Option<DateTime<Utc>>> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_NextLeaseExpiry @BulkChangeId = @P1", bulk_change_id,);
        let rows = self.first("next lease expiry", q).await?;
        Ok(utc(rows.first().and_then(|r| r.get::<NaiveDateTime, _>("NextExpiry"))))
    }

    async fn release_due_scheduled_rows(&self, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_CustomerRatePlanChange_ReleaseDue @Now = @P1", naive(now),);
        let sets = self.exec("release scheduled rows", q).await?;
        sets.last().map_or(Ok(Vec::new()), |rows| {
            rows.iter().map(|r| need(r.get::<i64, _>("BulkChangeId"), "BulkChangeId")).collect()
        })
    }

    async fn stranded_bulk_changes(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        let since = now - chrono::Duration::days(1);
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_Stranded @Before = @P1, @Now = @P2, @Since = @P3",
            naive(before),
            naive(now),
            naive(since),
        );
        self.first("find stranded", q).await?.iter().map(|r| need(r.get::<i64, _>("Id"), "Id")).collect()
    }
}
