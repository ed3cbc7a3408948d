//! StatusUpdate for the Jasper family: already-in-status, deactivation's rate-plan move first,
//! `PUT devices/{iccid}`, then the optional Rev.io service line and Rev customer assignment.

use domain::RowStatus;
use domain::request::StatusUpdate;
use domain::rules::{DeviceRecord, DeviceStatusDef, deactivation_rate_plan};
use tracing::info;

use crate::common::{
    api_failed_or_error, carrier_confirms, carrier_state_if_reclaimed, device_for_row, edit_confirmed, fail,
    writes_disabled,
};
use crate::job::Job;
use crate::ports::{CcEdit, DeviceChangeRow, DeviceUpdate, RowOutcome};
use crate::rev_service;

pub(crate) async fn process(
    job: &Job,
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
        match carrier_confirms(job, row, &iccid, |cc| cc.status.eq_ignore_ascii_case(&target.status)).await {
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
    let carrier_state = match carrier_state_if_reclaimed(job, row, &iccid).await {
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
            if let Err(f) = edit_confirmed(job, row, &iccid, &edit, "Update Jasper Rate Plan for Deactivation", |cc| {
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
    if let Err(f) = edit_confirmed(job, row, &iccid, &edit, "Update Jasper Status: Jasper API", |cc| {
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
        match job.store.active_rev_service(tenant, device.id).await {
            Ok(Some(s)) if &s.rev_customer_id != account => {
                outcome.details.push_str(&format!(
                    "; Rev customer not changed: device has an active Rev.io service for customer {}",
                    s.rev_customer_id
                ));
            }
            Ok(_) => {
                outcome.device_update.rev_customer_id = Some(account.clone());
                outcome.details.push_str(&format!("; assigned to Rev customer {account}"));
            }
            Err(e) => outcome.details.push_str(&format!("; Rev customer not assigned: {e}")),
        }
    }
    outcome
}
