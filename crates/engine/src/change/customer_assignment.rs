//! CustomerAssignment (also the portal's device association, `POST /M2M/AssociateCustomer`): the device goes to a Rev customer of the
//! tenant, optionally with a Rev.io service line; `Device_Tenant` and `DeviceActionHistory` are written with the
//! row. A device billed to another customer through an active service is refused.

use domain::RowStatus;
use domain::request::{CarrierRatePlanUpdate, ChangeDetails, RevServiceOptions};
use domain::rules::DeviceRecord;

use super::rev_service;
use crate::common::{device_for_row, fail};
use crate::job::Job;
use crate::ports::{CustomerPlanChange, DeviceChangeRow, DeviceUpdate, RowOutcome};
use crate::undo::Unassign;

pub(crate) async fn process(job: &Job, row: &DeviceChangeRow, req: &RevServiceOptions) -> RowOutcome {
    let (device, customer) = match precheck(job, row, req).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    // AddCarrierRatePlan: the carrier plan first, as its own change; a refusal stops the assignment there.
    let mut moved_plan = None;
    if req.add_carrier_rate_plan == Some(true) {
        let plan = CarrierRatePlanUpdate {
            carrier_rate_plan: req.carrier_rate_plan.clone().unwrap_or_default(),
            communication_plan: None,
            effective_date: None,
        };
        let change = ChangeDetails::CarrierRatePlanChange(plan);
        let Some(moved) = job.carrier.process_row(job, row, &change).await else {
            return fail(
                RowStatus::Error,
                format!("AddCarrierRatePlan is not supported for {}; customer not assigned", job.sp.integration),
            );
        };
        if moved.status != RowStatus::Processed {
            return fail(
                moved.status,
                format!("Carrier rate plan not changed, customer not assigned: {}", moved.details),
            );
        }
        moved_plan = Some(moved);
    }
    assign(job, row, req, &device, &customer, moved_plan).await
}

/// The checks before anything is changed: the device is live and not billed to another customer.
pub(crate) async fn precheck(
    job: &Job,
    row: &DeviceChangeRow,
    req: &RevServiceOptions,
) -> Result<(DeviceRecord, String), RowOutcome> {
    let (device, iccid) = device_for_row(job, row).await?;
    let customer = req.rev_customer_id.as_deref().unwrap_or_default().trim().to_string();
    match job.rev_services.active_rev_service(job.bulk.tenant_id, device.id).await {
        Ok(Some(s)) if s.rev_customer_id != customer => Err(fail(
            RowStatus::Error,
            format!(
                "Device {iccid} is billed to Rev customer {} through active Rev.io service {}; disconnect it first",
                s.rev_customer_id, s.rev_service_id
            ),
        )),
        Ok(_) => Ok((device, customer)),
        Err(e) => Err(fail(RowStatus::Error, format!("Could not read Rev.io services of {iccid}: {e}"))),
    }
}

/// The assignment once the carrier plan (if asked) has moved: `moved_plan` is that change's successful outcome.
pub(crate) async fn assign(
    job: &Job,
    row: &DeviceChangeRow,
    req: &RevServiceOptions,
    device: &DeviceRecord,
    customer: &str,
    moved_plan: Option<RowOutcome>,
) -> RowOutcome {
    let mut update = DeviceUpdate::assigned_to(customer);
    let mut details = update.history.clone().unwrap_or_default();
    if let Some(moved) = moved_plan {
        details.push_str(&format!("; {}", moved.details));
        update.carrier_rate_plan = moved.device_update.carrier_rate_plan;
    }
    if req.create_rev_service {
        match rev_service::ensure(job, row, device, customer, req).await {
            Ok(line) => details.push_str(&format!("; {}", line.describe())),
            // The assignment waits for its service line; a carrier plan already moved stays recorded.
            Err((status, reason)) => {
                let mut outcome = fail(status, reason);
                outcome.device_update.carrier_rate_plan = update.carrier_rate_plan;
                return outcome;
            }
        }
    }
    if req.add_customer_rate_plan == Some(true) {
        update.customer_plan = Some(CustomerPlanChange {
            customer_rate_plan_id: req.customer_rate_plan_id,
            customer_rate_pool_id: req.customer_rate_pool_id,
            data_allocation_mb: None,
        });
        details.push_str(&format!("; customer rate plan {}", req.customer_rate_plan_id.unwrap_or_default()));
    }
    job.log(row, "Assign Rev customer (DEVICE_BULK_CHANGE_UPDATE_REV_CUSTOMER)", &Default::default(), None).await;
    RowOutcome { status: RowStatus::Processed, details, device_update: update }
}

/// An assignment undone (an undo's row, `Unassign`): the carrier rate plan back first when the assignment moved it
/// (a refusal stops the undo there), then the service line it made active closed on Rev.io and here, then the Rev
/// customer (none, when it had none) and customer rate plan back, recorded with the row.
pub(crate) async fn undo(job: &Job, row: &DeviceChangeRow, back: &Unassign) -> RowOutcome {
    let device = match device_for_row(job, row).await {
        Ok((device, _)) => device,
        Err(outcome) => return outcome,
    };
    let mut details = Vec::new();
    let mut moved_plan = None;
    if let Some(plan) = &back.carrier_rate_plan {
        let change = ChangeDetails::CarrierRatePlanChange(CarrierRatePlanUpdate {
            carrier_rate_plan: plan.clone(),
            communication_plan: None,
            effective_date: None,
        });
        let Some(moved) = job.carrier.process_row(job, row, &change).await else {
            return fail(
                RowStatus::Error,
                format!("{} cannot move the carrier rate plan back; the assignment was not undone", job.sp.integration),
            );
        };
        if moved.status != RowStatus::Processed {
            return fail(
                moved.status,
                format!("Carrier rate plan not moved back, the assignment was not undone: {}", moved.details),
            );
        }
        details.push(moved.details);
        moved_plan = moved.device_update.carrier_rate_plan;
    }
    if let Some(line) = back.close_rev_service_id {
        match rev_service::close(job, row, &device, line).await {
            Ok(closed) => details.push(closed),
            // A carrier plan already moved back stays recorded.
            Err((status, reason)) => {
                let mut outcome = fail(status, reason);
                outcome.device_update.carrier_rate_plan = moved_plan;
                return outcome;
            }
        }
    }
    let mut update = match back.rev_customer_id.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(customer) => DeviceUpdate {
            history: Some(format!("Rev customer assignment undone: back to Rev customer {customer}")),
            ..DeviceUpdate::assigned_to(customer)
        },
        None => DeviceUpdate::unassigned(),
    };
    details.insert(0, update.history.clone().unwrap_or_default());
    update.carrier_rate_plan = moved_plan;
    if back.customer_rate_plan_id.is_some() || back.customer_rate_pool_id.is_some() {
        update.customer_plan = Some(CustomerPlanChange {
            customer_rate_plan_id: back.customer_rate_plan_id,
            customer_rate_pool_id: back.customer_rate_pool_id,
            data_allocation_mb: None,
        });
        details.push(format!("customer rate plan back to {}", back.customer_rate_plan_id.unwrap_or_default()));
    }
    job.log(row, "Undo Rev customer assignment (DEVICE_BULK_CHANGE_UPDATE_REV_CUSTOMER)", &Default::default(), None)
        .await;
    RowOutcome { status: RowStatus::Processed, details: details.join("; "), device_update: update }
}
