//! A Verizon ThingSpace Connectivity Management (M2M) simulator: the OAuth
//! client-credentials token (1 h) and the M2M session token (20 min idle), five failed logins lock the account,
//! asynchronous device actions that answer a `requestId` and deliver one `CarrierService` callback per device
//! (after a delay; droppable), request status, the device list, and the device-state table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Harness, RecordedCall, basic_auth};

pub const M2M_PREFIX: &str = "/api/m2m/v1";

/// A line as ThingSpace holds it; `state` is lowercase as in list responses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TsDevice {
    pub iccid: String,
    pub imei: Option<String>,
    pub state: String,
    pub service_plan: Option<String>,
    pub mdn: Option<String>,
    pub ip_address: Option<String>,
    #[serde(default)]
    pub custom_fields: Vec<(String, String)>,
}

/// Knobs of the ThingSpace side that tests turn.
#[derive(Debug, Clone)]
pub struct TsBehaviour {
    pub token_ttl: Duration,
    pub session_idle: Duration,
    /// Delay before the per-device callbacks are sent.
    pub callback_delay: Duration,
    /// Callbacks are not sent at all (the results can still be polled).
    pub drop_callbacks: bool,
    /// Each callback is sent twice.
    pub duplicate_callbacks: bool,
    /// The callbacks of a request are sent last device first.
    pub reorder_callbacks: bool,
    /// Activation requests allowed per rolling minute (ThingSpace documents 100); more answer 429.
    pub activations_per_minute: usize,
    /// Devices whose part of any asynchronous request fails (reported in their callback and the request status).
    pub failing_iccids: Vec<String>,
    /// The callbacks of a request are delivered before the request's own answer (the race a fast carrier makes).
    pub callbacks_before_answer: bool,
}

impl Default for TsBehaviour {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(3600),
            session_idle: Duration::from_secs(1200),
            callback_delay: Duration::from_millis(50),
            drop_callbacks: false,
            duplicate_callbacks: false,
            reorder_callbacks: false,
            activations_per_minute: 100,
            failing_iccids: Vec::new(),
            callbacks_before_answer: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct TsAccount {
    pub account_name: String,
    pub app_key: String,
    pub app_secret: String,
    pub username: String,
    pub password: String,
    pub devices: BTreeMap<String, TsDevice>,
    pub callback: Option<(String, Option<String>, Option<String>)>,
    pub requests: BTreeMap<String, String>,
    failed_logins: u32,
    activations: std::collections::VecDeque<Instant>,
    access_tokens: BTreeMap<String, Instant>,
    sessions: BTreeMap<String, Instant>,
    counter: u64,
}

impl TsAccount {
    pub fn new(account_name: &str, app_key: &str, app_secret: &str, username: &str, password: &str) -> Self {
        Self {
            account_name: account_name.into(),
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    /// Adds a device to the account in `state` (a test's or the local stack's starting inventory).
    pub fn with_device(mut self, iccid: &str, imei: Option<&str>, state: &str, service_plan: Option<&str>) -> Self {
        let device = TsDevice {
            iccid: iccid.into(),
            imei: imei.map(str::to_string),
            state: state.into(),
            service_plan: service_plan.map(str::to_string),
            ..Default::default()
        };
        let device = if matches!(state, "active" | "suspend") { assign_line(device) } else { device };
        self.devices.insert(iccid.into(), device);
        self
    }

    pub fn locked(&self) -> bool {
        self.failed_logins >= 5
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{:08x}-{:04}", self.counter * 2_654_435_761 % 0xffff_ffff, self.counter)
    }
}

pub struct ThingSpaceState {
    pub account: Mutex<TsAccount>,
    pub behaviour: Mutex<TsBehaviour>,
    pub harness: Harness,
    http: reqwest::Client,
}

impl ThingSpaceState {
    pub fn device(&self, iccid: &str) -> Option<TsDevice> {
        self.account.lock().ok()?.devices.get(iccid).cloned()
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.harness.calls()
    }

    /// Ends every session now, as 20 idle minutes would.
    pub fn expire_sessions(&self) {
        if let Ok(mut a) = self.account.lock() {
            a.sessions.clear();
        }
    }

    pub fn failed_logins(&self) -> u32 {
        self.account.lock().map(|a| a.failed_logins).unwrap_or(0)
    }

    pub fn set_behaviour(&self, behaviour: TsBehaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    fn behaviour(&self) -> TsBehaviour {
        self.behaviour.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

fn fault(code: &str, message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"fault": {"code": code, "message": message, "description": message}})))
        .into_response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"errorCode": code, "errorMessage": message}))).into_response()
}

