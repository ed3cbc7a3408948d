//! EditUsername for the Jasper family: `PUT devices/{iccid}` with `deviceID` (the username); on
//! POD19 the audit trail is read to confirm the change took (a 2xx there did not always mean it did); cost
//! centers go to the device's Rev.io service. A carrier failure is never overwritten by a Rev.io success.
//! Telegence has no username: no carrier call, only our record and Rev.io (as the legacy does).

use domain::request::UsernameUpdate;
use domain::{Integration, RowStatus};

use crate::common::{
    api_failed_or_error, carrier_confirms, carrier_state_if_reclaimed, device_for_row, edit_confirmed, fail,
    writes_disabled,
};
use crate::job::Job;
use crate::ports::{CcEdit, DeviceChangeRow, DeviceUpdate, RowOutcome};

/// Rev.io custom field ids of cost centers 1 to 3 (the account's field set-up; unconfirmed against Rev.io).
pub const REV_COST_CENTER_FIELDS: [i64; 3] = [1, 2, 3];

pub(crate) async fn process(job: &Job, row: &DeviceChangeRow, req: &UsernameUpdate) -> RowOutcome {
    let (device, iccid) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let username = req.new_username.trim().to_string();
    let cost_centers: Vec<(i64, String)> = [&req.cost_center, &req.cost_center2, &req.cost_center3]
        .into_iter()
        .zip(REV_COST_CENTER_FIELDS)
        .filter_map(|(value, field)| {
            value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(|v| (field, v.to_string()))
        })
        .collect();
    let update = DeviceUpdate { username: Some(username.clone()), ..DeviceUpdate::default() };
    let mut details;
    let has_username = |cc: &crate::ports::CcDevice| cc.device_id.as_deref() == Some(username.as_str());
    let carrierless = job.sp.integration == Integration::Telegence;
    let confirmed = if carrierless {
        false
    } else if device.username.as_deref() == Some(username.as_str()) {
        match carrier_confirms(job, row, &iccid, has_username).await {
            Ok(confirmed) => confirmed,
            Err(outcome) => return outcome,
        }
    } else {
        false
    };
    if carrierless {
        // Telegence keeps no username (the legacy sends none): it is ours and Rev.io's.
        details = format!("Username changed to {username} (Telegence keeps no username; no carrier call)");
    } else if confirmed {
        details = format!("Username already {username} on the carrier; no change sent");
    } else {
        if !job.sp.write_is_enabled {
            return writes_disabled();
        }
        let already = match carrier_state_if_reclaimed(job, row, &iccid).await {
            Ok(state) => state.is_some_and(|cc| has_username(&cc)),
            Err(outcome) => return outcome,
        };
        if !already {
            let edit = CcEdit { device_id: Some(username.clone()), ..CcEdit::default() };
            if let Err(f) =
                edit_confirmed(job, row, &iccid, &edit, "Update Jasper Username: Jasper API", has_username).await
            {
                return fail(api_failed_or_error(&f), f.reason());
            }
        }
        if job.sp.integration == Integration::Pod19 {
            if let Err(outcome) = confirm_in_audit_trail(job, row, &iccid, &username).await {
                return outcome;
            }
        }
        details = format!("Username changed to {username}");
    }
    if cost_centers.is_empty() {
        return RowOutcome { status: RowStatus::Processed, details, device_update: update };
    }
    // The carrier part is done and stays recorded whatever Rev.io answers.
    let service = match job.store.active_rev_service(job.bulk.tenant_id, device.id).await {
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

/// POD19: the newest `deviceID` entry of the audit trail must show the new username, not in error.
async fn confirm_in_audit_trail(
    job: &Job,
    row: &DeviceChangeRow,
    iccid: &domain::Iccid,
    username: &str,
) -> Result<(), RowOutcome> {
    let not_taken = || {
        fail(
            RowStatus::ApiFailed,
            format!("Unsuccessfully updated the Username. The Username ({username}) not exists."),
        )
    };
    match job.control_center.audit_trail(iccid).await {
        Ok((entries, call)) => {
            let newest = entries
                .iter()
                .find(|e| e.field.eq_ignore_ascii_case("deviceID") || e.field.eq_ignore_ascii_case("Username"));
            let took = newest.is_some_and(|e| {
                e.value.as_deref() == Some(username)
                    && !e.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Error"))
            });
            let error = (!took).then(|| "the audit trail does not show the new username".to_string());
            job.log(row, "Get Jasper Device Audit Trail (confirm username)", &call, error.as_deref()).await;
            if took { Ok(()) } else { Err(not_taken()) }
        }
        Err(f) => {
            job.log(row, "Get Jasper Device Audit Trail (confirm username)", &f.call, Some(&f.reason())).await;
            Err(fail(
                api_failed_or_error(&f),
                format!("Could not confirm the username in the audit trail: {}", f.reason()),
            ))
        }
    }
}
