//! Intake: a request checked against every rule of its change type and the device's carrier, giving one row per
//! device (PENDING, or ERROR with the reason). Shared by the dry run and the real submission.

use std::collections::HashMap;

use domain::request::{
    CarrierRatePlanUpdate, ChangeDetails, ChangeIdentifier, CustomerRatePlanUpdate, RevServiceOptions, StatusUpdate,
    UsernameUpdate,
};
use domain::rules::{
    DeviceRecord, DeviceVerdict, MAX_SHOWN_DEVICE_CHARS, bounded_text, dedupe_devices, parse_effective_date,
    resolve_target_status, scheduled_for, validate_archival_device, validate_device, validate_label,
    validate_status_update_device,
};
use domain::{BulkChangeRequest, FieldError, Integration, RequestError, RowStatus};
use engine::carrier::intake::checked;
use engine::carrier::{CarrierIntake, DeviceCheck, IntakeContext, Refusal, intake_rules};
use engine::ports::{
    BulkChanges, CustomerPlanChange, Devices, NewBulkChange, NewRow, OpenChange, ReferenceData, RevServices,
    ScheduledCustomerPlan, ServiceProvider, Store,
};
use serde::Serialize;

use crate::auth::Caller;
use crate::problem::ApiError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceResult {
    #[serde(rename = "ICCID")]
    pub iccid: String,
    pub valid: bool,
    /// Why the device was refused, in the problem+json error shape (`{field, device, message}`).
    pub errors: Vec<FieldError>,
}

impl DeviceResult {
    /// The device is refused for `reason`.
    pub fn refuse(&mut self, reason: String) {
        self.valid = false;
        self.errors = vec![device_error(&self.iccid, reason)];
    }
}

