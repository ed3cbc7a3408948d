//! Undo (issue 22): what each PROCESSED row of a bulk change would need to set its device back to what it was just
//! before the row changed it (`Reads::applied_rows`, kept when the row was recorded), or why it cannot.
//!
//! A row is refused when its change cannot be reversed (a deletion, an archival, a new Telegence line, a
//! deactivation the carrier does not reverse), when its device changed since on the same attribute (another bulk
//! change set something else later), or when nothing was kept for it (recorded before values were kept).

use domain::request::{
    CarrierRatePlanUpdate, ChangeIdentifier, CustomerRatePlanUpdate, RevServiceOptions, StatusUpdate, UsernameUpdate,
};
use domain::rules::{DeviceRecord, DeviceStatusDef, resolve_target_status};
use domain::{BulkChangeRequest, BulkChangeRequestWire, ChangeDetails, Integration};
use serde::{Deserialize, Serialize};

use crate::ports::{AppliedRow, BulkChange, CostCenters, DeviceValues};

/// One row of an undo's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UndoRow {
    #[serde(rename = "ICCID")]
    pub iccid: String,
    /// The original bulk change's row.
    pub row_id: i64,
    #[serde(skip)]
    pub device_id: Option<i64>,
    /// What the device goes back to (`None`: refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<DeviceValues>,
    /// Why this row cannot be undone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The Rev.io service line the original made active, closed (disconnected, kept) by the undo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_rev_service: Option<i64>,
    /// The change that sets it back, as a bulk change of the original's type would carry it.
    #[serde(skip)]
    pub details: Option<ChangeDetails>,
    /// What the device must still be when the undo's row runs (what the original set): checked by the worker, so an
    /// undo planned before another change of the device (a second undo at the same moment) does not undo it again.
    #[serde(skip)]
    pub expect: Option<DeviceValues>,
    /// The way back of a customer assignment (its own processing: `Unassign`).
    #[serde(skip)]
    pub unassign: Option<Unassign>,
}

/// The way back of a customer assignment, carried by the undo's row (never by a request): the carrier rate plan
/// back (when the assignment moved it), its Rev.io service line closed, the Rev customer and customer rate plan
/// back. `change::customer_assignment::undo` does it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Unassign {
    /// The Rev customer the device goes back to; `None`: no customer.
    #[serde(default)]
    pub rev_customer_id: Option<String>,
    /// The Rev.io service line the assignment made active: closed (disconnected, kept) on Rev.io and here.
    #[serde(default)]
    pub close_rev_service_id: Option<i64>,
    /// The carrier rate plan the device goes back to (the assignment moved it: `AddCarrierRatePlan`).
    #[serde(default)]
    pub carrier_rate_plan: Option<String>,
    /// The customer rate plan and pool the device goes back to (the assignment set them: `AddCustomerRatePlan`).
    #[serde(default)]
    pub customer_rate_plan_id: Option<i64>,
    #[serde(default)]
    pub customer_rate_pool_id: Option<i64>,
}

impl UndoRow {
    fn refuse(row: &AppliedRow, why: impl Into<String>) -> Self {
        Self {
            iccid: row.iccid.clone(),
            row_id: row.row_id,
            device_id: row.device_id,
            restore: None,
            refused: Some(why.into()),
            close_rev_service: None,
            details: None,
            expect: None,
            unassign: None,
        }
    }

    fn restore(row: &AppliedRow, values: DeviceValues, details: ChangeDetails, expect: DeviceValues) -> Self {
        Self {
            iccid: row.iccid.clone(),
            row_id: row.row_id,
            device_id: row.device_id,
            restore: Some(values),
            refused: None,
            close_rev_service: None,
            details: Some(details),
            expect: Some(expect),
            unassign: None,
        }
    }
}

/// A row's own change as stored: the change, what the device must still be when it runs, and an assignment's way
/// back.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StoredRowChange {
    change: BulkChangeRequestWire,
    #[serde(default)]
    expect: Option<DeviceValues>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unassign: Option<Unassign>,
}

/// A row's own change, read back (`row_change`).
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub details: ChangeDetails,
    /// What the device must still be when the row runs.
    pub expect: Option<DeviceValues>,
    /// A customer assignment's way back: done instead of `details`.
    pub unassign: Option<Unassign>,
}

