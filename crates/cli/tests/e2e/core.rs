//! End-to-end: the local stack started exactly as `bulkchange serve` starts it, on a random port with its own
//! SQLite file and simulators, driven through HTTP; outcomes read through the API, the database and the
//! simulators' call records.

use domain::Integration;
use std::time::Duration;

use crate::support::{TestApp, account, row};
use cli::StackConfig;
use cli::bench::bench_iccid;
use domain::ids::luhn_check_digit;
use engine::WorkerConfig;
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedRevCustomer, SeedRevService, SeedServiceProvider, SeedTenant};

const POD19: i64 = 10;
const READ_ONLY: i64 = 11;
const REV: i64 = 12;
const ROGERS: i64 = 13;
const OTHER_TENANT_SP: i64 = 20;

/// ICCIDs by role in the test seed.
fn ready(i: usize) -> String {
    bench_iccid(i)
}
fn active(i: usize) -> String {
    bench_iccid(500 + i)
}
fn rogers_active() -> String {
    bench_iccid(700)
}
fn read_only(i: usize) -> String {
    bench_iccid(800 + i)
}
fn other_tenant() -> String {
    bench_iccid(900)
}

fn sp(id: i64, tenant_id: i64, integration: Integration, write_is_enabled: bool) -> SeedServiceProvider {
    SeedServiceProvider { write_is_enabled, ..account(id, tenant_id, integration) }
}

fn device(tenant_id: i64, service_provider_id: i64, iccid: String, status: &str, usage: f64) -> SeedDevice {
    SeedDevice {
        carrier_rate_plan: Some("RP-1GB".into()),
        communication_plan: Some("CP-Data".into()),
        data_usage_mb: usage,
        ..SeedDevice::new(tenant_id, service_provider_id, iccid, status)
    }
}

fn archive_idle(i: usize) -> String {
    bench_iccid(600 + i)
}
fn archive_recent() -> String {
    bench_iccid(610)
}
fn archive_with_rev_service() -> String {
    bench_iccid(611)
}
fn with_rev_service() -> String {
    bench_iccid(612)
}

/// An IMEI already on a device of the seed.
const TAKEN_IMEI: &str = "490154203237518";

fn test_seed() -> Seed {
    let mut devices: Vec<SeedDevice> = (0..40).map(|i| device(1, POD19, ready(i), "ACTIVATION_READY", 0.0)).collect();
    devices.extend(
        [50.0, 700.0, 9000.0, 20.0]
            .iter()
            .enumerate()
            .map(|(i, usage)| device(1, POD19, active(i), "ACTIVATED", *usage)),
    );
    devices.push(device(1, ROGERS, rogers_active(), "ACTIVATED", 10.0));
    devices.extend((0..2).map(|i| device(1, READ_ONLY, read_only(i), "ACTIVATION_READY", 0.0)));
    devices.push(device(2, OTHER_TENANT_SP, other_tenant(), "ACTIVATION_READY", 0.0));
    let long_ago =
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").ok().map(|t| t.with_timezone(&chrono::Utc));
    let yesterday = Some(chrono::Utc::now() - chrono::Duration::days(1));
    for (iccid, used) in [
        (archive_idle(0), long_ago),
        (archive_idle(1), long_ago),
        (archive_recent(), yesterday),
        (archive_with_rev_service(), long_ago),
        (with_rev_service(), yesterday),
    ] {
        let imei = (iccid == with_rev_service()).then(|| TAKEN_IMEI.to_string());
        devices.push(SeedDevice { last_usage_date: used, imei, ..device(1, POD19, iccid, "ACTIVATED", 1.0) });
    }
    let plan = |id, sp, code: &str, mb, rate| SeedRatePlan::new(id, sp, code, mb, rate);
    let rev_service =
        |iccid: String, id| SeedRevService { tenant_id: 1, iccid, rev_service_id: id, rev_customer_id: "1001".into() };
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }, SeedTenant { id: 2, name: "Globex".into() }],
        service_providers: vec![
            sp(POD19, 1, Integration::Pod19, true),
            sp(READ_ONLY, 1, Integration::Jasper, false),
            sp(REV, 1, Integration::RevIo, true),
            sp(ROGERS, 1, Integration::Rogers, true),
            sp(OTHER_TENANT_SP, 2, Integration::TMobileJasper, true),
        ],
        device_statuses: vec![],
        carrier_rate_plans: vec![
            plan(1, POD19, "RP-100MB", 100.0, 2.0),
            plan(2, POD19, "RP-1GB", 1024.0, 5.0),
            plan(3, POD19, "RP-5GB", 5120.0, 12.0),
            plan(10, READ_ONLY, "RO-5GB", 5120.0, 12.0),
        ],
        rev_customers: vec![
            SeedRevCustomer { tenant_id: 1, rev_customer_id: "1001".into(), name: "Acme Fleet".into() },
            SeedRevCustomer { tenant_id: 1, rev_customer_id: "1002".into(), name: "Acme Rentals".into() },
            SeedRevCustomer { tenant_id: 2, rev_customer_id: "2001".into(), name: "Globex Field Ops".into() },
        ],
        devices,
        rev_services: vec![rev_service(archive_with_rev_service(), 11_500), rev_service(with_rev_service(), 11_501)],
        telegence_billing_accounts: vec![],
        imei_ranges: vec![],
        customer_rate_plans: vec![store::seed::SeedCustomerPlan { id: 5, tenant_id: 1, name: "Fleet 5 GB".into() }],
        customer_rate_pools: vec![store::seed::SeedCustomerPlan { id: 9, tenant_id: 1, name: "Shared pool".into() }],
    }
}

async fn spawn_with(customize: impl FnOnce(&mut StackConfig)) -> TestApp {
    TestApp::start(test_seed(), customize).await
}

async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

impl TestApp {
    fn token_for(&self, tenant: i64) -> String {
        crate::support::token_for(tenant, "mallory")
    }

    async fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.stack.base_url()))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = response.json().await.unwrap_or(Value::Null);
        (status, content_type, body)
    }

    fn cc(&self, sp: i64) -> &simulators::ControlCenterSim {
        &self.stack.simulators.control_center[&sp]
    }

    fn carrier_calls_for(&self, sp: i64, iccid: &str) -> usize {
        self.cc(sp).state.calls().iter().filter(|c| c.path.contains(iccid)).count()
    }

    async fn bulk_change_count(&self) -> i64 {
        let (_, list) = self.get("/M2M/BulkChanges", &self.token).await;
        list["Total"].as_i64().expect("total")
    }
}

fn status_update(sp: i64, devices: &[String], target: &str) -> Value {
    json!({"ServiceProviderId": sp, "ChangeType": 3, "PortalType": 0, "Devices": devices, "StatusUpdate": {"TargetStatus": target}})
}

#[tokio::test]
async fn activation_changes_the_carrier_and_the_database_and_logs_the_call() {
    let app = spawn().await;
    let devices = vec![ready(0), ready(1)];
    let id = app.accepted(&status_update(POD19, &devices, "Active")).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Status"], "PROCESSED");
    assert_eq!(status["Counts"]["PROCESSED"], 2);
    for iccid in &devices {
        assert_eq!(row(&status, iccid)["Status"], "PROCESSED");
        assert_eq!(app.cc(POD19).state.device(iccid).expect("sim device").status, "ACTIVATED");
        assert_eq!(app.cc(POD19).applied_status_changes(iccid), 1);
        let stored = app.stack.store.device_by_iccid(1, iccid).await.expect("read").expect("device");
        assert_eq!(stored.device_status_id, 901, "POD19 ACTIVATED");
    }
    let logs = engine::ports::Reads::logs(&*app.stack.store, 1, id).await.expect("logs");
    let status_logs: Vec<_> = logs.iter().filter(|l| l.description == "Update Jasper Status: Jasper API").collect();
    assert_eq!(status_logs.len(), 2);
    assert!(status_logs[0].request_text.contains("{\"status\":\"ACTIVATED\"}"));
    assert!(logs.iter().all(|l| !l.request_text.contains("secret-key-10")), "no credential in the audit log");
}

#[tokio::test]
async fn deactivation_moves_rate_plan_before_status() {
    let app = spawn().await;
    let devices = vec![active(0), active(1), active(2)];
    let id = app.accepted(&status_update(POD19, &devices, "deactivated")).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"]["PROCESSED"], 3, "{status}");
    // Cheapest plan covering usage (50 MB → RP-100MB, 700 MB → RP-1GB), else the largest (9000 MB → RP-5GB).
    for (iccid, plan) in devices.iter().zip(["RP-100MB", "RP-1GB", "RP-5GB"]) {
        let sim = app.cc(POD19).state.device(iccid).expect("sim device");
        assert_eq!((sim.status.as_str(), sim.rate_plan.as_deref()), ("DEACTIVATED", Some(plan)));
        let puts: Vec<Value> = app
            .cc(POD19)
            .state
            .calls()
            .into_iter()
            .filter(|c| c.method == "PUT" && c.path.ends_with(iccid.as_str()))
            .map(|c| c.body)
            .collect();
        assert_eq!(
            puts,
            vec![json!({"ratePlan": plan}), json!({"status": "DEACTIVATED"})],
            "rate plan first, then status"
        );
        let stored = app.stack.store.device_by_iccid(1, iccid).await.expect("read").expect("device");
        assert_eq!(stored.carrier_rate_plan.as_deref(), Some(plan));
    }
}

#[tokio::test]
async fn failed_rate_plan_move_fails_the_row_without_deactivating() {
    let app = spawn().await;
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.remove("RP-100MB");
    let id = app.accepted(&status_update(POD19, &[active(0)], "Deactivated")).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &active(0));
    assert_eq!(r["Status"], "API_FAILED");
    assert_eq!(
        r["StatusDetails"],
        "Error Updating Rate Plan for Deactivation: HTTP 400, error 10000016: Invalid rate plan: RP-100MB."
    );
    assert_eq!(status["Status"], "ERROR");
    assert_eq!(app.cc(POD19).state.device(&active(0)).expect("sim").status, "ACTIVATED", "never deactivated");
    assert_eq!(app.cc(POD19).applied_status_changes(&active(0)), 0);
}

#[tokio::test]
async fn deactivation_without_any_rate_plan_fails_before_any_carrier_call() {
    let app = spawn().await;
    let id = app.accepted(&status_update(ROGERS, &[rogers_active()], "Deactivated")).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &rogers_active());
    assert_eq!(r["Status"], "ERROR");
    assert!(r["StatusDetails"].as_str().expect("details").starts_with("Error Updating Rate Plan for Deactivation"));
    assert!(app.cc(ROGERS).state.calls().is_empty());
}

#[tokio::test]
async fn writes_disabled_fails_every_row_with_the_reason_and_calls_nobody() {
    let app = spawn().await;
    let devices = vec![read_only(0), read_only(1)];
    let id = app.accepted(&status_update(READ_ONLY, &devices, "Active")).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Status"], "ERROR");
    for iccid in &devices {
        assert_eq!(row(&status, iccid)["StatusDetails"], "Writes disabled for this service provider.");
    }
    assert!(app.cc(READ_ONLY).state.calls().is_empty());
}

fn puts_for(app: &TestApp, sp: i64, iccid: &str) -> usize {
    app.cc(sp).state.calls().iter().filter(|c| c.method == "PUT" && c.path.contains(iccid)).count()
}

