//! The ports: what the engine needs of the world (store, queue, notifier, carriers, clock), as narrow traits.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::rules::{CarrierRatePlan, DeviceRecord, DeviceStatusDef, ImeiRange};
use domain::{BulkChangeRequestWire, BulkStatus, ChangeType, DeviceAttribute, Integration, PortalType, RowStatus};
use serde::{Deserialize, Serialize};

mod store;

/// A credential: shown as `***` in every `Debug`, never written to logs nor serialized (it has no `Serialize`),
/// compared in constant time, and wiped from memory when dropped (`secrecy`).
#[derive(Clone, Default)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(s.into()))
    }
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        same_secret(self.expose(), other.expose())
    }
}

impl Eq for Secret {}

/// Whether two secrets (a password, a signature) are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One account at one integration, with its credentials and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceProvider {
    pub id: i64,
    pub tenant_id: i64,
    pub integration: Integration,
    pub name: String,
    pub base_url: String,
    pub username: String,
    /// Control Center API key, or Rev.io password.
    pub secret: Secret,
    /// Rev.io client code (`user@clientcode`).
    pub client_code: Option<String>,
    /// Rev.io `Ocp-Apim-Subscription-Key`.
    pub subscription_key: Option<Secret>,
    pub write_is_enabled: bool,
    pub rate_limit_per_second: f64,
    /// Rev.io only: the provider a new service line gets when the request names none (`DefaultProviderId`).
    pub default_provider_id: Option<i64>,
    /// ThingSpace only: the app credentials, the account and the callback credentials. The UWS user and
    /// password are `username` and `secret`.
    pub thingspace: Option<ThingSpaceSettings>,
    /// Teal and Pond: the carrier's wire settings as JSON (`CarrierSettings`; Pond's distributor, key header and
    /// paths, README "Teal and Pond"). No secret here: keys stay in `secret`.
    pub carrier_settings: Option<String>,
}

