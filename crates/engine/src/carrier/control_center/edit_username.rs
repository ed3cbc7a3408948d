//! EditUsername for the Jasper family: `PUT devices/{iccid}` with `deviceID` (the username); on
//! POD19 the audit trail is read to confirm the change took (a 2xx there did not always mean it did); cost
//! centers then go to the device's Rev.io service (`change::cost_centers`). A carrier failure is never overwritten
//! by a Rev.io success.

use domain::request::UsernameUpdate;
use domain::{Integration, RowStatus};

use super::confirm::{carrier_confirms, carrier_state_if_reclaimed, edit_confirmed};
use super::port::{CcDevice, CcEdit, ControlCenterApi};
use crate::change::cost_centers;
use crate::common::{api_failed_or_error, device_for_row, fail, writes_disabled};
use crate::job::Job;
use crate::ports::{DeviceChangeRow, RowOutcome};

pub(crate) async fn process(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    req: &UsernameUpdate,
) -> RowOutcome {
    let (device, iccid) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let username = req.new_username.trim().to_string();
    let has_username = |cc: &CcDevice| cc.device_id.as_deref() == Some(username.as_str());
    let confirmed = if device.username.as_deref() == Some(username.as_str()) {
        match carrier_confirms(job, api, row, &iccid, has_username).await {
            Ok(confirmed) => confirmed,
            Err(outcome) => return outcome,
        }
    } else {
        false
    };
    let details = if confirmed {
        format!("Username already {username} on the carrier; no change sent")
    } else {
        if !job.sp.write_is_enabled {
            return writes_disabled();
        }
        let already = match carrier_state_if_reclaimed(job, api, row, &iccid).await {
            Ok(state) => state.is_some_and(|cc| has_username(&cc)),
            Err(outcome) => return outcome,
        };
        if !already {
            let edit = CcEdit { device_id: Some(username.clone()), ..CcEdit::default() };
            if let Err(f) =
                edit_confirmed(job, api, row, &iccid, &edit, "Update Jasper Username: Jasper API", has_username).await
            {
                return fail(api_failed_or_error(&f), f.reason());
            }
        }
        if job.sp.integration == Integration::Pod19 {
            if let Err(outcome) = confirm_in_audit_trail(job, api, row, &iccid, &username).await {
                return outcome;
            }
        }
        format!("Username changed to {username}")
    };
    cost_centers::send(job, row, &device, req, details).await
}

/// POD19: the newest `deviceID` entry of the audit trail must show the new username, not in error.
async fn confirm_in_audit_trail(
    job: &Job,
    api: &dyn ControlCenterApi,
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
    match api.audit_trail(iccid).await {
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
