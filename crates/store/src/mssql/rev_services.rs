//! A device's Rev.io service line: at most one active, and one creator at a time.

use super::*;

#[async_trait]
impl RevServices for MssqlStore {
    async fn active_rev_service(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<RevServiceRecord>> {
        let q = proc_call!("EXEC dbo.usp_RevService_GetActive @TenantId = @P1, @DeviceId = @P2", tenant_id, device_id,);
        self.first("read Rev service", q)
            .await?
            .first()
            .map(|r| {
                Ok(RevServiceRecord {
                    device_id: need(r.get("DeviceId"), "DeviceId")?,
                    rev_service_id: need(r.get("RevServiceId"), "RevServiceId")?,
                    rev_customer_id: text(r, "RevCustomerId").unwrap_or_default(),
                    is_active: r.get("IsActive").unwrap_or(false),
                })
            })
            .transpose()
    }

    async fn add_rev_service(&self, tenant_id: i64, s: &RevServiceRecord) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_RevService_Create_Service @TenantId = @P1, @DeviceId = @P2, @RevServiceId = @P3, @RevCustomerId = @P4, @IsActive = @P5, @Now = @P6",
            tenant_id,
            s.device_id,
            s.rev_service_id,
            s.rev_customer_id.as_str(),
            s.is_active,
            naive(Utc::now()),
        );
        self.exec("add Rev service", q).await.map(|_| ())
    }

    async fn begin_rev_service(
        &self,
        tenant_id: i64,
        device_id: i64,
        rev_customer_id: &str,
        bulk_change_id: i64,
        row_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<RevServiceStart> {
        let q = proc_call!(
            "EXEC dbo.usp_RevService_BeginCreation @TenantId = @P1, @DeviceId = @P2, @RevCustomerId = @P3, @BulkChangeId = @P4, @RowId = @P5, @Now = @P6",
            tenant_id,
            device_id,
            rev_customer_id,
            bulk_change_id,
            row_id,
            naive(now),
        );
        let rows = self.first("begin Rev service creation", q).await?;
        let r = need(rows.first(), "Outcome")?;
        match text(r, "Outcome").as_deref() {
            Some("Active") => Ok(RevServiceStart::Active(RevServiceRecord {
                device_id: need(r.get("DeviceId"), "DeviceId")?,
                rev_service_id: need(r.get("RevServiceId"), "RevServiceId")?,
                rev_customer_id: text(r, "RevCustomerId").unwrap_or_default(),
                is_active: r.get("IsActive").unwrap_or(true),
            })),
            Some("Busy") => {
                Ok(RevServiceStart::Busy { bulk_change_id: need(r.get("BusyBulkChangeId"), "BusyBulkChangeId")? })
            }
            Some("Create") => Ok(RevServiceStart::Create { earlier_attempt: r.get("EarlierAttempt").unwrap_or(true) }),
            other => Err(StoreError::Corrupt(format!("unknown Rev.io creation outcome {other:?}"))),
        }
    }

    async fn keep_before_cost_centers(
        &self,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        cost_centers: &CostCenters,
    ) -> StoreResult<()> {
        let json =
            serde_json::to_string(cost_centers).map_err(|e| StoreError::Corrupt(format!("cost centers: {e}")))?;
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_KeepBeforeCostCenters @BulkChangeId = @P1, @RowId = @P2, @Worker = @P3, @CostCenters = @P4",
            bulk_change_id,
            row_id,
            worker,
            json.as_str(),
        );
        self.exec("keep cost centers before the change", q).await.map(|_| ())
    }

    async fn close_rev_service(
        &self,
        tenant_id: i64,
        device_id: i64,
        rev_service_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let q = proc_call!(
            "EXEC dbo.usp_RevService_Close @TenantId = @P1, @DeviceId = @P2, @RevServiceId = @P3, @Now = @P4",
            tenant_id,
            device_id,
            rev_service_id,
            naive(now),
        );
        let rows = self.first("close Rev service", q).await?;
        Ok(rows.first().and_then(|r| r.get::<bool, _>("Closed")).unwrap_or(false))
    }

    async fn abandon_rev_service(&self, device_id: i64, bulk_change_id: i64, row_id: i64) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_RevService_AbandonCreation @DeviceId = @P1, @BulkChangeId = @P2, @RowId = @P3",
            device_id,
            bulk_change_id,
            row_id,
        );
        self.exec("abandon Rev service creation", q).await.map(|_| ())
    }
}
