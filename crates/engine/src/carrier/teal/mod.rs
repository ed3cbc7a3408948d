//! Teal (eSIM) processors on the carrier-neutral waiting of [`crate::carrier_wait`]:
//! StatusUpdate enables or disables data by EID (online/waiting → enable, stopped → disable: the one the target
//! asks for; the legacy system disabled in every case), CarrierRatePlanChange assigns the plan's `PlanUuid` by EID.
//!
//! - **One request id per operation, recorded before it is sent.** Each batch of rows gets a fresh 32-hex
//!   `requestId` (the legacy system derived it from the time, so two batches in one second shared one) and is handed over to it before the POST, so a worker that
//!   dies after sending leaves rows that wait on the right id. A poll that finds Teal does not know the id sends
//!   the same operation again under the same id (Teal returns the first operation for a repeated id), so a change
//!   is never applied twice and never lost.
//! - **Results**: Teal answers "processing" until the operation is done, then one `{success, errorMessage}` per
//!   EID; each row gets its own. The callback Teal makes (`POST /Teal/Callback?sig=…&requestId=…`) carries no
//!   result we trust: it only wakes the rows (signed URL, [`apply_callback`]), and the worker that takes them
//!   reads the result — a duplicated, reordered or late callback changes nothing. Without callbacks rows are
//!   polled every `TEAL_POLL_SECONDS`, until the give-up time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::rules::resolve_target_status;
use domain::{ChangeDetails, Integration, RowStatus};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::{error, info, warn};

use super::Carriers;
use crate::carrier_wait::{carrier_owner, hand_back};
use crate::change;
use crate::common::{device_for_row, device_now, fail, writes_disabled};
use crate::job::Carrier;
use crate::job::Job;
use crate::job::{AsyncCarrier, CarrierResult, Disposition, PollAnswer};
use crate::ports::ServiceProvider;
use crate::ports::{CarrierWaits, ReferenceData};
use crate::ports::{DeviceChangeRow, DeviceUpdate, FailureKind, Queue, RowOutcome, StoreError, WorkMessage};
use crate::rate::RateLimiters;

pub(crate) mod intake;
mod port;

pub use port::*;

/// Whether a Teal status enables data (`ONLINE`, `WAITING`) or disables it (`STOPPED`); other statuses cannot be
/// set by a bulk change (refused at intake).
pub fn data_enabled_for(status: &str) -> Option<bool> {
    match status.trim().to_ascii_uppercase().as_str() {
        "ONLINE" | "WAITING" => Some(true),
        "STOPPED" => Some(false),
        _ => None,
    }
}

/// A fresh request id: 32 hex characters, never reused ("preferably 32 alpha-numeric").
pub fn new_request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn mac(secret: &str, request_id: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(b"teal-callback:");
    mac.update(request_id.as_bytes());
    Some(mac)
}

/// The callback URL of one operation: our route with an HMAC of the request id under the account's API secret,
/// to which Teal appends `requestId`.
pub fn callback_url(base: &str, secret: &str, request_id: &str) -> String {
    let sig = mac(secret, request_id).map(|m| hex::encode(m.finalize().into_bytes())).unwrap_or_default();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}sig={sig}")
}