/// Why the device no longer is what the undo's row expects (`None`: it is), on the attributes `expect` names.
pub fn unexpected(expect: &DeviceValues, device: &DeviceRecord) -> Option<String> {
    let differs = |what: &str| Some(format!("its {what} changed since the undo was planned (another change set it)"));
    if expect.device_status_id.is_some_and(|s| s != device.device_status_id) {
        return differs("status");
    }
    if expect.carrier_rate_plan.is_some() && expect.carrier_rate_plan != device.carrier_rate_plan {
        return differs("carrier rate plan");
    }
    if expect.customer_rate_plan_id.is_some() && expect.customer_rate_plan_id != device.customer_rate_plan_id {
        return differs("customer rate plan");
    }
    if expect.customer_rate_pool_id.is_some() && expect.customer_rate_pool_id != device.customer_rate_pool_id {
        return differs("customer rate pool");
    }
    if expect.username.is_some() && expect.username != device.username {
        return differs("username");
    }
    if expect.imei.is_some() && expect.imei != device.imei {
        return differs("IMEI");
    }
    if expect.iccid.as_ref().is_some_and(|iccid| *iccid != device.iccid) {
        return differs("SIM (ICCID)");
    }
    if expect.rev_customer_id.is_some() && expect.rev_customer_id != device.rev_customer_id {
        return differs("Rev customer");
    }
    None
}

/// A row's own change as stored (`NewRow::request`): a request of one device carrying only the change, and what the
/// device must still be when it runs.
pub fn row_request(
    bulk: &BulkChange,
    details: &ChangeDetails,
    expect: Option<&DeviceValues>,
    unassign: Option<&Unassign>,
) -> Result<String, String> {
    let request = BulkChangeRequest {
        service_provider_id: bulk.service_provider_id,
        portal_type: bulk.portal_type,
        override_validation: false,
        devices: Vec::new(),
        details: details.clone(),
        rollout: Default::default(),
        notify_url: None,
    };
    let stored = StoredRowChange { change: request.to_wire(), expect: expect.cloned(), unassign: unassign.cloned() };
    serde_json::to_string(&stored).map_err(|e| format!("row change not serialisable: {e}"))
}

/// The change a row's stored request (`row_request`) carries, what its device must still be, and an assignment's
/// way back.
pub fn row_change(json: &str) -> Result<RowChange, String> {
    let stored: StoredRowChange = serde_json::from_str(json).map_err(|e| format!("not a row change: {e}"))?;
    let details = BulkChangeRequest::from_stored(stored.change).map(|r| r.details).map_err(|e| e.to_string())?;
    Ok(RowChange { details, expect: stored.expect, unassign: stored.unassign })
}

/// The plan: refused rows first (what an operator reads first), then the rows to restore, each in row order.
pub fn plan(bulk: &BulkChange, rows: &[AppliedRow], statuses: &[DeviceStatusDef]) -> Result<Vec<UndoRow>, String> {
    let request = bulk.parsed_request()?;
    let mut planned = Vec::with_capacity(rows.len());
    for row in rows {
        // An undo's row set its own value: undoing the undo looks at that, not at the bulk change's request.
        let own = row.request.as_deref().map(row_change).transpose()?;
        let planned_row = match &own {
            // An undone assignment is undone by assigning the device again as the undo found it.
            Some(RowChange { unassign: Some(back), .. }) => plan_reassignment(back, row),
            Some(own) => plan_row(bulk.integration, &own.details, row, statuses),
            None => plan_row(bulk.integration, &request.details, row, statuses),
        };
        planned.push(planned_row);
    }
    planned.sort_by_key(|r| (r.refused.is_none(), r.row_id));
    Ok(planned)
}

