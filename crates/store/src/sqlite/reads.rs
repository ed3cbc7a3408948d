//! What the API shows of a bulk change: the bulk change, its rows, counts and audit entries.

use super::*;

#[async_trait]
impl Reads for SqliteStore {
    async fn applied_rows(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<AppliedRow>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT r.Id, r.ICCID, r.DeviceId, r.BeforeICCID IS NOT NULL,
                            r.BeforeDeviceStatusId, r.BeforeCarrierRatePlan, r.BeforeCommunicationPlan, r.BeforeRevCustomerId,
                            r.BeforeUsername, r.BeforeCustomerRatePlanId, r.BeforeCustomerRatePoolId, r.BeforeDataAllocationMB,
                            r.BeforeICCID, r.BeforeIMEI, d.Id IS NOT NULL,
                            d.DeviceStatusId, d.CarrierRatePlan, d.CommunicationPlan, d.RevCustomerId, d.Username,
                            d.CustomerRatePlanId, d.CustomerRatePoolId, d.CustomerDataAllocationMB, d.ICCID, d.IMEI, r.RowRequest,
                            (SELECT s.RevServiceId FROM RevService s WHERE s.CreatedByBulkChangeId = r.BulkChangeId AND s.CreatedByRowId = r.Id
                                AND s.TenantId = r.TenantId ORDER BY s.Id DESC LIMIT 1),
                            r.BeforeCostCenters
                     FROM {table} r LEFT JOIN Device d ON d.Id = r.DeviceId AND d.TenantId = r.TenantId
                     WHERE r.BulkChangeId = ?1 AND r.TenantId = ?2 AND r.Status = 'PROCESSED' ORDER BY r.Id"
                ))
                .map_err(db("read applied rows"))?;
            let values = |r: &Row<'_>, at: usize| -> rusqlite::Result<DeviceValues> {
                Ok(DeviceValues {
                    device_status_id: r.get(at)?,
                    carrier_rate_plan: r.get(at + 1)?,
                    communication_plan: r.get(at + 2)?,
                    rev_customer_id: r.get(at + 3)?,
                    username: r.get(at + 4)?,
                    customer_rate_plan_id: r.get(at + 5)?,
                    customer_rate_pool_id: r.get(at + 6)?,
                    data_allocation_mb: r.get(at + 7)?,
                    iccid: r.get(at + 8)?,
                    imei: r.get(at + 9)?,
                    cost_centers: None,
                })
            };
            let rows = stmt
                .query_map(params![bulk_change_id, tenant_id], |r| {
                    Ok((
                        AppliedRow {
                            row_id: r.get(0)?,
                            iccid: r.get(1)?,
                            device_id: r.get(2)?,
                            before: if r.get::<_, bool>(3)? { Some(values(r, 4)?) } else { None },
                            now: if r.get::<_, bool>(14)? { Some(values(r, 15)?) } else { None },
                            request: r.get(25)?,
                            created_rev_service: r.get(26)?,
                        },
                        r.get::<_, Option<String>>(27)?,
                    ))
                })
                .map_err(db("read applied rows"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read applied rows"))?;
            rows.into_iter().map(|(row, kept)| crate::with_cost_centers(row, kept.as_deref())).collect()
        })
        .await
    }

    async fn bulk_change(&self, tenant_id: Option<i64>, id: i64) -> StoreResult<Option<BulkChange>> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {BULK_COLUMNS} FROM DeviceBulkChange WHERE Id = ?1 AND (?2 IS NULL OR TenantId = ?2)"),
                params![id, tenant_id],
                raw_bulk,
            )
            .optional()
            .map_err(db("read bulk change"))?
            .map(bulk_from_raw)
            .transpose()
        })
        .await
    }

    async fn list_bulk_changes(
        &self,
        tenant_id: i64,
        filter: &BulkChangeFilter,
        page: u32,
        page_size: u32,
    ) -> StoreResult<(Vec<BulkChange>, i64)> {
        let status = filter.status.map(|s| s.as_str().to_string());
        let change_type = filter.change_type.map(ChangeType::number);
        self.with(move |c| {
            let filter_sql =
                "TenantId = ?1 AND (?2 IS NULL OR Status = ?2) AND (?3 IS NULL OR ChangeRequestTypeId = ?3)";
            let total: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM DeviceBulkChange WHERE {filter_sql}"),
                    params![tenant_id, status, change_type],
                    |r| r.get(0),
                )
                .map_err(db("count bulk changes"))?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {BULK_COLUMNS} FROM DeviceBulkChange WHERE {filter_sql} ORDER BY Id DESC LIMIT ?4 OFFSET ?5"
                ))
                .map_err(db("list bulk changes"))?;
            let offset = i64::from(page.max(1) - 1) * i64::from(page_size);
            let raws = stmt
                .query_map(params![tenant_id, status, change_type, page_size, offset], raw_bulk)
                .map_err(db("list bulk changes"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("list bulk changes"))?;
            Ok((raws.into_iter().map(bulk_from_raw).collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }

    async fn row_counts(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<StatusCount>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare_cached(&format!("SELECT Status, COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND TenantId = ?2 GROUP BY Status ORDER BY Status"))
                .map_err(db("count rows"))?;
            let raws = stmt
                .query_map(params![bulk_change_id, tenant_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db("count rows"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("count rows"))?;
            raws.into_iter()
                .map(|(s, count)| Ok(StatusCount { status: RowStatus::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown row status {s}")))?, count }))
                .collect()
        })
        .await
    }

    async fn rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        page: u32,
        page_size: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let offset = i64::from(page.max(1) - 1) * i64::from(page_size);
        self.read_rows(tenant_id, bulk_change_id, status, 0, page_size, offset).await
    }

    async fn rows_after(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        self.read_rows(tenant_id, bulk_change_id, status, after_id, limit, 0).await
    }

    async fn logs(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<LogEntry>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT l.BulkChangeId, COALESCE(l.M2MDeviceChangeId, l.MobilityDeviceChangeId), l.LogEntryDescription, l.RequestText, l.ResponseText, l.ResponseStatus, l.HasErrors, l.ErrorText, l.ProcessedDate
                     FROM DeviceBulkChangeLog l JOIN DeviceBulkChange b ON b.Id = l.BulkChangeId
                     WHERE l.BulkChangeId = ?1 AND b.TenantId = ?2 ORDER BY l.Id",
                )
                .map_err(db("read logs"))?;
            let raws = stmt
                .query_map(params![bulk_change_id, tenant_id], |r| {
                    Ok((
                        LogEntry {
                            bulk_change_id: r.get(0)?,
                            device_change_id: r.get(1)?,
                            description: r.get(2)?,
                            request_text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            response_text: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            response_status: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                            has_errors: r.get(6)?,
                            error_text: r.get(7)?,
                            processed_date: DateTime::<Utc>::MIN_UTC,
                        },
                        r.get::<_, String>(8)?,
                    ))
                })
                .map_err(db("read logs"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read logs"))?;
            raws.into_iter()
                .map(|(mut e, t)| {
                    e.processed_date = parse_ts(&t)?;
                    Ok(e)
                })
                .collect()
        })
        .await
    }
}
