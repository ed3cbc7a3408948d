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

#[cfg(test)]
mod tests {
    use domain::request::ChangeDetails;

    use super::*;
    use crate::fakes::{self, MemStore};

    fn update() -> CustomerRatePlanUpdate {
        CustomerRatePlanUpdate {
            customer_rate_plan_id: Some(12),
            customer_rate_pool_id: None,
            data_allocation_mb: Some(512.0),
            effective_date: None,
        }
    }

    #[tokio::test]
    async fn the_plan_and_allocation_go_with_the_row_and_an_archived_device_is_refused() {
        let store = MemStore::with_jasper_account();
        let live = store.add_device(1, "89148000008245116615");
        let archived = store.add_device(2, "89148000008245116623");
        store.state().devices[1].is_deleted = true;
        let details = ChangeDetails::CustomerRatePlanChange(update());
        let bulk = store.add_bulk_change(8, &details, &[live.clone(), archived.clone()]);
        let job = fakes::job(store.clone(), bulk, details);

        let applied = process(&job, &fakes::row(8, 1, &live), &update()).await;
        let refused = process(&job, &fakes::row(8, 2, &archived), &update()).await;

        assert_eq!(applied.status, RowStatus::Processed);
        assert_eq!(applied.details, "Applied customer rate plan 12, 512 MB allocation");
        assert_eq!(applied.device_update.customer_plan, Some(change_of(&update())));
        assert_eq!(refused.status, RowStatus::Error);
        assert!(refused.details.contains("no longer exists or was archived"), "{}", refused.details);
        assert_eq!(refused.device_update, DeviceUpdate::default(), "nothing changes on a refused device");
    }
}
