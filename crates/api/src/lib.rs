//! The portal-facing HTTP API as one axum `Router`: served by axum locally and by `lambda_http` in AWS.

pub mod auth;
pub mod export;
pub mod idempotency;
pub mod intake;
pub mod inventory;
pub mod openapi;
pub mod problem;
pub mod results;
pub mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use domain::{BulkStatus, ChangeType, Integration, RowStatus};
use engine::ports::{BulkChange, BulkChangeFilter, Queue, Store, WorkMessage};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

pub use auth::{Authenticator, Caller, Claims, Hs256};
pub use problem::ApiError;

/// What the routes need; built once by the binary.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub auth: Arc<dyn Authenticator>,
    pub max_devices: usize,
    /// How long a request's body may go without a byte arriving (`Settings::api_body_idle`): 408 after it.
    pub body_idle: std::time::Duration,
    /// Where exports over the inline limit go (the Lambda function: S3); `None` streams every export inline.
    pub large_exports: Option<export::LargeExports>,
    /// Where webhook URLs may point (`WEBHOOK_ALLOW_LOOPBACK`), checked at registration and at submit (`NotifyUrl`).
    pub webhook_policy: engine::webhooks::UrlPolicy,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.authenticate(parts)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi::document))
        .route("/M2M/BulkChange", post(submit))
        .route("/M2M/ValidateBulkChange", post(validate))
        .route("/M2M/BulkChangeStatus/{id}", get(status))
        .route("/M2M/BulkChanges", get(list))
        .route("/M2M/BulkChange/{id}/Retry", post(retry))
        .route("/M2M/BulkChange/{id}/Cancel", post(cancel))
        .route("/M2M/BulkChange/{id}/Pause", post(pause))
        .route("/M2M/BulkChange/{id}/Resume", post(resume))
        .route("/M2M/BulkChange/{id}/Results", get(results))
        .route("/M2M/BulkChange/{id}/Undo", post(undo))
        .route("/M2M/DeviceDetails/{iccid}", get(device_details))
        .route("/M2M/GetRevCustomers", get(rev_customers))
        .route("/M2M/AssociateCustomer", post(associate_customer))
        .route("/M2M/Index", get(index))
        .route("/M2M/DeviceInventoryExport", get(export))
        .route("/M2M/Webhooks", post(webhooks::register).get(webhooks::list))
        .route("/M2M/Webhooks/{id}", delete(webhooks::delete))
        .route("/M2M/Webhooks/{id}/Deliveries", get(webhooks::deliveries))
        // Called by ThingSpace without a portal token: a callback is one device's result, far below the limit,
        // which is checked before the body is read or parsed.
        .route("/ThingSpace/Callback", post(thingspace_callback).layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY_BYTES)))
        // Called by Teal when an operation is done; authenticated by the signature in the URL we gave it.
        .route("/Teal/Callback", post(teal_callback).layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY_BYTES)))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        // 10,000 ICCIDs are ~250 KB of JSON; leave room without accepting anything.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_in_time))
        .layer(axum::middleware::map_response(problem::problem_for_every_error))
        .with_state(state)
}

/// The most devices `MAX_DEVICES_PER_BULK_CHANGE` may allow: an intake answer lists every device (about 160 bytes
/// each when refused: 15.6 MB for 100,000, where API Gateway answers at most 6 MB), and the intake holds about
/// 2.1 KiB of heap per device at its peak (`make bench`), 62 MiB at this ceiling against the API function's 512 MB.
pub const MAX_DEVICES_CEILING: usize = 30_000;

/// `MAX_DEVICES_PER_BULK_CHANGE` checked against `MAX_DEVICES_CEILING`, with the reason when refused.
pub fn check_max_devices(n: usize) -> Result<usize, String> {
    if (1..=MAX_DEVICES_CEILING).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "MAX_DEVICES_PER_BULK_CHANGE {n} is outside 1..={MAX_DEVICES_CEILING}: an intake answer lists every device \
             (API Gateway answers at most 6 MB) and the intake holds about 2 KiB a device"
        ))
    }
}

/// The largest body any route accepts (413 above it; the callbacks accept less).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Reads every request's body, at most `MAX_BODY_BYTES` (413 at once when its `Content-Length` says more) and
/// with no pause longer than `AppState::body_idle`, then hands the request on with the body read: a client that
/// announces a body and stalls is answered 408 and its connection freed, instead of holding it for as long as it
/// likes (a slow client that keeps sending is not cut off).
async fn body_in_time(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::StreamExt;
    let too_large = || ApiError::Http {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        detail: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
    };
    let announced =
        request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large().into_response();
    }
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    let mut read = Vec::new();
    loop {
        match tokio::time::timeout(state.body_idle, chunks.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(chunk))) if read.len() + chunk.len() > MAX_BODY_BYTES => return too_large().into_response(),
            Ok(Some(Ok(chunk))) => read.extend_from_slice(&chunk),
            Ok(Some(Err(e))) => {
                let detail = format!("the body could not be read: {e}");
                return ApiError::Http { status: StatusCode::BAD_REQUEST, detail }.into_response();
            }
            Err(_) => {
                let detail = format!("no byte of the body arrived for {} s", state.body_idle.as_secs_f64());
                return ApiError::Http { status: StatusCode::REQUEST_TIMEOUT, detail }.into_response();
            }
        }
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(read))).await
}

