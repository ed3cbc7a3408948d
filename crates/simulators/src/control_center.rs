//! A Cisco IoT Control Center (Jasper) REST simulator, `rws/api/v1`:
//! Basic auth (user:API key), Get/Edit Device Details, audit trail, search with required `modifiedSince`,
//! the status rules (no return to pre-activation, re-activation refused) and `{errorMessage, errorCode}` bodies.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Faults, Gate, Harness, RecordedCall, basic_auth};

pub const API_PREFIX: &str = "/rws/api/v1";
const STATUSES: &[&str] =
    &["ACTIVATED", "ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "PURGED", "REPLACED", "RETIRED", "TEST_READY"];

/// A SIM as Control Center holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SimDevice {
    pub iccid: String,
    pub status: String,
    #[serde(default)]
    pub rate_plan: Option<String>,
    #[serde(default)]
    pub communication_plan: Option<String>,
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    #[serde(default, rename = "modemID")]
    pub modem_id: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default)]
    pub msisdn: Option<String>,
    #[serde(default)]
    pub date_updated: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub field: String,
    pub prior_value: Option<String>,
    pub value: Option<String>,
    pub effective_date: String,
    pub status: String,
    pub user_name: String,
}

/// The account the simulator serves: its credentials, rate plans, SIMs and audit trail.
#[derive(Debug, Default)]
pub struct Account {
    pub username: String,
    pub api_key: String,
    pub rate_plans: HashSet<String>,
    /// Communication plans of the account; empty means any is accepted.
    pub communication_plans: HashSet<String>,
    pub devices: BTreeMap<String, SimDevice>,
    pub audit: BTreeMap<String, Vec<AuditEntry>>,
}

pub struct ControlCenterState {
    pub account: Mutex<Account>,
    pub harness: Harness,
}

impl ControlCenterState {
    pub fn device(&self, iccid: &str) -> Option<SimDevice> {
        self.account.lock().ok()?.devices.get(iccid).cloned()
    }

    pub fn upsert_devices(&self, devices: Vec<SimDevice>) {
        if let Ok(mut account) = self.account.lock() {
            for d in devices {
                account.devices.insert(d.iccid.clone(), d);
            }
        }
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.harness.calls()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"errorMessage": message, "errorCode": code}))).into_response()
}

/// Builds the simulator's router (API and `/_sim` admin routes).
pub fn router(state: Arc<ControlCenterState>) -> Router {
    Router::new()
        .route(&format!("{API_PREFIX}/devices/{{iccid}}"), get(get_device).put(edit_device))
        .route(&format!("{API_PREFIX}/devices/{{iccid}}/auditTrails"), get(audit_trail))
        .route(&format!("{API_PREFIX}/devices"), get(search_devices))
        .route(&format!("{API_PREFIX}/echo/{{param}}"), get(echo))
        .route("/_sim/calls", get(admin_calls).delete(admin_clear_calls))
        .route("/_sim/config", get(admin_get_faults).post(admin_set_faults))
        .route("/_sim/devices", post(admin_upsert_devices))
        .route("/_sim/devices/{iccid}", get(admin_device))
        .with_state(state)
}

/// Runs auth, rate limit and fault injection; `Ok(())` means the call may proceed.
fn admit(
    state: &ControlCenterState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<(), Response> {
    let authorised = {
        let account =
            state.account.lock().map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "10000000", "state lock"))?;
        basic_auth(headers).is_some_and(|(u, k)| u == account.username && k == account.api_key)
    };
    if !authorised {
        state.harness.record(method, path, body.clone(), StatusCode::UNAUTHORIZED);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "10000001",
            "Invalid credentials: user name or API key is incorrect.",
        ));
    }
    match state.harness.gate() {
        Gate::Proceed => Ok(()),
        Gate::Throttled(retry_after) => {
            state.harness.record(method, path, body.clone(), StatusCode::TOO_MANY_REQUESTS);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "40000029",
                "Rate limit exceeded: too many requests for this account.",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
            Err(response)
        }
        Gate::Fail => {
            state.harness.record(method, path, body.clone(), StatusCode::INTERNAL_SERVER_ERROR);
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "10000000", "Internal server error."))
        }
    }
}