fn plan_row(
    integration: Integration,
    details: &ChangeDetails,
    row: &AppliedRow,
    statuses: &[DeviceStatusDef],
) -> UndoRow {
    let refused = match details {
        ChangeDetails::DeleteDevice => Some("a deleted device cannot be brought back by an undo"),
        ChangeDetails::Archival => {
            Some("an archived device is gone from the carrier account: an undo cannot restore it")
        }
        ChangeDetails::ActivateNewService(_) => Some("a new Telegence line cannot be undone (cancel the line instead)"),
        ChangeDetails::ChangeIccidOrImei(_) if !integration.is_jasper_family() => {
            Some("undoing a SIM swap or an IMEI change is built for Control Center accounts only so far")
        }
        ChangeDetails::ChangeIccidOrImei(c) if given(&c.new_iccid).is_some() && given(&c.new_imei).is_some() => {
            Some("undoing a SIM swap made together with an IMEI change is not built (undo it in two bulk changes)")
        }
        _ => None,
    };
    if let Some(why) = refused {
        return UndoRow::refuse(row, why);
    }
    let (Some(before), Some(now)) = (&row.before, &row.now) else {
        return match row.now {
            None => UndoRow::refuse(row, "the device no longer exists"),
            Some(_) => {
                UndoRow::refuse(row, "nothing was kept of this device before the change (recorded before undo existed)")
            }
        };
    };
    match details {
        ChangeDetails::StatusUpdate(update) => {
            let target = resolve_target_status(statuses, integration, &update.target_status);
            if target.is_some_and(|t| Some(t.id) != now.device_status_id) {
                return UndoRow::refuse(row, "its status changed since (another change set it later)");
            }
            if deactivation_is_final(integration, target) {
                return UndoRow::refuse(row, format!("{integration} does not reverse a deactivation"));
            }
            let Some(was) = before.device_status_id.and_then(|id| statuses.iter().find(|s| s.id == id)) else {
                return UndoRow::refuse(row, "its status before the change is not a status of this carrier");
            };
            let pre_activation = matches!(
                was.status.as_str(),
                "ACTIVATION_READY" | "TEST_READY" | "INVENTORY" | "PREACTIVE" | "UNKNOWN"
            );
            if pre_activation && Some(was.id) != now.device_status_id {
                return UndoRow::refuse(
                    row,
                    format!(
                        "{integration} does not move a SIM back to {} (a pre-activation status); deactivate it instead",
                        was.status
                    ),
                );
            }
            let values = DeviceValues { device_status_id: Some(was.id), ..DeviceValues::default() };
            let undo = StatusUpdate { target_status: was.display_name.clone(), ..status_only(update) };
            let expect = DeviceValues { device_status_id: now.device_status_id, ..DeviceValues::default() };
            UndoRow::restore(row, values, ChangeDetails::StatusUpdate(undo), expect)
        }
        ChangeDetails::CarrierRatePlanChange(update) => {
            if now.carrier_rate_plan.as_deref() != Some(update.carrier_rate_plan.as_str()) {
                return UndoRow::refuse(row, "its carrier rate plan changed since (another change set it later)");
            }
            let Some(plan) = before.carrier_rate_plan.clone() else {
                return UndoRow::refuse(row, "it had no carrier rate plan before: an undo cannot clear one");
            };
            let values = DeviceValues {
                carrier_rate_plan: Some(plan.clone()),
                communication_plan: before.communication_plan.clone(),
                ..DeviceValues::default()
            };
            let undo = CarrierRatePlanUpdate {
                carrier_rate_plan: plan,
                communication_plan: update.communication_plan.as_ref().and(before.communication_plan.clone()),
                effective_date: None,
            };
            let expect = DeviceValues { carrier_rate_plan: now.carrier_rate_plan.clone(), ..DeviceValues::default() };
            UndoRow::restore(row, values, ChangeDetails::CarrierRatePlanChange(undo), expect)
        }
        ChangeDetails::CustomerRatePlanChange(update) => {
            let changed_since = (update.customer_rate_plan_id.is_some()
                && now.customer_rate_plan_id != update.customer_rate_plan_id)
                || (update.customer_rate_pool_id.is_some()
                    && now.customer_rate_pool_id != update.customer_rate_pool_id);
            if changed_since {
                return UndoRow::refuse(row, "its customer rate plan changed since (another change set it later)");
            }
            // What the change set, back to what it was; what it left alone stays as it is.
            let back = |set: bool, was: Option<i64>| if set { was } else { None };
            let undo = CustomerRatePlanUpdate {
                customer_rate_plan_id: back(update.customer_rate_plan_id.is_some(), before.customer_rate_plan_id),
                customer_rate_pool_id: back(update.customer_rate_pool_id.is_some(), before.customer_rate_pool_id),
                data_allocation_mb: update.data_allocation_mb.and(before.data_allocation_mb),
                effective_date: None,
            };
            let cleared = (update.customer_rate_plan_id.is_some() && before.customer_rate_plan_id.is_none())
                || (update.customer_rate_pool_id.is_some() && before.customer_rate_pool_id.is_none());
            if cleared {
                return UndoRow::refuse(row, "it had no customer rate plan or pool before: an undo cannot clear one");
            }
            let values = DeviceValues {
                customer_rate_plan_id: undo.customer_rate_plan_id,
                customer_rate_pool_id: undo.customer_rate_pool_id,
                data_allocation_mb: undo.data_allocation_mb,
                ..DeviceValues::default()
            };
            let expect = DeviceValues {
                customer_rate_plan_id: now.customer_rate_plan_id,
                customer_rate_pool_id: now.customer_rate_pool_id,
                ..DeviceValues::default()
            };
            UndoRow::restore(row, values, ChangeDetails::CustomerRatePlanChange(undo), expect)
        }
        ChangeDetails::EditUsername(update) => {
            if now.username.as_deref() != Some(update.new_username.as_str()) {
                return UndoRow::refuse(row, "its username changed since (another change set it later)");
            }
            let Some(name) = before.username.clone().filter(|n| !n.is_empty()) else {
                return UndoRow::refuse(row, "it had no username before: an undo cannot clear one");
            };
            // The cost centers it set go back to what the device's Rev.io service had (kept by the row).
            let set = [&update.cost_center, &update.cost_center2, &update.cost_center3].map(|c| given(c).is_some());
            let mut back = CostCenters::default();
            if set.iter().any(|s| *s) {
                let Some(kept) = before.cost_centers.as_ref() else {
                    return UndoRow::refuse(
                        row,
                        "its cost centers before the change were not kept (Rev.io did not answer, or recorded before undo kept them)",
                    );
                };
                let was = [&kept.cost_center, &kept.cost_center2, &kept.cost_center3];
                if set.iter().zip(was).any(|(set, was)| *set && given(was).is_none()) {
                    return UndoRow::refuse(row, "a cost center it set had no value before: an undo cannot clear one");
                }
                let back_if = |n: usize| if set[n] { was[n].clone() } else { None };
                back = CostCenters { cost_center: back_if(0), cost_center2: back_if(1), cost_center3: back_if(2) };
            }
            let cost_centers = (back != CostCenters::default()).then(|| back.clone());
            let values = DeviceValues { username: Some(name.clone()), cost_centers, ..DeviceValues::default() };
            let undo = UsernameUpdate {
                new_username: name,
                cost_center: back.cost_center,
                cost_center2: back.cost_center2,
                cost_center3: back.cost_center3,
            };
            let expect = DeviceValues { username: now.username.clone(), ..DeviceValues::default() };
            UndoRow::restore(row, values, ChangeDetails::EditUsername(undo), expect)
        }
        ChangeDetails::ChangeIccidOrImei(change) if given(&change.new_iccid).is_some() => {
            // A SIM swap back: the SIM the device had takes the plans and status again, the one swapped in is
            // deactivated (Control Center has no way back to its pre-activation status).
            if now.iccid.as_deref() != given(&change.new_iccid) {
                return UndoRow::refuse(row, "its SIM changed since (another swap)");
            }
            let Some(old) = before.iccid.clone().filter(|i| !i.trim().is_empty()) else {
                return UndoRow::refuse(row, "its SIM before the swap was not kept");
            };
            let values = DeviceValues { iccid: Some(old.clone()), ..DeviceValues::default() };
            let undo = ChangeIdentifier { new_iccid: Some(old), new_imei: None, ..change.clone() };
            let expect = DeviceValues { iccid: now.iccid.clone(), ..DeviceValues::default() };
            let mut undo = UndoRow::restore(row, values, ChangeDetails::ChangeIccidOrImei(undo), expect);
            // The undo's row is the device as it is now: on the SIM swapped in.
            undo.iccid = now.iccid.clone().unwrap_or_else(|| row.iccid.clone());
            undo
        }
        ChangeDetails::ChangeIccidOrImei(change) => {
            if now.imei != change.new_imei {
                return UndoRow::refuse(row, "its IMEI changed since (another change set it later)");
            }
            let Some(imei) = before.imei.clone().filter(|i| !i.is_empty()) else {
                return UndoRow::refuse(row, "it had no IMEI before: an undo cannot clear one");
            };
            let values = DeviceValues { imei: Some(imei.clone()), ..DeviceValues::default() };
            let undo = ChangeIdentifier { new_imei: Some(imei), new_iccid: None, ..change.clone() };
            let expect = DeviceValues { imei: now.imei.clone(), ..DeviceValues::default() };
            UndoRow::restore(row, values, ChangeDetails::ChangeIccidOrImei(undo), expect)
        }
        ChangeDetails::CustomerAssignment(options) => plan_unassignment(options, row, before, now),
        _ => UndoRow::refuse(row, "this change cannot be undone"),
    }
}