#[tokio::test]
async fn device_already_in_target_status_on_the_carrier_is_not_sent_again() {
    let app = spawn().await;
    let id = app.accepted(&status_update(POD19, &[active(3)], "ACTIVATED")).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &active(3))["Status"], "PROCESSED");
    assert_eq!(
        row(&status, &active(3))["StatusDetails"],
        "Device already in status ACTIVATED on the carrier; no change sent"
    );
    assert_eq!(puts_for(&app, POD19, &active(3)), 0, "no change sent");
    assert_eq!(app.carrier_calls_for(POD19, &active(3)), 1, "one read: the carrier's word, not our database's");
}

#[tokio::test]
async fn a_device_whose_database_status_is_stale_is_still_changed_on_the_carrier() {
    // GIVEN our database says ACTIVATED, but the carrier has the device deactivated (changed outside us)
    let app = spawn().await;
    app.cc(POD19).state.account.lock().expect("lock").devices.get_mut(&active(3)).expect("sim device").status =
        "DEACTIVATED".into();
    // WHEN the operator activates it
    let status = app.wait_final(app.accepted(&status_update(POD19, &[active(3)], "Active")).await).await;
    // THEN the carrier gets the change, and the row says so
    assert_eq!(row(&status, &active(3))["StatusDetails"], "Status changed to ACTIVATED", "{status}");
    assert_eq!(app.cc(POD19).state.device(&active(3)).expect("sim").status, "ACTIVATED");
    assert_eq!(puts_for(&app, POD19, &active(3)), 1);
    // The same holds for a carrier rate plan our database thinks the device is on.
    app.cc(POD19).state.account.lock().expect("lock").devices.get_mut(&active(3)).expect("sim").rate_plan =
        Some("RP-100MB".into());
    let status = app.wait_final(app.accepted(&carrier_rate_plan(POD19, &[active(3)], "RP-1GB", None)).await).await;
    assert_eq!(row(&status, &active(3))["StatusDetails"], "Carrier rate plan changed to RP-1GB", "{status}");
    assert_eq!(app.cc(POD19).state.device(&active(3)).expect("sim").rate_plan.as_deref(), Some("RP-1GB"));
}

#[tokio::test]
async fn a_status_change_applied_then_answered_502_is_confirmed_by_a_read_not_sent_twice() {
    let app = spawn().await;
    app.cc(POD19).state.harness.set_faults(simulators::Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let status = app.wait_final(app.accepted(&status_update(POD19, &[ready(15)], "Active")).await).await;
    assert_eq!(row(&status, &ready(15))["Status"], "PROCESSED", "{status}");
    assert_eq!(puts_for(&app, POD19, &ready(15)), 1, "the 502 was resolved by a GET, not a second PUT");
    assert_eq!(app.cc(POD19).state.device(&ready(15)).expect("sim").status, "ACTIVATED");
}

#[tokio::test]
async fn invalid_and_valid_devices_mixed_are_accepted_and_only_valid_ones_processed() {
    let app = spawn().await;
    let bad_luhn = {
        let good = ready(2);
        let last = good.chars().last().and_then(|c| c.to_digit(10)).expect("digit");
        format!("{}{}", &good[..good.len() - 1], (last + 1) % 10)
    };
    let devices = vec![ready(2), bad_luhn.clone(), "12345".to_string(), ready(3), ready(2)];
    let (code, answer) = app.submit(&status_update(POD19, &devices, "Active")).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["Counts"], json!({"Valid": 2, "Invalid": 2, "Duplicates": 1}));
    assert_eq!(answer["Duplicates"], json!([ready(2)]));
    let id = answer["BulkChangeId"].as_i64().expect("id");
    let status = app.wait_final(id).await;
    assert_eq!(status["Status"], "PROCESSED");
    assert_eq!(status["Counts"], json!({"ERROR": 2, "PROCESSED": 2}));
    assert!(row(&status, &bad_luhn)["StatusDetails"].as_str().expect("details").contains("wrong check digit"));
    assert_eq!(
        row(&status, "12345")["StatusDetails"],
        "Invalid ICCID: ICCID '12345' must have 19 or 20 digits, it has 5"
    );
    assert_eq!(app.carrier_calls_for(POD19, &bad_luhn), 0);
    let (_, errors_only) = app.get(&format!("/M2M/BulkChangeStatus/{id}?status=ERROR"), &app.token).await;
    assert_eq!(errors_only["Rows"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn another_tenants_device_is_rejected_and_never_sent_to_the_carrier() {
    let app = spawn().await;
    let id = app.accepted(&status_update(POD19, &[other_tenant(), ready(4)], "Active")).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &other_tenant())["Status"], "ERROR");
    assert_eq!(row(&status, &other_tenant())["StatusDetails"], format!("device {} was not found", other_tenant()));
    assert_eq!(app.carrier_calls_for(OTHER_TENANT_SP, &other_tenant()), 0);
    assert_eq!(app.carrier_calls_for(POD19, &other_tenant()), 0);
    assert_eq!(app.cc(OTHER_TENANT_SP).state.device(&other_tenant()).expect("sim").status, "ACTIVATION_READY");
}

#[tokio::test]
async fn another_tenants_bulk_change_and_service_provider_are_invisible() {
    let app = spawn().await;
    let id = app.accepted(&status_update(POD19, &[ready(5)], "Active")).await;
    let other = app.token_for(2);
    let (code, problem) = app.get(&format!("/M2M/BulkChangeStatus/{id}"), &other).await;
    assert_eq!(code, 404, "{problem}");
    assert_eq!(problem["status"], 404);
    let (_, list) = app.get("/M2M/BulkChanges", &other).await;
    assert_eq!(list["Total"], 0);
    let (code, _, problem) =
        app.post_raw("/M2M/BulkChange", &status_update(POD19, &[ready(6)], "Active").to_string(), Some(&other)).await;
    assert_eq!(code, 400);
    assert_eq!(problem["errors"][0]["field"], "ServiceProviderId");
    assert_eq!(app.carrier_calls_for(POD19, &ready(6)), 0);
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let app = spawn().await;
    let body = status_update(POD19, &[ready(7)], "Active").to_string();
    let (code, content_type, problem) = app.post_raw("/M2M/BulkChange", &body, None).await;
    assert_eq!((code, content_type.as_deref()), (401, Some("application/problem+json")));
    assert_eq!(problem["detail"], "missing Authorization: Bearer token");
    let forged = api::Hs256::new("another-secret-of-at-least-32-bytes!!")
        .and_then(|a| a.mint(&api::Claims::new(1, "eve", 3600)))
        .expect("token");
    let (code, _, _) = app.post_raw("/M2M/BulkChange", &body, Some(&forged)).await;
    assert_eq!(code, 401);
    assert_eq!(app.bulk_change_count().await, 0);
}

#[tokio::test]
async fn malformed_requests_get_problem_json_and_write_nothing() {
    let app = spawn_with(|c| c.max_devices = 5).await;
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("{\"ServiceProviderId\": 10,".into(), 400, "body", "invalid JSON"),
        (json!({"ServiceProviderId": POD19, "ChangeType": 42, "Devices": [ready(0)]}).to_string(), 400, "ChangeType", "unknown ChangeType 42"),
        (json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [], "StatusUpdate": {"TargetStatus": "Active"}}).to_string(), 400, "Devices", "at least one"),
        (status_update(POD19, &(0..6).map(ready).collect::<Vec<_>>(), "Active").to_string(), 413, "Devices", "at most 5"),
        (status_update(POD19, &[ready(0)], "Suspended").to_string(), 400, "StatusUpdate.TargetStatus", "unknown status 'Suspended'"),
        (json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [ready(0)]}).to_string(), 400, "StatusUpdate", "StatusUpdate is required"),
    ];
    for (body, expected, field, message) in cases {
        let (code, content_type, problem) = app.post_raw("/M2M/BulkChange", &body, Some(&app.token)).await;
        assert_eq!(code, expected, "{body} -> {problem}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(problem["status"], expected);
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert!(problem["errors"][0]["message"].as_str().expect("message").contains(message), "{problem}");
    }
    assert_eq!(app.bulk_change_count().await, 0, "nothing written");
    assert!(app.cc(POD19).state.calls().is_empty());
}

