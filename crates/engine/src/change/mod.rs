//! Change types with no carrier step, and the steps every carrier shares after its own (Rev.io). Carriers use
//! these; nothing here names a carrier: a carrier step this needs (AddCarrierRatePlan) goes through the job's
//! `Carrier`.

use domain::request::ChangeDetails;

use crate::job::Job;
use crate::ports::{DeviceChangeRow, RowOutcome};

mod after_status;
mod archival;
pub(crate) mod cost_centers;
pub(crate) mod customer_assignment;
mod customer_rate_plan;
mod rev_service;

pub(crate) use after_status::rev_io_steps;
pub use cost_centers::REV_COST_CENTER_FIELDS;

/// A row of a change type that needs no carrier of its own; None for the others.
pub(crate) async fn process(job: &Job, row: &DeviceChangeRow, details: &ChangeDetails) -> Option<RowOutcome> {
    Some(match details {
        ChangeDetails::Archival => archival::process(job, row, job.override_validation).await,
        ChangeDetails::CustomerRatePlanChange(req) => customer_rate_plan::process(job, row, req).await,
        ChangeDetails::CustomerAssignment(req) => customer_assignment::process(job, row, req).await,
        _ => return None,
    })
}
