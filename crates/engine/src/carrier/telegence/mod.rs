//! AT&T Telegence (Mobility).
//!
//! - **Status updates and new services** go through the asynchronous path (`carrier_wait`): SIMs without a line
//!   are activated in requests of at most 200, each row waiting PROCESSING on its request id and polled (Telegence
//!   sends no callback) until active (the new subscriber number is written to the device), rejected, or given up;
//!   suspend, cancel and restore are line PATCHes (`mode`). Every row gets its own result (the legacy system gave a whole request one).
//! - **Nothing twice**: before an activation POST its rows are handed over to a provisional request id
//!   (`unsent:...`). A worker that dies between the POST and the recording of the real request id leaves them
//!   under that id; the worker that reclaims them never POSTs again, and fails them with what to check. An
//!   activation whose answer is lost is failed the same way. Line changes whose answer is lost, and rows an
//!   earlier attempt may have sent, are settled by reading the line.
//! - **Carrier rate plan** (`singleUserCode`) and **ICCID/IMEI swaps** (`sim`/`IMEI`) are line PATCHes, done row
//!   by row; a `404 /service/` is "line not found or not swappable", never a success.

use std::collections::BTreeMap;
use std::sync::Arc;

use domain::request::{ChangeDetails, ChangeIdentifier, TelegenceOptions};
use domain::rules::{DeviceRecord, DeviceStatusDef, TelegenceMove, resolve_target_status, telegence_status_move};
use domain::{Integration, RowStatus};
use futures::StreamExt;
use tracing::{error, info, warn};

use super::Carriers;
use crate::carrier_wait::{carrier_owner, hand_back};
use crate::change::{self, cost_centers};
use crate::common::{api_failed_or_error, device_for_row, device_now, fail, writes_disabled};
use crate::job::Carrier;
use crate::job::Job;
use crate::job::{AsyncCarrier, CarrierResult, Disposition, PollAnswer};
use crate::ports::ServiceProvider;
use crate::ports::{CarrierFailure, DeviceChangeRow, DeviceUpdate, FailureKind, RowOutcome};
use crate::rate::RateLimiters;

pub(crate) mod intake;
mod port;

pub use port::*;

/// The provisional request id rows are handed over to before their activation POST.
pub const UNSENT_PREFIX: &str = "unsent:";
/// Line PATCHes in flight at once for one claim (the legacy's `MAX_PARALLEL_REQUESTS`).
const PARALLEL_PATCHES: usize = 10;
/// The reason code of a restore (`mode` A) when the request gives none ([guess]: the codes are not public).
pub const RESTORE_REASON_CODE: &str = "RS";

fn options(details: &ChangeDetails) -> Option<&TelegenceOptions> {
    match details {
        ChangeDetails::StatusUpdate(req) => req.telegence.as_deref(),
        ChangeDetails::ActivateNewService(options) => Some(options),
        _ => None,
    }
}

fn target(job: &Job) -> Option<&DeviceStatusDef> {
    match &job.details {
        ChangeDetails::StatusUpdate(req) => {
            resolve_target_status(&job.statuses, Integration::Telegence, &req.target_status)
        }
        ChangeDetails::ActivateNewService(_) => resolve_target_status(&job.statuses, Integration::Telegence, "A"),
        _ => None,
    }
}

fn status_id(job: &Job, code: &str) -> Option<i64> {
    resolve_target_status(&job.statuses, Integration::Telegence, code).map(|s| s.id)
}

fn effective_date(options: Option<&TelegenceOptions>) -> Option<chrono::NaiveDate> {
    options
        .and_then(|o| o.effective_date.as_deref())
        .and_then(|d| chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok())
}

/// The line number of a device; the reason a row fails when it has none.
fn subscriber_number(device: &DeviceRecord) -> Result<String, String> {
    device
        .msisdn
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("Device {} has no Telegence line (no MSISDN)", device.iccid))
}

/// Telegence as an asynchronous carrier: activations by request id, polled; line PATCHes answered at once.
pub(crate) struct Telegence {
    pub api: Arc<dyn TelegenceApi>,
}