async fn answer(
    state: &ControlCenterState,
    method: &str,
    path: &str,
    body: Value,
    status: StatusCode,
    response: Response,
) -> Response {
    state.harness.record(method, path, body, status);
    let latency = state.harness.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

async fn get_device(
    State(state): State<Arc<ControlCenterState>>,
    Path(iccid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{API_PREFIX}/devices/{iccid}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    match state.device(&iccid) {
        Some(d) => answer(&state, "GET", &path, Value::Null, StatusCode::OK, Json(d).into_response()).await,
        None => {
            answer(
                &state,
                "GET",
                &path,
                Value::Null,
                StatusCode::NOT_FOUND,
                error(StatusCode::NOT_FOUND, "10000001", "Invalid ICCID."),
            )
            .await
        }
    }
}

/// Applies an edit under Control Center's rules; returns the error response when refused.
fn apply_edit(account: &mut Account, iccid: &str, edit: &Value, user: &str, take: bool) -> Result<(), Response> {
    let obj = edit
        .as_object()
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "10000024", "Request body must be a JSON object."))?;
    const EDITABLE: &[&str] =
        &["status", "ratePlan", "communicationPlan", "deviceID", "modemID", "customer", "effectiveDate"];
    if let Some(unknown) = obj.keys().find(|k| !EDITABLE.contains(&k.as_str()) && !k.starts_with("accountCustom")) {
        return Err(error(StatusCode::BAD_REQUEST, "10000024", &format!("Invalid field: {unknown}.")));
    }
    if !obj.keys().any(|k| k != "effectiveDate") {
        return Err(error(StatusCode::BAD_REQUEST, "10000024", "At least one device field must be given."));
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let rate_plans = account.rate_plans.clone();
    let communication_plans = account.communication_plans.clone();
    let stored =
        account.devices.get_mut(iccid).ok_or_else(|| error(StatusCode::NOT_FOUND, "10000001", "Invalid ICCID."))?;
    // Every field is checked on a copy first: an edit is applied whole or not at all. One that does not take is
    // checked and answered like any other, then left unapplied.
    let mut edited = stored.clone();
    let device = &mut edited;
    let mut changes: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    if let Some(status) = text("status") {
        if !STATUSES.contains(&status.as_str()) {
            return Err(error(StatusCode::BAD_REQUEST, "10000003", &format!("Invalid status: {status}.")));
        }
        let from = device.status.clone();
        let pre = |s: &str| match s {
            "INVENTORY" => Some(0),
            "TEST_READY" => Some(1),
            "ACTIVATION_READY" => Some(2),
            _ => None,
        };
        if from == "ACTIVATED" && status == "ACTIVATED" {
            return Err(error(StatusCode::BAD_REQUEST, "10030000", "SIM is already activated."));
        }
        if matches!(status.as_str(), "TEST_READY" | "ACTIVATION_READY" | "INVENTORY")
            && !matches!((pre(&from), pre(&status)), (Some(f), Some(t)) if f <= t)
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "10000029",
                "SIM may not move back to a pre-activation status.",
            ));
        }
        if from == "PURGED" && status != "PURGED" {
            return Err(error(StatusCode::BAD_REQUEST, "1000512", "SIM is purged."));
        }
        changes.push(("status".into(), Some(from), Some(status.clone())));
        device.status = status;
    }
    if let Some(plan) = text("ratePlan") {
        if !rate_plans.is_empty() && !rate_plans.contains(&plan) {
            return Err(error(StatusCode::BAD_REQUEST, "10000016", &format!("Invalid rate plan: {plan}.")));
        }
        changes.push(("ratePlan".into(), device.rate_plan.clone(), Some(plan.clone())));
        device.rate_plan = Some(plan);
    }
    if let Some(plan) = text("communicationPlan") {
        if !communication_plans.is_empty() && !communication_plans.contains(&plan) {
            return Err(error(StatusCode::BAD_REQUEST, "10000017", &format!("Invalid communication plan: {plan}.")));
        }
        changes.push(("communicationPlan".into(), device.communication_plan.clone(), Some(plan.clone())));
        device.communication_plan = Some(plan);
    }
    if let Some(label) = text("deviceID") {
        changes.push(("deviceID".into(), device.device_id.clone(), Some(label.clone())));
        device.device_id = Some(label);
    }
    if let Some(modem) = text("modemID") {
        changes.push(("modemID".into(), device.modem_id.clone(), Some(modem.clone())));
        device.modem_id = Some(modem);
    }
    let now = Utc::now().to_rfc3339();
    device.date_updated = Some(now.clone());
    if take {
        *stored = edited;
    }
    let trail = account.audit.entry(iccid.to_string()).or_default();
    for (field, prior, value) in changes {
        trail.insert(
            0,
            AuditEntry {
                field,
                prior_value: prior,
                value,
                effective_date: now.clone(),
                status: if take { "Executed" } else { "Error" }.into(),
                user_name: user.to_string(),
            },
        );
    }
    Ok(())
}

