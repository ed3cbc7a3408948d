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

mod imei;
mod telegence;

pub use imei::*;
pub use telegence::*;

#[cfg(test)]
mod tests;
