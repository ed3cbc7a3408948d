//! ChangeICCIDorIMEI for the Jasper family. An IMEI change is one `modemID` edit. An ICCID change is
//! a SIM swap run as a saga: the new SIM takes the old one's plans and username, then its status, then the old
//! SIM is deactivated. When a step fails, the steps done are compensated in reverse order and the old SIM stays
//! in service. Every step and compensation is logged; the database follows only what the carrier confirmed.
//! Each step is skipped when the carrier already shows its result, so a row taken over after a crash resumes.

use domain::request::ChangeIdentifier;
use domain::{Iccid, Imei, RowStatus};
use tracing::warn;

use super::confirm::edit_confirmed;
use super::port::*;
use crate::common::{api_failed_or_error, device_for_row, fail, writes_disabled};
use crate::job::Job;
use crate::ports::{DeviceChangeRow, DeviceUpdate, RowOutcome};

pub(crate) async fn process(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    req: &ChangeIdentifier,
) -> RowOutcome {
    let (device, old_iccid) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    if !job.sp.write_is_enabled {
        return writes_disabled();
    }
    let new_imei = match req.new_imei.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(Imei::parse).transpose() {
        Ok(i) => i,
        Err(e) => return fail(RowStatus::Error, format!("Invalid NewIMEI: {e}")),
    };
    let new_iccid =
        match req.new_iccid.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(Iccid::parse).transpose() {
            Ok(i) => i,
            Err(e) => return fail(RowStatus::Error, format!("Invalid NewICCID: {e}")),
        };
    let mut update = DeviceUpdate::default();
    let mut details = Vec::new();
    if let Some(imei) = &new_imei {
        if device.imei.as_deref() != Some(imei.as_str()) {
            let edit = CcEdit { modem_id: Some(imei.to_string()), ..CcEdit::default() };
            let took = |cc: &CcDevice| cc.modem_id.as_deref() == Some(imei.as_str());
            if let Err(f) =
                edit_confirmed(job, api, row, &old_iccid, &edit, "Update Jasper IMEI (modemID): Jasper API", took).await
            {
                return fail(api_failed_or_error(&f), format!("IMEI not changed: {}", f.reason()));
            }
        }
        update.imei = Some(imei.to_string());
        details.push(format!("IMEI changed to {imei}"));
    }
    if let Some(new) = &new_iccid {
        match swap_sim(job, api, row, &old_iccid, new).await {
            Ok(()) => {
                update.iccid = Some(new.to_string());
                details.push(format!("SIM swapped from {old_iccid} to {new}; the old SIM is deactivated"));
            }
            Err(reason) => {
                // The IMEI part (if any) was confirmed by the carrier and is kept.
                let mut outcome = fail(RowStatus::ApiFailed, reason);
                outcome.device_update = update;
                return outcome;
            }
        }
    }
    RowOutcome { status: RowStatus::Processed, details: details.join("; "), device_update: update }
}

/// A step already applied that may have to be undone.
enum Done {
    /// The new SIM's plans and username before the swap.
    NewSimProfile(CcEdit),
    /// The new SIM's status before the swap.
    NewSimStatus(String),
}

async fn read(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
    what: &str,
) -> Result<CcDevice, String> {
    match api.get_device(iccid).await {
        Ok((cc, call)) => {
            job.log(row, &format!("SIM swap: read {what} SIM {iccid}"), &call, None).await;
            Ok(cc)
        }
        Err(f) => {
            job.log(row, &format!("SIM swap: read {what} SIM {iccid}"), &f.call, Some(&f.reason())).await;
            Err(format!("SIM swap not started: could not read the {what} SIM {iccid}: {}", f.reason()))
        }
    }
}

