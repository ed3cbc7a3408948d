//! What the engine needs of Control Center (the Jasper family)'s API: the client port and its wire types (the `carriers` crate implements it).

use async_trait::async_trait;

use domain::Iccid;
use serde::{Deserialize, Serialize};

use crate::ports::*;

/// Control Center's device details (the fields we read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CcDevice {
    pub iccid: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub rate_plan: Option<String>,
    #[serde(default)]
    pub communication_plan: Option<String>,
    #[serde(default, rename = "deviceID")]
    pub device_id: Option<String>,
    #[serde(default, rename = "modemID")]
    pub modem_id: Option<String>,
    #[serde(default)]
    pub imei: Option<String>,
    #[serde(default)]
    pub msisdn: Option<String>,
}

/// A Control Center edit: at least one field.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CcEdit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub communication_plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "deviceID")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "modemID")]
    pub modem_id: Option<String>,
}

#[async_trait]
pub trait ControlCenterApi: Send + Sync {
    async fn get_device(&self, iccid: &Iccid) -> Result<(CcDevice, CallRecord), CarrierFailure>;
    /// `PUT devices/{iccid}`; success only when the reply names the ICCID.
    async fn edit_device(&self, iccid: &Iccid, edit: &CcEdit) -> Result<CallRecord, CarrierFailure>;
    /// `GET devices/{iccid}/auditTrails`, newest first (the first page: recent history).
    async fn audit_trail(&self, iccid: &Iccid) -> Result<(Vec<CcAuditEntry>, CallRecord), CarrierFailure>;
}

/// One Control Center audit trail record (the fields we read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CcAuditEntry {
    pub field: String,
    #[serde(default)]
    pub prior_value: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
}
