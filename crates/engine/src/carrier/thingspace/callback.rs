//! The `CarrierService` callback: authenticated by the account's callback credentials, matched to its row by
//! request id and device within that account's tenant, and applied once; one that beats the recording of its
//! request id is kept and replayed by the worker.

use super::*;
use crate::ports::Callbacks;

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
    store: &(impl Callbacks + ?Sized),
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
pub(super) const UNMATCHED: &str = "unmatched: no row of this account waits on this request (yet)";

pub(super) fn outcome_text(answer: &CallbackAnswer) -> String {
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
    store: &(impl Callbacks + ?Sized),
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
pub(super) async fn answer_callback(
    store: &(impl Callbacks + ?Sized),
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
    // The row's own change (an undo's row), else its bulk change's.
    let details = match row.request.as_deref() {
        Some(own) => crate::undo::row_change(own).map(|c| c.details).map_err(|e| {
            StoreError::Corrupt(format!("bulk change {} row {}: its own change is unreadable: {e}", bulk.id, row.id))
        })?,
        None => domain::BulkChangeRequest::from_stored(bulk.request.clone())
            .map(|r| r.details)
            .map_err(|e| StoreError::Corrupt(format!("bulk change {}: stored request unreadable: {e}", bulk.id)))?,
    };
    let mut outcome = result_outcome(&details, &statuses, &row.iccid, &callback.result);
    if outcome.status != RowStatus::Processed && (row.claims > 1 || bulk.retry_of.is_some()) {
        // This change may have reached ThingSpace before (a retry, or a row claimed again after its worker died):
        // its failure may only say the earlier request already did it ("Device is in state active; activate is
        // not allowed"). The row keeps waiting; when its wait ends a worker reads the device and settles it
        // (`poll`: done when the device shows the change, else failed with this request's status).
        info!(bulk_change_id = bulk.id, iccid = %row.iccid, request_id = %callback.request_id, reason = %outcome.details,
              "failure of a change that may have been sent before; settled by reading the device");
        return Ok(CallbackAnswer::Ignored(
            "a failure of a change that may have been sent before: settled by reading the device".into(),
        ));
    }
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
