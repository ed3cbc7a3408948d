//! ThingSpace's part of intake: M2M devices only; a status update's state table, reason code and the service
//! plan and ZIP of every device it activates; no communication plan; only deactivated devices are deleted.

use async_trait::async_trait;
use domain::request::ChangeDetails;
use domain::rules::{DeviceVerdict, resolve_target_status, thingspace_transition, validate_thingspace_activation};
use domain::{BulkChangeRequest, Integration, PortalType};

use super::DEFAULT_REASON_CODE;
use crate::carrier::intake::{CarrierIntake, DeviceCheck, IntakeContext, Refusal};

pub(crate) struct ThingSpaceIntake;

#[async_trait]
impl CarrierIntake for ThingSpaceIntake {
    fn takes(&self, details: &ChangeDetails) -> bool {
        !matches!(details, ChangeDetails::ActivateNewService(_))
    }

    fn moves_plan_with_assignment(&self) -> bool {
        true
    }

    async fn check(&self, cx: &IntakeContext<'_>, request: &BulkChangeRequest) -> Result<Option<DeviceCheck>, Refusal> {
        if request.portal_type != PortalType::M2M {
            return Err(Refusal::field("PortalType", "ThingSpace devices are M2M devices; send PortalType 0"));
        }
        match &request.details {
            ChangeDetails::StatusUpdate(update) => {
                let options = update.thing_space.as_deref().cloned().unwrap_or_default();
                if let Some(code) = options.reason_code.as_deref().filter(|c| c.trim() != DEFAULT_REASON_CODE) {
                    return Err(Refusal::field(
                        "StatusUpdate.ThingSpaceStatusUpdate.ReasonCode",
                        format!(
                            "reason code '{code}' is not one ThingSpace documents; use FF (General Admin/Maintenance)"
                        ),
                    ));
                }
                for d in &options.devices {
                    if !cx.iccids.iter().any(|i| i == d.iccid.trim()) {
                        return Err(Refusal::field(
                            "StatusUpdate.ThingSpaceStatusUpdate.Devices",
                            format!("{} is not in Devices", d.iccid),
                        ));
                    }
                    if let Some(imei) = d.imei.as_deref().filter(|i| !i.trim().is_empty()) {
                        domain::Imei::parse(imei).map_err(|e| {
                            Refusal::field(
                                "StatusUpdate.ThingSpaceStatusUpdate.Devices.IMEI",
                                format!("{}: {e}", d.iccid),
                            )
                        })?;
                    }
                }
                let statuses = cx.store.device_statuses(Integration::ThingSpace).await?;
                let Some(target) =
                    resolve_target_status(&statuses, Integration::ThingSpace, &update.target_status).cloned()
                else {
                    return Ok(None);
                };
                let plans = cx.store.carrier_rate_plans(cx.tenant_id, cx.sp.id).await?;
                // Every device it activates needs a known service plan and a ZIP code.
                Ok(Some(Box::new(move |_raw, device, verdict| {
                    let DeviceVerdict::Valid { iccid, .. } = &verdict else { return verdict };
                    let current = device.and_then(|d| statuses.iter().find(|s| s.id == d.device_status_id));
                    let action =
                        thingspace_transition(current.map_or("INVENTORY", |c| c.status.as_str()), &target.status);
                    if matches!(action, Ok(Some(a)) if a.activates()) {
                        let (plan, zip) = options.plan_and_zip(iccid.as_str());
                        if let Err(reason) =
                            validate_thingspace_activation(iccid.as_str(), plan.as_deref(), zip.as_deref(), &plans)
                        {
                            return DeviceVerdict::Invalid { reason };
                        }
                    }
                    verdict
                })))
            }
            ChangeDetails::CarrierRatePlanChange(update) if update.communication_plan.is_some() => Err(Refusal::field(
                "CarrierRatePlanUpdate.CommunicationPlan",
                "ThingSpace has no communication plan; send only CarrierRatePlan (the service plan code)",
            )),
            ChangeDetails::DeleteDevice => {
                // Only deactivated devices can be deleted.
                let statuses = cx.store.device_statuses(Integration::ThingSpace).await?;
                Ok(Some(Box::new(move |_raw, _device, verdict| match verdict {
                    DeviceVerdict::Valid { device, iccid } => {
                        let status =
                            statuses.iter().find(|s| s.id == device.device_status_id).map(|s| s.status.as_str());
                        if status.is_some_and(|s| s.eq_ignore_ascii_case("DEACTIVE")) {
                            DeviceVerdict::Valid { device, iccid }
                        } else {
                            DeviceVerdict::Invalid {
                                reason: format!(
                                    "Device {iccid} is {}; only deactivated devices can be deleted from ThingSpace",
                                    status.unwrap_or("in an unknown status")
                                ),
                            }
                        }
                    }
                    invalid => invalid,
                })))
            }
            _ => Ok(None),
        }
    }
}
