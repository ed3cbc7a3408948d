//! A Teal (eSIM) simulator: `ApiKey`/`ApiSecret` on every call;
//! `esims/enable`, `esims/disable` and `esims/assign-plan` queue an operation under the caller's `requestId` (a
//! second operation under the same id returns the first: nothing new happens) and answer at once; the operation
//! completes after a while with a result per entry (`ESIM_NOT_FOUND` for an unknown EID, or a failure a test
//! asks for); until then `operation-result` answers "processing" (a 202 with `status: PROCESSING`: a server cannot
//! send Teal's 102 as a final answer). On completion Teal calls the operation's `callbackUrl` with `requestId`
//! appended — or drops, duplicates or holds the callback, as a test asks (held ones are released in any order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{Harness, RecordedCall};

pub const OPERATION_PATH: &str = "/api/v1/esims/{operation}";
pub const RESULT_PATH: &str = "/api/v1/operation-result";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TealEsim {
    pub eid: String,
    pub iccid: String,
    /// Data disabled.
    pub suspended: bool,
    pub plan_uuid: Option<String>,
}

/// Knobs a test turns.
#[derive(Debug, Clone)]
pub struct TealBehaviour {
    /// How long an operation takes before its result is there.
    pub processing: Duration,
    /// Callbacks are never sent (the client must poll).
    pub drop_callbacks: bool,
    /// Every callback is sent twice.
    pub duplicate_callbacks: bool,
    /// Callbacks are kept until `TealState::release_callbacks`.
    pub hold_callbacks: bool,
    /// Entries of these EIDs fail with this message.
    pub fail_eids: BTreeMap<String, String>,
}

impl Default for TealBehaviour {
    fn default() -> Self {
        Self {
            processing: Duration::from_millis(100),
            drop_callbacks: false,
            duplicate_callbacks: false,
            hold_callbacks: false,
            fail_eids: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Operation {
    kind: String,
    entries: Vec<Value>,
    callback_url: Option<String>,
    /// Per-entry results once complete.
    results: Option<Vec<Value>>,
}

#[derive(Debug, Default)]
pub struct TealAccount {
    pub api_key: String,
    pub api_secret: String,
    pub esims: BTreeMap<String, TealEsim>,
    pub plans: BTreeSet<String>,
    operations: BTreeMap<String, Operation>,
}

impl TealAccount {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self { api_key: api_key.into(), api_secret: api_secret.into(), ..Default::default() }
    }

    pub fn with_esim(mut self, eid: &str, iccid: &str, plan_uuid: Option<&str>) -> Self {
        let esim = TealEsim {
            eid: eid.into(),
            iccid: iccid.into(),
            suspended: false,
            plan_uuid: plan_uuid.map(str::to_string),
        };
        self.esims.insert(eid.into(), esim);
        self
    }

    pub fn with_plan(mut self, uuid: &str) -> Self {
        self.plans.insert(uuid.into());
        self
    }

    /// Applies a finished operation: each entry's result, and the eSIMs changed.
    fn complete(&mut self, request_id: &str, behaviour: &TealBehaviour) -> Option<String> {
        let op = self.operations.get(request_id)?.clone();
        if op.results.is_some() {
            return None;
        }
        let mut results = Vec::new();
        for entry in &op.entries {
            let (eid, plan) = match entry {
                Value::String(eid) => (eid.clone(), None),
                other => (
                    other["eid"].as_str().unwrap_or_default().to_string(),
                    other["planUuid"].as_str().map(str::to_string),
                ),
            };
            let failure = if !self.esims.contains_key(&eid) {
                Some("ESIM_NOT_FOUND".to_string())
            } else if let Some(message) = behaviour.fail_eids.get(&eid) {
                Some(message.clone())
            } else if op.kind == "assign-plan" && !plan.as_ref().is_some_and(|p| self.plans.contains(p)) {
                Some(format!("VALIDATION_ERROR: plan {} not found", plan.clone().unwrap_or_default()))
            } else {
                None
            };
            if failure.is_none() {
                if let Some(esim) = self.esims.get_mut(&eid) {
                    match op.kind.as_str() {
                        "enable" => esim.suspended = false,
                        "disable" => esim.suspended = true,
                        _ => esim.plan_uuid = plan,
                    }
                }
            }
            results.push(json!({"eid": eid, "success": failure.is_none(), "errorMessage": failure}));
        }
        if let Some(op) = self.operations.get_mut(request_id) {
            op.results = Some(results);
        }
        op.callback_url
    }
}

pub struct TealState {
    pub account: Mutex<TealAccount>,
    pub behaviour: Mutex<TealBehaviour>,
    pub harness: Harness,
    held: Mutex<Vec<String>>,
    http: reqwest::Client,
}

impl TealState {
    pub fn esim(&self, eid: &str) -> Option<TealEsim> {
        self.account.lock().ok()?.esims.get(eid).cloned()
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.harness.calls()
    }

    pub fn set_behaviour(&self, behaviour: TealBehaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    fn behaviour(&self) -> TealBehaviour {
        self.behaviour.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Operations received (distinct request ids).
    pub fn operations(&self) -> usize {
        self.account.lock().map(|a| a.operations.len()).unwrap_or(0)
    }

    /// The kinds of the operations received that name `eid` (`enable`, `disable`, `assign-plan`), one per
    /// operation: what a sweep counts to see a change sent twice.
    pub fn operations_naming(&self, eid: &str) -> Vec<String> {
        let Ok(account) = self.account.lock() else { return Vec::new() };
        account
            .operations
            .values()
            .filter(|op| op.entries.iter().any(|e| e.as_str() == Some(eid) || e["eid"].as_str() == Some(eid)))
            .map(|op| op.kind.clone())
            .collect()
    }

    /// Callbacks held so far (their URLs, `requestId` appended).
    pub fn held_callbacks(&self) -> Vec<String> {
        self.held.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Sends the held callbacks, newest first when `reverse`, each `times` times; returns their HTTP statuses.
    pub async fn release_callbacks(&self, reverse: bool, times: usize) -> Vec<u16> {
        let mut urls = self.held.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        if reverse {
            urls.reverse();
        }
        let mut statuses = Vec::new();
        for url in urls {
            for _ in 0..times {
                statuses.push(post_callback(&self.http, &url).await);
            }
        }
        statuses
    }
}

async fn post_callback(http: &reqwest::Client, url: &str) -> u16 {
    match http.post(url).json(&json!({})).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => {
            tracing::warn!(error = %e, "Teal simulator callback not delivered");
            0
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"success": false, "errorCode": code, "message": message}))).into_response()
}

pub fn router(state: Arc<TealState>) -> Router {
    Router::new().route(OPERATION_PATH, post(operation)).route(RESULT_PATH, get(operation_result)).with_state(state)
}

fn admit(state: &TealState, headers: &HeaderMap, method: &str, path: &str, body: &Value) -> Result<(), Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let authorised = state
        .account
        .lock()
        .is_ok_and(|a| !a.api_key.is_empty() && header("ApiKey") == a.api_key && header("ApiSecret") == a.api_secret);
    if !authorised {
        state.harness.record(method, path, body.clone(), StatusCode::UNAUTHORIZED);
        return Err(error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid ApiKey or ApiSecret"));
    }
    state.harness.admit(method, path, body, |status, message| error(status, "GENERIC_ERROR", message))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationQuery {
    request_id: Option<String>,
    callback_url: Option<String>,
}

async fn operation(
    State(state): State<Arc<TealState>>,
    Path(kind): Path<String>,
    Query(query): Query<OperationQuery>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/api/v1/esims/{kind}");
    if let Err(r) = admit(&state, &headers, "POST", &path, &body) {
        return r;
    }
    let request_id = query.request_id.unwrap_or_default();
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    let (response, fresh) = match state.account.lock() {
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR.into_response(), false),
        Ok(_) if !["enable", "disable", "assign-plan"].contains(&kind.as_str()) => {
            (error(StatusCode::NOT_FOUND, "GENERIC_ERROR", "no such operation"), false)
        }
        Ok(_) if request_id.trim().is_empty() => {
            (error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "requestId is required"), false)
        }
        Ok(_) if entries.is_empty() => {
            (error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "entries are required"), false)
        }
        Ok(mut account) => {
            // A second operation under a request id returns the first: nothing new is queued.
            let fresh = !account.operations.contains_key(&request_id);
            if fresh {
                let op =
                    Operation { kind: kind.clone(), entries, callback_url: query.callback_url.clone(), results: None };
                account.operations.insert(request_id.clone(), op);
            }
            let href = format!("http://teal.local{RESULT_PATH}?requestId={request_id}");
            let reply = json!({"success": true, "message": "Operation queued", "link": {"operationResultLink": {"href": href}}});
            (Json(reply).into_response(), fresh)
        }
    };
    if fresh {
        let state = state.clone();
        tokio::spawn(async move { complete_later(state, request_id).await });
    }
    let response = state.harness.answer("POST", &path, body, response).await;
    // Queued already: the answer may hang (the client's timeout) or be lost.
    if fresh { state.harness.after_write(response).await } else { response }
}

