//! `Idempotency-Key`s: reserved, answered, freed, purged.

use super::*;

#[async_trait]
impl Idempotency for SqliteStore {
    async fn begin_idempotent(
        &self,
        tenant_id: i64,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart> {
        let (key, hash) = (key.to_string(), request_hash.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin idempotency"))?;
            type Raw = (String, Option<i64>, Option<i64>, Option<String>, String);
            let found: Option<Raw> = tx
                .query_row(
                    "SELECT RequestHash, BulkChangeId, ResponseStatus, ResponseBody, CreatedDate FROM IdempotencyKey WHERE TenantId = ?1 AND IdempotencyKey = ?2",
                    params![tenant_id, key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(db("read idempotency key"))?;
            let start = match found {
                Some((stored_hash, bulk, status, body, created)) if created >= ts(expired_before) => {
                    let created_at = parse_ts(&created)?;
                    match (status, body) {
                        _ if stored_hash != hash => IdempotencyStart::Mismatch,
                        (Some(status), Some(body)) => {
                            IdempotencyStart::Replay { status: u16::try_from(status).unwrap_or(500), body }
                        }
                        _ if bulk.is_none() && created_at < stale_before => IdempotencyStart::New,
                        _ => IdempotencyStart::InProgress { bulk_change_id: bulk, since: created_at },
                    }
                }
                _ => IdempotencyStart::New,
            };
            if start == IdempotencyStart::New {
                tx.execute(
                    "INSERT INTO IdempotencyKey (TenantId, IdempotencyKey, RequestHash, CreatedDate) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (TenantId, IdempotencyKey) DO UPDATE SET RequestHash = excluded.RequestHash, BulkChangeId = NULL,
                         ResponseStatus = NULL, ResponseBody = NULL, CreatedDate = excluded.CreatedDate",
                    params![tenant_id, key, hash, ts(now)],
                )
                .map_err(db("reserve idempotency key"))?;
            }
            tx.commit().map_err(db("commit idempotency"))?;
            Ok(start)
        })
        .await
    }

    async fn finish_idempotent(&self, tenant_id: i64, key: &str, status: u16, body: &str) -> StoreResult<()> {
        let (key, body) = (key.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE IdempotencyKey SET ResponseStatus = ?3, ResponseBody = ?4 WHERE TenantId = ?1 AND IdempotencyKey = ?2",
                params![tenant_id, key, status, body],
            )
            .map_err(db("keep idempotent answer"))?;
            Ok(())
        })
        .await
    }

    async fn abandon_idempotent(&self, tenant_id: i64, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.with(move |c| {
            c.execute(
                "DELETE FROM IdempotencyKey WHERE TenantId = ?1 AND IdempotencyKey = ?2 AND BulkChangeId IS NULL AND ResponseStatus IS NULL",
                params![tenant_id, key],
            )
            .map_err(db("free idempotency key"))?;
            Ok(())
        })
        .await
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM IdempotencyKey WHERE CreatedDate < ?1", params![ts(before)])
                .map_err(db("purge idempotency keys"))?;
            Ok(n as u64)
        })
        .await
    }
}
