//! Verizon ThingSpace M2M client: the OAuth token (client credentials) and the M2M session token, both cached and
//! renewed when they expire; a failed login is remembered and never retried blindly (five failures lock the
//! account); device actions answer a `requestId` whose results come later.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use engine::carrier::thingspace::{ThingSpaceApi, TsDeviceRef, TsDeviceResult, TsDeviceState, TsRequest};
use engine::ports::{CallRecord, CarrierFailure, FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::warn;

use crate::http::{Answer, Endpoint};

pub const M2M: &str = "api/m2m/v1";

pub struct ThingSpaceCredentials {
    pub app_key: String,
    pub app_secret: Secret,
    pub username: String,
    pub password: Secret,
    pub account_name: String,
}

#[derive(Default)]
struct Tokens {
    access: Option<(String, Instant)>,
    session: Option<String>,
    /// A login that failed: every later call fails with it instead of trying again (and locking the account).
    login_refused: Option<String>,
}

pub struct ThingSpaceClient {
    endpoint: Endpoint,
    credentials: ThingSpaceCredentials,
    tokens: Mutex<Tokens>,
    /// Paces activation requests (ThingSpace allows 100 a minute per account).
    activations: Option<Arc<TokenBucket>>,
    /// A copy of `tokens.login_refused` readable without the async lock.
    refused: std::sync::Mutex<Option<String>>,
}

/// `{"errorCode","errorMessage"}` or the gateway's `{"fault":{"code","message"}}`.
pub fn parse_error(body: &str) -> (Option<String>, String) {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) if body.trim().is_empty() => return (None, "empty answer".into()),
        Err(_) => return (None, body.chars().take(300).collect()),
    };
    if let Some(code) = v["errorCode"].as_str() {
        return (Some(code.to_string()), v["errorMessage"].as_str().unwrap_or("no message").to_string());
    }
    if let Some(fault) = v.get("fault") {
        return (
            fault["code"].as_str().map(str::to_string),
            fault["message"].as_str().unwrap_or("no message").to_string(),
        );
    }
    (None, v.to_string())
}

fn auth_failure(message: String, call: CallRecord) -> CarrierFailure {
    CarrierFailure { kind: FailureKind::Refused, code: None, message, attempts: 1, call }
}

fn is_session_expired(f: &CarrierFailure) -> bool {
    f.call.http_status == Some(401) && f.code.as_deref().is_some_and(|c| c.ends_with("SessionTokenExpired"))
}

fn is_bearer_rejected(f: &CarrierFailure) -> bool {
    f.call.http_status == Some(401) && f.code.as_deref() == Some("900901")
}

/// The identifier list of a device: `{"deviceIds":[{"kind":"iccid","id":...}, ...]}`.
pub fn device_ids(iccid: &str, imei: Option<&str>) -> Value {
    let mut ids = vec![json!({"kind": "iccid", "id": iccid})];
    if let Some(imei) = imei {
        ids.push(json!({"kind": "imei", "id": imei}));
    }
    json!({"deviceIds": ids})
}

