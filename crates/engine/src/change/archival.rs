//! Archival: no carrier call. The rules are checked again with the data as it is now (a device may
//! have been used since the request), then the device is archived in the row's own transaction.

use domain::RowStatus;
use domain::rules::{DeviceVerdict, validate_archival_device};

use crate::common::fail;
use crate::job::Job;
use crate::ports::{DeviceChangeRow, DeviceUpdate, RowOutcome};

pub(crate) async fn process(job: &Job, row: &DeviceChangeRow, override_validation: bool) -> RowOutcome {
    let tenant = job.bulk.tenant_id;
    let Some(device_id) = row.device_id else {
        return fail(RowStatus::Error, "Row has no device");
    };
    // The claim read the device with the row (the same transaction as its lease); otherwise read it now.
    let device = match &row.device {
        Some(d) if d.id == device_id && d.tenant_id == tenant => Some(d.clone()),
        _ => match job.store.device(tenant, device_id).await {
            Ok(d) => d,
            Err(e) => return fail(RowStatus::Error, format!("Could not read device {}: {e}", row.iccid)),
        },
    };
    let has_rev_service = match job.store.active_rev_service(tenant, device_id).await {
        Ok(s) => s.is_some(),
        Err(e) => return fail(RowStatus::Error, format!("Could not read Rev.io services of {}: {e}", row.iccid)),
    };
    let verdict = validate_archival_device(
        &row.iccid,
        device.as_ref(),
        job.sp.id,
        has_rev_service,
        override_validation,
        job.clock.now(),
    );
    match verdict {
        DeviceVerdict::Invalid { reason } => {
            job.log(row, "Archive device: refused", &Default::default(), Some(&reason)).await;
            fail(RowStatus::Error, reason)
        }
        DeviceVerdict::Valid { iccid, .. } => {
            job.log(row, "Archive device (usp_DeviceBulkChange_Archival_ArchiveDevices)", &Default::default(), None)
                .await;
            RowOutcome {
                status: RowStatus::Processed,
                details: format!("Device {iccid} archived"),
                device_update: DeviceUpdate { archive: true, ..DeviceUpdate::default() },
            }
        }
    }
}