/// A customer assignment back: the Rev customer before, the service line it made active closed, the carrier rate
/// plan and customer rate plan it set (if it set them) back.
fn plan_unassignment(
    options: &RevServiceOptions,
    row: &AppliedRow,
    before: &DeviceValues,
    now: &DeviceValues,
) -> UndoRow {
    let customer = options.rev_customer_id.as_deref().map(str::trim).unwrap_or_default();
    if now.rev_customer_id.as_deref() != Some(customer) {
        return UndoRow::refuse(row, "its Rev customer changed since (another change assigned it later)");
    }
    let mut back = Unassign {
        rev_customer_id: before.rev_customer_id.clone().filter(|c| !c.trim().is_empty()),
        close_rev_service_id: row.created_rev_service,
        carrier_rate_plan: None,
        customer_rate_plan_id: None,
        customer_rate_pool_id: None,
    };
    let mut expect = DeviceValues { rev_customer_id: now.rev_customer_id.clone(), ..DeviceValues::default() };
    let mut values = DeviceValues { rev_customer_id: back.rev_customer_id.clone(), ..DeviceValues::default() };
    if options.add_carrier_rate_plan == Some(true) && before.carrier_rate_plan != now.carrier_rate_plan {
        if now.carrier_rate_plan.as_deref() != options.carrier_rate_plan.as_deref() {
            return UndoRow::refuse(row, "its carrier rate plan changed since (another change set it later)");
        }
        let Some(plan) = before.carrier_rate_plan.clone() else {
            return UndoRow::refuse(row, "it had no carrier rate plan before: an undo cannot clear one");
        };
        back.carrier_rate_plan = Some(plan.clone());
        values.carrier_rate_plan = Some(plan);
        expect.carrier_rate_plan = now.carrier_rate_plan.clone();
    }
    if options.add_customer_rate_plan == Some(true) {
        let set = |asked: Option<i64>, now: Option<i64>| asked.is_some() && asked == now;
        let (plan_set, pool_set) = (
            set(options.customer_rate_plan_id, now.customer_rate_plan_id),
            set(options.customer_rate_pool_id, now.customer_rate_pool_id),
        );
        if options.customer_rate_plan_id.is_some() && !plan_set || options.customer_rate_pool_id.is_some() && !pool_set
        {
            return UndoRow::refuse(row, "its customer rate plan changed since (another change set it later)");
        }
        let cleared = (plan_set && before.customer_rate_plan_id.is_none())
            || (pool_set && before.customer_rate_pool_id.is_none());
        if cleared {
            return UndoRow::refuse(row, "it had no customer rate plan or pool before: an undo cannot clear one");
        }
        back.customer_rate_plan_id = before.customer_rate_plan_id.filter(|_| plan_set);
        back.customer_rate_pool_id = before.customer_rate_pool_id.filter(|_| pool_set);
        values.customer_rate_plan_id = back.customer_rate_plan_id;
        values.customer_rate_pool_id = back.customer_rate_pool_id;
        expect.customer_rate_plan_id = now.customer_rate_plan_id.filter(|_| plan_set);
        expect.customer_rate_pool_id = now.customer_rate_pool_id.filter(|_| pool_set);
    }
    let shown = RevServiceOptions { rev_customer_id: back.rev_customer_id.clone(), ..RevServiceOptions::default() };
    let mut undo = UndoRow::restore(row, values, ChangeDetails::CustomerAssignment(shown), expect);
    undo.close_rev_service = back.close_rev_service_id;
    undo.unassign = Some(back);
    undo
}