#[tokio::test]
async fn validate_is_a_dry_run() {
    let app = spawn().await;
    let (code, _, answer) = app
        .post_raw(
            "/M2M/ValidateBulkChange",
            &status_update(POD19, &[ready(8), "1".into()], "Active").to_string(),
            Some(&app.token),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(answer["Counts"], json!({"Valid": 1, "Invalid": 1, "Duplicates": 0}));
    assert!(answer.get("BulkChangeId").is_none());
    assert_eq!(app.bulk_change_count().await, 0);
}

#[tokio::test]
async fn bursts_of_429_slow_the_work_but_every_row_is_processed_once() {
    // The carrier allows 5 calls a second while the provider is configured for 100: most calls get 429.
    let app = spawn_with(|c| {
        c.simulator_faults.rate_limit_per_second = Some(5.0);
        c.retry.max_throttled_attempts = 30;
    })
    .await;
    let devices: Vec<String> = (10..25).map(ready).collect();
    let id = app.accepted(&status_update(POD19, &devices, "Active")).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": devices.len()}), "{status}");
    assert!(app.cc(POD19).state.calls().iter().any(|c| c.status == 429), "the carrier did throttle");
    for iccid in &devices {
        assert_eq!(app.cc(POD19).applied_status_changes(iccid), 1, "{iccid} changed exactly once");
    }
}

#[tokio::test]
async fn failed_rows_are_summarised_in_one_email() {
    let app = spawn().await;
    let id = app.accepted(&status_update(POD19, &[ready(9), "123".into()], "Active")).await;
    app.wait_final(id).await;
    // The e-mail is sent just after the status turns final.
    let mails = app.mails(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    let text = std::fs::read_to_string(&mails[0]).expect("mail");
    assert!(text.contains(&format!("Subject: Bulk change {id}: 1 device(s) failed")), "{text}");
    assert!(text.contains("123  ERROR  Invalid ICCID"), "{text}");
    assert!(!text.contains(&ready(9)), "successful devices are not listed");
}

#[tokio::test]
async fn a_worker_that_dies_mid_run_is_replaced_and_no_change_is_sent_twice() {
    let app = spawn_with(|c| {
        c.run_worker = false;
        c.simulator_faults.latency_ms = 300;
        c.visibility = Duration::from_secs(1);
        c.scheduler_interval = Duration::from_millis(500);
        c.stranded_grace = Duration::from_secs(1);
    })
    .await;
    let devices: Vec<String> = (26..34).map(ready).collect();
    let id = app.accepted(&status_update(POD19, &devices, "Active")).await;
    let lease = Duration::from_secs(2);
    let config = |name: &str| WorkerConfig {
        worker_id: name.into(),
        concurrency: 4,
        claim_batch: 4,
        lease,
        continuation_delay: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let first = app.stack.spawn_worker(config("first")).expect("worker");
    // GIVEN the first worker has sent changes that the carrier applied but not yet answered
    tokio::time::timeout(Duration::from_secs(10), async {
        while !app.cc(POD19).state.calls().iter().any(|c| c.method == "PUT") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("first worker reaches the carrier");
    // WHEN it dies holding its claims
    first.abort();
    let _ = first.await;
    let (_, mid) = app.get(&format!("/M2M/BulkChangeStatus/{id}"), &app.token).await;
    assert!(mid["Counts"]["PROCESSING"].as_i64().unwrap_or(0) > 0, "rows were claimed when it died: {mid}");
    // THEN a new worker finishes every row, asking the carrier before re-sending
    let _second = app.stack.spawn_worker(config("second")).expect("worker");
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": devices.len()}), "{status}");
    for iccid in &devices {
        assert_eq!(app.cc(POD19).applied_status_changes(iccid), 1, "{iccid} changed exactly once");
    }
    assert!(
        status["Rows"].as_array().expect("rows").iter().any(|r| r["StatusDetails"]
            .as_str()
            .is_some_and(|d| d.contains("found done on the carrier: an earlier attempt had sent it"))),
        "at least one row was reconciled with the carrier: {status}"
    );
}

#[tokio::test]
async fn the_same_message_twice_and_two_workers_never_send_a_change_twice() {
    let app = spawn_with(|c| {
        c.run_worker = false;
        c.simulator_faults.latency_ms = 30;
    })
    .await;
    let devices: Vec<String> = (34..40).map(ready).collect();
    let id = app.accepted(&status_update(POD19, &devices, "Active")).await;
    // The API enqueued once; deliver the same work twice more, to two workers.
    cli::stack::enqueue(&app.stack.queue, id).await.expect("enqueue");
    cli::stack::enqueue(&app.stack.queue, id).await.expect("enqueue");
    let small = |name: &str| WorkerConfig {
        worker_id: name.into(),
        concurrency: 2,
        claim_batch: 2,
        continuation_delay: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let _a = app.stack.spawn_worker(small("a")).expect("worker a");
    let _b = app.stack.spawn_worker(small("b")).expect("worker b");
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": devices.len()}), "{status}");
    for iccid in &devices {
        assert_eq!(app.cc(POD19).applied_status_changes(iccid), 1, "{iccid} changed exactly once");
    }
    let puts = app.cc(POD19).state.calls().iter().filter(|c| c.method == "PUT").count();
    assert_eq!(puts, devices.len());
}

#[tokio::test]
async fn rev_io_service_and_customer_follow_a_successful_activation() {
    let app = spawn().await;
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [ready(0)],
        "StatusUpdate": {"TargetStatus": "Active", "AccountNumber": "1001", "RevService": {"RevCustomerId": "1001", "CreateRevService": true, "ProviderId": 12}}});
    let id = app.accepted(&body).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &ready(0));
    assert_eq!(r["Status"], "PROCESSED", "{status}");
    let services = app.stack.simulators.rev_io[&REV].state.services();
    let created: Vec<_> = services.iter().filter(|s| s.number2.as_deref() == Some(ready(0).as_str())).collect();
    assert_eq!(created.len(), 1, "one service line for the device");
    assert_eq!(created[0].customer_id, 1001);
    let stored = app.stack.store.device_by_iccid(1, &ready(0)).await.expect("read").expect("device");
    assert_eq!(stored.rev_customer_id.as_deref(), Some("1001"));
    // An unknown Rev customer is a request error: nothing written.
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [ready(1)], "StatusUpdate": {"TargetStatus": "Active", "AccountNumber": "100"}});
    let (code, problem) = app.submit(&body).await;
    assert_eq!(code, 400);
    assert_eq!(problem["errors"][0]["field"], "StatusUpdate.AccountNumber");
}

#[test]
fn bench_iccids_are_valid() {
    for i in [0, 1, 999, 123_456] {
        let iccid = bench_iccid(i);
        assert_eq!(iccid.len(), 20);
        assert_eq!(luhn_check_digit(&iccid[..19]).to_string(), &iccid[19..]);
    }
}

// ---- CarrierRatePlanChange (7) ----

fn carrier_rate_plan(sp: i64, devices: &[String], plan: &str, communication: Option<&str>) -> Value {
    json!({"ServiceProviderId": sp, "ChangeType": 7, "Devices": devices,
           "CarrierRatePlanUpdate": {"CarrierRatePlan": plan, "CommunicationPlan": communication}})
}

#[tokio::test]
async fn carrier_rate_plan_change_moves_the_plan_on_the_carrier_then_in_the_database() {
    let app = spawn().await;
    let id = app.accepted(&carrier_rate_plan(POD19, &[ready(0), ready(1)], "RP-5GB", Some("CP-IoT"))).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 2}), "{status}");
    for iccid in [ready(0), ready(1)] {
        let sim = app.cc(POD19).state.device(&iccid).expect("sim");
        assert_eq!((sim.rate_plan.as_deref(), sim.communication_plan.as_deref()), (Some("RP-5GB"), Some("CP-IoT")));
        let stored = app.stack.store.device_by_iccid(1, &iccid).await.expect("read").expect("device");
        assert_eq!(
            (stored.carrier_rate_plan.as_deref(), stored.communication_plan.as_deref()),
            (Some("RP-5GB"), Some("CP-IoT"))
        );
        assert_eq!(
            row(&status, &iccid)["StatusDetails"],
            "Carrier rate plan changed to RP-5GB; communication plan CP-IoT"
        );
    }
}

#[tokio::test]
async fn carrier_refusal_of_a_rate_plan_fails_the_row_and_leaves_the_database() {
    let app = spawn().await;
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.remove("RP-5GB");
    let id = app.accepted(&carrier_rate_plan(POD19, &[ready(2)], "RP-5GB", None)).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &ready(2));
    assert_eq!(r["Status"], "API_FAILED");
    assert_eq!(r["StatusDetails"], "HTTP 400, error 10000016: Invalid rate plan: RP-5GB.");
    let stored = app.stack.store.device_by_iccid(1, &ready(2)).await.expect("read").expect("device");
    assert_eq!(
        stored.carrier_rate_plan.as_deref(),
        Some("RP-1GB"),
        "the database follows only what the carrier confirmed"
    );
}

#[tokio::test]
async fn carrier_rate_plan_validation_messages() {
    let app = spawn().await;
    let cases = [
        (
            carrier_rate_plan(POD19, &[ready(3)], "RP-50GB", None),
            "CarrierRatePlanUpdate.CarrierRatePlan",
            "carrier rate plan 'RP-50GB' does not exist for service provider 10; known: RP-100MB, RP-1GB, RP-5GB",
        ),
        (
            carrier_rate_plan(POD19, &[ready(3)], "RO-5GB", None),
            "CarrierRatePlanUpdate.CarrierRatePlan",
            "carrier rate plan 'RO-5GB' does not exist for service provider 10; known: RP-100MB, RP-1GB, RP-5GB",
        ),
        (
            carrier_rate_plan(POD19, &[ready(3)], " ", None),
            "CarrierRatePlanUpdate.CarrierRatePlan",
            "CarrierRatePlan must not be empty",
        ),
        (
            carrier_rate_plan(POD19, &[ready(3)], "RP-5GB", Some("")),
            "CarrierRatePlanUpdate.CommunicationPlan",
            "CommunicationPlan must not be empty when given",
        ),
        (
            json!({"ServiceProviderId": POD19, "ChangeType": 7, "Devices": [ready(3)],
                "CarrierRatePlanUpdate": {"CarrierRatePlan": "RP-5GB", "EffectiveDate": "2027-01-01"}}),
            "CarrierRatePlanUpdate.EffectiveDate",
            "not supported yet",
        ),
    ];
    for (body, field, message) in cases {
        let (code, problem) = app.submit(&body).await;
        assert_eq!(code, 400, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert!(problem["errors"][0]["message"].as_str().expect("message").contains(message), "{problem}");
    }
    assert_eq!(app.bulk_change_count().await, 0);
}

#[tokio::test]
async fn carrier_rate_plan_change_with_writes_disabled_calls_nobody() {
    let app = spawn().await;
    let id = app.accepted(&carrier_rate_plan(READ_ONLY, &[read_only(0)], "RO-5GB", None)).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &read_only(0))["StatusDetails"], "Writes disabled for this service provider.");
    assert!(app.cc(READ_ONLY).state.calls().is_empty());
}

// ---- EditUsername (6) ----

fn edit_username(sp: i64, devices: &[String], username: &str, cost_center: Option<&str>) -> Value {
    json!({"ServiceProviderId": sp, "ChangeType": 6, "Devices": devices,
           "Username": {"NewUsername": username, "CostCenter": cost_center}})
}

#[tokio::test]
async fn username_edit_on_pod19_is_confirmed_in_the_audit_trail() {
    let app = spawn().await;
    let id = app.accepted(&edit_username(POD19, &[ready(4)], "truck-42", None)).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &ready(4))["Status"], "PROCESSED", "{status}");
    assert_eq!(app.cc(POD19).state.device(&ready(4)).expect("sim").device_id.as_deref(), Some("truck-42"));
    let stored = app.stack.store.device_by_iccid(1, &ready(4)).await.expect("read").expect("device");
    assert_eq!(stored.username.as_deref(), Some("truck-42"));
    assert!(app.cc(POD19).state.calls().iter().any(|c| c.path.ends_with("/auditTrails")), "the audit trail was read");
}

#[tokio::test]
async fn username_edit_that_does_not_take_on_pod19_fails_the_row() {
    let app = spawn().await;
    app.cc(POD19).state.harness.set_faults(simulators::Faults { edits_do_not_take: true, ..Default::default() });
    let id = app.accepted(&edit_username(POD19, &[ready(5)], "van-7", None)).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &ready(5));
    assert_eq!(r["Status"], "API_FAILED");
    assert_eq!(r["StatusDetails"], "Unsuccessfully updated the Username. The Username (van-7) not exists.");
    let stored = app.stack.store.device_by_iccid(1, &ready(5)).await.expect("read").expect("device");
    assert_eq!(stored.username, None, "the database keeps what the carrier has");
}

#[tokio::test]
async fn cost_centers_go_to_the_rev_io_service_after_the_carrier() {
    let app = spawn().await;
    let id = app.accepted(&edit_username(POD19, &[with_rev_service()], "forklift-3", Some("DEPT_SALES_001"))).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &with_rev_service());
    assert_eq!(r["Status"], "PROCESSED", "{status}");
    let services = app.stack.simulators.rev_io[&REV].state.services();
    let service = services.iter().find(|s| s.service_id == 11_501).expect("seeded service");
    assert_eq!(service.fields.get("1").map(String::as_str), Some("DEPT_SALES_001"));
}

#[tokio::test]
async fn a_rev_io_failure_never_hides_the_carrier_result() {
    let app = spawn().await;
    app.stack.simulators.rev_io[&REV]
        .state
        .harness
        .set_faults(simulators::Faults { fail_next: 100, ..Default::default() });
    let id = app.accepted(&edit_username(POD19, &[with_rev_service()], "forklift-4", Some("DEPT_OPS"))).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &with_rev_service());
    assert_eq!(r["Status"], "API_FAILED");
    let details = r["StatusDetails"].as_str().expect("details");
    assert!(details.starts_with("Username changed to forklift-4; Rev.io cost centers failed: HTTP 500"), "{details}");
    let stored = app.stack.store.device_by_iccid(1, &with_rev_service()).await.expect("read").expect("device");
    assert_eq!(stored.username.as_deref(), Some("forklift-4"), "the carrier's change is recorded");
}

#[tokio::test]
async fn username_validation_messages() {
    let app = spawn().await;
    let cases = [
        (edit_username(POD19, &[ready(6)], "", None), "Username.NewUsername", "Username.NewUsername must not be empty"),
        (
            edit_username(POD19, &[ready(6)], &"u".repeat(51), None),
            "Username.NewUsername",
            "Username.NewUsername has 51 characters; at most 50",
        ),
        (
            edit_username(POD19, &[ready(6)], "ok", Some("bad;cc")),
            "Username.CostCenter",
            "Username.CostCenter contains ';'; use letters, digits, space and _ - . @ / #",
        ),
    ];
    for (body, field, message) in cases {
        app.assert_refused(body, field, message).await;
    }
}