/// The largest ThingSpace callback body accepted (413 above it, before parsing).
pub const MAX_CALLBACK_BODY_BYTES: usize = 64 * 1024;

#[utoipa::path(get, path = "/health", tag = "operations", security(()), responses((status = 200, description = "The API answers", body = openapi::Health)))]
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(post, path = "/M2M/ValidateBulkChange", tag = "bulk changes", request_body = domain::BulkChangeRequestWire,
    responses((status = 200, description = "Every device's verdict; nothing written", body = openapi::Validated),
              (status = 400, description = "Malformed or inconsistent request", body = openapi::Problem),
              (status = 401, description = "No valid token", body = openapi::Problem),
              (status = 408, description = "No byte of the body arrived for API_BODY_IDLE_SECONDS (10 s)", body = openapi::Problem),
              (status = 413, description = "Too many devices, or a body above 4 MB", body = openapi::Problem)))]
async fn validate(State(state): State<AppState>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let intake = intake::evaluate(state.store.as_ref(), &caller, &body, state.max_devices).await?;
    Ok(Json(json!({
        "Counts": intake.counts(),
        "Devices": intake.devices,
        "Duplicates": intake.duplicates,
        "Warnings": intake.warnings,
    }))
    .into_response())
}

#[utoipa::path(post, path = "/M2M/BulkChange", tag = "bulk changes", request_body = domain::BulkChangeRequestWire,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body within 24 h get the first answer again")),
    responses((status = 202, description = "Recorded and queued; refused devices are ERROR rows", body = openapi::Accepted,
               headers(("Location" = String, description = "The bulk change's status"))),
              (status = 400, description = "Malformed or inconsistent request; nothing written", body = openapi::Problem),
              (status = 401, description = "No valid token", body = openapi::Problem),
              (status = 409, description = "A request with this Idempotency-Key is still running", body = openapi::Problem),
              (status = 408, description = "No byte of the body arrived for API_BODY_IDLE_SECONDS (10 s)", body = openapi::Problem),
              (status = 413, description = "Too many devices, or a body above 4 MB", body = openapi::Problem),
              (status = 422, description = "The Idempotency-Key was used for another request", body = openapi::Problem)))]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    idempotency::post_once(&state, &caller, &headers, uri.path(), &body.clone(), move |state, caller, key| async move {
        let intake = intake::evaluate(state.store.as_ref(), &caller, &body, state.max_devices).await?;
        accept(&state, &caller, intake, key).await
    })
    .await
}

/// Records a checked bulk change and queues it: 202 with each device's verdict. Devices another bulk change
/// took in the meantime (the store decides) are reported invalid with the holder's name.
async fn accept(
    state: &AppState,
    caller: &Caller,
    mut intake: intake::Intake,
    idempotency_key: Option<String>,
) -> Result<Response, ApiError> {
    intake.change.idempotency_key = idempotency_key;
    // Its own webhook endpoint: checked like a registered one, signed with a secret shown once, in this answer.
    if let Some(url) = intake.change.request.notify_url.clone() {
        engine::webhooks::check_url(&url, state.webhook_policy)
            .await
            .map_err(|why| ApiError::invalid("NotifyUrl", format!("NotifyUrl {why}")))?;
        intake.change.notify_secret = Some(engine::webhooks::new_secret().map_err(ApiError::Internal)?);
    }
    // Recorded first, enqueued second: a worker never sees a bulk change that is not stored, and when the
    // enqueue fails the scheduler finds the NEW bulk change and enqueues it. The API never writes its status again.
    let created = state.store.create_bulk_change(&intake.change, &intake.rows).await?;
    let id = created.id;
    for conflict in &created.conflicts {
        if let Some(device) = intake.devices.iter_mut().find(|d| d.iccid == conflict.iccid) {
            device.refuse(conflict.reason.clone());
        }
    }
    enqueue(state, id).await;
    info!(bulk_change_id = id, tenant_id = caller.tenant_id, user = ?caller.user, change_type = %intake.change.change_type,
          devices = intake.rows.len(), held_elsewhere = created.conflicts.len(), retry_of = ?intake.change.retry_of,
          "bulk change accepted");
    let mut body = json!({
        "BulkChangeId": id,
        "Status": BulkStatus::New,
        "Counts": intake.counts(),
        "Devices": intake.devices,
        "Duplicates": intake.duplicates,
        "Warnings": intake.warnings,
    });
    if let (Some(retry_of), Some(obj)) = (intake.change.retry_of, body.as_object_mut()) {
        obj.insert("RetryOf".into(), json!(retry_of));
    }
    if let (Some(secret), Some(obj)) = (&intake.change.notify_secret, body.as_object_mut()) {
        obj.insert("NotifySecret".into(), json!(secret));
    }
    Ok(accepted(id, body))
}

/// The `Location` of an accepted bulk change: its status (`GET /M2M/BulkChangeStatus/{id}`).
pub(crate) fn status_location(id: i64) -> Option<axum::http::HeaderValue> {
    axum::http::HeaderValue::from_str(&format!("/M2M/BulkChangeStatus/{id}")).ok()
}

