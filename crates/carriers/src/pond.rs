//! Pond IoT client: an API key header on every call; a SIM's packages
//! (list, add, set `ACTIVE`/`TERMINATED`) and its service status (enable all / disable all).
//!
//! Pond publishes no API reference: the header name, every path and the body keys are **not known**. Each is a
//! per-provider setting ([`PondSettings`], the service provider's `CarrierSettings` JSON) whose default lives in
//! [`wire`], so a deployment fixes them without a release (README "Teal and Pond").

use std::sync::Arc;

use async_trait::async_trait;
use engine::carrier::pond::{PondApi, PondPackage};
use engine::metrics::Metrics;
use engine::ports::{CallRecord, CarrierFailure, FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Answer, Endpoint, encode};

/// The defaults of every wire detail, each labelled by how sure we are of it.
pub mod wire {
    /// [guess] `PondHelper.CommonString.API_KEY` is not public.
    pub const API_KEY_HEADER: &str = "x-api-key";
    /// [guess] list (GET) and add (POST `{packageTypeId}`) a SIM's packages; the legacy's
    /// `POND_ADD_PACKAGE_END_POINT(iccid)` under `{base}/{DistributorId}/`.
    pub const PACKAGES_PATH: &str = "{distributorId}/sims/{iccid}/packages";
    /// [guess] `POND_UPDATE_PACKAGE_STATUS_END_POINT(packageId)` under `{base}/{DistributorId}/`.
    pub const PACKAGE_STATUS_PATH: &str = "{distributorId}/packages/{packageId}/status";
    /// [guess] `POND_DEVICE_STATUS_END_POINT(DistributorId, iccid)`: POST sets, GET reads.
    pub const SERVICE_STATUS_PATH: &str = "{distributorId}/sims/{iccid}/service-status";
    /// [guess] the key of the package-status body (the C# property is `PackageStatus`; camelCase assumed).
    pub const PACKAGE_STATUS_KEY: &str = "packageStatus";
    /// [guess] the key of the service-status body and answer (`PondUpdateServiceStatusRequest(bool)`).
    pub const SERVICES_KEY: &str = "enabled";
    /// [legacy] the add-package body key.
    pub const PACKAGE_TYPE_KEY: &str = "packageTypeId";
    /// [legacy] list paging: `{total, elements, isLastPage}`; [guess] the query names `offset` and `count`.
    pub const PAGE_SIZE: usize = 100;
    /// [legacy] package statuses.
    pub const ACTIVE: &str = "ACTIVE";
    pub const TERMINATED: &str = "TERMINATED";
    pub const PENDING: &str = "PENDING";
}

/// A Pond account's wire settings (`ServiceProvider.CarrierSettings`, PascalCase JSON). Only `DistributorId` is
/// required; every other field defaults to [`wire`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct PondSettings {
    pub distributor_id: String,
    pub api_key_header: String,
    pub packages_path: String,
    pub package_status_path: String,
    pub service_status_path: String,
    pub package_status_key: String,
    pub services_key: String,
}

impl Default for PondSettings {
    fn default() -> Self {
        Self {
            distributor_id: String::new(),
            api_key_header: wire::API_KEY_HEADER.into(),
            packages_path: wire::PACKAGES_PATH.into(),
            package_status_path: wire::PACKAGE_STATUS_PATH.into(),
            service_status_path: wire::SERVICE_STATUS_PATH.into(),
            package_status_key: wire::PACKAGE_STATUS_KEY.into(),
            services_key: wire::SERVICES_KEY.into(),
        }
    }
}

