//! CarrierRatePlanChange for the Jasper family: `PUT devices/{iccid}` with `ratePlan` (and
//! `communicationPlan` when given); the device's plans change in the database only when the carrier confirmed.

use domain::RowStatus;
use domain::request::CarrierRatePlanUpdate;

use super::confirm::{carrier_confirms, carrier_state_if_reclaimed, edit_confirmed};
use super::port::*;
use crate::common::{api_failed_or_error, device_for_row, fail, writes_disabled};
use crate::job::Job;
use crate::ports::{DeviceChangeRow, DeviceUpdate, RowOutcome};

pub(crate) async fn process(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    req: &CarrierRatePlanUpdate,
) -> RowOutcome {
    let (device, iccid) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let plan = req.carrier_rate_plan.trim().to_string();
    let communication = req.communication_plan.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
    let update = DeviceUpdate {
        carrier_rate_plan: Some(plan.clone()),
        communication_plan: communication.clone(),
        ..DeviceUpdate::default()
    };
    let done = |rate_plan: Option<&str>, comm: Option<&str>| {
        rate_plan == Some(plan.as_str()) && communication.as_deref().is_none_or(|c| comm == Some(c))
    };
    let took = |cc: &CcDevice| done(cc.rate_plan.as_deref(), cc.communication_plan.as_deref());
    if done(device.carrier_rate_plan.as_deref(), device.communication_plan.as_deref()) {
        match carrier_confirms(job, api, row, &iccid, took).await {
            Ok(true) => {
                return RowOutcome {
                    status: RowStatus::Processed,
                    details: format!("Device already on carrier rate plan {plan} on the carrier; no change sent"),
                    device_update: DeviceUpdate::default(),
                };
            }
            Ok(false) => {}
            Err(outcome) => return outcome,
        }
    }
    if !job.sp.write_is_enabled {
        return writes_disabled();
    }
    match carrier_state_if_reclaimed(job, api, row, &iccid).await {
        Err(outcome) => return outcome,
        Ok(Some(cc)) if took(&cc) => {
            return RowOutcome {
                status: RowStatus::Processed,
                details: format!(
                    "Carrier rate plan changed to {plan} (found done on the carrier: an earlier attempt had sent it)"
                ),
                device_update: update,
            };
        }
        Ok(_) => {}
    }
    let edit = CcEdit { rate_plan: Some(plan.clone()), communication_plan: communication.clone(), ..CcEdit::default() };
    if let Err(f) =
        edit_confirmed(job, api, row, &iccid, &edit, "Update Jasper Carrier Rate Plan: Jasper API", took).await
    {
        return fail(api_failed_or_error(&f), f.reason());
    }
    let mut details = format!("Carrier rate plan changed to {plan}");
    if let Some(c) = &communication {
        details.push_str(&format!("; communication plan {c}"));
    }
    RowOutcome { status: RowStatus::Processed, details, device_update: update }
}
