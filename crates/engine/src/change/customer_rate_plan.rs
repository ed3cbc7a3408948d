//! CustomerRatePlanChange: no carrier call. A row is processed when its date has come (at once,
//! or when the scheduler releases it); the device's customer plan, pool and allocation change with the row.

use domain::RowStatus;
use domain::request::CustomerRatePlanUpdate;

use crate::common::device_for_row;
use crate::job::Job;
use crate::ports::{CustomerPlanChange, DeviceChangeRow, DeviceUpdate, RowOutcome};

pub(crate) fn change_of(req: &CustomerRatePlanUpdate) -> CustomerPlanChange {
    CustomerPlanChange {
        customer_rate_plan_id: req.customer_rate_plan_id,
        customer_rate_pool_id: req.customer_rate_pool_id,
        data_allocation_mb: req.data_allocation_mb,
    }
}

pub(crate) async fn process(job: &Job, row: &DeviceChangeRow, req: &CustomerRatePlanUpdate) -> RowOutcome {
    if let Err(outcome) = device_for_row(job, row).await {
        return outcome;
    }
    let change = change_of(req);
    let mut parts = Vec::new();
    if let Some(plan) = change.customer_rate_plan_id {
        parts.push(format!("customer rate plan {plan}"));
    }
    if let Some(pool) = change.customer_rate_pool_id {
        parts.push(format!("customer rate pool {pool}"));
    }
    if let Some(mb) = change.data_allocation_mb {
        parts.push(format!("{mb} MB allocation"));
    }
    job.log(
        row,
        "Update Customer Rate Plan (usp_DeviceBulkChange_CustomerRatePlanChange_UpdateDevices)",
        &Default::default(),
        None,
    )
    .await;
    RowOutcome {
        status: RowStatus::Processed,
        details: format!("Applied {}", parts.join(", ")),
        device_update: DeviceUpdate { customer_plan: Some(change), ..DeviceUpdate::default() },
    }
}