impl ThingSpaceClient {
    /// `base_url` is the host root (`https://thingspace.verizon.com`).
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        credentials: ThingSpaceCredentials,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(http, base_url, limiter, retry, "ThingSpace"),
            credentials,
            tokens: Mutex::new(Tokens::default()),
            activations: None,
            refused: std::sync::Mutex::new(None),
        }
    }

    /// Activation requests also take a token from `bucket`.
    pub fn with_activation_limit(mut self, bucket: Arc<TokenBucket>) -> Self {
        self.activations = Some(bucket);
        self
    }

    pub fn account_name(&self) -> &str {
        &self.credentials.account_name
    }

    async fn access_token(&self, tokens: &mut Tokens) -> Result<String, CarrierFailure> {
        if let Some((token, expiry)) = &tokens.access {
            // Renewed a minute early, so a token never expires in flight.
            if *expiry > Instant::now() + Duration::from_secs(60) {
                return Ok(token.clone());
            }
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.credentials.app_key,
            self.credentials.app_secret.expose()
        ));
        let url = format!("{}/api/ts/v1/oauth2/token", self.endpoint.base_url);
        let response = self
            .endpoint
            .http
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| auth_failure(format!("OAuth token request failed: {e}"), CallRecord::default()))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let call = CallRecord {
            request_text: format!("POST {url}\ngrant_type=client_credentials"),
            response_text: String::new(),
            http_status: Some(status),
        };
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        match serde_json::from_str::<Token>(&text) {
            Ok(t) if (200..300).contains(&status) => {
                tokens.access = Some((t.access_token.clone(), Instant::now() + Duration::from_secs(t.expires_in)));
                Ok(t.access_token)
            }
            _ => {
                let (code, message) = parse_error(&text);
                Err(CarrierFailure {
                    kind: FailureKind::Refused,
                    code,
                    message: format!("OAuth token refused: {message}"),
                    attempts: 1,
                    call,
                })
            }
        }
    }

    async fn session_token(&self, tokens: &mut Tokens, access: &str) -> Result<String, CarrierFailure> {
        if let Some(refused) = &tokens.login_refused {
            return Err(auth_failure(
                format!("{refused} (no new login attempt: five failures lock the account)"),
                CallRecord::default(),
            ));
        }
        if let Some(session) = &tokens.session {
            return Ok(session.clone());
        }
        let body = json!({"username": self.credentials.username, "password": self.credentials.password.expose()});
        let url = format!("{}/{M2M}/session/login", self.endpoint.base_url);
        let response = self
            .endpoint
            .http
            .post(&url)
            .bearer_auth(access)
            .json(&body)
            .send()
            .await
            .map_err(|e| auth_failure(format!("session login failed: {e}"), CallRecord::default()))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let call = CallRecord {
            request_text: format!(
                "POST {url}\n{{\"username\":\"{}\",\"password\":\"***\"}}",
                self.credentials.username
            ),
            response_text: text.clone(),
            http_status: Some(status),
        };
        match serde_json::from_str::<Value>(&text).ok().and_then(|v| v["sessionToken"].as_str().map(str::to_string)) {
            Some(session) if (200..300).contains(&status) => {
                tokens.session = Some(session.clone());
                Ok(session)
            }
            _ => {
                let (code, message) = parse_error(&text);
                let reason = format!("ThingSpace login refused for {}: {message}", self.credentials.username);
                warn!(code = ?code, "ThingSpace login refused; no further login will be attempted by this worker");
                tokens.login_refused = Some(reason.clone());
                if let Ok(mut refused) = self.refused.lock() {
                    *refused = Some(reason.clone());
                }
                Err(CarrierFailure { kind: FailureKind::Refused, code, message: reason, attempts: 1, call })
            }
        }
    }

    /// One M2M call with both tokens. An expired session is renewed once; a rejected bearer token too.
    pub async fn m2m(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, CarrierFailure> {
        let read = method == Method::GET;
        self.m2m_as(method, path, body, read).await
    }

    /// `m2m` for a call that only reads although it is a POST (`devices/actions/list`): retried after a 5xx.
    pub async fn m2m_read(&self, path: &str, body: &Value) -> Result<Answer, CarrierFailure> {
        self.m2m_as(Method::POST, path, Some(body), true).await
    }

    async fn m2m_as(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        read: bool,
    ) -> Result<Answer, CarrierFailure> {
        let mut renewed = false;
        loop {
            let (access, session) = {
                let mut tokens = self.tokens.lock().await;
                let access = self.access_token(&mut tokens).await?;
                let session = self.session_token(&mut tokens, &access).await?;
                (access, session)
            };
            let authorise = |r: reqwest::RequestBuilder| r.bearer_auth(&access).header("VZ-M2M-Token", &session);
            match self
                .endpoint
                .send_as(method.clone(), &format!("{M2M}/{path}"), body, read, authorise, parse_error)
                .await
            {
                Err(f) if !renewed && (is_session_expired(&f) || is_bearer_rejected(&f)) => {
                    let mut tokens = self.tokens.lock().await;
                    if is_session_expired(&f) {
                        tokens.session = None;
                    } else {
                        tokens.access = None;
                        tokens.session = None;
                    }
                    renewed = true;
                }
                other => return other,
            }
        }
    }

    /// A device action (`activate`, `suspend`, `restore`, `deactivate`) for many devices in one request; the
    /// request id whose per-device results arrive later.
    pub async fn action(&self, action: &str, mut body: Value) -> Result<(String, CallRecord), CarrierFailure> {
        body["accountName"] = json!(self.credentials.account_name);
        if let (Some(bucket), "activate") = (&self.activations, action) {
            bucket.acquire().await;
        }
        self.request_id(self.m2m(Method::POST, &format!("devices/actions/{action}"), Some(&body)).await?)
    }

    /// `Pending`, `Success` or `Failure`.
    pub async fn request_status(&self, request_id: &str) -> Result<(String, CallRecord), CarrierFailure> {
        let path = format!("accounts/{}/requests/{request_id}/status", self.credentials.account_name);
        let answer = self.m2m(Method::GET, &path, None).await?;
        let status = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_default();
        Ok((status, answer.call))
    }

    /// Registers the `CarrierService` callback with the credentials ThingSpace will send back.
    pub async fn register_callback(
        &self,
        url: &str,
        username: &str,
        password: &Secret,
    ) -> Result<CallRecord, CarrierFailure> {
        let body = json!({"name": "CarrierService", "url": url, "username": username, "password": password.expose()});
        Ok(self.m2m(Method::POST, &format!("callbacks/{}", self.credentials.account_name), Some(&body)).await?.call)
    }

    /// `POST devices/actions/add` (`preactive`): per-device results; "already exists" counts as added.
    pub async fn add_devices(&self, devices: &[Value]) -> Result<(Vec<TsDeviceResult>, CallRecord), CarrierFailure> {
        let body = json!({"state": "preactive", "devicesToAdd": devices, "accountName": self.credentials.account_name});
        let answer = self.m2m(Method::POST, "devices/actions/add", Some(&body)).await?;
        let entries: Vec<Value> = serde_json::from_str(&answer.body).unwrap_or_default();
        let results = entries
            .iter()
            .map(|e| {
                let response = e["response"].as_str().unwrap_or_default();
                let ok = response == "Success" || response.contains("already exists");
                TsDeviceResult { iccid: iccid_of(e), error: (!ok).then(|| response.to_string()) }
            })
            .collect();
        Ok((results, answer.call))
    }

    /// `POST devices/actions/delete` in requests of at most 100 devices: every device's result, which may be a
    /// partial success; the calls made.
    pub async fn delete_devices(
        &self,
        devices: &[Value],
    ) -> Result<(Vec<TsDeviceResult>, Vec<CallRecord>), CarrierFailure> {
        let mut results = Vec::with_capacity(devices.len());
        let mut calls = Vec::new();
        for chunk in devices.chunks(DELETE_BATCH) {
            let body = json!({"devicesToDelete": chunk, "accountName": self.credentials.account_name});
            let answer = self.m2m(Method::POST, "devices/actions/delete", Some(&body)).await?;
            let entries: Vec<Value> = serde_json::from_str(&answer.body).unwrap_or_default();
            results.extend(entries.iter().map(|e| TsDeviceResult {
                iccid: iccid_of(e),
                error: (e["status"] != "Success").then(|| e["message"].as_str().unwrap_or("Failed").to_string()),
            }));
            calls.push(answer.call);
        }
        Ok((results, calls))
    }

    /// `PUT devices/actions/plan`: asynchronous.
    pub async fn change_plan(
        &self,
        devices: &[Value],
        service_plan: &str,
    ) -> Result<(String, CallRecord), CarrierFailure> {
        let body =
            json!({"devices": devices, "servicePlan": service_plan, "accountName": self.credentials.account_name});
        self.request_id(self.m2m(Method::PUT, "devices/actions/plan", Some(&body)).await?)
    }

    /// `PUT devices/{serviceType}/actions/deviceId` with the `change4gOption` the change implies.
    pub async fn change_identifier(
        &self,
        iccid: &str,
        new_iccid: Option<&str>,
        new_imei: Option<&str>,
    ) -> Result<(String, CallRecord), CarrierFailure> {
        let option = match (new_iccid, new_imei) {
            (Some(_), Some(_)) => "ChangeIMEIandICCID",
            (Some(_), None) => "ChangeICCID",
            _ => "ChangeIMEI",
        };
        let mut to = Vec::new();
        if let Some(n) = new_iccid {
            to.push(json!({"kind": "iccid", "id": n}));
        }
        if let Some(n) = new_imei {
            to.push(json!({"kind": "imei", "id": n}));
        }
        let body = json!({"deviceIds": [{"kind": "iccid", "id": iccid}], "deviceIdsTo": to, "change4gOption": option});
        self.request_id(self.m2m(Method::PUT, "devices/m2m/actions/deviceId", Some(&body)).await?)
    }

    fn request_id(&self, answer: Answer) -> Result<(String, CallRecord), CarrierFailure> {
        match serde_json::from_str::<Value>(&answer.body).ok().and_then(|v| v["requestId"].as_str().map(str::to_string))
        {
            Some(id) => Ok((id, answer.call)),
            // A 2xx without its request id is not a refusal: ThingSpace received the request and may carry it out
            // (a gateway that emptied the answer). Its outcome is unknown; the processor reads the devices.
            None => Err(CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: format!(
                    "HTTP {} without a requestId in the answer: the request may have been taken",
                    answer.status.as_u16()
                ),
                attempts: 1,
                call: answer.call,
            }),
        }
    }
}