#[async_trait::async_trait]
impl AsyncCarrier for Telegence {
    fn name(&self) -> &'static str {
        "Telegence"
    }

    fn result_wait(&self, job: &Job) -> std::time::Duration {
        job.carrier_poll_interval
    }

    async fn send(&self, job: &Job, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)> {
        send(job, self, rows).await
    }

    async fn poll(&self, job: &Job, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer {
        poll(job, self.api.as_ref(), request_id, rows).await
    }

    async fn finish(&self, job: &Job, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome {
        finish(job, self.api.as_ref(), row, result).await
    }
}

/// A row ready for a line PATCH.
struct Patch {
    row: DeviceChangeRow,
    device: DeviceRecord,
    mode: &'static str,
}

async fn send(job: &Job, tg: &Telegence, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)> {
    let mut out = Vec::new();
    let Some(target) = target(job).cloned() else {
        let reason = match &job.details {
            ChangeDetails::StatusUpdate(req) => format!("Unknown target status '{}' for Telegence", req.target_status),
            other => format!("{} for Telegence is not an asynchronous change", other.change_type()),
        };
        return rows.into_iter().map(|r| (r, Disposition::Done(fail(RowStatus::Error, &reason)))).collect();
    };
    let mut activations: Vec<(DeviceChangeRow, TgActivation)> = Vec::new();
    let mut patches: Vec<Patch> = Vec::new();
    for row in rows {
        let device = match device_for_row(job, &row).await {
            Ok((device, _)) => device,
            Err(outcome) => {
                out.push((row, Disposition::Done(outcome)));
                continue;
            }
        };
        let has_line = device.msisdn.as_deref().is_some_and(|m| !m.trim().is_empty());
        let current = job.statuses.iter().find(|s| s.id == device.device_status_id).map_or("UNKNOWN", |s| &s.status);
        let step = match &job.details {
            ChangeDetails::ActivateNewService(_) if has_line && current != "C" => Err(format!(
                "the SIM already has line {} ({current}); a new service is for a SIM without one",
                device.msisdn.clone().unwrap_or_default()
            )),
            ChangeDetails::ActivateNewService(_) => Ok(TelegenceMove::Activate),
            _ => telegence_status_move(has_line, current, &target.status),
        };
        match step {
            Err(why) => {
                out.push((row, Disposition::Done(fail(RowStatus::Error, format!("Status change not allowed: {why}")))))
            }
            Ok(TelegenceMove::Activate) => match activation(job, &device) {
                Ok(service) => activations.push((row, service)),
                Err(why) => out.push((row, Disposition::Done(fail(RowStatus::Error, why)))),
            },
            Ok(TelegenceMove::Patch(mode)) => patches.push(Patch { row, device, mode }),
            Ok(TelegenceMove::Already) => match confirm_status(job, tg.api.as_ref(), &row, &device, &target).await {
                Ok(None) => {
                    let outcome = RowOutcome {
                        status: RowStatus::Processed,
                        details: format!("Line already {} on Telegence; no change sent", target.display_name),
                        device_update: DeviceUpdate::default(),
                    };
                    out.push((row, Disposition::Done(outcome)));
                }
                Ok(Some(mode)) => patches.push(Patch { row, device, mode }),
                Err(outcome) => out.push((row, Disposition::Done(outcome))),
            },
        }
    }
    if !job.sp.write_is_enabled {
        out.extend(activations.into_iter().map(|(row, _)| (row, Disposition::Done(writes_disabled()))));
        out.extend(patches.into_iter().map(|p| (p.row, Disposition::Done(writes_disabled()))));
        return out;
    }
    let target = &target;
    let patched: Vec<(DeviceChangeRow, Disposition)> = futures::stream::iter(patches)
        .map(|p| async move {
            let outcome = patch_status(job, tg.api.as_ref(), &p.row, &p.device, p.mode, target).await;
            (p.row, Disposition::Done(outcome))
        })
        .buffer_unordered(PARALLEL_PATCHES)
        .collect()
        .await;
    out.extend(patched);
    let activations = known_billing_accounts(job, tg.api.as_ref(), activations, &mut out).await;
    let mut batch = Vec::new();
    for item in activations {
        batch.push(item);
        if batch.len() == TELEGENCE_MAX_ACTIVATIONS {
            out.extend(submit(job, tg, std::mem::take(&mut batch)).await);
        }
    }
    if !batch.is_empty() {
        out.extend(submit(job, tg, batch).await);
    }
    out
}

/// The activations whose billing account Telegence knows (and can open lines on: it has a foundation account);
/// the others fail here, before anything is sent. One read per billing account.
async fn known_billing_accounts(
    job: &Job,
    api: &dyn TelegenceApi,
    activations: Vec<(DeviceChangeRow, TgActivation)>,
    out: &mut Vec<(DeviceChangeRow, Disposition)>,
) -> Vec<(DeviceChangeRow, TgActivation)> {
    let mut verdicts: BTreeMap<String, Result<(), (RowStatus, String)>> = BTreeMap::new();
    let mut calls = BTreeMap::new();
    for ban in activations.iter().map(|(_, s)| s.ban.clone()).collect::<std::collections::BTreeSet<_>>() {
        let verdict = match api.billing_account(&ban).await {
            Ok((Some(account), call)) if account.fan.is_some() => {
                calls.insert(ban.clone(), (call, None));
                Ok(())
            }
            Ok((_, call)) => {
                let why = format!(
                    "billing account {ban} is not known to Telegence (or has no foundation account); no activation sent"
                );
                calls.insert(ban.clone(), (call, Some(why.clone())));
                Err((RowStatus::ApiFailed, why))
            }
            Err(f) => {
                let why = format!("could not read billing account {ban} from Telegence: {}", f.reason());
                calls.insert(ban.clone(), (f.call.clone(), Some(why.clone())));
                Err((api_failed_or_error(&f), why))
            }
        };
        verdicts.insert(ban, verdict);
    }
    let mut kept = Vec::with_capacity(activations.len());
    for (row, service) in activations {
        if let Some((call, error)) = calls.get(&service.ban) {
            job.log(&row, "Telegence Billing Account", call, error.as_deref()).await;
        }
        match verdicts.get(&service.ban) {
            Some(Err((status, why))) => out.push((row, Disposition::Done(fail(*status, why)))),
            _ => kept.push((row, service)),
        }
    }
    kept
}

/// The new service of a SIM without a line, from the request's options and the device.
fn activation(job: &Job, device: &DeviceRecord) -> Result<TgActivation, String> {
    let o = options(&job.details).cloned().unwrap_or_default();
    if let Err((field, why)) = domain::rules::validate_telegence_activation(
        o.billing_account_number.as_deref(),
        o.rate_plan.as_deref(),
        o.service_zip_code.as_deref(),
    ) {
        return Err(format!("{field}: {why} (SIM {} has no line)", device.iccid));
    }
    Ok(TgActivation {
        ban: o.billing_account_number.unwrap_or_default().trim().to_string(),
        iccid: device.iccid.clone(),
        imei: device.imei.clone(),
        plan: o.rate_plan.unwrap_or_default().trim().to_string(),
        zip: o.service_zip_code.unwrap_or_default().trim().to_string(),
        features: o.features,
        first_name: o.first_name,
        last_name: o.last_name,
    })
}

/// One activation request of at most 200 rows. The rows are handed over to a provisional id first, so that a
/// worker that dies after the POST leaves them marked "may have been sent".
async fn submit(
    job: &Job,
    tg: &Telegence,
    batch: Vec<(DeviceChangeRow, TgActivation)>,
) -> Vec<(DeviceChangeRow, Disposition)> {
    let store = &job.waits;
    let provisional = format!("{UNSENT_PREFIX}{}-{:016x}", job.bulk.id, fastrand::u64(..));
    let now = job.clock.now();
    // Long enough for the POST to be answered (or time out) before anyone may reclaim the rows.
    let hold = job.carrier_result_wait.max(job.lease * 2);
    let until = now + chrono::Duration::from_std(hold).unwrap_or_default();
    let ids: Vec<i64> = batch.iter().map(|(r, _)| r.id).collect();
    if let Err(e) = store.await_carrier(job.bulk.id, &ids, &job.worker_id, &provisional, now, until).await {
        let reason = format!("Could not record the activation before sending it (nothing was sent): {e}");
        return batch.into_iter().map(|(r, _)| (r, Disposition::Done(fail(RowStatus::Error, &reason)))).collect();
    }
    // Only the rows this worker still held were handed over; the others belong to another worker now.
    let held: std::collections::BTreeSet<i64> = match store.carrier_request_rows(&[job.sp.id], &provisional, None).await
    {
        Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
        Err(e) => {
            error!(error = %e, request_id = %provisional, "could not read the rows handed over; they are polled later");
            return Vec::new();
        }
    };
    let (batch, lost): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(r, _)| held.contains(&r.id));
    if !lost.is_empty() {
        warn!(rows = lost.len(), "rows taken over by another worker before the activation; not sent by this one");
    }
    if batch.is_empty() {
        return Vec::new();
    }
    let services: Vec<TgActivation> = batch.iter().map(|(_, s)| s.clone()).collect();
    let answer = tg.api.activate(&services).await;
    let description = "Telegence Service Activation";
    match answer {
        Ok((request_id, _entries, call)) => {
            for (row, _) in &batch {
                job.log(row, description, &call, None).await;
            }
            let now = job.clock.now();
            let deadline = now + chrono::Duration::from_std(job.carrier_poll_interval).unwrap_or_default();
            match store
                .await_carrier(job.bulk.id, &ids_of(&batch), &carrier_owner(&provisional), &request_id, now, deadline)
                .await
            {
                Ok(n) => info!(request_id, rows = n, "activation accepted; rows wait for its result"),
                // The rows stay under the provisional id and will be failed as "may have been sent": say which
                // request it was, so an operator can find the lines.
                Err(e) => {
                    error!(request_id, error = %e, "activation accepted but its request id could not be recorded on its rows")
                }
            }
            batch.into_iter().map(|(r, _)| (r, Disposition::Await(request_id.clone()))).collect()
        }
        Err(f) => {
            let reason = if f.kind == FailureKind::Ambiguous {
                format!(
                    "Telegence may have accepted the activation ({}); it was not sent again: look the SIM up on Telegence before a retry",
                    f.reason()
                )
            } else {
                format!("Telegence refused the activation: {}", f.reason())
            };
            let mut out = Vec::new();
            for (row, _) in batch {
                job.log(&row, description, &f.call, Some(&f.reason())).await;
                let result = CarrierResult { success: false, reason: Some(reason.clone()), ..Default::default() };
                out.push(hand_back(job, &provisional, row, &result).await);
            }
            out
        }
    }
}

