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
            // The edit itself was answered success: it may well have taken. Say so, so nobody retries it blind.
            Err(fail(
                api_failed_or_error(&f),
                format!(
                    "Control Center accepted the username {username} but the audit trail could not be read to \
                     confirm it ({}): it may have been applied; check the device before a retry",
                    f.reason()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use domain::request::ChangeDetails;

    use super::super::port::CcAuditEntry;
    use super::*;
    use crate::fakes::{self, MemStore};
    use crate::ports::{CallRecord, CarrierFailure, FailureKind};

    /// A Control Center that takes every edit and then throttles every audit-trail read past the client's budget.
    struct ThrottledAuditTrail;

    #[async_trait]
    impl ControlCenterApi for ThrottledAuditTrail {
        async fn get_device(&self, _iccid: &domain::Iccid) -> Result<(CcDevice, CallRecord), CarrierFailure> {
            Ok((CcDevice::default(), CallRecord::default()))
        }
        async fn edit_device(&self, _iccid: &domain::Iccid, _edit: &CcEdit) -> Result<CallRecord, CarrierFailure> {
            Ok(CallRecord::default())
        }
        async fn audit_trail(&self, _iccid: &domain::Iccid) -> Result<(Vec<CcAuditEntry>, CallRecord), CarrierFailure> {
            Err(CarrierFailure {
                kind: FailureKind::Throttled,
                code: Some("40000029".into()),
                message: "still throttled after 12 attempts: Rate limit exceeded".into(),
                attempts: 12,
                call: CallRecord { http_status: Some(429), ..CallRecord::default() },
            })
        }
    }

    /// `make chaos SEED=70` (issue 20): POD19 took a username edit, the audit trail that confirms it stayed
    /// throttled, and the row said only "Could not confirm the username" while the carrier showed the new name.
    /// The row says the edit was accepted and may have been applied.
    #[tokio::test]
    async fn an_accepted_username_edit_whose_confirmation_is_throttled_says_it_may_have_been_applied() {
        let store = MemStore::with_jasper_account();
        let device = store.add_device(1, "89148000008245116615");
        let details = ChangeDetails::EditUsername(UsernameUpdate {
            new_username: "truck-9".into(),
            cost_center: None,
            cost_center2: None,
            cost_center3: None,
        });
        let bulk = store.add_bulk_change(3, &details, std::slice::from_ref(&device));
        let job = fakes::job(store.clone(), bulk, details);
        let row = fakes::row(3, 1, &device);
        let iccid = domain::Iccid::parse(&device.iccid).expect("iccid");

        let outcome = confirm_in_audit_trail(&job, &ThrottledAuditTrail, &row, &iccid, "truck-9")
            .await
            .expect_err("not confirmed");

        assert_eq!(outcome.status, RowStatus::ApiFailed);
        assert!(outcome.details.contains("accepted the username truck-9"), "{}", outcome.details);
        assert!(outcome.details.contains("may have been applied"), "{}", outcome.details);
    }
}
