//! ThingSpace: the rows of one claim grouped into multi-device requests, rows waiting PROCESSING on
//! the request id until a callback (or, past the deadline, a poll) gives each device's result, applied once.
//!
//! A row waiting on request `R` is leased to `carrier:R` until its deadline. The callback completes it as that
//! lease holder, so a duplicate, late or out-of-order callback finds the row final (or held by a poller) and
//! changes nothing. Past the deadline a worker reclaims the row and polls: the request status, then the device.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::request::{ChangeDetails, ThingSpaceStatusUpdate};
use domain::rules::{DeviceStatusDef, TsAction, resolve_target_status, thingspace_transition};
use domain::{Integration, RowStatus};
use serde_json::Value;
use tracing::{info, warn};

use crate::audit;
use crate::carrier_wait::{self};
use crate::common::{api_failed_or_error, device_for_row, fail, writes_disabled};
use crate::job::Job;
use crate::job::{AsyncCarrier, CarrierResult, Disposition, PollAnswer};

pub use crate::carrier_wait::carrier_owner;
use crate::change::{self, customer_assignment};
use crate::ports::{
    CallRecord, CallbackRecord, CarrierFailure, DeviceChangeRow, DeviceUpdate, FailureKind, Queue, RowOutcome, Store,
    StoreError, same_secret,
};

pub(crate) mod intake;
mod port;
pub use port::*;
use std::sync::Arc;

use super::Carriers;
use crate::job::Carrier;
use crate::ports::ServiceProvider;
use crate::rate::RateLimiters;

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
            Some(id) => job.store.device(job.bulk.tenant_id, id).await.ok().flatten().map(|d| d.device_status_id),
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
        replay_unmatched(job.store.as_ref(), job.queue.as_ref(), job.sp.id, request_id, job.clock.now()).await
    }
}

/// Hands rows over to ThingSpace request `request_id` (`carrier_wait::wait_on`).
async fn wait_on(job: &Job, ts: &ThingSpace, request_id: &str, rows: &[&DeviceChangeRow]) {
    carrier_wait::wait_on(job, ts, request_id, rows).await
}

struct Ready {
    row: DeviceChangeRow,
    device: TsDeviceRef,
    action: Option<TsAction>,
    /// The device's status in our database when the row was claimed.
    status_id: i64,
}