impl PondSettings {
    /// Reads the settings; the reason names the field when they cannot be used.
    pub fn parse(json: Option<&str>) -> Result<Self, String> {
        let json =
            json.map(str::trim).filter(|j| !j.is_empty()).ok_or("no CarrierSettings (DistributorId is required)")?;
        let settings: PondSettings =
            serde_json::from_str(json).map_err(|e| format!("CarrierSettings are not Pond settings: {e}"))?;
        if settings.distributor_id.trim().is_empty() {
            return Err("CarrierSettings.DistributorId is required".into());
        }
        if reqwest::header::HeaderName::from_bytes(settings.api_key_header.as_bytes()).is_err() {
            return Err(format!("CarrierSettings.ApiKeyHeader '{}' is not a header name", settings.api_key_header));
        }
        for (field, path) in [
            ("PackagesPath", &settings.packages_path),
            ("PackageStatusPath", &settings.package_status_path),
            ("ServiceStatusPath", &settings.service_status_path),
        ] {
            if path.trim().is_empty() || path.contains("://") {
                return Err(format!("CarrierSettings.{field} must be a path under the base URL"));
            }
        }
        Ok(settings)
    }

    fn path(&self, template: &str, iccid: Option<&str>, package_id: Option<&str>) -> String {
        let mut path = template.trim_start_matches('/').replace("{distributorId}", &encode(&self.distributor_id));
        if let Some(iccid) = iccid {
            path = path.replace("{iccid}", &encode(iccid));
        }
        if let Some(id) = package_id {
            path = path.replace("{packageId}", &encode(id));
        }
        path
    }
}

/// Pond's error body is not documented: its `message`/`error`/`description`, or the text (the legacy threw it
/// away; we keep it for the row).
pub fn parse_error(body: &str) -> (Option<String>, String) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        code: Option<Value>,
        error_code: Option<Value>,
        message: Option<String>,
        error: Option<String>,
        description: Option<String>,
    }
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => {
            let code = text(e.error_code).or(text(e.code));
            match e.message.or(e.error).or(e.description) {
                Some(m) => (code, m),
                None => (code, body.chars().take(300).collect()),
            }
        }
        _ if body.trim().is_empty() => (None, "empty answer".into()),
        _ => (None, body.chars().take(300).collect()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PackageBody {
    package_id: Value,
    package_type_id: i64,
    #[serde(default)]
    status: String,
}

impl PackageBody {
    fn into_package(self) -> PondPackage {
        let package_id = match self.package_id {
            Value::String(s) => s,
            other => other.to_string(),
        };
        PondPackage { package_id, package_type_id: self.package_type_id, status: self.status.to_ascii_uppercase() }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    elements: Vec<PackageBody>,
    #[serde(default)]
    is_last_page: Option<bool>,
    #[serde(default)]
    total: Option<usize>,
}

pub struct PondClient {
    endpoint: Endpoint,
    settings: PondSettings,
    api_key: Secret,
}

impl PondClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        settings: PondSettings,
        api_key: Secret,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
    ) -> Self {
        Self { endpoint: Endpoint::new(http, base_url, limiter, retry, "Pond"), settings, api_key }
    }

    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.endpoint.metrics = metrics;
        self
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, CarrierFailure> {
        let header = self.settings.api_key_header.as_str();
        let authorise = |r: reqwest::RequestBuilder| {
            r.header(header, self.api_key.expose()).header(reqwest::header::ACCEPT, "application/json")
        };
        // GETs are reads (retried); every POST is a write, never re-sent after it may have arrived.
        let read = method == Method::GET;
        self.endpoint.send_json(method, path, body, read, authorise, parse_error).await
    }

    fn protocol(call: CallRecord, message: String) -> CarrierFailure {
        CarrierFailure { kind: FailureKind::Protocol, code: None, message, attempts: 1, call }
    }
}

#[async_trait]
impl PondApi for PondClient {
    async fn packages(&self, iccid: &str) -> Result<(Vec<PondPackage>, CallRecord), CarrierFailure> {
        let base = self.settings.path(&self.settings.packages_path, Some(iccid), None);
        let mut packages = Vec::new();
        let mut last_call;
        loop {
            let path = format!("{base}?offset={}&count={}", packages.len(), wire::PAGE_SIZE);
            let answer = self.send(Method::GET, &path, None).await?;
            last_call = answer.call.clone();
            let page = serde_json::from_str::<Page>(&answer.body)
                .map_err(|e| Self::protocol(answer.call, format!("the answer is not a package list: {e}")))?;
            let n = page.elements.len();
            packages.extend(page.elements.into_iter().map(PackageBody::into_package));
            let done =
                page.is_last_page.unwrap_or(true) || n == 0 || page.total.is_some_and(|total| packages.len() >= total);
            if done {
                break;
            }
        }
        Ok((packages, last_call))
    }