/// A ThingSpace account's settings (`ThingSpaceAuthentication`).
#[derive(Debug, Clone, PartialEq)]
pub struct ThingSpaceSettings {
    pub app_key: String,
    pub app_secret: Secret,
    pub account_name: String,
    /// What ThingSpace sends back in every callback, as registered with `POST /callbacks/{accountName}`.
    pub callback_username: String,
    pub callback_password: Secret,
    /// Set when ThingSpace refused the UWS login: no worker logs in again (five failures lock the account)
    /// until an operator fixes the credentials and clears it.
    pub login_refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RevCustomer {
    pub id: i64,
    pub tenant_id: i64,
    pub rev_customer_id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkChange {
    pub id: i64,
    pub tenant_id: i64,
    pub service_provider_id: i64,
    pub integration: Integration,
    pub change_type: ChangeType,
    pub portal_type: PortalType,
    pub status: BulkStatus,
    pub request: BulkChangeRequestWire,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    /// The bulk change whose failed rows this one retries.
    pub retry_of: Option<i64>,
}

impl BulkChange {
    /// Its stored change request, parsed.
    pub fn parsed_request(&self) -> Result<domain::BulkChangeRequest, String> {
        domain::BulkChangeRequest::from_stored(self.request.clone())
            .map_err(|e| format!("stored change request is unreadable: {e}"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewBulkChange {
    pub tenant_id: i64,
    pub service_provider_id: i64,
    pub integration: Integration,
    pub change_type: ChangeType,
    pub portal_type: PortalType,
    pub request: BulkChangeRequestWire,
    pub created_by: String,
    pub retry_of: Option<i64>,
    /// What each open row holds on its device (`domain::attributes_of`): a device with an open row holding one
    /// of them in another bulk change gets an ERROR row instead, decided by the store.
    pub attributes: Vec<DeviceAttribute>,
    /// The client's `Idempotency-Key`, reserved with `begin_idempotent`: the new bulk change is recorded on it in
    /// the same transaction, so a replay finds it even if the answer was never saved.
    pub idempotency_key: Option<String>,
    /// Signs the deliveries to the request's `NotifyUrl` (generated at intake, shown once in the answer).
    pub notify_secret: Option<String>,
}

/// What `create_bulk_change` recorded: the id, and the devices that became ERROR rows because another bulk
/// change holds an open change of theirs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreatedBulkChange {
    pub id: i64,
    pub conflicts: Vec<RowConflict>,
}

/// A device refused at creation: `reason` is its row's StatusDetails (`domain::conflict_reason`).
#[derive(Debug, Clone, PartialEq)]
pub struct RowConflict {
    pub iccid: String,
    pub reason: String,
}

/// An open change of a device: the attribute its row holds, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenChange {
    pub device_id: i64,
    pub attribute: DeviceAttribute,
    pub bulk_change_id: i64,
    pub change_type: ChangeType,
}

/// What became of an `Idempotency-Key` when a request arrived with it.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyStart {
    /// First use (or the old one expired, or its request died before doing anything): go on, then finish it.
    New,
    /// The same key and request were answered before: send this answer again.
    Replay { status: u16, body: String },
    /// The key was used for another request (another route or body).
    Mismatch,
    /// The first request with this key is still running; `bulk_change_id` when it already recorded one.
    InProgress { bulk_change_id: Option<i64>, since: DateTime<Utc> },
}

/// Whether a Rev.io service line may be created for a device now.
#[derive(Debug, Clone, PartialEq)]
pub enum RevServiceStart {
    /// The device already has an active line: use it.
    Active(RevServiceRecord),
    /// Create it; `earlier_attempt` when a previous attempt (a crashed worker, a lost answer, an earlier bulk
    /// change) may have created it on Rev.io already, so look it up there first.
    Create { earlier_attempt: bool },
    /// Another open row (of this bulk change) is creating it now.
    Busy { bulk_change_id: i64 },
}

/// A bulk change's rollout as the store holds it (issue 21): what a worker decides on before it claims rows, and
/// what the status page shows of a pause or an abort.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutProgress {
    pub status: BulkStatus,
    /// Why it is paused ("operator", "canary"), by whom, since when.
    pub hold: Option<(String, String, DateTime<Utc>)>,
    pub canary_passed: bool,
    pub aborted_reason: Option<String>,
    /// Rows a worker ever claimed (started); of those, final; of those, failed (API_FAILED or ERROR). Rows refused
    /// at intake were never claimed and count in none of them.
    pub started: u64,
    pub finished: u64,
    pub failed: u64,
}

/// Call slots of an account's shared pace granted to one worker: `granted` slots from `first`, one every
/// `interval`. None granted means the pace is booked until `first` (ask again a little before it).
#[derive(Debug, Clone, PartialEq)]
pub struct RateSlots {
    pub first: DateTime<Utc>,
    pub granted: u32,
    pub interval: Duration,
}

/// A device's change row as created by the API: PENDING when valid, ERROR with the reason when not.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    pub device_id: Option<i64>,
    pub iccid: String,
    pub msisdn: Option<String>,
    pub status: RowStatus,
    pub status_details: Option<String>,
    /// A future-dated customer rate plan change: the row is SCHEDULED and queued in
    /// `Device_CustomerRatePlanOrRatePool_Queue` until this plan's date.
    pub scheduled: Option<ScheduledCustomerPlan>,
    /// This row's own change (a stored request, JSON) when it differs from its bulk change's: an undo sets each
    /// device back to its own value.
    pub request: Option<String>,
}

/// A customer rate plan or pool assignment (no carrier call).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomerPlanChange {
    pub customer_rate_plan_id: Option<i64>,
    pub customer_rate_pool_id: Option<i64>,
    pub data_allocation_mb: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledCustomerPlan {
    pub effective_date: DateTime<Utc>,
    pub change: CustomerPlanChange,
}

/// A customer rate plan or pool of a tenant (`CustomerRatePlan`, `CustomerRatePool`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomerPlanRef {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceChangeRow {
    pub id: i64,
    pub bulk_change_id: i64,
    pub device_id: Option<i64>,
    #[serde(rename = "ICCID")]
    pub iccid: String,
    #[serde(rename = "MSISDN")]
    pub msisdn: Option<String>,
    pub status: RowStatus,
    pub status_details: Option<String>,
    /// How many times a worker claimed this row; above 1 means an earlier worker may have called the carrier.
    pub claims: i64,
    pub processed_date: Option<DateTime<Utc>>,
    /// The asynchronous carrier request (ThingSpace `requestId`) whose result this row waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_request_id: Option<String>,
    /// When the row's first carrier request was sent; the row gives up waiting a while after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_requested_at: Option<DateTime<Utc>>,
    /// The carrier's result (JSON), kept for a worker when steps after the carrier remain (Rev.io).
    #[serde(skip)]
    pub carrier_result: Option<String>,
    /// The row's device (in the bulk change's tenant) as `claim_rows` read it, in the claim's request; `None`
    /// for rows read any other way. Only a processor's first look at the device uses it
    /// (`common::device_for_row`); a read after a carrier call goes to the store again (`common::device_now`).
    #[serde(skip)]
    pub device: Option<DeviceRecord>,
    /// The row's own change (`NewRow::request`), read with the claim; `None`: its bulk change's.
    #[serde(skip)]
    pub request: Option<String>,
}

