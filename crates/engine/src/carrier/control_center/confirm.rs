//! Control Center reads around an edit: what the carrier shows before a change is sent again (a reclaimed row, a
//! retry), whether it confirms a change our database already shows, and an edit whose lost answer is checked
//! against the carrier before it is sent again.

use domain::Iccid;
use tracing::warn;

use super::port::{CcDevice, CcEdit, ControlCenterApi};
use crate::common::{api_failed_or_error, fail};
use crate::job::Job;
use crate::ports::{CarrierFailure, DeviceChangeRow, FailureKind, RowOutcome};

/// How often an ambiguous write (no answer) is checked against the carrier and sent again.
const AMBIGUOUS_ROUNDS: u32 = 3;

/// The carrier's view of a device whose change an earlier attempt may have sent (a reclaimed row, a retry),
/// so we look before sending again. `None` on a first attempt.
pub(crate) async fn carrier_state_if_reclaimed(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
) -> Result<Option<CcDevice>, RowOutcome> {
    if !job.may_have_been_sent(row) {
        return Ok(None);
    }
    match api.get_device(iccid).await {
        Ok((cc, call)) => {
            job.log(row, "Get Jasper Device Details (an earlier attempt may have sent it)", &call, None).await;
            Ok(Some(cc))
        }
        Err(f) => {
            job.log(row, "Get Jasper Device Details (an earlier attempt may have sent it)", &f.call, Some(&f.reason()))
                .await;
            Err(fail(api_failed_or_error(&f), format!("Could not read the device from the carrier: {}", f.reason())))
        }
    }
}

/// Whether the carrier already shows what the row asks for, when our database says it does: a skip needs the
/// carrier's word (our copy can be stale). `Ok(true)`: skip; `Ok(false)`: the database was stale, send the change.
pub(crate) async fn carrier_confirms(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
    done: impl Fn(&CcDevice) -> bool,
) -> Result<bool, RowOutcome> {
    match api.get_device(iccid).await {
        Ok((cc, call)) => {
            job.log(row, "Get Jasper Device Details (is the change already there?)", &call, None).await;
            let confirmed = done(&cc);
            if !confirmed {
                warn!(iccid = %iccid, "the database says the change is there but the carrier does not; sending it");
            }
            Ok(confirmed)
        }
        Err(f) => {
            job.log(row, "Get Jasper Device Details (is the change already there?)", &f.call, Some(&f.reason())).await;
            Err(fail(
                api_failed_or_error(&f),
                format!("Could not read the device from the carrier to confirm it needs no change: {}", f.reason()),
            ))
        }
    }
}

/// Sends an edit; when the answer is lost, reads the device and only sends again if the change did not take.
pub(crate) async fn edit_confirmed(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
    edit: &CcEdit,
    description: &str,
    took: impl Fn(&CcDevice) -> bool,
) -> Result<(), CarrierFailure> {
    let mut last = None;
    for _ in 0..AMBIGUOUS_ROUNDS {
        match api.edit_device(iccid, edit).await {
            Ok(call) => {
                job.log(row, description, &call, None).await;
                return Ok(());
            }
            Err(f) if f.kind == FailureKind::Ambiguous => {
                job.log(row, description, &f.call, Some(&f.reason())).await;
                warn!(iccid = %iccid, reason = %f.reason(), "no answer to an edit; checking the device before sending again");
                match api.get_device(iccid).await {
                    Ok((cc, call)) => {
                        job.log(row, "Get Jasper Device Details (confirm edit)", &call, None).await;
                        if took(&cc) {
                            return Ok(());
                        }
                    }
                    Err(g) => {
                        job.log(row, "Get Jasper Device Details (confirm edit)", &g.call, Some(&g.reason())).await;
                        return Err(g);
                    }
                }
                last = Some(f);
            }
            Err(f) => {
                job.log(row, description, &f.call, Some(&f.reason())).await;
                return Err(f);
            }
        }
    }
    Err(last.unwrap_or_else(|| CarrierFailure {
        kind: FailureKind::Ambiguous,
        code: None,
        message: "no answer from the carrier".into(),
        attempts: AMBIGUOUS_ROUNDS,
        call: Default::default(),
    }))
}