#[tokio::test]
async fn username_edit_with_writes_disabled_calls_nobody() {
    let app = spawn().await;
    let id = app.accepted(&edit_username(READ_ONLY, &[read_only(1)], "x1", None)).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &read_only(1))["StatusDetails"], "Writes disabled for this service provider.");
    assert!(app.cc(READ_ONLY).state.calls().is_empty());
}

// ---- Archival (5) ----

fn archival(devices: &[String], override_validation: bool) -> Value {
    json!({"ServiceProviderId": POD19, "ChangeType": 5, "OverrideValidation": override_validation, "Devices": devices})
}

#[tokio::test]
async fn archival_archives_idle_devices_and_refuses_the_others_with_reasons() {
    let app = spawn().await;
    let devices = vec![archive_idle(0), archive_recent(), archive_with_rev_service()];
    let (code, answer) = app.submit(&archival(&devices, false)).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["BulkChangeId"].as_i64().expect("id");
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &archive_idle(0))["Status"], "PROCESSED");
    let recent = row(&status, &archive_recent())["StatusDetails"].as_str().expect("details").to_string();
    assert!(recent.contains("within the last 30 days") && recent.ends_with("it cannot be archived"), "{recent}");
    assert_eq!(
        row(&status, &archive_with_rev_service())["StatusDetails"],
        format!(
            "Device {} has an active Rev.io service; set OverrideValidation to archive it anyway",
            archive_with_rev_service()
        )
    );
    let stored = app.stack.store.device_by_iccid(1, &archive_idle(0)).await.expect("read").expect("still stored");
    assert!(stored.is_deleted && !stored.is_active);
    assert!(app.cc(POD19).state.calls().is_empty(), "archival never calls the carrier");
    // An archived device is refused by every later change.
    let (_, again) = app.submit(&archival(&[archive_idle(0)], false)).await;
    assert_eq!(again["Devices"][0]["Errors"][0]["message"], format!("Device {} is already archived", archive_idle(0)));
    let (_, activate) = app.submit(&status_update(POD19, &[archive_idle(0)], "Active")).await;
    assert_eq!(activate["Devices"][0]["Errors"][0]["message"], format!("device {} is archived", archive_idle(0)));
}

#[tokio::test]
async fn archive_override_bypasses_the_rev_service_rule_but_not_the_usage_rule() {
    let app = spawn().await;
    let id = app.accepted(&archival(&[archive_with_rev_service(), archive_recent(), archive_idle(1)], true)).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &archive_with_rev_service())["Status"], "PROCESSED", "{status}");
    assert_eq!(row(&status, &archive_idle(1))["Status"], "PROCESSED");
    assert_eq!(row(&status, &archive_recent())["Status"], "ERROR");
}

// ---- Operator actions and reads ----

#[tokio::test]
async fn retry_makes_a_new_bulk_change_for_the_failed_rows_only() {
    let app = spawn().await;
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.remove("RP-5GB");
    let first = app.accepted(&carrier_rate_plan(POD19, &[ready(7), ready(8), "123".into()], "RP-5GB", None)).await;
    let status = app.wait_final(first).await;
    assert_eq!(status["Counts"], json!({"API_FAILED": 2, "ERROR": 1}), "{status}");
    // The carrier fixes its side; the operator retries.
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.insert("RP-5GB".into());
    let (code, answer) =
        app.post_raw(&format!("/M2M/BulkChange/{first}/Retry"), "", Some(&app.token)).await.into_status_body();
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["RetryOf"], first);
    assert_eq!(answer["Counts"], json!({"Valid": 2, "Invalid": 1, "Duplicates": 0}));
    let second = answer["BulkChangeId"].as_i64().expect("id");
    let retried = app.wait_final(second).await;
    assert_eq!(retried["Counts"], json!({"PROCESSED": 2, "ERROR": 1}), "{retried}");
    assert_eq!(retried["RetryOf"], first);
    let done = app.accepted(&status_update(POD19, &[ready(14)], "Active")).await;
    app.wait_final(done).await;
    let (code, problem) =
        app.post_raw(&format!("/M2M/BulkChange/{done}/Retry"), "", Some(&app.token)).await.into_status_body();
    assert_eq!(code, 409, "{problem}");
    assert!(
        problem["detail"].as_str().expect("detail").starts_with(&format!("bulk change {done} has no failed rows left"))
    );
    // The first bulk change's failed rows were settled by its retry: retrying it again takes nothing.
    let (code, problem) =
        app.post_raw(&format!("/M2M/BulkChange/{first}/Retry"), "", Some(&app.token)).await.into_status_body();
    assert_eq!(code, 409, "a third retry is refused: {problem}");
    assert_eq!(app.bulk_change_count().await, 3, "no bulk change was created for it");
    let other = app.token_for(2);
    let (code, _) = app.post_raw(&format!("/M2M/BulkChange/{first}/Retry"), "", Some(&other)).await.into_status_body();
    assert_eq!(code, 404, "another tenant's bulk change does not exist for them");
}

#[tokio::test]
async fn cancel_stops_rows_not_started_and_says_how_many() {
    let app = spawn_with(|c| c.run_worker = false).await;
    let devices: Vec<String> = (10..13).map(ready).collect();
    let id = app.accepted(&status_update(POD19, &devices, "Active")).await;
    let other = app.token_for(2);
    let (code, _) = app.post_raw(&format!("/M2M/BulkChange/{id}/Cancel"), "", Some(&other)).await.into_status_body();
    assert_eq!(code, 404);
    let (code, answer) =
        app.post_raw(&format!("/M2M/BulkChange/{id}/Cancel"), "", Some(&app.token)).await.into_status_body();
    assert_eq!(code, 200, "{answer}");
    assert_eq!((answer["Cancelled"].as_i64(), answer["Status"].as_str()), (Some(3), Some("CANCELLED")));
    // A worker that gets the message now has nothing to do.
    let _worker = app.stack.spawn_worker(WorkerConfig::default()).expect("worker");
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"CANCELLED": 3}));
    assert!(app.cc(POD19).state.calls().is_empty(), "no carrier call for cancelled rows");
}

#[tokio::test]
async fn device_details_show_the_device_and_its_history_within_the_tenant() {
    let app = spawn().await;
    let id = app.accepted(&status_update(POD19, &[ready(9)], "Active")).await;
    app.wait_final(id).await;
    let (code, details) = app.get(&format!("/M2M/DeviceDetails/{}", ready(9)), &app.token).await;
    assert_eq!(code, 200, "{details}");
    assert_eq!((details["ICCID"].as_str(), details["Status"].as_str()), (Some(ready(9).as_str()), Some("ACTIVATED")));
    assert_eq!(details["StatusDisplayName"], "Active");
    assert_eq!(details["History"][0]["BulkChangeId"], id);
    assert_eq!(details["History"][0]["Status"], "PROCESSED");
    assert_eq!(details["History"][0]["ChangeType"], 3);
    assert!(details.get("TenantId").is_none());
    let (code, _) = app.get(&format!("/M2M/DeviceDetails/{}", other_tenant()), &app.token).await;
    assert_eq!(code, 404, "another tenant's device does not exist for us");
    let (code, problem) = app.get("/M2M/DeviceDetails/12345", &app.token).await;
    assert_eq!((code, problem["errors"][0]["field"].as_str()), (400, Some("iccid")));
}

#[tokio::test]
async fn rev_customers_are_the_callers_tenants_only() {
    let app = spawn().await;
    let (code, list) = app.get("/M2M/GetRevCustomers", &app.token).await;
    assert_eq!(code, 200);
    assert_eq!(
        list["Items"],
        json!([{"RevCustomerId": "1001", "Name": "Acme Fleet"}, {"RevCustomerId": "1002", "Name": "Acme Rentals"}])
    );
    let (_, other) = app.get("/M2M/GetRevCustomers", &app.token_for(2)).await;
    assert_eq!(other["Items"], json!([{"RevCustomerId": "2001", "Name": "Globex Field Ops"}]));
}

trait StatusBody {
    fn into_status_body(self) -> (u16, Value);
}

impl StatusBody for (u16, Option<String>, Value) {
    fn into_status_body(self) -> (u16, Value) {
        (self.0, self.2)
    }
}

// ---- CustomerRatePlanChange (4) ----

fn customer_rate_plan(devices: &[String], effective: Option<&str>) -> Value {
    json!({"ServiceProviderId": POD19, "ChangeType": 4, "Devices": devices,
           "CustomerRatePlanUpdate": {"CustomerRatePlanId": 5, "CustomerRatePoolId": 9, "DataAllocationMB": 1024, "EffectiveDate": effective}})
}

#[tokio::test]
async fn customer_rate_plan_without_a_future_date_applies_now_without_carrier_calls() {
    let app = spawn().await;
    let id = app.accepted(&customer_rate_plan(&[ready(15), ready(16)], Some("2020-01-01"))).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 2}), "{status}");
    let stored = app.stack.store.device_by_iccid(1, &ready(15)).await.expect("read").expect("device");
    assert_eq!(
        (stored.customer_rate_plan_id, stored.customer_rate_pool_id, stored.customer_data_allocation_mb),
        (Some(5), Some(9), Some(1024.0))
    );
    assert!(app.cc(POD19).state.calls().is_empty());
}

#[tokio::test]
async fn future_customer_rate_plan_waits_for_its_date_then_applies_every_row() {
    let app = spawn().await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let devices: Vec<String> = (17..22).map(ready).collect();
    let id = app.accepted(&customer_rate_plan(&devices, Some(&tomorrow))).await;
    let status = app.wait_scheduled(id).await;
    assert_eq!(status["Counts"], json!({"SCHEDULED": 5}), "{status}");
    assert!(
        row(&status, &devices[0])["StatusDetails"]
            .as_str()
            .expect("details")
            .starts_with(&format!("Scheduled for {tomorrow}"))
    );
    // WHEN the scheduler runs before the date nothing moves; on the date every row is applied
    let today = chrono::Utc::now();
    assert!(
        engine::scheduler::apply_due_scheduled(&*app.stack.store, &app.stack.queue, today)
            .await
            .expect("tick")
            .is_empty()
    );
    let day_after = today + chrono::Duration::days(2);
    assert_eq!(
        engine::scheduler::apply_due_scheduled(&*app.stack.store, &app.stack.queue, day_after).await.expect("tick"),
        vec![id]
    );
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 5}), "{status}");
    for iccid in &devices {
        let stored = app.stack.store.device_by_iccid(1, iccid).await.expect("read").expect("device");
        assert_eq!(stored.customer_rate_plan_id, Some(5));
    }
    assert!(
        engine::scheduler::apply_due_scheduled(&*app.stack.store, &app.stack.queue, day_after)
            .await
            .expect("tick")
            .is_empty(),
        "applied once"
    );
}

