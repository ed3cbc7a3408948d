//! Pure rules: device-list clean-up, status targets, Control Center transitions, the deactivation rate plan,
//! and per-device validation of a status update. No I/O here; callers bring the records.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::Iccid;
use crate::model::Integration;

/// A row of `DeviceStatus`: one status an integration knows, by code and display name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceStatusDef {
    pub id: i64,
    pub integration_id: i64,
    /// The carrier's code, e.g. `ACTIVATED`.
    pub status: String,
    /// What the portal shows, e.g. `Active`.
    pub display_name: String,
}

/// A carrier rate plan of one service provider (`JasperCarrierRatePlan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CarrierRatePlan {
    pub id: i64,
    pub service_provider_id: i64,
    pub rate_plan_code: String,
    #[serde(rename = "PlanMB")]
    pub plan_mb: f64,
    pub base_rate: f64,
    /// The carrier's own id of the plan where it needs one: Pond's package type (`JasperRatePlanId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jasper_rate_plan_id: Option<i64>,
    /// Teal's plan (`PlanUuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_uuid: Option<String>,
}

/// What the rules read of a device (`Device`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceRecord {
    pub id: i64,
    pub tenant_id: i64,
    pub service_provider_id: i64,
    #[serde(rename = "ICCID")]
    pub iccid: String,
    #[serde(rename = "IMEI")]
    pub imei: Option<String>,
    #[serde(rename = "MSISDN")]
    pub msisdn: Option<String>,
    /// The eSIM's EID (Teal changes eSIMs by EID).
    #[serde(default, rename = "EID", skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    pub device_status_id: i64,
    pub carrier_rate_plan: Option<String>,
    pub communication_plan: Option<String>,
    pub username: Option<String>,
    pub last_usage_date: Option<DateTime<Utc>>,
    #[serde(rename = "DataUsageMB")]
    pub data_usage_mb: f64,
    pub rev_customer_id: Option<String>,
    #[serde(default)]
    pub customer_rate_plan_id: Option<i64>,
    #[serde(default)]
    pub customer_rate_pool_id: Option<i64>,
    #[serde(default, rename = "CustomerDataAllocationMB")]
    pub customer_data_allocation_mb: Option<f64>,
    pub is_active: bool,
    pub is_deleted: bool,
}

/// User-supplied text as it may be shown again (a row's ICCID and reason, an e-mail, a log line): control
/// characters escaped (`\n`, `\u{1b}`), and at most `max_chars` characters, the rest cut with `…`.
pub fn bounded_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest device entry shown back as it was sent (an ICCID has at most 20 digits).
pub const MAX_SHOWN_DEVICE_CHARS: usize = 40;

/// Trims every entry and collapses repeats, keeping the first occurrence's order.
/// Returns the unique list and the entries that were repeated (each once).
pub fn dedupe_devices(raw: &[String]) -> (Vec<String>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut repeated = Vec::new();
    let mut unique = Vec::with_capacity(raw.len());
    for entry in raw {
        let entry = entry.trim().to_string();
        if seen.insert(entry.clone()) {
            unique.push(entry);
        } else if !repeated.contains(&entry) {
            repeated.push(entry);
        }
    }
    (unique, repeated)
}

/// Finds the `DeviceStatus` of an integration named by the operator, by code or display name, ignoring case.
/// "Active" matches ACTIVATED's display name for the Jasper family.
pub fn resolve_target_status<'a>(
    defs: &'a [DeviceStatusDef],
    integration: Integration,
    target: &str,
) -> Option<&'a DeviceStatusDef> {
    let target = target.trim();
    defs.iter()
        .filter(|d| d.integration_id == integration.id())
        .find(|d| d.status.eq_ignore_ascii_case(target) || d.display_name.eq_ignore_ascii_case(target))
}

/// Control Center's rule: a SIM may move forward through INVENTORY → TEST_READY → ACTIVATION_READY, never back
/// to a pre-activation status once it left them, and PURGED is the end.
pub fn jasper_transition(from: &str, to: &str) -> Result<(), String> {
    fn pre_activation_rank(s: &str) -> Option<u8> {
        match s {
            "INVENTORY" => Some(0),
            "TEST_READY" => Some(1),
            "ACTIVATION_READY" => Some(2),
            _ => None,
        }
    }
    let (from, to) = (from.to_ascii_uppercase(), to.to_ascii_uppercase());
    if from == "PURGED" && from != to {
        return Err("a PURGED SIM cannot change status".to_string());
    }
    if matches!(to.as_str(), "TEST_READY" | "ACTIVATION_READY") {
        match (pre_activation_rank(&from), pre_activation_rank(&to)) {
            (Some(f), Some(t)) if f <= t => {}
            _ => {
                return Err(format!("a SIM may not move back to a pre-activation status ({from} to {to})"));
            }
        }
    }
    if to == "INVENTORY" && from != "INVENTORY" {
        return Err(format!("a SIM may not move back to INVENTORY (from {from})"));
    }
    Ok(())
}

