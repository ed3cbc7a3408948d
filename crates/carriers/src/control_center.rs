//! Cisco IoT Control Center REST client (`rws/api/v1`): Basic user:API key; get, edit, audit trail.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use domain::Iccid;
use engine::carrier::control_center::{CcAuditEntry, CcDevice, CcEdit, ControlCenterApi};
use engine::metrics::Metrics;
use engine::ports::{CallRecord, CarrierFailure, FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::Method;
use serde::Deserialize;

use crate::http::{Answer, Endpoint};

pub struct ControlCenterClient {
    endpoint: Endpoint,
    username: String,
    api_key: Secret,
}

/// `{"errorMessage": "...", "errorCode": "..."}` into (code, message).
pub fn parse_error(body: &str) -> (Option<String>, String) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        error_code: Option<serde_json::Value>,
        error_message: Option<String>,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) if e.error_code.is_some() || e.error_message.is_some() => (
            e.error_code.map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string())),
            e.error_message.unwrap_or_else(|| "no message".into()),
        ),
        _ if body.trim().is_empty() => (None, "empty answer".into()),
        _ => (None, body.chars().take(300).collect()),
    }
}

impl ControlCenterClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        username: &str,
        api_key: Secret,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(http, base_url, limiter, retry, "ControlCenter"),
            username: username.to_string(),
            api_key,
        }
    }

    /// Names the integration (Jasper, POD19, ...) in the metrics this client publishes.
    pub fn with_metrics(mut self, integration: &str, metrics: Arc<dyn Metrics>) -> Self {
        self.endpoint.integration = integration.to_string();
        self.endpoint.metrics = metrics;
        self
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CarrierFailure> {
        let authorise = |r: reqwest::RequestBuilder| r.basic_auth(&self.username, Some(self.api_key.expose()));
        self.endpoint.send(method, path, body, authorise, parse_error).await
    }

    fn protocol(call: CallRecord, message: String) -> CarrierFailure {
        CarrierFailure { kind: FailureKind::Protocol, code: None, message, attempts: 1, call }
    }

    /// The Basic credentials, for tests that check what goes on the wire.
    pub fn authorization_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.api_key.expose());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[async_trait]
impl ControlCenterApi for ControlCenterClient {
    async fn get_device(&self, iccid: &Iccid) -> Result<(CcDevice, CallRecord), CarrierFailure> {
        let answer = self.send(Method::GET, &format!("devices/{iccid}"), None).await?;
        let device: CcDevice = serde_json::from_str(&answer.body)
            .map_err(|e| Self::protocol(answer.call.clone(), format!("unreadable device details: {e}")))?;
        Ok((device, answer.call))
    }

    async fn edit_device(&self, iccid: &Iccid, edit: &CcEdit) -> Result<CallRecord, CarrierFailure> {
        let body = serde_json::to_value(edit).map_err(|e| Self::protocol(CallRecord::default(), e.to_string()))?;
        let answer = self.send(Method::PUT, &format!("devices/{iccid}"), Some(&body)).await?;
        // A 2xx without the ICCID is not a success (Control Center answers `{"iccid": ...}`), and not a refusal
        // either: the edit was received and may have been applied (a gateway that emptied the answer). Its outcome
        // is unknown, and the processor reads the device before anything is sent again.
        let named = serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("iccid").and_then(|i| i.as_str()).map(|s| !s.is_empty()))
            .unwrap_or(false);
        if !named {
            return Err(CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: format!(
                    "HTTP {} without the device's ICCID in the answer: the edit may have been applied",
                    answer.status.as_u16()
                ),
                attempts: 1,
                call: answer.call,
            });
        }
        Ok(answer.call)
    }

    async fn audit_trail(&self, iccid: &Iccid) -> Result<(Vec<CcAuditEntry>, CallRecord), CarrierFailure> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            device_audit_trails: Vec<CcAuditEntry>,
        }
        let path = format!("devices/{iccid}/auditTrails?daysOfHistory=30&pageSize=50&pageNumber=1");
        let answer = self.send(Method::GET, &path, None).await?;
        let page: Page = serde_json::from_str(&answer.body)
            .map_err(|e| Self::protocol(answer.call.clone(), format!("unreadable audit trail: {e}")))?;
        Ok((page.device_audit_trails, answer.call))
    }
}
