//! A bulk change's life: recorded with its rows, started, cancelled, finalized, its e-mail claimed.

use super::*;

#[async_trait]
impl BulkChanges for SqliteStore {
    async fn create_bulk_change(&self, change: &NewBulkChange, rows: &[NewRow]) -> StoreResult<CreatedBulkChange> {
        let change = change.clone();
        let rows = rows.to_vec();
        self.with(move |c| {
            let now = ts(Utc::now());
            let request = serde_json::to_string(&change.request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin create bulk change"))?;
            if let Some(original) = change.retry_of {
                if let Some(open) = open_retry(&tx, original)? {
                    return Err(StoreError::Conflict(format!(
                        "bulk change {original} already has an open retry: bulk change {open}; wait for it to finish"
                    )));
                }
            }
            tx.execute(
                "INSERT INTO DeviceBulkChange (TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId, Status, ChangeRequest, CreatedBy, CreatedDate, ModifiedDate, RetryOfBulkChangeId, CanaryDevices, NotifyUrl, NotifySecret)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'NEW', ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12)",
                params![change.tenant_id, change.service_provider_id, change.integration.id(), change.change_type.number(), i64::from(change.portal_type), request, change.created_by, now, change.retry_of, change.request.canary.as_ref().and_then(|c| c.devices), change.request.notify_url, change.notify_secret],
            )
            .map_err(|e| match (e.sqlite_error_code(), change.retry_of) {
                // The unique index over open retries decides when the check above raced (another connection).
                (Some(rusqlite::ErrorCode::ConstraintViolation), Some(original)) => {
                    StoreError::Conflict(format!("bulk change {original} already has an open retry; wait for it to finish"))
                }
                _ => db("insert bulk change")(e),
            })?;
            let id = tx.last_insert_rowid();
            if let Some(original) = change.retry_of {
                // A retry takes only devices no other retry of the same bulk change took: the API read its
                // candidates before this transaction, and an earlier retry may have been created (and finished) since.
                let mut taken = tx
                    .prepare_cached(
                        "SELECT b.Id FROM DeviceBulkChange b JOIN M2M_DeviceChange r ON r.BulkChangeId = b.Id
                         WHERE b.RetryOfBulkChangeId = ?1 AND b.Id <> ?2 AND r.ICCID = ?3
                         UNION ALL
                         SELECT b.Id FROM DeviceBulkChange b JOIN Mobility_DeviceChange r ON r.BulkChangeId = b.Id
                         WHERE b.RetryOfBulkChangeId = ?1 AND b.Id <> ?2 AND r.ICCID = ?3 LIMIT 1",
                    )
                    .map_err(db("read earlier retries"))?;
                for row in &rows {
                    let by: Option<i64> = taken
                        .query_row(params![original, id, row.iccid], |r| r.get(0))
                        .optional()
                        .map_err(db("read earlier retries"))?;
                    if let Some(by) = by {
                        return Err(StoreError::Conflict(format!(
                            "bulk change {original} was already retried by bulk change {by} for these devices; retry that one"
                        )));
                    }
                }
            }
            // By name, so the holder a conflict names is the one SQL Server's procedure names too.
            let mut attributes = change.attributes.clone();
            attributes.sort_by_key(|a| a.as_str());
            attributes.dedup();
            let mut conflicts = Vec::new();
            {
                let table = row_table_of(i64::from(change.portal_type));
                let mut insert_row = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (BulkChangeId, TenantId, DeviceId, ICCID, MSISDN, Status, StatusDetails, IsProcessed, ProcessedDate, CreatedDate, RowRequest)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                    ))
                    .map_err(db("insert rows"))?;
                let mut lock = tx
                    .prepare_cached(
                        "INSERT INTO DeviceChangeLock (DeviceId, Attribute, BulkChangeId, RowId, ChangeRequestTypeId, TenantId, CreatedDate)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (DeviceId, Attribute) DO NOTHING",
                    )
                    .map_err(db("lock device"))?;
                let mut holder = tx
                    .prepare_cached("SELECT BulkChangeId, ChangeRequestTypeId FROM DeviceChangeLock WHERE DeviceId = ?1 AND Attribute = ?2")
                    .map_err(db("read device lock"))?;
                for row in &rows {
                    let is_final = row.status.is_final();
                    insert_row
                        .execute(params![id, change.tenant_id, row.device_id, row.iccid, row.msisdn, row.status.as_str(), row.status_details, is_final, is_final.then_some(&now), now, row.request])
                        .map_err(db("insert rows"))?;
                    let row_id = tx.last_insert_rowid();
                    let Some(device_id) = row.device_id.filter(|_| !is_final) else { continue };
                    let mut refused = None;
                    for attribute in &attributes {
                        let taken = lock
                            .execute(params![device_id, attribute.as_str(), id, row_id, change.change_type.number(), change.tenant_id, now])
                            .map_err(db("lock device"))?;
                        if taken == 0 {
                            let (bulk, kind): (i64, i64) = holder
                                .query_row(params![device_id, attribute.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                                .map_err(db("read device lock"))?;
                            refused = Some(holder_reason(&row.iccid, bulk, kind)?);
                            break;
                        }
                    }
                    if let Some(reason) = refused {
                        // The status trigger releases the locks this row took before it met the conflict.
                        tx.execute(
                            &format!("UPDATE {table} SET Status = 'ERROR', StatusDetails = ?2, IsProcessed = 1, ProcessedDate = ?3 WHERE Id = ?1"),
                            params![row_id, reason, now],
                        )
                        .map_err(db("refuse conflicting row"))?;
                        conflicts.push(RowConflict { iccid: row.iccid.clone(), reason });
                        continue;
                    }
                    if let Some(plan) = &row.scheduled {
                        tx.execute(
                            "INSERT INTO Device_CustomerRatePlanOrRatePool_Queue (DeviceId, M2MDeviceChangeId, BulkChangeId, CustomerRatePlanId,
                                    CustomerRatePoolId, CustomerDataAllocationMB, EffectiveDate, PortalType, TenantId, CreatedBy, CreatedDate)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                            params![
                                device_id,
                                row_id,
                                id,
                                plan.change.customer_rate_plan_id,
                                plan.change.customer_rate_pool_id,
                                plan.change.data_allocation_mb,
                                ts(plan.effective_date),
                                i64::from(change.portal_type),
                                change.tenant_id,
                                change.created_by,
                                now
                            ],
                        )
                        .map_err(db("queue scheduled row"))?;
                    }
                }
            }
            if let Some(key) = &change.idempotency_key {
                tx.execute(
                    "UPDATE IdempotencyKey SET BulkChangeId = ?3 WHERE TenantId = ?1 AND IdempotencyKey = ?2",
                    params![change.tenant_id, key, id],
                )
                .map_err(db("record idempotency key"))?;
            }
            tx.commit().map_err(db("commit bulk change"))?;
            Ok(CreatedBulkChange { id, conflicts })
        })
        .await
    }

