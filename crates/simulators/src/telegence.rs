//! An AT&T Telegence (Mobility) simulator: `app-id`/`app-secret` on every
//! call; the activation POST (1 to 200 services) answered with `pending` entries that share one request id, which
//! a later status GET moves to `active` with a new subscriber number (or `rejected`, or leaves `pending`, as a
//! test asks); line details GET and PATCH (status `mode`, plan `singleUserCode`, `sim`/`IMEI` swaps, feature
//! removals); the billing-account GET; `404 {"id","description":"/service/"}` for an unknown line. Latency, 429,
//! 5xx and lost answers come from the shared harness, and every call is recorded.
//!
//! Where the reference marks a fact **[guess]** (casing, status codes), this simulator makes the same choice as
//! the client (`carriers::telegence`), so both change together.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Harness, RecordedCall};

pub const ACTIVATION_PATH: &str = "/sp/mobilityactivations/api/v1/serviceactivation";
pub const LINE_PATH: &str = "/sp/mobility/lineconfig/api/v1/service";
pub const BILLING_ACCOUNT_PATH: &str = "/sp/mobility/billingmgmt/api/v1/billingaccount";
/// "API only allow maximum of 200 service activations per request".
pub const MAX_ACTIVATIONS_PER_REQUEST: usize = 200;

/// A line as Telegence holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TgLine {
    pub subscriber_number: String,
    /// `A`, `S` or `C`.
    pub status: String,
    pub ban: String,
    pub iccid: String,
    pub imei: Option<String>,
    /// The rate plan SOC (`singleUserCode`).
    pub plan: Option<String>,
    pub zip: Option<String>,
    /// Feature SOCs (`offeringCode<n>`).
    #[serde(default)]
    pub features: Vec<String>,
}

/// What becomes of an activation at its next status read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationFate {
    /// `active` with a new subscriber number.
    #[default]
    Activate,
    /// `rejected` with an error.
    Reject,
    /// Stays `pending` forever.
    StayPending,
}

/// Knobs of the Telegence side that tests turn.
#[derive(Debug, Clone, Default)]
pub struct TgBehaviour {
    /// Status reads of a request that still answer `pending` before its entries settle.
    pub pending_reads: u32,
    /// Fates by ICCID (default: activated).
    pub fates: BTreeMap<String, ActivationFate>,
    /// Lines whose swap answers `404 /service/` (an eSIM-only device, or a line that cannot swap).
    pub unswappable: BTreeSet<String>,
    /// Rate plans the account has; empty: any plan is accepted.
    pub plans: BTreeSet<String>,
    /// Changes of these lines (subscriber numbers) are applied, then answered 200 with an empty body (a gateway
    /// that cut the answer).
    pub empty_answers_for: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Activation {
    request: Value,
    iccid: String,
    status_reads: u32,
    status: String,
    subscriber_number: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default)]
pub struct TgAccount {
    pub app_id: String,
    pub app_secret: String,
    /// Lines by subscriber number.
    pub lines: BTreeMap<String, TgLine>,
    /// Billing accounts (BAN → FAN).
    pub billing_accounts: BTreeMap<String, String>,
    requests: BTreeMap<String, Vec<Activation>>,
    counter: u64,
    /// The last subscriber number handed out (numbers are never given twice).
    last_number: u64,
}

impl TgAccount {
    pub fn new(app_id: &str, app_secret: &str) -> Self {
        Self { app_id: app_id.into(), app_secret: app_secret.into(), ..Default::default() }
    }

    pub fn with_line(mut self, line: TgLine) -> Self {
        self.lines.insert(line.subscriber_number.clone(), line);
        self
    }

    pub fn with_billing_account(mut self, ban: &str, fan: &str) -> Self {
        self.billing_accounts.insert(ban.into(), fan.into());
        self
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A subscriber number no line has.
    fn new_number(&mut self) -> String {
        loop {
            self.last_number += 1;
            let number = format!("2145{:06}", 500_000 + self.last_number % 500_000);
            if !self.lines.contains_key(&number) {
                return number;
            }
        }
    }
}

pub struct TelegenceState {
    pub account: Mutex<TgAccount>,
    pub behaviour: Mutex<TgBehaviour>,
    pub harness: Harness,
}

impl TelegenceState {
    pub fn line(&self, subscriber_number: &str) -> Option<TgLine> {
        self.account.lock().ok()?.lines.get(subscriber_number).cloned()
    }

