//! CustomerAssignment (DESIGN 6.4, seed 003's device association): the device goes to a Rev customer of the
//! tenant, optionally with a Rev.io service line; `Device_Tenant` and `DeviceActionHistory` are written with the
//! row. A device billed to another customer through an active service is refused.

use domain::RowStatus;
use domain::request::RevServiceOptions;

use crate::common::{device_for_row, fail};
use crate::ports::{DeviceChangeRow, DeviceUpdate, RowOutcome};
use crate::rev_service;
use crate::worker::Job;

pub(crate) async fn process(job: &Job, row: &DeviceChangeRow, req: &RevServiceOptions) -> RowOutcome {
    let (device, iccid) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let customer = req.rev_customer_id.as_deref().unwrap_or_default().trim().to_string();
    match job.store.active_rev_service(job.bulk.tenant_id, device.id).await {
        Ok(Some(s)) if s.rev_customer_id != customer => {
            return fail(
                RowStatus::Error,
                format!(
                    "Device {iccid} is billed to Rev customer {} through active Rev.io service {}; disconnect it first",
                    s.rev_customer_id, s.rev_service_id
                ),
            );
        }
        Ok(_) => {}
        Err(e) => return fail(RowStatus::Error, format!("Could not read Rev.io services of {iccid}: {e}")),
    }
    let mut details = format!("Assigned to Rev customer {customer}");
    if req.create_rev_service {
        match rev_service::ensure(job, row, &device, &customer, req).await {
            Ok(line) => details.push_str(&format!("; {}", line.describe())),
            // The assignment waits for its service line: nothing is written, a retry does both.
            Err((status, reason)) => return fail(status, reason),
        }
    }
    job.log(row, "Assign Rev customer (DEVICE_BULK_CHANGE_UPDATE_REV_CUSTOMER)", &Default::default(), None).await;
    RowOutcome {
        status: RowStatus::Processed,
        details,
        device_update: DeviceUpdate { rev_customer_id: Some(customer), ..DeviceUpdate::default() },
    }
}