/// The ThingSpace request a status change takes. Statuses are our `DeviceStatus` codes for ThingSpace: INVENTORY
/// (known here, not yet on ThingSpace), PREACTIVE, ACTIVE, SUSPEND, DEACTIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TsAction {
    /// `devices/actions/add` (state `preactive`), synchronous.
    Add,
    /// Add, then activate in the same row.
    AddThenActivate,
    Activate,
    Suspend,
    Restore,
    Deactivate,
}

impl TsAction {
    /// The path segment of `devices/actions/{action}`.
    pub fn path(self) -> &'static str {
        match self {
            TsAction::Add => "add",
            TsAction::AddThenActivate | TsAction::Activate => "activate",
            TsAction::Suspend => "suspend",
            TsAction::Restore => "restore",
            TsAction::Deactivate => "deactivate",
        }
    }

    pub fn activates(self) -> bool {
        matches!(self, TsAction::Activate | TsAction::AddThenActivate)
    }
}

/// ThingSpace's device-state table: ACTIVE → DEACTIVE | SUSPEND; SUSPEND → ACTIVE
/// (restore); DEACTIVE | PREACTIVE → ACTIVE (activate); plus our INVENTORY → PREACTIVE (add) and INVENTORY → ACTIVE
/// (add, then activate). `Ok(None)`: already there.
pub fn thingspace_transition(from: &str, to: &str) -> Result<Option<TsAction>, String> {
    let (from, to) = (from.to_ascii_uppercase(), to.to_ascii_uppercase());
    if from == to {
        return Ok(None);
    }
    let action = match (from.as_str(), to.as_str()) {
        ("INVENTORY", "PREACTIVE") => TsAction::Add,
        ("INVENTORY", "ACTIVE") => TsAction::AddThenActivate,
        ("PREACTIVE" | "DEACTIVE", "ACTIVE") => TsAction::Activate,
        ("SUSPEND", "ACTIVE") => TsAction::Restore,
        ("ACTIVE", "SUSPEND") => TsAction::Suspend,
        ("ACTIVE", "DEACTIVE") => TsAction::Deactivate,
        _ => return Err(format!("ThingSpace does not allow {from} to {to}")),
    };
    Ok(Some(action))
}

/// A ZIP code for `mdnZipCode`: five digits, optionally `-` and four more.
pub fn validate_zip(zip: &str) -> Result<(), String> {
    let z = zip.trim();
    let ok = match z.split_once('-') {
        None => z.len() == 5 && z.bytes().all(|b| b.is_ascii_digit()),
        Some((five, four)) => {
            five.len() == 5
                && four.len() == 4
                && five.bytes().all(|b| b.is_ascii_digit())
                && four.bytes().all(|b| b.is_ascii_digit())
        }
    };
    if ok { Ok(()) } else { Err(format!("MdnZipCode '{z}' is not a US ZIP code (12345 or 12345-6789)")) }
}

/// The plan a device moves to before deactivation: the cheapest plan whose MB covers its usage, else the largest.
pub fn deactivation_rate_plan(plans: &[CarrierRatePlan], usage_mb: f64) -> Option<&CarrierRatePlan> {
    let mut by_rate: Vec<&CarrierRatePlan> = plans.iter().collect();
    by_rate.sort_by(|a, b| a.base_rate.total_cmp(&b.base_rate).then(a.id.cmp(&b.id)));
    by_rate
        .iter()
        .find(|p| p.plan_mb >= usage_mb)
        .copied()
        .or_else(|| plans.iter().max_by(|a, b| a.plan_mb.total_cmp(&b.plan_mb).then(b.id.cmp(&a.id))))
}

/// The validation verdict for one device of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceVerdict {
    /// Will be processed by the worker.
    Valid { device: Box<DeviceRecord>, iccid: Iccid },
    /// Recorded as a row in ERROR with this reason; never sent to a carrier.
    Invalid { reason: String },
}

/// Why a device of a request cannot be changed, before any change-type rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProblem {
    BadIccid(String),
    NotFound(Iccid),
    Archived(Iccid),
    OtherProvider(Iccid),
}

impl std::fmt::Display for DeviceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceProblem::BadIccid(e) => write!(f, "Invalid ICCID: {e}"),
            DeviceProblem::NotFound(i) => write!(f, "device {i} was not found"),
            DeviceProblem::Archived(i) => write!(f, "device {i} is archived"),
            DeviceProblem::OtherProvider(i) => {
                write!(f, "device {i} belongs to another service provider")
            }
        }
    }
}