    /// The line that holds `iccid`, if any.
    pub fn line_of_iccid(&self, iccid: &str) -> Option<TgLine> {
        self.account.lock().ok()?.lines.values().find(|l| l.iccid == iccid).cloned()
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.harness.calls()
    }

    pub fn set_behaviour(&self, behaviour: TgBehaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    fn behaviour(&self) -> TgBehaviour {
        self.behaviour.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// Telegence's error body: `{"id": "<uuid-like>", "description": "..."}`.
fn error(status: StatusCode, id: u64, description: &str) -> Response {
    (status, Json(json!({"id": format!("{id:08x}-4c63-11f0-8b71-06c879028863"), "description": description})))
        .into_response()
}

pub fn router(state: Arc<TelegenceState>) -> Router {
    Router::new()
        .route(ACTIVATION_PATH, post(activate))
        .route(&format!("{ACTIVATION_PATH}/{{request_id}}"), get(activation_status))
        .route(&format!("{LINE_PATH}/{{subscriber}}"), get(get_line).patch(patch_line))
        // A PATCH or GET with an empty subscriber number reaches `.../service/` (the legacy system sent such calls): the same 404.
        .route(&format!("{LINE_PATH}/"), get(no_line).patch(no_line))
        .route(&format!("{BILLING_ACCOUNT_PATH}/{{ban}}"), get(billing_account))
        .with_state(state)
}

/// Both headers, then the harness's rate limit and injected failures.
fn admit(state: &TelegenceState, headers: &HeaderMap, method: &str, path: &str, body: &Value) -> Result<(), Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let authorised = match state.account.lock() {
        Ok(a) => header("app-id") == a.app_id && header("app-secret") == a.app_secret && !a.app_id.is_empty(),
        Err(_) => false,
    };
    if !authorised {
        state.harness.record(method, path, body.clone(), StatusCode::UNAUTHORIZED);
        return Err(error(StatusCode::UNAUTHORIZED, 401, "invalid app-id or app-secret"));
    }
    state.harness.admit(method, path, body, |status, message| error(status, u64::from(status.as_u16()), message))
}

/// Records the call, then its latency; a write that succeeded may then hang or lose its answer.
async fn answer(state: &TelegenceState, method: &str, path: &str, body: Value, response: Response) -> Response {
    let write = method != "GET" && response.status().is_success();
    let response = state.harness.answer(method, path, body, response).await;
    if write { state.harness.after_write(response).await } else { response }
}

fn characteristic<'a>(service: &'a Value, name: &str) -> Option<&'a str> {
    service["serviceCharacteristic"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|c| c["value"].as_str())
}

fn line_details(line: &TgLine) -> Value {
    let mut characteristics =
        vec![json!({"name": "subscriberStatus", "value": line.status}), json!({"name": "sim", "value": line.iccid})];
    let mut push = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            characteristics.push(json!({"name": name, "value": v}));
        }
    };
    push("singleUserCode", &line.plan);
    push("BLIMEI", &line.imei);
    push("serviceZipCode", &line.zip);
    for (n, feature) in line.features.iter().enumerate() {
        characteristics.push(json!({"name": format!("offeringCode{}", n + 1), "value": feature}));
    }
    json!({"subscriberNumber": line.subscriber_number, "billingAccountNumber": line.ban,
           "serviceCharacteristic": characteristics})
}

fn activation_entry(request_id: &str, a: &Activation) -> Value {
    json!({
        "id": request_id,
        "interactionStatus": a.status,
        "interactionDateComplete": if a.status == "pending" { Value::Null } else { json!("2026-12-02T00:00:00Z") },
        "service": {
            "name": "",
            "status": a.status,
            "subscriberNumber": a.subscriber_number,
            "error": a.error,
            "serviceCharacteristic": [{"name": "sim", "value": a.iccid}],
        }
    })
}

