//! What the engine needs of Telegence's API: the client port and its wire types (the `carriers` crate implements it).

use async_trait::async_trait;

use crate::ports::*;

/// A Telegence line as its line details show it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TgLine {
    pub subscriber_number: String,
    /// `subscriberStatus`: `A`, `S` or `C` (Telegence's codes, as `DeviceStatus.Status` of integration 6).
    pub status: Option<String>,
    /// `singleUserCode`: the rate plan SOC.
    pub plan: Option<String>,
    /// `sim`.
    pub iccid: Option<String>,
    /// `BLIMEI` (or `IMEI`).
    pub imei: Option<String>,
    pub zip: Option<String>,
    /// `offeringCode<n>`: feature SOCs.
    pub features: Vec<String>,
}

/// A change of a Telegence line (`PATCH .../service/{subscriberNumber}`).
#[derive(Debug, Clone, PartialEq)]
pub enum TgLineChange {
    /// `mode` (`S` suspend, `C` cancel, `A` restore), with the reason and an optional effective date.
    Status { mode: String, reason_code: String, effective_date: Option<chrono::NaiveDate> },
    /// `singleUserCode`.
    Plan { plan: String, effective_date: Option<chrono::NaiveDate> },
    /// `sim`/`IMEI`, with the ZIP, the reason and the technology type the swap needs.
    Swap { iccid: String, imei: Option<String>, zip: String, reason_code: String, technology_type: String },
    /// `removeOfferingCode` for each feature SOC.
    RemoveFeatures(Vec<String>),
}

/// One new service of an activation request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TgActivation {
    /// The billing account (BAN) the line is opened on.
    pub ban: String,
    pub iccid: String,
    pub imei: Option<String>,
    /// The rate plan SOC (`singleUserCode`).
    pub plan: String,
    pub zip: String,
    /// Feature SOCs to add (`offeringCode<n>`).
    pub features: Vec<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// One service's state in an activation request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TgActivationEntry {
    /// The ICCID of the service (`sim`), which ties the entry to its row.
    pub iccid: Option<String>,
    /// `pending`, `reserved`, `active` or `rejected` (lower case).
    pub status: String,
    pub subscriber_number: Option<String>,
    pub error: Option<String>,
}

/// A billing account (`GET .../billingaccount/{ban}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TgBillingAccount {
    pub status: String,
    /// `businessAccount.fan`: empty for an account that cannot take lines.
    pub fan: Option<String>,
}

/// Telegence's limit on services in one activation request ("API only allow maximum of 200").
pub const TELEGENCE_MAX_ACTIVATIONS: usize = 200;

/// AT&T Telegence (Mobility): `app-id`/`app-secret` on every call.
#[async_trait]
pub trait TelegenceApi: Send + Sync {
    /// The line's details; `None` when Telegence answers `404 /service/` (no such line).
    async fn line(&self, subscriber_number: &str) -> Result<(Option<TgLine>, CallRecord), CarrierFailure>;
    /// Changes a line; success only when the 2xx answer parses as line details.
    async fn change_line(
        &self,
        subscriber_number: &str,
        change: &TgLineChange,
    ) -> Result<(TgLine, CallRecord), CarrierFailure>;
    /// One activation request of at most 200 services: its request id and each service's state. Never retried
    /// after it may have reached Telegence (a lost answer is `FailureKind::Ambiguous`).
    async fn activate(
        &self,
        services: &[TgActivation],
    ) -> Result<(String, Vec<TgActivationEntry>, CallRecord), CarrierFailure>;
    /// The services of an activation request as they are now.
    async fn activation_status(&self, request_id: &str)
    -> Result<(Vec<TgActivationEntry>, CallRecord), CarrierFailure>;
    /// The billing account; `None` when Telegence does not know it.
    async fn billing_account(&self, ban: &str) -> Result<(Option<TgBillingAccount>, CallRecord), CarrierFailure>;
}
