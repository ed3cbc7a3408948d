//! The portal's bulk change request: the wire form (PascalCase JSON) and its typed form, one variant per change type.

use serde::{Deserialize, Serialize};

use crate::model::{ChangeType, Integration, PortalType};

/// One problem with a request, naming the field and, where it concerns one device, the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), device: None, message: message.into() }
    }
}

/// A request that cannot be accepted at all (nothing is written for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{title}: {}", .errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "))]
pub struct RequestError {
    pub title: String,
    pub errors: Vec<FieldError>,
}

impl RequestError {
    pub fn one(title: &str, field: &str, message: impl Into<String>) -> Self {
        Self { title: title.to_string(), errors: vec![FieldError::new(field, message)] }
    }
}

/// The request exactly as the portal sends it. Unknown fields are ignored (and reported back as warnings: the portal
/// sends more than we read, but an operator's misspelling must not pass unnoticed).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct BulkChangeRequestWire {
    pub service_provider_id: Option<i64>,
    pub change_type: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_type: Option<i64>,
    #[serde(default)]
    pub override_validation: bool,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_update: Option<StatusUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_rate_plan_update: Option<CarrierRatePlanUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_rate_plan_update: Option<CustomerRatePlanUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev_service: Option<RevServiceOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<UsernameUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_identifier: Option<ChangeIdentifier>,
    /// ActivateNewService (Telegence): the new lines' billing account, plan, ZIP and features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_service: Option<TelegenceOptions>,
    /// Rollout control (README "Rolling out safely"): devices a minute this bulk change may start, below the
    /// account's pace (which still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<i64>,
    /// The first devices go alone, then the rest continue or wait for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::rollout::CanaryWire>,
    /// When to stop: the remaining rows are cancelled and the bulk change ends ABORTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_when: Option<crate::rollout::AbortWhenWire>,
    /// One more webhook endpoint for this bulk change's events (README "Webhooks"), signed with the secret the
    /// submit's answer shows once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The bulk change this one undoes (set by `POST /M2M/BulkChange/{id}/Undo`, refused in a request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub undo_of: Option<i64>,
}

impl BulkChangeRequestWire {
    /// The rollout settings as stored (checked at intake).
    pub fn rollout(&self) -> crate::rollout::Rollout {
        crate::rollout::Rollout::stored(self.max_per_minute, self.canary.as_ref(), self.abort_when.as_ref())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct StatusUpdate {
    pub target_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jasper_status_update: Option<JasperStatusUpdate>,
    /// Rev.io customer to assign the device to after a successful status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    /// Optional Rev.io service line to create after a successful status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev_service: Option<RevServiceOptions>,
    /// ThingSpace's activation and deactivation parameters.
    #[serde(default, rename = "ThingSpaceStatusUpdate", skip_serializing_if = "Option::is_none")]
    pub thing_space: Option<Box<ThingSpaceStatusUpdate>>,
    /// Telegence: the reason code of a suspend, cancel or restore, and what an activation of a SIM without a line
    /// needs (billing account, plan, ZIP).
    #[serde(default, rename = "TelegenceStatusUpdate", skip_serializing_if = "Option::is_none")]
    pub telegence: Option<Box<TelegenceOptions>>,
}

/// ThingSpace parameters of a status update. `ServicePlan` and `MdnZipCode` are required to activate; they apply
/// to every device unless `Devices` gives a device its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ThingSpaceStatusUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdn_zip_code: Option<String>,
    /// Deactivation reason; ThingSpace documents only `FF` (General Admin/Maintenance), the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Ask ThingSpace to waive an early-termination fee on deactivation.
    #[serde(default)]
    pub etf_waiver: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_place_of_use: Option<PlaceOfUse>,
    /// Per-device values (IMEI, plan, ZIP) that differ from the block's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<ThingSpaceDevice>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ThingSpaceDevice {
    #[serde(rename = "ICCID")]
    pub iccid: String,
    #[serde(default, rename = "IMEI", skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdn_zip_code: Option<String>,
}

/// The primary place of use sent with a ThingSpace activation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PlaceOfUse {
    pub first_name: String,
    pub last_name: String,
    pub address_line: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    #[serde(default = "usa")]
    pub country: String,
}