pub fn router(state: Arc<ThingSpaceState>) -> Router {
    Router::new()
        .route("/api/ts/v1/oauth2/token", post(token))
        .route(&format!("{M2M_PREFIX}/session/login"), post(login))
        .route(&format!("{M2M_PREFIX}/devices/actions/{{action}}"), post(device_action).put(device_action))
        .route(
            &format!("{M2M_PREFIX}/devices/{{service_type}}/actions/deviceId"),
            axum::routing::put(change_identifier),
        )
        .route(&format!("{M2M_PREFIX}/accounts/{{account}}/requests/{{request}}/status"), get(request_status))
        .route(&format!("{M2M_PREFIX}/callbacks/{{account}}"), post(register_callback))
        .with_state(state)
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
}

async fn token(State(state): State<Arc<ThingSpaceState>>, headers: HeaderMap, Form(form): Form<TokenForm>) -> Response {
    let ttl = state.behaviour().token_ttl;
    let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let valid = basic_auth(&headers).is_some_and(|(k, s)| k == account.app_key && s == account.app_secret);
    state.harness.record(
        "POST",
        "/api/ts/v1/oauth2/token",
        json!({"grant_type": form.grant_type}),
        if valid { StatusCode::OK } else { StatusCode::UNAUTHORIZED },
    );
    if !valid || form.grant_type != "client_credentials" {
        return fault("900901", "Invalid Credentials");
    }
    // Within its hour the same token comes back.
    let now = Instant::now();
    let existing = account.access_tokens.iter().find(|(_, expiry)| **expiry > now).map(|(t, e)| (t.clone(), *e));
    let (token, expiry) = match existing {
        Some(found) => found,
        None => {
            let token = account.next_id("at");
            account.access_tokens.insert(token.clone(), now + ttl);
            (token, now + ttl)
        }
    };
    Json(json!({"access_token": token, "scope": "ts.m2m", "token_type": "Bearer", "expires_in": expiry.duration_since(now).as_secs()})).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
}