/// An undone assignment undone again: the device goes back to the customer (and carrier and customer rate plans)
/// the undo took it off. The service line the undo closed stays closed: a new line is a new assignment's business
/// (refused while the device is billed through another).
fn plan_reassignment(back: &Unassign, row: &AppliedRow) -> UndoRow {
    let (Some(before), Some(now)) = (&row.before, &row.now) else {
        return UndoRow::refuse(row, "the device no longer exists, or nothing was kept of it");
    };
    if now.rev_customer_id != back.rev_customer_id {
        return UndoRow::refuse(row, "its Rev customer changed since (another change assigned it later)");
    }
    let Some(customer) = before.rev_customer_id.clone().filter(|c| !c.trim().is_empty()) else {
        return UndoRow::refuse(row, "it had no Rev customer before the undo: nothing to assign it back to");
    };
    let changed = |was: &Option<String>, set: &Option<String>| set.is_some() && was != set;
    if changed(&now.carrier_rate_plan, &back.carrier_rate_plan) {
        return UndoRow::refuse(row, "its carrier rate plan changed since (another change set it later)");
    }
    let redo = Unassign {
        rev_customer_id: Some(customer.clone()),
        close_rev_service_id: None,
        carrier_rate_plan: back.carrier_rate_plan.as_ref().and(before.carrier_rate_plan.clone()),
        customer_rate_plan_id: back.customer_rate_plan_id.and(before.customer_rate_plan_id),
        customer_rate_pool_id: back.customer_rate_pool_id.and(before.customer_rate_pool_id),
    };
    let values = DeviceValues {
        rev_customer_id: redo.rev_customer_id.clone(),
        carrier_rate_plan: redo.carrier_rate_plan.clone(),
        customer_rate_plan_id: redo.customer_rate_plan_id,
        customer_rate_pool_id: redo.customer_rate_pool_id,
        ..DeviceValues::default()
    };
    let expect = DeviceValues {
        rev_customer_id: now.rev_customer_id.clone(),
        carrier_rate_plan: back.carrier_rate_plan.as_ref().and(now.carrier_rate_plan.clone()),
        ..DeviceValues::default()
    };
    let shown = RevServiceOptions { rev_customer_id: Some(customer), ..RevServiceOptions::default() };
    let mut undo = UndoRow::restore(row, values, ChangeDetails::CustomerAssignment(shown), expect);
    undo.unassign = Some(redo);
    undo
}