fn usa() -> String {
    "USA".into()
}

impl ThingSpaceStatusUpdate {
    /// The service plan and ZIP code that apply to one device (its own, else the block's), trimmed; empty is none.
    pub fn plan_and_zip(&self, iccid: &str) -> (Option<String>, Option<String>) {
        let own = self.devices.iter().find(|d| d.iccid.trim() == iccid);
        let pick = |own: Option<&String>, default: &Option<String>| {
            own.or(default.as_ref()).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
        };
        (
            pick(own.and_then(|d| d.service_plan.as_ref()), &self.service_plan),
            pick(own.and_then(|d| d.mdn_zip_code.as_ref()), &self.mdn_zip_code),
        )
    }

    pub fn imei_of(&self, iccid: &str) -> Option<String> {
        self.devices
            .iter()
            .find(|d| d.iccid.trim() == iccid)
            .and_then(|d| d.imei.as_ref())
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct JasperStatusUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CarrierRatePlanUpdate {
    pub carrier_rate_plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CustomerRatePlanUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_rate_plan_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_rate_pool_id: Option<i64>,
    #[serde(default, rename = "DataAllocationMB", skip_serializing_if = "Option::is_none")]
    pub data_allocation_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
}

/// Rev.io options: customer assignment (change type 1) and the optional service line of a status update.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct RevServiceOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev_customer_id: Option<String>,
    #[serde(default)]
    pub create_rev_service: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_plan_group_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_customer_rate_plan: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_carrier_rate_plan: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
    /// With `AddCarrierRatePlan`: the carrier rate plan the devices move to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_rate_plan: Option<String>,
    /// With `AddCustomerRatePlan`: the customer rate plan (and pool) the devices get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_rate_plan_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_rate_pool_id: Option<i64>,
}

impl RevServiceOptions {
    /// Every field's wire name: where the options are flattened into another body (`/M2M/AssociateCustomer`),
    /// the fields it does not know are found with this list.
    pub const FIELDS: [&'static str; 11] = [
        "RevCustomerId",
        "CreateRevService",
        "ServiceTypeId",
        "ProviderId",
        "UsagePlanGroupId",
        "AddCustomerRatePlan",
        "AddCarrierRatePlan",
        "EffectiveDate",
        "CarrierRatePlan",
        "CustomerRatePlanId",
        "CustomerRatePoolId",
    ];
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct UsernameUpdate {
    pub new_username: String,
    #[serde(default, alias = "CostCenter1", skip_serializing_if = "Option::is_none")]
    pub cost_center: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_center3: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ChangeIdentifier {
    #[serde(default, rename = "NewICCID", skip_serializing_if = "Option::is_none")]
    pub new_iccid: Option<String>,
    #[serde(default, rename = "NewIMEI", skip_serializing_if = "Option::is_none")]
    pub new_imei: Option<String>,
    /// Telegence: the line's service ZIP (required for a Telegence swap).
    #[serde(default, rename = "ServiceZipCode", skip_serializing_if = "Option::is_none")]
    pub service_zip_code: Option<String>,
    /// Telegence: the swap's reason code (default `TELEGENCE_SWAP_REASON_CODE`).
    #[serde(default, rename = "ReasonCode", skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Telegence: the device's technology type (default `TELEGENCE_TECHNOLOGY_TYPE`).
    #[serde(default, rename = "TechnologyType", skip_serializing_if = "Option::is_none")]
    pub technology_type: Option<String>,
}

/// Telegence (AT&T Mobility) options: of a new service (ActivateNewService, or a StatusUpdate to Active of a SIM
/// without a line), and of a line's status change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TelegenceOptions {
    /// The billing account (BAN) the new lines are opened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_account_number: Option<String>,
    /// The rate plan SOC of the new lines (`singleUserCode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_zip_code: Option<String>,
    /// Feature SOCs the new lines get (`offeringCode<n>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Feature SOCs removed once a new line is active (`removeOfferingCode`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_features: Vec<String>,
    /// The reason code of a suspend, cancel or restore (required for those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// `yyyy-MM-dd`: when a suspend or cancel takes effect (absent: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

/// The default reason code of a Telegence swap ([guess]: the legacy reads it from a resource not public).
pub const TELEGENCE_SWAP_REASON_CODE: &str = "CE";
/// The default technology type of a Telegence swap ([guess]: the legacy's resource default is not public).
pub const TELEGENCE_TECHNOLOGY_TYPE: &str = "LTE";

/// The per-type details, so a processor cannot read another type's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeDetails {
    CustomerAssignment(RevServiceOptions),
    StatusUpdate(StatusUpdate),
    CustomerRatePlanChange(CustomerRatePlanUpdate),
    Archival,
    EditUsername(UsernameUpdate),
    CarrierRatePlanChange(CarrierRatePlanUpdate),
    ChangeIccidOrImei(ChangeIdentifier),
    /// Deletes deactivated devices from the carrier account (ThingSpace) and archives them here.
    DeleteDevice,
    /// New Telegence lines for SIMs that have none.
    ActivateNewService(TelegenceOptions),
}

impl ChangeDetails {
    /// The options present in this change that one carrier alone reads (the wire names them after it): for each,
    /// the field, its carrier, and the refusal any other service provider gives (`{}`: that provider's
    /// integration).
    pub fn carrier_options(&self) -> Vec<(&'static str, Integration, &'static str)> {
        let mut found = Vec::new();
        match self {
            ChangeDetails::StatusUpdate(update) => {
                if update.thing_space.is_some() {
                    found.push((
                        "StatusUpdate.ThingSpaceStatusUpdate",
                        Integration::ThingSpace,
                        "ThingSpaceStatusUpdate does not apply to {} service providers",
                    ));
                }
                if update.telegence.is_some() {
                    found.push((
                        "StatusUpdate.TelegenceStatusUpdate",
                        Integration::Telegence,
                        "TelegenceStatusUpdate does not apply to {} service providers",
                    ));
                }
            }
            ChangeDetails::ChangeIccidOrImei(change)
                if change.service_zip_code.is_some()
                    || change.reason_code.is_some()
                    || change.technology_type.is_some() =>
            {
                found.push((
                    "ChangeIdentifier",
                    Integration::Telegence,
                    "ServiceZipCode, ReasonCode and TechnologyType are Telegence's; not for {} service providers",
                ));
            }
            _ => {}
        }
        found
    }