fn ids_of(batch: &[(DeviceChangeRow, TgActivation)]) -> Vec<i64> {
    batch.iter().map(|(r, _)| r.id).collect()
}

async fn poll(job: &Job, api: &dyn TelegenceApi, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer {
    if request_id.starts_with(UNSENT_PREFIX) {
        // The worker that sent (or was about to send) this activation stopped before recording its request id.
        let results = rows
            .iter()
            .map(|row| {
                let reason = format!(
                    "an activation of SIM {} may have reached Telegence before the worker handling it stopped; it was not sent again: look the SIM up on Telegence before a retry",
                    row.iccid
                );
                (row.id, CarrierResult { success: false, reason: Some(reason), ..Default::default() })
            })
            .collect();
        return PollAnswer::Results(results);
    }
    let description = "Telegence Service Activation Status";
    let (entries, call) = match api.activation_status(request_id).await {
        Ok(answer) => answer,
        Err(f) => {
            warn!(request_id, reason = %f.reason(), "activation status could not be read; polled again later");
            for row in rows {
                job.log(row, description, &f.call, Some(&f.reason())).await;
            }
            return PollAnswer::Pending;
        }
    };
    let mut results = BTreeMap::new();
    for row in rows {
        job.log(row, description, &call, None).await;
        let Some(entry) = entries.iter().find(|e| e.iccid.as_deref() == Some(row.iccid.as_str())) else {
            let reason = format!("request {request_id} has no entry for SIM {}", row.iccid);
            results.insert(row.id, CarrierResult { success: false, reason: Some(reason), ..Default::default() });
            continue;
        };
        match entry.status.as_str() {
            "pending" | "reserved" | "" => {}
            "active" if entry.subscriber_number.is_some() => {
                let result =
                    CarrierResult { success: true, msisdn: entry.subscriber_number.clone(), ..Default::default() };
                results.insert(row.id, result);
            }
            other => {
                let reason = entry.error.clone().unwrap_or_else(|| format!("the activation ended {other}"));
                results.insert(row.id, CarrierResult { success: false, reason: Some(reason), ..Default::default() });
            }
        }
    }
    PollAnswer::Results(results)
}

/// An activated (or failed) row: the new line written to the device, the features the request removes
/// removed, and the Rev.io steps of a status update.
async fn finish(job: &Job, api: &dyn TelegenceApi, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome {
    if !result.success {
        let reason = result.reason.clone().unwrap_or_else(|| "the carrier reported a failure".into());
        return fail(RowStatus::ApiFailed, format!("Telegence: {reason}"));
    }
    let Some(number) = result.msisdn.clone() else {
        return fail(RowStatus::ApiFailed, "Telegence: the activation is active but names no subscriber number");
    };
    let o = options(&job.details).cloned().unwrap_or_default();
    let mut outcome = RowOutcome {
        status: RowStatus::Processed,
        details: format!("Line {number} activated"),
        device_update: DeviceUpdate {
            device_status_id: status_id(job, "A"),
            msisdn: Some(number.clone()),
            carrier_rate_plan: o.rate_plan.clone().map(|p| p.trim().to_string()),
            ..DeviceUpdate::default()
        },
    };
    if !o.remove_features.is_empty() {
        let change = TgLineChange::RemoveFeatures(o.remove_features.clone());
        match api.change_line(&number, &change).await {
            Ok((_, call)) => {
                job.log(row, "Telegence Remove Features", &call, None).await;
                outcome.details.push_str(&format!("; features removed: {}", o.remove_features.join(", ")));
            }
            Err(f) => {
                job.log(row, "Telegence Remove Features", &f.call, Some(&f.reason())).await;
                outcome.status = RowStatus::ApiFailed;
                outcome.details.push_str(&format!("; features not removed: {}", f.reason()));
                return outcome;
            }
        }
    }
    if let ChangeDetails::StatusUpdate(req) = &job.details {
        match device_now(job, row).await {
            Ok((device, _)) => return change::rev_io_steps(job, row, req, &device, outcome).await,
            Err(mut failed) => {
                failed.device_update = outcome.device_update;
                return failed;
            }
        }
    }
    outcome
}

/// Our database says the line is in the target status: the line is read. `None` when Telegence agrees (nothing
/// is sent); otherwise the mode that takes the line there.
async fn confirm_status(
    job: &Job,
    api: &dyn TelegenceApi,
    row: &DeviceChangeRow,
    device: &DeviceRecord,
    target: &DeviceStatusDef,
) -> Result<Option<&'static str>, RowOutcome> {
    let number = subscriber_number(device).map_err(|why| fail(RowStatus::Error, why))?;
    let description = "Telegence line details (is the line already in the target status?)";
    let line = read_line(job, api, row, &number, description).await?;
    let listed = line.status.clone().unwrap_or_else(|| "UNKNOWN".into());
    match telegence_status_move(true, &listed, &target.status) {
        Ok(TelegenceMove::Already) => Ok(None),
        Ok(TelegenceMove::Patch(mode)) => {
            warn!(iccid = %row.iccid, listed = %listed, "the database says the line is in the target status but Telegence does not");
            Ok(Some(mode))
        }
        Ok(TelegenceMove::Activate) => Err(fail(RowStatus::Error, "the line needs a new service")),
        Err(why) => Err(fail(
            RowStatus::Error,
            format!("Status change not allowed: {why} (Telegence lists the line as {listed})"),
        )),
    }
}

/// The line's details; a failure (or no such line) as the row's outcome.
async fn read_line(
    job: &Job,
    api: &dyn TelegenceApi,
    row: &DeviceChangeRow,
    number: &str,
    description: &str,
) -> Result<TgLine, RowOutcome> {
    match api.line(number).await {
        Ok((Some(line), call)) => {
            job.log(row, description, &call, None).await;
            Ok(line)
        }
        Ok((None, call)) => {
            let reason = format!("Telegence has no line {number} (404 /service/)");
            job.log(row, description, &call, Some(&reason)).await;
            Err(fail(RowStatus::ApiFailed, reason))
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            Err(fail(api_failed_or_error(&f), format!("Could not read line {number} from Telegence: {}", f.reason())))
        }
    }
}

/// Sends one line change. Done already (a row an earlier attempt may have sent) or confirmed after a lost answer
/// when the line shows `done`; the line as Telegence answered, or the row's failure.
async fn change_line(
    job: &Job,
    api: &dyn TelegenceApi,
    row: &DeviceChangeRow,
    number: &str,
    change: &TgLineChange,
    description: &str,
    done: impl Fn(&TgLine) -> bool,
) -> Result<(TgLine, &'static str), RowOutcome> {
    if job.may_have_been_sent(row) {
        let line =
            read_line(job, api, row, number, "Telegence line details (an earlier attempt may have sent it)").await?;
        if done(&line) {
            return Ok((line, " (found done on the carrier: an earlier attempt had sent it)"));
        }
    }
    match api.change_line(number, change).await {
        Ok((line, call)) => {
            job.log(row, description, &call, None).await;
            Ok((line, ""))
        }
        Err(f) if f.kind == FailureKind::Ambiguous => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            let line =
                read_line(job, api, row, number, "Telegence line details (the change's answer was lost)").await?;
            if done(&line) {
                return Ok((line, " (confirmed on the carrier after its answer was lost)"));
            }
            Err(lost(&f))
        }
        // Accepted (2xx) but the answer is not line details: the change may well have taken; the line says.
        Err(f) if f.kind == FailureKind::Protocol && f.call.http_status.is_some_and(|s| (200..300).contains(&s)) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            let line =
                read_line(job, api, row, number, "Telegence line details (the change's answer was unreadable)").await?;
            if done(&line) {
                return Ok((line, " (confirmed on the carrier: its answer was not line details)"));
            }
            Err(fail(
                RowStatus::ApiFailed,
                format!(
                    "Telegence accepted the change but its answer was unreadable ({}), and the line does not show it",
                    f.reason()
                ),
            ))
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            Err(fail(api_failed_or_error(&f), format!("Telegence: {}", f.reason())))
        }
    }
}

