//! AT&T Telegence (Mobility) client: `app-id` and `app-secret` on every
//! call (the service provider's `Username` and `Secret`); line details GET and PATCH on
//! `/sp/mobility/lineconfig/api/v1/service/{subscriberNumber}`; the activation POST (an array of at most 200
//! services) and its status GET; the billing-account GET.
//!
//! Every choice the reference marks **[guess]** lives in [`wire`] (paths, casing, the effective-date format, the
//! fixed activation fields), so it changes in one place (README "Telegence").

use std::sync::Arc;

use async_trait::async_trait;
use engine::carrier::telegence::{
    TelegenceApi, TgActivation, TgActivationEntry, TgBillingAccount, TgLine, TgLineChange,
};
use engine::metrics::Metrics;
use engine::ports::{CallRecord, CarrierFailure, FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Answer, Endpoint};

/// The wire choices, in one place, each labelled by how sure we are of it.
pub mod wire {
    /// [doc-3p]+[legacy] postServiceActivation / getServiceActivationStatus.
    pub const ACTIVATION: &str = "sp/mobilityactivations/api/v1/serviceactivation";
    /// [doc-3p]+[legacy] get/editSubscriberLineDetails (PATCH seen only in the legacy).
    pub const LINE: &str = "sp/mobility/lineconfig/api/v1/service";
    /// [doc-3p] the billing account.
    pub const BILLING_ACCOUNT: &str = "sp/mobility/billingmgmt/api/v1/billingaccount";
    /// [legacy] "API only allow maximum of 200 service activations per request".
    pub const MAX_ACTIVATIONS_PER_REQUEST: usize = 200;
    /// [guess] `AMOP_UTC_DAY_TIME_FORMAT` is not public; the single-device path writes `yyyy-MM-dd` + `Z`.
    pub const EFFECTIVE_DATE_FORMAT: &str = "%Y-%m-%dZ";
    /// [legacy] `serviceSpecification` of a new Mobility service.
    pub const SERVICE_SPECIFICATION_ID: &str = "12";
    pub const SERVICE_SPECIFICATION_HREF: &str = "Mobility Services";
    /// [legacy] fixed characteristics of an activation (`equipmentType`, `deviceTechnologyType`).
    pub const EQUIPMENT_TYPE: &str = "G";
    pub const DEVICE_TECHNOLOGY_TYPE: &str = "UMTS";
    /// [legacy] the 404 body's `description` for a line Telegence does not have (or cannot swap).
    pub const NO_LINE: &str = "/service/";
    // Casing: every body is camelCase ([guess], consistent with AT&T's camelCase elsewhere): the serde renames
    // below and the `json!` bodies of this module.
}

pub struct TelegenceClient {
    endpoint: Endpoint,
    app_id: String,
    app_secret: Secret,
}

/// `{"id": "...", "description": "..."}`, or the `responseMessage`/`errorDescription` the legacy parser also
/// accepts, into (code, message).
pub fn parse_error(body: &str) -> (Option<String>, String) {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        id: Option<String>,
        description: Option<String>,
        response_message: Option<String>,
        error_description: Option<String>,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => {
            let message = e.description.or(e.error_description).or(e.response_message);
            match message {
                Some(m) => (e.id, m),
                None if body.trim().is_empty() => (None, "empty answer".into()),
                None => (e.id, body.chars().take(300).collect()),
            }
        }
        _ if body.trim().is_empty() => (None, "empty answer".into()),
        _ => (None, body.chars().take(300).collect()),
    }
}

