//! A Rev.io billing REST v1 simulator: Basic `user@client:password` plus
//! `Ocp-Apim-Subscription-Key`, `{ok, has_more, record_count, records}` collections, `POST /Services` answering
//! 201 with `Location` and `{ok, id}`, and 429 over the account's limit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Faults, Gate, Harness, RecordedCall, basic_auth};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevCustomer {
    pub customer_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RevService {
    pub service_id: i64,
    pub customer_id: i64,
    pub provider_id: i64,
    #[serde(default)]
    pub service_type_id: Option<i64>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub number2: Option<String>,
    #[serde(default)]
    pub usage_plan_group_id: Option<i64>,
    #[serde(default)]
    pub activated_date: Option<String>,
    /// Custom field values by field id (cost centers and the like).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// When the line was disconnected (closed, kept); `None` while it is open.
    #[serde(default)]
    pub disconnected_date: Option<String>,
}

#[derive(Debug, Default)]
pub struct RevAccount {
    pub username: String,
    pub client_code: String,
    pub password: String,
    pub subscription_key: String,
    pub customers: BTreeMap<i64, RevCustomer>,
    pub services: BTreeMap<i64, RevService>,
    pub next_service_id: i64,
}

pub struct RevIoState {
    pub account: Mutex<RevAccount>,
    pub harness: Harness,
}

impl RevIoState {
    pub fn services(&self) -> Vec<RevService> {
        self.account.lock().map(|a| a.services.values().cloned().collect()).unwrap_or_default()
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"ok": false, "message": message}))).into_response()
}

pub fn router(state: Arc<RevIoState>) -> Router {
    Router::new()
        .route("/v1/Customers", get(list_customers))
        .route("/v1/Services", post(create_service).get(list_services))
        .route("/v1/Services/{id}", get(get_service).patch(patch_service))
        .route("/_sim/calls", get(admin_calls))
        .route("/_sim/config", get(admin_get_faults).post(admin_set_faults))
        .with_state(state)
}