/// 202 with `body` and the accepted bulk change's `Location`.
fn accepted(id: i64, body: Value) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Some(location) = status_location(id) {
        response.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    response
}

/// ThingSpace's `CarrierService` callback: one device's result of an asynchronous request. Authenticated by the
/// credentials registered with ThingSpace (sent in the body), not by a portal token.
#[utoipa::path(post, path = "/ThingSpace/Callback", tag = "carriers", security(()), request_body = Object,
    responses((status = 200, description = "Applied, or ignored (a duplicate, a row already settled)", body = openapi::CallbackAnswer),
              (status = 400, description = "No requestId or device", body = openapi::Problem),
              (status = 401, description = "Credentials no ThingSpace account registered; nothing stored", body = openapi::Problem),
              (status = 404, description = "No row of this account waits on the request (kept for its worker)", body = openapi::Problem),
              (status = 408, description = "No byte of the body arrived for API_BODY_IDLE_SECONDS (10 s)", body = openapi::Problem),
              (status = 413, description = "A body above 64 KB", body = openapi::Problem)))]
async fn thingspace_callback(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    use engine::carrier::thingspace::{Callback, CallbackAnswer, apply_callback};
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Invalid(domain::RequestError::one("Malformed callback", "body", format!("invalid JSON: {e}")))
    })?;
    let callback = Callback::parse(&value)
        .map_err(|e| ApiError::Invalid(domain::RequestError::one("Malformed callback", "requestId", e)))?;
    match apply_callback(state.store.as_ref(), state.queue.as_ref(), &callback, chrono::Utc::now()).await? {
        CallbackAnswer::Unauthorized => {
            Err(ApiError::Unauthorized("callback credentials are not registered for any ThingSpace account".into()))
        }
        CallbackAnswer::Malformed(why) => {
            Err(ApiError::Invalid(domain::RequestError::one("Malformed callback", "deviceIds", why)))
        }
        CallbackAnswer::Unknown => Err(ApiError::NotFound(format!(
            "no device of request {} is waiting for a result in this account",
            callback.request_id
        ))),
        CallbackAnswer::Applied { bulk_change_id, .. } => {
            Ok(Json(json!({"Applied": true, "BulkChangeId": bulk_change_id})).into_response())
        }
        CallbackAnswer::Ignored(reason) => Ok(Json(json!({"Applied": false, "Reason": reason})).into_response()),
    }
}

/// The query Teal calls back with: our signature, and the `requestId` Teal appends.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct TealCallbackQuery {
    /// The HMAC of the request id in the callback URL we gave Teal.
    #[serde(default)]
    sig: String,
    /// Appended by Teal.
    #[serde(default)]
    request_id: String,
}

/// Teal's callback: an operation is done. It only wakes the rows waiting on the request (a worker reads the result
/// from Teal), so a duplicate or late callback changes nothing. Authenticated by the signature of the request id
/// in the URL (no portal token); the body is not read.
#[utoipa::path(post, path = "/Teal/Callback", tag = "carriers", security(()), params(TealCallbackQuery),
    responses((status = 200, description = "Woken, or ignored (no row waits any more)", body = openapi::TealCallbackAnswer),
              (status = 401, description = "No Teal account signed this request id; nothing stored", body = openapi::Problem),
              (status = 408, description = "No byte of the body arrived for API_BODY_IDLE_SECONDS (10 s)", body = openapi::Problem),
              (status = 413, description = "A body above 64 KB", body = openapi::Problem)))]
async fn teal_callback(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<TealCallbackQuery>,
    // Not read (the result is fetched from Teal), but taken, so a body above the route's limit is 413 like
    // everywhere else rather than 401.
    _body: Bytes,
) -> Result<Response, ApiError> {
    use engine::carrier::teal::{TealCallbackAnswer, apply_callback};
    // Teal appends `?requestId=` to a URL that has a query already in some clients: accept `sig=<hex>?requestId=<id>`.
    let (sig, request_id) = match query.sig.split_once("?requestId=") {
        Some((sig, id)) if query.request_id.is_empty() => (sig.to_string(), id.to_string()),
        _ => (query.sig.clone(), query.request_id.clone()),
    };
    match apply_callback(state.store.as_ref(), state.queue.as_ref(), &request_id, &sig, chrono::Utc::now()).await? {
        TealCallbackAnswer::Unauthorized => {
            Err(ApiError::Unauthorized("the callback is not signed by any Teal account for this request id".into()))
        }
        TealCallbackAnswer::Woken(ids) => Ok(Json(json!({"Woken": true, "BulkChangeIds": ids})).into_response()),
        TealCallbackAnswer::Ignored => Ok(Json(json!({"Woken": false, "BulkChangeIds": [],
            "Reason": "no row waits on this request any more"}))
        .into_response()),
    }
}

/// The tenant's device inventory, paged and filtered.
#[utoipa::path(get, path = "/M2M/Index", tag = "devices", params(inventory::InventoryQuery),
    responses((status = 200, description = "The tenant's live devices, paged", body = openapi::DevicePage)))]
