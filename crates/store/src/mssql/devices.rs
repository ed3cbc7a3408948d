//! A tenant's devices: by ICCID or id, listed and counted for exports, and their change history.

use super::*;

#[async_trait]
impl Devices for MssqlStore {
    async fn devices_by_iccid(&self, tenant_id: i64, iccids: &[String]) -> StoreResult<Vec<DeviceRecord>> {
        let opaque: Vec<String> = iccids.iter().map(|i| json_text(i)).collect();
        let json = serde_json::to_string(&opaque).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let q = proc_call!("EXEC dbo.usp_Device_GetByIccids @TenantId = @P1, @IccidsJson = @P2", tenant_id, json,);
        self.first("read devices", q).await?.iter().map(device).collect()
    }

    async fn device(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<DeviceRecord>> {
        let q = proc_call!("EXEC dbo.usp_Device_Get @TenantId = @P1, @DeviceId = @P2", tenant_id, device_id,);
        self.first("read device", q).await?.first().map(device).transpose()
    }

    async fn list_devices(
        &self,
        tenant_id: i64,
        filter: &DeviceFilter,
        after_id: i64,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<DeviceListItem>> {
        let q = device_list_query(tenant_id, filter, after_id, offset, limit, false);
        let sets = self.exec("list devices", q).await?;
        sets.into_iter()
            .next()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                Ok(DeviceListItem {
                    device: device(r)?,
                    status: text(r, "StatusCode"),
                    status_display_name: text(r, "StatusDisplayName"),
                })
            })
            .collect()
    }

    async fn count_devices(&self, tenant_id: i64, filter: &DeviceFilter) -> StoreResult<i64> {
        let q = device_list_query(tenant_id, filter, 0, 0, 1, true);
        let sets = self.exec("count devices", q).await?;
        Ok(sets.last().and_then(|s| s.first()).and_then(|r| r.get::<i64, _>("Total")).unwrap_or(0))
    }

    async fn device_history(&self, tenant_id: i64, device_id: i64, limit: u32) -> StoreResult<Vec<DeviceHistoryEntry>> {
        let q = proc_call!(
            "EXEC dbo.usp_Device_History @TenantId = @P1, @DeviceId = @P2, @Limit = @P3",
            tenant_id,
            device_id,
            limit.min(i32::MAX as u32) as i32,
        );
        self.first("device history", q)
            .await?
            .iter()
            .map(|r| {
                let change_type: i64 = need(r.get("ChangeRequestTypeId"), "ChangeRequestTypeId")?;
                let status = text(r, "Status").unwrap_or_default();
                Ok(DeviceHistoryEntry {
                    bulk_change_id: need(r.get("BulkChangeId"), "BulkChangeId")?,
                    change_type: ChangeType::from_number(change_type)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown change type {change_type}")))?,
                    status: RowStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown row status {status}")))?,
                    status_details: text(r, "StatusDetails"),
                    created_by: text(r, "CreatedBy").unwrap_or_default(),
                    created_date: need(utc(r.get("CreatedDate")), "CreatedDate")?,
                    processed_date: utc(r.get("ProcessedDate")),
                })
            })
            .collect()
    }
}
