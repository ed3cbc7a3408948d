//! Sending a claim: rows grouped into multi-device requests (status changes by action, plan and ZIP; INVENTORY
//! devices added first), deletes answered per device, and rows whose request got no usable answer settled
//! against what ThingSpace shows.

use futures::StreamExt;

use super::*;

pub(super) struct Ready {
    row: DeviceChangeRow,
    device: TsDeviceRef,
    action: Option<TsAction>,
    /// The device's status in our database when the row was claimed.
    status_id: i64,
}

pub(super) async fn send(
    job: &Job,
    ts: &ThingSpace,
    rows: Vec<DeviceChangeRow>,
) -> Vec<(DeviceChangeRow, Disposition)> {
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
    // Each row is looked at on its own (its device, ThingSpace's word where our database cannot decide, what an
    // earlier attempt may have sent), several at once: a reclaimed claim reads and logs its rows in one round, not
    // one after the other (on a busy database an audit write takes seconds, and a claim must finish well within a
    // worker's life and its lease).
    let prepared: Vec<_> = futures::stream::iter(rows)
        .map(|row| prepare(job, ts, row, target.as_ref(), &ts_options))
        .buffered(PREPARE_AT_ONCE)
        .collect()
        .await;
    let mut ready = Vec::new();
    for p in prepared {
        match p {
            Ok(r) => ready.push(r),
            Err(done) => out.push(done),
        }
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
            let description = "ThingSpace Change Device Identifier";
            for r in ready {
                let answer =
                    ts.api.change_identifier(&r.device, req.new_iccid.as_deref(), req.new_imei.as_deref()).await;
                match &answer {
                    Ok((request_id, _)) => wait_on(job, ts, request_id, &[&r.row]).await,
                    Err(f) if f.kind == FailureKind::Ambiguous => {
                        // ThingSpace may have taken it: read the device (under its new ICCID) rather than say failed.
                        let outcome = logged_and_settled(job, ts, &r, f, description).await;
                        out.push((r.row, Disposition::Done(outcome)));
                        continue;
                    }
                    Err(_) => {}
                }
                out.push(accepted_or_failed(job, r.row, answer, description).await);
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

/// Rows of a claim looked at at once (their reads and audit writes; the carrier client keeps the account's pace).
const PREPARE_AT_ONCE: usize = 16;

/// A row ready to go into a request, or what became of it: not sendable, already so on the carrier, or found done
/// by an earlier attempt.
async fn prepare(
    job: &Job,
    ts: &ThingSpace,
    row: DeviceChangeRow,
    target: Option<&DeviceStatusDef>,
    ts_options: &ThingSpaceStatusUpdate,
) -> Result<Ready, (DeviceChangeRow, Disposition)> {
    let device = match device_for_row(job, &row).await {
        Ok((device, _)) => device,
        Err(outcome) => return Err((row, Disposition::Done(outcome))),
    };
    let mut action = None;
    if let Some(target) = target {
        let current = job.statuses.iter().find(|s| s.id == device.device_status_id);
        match thingspace_transition(current.map_or("INVENTORY", |c| c.status.as_str()), &target.status) {
            // Our database says the device is there already; only ThingSpace's word lets us skip it.
            Ok(None) => match carrier_transition(job, ts, &row, &device.iccid, target).await {
                Ok(Some(a)) => action = Some(a),
                Ok(None) => {
                    let details = format!("Device already in status {} on the carrier; no change sent", target.status);
                    let outcome =
                        RowOutcome { status: RowStatus::Processed, details, device_update: DeviceUpdate::default() };
                    return Err((row, Disposition::Done(outcome)));
                }
                Err(outcome) => return Err((row, Disposition::Done(outcome))),
            },
            Ok(Some(a)) => action = Some(a),
            Err(why) => {
                let outcome = fail(RowStatus::Error, format!("Status change not allowed: {why}"));
                return Err((row, Disposition::Done(outcome)));
            }
        }
    }
    if !job.sp.write_is_enabled {
        return Err((row, Disposition::Done(writes_disabled())));
    }
    if let ChangeDetails::CustomerAssignment(req) = &job.details {
        if let Err(outcome) = customer_assignment::precheck(job, &row, req).await {
            return Err((row, Disposition::Done(outcome)));
        }
    }
    let imei = ts_options.imei_of(&device.iccid).or(device.imei.clone());
    let reference = TsDeviceRef { iccid: device.iccid.clone(), imei };
    if job.may_have_been_sent(&row) {
        // A worker may have sent this row's request and died before recording it: look before sending again
        // (an identifier change is looked up by its new ICCID, which exists only once the swap is done).
        let description = "ThingSpace device list (an earlier attempt may have sent it)";
        match ts.api.device(&probe_iccid(&job.details, &device.iccid)).await {
            Ok((state, call)) => {
                job.log(&row, description, &call, None).await;
                if already_done(&job.details, target, state.as_ref()) {
                    let state = state.unwrap_or_default();
                    let result = CarrierResult {
                        success: true,
                        msisdn: state.msisdn,
                        ip_address: state.ip_address,
                        reason: None,
                    };
                    let mut outcome = finish(job, &row, &result).await;
                    outcome.details.push_str(" (found done on the carrier: an earlier attempt had sent it)");
                    return Err((row, Disposition::Done(outcome)));
                }
            }
            Err(f) => {
                job.log(&row, description, &f.call, Some(&f.reason())).await;
                let reason = format!("Could not read the device from ThingSpace: {}", f.reason());
                return Err((row, Disposition::Done(fail(api_failed_or_error(&f), reason))));
            }
        }
    }
    Ok(Ready { row, device: reference, action, status_id: device.device_status_id })
}

/// Whether ThingSpace lists a device whose add to inventory got no usable answer (`lost`); else the row's
/// outcome, which says what the read found.
async fn added_after_a_lost_answer(
    job: &Job,
    ts: &ThingSpace,
    r: &Ready,
    lost: &CarrierFailure,
) -> Result<(), RowOutcome> {
    let description = "ThingSpace device list (the add's answer was lost)";
    match ts.api.device(&r.device.iccid).await {
        Ok((Some(_), call)) => {
            job.log(&r.row, description, &call, None).await;
            Ok(())
        }
        Ok((None, call)) => {
            job.log(&r.row, description, &call, None).await;
            let reason = format!(
                "{}; ThingSpace does not list the device yet but may still add it: check the device before a retry",
                lost.reason()
            );
            Err(fail(RowStatus::ApiFailed, reason))
        }
        Err(read) => {
            job.log(&r.row, description, &read.call, Some(&read.reason())).await;
            let reason = format!(
                "{}; the device could not be read to see whether ThingSpace added it ({}): check it before a retry",
                lost.reason(),
                read.reason()
            );
            Err(fail(RowStatus::ApiFailed, reason))
        }
    }
}

/// Logs a request whose answer was lost (`f`, ambiguous) for the row and settles the row by reading its device.
async fn logged_and_settled(
    job: &Job,
    ts: &ThingSpace,
    r: &Ready,
    f: &CarrierFailure,
    description: &str,
) -> RowOutcome {
    job.log(&r.row, description, &f.call, Some(&f.reason())).await;
    settle_ambiguous(job, ts, &r.row, &r.device.iccid, f).await
}

/// A row whose request got no usable answer: done when ThingSpace already shows the change, else failed with a
/// reason that says the request may still be applied (a retry reads the device before sending anything).
pub(super) async fn settle_ambiguous(
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
pub(super) async fn carrier_transition(
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
    let Some(state) = state else {
        // Our database has the device in a state only a listed device has: ThingSpace not listing it means its ICCID
        // was changed (a swap whose answer was lost) or it was deleted, not that it is new. Adding it back would make
        // a second device of the old SIM.
        let reason = format!(
            "ThingSpace does not list the device although our database has it as {}: its ICCID may have been \
             changed or it was deleted; nothing sent (check the device on ThingSpace)",
            target.status
        );
        return Err(fail(RowStatus::Error, reason));
    };
    let listed = state.state.to_ascii_uppercase();
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
pub(super) async fn accepted_or_failed(
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
pub(super) async fn submit(
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
        // No answer, or a 5xx: ThingSpace may have taken the request. Never send it again blind; read each device
        // (several at once, as when preparing them).
        return futures::stream::iter(ready)
            .map(|r| async move {
                let outcome = logged_and_settled(job, ts, &r, f, description).await;
                (r.row, Disposition::Done(outcome))
            })
            .buffered(PREPARE_AT_ONCE)
            .collect()
            .await;
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
pub(super) async fn send_status(
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
                for mut r in to_add {
                    job.log(&r.row, "ThingSpace Add Device to Inventory", &f.call, Some(&f.reason())).await;
                    if f.kind != FailureKind::Ambiguous {
                        out.push((r.row, Disposition::Done(fail(api_failed_or_error(&f), f.reason()))));
                        continue;
                    }
                    // The answer was lost (ThingSpace may have added it): read the device rather than say failed.
                    match added_after_a_lost_answer(job, ts, &r, &f).await {
                        Ok(()) if r.action == Some(TsAction::AddThenActivate) => {
                            r.action = Some(TsAction::Activate);
                            next.push(r);
                        }
                        Ok(()) => {
                            let result = CarrierResult { success: true, ..Default::default() };
                            let mut outcome = finish(job, &r.row, &result).await;
                            outcome.details.push_str(" (confirmed on the carrier after its answer was lost)");
                            out.push((r.row, Disposition::Done(outcome)));
                        }
                        Err(outcome) => out.push((r.row, Disposition::Done(outcome))),
                    }
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
pub(super) async fn delete(job: &Job, ts: &ThingSpace, ready: Vec<Ready>) -> Vec<(DeviceChangeRow, Disposition)> {
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
                let outcome = if f.kind == FailureKind::Ambiguous {
                    // The deletion may have been done: a device ThingSpace no longer lists is deleted.
                    logged_and_settled(job, ts, &r, &f, "ThingSpace Delete Devices").await
                } else {
                    job.log(&r.row, "ThingSpace Delete Devices", &f.call, Some(&f.reason())).await;
                    fail(api_failed_or_error(&f), f.reason())
                };
                out.push((r.row, Disposition::Done(outcome)));
            }
            out
        }
    }
}
