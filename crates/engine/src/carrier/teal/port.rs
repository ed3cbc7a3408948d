//! What the engine needs of Teal's API: the client port and its wire types (the `carriers` crate implements it).

use async_trait::async_trait;

use crate::ports::*;

/// EIDs in one Teal operation ([guess]: Teal documents no limit; its list pages stop at 100).
pub const TEAL_MAX_ENTRIES: usize = 100;

/// One Teal operation on eSIMs, by EID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TealOperation {
    /// `esims/enable`: data on.
    Enable(Vec<String>),
    /// `esims/disable`: data off.
    Disable(Vec<String>),
    /// `esims/assign-plan`: (EID, plan uuid).
    AssignPlan(Vec<(String, String)>),
}

impl TealOperation {
    pub fn eids(&self) -> Vec<&str> {
        match self {
            TealOperation::Enable(e) | TealOperation::Disable(e) => e.iter().map(String::as_str).collect(),
            TealOperation::AssignPlan(e) => e.iter().map(|(eid, _)| eid.as_str()).collect(),
        }
    }
}

/// One eSIM's result in a finished Teal operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TealEntryResult {
    /// Teal names the EID in most answers; without it, entries follow the order the EIDs were sent in.
    pub eid: Option<String>,
    pub success: bool,
    pub error_message: Option<String>,
}

/// What Teal says of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TealOperationResult {
    /// Still processing (Teal's 102).
    Processing,
    /// Teal does not know the request id: the operation never reached it.
    Unknown,
    Done {
        success: bool,
        message: Option<String>,
        entries: Vec<TealEntryResult>,
    },
}

/// Teal (eSIM): `ApiKey`/`ApiSecret` on every call; every operation carries our unique `requestId` (a second
/// operation under one id returns the first) and our callback URL, and answers at once; its result is read by
/// request id.
#[async_trait]
pub trait TealApi: Send + Sync {
    /// Queues the operation under `request_id`; Ok when Teal took it.
    async fn submit(
        &self,
        request_id: &str,
        callback_url: Option<&str>,
        operation: &TealOperation,
    ) -> Result<CallRecord, CarrierFailure>;
    async fn operation_result(&self, request_id: &str) -> Result<(TealOperationResult, CallRecord), CarrierFailure>;
}
