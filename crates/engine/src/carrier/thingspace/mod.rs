//! ThingSpace: the rows of one claim grouped into multi-device requests, rows waiting PROCESSING on
//! the request id until a callback (or, past the deadline, a poll) gives each device's result, applied once.
//!
//! A row waiting on request `R` is leased to `carrier:R` until its deadline. The callback completes it as that
//! lease holder, so a duplicate, late or out-of-order callback finds the row final (or held by a poller) and
//! changes nothing. Past the deadline a worker reclaims the row and polls: the request status, then the device.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::request::{ChangeDetails, ThingSpaceStatusUpdate};
use domain::rules::{DeviceStatusDef, TsAction, resolve_target_status, thingspace_transition};
use domain::{Integration, RowStatus};
use serde_json::Value;
use tracing::{info, warn};

use super::Carriers;
use crate::audit;
use crate::carrier_wait::{self};
use crate::change::{self, customer_assignment};
use crate::common::{api_failed_or_error, device_for_row, fail, writes_disabled};
use crate::job::Carrier;
use crate::job::Job;
use crate::job::{AsyncCarrier, CarrierResult, Disposition, PollAnswer};
use crate::ports::ServiceProvider;
use crate::ports::{
    CallRecord, CallbackRecord, CarrierFailure, DeviceChangeRow, DeviceUpdate, FailureKind, Queue, RowOutcome,
    StoreError, same_secret,
};
use crate::rate::RateLimiters;
use callback::replay_unmatched;
use send::send;

mod callback;
pub(crate) mod intake;
mod port;
mod send;

pub use crate::carrier_wait::carrier_owner;
pub use callback::{Callback, CallbackAnswer, UNMATCHED_KEPT, apply_callback};
pub use port::*;

/// The custom field that holds a device's username on ThingSpace (which has no username of its own).
pub const USERNAME_FIELD: &str = "CustomField1";
/// The custom fields that hold cost centers 1-3 on ThingSpace.
pub const COST_CENTER_FIELDS: [&str; 3] = ["CustomField2", "CustomField3", "CustomField4"];

/// The custom fields an EditUsername sets: the username, and each cost center given.
fn username_fields(req: &domain::request::UsernameUpdate) -> Vec<(String, String)> {
    let mut fields = vec![(USERNAME_FIELD.to_string(), req.new_username.trim().to_string())];
    for (field, value) in COST_CENTER_FIELDS.iter().zip([&req.cost_center, &req.cost_center2, &req.cost_center3]) {
        if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            fields.push((field.to_string(), v.to_string()));
        }
    }
    fields
}

/// The deactivation reason ThingSpace documents (General Admin/Maintenance).
pub const DEFAULT_REASON_CODE: &str = "FF";

/// The ThingSpace status a status update asks for; `None` for other change types or an unknown status.
fn status_target<'a>(details: &ChangeDetails, statuses: &'a [DeviceStatusDef]) -> Option<&'a DeviceStatusDef> {
    match details {
        ChangeDetails::StatusUpdate(req) => {
            resolve_target_status(statuses, Integration::ThingSpace, &req.target_status)
        }
        _ => None,
    }
}

/// Whether the change is an activation (ThingSpace then assigns a number and an address).
fn activates(details: &ChangeDetails, statuses: &[DeviceStatusDef]) -> bool {
    status_target(details, statuses).is_some_and(|t| t.status.eq_ignore_ascii_case("ACTIVE"))
}