async fn send(job: &Job, ts: &ThingSpace, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)> {
    let mut out = Vec::new();
    let target = status_target(&job.details, &job.statuses).cloned();
    if let (ChangeDetails::StatusUpdate(req), None) = (&job.details, &target) {
        let reason = format!("Unknown target status '{}' for ThingSpace", req.target_status);
        return rows.into_iter().map(|r| (r, Disposition::Done(fail(RowStatus::Error, &reason)))).collect();
    }
    let ts_options = match &job.details {
        ChangeDetails::StatusUpdate(req) => req.thing_space.as_deref().cloned().unwrap_or_default(),
        _ => ThingSpaceStatusUpdate::default(),
    };
    let mut ready = Vec::new();
    for row in rows {
        let device = match device_for_row(job, &row).await {
            Ok((device, _)) => device,
            Err(outcome) => {
                out.push((row, Disposition::Done(outcome)));
                continue;
            }
        };
        let mut action = None;
        if let Some(target) = &target {
            let current = job.statuses.iter().find(|s| s.id == device.device_status_id);
            match thingspace_transition(current.map_or("INVENTORY", |c| c.status.as_str()), &target.status) {
                // Our database says the device is there already; only ThingSpace's word lets us skip it.
                Ok(None) => match carrier_transition(job, ts, &row, &device.iccid, target).await {
                    Ok(Some(a)) => action = Some(a),
                    Ok(None) => {
                        let details =
                            format!("Device already in status {} on the carrier; no change sent", target.status);
                        out.push((
                            row,
                            Disposition::Done(RowOutcome {
                                status: RowStatus::Processed,
                                details,
                                device_update: DeviceUpdate::default(),
                            }),
                        ));
                        continue;
                    }
                    Err(outcome) => {
                        out.push((row, Disposition::Done(outcome)));
                        continue;
                    }
                },
                Ok(Some(a)) => action = Some(a),
                Err(why) => {
                    out.push((
                        row,
                        Disposition::Done(fail(RowStatus::Error, format!("Status change not allowed: {why}"))),
                    ));
                    continue;
                }
            }
        }
        if !job.sp.write_is_enabled {
            out.push((row, Disposition::Done(writes_disabled())));
            continue;
        }
        if let ChangeDetails::CustomerAssignment(req) = &job.details {
            if let Err(outcome) = customer_assignment::precheck(job, &row, req).await {
                out.push((row, Disposition::Done(outcome)));
                continue;
            }
        }
        let imei = ts_options.imei_of(&device.iccid).or(device.imei.clone());
        let reference = TsDeviceRef { iccid: device.iccid.clone(), imei };
        if job.may_have_been_sent(&row) {
            // A worker may have sent this row's request and died before recording it: look before sending again
            // (an identifier change is looked up by its new ICCID, which exists only once the swap is done).
            match ts.api.device(&probe_iccid(&job.details, &device.iccid)).await {
                Ok((state, call)) => {
                    job.log(&row, "ThingSpace device list (an earlier attempt may have sent it)", &call, None).await;
                    if already_done(&job.details, target.as_ref(), state.as_ref()) {
                        let state = state.unwrap_or_default();
                        let result = CarrierResult {
                            success: true,
                            msisdn: state.msisdn,
                            ip_address: state.ip_address,
                            reason: None,
                        };
                        let mut outcome = finish(job, &row, &result).await;
                        outcome.details.push_str(" (found done on the carrier: an earlier attempt had sent it)");
                        out.push((row, Disposition::Done(outcome)));
                        continue;
                    }
                }
                Err(f) => {
                    job.log(
                        &row,
                        "ThingSpace device list (an earlier attempt may have sent it)",
                        &f.call,
                        Some(&f.reason()),
                    )
                    .await;
                    let reason = format!("Could not read the device from ThingSpace: {}", f.reason());
                    out.push((row, Disposition::Done(fail(api_failed_or_error(&f), reason))));
                    continue;
                }
            }
        }
        ready.push(Ready { row, device: reference, action, status_id: device.device_status_id });
    }
    if ready.is_empty() {
        return out;
    }
    match &job.details {
        ChangeDetails::StatusUpdate(_) => out.extend(send_status(job, ts, &ts_options, ready).await),
        ChangeDetails::CarrierRatePlanChange(req) => {
            let request = TsRequest::ChangePlan { service_plan: req.carrier_rate_plan.trim().to_string() };
            out.extend(submit(job, ts, &request, ready, "ThingSpace Change Service Plan").await);
        }
        ChangeDetails::CustomerAssignment(req) => {
            // AddCarrierRatePlan: the service plan first; the assignment follows the carrier's result.
            let plan = req.carrier_rate_plan.as_deref().unwrap_or_default().trim().to_string();
            let request = TsRequest::ChangePlan { service_plan: plan };
            out.extend(submit(job, ts, &request, ready, "ThingSpace Change Service Plan (customer assignment)").await);
        }
        ChangeDetails::EditUsername(req) => {
            let request = TsRequest::CustomFields { fields: username_fields(req) };
            out.extend(submit(job, ts, &request, ready, "ThingSpace Update Custom Fields (username)").await);
        }
        ChangeDetails::ChangeIccidOrImei(req) => {
            for r in ready {
                let answer =
                    ts.api.change_identifier(&r.device, req.new_iccid.as_deref(), req.new_imei.as_deref()).await;
                if let Ok((request_id, _)) = &answer {
                    wait_on(job, ts, request_id, &[&r.row]).await;
                }
                out.push(accepted_or_failed(job, r.row, answer, "ThingSpace Change Device Identifier").await);
            }
        }
        ChangeDetails::DeleteDevice => out.extend(delete(job, ts, ready).await),
        other => {
            let reason = format!("{} for ThingSpace is not supported", other.change_type());
            out.extend(ready.into_iter().map(|r| (r.row, Disposition::Done(fail(RowStatus::Error, &reason)))));
        }
    }
    out
}