/// One audit entry of `DeviceBulkChangeLog`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogEntry {
    pub bulk_change_id: i64,
    pub device_change_id: Option<i64>,
    pub description: String,
    /// Action, newline, request; credentials already redacted.
    pub request_text: String,
    pub response_text: String,
    pub response_status: String,
    pub has_errors: bool,
    pub error_text: Option<String>,
    pub processed_date: DateTime<Utc>,
}

/// What to change on the device row when a change row completes; applied in the same transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceUpdate {
    pub device_status_id: Option<i64>,
    pub carrier_rate_plan: Option<String>,
    pub communication_plan: Option<String>,
    /// The Rev customer the device is billed to; `Some("")` takes the device off any customer (an undo of an
    /// assignment of a device that had none: `DeviceUpdate::unassigned`).
    pub rev_customer_id: Option<String>,
    pub username: Option<String>,
    /// Archive the device: `IsActive = false, IsDeleted = true`.
    pub archive: bool,
    pub customer_plan: Option<CustomerPlanChange>,
    /// The device's new SIM (after a confirmed swap) or handset.
    pub iccid: Option<String>,
    pub imei: Option<String>,
    /// The number and address a carrier assigned at activation (ThingSpace).
    pub msisdn: Option<String>,
    pub ip_address: Option<String>,
    /// The device's history entry this change writes, as the user reads it (with a Rev customer assignment).
    pub history: Option<String>,
}

impl DeviceUpdate {
    /// The device goes to Rev customer `customer`: `Device_Tenant` and a history entry that says so.
    pub fn assigned_to(customer: &str) -> Self {
        Self {
            rev_customer_id: Some(customer.to_string()),
            history: Some(format!("Assigned to Rev customer {customer}")),
            ..Self::default()
        }
    }

    /// The device is billed to no Rev customer any more (an undo of its assignment).
    pub fn unassigned() -> Self {
        Self {
            rev_customer_id: Some(String::new()),
            history: Some("Rev customer assignment undone: no customer".into()),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &DeviceUpdate::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    pub status: RowStatus,
    pub details: String,
    pub device_update: DeviceUpdate,
}

/// One row's final outcome to record (`Outcomes::complete_row`'s arguments, for a group of rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub tenant_id: i64,
    pub bulk_change_id: i64,
    pub row_id: i64,
    pub worker: String,
    pub outcome: RowOutcome,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusCount {
    pub status: RowStatus,
    pub count: i64,
}

/// One change of a device, for its details page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceHistoryEntry {
    pub bulk_change_id: i64,
    pub change_type: ChangeType,
    pub status: RowStatus,
    pub status_details: Option<String>,
    pub created_by: String,
    pub created_date: DateTime<Utc>,
    pub processed_date: Option<DateTime<Utc>>,
}

/// Filters of the device inventory (`/M2M/Index`, `/M2M/DeviceInventoryExport`); all optional, all exact but `text`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceFilter {
    /// Carrier status code or display name (e.g. `ACTIVATED` or `Active`).
    pub status: Option<String>,
    pub carrier_rate_plan: Option<String>,
    pub rev_customer_id: Option<String>,
    /// Part of the ICCID, IMEI, MSISDN or username.
    pub text: Option<String>,
}

/// A device of the inventory with its status code and display name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceListItem {
    #[serde(flatten)]
    pub device: DeviceRecord,
    pub status: Option<String>,
    pub status_display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BulkChangeFilter {
    pub status: Option<BulkStatus>,
    pub change_type: Option<ChangeType>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RevServiceRecord {
    pub device_id: i64,
    pub rev_service_id: i64,
    pub rev_customer_id: String,
    pub is_active: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error during {context}: {message}")]
    Database { context: &'static str, message: String },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("seed refused: {0}")]
    Seed(String),
    /// The write would break a rule the database keeps (one open retry, one active Rev.io line, ...).
    #[error("{0}")]
    Conflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An export written where a large file can be fetched from, and the short-lived URL that fetches it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedExport {
    pub url: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Where exports too large for an inline answer go (the HTTP API answers at most 6 MB): S3 in production
/// (`aws::S3Exports`), with a presigned GET URL.
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Stores the file at `path` as `key` (downloaded as `filename`) and returns a URL that fetches it.
    async fn publish(&self, key: &str, path: &std::path::Path, filename: &str) -> Result<PublishedExport, String>;
}

/// Reads a secret's current string value: Secrets Manager in production (`aws::SecretsManager`), by ARN.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn read(&self, arn: &str) -> Result<String, String>;
}

pub use store::*;

/// A device's attributes a bulk change can change: what an undo sets back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceValues {
    pub device_status_id: Option<i64>,
    pub carrier_rate_plan: Option<String>,
    pub communication_plan: Option<String>,
    pub rev_customer_id: Option<String>,
    pub username: Option<String>,
    pub customer_rate_plan_id: Option<i64>,
    pub customer_rate_pool_id: Option<i64>,
    #[serde(rename = "DataAllocationMB")]
    pub data_allocation_mb: Option<f64>,
    #[serde(rename = "ICCID")]
    pub iccid: Option<String>,
    #[serde(rename = "IMEI")]
    pub imei: Option<String>,
    /// A username change's cost centers on the device's Rev.io service (kept by the row, read from Rev.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_centers: Option<CostCenters>,
}

/// Cost centers 1 to 3 of a device's Rev.io service (`REV_COST_CENTER_FIELDS`); `None`: the field had no value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CostCenters {
    #[serde(default)]
    pub cost_center: Option<String>,
    #[serde(default)]
    pub cost_center2: Option<String>,
    #[serde(default)]
    pub cost_center3: Option<String>,
}

