//! Rollout control (issue 21) through its procedures: pause, resume, the canary's passing and the abort decision,
//! each one conditional `UPDATE` (the claim, `usp_DeviceBulkChange_ClaimRows`, refuses rows of a paused or aborted
//! bulk change and caps a canary's).

use super::*;

#[async_trait]
impl Rollouts for MssqlStore {
    async fn rollout_progress(&self, bulk_change_id: i64) -> StoreResult<RolloutProgress> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_RolloutProgress @BulkChangeId = @P1", bulk_change_id,);
        let rows = self.first("read rollout", q).await?;
        let row = rows.first().ok_or_else(|| StoreError::Corrupt(format!("no bulk change {bulk_change_id}")))?;
        let status = need(text(row, "Status"), "Status")?;
        let hold = match (text(row, "HoldReason"), utc(row.get("HoldDate"))) {
            (Some(reason), Some(at)) => Some((reason, text(row, "HoldBy").unwrap_or_default(), at)),
            _ => None,
        };
        let count = |name: &str| row.get::<i64, _>(name).unwrap_or(0).max(0) as u64;
        Ok(RolloutProgress {
            status: BulkStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown bulk status {status}")))?,
            hold,
            canary_passed: utc(row.get("CanaryPassedDate")).is_some(),
            aborted_reason: text(row, "AbortedReason"),
            started: count("Started"),
            finished: count("Finished"),
            failed: count("Failed"),
        })
    }

    async fn pause_bulk_change(
        &self,
        tenant_id: Option<i64>,
        bulk_change_id: i64,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_Pause @TenantId = @P1, @BulkChangeId = @P2, @Reason = @P3, @By = @P4, @Now = @P5",
            tenant_id,
            bulk_change_id,
            reason.to_string(),
            by.to_string(),
            naive(now),
        );
        let rows = self.first("pause", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i64, _>("InFlight")).map(|n| n.max(0) as u64))
    }

    async fn resume_bulk_change(
        &self,
        tenant_id: Option<i64>,
        bulk_change_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_Resume @TenantId = @P1, @BulkChangeId = @P2, @Now = @P3",
            tenant_id,
            bulk_change_id,
            naive(now),
        );
        Ok(self.first("resume", q).await?.first().and_then(|r| r.get::<bool, _>("Resumed")).unwrap_or(false))
    }

    async fn pass_canary(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_PassCanary @BulkChangeId = @P1, @Now = @P2",
            bulk_change_id,
            naive(now),
        );
        self.exec("pass canary", q).await.map(|_| ())
    }

    async fn abort_bulk_change(&self, bulk_change_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_Abort @BulkChangeId = @P1, @Reason = @P2, @Now = @P3",
            bulk_change_id,
            reason.to_string(),
            naive(now),
        );
        Ok(self.first("abort", q).await?.first().and_then(|r| r.get::<bool, _>("Aborted")).unwrap_or(false))
    }
}
