//! Telegence's part of intake: the move each line can make (`telegence_status_move`); a reason code to suspend
//! or cancel; and, for SIMs without a line (activations), a billing account, a rate plan and a ZIP. New services
//! are for SIMs without a live line; a swap needs the line (MSISDN), a ZIP, and keeps an eSIM-compatible IMEI on
//! a device that takes only an eSIM profile.

use async_trait::async_trait;
use domain::request::ChangeDetails;
use domain::rules::{
    DeviceVerdict, TelegenceMove, esim_swap_refusal, resolve_target_status, telegence_status_move,
    validate_telegence_activation, validate_zip,
};
use domain::{BulkChangeRequest, FieldError, Integration};

use crate::carrier::intake::{CarrierIntake, DeviceCheck, IntakeContext, Refusal};

pub(crate) struct TelegenceIntake;

#[async_trait]
impl CarrierIntake for TelegenceIntake {
    fn takes(&self, details: &ChangeDetails) -> bool {
        !matches!(details, ChangeDetails::DeleteDevice)
    }

    async fn check(&self, cx: &IntakeContext<'_>, request: &BulkChangeRequest) -> Result<Option<DeviceCheck>, Refusal> {
        match &request.details {
            ChangeDetails::StatusUpdate(update) => {
                let statuses = cx.store.device_statuses(Integration::Telegence).await?;
                let Some(target) =
                    resolve_target_status(&statuses, Integration::Telegence, &update.target_status).cloned()
                else {
                    return Ok(None);
                };
                let options = update.telegence.as_deref().cloned().unwrap_or_default();
                let field = |name: &str| format!("StatusUpdate.TelegenceStatusUpdate.{name}");
                if target.status.eq_ignore_ascii_case("UNKNOWN") {
                    return Err(Refusal::field(
                        "StatusUpdate.TargetStatus",
                        "'No line' is not a status a Telegence line can be moved to; use Active, Suspended or Cancelled",
                    ));
                }
                let suspends_or_cancels = ["S", "C"].iter().any(|c| target.status.eq_ignore_ascii_case(c));
                if suspends_or_cancels && options.reason_code.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    return Err(Refusal::field(
                        &field("ReasonCode"),
                        format!("ReasonCode is required to move Telegence lines to {}", target.display_name),
                    ));
                }
                if let Some(date) = options.effective_date.as_deref().filter(|d| !d.trim().is_empty()) {
                    if chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").is_err() {
                        return Err(Refusal::field(
                            &field("EffectiveDate"),
                            format!("EffectiveDate '{date}' is not yyyy-MM-dd"),
                        ));
                    }
                }
                let activation = validate_telegence_activation(
                    options.billing_account_number.as_deref(),
                    options.rate_plan.as_deref(),
                    options.service_zip_code.as_deref(),
                )
                .map_err(|(name, why)| (field(name), why));
                let sp_id = cx.sp.id;
                // Telegence's own table of moves replaces the common status check.
                Ok(Some(Box::new(move |raw, device, _common| {
                    match domain::rules::validate_device(raw, device, sp_id) {
                        DeviceVerdict::Valid { device, iccid } => {
                            let has_line = device.msisdn.as_deref().is_some_and(|m| !m.trim().is_empty());
                            let current = statuses
                                .iter()
                                .find(|s| s.id == device.device_status_id)
                                .map_or("UNKNOWN", |s| s.status.as_str());
                            match telegence_status_move(has_line, current, &target.status) {
                                Err(why) => DeviceVerdict::Invalid {
                                    reason: format!("Status change not allowed for {iccid}: {why}"),
                                },
                                Ok(TelegenceMove::Activate) => match &activation {
                                    Ok(()) => DeviceVerdict::Valid { device, iccid },
                                    Err((name, why)) => DeviceVerdict::Invalid {
                                        reason: format!(
                                            "{iccid} has no line, so activating it opens one: {name}: {why}"
                                        ),
                                    },
                                },
                                Ok(_) => DeviceVerdict::Valid { device, iccid },
                            }
                        }
                        invalid => invalid,
                    }
                })))
            }
            ChangeDetails::ActivateNewService(_) => {
                // SIMs without a live line. (The block's billing account, plan and ZIP were checked when the
                // request was parsed.)
                let statuses = cx.store.device_statuses(Integration::Telegence).await?;
                Ok(Some(Box::new(move |_raw, _device, verdict| match verdict {
                    DeviceVerdict::Valid { device, iccid } => {
                        let current = statuses
                            .iter()
                            .find(|s| s.id == device.device_status_id)
                            .map_or("UNKNOWN", |s| s.status.as_str());
                        match device.msisdn.as_deref().filter(|m| !m.trim().is_empty()) {
                            Some(line) if current != "C" => DeviceVerdict::Invalid {
                                reason: format!(
                                    "{iccid} already has line {line} ({current}); a new service is for a SIM without one"
                                ),
                            },
                            _ => DeviceVerdict::Valid { device, iccid },
                        }
                    }
                    invalid => invalid,
                })))
            }
            ChangeDetails::ChangeIccidOrImei(change) => {
                let mut errors = Vec::new();
                match change.service_zip_code.as_deref().map(str::trim).filter(|z| !z.is_empty()) {
                    None => errors.push(FieldError::new(
                        "ChangeIdentifier.ServiceZipCode",
                        "ServiceZipCode is required for a Telegence swap",
                    )),
                    Some(zip) => {
                        if let Err(e) = validate_zip(zip) {
                            errors.push(FieldError::new("ChangeIdentifier.ServiceZipCode", e));
                        }
                    }
                }
                if !errors.is_empty() {
                    return Err(Refusal::Fields(errors));
                }
                let new_imei = change.new_imei.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
                // A device that takes only an eSIM profile keeps an eSIM-compatible IMEI.
                let ranges = if new_imei.is_some() { cx.store.imei_ranges().await? } else { Vec::new() };
                Ok(Some(Box::new(move |_raw, _device, verdict| match verdict {
                    DeviceVerdict::Valid { device, iccid }
                        if device.msisdn.as_deref().is_none_or(|m| m.trim().is_empty()) =>
                    {
                        DeviceVerdict::Invalid { reason: format!("{iccid} has no Telegence line (no MSISDN) to swap") }
                    }
                    DeviceVerdict::Valid { device, iccid } => {
                        match esim_swap_refusal(device.imei.as_deref(), new_imei.as_deref(), &ranges) {
                            Some(reason) => DeviceVerdict::Invalid { reason: format!("{iccid}: {reason}") },
                            None => DeviceVerdict::Valid { device, iccid },
                        }
                    }
                    verdict => verdict,
                })))
            }
            _ => Ok(None),
        }
    }
}