fn device_error(iccid: &str, reason: String) -> FieldError {
    FieldError { field: "Devices".into(), device: Some(iccid.to_string()), message: reason }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IntakeCounts {
    pub valid: usize,
    pub invalid: usize,
    /// Entries repeated in the request, collapsed into one row each.
    pub duplicates: usize,
}

/// The checked request, ready to be recorded.
pub struct Intake {
    pub change: NewBulkChange,
    pub rows: Vec<NewRow>,
    pub devices: Vec<DeviceResult>,
    pub duplicates: Vec<String>,
    /// Fields of the request we do not know: ignored, and said so.
    pub warnings: Vec<FieldError>,
}

impl Intake {
    pub fn counts(&self) -> IntakeCounts {
        let valid = self.devices.iter().filter(|d| d.valid).count();
        IntakeCounts { valid, invalid: self.devices.len() - valid, duplicates: self.duplicates.len() }
    }
}

/// Parses and checks a request body for the caller. Errors that concern the whole request are 400/413 and
/// nothing is written; errors that concern one device become that device's ERROR row.
pub async fn evaluate(store: &dyn Store, caller: &Caller, body: &[u8], max_devices: usize) -> Result<Intake, ApiError> {
    let (request, warnings) = BulkChangeRequest::from_json_with_warnings(body)?;
    evaluate_request(store, caller, request, warnings, max_devices).await
}

/// `evaluate` for a request already parsed (`warnings`: the fields it did not know).
pub async fn evaluate_request(
    store: &dyn Store,
    caller: &Caller,
    mut request: BulkChangeRequest,
    warnings: Vec<FieldError>,
    max_devices: usize,
) -> Result<Intake, ApiError> {
    if request.devices.len() > max_devices {
        return Err(ApiError::TooLarge { count: request.devices.len(), max: max_devices });
    }
    let sp = store.service_provider(caller.tenant_id, request.service_provider_id).await?.ok_or_else(|| {
        ApiError::invalid(
            "ServiceProviderId",
            format!("service provider {} was not found", request.service_provider_id),
        )
    })?;
    default_rev_provider(store, caller, &mut request.details).await?;
    let (unique, duplicates) = dedupe_devices(&request.devices);
    let not_taken = || {
        ApiError::invalid(
            "ChangeType",
            format!("{} for {} service providers is not supported yet", request.details.change_type(), sp.integration),
        )
    };
    let Some(rules) = intake_rules(sp.integration) else { return Err(not_taken()) };
    if !rules.takes(&request.details) {
        return Err(not_taken());
    }
    refuse_other_carriers_options(&request.details, sp.integration)?;
    // The carrier's own checks of the request, and of each device (`engine::carrier::<name>::intake`).
    let cx = IntakeContext { store, tenant_id: caller.tenant_id, sp: &sp, iccids: &unique };
    let check = rules.check(&cx, &request).await.map_err(refused)?;
    let check = check.as_ref();
    let (rows, devices) = match &request.details {
        ChangeDetails::StatusUpdate(update) => status_update_rows(store, caller, &sp, update, &unique, check).await?,
        ChangeDetails::CarrierRatePlanChange(update) => {
            carrier_rate_plan_rows(store, caller, &sp, update, &unique, check).await?
        }
        ChangeDetails::EditUsername(update) => username_rows(store, caller, &sp, update, &unique, check).await?,
        ChangeDetails::DeleteDevice | ChangeDetails::ActivateNewService(_) => {
            device_rows(store, caller, &sp, &unique, check).await?
        }
        ChangeDetails::Archival => archival_rows(store, caller, &sp, request.override_validation, &unique).await?,
        ChangeDetails::CustomerRatePlanChange(update) => {
            customer_rate_plan_rows(store, caller, &sp, update, &unique).await?
        }
        ChangeDetails::CustomerAssignment(options) => {
            assignment_rows(store, caller, &sp, rules, options, &unique).await?
        }
        ChangeDetails::ChangeIccidOrImei(change) => identifier_rows(store, caller, &sp, change, &unique, check).await?,
    };
    let attributes = domain::attributes_of(&request.details);
    let (rows, devices) = refuse_open_changes(store, caller, &attributes, rows, devices).await?;
    let change = NewBulkChange {
        tenant_id: caller.tenant_id,
        service_provider_id: sp.id,
        integration: sp.integration,
        change_type: request.details.change_type(),
        portal_type: request.portal_type,
        request: request.to_wire(),
        created_by: caller.user.clone(),
        retry_of: None,
        attributes,
        idempotency_key: None,
        notify_secret: None,
    };
    let duplicates = duplicates.iter().map(|d| bounded_text(d, MAX_SHOWN_DEVICE_CHARS)).collect();
    Ok(Intake { change, rows, devices, duplicates, warnings })
}

/// A carrier's refusal as the API answers it.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Fields(errors) => {
            ApiError::Invalid(RequestError { title: "Invalid bulk change request".into(), errors })
        }
        Refusal::Store(e) => e.into(),
    }
}

/// Options named after one carrier are refused for any other service provider.
fn refuse_other_carriers_options(details: &ChangeDetails, integration: Integration) -> Result<(), ApiError> {
    let errors: Vec<FieldError> = details
        .carrier_options()
        .into_iter()
        .filter(|(_, owner, _)| *owner != integration)
        .map(|(field, _, refusal)| FieldError::new(field, refusal.replace("{}", &integration.to_string())))
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(RequestError { title: "Invalid bulk change request".into(), errors }))
}