async fn index(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<inventory::InventoryQuery>,
) -> Result<Response, ApiError> {
    let (page, size) = paging(q.page, q.page_size)?;
    let filter = q.filter();
    let total = state.store.count_devices(caller.tenant_id, &filter).await?;
    let offset = (page - 1).saturating_mul(size);
    let items = state.store.list_devices(caller.tenant_id, &filter, 0, offset, size).await?;
    Ok(Json(json!({"Total": total, "Page": page, "PageSize": size, "Items": items})).into_response())
}

/// The same inventory as CSV, streamed page by page.
#[utoipa::path(get, path = "/M2M/DeviceInventoryExport", tag = "devices", params(inventory::InventoryQuery),
    responses((status = 200, description = "The same devices as CSV, streamed", content_type = "text/csv", body = String),
              (status = 303, description = "Larger than an inline answer may be (deployed API): the CSV is at the presigned URL in Location", body = openapi::LargeExport)))]
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<inventory::InventoryQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter();
    let store = state.store.clone();
    let tenant = caller.tenant_id;
    let stream = inventory::csv_stream(move |after| {
        let (store, filter) = (store.clone(), filter.clone());
        async move { store.list_devices(tenant, &filter, after, 0, inventory::EXPORT_PAGE).await }
    });
    export::deliver(stream, state.large_exports.as_ref(), format!("exports/{tenant}/inventory"), "device-inventory.csv")
        .await
}

/// A bulk change's rows as CSV (one line per row), filterable by row status, streamed in pages.
#[utoipa::path(get, path = "/M2M/BulkChange/{id}/Results", tag = "bulk changes", params(("id" = i64, Path, description = "Bulk change id"), ResultsQuery),
    responses((status = 200, description = "One CSV line per row: ICCID, Status, Details, CarrierErrorCode, CarrierRequestId, ProcessedAt", content_type = "text/csv", body = String),
              (status = 303, description = "Larger than an inline answer may be (deployed API): the CSV is at the presigned URL in Location", body = openapi::LargeExport),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem)))]
async fn results(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let bulk = owned_bulk_change(&state, &caller, &id).await?;
    let filter = row_status_filter(q.status.as_deref())?;
    let (store, tenant, bulk_id) = (state.store.clone(), caller.tenant_id, bulk.id);
    // Pages by row id (after the last row of the previous page), not by offset: rows change status while a
    // bulk change runs, and an offset over a filtered set that shrinks skips rows.
    let stream = export::csv_stream(
        &results::CSV_HEADER,
        move |after| {
            let store = store.clone();
            async move { store.rows_after(tenant, bulk_id, filter, after, export::PAGE).await }
        },
        results::csv_record,
        "results",
    );
    let prefix = format!("exports/{tenant}/bulk-change-{bulk_id}");
    export::deliver(stream, state.large_exports.as_ref(), prefix, "bulk-change-results.csv").await
}

fn row_status_filter(raw: Option<&str>) -> Result<Option<RowStatus>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => RowStatus::parse(&s.to_ascii_uppercase()).map(Some).ok_or_else(|| {
            ApiError::Invalid(domain::RequestError::one("Invalid query", "status", format!("unknown row status '{s}'")))
        }),
    }
}

/// Seed 003's device association: the options of a CustomerAssignment at the top level of the body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AssociateCustomerRequest {
    service_provider_id: Option<i64>,
    #[serde(default)]
    portal_type: Option<i64>,
    #[serde(default)]
    devices: Vec<String>,
    /// Rollout control, as for `/M2M/BulkChange`.
    #[serde(default)]
    max_per_minute: Option<i64>,
    #[serde(default)]
    canary: Option<domain::rollout::CanaryWire>,
    #[serde(default)]
    abort_when: Option<domain::rollout::AbortWhenWire>,
    #[serde(flatten)]
    options: domain::request::RevServiceOptions,
}

#[utoipa::path(post, path = "/M2M/AssociateCustomer", tag = "bulk changes", request_body = AssociateCustomerRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 202, description = "A CustomerAssignment recorded and queued", body = openapi::Accepted),
              (status = 400, description = "Malformed or inconsistent request", body = openapi::Problem),
              (status = 408, description = "No byte of the body arrived for API_BODY_IDLE_SECONDS (10 s)", body = openapi::Problem),
              (status = 413, description = "Too many devices, or a body above 4 MB", body = openapi::Problem)))]
async fn associate_customer(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    idempotency::post_once(&state, &caller, &headers, uri.path(), &body.clone(), move |state, caller, key| async move {
        associate(&state, &caller, &body, key).await
    })
    .await
}

async fn associate(state: &AppState, caller: &Caller, body: &[u8], key: Option<String>) -> Result<Response, ApiError> {
    let (request, mut warnings): (AssociateCustomerRequest, _) =
        domain::request::parse_json(body, "Malformed association request")?;
    // The options are flattened into the body, where unknown fields cannot be told apart by the parser: compare
    // the body's keys with the known ones.
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
        let known = |k: &str| {
            ["ServiceProviderId", "PortalType", "Devices", "MaxPerMinute", "Canary", "AbortWhen"].contains(&k)
                || domain::request::RevServiceOptions::FIELDS.contains(&k)
        };
        let unknown =
            fields.keys().filter(|k| !known(k)).map(|k| domain::FieldError::new(k.clone(), "unknown field, ignored"));
        warnings = domain::request::capped_warnings(warnings.into_iter().chain(unknown));
    }
    let wire = domain::BulkChangeRequestWire {
        service_provider_id: request.service_provider_id,
        change_type: Some(domain::ChangeType::CustomerAssignment.number()),
        portal_type: request.portal_type,
        devices: request.devices,
        rev_service: Some(request.options),
        max_per_minute: request.max_per_minute,
        canary: request.canary,
        abort_when: request.abort_when,
        ..Default::default()
    };
    let request = domain::BulkChangeRequest::from_wire(wire)?;
    let intake = intake::evaluate_request(state.store.as_ref(), caller, request, warnings, state.max_devices).await?;
    accept(state, caller, intake, key).await
}