    async fn open_changes(&self, tenant_id: i64, device_ids: &[i64]) -> StoreResult<Vec<OpenChange>> {
        let device_ids = device_ids.to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT DeviceId, Attribute, BulkChangeId, ChangeRequestTypeId FROM DeviceChangeLock
                     WHERE DeviceId = ?1 AND TenantId = ?2 ORDER BY Attribute",
                )
                .map_err(db("read open changes"))?;
            let mut out = Vec::new();
            for device_id in device_ids {
                let raws = stmt
                    .query_map(params![device_id, tenant_id], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
                    })
                    .map_err(db("read open changes"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("read open changes"))?;
                for (device_id, attribute, bulk_change_id, kind) in raws {
                    out.push(OpenChange {
                        device_id,
                        attribute: DeviceAttribute::parse(&attribute)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown locked attribute {attribute}")))?,
                        bulk_change_id,
                        change_type: ChangeType::from_number(kind)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown change type {kind}")))?,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn retry_candidates(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<String>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT r.ICCID FROM {table} r
                     WHERE r.BulkChangeId = ?1 AND r.TenantId = ?2 AND r.Status IN ('API_FAILED', 'ERROR')
                       AND NOT EXISTS (SELECT 1 FROM DeviceBulkChange b JOIN M2M_DeviceChange l ON l.BulkChangeId = b.Id
                                       WHERE b.RetryOfBulkChangeId = ?1 AND b.TenantId = ?2 AND l.ICCID = r.ICCID)
                       AND NOT EXISTS (SELECT 1 FROM DeviceBulkChange b JOIN Mobility_DeviceChange l ON l.BulkChangeId = b.Id
                                       WHERE b.RetryOfBulkChangeId = ?1 AND b.TenantId = ?2 AND l.ICCID = r.ICCID)
                     ORDER BY r.Id"
                ))
                .map_err(db("read retry candidates"))?;
            stmt.query_map(params![bulk_change_id, tenant_id], |r| r.get(0))
                .map_err(db("read retry candidates"))?
                .collect::<Result<Vec<String>, _>>()
                .map_err(db("read retry candidates"))
        })
        .await
    }

    async fn cancel_rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        details: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let details = details.to_string();
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let n = c
                .execute(
                    &format!(
                        "UPDATE {table} SET Status = 'CANCELLED', StatusDetails = ?3, IsProcessed = 1, ProcessedDate = ?4,
                                LeaseOwner = NULL, LeaseUntil = NULL
                         WHERE BulkChangeId = ?1 AND TenantId = ?2 AND Status IN ('PENDING', 'SCHEDULED')"
                    ),
                    params![bulk_change_id, tenant_id, details, ts(now)],
                )
                .map_err(db("cancel rows"))?;
            c.execute(
                &format!(
                    "UPDATE Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedDate = ?3
                     WHERE BulkChangeId = ?1 AND TenantId = ?2 AND IsActive = 1
                       AND M2MDeviceChangeId IN (SELECT Id FROM {table} WHERE BulkChangeId = ?1 AND Status = 'CANCELLED')"
                ),
                params![bulk_change_id, tenant_id, ts(now)],
            )
            .map_err(db("cancel queued changes"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn mark_processing(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE DeviceBulkChange SET Status = 'PROCESSING', ModifiedDate = ?2 WHERE Id = ?1 AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED')",
                params![bulk_change_id, ts(now)],
            )
            .map_err(db("mark processing"))?;
            Ok(())
        })
        .await
    }

    async fn pending_rows(&self, bulk_change_id: i64) -> StoreResult<u64> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let n: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND Status = 'PENDING'"),
                    params![bulk_change_id],
                    |r| r.get(0),
                )
                .map_err(db("count pending rows"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn finalize_bulk_change(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<Option<BulkStatus>> {
        self.with(move |c| {
            let tx =
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin finalize"))?;
            let table = row_table(&tx, bulk_change_id)?;
            let statuses = {
                let mut stmt = tx
                    .prepare_cached(&format!("SELECT DISTINCT Status FROM {table} WHERE BulkChangeId = ?1"))
                    .map_err(db("finalize"))?;
                stmt.query_map(params![bulk_change_id], |r| r.get::<_, String>(0))
                    .map_err(db("finalize"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("finalize"))?
            };
            let statuses = statuses
                .iter()
                .map(|s| RowStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown row status {s}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let Some(status) = bulk_status_from_rows(statuses) else {
                return Ok(None);
            };
            let changed = tx
                .execute(
                    "UPDATE DeviceBulkChange
                     SET Status = CASE WHEN ?3 AND AbortedReason IS NOT NULL THEN 'ABORTED' ELSE ?2 END,
                         ProcessedDate = CASE WHEN ?3 THEN ?4 ELSE ProcessedDate END, ModifiedDate = ?4
                     WHERE Id = ?1 AND Status NOT IN ('PROCESSED', 'ERROR', 'CANCELLED', 'ABORTED')
                       AND NOT (Status = 'PAUSED' AND NOT ?3)",
                    params![bulk_change_id, status.as_str(), status.is_final(), ts(now)],
                )
                .map_err(db("finalize"))?;
            let current: String = tx
                .query_row("SELECT Status FROM DeviceBulkChange WHERE Id = ?1", params![bulk_change_id], |r| r.get(0))
                .map_err(db("finalize"))?;
            if changed == 1 && status.is_final() {
                // Made final just now, once: its event goes out with it (the webhook outbox).
                let event = if current == "ABORTED" { EVENT_ABORTED } else { EVENT_FINISHED };
                write_event(&tx, bulk_change_id, event, None, None, now)?;
            }
            tx.commit().map_err(db("commit finalize"))?;
            BulkStatus::parse(&current)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown bulk status {current}")))
        })
        .await
    }

    async fn claim_notification(
        &self,
        bulk_change_id: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE DeviceBulkChange SET NotificationClaimedUntil = ?3
                     WHERE Id = ?1 AND NotificationSentDate IS NULL
                       AND (NotificationClaimedUntil IS NULL OR NotificationClaimedUntil < ?2)",
                    params![bulk_change_id, ts(now), ts(until)],
                )
                .map_err(db("claim notification"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn notification_sent(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE DeviceBulkChange SET NotificationSentDate = ?2, NotificationClaimedUntil = NULL WHERE Id = ?1",
                params![bulk_change_id, ts(now)],
            )
            .map_err(db("record notification sent"))?;
            Ok(())
        })
        .await
    }

    async fn release_notification(&self, bulk_change_id: i64) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE DeviceBulkChange SET NotificationClaimedUntil = NULL WHERE Id = ?1 AND NotificationSentDate IS NULL",
                params![bulk_change_id],
            )
            .map_err(db("release notification"))?;
            Ok(())
        })
        .await
    }
}
