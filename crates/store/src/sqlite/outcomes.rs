//! What a lease holder writes: a row's final outcome (with its device update) and the audit trail.

use super::*;

#[async_trait]
impl Outcomes for SqliteStore {
    async fn complete_row(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        outcome: &RowOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let c =
            Completion { tenant_id, bulk_change_id, row_id, worker: worker.to_string(), outcome: outcome.clone(), now };
        self.complete_rows(std::slice::from_ref(&c)).await.map(|done| done.first().copied().unwrap_or(false))
    }

    async fn complete_rows(&self, rows: &[Completion]) -> StoreResult<Vec<bool>> {
        let rows = rows.to_vec();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db("begin complete row"))?;
            let done = rows.iter().map(|r| complete_in(&tx, r)).collect::<Result<Vec<bool>, StoreError>>()?;
            tx.commit().map_err(db("commit complete row"))?;
            Ok(done)
        })
        .await
    }

    async fn append_log(&self, e: &LogEntry) -> StoreResult<()> {
        self.append_logs(std::slice::from_ref(e)).await
    }

    async fn append_logs(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(db("begin append log"))?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO DeviceBulkChangeLog (BulkChangeId, M2MDeviceChangeId, MobilityDeviceChangeId, LogEntryDescription, RequestText, ResponseText, ResponseStatus, HasErrors, ErrorText, ProcessBy, ProcessedDate)
                         SELECT ?1, CASE WHEN b.PortalTypeId = 2 THEN NULL ELSE ?2 END, CASE WHEN b.PortalTypeId = 2 THEN ?2 END, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                         FROM DeviceBulkChange b WHERE b.Id = ?1",
                    )
                    .map_err(db("append log"))?;
                for e in &entries {
                    insert
                        .execute(params![e.bulk_change_id, e.device_change_id, e.description, e.request_text, e.response_text, e.response_status, e.has_errors, e.error_text, PROCESSED_BY, ts(e.processed_date)])
                        .map_err(db("append log"))?;
                }
            }
            tx.commit().map_err(db("commit append log"))?;
            Ok(())
        })
        .await
    }
}