fn check_bearer(account: &TsAccount, headers: &HeaderMap) -> Result<(), Response> {
    let now = Instant::now();
    match bearer(headers).and_then(|t| account.access_tokens.get(&t).copied()) {
        Some(expiry) if expiry > now => Ok(()),
        _ => Err(fault("900901", "Invalid Credentials")),
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(State(state): State<Arc<ThingSpaceState>>, headers: HeaderMap, Json(body): Json<Login>) -> Response {
    let path = format!("{M2M_PREFIX}/session/login");
    let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let recorded = json!({"username": body.username});
    if let Err(r) = check_bearer(&account, &headers) {
        state.harness.record("POST", &path, recorded, StatusCode::UNAUTHORIZED);
        return r;
    }
    if account.locked() {
        state.harness.record("POST", &path, recorded, StatusCode::BAD_REQUEST);
        return error(
            StatusCode::BAD_REQUEST,
            "UnifiedWebService.REQUEST_FAILED.UserLocked",
            "The user is locked; contact support.",
        );
    }
    if body.username != account.username || body.password != account.password {
        account.failed_logins += 1;
        state.harness.record("POST", &path, recorded, StatusCode::BAD_REQUEST);
        return error(
            StatusCode::BAD_REQUEST,
            "UnifiedWebService.REQUEST_FAILED.InvalidCredentials",
            "Invalid user name or password.",
        );
    }
    account.failed_logins = 0;
    let session = account.next_id("st");
    account.sessions.insert(session.clone(), Instant::now());
    state.harness.record("POST", &path, recorded, StatusCode::OK);
    Json(json!({"sessionToken": session, "expiresIn": state.behaviour().session_idle.as_secs()})).into_response()
}

/// Bearer and session token; a used session stays alive for another idle period.
fn admit(state: &ThingSpaceState, account: &mut TsAccount, headers: &HeaderMap) -> Result<(), Response> {
    check_bearer(account, headers)?;
    let idle = state.behaviour().session_idle;
    let now = Instant::now();
    let token = headers.get("vz-m2m-token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    match account.sessions.get(&token) {
        Some(last) if now.duration_since(*last) < idle => {
            account.sessions.insert(token, now);
            // The rate limit and injected 500s, as for every simulator (the chaos sweep turns them on).
            match state.harness.gate() {
                crate::common::Gate::Proceed => Ok(()),
                crate::common::Gate::Throttled(after) => {
                    let mut response = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "UnifiedWebService.REQUEST_FAILED.RateLimitExceeded",
                        "Rate limit exceeded.",
                    );
                    if after > 0
                        && let Ok(v) = axum::http::HeaderValue::from_str(&after.to_string())
                    {
                        response.headers_mut().insert("retry-after", v);
                    }
                    Err(response)
                }
                crate::common::Gate::Fail => Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UnifiedWebService.REQUEST_FAILED.InternalError",
                    "Internal server error.",
                )),
            }
        }
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "UnifiedWebService.REQUEST_FAILED.SessionTokenExpired",
            "Session token is invalid or expired.",
        )),
    }
}

