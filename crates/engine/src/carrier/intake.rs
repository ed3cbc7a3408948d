//! What a carrier adds to intake. `api::intake` keeps the rules every carrier shares (the request's shape, the
//! devices of the tenant at this provider, Rev.io options, open changes) and asks the service provider's
//! `CarrierIntake` (`intake_rules`) which change types it takes, what it refuses in a request, and what it checks
//! of each device.

use async_trait::async_trait;
use domain::request::ChangeDetails;
use domain::rules::{DeviceRecord, DeviceVerdict};
use domain::{BulkChangeRequest, FieldError};

use crate::ports::{ReferenceData, ServiceProvider, StoreError};

/// What a carrier's intake check reads: the caller's tenant, the service provider and the request's devices.
pub struct IntakeContext<'a> {
    pub store: &'a dyn ReferenceData,
    pub tenant_id: i64,
    pub sp: &'a ServiceProvider,
    /// The request's devices as sent (deduplicated).
    pub iccids: &'a [String],
}

/// A carrier's check of one device: its raw ICCID, the tenant's device with that ICCID (if any) and the verdict
/// of the common checks of the change type, to keep, refine or replace.
pub type DeviceCheck = Box<dyn Fn(&str, Option<&DeviceRecord>, DeviceVerdict) -> DeviceVerdict + Send + Sync>;

/// Why a carrier refuses a request: its fields (nothing is written), or the store could not be read.
#[derive(Debug)]
pub enum Refusal {
    Fields(Vec<FieldError>),
    Store(StoreError),
}

impl Refusal {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Refusal::Fields(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// A carrier's part of intake.
#[async_trait]
pub trait CarrierIntake: Send + Sync {
    /// Whether this carrier takes `details` (change types with no carrier step included).
    fn takes(&self, details: &ChangeDetails) -> bool;

    /// Whether CustomerAssignment may move the carrier rate plan too (AddCarrierRatePlan).
    fn moves_plan_with_assignment(&self) -> bool {
        false
    }

    /// The carrier's checks of `request`, after the common ones of its change type: a refusal names its fields;
    /// otherwise the check of each device, if the carrier has one for this change.
    async fn check(
        &self,
        _cx: &IntakeContext<'_>,
        _request: &BulkChangeRequest,
    ) -> Result<Option<DeviceCheck>, Refusal> {
        Ok(None)
    }
}

/// The change types with no carrier step of their own (`change`), which every carrier takes.
pub fn without_carrier_step(details: &ChangeDetails) -> bool {
    matches!(
        details,
        ChangeDetails::Archival | ChangeDetails::CustomerRatePlanChange(_) | ChangeDetails::CustomerAssignment(_)
    )
}

/// Applies a carrier's device check, if any, to the common verdict.
pub fn checked(
    check: Option<&DeviceCheck>,
    raw: &str,
    device: Option<&DeviceRecord>,
    common: DeviceVerdict,
) -> DeviceVerdict {
    match check {
        Some(check) => check(raw, device, common),
        None => common,
    }
}