async fn owned_bulk_change(state: &AppState, caller: &Caller, raw_id: &str) -> Result<BulkChange, ApiError> {
    let id = bulk_id(raw_id)?;
    state
        .store
        .bulk_change(Some(caller.tenant_id), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("bulk change {id} was not found")))
}

/// Hands a recorded bulk change to the queue. A failed send is not lost: the bulk change is NEW or PROCESSING with
/// no lease, so the scheduler's stranded sweep queues it.
async fn enqueue(state: &AppState, id: i64) {
    if let Err(e) = state.queue.send(&WorkMessage::new(id), std::time::Duration::ZERO).await {
        warn!(bulk_change_id = id, error = %e, "enqueue failed; the scheduler will pick the bulk change up");
    }
}

/// A POST on one of the caller's bulk changes (`/Retry`, `/Cancel`, `/Pause`, `/Resume`): its `Idempotency-Key`
/// kept like a submission's, the bulk change read within the caller's tenant (404 otherwise), then `act` with the
/// key (a retry records its new bulk change on it).
async fn on_own_bulk_change<F, Fut>(
    state: AppState,
    caller: Caller,
    id: String,
    uri: &Uri,
    headers: &HeaderMap,
    act: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(AppState, Caller, BulkChange, Option<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    idempotency::post_once(&state, &caller, headers, uri.path(), b"", move |state, caller, key| async move {
        let bulk = owned_bulk_change(&state, &caller, &id).await?;
        act(state, caller, bulk, key).await
    })
    .await
}

/// A new bulk change for the rows that ended API_FAILED or ERROR and that no later retry took, checked again by
/// today's rules, linked to the old one. One retry of a bulk change is open at a time (the store decides).
#[utoipa::path(post, path = "/M2M/BulkChange/{id}/Retry", tag = "bulk changes", params(("id" = i64, Path, description = "Bulk change id"),
        ("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 202, description = "A new bulk change for the failed rows no later retry took", body = openapi::Accepted),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem),
              (status = 409, description = "Still running, a retry of it is open, or nothing left to retry", body = openapi::Problem)))]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    on_own_bulk_change(state, caller, id, &uri, &headers, move |state, caller, bulk, key| async move {
        if !bulk.status.is_final() {
            return Err(ApiError::Conflict(format!(
                "bulk change {} is {}; retry it once it has finished",
                bulk.id, bulk.status
            )));
        }
        if let Some(original) = bulk.request.undo_of {
            // Its rows carry each device's own value, which a retry (one change for all) would not.
            return Err(ApiError::Conflict(format!(
                "bulk change {} undoes bulk change {original}: undo bulk change {original} again instead of retrying",
                bulk.id
            )));
        }
        let failed = state.store.retry_candidates(caller.tenant_id, bulk.id).await?;
        if failed.is_empty() {
            return Err(ApiError::Conflict(format!(
                "bulk change {} has no failed rows left to retry (none failed, or a later retry of it took them; retry that one)",
                bulk.id
            )));
        }
        let wire = domain::BulkChangeRequestWire { devices: failed, ..bulk.request.clone() };
        let body = serde_json::to_vec(&wire).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut intake = intake::evaluate(state.store.as_ref(), &caller, &body, state.max_devices).await?;
        intake.change.retry_of = Some(bulk.id);
        accept(&state, &caller, intake, key).await
    })
    .await
}

/// Cancels the rows not started yet; rows already with a worker finish.
#[utoipa::path(post, path = "/M2M/BulkChange/{id}/Cancel", tag = "bulk changes", params(("id" = i64, Path, description = "Bulk change id"),
        ("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 200, description = "Rows not started are cancelled", body = openapi::Cancelled),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem)))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    on_own_bulk_change(state, caller, id, &uri, &headers, move |state, caller, bulk, _| async move {
        let now = chrono::Utc::now();
        let cancelled =
            state.store.cancel_rows(caller.tenant_id, bulk.id, &domain::cancelled_by(&caller.user), now).await?;
        state.store.finalize_bulk_change(bulk.id, now).await?;
        let status = state.store.bulk_change(Some(caller.tenant_id), bulk.id).await?.map_or(bulk.status, |b| b.status);
        info!(bulk_change_id = bulk.id, user = ?caller.user, cancelled, "rows cancelled");
        Ok(Json(json!({"BulkChangeId": bulk.id, "Cancelled": cancelled, "Status": status})).into_response())
    })
    .await
}