/// The checks every change type makes: a valid ICCID naming the tenant's device, live, at this provider.
/// `device` is the tenant's device with that ICCID, if any; another tenant's device is never passed in, so it
/// reads as not found.
pub fn check_device<'a>(
    raw: &str,
    device: Option<&'a DeviceRecord>,
    service_provider_id: i64,
) -> Result<(Iccid, &'a DeviceRecord), DeviceProblem> {
    let iccid = Iccid::parse(raw).map_err(|e| DeviceProblem::BadIccid(e.to_string()))?;
    let Some(device) = device else {
        return Err(DeviceProblem::NotFound(iccid));
    };
    if device.service_provider_id != service_provider_id {
        return Err(DeviceProblem::OtherProvider(iccid));
    }
    if device.is_deleted || !device.is_active {
        return Err(DeviceProblem::Archived(iccid));
    }
    Ok((iccid, device))
}

fn verdict(checked: Result<(Iccid, &DeviceRecord), DeviceProblem>) -> DeviceVerdict {
    match checked {
        Ok((iccid, device)) => DeviceVerdict::Valid { device: Box::new(device.clone()), iccid },
        Err(problem) => DeviceVerdict::Invalid { reason: problem.to_string() },
    }
}

/// The device checks alone (change types whose other rules concern the whole request).
pub fn validate_device(raw: &str, device: Option<&DeviceRecord>, service_provider_id: i64) -> DeviceVerdict {
    verdict(check_device(raw, device, service_provider_id))
}

/// Checks one device of a status update.
pub fn validate_status_update_device(
    raw: &str,
    device: Option<&DeviceRecord>,
    service_provider_id: i64,
    integration: Integration,
    current: Option<&DeviceStatusDef>,
    target: &DeviceStatusDef,
) -> DeviceVerdict {
    let checked = check_device(raw, device, service_provider_id);
    if let (Ok(_), true, Some(current)) = (&checked, integration.is_jasper_family(), current) {
        if let Err(why) = jasper_transition(&current.status, &target.status) {
            return DeviceVerdict::Invalid { reason: format!("Status change not allowed: {why}") };
        }
    }
    if let (Ok(_), Integration::ThingSpace) = (&checked, integration) {
        let from = current.map_or("INVENTORY", |c| c.status.as_str());
        if let Err(why) = thingspace_transition(from, &target.status) {
            return DeviceVerdict::Invalid { reason: format!("Status change not allowed: {why}") };
        }
    }
    verdict(checked)
}

/// The ThingSpace activation parameters of one device: a service plan the provider knows and a ZIP code.
/// Returns the reason a device cannot be activated.
pub fn validate_thingspace_activation(
    iccid: &str,
    plan: Option<&str>,
    zip: Option<&str>,
    known_plans: &[CarrierRatePlan],
) -> Result<(), String> {
    let Some(plan) = plan else {
        return Err(format!("ServicePlan is required to activate {iccid} on ThingSpace"));
    };
    if !known_plans.iter().any(|p| p.rate_plan_code == plan) {
        return Err(format!("ServicePlan '{plan}' of {iccid} does not exist for this service provider"));
    }
    let Some(zip) = zip else {
        return Err(format!("MdnZipCode is required to activate {iccid} on ThingSpace"));
    };
    validate_zip(zip).map_err(|e| format!("{e} (device {iccid})"))
}

/// Devices used since this instant may not be archived: UTC midnight of today, minus 30 days.
pub fn archival_usage_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    midnight - chrono::Duration::days(ARCHIVAL_RECENT_USAGE_DAYS)
}

pub const ARCHIVAL_RECENT_USAGE_DAYS: i64 = 30;

/// Checks one device of an archival. `OverrideValidation` bypasses only the active Rev.io service rule.
pub fn validate_archival_device(
    raw: &str,
    device: Option<&DeviceRecord>,
    service_provider_id: i64,
    has_active_rev_service: bool,
    override_validation: bool,
    now: DateTime<Utc>,
) -> DeviceVerdict {
    let (iccid, device) = match check_device(raw, device, service_provider_id) {
        Ok(ok) => ok,
        Err(DeviceProblem::Archived(iccid)) => {
            return DeviceVerdict::Invalid { reason: format!("Device {iccid} is already archived") };
        }
        Err(problem) => return DeviceVerdict::Invalid { reason: problem.to_string() },
    };
    let cutoff = archival_usage_cutoff(now);
    if let Some(used) = device.last_usage_date.filter(|used| *used >= cutoff) {
        // In days before now, not dates: the same device reads the same on any day.
        let days = (now - used).num_days().max(0);
        let ago = match days {
            0 => "today".to_string(),
            1 => "1 day ago".to_string(),
            n => format!("{n} days ago"),
        };
        return DeviceVerdict::Invalid {
            reason: format!(
                "Device {iccid} was used {ago}, within the last {ARCHIVAL_RECENT_USAGE_DAYS} days; it cannot be archived"
            ),
        };
    }
    if has_active_rev_service && !override_validation {
        return DeviceVerdict::Invalid {
            reason: format!("Device {iccid} has an active Rev.io service; set OverrideValidation to archive it anyway"),
        };
    }
    DeviceVerdict::Valid { device: Box::new(device.clone()), iccid }
}