    pub fn change_type(&self) -> ChangeType {
        match self {
            ChangeDetails::CustomerAssignment(_) => ChangeType::CustomerAssignment,
            ChangeDetails::StatusUpdate(_) => ChangeType::StatusUpdate,
            ChangeDetails::CustomerRatePlanChange(_) => ChangeType::CustomerRatePlanChange,
            ChangeDetails::Archival => ChangeType::Archival,
            ChangeDetails::EditUsername(_) => ChangeType::EditUsername,
            ChangeDetails::CarrierRatePlanChange(_) => ChangeType::CarrierRatePlanChange,
            ChangeDetails::ChangeIccidOrImei(_) => ChangeType::ChangeIccidOrImei,
            ChangeDetails::DeleteDevice => ChangeType::DeleteDevice,
            ChangeDetails::ActivateNewService(_) => ChangeType::ActivateNewService,
        }
    }
}

/// Parses JSON into `T`: a type error names its JSON path (`StatusUpdate.TargetStatus`), and every field `T` does not
/// know is returned as a warning ("unknown field, ignored") rather than silently dropped.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    title: &str,
) -> Result<(T, Vec<FieldError>), RequestError> {
    let mut unknown = Vec::new();
    let mut more = 0usize;
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(&mut json, &mut track),
        // `?` marks an `Option`'s content in serde_ignored's paths; the portal's field names are what an operator
        // reads, so the marker is left out.
        |path| {
            if unknown.len() < MAX_WARNINGS {
                unknown.push(path.to_string().split('.').filter(|s| *s != "?").collect::<Vec<_>>().join("."));
            } else {
                more += 1;
            }
        },
    );
    let value = parsed.and_then(|v| json.end().map(|()| v)).map_err(|e| {
        let path = track.path().to_string();
        let field = if path.is_empty() || path == "?" { "body".to_string() } else { path };
        RequestError::one(title, &field, format!("invalid JSON: {e}"))
    })?;
    let mut warnings: Vec<FieldError> =
        unknown.into_iter().map(|field| FieldError::new(field, "unknown field, ignored")).collect();
    if more > 0 {
        warnings.push(more_warnings(more));
    }
    Ok((value, warnings))
}

