//! What the engine needs of Pond's API: the client port and its wire types (the `carriers` crate implements it).

use async_trait::async_trait;

use crate::ports::*;

/// A package (a rate plan) on a Pond SIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PondPackage {
    pub package_id: String,
    /// The rate plan: our `JasperRatePlanId`.
    pub package_type_id: i64,
    /// `PENDING`, `ACTIVE` or `TERMINATED`.
    pub status: String,
}

/// Pond IoT: an API key header on every call; packages per SIM and the SIM's service status.
#[async_trait]
pub trait PondApi: Send + Sync {
    /// The SIM's packages as Pond has them now (never our database's copy, which can be stale).
    async fn packages(&self, iccid: &str) -> Result<(Vec<PondPackage>, CallRecord), CarrierFailure>;
    /// Adds a package of `package_type_id` to the SIM (Pond answers it `PENDING`).
    async fn add_package(&self, iccid: &str, package_type_id: i64)
    -> Result<(PondPackage, CallRecord), CarrierFailure>;
    /// Sets a package `ACTIVE` or `TERMINATED`.
    async fn set_package_status(&self, package_id: &str, status: &str) -> Result<CallRecord, CarrierFailure>;
    /// Enables (`true`) or disables every service of the SIM.
    async fn set_services(&self, iccid: &str, enabled: bool) -> Result<CallRecord, CarrierFailure>;
    /// Whether the SIM's services are enabled now.
    async fn services_enabled(&self, iccid: &str) -> Result<(bool, CallRecord), CarrierFailure>;
}