/// Parses an `EffectiveDate`: RFC 3339, or a date (`2026-12-01`, `2026-12-01Z`) meaning its UTC midnight.
pub fn parse_effective_date(raw: &str) -> Result<DateTime<Utc>, String> {
    use chrono::Datelike;
    let s = raw.trim();
    let parsed = match DateTime::parse_from_rfc3339(s) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => chrono::NaiveDate::parse_from_str(s.trim_end_matches(['Z', 'z']), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc()),
    };
    let date =
        parsed.ok_or_else(|| format!("EffectiveDate '{s}' is not a date (use 2026-12-01 or 2026-12-01T00:00:00Z)"))?;
    // Dates are stored and compared as timestamps of years 1 to 9999 (SQL Server's DATETIME2 range).
    if !(1..=MAX_YEAR).contains(&date.year()) {
        return Err(format!("EffectiveDate '{s}' is outside the years 1 to {MAX_YEAR}"));
    }
    Ok(date)
}

/// The last year a date may have (SQL Server's `DATETIME2` and our fixed-width text timestamps end there).
pub const MAX_YEAR: i32 = 9999;

/// A change dated `effective` waits for its date when that date is still to come; otherwise it applies now.
pub fn scheduled_for(effective: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    effective.filter(|e| *e > now)
}

/// Longest username and cost center Control Center and Rev.io accept.
pub const MAX_LABEL_LEN: usize = 50;

/// A username or cost center: 1 to 50 characters, letters, digits, space and `_ - . @ / #`.
pub fn validate_label(field: &str, value: &str) -> Result<(), String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    let len = trimmed.chars().count();
    if len > MAX_LABEL_LEN {
        return Err(format!("{field} has {len} characters; at most {MAX_LABEL_LEN}"));
    }
    if let Some(bad) =
        trimmed.chars().find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '@' | '/' | '#')))
    {
        return Err(format!("{field} contains '{bad}'; use letters, digits, space and _ - . @ / #"));
    }
    Ok(())
}

#[cfg(test)]
mod thingspace_tests {
    use super::*;

    #[test]
    fn thingspace_state_table() {
        assert_eq!(thingspace_transition("ACTIVE", "suspend"), Ok(Some(TsAction::Suspend)));
        assert_eq!(thingspace_transition("SUSPEND", "ACTIVE"), Ok(Some(TsAction::Restore)));
        assert_eq!(thingspace_transition("DEACTIVE", "ACTIVE"), Ok(Some(TsAction::Activate)));
        assert_eq!(thingspace_transition("INVENTORY", "ACTIVE"), Ok(Some(TsAction::AddThenActivate)));
        assert_eq!(thingspace_transition("ACTIVE", "ACTIVE"), Ok(None));
        assert!(thingspace_transition("SUSPEND", "DEACTIVE").is_err());
        assert!(thingspace_transition("DEACTIVE", "SUSPEND").is_err());
        assert!(thingspace_transition("ACTIVE", "PREACTIVE").is_err());
    }