/// The most warnings an answer carries: a body of 450,000 unknown fields answered 23 MB of them. Beyond it one
/// more warning counts the rest.
pub const MAX_WARNINGS: usize = 100;

/// The warning that stands for `n` unknown fields beyond the first `MAX_WARNINGS`.
pub fn more_warnings(n: usize) -> FieldError {
    FieldError::new("body", format!("{n} more unknown fields, ignored (only the first {MAX_WARNINGS} are named)"))
}

/// `warnings` with at most `MAX_WARNINGS` of them named and the rest counted in one more.
pub fn capped_warnings(warnings: impl IntoIterator<Item = FieldError>) -> Vec<FieldError> {
    let mut kept = Vec::new();
    let mut more = 0usize;
    for w in warnings {
        if kept.len() < MAX_WARNINGS {
            kept.push(w);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        kept.push(more_warnings(more));
    }
    kept
}

/// A well-formed request: known change type with its block, a service provider, at least one device.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkChangeRequest {
    pub service_provider_id: i64,
    pub portal_type: PortalType,
    pub override_validation: bool,
    /// As sent, in order; per-device parsing happens in validation so one bad ICCID fails only its row.
    pub devices: Vec<String>,
    pub details: ChangeDetails,
    pub rollout: crate::rollout::Rollout,
    /// One more webhook endpoint for this bulk change's events (its address is checked by the API).
    pub notify_url: Option<String>,
}

const MALFORMED: &str = "Malformed bulk change request";

