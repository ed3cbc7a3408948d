//! A bulk change's life: recorded with its rows, started, cancelled, finalized, its e-mail claimed.

use super::*;

#[async_trait]
impl BulkChanges for MssqlStore {
    async fn create_bulk_change(&self, change: &NewBulkChange, rows: &[NewRow]) -> StoreResult<CreatedBulkChange> {
        let rows_json: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let plan = r.scheduled.as_ref();
                serde_json::json!({
                    "Seq": i, "DeviceId": r.device_id, "ICCID": json_text(&r.iccid),
                    "MSISDN": r.msisdn.as_deref().map(json_text), "Status": r.status.as_str(),
                    "StatusDetails": r.status_details.as_deref().map(json_text),
                    "EffectiveDate": plan.map(|p| p.effective_date.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
                    "CustomerRatePlanId": plan.and_then(|p| p.change.customer_rate_plan_id),
                    "CustomerRatePoolId": plan.and_then(|p| p.change.customer_rate_pool_id),
                    "DataAllocationMB": plan.and_then(|p| p.change.data_allocation_mb),
                    "RowRequest": r.request.as_deref().map(json_text),
                })
            })
            .collect();
        let rows_json = serde_json::Value::Array(rows_json).to_string();
        let request = serde_json::to_string(&change.request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let attributes =
            serde_json::Value::from(change.attributes.iter().map(|a| a.as_str()).collect::<Vec<_>>()).to_string();
        // Two creations over the same devices lock DeviceChangeLock ranges; when SQL Server breaks a deadlock
        // between them, the victim's transaction was rolled back whole and runs again.
        let mut attempt = 0;
        let sets = loop {
            attempt += 1;
            let q = proc_call!(
                "EXEC dbo.usp_DeviceBulkChange_Create @TenantId = @P1, @ServiceProviderId = @P2, @IntegrationId = @P3, @ChangeRequestTypeId = @P4,
                      @PortalTypeId = @P5, @ChangeRequest = @P6, @CreatedBy = @P7, @RowsJson = @P8, @Now = @P9, @RetryOfBulkChangeId = @P10,
                      @AttributesJson = @P11, @IdempotencyKey = @P12, @CanaryDevices = @P13, @NotifyUrl = @P14, @NotifySecret = @P15",
                change.tenant_id,
                change.service_provider_id,
                change.integration.id(),
                change.change_type.number(),
                i64::from(change.portal_type),
                request.as_str(),
                change.created_by.as_str(),
                rows_json.as_str(),
                naive(Utc::now()),
                change.retry_of,
                attributes.as_str(),
                change.idempotency_key.as_deref(),
                change.request.canary.as_ref().and_then(|c| c.devices).and_then(|n| i32::try_from(n).ok()),
                change.request.notify_url.as_deref(),
                change.notify_secret.as_deref(),
            );
            match self.exec_raw(q).await {
                Err(e) if server_code(&e) == Some(DEADLOCK_VICTIM) && attempt < 3 => continue,
                other => break other.map_err(db("create bulk change"))?,
            }
        };
        let mut sets = sets.into_iter();
        let id = need(sets.next().unwrap_or_default().first().and_then(|r| r.get::<i64, _>("Id")), "Id")?;
        let conflicts = sets
            .next()
            .unwrap_or_default()
            .iter()
            .map(|r| RowConflict {
                iccid: text(r, "ICCID").unwrap_or_default(),
                reason: text(r, "StatusDetails").unwrap_or_default(),
            })
            .collect();
        Ok(CreatedBulkChange { id, conflicts })
    }

    async fn open_changes(&self, tenant_id: i64, device_ids: &[i64]) -> StoreResult<Vec<OpenChange>> {
        let json = serde_json::Value::from(device_ids.to_vec()).to_string();
        let q =
            proc_call!("EXEC dbo.usp_DeviceChangeLock_List @TenantId = @P1, @DeviceIdsJson = @P2", tenant_id, json,);
        self.first("read open changes", q)
            .await?
            .iter()
            .map(|r| {
                let attribute = text(r, "Attribute").unwrap_or_default();
                let kind: i64 = need(r.get("ChangeRequestTypeId"), "ChangeRequestTypeId")?;
                Ok(OpenChange {
                    device_id: need(r.get("DeviceId"), "DeviceId")?,
                    attribute: DeviceAttribute::parse(&attribute)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown locked attribute {attribute}")))?,
                    bulk_change_id: need(r.get("BulkChangeId"), "BulkChangeId")?,
                    change_type: ChangeType::from_number(kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown change type {kind}")))?,
                })
            })
            .collect()
    }

    async fn retry_candidates(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<String>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_RetryCandidates @TenantId = @P1, @BulkChangeId = @P2",
            tenant_id,
            bulk_change_id,
        );
        Ok(self.first("read retry candidates", q).await?.iter().filter_map(|r| text(r, "ICCID")).collect())
    }

    async fn cancel_rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        details: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_CancelRows @TenantId = @P1, @BulkChangeId = @P2, @StatusDetails = @P3, @Now = @P4",
            tenant_id,
            bulk_change_id,
            details,
            naive(now),
        );
        let rows = self.first("cancel rows", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i64, _>("Cancelled")).unwrap_or(0).max(0) as u64)
    }

    async fn mark_processing(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_MarkProcessing @BulkChangeId = @P1, @Now = @P2",
            bulk_change_id,
            naive(now),
        );
        self.exec("mark processing", q).await.map(|_| ())
    }

    async fn pending_rows(&self, bulk_change_id: i64) -> StoreResult<u64> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_PendingRows @BulkChangeId = @P1", bulk_change_id,);
        let rows = self.first("count pending rows", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i64, _>("Pending")).map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    async fn finalize_bulk_change(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<Option<BulkStatus>> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_RowStatuses @BulkChangeId = @P1", bulk_change_id,);
        let statuses = self
            .first("finalize", q)
            .await?
            .iter()
            .map(|r| {
                let s = text(r, "Status").unwrap_or_default();
                RowStatus::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown row status {s}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Final rows never change again, so a status derived from them stays true after this read.
        let Some(status) = bulk_status_from_rows(statuses) else {
            return Ok(None);
        };
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_SetStatus @BulkChangeId = @P1, @Status = @P2, @IsFinal = @P3, @Now = @P4",
            bulk_change_id,
            status.as_str(),
            status.is_final(),
            naive(now),
        );
        let rows = self.first("finalize", q).await?;
        let current = need(rows.first().and_then(|r| text(r, "Status")), "Status")?;
        BulkStatus::parse(&current)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown bulk status {current}")))
    }

    async fn claim_notification(
        &self,
        bulk_change_id: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_ClaimNotification @BulkChangeId = @P1, @Now = @P2, @Until = @P3",
            bulk_change_id,
            naive(now),
            naive(until),
        );
        Ok(self
            .first("claim notification", q)
            .await?
            .first()
            .and_then(|r| r.get::<bool, _>("Claimed"))
            .unwrap_or(false))
    }

    async fn notification_sent(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_NotificationSent @BulkChangeId = @P1, @Now = @P2",
            bulk_change_id,
            naive(now),
        );
        self.exec("record notification sent", q).await.map(|_| ())
    }

    async fn release_notification(&self, bulk_change_id: i64) -> StoreResult<()> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_ReleaseNotification @BulkChangeId = @P1", bulk_change_id,);
        self.exec("release notification", q).await.map(|_| ())
    }
}