    #[test]
    fn activation_needs_a_known_plan_and_a_zip() {
        let plans = vec![CarrierRatePlan {
            id: 1,
            service_provider_id: 1,
            rate_plan_code: "m2m_4G".into(),
            plan_mb: 1.0,
            base_rate: 1.0,
            jasper_rate_plan_id: None,
            plan_uuid: None,
        }];
        assert!(validate_thingspace_activation("8901", Some("m2m_4G"), Some("98801"), &plans).is_ok());
        assert!(validate_thingspace_activation("8901", Some("m2m_4G"), Some("98801-1234"), &plans).is_ok());
        let no_zip = validate_thingspace_activation("8901", Some("m2m_4G"), None, &plans).unwrap_err();
        assert!(no_zip.contains("MdnZipCode is required") && no_zip.contains("8901"), "{no_zip}");
        assert!(
            validate_thingspace_activation("8901", None, Some("98801"), &plans).unwrap_err().contains("ServicePlan")
        );
        assert!(validate_thingspace_activation("8901", Some("x"), Some("98801"), &plans).unwrap_err().contains("'x'"));
        assert!(validate_thingspace_activation("8901", Some("m2m_4G"), Some("9880"), &plans).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<DeviceStatusDef> {
        let d = |id, integration_id, status: &str, display: &str| DeviceStatusDef {
            id,
            integration_id,
            status: status.into(),
            display_name: display.into(),
        };
        vec![
            d(1, 1, "ACTIVATED", "Active"),
            d(2, 1, "DEACTIVATED", "Deactivated"),
            d(3, 1, "ACTIVATION_READY", "Activation Ready"),
            d(4, 9, "ACTIVATED", "Active"),
            d(5, 4, "active", "Active"),
        ]
    }

    fn device() -> DeviceRecord {
        DeviceRecord {
            id: 7,
            tenant_id: 1,
            service_provider_id: 10,
            iccid: "89148000008245116615".into(),
            imei: None,
            msisdn: None,
            eid: None,
            device_status_id: 3,
            carrier_rate_plan: Some("RP-1GB".into()),
            communication_plan: Some("CP".into()),
            username: None,
            last_usage_date: None,
            data_usage_mb: 0.0,
            rev_customer_id: None,
            customer_rate_plan_id: None,
            customer_rate_pool_id: None,
            customer_data_allocation_mb: None,
            is_active: true,
            is_deleted: false,
        }
    }

    #[test]
    fn target_status_matches_code_or_display_name_within_the_integration() {
        let defs = defs();
        assert_eq!(resolve_target_status(&defs, Integration::Jasper, "active").map(|d| d.id), Some(1));
        assert_eq!(resolve_target_status(&defs, Integration::Jasper, "DEACTIVATED").map(|d| d.id), Some(2));
        assert_eq!(resolve_target_status(&defs, Integration::Pod19, "Active").map(|d| d.id), Some(4));
        assert_eq!(resolve_target_status(&defs, Integration::Rogers, "Active"), None);
        assert_eq!(resolve_target_status(&defs, Integration::Jasper, "Suspended"), None);
    }

    #[test]
    fn no_return_to_pre_activation() {
        assert!(jasper_transition("INVENTORY", "ACTIVATION_READY").is_ok());
        assert!(jasper_transition("TEST_READY", "ACTIVATION_READY").is_ok());
        assert!(jasper_transition("ACTIVATION_READY", "ACTIVATED").is_ok());
        assert!(jasper_transition("ACTIVATED", "DEACTIVATED").is_ok());
        assert!(jasper_transition("DEACTIVATED", "ACTIVATED").is_ok());
        assert_eq!(
            jasper_transition("ACTIVATED", "ACTIVATION_READY").unwrap_err(),
            "a SIM may not move back to a pre-activation status (ACTIVATED to ACTIVATION_READY)"
        );
        assert!(jasper_transition("ACTIVATION_READY", "TEST_READY").is_err());
        assert!(jasper_transition("DEACTIVATED", "INVENTORY").is_err());
        assert!(jasper_transition("PURGED", "ACTIVATED").is_err());
    }

    #[test]
    fn deactivation_plan_is_cheapest_covering_usage_else_largest() {
        let p = |id, mb, rate| CarrierRatePlan {
            id,
            service_provider_id: 10,
            rate_plan_code: format!("RP{id}"),
            plan_mb: mb,
            base_rate: rate,
            jasper_rate_plan_id: None,
            plan_uuid: None,
        };
        let plans = vec![p(1, 5000.0, 20.0), p(2, 100.0, 2.0), p(3, 1000.0, 8.0)];
        assert_eq!(deactivation_rate_plan(&plans, 50.0).map(|p| p.id), Some(2));
        assert_eq!(deactivation_rate_plan(&plans, 500.0).map(|p| p.id), Some(3));
        assert_eq!(deactivation_rate_plan(&plans, 9000.0).map(|p| p.id), Some(1));
        assert_eq!(deactivation_rate_plan(&[], 1.0), None);
    }

    #[test]
    fn duplicates_are_collapsed_and_reported_once() {
        let raw: Vec<String> = ["a", " b", "a", "b ", "a", "c"].iter().map(|s| s.to_string()).collect();
        let (unique, repeated) = dedupe_devices(&raw);
        assert_eq!(unique, vec!["a", "b", "c"]);
        assert_eq!(repeated, vec!["a", "b"]);
    }

    fn status_verdict(raw: &str, dev: Option<&DeviceRecord>, current: &str, target: &str) -> DeviceVerdict {
        let defs = defs();
        let current = defs.iter().find(|d| d.integration_id == 1 && d.status == current);
        let target = defs.iter().find(|d| d.integration_id == 1 && d.status == target).unwrap();
        validate_status_update_device(raw, dev, 10, Integration::Jasper, current, target)
    }

    fn reason(v: DeviceVerdict) -> String {
        match v {
            DeviceVerdict::Invalid { reason } => reason,
            DeviceVerdict::Valid { .. } => panic!("expected invalid"),
        }
    }

    #[test]
    fn every_status_update_validation_message() {
        let dev = device();
        assert_eq!(
            reason(status_verdict("8914800000824511661", Some(&dev), "ACTIVATION_READY", "ACTIVATED")),
            "Invalid ICCID: ICCID '8914800000824511661' has a wrong check digit (Luhn)"
        );
        assert_eq!(
            reason(status_verdict("89148000008245116615", None, "ACTIVATION_READY", "ACTIVATED")),
            "device 89148000008245116615 was not found"
        );
        let archived = DeviceRecord { is_deleted: true, ..dev.clone() };
        assert_eq!(
            reason(status_verdict("89148000008245116615", Some(&archived), "ACTIVATION_READY", "ACTIVATED")),
            "device 89148000008245116615 is archived"
        );
        let other_sp = DeviceRecord { service_provider_id: 11, ..dev.clone() };
        assert_eq!(
            reason(status_verdict("89148000008245116615", Some(&other_sp), "ACTIVATION_READY", "ACTIVATED")),
            "device 89148000008245116615 belongs to another service provider"
        );
        assert_eq!(
            reason(status_verdict("89148000008245116615", Some(&dev), "ACTIVATED", "ACTIVATION_READY")),
            "Status change not allowed: a SIM may not move back to a pre-activation status (ACTIVATED to ACTIVATION_READY)"
        );
        assert!(matches!(
            status_verdict("89148000008245116615", Some(&dev), "ACTIVATION_READY", "ACTIVATED"),
            DeviceVerdict::Valid { .. }
        ));
    }

    #[test]
    fn archival_cutoff_is_utc_midnight_minus_30_days() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T15:45:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(archival_usage_cutoff(now).to_rfc3339(), "2026-10-24T00:00:00+00:00");
    }

    #[test]
    fn every_archival_validation_message() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T15:45:00Z").unwrap().with_timezone(&Utc);
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let idle = DeviceRecord { last_usage_date: at("2026-10-23T23:59:59Z"), ..device() };
        let iccid = "89148000008245116615";
        let check = |d: &DeviceRecord, rev: bool, ov: bool| validate_archival_device(iccid, Some(d), 10, rev, ov, now);
        assert!(matches!(check(&idle, false, false), DeviceVerdict::Valid { .. }));
        let used = DeviceRecord { last_usage_date: at("2026-10-24T00:00:00Z"), ..device() };
        assert_eq!(
            reason(check(&used, false, true)),
            "Device 89148000008245116615 was used 30 days ago, within the last 30 days; it cannot be archived"
        );
        assert_eq!(
            reason(check(&idle, true, false)),
            "Device 89148000008245116615 has an active Rev.io service; set OverrideValidation to archive it anyway"
        );
        assert!(matches!(check(&idle, true, true), DeviceVerdict::Valid { .. }), "override bypasses the Rev.io rule");
        let archived = DeviceRecord { is_deleted: true, ..idle.clone() };
        assert_eq!(reason(check(&archived, false, false)), "Device 89148000008245116615 is already archived");
    }