impl BulkChangeRequest {
    /// Parses the portal's JSON, reporting every structural problem at once.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        Self::from_json_with_warnings(body).map(|(request, _)| request)
    }

    /// Parses the portal's JSON; also returns the fields it does not know (ignored, reported back as warnings).
    pub fn from_json_with_warnings(body: &[u8]) -> Result<(Self, Vec<FieldError>), RequestError> {
        let (wire, warnings) = parse_json::<BulkChangeRequestWire>(body, MALFORMED)?;
        if wire.undo_of.is_some() {
            return Err(RequestError::one(
                MALFORMED,
                "UndoOf",
                "UndoOf is set by POST /M2M/BulkChange/{id}/Undo, not by a request",
            ));
        }
        Ok((Self::from_wire(wire)?, warnings))
    }

    /// A stored request (`to_wire`): stored without devices, which are its rows; parsed as one with a device.
    pub fn from_stored(wire: BulkChangeRequestWire) -> Result<Self, RequestError> {
        Self::from_wire(BulkChangeRequestWire { devices: vec![String::new()], ..wire })
    }

    pub fn from_wire(wire: BulkChangeRequestWire) -> Result<Self, RequestError> {
        let mut errors = Vec::new();
        let service_provider_id = wire.service_provider_id.unwrap_or_else(|| {
            errors.push(FieldError::new("ServiceProviderId", "ServiceProviderId is required"));
            0
        });
        let portal_type = match wire.portal_type.map(PortalType::try_from).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                errors.push(FieldError::new("PortalType", e));
                PortalType::M2M
            }
        };
        if wire.devices.is_empty() {
            errors.push(FieldError::new("Devices", "Devices must list at least one ICCID"));
        }
        let change_type = match wire.change_type {
            None => {
                errors.push(FieldError::new("ChangeType", "ChangeType is required"));
                None
            }
            Some(n) => match ChangeType::from_number(n) {
                Some(t) => Some(t),
                None => {
                    errors.push(FieldError::new(
                        "ChangeType",
                        format!("unknown ChangeType {n}; known: 1 CustomerAssignment, 2 ActivateNewService, 3 StatusUpdate, 4 CustomerRatePlanChange, 5 Archival, 6 EditUsername, 7 CarrierRatePlanChange, 8 ChangeICCIDorIMEI, 9 DeleteDevice"),
                    ));
                    None
                }
            },
        };
        let details = change_type.and_then(|t| Self::details(t, &wire, &mut errors));
        let rollout = crate::rollout::Rollout::from_wire(
            wire.max_per_minute,
            wire.canary.as_ref(),
            wire.abort_when.as_ref(),
            &mut errors,
        );
        let notify_url = match wire.notify_url.as_deref().map(str::trim) {
            Some("") => {
                errors.push(FieldError::new("NotifyUrl", "NotifyUrl is empty; leave it out or give an https URL"));
                None
            }
            other => other.map(str::to_string),
        };
        match details {
            Some(details) if errors.is_empty() => Ok(Self {
                notify_url,
                service_provider_id,
                portal_type,
                override_validation: wire.override_validation,
                devices: wire.devices,
                details,
                rollout,
            }),
            _ => Err(RequestError { title: MALFORMED.to_string(), errors }),
        }
    }

    fn details(t: ChangeType, wire: &BulkChangeRequestWire, errors: &mut Vec<FieldError>) -> Option<ChangeDetails> {
        let present: Vec<&str> = [
            ("StatusUpdate", wire.status_update.is_some()),
            ("CarrierRatePlanUpdate", wire.carrier_rate_plan_update.is_some()),
            ("CustomerRatePlanUpdate", wire.customer_rate_plan_update.is_some()),
            ("RevService", wire.rev_service.is_some()),
            ("Username", wire.username.is_some()),
            ("ChangeIdentifier", wire.change_identifier.is_some()),
            ("NewService", wire.new_service.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is)| is.then_some(name))
        .collect();
        let expected = t.block_name();
        for other in present.iter().filter(|p| Some(**p) != expected) {
            errors.push(FieldError::new(
                *other,
                format!(
                    "{other} does not belong to ChangeType {t}; send only {}",
                    expected.unwrap_or("the device list")
                ),
            ));
        }
        let missing = |errors: &mut Vec<FieldError>, block: &str| {
            errors.push(FieldError::new(block, format!("{block} is required for ChangeType {t}")));
            None
        };
        match t {
            ChangeType::StatusUpdate => match &wire.status_update {
                Some(s) if s.target_status.trim().is_empty() => {
                    errors.push(FieldError::new("StatusUpdate.TargetStatus", "TargetStatus must not be empty"));
                    None
                }
                Some(s) => Some(ChangeDetails::StatusUpdate(s.clone())),
                None => missing(errors, "StatusUpdate"),
            },
            ChangeType::CarrierRatePlanChange => match &wire.carrier_rate_plan_update {
                Some(c) => Some(ChangeDetails::CarrierRatePlanChange(c.clone())),
                None => missing(errors, "CarrierRatePlanUpdate"),
            },
            ChangeType::CustomerRatePlanChange => match &wire.customer_rate_plan_update {
                Some(c) => Some(ChangeDetails::CustomerRatePlanChange(c.clone())),
                None => missing(errors, "CustomerRatePlanUpdate"),
            },
            ChangeType::CustomerAssignment => match &wire.rev_service {
                Some(r) => Some(ChangeDetails::CustomerAssignment(r.clone())),
                None => missing(errors, "RevService"),
            },
            ChangeType::EditUsername => match &wire.username {
                Some(u) => Some(ChangeDetails::EditUsername(u.clone())),
                None => missing(errors, "Username"),
            },
            ChangeType::ChangeIccidOrImei => match &wire.change_identifier {
                Some(c) => Some(ChangeDetails::ChangeIccidOrImei(c.clone())),
                None => missing(errors, "ChangeIdentifier"),
            },
            ChangeType::Archival => Some(ChangeDetails::Archival),
            ChangeType::DeleteDevice => Some(ChangeDetails::DeleteDevice),
            ChangeType::ActivateNewService => match &wire.new_service {
                Some(n) => match crate::rules::validate_telegence_activation(
                    n.billing_account_number.as_deref(),
                    n.rate_plan.as_deref(),
                    n.service_zip_code.as_deref(),
                ) {
                    Ok(()) => Some(ChangeDetails::ActivateNewService(n.clone())),
                    Err((field, message)) => {
                        errors.push(FieldError::new(format!("NewService.{field}"), message));
                        None
                    }
                },
                None => missing(errors, "NewService"),
            },
        }
    }

    /// The wire form stored once per bulk change and read back by the worker.
    pub fn to_wire(&self) -> BulkChangeRequestWire {
        let mut wire = BulkChangeRequestWire {
            service_provider_id: Some(self.service_provider_id),
            change_type: Some(self.details.change_type().number()),
            portal_type: Some(self.portal_type.into()),
            override_validation: self.override_validation,
            devices: Vec::new(),
            max_per_minute: self.rollout.max_per_minute.map(i64::from),
            canary: self.rollout.canary_wire(),
            abort_when: self.rollout.abort_when_wire(),
            notify_url: self.notify_url.clone(),
            ..Default::default()
        };
        match &self.details {
            ChangeDetails::CustomerAssignment(r) => wire.rev_service = Some(r.clone()),
            ChangeDetails::StatusUpdate(s) => wire.status_update = Some(s.clone()),
            ChangeDetails::CustomerRatePlanChange(c) => wire.customer_rate_plan_update = Some(c.clone()),
            ChangeDetails::Archival | ChangeDetails::DeleteDevice => {}
            ChangeDetails::EditUsername(u) => wire.username = Some(u.clone()),
            ChangeDetails::CarrierRatePlanChange(c) => wire.carrier_rate_plan_update = Some(c.clone()),
            ChangeDetails::ChangeIccidOrImei(c) => wire.change_identifier = Some(c.clone()),
            ChangeDetails::ActivateNewService(n) => wire.new_service = Some(n.clone()),
        }
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_002_SAMPLES: &[&str] = &[
        r#"{"OverrideValidation": false, "Devices": ["89148000008245116615"], "ServiceProviderId": 4, "ChangeType": 5}"#,
        r#"{"OverrideValidation": false, "Devices": ["89148000008245116615"], "ServiceProviderId": 4, "ChangeType": 1,
            "RevService": {"RevCustomerId": "12345", "CreateRevService": true}}"#,
        r#"{"OverrideValidation": false, "Devices": ["89148000008245116615"], "ServiceProviderId": 4, "ChangeType": 7,
            "CarrierRatePlanUpdate": {"CarrierRatePlan": "STANDARD_PLAN_001"}}"#,
        r#"{"OverrideValidation": false, "Devices": ["89148000008245116615"], "ServiceProviderId": 4, "ChangeType": 4,
            "CustomerRatePlanUpdate": {"CustomerRatePlanId": 123, "CustomerRatePoolId": 456, "DataAllocationMB": 1024}}"#,
        r#"{"OverrideValidation": false, "Devices": ["89148000008245116615"], "ServiceProviderId": 4, "ChangeType": 6,
            "Username": {"NewUsername": "DEVICE_001", "CostCenter": "DEPT_SALES_001"}}"#,
        r#"{"OverrideValidation": false, "Devices": ["89148000008245116615"], "ServiceProviderId": 4, "ChangeType": 3,
            "StatusUpdate": {"TargetStatus": "Active", "JasperStatusUpdate": {"ReasonCode": "CUSTOMER_REQUEST"}}}"#,
    ];

    #[test]
    fn every_seed_002_sample_parses_to_its_change_type() {
        let expected = [5, 1, 7, 4, 6, 3];
        for (sample, n) in SEED_002_SAMPLES.iter().zip(expected) {
            let req = BulkChangeRequest::from_json(sample.as_bytes()).unwrap();
            assert_eq!(req.details.change_type().number(), n);
            assert_eq!(req.service_provider_id, 4);
            assert_eq!(req.devices, vec!["89148000008245116615".to_string()]);
        }
    }

    #[test]
    fn wire_round_trip_keeps_the_details() {
        let req = BulkChangeRequest::from_json(SEED_002_SAMPLES[5].as_bytes()).unwrap();
        let json = serde_json::to_vec(&req.to_wire()).unwrap();
        let mut back: BulkChangeRequestWire = serde_json::from_slice(&json).unwrap();
        back.devices = req.devices.clone();
        assert_eq!(BulkChangeRequest::from_wire(back).unwrap(), req);
    }

    fn fields(body: &str) -> Vec<(String, String)> {
        BulkChangeRequest::from_json(body.as_bytes())
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn malformed_json_names_the_position() {
        let errs = fields(r#"{"ChangeType": 3,"#);
        assert_eq!(errs[0].0, "body");
        assert!(errs[0].1.starts_with("invalid JSON: EOF while parsing"), "{errs:?}");
    }

    #[test]
    fn unknown_change_type_is_named() {
        let errs = fields(r#"{"ServiceProviderId": 1, "ChangeType": 42, "Devices": ["1"]}"#);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "ChangeType");
        assert!(errs[0].1.starts_with("unknown ChangeType 42"));
    }

    #[test]
    fn empty_device_list_and_missing_provider_are_both_reported() {
        let errs = fields(r#"{"ChangeType": 5, "Devices": []}"#);
        let names: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, vec!["ServiceProviderId", "Devices"]);
    }

    #[test]
    fn missing_and_foreign_blocks_are_refused() {
        let errs =
            fields(r#"{"ServiceProviderId": 1, "ChangeType": 3, "Devices": ["1"], "Username": {"NewUsername": "x"}}"#);
        let names: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, vec!["Username", "StatusUpdate"]);
        assert_eq!(errs[1].1, "StatusUpdate is required for ChangeType StatusUpdate (3)");
    }

    #[test]
    fn empty_target_status_is_refused() {
        let errs = fields(
            r#"{"ServiceProviderId": 1, "ChangeType": 3, "Devices": ["1"], "StatusUpdate": {"TargetStatus": " "}}"#,
        );
        assert_eq!(errs[0].0, "StatusUpdate.TargetStatus");
    }

    #[test]
    fn unknown_portal_type_is_refused() {
        let errs = fields(r#"{"ServiceProviderId": 1, "ChangeType": 5, "PortalType": 1, "Devices": ["1"]}"#);
        assert_eq!(errs[0].0, "PortalType");
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn unknown_fields_come_back_as_warnings_with_their_path() {
        let body = br#"{"ServiceProviderId": 10, "ChangeType": 3, "Devices": ["8901"], "OverideValidation": true,
                        "StatusUpdate": {"TargetStatus": "Active", "AcountNumber": "1001"}}"#;
        let (_, warnings) = BulkChangeRequest::from_json_with_warnings(body).expect("parses");
        let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(fields, vec!["OverideValidation", "StatusUpdate.AcountNumber"]);
        assert!(warnings.iter().all(|w| w.message == "unknown field, ignored"));
    }

    #[test]
    fn a_type_error_names_its_json_path() {
        let err =
            BulkChangeRequest::from_json(br#"{"ServiceProviderId": "ten", "ChangeType": 3}"#).expect_err("refused");
        assert_eq!(err.errors[0].field, "ServiceProviderId");
        let err = BulkChangeRequest::from_json(br#"{"ChangeType": 3, "StatusUpdate": {"TargetStatus": 5}}"#)
            .expect_err("refused");
        assert_eq!(err.errors[0].field, "StatusUpdate.TargetStatus");
        let err = BulkChangeRequest::from_json(b"{\"ChangeType\": 3,").expect_err("refused");
        assert!(err.errors[0].message.starts_with("invalid JSON"), "{err:?}");
    }
}

#[cfg(test)]
mod field_list_tests {
    use super::*;

    #[test]
    fn the_rev_service_field_list_names_every_field() {
        let all = RevServiceOptions {
            rev_customer_id: Some("1".into()),
            create_rev_service: true,
            service_type_id: Some(1),
            provider_id: Some(1),
            usage_plan_group_id: Some(1),
            add_customer_rate_plan: Some(true),
            add_carrier_rate_plan: Some(true),
            effective_date: Some("2026-01-01".into()),
            carrier_rate_plan: Some("P".into()),
            customer_rate_plan_id: Some(1),
            customer_rate_pool_id: Some(1),
        };
        let value = serde_json::to_value(&all).expect("serialize");
        let mut keys: Vec<&str> = value.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut listed: Vec<&str> = RevServiceOptions::FIELDS.to_vec();
        listed.sort_unstable();
        assert_eq!(keys, listed);
    }
}
