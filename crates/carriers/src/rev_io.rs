//! Rev.io billing REST v1 client: Basic `user@client:password` plus `Ocp-Apim-Subscription-Key`;
//! create a service line, list customers.

use std::sync::Arc;

use async_trait::async_trait;
use engine::metrics::Metrics;
use engine::ports::{CallRecord, CarrierFailure, FailureKind, RevIoApi, RevIoCustomer, RevServiceCreate, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::http::{Answer, Endpoint};

/// What Rev.io needs on every call: `user@client:password` and the subscription key.
pub struct RevIoCredentials {
    pub username: String,
    pub client_code: String,
    pub password: Secret,
    pub subscription_key: Secret,
}

pub struct RevIoClient {
    endpoint: Endpoint,
    user: String,
    password: Secret,
    subscription_key: Secret,
}

/// Rev.io's failure bodies vary (`message`, `errors[]`); take what is there.
pub fn parse_error(body: &str) -> (Option<String>, String) {
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) if body.trim().is_empty() => return (None, "empty answer".into()),
        Err(_) => return (None, body.chars().take(300).collect()),
    };
    let message = v
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or_else(|| v.get("errors").map(|e| e.to_string()))
        .unwrap_or_else(|| v.to_string());
    (v.get("code").map(|c| c.to_string()), message)
}

impl RevIoClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        credentials: RevIoCredentials,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(http, base_url, limiter, retry, "Rev.io"),
            user: format!("{}@{}", credentials.username, credentials.client_code),
            password: credentials.password,
            subscription_key: credentials.subscription_key,
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
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CarrierFailure> {
        let authorise = |r: reqwest::RequestBuilder| {
            r.basic_auth(&self.user, Some(self.password.expose()))
                .header("Ocp-Apim-Subscription-Key", self.subscription_key.expose())
        };
        self.endpoint.send(method, path, body, authorise, parse_error).await
    }
}

fn protocol(call: CallRecord, message: String) -> CarrierFailure {
    CarrierFailure { kind: FailureKind::Protocol, code: None, message, attempts: 1, call }
}

