//! A device's Rev.io service line: at most one active, and one creator at a time.

use super::*;

#[async_trait]
impl RevServices for SqliteStore {
    async fn active_rev_service(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<RevServiceRecord>> {
        self.with(move |c| {
            c.query_row(
                "SELECT DeviceId, RevServiceId, RevCustomerId, IsActive FROM RevService WHERE TenantId = ?1 AND DeviceId = ?2 AND IsActive = 1 ORDER BY Id DESC LIMIT 1",
                params![tenant_id, device_id],
                |r| Ok(RevServiceRecord { device_id: r.get(0)?, rev_service_id: r.get(1)?, rev_customer_id: r.get(2)?, is_active: r.get(3)? }),
            )
            .optional()
            .map_err(db("read Rev service"))
        })
        .await
    }

    async fn add_rev_service(&self, tenant_id: i64, s: &RevServiceRecord) -> StoreResult<()> {
        let s = s.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin add Rev service"))?;
            let active: Option<i64> = tx
                .query_row(
                    "SELECT RevServiceId FROM RevService WHERE DeviceId = ?1 AND TenantId = ?2 AND IsActive = 1",
                    params![s.device_id, tenant_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("read Rev service"))?;
            match active {
                Some(id) if s.is_active && id != s.rev_service_id => {
                    return Err(StoreError::Conflict(format!(
                        "device {} already has active Rev.io service {id}; service {} is not recorded",
                        s.device_id, s.rev_service_id
                    )));
                }
                Some(_) if s.is_active => {}
                _ => {
                    // The row that made the line active is the one holding its creation (an undo closes that line).
                    tx.execute(
                        "INSERT INTO RevService (TenantId, DeviceId, RevServiceId, RevCustomerId, IsActive, CreatedDate, CreatedByBulkChangeId, CreatedByRowId)
                         SELECT ?1, d.Id, ?3, ?4, ?5, ?6, c.BulkChangeId, c.RowId
                         FROM Device d LEFT JOIN RevServiceCreation c ON c.DeviceId = d.Id AND c.TenantId = d.TenantId
                         WHERE d.Id = ?2 AND d.TenantId = ?1",
                        params![tenant_id, s.device_id, s.rev_service_id, s.rev_customer_id, s.is_active, ts(Utc::now())],
                    )
                    .map_err(db("add Rev service"))?;
                }
            }
            tx.execute("DELETE FROM RevServiceCreation WHERE DeviceId = ?1 AND TenantId = ?2", params![s.device_id, tenant_id])
                .map_err(db("end Rev service creation"))?;
            tx.commit().map_err(db("commit add Rev service"))?;
            Ok(())
        })
        .await
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
        let customer = rev_customer_id.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin Rev service creation"))?;
            let active = tx
                .query_row(
                    "SELECT DeviceId, RevServiceId, RevCustomerId, IsActive FROM RevService WHERE TenantId = ?1 AND DeviceId = ?2 AND IsActive = 1",
                    params![tenant_id, device_id],
                    |r| Ok(RevServiceRecord { device_id: r.get(0)?, rev_service_id: r.get(1)?, rev_customer_id: r.get(2)?, is_active: r.get(3)? }),
                )
                .optional()
                .map_err(db("read Rev service"))?;
            if let Some(active) = active {
                return Ok(RevServiceStart::Active(active));
            }
            let held: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT BulkChangeId, RowId FROM RevServiceCreation WHERE DeviceId = ?1 AND TenantId = ?2",
                    params![device_id, tenant_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db("read Rev service creation"))?;
            let start = match held {
                None => RevServiceStart::Create { earlier_attempt: false },
                Some(owner) if owner == (bulk_change_id, row_id) => RevServiceStart::Create { earlier_attempt: true },
                Some((bulk, row)) => {
                    let open: bool = tx
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM DeviceChangeLock WHERE BulkChangeId = ?1 AND RowId = ?2)",
                            params![bulk, row],
                            |r| r.get(0),
                        )
                        .map_err(db("read Rev service creation owner"))?;
                    if open { RevServiceStart::Busy { bulk_change_id: bulk } } else { RevServiceStart::Create { earlier_attempt: true } }
                }
            };
            if let RevServiceStart::Create { .. } = start {
                tx.execute(
                    "INSERT INTO RevServiceCreation (DeviceId, TenantId, RevCustomerId, BulkChangeId, RowId, Attempts, StartedDate)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
                     ON CONFLICT (DeviceId) DO UPDATE SET RevCustomerId = excluded.RevCustomerId, BulkChangeId = excluded.BulkChangeId,
                         RowId = excluded.RowId, Attempts = Attempts + 1, StartedDate = excluded.StartedDate",
                    params![device_id, tenant_id, customer, bulk_change_id, row_id, ts(now)],
                )
                .map_err(db("begin Rev service creation"))?;
            }
            tx.commit().map_err(db("commit Rev service creation"))?;
            Ok(start)
        })
        .await
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
        let worker = worker.to_string();
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            c.execute(
                &format!(
                    "UPDATE {table} SET BeforeCostCenters = COALESCE(BeforeCostCenters, ?3)
                     WHERE Id = ?1 AND BulkChangeId = ?2 AND LeaseOwner = ?4"
                ),
                params![row_id, bulk_change_id, json, worker],
            )
            .map_err(db("keep cost centers before the change"))?;
            Ok(())
        })
        .await
    }

    async fn close_rev_service(
        &self,
        tenant_id: i64,
        device_id: i64,
        rev_service_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.with(move |c| {
            let closed = c
                .execute(
                    "UPDATE RevService SET IsActive = 0, ClosedDate = ?4
                     WHERE TenantId = ?1 AND DeviceId = ?2 AND RevServiceId = ?3 AND IsActive = 1",
                    params![tenant_id, device_id, rev_service_id, ts(now)],
                )
                .map_err(db("close Rev service"))?;
            Ok(closed > 0)
        })
        .await
    }

    async fn abandon_rev_service(&self, device_id: i64, bulk_change_id: i64, row_id: i64) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "DELETE FROM RevServiceCreation WHERE DeviceId = ?1 AND BulkChangeId = ?2 AND RowId = ?3",
                params![device_id, bulk_change_id, row_id],
            )
            .map_err(db("abandon Rev service creation"))?;
            Ok(())
        })
        .await
    }
}
