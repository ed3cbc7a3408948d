//! What a lease holder writes: a row's final outcome (with its device update) and the audit trail.

use super::*;

#[async_trait]
impl Outcomes for MssqlStore {
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
        let mut q = Query::new(complete_call(&c));
        bind_completion(&mut q, &c);
        let sets = self.exec("complete row", q).await?;
        Ok(sets.last().and_then(|s| s.first()).and_then(|r| r.get::<bool, _>("Completed")).unwrap_or(false))
    }

    /// One call of the set-based `usp_DeviceBulkChange_CompleteRows` per group of one worker's rows.
    async fn complete_rows(&self, rows: &[Completion]) -> StoreResult<Vec<bool>> {
        let mut done = Vec::with_capacity(rows.len());
        let mut by_worker: Vec<&str> = rows.iter().map(|c| c.worker.as_str()).collect();
        by_worker.sort_unstable();
        by_worker.dedup();
        let mut answers: std::collections::HashMap<usize, bool> = std::collections::HashMap::new();
        for worker in by_worker {
            let mine: Vec<(usize, &Completion)> = rows.iter().enumerate().filter(|(_, c)| c.worker == worker).collect();
            for group in mine.chunks(GROUP) {
                let json: Vec<serde_json::Value> = group.iter().map(|(seq, c)| completion_json(*seq, c)).collect();
                let q = proc_call!(
                    "EXEC dbo.usp_DeviceBulkChange_CompleteRows @Worker = @P1, @ProcessedBy = @P2, @RowsJson = @P3",
                    worker,
                    PROCESSED_BY,
                    serde_json::Value::Array(json).to_string(),
                );
                for r in self.first("complete rows", q).await? {
                    let seq: i32 = need(r.get("Seq"), "Seq")?;
                    answers.insert(
                        usize::try_from(seq).unwrap_or(usize::MAX),
                        r.get::<bool, _>("Completed").unwrap_or(false),
                    );
                }
            }
        }
        for seq in 0..rows.len() {
            done.push(*answers.get(&seq).ok_or_else(|| {
                StoreError::Corrupt(format!("completing {} rows: no answer for row {seq}", rows.len()))
            })?);
        }
        Ok(done)
    }

    async fn append_log(&self, e: &LogEntry) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChangeLog_Add @BulkChangeId = @P1, @M2MDeviceChangeId = @P2, @LogEntryDescription = @P3, @RequestText = @P4,
                  @ResponseText = @P5, @ResponseStatus = @P6, @HasErrors = @P7, @ErrorText = @P8, @ProcessBy = @P9, @ProcessedDate = @P10",
            e.bulk_change_id,
            e.device_change_id,
            e.description.as_str(),
            e.request_text.as_str(),
            e.response_text.as_str(),
            e.response_status.as_str(),
            e.has_errors,
            e.error_text.as_deref(),
            PROCESSED_BY,
            naive(e.processed_date),
        );
        self.exec("append log", q).await.map(|_| ())
    }

    /// One statement per group (`usp_DeviceBulkChangeLog_AddMany`), the entries in order.
    async fn append_logs(&self, entries: &[LogEntry]) -> StoreResult<()> {
        for group in entries.chunks(GROUP) {
            let json: Vec<serde_json::Value> = group
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    serde_json::json!({
                        "Seq": i, "BulkChangeId": e.bulk_change_id, "RowId": e.device_change_id,
                        "Description": json_text(&e.description), "RequestText": json_text(&e.request_text),
                        "ResponseText": json_text(&e.response_text), "ResponseStatus": json_text(&e.response_status),
                        "HasErrors": e.has_errors, "ErrorText": e.error_text.as_deref().map(json_text),
                        "ProcessedDate": json_date(e.processed_date),
                    })
                })
                .collect();
            let q = proc_call!(
                "EXEC dbo.usp_DeviceBulkChangeLog_AddMany @ProcessBy = @P1, @EntriesJson = @P2",
                PROCESSED_BY,
                serde_json::Value::Array(json).to_string(),
            );
            self.exec("append logs", q).await?;
        }
        Ok(())
    }
}