    #[test]
    fn labels_are_checked_for_length_and_characters() {
        assert!(validate_label("Username.NewUsername", "DEVICE_001").is_ok());
        assert!(validate_label("Username.NewUsername", "truck 42 @ depot/7").is_ok());
        assert_eq!(validate_label("Username.NewUsername", "  ").unwrap_err(), "Username.NewUsername must not be empty");
        assert_eq!(
            validate_label("Username.CostCenter", &"x".repeat(51)).unwrap_err(),
            "Username.CostCenter has 51 characters; at most 50"
        );
        assert_eq!(
            validate_label("Username.NewUsername", "a;DROP").unwrap_err(),
            "Username.NewUsername contains ';'; use letters, digits, space and _ - . @ / #"
        );
    }

    #[test]
    fn bounded_text_escapes_control_characters_and_cuts_long_text() {
        assert_eq!(bounded_text("8901\r\nBcc: x", 40), "8901\\r\\nBcc: x");
        assert_eq!(bounded_text("\u{1b}[31mred", 40), "\\u{1b}[31mred");
        assert_eq!(bounded_text(&"9".repeat(10_000), 5), "99999…");
        assert_eq!(bounded_text("<b>html</b>", 40), "<b>html</b>");
    }

    #[test]
    fn effective_dates_parse_and_schedule_only_when_future() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T15:45:00Z").unwrap().with_timezone(&Utc);
        let day = parse_effective_date("2026-12-01").unwrap();
        assert_eq!(day.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(parse_effective_date("2026-12-01Z").unwrap(), day);
        assert_eq!(
            parse_effective_date("2026-12-01T00:00:00+01:00").unwrap().to_rfc3339(),
            "2026-11-30T23:00:00+00:00"
        );
        assert!(parse_effective_date("01/12/2026").unwrap_err().contains("is not a date"));
        for far in ["+10000-01-01", "+99999-12-31"] {
            assert!(parse_effective_date(far).unwrap_err().contains("outside the years 1 to 9999"), "{far}");
        }
        assert!(parse_effective_date("+10000-01-01T00:00:00Z").is_err());
        assert!(parse_effective_date("9999-12-31").is_ok());
        assert_eq!(scheduled_for(Some(day), now), Some(day));
        assert_eq!(scheduled_for(parse_effective_date("2026-11-01").ok(), now), None, "a past date applies now");
        assert_eq!(scheduled_for(None, now), None);
    }
}