/// Pauses a bulk change: no row starts until it is resumed; rows a worker holds finish and are recorded.
#[utoipa::path(post, path = "/M2M/BulkChange/{id}/Pause", tag = "bulk changes", params(("id" = i64, Path, description = "Bulk change id"),
        ("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 200, description = "Paused; InFlight rows finish", body = openapi::Held),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem),
              (status = 409, description = "Final or paused already: nothing to pause", body = openapi::Problem)))]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    on_own_bulk_change(state, caller, id, &uri, &headers, move |state, caller, bulk, _| async move {
        let by = caller.user.clone();
        let now = chrono::Utc::now();
        let Some(in_flight) =
            state.store.pause_bulk_change(Some(caller.tenant_id), bulk.id, "operator", &by, now).await?
        else {
            let status =
                state.store.bulk_change(Some(caller.tenant_id), bulk.id).await?.map_or(bulk.status, |b| b.status);
            return Err(ApiError::Conflict(format!(
                "bulk change {} is {status}: only a running bulk change can be paused",
                bulk.id
            )));
        };
        info!(bulk_change_id = bulk.id, user = %by, in_flight, "bulk change paused");
        let held = openapi::Held {
            bulk_change_id: bulk.id,
            status: BulkStatus::Paused.to_string(),
            in_flight: Some(in_flight),
        };
        Ok(Json(held).into_response())
    })
    .await
}

/// Resumes a paused bulk change where it stopped (a canary's pause: the rest follow).
#[utoipa::path(post, path = "/M2M/BulkChange/{id}/Resume", tag = "bulk changes", params(("id" = i64, Path, description = "Bulk change id"),
        ("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 200, description = "Resumed and queued", body = openapi::Held),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem),
              (status = 409, description = "Not paused", body = openapi::Problem)))]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    on_own_bulk_change(state, caller, id, &uri, &headers, move |state, caller, bulk, _| async move {
        if !state.store.resume_bulk_change(Some(caller.tenant_id), bulk.id, chrono::Utc::now()).await? {
            let status =
                state.store.bulk_change(Some(caller.tenant_id), bulk.id).await?.map_or(bulk.status, |b| b.status);
            return Err(ApiError::Conflict(format!(
                "bulk change {} is {status}, not PAUSED: nothing to resume",
                bulk.id
            )));
        }
        // Queued again: a worker takes it where it stopped.
        enqueue(&state, bulk.id).await;
        info!(bulk_change_id = bulk.id, user = ?caller.user, "bulk change resumed");
        let held =
            openapi::Held { bulk_change_id: bulk.id, status: BulkStatus::Processing.to_string(), in_flight: None };
        Ok(Json(held).into_response())
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UndoQuery {
    /// Show the plan (each row restored, or refused and why), record nothing.
    dry_run: Option<bool>,
}

/// Undoes a finished bulk change: a new bulk change (`UndoOf`) with one row per PROCESSED row that sets its device
/// back to what it was just before, through the same processors and rules as any bulk change (one change per
/// device included). A row that cannot be undone (its change is not reversible, or its device changed since) is
/// an ERROR row saying why; `?dryRun=true` shows the plan, refused rows first, and records nothing.
#[utoipa::path(post, path = "/M2M/BulkChange/{id}/Undo", tag = "bulk changes",
    params(("id" = i64, Path, description = "Bulk change id"), UndoQuery,
           ("Idempotency-Key" = Option<String>, Header, description = "As for /M2M/BulkChange")),
    responses((status = 200, description = "Dry run: the plan", body = openapi::UndoPlan),
              (status = 202, description = "The undo, recorded and queued", body = openapi::UndoPlan),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem),
              (status = 409, description = "Still running, or nothing of it can be undone", body = openapi::Problem)))]