async fn swap_sim(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    old: &Iccid,
    new: &Iccid,
) -> Result<(), String> {
    let old_sim = read(job, api, row, old, "old").await?;
    let new_sim = read(job, api, row, new, "new").await?;
    let mut done: Vec<Done> = Vec::new();

    // An earlier attempt (a worker killed after the last step, before recording it) finished the swap: the old SIM
    // is deactivated and the new one in service with its plans. Run again, step 2 would copy the old SIM's status
    // now (DEACTIVATED) to the new one and take the device out of service (`make chaos SEED=179`).
    let in_service = |status: &str| !status.eq_ignore_ascii_case("DEACTIVATED") && !pre_activation(status);
    if job.may_have_been_sent(row)
        && old_sim.status.eq_ignore_ascii_case("DEACTIVATED")
        && in_service(&new_sim.status)
        && new_sim.rate_plan == old_sim.rate_plan
        && new_sim.communication_plan == old_sim.communication_plan
        && new_sim.device_id == old_sim.device_id
    {
        return Ok(());
    }

    // Step 1: the new SIM takes the old one's rate plan, communication plan and username.
    let profile = CcEdit {
        rate_plan: old_sim.rate_plan.clone(),
        communication_plan: old_sim.communication_plan.clone(),
        device_id: old_sim.device_id.clone(),
        ..CcEdit::default()
    };
    let has_profile = |cc: &CcDevice| {
        cc.rate_plan == old_sim.rate_plan
            && cc.communication_plan == old_sim.communication_plan
            && cc.device_id == old_sim.device_id
    };
    if !has_profile(&new_sim) && profile != CcEdit::default() {
        if let Err(f) = edit_confirmed(
            job,
            api,
            row,
            new,
            &profile,
            "SIM swap step 1: new SIM takes the plans and username",
            has_profile,
        )
        .await
        {
            return Err(format!(
                "SIM swap failed at step 1 (plans and username to {new}): {}; nothing to undo",
                f.reason()
            ));
        }
        done.push(Done::NewSimProfile(CcEdit {
            rate_plan: new_sim.rate_plan.clone(),
            communication_plan: new_sim.communication_plan.clone(),
            device_id: new_sim.device_id.clone(),
            ..CcEdit::default()
        }));
    }

    // Step 2: the new SIM takes the old one's status.
    if !new_sim.status.eq_ignore_ascii_case(&old_sim.status) {
        let edit = CcEdit { status: Some(old_sim.status.clone()), ..CcEdit::default() };
        let took = |cc: &CcDevice| cc.status.eq_ignore_ascii_case(&old_sim.status);
        if let Err(f) =
            edit_confirmed(job, api, row, new, &edit, "SIM swap step 2: new SIM takes the status", took).await
        {
            let undone = compensate(job, api, row, new, done).await;
            return Err(format!(
                "SIM swap failed at step 2 (status {} on {new}): {}; {undone}",
                old_sim.status,
                f.reason()
            ));
        }
        done.push(Done::NewSimStatus(new_sim.status.clone()));
    }

    // Step 3: the old SIM is deactivated.
    if !old_sim.status.eq_ignore_ascii_case("DEACTIVATED") {
        let edit = CcEdit { status: Some("DEACTIVATED".into()), ..CcEdit::default() };
        let took = |cc: &CcDevice| cc.status.eq_ignore_ascii_case("DEACTIVATED");
        if let Err(f) = edit_confirmed(job, api, row, old, &edit, "SIM swap step 3: old SIM deactivated", took).await {
            let undone = compensate(job, api, row, new, done).await;
            return Err(format!(
                "SIM swap failed at step 3 (deactivating {old}): {}; {undone}; {old} stays in service",
                f.reason()
            ));
        }
    }
    Ok(())
}

/// Undoes the done steps on the new SIM, last first. Returns what it did, for the row's reason.
async fn compensate(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    new: &Iccid,
    done: Vec<Done>,
) -> String {
    let mut notes = Vec::new();
    for step in done.into_iter().rev() {
        let (description, edit, note) = match step {
            // Control Center forbids a return to a pre-activation status: a SIM activated by the swap is
            // deactivated instead, which takes it out of service just the same.
            Done::NewSimStatus(prior) => {
                let target = if pre_activation(&prior) { "DEACTIVATED".to_string() } else { prior };
                (
                    "SIM swap compensation: new SIM status undone",
                    CcEdit { status: Some(target.clone()), ..CcEdit::default() },
                    format!("{new} set back to {target}"),
                )
            }
            Done::NewSimProfile(prior) => (
                "SIM swap compensation: new SIM plans and username undone",
                prior,
                format!("{new} plans and username restored"),
            ),
        };
        match api.edit_device(new, &edit).await {
            Ok(call) => {
                job.log(row, description, &call, None).await;
                notes.push(note);
            }
            Err(f) => {
                job.log(row, description, &f.call, Some(&f.reason())).await;
                warn!(iccid = %new, reason = %f.reason(), "SIM swap compensation failed; needs a person");
                notes.push(format!("COMPENSATION FAILED on {new} ({}): check the SIM by hand", f.reason()));
            }
        }
    }
    if notes.is_empty() { "nothing to undo".into() } else { format!("undone: {}", notes.join(", ")) }
}

/// A Control Center status a SIM cannot be moved back to.
fn pre_activation(status: &str) -> bool {
    matches!(status, "ACTIVATION_READY" | "TEST_READY" | "INVENTORY")
}