/// A row whose request got no usable answer: done when ThingSpace already shows the change, else failed with a
/// reason that says the request may still be applied (a retry reads the device before sending anything).
async fn settle_ambiguous(
    job: &Job,
    ts: &ThingSpace,
    row: &DeviceChangeRow,
    iccid: &str,
    lost: &CarrierFailure,
) -> RowOutcome {
    let target = status_target(&job.details, &job.statuses);
    let description = "ThingSpace device list (the request's answer was lost)";
    match ts.api.device(&probe_iccid(&job.details, iccid)).await {
        Ok((state, call)) => {
            job.log(row, description, &call, None).await;
            if already_done(&job.details, target, state.as_ref()) {
                let state = state.unwrap_or_default();
                let result =
                    CarrierResult { success: true, msisdn: state.msisdn, ip_address: state.ip_address, reason: None };
                let mut outcome = finish(job, row, &result).await;
                outcome.details.push_str(" (confirmed on the carrier after its answer was lost)");
                return outcome;
            }
            fail(
                RowStatus::ApiFailed,
                format!(
                    "{}; ThingSpace does not show the change yet but may still apply it: check the device before a retry",
                    lost.reason()
                ),
            )
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            fail(
                RowStatus::ApiFailed,
                format!(
                    "{}; the device could not be read to see whether it was applied: {}",
                    lost.reason(),
                    f.reason()
                ),
            )
        }
    }
}

/// The action that takes a device to `target` from the state ThingSpace lists it in (our database thought it was
/// there already): `None` when ThingSpace agrees, so nothing is sent.
async fn carrier_transition(
    job: &Job,
    ts: &ThingSpace,
    row: &DeviceChangeRow,
    iccid: &str,
    target: &DeviceStatusDef,
) -> Result<Option<TsAction>, RowOutcome> {
    let description = "ThingSpace device list (is the device already in the target status?)";
    let state = match ts.api.device(iccid).await {
        Ok((state, call)) => {
            job.log(row, description, &call, None).await;
            state
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            let reason =
                format!("Could not read the device from ThingSpace to confirm it needs no change: {}", f.reason());
            return Err(fail(api_failed_or_error(&f), reason));
        }
    };
    let listed = state.map_or_else(|| "INVENTORY".to_string(), |s| s.state.to_ascii_uppercase());
    match thingspace_transition(&listed, &target.status) {
        Ok(None) => Ok(None),
        Ok(Some(action)) => {
            warn!(iccid, listed = %listed, "the database says the device is in the target status but ThingSpace does not; sending the change");
            Ok(Some(action))
        }
        Err(why) => Err(fail(
            RowStatus::Error,
            format!("Status change not allowed: {why} (ThingSpace lists the device as {listed})"),
        )),
    }
}

/// Logs the answer to a request and tells the row to wait for it, or fails the row with the carrier's reason.
async fn accepted_or_failed(
    job: &Job,
    row: DeviceChangeRow,
    answer: Result<(String, CallRecord), CarrierFailure>,
    description: &str,
) -> (DeviceChangeRow, Disposition) {
    match answer {
        Ok((request_id, call)) => {
            job.log(&row, description, &call, None).await;
            (row, Disposition::Await(request_id))
        }
        Err(f) => {
            job.log(&row, description, &f.call, Some(&f.reason())).await;
            let status = api_failed_or_error(&f);
            (row, Disposition::Done(fail(status, f.reason())))
        }
    }
}