fn admit(state: &RevIoState, headers: &HeaderMap, method: &str, path: &str, body: &Value) -> Result<(), Response> {
    let authorised = state.account.lock().is_ok_and(|a| {
        let key_ok =
            headers.get("ocp-apim-subscription-key").and_then(|v| v.to_str().ok()) == Some(a.subscription_key.as_str());
        let user_ok = basic_auth(headers)
            .is_some_and(|(u, p)| u == format!("{}@{}", a.username, a.client_code) && p == a.password);
        key_ok && user_ok
    });
    if !authorised {
        state.harness.record(method, path, body.clone(), StatusCode::UNAUTHORIZED);
        return Err(failure(StatusCode::UNAUTHORIZED, "Access denied due to invalid credentials or subscription key."));
    }
    match state.harness.gate() {
        Gate::Proceed => Ok(()),
        Gate::Throttled(after) => {
            state.harness.record(method, path, body.clone(), StatusCode::TOO_MANY_REQUESTS);
            let mut r = failure(StatusCode::TOO_MANY_REQUESTS, "Rate limit is exceeded.");
            if let Ok(v) = HeaderValue::from_str(&after.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Err(r)
        }
        Gate::Fail => {
            state.harness.record(method, path, body.clone(), StatusCode::INTERNAL_SERVER_ERROR);
            Err(failure(StatusCode::INTERNAL_SERVER_ERROR, "An unexpected error occurred."))
        }
    }
}

async fn finish(state: &RevIoState, method: &str, path: &str, body: Value, response: Response) -> Response {
    state.harness.record(method, path, body, response.status());
    let latency = state.harness.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

#[derive(Deserialize)]
struct Page {
    #[serde(rename = "search.page")]
    page: Option<usize>,
    #[serde(rename = "search.page_size")]
    page_size: Option<usize>,
}

async fn list_customers(State(state): State<Arc<RevIoState>>, Query(q): Query<Page>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&state, &headers, "GET", "/v1/Customers", &Value::Null) {
        return r;
    }
    let (page, size) = (q.page.unwrap_or(1).max(1), q.page_size.unwrap_or(10).clamp(1, 500));
    let all: Vec<RevCustomer> =
        state.account.lock().map(|a| a.customers.values().cloned().collect()).unwrap_or_default();
    let records: Vec<_> = all.iter().skip((page - 1) * size).take(size).cloned().collect();
    let body =
        json!({"ok": true, "has_more": page * size < all.len(), "record_count": records.len(), "records": records});
    finish(&state, "GET", "/v1/Customers", Value::Null, Json(body).into_response()).await
}

async fn create_service(State(state): State<Arc<RevIoState>>, headers: HeaderMap, body: String) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if let Err(r) = admit(&state, &headers, "POST", "/v1/Services", &parsed) {
        return r;
    }
    let int = |k: &str| parsed.get(k).and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
    let text = |k: &str| parsed.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(customer_id), Some(provider_id)) = (int("customer_id"), int("provider_id")) else {
        return finish(
            &state,
            "POST",
            "/v1/Services",
            parsed.clone(),
            failure(StatusCode::BAD_REQUEST, "customer_id and provider_id are required."),
        )
        .await;
    };
    let created = match state.account.lock() {
        Ok(mut a) if a.customers.contains_key(&customer_id) => {
            a.next_service_id += 1;
            let service_id = 11_000 + a.next_service_id;
            let service = RevService {
                service_id,
                customer_id,
                provider_id,
                service_type_id: int("service_type_id"),
                number: text("number"),
                number2: text("number2"),
                usage_plan_group_id: int("usage_plan_group_id"),
                activated_date: text("activated_date"),
                fields: BTreeMap::new(),
                disconnected_date: None,
            };
            a.services.insert(service_id, service);
            Ok(service_id)
        }
        Ok(_) => Err(format!("Customer {customer_id} was not found.")),
        Err(_) => Err("state lock".to_string()),
    };
    let applied = created.is_ok();
    let response = match created {
        Ok(id) => {
            let mut r = (StatusCode::CREATED, Json(json!({"ok": true, "id": id}))).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/Services/{id}")) {
                r.headers_mut().insert("location", v);
            }
            r
        }
        Err(message) => failure(StatusCode::BAD_REQUEST, &message),
    };
    let response = finish(&state, "POST", "/v1/Services", parsed, response).await;
    // Created already: the answer may hang, be lost (502), or come back empty or cut.
    if applied { state.harness.after_write(response).await } else { response }
}

async fn get_service(State(state): State<Arc<RevIoState>>, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    let path = format!("/v1/Services/{id}");
    if let Err(r) = admit(&state, &headers, "GET", &path, &Value::Null) {
        return r;
    }
    let found = state.account.lock().ok().and_then(|a| a.services.get(&id).cloned());
    let response = match found {
        Some(s) => {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("ok".into(), Value::Bool(true));
            }
            Json(v).into_response()
        }
        None => failure(StatusCode::NOT_FOUND, "Service not found."),
    };
    finish(&state, "GET", &path, Value::Null, response).await
}

#[derive(Deserialize)]
struct ServiceSearch {
    #[serde(rename = "search.customer_id")]
    customer_id: Option<i64>,
    #[serde(rename = "search.number2")]
    number2: Option<String>,
    #[serde(rename = "search.page")]
    page: Option<usize>,
    #[serde(rename = "search.page_size")]
    page_size: Option<usize>,
}