/// ThingSpace deletes at most this many devices per request.
pub const DELETE_BATCH: usize = 100;

/// One device's result in a synchronous multi-device answer.
pub type DeviceResult = TsDeviceResult;

fn refs_to_ids(devices: &[TsDeviceRef]) -> Vec<Value> {
    devices.iter().map(|d| device_ids(&d.iccid, d.imei.as_deref())).collect()
}

/// The device of a list answer: state, plan, identifiers, address and custom fields.
fn device_state(entry: &Value) -> TsDeviceState {
    let id_of = |kind: &str| id_of(entry, kind);
    let carrier = &entry["carrierInformations"][0];
    TsDeviceState {
        state: carrier["state"].as_str().unwrap_or_default().to_ascii_lowercase(),
        service_plan: carrier["servicePlan"].as_str().map(str::to_string),
        imei: id_of("imei"),
        msisdn: id_of("msisdn").or_else(|| id_of("mdn")),
        ip_address: entry["ipAddress"].as_str().map(str::to_string),
        custom_fields: entry["customFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["key"].as_str()?.to_string(), f["value"].as_str().unwrap_or_default().to_string())))
            .collect(),
    }
}

#[async_trait]
impl ThingSpaceApi for ThingSpaceClient {
    async fn submit(
        &self,
        request: &TsRequest,
        devices: &[TsDeviceRef],
    ) -> Result<(String, CallRecord), CarrierFailure> {
        let ids = refs_to_ids(devices);
        match request {
            TsRequest::Activate { service_plan, mdn_zip_code, place_of_use } => {
                let mut body = json!({"devices": ids, "servicePlan": service_plan, "mdnZipCode": mdn_zip_code});
                if let Some(p) = place_of_use {
                    body["primaryPlaceOfUse"] = json!({
                        "customerName": {"firstName": p.first_name, "lastName": p.last_name},
                        "address": {"addressLine1": p.address_line, "city": p.city, "state": p.state,
                                    "zip": p.zip_code, "country": p.country}});
                }
                self.action("activate", body).await
            }
            TsRequest::Suspend => self.action("suspend", json!({"devices": ids, "withBilling": false})).await,
            TsRequest::Restore => self.action("restore", json!({"devices": ids, "withBilling": false})).await,
            TsRequest::Deactivate { reason_code, etf_waiver } => {
                let body = json!({"devices": ids, "reasonCode": reason_code, "etfWaiver": etf_waiver,
                                  "deleteAfterDeactivation": false});
                self.action("deactivate", body).await
            }
            TsRequest::ChangePlan { service_plan } => self.change_plan(&ids, service_plan).await,
            TsRequest::CustomFields { fields } => {
                let fields: Vec<Value> = fields.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                let body = json!({"devices": ids, "customFieldsToUpdate": fields,
                                  "accountName": self.credentials.account_name});
                self.request_id(self.m2m(Method::PUT, "devices/actions/customFields", Some(&body)).await?)
            }
        }
    }

    async fn add(&self, devices: &[TsDeviceRef]) -> Result<(Vec<TsDeviceResult>, CallRecord), CarrierFailure> {
        self.add_devices(&refs_to_ids(devices)).await
    }

    async fn delete(&self, devices: &[TsDeviceRef]) -> Result<(Vec<TsDeviceResult>, Vec<CallRecord>), CarrierFailure> {
        self.delete_devices(&refs_to_ids(devices)).await
    }

    async fn change_identifier(
        &self,
        device: &TsDeviceRef,
        new_iccid: Option<&str>,
        new_imei: Option<&str>,
    ) -> Result<(String, CallRecord), CarrierFailure> {
        ThingSpaceClient::change_identifier(self, &device.iccid, new_iccid, new_imei).await
    }

    async fn request_status(&self, request_id: &str) -> Result<(String, CallRecord), CarrierFailure> {
        ThingSpaceClient::request_status(self, request_id).await
    }

    async fn device(&self, iccid: &str) -> Result<(Option<TsDeviceState>, CallRecord), CarrierFailure> {
        let body = json!({"deviceId": {"kind": "iccid", "id": iccid}});
        let answer = self.m2m_read("devices/actions/list", &body).await?;
        let v: Value = serde_json::from_str(&answer.body).map_err(|e| CarrierFailure {
            kind: FailureKind::Protocol,
            code: None,
            message: format!("unreadable device list: {e}"),
            attempts: 1,
            call: answer.call.clone(),
        })?;
        let found = v["devices"].as_array().into_iter().flatten().find(|d| iccid_of(d) == iccid).map(device_state);
        Ok((found, answer.call))
    }

    fn login_refused(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }
}

/// The identifier of `kind` in an entry's `deviceIds`.
fn id_of(entry: &Value, kind: &str) -> Option<String> {
    entry["deviceIds"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["kind"] == kind))
        .and_then(|i| i["id"].as_str())
        .map(str::to_string)
}

fn iccid_of(entry: &Value) -> String {
    id_of(entry, "iccid").unwrap_or_default()
}