/// One request for every device of `ready`; each row waits for it or fails with the carrier's answer.
async fn submit(
    job: &Job,
    ts: &ThingSpace,
    request: &TsRequest,
    ready: Vec<Ready>,
    description: &str,
) -> Vec<(DeviceChangeRow, Disposition)> {
    let devices: Vec<TsDeviceRef> = ready.iter().map(|r| r.device.clone()).collect();
    let answer = ts.api.submit(request, &devices).await;
    if let Ok((request_id, _)) = &answer {
        let rows: Vec<&DeviceChangeRow> = ready.iter().map(|r| &r.row).collect();
        wait_on(job, ts, request_id, &rows).await;
    }
    info!(
        bulk_change_id = job.bulk.id,
        devices = devices.len(),
        accepted = answer.is_ok(),
        "{description}: one request for {} devices",
        devices.len()
    );
    let mut out = Vec::with_capacity(ready.len());
    if let Some(f) = answer.as_ref().err().filter(|f| f.kind == FailureKind::Ambiguous) {
        // No answer, or a 5xx: ThingSpace may have taken the request. Never send it again blind; read each device.
        for r in ready {
            job.log(&r.row, description, &f.call, Some(&f.reason())).await;
            let outcome = settle_ambiguous(job, ts, &r.row, &r.device.iccid, f).await;
            out.push((r.row, Disposition::Done(outcome)));
        }
        return out;
    }
    for r in ready {
        let answer = answer.as_ref().map(|(id, call)| (id.clone(), call.clone())).map_err(Clone::clone);
        let (row, mut disposition) = accepted_or_failed(job, r.row, answer, description).await;
        if let Disposition::Done(outcome) = &mut disposition {
            record_add_of_failed_activation(outcome, &job.details, &job.statuses, Some(r.status_id));
        }
        out.push((row, disposition));
    }
    out
}

/// Status updates: devices that share an action, plan and ZIP go in one request; INVENTORY devices are added
/// (synchronously) first.
async fn send_status(
    job: &Job,
    ts: &ThingSpace,
    options: &ThingSpaceStatusUpdate,
    ready: Vec<Ready>,
) -> Vec<(DeviceChangeRow, Disposition)> {
    let mut out = Vec::new();
    let (to_add, rest): (Vec<_>, Vec<_>) =
        ready.into_iter().partition(|r| matches!(r.action, Some(TsAction::Add | TsAction::AddThenActivate)));
    let mut next = rest;
    if !to_add.is_empty() {
        let devices: Vec<TsDeviceRef> = to_add.iter().map(|r| r.device.clone()).collect();
        match ts.api.add(&devices).await {
            Ok((results, call)) => {
                for mut r in to_add {
                    job.log(&r.row, "ThingSpace Add Device to Inventory", &call, None).await;
                    match results.iter().find(|x| x.iccid == r.device.iccid) {
                        Some(x) if x.error.is_none() => {
                            if r.action == Some(TsAction::AddThenActivate) {
                                r.action = Some(TsAction::Activate);
                                next.push(r);
                            } else {
                                let result = CarrierResult { success: true, ..Default::default() };
                                let outcome = finish(job, &r.row, &result).await;
                                out.push((r.row, Disposition::Done(outcome)));
                            }
                        }
                        Some(x) => {
                            let reason =
                                format!("ThingSpace did not add the device: {}", x.error.clone().unwrap_or_default());
                            out.push((r.row, Disposition::Done(fail(RowStatus::ApiFailed, reason))));
                        }
                        None => out.push((
                            r.row,
                            Disposition::Done(fail(
                                RowStatus::ApiFailed,
                                "ThingSpace's answer has no result for this device",
                            )),
                        )),
                    }
                }
            }
            Err(f) => {
                for r in to_add {
                    job.log(&r.row, "ThingSpace Add Device to Inventory", &f.call, Some(&f.reason())).await;
                    out.push((r.row, Disposition::Done(fail(api_failed_or_error(&f), f.reason()))));
                }
            }
        }
    }
    let mut groups: BTreeMap<(TsAction, Option<String>, Option<String>), Vec<Ready>> = BTreeMap::new();
    for r in next {
        let action = r.action.unwrap_or(TsAction::Activate);
        let (plan, zip) = if action.activates() { options.plan_and_zip(&r.device.iccid) } else { (None, None) };
        groups.entry((action, plan, zip)).or_default().push(r);
    }
    for ((action, plan, zip), group) in groups {
        let request = match action {
            TsAction::Activate | TsAction::AddThenActivate => match (plan, zip) {
                (Some(service_plan), Some(mdn_zip_code)) => TsRequest::Activate {
                    service_plan,
                    mdn_zip_code,
                    place_of_use: options.primary_place_of_use.clone(),
                },
                _ => {
                    for r in group {
                        let reason = format!("ServicePlan and MdnZipCode are required to activate {}", r.device.iccid);
                        out.push((r.row, Disposition::Done(fail(RowStatus::Error, reason))));
                    }
                    continue;
                }
            },
            TsAction::Suspend => TsRequest::Suspend,
            TsAction::Restore => TsRequest::Restore,
            TsAction::Deactivate => TsRequest::Deactivate {
                reason_code: options.reason_code.clone().unwrap_or_else(|| DEFAULT_REASON_CODE.into()),
                etf_waiver: options.etf_waiver,
            },
            TsAction::Add => continue,
        };
        let description = format!("ThingSpace {} Devices", action.path());
        out.extend(submit(job, ts, &request, group, &description).await);
    }
    out
}

