//! Pond's part of intake: status updates to ACTIVE or INACTIVE (every service on or off) and plan changes to a
//! plan with a Pond package type; no communication plan.

use async_trait::async_trait;
use domain::request::ChangeDetails;
use domain::rules::resolve_target_status;
use domain::{BulkChangeRequest, Integration};

use super::services_enabled_for;
use crate::carrier::intake::{CarrierIntake, DeviceCheck, IntakeContext, Refusal, without_carrier_step};

pub(crate) struct PondIntake;

#[async_trait]
impl CarrierIntake for PondIntake {
    fn takes(&self, details: &ChangeDetails) -> bool {
        matches!(details, ChangeDetails::StatusUpdate(_) | ChangeDetails::CarrierRatePlanChange(_))
            || without_carrier_step(details)
    }

    async fn check(&self, cx: &IntakeContext<'_>, request: &BulkChangeRequest) -> Result<Option<DeviceCheck>, Refusal> {
        match &request.details {
            ChangeDetails::StatusUpdate(update) => {
                let statuses = cx.store.device_statuses(Integration::Pond).await?;
                match resolve_target_status(&statuses, Integration::Pond, &update.target_status) {
                    Some(target) if services_enabled_for(&target.status).is_none() => Err(Refusal::field(
                        "StatusUpdate.TargetStatus",
                        format!("{} cannot be moved to '{}' by a bulk change", Integration::Pond, target.display_name),
                    )),
                    _ => Ok(None),
                }
            }
            ChangeDetails::CarrierRatePlanChange(update) => {
                let plan = update.carrier_rate_plan.trim();
                let plans = cx.store.carrier_rate_plans(cx.tenant_id, cx.sp.id).await?;
                if plans.iter().any(|p| p.rate_plan_code == plan && p.jasper_rate_plan_id.is_none()) {
                    return Err(Refusal::field(
                        "CarrierRatePlanUpdate.CarrierRatePlan",
                        format!(
                            "carrier rate plan '{plan}' has no Pond package type (JasperRatePlanId) for service provider {}",
                            cx.sp.id
                        ),
                    ));
                }
                if update.communication_plan.is_some() {
                    return Err(Refusal::field(
                        "CarrierRatePlanUpdate.CommunicationPlan",
                        format!("{} has no communication plan; send only CarrierRatePlan", Integration::Pond),
                    ));
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}
