//! A tenant's webhook endpoints (README "Webhooks"): register (the signing secret shown once), list, delete, and
//! the latest deliveries of one. Every URL is checked against server-side request forgery here and again before
//! each delivery (`engine::webhooks::check_url`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use engine::ports::{EVENTS, Webhook, WebhookDelivery};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use crate::{ApiError, AppState, Caller, idempotency};

/// Endpoints one tenant may register.
const MAX_WEBHOOKS: usize = 20;

/// `POST /M2M/Webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NewWebhookRequest {
    /// An https URL whose host resolves to public addresses only.
    pub url: Option<String>,
    /// The events it wants: `bulk_change.finished`, `bulk_change.paused`, `bulk_change.aborted` (default: all).
    pub events: Option<Vec<String>>,
}

/// A registered endpoint; `Secret` only in the answer that registered it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub created_by: String,
    pub created_date: chrono::DateTime<chrono::Utc>,
    /// The signing secret (`whsec_…`): shown once, here; keep it to verify `Webhook-Signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    fn of(w: &Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url.clone(),
            events: w.events.clone(),
            created_by: w.created_by.clone(),
            created_date: w.created_date,
            secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

/// One event's delivery to an endpoint.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeliveryView {
    pub id: i64,
    /// The `Webhook-Id` a receiver de-duplicates by.
    pub event_id: String,
    pub event_type: String,
    pub bulk_change_id: i64,
    /// PENDING (tried again at `NextAttemptDate`), DELIVERED or FAILED (given up).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_date: chrono::DateTime<chrono::Utc>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_date: chrono::DateTime<chrono::Utc>,
    pub delivered_date: Option<chrono::DateTime<chrono::Utc>>,
}

impl DeliveryView {
    fn of(d: &WebhookDelivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            bulk_change_id: d.bulk_change_id,
            status: d.status.clone(),
            attempts: d.attempts,
            next_attempt_date: d.next_attempt,
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            created_date: d.created_date,
            delivered_date: d.delivered_date,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// The latest this many (1 to 500, default 100), newest first.
    limit: Option<u32>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(domain::RequestError::one("Invalid webhook", field, message))
}

/// Registers a webhook endpoint of the caller's tenant. The answer shows its signing secret, once.
#[utoipa::path(post, path = "/M2M/Webhooks", tag = "webhooks", request_body = NewWebhookRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 201, description = "Registered; `Secret` is shown only here", body = WebhookView),
              (status = 400, description = "A field is wrong: the URL is not https, or points at a private, loopback or link-local address", body = crate::openapi::Problem)))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    idempotency::post_once(&state, &caller, &headers, uri.path(), &body.clone(), move |state, caller, _| async move {
        let request: NewWebhookRequest =
            serde_json::from_slice(&body).map_err(|e| invalid("body", format!("not a webhook registration: {e}")))?;
        let url = request.url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let Some(url) = url else { return Err(invalid("Url", "Url is required: the https URL to deliver to")) };
        engine::webhooks::check_url(url, state.webhook_policy)
            .await
            .map_err(|why| invalid("Url", format!("Url {why}")))?;
        let mut events = request.events.unwrap_or_else(|| EVENTS.iter().map(|e| e.to_string()).collect());
        if events.is_empty() {
            return Err(invalid("Events", "Events is empty; leave it out for every event"));
        }
        if let Some(unknown) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(invalid("Events", format!("unknown event {unknown:?}; known: {}", EVENTS.join(", "))));
        }
        events.sort();
        events.dedup();
        if state.store.webhooks(caller.tenant_id).await?.len() >= MAX_WEBHOOKS {
            return Err(ApiError::Conflict(format!("a tenant has at most {MAX_WEBHOOKS} webhooks; delete one first")));
        }
        let secret = engine::webhooks::new_secret().map_err(ApiError::Internal)?;
        let now = chrono::Utc::now();
        let id = state.store.add_webhook(caller.tenant_id, url, &events, &secret, &caller.user, now).await?;
        info!(webhook_id = id, tenant_id = caller.tenant_id, user = %caller.user, "webhook registered");
        let view = WebhookView {
            id,
            url: url.to_string(),
            events,
            created_by: caller.user.clone(),
            created_date: now,
            secret: Some(secret),
        };
        Ok((StatusCode::CREATED, Json(view)).into_response())
    })
    .await
}

/// The caller's tenant's webhook endpoints (without their secrets).
#[utoipa::path(get, path = "/M2M/Webhooks", tag = "webhooks",
    responses((status = 200, description = "The tenant's endpoints", body = WebhookList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let items = state.store.webhooks(caller.tenant_id).await?.iter().map(WebhookView::of).collect();
    Ok(Json(WebhookList { items }).into_response())
}

/// Deletes one of the tenant's endpoints; its deliveries not yet made are given up.
#[utoipa::path(delete, path = "/M2M/Webhooks/{id}", tag = "webhooks", params(("id" = i64, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "Not this tenant's webhook", body = crate::openapi::Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = webhook_id(&id)?;
    if !state.store.delete_webhook(caller.tenant_id, id, chrono::Utc::now()).await? {
        return Err(ApiError::NotFound(format!("webhook {id} was not found")));
    }
    info!(webhook_id = id, tenant_id = caller.tenant_id, user = %caller.user, "webhook deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The latest deliveries to one of the tenant's endpoints, newest first.
#[utoipa::path(get, path = "/M2M/Webhooks/{id}/Deliveries", tag = "webhooks",
    params(("id" = i64, Path, description = "Webhook id"), DeliveryQuery),
    responses((status = 200, description = "Its deliveries, newest first", body = DeliveryList),
              (status = 404, description = "Not this tenant's webhook", body = crate::openapi::Problem)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let id = webhook_id(&id)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit", format!("limit {limit} is not between 1 and 500")));
    }
    if !state.store.webhooks(caller.tenant_id).await?.iter().any(|w| w.id == id) {
        return Err(ApiError::NotFound(format!("webhook {id} was not found")));
    }
    let items =
        state.store.webhook_deliveries(caller.tenant_id, id, limit).await?.iter().map(DeliveryView::of).collect();
    Ok(Json(DeliveryList { items }).into_response())
}

fn webhook_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid("id", format!("webhook id {raw:?} is not a number")))
}
