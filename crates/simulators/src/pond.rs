//! A Pond IoT simulator. Pond's paths, key header and body keys are not
//! public, so the simulator takes them as settings ([`PondWire`], the same defaults as `carriers::pond::wire`):
//! the API key on every call; a SIM's packages (list with `offset`/`count` → `{total, elements, isLastPage}`, add
//! `{packageTypeId}` → a `PENDING` package, set `ACTIVE`/`TERMINATED`, never back from `TERMINATED`); the SIM's
//! service status (POST sets, GET reads). Each step can be made to fail for a SIM or a package, to exercise the
//! plan-change saga. Latency, 429, 5xx and lost answers come from the shared harness; every call is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Harness, RecordedCall};

/// The wire details the simulator answers on (defaults: `carriers::pond::wire`).
#[derive(Debug, Clone)]
pub struct PondWire {
    pub api_key_header: String,
    pub packages_path: String,
    pub package_status_path: String,
    pub service_status_path: String,
    pub package_status_key: String,
    pub services_key: String,
}

impl Default for PondWire {
    fn default() -> Self {
        Self {
            api_key_header: "x-api-key".into(),
            packages_path: "{distributorId}/sims/{iccid}/packages".into(),
            package_status_path: "{distributorId}/packages/{packageId}/status".into(),
            service_status_path: "{distributorId}/sims/{iccid}/service-status".into(),
            package_status_key: "packageStatus".into(),
            services_key: "enabled".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PondPackage {
    pub package_id: String,
    pub sim_iccid: String,
    pub package_type_id: i64,
    /// `PENDING`, `ACTIVE` or `TERMINATED`.
    pub status: String,
    pub data_usage_remaining_in_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PondSimCard {
    pub services_enabled: bool,
}

/// Failure switches: the step answers 409 with a message instead of applying.
#[derive(Debug, Clone, Default)]
pub struct PondBehaviour {
    /// Adding a package to these SIMs fails.
    pub fail_add_for: BTreeSet<String>,
    /// Setting a package of these SIMs `ACTIVE` fails.
    pub fail_activate_for: BTreeSet<String>,
    /// Setting these packages `TERMINATED` fails.
    pub fail_terminate_of: BTreeSet<String>,
    /// Setting the service status of these SIMs fails.
    pub fail_services_for: BTreeSet<String>,
    /// Terminating these packages is applied, then answered 502 (a gateway that lost Pond's answer).
    pub lose_terminate_answer_of: BTreeSet<String>,
    /// Setting the service status of these SIMs is applied, then answered 502.
    pub lose_services_answer_for: BTreeSet<String>,
    /// Reading the service status of these SIMs answers 200 with a body that carries no status.
    pub unreadable_services_for: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct PondAccount {
    pub api_key: String,
    pub distributor_id: String,
    pub sims: BTreeMap<String, PondSimCard>,
    /// Every package, by id, in the order they were made.
    pub packages: BTreeMap<u64, PondPackage>,
    /// Package types (rate plans) with their data allowance in bytes.
    pub package_types: BTreeMap<i64, u64>,
    next_package: u64,
}

impl PondAccount {
    pub fn new(api_key: &str, distributor_id: &str) -> Self {
        Self {
            api_key: api_key.into(),
            distributor_id: distributor_id.into(),
            next_package: 88_000,
            ..Default::default()
        }
    }

    pub fn with_package_type(mut self, package_type_id: i64, bytes: u64) -> Self {
        self.package_types.insert(package_type_id, bytes);
        self
    }

    /// A SIM with its services enabled and, when given, one `ACTIVE` package of that type.
    pub fn with_sim(mut self, iccid: &str, active_package_type: Option<i64>) -> Self {
        self.sims.insert(iccid.into(), PondSimCard { services_enabled: true });
        if let Some(package_type_id) = active_package_type {
            self.add(iccid, package_type_id, "ACTIVE");
        }
        self
    }

    fn add(&mut self, iccid: &str, package_type_id: i64, status: &str) -> PondPackage {
        self.next_package += 1;
        let package = PondPackage {
            package_id: self.next_package.to_string(),
            sim_iccid: iccid.into(),
            package_type_id,
            status: status.into(),
            data_usage_remaining_in_bytes: self.package_types.get(&package_type_id).copied().unwrap_or(0),
        };
        self.packages.insert(self.next_package, package.clone());
        package
    }
}

pub struct PondState {
    pub account: Mutex<PondAccount>,
    pub behaviour: Mutex<PondBehaviour>,
    pub wire: PondWire,
    pub harness: Harness,
}

impl PondState {
    /// The SIM's packages, oldest first.
    pub fn packages(&self, iccid: &str) -> Vec<PondPackage> {
        self.account
            .lock()
            .map(|a| a.packages.values().filter(|p| p.sim_iccid == iccid).cloned().collect())
            .unwrap_or_default()
    }

    pub fn active_packages(&self, iccid: &str) -> Vec<PondPackage> {
        self.packages(iccid).into_iter().filter(|p| p.status == "ACTIVE").collect()
    }

    pub fn services_enabled(&self, iccid: &str) -> Option<bool> {
        self.account.lock().ok()?.sims.get(iccid).map(|s| s.services_enabled)
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.harness.calls()
    }

    pub fn set_behaviour(&self, behaviour: PondBehaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    fn behaviour(&self) -> PondBehaviour {
        self.behaviour.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"errorCode": status.as_u16(), "message": message}))).into_response()
}

fn route(template: &str, distributor: &str) -> String {
    format!("/{}", template.trim_start_matches('/').replace("{distributorId}", distributor))
}

pub fn router(state: Arc<PondState>) -> Router {
    let distributor = state.account.lock().map(|a| a.distributor_id.clone()).unwrap_or_default();
    let wire = &state.wire;
    Router::new()
        .route(&route(&wire.packages_path, &distributor), get(list_packages).post(add_package))
        .route(&route(&wire.package_status_path, &distributor), axum::routing::post(set_package_status))
        .route(&route(&wire.service_status_path, &distributor), get(get_services).post(set_services))
        .with_state(state.clone())
}

/// The key header, then the harness's rate limit and injected failures.
fn admit(state: &PondState, headers: &HeaderMap, method: &str, path: &str, body: &Value) -> Result<(), Response> {
    let key = headers.get(state.wire.api_key_header.as_str()).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authorised = state.account.lock().is_ok_and(|a| !a.api_key.is_empty() && a.api_key == key);
    if !authorised {
        state.harness.record(method, path, body.clone(), StatusCode::UNAUTHORIZED);
        return Err(error(StatusCode::UNAUTHORIZED, "invalid API key"));
    }
    state.harness.admit(method, path, body, error)
}

/// Records the call, then its latency; a write that succeeded may then hang or lose its answer.
async fn answer(state: &PondState, method: &str, path: &str, body: Value, response: Response) -> Response {
    let write = method != "GET" && response.status().is_success();
    let response = state.harness.answer(method, path, body, response).await;
    if write { state.harness.after_write(response).await } else { response }
}

#[derive(Deserialize)]
struct Paging {
    offset: Option<usize>,
    count: Option<usize>,
}

async fn list_packages(
    State(state): State<Arc<PondState>>,
    Path(params): Path<BTreeMap<String, String>>,
    Query(paging): Query<Paging>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let iccid = params.get("iccid").cloned().unwrap_or_default();
    let path = uri.path().to_string();
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let response = match state.account.lock() {
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Ok(account) if !account.sims.contains_key(&iccid) => error(StatusCode::NOT_FOUND, "SIM not found"),
        Ok(account) => {
            let all: Vec<&PondPackage> = account.packages.values().filter(|p| p.sim_iccid == iccid).collect();
            let (offset, count) = (paging.offset.unwrap_or(0), paging.count.unwrap_or(10).clamp(1, 100));
            let page: Vec<&PondPackage> = all.iter().skip(offset).take(count).copied().collect();
            let last = offset + page.len() >= all.len();
            Json(json!({"total": all.len(), "elements": page, "isLastPage": last})).into_response()
        }
    };
    answer(&state, "GET", &path, Value::Null, response).await
}

async fn add_package(
    State(state): State<Arc<PondState>>,
    Path(params): Path<BTreeMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let iccid = params.get("iccid").cloned().unwrap_or_default();
    let path = uri.path().to_string();
    if let Err(r) = admit(&state, &headers, "POST", &path, &body) {
        return r;
    }
    let failing = state.behaviour().fail_add_for.contains(&iccid);
    let response = match state.account.lock() {
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Ok(mut account) => match body["packageTypeId"].as_i64() {
            _ if !account.sims.contains_key(&iccid) => error(StatusCode::NOT_FOUND, "SIM not found"),
            None => error(StatusCode::BAD_REQUEST, "packageTypeId is required"),
            Some(t) if !account.package_types.contains_key(&t) => {
                error(StatusCode::BAD_REQUEST, &format!("package type {t} does not exist"))
            }
            Some(_) if failing => error(StatusCode::CONFLICT, "the package could not be added to this SIM"),
            Some(t) => Json(account.add(&iccid, t, "PENDING")).into_response(),
        },
    };
    answer(&state, "POST", &path, body, response).await
}

async fn set_package_status(
    State(state): State<Arc<PondState>>,
    Path(params): Path<BTreeMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let package_id = params.get("packageId").cloned().unwrap_or_default();
    let target = body[state.wire.package_status_key.as_str()].as_str().unwrap_or_default().to_ascii_uppercase();
    let path = uri.path().to_string();
    if let Err(r) = admit(&state, &headers, "POST", &path, &body) {
        return r;
    }
    let behaviour = state.behaviour();
    let response = match state.account.lock() {
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Ok(mut account) => match package_id.parse::<u64>().ok().and_then(|id| account.packages.get_mut(&id)) {
            None => error(StatusCode::NOT_FOUND, "package not found"),
            Some(p) => match target.as_str() {
                "ACTIVE" if behaviour.fail_activate_for.contains(&p.sim_iccid) => {
                    error(StatusCode::CONFLICT, "the package could not be activated")
                }
                "TERMINATED" if behaviour.fail_terminate_of.contains(&p.package_id) => {
                    error(StatusCode::CONFLICT, "the package could not be terminated")
                }
                "ACTIVE" | "TERMINATED" if p.status == "TERMINATED" && target != "TERMINATED" => {
                    error(StatusCode::CONFLICT, "a terminated package cannot change status")
                }
                "TERMINATED" if behaviour.lose_terminate_answer_of.contains(&p.package_id) => {
                    p.status = target.clone();
                    lost_answer()
                }
                "ACTIVE" | "TERMINATED" => {
                    p.status = target.clone();
                    Json(p.clone()).into_response()
                }
                _ => error(StatusCode::BAD_REQUEST, "status must be ACTIVE or TERMINATED"),
            },
        },
    };
    answer(&state, "POST", &path, body, response).await
}

async fn get_services(
    State(state): State<Arc<PondState>>,
    Path(params): Path<BTreeMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let iccid = params.get("iccid").cloned().unwrap_or_default();
    let path = uri.path().to_string();
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let response = match state.account.lock() {
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Ok(account) => match account.sims.get(&iccid) {
            None => error(StatusCode::NOT_FOUND, "SIM not found"),
            Some(_) if state.behaviour().unreadable_services_for.contains(&iccid) => Json(json!({})).into_response(),
            Some(sim) => Json(json!({ state.wire.services_key.clone(): sim.services_enabled })).into_response(),
        },
    };
    answer(&state, "GET", &path, Value::Null, response).await
}

async fn set_services(
    State(state): State<Arc<PondState>>,
    Path(params): Path<BTreeMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let iccid = params.get("iccid").cloned().unwrap_or_default();
    let path = uri.path().to_string();
    if let Err(r) = admit(&state, &headers, "POST", &path, &body) {
        return r;
    }
    let failing = state.behaviour().fail_services_for.contains(&iccid);
    let lose_answer = state.behaviour().lose_services_answer_for.contains(&iccid);
    let response = match state.account.lock() {
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Ok(mut account) => match (account.sims.get_mut(&iccid), body[state.wire.services_key.as_str()].as_bool()) {
            (None, _) => error(StatusCode::NOT_FOUND, "SIM not found"),
            (Some(_), None) => error(StatusCode::BAD_REQUEST, "a boolean service status is required"),
            (Some(_), Some(_)) if failing => error(StatusCode::CONFLICT, "the service status could not be changed"),
            (Some(sim), Some(enabled)) => {
                sim.services_enabled = enabled;
                if lose_answer {
                    lost_answer()
                } else {
                    Json(json!({ state.wire.services_key.clone(): enabled })).into_response()
                }
            }
        },
    };
    answer(&state, "POST", &path, body, response).await
}

/// What a gateway answers when it lost Pond's answer to a write that Pond applied.
fn lost_answer() -> Response {
    error(StatusCode::BAD_GATEWAY, "bad gateway: the upstream answer was lost")
}

/// A running Pond simulator.
pub struct PondSim {
    pub state: Arc<PondState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PondSim {
    pub async fn start(
        listen: SocketAddr,
        account: PondAccount,
        wire: PondWire,
        behaviour: PondBehaviour,
    ) -> std::io::Result<Self> {
        let state = Arc::new(PondState {
            account: Mutex::new(account),
            behaviour: Mutex::new(behaviour),
            wire,
            harness: Harness::new(Default::default()),
        });
        let (addr, task) = crate::common::serve(listen, router(state.clone()), "Pond").await?;
        Ok(Self { state, addr, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PondSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