/// A PROCESSED row as an undo reads it: its device before the row changed it (kept when the row was recorded; `None`
/// for rows recorded before that was kept), and now (`None`: the device is gone).
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRow {
    pub row_id: i64,
    pub iccid: String,
    pub device_id: Option<i64>,
    pub before: Option<DeviceValues>,
    pub now: Option<DeviceValues>,
    /// The row's own change (an undo's row), when it had one: what it set, rather than its bulk change's request.
    pub request: Option<String>,
    /// The Rev.io service line this row made active (created, or found after an earlier attempt created it), if
    /// any: an undo of the assignment closes it.
    pub created_rev_service: Option<i64>,
}

/// The events a webhook endpoint may want (README "Webhooks"): a bulk change final (PROCESSED, ERROR, CANCELLED),
/// paused (by a person or its canary), ended ABORTED by its abort rule.
pub const EVENT_FINISHED: &str = "bulk_change.finished";
pub const EVENT_PAUSED: &str = "bulk_change.paused";
pub const EVENT_ABORTED: &str = "bulk_change.aborted";
pub const EVENTS: [&str; 3] = [EVENT_FINISHED, EVENT_PAUSED, EVENT_ABORTED];

/// A tenant's webhook endpoint (README "Webhooks"): the events it wants, and the secret its deliveries are signed
/// with (shown once, when it is registered; never logged).
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub id: i64,
    pub tenant_id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_by: String,
    pub created_date: DateTime<Utc>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("id", &self.id).field("url", &self.url).field("events", &self.events).finish()
    }
}

/// One event to one endpoint (a tenant's webhook, or a bulk change's `NotifyUrl` when `webhook_id` is `None`),
/// written in the transaction that made the event true, then delivered at least once.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: i64,
    pub bulk_change_id: i64,
    pub webhook_id: Option<i64>,
    pub url: String,
    /// PENDING, DELIVERED or FAILED.
    pub status: String,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_date: DateTime<Utc>,
    pub delivered_date: Option<DateTime<Utc>>,
    /// The event's own facts kept with it (a pause's reason and who paused).
    pub reason: Option<String>,
    pub actor: Option<String>,
}

/// A delivery a deliverer holds (leased), with what it needs to send it.
#[derive(Clone)]
pub struct DueDelivery {
    pub delivery: WebhookDelivery,
    /// The endpoint's signing secret (the bulk change's own for a `NotifyUrl`).
    pub secret: String,
    /// The body as first sent (every attempt sends the same), `None` before the first attempt.
    pub body: Option<String>,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryResult {
    /// The endpoint answered 2xx.
    Delivered { status_code: u16 },
    /// Not accepted; tried again at `at`.
    Retry { at: DateTime<Utc>, status_code: Option<u16>, error: String },
    /// Not accepted within the retry window (or the endpoint was removed): given up.
    Failed { status_code: Option<u16>, error: String },
}

/// One callback as received (`ThingSpaceCallBackResponseLog`); the password is never kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRecord {
    pub request_id: String,
    pub iccid: Option<String>,
    pub tenant_id: Option<i64>,
    pub service_provider_id: Option<i64>,
    /// `Success`, `Failed`, or what the carrier sent.
    pub api_status: String,
    /// The body without its credentials.
    pub api_response: String,
    /// What became of it: `applied`, `duplicate`, `unknown request`, ...
    pub outcome: String,
    pub received_at: DateTime<Utc>,
}