async fn undo(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<UndoQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dry_run = query.dry_run.unwrap_or(false);
    // The query is part of the request: a dry run and the undo itself under one key are two requests.
    let path = format!("{}?dryRun={dry_run}", uri.path());
    idempotency::post_once(&state, &caller, &headers, &path, b"", move |state, caller, key| async move {
        let bulk = owned_bulk_change(&state, &caller, &id).await?;
        if !bulk.status.is_final() {
            return Err(ApiError::Conflict(format!(
                "bulk change {} is {}; undo it once it has finished",
                bulk.id, bulk.status
            )));
        }
        // An assignment that also moved the carrier plan of a carrier answering later: its way back (plan, then
        // line and customer, per device) is not built for those carriers.
        let moved_plan = match bulk.parsed_request().map_err(ApiError::Internal)?.details {
            domain::ChangeDetails::CustomerAssignment(options) => options.add_carrier_rate_plan == Some(true),
            _ => false,
        };
        if moved_plan
            && matches!(bulk.integration, Integration::ThingSpace | Integration::Teal | Integration::Telegence)
        {
            return Err(ApiError::Conflict(format!(
                "undoing a customer assignment that moved the carrier rate plan of {} devices is not built yet",
                bulk.integration
            )));
        }
        let rows = state.store.applied_rows(caller.tenant_id, bulk.id).await?;
        let statuses = state.store.device_statuses(bulk.integration).await?;
        let plan = engine::undo::plan(&bulk, &rows, &statuses).map_err(ApiError::Internal)?;
        let restore = plan.iter().filter(|r| r.refused.is_none()).count();
        let counts = json!({"Restore": restore, "Refused": plan.len() - restore});
        if dry_run {
            let body = json!({"UndoOf": bulk.id, "DryRun": true, "Counts": counts, "Rows": plan});
            return Ok(Json(body).into_response());
        }
        if restore == 0 {
            return Err(ApiError::Conflict(format!(
                "bulk change {} has no row that can be undone ({} PROCESSED rows, none reversible): see ?dryRun=true",
                bulk.id,
                plan.len()
            )));
        }
        let request = bulk.parsed_request().map_err(ApiError::Internal)?;
        let mut new_rows = Vec::with_capacity(plan.len());
        for row in &plan {
            let own = match &row.details {
                Some(details) => Some(
                    engine::undo::row_request(&bulk, details, row.expect.as_ref(), row.unassign.as_ref())
                        .map_err(ApiError::Internal)?,
                ),
                None => None,
            };
            new_rows.push(engine::ports::NewRow {
                device_id: row.device_id,
                iccid: row.iccid.clone(),
                msisdn: None,
                status: if own.is_some() { RowStatus::Pending } else { RowStatus::Error },
                status_details: row.refused.as_ref().map(|why| format!("not undone: {why}")),
                scheduled: None,
                request: own,
            });
        }
        let change = engine::ports::NewBulkChange {
            tenant_id: caller.tenant_id,
            service_provider_id: bulk.service_provider_id,
            integration: bulk.integration,
            change_type: bulk.change_type,
            portal_type: bulk.portal_type,
            request: domain::BulkChangeRequestWire {
                undo_of: Some(bulk.id),
                max_per_minute: None,
                canary: None,
                abort_when: None,
                notify_url: None,
                ..bulk.request.clone()
            },
            created_by: caller.user.clone(),
            retry_of: None,
            attributes: domain::attributes_of(&request.details),
            idempotency_key: key,
            notify_secret: None,
        };
        let created = state.store.create_bulk_change(&change, &new_rows).await?;
        enqueue(&state, created.id).await;
        info!(bulk_change_id = created.id, undo_of = bulk.id, user = %caller.user, restore, "undo accepted");
        let held: Vec<Value> =
            created.conflicts.iter().map(|c| json!({"ICCID": c.iccid, "Refused": c.reason})).collect();
        let body = json!({"BulkChangeId": created.id, "UndoOf": bulk.id, "DryRun": false, "Counts": counts,
                          "Rows": plan, "HeldElsewhere": held});
        Ok(accepted(created.id, body))
    })
    .await
}

/// One device with its change history.
#[utoipa::path(get, path = "/M2M/DeviceDetails/{iccid}", tag = "devices", params(("iccid" = String, Path, description = "The device's ICCID")),
    responses((status = 200, description = "The device, its status and its change history", body = Object),
              (status = 404, description = "Not this tenant's device", body = openapi::Problem)))]
async fn device_details(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let iccid = domain::Iccid::parse(&raw).map_err(|e| ApiError::invalid("iccid", e.to_string()))?;
    let device = state
        .store
        .devices_by_iccid(caller.tenant_id, &[iccid.to_string()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("device {iccid} was not found")))?;
    let status = match state.store.service_provider(caller.tenant_id, device.service_provider_id).await? {
        Some(sp) => {
            state.store.device_statuses(sp.integration).await?.into_iter().find(|s| s.id == device.device_status_id)
        }
        None => None,
    };
    let history = state.store.device_history(caller.tenant_id, device.id, 100).await?;
    let mut body = serde_json::to_value(&device).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(obj) = body.as_object_mut() {
        obj.remove("TenantId");
        obj.insert("Status".into(), json!(status.as_ref().map(|s| s.status.clone())));
        obj.insert("StatusDisplayName".into(), json!(status.as_ref().map(|s| s.display_name.clone())));
        obj.insert("IsArchived".into(), json!(device.is_deleted || !device.is_active));
        obj.insert("History".into(), json!(history));
    }
    Ok(Json(body).into_response())
}

#[utoipa::path(get, path = "/M2M/GetRevCustomers", tag = "devices",
    responses((status = 200, description = "The tenant's Rev.io customers", body = openapi::RevCustomers)))]
async fn rev_customers(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let customers = state.store.rev_customers(caller.tenant_id).await?;
    let items: Vec<Value> =
        customers.iter().map(|c| json!({"RevCustomerId": c.rev_customer_id, "Name": c.name})).collect();
    Ok(Json(json!({"Total": items.len(), "Items": items})).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RowQuery {
    /// Only rows in this status (PENDING, PROCESSING, PROCESSED, API_FAILED, ERROR, SCHEDULED, CANCELLED).
    status: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
}

/// The results export's query: every row of the bulk change, or those in one status, all of them (the CSV is
/// streamed whole, so it has no pages).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Only rows in this status (PENDING, PROCESSING, PROCESSED, API_FAILED, ERROR, SCHEDULED, CANCELLED).
    status: Option<String>,
}

fn paging(page: Option<u32>, size: Option<u32>) -> Result<(u32, u32), ApiError> {
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(100);
    let invalid =
        |field: &str, message: &str| ApiError::Invalid(domain::RequestError::one("Invalid query", field, message));
    if page == 0 {
        return Err(invalid("page", "page starts at 1"));
    }
    if !(1..=1000).contains(&size) {
        return Err(invalid("pageSize", "pageSize must be between 1 and 1000"));
    }
    Ok((page, size))
}

fn bulk_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(format!("bulk change {raw} was not found")))
}