/// Delete (synchronous, at most 100 a call): each device's own result; a deleted device is archived here.
async fn delete(job: &Job, ts: &ThingSpace, ready: Vec<Ready>) -> Vec<(DeviceChangeRow, Disposition)> {
    let devices: Vec<TsDeviceRef> = ready.iter().map(|r| r.device.clone()).collect();
    match ts.api.delete(&devices).await {
        Ok((results, calls)) => {
            let call = CallRecord {
                request_text: format!("{} delete request(s) of at most 100 devices", calls.len()),
                response_text: calls.iter().map(|c| c.response_text.as_str()).collect::<Vec<_>>().join("\n"),
                http_status: calls.last().and_then(|c| c.http_status),
            };
            let mut out = Vec::new();
            for r in ready {
                let outcome = match results.iter().find(|x| x.iccid == r.device.iccid) {
                    Some(x) if x.error.is_none() => {
                        let deleted = CarrierResult { success: true, ..Default::default() };
                        result_outcome(&job.details, &job.statuses, &r.device.iccid, &deleted)
                    }
                    Some(x) => fail(
                        RowStatus::ApiFailed,
                        format!("ThingSpace did not delete the device: {}", x.error.clone().unwrap_or_default()),
                    ),
                    None => fail(RowStatus::ApiFailed, "ThingSpace's answer has no result for this device"),
                };
                job.log(
                    &r.row,
                    "ThingSpace Delete Devices",
                    &call,
                    (outcome.status != RowStatus::Processed).then_some(outcome.details.as_str()),
                )
                .await;
                out.push((r.row, Disposition::Done(outcome)));
            }
            out
        }
        Err(f) => {
            let mut out = Vec::new();
            for r in ready {
                job.log(&r.row, "ThingSpace Delete Devices", &f.call, Some(&f.reason())).await;
                out.push((r.row, Disposition::Done(fail(api_failed_or_error(&f), f.reason()))));
            }
            out
        }
    }
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

/// What the callback endpoint answers.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackAnswer {
    /// No ThingSpace account registered these callback credentials.
    Unauthorized,
    /// The body is not a ThingSpace callback (no request id or device).
    Malformed(String),
    /// No row of the authenticated accounts waits on this request and device.
    Unknown,
    /// The result was recorded on the row.
    Applied { bulk_change_id: i64, row_id: i64 },
    /// The row was already final, or a poller holds it: nothing changed.
    Ignored(String),
}

/// The fields of a `CarrierService` callback.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Callback {
    pub request_id: String,
    pub iccid: Option<String>,
    pub username: String,
    pub password: String,
    pub result: CarrierResult,
    pub status: String,
    /// The body without its credentials, for the log.
    pub redacted: String,
}