/// Whether a failure is Telegence's `404 /service/`: no such line, or a line that cannot take the change.
pub fn is_no_line(f: &CarrierFailure) -> bool {
    f.call.http_status == Some(404) && f.message.trim() == wire::NO_LINE
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Characteristic {
    name: String,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineDetails {
    subscriber_number: String,
    #[serde(default)]
    service_characteristic: Vec<Characteristic>,
    #[serde(default)]
    error_description: Option<String>,
}

fn text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl LineDetails {
    fn into_line(self) -> TgLine {
        let find = |names: &[&str]| {
            self.service_characteristic
                .iter()
                .find(|c| names.iter().any(|n| c.name.eq_ignore_ascii_case(n)))
                .and_then(|c| text(&c.value))
        };
        let mut features: Vec<(u32, String)> = self
            .service_characteristic
            .iter()
            .filter_map(|c| {
                let n = c.name.strip_prefix("offeringCode")?.parse::<u32>().ok()?;
                Some((n, text(&c.value)?))
            })
            .collect();
        features.sort();
        TgLine {
            status: find(&["subscriberStatus"]).map(|s| s.to_ascii_uppercase()),
            plan: find(&["singleUserCode"]),
            iccid: find(&["sim"]),
            imei: find(&["BLIMEI", "IMEI"]),
            zip: find(&["serviceZipCode"]),
            features: features.into_iter().map(|(_, f)| f).collect(),
            subscriber_number: self.subscriber_number,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivationService {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    subscriber_number: Option<String>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    service_characteristic: Vec<Characteristic>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivationResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    interaction_status: Option<String>,
    service: Option<ActivationService>,
}

impl ActivationResponse {
    fn entry(self) -> TgActivationEntry {
        let service = self.service;
        let status = service
            .as_ref()
            .and_then(|s| s.status.clone())
            .or(self.interaction_status)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let error = service.as_ref().and_then(|s| match &s.error {
            Some(Value::String(e)) if !e.is_empty() => Some(e.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        });
        TgActivationEntry {
            iccid: service.as_ref().and_then(|s| {
                s.service_characteristic
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case("sim"))
                    .and_then(|c| text(&c.value))
            }),
            subscriber_number: service.and_then(|s| s.subscriber_number).filter(|n| !n.is_empty()),
            status,
            error,
        }
    }
}

/// The body of a line change.
pub fn change_body(change: &TgLineChange) -> Value {
    let date = |d: &Option<chrono::NaiveDate>| d.map(|d| d.format(wire::EFFECTIVE_DATE_FORMAT).to_string());
    let characteristic = |name: &str, value: &str| json!({"name": name, "value": value});
    match change {
        TgLineChange::Status { mode, reason_code, effective_date } => {
            let mut body = json!({"mode": mode, "reasonCode": reason_code});
            if let Some(d) = date(effective_date) {
                body["effectiveDate"] = json!(d);
            }
            body
        }
        TgLineChange::Plan { plan, effective_date } => json!({
            "effectiveDate": date(effective_date).unwrap_or_default(),
            "serviceCharacteristic": [characteristic("singleUserCode", plan)],
        }),
        TgLineChange::Swap { iccid, imei, zip, reason_code, technology_type } => {
            let mut list = vec![
                characteristic("reasonCode", reason_code),
                characteristic("serviceZipCode", zip),
                characteristic("technologyType", technology_type),
            ];
            if let Some(imei) = imei {
                list.push(characteristic("IMEI", imei));
            }
            list.push(characteristic("sim", iccid));
            json!({"serviceCharacteristic": list})
        }
        TgLineChange::RemoveFeatures(codes) => json!({
            "serviceCharacteristic": codes.iter().map(|c| characteristic("removeOfferingCode", c)).collect::<Vec<_>>(),
            "effectiveDate": "",
        }),
    }
}

/// The body of one new service (features to remove later are not sent: they are PATCHed after activation).
pub fn activation_body(service: &TgActivation) -> Value {
    let mut characteristics = vec![
        json!({"name": "singleUserCode", "value": service.plan}),
        json!({"name": "serviceZipCode", "value": service.zip}),
        json!({"name": "equipmentType", "value": wire::EQUIPMENT_TYPE}),
        json!({"name": "deviceTechnologyType", "value": wire::DEVICE_TECHNOLOGY_TYPE}),
    ];
    if let Some(imei) = &service.imei {
        characteristics.push(json!({"name": "IMEI", "value": imei}));
    }
    characteristics.push(json!({"name": "sim", "value": service.iccid}));
    for (n, feature) in service.features.iter().enumerate() {
        characteristics.push(json!({"name": format!("offeringCode{}", n + 1), "value": feature}));
    }
    json!({
        "billingAccount": {"id": service.ban},
        "relatedParty": [{"id": "", "role": "subscriber",
            "firstName": service.first_name.clone().unwrap_or_default(),
            "lastName": service.last_name.clone().unwrap_or_default(),
            "address": {"zipCode": service.zip}}],
        "service": {
            "name": "", "status": null, "subscriberNumber": null, "error": null,
            "category": {"id": "", "name": ""},
            "serviceSpecification": {"id": wire::SERVICE_SPECIFICATION_ID, "href": wire::SERVICE_SPECIFICATION_HREF},
            "serviceCharacteristic": characteristics,
        }
    })
}

impl TelegenceClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        app_id: &str,
        app_secret: Secret,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(http, base_url, limiter, retry, "Telegence"),
            app_id: app_id.to_string(),
            app_secret,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.endpoint.metrics = metrics;
        self
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, CarrierFailure> {
        let authorise = |r: reqwest::RequestBuilder| {
            r.header("app-id", &self.app_id)
                .header("app-secret", self.app_secret.expose())
                .header(reqwest::header::ACCEPT, "application/json")
        };
        // GETs are reads (retried); a PATCH or POST is a write, never re-sent after it may have arrived. Telegence's
        // PATCH takes plain JSON, not JSON Patch.
        let read = method == Method::GET;
        self.endpoint.send_json(method, path, body, read, authorise, parse_error).await
    }

    fn protocol(call: CallRecord, message: String) -> CarrierFailure {
        CarrierFailure { kind: FailureKind::Protocol, code: None, message, attempts: 1, call }
    }

    fn line_details(answer: Answer) -> Result<(TgLine, CallRecord), CarrierFailure> {
        match serde_json::from_str::<LineDetails>(&answer.body) {
            Ok(details) if details.error_description.as_deref().is_some_and(|e| !e.is_empty()) => {
                let reason = details.error_description.unwrap_or_default();
                Err(CarrierFailure {
                    kind: FailureKind::Refused,
                    code: None,
                    message: reason,
                    attempts: 1,
                    call: answer.call,
                })
            }
            Ok(details) => Ok((details.into_line(), answer.call)),
            Err(e) => Err(Self::protocol(answer.call, format!("the answer is not line details: {e}"))),
        }
    }

    fn entries(answer: &Answer) -> Result<Vec<TgActivationEntry>, CarrierFailure> {
        serde_json::from_str::<Vec<ActivationResponse>>(&answer.body)
            .map(|list| list.into_iter().map(ActivationResponse::entry).collect())
            .map_err(|e| Self::protocol(answer.call.clone(), format!("failed to parse the activation answer: {e}")))
    }
}

#[async_trait]
impl TelegenceApi for TelegenceClient {
    async fn line(&self, subscriber_number: &str) -> Result<(Option<TgLine>, CallRecord), CarrierFailure> {
        let path = format!("{}/{}", wire::LINE, subscriber_number.trim());
        match self.send(Method::GET, &path, None).await {
            Ok(answer) => Self::line_details(answer).map(|(line, call)| (Some(line), call)),
            Err(f) if is_no_line(&f) => Ok((None, f.call)),
            Err(f) => Err(f),
        }
    }

    async fn change_line(
        &self,
        subscriber_number: &str,
        change: &TgLineChange,
    ) -> Result<(TgLine, CallRecord), CarrierFailure> {
        let subscriber_number = subscriber_number.trim();
        if subscriber_number.is_empty() {
            // Legacy bug 8: an empty number PATCHes `.../service/`. Never sent.
            let call = CallRecord { request_text: format!("PATCH {}/ (not sent)", wire::LINE), ..Default::default() };
            return Err(CarrierFailure {
                kind: FailureKind::Refused,
                code: None,
                message: "the device has no subscriber number (MSISDN)".into(),
                attempts: 0,
                call,
            });
        }
        let body = change_body(change);
        let path = format!("{}/{subscriber_number}", wire::LINE);
        let answer = self.send(Method::PATCH, &path, Some(&body)).await.map_err(|mut f| {
            if is_no_line(&f) {
                f.message = format!("line not found or not swappable (404 {})", wire::NO_LINE);
            }
            f
        })?;
        Self::line_details(answer)
    }

    async fn activate(
        &self,
        services: &[TgActivation],
    ) -> Result<(String, Vec<TgActivationEntry>, CallRecord), CarrierFailure> {
        if services.is_empty() || services.len() > wire::MAX_ACTIVATIONS_PER_REQUEST {
            let call =
                CallRecord { request_text: format!("POST {} (not sent)", wire::ACTIVATION), ..Default::default() };
            return Err(CarrierFailure {
                kind: FailureKind::Refused,
                code: None,
                message: format!(
                    "{} services in one activation request; Telegence takes 1 to {}",
                    services.len(),
                    wire::MAX_ACTIVATIONS_PER_REQUEST
                ),
                attempts: 0,
                call,
            });
        }
        let body = Value::Array(services.iter().map(activation_body).collect());
        let answer = self.send(Method::POST, wire::ACTIVATION, Some(&body)).await?;
        let list = serde_json::from_str::<Vec<ActivationResponse>>(&answer.body).map_err(|e| {
            // A 2xx that is not the array: Telegence may have taken the request (legacy "failed to parse").
            CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: format!("failed to parse the activation answer: {e}"),
                attempts: 1,
                call: answer.call.clone(),
            }
        })?;
        let request_id = list.iter().find_map(|r| r.id.clone().filter(|id| !id.is_empty()));
        let entries: Vec<TgActivationEntry> = list.into_iter().map(ActivationResponse::entry).collect();
        match request_id {
            Some(id) => Ok((id, entries, answer.call)),
            None => Err(CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: "the activation answer carries no request id".into(),
                attempts: 1,
                call: answer.call,
            }),
        }
    }

    async fn activation_status(
        &self,
        request_id: &str,
    ) -> Result<(Vec<TgActivationEntry>, CallRecord), CarrierFailure> {
        let path = format!("{}/{}", wire::ACTIVATION, request_id.trim());
        let answer = self.send(Method::GET, &path, None).await?;
        let entries = Self::entries(&answer)?;
        Ok((entries, answer.call))
    }

    async fn billing_account(&self, ban: &str) -> Result<(Option<TgBillingAccount>, CallRecord), CarrierFailure> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Business {
            fan: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Ban {
            #[serde(default)]
            status: Option<String>,
            business_account: Option<Business>,
        }
        let path = format!("{}/{}", wire::BILLING_ACCOUNT, ban.trim());
        match self.send(Method::GET, &path, None).await {
            Ok(answer) => match serde_json::from_str::<Ban>(&answer.body) {
                Ok(b) => Ok((
                    Some(TgBillingAccount {
                        status: b.status.unwrap_or_default(),
                        fan: b.business_account.and_then(|a| a.fan).filter(|f| !f.is_empty()),
                    }),
                    answer.call,
                )),
                Err(e) => Err(Self::protocol(answer.call, format!("the answer is not a billing account: {e}"))),
            },
            Err(f) if f.call.http_status == Some(404) => Ok((None, f.call)),
            Err(f) => Err(f),
        }
    }
}
