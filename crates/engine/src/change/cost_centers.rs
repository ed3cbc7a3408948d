//! A username change's cost centers, sent to the device's Rev.io service after the carrier part (which stays
//! recorded whatever Rev.io answers); and the username of a carrier that keeps none (Telegence: ours and Rev.io's).

use domain::RowStatus;
use domain::request::UsernameUpdate;
use domain::rules::DeviceRecord;
use tracing::warn;

use crate::common::device_for_row;
use crate::job::Job;
use crate::ports::{CostCenters, DeviceChangeRow, DeviceUpdate, RevIoApi, RowOutcome};

/// Rev.io custom field ids of cost centers 1 to 3 (the account's field set-up; unconfirmed against Rev.io).
pub const REV_COST_CENTER_FIELDS: [i64; 3] = [1, 2, 3];

/// The username recorded without a carrier call (a carrier that keeps none), then the cost centers.
pub(crate) async fn without_carrier(job: &Job, row: &DeviceChangeRow, req: &UsernameUpdate) -> RowOutcome {
    let (device, _) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let username = req.new_username.trim();
    let details = format!("Username changed to {username} ({} keeps no username; no carrier call)", job.sp.integration);
    // The change is ours alone: the audit trail says so (every row that changes a device has an entry).
    job.log(row, &format!("Update username (DEVICE_BULK_CHANGE_EDIT_USERNAME): {details}"), &Default::default(), None)
        .await;
    send(job, row, &device, req, details).await
}

/// The row's outcome: the username recorded with `details` (what the carrier part did), then the cost centers
/// sent to the device's active Rev.io service.
pub(crate) async fn send(
    job: &Job,
    row: &DeviceChangeRow,
    device: &DeviceRecord,
    req: &UsernameUpdate,
    mut details: String,
) -> RowOutcome {
    let update = DeviceUpdate { username: Some(req.new_username.trim().to_string()), ..DeviceUpdate::default() };
    let cost_centers: Vec<(i64, String)> = [&req.cost_center, &req.cost_center2, &req.cost_center3]
        .into_iter()
        .zip(REV_COST_CENTER_FIELDS)
        .filter_map(|(value, field)| {
            value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(|v| (field, v.to_string()))
        })
        .collect();
    if cost_centers.is_empty() {
        return RowOutcome { status: RowStatus::Processed, details, device_update: update };
    }
    // The carrier part is done and stays recorded whatever Rev.io answers.
    let service = match job.rev_services.active_rev_service(job.bulk.tenant_id, device.id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            details.push_str("; cost centers not sent: the device has no active Rev.io service");
            return RowOutcome { status: RowStatus::Processed, details, device_update: update };
        }
        Err(e) => {
            details.push_str(&format!("; cost centers not sent: {e}"));
            return RowOutcome { status: RowStatus::Error, details, device_update: update };
        }
    };
    let Some(rev) = job.rev_io.as_ref() else {
        details.push_str("; cost centers not sent: no Rev.io account is set up for this tenant");
        return RowOutcome { status: RowStatus::ApiFailed, details, device_update: update };
    };
    keep_before(job, row, rev.as_ref(), service.rev_service_id).await;
    match rev.set_service_fields(service.rev_service_id, &cost_centers).await {
        Ok(call) => {
            job.log(row, "Update Rev.io Service Cost Centers", &call, None).await;
            details.push_str(&format!("; cost centers set on Rev.io service {}", service.rev_service_id));
            RowOutcome { status: RowStatus::Processed, details, device_update: update }
        }
        Err(f) => {
            job.log(row, "Update Rev.io Service Cost Centers", &f.call, Some(&f.reason())).await;
            details.push_str(&format!("; Rev.io cost centers failed: {}", f.reason()));
            RowOutcome { status: RowStatus::ApiFailed, details, device_update: update }
        }
    }
}

/// Keeps the service's cost centers as they are before the new ones are sent (an undo sets them back). Not kept
/// (Rev.io unreadable, the store unreachable): the change goes on, and an undo refuses this row's cost centers.
async fn keep_before(job: &Job, row: &DeviceChangeRow, rev: &dyn RevIoApi, service_id: i64) {
    let description = "Read Rev.io Service Cost Centers (kept for an undo)";
    let fields = match rev.service_fields(service_id).await {
        Ok((fields, call)) => {
            job.log(row, description, &call, None).await;
            fields
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            warn!(iccid = %row.iccid, reason = %f.reason(), "cost centers before the change not kept: an undo will not restore them");
            return;
        }
    };
    let field = |n: usize| fields.get(&REV_COST_CENTER_FIELDS[n]).cloned().filter(|v| !v.trim().is_empty());
    let kept = CostCenters { cost_center: field(0), cost_center2: field(1), cost_center3: field(2) };
    if let Err(e) = job.rev_services.keep_before_cost_centers(job.bulk.id, row.id, &job.worker_id, &kept).await {
        warn!(iccid = %row.iccid, error = %e, "cost centers before the change not kept: an undo will not restore them");
    }
}