impl Callback {
    pub fn parse(body: &Value) -> Result<Self, String> {
        let request_id = body["requestId"].as_str().filter(|s| !s.is_empty()).ok_or("requestId is missing")?;
        let ids = |v: &Value, kind: &str| {
            v.as_array()
                .and_then(|ids| ids.iter().find(|i| i["kind"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(kind))))
                .and_then(|i| i["id"].as_str())
                .map(str::to_string)
        };
        let activate = &body["deviceResponse"]["activateResponse"];
        let status = body["status"].as_str().unwrap_or_default().to_string();
        let fault = body["faultResponse"]["faultstring"].as_str().map(str::to_string);
        let success = fault.is_none() && (status.is_empty() || status.eq_ignore_ascii_case("success"));
        let mut redacted = body.clone();
        if let Some(map) = redacted.as_object_mut() {
            map.remove("password");
        }
        Ok(Self {
            request_id: request_id.to_string(),
            iccid: ids(&body["deviceIds"], "iccid"),
            username: body["username"].as_str().unwrap_or_default().to_string(),
            password: body["password"].as_str().unwrap_or_default().to_string(),
            result: CarrierResult {
                success,
                reason: fault.or_else(|| (!success).then(|| format!("status {status}"))),
                msisdn: ids(&activate["deviceIds"], "msisdn").or_else(|| ids(&activate["deviceIds"], "mdn")),
                ip_address: activate["ipAddress"].as_str().map(str::to_string),
            },
            status,
            redacted: audit::redact(&redacted.to_string()),
        })
    }
}

/// Applies one `CarrierService` callback: authenticated by the credentials registered for the account, matched
/// by request id and device within that account's tenant, applied once. When the bulk change thereby finishes,
/// it is queued so a worker sends its summary.
pub async fn apply_callback(
    store: &dyn Store,
    queue: &dyn Queue,
    callback: &Callback,
    now: DateTime<Utc>,
) -> Result<CallbackAnswer, StoreError> {
    let accounts: Vec<_> = store
        .thingspace_providers()
        .await?
        .into_iter()
        .filter(|sp| {
            sp.thingspace.as_ref().is_some_and(|t| {
                same_secret(&t.callback_username, &callback.username)
                    & same_secret(t.callback_password.expose(), &callback.password)
            })
        })
        .collect();
    let mut record = CallbackRecord {
        request_id: callback.request_id.clone(),
        iccid: callback.iccid.clone(),
        tenant_id: None,
        service_provider_id: None,
        api_status: if callback.status.is_empty() { "(none)".into() } else { callback.status.clone() },
        api_response: callback.redacted.clone(),
        outcome: String::new(),
        received_at: now,
    };
    if accounts.is_empty() {
        // Nothing of an unauthenticated body is stored (the route has no authorizer: anyone can post to it).
        warn!(request_id = ?domain::rules::bounded_text(&callback.request_id, 100),
              "ThingSpace callback with credentials no account registered; refused, nothing stored");
        return Ok(CallbackAnswer::Unauthorized);
    }
    let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
    let answer = answer_callback(store, queue, callback, &ids, &mut record, now).await?;
    if answer != CallbackAnswer::Unknown {
        record.outcome = outcome_text(&answer);
        store.record_callback(&record).await?;
        return Ok(answer);
    }
    // A fast callback can beat the worker's recording of the request id on its rows: keep it for that worker,
    // which applies it once the rows wait (`replay_unmatched`), and look once more in case they already do.
    record.service_provider_id = Some(ids[0]);
    record.outcome = UNMATCHED.into();
    store.record_callback(&record).await?;
    let mut again = record.clone();
    let answer = answer_callback(store, queue, callback, &ids, &mut again, now).await?;
    if answer != CallbackAnswer::Unknown {
        again.outcome = outcome_text(&answer);
        store.record_callback(&again).await?;
    } else {
        info!(request_id = %callback.request_id, iccid = ?callback.iccid, "ThingSpace callback for no waiting row of this account (yet); kept for its worker");
    }
    Ok(answer)
}

/// How long a callback that found no waiting row is kept for its request to be recorded (the schedulers purge
/// older ones: `CarrierWaits::purge_unmatched_callbacks`).
pub const UNMATCHED_KEPT: chrono::Duration = chrono::Duration::hours(1);

/// How a callback that found no waiting row is logged; `CarrierWaits::unmatched_callbacks` looks for it.
const UNMATCHED: &str = "unmatched: no row of this account waits on this request (yet)";

fn outcome_text(answer: &CallbackAnswer) -> String {
    match answer {
        CallbackAnswer::Unauthorized => "refused: callback credentials not registered".into(),
        CallbackAnswer::Malformed(why) => format!("refused: {why}"),
        CallbackAnswer::Unknown => UNMATCHED.into(),
        CallbackAnswer::Applied { .. } => "applied".into(),
        CallbackAnswer::Ignored(why) => format!("ignored: {why}"),
    }
}