    async fn add_package(
        &self,
        iccid: &str,
        package_type_id: i64,
    ) -> Result<(PondPackage, CallRecord), CarrierFailure> {
        let path = self.settings.path(&self.settings.packages_path, Some(iccid), None);
        let body = json!({ wire::PACKAGE_TYPE_KEY: package_type_id });
        let answer = self.send(Method::POST, &path, Some(&body)).await?;
        match serde_json::from_str::<PackageBody>(&answer.body) {
            Ok(p) => Ok((p.into_package(), answer.call)),
            // A 2xx that is not the package: Pond may have added it; the caller reads the packages to know.
            Err(e) => Err(CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: format!("the add-package answer is not a package: {e}"),
                attempts: 1,
                call: answer.call,
            }),
        }
    }

    async fn set_package_status(&self, package_id: &str, status: &str) -> Result<CallRecord, CarrierFailure> {
        let path = self.settings.path(&self.settings.package_status_path, None, Some(package_id));
        let body = json!({ self.settings.package_status_key.clone(): status });
        Ok(self.send(Method::POST, &path, Some(&body)).await?.call)
    }

    async fn set_services(&self, iccid: &str, enabled: bool) -> Result<CallRecord, CarrierFailure> {
        let path = self.settings.path(&self.settings.service_status_path, Some(iccid), None);
        let body = json!({ self.settings.services_key.clone(): enabled });
        Ok(self.send(Method::POST, &path, Some(&body)).await?.call)
    }

    async fn services_enabled(&self, iccid: &str) -> Result<(bool, CallRecord), CarrierFailure> {
        let path = self.settings.path(&self.settings.service_status_path, Some(iccid), None);
        let answer = self.send(Method::GET, &path, None).await?;
        let value: Value = serde_json::from_str(&answer.body)
            .map_err(|e| Self::protocol(answer.call.clone(), format!("the answer is not a service status: {e}")))?;
        match value.get(&self.settings.services_key).and_then(Value::as_bool) {
            Some(enabled) => Ok((enabled, answer.call)),
            None => Err(Self::protocol(
                answer.call,
                format!("the service status carries no boolean '{}'", self.settings.services_key),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_a_distributor_and_default_the_rest() {
        let s = PondSettings::parse(Some(r#"{"DistributorId": "D 1"}"#)).expect("settings");
        assert_eq!(s.api_key_header, wire::API_KEY_HEADER);
        assert_eq!(s.path(&s.packages_path, Some("8901"), None), "D%201/sims/8901/packages");
        assert_eq!(s.path(&s.package_status_path, None, Some("88/213")), "D%201/packages/88%2F213/status");
        let custom = PondSettings::parse(Some(
            r#"{"DistributorId": "7", "PackagesPath": "/v2/{distributorId}/sim/{iccid}/pkg"}"#,
        ))
        .expect("settings");
        assert_eq!(custom.path(&custom.packages_path, Some("8901"), None), "v2/7/sim/8901/pkg");
        assert!(PondSettings::parse(None).unwrap_err().contains("DistributorId"));
        assert!(PondSettings::parse(Some(r#"{"DistributorId": " "}"#)).unwrap_err().contains("DistributorId"));
        assert!(PondSettings::parse(Some(r#"{"DistributorId": "7", "ApiKeyHeader": "bad header"}"#)).is_err());
        assert!(PondSettings::parse(Some(r#"{"DistributorId": "7", "Typo": 1}"#)).unwrap_err().contains("Typo"));
    }
}
