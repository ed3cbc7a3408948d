//! What every processor shares: reading the row's device, failing a row, and sending an edit to Control Center
//! so that a lost answer is checked against the carrier before anything is sent again.

use domain::rules::DeviceRecord;
use domain::{Iccid, RowStatus};
use tracing::warn;

use crate::job::Job;
use crate::ports::{CarrierFailure, CcDevice, CcEdit, DeviceChangeRow, DeviceUpdate, FailureKind, RowOutcome};

/// How often an ambiguous write (no answer) is checked against the carrier and sent again.
const AMBIGUOUS_ROUNDS: u32 = 3;

pub(crate) fn fail(status: RowStatus, details: impl Into<String>) -> RowOutcome {
    RowOutcome { status, details: details.into(), device_update: DeviceUpdate::default() }
}

/// The row's device (live, in the bulk change's tenant) with its parsed ICCID, for a processor's first look at
/// it: the copy the claim read with the row when there is one (no request of its own), else the store's.
pub(crate) async fn device_for_row(job: &Job, row: &DeviceChangeRow) -> Result<(DeviceRecord, Iccid), RowOutcome> {
    match &row.device {
        Some(device) if row.device_id == Some(device.id) && device.tenant_id == job.bulk.tenant_id => {
            live_device(row, Ok(Some(device.clone()))).map_err(|why| fail(RowStatus::Error, why))
        }
        _ => device_now(job, row).await,
    }
}

/// The row's device as the store has it now, for a look after a carrier call (another change may have moved it).
pub(crate) async fn device_now(job: &Job, row: &DeviceChangeRow) -> Result<(DeviceRecord, Iccid), RowOutcome> {
    let Some(device_id) = row.device_id else {
        return Err(fail(RowStatus::Error, "Row has no device"));
    };
    live_device(row, job.store.device(job.bulk.tenant_id, device_id).await).map_err(|why| fail(RowStatus::Error, why))
}

/// The device if it is live, with its parsed ICCID; else why the row cannot be worked.
fn live_device(
    row: &DeviceChangeRow,
    read: Result<Option<DeviceRecord>, crate::ports::StoreError>,
) -> Result<(DeviceRecord, Iccid), String> {
    let device = match read {
        Ok(Some(d)) if d.is_active && !d.is_deleted => d,
        Ok(_) => return Err(format!("Device {} no longer exists or was archived", row.iccid)),
        Err(e) => return Err(format!("Could not read device {}: {e}", row.iccid)),
    };
    let iccid = Iccid::parse(&device.iccid).map_err(|e| format!("Invalid ICCID: {e}"))?;
    Ok((device, iccid))
}

/// The carrier's view of a device whose change an earlier attempt may have sent (a reclaimed row, a retry),
/// so we look before sending again. `None` on a first attempt.
pub(crate) async fn carrier_state_if_reclaimed(
    job: &Job,
    row: &DeviceChangeRow,
    iccid: &Iccid,
) -> Result<Option<CcDevice>, RowOutcome> {
    if !job.may_have_been_sent(row) {
        return Ok(None);
    }
    match job.control_center.get_device(iccid).await {
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
    row: &DeviceChangeRow,
    iccid: &Iccid,
    done: impl Fn(&CcDevice) -> bool,
) -> Result<bool, RowOutcome> {
    match job.control_center.get_device(iccid).await {
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

pub(crate) fn writes_disabled() -> RowOutcome {
    fail(RowStatus::Error, "Writes disabled for this service provider.")
}

pub(crate) fn api_failed_or_error(f: &CarrierFailure) -> RowStatus {
    match f.kind {
        FailureKind::Protocol => RowStatus::Error,
        _ => RowStatus::ApiFailed,
    }
}

/// Sends an edit; when the answer is lost, reads the device and only sends again if the change did not take.
pub(crate) async fn edit_confirmed(
    job: &Job,
    row: &DeviceChangeRow,
    iccid: &Iccid,
    edit: &CcEdit,
    description: &str,
    took: impl Fn(&CcDevice) -> bool,
) -> Result<(), CarrierFailure> {
    let mut last = None;
    for _ in 0..AMBIGUOUS_ROUNDS {
        match job.control_center.edit_device(iccid, edit).await {
            Ok(call) => {
                job.log(row, description, &call, None).await;
                return Ok(());
            }
            Err(f) if f.kind == FailureKind::Ambiguous => {
                job.log(row, description, &f.call, Some(&f.reason())).await;
                warn!(iccid = %iccid, reason = %f.reason(), "no answer to an edit; checking the device before sending again");
                match job.control_center.get_device(iccid).await {
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