fn lost(f: &CarrierFailure) -> RowOutcome {
    fail(
        RowStatus::ApiFailed,
        format!(
            "{}; Telegence does not show the change yet but may still apply it: check the line before a retry",
            f.reason()
        ),
    )
}

async fn patch_status(
    job: &Job,
    api: &dyn TelegenceApi,
    row: &DeviceChangeRow,
    device: &DeviceRecord,
    mode: &'static str,
    target: &DeviceStatusDef,
) -> RowOutcome {
    let number = match subscriber_number(device) {
        Ok(n) => n,
        Err(why) => return fail(RowStatus::Error, why),
    };
    let o = options(&job.details);
    let reason_code = o.and_then(|o| o.reason_code.clone()).filter(|c| !c.trim().is_empty());
    let reason_code = match (reason_code, mode) {
        (Some(code), _) => code.trim().to_string(),
        (None, "A") => RESTORE_REASON_CODE.to_string(),
        (None, _) => {
            return fail(RowStatus::Error, "TelegenceStatusUpdate.ReasonCode is required to suspend or cancel");
        }
    };
    let change = TgLineChange::Status { mode: mode.to_string(), reason_code, effective_date: effective_date(o) };
    let future = effective_date(o).is_some_and(|d| d > job.clock.now().date_naive());
    let description = format!("Telegence Update Line Status ({mode})");
    let done = |line: &TgLine| line.status.as_deref() == Some(mode);
    let (line, note) = match change_line(job, api, row, &number, &change, &description, done).await {
        Ok(answer) => answer,
        Err(outcome) => return outcome,
    };
    if !future && !done(&line) {
        return fail(
            RowStatus::ApiFailed,
            format!("Telegence answered, but the line is {} instead of {mode}", line.status.unwrap_or_default()),
        );
    }
    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: format!("Status changed to {}{note}", target.display_name),
        device_update: DeviceUpdate { device_status_id: Some(target.id), ..DeviceUpdate::default() },
    };
    match &job.details {
        ChangeDetails::StatusUpdate(req) => change::rev_io_steps(job, row, req, device, outcome).await,
        _ => outcome,
    }
}