/// A value given in a request (`None` for an absent or blank one).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A status update that carries only the target status (no Rev.io line, no assignment), keeping a carrier's own
/// parameters of the original (ThingSpace's, Telegence's) for the way back.
fn status_only(original: &StatusUpdate) -> StatusUpdate {
    StatusUpdate { account_number: None, rev_service: None, ..original.clone() }
}

/// Carriers whose deactivation cannot be reversed: a deactivated ThingSpace device is reactivated only as a new
/// activation (a new number), a cancelled Telegence line is gone.
fn deactivation_is_final(integration: Integration, target: Option<&DeviceStatusDef>) -> bool {
    let deactivated = target.is_some_and(|t| {
        let code = t.status.to_ascii_lowercase();
        code.contains("deactiv") || code.contains("cancel") || code.contains("retire")
    });
    deactivated && matches!(integration, Integration::ThingSpace | Integration::Telegence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes;

    #[test]
    fn a_row_change_keeps_its_expectation_and_a_changed_device_fails_it() {
        let store = fakes::MemStore::default();
        let device = store.add_device(1, "89148000008245116615");
        let expect = DeviceValues { device_status_id: Some(1), ..DeviceValues::default() };
        assert_eq!(unexpected(&expect, &device), None, "still what the original set");
        let moved = DeviceRecord { device_status_id: 2, ..device.clone() };
        assert!(unexpected(&expect, &moved).is_some_and(|why| why.contains("status changed since")));
        let plan = DeviceValues { carrier_rate_plan: Some("RP-5GB".into()), ..DeviceValues::default() };
        let other_plan = DeviceRecord { carrier_rate_plan: Some("RP-1GB".into()), ..device.clone() };
        assert!(unexpected(&plan, &other_plan).is_some_and(|why| why.contains("carrier rate plan")));
        assert_eq!(unexpected(&DeviceValues::default(), &moved), None, "nothing expected, nothing checked");

        let bulk = store.add_bulk_change(1, &ChangeDetails::Archival, &[device]);
        let change = ChangeDetails::EditUsername(UsernameUpdate {
            new_username: "back".into(),
            cost_center: None,
            cost_center2: None,
            cost_center3: None,
        });
        let stored = row_request(&bulk, &change, Some(&expect), None).expect("stored");
        assert_eq!(
            row_change(&stored).expect("read back"),
            RowChange { details: change, expect: Some(expect), unassign: None }
        );
        assert!(row_change("{}").is_err(), "not a row change");
    }

    fn applied(before: DeviceValues, now: DeviceValues, line: Option<i64>) -> AppliedRow {
        AppliedRow {
            row_id: 7,
            iccid: "89148000008245116615".into(),
            device_id: Some(1),
            before: Some(before),
            now: Some(now),
            request: None,
            created_rev_service: line,
        }
    }

    #[test]
    fn a_sim_swap_is_undone_to_the_sim_before_and_only_while_the_device_keeps_the_new_one() {
        let sim = |iccid: &str| DeviceValues { iccid: Some(iccid.into()), ..DeviceValues::default() };
        let swap = |imei: Option<&str>| {
            ChangeDetails::ChangeIccidOrImei(ChangeIdentifier {
                new_iccid: Some("89148000008245116623".into()),
                new_imei: imei.map(str::to_string),
                service_zip_code: None,
                reason_code: None,
                technology_type: None,
            })
        };
        let row = applied(sim("89148000008245116615"), sim("89148000008245116623"), None);
        let undo = plan_row(Integration::Pod19, &swap(None), &row, &[]);
        assert_eq!(undo.iccid, "89148000008245116623", "named by the SIM it has now");
        match undo.details {
            Some(ChangeDetails::ChangeIccidOrImei(back)) => {
                assert_eq!(back.new_iccid.as_deref(), Some("89148000008245116615"))
            }
            other => panic!("a swap back, got {other:?}"),
        }
        assert_eq!(undo.expect, Some(sim("89148000008245116623")));
        let moved_on = applied(sim("89148000008245116615"), sim("89148000008245116631"), None);
        let refused = plan_row(Integration::Pod19, &swap(None), &moved_on, &[]).refused;
        assert!(refused.is_some_and(|why| why.contains("SIM changed since")));
        let refused = plan_row(Integration::Pod19, &swap(Some("356938035643809")), &row, &[]).refused;
        assert!(refused.is_some_and(|why| why.contains("together with an IMEI change")));
        let refused = plan_row(Integration::ThingSpace, &swap(None), &row, &[]).refused;
        assert!(refused.is_some_and(|why| why.contains("Control Center accounts only")));
    }

    #[test]
    fn a_username_change_with_cost_centers_is_undone_only_to_cost_centers_kept() {
        let change = |cost_center: Option<&str>| {
            ChangeDetails::EditUsername(UsernameUpdate {
                new_username: "truck-2".into(),
                cost_center: cost_center.map(str::to_string),
                cost_center2: None,
                cost_center3: None,
            })
        };
        let named = |name: &str, kept: Option<CostCenters>| DeviceValues {
            username: Some(name.into()),
            cost_centers: kept,
            ..DeviceValues::default()
        };
        let east = CostCenters { cost_center: Some("EAST".into()), ..CostCenters::default() };
        let row = applied(named("truck-1", Some(east.clone())), named("truck-2", None), None);
        match plan_row(Integration::Pod19, &change(Some("WEST")), &row, &[]).details {
            Some(ChangeDetails::EditUsername(back)) => {
                assert_eq!((back.new_username.as_str(), back.cost_center.as_deref()), ("truck-1", Some("EAST")))
            }
            other => panic!("a username change back, got {other:?}"),
        }
        let nothing_before = applied(named("truck-1", Some(CostCenters::default())), named("truck-2", None), None);
        let refused = plan_row(Integration::Pod19, &change(Some("WEST")), &nothing_before, &[]).refused;
        assert!(refused.is_some_and(|why| why.contains("no value before")));
        let not_kept = applied(named("truck-1", None), named("truck-2", None), None);
        let refused = plan_row(Integration::Pod19, &change(Some("WEST")), &not_kept, &[]).refused;
        assert!(refused.is_some_and(|why| why.contains("not kept")));
        let no_cost_center = plan_row(Integration::Pod19, &change(None), &not_kept, &[]);
        assert!(no_cost_center.refused.is_none(), "a change without cost centers needs none kept");
    }

    fn customer(id: &str) -> DeviceValues {
        DeviceValues { rev_customer_id: Some(id.into()), ..DeviceValues::default() }
    }

    #[test]
    fn an_assignment_is_undone_to_the_customer_before_with_its_line_closed() {
        let options = RevServiceOptions {
            rev_customer_id: Some("1002".into()),
            create_rev_service: true,
            ..RevServiceOptions::default()
        };
        let change = ChangeDetails::CustomerAssignment(options.clone());
        // No customer before, a line created: back to none, the line closed.
        let row = applied(DeviceValues::default(), customer("1002"), Some(11_001));
        let undo = plan_row(Integration::Pod19, &change, &row, &[]);
        let back = undo.unassign.clone().expect("a way back");
        assert_eq!((back.rev_customer_id, back.close_rev_service_id), (None, Some(11_001)));
        assert_eq!(undo.expect, Some(customer("1002")), "runs only while still billed to 1002");
        // Another customer before, no line created (it had one already): back to it, nothing closed.
        let undo = plan_row(Integration::Pod19, &change, &applied(customer("1001"), customer("1002"), None), &[]);
        let back = undo.unassign.expect("a way back");
        assert_eq!((back.rev_customer_id.as_deref(), back.close_rev_service_id), (Some("1001"), None));
        // Assigned elsewhere since: refused.
        let undo = plan_row(Integration::Pod19, &change, &applied(customer("1001"), customer("1003"), None), &[]);
        assert!(undo.refused.is_some_and(|why| why.contains("Rev customer changed since")));
        // A customer rate plan set where there was none cannot be cleared.
        let with_plan = ChangeDetails::CustomerAssignment(RevServiceOptions {
            add_customer_rate_plan: Some(true),
            customer_rate_plan_id: Some(5),
            ..options.clone()
        });
        let now = DeviceValues { customer_rate_plan_id: Some(5), ..customer("1002") };
        let undo = plan_row(Integration::Pod19, &with_plan, &applied(DeviceValues::default(), now, None), &[]);
        assert!(undo.refused.is_some_and(|why| why.contains("cannot clear")));
        // A carrier plan moved with the assignment goes back too.
        let with_carrier_plan = ChangeDetails::CustomerAssignment(RevServiceOptions {
            add_carrier_rate_plan: Some(true),
            carrier_rate_plan: Some("RP-5GB".into()),
            ..options
        });
        let before = DeviceValues { carrier_rate_plan: Some("RP-1GB".into()), ..DeviceValues::default() };
        let now = DeviceValues { carrier_rate_plan: Some("RP-5GB".into()), ..customer("1002") };
        let undo = plan_row(Integration::Pod19, &with_carrier_plan, &applied(before, now.clone(), None), &[]);
        let back = undo.unassign.clone().expect("a way back");
        assert_eq!(back.carrier_rate_plan.as_deref(), Some("RP-1GB"));
        // The undo undone: assigned to 1002 again on RP-5GB, no line to close.
        let undone = DeviceValues { carrier_rate_plan: Some("RP-1GB".into()), ..DeviceValues::default() };
        let redo = plan_reassignment(&back, &applied(now, undone, None));
        let again = redo.unassign.expect("assigned again");
        assert_eq!(
            (again.rev_customer_id.as_deref(), again.carrier_rate_plan.as_deref(), again.close_rev_service_id),
            (Some("1002"), Some("RP-5GB"), None)
        );
    }
}