fn summary(b: &BulkChange) -> Value {
    json!({
        "BulkChangeId": b.id,
        "Status": b.status,
        "ChangeType": b.change_type.number(),
        "ChangeTypeName": b.change_type.name(),
        "ServiceProviderId": b.service_provider_id,
        "Integration": b.integration.name(),
        "CreatedBy": b.created_by,
        "CreatedDate": b.created_at,
        "ProcessedDate": b.processed_at,
        "RetryOf": b.retry_of,
        "UndoOf": b.request.undo_of,
    })
}

#[utoipa::path(get, path = "/M2M/BulkChangeStatus/{id}", tag = "bulk changes", params(("id" = i64, Path, description = "Bulk change id"), RowQuery),
    responses((status = 200, description = "Status, counts per row status and a page of rows", body = openapi::StatusPage),
              (status = 404, description = "Not this tenant's bulk change", body = openapi::Problem)))]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RowQuery>,
) -> Result<Response, ApiError> {
    let id = bulk_id(&id)?;
    let filter = row_status_filter(q.status.as_deref())?;
    let (page, size) = paging(q.page, q.page_size)?;
    let bulk = state
        .store
        .bulk_change(Some(caller.tenant_id), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("bulk change {id} was not found")))?;
    let counts = state.store.row_counts(caller.tenant_id, id).await?;
    let rows = state.store.rows(caller.tenant_id, id, filter, page, size).await?;
    // What the filter selects (the pages' total), beside the counts of every status.
    let total: i64 = counts.iter().filter(|c| filter.is_none_or(|f| c.status == f)).map(|c| c.count).sum();
    let mut body = summary(&bulk);
    let by_status: serde_json::Map<String, Value> =
        counts.iter().map(|c| (c.status.as_str().to_string(), json!(c.count))).collect();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("Total".into(), json!(total));
        obj.insert("Counts".into(), Value::Object(by_status));
        obj.insert("Page".into(), json!(page));
        obj.insert("PageSize".into(), json!(size));
        obj.insert("Rows".into(), json!(rows));
        // Rollout control: its settings, and why it is paused (by whom, since when) or why it was aborted.
        let rollout = &bulk.request;
        if rollout.max_per_minute.is_some() || rollout.canary.is_some() || rollout.abort_when.is_some() {
            obj.insert(
                "Rollout".into(),
                json!({"MaxPerMinute": rollout.max_per_minute, "Canary": rollout.canary, "AbortWhen": rollout.abort_when}),
            );
        }
        if matches!(bulk.status, BulkStatus::Paused | BulkStatus::Aborted) {
            let progress = state.store.rollout_progress(id).await?;
            if let Some((reason, by, since)) = progress.hold {
                obj.insert("Paused".into(), json!({"Reason": reason, "By": by, "Since": since}));
            }
            if let Some(reason) = progress.aborted_reason {
                obj.insert("AbortedReason".into(), json!(reason));
            }
        }
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only bulk changes in this status (NEW, PROCESSING, PROCESSED, ERROR, SCHEDULED, CANCELLED, PAUSED, ABORTED).
    status: Option<String>,
    change_type: Option<i64>,
    page: Option<u32>,
    page_size: Option<u32>,
}

#[utoipa::path(get, path = "/M2M/BulkChanges", tag = "bulk changes", params(ListQuery),
    responses((status = 200, description = "The tenant's bulk changes, newest first", body = openapi::BulkChangePage)))]
async fn list(State(state): State<AppState>, caller: Caller, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let (page, size) = paging(q.page, q.page_size)?;
    let filter = BulkChangeFilter {
        status: match q.status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                BulkStatus::parse(&s.to_ascii_uppercase())
                    .ok_or_else(|| ApiError::invalid("status", format!("unknown bulk status '{s}'")))?,
            ),
        },
        change_type: match q.change_type {
            None => None,
            Some(n) => Some(
                ChangeType::from_number(n)
                    .ok_or_else(|| ApiError::invalid("changeType", format!("unknown ChangeType {n}")))?,
            ),
        },
    };
    let (items, total) = state.store.list_bulk_changes(caller.tenant_id, &filter, page, size).await?;
    Ok(Json(
        json!({"Total": total, "Page": page, "PageSize": size, "Items": items.iter().map(summary).collect::<Vec<_>>()}),
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_limit_stays_within_what_one_answer_and_the_function_hold() {
        assert_eq!(check_max_devices(10_000), Ok(10_000));
        assert_eq!(check_max_devices(MAX_DEVICES_CEILING), Ok(MAX_DEVICES_CEILING));
        for refused in [0, MAX_DEVICES_CEILING + 1, 100_000] {
            let why = check_max_devices(refused).expect_err("refused");
            assert!(why.starts_with(&format!("MAX_DEVICES_PER_BULK_CHANGE {refused} ")), "{why}");
        }
    }
}
