//! The Rev.io steps after a carrier's status change, whatever the carrier: the optional service line, then the
//! Rev customer assignment. The carrier change stands whatever Rev.io answers; the row says what is left to do.

use domain::request::StatusUpdate;
use domain::rules::DeviceRecord;

use super::rev_service;
use crate::job::Job;
use crate::ports::{DeviceChangeRow, DeviceUpdate, RowOutcome};

/// After the carrier change: the optional Rev.io service line, then the Rev customer assignment.
pub(crate) async fn rev_io_steps(
    job: &Job,
    row: &DeviceChangeRow,
    req: &StatusUpdate,
    device: &DeviceRecord,
    mut outcome: RowOutcome,
) -> RowOutcome {
    let tenant = job.bulk.tenant_id;
    if let Some(rev) = req.rev_service.as_ref().filter(|r| r.create_rev_service) {
        let customer = rev.rev_customer_id.clone().or_else(|| req.account_number.clone()).unwrap_or_default();
        match rev_service::ensure(job, row, device, customer.trim(), rev).await {
            Ok(line) => outcome.details.push_str(&format!("; {}", line.describe())),
            Err((status, reason)) => {
                // The carrier change stands and is recorded; the row says what is left to do.
                outcome.status = status;
                outcome.details.push_str(&format!("; {reason}"));
                return outcome;
            }
        }
    }
    if let Some(account) = req.account_number.as_ref().filter(|a| !a.trim().is_empty()) {
        match job.rev_services.active_rev_service(tenant, device.id).await {
            Ok(Some(s)) if &s.rev_customer_id != account => {
                outcome.details.push_str(&format!(
                    "; Rev customer not changed: device has an active Rev.io service for customer {}",
                    s.rev_customer_id
                ));
            }
            Ok(_) => {
                let assigned = DeviceUpdate::assigned_to(account);
                outcome.device_update.rev_customer_id = assigned.rev_customer_id;
                outcome.device_update.history = assigned.history;
                outcome.details.push_str(&format!("; assigned to Rev customer {account}"));
            }
            Err(e) => outcome.details.push_str(&format!("; Rev customer not assigned: {e}")),
        }
    }
    outcome
}
