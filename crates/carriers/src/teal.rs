//! Teal (eSIM) client: `ApiKey` and `ApiSecret` on every call (the service
//! provider's `Username` and `Secret`); every operation carries our `requestId` and `callbackUrl`, is queued and
//! answered at once; its result is read from `operation-result?requestId=`.
//!
//! Every choice the reference leaves open lives in [`wire`].

use std::sync::Arc;

use async_trait::async_trait;
use engine::carrier::teal::{TealApi, TealEntryResult, TealOperation, TealOperationResult};
use engine::metrics::Metrics;
use engine::ports::{CallRecord, CarrierFailure, FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Endpoint, encode};

/// The wire choices, in one place, each labelled by how sure we are of it.
pub mod wire {
    /// [doc]+[legacy] header names.
    pub const API_KEY_HEADER: &str = "ApiKey";
    pub const API_SECRET_HEADER: &str = "ApiSecret";
    /// [doc] (SIM2) the operation paths, under the base URL.
    pub const ENABLE: &str = "api/v1/esims/enable";
    pub const DISABLE: &str = "api/v1/esims/disable";
    /// [doc]+[legacy] `TealAssignRatePlanURL`.
    pub const ASSIGN_PLAN: &str = "api/v1/esims/assign-plan";
    /// [doc] behaviour, [code-3p] path.
    pub const OPERATION_RESULT: &str = "api/v1/operation-result";
    /// [guess] entries per operation: Teal documents none; its list pages stop at 100.
    pub const MAX_ENTRIES: usize = 100;
    /// [doc] "HTTP 102 while processing". A server cannot send a 1xx as a final answer over HTTP/1.1 and reqwest
    /// reads one as an interim answer, so a real 102 surfaces as a dropped or timed-out read; we also take a 202,
    /// a body whose `status` is `PROCESSING`, or a success without `entries` as "still processing" ([guess]).
    pub const PROCESSING: &str = "PROCESSING";
    /// [doc] error code of a request id Teal does not know ([guess]: also a plain 404).
    pub const VALIDATION_ERROR: &str = "VALIDATION_ERROR";
    // Casing: camelCase (`entries`, `eid`, `planUuid`, `errorMessage`) as the third-party clients send and read.
}

pub struct TealClient {
    endpoint: Endpoint,
    api_key: String,
    api_secret: Secret,
}

/// Teal's error body is not documented: `message`/`errorMessage`, and `errorCode`/`code` ([code-3p]).
pub fn parse_error(body: &str) -> (Option<String>, String) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        error_code: Option<String>,
        code: Option<String>,
        message: Option<String>,
        error_message: Option<String>,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => {
            let code = e.error_code.or(e.code);
            match e.message.or(e.error_message) {
                Some(m) => (code, m),
                None => (code, body.chars().take(300).collect()),
            }
        }
        _ if body.trim().is_empty() => (None, "empty answer".into()),
        _ => (None, body.chars().take(300).collect()),
    }
}

/// The body and path of an operation.
pub fn operation_request(operation: &TealOperation) -> (&'static str, Value) {
    match operation {
        TealOperation::Enable(eids) => (wire::ENABLE, json!({ "entries": eids })),
        TealOperation::Disable(eids) => (wire::DISABLE, json!({ "entries": eids })),
        TealOperation::AssignPlan(entries) => (
            wire::ASSIGN_PLAN,
            json!({ "entries": entries.iter().map(|(eid, plan)| json!({"eid": eid, "planUuid": plan})).collect::<Vec<_>>() }),
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    eid: Option<String>,
    #[serde(default)]
    success: bool,
    #[serde(default)]
    error_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultBody {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    entries: Option<Vec<Entry>>,
}

impl TealClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: &str,
        api_secret: Secret,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(http, base_url, limiter, retry, "Teal"),
            api_key: api_key.to_string(),
            api_secret,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.endpoint.metrics = metrics;
        self
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::http::Answer, CarrierFailure> {
        let authorise = |r: reqwest::RequestBuilder| {
            r.header(wire::API_KEY_HEADER, &self.api_key)
                .header(wire::API_SECRET_HEADER, self.api_secret.expose())
                .header(reqwest::header::ACCEPT, "application/json")
        };
        // Reads are retried; an operation is a write, never re-sent by the client (the engine re-sends it under
        // the same request id only once Teal says it never arrived).
        let read = method == Method::GET;
        self.endpoint.send_json(method, path, body, read, authorise, parse_error).await
    }
}

#[async_trait]
impl TealApi for TealClient {
    async fn submit(
        &self,
        request_id: &str,
        callback_url: Option<&str>,
        operation: &TealOperation,
    ) -> Result<CallRecord, CarrierFailure> {
        let (path, body) = operation_request(operation);
        let mut path = format!("{path}?requestId={}", encode(request_id));
        if let Some(url) = callback_url {
            path.push_str(&format!("&callbackUrl={}", encode(url)));
        }
        let answer = self.send(Method::POST, &path, Some(&body)).await?;
        // `{success, message, link}`: a `success: false` is Teal refusing the operation.
        match serde_json::from_str::<ResultBody>(&answer.body) {
            Ok(b) if b.success == Some(false) => Err(CarrierFailure {
                kind: FailureKind::Refused,
                code: None,
                message: b.message.unwrap_or_else(|| "Teal did not accept the operation".into()),
                attempts: 1,
                call: answer.call,
            }),
            _ => Ok(answer.call),
        }
    }

    async fn operation_result(&self, request_id: &str) -> Result<(TealOperationResult, CallRecord), CarrierFailure> {
        let path = format!("{}?requestId={}", wire::OPERATION_RESULT, encode(request_id));
        let answer = match self.send(Method::GET, &path, None).await {
            Ok(answer) => answer,
            Err(f) if f.call.http_status == Some(102) => return Ok((TealOperationResult::Processing, f.call)),
            Err(f)
                if f.call.http_status == Some(404)
                    || (f.call.http_status == Some(400) && f.code.as_deref() == Some(wire::VALIDATION_ERROR)) =>
            {
                return Ok((TealOperationResult::Unknown, f.call));
            }
            Err(f) => return Err(f),
        };
        if answer.status.as_u16() == 102 || answer.status.as_u16() == 202 {
            return Ok((TealOperationResult::Processing, answer.call));
        }
        let body = serde_json::from_str::<ResultBody>(&answer.body).map_err(|e| CarrierFailure {
            kind: FailureKind::Protocol,
            code: None,
            message: format!("the answer is not an operation result: {e}"),
            attempts: 1,
            call: answer.call.clone(),
        })?;
        let processing = body.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(wire::PROCESSING));
        let result = match body.entries {
            _ if processing => TealOperationResult::Processing,
            None if body.success != Some(false) => TealOperationResult::Processing,
            entries => TealOperationResult::Done {
                success: body.success.unwrap_or(true),
                message: body.message,
                entries: entries
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| TealEntryResult { eid: e.eid, success: e.success, error_message: e.error_message })
                    .collect(),
            },
        };
        Ok((result, answer.call))
    }
}