/// Paused while it waits for its date: the rows keep their date, are released on it, and start only once resumed.
#[tokio::test]
async fn a_scheduled_change_paused_keeps_its_date_and_applies_once_resumed() {
    let app = spawn().await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let devices: Vec<String> = (22..24).map(ready).collect();
    let id = app.accepted(&customer_rate_plan(&devices, Some(&tomorrow))).await;
    app.wait_scheduled(id).await;
    let (code, answer) = app.act(id, "Pause", &app.token).await;
    assert_eq!((code, answer["Status"].as_str()), (200, Some("PAUSED")), "{answer}");
    let paused = app.status(id).await;
    assert!(
        row(&paused, &devices[0])["StatusDetails"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("Scheduled for {tomorrow}"))),
        "the date is kept: {paused}"
    );
    // On the date the rows are released, but nothing is applied while paused.
    let day_after = chrono::Utc::now() + chrono::Duration::days(2);
    assert_eq!(
        engine::scheduler::apply_due_scheduled(&*app.stack.store, &app.stack.queue, day_after).await.expect("tick"),
        vec![id]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = app.status(id).await;
    assert_eq!((waiting["Status"].as_str(), &waiting["Counts"]), (Some("PAUSED"), &json!({"PENDING": 2})), "{waiting}");
    let stored = app.stack.store.device_by_iccid(1, &devices[0]).await.expect("read").expect("device");
    assert_ne!(stored.customer_rate_plan_id, Some(5), "not applied while paused");
    assert_eq!(app.act(id, "Resume", &app.token).await.0, 200);
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 2}), "{status}");
    let stored = app.stack.store.device_by_iccid(1, &devices[0]).await.expect("read").expect("device");
    assert_eq!(stored.customer_rate_plan_id, Some(5));
}

#[tokio::test]
async fn a_scheduled_change_cancelled_before_its_date_never_applies() {
    let app = spawn().await;
    let next_week = (chrono::Utc::now() + chrono::Duration::days(7)).format("%Y-%m-%d").to_string();
    let id = app.accepted(&customer_rate_plan(&[ready(22), ready(23)], Some(&next_week))).await;
    app.wait_scheduled(id).await;
    let (code, answer) =
        app.post_raw(&format!("/M2M/BulkChange/{id}/Cancel"), "", Some(&app.token)).await.into_status_body();
    assert_eq!((code, answer["Cancelled"].as_i64(), answer["Status"].as_str()), (200, Some(2), Some("CANCELLED")));
    let later = chrono::Utc::now() + chrono::Duration::days(8);
    assert!(
        engine::scheduler::apply_due_scheduled(&*app.stack.store, &app.stack.queue, later)
            .await
            .expect("tick")
            .is_empty()
    );
    let stored = app.stack.store.device_by_iccid(1, &ready(22)).await.expect("read").expect("device");
    assert_eq!(stored.customer_rate_plan_id, None);
}

#[tokio::test]
async fn customer_rate_plan_validation_messages() {
    let app = spawn().await;
    let body = |block: Value| json!({"ServiceProviderId": POD19, "ChangeType": 4, "Devices": [ready(24)], "CustomerRatePlanUpdate": block});
    let cases = [
        (body(json!({})), "CustomerRatePlanUpdate", "give CustomerRatePlanId, CustomerRatePoolId or DataAllocationMB"),
        (
            body(json!({"CustomerRatePlanId": 6})),
            "CustomerRatePlanUpdate.CustomerRatePlanId",
            "customer rate plan 6 was not found",
        ),
        (
            body(json!({"CustomerRatePoolId": 99})),
            "CustomerRatePlanUpdate.CustomerRatePoolId",
            "customer rate pool 99 was not found",
        ),
        (
            body(json!({"DataAllocationMB": -1})),
            "CustomerRatePlanUpdate.DataAllocationMB",
            "DataAllocationMB -1 must be between 0 and 10000000",
        ),
        (
            body(json!({"CustomerRatePlanId": 5, "EffectiveDate": "next tuesday"})),
            "CustomerRatePlanUpdate.EffectiveDate",
            "EffectiveDate 'next tuesday' is not a date (use 2026-12-01 or 2026-12-01T00:00:00Z)",
        ),
    ];
    for (body, field, message) in cases {
        app.assert_refused(body, field, message).await;
    }
    // Another tenant's plan is not found either.
    let (code, _, problem) = app
        .post_raw("/M2M/BulkChange", &body(json!({"CustomerRatePlanId": 5})).to_string(), Some(&app.token_for(2)))
        .await;
    assert_eq!(code, 400, "{problem}");
}

impl TestApp {
    /// The request is refused with 400 and its first error names `field` with exactly `message`.
    async fn assert_refused(&self, body: Value, field: &str, message: impl AsRef<str>) {
        let (code, problem) = self.submit(&body).await;
        assert_eq!(code, 400, "{problem}");
        assert_eq!(
            (problem["errors"][0]["field"].as_str(), problem["errors"][0]["message"].as_str()),
            (Some(field), Some(message.as_ref())),
            "{problem}"
        );
    }

    async fn wait_scheduled(&self, id: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, status) = self.get(&format!("/M2M/BulkChangeStatus/{id}?pageSize=1000"), &self.token).await;
            if status["Status"] == "SCHEDULED" {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "bulk change {id} never became SCHEDULED: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---- CustomerAssignment (1) and AssociateCustomer ----

fn assignment(devices: &[String], customer: &str, create_service: bool) -> Value {
    json!({"ServiceProviderId": POD19, "ChangeType": 1, "Devices": devices,
           "RevService": {"RevCustomerId": customer, "CreateRevService": create_service, "ProviderId": 12, "ServiceTypeId": 3}})
}

#[tokio::test]
async fn customer_assignment_creates_the_service_line_and_records_the_assignment() {
    let app = spawn().await;
    let id = app.accepted(&assignment(&[ready(25)], "1002", true)).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &ready(25));
    assert_eq!(r["Status"], "PROCESSED", "{status}");
    assert!(r["StatusDetails"].as_str().expect("details").contains("created"), "{r}");
    let services: Vec<_> = app.stack.simulators.rev_io[&REV]
        .state
        .services()
        .into_iter()
        .filter(|s| s.number2.as_deref() == Some(ready(25).as_str()))
        .collect();
    assert_eq!((services.len(), services[0].customer_id), (1, 1002));
    let stored = app.stack.store.device_by_iccid(1, &ready(25)).await.expect("read").expect("device");
    assert_eq!(stored.rev_customer_id.as_deref(), Some("1002"));
    let (_, details) = app.get(&format!("/M2M/DeviceDetails/{}", ready(25)), &app.token).await;
    assert_eq!(details["History"][0]["ChangeType"], 1);
}

#[tokio::test]
async fn a_device_billed_to_another_customer_is_refused() {
    let app = spawn().await;
    let (code, answer) = app.submit(&assignment(&[with_rev_service(), ready(26)], "1002", false)).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(
        answer["Devices"][0]["Errors"][0]["message"],
        format!(
            "Device {} is billed to Rev customer 1001 through active Rev.io service 11501; disconnect it first",
            with_rev_service()
        )
    );
    assert_eq!(answer["Devices"][1]["Valid"], true);
}

#[tokio::test]
async fn rev_customer_must_match_exactly_within_the_tenant() {
    let app = spawn().await;
    for customer in ["100", "10012", "2001", ""] {
        let (code, problem) = app.submit(&assignment(&[ready(27)], customer, false)).await;
        assert_eq!(code, 400, "{customer}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "RevService.RevCustomerId");
    }
    assert_eq!(app.bulk_change_count().await, 0);
}

#[tokio::test]
async fn a_rev_io_service_created_before_a_crash_is_found_not_created_again() {
    let app = spawn_with(|c| c.run_worker = false).await;
    let id = app.accepted(&assignment(&[ready(28)], "1001", true)).await;
    // GIVEN a worker claimed the row, created the service line on Rev.io, and died before recording it
    let long_ago = chrono::Utc::now() - chrono::Duration::seconds(30);
    let claimed =
        engine::ports::Leases::claim_rows(&*app.stack.store, id, "dead", 10, Duration::from_secs(1), long_ago)
            .await
            .expect("claim");
    assert_eq!(claimed.len(), 1);
    {
        let rev = &app.stack.simulators.rev_io[&REV].state;
        let mut account = rev.account.lock().expect("lock");
        account.services.insert(
            77_777,
            simulators::rev_io::RevService {
                service_id: 77_777,
                customer_id: 1001,
                provider_id: 12,
                service_type_id: Some(3),
                number: None,
                number2: Some(ready(28)),
                usage_plan_group_id: None,
                activated_date: None,
                fields: Default::default(),
                disconnected_date: None,
            },
        );
    }
    // WHEN a new worker takes the row over
    let _worker = app.stack.spawn_worker(WorkerConfig::default()).expect("worker");
    let status = app.wait_final(id).await;
    // THEN it finds the line instead of creating a second one
    let r = row(&status, &ready(28));
    assert_eq!(r["Status"], "PROCESSED", "{status}");
    assert!(
        r["StatusDetails"]
            .as_str()
            .expect("details")
            .contains("Rev.io service 77777 found on Rev.io (an earlier attempt"),
        "{r}"
    );
    let rev = &app.stack.simulators.rev_io[&REV].state;
    assert!(!rev.harness.calls().iter().any(|c| c.method == "POST"), "no second service line");
    let device = app.stack.store.device_by_iccid(1, &ready(28)).await.expect("read").expect("device");
    let recorded = engine::ports::RevServices::active_rev_service(&*app.stack.store, 1, device.id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(recorded.rev_service_id, 77_777);
}

/// `make chaos SEED=35` (issue 20): a worker killed between a bulk change's final status and its failure e-mail
/// (or after taking the right to send it) left the e-mail unsent for good. The scheduler's sweep queues the bulk
/// change again and the next worker sends it, once.
#[tokio::test]
async fn a_worker_killed_before_the_failure_email_leaves_it_to_the_next() {
    let app = spawn_with(|c| {
        c.run_worker = false;
        c.scheduler_interval = Duration::from_secs(1);
        c.stranded_grace = Duration::from_secs(1);
    })
    .await;
    let id = app.accepted(&assignment(&[ready(30)], "1001", false)).await;
    // GIVEN a worker that failed the row, made the bulk change final, took the right to send its e-mail, and died
    let store = &*app.stack.store;
    let now = chrono::Utc::now();
    let claimed =
        engine::ports::Leases::claim_rows(store, id, "dead", 10, Duration::from_secs(1), now).await.expect("claim");
    let outcome = engine::ports::RowOutcome {
        status: domain::RowStatus::ApiFailed,
        details: "HTTP 500".into(),
        device_update: Default::default(),
    };
    assert!(
        engine::ports::Outcomes::complete_row(store, 1, id, claimed[0].id, "dead", &outcome, now)
            .await
            .expect("complete")
    );
    let status = engine::ports::BulkChanges::finalize_bulk_change(store, id, now).await.expect("finalize");
    assert!(status.is_some_and(|s| s.is_final()));
    let until = now + chrono::Duration::seconds(2);
    assert!(engine::ports::BulkChanges::claim_notification(store, id, now, until).await.expect("claim"));
    // WHEN a worker runs (the scheduler queues the bulk change once the dead sender's lease is over)
    let _worker = app.stack.spawn_worker(WorkerConfig { lease: Duration::from_secs(3), ..WorkerConfig::default() });
    // THEN the e-mail is sent, once
    let mails = app.mails(1, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 1, "one failure e-mail");
    let mail = std::fs::read_to_string(&mails[0]).expect("mail");
    assert!(mail.contains(&format!("Subject: Bulk change {id}: 1 device(s) failed")), "{mail}");
}

#[tokio::test]
async fn associate_customer_is_a_customer_assignment() {
    let app = spawn().await;
    let body =
        json!({"ServiceProviderId": POD19, "Devices": [ready(29)], "RevCustomerId": "1002", "CreateRevService": false});
    let (code, _, answer) = app.post_raw("/M2M/AssociateCustomer", &body.to_string(), Some(&app.token)).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["BulkChangeId"].as_i64().expect("id");
    let status = app.wait_final(id).await;
    assert_eq!(status["ChangeType"], 1);
    assert_eq!(row(&status, &ready(29))["StatusDetails"], "Assigned to Rev customer 1002");
    let (code, _, problem) = app.post_raw("/M2M/AssociateCustomer", &body.to_string(), Some(&app.token_for(2))).await;
    assert_eq!(code, 400, "{problem}");
}

// ---- Inventory ----

#[tokio::test]
async fn index_pages_and_filters_the_tenants_devices() {
    let app = spawn().await;
    let (code, all) = app.get("/M2M/Index?pageSize=10", &app.token).await;
    assert_eq!(code, 200);
    let tenant_devices = all["Total"].as_i64().expect("total");
    assert_eq!(all["Items"].as_array().map(Vec::len), Some(10));
    let (_, page2) = app.get("/M2M/Index?pageSize=10&page=2", &app.token).await;
    assert_ne!(all["Items"][0]["ICCID"], page2["Items"][0]["ICCID"]);
    let (_, active) = app.get("/M2M/Index?status=Active&pageSize=1000", &app.token).await;
    assert!(active["Items"].as_array().expect("items").iter().all(|d| d["Status"] == "ACTIVATED"));
    assert!(active["Total"].as_i64() < Some(tenant_devices));
    let (_, by_text) = app.get(&format!("/M2M/Index?q={}", &ready(3)[12..]), &app.token).await;
    assert_eq!(by_text["Items"][0]["ICCID"], ready(3));
    let (_, by_customer) = app.get("/M2M/Index?customer=1001", &app.token).await;
    assert_eq!(by_customer["Total"], 0, "no device is assigned to 1001 in the seed");
    let (_, wildcard) = app.get("/M2M/Index?q=%25", &app.token).await;
    assert_eq!(wildcard["Total"], 0, "a % in the text is a character, not a wildcard");
    let (_, other) = app.get("/M2M/Index", &app.token_for(2)).await;
    assert_eq!(other["Total"], 1, "tenant 2 sees its one device only");
    assert_eq!(other["Items"][0]["ICCID"], other_tenant());
}

#[tokio::test]
async fn csv_export_of_ten_thousand_devices_streams_every_device_once() {
    let app = spawn_with(|c| {
        let seed = c.seed.as_mut().expect("seed");
        seed.devices.extend((0..10_000).map(|i| device(1, POD19, bench_iccid(100_000 + i), "ACTIVATION_READY", 0.0)));
    })
    .await;
    let response = app
        .http
        .get(format!("{}/M2M/DeviceInventoryExport?status=Activation%20Ready", app.stack.base_url()))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers().get("content-length").is_none(), "streamed, not buffered");
    let text = response.text().await.expect("body");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], api::inventory::CSV_HEADER.join(","));
    // 10,000 added plus the seed's ACTIVATION_READY devices of tenant 1 (40 ready, 2 read-only).
    assert_eq!(lines.len() - 1, 10_042);
    let unique: std::collections::HashSet<&str> = lines[1..].iter().map(|l| &l[..20]).collect();
    assert_eq!(unique.len(), 10_042, "every device once");
    assert!(!text.contains(&other_tenant()));
}

