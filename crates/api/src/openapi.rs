//! The OpenAPI 3.1 document of the API, generated from the routes' annotations and the request types
//! (`utoipa`), served at `GET /openapi.json` and committed as `openapi.json` (a test keeps the two equal). The
//! answer types below describe what the handlers build; the request types are the ones the API parses.

use axum::Json;
use axum::response::{IntoResponse, Response};
use domain::FieldError;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::intake::{DeviceResult, IntakeCounts};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Device Bulk Change API",
        description = "Change thousands of SIMs at once: validate, record and queue bulk changes, follow them, \
                       export their results. Every error is application/problem+json.",
        version = "1"
    ),
    paths(
        super::health,
        super::submit,
        super::validate,
        super::status,
        super::list,
        super::retry,
        super::cancel,
        super::pause,
        super::resume,
        super::results,
        super::undo,
        super::associate_customer,
        super::device_details,
        super::rev_customers,
        super::index,
        super::export,
        super::thingspace_callback,
        super::teal_callback,
        super::webhooks::register,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::deliveries
    ),
    components(schemas(domain::BulkChangeRequestWire, super::AssociateCustomerRequest, Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Every route but `/health` and the ThingSpace and Teal callbacks needs a bearer JWT (claims `tenant_id`, `sub`, `exp`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(jwt));
    }
}

/// The document as `GET /openapi.json` serves it and `openapi.json` holds it.
pub fn json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub async fn document() -> Response {
    let mut response = Json(ApiDoc::openapi()).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("public, max-age=300"));
    response
}

/// An error (RFC 9457).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/invalid-request`, `/problems/not-found`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// An export too large for an inline answer (303): fetch `Url` (also in `Location`) without a token before
/// `ExpiresAt`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct LargeExport {
    /// A presigned URL of the CSV file.
    pub url: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Size of the CSV file.
    pub bytes: u64,
    pub filename: String,
}

/// A bulk change accepted (202).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Accepted {
    pub bulk_change_id: i64,
    /// `NEW`.
    pub status: String,
    pub counts: IntakeCounts,
    pub devices: Vec<DeviceResult>,
    /// Devices sent more than once (collapsed into one row each).
    pub duplicates: Vec<String>,
    /// Fields not known, ignored.
    pub warnings: Vec<FieldError>,
    /// The bulk change whose failed rows this one retries.
    pub retry_of: Option<i64>,
    /// With a `NotifyUrl`: the secret its deliveries are signed with (`Webhook-Signature`), shown only here.
    pub notify_secret: Option<String>,
}

/// An undo's plan (`POST /M2M/BulkChange/{id}/Undo`): each PROCESSED row of the original, restored or refused.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct UndoPlan {
    /// The undo bulk change (not on a dry run).
    pub bulk_change_id: Option<i64>,
    pub undo_of: i64,
    pub dry_run: bool,
    /// `{"Restore": n, "Refused": m}`.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Refused rows first (`ICCID`, `RowId`, `Refused`), then the rows restored (`ICCID`, `RowId`, `Restore`: the values
    /// the device goes back to; `CloseRevService`: the Rev.io service line an assignment created, closed by the undo).
    pub rows: Vec<serde_json::Value>,
    /// Devices another bulk change holds right now: ERROR rows of the undo naming the holder.
    pub held_elsewhere: Option<Vec<serde_json::Value>>,
}

/// The dry run's answer (200).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Validated {
    pub counts: IntakeCounts,
    pub devices: Vec<DeviceResult>,
    pub duplicates: Vec<String>,
    pub warnings: Vec<FieldError>,
}

/// A bulk change as lists show it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BulkChangeSummary {
    pub bulk_change_id: i64,
    /// NEW, PROCESSING, PROCESSED, ERROR, SCHEDULED, CANCELLED.
    pub status: String,
    pub change_type: i64,
    pub change_type_name: String,
    pub service_provider_id: i64,
    pub integration: String,
    pub created_by: String,
    pub created_date: chrono::DateTime<chrono::Utc>,
    pub processed_date: Option<chrono::DateTime<chrono::Utc>>,
    pub retry_of: Option<i64>,
    /// The bulk change this one undoes (`POST /M2M/BulkChange/{id}/Undo`).
    pub undo_of: Option<i64>,
}

/// One device's row.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Row {
    pub id: i64,
    pub bulk_change_id: i64,
    pub device_id: Option<i64>,
    #[serde(rename = "ICCID")]
    pub iccid: String,
    #[serde(rename = "MSISDN")]
    pub msisdn: Option<String>,
    /// PENDING, PROCESSING, PROCESSED, API_FAILED, ERROR, SCHEDULED, CANCELLED.
    pub status: String,
    pub status_details: Option<String>,
    pub claims: i64,
    pub processed_date: Option<chrono::DateTime<chrono::Utc>>,
    /// The asynchronous carrier request the row waits or waited on (ThingSpace).
    pub carrier_request_id: Option<String>,
    pub carrier_requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /M2M/BulkChangeStatus/{id}`: the summary, counts of every row status, and a page of rows.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct StatusPage {
    #[serde(flatten)]
    pub summary: BulkChangeSummary,
    /// Rows the filter selects.
    pub total: i64,
    /// Rows of every status, by status.
    pub counts: std::collections::BTreeMap<String, i64>,
    pub page: u32,
    pub page_size: u32,
    pub rows: Vec<Row>,
    /// The rollout settings it was submitted with (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Value>,
    /// While PAUSED: `{"Reason": "operator"|"canary", "By": ..., "Since": ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<serde_json::Value>,
    /// ABORTED: the rule and the figures ("aborted: 13 of 80 processed rows failed (16 %) > 10 %").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BulkChangePage {
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
    pub items: Vec<BulkChangeSummary>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Cancelled {
    pub bulk_change_id: i64,
    pub cancelled: u64,
    pub status: String,
}

/// What a pause or a resume did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Held {
    pub bulk_change_id: i64,
    /// PAUSED, or PROCESSING after a resume.
    pub status: String,
    /// Rows a worker held when the pause was recorded: they finish and are recorded; no other row starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct RevCustomer {
    pub rev_customer_id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct RevCustomers {
    pub total: usize,
    pub items: Vec<RevCustomer>,
}

/// `GET /M2M/Index`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DevicePage {
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
    /// Devices with their status code and display name.
    pub items: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TealCallbackAnswer {
    /// Whether rows were handed to a worker to read the result.
    pub woken: bool,
    pub bulk_change_ids: Vec<i64>,
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CallbackAnswer {
    pub applied: bool,
    pub bulk_change_id: Option<i64>,
    /// Why it was not applied (a duplicate, a row already settled).
    pub reason: Option<String>,
}
