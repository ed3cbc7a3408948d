//! What every processor shares: reading the row's device, and failing a row.

use domain::rules::DeviceRecord;
use domain::{Iccid, RowStatus};

use crate::job::Job;
use crate::ports::{CarrierFailure, DeviceChangeRow, DeviceUpdate, FailureKind, RowOutcome};

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
    live_device(row, job.devices.device(job.bulk.tenant_id, device_id).await).map_err(|why| fail(RowStatus::Error, why))
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

pub(crate) fn writes_disabled() -> RowOutcome {
    fail(RowStatus::Error, "Writes disabled for this service provider.")
}

pub(crate) fn api_failed_or_error(f: &CarrierFailure) -> RowStatus {
    match f.kind {
        FailureKind::Protocol => RowStatus::Error,
        _ => RowStatus::ApiFailed,
    }
}