/// The outcome of the row of device `iccid` whose carrier result is known: the device update the change type
/// implies (for a status change, also the IMEI the request gave the device).
pub fn result_outcome(
    details: &ChangeDetails,
    statuses: &[DeviceStatusDef],
    iccid: &str,
    result: &CarrierResult,
) -> RowOutcome {
    if !result.success {
        let reason = result.reason.clone().unwrap_or_else(|| "the carrier reported a failure".into());
        return fail(RowStatus::ApiFailed, format!("ThingSpace: {reason}"));
    }
    let mut update = DeviceUpdate::default();
    let details = match details {
        ChangeDetails::StatusUpdate(req) => match status_target(details, statuses) {
            Some(target) => {
                update.device_status_id = Some(target.id);
                update.imei = req.thing_space.as_ref().and_then(|t| t.imei_of(iccid));
                if target.status.eq_ignore_ascii_case("ACTIVE") {
                    // An activation carries the service plan it activated with (a restore carries none).
                    update.carrier_rate_plan = req.thing_space.as_ref().and_then(|t| t.plan_and_zip(iccid).0);
                }
                update.msisdn = result.msisdn.clone();
                update.ip_address = result.ip_address.clone();
                let mut d = format!("Status changed to {}", target.status);
                if let Some(m) = &result.msisdn {
                    d.push_str(&format!("; MSISDN {m}"));
                }
                if let Some(ip) = &result.ip_address {
                    d.push_str(&format!("; IP address {ip}"));
                }
                d
            }
            None => return fail(RowStatus::Error, format!("Unknown target status '{}'", req.target_status)),
        },
        ChangeDetails::CarrierRatePlanChange(req) => {
            update.carrier_rate_plan = Some(req.carrier_rate_plan.trim().to_string());
            format!("Service plan changed to {}", req.carrier_rate_plan.trim())
        }
        ChangeDetails::EditUsername(req) => {
            update.username = Some(req.new_username.trim().to_string());
            let fields = username_fields(req);
            let set: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("Username changed to {} (ThingSpace custom fields {})", req.new_username.trim(), set.join(", "))
        }
        ChangeDetails::ChangeIccidOrImei(req) => {
            update.iccid = req.new_iccid.clone();
            update.imei = req.new_imei.clone();
            let mut d = "Identifier changed".to_string();
            if let Some(i) = &req.new_iccid {
                d.push_str(&format!("; new ICCID {i}"));
            }
            if let Some(i) = &req.new_imei {
                d.push_str(&format!("; new IMEI {i}"));
            }
            d
        }
        ChangeDetails::CustomerAssignment(req) => {
            let plan = req.carrier_rate_plan.as_deref().unwrap_or_default().trim().to_string();
            let details = format!("Service plan changed to {plan}");
            update.carrier_rate_plan = Some(plan);
            details
        }
        ChangeDetails::DeleteDevice => {
            update.archive = true;
            "Deleted from ThingSpace and archived".into()
        }
        other => format!("{} done", other.change_type()),
    };
    RowOutcome { status: RowStatus::Processed, details, device_update: update }
}

/// A failed activation of a device our database still has as INVENTORY: the row was only sent after its add
/// succeeded, so ThingSpace now holds the device as PREACTIVE and the database follows.
fn record_add_of_failed_activation(
    outcome: &mut RowOutcome,
    details: &ChangeDetails,
    statuses: &[DeviceStatusDef],
    current_status_id: Option<i64>,
) {
    let status = |code: &str| statuses.iter().find(|s| s.status.eq_ignore_ascii_case(code)).map(|s| s.id);
    if outcome.status != RowStatus::Processed
        && activates(details, statuses)
        && current_status_id == status("INVENTORY")
    {
        outcome.device_update.device_status_id = status("PREACTIVE");
        outcome.details.push_str(" (the device was added to ThingSpace as pre-active)");
    }
}

/// Whether a row has steps after the carrier's result (Rev.io, the customer assignment): a callback then keeps
/// the result on the row for a worker instead of completing it.
pub fn needs_follow_up(details: &ChangeDetails) -> bool {
    match details {
        ChangeDetails::StatusUpdate(req) => {
            req.account_number.as_deref().is_some_and(|a| !a.trim().is_empty())
                || req.rev_service.as_ref().is_some_and(|r| r.create_rev_service)
        }
        ChangeDetails::CustomerAssignment(_) => true,
        _ => false,
    }
}