/// What a Telegence status update does to one SIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelegenceMove {
    /// The SIM has no line: a new service is activated (asynchronous, by request id).
    Activate,
    /// `PATCH` `mode` with this code: `A` restores a suspended line ([guess]: the reference does not say which
    /// mode a restore uses), `S` suspends, `C` cancels.
    Patch(&'static str),
    /// Our database says the line is there already; the line is read to confirm before nothing is sent.
    Already,
}

/// The move from a line's `current` status (`A`, `S`, `C`, or `UNKNOWN` for a SIM without a line) to `target`;
/// `has_line` when the device has a subscriber number. Why not, otherwise.
pub fn telegence_status_move(has_line: bool, current: &str, target: &str) -> Result<TelegenceMove, String> {
    let (current, target) = (current.to_ascii_uppercase(), target.to_ascii_uppercase());
    match (target.as_str(), has_line, current.as_str()) {
        ("UNKNOWN", _, _) => Err("'No line' is not a status a line can be moved to; use A, S or C".into()),
        ("A", false, _) => Ok(TelegenceMove::Activate),
        (_, false, _) => Err(format!("the SIM has no Telegence line (no MSISDN) to move to {target}")),
        (_, true, "C") if target != "C" => {
            Err("the line is cancelled; a cancelled line cannot change status (activate a new service)".into())
        }
        (t, true, c) if t == c => Ok(TelegenceMove::Already),
        ("A", true, _) => Ok(TelegenceMove::Patch("A")),
        ("S", true, "A") => Ok(TelegenceMove::Patch("S")),
        ("S", true, _) => Err(format!("only an active line can be suspended (the line is {current})")),
        ("C", true, _) => Ok(TelegenceMove::Patch("C")),
        _ => Err(format!("unknown Telegence status '{target}'; use A, S or C")),
    }
}

/// What activating a new Telegence line needs: a billing account (9 to 12 digits), a rate plan and a 5-digit ZIP.
/// Returns the reason, naming the field, when something is missing.
pub fn validate_telegence_activation(
    ban: Option<&str>,
    plan: Option<&str>,
    zip: Option<&str>,
) -> Result<(), (&'static str, String)> {
    let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let ban = given(ban).ok_or(("BillingAccountNumber", "BillingAccountNumber is required to open a line".into()))?;
    if !(9..=12).contains(&ban.len()) || !ban.bytes().all(|b| b.is_ascii_digit()) {
        return Err(("BillingAccountNumber", format!("BillingAccountNumber '{ban}' must be 9 to 12 digits")));
    }
    given(plan).ok_or(("RatePlan", "RatePlan (the SOC) is required to open a line".into()))?;
    let zip = given(zip).ok_or(("ServiceZipCode", "ServiceZipCode is required to open a line".into()))?;
    validate_zip(&zip).map_err(|e| ("ServiceZipCode", e.to_string()))
}

#[cfg(test)]
mod telegence_tests {
    use super::*;

    #[test]
    fn status_moves_follow_the_line() {
        use TelegenceMove::*;
        assert_eq!(telegence_status_move(false, "UNKNOWN", "A"), Ok(Activate));
        assert_eq!(telegence_status_move(true, "S", "a"), Ok(Patch("A")));
        assert_eq!(telegence_status_move(true, "A", "S"), Ok(Patch("S")));
        assert_eq!(telegence_status_move(true, "S", "C"), Ok(Patch("C")));
        assert_eq!(telegence_status_move(true, "A", "A"), Ok(Already));
        assert!(telegence_status_move(true, "C", "A").unwrap_err().contains("cancelled"));
        assert!(telegence_status_move(false, "UNKNOWN", "S").unwrap_err().contains("no Telegence line"));
        assert!(telegence_status_move(true, "A", "UNKNOWN").is_err());
        assert!(telegence_status_move(true, "UNKNOWN", "S").unwrap_err().contains("only an active line"));
    }

    #[test]
    fn a_new_line_needs_its_billing_account_plan_and_zip() {
        assert_eq!(validate_telegence_activation(Some("287301234567"), Some("SOC"), Some("75201")), Ok(()));
        assert_eq!(
            validate_telegence_activation(None, Some("SOC"), Some("75201")).unwrap_err().0,
            "BillingAccountNumber"
        );
        assert_eq!(
            validate_telegence_activation(Some("12ab"), Some("SOC"), Some("75201")).unwrap_err().0,
            "BillingAccountNumber"
        );
        assert_eq!(
            validate_telegence_activation(Some("287301234567"), Some(" "), Some("75201")).unwrap_err().0,
            "RatePlan"
        );
        assert_eq!(
            validate_telegence_activation(Some("287301234567"), Some("SOC"), Some("7520")).unwrap_err().0,
            "ServiceZipCode"
        );
    }
}