/// Change types whose only rules are the device's and its carrier's (DeleteDevice, ActivateNewService).
async fn device_rows(
    store: &(impl Devices + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    iccids: &[String],
    check: Option<&DeviceCheck>,
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let found = devices_of(store, caller, iccids).await?;
    Ok(rows_from(iccids, &found, |raw, device| checked(check, raw, device, validate_device(raw, device, sp.id))))
}

/// `CreateRevService` without `ProviderId` takes the tenant's Rev.io account's default provider, written into the
/// stored request; without one it is refused here (Rev.io refuses a service line without a provider).
async fn default_rev_provider(
    store: &(impl ReferenceData + ?Sized),
    caller: &Caller,
    details: &mut ChangeDetails,
) -> Result<(), ApiError> {
    let (options, field) = match details {
        ChangeDetails::CustomerAssignment(o) => (Some(o), "RevService.ProviderId"),
        ChangeDetails::StatusUpdate(u) => (u.rev_service.as_mut(), "StatusUpdate.RevService.ProviderId"),
        _ => (None, ""),
    };
    let Some(options) = options.filter(|o| o.create_rev_service && o.provider_id.is_none()) else { return Ok(()) };
    // Without any Rev.io account the option is refused further on, with that reason.
    let Some(rev) = store.service_provider_for(caller.tenant_id, Integration::RevIo).await? else { return Ok(()) };
    match rev.default_provider_id {
        Some(id) => {
            options.provider_id = Some(id);
            Ok(())
        }
        None => Err(ApiError::invalid(
            field,
            "ProviderId is required with CreateRevService: this tenant's Rev.io account has no default provider",
        )),
    }
}

/// Devices another bulk change holds (an open change of one of `attributes`) become ERROR rows naming it, so the
/// dry run reports them too. The store decides again when it records the rows (two submissions can race).
async fn refuse_open_changes(
    store: &(impl BulkChanges + ?Sized),
    caller: &Caller,
    attributes: &[domain::DeviceAttribute],
    mut rows: Vec<NewRow>,
    mut devices: Vec<DeviceResult>,
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let open_rows = |r: &NewRow| matches!(r.status, RowStatus::Pending | RowStatus::Scheduled);
    let ids: Vec<i64> = rows.iter().filter(|r| open_rows(r)).filter_map(|r| r.device_id).collect();
    if ids.is_empty() || attributes.is_empty() {
        return Ok((rows, devices));
    }
    let mut holders: HashMap<i64, Vec<OpenChange>> = HashMap::new();
    for open in store.open_changes(caller.tenant_id, &ids).await? {
        if attributes.contains(&open.attribute) {
            holders.entry(open.device_id).or_default().push(open);
        }
    }
    for (row, result) in rows.iter_mut().zip(devices.iter_mut()) {
        let Some(held) = row.device_id.filter(|_| open_rows(row)).and_then(|id| holders.get(&id)) else { continue };
        // The same holder the store would name: the first attribute by name.
        let Some(holder) = held.iter().min_by_key(|o| o.attribute.as_str()) else { continue };
        let reason = domain::conflict_reason(&row.iccid, holder.change_type, holder.bulk_change_id);
        row.status = RowStatus::Error;
        row.status_details = Some(reason.clone());
        row.scheduled = None;
        result.refuse(reason);
    }
    Ok((rows, devices))
}

async fn status_update_rows(
    store: &(impl Devices + ReferenceData + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    update: &StatusUpdate,
    iccids: &[String],
    check: Option<&DeviceCheck>,
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let statuses = store.device_statuses(sp.integration).await?;
    let target = resolve_target_status(&statuses, sp.integration, &update.target_status).ok_or_else(|| {
        let known: Vec<&str> = statuses.iter().map(|s| s.display_name.as_str()).collect();
        ApiError::invalid(
            "StatusUpdate.TargetStatus",
            format!("unknown status '{}' for {}; known: {}", update.target_status, sp.integration, known.join(", ")),
        )
    })?;
    if let Some(account) = update.account_number.as_deref().filter(|a| !a.trim().is_empty()) {
        if store.rev_customer(caller.tenant_id, account.trim()).await?.is_none() {
            return Err(ApiError::invalid(
                "StatusUpdate.AccountNumber",
                format!("Rev customer '{account}' was not found"),
            ));
        }
    }
    if let Some(rev) = update.rev_service.as_ref().filter(|r| r.create_rev_service) {
        let customer = rev.rev_customer_id.as_deref().or(update.account_number.as_deref()).unwrap_or("").trim();
        if customer.is_empty() {
            return Err(ApiError::invalid(
                "StatusUpdate.RevService.RevCustomerId",
                "RevCustomerId (or AccountNumber) is required to create a Rev.io service",
            ));
        }
        if store.rev_customer(caller.tenant_id, customer).await?.is_none() {
            return Err(ApiError::invalid(
                "StatusUpdate.RevService.RevCustomerId",
                format!("Rev customer '{customer}' was not found"),
            ));
        }
        if store.service_provider_for(caller.tenant_id, domain::Integration::RevIo).await?.is_none() {
            return Err(ApiError::invalid("StatusUpdate.RevService", "no Rev.io account is set up for this tenant"));
        }
    }
    let found = devices_of(store, caller, iccids).await?;
    Ok(rows_from(iccids, &found, |raw, device| {
        let current = device.and_then(|d| statuses.iter().find(|s| s.id == d.device_status_id));
        let common = validate_status_update_device(raw, device, sp.id, sp.integration, current, target);
        checked(check, raw, device, common)
    }))
}

type Found = HashMap<String, DeviceRecord>;

/// The longest reason a row keeps for a device refused at intake.
const MAX_SHOWN_REASON_CHARS: usize = 500;

async fn devices_of(store: &(impl Devices + ?Sized), caller: &Caller, iccids: &[String]) -> Result<Found, ApiError> {
    Ok(store.devices_by_iccid(caller.tenant_id, iccids).await?.into_iter().map(|d| (d.iccid.clone(), d)).collect())
}

/// One row per device: PENDING when the verdict is valid, ERROR with the reason when not.
fn rows_from(
    iccids: &[String],
    found: &Found,
    verdict: impl Fn(&str, Option<&DeviceRecord>) -> DeviceVerdict,
) -> (Vec<NewRow>, Vec<DeviceResult>) {
    let mut rows = Vec::with_capacity(iccids.len());
    let mut results = Vec::with_capacity(iccids.len());
    for raw in iccids {
        match verdict(raw, found.get(raw.as_str())) {
            DeviceVerdict::Valid { device, iccid } => {
                rows.push(NewRow {
                    device_id: Some(device.id),
                    iccid: iccid.to_string(),
                    msisdn: device.msisdn.clone(),
                    status: RowStatus::Pending,
                    status_details: None,
                    scheduled: None,
                    request: None,
                });
                results.push(DeviceResult { iccid: iccid.to_string(), valid: true, errors: vec![] });
            }
            DeviceVerdict::Invalid { reason } => {
                // What the operator sent is shown back bounded and with control characters escaped: it reaches
                // the status page, logs and the failure e-mail.
                let shown = bounded_text(raw, MAX_SHOWN_DEVICE_CHARS);
                let reason = if shown == *raw { reason } else { reason.replace(raw.as_str(), &shown) };
                let reason = bounded_text(&reason, MAX_SHOWN_REASON_CHARS);
                rows.push(NewRow {
                    device_id: None,
                    iccid: shown.clone(),
                    msisdn: None,
                    status: RowStatus::Error,
                    status_details: Some(reason.clone()),
                    scheduled: None,
                    request: None,
                });
                let errors = vec![device_error(&shown, reason)];
                results.push(DeviceResult { iccid: shown, valid: false, errors });
            }
        }
    }
    (rows, results)
}

async fn carrier_rate_plan_rows(
    store: &(impl Devices + ReferenceData + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    update: &CarrierRatePlanUpdate,
    iccids: &[String],
    check: Option<&DeviceCheck>,
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let field = "CarrierRatePlanUpdate.CarrierRatePlan";
    let plan = update.carrier_rate_plan.trim();
    if plan.is_empty() {
        return Err(ApiError::invalid(field, "CarrierRatePlan must not be empty"));
    }
    if update.effective_date.as_deref().is_some_and(|d| !d.trim().is_empty()) {
        return Err(ApiError::invalid(
            "CarrierRatePlanUpdate.EffectiveDate",
            "a future-dated carrier rate plan change is not supported yet; leave EffectiveDate out to change it now",
        ));
    }
    let plans = store.carrier_rate_plans(caller.tenant_id, sp.id).await?;
    if !plans.iter().any(|p| p.rate_plan_code == plan) {
        let known: Vec<&str> = plans.iter().map(|p| p.rate_plan_code.as_str()).collect();
        return Err(ApiError::invalid(
            field,
            format!(
                "carrier rate plan '{plan}' does not exist for service provider {}; known: {}",
                sp.id,
                known.join(", ")
            ),
        ));
    }
    if let Some(c) = update.communication_plan.as_deref() {
        if c.trim().is_empty() {
            return Err(ApiError::invalid(
                "CarrierRatePlanUpdate.CommunicationPlan",
                "CommunicationPlan must not be empty when given",
            ));
        }
    }
    let found = devices_of(store, caller, iccids).await?;
    Ok(rows_from(iccids, &found, |raw, device| checked(check, raw, device, validate_device(raw, device, sp.id))))
}

async fn username_rows(
    store: &(impl Devices + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    update: &UsernameUpdate,
    iccids: &[String],
    check: Option<&DeviceCheck>,
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = validate_label("Username.NewUsername", &update.new_username) {
        errors.push(FieldError::new("Username.NewUsername", e));
    }
    for (field, value) in [
        ("Username.CostCenter", &update.cost_center),
        ("Username.CostCenter2", &update.cost_center2),
        ("Username.CostCenter3", &update.cost_center3),
    ] {
        if let Some(Err(e)) = value.as_deref().map(|v| validate_label(field, v)) {
            errors.push(FieldError::new(field, e));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(RequestError { title: "Invalid bulk change request".into(), errors }));
    }
    let found = devices_of(store, caller, iccids).await?;
    Ok(rows_from(iccids, &found, |raw, device| checked(check, raw, device, validate_device(raw, device, sp.id))))
}

async fn archival_rows(
    store: &(impl Devices + RevServices + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    override_validation: bool,
    iccids: &[String],
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let found = devices_of(store, caller, iccids).await?;
    let mut with_rev_service = std::collections::HashSet::new();
    for device in found.values() {
        if store.active_rev_service(caller.tenant_id, device.id).await?.is_some() {
            with_rev_service.insert(device.id);
        }
    }
    let now = chrono::Utc::now();
    Ok(rows_from(iccids, &found, |raw, device| {
        let has_rev = device.is_some_and(|d| with_rev_service.contains(&d.id));
        validate_archival_device(raw, device, sp.id, has_rev, override_validation, now)
    }))
}

async fn customer_rate_plan_rows(
    store: &(impl Devices + ReferenceData + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    update: &CustomerRatePlanUpdate,
    iccids: &[String],
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let mut errors = Vec::new();
    let block = "CustomerRatePlanUpdate";
    if update.customer_rate_plan_id.is_none()
        && update.customer_rate_pool_id.is_none()
        && update.data_allocation_mb.is_none()
    {
        errors.push(FieldError::new(block, "give CustomerRatePlanId, CustomerRatePoolId or DataAllocationMB"));
    }
    if let Some(id) = update.customer_rate_plan_id {
        if store.customer_rate_plan(caller.tenant_id, id).await?.is_none() {
            errors.push(FieldError::new(
                format!("{block}.CustomerRatePlanId"),
                format!("customer rate plan {id} was not found"),
            ));
        }
    }
    if let Some(id) = update.customer_rate_pool_id {
        if store.customer_rate_pool(caller.tenant_id, id).await?.is_none() {
            errors.push(FieldError::new(
                format!("{block}.CustomerRatePoolId"),
                format!("customer rate pool {id} was not found"),
            ));
        }
    }
    if let Some(mb) = update.data_allocation_mb {
        if !mb.is_finite() || !(0.0..=10_000_000.0).contains(&mb) {
            errors.push(FieldError::new(
                format!("{block}.DataAllocationMB"),
                format!("DataAllocationMB {mb} must be between 0 and 10000000"),
            ));
        }
    }
    let effective = match update.effective_date.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => None,
        Some(raw) => match parse_effective_date(raw) {
            Ok(date) => Some(date),
            Err(e) => {
                errors.push(FieldError::new(format!("{block}.EffectiveDate"), e));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(RequestError { title: "Invalid bulk change request".into(), errors }));
    }
    let found = devices_of(store, caller, iccids).await?;
    let (mut rows, results) = rows_from(iccids, &found, |raw, device| validate_device(raw, device, sp.id));
    if let Some(date) = scheduled_for(effective, chrono::Utc::now()) {
        let change = CustomerPlanChange {
            customer_rate_plan_id: update.customer_rate_plan_id,
            customer_rate_pool_id: update.customer_rate_pool_id,
            data_allocation_mb: update.data_allocation_mb,
        };
        for row in rows.iter_mut().filter(|r| r.status == RowStatus::Pending) {
            row.status = RowStatus::Scheduled;
            row.status_details = Some(format!("Scheduled for {}", date.format("%Y-%m-%d %H:%M UTC")));
            row.scheduled = Some(ScheduledCustomerPlan { effective_date: date, change: change.clone() });
        }
    }
    Ok((rows, results))
}

async fn assignment_rows(
    store: &(impl Devices + ReferenceData + RevServices + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    rules: &dyn CarrierIntake,
    options: &RevServiceOptions,
    iccids: &[String],
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let field = "RevService.RevCustomerId";
    let customer = options.rev_customer_id.as_deref().map(str::trim).unwrap_or_default();
    if customer.is_empty() {
        return Err(ApiError::invalid(field, "RevCustomerId is required"));
    }
    // Exact match within the caller's tenant, never a substring (the legacy search matched substrings).
    if store.rev_customer(caller.tenant_id, customer).await?.is_none() {
        return Err(ApiError::invalid(field, format!("Rev customer '{customer}' was not found")));
    }
    if options.add_carrier_rate_plan == Some(true) {
        let field = "RevService.CarrierRatePlan";
        let plan = options.carrier_rate_plan.as_deref().map(str::trim).unwrap_or_default();
        if !rules.moves_plan_with_assignment() {
            return Err(ApiError::invalid(
                "RevService.AddCarrierRatePlan",
                format!("not supported for {} yet", sp.integration),
            ));
        }
        if plan.is_empty() {
            return Err(ApiError::invalid(field, "CarrierRatePlan is required with AddCarrierRatePlan"));
        }
        if !store.carrier_rate_plans(caller.tenant_id, sp.id).await?.iter().any(|p| p.rate_plan_code == plan) {
            return Err(ApiError::invalid(
                field,
                format!("carrier rate plan '{plan}' does not exist for service provider {}", sp.id),
            ));
        }
    }
    if options.add_customer_rate_plan == Some(true) {
        let Some(id) = options.customer_rate_plan_id else {
            return Err(ApiError::invalid(
                "RevService.CustomerRatePlanId",
                "CustomerRatePlanId is required with AddCustomerRatePlan",
            ));
        };
        if store.customer_rate_plan(caller.tenant_id, id).await?.is_none() {
            return Err(ApiError::invalid(
                "RevService.CustomerRatePlanId",
                format!("customer rate plan {id} was not found"),
            ));
        }
        if let Some(pool) = options.customer_rate_pool_id {
            if store.customer_rate_pool(caller.tenant_id, pool).await?.is_none() {
                return Err(ApiError::invalid(
                    "RevService.CustomerRatePoolId",
                    format!("customer rate pool {pool} was not found"),
                ));
            }
        }
    }
    if options.create_rev_service
        && store.service_provider_for(caller.tenant_id, domain::Integration::RevIo).await?.is_none()
    {
        return Err(ApiError::invalid("RevService.CreateRevService", "no Rev.io account is set up for this tenant"));
    }
    if let Some(date) = options.effective_date.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        parse_effective_date(date).map_err(|e| ApiError::invalid("RevService.EffectiveDate", e))?;
    }
    let found = devices_of(store, caller, iccids).await?;
    let mut billed_elsewhere = HashMap::new();
    for device in found.values() {
        if let Some(s) = store.active_rev_service(caller.tenant_id, device.id).await? {
            if s.rev_customer_id != customer {
                billed_elsewhere.insert(device.id, s);
            }
        }
    }
    Ok(rows_from(iccids, &found, |raw, device| match validate_device(raw, device, sp.id) {
        DeviceVerdict::Valid { device, iccid } => match billed_elsewhere.get(&device.id) {
            Some(s) => DeviceVerdict::Invalid {
                reason: format!(
                    "Device {iccid} is billed to Rev customer {} through active Rev.io service {}; disconnect it first",
                    s.rev_customer_id, s.rev_service_id
                ),
            },
            None => DeviceVerdict::Valid { device, iccid },
        },
        invalid => invalid,
    }))
}

async fn identifier_rows(
    store: &(impl Devices + ?Sized),
    caller: &Caller,
    sp: &ServiceProvider,
    change: &ChangeIdentifier,
    iccids: &[String],
    check: Option<&DeviceCheck>,
) -> Result<(Vec<NewRow>, Vec<DeviceResult>), ApiError> {
    let clean = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let (new_iccid, new_imei) = (clean(&change.new_iccid), clean(&change.new_imei));
    let mut errors = Vec::new();
    if new_iccid.is_none() && new_imei.is_none() {
        errors.push(FieldError::new("ChangeIdentifier", "give NewICCID, NewIMEI or both"));
    }
    if iccids.len() != 1 {
        errors.push(FieldError::new(
            "Devices",
            format!("ChangeICCIDorIMEI changes one device per request; {} were given", iccids.len()),
        ));
    }
    if let Some(raw) = &new_iccid {
        match domain::Iccid::parse(raw) {
            Err(e) => errors.push(FieldError::new("ChangeIdentifier.NewICCID", e.to_string())),
            Ok(new) => {
                if !store.devices_by_iccid(caller.tenant_id, &[new.to_string()]).await?.is_empty() {
                    errors.push(FieldError::new(
                        "ChangeIdentifier.NewICCID",
                        format!("ICCID {new} is already on another device"),
                    ));
                }
            }
        }
    }
    if let Some(raw) = &new_imei {
        match domain::Imei::parse(raw) {
            Err(e) => errors.push(FieldError::new("ChangeIdentifier.NewIMEI", e.to_string())),
            Ok(new) => {
                let filter = engine::ports::DeviceFilter { text: Some(new.to_string()), ..Default::default() };
                let holders = store.list_devices(caller.tenant_id, &filter, 0, 0, 50).await?;
                if holders
                    .iter()
                    .any(|d| d.device.imei.as_deref() == Some(new.as_str()) && iccids.first() != Some(&d.device.iccid))
                {
                    errors.push(FieldError::new(
                        "ChangeIdentifier.NewIMEI",
                        format!("IMEI {new} is already on another device"),
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(RequestError { title: "Invalid bulk change request".into(), errors }));
    }
    let found = devices_of(store, caller, iccids).await?;
    Ok(rows_from(iccids, &found, |raw, device| checked(check, raw, device, validate_device(raw, device, sp.id))))
}
