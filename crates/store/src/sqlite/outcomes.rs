//! What a lease holder writes: a row's final outcome (with its device update) and the audit trail.

use super::*;

#[async_trait]
impl Outcomes for SqliteStore {
    async fn complete_row(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        outcome: &RowOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let c =
            Completion { tenant_id, bulk_change_id, row_id, worker: worker.to_string(), outcome: outcome.clone(), now };
        self.complete_rows(std::slice::from_ref(&c)).await.map(|done| done.first().copied().unwrap_or(false))
    }

    async fn complete_rows(&self, rows: &[Completion]) -> StoreResult<Vec<bool>> {
        let rows = rows.to_vec();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db("begin complete row"))?;
            let done = rows.iter().map(|r| complete_in(&tx, r)).collect::<Result<Vec<bool>, StoreError>>()?;
            tx.commit().map_err(db("commit complete row"))?;
            Ok(done)
        })
        .await
    }

    async fn append_log(&self, e: &LogEntry) -> StoreResult<()> {
        self.append_logs(std::slice::from_ref(e)).await
    }

    async fn append_logs(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(db("begin append log"))?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO DeviceBulkChangeLog (BulkChangeId, M2MDeviceChangeId, MobilityDeviceChangeId, LogEntryDescription, RequestText, ResponseText, ResponseStatus, HasErrors, ErrorText, ProcessBy, ProcessedDate)
                         SELECT ?1, CASE WHEN b.PortalTypeId = 2 THEN NULL ELSE ?2 END, CASE WHEN b.PortalTypeId = 2 THEN ?2 END, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                         FROM DeviceBulkChange b WHERE b.Id = ?1",
                    )
                    .map_err(db("append log"))?;
                for e in &entries {
                    insert
                        .execute(params![e.bulk_change_id, e.device_change_id, e.description, e.request_text, e.response_text, e.response_status, e.has_errors, e.error_text, PROCESSED_BY, ts(e.processed_date)])
                        .map_err(db("append log"))?;
                }
            }
            tx.commit().map_err(db("commit append log"))?;
            Ok(())
        })
        .await
    }
}