fn device_iccids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            d["deviceIds"]
                .as_array()
                .and_then(|ids| ids.iter().find(|i| i["kind"] == "iccid"))
                .and_then(|i| i["id"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// ThingSpace's state table: the state an action leads to, if allowed from `from`.
fn next_state(action: &str, from: &str) -> Result<&'static str, String> {
    let to = match action {
        "activate" => "active",
        "suspend" => "suspend",
        "restore" => "active",
        "deactivate" => "deactive",
        other => return Err(format!("unknown action {other}")),
    };
    let allowed = match (from, to) {
        ("active", "deactive") | ("active", "suspend") => true,
        ("suspend", "active") => action == "restore",
        ("deactive", "active") | ("preactive", "active") => action == "activate",
        _ => false,
    };
    if allowed { Ok(to) } else { Err(format!("Device is in state {from}; {action} is not allowed.")) }
}

/// A request whose per-device results are still to be delivered.
struct Pending {
    request_id: String,
    action: String,
    results: Vec<(String, Result<Effect, String>)>,
}

async fn device_action(
    State(state): State<Arc<ThingSpaceState>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let add = action == "add";
    match accept_action(&state, action, &headers, body) {
        // Adding to inventory answers at once, after the devices were added: the write faults apply to its answer.
        Ok(added) if add && added.status().is_success() => state.harness.after_write(added).await,
        accepted => answer(state, accepted).await,
    }
}

/// An immediate answer as it is; an accepted asynchronous request answers its `requestId` and delivers its
/// per-device results later (or first, with `callbacks_before_answer`).
async fn answer(state: Arc<ThingSpaceState>, accepted: Result<Response, Pending>) -> Response {
    match accepted {
        Ok(answer) => answer,
        Err(Pending { request_id, action, results }) => {
            let lost = state.harness.take_apply_then_fail();
            let damage = if lost { None } else { state.harness.take_damaged_answer() };
            complete_later(state, request_id.clone(), action, results).await;
            if lost {
                return crate::common::bad_gateway();
            }
            let response = Json(json!({"requestId": request_id})).into_response();
            match damage {
                Some(damage) => damage.of(response).await,
                None => response,
            }
        }
    }
}

/// The request under the account's lock: an immediate answer, or the asynchronous work it started.
fn accept_action(
    state: &ThingSpaceState,
    action: String,
    headers: &HeaderMap,
    body: Value,
) -> Result<Response, Pending> {
    let path = format!("{M2M_PREFIX}/devices/actions/{action}");
    let mut account = match state.account.lock() {
        Ok(a) => a,
        Err(_) => return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    };
    if let Err(r) = admit(state, &mut account, headers) {
        state.harness.record("POST", &path, body.clone(), r.status());
        return Ok(r);
    }
    if action == "add" {
        let iccids = device_iccids(&body, "devicesToAdd");
        let results: Vec<Value> = iccids
            .iter()
            .map(|iccid| {
                let response = if account.devices.contains_key(iccid) {
                    "Error. Device already exists."
                } else {
                    account.devices.insert(
                        iccid.clone(),
                        TsDevice { iccid: iccid.clone(), state: "preactive".into(), ..Default::default() },
                    );
                    "Success"
                };
                json!({"deviceIds": [{"kind": "iccid", "id": iccid}], "response": response})
            })
            .collect();
        state.harness.record("POST", &path, body, StatusCode::OK);
        return Ok(Json(results).into_response());
    }
    if action == "delete" {
        let iccids = device_iccids(&body, "devicesToDelete");
        if iccids.len() > 100 {
            state.harness.record("POST", &path, body, StatusCode::BAD_REQUEST);
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "DeviceService.INPUT_INVALID.TooManyDevices",
                "At most 100 devices per delete request.",
            ));
        }
        let results: Vec<Value> = iccids
            .iter()
            .map(|iccid| {
                let (status, message) = match account.devices.get(iccid).map(|d| d.state.clone()) {
                    Some(state) if state == "deactive" => {
                        account.devices.remove(iccid);
                        ("Success", None)
                    }
                    Some(_) => ("Failed", Some("The device is not in deactive state.")),
                    None => ("Failed", Some("The device was not found.")),
                };
                json!({"deviceIds": [{"kind": "iccid", "id": iccid}], "status": status, "message": message})
            })
            .collect();
        state.harness.record("POST", &path, body, StatusCode::OK);
        return Ok(Json(results).into_response());
    }
    if action == "list" {
        let wanted = body["deviceId"]["id"].as_str().map(str::to_string);
        let devices: Vec<Value> = account
            .devices
            .values()
            .filter(|d| wanted.as_ref().is_none_or(|w| *w == d.iccid))
            .map(list_entry)
            .collect();
        state.harness.record("POST", &path, body, StatusCode::OK);
        return Ok(Json(json!({"hasMoreData": false, "devices": devices})).into_response());
    }
    if action == "activate"
        && (body["servicePlan"].as_str().unwrap_or_default().is_empty()
            || body["mdnZipCode"].as_str().unwrap_or_default().is_empty())
    {
        state.harness.record("POST", &path, body, StatusCode::BAD_REQUEST);
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "DeviceService.INPUT_INVALID.MissingField",
            "servicePlan and mdnZipCode are required.",
        ));
    }
    if action == "activate" {
        let limit = state.behaviour().activations_per_minute;
        let now = Instant::now();
        while account.activations.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            account.activations.pop_front();
        }
        if account.activations.len() >= limit {
            state.harness.record("POST", &path, body, StatusCode::TOO_MANY_REQUESTS);
            return Ok(error(
                StatusCode::TOO_MANY_REQUESTS,
                "UnifiedWebService.REQUEST_FAILED.TooManyRequests",
                "Activation requests are limited to 100 per minute.",
            ));
        }
        account.activations.push_back(now);
    }
    let iccids = device_iccids(&body, "devices");
    let failing = state.behaviour().failing_iccids;
    let mut results = Vec::new();
    for iccid in &iccids {
        let outcome = match (account.devices.get(iccid), action.as_str()) {
            (None, _) => Err("Device not found in the account.".to_string()),
            _ if failing.contains(iccid) => Err("The request failed for this device at the network.".to_string()),
            (Some(_), "plan") => match body["servicePlan"].as_str() {
                Some(plan) => Ok(Effect::Plan(plan.to_string())),
                None => Err("servicePlan is required.".to_string()),
            },
            (Some(_), "customFields") => {
                let fields: Vec<(String, String)> = body["customFieldsToUpdate"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| Some((f["key"].as_str()?.to_string(), f["value"].as_str()?.to_string())))
                    .collect();
                if fields.iter().any(|(k, v)| !k.starts_with("CustomField") || v.chars().count() > 50) {
                    Err("DeviceService.INPUT_INVALID.CustomField.InvalidName".to_string())
                } else {
                    Ok(Effect::Fields(fields))
                }
            }
            (Some(d), _) => next_state(&action, &d.state)
                .map(|to| Effect::State { to, service_plan: body["servicePlan"].as_str().map(str::to_string) }),
        };
        results.push((iccid.clone(), outcome));
    }
    let request_id = account.next_id("req");
    account.requests.insert(request_id.clone(), "Pending".into());
    drop(account);
    let method = if matches!(action.as_str(), "plan" | "customFields") { "PUT" } else { "POST" };
    state.harness.record(method, &path, body, StatusCode::OK);
    Err(Pending { request_id, action, results })
}