/// The message that says "work on this bulk change". No device data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WorkMessage {
    pub bulk_change_id: i64,
    #[serde(default)]
    pub attempt: u32,
    /// A fan-out helper: works rows of the bulk change beside the message that sent it, and sends no continuation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub helper: bool,
}

impl WorkMessage {
    /// The first message of a bulk change (or one the scheduler sends again).
    pub fn new(bulk_change_id: i64) -> Self {
        Self { bulk_change_id, attempt: 0, helper: false }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("queue error during {context}: {message}")]
pub struct QueueError {
    pub context: &'static str,
    pub message: String,
}

#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError>;
    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<ReceivedMessage>, QueueError>;
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("notifier error: {0}")]
pub struct NotifyError(pub String);

#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends the e-mail; returns where it went (a file path, a message id).
    async fn send(&self, email: &Email) -> Result<String, NotifyError>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

// ---- carriers ----

/// What was sent and answered, for the audit log. Credentials never appear here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallRecord {
    pub request_text: String,
    pub response_text: String,
    pub http_status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The carrier answered no (4xx other than 429): final for this row.
    Refused,
    /// Throttled beyond the attempt budget.
    Throttled,
    /// 5xx beyond the attempt budget.
    Unavailable,
    /// No answer (timeout, connection lost): the change may or may not have been applied.
    Ambiguous,
    /// An answer we could not read.
    Protocol,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.reason())]
pub struct CarrierFailure {
    pub kind: FailureKind,
    pub code: Option<String>,
    pub message: String,
    pub attempts: u32,
    pub call: CallRecord,
}

impl CarrierFailure {
    /// A reason a person can act on: HTTP status, the carrier's code and message.
    pub fn reason(&self) -> String {
        let status = self.call.http_status.map(|s| format!("HTTP {s}")).unwrap_or_else(|| "no response".into());
        match &self.code {
            Some(code) => format!("{status}, error {code}: {}", self.message),
            None => format!("{status}: {}", self.message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevServiceCreate {
    pub customer_id: String,
    pub provider_id: Option<i64>,
    pub service_type_id: Option<i64>,
    pub number: String,
    pub number2: String,
    pub usage_plan_group_id: Option<i64>,
    pub activated_date: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevIoCustomer {
    pub customer_id: i64,
    #[serde(default)]
    pub name: Option<String>,
}

#[async_trait]
pub trait RevIoApi: Send + Sync {
    /// `POST /Services`; returns the new service id.
    async fn create_service(&self, service: &RevServiceCreate) -> Result<(i64, CallRecord), CarrierFailure>;
    async fn list_customers(&self) -> Result<Vec<RevIoCustomer>, CarrierFailure>;
    /// `PATCH /Services/{id}` (JSON Patch) setting custom field values: `(field id, value)`.
    async fn set_service_fields(&self, service_id: i64, fields: &[(i64, String)])
    -> Result<CallRecord, CarrierFailure>;
    /// `GET /Services?search.customer_id=..&search.number2=..`: the service lines of a customer for a device,
    /// to find one a crashed worker created before it could record it.
    async fn find_services(&self, customer_id: &str, number2: &str) -> Result<(Vec<i64>, CallRecord), CarrierFailure>;
    /// Closes a service line (an undo of the assignment that created it): `PATCH /Services/{id}` replacing
    /// `/disconnected_date`. Rev.io keeps the line, disconnected; it refuses while the line has service products
    /// not disconnected on that date (developers.rev.io, "Create service": `disconnected_date`).
    async fn close_service(&self, service_id: i64, disconnected_date: &str) -> Result<CallRecord, CarrierFailure>;
    /// `GET /Services/{id}`: the line's custom field values by field id (cost centers before a username change).
    async fn service_fields(
        &self,
        service_id: i64,
    ) -> Result<(std::collections::BTreeMap<i64, String>, CallRecord), CarrierFailure>;
    /// `GET /Services/{id}`: when the line was disconnected (`None`: it is open), to settle a close whose answer
    /// was lost.
    async fn service_disconnected(&self, service_id: i64) -> Result<(Option<String>, CallRecord), CarrierFailure>;
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_secret_is_compared_whole_and_never_shown() {
        assert_eq!(Secret::new("api-key-1"), Secret::new("api-key-1"));
        assert_ne!(Secret::new("api-key-1"), Secret::new("api-key-2"));
        assert_ne!(Secret::new("api-key"), Secret::new("api-key-1"), "a prefix is not the secret");
        assert_eq!(format!("{:?}", Secret::new("api-key-1")), "***");
        let read: Secret = serde_json::from_str("\"from-a-seed\"").expect("a seed's secret");
        assert_eq!(read.expose(), "from-a-seed");
    }
}