async fn activate(State(state): State<Arc<TelegenceState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(r) = admit(&state, &headers, "POST", ACTIVATION_PATH, &body) {
        return r;
    }
    let response = {
        let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        let n = account.next();
        match body.as_array() {
            None => error(StatusCode::BAD_REQUEST, n, "the body must be an array of service activations"),
            Some(services) if services.is_empty() || services.len() > MAX_ACTIVATIONS_PER_REQUEST => error(
                StatusCode::BAD_REQUEST,
                n,
                &format!("between 1 and {MAX_ACTIVATIONS_PER_REQUEST} service activations per request"),
            ),
            Some(services) => {
                let mut entries = Vec::new();
                let mut invalid = None;
                for service in services {
                    let ban = service["billingAccount"]["id"].as_str().unwrap_or_default();
                    let iccid = characteristic(&service["service"], "sim").unwrap_or_default().to_string();
                    if !account.billing_accounts.contains_key(ban) {
                        invalid = Some(format!("billing account {ban} not found"));
                    } else if iccid.is_empty() {
                        invalid = Some("serviceCharacteristic sim is required".into());
                    } else if account.lines.values().any(|l| l.iccid == iccid && l.status != "C") {
                        invalid = Some(format!("sim {iccid} is already on an active line"));
                    }
                    entries.push(Activation {
                        request: service.clone(),
                        iccid,
                        status_reads: 0,
                        status: "pending".into(),
                        subscriber_number: None,
                        error: None,
                    });
                }
                match invalid {
                    Some(why) => error(StatusCode::BAD_REQUEST, n, &why),
                    None => {
                        let request_id = format!("act-{n:010}");
                        let reply: Vec<Value> = entries.iter().map(|a| activation_entry(&request_id, a)).collect();
                        account.requests.insert(request_id, entries);
                        (StatusCode::ACCEPTED, Json(Value::Array(reply))).into_response()
                    }
                }
            }
        }
    };
    answer(&state, "POST", ACTIVATION_PATH, body, response).await
}

async fn activation_status(
    State(state): State<Arc<TelegenceState>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{ACTIVATION_PATH}/{request_id}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let behaviour = state.behaviour();
    let response = {
        let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        let n = account.next();
        match account.requests.remove(&request_id) {
            None => error(StatusCode::NOT_FOUND, n, &format!("service activation {request_id} not found")),
            Some(mut entries) => {
                let mut new_lines = Vec::new();
                for a in entries.iter_mut().filter(|a| a.status == "pending") {
                    a.status_reads += 1;
                    if a.status_reads <= behaviour.pending_reads {
                        continue;
                    }
                    match behaviour.fates.get(&a.iccid).copied().unwrap_or_default() {
                        ActivationFate::StayPending => {}
                        ActivationFate::Reject => {
                            a.status = "rejected".into();
                            a.error = Some(format!("sim {} cannot be activated: not provisioned", a.iccid));
                        }
                        ActivationFate::Activate => {
                            let number = loop {
                                let candidate = account.new_number();
                                if !new_lines.iter().any(|l: &TgLine| l.subscriber_number == candidate) {
                                    break candidate;
                                }
                            };
                            let service = &a.request["service"];
                            let features = service["serviceCharacteristic"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("offeringCode")))
                                .filter_map(|c| c["value"].as_str().map(str::to_string))
                                .collect();
                            new_lines.push(TgLine {
                                subscriber_number: number.clone(),
                                status: "A".into(),
                                ban: a.request["billingAccount"]["id"].as_str().unwrap_or_default().into(),
                                iccid: a.iccid.clone(),
                                imei: characteristic(service, "IMEI").map(str::to_string),
                                plan: characteristic(service, "singleUserCode").map(str::to_string),
                                zip: characteristic(service, "serviceZipCode").map(str::to_string),
                                features,
                            });
                            a.status = "active".into();
                            a.subscriber_number = Some(number);
                        }
                    }
                }
                for line in new_lines {
                    account.lines.insert(line.subscriber_number.clone(), line);
                }
                let reply: Vec<Value> = entries.iter().map(|a| activation_entry(&request_id, a)).collect();
                account.requests.insert(request_id.clone(), entries);
                Json(Value::Array(reply)).into_response()
            }
        }
    };
    answer(&state, "GET", &path, Value::Null, response).await
}

async fn get_line(
    State(state): State<Arc<TelegenceState>>,
    Path(subscriber): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{LINE_PATH}/{subscriber}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let response = {
        let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        match account.lines.get(&subscriber).cloned() {
            Some(line) => Json(line_details(&line)).into_response(),
            None => {
                let n = account.next();
                error(StatusCode::NOT_FOUND, n, "/service/")
            }
        }
    };
    answer(&state, "GET", &path, Value::Null, response).await
}

async fn no_line(State(state): State<Arc<TelegenceState>>, headers: HeaderMap) -> Response {
    let path = format!("{LINE_PATH}/");
    if let Err(r) = admit(&state, &headers, "PATCH", &path, &Value::Null) {
        return r;
    }
    answer(&state, "PATCH", &path, Value::Null, error(StatusCode::NOT_FOUND, 404, "/service/")).await
}