/// Completes an operation after the processing time, then calls back (or not, as the behaviour says).
async fn complete_later(state: Arc<TealState>, request_id: String) {
    let behaviour = state.behaviour();
    tokio::time::sleep(behaviour.processing).await;
    let callback = match state.account.lock() {
        Ok(mut account) => account.complete(&request_id, &behaviour),
        Err(_) => None,
    };
    let Some(url) = callback.filter(|_| !behaviour.drop_callbacks) else { return };
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}requestId={request_id}");
    if behaviour.hold_callbacks {
        if let Ok(mut held) = state.held.lock() {
            held.push(url);
        }
        return;
    }
    for _ in 0..if behaviour.duplicate_callbacks { 2 } else { 1 } {
        post_callback(&state.http, &url).await;
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultQuery {
    request_id: Option<String>,
}

async fn operation_result(
    State(state): State<Arc<TealState>>,
    Query(query): Query<ResultQuery>,
    headers: HeaderMap,
) -> Response {
    let request_id = query.request_id.unwrap_or_default();
    let path = format!("{RESULT_PATH}?requestId={request_id}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let response = match state.account.lock() {
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Ok(account) => match account.operations.get(&request_id) {
            None => error(StatusCode::NOT_FOUND, "VALIDATION_ERROR", &format!("request {request_id} not found")),
            Some(Operation { results: None, .. }) => {
                (StatusCode::ACCEPTED, Json(json!({"success": true, "status": "PROCESSING"}))).into_response()
            }
            Some(Operation { results: Some(results), .. }) => {
                Json(json!({"success": true, "entries": results})).into_response()
            }
        },
    };
    state.harness.answer("GET", &path, Value::Null, response).await
}

/// A running Teal simulator.
pub struct TealSim {
    pub state: Arc<TealState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TealSim {
    pub async fn start(listen: SocketAddr, account: TealAccount, behaviour: TealBehaviour) -> std::io::Result<Self> {
        let state = Arc::new(TealState {
            account: Mutex::new(account),
            behaviour: Mutex::new(behaviour),
            harness: Harness::new(Default::default()),
            held: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
        });
        let (addr, task) = crate::common::serve(listen, router(state.clone()), "Teal").await?;
        Ok(Self { state, addr, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TealSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
