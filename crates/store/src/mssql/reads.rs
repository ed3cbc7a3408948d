//! What the API shows of a bulk change: the bulk change, its rows, counts and audit entries.

use super::*;

#[async_trait]
impl Reads for MssqlStore {
    async fn applied_rows(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<AppliedRow>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_AppliedRows @TenantId = @P1, @BulkChangeId = @P2",
            tenant_id,
            bulk_change_id,
        );
        let values = |r: &Row, prefix: &str| DeviceValues {
            device_status_id: r.get::<i64, _>(format!("{prefix}DeviceStatusId").as_str()),
            carrier_rate_plan: text(r, &format!("{prefix}CarrierRatePlan")),
            communication_plan: text(r, &format!("{prefix}CommunicationPlan")),
            rev_customer_id: text(r, &format!("{prefix}RevCustomerId")),
            username: text(r, &format!("{prefix}Username")),
            customer_rate_plan_id: r.get::<i64, _>(format!("{prefix}CustomerRatePlanId").as_str()),
            customer_rate_pool_id: r.get::<i64, _>(format!("{prefix}CustomerRatePoolId").as_str()),
            data_allocation_mb: r.get::<f64, _>(format!("{prefix}DataAllocationMB").as_str()),
            iccid: text(r, &format!("{prefix}ICCID")),
            imei: text(r, &format!("{prefix}IMEI")),
            cost_centers: None,
        };
        self.first("read applied rows", q)
            .await?
            .iter()
            .map(|r| {
                let row = AppliedRow {
                    row_id: need(r.get::<i64, _>("Id"), "Id")?,
                    iccid: need(text(r, "ICCID"), "ICCID")?,
                    device_id: r.get::<i64, _>("DeviceId"),
                    before: text(r, "BeforeICCID").is_some().then(|| values(r, "Before")),
                    now: r.get::<i64, _>("NowId").is_some().then(|| values(r, "Now")),
                    request: text(r, "RowRequest"),
                    created_rev_service: r.get::<i64, _>("CreatedRevServiceId"),
                };
                crate::with_cost_centers(row, text(r, "BeforeCostCenters").as_deref())
            })
            .collect()
    }

    async fn bulk_change(&self, tenant_id: Option<i64>, id: i64) -> StoreResult<Option<BulkChange>> {
        let q = proc_call!("EXEC dbo.usp_DeviceBulkChange_Get @TenantId = @P1, @Id = @P2", tenant_id, id,);
        self.first("read bulk change", q).await?.first().map(bulk_change).transpose()
    }

    async fn list_bulk_changes(
        &self,
        tenant_id: i64,
        filter: &BulkChangeFilter,
        page: u32,
        page_size: u32,
    ) -> StoreResult<(Vec<BulkChange>, i64)> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_List @TenantId = @P1, @Status = @P2, @ChangeRequestTypeId = @P3, @Offset = @P4, @PageSize = @P5",
            tenant_id,
            filter.status.map(|s| s.as_str()),
            filter.change_type.map(ChangeType::number),
            offset(page, page_size),
            page_size as i32,
        );
        let sets = self.exec("list bulk changes", q).await?;
        let total = sets.first().and_then(|s| s.first()).and_then(|r| r.get::<i64, _>("Total")).unwrap_or(0);
        let items = sets
            .get(1)
            .map(|s| s.iter().map(bulk_change).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok((items, total))
    }

    async fn row_counts(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<StatusCount>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_RowCounts @TenantId = @P1, @BulkChangeId = @P2",
            tenant_id,
            bulk_change_id,
        );
        self.first("count rows", q)
            .await?
            .iter()
            .map(|r| {
                let status = need(text(r, "Status"), "Status")?;
                Ok(StatusCount {
                    status: RowStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown row status {status}")))?,
                    count: r.get::<i64, _>("Count").unwrap_or(0),
                })
            })
            .collect()
    }

    async fn rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        page: u32,
        page_size: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_Rows @TenantId = @P1, @BulkChangeId = @P2, @Status = @P3, @Offset = @P4, @PageSize = @P5",
            tenant_id,
            bulk_change_id,
            status.map(|s| s.as_str()),
            offset(page, page_size),
            page_size as i32,
        );
        self.first("read rows", q).await?.iter().map(change_row).collect()
    }

    async fn rows_after(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_RowsAfter @TenantId = @P1, @BulkChangeId = @P2, @Status = @P3, @AfterId = @P4, @Limit = @P5",
            tenant_id,
            bulk_change_id,
            status.map(|s| s.as_str()),
            after_id,
            i32::try_from(limit).unwrap_or(i32::MAX),
        );
        self.first("read rows", q).await?.iter().map(change_row).collect()
    }

    async fn logs(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<LogEntry>> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChangeLog_List @TenantId = @P1, @BulkChangeId = @P2",
            tenant_id,
            bulk_change_id,
        );
        self.first("read logs", q)
            .await?
            .iter()
            .map(|r| {
                Ok(LogEntry {
                    bulk_change_id: need(r.get("BulkChangeId"), "BulkChangeId")?,
                    device_change_id: r.get("M2MDeviceChangeId"),
                    description: text(r, "LogEntryDescription").unwrap_or_default(),
                    request_text: text(r, "RequestText").unwrap_or_default(),
                    response_text: text(r, "ResponseText").unwrap_or_default(),
                    response_status: text(r, "ResponseStatus").unwrap_or_default(),
                    has_errors: r.get("HasErrors").unwrap_or(false),
                    error_text: text(r, "ErrorText"),
                    processed_date: need(utc(r.get("ProcessedDate")), "ProcessedDate")?,
                })
            })
            .collect()
    }
}