/// A range of IMEIs of one device model (`IMEI_DeviceType_CarrierRatePlan`): which SIM the model takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImeiRange {
    pub manufacturer: String,
    pub model: String,
    #[serde(rename = "FromIMEI")]
    pub from_imei: String,
    #[serde(rename = "ToIMEI")]
    pub to_imei: String,
    /// e.g. `pSIM`, `eSIM`, `pSIM+eSIM`.
    #[serde(rename = "SIMType")]
    pub sim_type: String,
}

impl ImeiRange {
    /// Whether the model only takes an eSIM profile: its SIM type names eSIM (the legacy's "contains esim").
    pub fn is_esim(&self) -> bool {
        self.sim_type.to_ascii_lowercase().contains("esim")
    }

    /// Whether `imei` is in the range. Bounds are digit strings of one length (a whole IMEI, or a TAC prefix of
    /// 8 digits): the IMEI's first digits of that length are compared, so 14-, 15- and 16-digit (IMEISV) forms of
    /// one device all fall in the same ranges. A range with malformed bounds holds nothing.
    pub fn contains(&self, imei: &str) -> bool {
        let (from, to, imei) = (self.from_imei.trim(), self.to_imei.trim(), imei.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if from.len() != to.len() || !digits(from) || !digits(to) || !digits(imei) {
            return false;
        }
        let n = from.len().min(imei.len());
        let key = &imei[..n];
        &from[..n] <= key && key <= &to[..n]
    }
}

/// The eSIM rule of a Telegence swap: a device whose current IMEI is in an eSIM-only range cannot be moved to a
/// new IMEI outside every eSIM range (its line would lose its profile). The reason, naming both IMEIs and the
/// model, when refused. Without a new IMEI the device keeps its own and nothing is checked.
pub fn esim_swap_refusal(old_imei: Option<&str>, new_imei: Option<&str>, ranges: &[ImeiRange]) -> Option<String> {
    let (old, new) = (old_imei?.trim(), new_imei?.trim());
    let esim_of = |imei: &str| ranges.iter().find(|r| r.is_esim() && r.contains(imei));
    let model = esim_of(old)?;
    if esim_of(new).is_some() {
        return None;
    }
    Some(format!(
        "ICCID/IMEI swap refused: the device requires an eSIM-compatible IMEI (IMEI {old} is a {} {} with {}); \
         NewIMEI {new} is in no eSIM range",
        model.manufacturer, model.model, model.sim_type
    ))
}

#[cfg(test)]
mod esim_tests {
    use super::*;

    fn range(from: &str, to: &str, sim: &str) -> ImeiRange {
        ImeiRange {
            manufacturer: "Acme".into(),
            model: "Tracker 5".into(),
            from_imei: from.into(),
            to_imei: to.into(),
            sim_type: sim.into(),
        }
    }

    #[test]
    fn ranges_compare_whole_imeis_and_tac_prefixes() {
        let whole = range("356938035643800", "356938035643899", "eSIM");
        assert!(whole.contains("356938035643809"));
        assert!(whole.contains("35693803564380"), "14 digits without the check digit");
        assert!(!whole.contains("356938035643900"));
        let tac = range("35693803", "35693804", "eSIM");
        assert!(tac.contains("356938045643809"));
        assert!(tac.contains("3569380356438012"), "an IMEISV of the same device");
        assert!(!tac.contains("356938055643809"));
        assert!(!range("3569", "35693804", "eSIM").contains("356938035643809"), "bounds of two lengths");
        assert!(!range("35693803", "35693804", "eSIM").contains("35693803A643809"));
    }

    #[test]
    fn an_esim_device_keeps_an_esim_imei() {
        let ranges = vec![range("35693803", "35693803", "pSIM+eSIM"), range("49015420", "49015420", "pSIM")];
        let refusal = esim_swap_refusal(Some("356938035643809"), Some("490154203237518"), &ranges).expect("refused");
        assert!(refusal.contains("356938035643809") && refusal.contains("490154203237518") && refusal.contains("Acme"));
        assert_eq!(esim_swap_refusal(Some("356938035643809"), Some("356938039999999"), &ranges), None);
        assert_eq!(esim_swap_refusal(Some("490154203237518"), Some("356938035643809"), &ranges), None, "to eSIM");
        assert_eq!(esim_swap_refusal(Some("356938035643809"), None, &ranges), None, "ICCID only");
        assert_eq!(esim_swap_refusal(None, Some("490154203237518"), &ranges), None, "no IMEI known");
        assert_eq!(esim_swap_refusal(Some("356938035643809"), Some("490154203237518"), &[]), None, "no ranges");
    }
}