/// CarrierRatePlanChange: `singleUserCode` on the line.
pub(crate) async fn change_plan(job: &Job, api: &dyn TelegenceApi, row: &DeviceChangeRow, plan: &str) -> RowOutcome {
    let (device, _) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let number = match subscriber_number(&device) {
        Ok(n) => n,
        Err(why) => return fail(RowStatus::Error, why),
    };
    let plan = plan.trim();
    if !job.sp.write_is_enabled {
        return writes_disabled();
    }
    let change = TgLineChange::Plan { plan: plan.to_string(), effective_date: None };
    let done = |line: &TgLine| line.plan.as_deref() == Some(plan);
    match change_line(job, api, row, &number, &change, "Telegence Update Rate Plan", done).await {
        Ok((line, note)) if done(&line) => RowOutcome {
            status: RowStatus::Processed,
            details: format!("Carrier rate plan changed to {plan}{note}"),
            device_update: DeviceUpdate { carrier_rate_plan: Some(plan.to_string()), ..DeviceUpdate::default() },
        },
        Ok((line, _)) => fail(
            RowStatus::ApiFailed,
            format!("Telegence answered, but the line's plan is {}", line.plan.unwrap_or_else(|| "none".into())),
        ),
        Err(outcome) => outcome,
    }
}

/// ChangeICCIDorIMEI: `sim`/`IMEI` on the line, with the ZIP, reason and technology type a swap needs.
pub(crate) async fn swap(
    job: &Job,
    api: &dyn TelegenceApi,
    row: &DeviceChangeRow,
    req: &ChangeIdentifier,
) -> RowOutcome {
    let (device, _) = match device_for_row(job, row).await {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let number = match subscriber_number(&device) {
        Ok(n) => n,
        Err(why) => return fail(RowStatus::Error, why),
    };
    let Some(zip) = req.service_zip_code.as_deref().map(str::trim).filter(|z| !z.is_empty()) else {
        return fail(RowStatus::Error, "ChangeIdentifier.ServiceZipCode is required for a Telegence swap");
    };
    if !job.sp.write_is_enabled {
        return writes_disabled();
    }
    let new_iccid = req.new_iccid.clone().map(|i| i.trim().to_string()).unwrap_or_else(|| device.iccid.clone());
    let new_imei = req.new_imei.clone().map(|i| i.trim().to_string()).or(device.imei.clone());
    let change = TgLineChange::Swap {
        iccid: new_iccid.clone(),
        imei: new_imei.clone(),
        zip: zip.to_string(),
        reason_code: req.reason_code.clone().unwrap_or_else(|| domain::request::TELEGENCE_SWAP_REASON_CODE.into()),
        technology_type: req
            .technology_type
            .clone()
            .unwrap_or_else(|| domain::request::TELEGENCE_TECHNOLOGY_TYPE.into()),
    };
    let done = |line: &TgLine| {
        line.iccid.as_deref() == Some(new_iccid.as_str())
            && (req.new_imei.is_none() || line.imei.as_deref() == new_imei.as_deref())
    };
    match change_line(job, api, row, &number, &change, "Telegence Swap SIM/IMEI", done).await {
        Ok((line, note)) if done(&line) => {
            let mut details = Vec::new();
            if req.new_iccid.is_some() {
                details.push(format!("ICCID changed to {new_iccid}"));
            }
            if let Some(imei) = req.new_imei.as_deref() {
                details.push(format!("IMEI changed to {}", imei.trim()));
            }
            RowOutcome {
                status: RowStatus::Processed,
                details: format!("{}{note}", details.join("; ")),
                device_update: DeviceUpdate {
                    iccid: req.new_iccid.as_ref().map(|_| new_iccid.clone()),
                    imei: req.new_imei.as_ref().map(|i| i.trim().to_string()),
                    ..DeviceUpdate::default()
                },
            }
        }
        Ok(_) => fail(RowStatus::ApiFailed, "Telegence answered, but the line does not show the new SIM/IMEI"),
        Err(outcome) => outcome,
    }
}

/// A Telegence account's carrier: status updates and new services are asynchronous (activations are polled by
/// request id); plan changes and SIM swaps are sent row by row; a username is ours and Rev.io's only.
pub(crate) fn connect(
    sp: &ServiceProvider,
    carriers: &dyn Carriers,
    limiters: &RateLimiters,
) -> Result<Arc<dyn Carrier>, String> {
    let limiter = limiters.for_provider(sp.id, sp.rate_limit_per_second);
    Ok(Arc::new(Telegence { api: carriers.telegence(sp, limiter)? }))
}

#[async_trait::async_trait]
impl Carrier for Telegence {
    fn batched(&self, details: &ChangeDetails) -> Option<&dyn AsyncCarrier> {
        matches!(details, ChangeDetails::StatusUpdate(_) | ChangeDetails::ActivateNewService(_))
            .then_some(self as &dyn AsyncCarrier)
    }

    async fn process_row(&self, job: &Job, row: &DeviceChangeRow, details: &ChangeDetails) -> Option<RowOutcome> {
        Some(match details {
            ChangeDetails::CarrierRatePlanChange(req) => {
                change_plan(job, self.api.as_ref(), row, &req.carrier_rate_plan).await
            }
            ChangeDetails::ChangeIccidOrImei(req) => swap(job, self.api.as_ref(), row, req).await,
            // Telegence keeps no username: the change is recorded here and its cost centers go to Rev.io.
            ChangeDetails::EditUsername(req) => cost_centers::without_carrier(job, row, req).await,
            _ => return None,
        })
    }
}