// ---- ChangeICCIDorIMEI (8) ----

fn change_identifier(devices: &[String], new_iccid: Option<&str>, new_imei: Option<&str>) -> Value {
    json!({"ServiceProviderId": POD19, "ChangeType": 8, "Devices": devices,
           "ChangeIdentifier": {"NewICCID": new_iccid, "NewIMEI": new_imei}})
}

/// A SIM the carrier holds in inventory, not yet in our database.
fn spare_sim(app: &TestApp, n: usize) -> String {
    let iccid = bench_iccid(950 + n);
    app.cc(POD19).state.upsert_devices(vec![simulators::SimDevice {
        iccid: iccid.clone(),
        status: "ACTIVATION_READY".into(),
        rate_plan: Some("RP-100MB".into()),
        ..Default::default()
    }]);
    iccid
}

#[tokio::test]
async fn imei_change_updates_modem_id_then_the_database() {
    let app = spawn().await;
    let id = app.accepted(&change_identifier(&[active(3)], None, Some("356938035643809"))).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &active(3))["Status"], "PROCESSED", "{status}");
    assert_eq!(app.cc(POD19).state.device(&active(3)).expect("sim").modem_id.as_deref(), Some("356938035643809"));
    let stored = app.stack.store.device_by_iccid(1, &active(3)).await.expect("read").expect("device");
    assert_eq!(stored.imei.as_deref(), Some("356938035643809"));
}

#[tokio::test]
async fn sim_swap_moves_plans_username_and_status_then_deactivates_the_old_sim() {
    let app = spawn().await;
    let new = spare_sim(&app, 0);
    let old = active(1);
    let id = app.accepted(&change_identifier(std::slice::from_ref(&old), Some(&new), None)).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &old)["Status"], "PROCESSED", "{status}");
    let (new_sim, old_sim) =
        (app.cc(POD19).state.device(&new).expect("new"), app.cc(POD19).state.device(&old).expect("old"));
    assert_eq!(
        (new_sim.status.as_str(), new_sim.rate_plan.as_deref(), new_sim.communication_plan.as_deref()),
        ("ACTIVATED", Some("RP-1GB"), Some("CP-Data"))
    );
    assert_eq!(old_sim.status, "DEACTIVATED");
    let puts: Vec<String> = app
        .cc(POD19)
        .state
        .calls()
        .iter()
        .filter(|c| c.method == "PUT")
        .map(|c| format!("{} {}", &c.path[c.path.len() - 4..], c.body))
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(puts[2].contains("DEACTIVATED"), "the old SIM goes last: {puts:?}");
    assert!(app.stack.store.device_by_iccid(1, &old).await.expect("read").is_none(), "the device now has the new SIM");
    assert!(app.stack.store.device_by_iccid(1, &new).await.expect("read").is_some());
}

#[tokio::test]
async fn sim_swap_whose_last_step_fails_is_compensated_and_the_old_sim_stays_in_service() {
    let app = spawn().await;
    let new = spare_sim(&app, 1);
    let old = active(2);
    app.cc(POD19)
        .state
        .harness
        .set_faults(simulators::Faults { locked_iccids: vec![old.clone()], ..Default::default() });
    let id = app.accepted(&change_identifier(std::slice::from_ref(&old), Some(&new), None)).await;
    let status = app.wait_final(id).await;
    let r = row(&status, &old);
    assert_eq!(r["Status"], "API_FAILED");
    let details = r["StatusDetails"].as_str().expect("details");
    assert!(details.starts_with("SIM swap failed at step 3"), "{details}");
    assert!(details.contains("stays in service"), "{details}");
    assert_eq!(app.cc(POD19).state.device(&old).expect("old").status, "ACTIVATED", "the old SIM is still in service");
    let new_sim = app.cc(POD19).state.device(&new).expect("new");
    assert_eq!(
        (new_sim.status.as_str(), new_sim.rate_plan.as_deref()),
        ("DEACTIVATED", Some("RP-100MB")),
        "compensated"
    );
    assert!(app.stack.store.device_by_iccid(1, &old).await.expect("read").is_some(), "the database keeps the old SIM");
    let logs = engine::ports::Reads::logs(&*app.stack.store, 1, id).await.expect("logs");
    let compensations = logs.iter().filter(|l| l.description.starts_with("SIM swap compensation")).count();
    assert_eq!(compensations, 2, "both done steps undone and logged");
}

#[tokio::test]
async fn change_identifier_validation_messages() {
    let app = spawn().await;
    let cases = [
        (change_identifier(&[active(0)], None, None), "ChangeIdentifier", "give NewICCID, NewIMEI or both".to_string()),
        (
            change_identifier(&[active(0), active(1)], None, Some("356938035643809")),
            "Devices",
            "ChangeICCIDorIMEI changes one device per request; 2 were given".to_string(),
        ),
        (
            change_identifier(&[active(0)], Some("89014100000000000019"), None),
            "ChangeIdentifier.NewICCID",
            "ICCID '89014100000000000019' has a wrong check digit (Luhn)".to_string(),
        ),
        (
            change_identifier(&[active(0)], Some(&ready(0)), None),
            "ChangeIdentifier.NewICCID",
            format!("ICCID {} is already on another device", ready(0)),
        ),
        (
            change_identifier(&[active(0)], None, Some(TAKEN_IMEI)),
            "ChangeIdentifier.NewIMEI",
            format!("IMEI {TAKEN_IMEI} is already on another device"),
        ),
    ];
    for (body, field, message) in cases {
        app.assert_refused(body, field, message).await;
    }
}

// ---- Mobility portal type ----

#[tokio::test]
async fn mobility_bulk_changes_keep_their_rows_in_mobility_device_change() {
    let app = spawn().await;
    let mut body = status_update(POD19, &[ready(30), "123".into()], "Active");
    body["PortalType"] = json!(2);
    let id = app.accepted(&body).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"ERROR": 1, "PROCESSED": 1}), "{status}");
    assert_eq!(app.stack.store.rows_in_table("Mobility_DeviceChange", id).await.expect("count"), 2);
    assert_eq!(app.stack.store.rows_in_table("M2M_DeviceChange", id).await.expect("count"), 0);
    assert_eq!(app.cc(POD19).applied_status_changes(&ready(30)), 1);
    let logs = engine::ports::Reads::logs(&*app.stack.store, 1, id).await.expect("logs");
    assert!(logs.iter().any(|l| l.device_change_id.is_some()), "log entries point at the Mobility row");
    let (_, details) = app.get(&format!("/M2M/DeviceDetails/{}", ready(30)), &app.token).await;
    assert_eq!(details["History"][0]["BulkChangeId"], id, "history spans both portals");
    // Operator actions work the same.
    let (code, _) = app.post_raw(&format!("/M2M/BulkChange/{id}/Retry"), "", Some(&app.token)).await.into_status_body();
    assert_eq!(code, 202);
}

#[tokio::test]
async fn unknown_portal_types_are_refused() {
    let app = spawn().await;
    let mut body = status_update(POD19, &[ready(31)], "Active");
    body["PortalType"] = json!(1);
    let (code, problem) = app.submit(&body).await;
    assert_eq!((code, problem["errors"][0]["field"].as_str()), (400, Some("PortalType")));
}

#[tokio::test]
async fn assignment_can_set_the_carrier_and_customer_plans_too() {
    let app = spawn().await;
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 1, "Devices": [ready(32)],
        "RevService": {"RevCustomerId": "1002", "CreateRevService": true, "ProviderId": 12,
                       "AddCarrierRatePlan": true, "CarrierRatePlan": "RP-5GB",
                       "AddCustomerRatePlan": true, "CustomerRatePlanId": 5, "CustomerRatePoolId": 9}});
    let id = app.accepted(&body).await;
    let status = app.wait_final(id).await;
    assert_eq!(row(&status, &ready(32))["Status"], "PROCESSED", "{status}");
    assert_eq!(app.cc(POD19).state.device(&ready(32)).expect("sim").rate_plan.as_deref(), Some("RP-5GB"));
    let stored = app.stack.store.device_by_iccid(1, &ready(32)).await.expect("read").expect("device");
    assert_eq!(stored.carrier_rate_plan.as_deref(), Some("RP-5GB"));
    assert_eq!((stored.customer_rate_plan_id, stored.customer_rate_pool_id), (Some(5), Some(9)));
    assert_eq!(stored.rev_customer_id.as_deref(), Some("1002"));
}