/// Whether `signature` (hex) is the request id's HMAC under `secret`: 64 hex digits exactly (no sign, space or
/// other spelling of a byte), decoded and compared in constant time.
fn signature_valid(secret: &str, request_id: &str, signature: &str) -> bool {
    if signature.len() != 64 || secret.is_empty() {
        return false;
    }
    // `hex` takes digits only (no sign, no space; `u8::from_str_radix` took a leading `+`).
    match (hex::decode(signature), mac(secret, request_id)) {
        (Ok(bytes), Some(mac)) => mac.verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

/// What a callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TealCallbackAnswer {
    /// No Teal account signed this request id: nothing stored, nothing woken.
    Unauthorized,
    /// These bulk changes' rows were handed to the next worker, which reads the result.
    Woken(Vec<i64>),
    /// Signed, but no row waits on the request any more (settled, or a worker polls it now).
    Ignored,
}

/// `POST /Teal/Callback?sig=…&requestId=…`: checks the signature against every Teal account and wakes the rows
/// waiting on the request (the next worker polls its result at once).
pub async fn apply_callback(
    store: &(impl ReferenceData + CarrierWaits + ?Sized),
    queue: &dyn Queue,
    request_id: &str,
    signature: &str,
    now: DateTime<Utc>,
) -> Result<TealCallbackAnswer, StoreError> {
    let request_id = request_id.trim();
    if request_id.is_empty() || request_id.len() > 100 {
        return Ok(TealCallbackAnswer::Unauthorized);
    }
    for sp in store.providers_of(Integration::Teal).await? {
        if !signature_valid(sp.secret.expose(), request_id, signature) {
            continue;
        }
        let woken = store.wake_carrier_request(sp.id, request_id, now).await?;
        if woken.is_empty() {
            info!(request_id, service_provider_id = sp.id, "Teal callback for no waiting row; ignored");
            return Ok(TealCallbackAnswer::Ignored);
        }
        for id in &woken {
            if let Err(e) = queue.send(&WorkMessage::new(*id), Duration::ZERO).await {
                warn!(bulk_change_id = id, error = %e, "could not queue the woken bulk change; the scheduler will");
            }
        }
        info!(request_id, service_provider_id = sp.id, bulk_changes = ?woken, "Teal callback woke the waiting rows");
        return Ok(TealCallbackAnswer::Woken(woken));
    }
    warn!(request_id = %domain::rules::bounded_text(request_id, 100), "Teal callback not signed by any account; refused");
    Ok(TealCallbackAnswer::Unauthorized)
}

/// What the bulk change asks of Teal, and what a success writes to the device.
#[derive(Debug, Clone)]
enum Change {
    Data { enable: bool, status_id: i64, display: String },
    Plan { uuid: String, code: String },
}

impl Change {
    fn of(job: &Job) -> Result<Self, String> {
        match &job.details {
            ChangeDetails::StatusUpdate(req) => {
                let target = resolve_target_status(&job.statuses, Integration::Teal, &req.target_status)
                    .ok_or_else(|| format!("Unknown target status '{}' for Teal", req.target_status))?;
                let enable = data_enabled_for(&target.status)
                    .ok_or_else(|| format!("'{}' cannot be set on Teal by a bulk change", target.display_name))?;
                Ok(Change::Data { enable, status_id: target.id, display: target.display_name.clone() })
            }
            ChangeDetails::CarrierRatePlanChange(req) => {
                let code = req.carrier_rate_plan.trim();
                let plan = job
                    .rate_plans
                    .iter()
                    .find(|p| p.rate_plan_code.eq_ignore_ascii_case(code))
                    .ok_or_else(|| format!("Carrier rate plan '{code}' does not exist for this provider"))?;
                let uuid = plan
                    .plan_uuid
                    .clone()
                    .filter(|u| !u.trim().is_empty())
                    .ok_or_else(|| format!("Carrier rate plan '{code}' has no Teal PlanUuid"))?;
                Ok(Change::Plan { uuid, code: plan.rate_plan_code.clone() })
            }
            other => Err(format!("{} is not supported for Teal", other.change_type())),
        }
    }

    fn operation(&self, eids: Vec<String>) -> TealOperation {
        match self {
            Change::Data { enable: true, .. } => TealOperation::Enable(eids),
            Change::Data { enable: false, .. } => TealOperation::Disable(eids),
            Change::Plan { uuid, .. } => {
                TealOperation::AssignPlan(eids.into_iter().map(|e| (e, uuid.clone())).collect())
            }
        }
    }

    fn description(&self) -> &'static str {
        match self {
            Change::Data { enable: true, .. } => "Teal Enable Data",
            Change::Data { enable: false, .. } => "Teal Disable Data",
            Change::Plan { .. } => "Teal Assign Plan",
        }
    }

    fn outcome(&self) -> RowOutcome {
        match self {
            Change::Data { enable, status_id, display } => RowOutcome {
                status: RowStatus::Processed,
                details: format!("Data {} (status {display})", if *enable { "enabled" } else { "disabled" }),
                device_update: DeviceUpdate { device_status_id: Some(*status_id), ..DeviceUpdate::default() },
            },
            Change::Plan { uuid, code } => RowOutcome {
                status: RowStatus::Processed,
                details: format!("Carrier rate plan changed to {code} (Teal plan {uuid})"),
                device_update: DeviceUpdate { carrier_rate_plan: Some(code.clone()), ..DeviceUpdate::default() },
            },
        }
    }
}

