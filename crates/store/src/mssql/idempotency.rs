//! `Idempotency-Key`s: reserved, answered, freed, purged.

use super::*;

#[async_trait]
impl Idempotency for MssqlStore {
    async fn begin_idempotent(
        &self,
        tenant_id: i64,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart> {
        let q = proc_call!(
            "EXEC dbo.usp_IdempotencyKey_Begin @TenantId = @P1, @IdempotencyKey = @P2, @RequestHash = @P3, @Now = @P4, @StaleBefore = @P5, @ExpiredBefore = @P6",
            tenant_id,
            key,
            request_hash,
            naive(now),
            naive(stale_before),
            naive(expired_before),
        );
        let rows = self.first("begin idempotency key", q).await?;
        let r = need(rows.first(), "Outcome")?;
        match text(r, "Outcome").as_deref() {
            Some("New") => Ok(IdempotencyStart::New),
            Some("Mismatch") => Ok(IdempotencyStart::Mismatch),
            Some("Replay") => Ok(IdempotencyStart::Replay {
                status: u16::try_from(r.get::<i32, _>("ResponseStatus").unwrap_or(500)).unwrap_or(500),
                body: text(r, "ResponseBody").unwrap_or_default(),
            }),
            Some("InProgress") => Ok(IdempotencyStart::InProgress {
                bulk_change_id: r.get("BulkChangeId"),
                since: need(utc(r.get("CreatedDate")), "CreatedDate")?,
            }),
            other => Err(StoreError::Corrupt(format!("unknown idempotency outcome {other:?}"))),
        }
    }

    async fn finish_idempotent(&self, tenant_id: i64, key: &str, status: u16, body: &str) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_IdempotencyKey_Finish @TenantId = @P1, @IdempotencyKey = @P2, @ResponseStatus = @P3, @ResponseBody = @P4",
            tenant_id,
            key,
            i32::from(status),
            body,
        );
        self.exec("keep idempotent answer", q).await.map(|_| ())
    }

    async fn abandon_idempotent(&self, tenant_id: i64, key: &str) -> StoreResult<()> {
        let q =
            proc_call!("EXEC dbo.usp_IdempotencyKey_Abandon @TenantId = @P1, @IdempotencyKey = @P2", tenant_id, key,);
        self.exec("free idempotency key", q).await.map(|_| ())
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let q = proc_call!("EXEC dbo.usp_IdempotencyKey_Purge @Before = @P1", naive(before),);
        let rows = self.first("purge idempotency keys", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i32, _>("Purged")).map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }
}