#[tokio::test]
async fn a_carrier_or_rev_io_refusal_leaves_the_device_unassigned() {
    let app = spawn().await;
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.remove("RP-5GB");
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 1, "Devices": [ready(33)],
        "RevService": {"RevCustomerId": "1002", "AddCarrierRatePlan": true, "CarrierRatePlan": "RP-5GB"}});
    let status = app.wait_final(app.accepted(&body).await).await;
    let r = row(&status, &ready(33));
    assert_eq!(r["Status"], "API_FAILED");
    assert_eq!(
        r["StatusDetails"],
        "Carrier rate plan not changed, customer not assigned: HTTP 400, error 10000016: Invalid rate plan: RP-5GB."
    );
    app.stack.simulators.rev_io[&REV]
        .state
        .harness
        .set_faults(simulators::Faults { fail_next: 100, ..Default::default() });
    let status = app.wait_final(app.accepted(&assignment(&[ready(34)], "1002", true)).await).await;
    let r = row(&status, &ready(34));
    assert_eq!(r["Status"], "API_FAILED");
    assert!(r["StatusDetails"].as_str().expect("details").starts_with("Rev.io service line failed: HTTP 500"), "{r}");
    for iccid in [ready(33), ready(34)] {
        let stored = app.stack.store.device_by_iccid(1, &iccid).await.expect("read").expect("device");
        assert_eq!(stored.rev_customer_id, None, "{iccid} not assigned");
    }
}

#[tokio::test]
async fn assignment_option_validation_messages() {
    let app = spawn().await;
    let body = |options: Value| {
        let mut rev = json!({"RevCustomerId": "1002"});
        for (k, v) in options.as_object().expect("object") {
            rev[k] = v.clone();
        }
        json!({"ServiceProviderId": POD19, "ChangeType": 1, "Devices": [ready(35)], "RevService": rev})
    };
    let cases = [
        (
            body(json!({"AddCarrierRatePlan": true})),
            "RevService.CarrierRatePlan",
            "CarrierRatePlan is required with AddCarrierRatePlan",
        ),
        (
            body(json!({"AddCarrierRatePlan": true, "CarrierRatePlan": "RP-X"})),
            "RevService.CarrierRatePlan",
            "carrier rate plan 'RP-X' does not exist for service provider 10",
        ),
        (
            body(json!({"AddCustomerRatePlan": true})),
            "RevService.CustomerRatePlanId",
            "CustomerRatePlanId is required with AddCustomerRatePlan",
        ),
        (
            body(json!({"AddCustomerRatePlan": true, "CustomerRatePlanId": 77})),
            "RevService.CustomerRatePlanId",
            "customer rate plan 77 was not found",
        ),
        (
            body(json!({"EffectiveDate": "soon"})),
            "RevService.EffectiveDate",
            "EffectiveDate 'soon' is not a date (use 2026-12-01 or 2026-12-01T00:00:00Z)",
        ),
    ];
    for (body, field, message) in cases {
        app.assert_refused(body, field, message).await;
    }
}

#[tokio::test]
async fn identifier_change_with_writes_disabled_or_a_locked_sim_fails_the_row() {
    let app = spawn().await;
    let mut read_only_change = change_identifier(&[read_only(0)], None, Some("356938035643809"));
    read_only_change["ServiceProviderId"] = json!(READ_ONLY);
    let status = app.wait_final(app.accepted(&read_only_change).await).await;
    assert_eq!(row(&status, &read_only(0))["StatusDetails"], "Writes disabled for this service provider.");
    assert!(app.cc(READ_ONLY).state.calls().is_empty());
    app.cc(POD19).state.harness.set_faults(simulators::Faults { locked_iccids: vec![active(0)], ..Default::default() });
    let status =
        app.wait_final(app.accepted(&change_identifier(&[active(0)], None, Some("356938035643809"))).await).await;
    let r = row(&status, &active(0));
    assert_eq!(r["Status"], "API_FAILED");
    assert_eq!(
        r["StatusDetails"],
        "IMEI not changed: HTTP 400, error 10000099: SIM is locked by the operator and cannot be edited."
    );
}

/// The results export of one status, read again and again while a 3,000-row activation runs, never leaves out a
/// row that stayed in that status for the whole read: it pages by row id. (Paging by offset over the shrinking set
/// of PENDING rows skipped the row after each page.)
#[tokio::test]
async fn a_filtered_results_export_read_during_a_run_misses_no_row() {
    const N: usize = 3_000;
    let seed = Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![crate::support::provider(POD19, Integration::Pod19, "pod19-user", "pod19-key", true)],
        carrier_rate_plans: vec![crate::support::rate_plan(1, POD19, "RP-1GB", None, None)],
        devices: (0..N)
            .map(|i| crate::support::device(POD19, bench_iccid(200_000 + i), "ACTIVATION_READY", Some("RP-1GB")))
            .collect(),
        ..Seed::default()
    };
    let app = TestApp::start(seed, |_| {}).await;
    let devices: Vec<String> = (0..N).map(|i| bench_iccid(200_000 + i)).collect();
    let id = app
        .accepted(&json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices,
                          "StatusUpdate": {"TargetStatus": "Active"}}))
        .await;
    let (mut reads, mut missing) = (0, 0);
    loop {
        let csv = app.text(&format!("/M2M/BulkChange/{id}/Results?status=PENDING")).await;
        let exported: std::collections::HashSet<&str> =
            csv.lines().skip(1).filter_map(|l| l.split(',').next()).map(|c| c.trim_matches('"')).collect();
        // Rows never go back to PENDING: one PENDING now was PENDING for the whole read.
        let still =
            app.stack.store.rows_after(1, id, Some(domain::RowStatus::Pending), 0, N as u32).await.expect("rows");
        missing += still.iter().filter(|r| !exported.contains(r.iccid.as_str())).count();
        reads += 1;
        if still.is_empty() {
            break;
        }
    }
    eprintln!("measured: {reads} reads of the PENDING export during the run, {missing} rows missing");
    assert!(reads > 1, "the export was read while rows were still PENDING");
    assert_eq!(missing, 0, "a row PENDING for the whole read is in the export");
    app.final_status(id, Duration::from_secs(60)).await;
}

/// A row an earlier attempt may have sent (a retry's), whose device cannot be read when it is worked: it is not
/// called failed; it waits, is read again once the result wait has passed, and then ends as the carrier says.
#[tokio::test]
async fn a_row_whose_check_read_fails_is_read_again_later_not_failed() {
    let app = spawn_with(|c| c.worker.carrier_result_wait = Duration::from_millis(500)).await;
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.remove("RP-5GB");
    let first = app.accepted(&carrier_rate_plan(POD19, &[ready(21)], "RP-5GB", None)).await;
    assert_eq!(app.wait_final(first).await["Counts"], json!({"API_FAILED": 1}));
    app.cc(POD19).state.account.lock().expect("lock").rate_plans.insert("RP-5GB".into());
    let puts =
        || app.cc(POD19).state.calls().iter().filter(|c| c.method == "PUT" && c.path.contains(&ready(21))).count();
    let puts_before = puts();
    // The retry reads the device before sending (its first attempt may have been applied): that read fails,
    // every attempt of it (5).
    app.cc(POD19).state.harness.set_faults(simulators::Faults { fail_next: 5, ..app.cc(POD19).state.harness.faults() });
    let (code, answer) =
        app.post_raw(&format!("/M2M/BulkChange/{first}/Retry"), "", Some(&app.token)).await.into_status_body();
    assert_eq!(code, 202, "{answer}");
    let retried = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    let found = row(&retried, &ready(21));
    assert_eq!(found["Status"], "PROCESSED", "{retried}");
    assert!(found["Claims"].as_i64().unwrap_or_default() >= 2, "worked again after its wait: {found}");
    assert_eq!(puts() - puts_before, 1, "the retry sent the change once, after a read that succeeded");
}

/// Undo of a carrier rate plan change: each device goes back to its own plan on the carrier and in the database;
/// a device whose plan a later bulk change set again is an ERROR row of the undo saying so, and keeps that plan.
#[tokio::test]
async fn an_undo_of_a_plan_change_restores_each_plan_and_refuses_a_device_changed_since() {
    let app = spawn().await;
    let devices = [ready(30), ready(31), ready(32)];
    let id = app.accepted(&carrier_rate_plan(POD19, &devices, "RP-5GB", None)).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 3}));
    // A later bulk change sets device 32's plan again.
    let later = app.accepted(&carrier_rate_plan(POD19, &devices[2..], "RP-1GB", None)).await;
    assert_eq!(app.wait_final(later).await["Counts"], json!({"PROCESSED": 1}));
    let (code, answer) = app.undo(id, false, "undo").await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["Counts"], json!({"Restore": 2, "Refused": 1}), "{answer}");
    let undo = answer["BulkChangeId"].as_i64().expect("id");
    let status = app.wait_final(undo).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 2, "ERROR": 1}), "{status}");
    assert!(
        row(&status, &devices[2])["StatusDetails"].as_str().is_some_and(|d| d.contains("changed since")),
        "{}",
        row(&status, &devices[2])
    );
    for iccid in &devices {
        let sim = app.cc(POD19).state.device(iccid).expect("sim");
        let stored = app.stack.store.device_by_iccid(1, iccid).await.expect("read").expect("device");
        assert_eq!(
            (sim.rate_plan.as_deref(), stored.carrier_rate_plan.as_deref()),
            (Some("RP-1GB"), Some("RP-1GB")),
            "{iccid}"
        );
    }
    let plan_writes = app.cc(POD19).state.calls().iter().filter(|c| c.method == "PUT").count();
    assert_eq!(plan_writes, 3 + 1 + 2, "the change, the later change, and two undone");
}

/// Undo of an IMEI change on Control Center: the device's IMEI goes back to the one before, on the carrier (its
/// modem id) and in the database.
#[tokio::test]
async fn an_undo_of_an_imei_change_puts_the_imei_before_back() {
    let app = spawn().await;
    let first = app.accepted(&change_identifier(&[active(2)], None, Some("356938035643809"))).await;
    let done = app.wait_final(first).await;
    assert_eq!(row(&done, &active(2))["Status"], "PROCESSED", "{}", row(&done, &active(2)));
    let second = app.accepted(&change_identifier(&[active(2)], None, Some("356938035643817"))).await;
    let done = app.wait_final(second).await;
    assert_eq!(row(&done, &active(2))["Status"], "PROCESSED", "{}", row(&done, &active(2)));
    let (code, answer) = app.undo(second, false, "undo").await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["Counts"], json!({"Restore": 1, "Refused": 0}), "{answer}");
    let status = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 1}), "{status}");
    assert_eq!(app.cc(POD19).state.device(&active(2)).expect("sim").modem_id.as_deref(), Some("356938035643809"));
    let stored = app.stack.store.device_by_iccid(1, &active(2)).await.expect("read").expect("device");
    assert_eq!(stored.imei.as_deref(), Some("356938035643809"));
}

/// The open Rev.io service lines of each device on the simulator (ICCID → line ids).
fn open_lines(app: &TestApp, devices: &[String]) -> std::collections::BTreeMap<String, Vec<i64>> {
    let services = app.stack.simulators.rev_io[&REV].state.services();
    devices
        .iter()
        .map(|d| {
            let open = services
                .iter()
                .filter(|s| s.number2.as_deref() == Some(d.as_str()) && s.disconnected_date.is_none())
                .map(|s| s.service_id)
                .collect();
            (d.clone(), open)
        })
        .collect()
}