/// What a device's part of an asynchronous request does when the carrier has processed it.
#[derive(Debug, Clone)]
enum Effect {
    State { to: &'static str, service_plan: Option<String> },
    Plan(String),
    Fields(Vec<(String, String)>),
    Identifier { new_iccid: Option<String>, new_imei: Option<String> },
}

/// A line's number and address, as activation assigns them.
fn assign_line(mut device: TsDevice) -> TsDevice {
    if device.mdn.is_none() {
        let b = device.iccid.as_bytes();
        let n = b.len();
        device.mdn = Some(format!("555{}", &device.iccid[n.saturating_sub(7)..]));
        device.ip_address = Some(format!("10.{}.{}.{}", n % 250, b[n.saturating_sub(2)] % 250, b[n - 1] % 250));
    }
    device
}

/// After the callback delay: applies each device's effect, settles the request status, and sends one
/// `CarrierService` callback per device (unless callbacks are dropped; duplicated or reordered when asked).
async fn complete_later(
    state: Arc<ThingSpaceState>,
    request_id: String,
    action: String,
    results: Vec<(String, Result<Effect, String>)>,
) {
    let behaviour = state.behaviour();
    let delivery = tokio::spawn(async move {
        tokio::time::sleep(behaviour.callback_delay).await;
        let mut sent = Vec::new();
        let callback = {
            let Ok(mut account) = state.account.lock() else { return };
            for (iccid, outcome) in results {
                let outcome = outcome.and_then(|effect| apply(&mut account, &iccid, effect));
                sent.push((iccid, outcome));
            }
            let all_ok = sent.iter().all(|(_, r)| r.is_ok());
            account.requests.insert(request_id.clone(), if all_ok { "Success".into() } else { "Failure".into() });
            account.callback.clone()
        };
        let Some((url, user, password)) = callback.filter(|_| !behaviour.drop_callbacks) else { return };
        if behaviour.reorder_callbacks {
            sent.reverse();
        }
        for (iccid, outcome) in sent {
            let mut body = json!({
                "requestId": request_id,
                "deviceIds": [{"kind": "iccid", "id": iccid}],
                "username": user, "password": password,
                "status": if outcome.is_ok() { "Success" } else { "Failed" },
            });
            match &outcome {
                Err(why) => body["faultResponse"] = json!({"faultstring": why}),
                Ok(Some(d)) if action == "activate" => {
                    body["deviceResponse"] = json!({"activateResponse": {"deviceIds": [
                        {"kind": "iccid", "id": d.iccid}, {"kind": "msisdn", "id": d.mdn}], "ipAddress": d.ip_address}});
                }
                Ok(_) => {}
            }
            let times = if behaviour.duplicate_callbacks { 2 } else { 1 };
            for _ in 0..times {
                let status = match state.http.post(&url).json(&body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                let mut recorded = body.clone();
                recorded["password"] = json!("***");
                state.harness.record(
                    "CALLBACK",
                    &url,
                    recorded,
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                );
            }
        }
    });
    if behaviour.callbacks_before_answer {
        let _ = delivery.await;
    }
}

/// Applies one device's effect; the device as it is afterwards (for an activation's number and address).
fn apply(account: &mut TsAccount, iccid: &str, effect: Effect) -> Result<Option<TsDevice>, String> {
    match effect {
        Effect::Identifier { new_iccid, new_imei } => {
            let mut device = account.devices.remove(iccid).ok_or("Device not found in the account.")?;
            if let Some(imei) = new_imei {
                device.imei = Some(imei);
            }
            let key = new_iccid.unwrap_or_else(|| iccid.to_string());
            device.iccid = key.clone();
            account.devices.insert(key, device.clone());
            Ok(Some(device))
        }
        effect => {
            let device = account.devices.get_mut(iccid).ok_or("Device not found in the account.")?;
            match effect {
                Effect::State { to, service_plan } => {
                    // The state may have moved since the request was accepted.
                    if !(device.state == to || to == "active" || next_state_allowed(&device.state, to)) {
                        return Err(format!("Device is in state {}.", device.state));
                    }
                    device.state = to.to_string();
                    if let Some(plan) = service_plan {
                        device.service_plan = Some(plan);
                    }
                    if to == "active" {
                        *device = assign_line(device.clone());
                    }
                }
                Effect::Plan(plan) => device.service_plan = Some(plan),
                Effect::Fields(fields) => {
                    for (k, v) in fields {
                        device.custom_fields.retain(|(key, _)| *key != k);
                        device.custom_fields.push((k, v));
                    }
                }
                Effect::Identifier { .. } => {}
            }
            Ok(Some(device.clone()))
        }
    }
}

fn next_state_allowed(from: &str, to: &str) -> bool {
    matches!((from, to), ("active", "deactive") | ("active", "suspend"))
}

/// `PUT /devices/{serviceType}/actions/deviceId`: the device must be active and the new identifier unknown.
async fn change_identifier(
    State(state): State<Arc<ThingSpaceState>>,
    Path(service_type): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let accepted = accept_identifier_change(&state, &service_type, &headers, body);
    answer(state, accepted).await
}

/// The device must be active and the new identifier unknown; the change itself is asynchronous.
fn accept_identifier_change(
    state: &ThingSpaceState,
    service_type: &str,
    headers: &HeaderMap,
    body: Value,
) -> Result<Response, Pending> {
    let path = format!("{M2M_PREFIX}/devices/{service_type}/actions/deviceId");
    let mut account = match state.account.lock() {
        Ok(a) => a,
        Err(_) => return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    };
    if let Err(r) = admit(state, &mut account, headers) {
        return Ok(r);
    }
    let id_of = |key: &str, kind: &str| {
        body[key]
            .as_array()
            .and_then(|ids| ids.iter().find(|i| i["kind"] == kind))
            .and_then(|i| i["id"].as_str())
            .map(str::to_string)
    };
    let (old, new_iccid, new_imei) =
        (id_of("deviceIds", "iccid"), id_of("deviceIdsTo", "iccid"), id_of("deviceIdsTo", "imei"));
    let refused = match (&old, old.as_ref().and_then(|o| account.devices.get(o))) {
        (None, _) | (_, None) => Some("Device not found in the account."),
        (_, Some(d)) if d.state != "active" => Some("The device must be active to change its identifier."),
        _ if new_iccid.as_ref().is_some_and(|n| account.devices.contains_key(n)) => {
            Some("The new device already exists.")
        }
        _ => None,
    };
    if let Some(why) = refused {
        state.harness.record("PUT", &path, body, StatusCode::BAD_REQUEST);
        return Ok(error(StatusCode::BAD_REQUEST, "DeviceService.REQUEST_FAILED.ChangeIdentifier", why));
    }
    let request_id = account.next_id("req");
    account.requests.insert(request_id.clone(), "Pending".into());
    drop(account);
    state.harness.record("PUT", &path, body, StatusCode::OK);
    let results = vec![(old.unwrap_or_default(), Ok(Effect::Identifier { new_iccid, new_imei }))];
    Err(Pending { request_id, action: "deviceId".into(), results })
}

fn list_entry(d: &TsDevice) -> Value {
    let mut ids = vec![json!({"kind": "iccid", "id": d.iccid})];
    if let Some(imei) = &d.imei {
        ids.push(json!({"kind": "imei", "id": imei}));
    }
    if let Some(mdn) = &d.mdn {
        ids.push(json!({"kind": "msisdn", "id": mdn}));
    }
    let fields: Vec<Value> = d.custom_fields.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    json!({"deviceIds": ids, "ipAddress": d.ip_address, "customFields": fields,
           "carrierInformations": [{"carrierName": "Verizon Wireless", "servicePlan": d.service_plan, "state": d.state}]})
}

async fn request_status(
    State(state): State<Arc<ThingSpaceState>>,
    Path((account_name, request_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{M2M_PREFIX}/accounts/{account_name}/requests/{request_id}/status");
    let mut account = match state.account.lock() {
        Ok(a) => a,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if let Err(r) = admit(&state, &mut account, &headers) {
        return r;
    }
    let status = account.requests.get(&request_id).cloned();
    state.harness.record(
        "GET",
        &path,
        Value::Null,
        if status.is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND },
    );
    match status {
        Some(s) => Json(json!({"requestId": request_id, "status": s})).into_response(),
        None => error(StatusCode::NOT_FOUND, "UnifiedWebService.REQUEST_FAILED.RequestNotFound", "Request not found."),
    }
}

async fn register_callback(
    State(state): State<Arc<ThingSpaceState>>,
    Path(account_name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("{M2M_PREFIX}/callbacks/{account_name}");
    let mut account = match state.account.lock() {
        Ok(a) => a,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if let Err(r) = admit(&state, &mut account, &headers) {
        return r;
    }
    let url = body["url"].as_str().unwrap_or_default().to_string();
    account.callback =
        Some((url, body["username"].as_str().map(str::to_string), body["password"].as_str().map(str::to_string)));
    state.harness.record("POST", &path, json!({"name": body["name"], "url": body["url"]}), StatusCode::OK);
    Json(json!({"accountName": account_name, "serviceName": body["name"]})).into_response()
}

pub struct ThingSpaceSim {
    pub state: Arc<ThingSpaceState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ThingSpaceSim {
    pub async fn start(listen: SocketAddr, account: TsAccount, behaviour: TsBehaviour) -> std::io::Result<Self> {
        let state = Arc::new(ThingSpaceState {
            account: Mutex::new(account),
            behaviour: Mutex::new(behaviour),
            harness: Harness::new(Default::default()),
            http: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "ThingSpace simulator stopped");
            }
        });
        Ok(Self { state, addr, task })
    }

    /// The host root (`/api/ts/v1/...` for tokens, `/api/m2m/v1/...` for the rest).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ThingSpaceSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