/// Applies a PATCH under Telegence's rules; the error response when refused.
fn apply_patch(line: &mut TgLine, body: &Value, behaviour: &TgBehaviour, n: u64) -> Result<(), Response> {
    if let Some(mode) = body["mode"].as_str() {
        let allowed = match (line.status.as_str(), mode) {
            (_, "C") => line.status != "C",
            ("A", "S") => true,
            ("S", "A") => true,
            _ => false,
        };
        if !allowed {
            return Err(error(
                StatusCode::BAD_REQUEST,
                n,
                &format!("line {} in status {} cannot move to {mode}", line.subscriber_number, line.status),
            ));
        }
        if body["reasonCode"].as_str().is_none_or(str::is_empty) {
            return Err(error(StatusCode::BAD_REQUEST, n, "reasonCode is required with mode"));
        }
        line.status = mode.to_string();
    }
    if line.status == "C" && body.get("serviceCharacteristic").is_some() {
        return Err(error(StatusCode::BAD_REQUEST, n, "the line is cancelled"));
    }
    let characteristics = body["serviceCharacteristic"].as_array().cloned().unwrap_or_default();
    let value = |name: &str| {
        characteristics
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .and_then(|c| c["value"].as_str())
            .map(str::to_string)
    };
    if let Some(plan) = value("singleUserCode") {
        if !behaviour.plans.is_empty() && !behaviour.plans.contains(&plan) {
            return Err(error(StatusCode::BAD_REQUEST, n, &format!("singleUserCode {plan} is not valid")));
        }
        line.plan = Some(plan);
    }
    let (sim, imei) = (value("sim"), value("IMEI"));
    if sim.is_some() || imei.is_some() {
        if behaviour.unswappable.contains(&line.subscriber_number) {
            return Err(error(StatusCode::NOT_FOUND, n, "/service/"));
        }
        for required in ["reasonCode", "serviceZipCode", "technologyType"] {
            if value(required).is_none_or(|v| v.is_empty()) {
                return Err(error(StatusCode::BAD_REQUEST, n, &format!("{required} is required for a swap")));
            }
        }
        if let Some(sim) = sim {
            line.iccid = sim;
        }
        if imei.is_some() {
            line.imei = imei;
        }
        line.zip = value("serviceZipCode");
    }
    for removed in characteristics.iter().filter(|c| c["name"].as_str() == Some("removeOfferingCode")) {
        if let Some(code) = removed["value"].as_str() {
            line.features.retain(|f| f != code);
        }
    }
    Ok(())
}

async fn patch_line(
    State(state): State<Arc<TelegenceState>>,
    Path(subscriber): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("{LINE_PATH}/{subscriber}");
    if let Err(r) = admit(&state, &headers, "PATCH", &path, &body) {
        return r;
    }
    let behaviour = state.behaviour();
    let response = {
        let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        let n = account.next();
        match account.lines.get_mut(&subscriber) {
            None => error(StatusCode::NOT_FOUND, n, "/service/"),
            Some(line) => {
                let mut changed = line.clone();
                match apply_patch(&mut changed, &body, &behaviour, n) {
                    Ok(()) => {
                        *line = changed;
                        if behaviour.empty_answers_for.contains(&subscriber) {
                            StatusCode::OK.into_response()
                        } else {
                            Json(line_details(line)).into_response()
                        }
                    }
                    Err(refusal) => refusal,
                }
            }
        }
    };
    answer(&state, "PATCH", &path, body, response).await
}

async fn billing_account(
    State(state): State<Arc<TelegenceState>>,
    Path(ban): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{BILLING_ACCOUNT_PATH}/{ban}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let response = {
        let Ok(mut account) = state.account.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        match account.billing_accounts.get(&ban).cloned() {
            Some(fan) => Json(json!({"id": ban, "status": "active", "businessAccount": {"fan": fan}})).into_response(),
            None => {
                let n = account.next();
                error(StatusCode::NOT_FOUND, n, &format!("billing account {ban} not found"))
            }
        }
    };
    answer(&state, "GET", &path, Value::Null, response).await
}

/// A running Telegence simulator.
pub struct TelegenceSim {
    pub state: Arc<TelegenceState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TelegenceSim {
    pub async fn start(listen: SocketAddr, account: TgAccount, behaviour: TgBehaviour) -> std::io::Result<Self> {
        let state = Arc::new(TelegenceState {
            account: Mutex::new(account),
            behaviour: Mutex::new(behaviour),
            harness: Harness::new(Default::default()),
        });
        let (addr, task) = crate::common::serve(listen, router(state.clone()), "Telegence").await?;
        Ok(Self { state, addr, task })
    }

    /// The host root; the paths above hang off it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TelegenceSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
