//! StatusUpdate for the Jasper family: already-in-status, deactivation's rate-plan move first,
//! `PUT devices/{iccid}`, then the optional Rev.io service line and Rev customer assignment.

use domain::RowStatus;
use domain::request::StatusUpdate;
use domain::rules::{DeviceRecord, DeviceStatusDef, deactivation_rate_plan};
use tracing::info;

use super::confirm::{carrier_confirms, carrier_state_if_reclaimed, edit_confirmed};
use super::port::*;
use crate::change::rev_io_steps;
use crate::common::{api_failed_or_error, device_for_row, fail, writes_disabled};
use crate::job::Job;
use crate::ports::{DeviceChangeRow, DeviceUpdate, RowOutcome};

pub(crate) async fn process(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    req: &StatusUpdate,
    target: &DeviceStatusDef,
) -> RowOutcome {
    let (device, iccid) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let current = job.statuses.iter().find(|s| s.id == device.device_status_id);
    if current.is_some_and(|c| c.status.eq_ignore_ascii_case(&target.status)) {
        match carrier_confirms(job, api, row, &iccid, |cc| cc.status.eq_ignore_ascii_case(&target.status)).await {
            Ok(true) => {
                return RowOutcome {
                    status: RowStatus::Processed,
                    details: format!("Device already in status {} on the carrier; no change sent", target.status),
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
    let carrier_state = match carrier_state_if_reclaimed(job, api, row, &iccid).await {
        Ok(state) => state,
        Err(outcome) => return outcome,
    };
    if let Some(cc) = carrier_state.as_ref().filter(|cc| cc.status.eq_ignore_ascii_case(&target.status)) {
        info!(iccid = %iccid, "carrier already shows the target status; not sending again");
        let mut outcome = success(target, &cc.rate_plan, &device);
        outcome.details.push_str(" (found done on the carrier: an earlier attempt had sent it)");
        return rev_io_steps(job, row, req, &device, outcome).await;
    }

    let mut new_rate_plan = None;
    let deactivating = target.status.eq_ignore_ascii_case("DEACTIVATED");
    if deactivating && device.communication_plan.as_deref().is_some_and(|c| !c.trim().is_empty()) {
        let plan = match deactivation_rate_plan(&job.rate_plans, device.data_usage_mb) {
            Some(p) => p.rate_plan_code.clone(),
            None => {
                let reason = "Error Updating Rate Plan for Deactivation: no carrier rate plan is set up for this service provider";
                job.log(row, "Update Jasper Rate Plan for Deactivation", &Default::default(), Some(reason)).await;
                return fail(RowStatus::Error, reason.to_string());
            }
        };
        let already = carrier_state.as_ref().and_then(|c| c.rate_plan.as_deref()) == Some(plan.as_str());
        if !already {
            let edit = CcEdit { rate_plan: Some(plan.clone()), ..Default::default() };
            if let Err(f) =
                edit_confirmed(job, api, row, &iccid, &edit, "Update Jasper Rate Plan for Deactivation", |cc| {
                    cc.rate_plan.as_deref() == Some(plan.as_str())
                })
                .await
            {
                return fail(
                    api_failed_or_error(&f),
                    format!("Error Updating Rate Plan for Deactivation: {}", f.reason()),
                );
            }
        }
        new_rate_plan = Some(plan);
    }

    let edit = CcEdit { status: Some(target.status.clone()), ..Default::default() };
    if let Err(f) = edit_confirmed(job, api, row, &iccid, &edit, "Update Jasper Status: Jasper API", |cc| {
        cc.status.eq_ignore_ascii_case(&target.status)
    })
    .await
    {
        let mut outcome = fail(api_failed_or_error(&f), f.reason());
        // The rate plan did move: the database follows what the carrier confirmed.
        outcome.device_update.carrier_rate_plan = new_rate_plan;
        return outcome;
    }
    let outcome = success(target, &new_rate_plan, &device);
    rev_io_steps(job, row, req, &device, outcome).await
}

fn success(target: &DeviceStatusDef, rate_plan: &Option<String>, device: &DeviceRecord) -> RowOutcome {
    let mut details = format!("Status changed to {}", target.status);
    if let Some(plan) = rate_plan.as_ref().filter(|p| device.carrier_rate_plan.as_ref() != Some(*p)) {
        details.push_str(&format!("; rate plan moved to {plan} first"));
    }
    RowOutcome {
        status: RowStatus::Processed,
        details,
        device_update: DeviceUpdate {
            device_status_id: Some(target.id),
            carrier_rate_plan: rate_plan.clone(),
            ..DeviceUpdate::default()
        },
    }
}
