//! A tenant's devices: by ICCID or id, listed and counted for exports, and their change history.

use super::*;

#[async_trait]
impl Devices for SqliteStore {
    async fn devices_by_iccid(&self, tenant_id: i64, iccids: &[String]) -> StoreResult<Vec<DeviceRecord>> {
        let iccids = iccids.to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM Device WHERE TenantId = ?1 AND ICCID = ?2 ORDER BY IsDeleted, Id"
                ))
                .map_err(db("read devices"))?;
            let mut out = Vec::with_capacity(iccids.len());
            for iccid in &iccids {
                let found = stmt
                    .query_row(params![tenant_id, iccid], device_from_row)
                    .optional()
                    .map_err(db("read devices"))?;
                if let Some(raw) = found {
                    out.push(finish_device(raw)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn device(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<DeviceRecord>> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM Device WHERE Id = ?1 AND TenantId = ?2"),
                params![device_id, tenant_id],
                device_from_row,
            )
            .optional()
            .map_err(db("read device"))?
            .map(finish_device)
            .transpose()
        })
        .await
    }

    async fn list_devices(
        &self,
        tenant_id: i64,
        filter: &DeviceFilter,
        after_id: i64,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<DeviceListItem>> {
        let filter = filter.clone();
        self.with(move |c| {
            let columns = DEVICE_COLUMNS.split(", ").map(|col| format!("d.{col}")).collect::<Vec<_>>().join(", ");
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {columns}, s.Status, s.DisplayName FROM Device d LEFT JOIN DeviceStatus s ON s.Id = d.DeviceStatusId
                     WHERE d.TenantId = ?1 AND d.IsDeleted = 0 AND d.Id > ?2 {DEVICE_FILTER}
                     ORDER BY d.Id LIMIT ?7 OFFSET ?8"
                ))
                .map_err(db("list devices"))?;
            let text = filter.text.as_deref().map(like_pattern);
            // The status code and display name follow the device's columns.
            let n = DEVICE_COLUMNS.split(", ").count();
            let raws = stmt
                .query_map(
                    params![tenant_id, after_id, filter.status, filter.carrier_rate_plan, filter.rev_customer_id, text, limit, offset],
                    |r| Ok((device_from_row(r)?, r.get::<_, Option<String>>(n)?, r.get::<_, Option<String>>(n + 1)?)),
                )
                .map_err(db("list devices"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("list devices"))?;
            raws.into_iter()
                .map(|(raw, status, status_display_name)| Ok(DeviceListItem { device: finish_device(raw)?, status, status_display_name }))
                .collect()
        })
        .await
    }

    async fn count_devices(&self, tenant_id: i64, filter: &DeviceFilter) -> StoreResult<i64> {
        let filter = filter.clone();
        self.with(move |c| {
            let text = filter.text.as_deref().map(like_pattern);
            c.query_row(
                &format!(
                    "SELECT COUNT(*) FROM Device d LEFT JOIN DeviceStatus s ON s.Id = d.DeviceStatusId
                     WHERE d.TenantId = ?1 AND d.IsDeleted = 0 AND d.Id > ?2 {DEVICE_FILTER}"
                ),
                params![tenant_id, 0, filter.status, filter.carrier_rate_plan, filter.rev_customer_id, text],
                |r| r.get(0),
            )
            .map_err(db("count devices"))
        })
        .await
    }

    async fn device_history(&self, tenant_id: i64, device_id: i64, limit: u32) -> StoreResult<Vec<DeviceHistoryEntry>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT r.BulkChangeId, b.ChangeRequestTypeId, r.Status, r.StatusDetails, b.CreatedBy, b.CreatedDate, r.ProcessedDate
                     FROM (SELECT BulkChangeId, Status, StatusDetails, ProcessedDate, DeviceId, TenantId FROM M2M_DeviceChange
                           UNION ALL
                           SELECT BulkChangeId, Status, StatusDetails, ProcessedDate, DeviceId, TenantId FROM Mobility_DeviceChange) r
                     JOIN DeviceBulkChange b ON b.Id = r.BulkChangeId
                     WHERE r.DeviceId = ?1 AND r.TenantId = ?2 AND b.TenantId = ?2
                     ORDER BY b.Id DESC LIMIT ?3",
                )
                .map_err(db("device history"))?;
            let raws = stmt
                .query_map(params![device_id, tenant_id, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(db("device history"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("device history"))?;
            raws.into_iter()
                .map(|(bulk_change_id, change_type, status, status_details, created_by, created, processed)| {
                    Ok(DeviceHistoryEntry {
                        bulk_change_id,
                        change_type: ChangeType::from_number(change_type)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown change type {change_type}")))?,
                        status: RowStatus::parse(&status)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown row status {status}")))?,
                        status_details,
                        created_by,
                        created_date: parse_ts(&created)?,
                        processed_date: opt_ts(processed)?,
                    })
                })
                .collect()
        })
        .await
    }
}