/// The row's outcome from the carrier's result, with the steps after the carrier when it succeeded.
async fn finish(job: &Job, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome {
    let mut outcome = result_outcome(&job.details, &job.statuses, &row.iccid, result);
    if outcome.status != RowStatus::Processed {
        let current = match row.device_id {
            Some(id) => job.devices.device(job.bulk.tenant_id, id).await.ok().flatten().map(|d| d.device_status_id),
            None => None,
        };
        record_add_of_failed_activation(&mut outcome, &job.details, &job.statuses, current);
        return outcome;
    }
    if !needs_follow_up(&job.details) {
        return outcome;
    }
    match &job.details {
        ChangeDetails::StatusUpdate(req) => match device_for_row(job, row).await {
            Ok((device, _)) => change::rev_io_steps(job, row, req, &device, outcome).await,
            Err(mut failed) => {
                // The carrier change stands; only the billing steps could not follow.
                failed.device_update = outcome.device_update;
                failed
            }
        },
        ChangeDetails::CustomerAssignment(req) => match customer_assignment::precheck(job, row, req).await {
            Ok((device, customer)) => {
                customer_assignment::assign(job, row, req, &device, &customer, Some(outcome)).await
            }
            Err(mut failed) => {
                failed.details = format!("Service plan changed, customer not assigned: {}", failed.details);
                failed.device_update.carrier_rate_plan = outcome.device_update.carrier_rate_plan;
                failed
            }
        },
        _ => outcome,
    }
}

/// Whether ThingSpace already shows what the row asks for (a reclaimed or retried row whose request may have been sent by
/// a worker that died before recording the request id). `state` is the device as listed (for an identifier
/// change, the device under its new ICCID), `None` when the account does not have it.
fn already_done(details: &ChangeDetails, target: Option<&DeviceStatusDef>, state: Option<&TsDeviceState>) -> bool {
    match (details, state) {
        (ChangeDetails::DeleteDevice, state) => state.is_none(),
        (_, None) => false,
        (ChangeDetails::StatusUpdate(_), Some(s)) => target.is_some_and(|t| s.state.eq_ignore_ascii_case(&t.status)),
        (ChangeDetails::CarrierRatePlanChange(req), Some(s)) => {
            s.service_plan.as_deref() == Some(req.carrier_rate_plan.trim())
        }
        (ChangeDetails::EditUsername(req), Some(s)) => username_fields(req).iter().all(|f| s.custom_fields.contains(f)),
        (ChangeDetails::CustomerAssignment(req), Some(s)) => {
            s.service_plan.as_deref() == req.carrier_rate_plan.as_deref().map(str::trim)
        }
        (ChangeDetails::ChangeIccidOrImei(req), Some(s)) => {
            req.new_iccid.is_some() || req.new_imei.as_deref().is_some_and(|i| s.imei.as_deref() == Some(i))
        }
        _ => false,
    }
}

/// The ICCID under which ThingSpace lists the device once the row's change is done.
fn probe_iccid(details: &ChangeDetails, iccid: &str) -> String {
    match details {
        ChangeDetails::ChangeIccidOrImei(req) => req.new_iccid.clone().unwrap_or_else(|| iccid.to_string()),
        _ => iccid.to_string(),
    }
}

/// ThingSpace as an asynchronous carrier: rows grouped into multi-device requests, results by callback (or, past
/// the deadline, by polling the request status and the device).
pub(crate) struct ThingSpace {
    pub api: Arc<dyn ThingSpaceApi>,
}

#[async_trait::async_trait]
impl AsyncCarrier for ThingSpace {
    fn name(&self) -> &'static str {
        "ThingSpace"
    }

    fn login_refused(&self) -> Option<String> {
        self.api.login_refused()
    }

    async fn send(&self, job: &Job, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)> {
        send(job, self, rows).await
    }

    async fn poll(&self, job: &Job, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer {
        poll(job, self, request_id, rows).await
    }

    async fn finish(&self, job: &Job, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome {
        finish(job, row, result).await
    }

    async fn after_wait(&self, job: &Job, request_id: &str) -> Result<usize, StoreError> {
        replay_unmatched(job.callbacks.as_ref(), job.queue.as_ref(), job.sp.id, request_id, job.clock.now()).await
    }
}

/// Hands rows over to ThingSpace request `request_id` (`carrier_wait::wait_on`).
async fn wait_on(job: &Job, ts: &ThingSpace, request_id: &str, rows: &[&DeviceChangeRow]) {
    carrier_wait::wait_on(job, ts, request_id, rows).await
}

/// Rows whose callback did not come by the deadline: the request's status, then each device.
async fn poll(job: &Job, ts: &ThingSpace, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer {
    let status = match ts.api.request_status(request_id).await {
        Ok((status, call)) => {
            for row in rows {
                job.log(row, "ThingSpace Request Status (no callback by the deadline)", &call, None).await;
            }
            status
        }
        Err(f) => {
            warn!(request_id, reason = %f.reason(), "request status could not be read");
            for row in rows {
                job.log(row, "ThingSpace Request Status (no callback by the deadline)", &f.call, Some(&f.reason()))
                    .await;
            }
            "Pending".to_string()
        }
    };
    if status.eq_ignore_ascii_case("Pending") || status.is_empty() {
        return PollAnswer::Pending;
    }
    let succeeded = status.eq_ignore_ascii_case("Success");
    let activation = activates(&job.details, &job.statuses);
    let target = status_target(&job.details, &job.statuses);
    let mut results = BTreeMap::new();
    for row in rows {
        // A whole-request success needs no device read, but for the number and address an activation assigned.
        let result = if succeeded && !activation {
            CarrierResult { success: true, ..Default::default() }
        } else {
            match ts.api.device(&probe_iccid(&job.details, &row.iccid)).await {
                Ok((state, call)) => {
                    job.log(row, "ThingSpace device list (poll)", &call, None).await;
                    match state {
                        Some(s) if succeeded || already_done(&job.details, target, Some(&s)) => {
                            CarrierResult { success: true, msisdn: s.msisdn, ip_address: s.ip_address, reason: None }
                        }
                        Some(s) => CarrierResult {
                            success: false,
                            reason: Some(format!("request {request_id} failed; the device is {}", s.state)),
                            ..Default::default()
                        },
                        None => CarrierResult {
                            success: false,
                            reason: Some(format!("request {request_id}: the device is not in the account")),
                            ..Default::default()
                        },
                    }
                }
                Err(f) => {
                    job.log(row, "ThingSpace device list (poll)", &f.call, Some(&f.reason())).await;
                    if succeeded {
                        CarrierResult { success: true, ..Default::default() }
                    } else {
                        CarrierResult {
                            success: false,
                            reason: Some(format!("request {request_id} failed")),
                            ..Default::default()
                        }
                    }
                }
            }
        };
        results.insert(row.id, result);
    }
    PollAnswer::Results(results)
}

/// A ThingSpace account's carrier: every change that reaches ThingSpace goes in grouped, asynchronous requests.
pub(crate) fn connect(
    sp: &ServiceProvider,
    carriers: &dyn Carriers,
    limiters: &RateLimiters,
) -> Result<Arc<dyn Carrier>, String> {
    if let Some(reason) = sp.thingspace.as_ref().and_then(|t| t.login_refused.as_ref()) {
        return Err(format!(
            "ThingSpace login is stopped for this account after a refused login ({reason}); fix the credentials and clear LoginRefusedReason"
        ));
    }
    let limiter = limiters.for_provider(sp.id, sp.rate_limit_per_second);
    let activations = limiters.for_provider_limit(sp.id, "activations", THINGSPACE_ACTIVATIONS_PER_SECOND);
    Ok(Arc::new(ThingSpace { api: carriers.thingspace(sp, limiter, activations)? }))
}

/// ThingSpace's documented limit on activation requests: 100 a minute per account.
pub const THINGSPACE_ACTIVATIONS_PER_SECOND: f64 = 100.0 / 60.0;

#[async_trait::async_trait]
impl Carrier for ThingSpace {
    fn batched(&self, details: &ChangeDetails) -> Option<&dyn AsyncCarrier> {
        let reaches_thingspace = match details {
            ChangeDetails::StatusUpdate(_)
            | ChangeDetails::CarrierRatePlanChange(_)
            | ChangeDetails::EditUsername(_)
            | ChangeDetails::ChangeIccidOrImei(_)
            | ChangeDetails::DeleteDevice => true,
            ChangeDetails::CustomerAssignment(req) => req.add_carrier_rate_plan == Some(true),
            _ => false,
        };
        reaches_thingspace.then_some(self as &dyn AsyncCarrier)
    }

    async fn process_row(&self, _job: &Job, _row: &DeviceChangeRow, _details: &ChangeDetails) -> Option<RowOutcome> {
        None
    }
}