/// The row's EID, from its device.
async fn eid_of(job: &Job, row: &DeviceChangeRow) -> Result<String, RowOutcome> {
    let (device, _) = device_for_row(job, row).await?;
    device
        .eid
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| fail(RowStatus::Error, format!("Device {} has no EID (Teal changes eSIMs by EID)", row.iccid)))
}

pub(crate) struct Teal {
    pub api: Arc<dyn TealApi>,
}

impl Teal {
    /// One operation of at most `TEAL_MAX_ENTRIES` rows, handed over to its request id before it is sent.
    async fn submit(
        &self,
        job: &Job,
        change: &Change,
        batch: Vec<(DeviceChangeRow, String)>,
    ) -> Vec<(DeviceChangeRow, Disposition)> {
        let request_id = new_request_id();
        let now = job.clock.now();
        // Long enough for the POST to be answered (or time out) before anyone may poll it.
        let hold = job.teal_poll_interval.max(job.lease * 2);
        let until = now + chrono::Duration::from_std(hold).unwrap_or_default();
        let ids: Vec<i64> = batch.iter().map(|(r, _)| r.id).collect();
        if let Err(e) = job.waits.await_carrier(job.bulk.id, &ids, &job.worker_id, &request_id, now, until).await {
            let reason = format!("Could not record the Teal request before sending it (nothing was sent): {e}");
            return batch.into_iter().map(|(r, _)| (r, Disposition::Done(fail(RowStatus::Error, &reason)))).collect();
        }
        let held: std::collections::BTreeSet<i64> =
            match job.waits.carrier_request_rows(&[job.sp.id], &request_id, None).await {
                Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
                Err(e) => {
                    error!(error = %e, request_id, "could not read the rows handed over; they are polled later");
                    return Vec::new();
                }
            };
        let batch: Vec<_> = batch.into_iter().filter(|(r, _)| held.contains(&r.id)).collect();
        if batch.is_empty() {
            return Vec::new();
        }
        let operation = change.operation(batch.iter().map(|(_, eid)| eid.clone()).collect());
        let callback =
            job.teal_callback_url.as_deref().map(|base| callback_url(base, job.sp.secret.expose(), &request_id));
        let description = change.description();
        let sent = self.api.submit(&request_id, callback.as_deref(), &operation).await;
        match sent {
            Ok(call) => {
                for (row, _) in &batch {
                    job.log(row, description, &call, None).await;
                }
                info!(request_id, rows = batch.len(), "Teal took the operation; rows wait for its result");
                self.poll_from_now(job, &request_id, &batch).await;
                batch.into_iter().map(|(r, _)| (r, Disposition::Await(request_id.clone()))).collect()
            }
            // Teal may have it: the rows wait on its id, and a poll sends it again only if Teal does not know it.
            Err(f) if f.kind == FailureKind::Ambiguous => {
                for (row, _) in &batch {
                    job.log(row, description, &f.call, Some(&f.reason())).await;
                }
                warn!(request_id, reason = %f.reason(), "Teal's answer was lost; the rows wait and the request is checked");
                self.poll_from_now(job, &request_id, &batch).await;
                batch.into_iter().map(|(r, _)| (r, Disposition::Await(request_id.clone()))).collect()
            }
            Err(f) => {
                let result = CarrierResult {
                    success: false,
                    reason: Some(format!("Teal refused the operation: {}", f.reason())),
                    ..Default::default()
                };
                let mut out = Vec::new();
                for (row, _) in batch {
                    job.log(&row, description, &f.call, Some(&f.reason())).await;
                    out.push(hand_back(job, &request_id, row, &result).await);
                }
                out
            }
        }
    }
}

impl Teal {
    /// Once Teal answered, the rows' hold (long enough for the POST) becomes the poll interval: a callback that
    /// does not come is made up for by a poll then.
    async fn poll_from_now(&self, job: &Job, request_id: &str, batch: &[(DeviceChangeRow, String)]) {
        let now = job.clock.now();
        let deadline = now + chrono::Duration::from_std(job.teal_poll_interval).unwrap_or_default();
        let ids: Vec<i64> = batch.iter().map(|(r, _)| r.id).collect();
        let owner = carrier_owner(request_id);
        if let Err(e) = job.waits.await_carrier(job.bulk.id, &ids, &owner, request_id, now, deadline).await {
            warn!(request_id, error = %e, "could not shorten the rows' hold; they are polled when it ends");
        }
    }
}