/// Applies the callbacks of `request_id` that this account received before its rows waited on the request.
/// Returns how many were applied.
pub async fn replay_unmatched(
    store: &dyn Store,
    queue: &dyn Queue,
    service_provider_id: i64,
    request_id: &str,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut applied = 0;
    for early in store.unmatched_callbacks(service_provider_id, request_id).await? {
        let Ok(callback) = serde_json::from_str::<Value>(&early.api_response)
            .map_err(|e| e.to_string())
            .and_then(|v| Callback::parse(&v))
        else {
            continue;
        };
        let mut record = CallbackRecord { received_at: now, ..early.clone() };
        let answer = answer_callback(store, queue, &callback, &[service_provider_id], &mut record, now).await?;
        if let CallbackAnswer::Applied { .. } = answer {
            applied += 1;
            record.outcome = "applied (it came before the request id was recorded)".into();
            store.record_callback(&record).await?;
        }
    }
    Ok(applied)
}

/// Matches an authenticated callback to its row within `account_ids` and applies it once.
async fn answer_callback(
    store: &dyn Store,
    queue: &dyn Queue,
    callback: &Callback,
    account_ids: &[i64],
    record: &mut CallbackRecord,
    now: DateTime<Utc>,
) -> Result<CallbackAnswer, StoreError> {
    let Some(iccid) = callback.iccid.as_deref() else {
        return Ok(CallbackAnswer::Malformed("deviceIds has no ICCID".into()));
    };
    let rows = store.carrier_request_rows(account_ids, &callback.request_id, Some(iccid)).await?;
    let Some(row) = rows.into_iter().find(|r| r.iccid == iccid) else {
        return Ok(CallbackAnswer::Unknown);
    };
    let Some(bulk) = store.bulk_change(None, row.bulk_change_id).await? else {
        return Ok(CallbackAnswer::Unknown);
    };
    record.tenant_id = Some(bulk.tenant_id);
    record.service_provider_id = Some(bulk.service_provider_id);
    if row.status != RowStatus::Processing {
        return Ok(CallbackAnswer::Ignored(format!("row already {}", row.status)));
    }
    let statuses = store.device_statuses(Integration::ThingSpace).await?;
    let wire = domain::BulkChangeRequestWire { devices: vec![String::new()], ..bulk.request.clone() };
    let details = domain::BulkChangeRequest::from_wire(wire)
        .map(|r| r.details)
        .map_err(|e| StoreError::Corrupt(format!("bulk change {}: stored request unreadable: {e}", bulk.id)))?;
    let mut outcome = result_outcome(&details, &statuses, &row.iccid, &callback.result);
    if outcome.status != RowStatus::Processed {
        let current = match row.device_id {
            Some(id) => store.device(bulk.tenant_id, id).await?.map(|d| d.device_status_id),
            None => None,
        };
        record_add_of_failed_activation(&mut outcome, &details, &statuses, current);
    }
    let follow_up = needs_follow_up(&details) && outcome.status == RowStatus::Processed;
    let call = CallRecord {
        request_text: format!("CALLBACK CarrierService {}", callback.request_id),
        response_text: callback.redacted.clone(),
        http_status: None,
    };
    // Rev.io steps remain after a success: the result waits on the row for a worker.
    let kept = follow_up.then_some(&callback.result);
    let description = "ThingSpace Callback (CarrierService)";
    let recorded = carrier_wait::apply_result(
        store,
        queue,
        &bulk,
        &row,
        &callback.request_id,
        &outcome,
        kept,
        description,
        &call,
        now,
    )
    .await?;
    if !recorded {
        return Ok(CallbackAnswer::Ignored("row already final or held by a poller".into()));
    }
    info!(bulk_change_id = bulk.id, iccid, status = %outcome.status, follow_up, "ThingSpace callback applied");
    Ok(CallbackAnswer::Applied { bulk_change_id: bulk.id, row_id: row.id })
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
