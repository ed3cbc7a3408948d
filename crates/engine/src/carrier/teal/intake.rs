//! Teal's part of intake: eSIMs by EID (a device without one is an ERROR row; the legacy sent
//! `{"entries":[null]}`), status updates that enable or disable data, plan changes to a plan with a Teal
//! PlanUuid; no communication plan.

use async_trait::async_trait;
use domain::request::ChangeDetails;
use domain::rules::{DeviceVerdict, resolve_target_status};
use domain::{BulkChangeRequest, Integration};

use super::data_enabled_for;
use crate::carrier::intake::{CarrierIntake, DeviceCheck, IntakeContext, Refusal, without_carrier_step};

pub(crate) struct TealIntake;

/// A device without an EID cannot be changed on Teal.
fn needs_eid() -> DeviceCheck {
    Box::new(|_raw, _device, verdict| match verdict {
        DeviceVerdict::Valid { device, iccid } if device.eid.as_deref().is_none_or(|e| e.trim().is_empty()) => {
            DeviceVerdict::Invalid { reason: format!("{iccid} has no EID (Teal changes eSIMs by EID)") }
        }
        verdict => verdict,
    })
}

#[async_trait]
impl CarrierIntake for TealIntake {
    fn takes(&self, details: &ChangeDetails) -> bool {
        matches!(details, ChangeDetails::StatusUpdate(_) | ChangeDetails::CarrierRatePlanChange(_))
            || without_carrier_step(details)
    }

    async fn check(&self, cx: &IntakeContext<'_>, request: &BulkChangeRequest) -> Result<Option<DeviceCheck>, Refusal> {
        match &request.details {
            ChangeDetails::StatusUpdate(update) => {
                let statuses = cx.store.device_statuses(Integration::Teal).await?;
                match resolve_target_status(&statuses, Integration::Teal, &update.target_status) {
                    Some(target) if data_enabled_for(&target.status).is_none() => Err(Refusal::field(
                        "StatusUpdate.TargetStatus",
                        format!("{} cannot be moved to '{}' by a bulk change", Integration::Teal, target.display_name),
                    )),
                    _ => Ok(Some(needs_eid())),
                }
            }
            ChangeDetails::CarrierRatePlanChange(update) => {
                let plan = update.carrier_rate_plan.trim();
                let plans = cx.store.carrier_rate_plans(cx.tenant_id, cx.sp.id).await?;
                let no_uuid =
                    |p: &domain::rules::CarrierRatePlan| p.plan_uuid.as_deref().is_none_or(|u| u.trim().is_empty());
                if plans.iter().any(|p| p.rate_plan_code == plan && no_uuid(p)) {
                    return Err(Refusal::field(
                        "CarrierRatePlanUpdate.CarrierRatePlan",
                        format!("carrier rate plan '{plan}' has no Teal PlanUuid for service provider {}", cx.sp.id),
                    ));
                }
                if update.communication_plan.is_some() {
                    return Err(Refusal::field(
                        "CarrierRatePlanUpdate.CommunicationPlan",
                        format!("{} has no communication plan; send only CarrierRatePlan", Integration::Teal),
                    ));
                }
                Ok(Some(needs_eid()))
            }
            _ => Ok(None),
        }
    }
}