/// Undo of a customer assignment that created service lines: on Rev.io every device has again the open lines it
/// had (the created ones closed, kept, disconnected; a line that was there before left open), and in the database
/// each device is billed to the customer it had before (none, or another) with no active line the assignment made.
/// Undoing the undo assigns each device again, and creates no line.
#[tokio::test]
async fn an_undo_of_a_customer_assignment_closes_its_service_lines_and_restores_each_customer() {
    let app = spawn().await;
    let fresh: Vec<String> = (10..16).map(ready).collect();
    let mut devices = fresh.clone();
    devices.push(with_rev_service());
    // Two devices were Rev customer 1001's before (no line); the others had no customer.
    let earlier = app.accepted(&assignment(&fresh[..2], "1001", false)).await;
    assert_eq!(app.wait_final(earlier).await["Counts"], json!({"PROCESSED": 2}));
    let mut customer_before = Vec::new();
    for d in &devices {
        customer_before
            .push(app.stack.store.device_by_iccid(1, d).await.expect("read").expect("device").rev_customer_id);
    }
    let lines_before = open_lines(&app, &devices);
    let services_before = app.stack.simulators.rev_io[&REV].state.services().len();

    // The device already billed through line 11501 keeps it ("already exists"); the others get a new line each.
    let id = app.accepted(&assignment(&devices[..6], "1002", true)).await;
    let other = app.accepted(&assignment(&devices[6..], "1001", true)).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 6}));
    assert_eq!(app.wait_final(other).await["Counts"], json!({"PROCESSED": 1}));
    let assigned = open_lines(&app, &devices);
    assert!(fresh.iter().all(|d| assigned[d].len() == 1), "a line each: {assigned:?}");
    assert_eq!(assigned[&with_rev_service()], vec![11_501]);

    let (code, plan) = app.undo(id, true, "dry").await;
    assert_eq!((code, &plan["Counts"]), (200, &json!({"Restore": 6, "Refused": 0})), "{plan}");
    assert!(plan["Rows"].as_array().into_iter().flatten().all(|r| r["CloseRevService"].is_i64()), "{plan}");
    let (code, answer) = app.undo(id, false, "undo").await;
    assert_eq!(code, 202, "{answer}");
    let undone = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 6}), "{undone}");
    // The existing line of the device assigned by the other bulk change: its assignment made no line, the undo
    // closes none.
    let (code, answer) = app.undo(other, false, "undo-other").await;
    assert_eq!(code, 202, "{answer}");
    assert!(answer["Rows"][0]["CloseRevService"].is_null(), "{answer}");
    app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;

    let lines_after = open_lines(&app, &devices);
    let rev = &app.stack.simulators.rev_io[&REV].state;
    let closes = rev.harness.calls().iter().filter(|c| c.method == "PATCH").count();
    let mut restored = 0;
    for (d, was) in devices.iter().zip(&customer_before) {
        let stored = app.stack.store.device_by_iccid(1, d).await.expect("read").expect("device");
        let line = app.stack.store.active_rev_service(1, stored.id).await.expect("read");
        let expected_line = lines_before[d].first().copied();
        if stored.rev_customer_id == *was && line.map(|l| l.rev_service_id) == expected_line {
            restored += 1;
        }
    }
    println!(
        "undo of an assignment: {restored} of {} devices restored in the database, open lines {}",
        devices.len(),
        if lines_after == lines_before { "as before" } else { "differ" }
    );
    assert_eq!(lines_after, lines_before, "every device has the open lines it had");
    assert_eq!(restored, devices.len());
    assert_eq!(closes, 6, "one close per created line");
    assert_eq!(rev.services().len(), services_before + 6, "closed lines are kept, disconnected");

    // The undo undone: each device assigned again, no new line.
    let undo = undone["BulkChangeId"].as_i64().expect("id");
    let (code, again) = app.undo(undo, false, "redo").await;
    assert_eq!((code, &again["Counts"]), (202, &json!({"Restore": 6, "Refused": 0})), "{again}");
    let redone = app.wait_final(again["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(redone["Counts"], json!({"PROCESSED": 6}), "{redone}");
    for d in &fresh {
        let stored = app.stack.store.device_by_iccid(1, d).await.expect("read").expect("device");
        assert_eq!(stored.rev_customer_id.as_deref(), Some("1002"), "{d}");
    }
    assert_eq!(rev.services().len(), services_before + 6, "no line created by the redo");
}

/// Rev.io closes the line and the answer is lost (502): the undo reads the line, finds it disconnected, and does
/// not send the close again; the row says what the read found.
#[tokio::test]
async fn an_undo_whose_close_answer_was_lost_reads_the_line_and_sends_nothing_again() {
    let app = spawn().await;
    let id = app.accepted(&assignment(&[ready(20)], "1002", true)).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 1}));
    let rev = &app.stack.simulators.rev_io[&REV].state;
    rev.harness.set_faults(simulators::Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let (code, answer) = app.undo(id, false, "undo").await;
    assert_eq!(code, 202, "{answer}");
    let undone = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    let r = row(&undone, &ready(20));
    assert_eq!(r["Status"], "PROCESSED", "{undone}");
    assert!(r["StatusDetails"].as_str().is_some_and(|d| d.contains("closed (disconnected")), "{r}");
    let calls = rev.harness.calls();
    let patches = calls.iter().filter(|c| c.method == "PATCH").count();
    let reads = calls.iter().filter(|c| c.method == "GET" && c.path.starts_with("/v1/Services/")).count();
    assert_eq!((patches, reads), (1, 1), "one close, one read to settle it: {calls:?}");
    assert!(open_lines(&app, &[ready(20)])[&ready(20)].is_empty());
}

/// Undo of a SIM swap on Control Center: the device goes back to its SIM (in service again, with the plans), the
/// SIM swapped in is deactivated (no way back to its pre-activation status), and the database has the old ICCID.
#[tokio::test]
async fn an_undo_of_a_sim_swap_puts_the_device_back_on_its_sim() {
    let app = spawn().await;
    let new = spare_sim(&app, 0);
    let old = active(1);
    let id = app.accepted(&change_identifier(std::slice::from_ref(&old), Some(&new), None)).await;
    assert_eq!(row(&app.wait_final(id).await, &old)["Status"], "PROCESSED");
    let (code, answer) = app.undo(id, false, "undo-swap").await;
    assert_eq!((code, &answer["Counts"]), (202, &json!({"Restore": 1, "Refused": 0})), "{answer}");
    assert_eq!(answer["Rows"][0]["ICCID"], json!(new), "the undo's row is the device on its new SIM: {answer}");
    let undone = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 1}), "{undone}");
    let (old_sim, new_sim) =
        (app.cc(POD19).state.device(&old).expect("old"), app.cc(POD19).state.device(&new).expect("new"));
    assert_eq!(
        (old_sim.status.as_str(), old_sim.rate_plan.as_deref(), new_sim.status.as_str()),
        ("ACTIVATED", Some("RP-1GB"), "DEACTIVATED")
    );
    assert!(app.stack.store.device_by_iccid(1, &old).await.expect("read").is_some(), "back on its SIM");
    assert!(app.stack.store.device_by_iccid(1, &new).await.expect("read").is_none());
}

/// Undo of a username change with a cost center: the username goes back on the carrier and here, the cost center
/// back on the device's Rev.io service (kept by the row before it sent the new one); undone again, the other way.
#[tokio::test]
async fn an_undo_of_a_username_change_puts_the_cost_center_before_back_on_rev_io() {
    let app = spawn().await;
    let device = with_rev_service();
    let cost_center = |app: &TestApp| {
        let services = app.stack.simulators.rev_io[&REV].state.services();
        services.iter().find(|s| s.service_id == 11_501).and_then(|s| s.fields.get("1").cloned())
    };
    let first = app.accepted(&edit_username(POD19, std::slice::from_ref(&device), "forklift-3", Some("EAST"))).await;
    assert_eq!(app.wait_final(first).await["Counts"], json!({"PROCESSED": 1}));
    let second = app.accepted(&edit_username(POD19, std::slice::from_ref(&device), "forklift-4", Some("WEST"))).await;
    assert_eq!(app.wait_final(second).await["Counts"], json!({"PROCESSED": 1}));
    assert_eq!(cost_center(&app).as_deref(), Some("WEST"));

    let (code, answer) = app.undo(second, false, "undo").await;
    assert_eq!((code, &answer["Counts"]), (202, &json!({"Restore": 1, "Refused": 0})), "{answer}");
    assert_eq!(answer["Rows"][0]["Restore"]["CostCenters"]["CostCenter"], "EAST", "{answer}");
    let undone = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 1}), "{undone}");
    assert_eq!(cost_center(&app).as_deref(), Some("EAST"), "the cost center before, on Rev.io");
    assert_eq!(app.cc(POD19).state.device(&device).expect("sim").device_id.as_deref(), Some("forklift-3"));
    let stored = app.stack.store.device_by_iccid(1, &device).await.expect("read").expect("device");
    assert_eq!(stored.username.as_deref(), Some("forklift-3"));

    // The undo undone: the undo's row kept WEST before it sent EAST.
    let (code, again) = app.undo(answer["BulkChangeId"].as_i64().expect("id"), false, "redo").await;
    assert_eq!((code, &again["Counts"]), (202, &json!({"Restore": 1, "Refused": 0})), "{again}");
    let redone = app.wait_final(again["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(redone["Counts"], json!({"PROCESSED": 1}), "{redone}");
    assert_eq!(cost_center(&app).as_deref(), Some("WEST"));
}

/// `make chaos SEED=179` (issue 20): a worker killed after a SIM swap's last step, before recording it. The row
/// taken over ran the swap again: the old SIM was deactivated by then, and step 2 copied that status to the new SIM,
/// taking the device out of service. The next worker now finds the swap finished, sends nothing, and records it.
#[tokio::test]
async fn a_sim_swap_finished_by_a_dead_worker_is_recorded_not_run_again() {
    let app = spawn_with(|c| c.run_worker = false).await;
    let new = spare_sim(&app, 0);
    let old = active(1);
    let id = app.accepted(&change_identifier(std::slice::from_ref(&old), Some(&new), None)).await;
    // GIVEN a worker claimed the row, swapped the SIMs on the carrier and died before recording it
    let long_ago = chrono::Utc::now() - chrono::Duration::seconds(30);
    let claimed =
        engine::ports::Leases::claim_rows(&*app.stack.store, id, "dead", 10, Duration::from_secs(1), long_ago)
            .await
            .expect("claim");
    assert_eq!(claimed.len(), 1);
    let cc = app.cc(POD19);
    let old_sim = cc.state.device(&old).expect("old");
    let swapped_in = simulators::SimDevice {
        status: "ACTIVATED".into(),
        rate_plan: old_sim.rate_plan.clone(),
        communication_plan: old_sim.communication_plan.clone(),
        device_id: old_sim.device_id.clone(),
        ..cc.state.device(&new).expect("new")
    };
    cc.state.upsert_devices(vec![swapped_in, simulators::SimDevice { status: "DEACTIVATED".into(), ..old_sim }]);
    // WHEN a new worker takes the row over
    let _worker = app.stack.spawn_worker(WorkerConfig::default()).expect("worker");
    let status = app.wait_final(id).await;
    // THEN the device stays on its new SIM, in service, and nothing is sent again
    assert_eq!(row(&status, &old)["Status"], "PROCESSED", "{status}");
    assert_eq!(cc.state.device(&new).expect("new").status, "ACTIVATED", "the device stays in service");
    assert!(!cc.state.calls().iter().any(|c| c.method == "PUT"), "nothing sent again");
    assert!(app.stack.store.device_by_iccid(1, &new).await.expect("read").is_some(), "recorded on its new SIM");
}
