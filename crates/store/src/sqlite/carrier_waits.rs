//! Rows waiting on an asynchronous carrier request, and the callbacks that settle or wake them.

use super::*;

#[async_trait]
impl CarrierWaits for SqliteStore {
    async fn await_carrier(
        &self,
        bulk_change_id: i64,
        row_ids: &[i64],
        worker: &str,
        request_id: &str,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (row_ids, worker, request_id) = (row_ids.to_vec(), worker.to_string(), request_id.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin await carrier"))?;
            let table = row_table(&tx, bulk_change_id)?;
            let mut changed = 0;
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE {table} SET CarrierRequestId = ?1, CarrierRequestedAt = COALESCE(CarrierRequestedAt, ?2),
                                LeaseUntil = CASE WHEN LeaseOwner = 'carrier:' || ?1 THEN MIN(LeaseUntil, ?3) ELSE ?3 END,
                                LeaseOwner = 'carrier:' || ?1
                         WHERE Id = ?4 AND BulkChangeId = ?5 AND LeaseOwner = ?6 AND Status = 'PROCESSING'"
                    ))
                    .map_err(db("await carrier"))?;
                for id in row_ids {
                    changed += stmt
                        .execute(params![request_id, ts(now), ts(deadline), id, bulk_change_id, worker])
                        .map_err(db("await carrier"))? as u64;
                }
            }
            tx.commit().map_err(db("commit await carrier"))?;
            Ok(changed)
        })
        .await
    }

    async fn carrier_request_rows(
        &self,
        service_provider_ids: &[i64],
        request_id: &str,
        iccid: Option<&str>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let (sps, request_id, iccid) =
            (service_provider_ids.to_vec(), request_id.to_string(), iccid.map(str::to_string));
        self.with(move |c| {
            let mut rows = Vec::new();
            for table in ROW_TABLES {
                let columns = ROW_COLUMNS.split(", ").map(|col| format!("r.{col}")).collect::<Vec<_>>().join(", ");
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM {table} r JOIN DeviceBulkChange b ON b.Id = r.BulkChangeId
                         WHERE r.CarrierRequestId = ?1 AND b.ServiceProviderId = ?2 AND (?3 IS NULL OR r.ICCID = ?3) ORDER BY r.Id"
                    ))
                    .map_err(db("read carrier request rows"))?;
                for sp in &sps {
                    let raws = stmt
                        .query_map(params![request_id, sp, iccid], raw_row)
                        .map_err(db("read carrier request rows"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db("read carrier request rows"))?;
                    for raw in raws {
                        rows.push(row_from_raw(raw)?);
                    }
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn hand_back_with_result(
        &self,
        bulk_change_id: i64,
        row_id: i64,
        owner: &str,
        result: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (owner, result) = (owner.to_string(), result.to_string());
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let changed = c
                .execute(
                    &format!(
                        "UPDATE {table} SET CarrierResult = ?1, LeaseOwner = 'result', LeaseUntil = ?2
                         WHERE Id = ?3 AND BulkChangeId = ?4 AND LeaseOwner = ?5 AND Status = 'PROCESSING'"
                    ),
                    params![result, ts(now), row_id, bulk_change_id, owner],
                )
                .map_err(db("hand back row"))?;
            Ok(changed == 1)
        })
        .await
    }

    async fn wake_carrier_request(
        &self,
        service_provider_id: i64,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        let owner = format!("carrier:{request_id}");
        self.with(move |c| {
            let mut woken = std::collections::BTreeSet::new();
            for table in ROW_TABLES {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "UPDATE {table} SET LeaseUntil = ?1
                         WHERE LeaseOwner = ?2 AND Status = 'PROCESSING' AND LeaseUntil > ?1
                           AND BulkChangeId IN (SELECT Id FROM DeviceBulkChange WHERE ServiceProviderId = ?3)
                         RETURNING BulkChangeId"
                    ))
                    .map_err(db("wake carrier request"))?;
                let ids = stmt
                    .query_map(params![ts(now), owner, service_provider_id], |r| r.get::<_, i64>(0))
                    .map_err(db("wake carrier request"))?;
                for id in ids {
                    woken.insert(id.map_err(db("wake carrier request"))?);
                }
            }
            Ok(woken.into_iter().collect())
        })
        .await
    }

    async fn record_callback(&self, cb: &CallbackRecord) -> StoreResult<()> {
        let cb = cb.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO ThingSpaceCallBackResponseLog (RequestId, ICCID, TenantId, ServiceProviderId, APIStatus, APIResponse, Outcome, CreatedDate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![cb.request_id, cb.iccid, cb.tenant_id, cb.service_provider_id, cb.api_status, cb.api_response, cb.outcome, ts(cb.received_at)],
            )
            .map_err(db("record callback"))?;
            Ok(())
        })
        .await
    }

    async fn unmatched_callbacks(
        &self,
        service_provider_id: i64,
        request_id: &str,
    ) -> StoreResult<Vec<CallbackRecord>> {
        let request_id = request_id.to_string();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT RequestId, ICCID, TenantId, ServiceProviderId, APIStatus, APIResponse, Outcome, CreatedDate
                     FROM ThingSpaceCallBackResponseLog WHERE ServiceProviderId = ?1 AND RequestId = ?2 AND Outcome LIKE 'unmatched%' ORDER BY Id",
                )
                .map_err(db("read unmatched callbacks"))?;
            let raws = stmt
                .query_map(params![service_provider_id, request_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get::<_, String>(7)?))
                })
                .map_err(db("read unmatched callbacks"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read unmatched callbacks"))?;
            raws.into_iter()
                .map(|(request_id, iccid, tenant_id, service_provider_id, api_status, api_response, outcome, at)| {
                    Ok(CallbackRecord { request_id, iccid, tenant_id, service_provider_id, api_status, api_response, outcome, received_at: parse_ts(&at)? })
                })
                .collect()
        })
        .await
    }

    async fn purge_unmatched_callbacks(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM ThingSpaceCallBackResponseLog WHERE Outcome LIKE 'unmatched%' AND CreatedDate < ?1",
                    params![ts(before)],
                )
                .map_err(db("purge unmatched callbacks"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn refuse_login(&self, service_provider_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let reason = reason.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE ThingSpaceAuthentication SET LoginRefusedReason = ?2, LoginRefusedDate = ?3 WHERE ServiceProviderId = ?1",
                params![service_provider_id, reason, ts(now)],
            )
            .map_err(db("refuse login"))?;
            Ok(())
        })
        .await
    }
}
