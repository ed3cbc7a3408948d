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
        _ => match job.devices.device(tenant, device_id).await {
            Ok(d) => d,
            Err(e) => return fail(RowStatus::Error, format!("Could not read device {}: {e}", row.iccid)),
        },
    };
    let has_rev_service = match job.rev_services.active_rev_service(tenant, device_id).await {
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

#[cfg(test)]
mod tests {
    use domain::request::ChangeDetails;

    use super::*;
    use crate::fakes::{self, MemStore};
    use crate::ports::RevServiceRecord;

    const ICCID: &str = "89148000008245116615";

    #[tokio::test]
    async fn an_idle_device_is_archived_with_its_row_and_the_archival_is_logged() {
        let store = MemStore::with_jasper_account();
        let device = store.add_device(1, ICCID);
        let bulk = store.add_bulk_change(3, &ChangeDetails::Archival, std::slice::from_ref(&device));
        let job = fakes::job(store.clone(), bulk, ChangeDetails::Archival);

        let outcome = process(&job, &fakes::row(3, 1, &device), false).await;

        assert_eq!(outcome.status, RowStatus::Processed, "{}", outcome.details);
        assert!(outcome.device_update.archive, "archived in the row's own transaction");
        let logs = store.state().logs.clone();
        assert_eq!(logs.len(), 1);
        assert!(logs[0].description.starts_with("Archive device ("), "{}", logs[0].description);
    }

    #[tokio::test]
    async fn a_device_used_since_the_request_or_billed_by_rev_io_is_refused_unless_overridden() {
        let store = MemStore::with_jasper_account();
        let mut used = store.add_device(1, ICCID);
        used.last_usage_date = Some(chrono::Utc::now() - chrono::Duration::days(2));
        store.state().devices[0] = used.clone();
        let billed = store.add_device(2, "89148000008245116623");
        store.state().rev_services.push(RevServiceRecord {
            device_id: 2,
            rev_service_id: 77,
            rev_customer_id: "C-1".into(),
            is_active: true,
        });
        let bulk = store.add_bulk_change(4, &ChangeDetails::Archival, &[used.clone(), billed.clone()]);
        let job = fakes::job(store.clone(), bulk, ChangeDetails::Archival);

        let recent = process(&job, &fakes::row(4, 1, &used), false).await;
        let with_rev = process(&job, &fakes::row(4, 2, &billed), false).await;
        let overridden = process(&job, &fakes::row(4, 2, &billed), true).await;

        assert_eq!(recent.status, RowStatus::Error);
        assert!(recent.details.contains("2 days ago"), "{}", recent.details);
        assert!(!recent.device_update.archive);
        assert_eq!(with_rev.status, RowStatus::Error);
        assert!(with_rev.details.contains("active Rev.io service"), "{}", with_rev.details);
        assert_eq!(overridden.status, RowStatus::Processed, "OverrideValidation passes the Rev.io rule");
        let refusals = store.state().logs.iter().filter(|l| l.description == "Archive device: refused").count();
        assert_eq!(refusals, 2, "each refusal is in the audit trail");
    }
}