/// One row's outcome and its device update inside `tx` (`Outcomes::complete_row`'s rules): false, and nothing
/// written, when `c.worker` no longer holds the row.
fn complete_in(tx: &rusqlite::Transaction<'_>, c: &Completion) -> Result<bool, StoreError> {
    let (tenant_id, bulk_change_id, row_id, worker, outcome) =
        (c.tenant_id, c.bulk_change_id, c.row_id, &c.worker, &c.outcome);
    let now = ts(c.now);
    let table = row_table(tx, bulk_change_id)?;
    let changed = tx
                .execute(
                    &format!("UPDATE {table} SET Status = ?1, StatusDetails = ?2, IsProcessed = 1, ProcessedDate = ?3, LeaseOwner = NULL, LeaseUntil = NULL
                     WHERE Id = ?4 AND LeaseOwner = ?5 AND Status = 'PROCESSING'"),
                    params![outcome.status.as_str(), outcome.details, now, row_id, worker],
                )
                .map_err(db("complete row"))?;
    if changed == 0 {
        return Ok(false);
    }
    if outcome.status == RowStatus::Processed {
        // What the device was, just before this row's change is applied (an undo sets it back).
        tx.execute(
            &format!(
                "UPDATE {table} SET BeforeDeviceStatusId = d.DeviceStatusId, BeforeCarrierRatePlan = d.CarrierRatePlan,
                        BeforeCommunicationPlan = d.CommunicationPlan, BeforeRevCustomerId = d.RevCustomerId,
                        BeforeUsername = d.Username, BeforeCustomerRatePlanId = d.CustomerRatePlanId,
                        BeforeCustomerRatePoolId = d.CustomerRatePoolId, BeforeDataAllocationMB = d.CustomerDataAllocationMB,
                        BeforeICCID = d.ICCID, BeforeIMEI = d.IMEI
                 FROM Device d WHERE {table}.Id = ?1 AND d.Id = {table}.DeviceId AND d.TenantId = ?2"
            ),
            params![row_id, tenant_id],
        )
        .map_err(db("keep the device's values before the change"))?;
    }
    let u = &outcome.device_update;
    if !u.is_empty() {
        tx.execute(
                    &format!("UPDATE Device SET DeviceStatusId = COALESCE(?1, DeviceStatusId), CarrierRatePlan = COALESCE(?2, CarrierRatePlan),
                            CommunicationPlan = COALESCE(?3, CommunicationPlan), RevCustomerId = CASE WHEN ?4 = '' THEN NULL ELSE COALESCE(?4, RevCustomerId) END,
                            Username = COALESCE(?5, Username), ICCID = COALESCE(?11, ICCID), IMEI = COALESCE(?12, IMEI),
                            MSISDN = COALESCE(?13, MSISDN), IpAddress = COALESCE(?14, IpAddress),
                            IsActive = CASE WHEN ?6 THEN 0 ELSE IsActive END, IsDeleted = CASE WHEN ?6 THEN 1 ELSE IsDeleted END,
                            ModifiedBy = ?7, ModifiedDate = ?8
                     WHERE Id = (SELECT DeviceId FROM {table} WHERE Id = ?9) AND TenantId = ?10"),
                    params![
                        u.device_status_id,
                        u.carrier_rate_plan,
                        u.communication_plan,
                        u.rev_customer_id,
                        u.username,
                        u.archive,
                        PROCESSED_BY,
                        now,
                        row_id,
                        tenant_id,
                        u.iccid,
                        u.imei,
                        u.msisdn,
                        u.ip_address
                    ],
                )
                .map_err(db("update device"))?;
    }
    if let Some(plan) = &u.customer_plan {
        tx.execute(
                    &format!("UPDATE Device SET CustomerRatePlanId = COALESCE(?1, CustomerRatePlanId), CustomerRatePoolId = COALESCE(?2, CustomerRatePoolId),
                            CustomerDataAllocationMB = COALESCE(?3, CustomerDataAllocationMB)
                     WHERE Id = (SELECT DeviceId FROM {table} WHERE Id = ?4) AND TenantId = ?5"),
                    params![plan.customer_rate_plan_id, plan.customer_rate_pool_id, plan.data_allocation_mb, row_id, tenant_id],
                )
                .map_err(db("update customer plan"))?;
    }
    if let Some(customer) = &u.rev_customer_id {
        // The assignment in the tenant's device list, and the device's history of actions.
        tx.execute(
                    &format!("INSERT INTO Device_Tenant (DeviceId, TenantId, RevCustomerId, IsActive, IsDeleted, ModifiedBy, ModifiedDate)
                     SELECT DeviceId, ?2, NULLIF(?3, ''), 1, 0, ?4, ?5 FROM {table} WHERE Id = ?1 AND DeviceId IS NOT NULL
                     ON CONFLICT (DeviceId, TenantId) DO UPDATE SET RevCustomerId = excluded.RevCustomerId, IsActive = 1, IsDeleted = 0,
                                                                    ModifiedBy = excluded.ModifiedBy, ModifiedDate = excluded.ModifiedDate"),
                    params![row_id, tenant_id, customer, PROCESSED_BY, now],
                )
                .map_err(db("assign device to customer"))?;
        if let Some(details) = &u.history {
            tx.execute(
                    &format!("INSERT INTO DeviceActionHistory (DeviceId, TenantId, BulkChangeId, Action, Details, ActionBy, ActionDate)
                     SELECT DeviceId, ?2, BulkChangeId, 'CustomerAssignment', ?3, ?4, ?5 FROM {table} WHERE Id = ?1 AND DeviceId IS NOT NULL"),
                    params![row_id, tenant_id, details, PROCESSED_BY, now],
                )
                .map_err(db("record device action"))?;
        }
    }
    tx.execute(
        "UPDATE Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedBy = ?2, ModifiedDate = ?3
                 WHERE M2MDeviceChangeId = ?1 AND IsActive = 1",
        params![row_id, PROCESSED_BY, now],
    )
    .map_err(db("close queued change"))?;
    Ok(true)
}