#[async_trait]
impl AsyncCarrier for Teal {
    fn name(&self) -> &'static str {
        "Teal"
    }

    fn result_wait(&self, job: &Job) -> Duration {
        job.teal_poll_interval
    }

    fn give_up(&self, job: &Job) -> Duration {
        job.teal_give_up
    }

    async fn send(&self, job: &Job, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)> {
        let change = match Change::of(job) {
            Ok(change) => change,
            Err(why) => {
                return rows.into_iter().map(|r| (r, Disposition::Done(fail(RowStatus::Error, &why)))).collect();
            }
        };
        if !job.sp.write_is_enabled {
            return rows.into_iter().map(|r| (r, Disposition::Done(writes_disabled()))).collect();
        }
        let mut out = Vec::new();
        let mut ready = Vec::new();
        for row in rows {
            match eid_of(job, &row).await {
                Ok(eid) => ready.push((row, eid)),
                Err(outcome) => out.push((row, Disposition::Done(outcome))),
            }
        }
        while !ready.is_empty() {
            let rest = ready.split_off(ready.len().min(TEAL_MAX_ENTRIES));
            out.extend(self.submit(job, &change, ready).await);
            ready = rest;
        }
        out
    }

    async fn poll(&self, job: &Job, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer {
        let description = "Teal Operation Result";
        let (result, call) = match self.api.operation_result(request_id).await {
            Ok(answer) => answer,
            Err(f) => {
                warn!(request_id, reason = %f.reason(), "Teal operation result not read; polled again later");
                for row in rows {
                    job.log(row, description, &f.call, Some(&f.reason())).await;
                }
                return PollAnswer::Pending;
            }
        };
        let mut sorted: Vec<&DeviceChangeRow> = rows.iter().collect();
        sorted.sort_by_key(|r| r.id);
        match result {
            TealOperationResult::Processing => PollAnswer::Pending,
            TealOperationResult::Unknown => {
                // The operation never reached Teal: send it again under the same id (Teal keeps the first).
                let change = match Change::of(job) {
                    Ok(change) => change,
                    Err(why) => return failed_all(rows, &why),
                };
                let mut eids = Vec::new();
                for row in &sorted {
                    match eid_of(job, row).await {
                        Ok(eid) => eids.push(eid),
                        Err(outcome) => return failed_all(rows, &outcome.details),
                    }
                }
                let callback =
                    job.teal_callback_url.as_deref().map(|base| callback_url(base, job.sp.secret.expose(), request_id));
                let sent = self.api.submit(request_id, callback.as_deref(), &change.operation(eids)).await;
                let (call, error) = match &sent {
                    Ok(call) => (call.clone(), None),
                    Err(f) => (f.call.clone(), Some(f.reason())),
                };
                for row in rows {
                    let text = format!(
                        "{} (Teal did not know request {request_id}: sent again under it)",
                        change.description()
                    );
                    job.log(row, &text, &call, error.as_deref()).await;
                }
                match sent {
                    Err(f) if f.kind == FailureKind::Refused || f.kind == FailureKind::Protocol => {
                        failed_all(rows, &format!("Teal refused the operation: {}", f.reason()))
                    }
                    _ => PollAnswer::Pending,
                }
            }
            TealOperationResult::Done { success, message, entries } => {
                for row in rows {
                    job.log(row, description, &call, None).await;
                }
                let mut results = BTreeMap::new();
                let positional = entries.iter().all(|e| e.eid.is_none()) && entries.len() == sorted.len();
                for (n, row) in sorted.iter().enumerate() {
                    let entry = if positional {
                        entries.get(n)
                    } else {
                        match eid_of(job, row).await {
                            Ok(eid) => entries.iter().find(|e| e.eid.as_deref() == Some(eid.as_str())),
                            Err(_) => None,
                        }
                    };
                    let result = match entry {
                        Some(e) if e.success => CarrierResult { success: true, ..Default::default() },
                        Some(e) => CarrierResult {
                            success: false,
                            reason: Some(e.error_message.clone().unwrap_or_else(|| "the entry failed".into())),
                            ..Default::default()
                        },
                        None => CarrierResult {
                            success: false,
                            reason: Some(if success {
                                format!("request {request_id} has no result for this eSIM")
                            } else {
                                message.clone().unwrap_or_else(|| "the operation failed".into())
                            }),
                            ..Default::default()
                        },
                    };
                    results.insert(row.id, result);
                }
                PollAnswer::Results(results)
            }
        }
    }

    async fn finish(&self, job: &Job, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome {
        if !result.success {
            let reason = result.reason.clone().unwrap_or_else(|| "the carrier reported a failure".into());
            return fail(RowStatus::ApiFailed, format!("Teal: {reason}"));
        }
        let outcome = match Change::of(job) {
            Ok(change) => change.outcome(),
            Err(why) => return fail(RowStatus::Error, why),
        };
        // A status update's Rev.io steps (service line, customer) follow the carrier's success.
        let ChangeDetails::StatusUpdate(req) = &job.details else { return outcome };
        match device_now(job, row).await {
            Ok((device, _)) => change::rev_io_steps(job, row, req, &device, outcome).await,
            Err(failed) => failed,
        }
    }
}

fn failed_all(rows: &[DeviceChangeRow], reason: &str) -> PollAnswer {
    PollAnswer::Results(
        rows.iter()
            .map(|r| (r.id, CarrierResult { success: false, reason: Some(reason.to_string()), ..Default::default() }))
            .collect(),
    )
}

/// A Teal account's carrier: status updates and plan changes are operations on eSIMs by EID, answered at once
/// and finished later (a callback wakes the rows; their worker reads the operation's result).
pub(crate) fn connect(
    sp: &ServiceProvider,
    carriers: &dyn Carriers,
    limiters: &RateLimiters,
) -> Result<Arc<dyn Carrier>, String> {
    let limiter = limiters.for_provider(sp.id, sp.rate_limit_per_second);
    Ok(Arc::new(Teal { api: carriers.teal(sp, limiter)? }))
}

#[async_trait::async_trait]
impl Carrier for Teal {
    fn batched(&self, details: &ChangeDetails) -> Option<&dyn AsyncCarrier> {
        matches!(details, ChangeDetails::StatusUpdate(_) | ChangeDetails::CarrierRatePlanChange(_))
            .then_some(self as &dyn AsyncCarrier)
    }

    async fn process_row(&self, _job: &Job, _row: &DeviceChangeRow, _details: &ChangeDetails) -> Option<RowOutcome> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_are_signed_per_request_and_account() {
        let url = callback_url("https://api.example/Teal/Callback", "secret-1", "abc");
        let sig = url.split("sig=").nth(1).expect("signed");
        assert!(signature_valid("secret-1", "abc", sig));
        assert!(!signature_valid("secret-2", "abc", sig), "another account's secret");
        assert!(!signature_valid("secret-1", "abd", sig), "another request");
        assert!(!signature_valid("secret-1", "abc", &sig[..62]), "cut short");
        assert!(!signature_valid("secret-1", "abc", &"zz".repeat(32)), "not hex");
        assert!(signature_valid("secret-1", "abc", &sig.to_uppercase()), "the same bytes in capitals");
        assert!(!signature_valid("secret-1", "abc", &format!(" {}", &sig[1..])), "a space for a digit");
        assert!(callback_url("https://x/cb?a=1", "s", "r").contains("?a=1&sig="));
    }

    #[test]
    fn a_byte_written_with_a_sign_is_not_the_signature() {
        // A request id whose signature has a byte below 0x10 ("0a"), which a parser that takes a sign reads as "+a".
        let (request_id, sig, at) = (0..1000)
            .map(|i| {
                let id = format!("r{i}");
                let url = callback_url("https://x/cb", "secret-1", &id);
                let sig = url.split("sig=").nth(1).expect("signed").to_string();
                (id, sig)
            })
            .find_map(|(id, sig)| (0..32).find(|i| sig.as_bytes()[i * 2] == b'0').map(|i| (id, sig, i * 2)))
            .expect("some signature has a byte below 0x10");
        assert!(signature_valid("secret-1", &request_id, &sig));
        let signed = format!("{}+{}", &sig[..at], &sig[at + 1..]);
        assert_eq!(signed.len(), 64);
        assert!(!signature_valid("secret-1", &request_id, &signed), "{signed}");
    }

    #[test]
    fn request_ids_are_32_hex_and_not_reused() {
        let ids: std::collections::BTreeSet<String> = (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn targets_map_to_enable_or_disable() {
        assert_eq!(data_enabled_for("online"), Some(true));
        assert_eq!(data_enabled_for("WAITING"), Some(true));
        assert_eq!(data_enabled_for("Stopped"), Some(false));
        assert_eq!(data_enabled_for("DELETED"), None);
    }
}
