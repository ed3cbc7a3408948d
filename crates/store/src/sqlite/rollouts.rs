//! Rollout control (issue 21): pause, resume, the canary's passing and the abort decision, each one conditional
//! `UPDATE` (the claim refuses rows of a paused or aborted bulk change, and caps a canary's, in `leases.rs`).

use super::*;

#[async_trait]
impl Rollouts for SqliteStore {
    async fn rollout_progress(&self, bulk_change_id: i64) -> StoreResult<RolloutProgress> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let (status, reason, by, at, passed, aborted): (
                String,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = c
                .query_row(
                    "SELECT Status, HoldReason, HoldBy, HoldDate, CanaryPassedDate, AbortedReason FROM DeviceBulkChange WHERE Id = ?1",
                    params![bulk_change_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .map_err(db("read rollout"))?;
            let (started, finished, failed): (i64, i64, i64) = c
                .query_row(
                    &format!(
                        "SELECT COUNT(*),
                                COALESCE(SUM(CASE WHEN Status IN ('PROCESSED', 'API_FAILED', 'ERROR', 'CANCELLED') THEN 1 ELSE 0 END), 0),
                                COALESCE(SUM(CASE WHEN Status IN ('API_FAILED', 'ERROR') THEN 1 ELSE 0 END), 0)
                         FROM {table} WHERE BulkChangeId = ?1 AND Claims > 0"
                    ),
                    params![bulk_change_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(db("count rollout"))?;
            let hold = match (reason, at) {
                (Some(reason), Some(at)) => Some((reason, by.unwrap_or_default(), parse_ts(&at)?)),
                _ => None,
            };
            Ok(RolloutProgress {
                status: BulkStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("unknown bulk status {status}")))?,
                hold,
                canary_passed: passed.is_some(),
                aborted_reason: aborted,
                started: started as u64,
                finished: finished as u64,
                failed: failed as u64,
            })
        })
        .await
    }

    async fn pause_bulk_change(
        &self,
        tenant_id: Option<i64>,
        bulk_change_id: i64,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>> {
        let (reason, by) = (reason.to_string(), by.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin pause"))?;
            let table = row_table(&tx, bulk_change_id)?;
            let n = tx
                .execute(
                    "UPDATE DeviceBulkChange SET Status = 'PAUSED', HoldReason = ?3, HoldBy = ?4, HoldDate = ?5, ModifiedDate = ?5
                     WHERE Id = ?1 AND (?2 IS NULL OR TenantId = ?2) AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED')
                       AND AbortedReason IS NULL",
                    params![bulk_change_id, tenant_id, reason, by, ts(now)],
                )
                .map_err(db("pause"))?;
            if n == 0 {
                return Ok(None);
            }
            write_event(&tx, bulk_change_id, EVENT_PAUSED, Some(&reason), Some(&by), now)?;
            let in_flight: i64 = tx
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND Status = 'PROCESSING'"),
                    params![bulk_change_id],
                    |r| r.get(0),
                )
                .map_err(db("count rows in flight"))?;
            tx.commit().map_err(db("commit pause"))?;
            Ok(Some(in_flight as u64))
        })
        .await
    }

    async fn resume_bulk_change(
        &self,
        tenant_id: Option<i64>,
        bulk_change_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE DeviceBulkChange
                     SET Status = 'PROCESSING', ModifiedDate = ?3,
                         CanaryPassedDate = CASE WHEN HoldReason = 'canary' THEN ?3 ELSE CanaryPassedDate END,
                         HoldReason = NULL, HoldBy = NULL, HoldDate = NULL
                     WHERE Id = ?1 AND (?2 IS NULL OR TenantId = ?2) AND Status = 'PAUSED'",
                    params![bulk_change_id, tenant_id, ts(now)],
                )
                .map_err(db("resume"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn pass_canary(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE DeviceBulkChange SET CanaryPassedDate = ?2 WHERE Id = ?1 AND CanaryPassedDate IS NULL",
                params![bulk_change_id, ts(now)],
            )
            .map_err(db("pass canary"))?;
            Ok(())
        })
        .await
    }

    async fn abort_bulk_change(&self, bulk_change_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let reason = reason.to_string();
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE DeviceBulkChange SET AbortedReason = ?2, ModifiedDate = ?3
                     WHERE Id = ?1 AND AbortedReason IS NULL AND Status NOT IN ('PROCESSED', 'ERROR', 'CANCELLED', 'ABORTED')",
                    params![bulk_change_id, reason, ts(now)],
                )
                .map_err(db("abort"))?;
            Ok(n == 1)
        })
        .await
    }
}
