//! The Rev.io service line of a device, created at most once: an active one recorded in the database is reused,
//! and a row claimed again after a crash asks Rev.io for the line a previous worker may have created before it
//! could record it.

use chrono::Utc;
use domain::RowStatus;
use domain::request::RevServiceOptions;
use domain::rules::DeviceRecord;

use crate::ports::{DeviceChangeRow, RevServiceCreate, RevServiceRecord};
use crate::worker::Job;

/// What became of the service line.
pub(crate) enum ServiceLine {
    Existing(i64),
    Found(i64),
    Created(i64),
}

impl ServiceLine {
    pub(crate) fn describe(&self) -> String {
        match self {
            ServiceLine::Existing(id) => format!("Rev.io service {id} already exists"),
            ServiceLine::Found(id) => format!("Rev.io service {id} found on Rev.io after a restart and recorded"),
            ServiceLine::Created(id) => format!("Rev.io service {id} created"),
        }
    }
}

/// Ensures the device has an active Rev.io service line for `customer`. On failure: the row status and reason.
pub(crate) async fn ensure(
    job: &Job,
    row: &DeviceChangeRow,
    device: &DeviceRecord,
    customer: &str,
    options: &RevServiceOptions,
) -> Result<ServiceLine, (RowStatus, String)> {
    let tenant = job.bulk.tenant_id;
    match job.store.active_rev_service(tenant, device.id).await {
        Ok(Some(existing)) => return Ok(ServiceLine::Existing(existing.rev_service_id)),
        Ok(None) => {}
        Err(e) => return Err((RowStatus::Error, format!("could not check Rev.io services: {e}"))),
    }
    let Some(rev) = job.rev_io.as_ref() else {
        return Err((RowStatus::ApiFailed, "no Rev.io account is set up for this tenant".into()));
    };
    let mut found = None;
    if row.claims > 1 {
        match rev.find_services(customer, &device.iccid).await {
            Ok((ids, call)) => {
                job.log(row, "Find Rev.io Service (reclaimed row)", &call, None).await;
                found = ids.first().copied();
            }
            Err(f) => {
                job.log(row, "Find Rev.io Service (reclaimed row)", &f.call, Some(&f.reason())).await;
                return Err((
                    RowStatus::ApiFailed,
                    format!("could not look the service line up on Rev.io: {}", f.reason()),
                ));
            }
        }
    }
    let line = match found {
        Some(id) => ServiceLine::Found(id),
        None => {
            let create = RevServiceCreate {
                customer_id: customer.to_string(),
                provider_id: options.provider_id,
                service_type_id: options.service_type_id,
                number: device.msisdn.clone().unwrap_or_else(|| device.iccid.clone()),
                number2: device.iccid.clone(),
                usage_plan_group_id: options.usage_plan_group_id,
                activated_date: options
                    .effective_date
                    .clone()
                    .filter(|d| !d.trim().is_empty())
                    .unwrap_or_else(|| Utc::now().format("%Y-%m-%dZ").to_string()),
            };
            match rev.create_service(&create).await {
                Ok((id, call)) => {
                    job.log(row, "Create Rev.io Service", &call, None).await;
                    ServiceLine::Created(id)
                }
                Err(f) => {
                    job.log(row, "Create Rev.io Service", &f.call, Some(&f.reason())).await;
                    return Err((RowStatus::ApiFailed, format!("Rev.io service line failed: {}", f.reason())));
                }
            }
        }
    };
    let id = match line {
        ServiceLine::Existing(id) | ServiceLine::Found(id) | ServiceLine::Created(id) => id,
    };
    let record = RevServiceRecord {
        device_id: device.id,
        rev_service_id: id,
        rev_customer_id: customer.to_string(),
        is_active: true,
    };
    if let Err(e) = job.store.add_rev_service(tenant, &record).await {
        // Not lost: a retry of this row finds the line on Rev.io instead of creating another.
        return Err((RowStatus::Error, format!("Rev.io service {id} created but not recorded: {e}")));
    }
    Ok(line)
}