#[async_trait]
impl RevIoApi for RevIoClient {
    async fn create_service(&self, s: &RevServiceCreate) -> Result<(i64, CallRecord), CarrierFailure> {
        let customer_id: i64 = s.customer_id.trim().parse().map_err(|_| CarrierFailure {
            kind: FailureKind::Refused,
            code: None,
            message: format!("Rev customer id '{}' is not a number", s.customer_id),
            attempts: 0,
            call: CallRecord::default(),
        })?;
        let body = json!({
            "customer_id": customer_id,
            "provider_id": s.provider_id,
            "service_type_id": s.service_type_id,
            "number": s.number,
            "number2": s.number2,
            "usage_plan_group_id": s.usage_plan_group_id,
            "activated_date": s.activated_date,
        });
        let answer = self.send(Method::POST, "Services", Some(&body)).await?;
        #[derive(Deserialize)]
        struct Created {
            ok: bool,
            id: i64,
        }
        match serde_json::from_str::<Created>(&answer.body) {
            Ok(c) if c.ok => Ok((c.id, answer.call)),
            // A 2xx without the new line's id is not a refusal: Rev.io received the creation and may have made the
            // line (a gateway that emptied the answer). Its outcome is unknown; the line is looked up before anything
            // is sent again.
            _ => Err(CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: format!(
                    "HTTP {} without the service id in the answer: the line may have been created",
                    answer.status.as_u16()
                ),
                attempts: 1,
                call: answer.call,
            }),
        }
    }

    async fn list_customers(&self) -> Result<Vec<RevIoCustomer>, CarrierFailure> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            has_more: bool,
            #[serde(default)]
            records: Vec<RevIoCustomer>,
        }
        let mut out = Vec::new();
        for page in 1..=1000 {
            let answer =
                self.send(Method::GET, &format!("Customers?search.page={page}&search.page_size=500"), None).await?;
            let p: Page = serde_json::from_str(&answer.body)
                .map_err(|e| protocol(answer.call.clone(), format!("unreadable customer page: {e}")))?;
            out.extend(p.records);
            if !p.has_more {
                break;
            }
        }
        Ok(out)
    }

    async fn set_service_fields(
        &self,
        service_id: i64,
        fields: &[(i64, String)],
    ) -> Result<CallRecord, CarrierFailure> {
        let patch: Vec<serde_json::Value> = fields
            .iter()
            .map(|(field, value)| json!({"op": "replace", "path": format!("/fields/{field}/value"), "value": value}))
            .collect();
        let answer =
            self.send(Method::PATCH, &format!("Services/{service_id}"), Some(&serde_json::Value::Array(patch))).await?;
        Ok(answer.call)
    }

    async fn find_services(&self, customer_id: &str, number2: &str) -> Result<(Vec<i64>, CallRecord), CarrierFailure> {
        #[derive(Deserialize)]
        struct Service {
            service_id: i64,
            #[serde(default)]
            disconnected_date: Option<String>,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            records: Vec<Service>,
        }
        let path = format!(
            "Services?search.customer_id={}&search.number2={}&search.page_size=500",
            urlencode(customer_id),
            urlencode(number2)
        );
        let answer = self.send(Method::GET, &path, None).await?;
        let page: Page = serde_json::from_str(&answer.body)
            .map_err(|e| protocol(answer.call.clone(), format!("unreadable service page: {e}")))?;
        // A disconnected line (an undone assignment) is not the device's line any more.
        let open = page.records.into_iter().filter(|s| s.disconnected_date.as_deref().is_none_or(str::is_empty));
        Ok((open.map(|s| s.service_id).collect(), answer.call))
    }

    async fn close_service(&self, service_id: i64, disconnected_date: &str) -> Result<CallRecord, CarrierFailure> {
        let patch = json!([{"op": "replace", "path": "/disconnected_date", "value": disconnected_date}]);
        let answer = self.send(Method::PATCH, &format!("Services/{service_id}"), Some(&patch)).await?;
        Ok(answer.call)
    }

    async fn service_fields(
        &self,
        service_id: i64,
    ) -> Result<(std::collections::BTreeMap<i64, String>, CallRecord), CarrierFailure> {
        let answer = self.send(Method::GET, &format!("Services/{service_id}"), None).await?;
        let service: serde_json::Value = serde_json::from_str(&answer.body)
            .map_err(|e| protocol(answer.call.clone(), format!("unreadable service {service_id}: {e}")))?;
        // `fields` by id: an object {"<id>": value}, or a list of {"id"|"field_id", "value"} (the format of Rev.io's
        // custom fields is not confirmed; the PATCH path `/fields/{id}/value` names them by id).
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string).or_else(|| v.as_i64().map(|n| n.to_string()));
        let mut fields = std::collections::BTreeMap::new();
        match service.get("fields") {
            Some(serde_json::Value::Object(map)) => {
                for (id, value) in map {
                    let value = value.get("value").unwrap_or(value);
                    if let (Ok(id), Some(value)) = (id.parse::<i64>(), text(value)) {
                        fields.insert(id, value);
                    }
                }
            }
            Some(serde_json::Value::Array(list)) => {
                for field in list {
                    let id = field.get("id").or_else(|| field.get("field_id")).and_then(serde_json::Value::as_i64);
                    if let (Some(id), Some(value)) = (id, field.get("value").and_then(text)) {
                        fields.insert(id, value);
                    }
                }
            }
            _ => {}
        }
        Ok((fields, answer.call))
    }

    async fn service_disconnected(&self, service_id: i64) -> Result<(Option<String>, CallRecord), CarrierFailure> {
        #[derive(Deserialize)]
        struct Service {
            service_id: i64,
            #[serde(default)]
            disconnected_date: Option<String>,
        }
        let answer = self.send(Method::GET, &format!("Services/{service_id}"), None).await?;
        match serde_json::from_str::<Service>(&answer.body) {
            Ok(s) if s.service_id == service_id => {
                Ok((s.disconnected_date.filter(|d| !d.trim().is_empty()), answer.call))
            }
            Ok(s) => {
                Err(protocol(answer.call, format!("asked for service {service_id}, Rev.io answered {}", s.service_id)))
            }
            Err(e) => Err(protocol(answer.call, format!("unreadable service {service_id}: {e}"))),
        }
    }
}

/// Percent-encodes a query value (identifiers are digits, but nothing here trusts that).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
