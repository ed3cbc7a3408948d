//! What the engine needs of ThingSpace's API: the client port and its wire types (the `carriers` crate implements it).

use async_trait::async_trait;

use crate::ports::*;

/// A device as a ThingSpace request names it (IMEI too for 4G devices when we know it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsDeviceRef {
    pub iccid: String,
    pub imei: Option<String>,
}

/// An asynchronous ThingSpace request for many devices; each gives a `requestId`.
#[derive(Debug, Clone, PartialEq)]
pub enum TsRequest {
    Activate {
        service_plan: String,
        mdn_zip_code: String,
        place_of_use: Option<domain::request::PlaceOfUse>,
    },
    Suspend,
    Restore,
    Deactivate {
        reason_code: String,
        etf_waiver: bool,
    },
    ChangePlan {
        service_plan: String,
    },
    /// `(key, value)`, e.g. `("CustomField1", username)`.
    CustomFields {
        fields: Vec<(String, String)>,
    },
}

/// One device's result in a synchronous multi-device answer (add, delete).
#[derive(Debug, Clone, PartialEq)]
pub struct TsDeviceResult {
    pub iccid: String,
    /// The carrier's message when this device failed.
    pub error: Option<String>,
}

/// A device as ThingSpace lists it (the fields we read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TsDeviceState {
    /// Lowercase, as in list answers: `active`, `suspend`, `deactive`, `preactive`.
    pub state: String,
    pub service_plan: Option<String>,
    pub imei: Option<String>,
    pub msisdn: Option<String>,
    pub ip_address: Option<String>,
    pub custom_fields: Vec<(String, String)>,
}

#[async_trait]
pub trait ThingSpaceApi: Send + Sync {
    /// Sends one request for all `devices`; the request id whose per-device results come later.
    async fn submit(
        &self,
        request: &TsRequest,
        devices: &[TsDeviceRef],
    ) -> Result<(String, CallRecord), CarrierFailure>;
    /// `devices/actions/add` (`preactive`): synchronous per-device results ("already exists" counts as added).
    async fn add(&self, devices: &[TsDeviceRef]) -> Result<(Vec<TsDeviceResult>, CallRecord), CarrierFailure>;
    /// `devices/actions/delete` in requests of at most 100: every device's result; the calls made.
    async fn delete(&self, devices: &[TsDeviceRef]) -> Result<(Vec<TsDeviceResult>, Vec<CallRecord>), CarrierFailure>;
    /// `PUT devices/{serviceType}/actions/deviceId` with the `change4gOption` the new identifiers imply.
    async fn change_identifier(
        &self,
        device: &TsDeviceRef,
        new_iccid: Option<&str>,
        new_imei: Option<&str>,
    ) -> Result<(String, CallRecord), CarrierFailure>;
    /// `Pending`, `Success` or `Failure`.
    async fn request_status(&self, request_id: &str) -> Result<(String, CallRecord), CarrierFailure>;
    /// The device as ThingSpace lists it; `None` when the account does not have it.
    async fn device(&self, iccid: &str) -> Result<(Option<TsDeviceState>, CallRecord), CarrierFailure>;
    /// The reason ThingSpace refused this client's login, once it has.
    fn login_refused(&self) -> Option<String>;
}