async fn edit_device(
    State(state): State<Arc<ControlCenterState>>,
    Path(iccid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("{API_PREFIX}/devices/{iccid}");
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if let Err(r) = admit(&state, &headers, "PUT", &path, &parsed) {
        return r;
    }
    if state.harness.faults().locked_iccids.contains(&iccid) {
        let response =
            error(StatusCode::BAD_REQUEST, "10000099", "SIM is locked by the operator and cannot be edited.");
        return answer(&state, "PUT", &path, parsed, StatusCode::BAD_REQUEST, response).await;
    }
    let user = basic_auth(&headers).map(|(u, _)| u).unwrap_or_default();
    let result = match state.account.lock() {
        Ok(mut account) => apply_edit(&mut account, &iccid, &parsed, &user, !state.harness.faults().edits_do_not_take),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "10000000", "state lock")),
    };
    match result {
        Ok(()) => {
            let response = Json(json!({"iccid": iccid})).into_response();
            let response = answer(&state, "PUT", &path, parsed, StatusCode::OK, response).await;
            state.harness.after_write(response).await
        }
        Err(response) => {
            let status = response.status();
            answer(&state, "PUT", &path, parsed, status, response).await
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paging {
    page_size: Option<usize>,
    page_number: Option<usize>,
    modified_since: Option<String>,
    days_of_history: Option<u32>,
}

impl Paging {
    /// Control Center's paging: at most 50 a page, pages from 1. The page's items and whether it is the last.
    fn page<T: Clone>(&self, items: &[T]) -> (Vec<T>, usize, bool) {
        let (size, page) = (self.page_size.unwrap_or(50).clamp(1, 50), self.page_number.unwrap_or(1).max(1));
        let slice = items.iter().skip((page - 1) * size).take(size).cloned().collect();
        (slice, page, page * size >= items.len())
    }
}

/// A 400 with Control Center's `10000003` (invalid or missing parameter), recorded like any answer.
async fn invalid_parameter(state: &ControlCenterState, path: &str, message: &str) -> Response {
    let response = error(StatusCode::BAD_REQUEST, "10000003", message);
    answer(state, "GET", path, Value::Null, StatusCode::BAD_REQUEST, response).await
}

async fn audit_trail(
    State(state): State<Arc<ControlCenterState>>,
    Path(iccid): Path<String>,
    Query(q): Query<Paging>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{API_PREFIX}/devices/{iccid}/auditTrails");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    if q.days_of_history.is_some_and(|d| d > 365) {
        return invalid_parameter(&state, &path, "daysOfHistory must be at most 365.").await;
    }
    let entries = state.account.lock().ok().and_then(|a| a.audit.get(&iccid).cloned()).unwrap_or_default();
    let (slice, page, last_page) = q.page(&entries);
    let body = json!({"iccid": iccid, "timestamp": Utc::now().to_rfc3339(), "pageNumber": page, "lastPage": last_page, "deviceAuditTrails": slice});
    answer(&state, "GET", &path, Value::Null, StatusCode::OK, Json(body).into_response()).await
}

async fn search_devices(
    State(state): State<Arc<ControlCenterState>>,
    Query(q): Query<Paging>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{API_PREFIX}/devices");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    if q.modified_since.is_none() {
        return invalid_parameter(&state, &path, "ModifiedSince is required.").await;
    }
    let devices: Vec<Value> = state
        .account
        .lock()
        .map(|a| a.devices.values().map(|d| json!({"iccid": d.iccid, "status": d.status, "ratePlan": d.rate_plan, "communicationPlan": d.communication_plan})).collect())
        .unwrap_or_default();
    let (slice, page, last_page) = q.page(&devices);
    let body = json!({"devices": slice, "pageNumber": page, "lastPage": last_page});
    answer(&state, "GET", &path, Value::Null, StatusCode::OK, Json(body).into_response()).await
}

async fn echo(State(state): State<Arc<ControlCenterState>>, Path(param): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("{API_PREFIX}/echo/{param}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    answer(&state, "GET", &path, Value::Null, StatusCode::OK, Json(json!({"param": param})).into_response()).await
}

async fn admin_calls(State(state): State<Arc<ControlCenterState>>) -> Json<Vec<RecordedCall>> {
    Json(state.calls())
}

async fn admin_clear_calls(State(state): State<Arc<ControlCenterState>>) -> StatusCode {
    state.harness.clear_calls();
    StatusCode::NO_CONTENT
}

async fn admin_get_faults(State(state): State<Arc<ControlCenterState>>) -> Json<Faults> {
    Json(state.harness.faults())
}

async fn admin_set_faults(State(state): State<Arc<ControlCenterState>>, Json(faults): Json<Faults>) -> Json<Faults> {
    state.harness.set_faults(faults.clone());
    Json(faults)
}

async fn admin_upsert_devices(
    State(state): State<Arc<ControlCenterState>>,
    Json(devices): Json<Vec<SimDevice>>,
) -> StatusCode {
    state.upsert_devices(devices);
    StatusCode::NO_CONTENT
}

async fn admin_device(State(state): State<Arc<ControlCenterState>>, Path(iccid): Path<String>) -> Response {
    match state.device(&iccid) {
        Some(d) => Json(d).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A running Control Center simulator.
pub struct ControlCenterSim {
    pub state: Arc<ControlCenterState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ControlCenterSim {
    /// Starts on `listen` (port 0 for a free one).
    pub async fn start(listen: SocketAddr, account: Account, faults: Faults) -> std::io::Result<Self> {
        let state = Arc::new(ControlCenterState { account: Mutex::new(account), harness: Harness::new(faults) });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "Control Center simulator stopped");
            }
        });
        Ok(Self { state, addr, task })
    }

    /// The base URL a client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.addr)
    }

    /// Successful status changes recorded for one ICCID (the "sent twice" check).
    pub fn applied_status_changes(&self, iccid: &str) -> usize {
        let path = format!("{API_PREFIX}/devices/{iccid}");
        self.state
            .calls()
            .iter()
            .filter(|c| c.method == "PUT" && c.path == path && c.status == 200 && c.body.get("status").is_some())
            .count()
    }
}

impl Drop for ControlCenterSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
