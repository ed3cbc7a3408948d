//! Rows a worker holds: claimed with a lease, renewed, and the sweeps that bring back work nobody holds.

use super::*;

#[async_trait]
impl Leases for SqliteStore {
    async fn claim_rows(
        &self,
        bulk_change_id: i64,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let worker = worker.to_string();
        self.with(move |c| {
            let until = ts(now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(5)));
            let now = ts(now);
            let tx =
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin claim"))?;
            let table = row_table(&tx, bulk_change_id)?;
            // Rollout control: no PENDING row of a paused or aborted bulk change (its rows in flight whose lease
            // ended are still taken, to be settled); a canary's PENDING rows only while fewer than its devices were
            // ever claimed.
            let gate: Option<(String, Option<String>, Option<i64>, Option<String>)> = tx
                .query_row(
                    "SELECT Status, AbortedReason, CanaryDevices, CanaryPassedDate FROM DeviceBulkChange WHERE Id = ?1",
                    params![bulk_change_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(db("read claim gate"))?;
            let pending_room = match gate {
                Some((status, aborted, _, _)) if status == "PAUSED" || aborted.is_some() => 0,
                Some((_, _, Some(canary), None)) => {
                    let started: i64 = tx
                        .query_row(
                            &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND Claims > 0"),
                            params![bulk_change_id],
                            |r| r.get(0),
                        )
                        .map_err(db("count started rows"))?;
                    u32::try_from((canary - started).max(0)).unwrap_or(0).min(limit)
                }
                _ => limit,
            };
            let raws = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE {table} SET Status = 'PROCESSING', LeaseOwner = ?1, LeaseUntil = ?2, Claims = Claims + 1
                         WHERE Id IN (SELECT Id FROM {table} WHERE BulkChangeId = ?3 AND Status = 'PROCESSING' AND LeaseUntil < ?4
                                      ORDER BY Id LIMIT ?5)
                         RETURNING {ROW_COLUMNS}"
                    ))
                    .map_err(db("claim rows"))?;
                let mut raws = stmt
                    .query_map(params![worker, until, bulk_change_id, now, limit], raw_row)
                    .map_err(db("claim rows"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("claim rows"))?;
                let room = pending_room.min(limit.saturating_sub(raws.len() as u32));
                if room > 0 {
                    let mut pending = tx
                        .prepare_cached(&format!(
                            "UPDATE {table} SET Status = 'PROCESSING', LeaseOwner = ?1, LeaseUntil = ?2, Claims = Claims + 1
                             WHERE Id IN (SELECT Id FROM {table} WHERE BulkChangeId = ?3 AND Status = 'PENDING' ORDER BY Id LIMIT ?4)
                             RETURNING {ROW_COLUMNS}"
                        ))
                        .map_err(db("claim rows"))?;
                    raws.extend(
                        pending
                            .query_map(params![worker, until, bulk_change_id, room], raw_row)
                            .map_err(db("claim rows"))?
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(db("claim rows"))?,
                    );
                }
                raws
            };
            let mut rows = raws.into_iter().map(row_from_raw).collect::<Result<Vec<_>, _>>()?;
            if !rows.is_empty() {
                tx.execute("UPDATE DeviceBulkChange SET ModifiedDate = ?2 WHERE Id = ?1", params![bulk_change_id, now])
                    .map_err(db("touch bulk change"))?;
                // Each row's device, read with the claim so the processor needs no request of its own for it.
                let mut read = tx
                    .prepare_cached(&format!(
                        "SELECT {DEVICE_COLUMNS} FROM Device
                         WHERE Id = ?1 AND TenantId = (SELECT TenantId FROM DeviceBulkChange WHERE Id = ?2)"
                    ))
                    .map_err(db("read claimed devices"))?;
                for row in &mut rows {
                    if let Some(device_id) = row.device_id {
                        row.device = read
                            .query_row(params![device_id, bulk_change_id], device_from_row)
                            .optional()
                            .map_err(db("read claimed devices"))?
                            .map(finish_device)
                            .transpose()?;
                    }
                }
            }
            tx.commit().map_err(db("commit claim"))?;
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
        .await
    }

    async fn renew_leases(&self, bulk_change_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<u64> {
        let worker = worker.to_string();
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            c.execute(
                &format!(
                    "UPDATE {table} SET LeaseUntil = ?3
                     WHERE BulkChangeId = ?1 AND LeaseOwner = ?2 AND Status = 'PROCESSING' AND LeaseUntil < ?3"
                ),
                params![bulk_change_id, worker, ts(until)],
            )
            .map_err(db("renew leases"))?;
            let held: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND LeaseOwner = ?2 AND Status = 'PROCESSING'"),
                    params![bulk_change_id, worker],
                    |r| r.get(0),
                )
                .map_err(db("count held rows"))?;
            Ok(held as u64)
        })
        .await
    }

    async fn next_lease_expiry(&self, bulk_change_id: i64) -> StoreResult<Option<DateTime<Utc>>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let next: Option<String> = c
                .query_row(
                    &format!("SELECT MIN(LeaseUntil) FROM {table} WHERE BulkChangeId = ?1 AND Status = 'PROCESSING'"),
                    params![bulk_change_id],
                    |r| r.get(0),
                )
                .map_err(db("next lease expiry"))?;
            opt_ts(next)
        })
        .await
    }

    async fn release_due_scheduled_rows(&self, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        self.with(move |c| {
            let now = ts(now);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin release"))?;
            let mut bulk_ids: Vec<i64> = Vec::new();
            for (portal, table) in [(0, ROW_TABLES[0]), (2, ROW_TABLES[1])] {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE {table} SET Status = 'PENDING'
                         WHERE Status = 'SCHEDULED' AND Id IN (SELECT M2MDeviceChangeId FROM Device_CustomerRatePlanOrRatePool_Queue
                                                               WHERE IsActive = 1 AND EffectiveDate <= ?1 AND PortalType = ?2)
                         RETURNING BulkChangeId"
                    ))
                    .map_err(db("release scheduled rows"))?;
                let released = stmt
                    .query_map(params![now, portal], |r| r.get(0))
                    .map_err(db("release scheduled rows"))?
                    .collect::<Result<Vec<i64>, _>>()
                    .map_err(db("release scheduled rows"))?;
                bulk_ids.extend(released);
            }
            bulk_ids.sort_unstable();
            bulk_ids.dedup();
            for id in &bulk_ids {
                tx.execute(
                    "UPDATE DeviceBulkChange SET Status = 'PROCESSING', ModifiedDate = ?2 WHERE Id = ?1 AND Status = 'SCHEDULED'",
                    params![id, now],
                )
                .map_err(db("reopen bulk change"))?;
            }
            tx.commit().map_err(db("commit release"))?;
            Ok(bulk_ids)
        })
        .await
    }

    async fn stranded_bulk_changes(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT b.Id FROM DeviceBulkChange b
                     WHERE b.Status IN ('NEW', 'PROCESSING') AND b.ModifiedDate < ?1
                       AND NOT EXISTS (SELECT 1 FROM M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = 'PROCESSING' AND r.LeaseUntil >= ?2)
                       AND NOT EXISTS (SELECT 1 FROM Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = 'PROCESSING' AND r.LeaseUntil >= ?2)
                     UNION
                     SELECT b.Id FROM DeviceBulkChange b
                     WHERE b.Status = 'PAUSED' AND b.ModifiedDate < ?1
                       AND (EXISTS (SELECT 1 FROM M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = 'PROCESSING' AND r.LeaseUntil < ?2)
                         OR EXISTS (SELECT 1 FROM Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = 'PROCESSING' AND r.LeaseUntil < ?2))
                     UNION
                     SELECT b.Id FROM DeviceBulkChange b
                     WHERE b.Status IN ('PROCESSED', 'ERROR', 'CANCELLED', 'ABORTED') AND b.NotificationSentDate IS NULL
                       AND b.ProcessedDate >= ?3 AND b.ModifiedDate < ?1
                       AND (b.NotificationClaimedUntil IS NULL OR b.NotificationClaimedUntil < ?2)
                       AND (EXISTS (SELECT 1 FROM M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status IN ('API_FAILED', 'ERROR'))
                         OR EXISTS (SELECT 1 FROM Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status IN ('API_FAILED', 'ERROR')))
                     ORDER BY 1",
                )
                .map_err(db("find stranded"))?;
            let since = now - chrono::Duration::days(1);
            stmt.query_map(params![ts(before), ts(now), ts(since)], |r| r.get(0))
                .map_err(db("find stranded"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("find stranded"))
        })
        .await
    }
}
