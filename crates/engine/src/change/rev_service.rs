//! The Rev.io service line of a device, created at most once: an active one recorded in the database is reused,
//! one row at a time may create it (`RevServices::begin_rev_service`), and whenever an earlier attempt may have reached
//! Rev.io (a crash, a lost answer, a 5xx) the line is looked up there before anything is sent again. The database
//! keeps at most one active line per device.

use chrono::Utc;
use domain::RowStatus;
use domain::request::RevServiceOptions;
use domain::rules::DeviceRecord;

use tracing::warn;

use crate::job::Job;
use crate::ports::{
    CarrierFailure, DeviceChangeRow, FailureKind, RevIoApi, RevServiceCreate, RevServiceRecord, RevServiceStart,
};

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
            ServiceLine::Found(id) => {
                format!("Rev.io service {id} found on Rev.io (an earlier attempt had created it) and recorded")
            }
            ServiceLine::Created(id) => format!("Rev.io service {id} created"),
        }
    }
}

/// How many times a creation whose answer was lost (a timeout or a 5xx) is looked up and sent again.
const CREATE_ROUNDS: u32 = 3;

/// Ensures the device has an active Rev.io service line for `customer`, creating it at most once: the store gives
/// one row at a time the right to create it, and whenever an earlier attempt may have reached Rev.io (a crashed
/// worker, a lost answer, a 5xx) the line is looked up there before anything is sent again. On failure: the row
/// status and reason.
pub(crate) async fn ensure(
    job: &Job,
    row: &DeviceChangeRow,
    device: &DeviceRecord,
    customer: &str,
    options: &RevServiceOptions,
) -> Result<ServiceLine, (RowStatus, String)> {
    let tenant = job.bulk.tenant_id;
    let start = job
        .rev_services
        .begin_rev_service(tenant, device.id, customer, job.bulk.id, row.id, job.clock.now())
        .await
        .map_err(|e| (RowStatus::Error, format!("could not check Rev.io services: {e}")))?;
    let mut earlier = match start {
        RevServiceStart::Active(existing) => return Ok(ServiceLine::Existing(existing.rev_service_id)),
        RevServiceStart::Busy { bulk_change_id } => {
            return Err((
                RowStatus::Error,
                format!(
                    "the Rev.io service line of device {} is being created by bulk change {bulk_change_id}",
                    device.iccid
                ),
            ));
        }
        RevServiceStart::Create { earlier_attempt } => earlier_attempt || job.may_have_been_sent(row),
    };
    let Some(rev) = job.rev_io.as_ref() else {
        give_back(job, row, device).await;
        return Err((RowStatus::ApiFailed, "no Rev.io account is set up for this tenant".into()));
    };
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
    let mut lost = None;
    let mut line = None;
    // Each round looks first when an earlier attempt may have reached Rev.io; the last one only looks.
    for round in 0..=CREATE_ROUNDS {
        if earlier {
            match look_up(job, row, rev.as_ref(), customer, &device.iccid).await {
                Ok(Some(id)) => {
                    line = Some(ServiceLine::Found(id));
                    break;
                }
                Ok(None) if round == CREATE_ROUNDS => break,
                Ok(None) => {}
                Err(reason) => {
                    let first = lost.map(|f: CarrierFailure| format!("{}; ", f.reason())).unwrap_or_default();
                    return Err((
                        RowStatus::ApiFailed,
                        format!(
                            "Rev.io service line failed: {first}the line could not be looked up on Rev.io: {reason}"
                        ),
                    ));
                }
            }
        }
        match rev.create_service(&create).await {
            Ok((id, call)) => {
                job.log(row, "Create Rev.io Service", &call, None).await;
                line = Some(ServiceLine::Created(id));
                break;
            }
            Err(f) if f.kind == FailureKind::Ambiguous => {
                // Rev.io may have created it and then failed to answer: never send again before looking.
                job.log(row, "Create Rev.io Service", &f.call, Some(&f.reason())).await;
                earlier = true;
                lost = Some(f);
            }
            Err(f) => {
                job.log(row, "Create Rev.io Service", &f.call, Some(&f.reason())).await;
                if f.kind == FailureKind::Refused {
                    give_back(job, row, device).await;
                }
                return Err((RowStatus::ApiFailed, format!("Rev.io service line failed: {}", f.reason())));
            }
        }
    }
    let Some(line) = line else {
        let reason = lost.map(|f| f.reason()).unwrap_or_else(|| "no answer from Rev.io".into());
        return Err((RowStatus::ApiFailed, format!("Rev.io service line failed: {reason}")));
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
    if let Err(e) = job.rev_services.add_rev_service(tenant, &record).await {
        // Not lost: the next attempt for this device finds the line on Rev.io instead of creating another.
        return Err((RowStatus::Error, format!("Rev.io service {id} created but not recorded: {e}")));
    }
    Ok(line)
}

/// The line a previous attempt may have created: `GET /Services` by customer and ICCID.
async fn look_up(
    job: &Job,
    row: &DeviceChangeRow,
    rev: &dyn RevIoApi,
    customer: &str,
    iccid: &str,
) -> Result<Option<i64>, String> {
    match rev.find_services(customer, iccid).await {
        Ok((ids, call)) => {
            job.log(row, "Find Rev.io Service (an earlier attempt may have created it)", &call, None).await;
            Ok(ids.first().copied())
        }
        Err(f) => {
            job.log(row, "Find Rev.io Service (an earlier attempt may have created it)", &f.call, Some(&f.reason()))
                .await;
            Err(f.reason())
        }
    }
}

/// Rev.io refused (nothing was created): the right to create the device's line goes back.
async fn give_back(job: &Job, row: &DeviceChangeRow, device: &DeviceRecord) {
    if let Err(e) = job.rev_services.abandon_rev_service(device.id, job.bulk.id, row.id).await {
        warn!(iccid = %device.iccid, error = %e, "could not give back the Rev.io creation; the next attempt looks it up first");
    }
}

/// Closes the Rev.io service line `line` that an assignment made active (an undo of it): only while it still is the
/// device's active line; Rev.io keeps the line, disconnected. A close that may have been sent before (a retry, a
/// row taken over, a lost answer) is looked at on Rev.io first, so it is sent at most once more. On success: what
/// was done; on failure: the row status and reason.
pub(crate) async fn close(
    job: &Job,
    row: &DeviceChangeRow,
    device: &DeviceRecord,
    line: i64,
) -> Result<String, (RowStatus, String)> {
    let tenant = job.bulk.tenant_id;
    match job.rev_services.active_rev_service(tenant, device.id).await {
        Ok(Some(active)) if active.rev_service_id == line => {}
        Ok(Some(active)) => {
            return Err((
                RowStatus::Error,
                format!(
                    "not undone: device {} is billed through Rev.io service {} now (another change), not {line}",
                    device.iccid, active.rev_service_id
                ),
            ));
        }
        Ok(None) => return Ok(format!("Rev.io service {line} was closed already")),
        Err(e) => return Err((RowStatus::Error, format!("could not read Rev.io services of {}: {e}", device.iccid))),
    }
    let Some(rev) = job.rev_io.as_ref() else {
        return Err((RowStatus::ApiFailed, "no Rev.io account is set up for this tenant".into()));
    };
    let closed_on = if job.may_have_been_sent(row) { disconnected(job, row, rev.as_ref(), line).await? } else { None };
    let closed_on = match closed_on {
        Some(date) => date,
        None => {
            let date = job.clock.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            match rev.close_service(line, &date).await {
                Ok(call) => {
                    job.log(row, "Close Rev.io Service", &call, None).await;
                    date
                }
                Err(f) if f.kind == FailureKind::Ambiguous => {
                    // Rev.io may have closed it and then failed to answer: look before anything else.
                    job.log(row, "Close Rev.io Service", &f.call, Some(&f.reason())).await;
                    match disconnected(job, row, rev.as_ref(), line).await? {
                        Some(date) => date,
                        None => {
                            return Err((
                                RowStatus::ApiFailed,
                                format!(
                                    "Rev.io service {line} not closed: {}; Rev.io shows it open (read after)",
                                    f.reason()
                                ),
                            ));
                        }
                    }
                }
                Err(f) => {
                    job.log(row, "Close Rev.io Service", &f.call, Some(&f.reason())).await;
                    return Err((
                        RowStatus::ApiFailed,
                        format!(
                            "Rev.io service {line} not closed: {} (Rev.io closes a line only once its service products are disconnected)",
                            f.reason()
                        ),
                    ));
                }
            }
        }
    };
    match job.rev_services.close_rev_service(tenant, device.id, line, job.clock.now()).await {
        Ok(_) => Ok(format!("Rev.io service {line} closed (disconnected {closed_on})")),
        // Not lost: the row is taken again, finds the line closed on Rev.io and records it.
        Err(e) => Err((RowStatus::Error, format!("Rev.io service {line} closed on Rev.io but not recorded: {e}"))),
    }
}

/// When Rev.io shows the line disconnected (`None`: open), audited.
async fn disconnected(
    job: &Job,
    row: &DeviceChangeRow,
    rev: &dyn RevIoApi,
    line: i64,
) -> Result<Option<String>, (RowStatus, String)> {
    match rev.service_disconnected(line).await {
        Ok((date, call)) => {
            job.log(row, "Read Rev.io Service (was it closed?)", &call, None).await;
            Ok(date)
        }
        Err(f) => {
            job.log(row, "Read Rev.io Service (was it closed?)", &f.call, Some(&f.reason())).await;
            Err((
                RowStatus::ApiFailed,
                format!("Rev.io service {line}: whether it is closed could not be read: {}", f.reason()),
            ))
        }
    }
}