async fn list_services(
    State(state): State<Arc<RevIoState>>,
    Query(q): Query<ServiceSearch>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &headers, "GET", "/v1/Services", &Value::Null) {
        return r;
    }
    let (page, size) = (q.page.unwrap_or(1).max(1), q.page_size.unwrap_or(10).clamp(1, 500));
    let all: Vec<RevService> = state
        .services()
        .into_iter()
        .filter(|s| q.customer_id.is_none_or(|c| s.customer_id == c))
        .filter(|s| q.number2.as_deref().is_none_or(|n| s.number2.as_deref() == Some(n)))
        .collect();
    let records: Vec<_> = all.iter().skip((page - 1) * size).take(size).cloned().collect();
    let body =
        json!({"ok": true, "has_more": page * size < all.len(), "record_count": records.len(), "records": records});
    finish(&state, "GET", "/v1/Services", Value::Null, Json(body).into_response()).await
}

/// JSON Patch on a service: `replace` of `/fields/{id}/value` or `/description`.
async fn patch_service(
    State(state): State<Arc<RevIoState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/v1/Services/{id}");
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if let Err(r) = admit(&state, &headers, "PATCH", &path, &parsed) {
        return r;
    }
    let is_patch = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json-patch+json"));
    let mut applied = false;
    let response = match (is_patch, parsed.as_array()) {
        (false, _) => failure(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json-patch+json."),
        (true, None) => failure(StatusCode::BAD_REQUEST, "A JSON Patch document (array of operations) is required."),
        (true, Some(ops)) => match state.account.lock() {
            Ok(mut account) => match account.services.get_mut(&id) {
                None => failure(StatusCode::NOT_FOUND, "Service not found."),
                Some(service) => match apply_patch(service, ops) {
                    Ok(()) => {
                        applied = true;
                        Json(json!({"ok": true})).into_response()
                    }
                    Err(m) => failure(StatusCode::BAD_REQUEST, &m),
                },
            },
            Err(_) => failure(StatusCode::INTERNAL_SERVER_ERROR, "state lock"),
        },
    };
    let response = finish(&state, "PATCH", &path, parsed, response).await;
    // Applied already: the answer may hang, be lost (502), or come back empty or cut.
    if applied { state.harness.after_write(response).await } else { response }
}

/// `replace` of `/fields/{id}/value`, `/description` or `/disconnected_date` (the line is closed, not deleted; this
/// simulator's lines have no service products, which Rev.io would need disconnected first).
fn apply_patch(service: &mut RevService, ops: &[Value]) -> Result<(), String> {
    let mut changed = service.fields.clone();
    let mut disconnected = service.disconnected_date.clone();
    for op in ops {
        let (Some("replace"), Some(p), Some(v)) = (op["op"].as_str(), op["path"].as_str(), op["value"].as_str()) else {
            return Err(format!("Unsupported operation: {op}"));
        };
        match p.trim_start_matches('/').split('/').collect::<Vec<_>>().as_slice() {
            ["fields", field, "value"] => {
                changed.insert(field.to_string(), v.to_string());
            }
            ["description"] => {
                changed.insert("description".into(), v.to_string());
            }
            ["disconnected_date"] => disconnected = Some(v.to_string()).filter(|d| !d.is_empty()),
            _ => return Err(format!("Unknown path: {p}")),
        };
    }
    service.fields = changed;
    service.disconnected_date = disconnected;
    Ok(())
}

async fn admin_calls(State(state): State<Arc<RevIoState>>) -> Json<Vec<RecordedCall>> {
    Json(state.harness.calls())
}

async fn admin_get_faults(State(state): State<Arc<RevIoState>>) -> Json<Faults> {
    Json(state.harness.faults())
}

async fn admin_set_faults(State(state): State<Arc<RevIoState>>, Json(faults): Json<Faults>) -> Json<Faults> {
    state.harness.set_faults(faults.clone());
    Json(faults)
}

pub struct RevIoSim {
    pub state: Arc<RevIoState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RevIoSim {
    pub async fn start(listen: SocketAddr, account: RevAccount, faults: Faults) -> std::io::Result<Self> {
        let state = Arc::new(RevIoState { account: Mutex::new(account), harness: Harness::new(faults) });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "Rev.io simulator stopped");
            }
        });
        Ok(Self { state, addr, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for RevIoSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
