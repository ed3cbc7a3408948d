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
    assert_eq!(parse_effective_date("2026-12-01T00:00:00+01:00").unwrap().to_rfc3339(), "2026-11-30T23:00:00+00:00");
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
