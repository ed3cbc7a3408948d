//! Pond end to end through the HTTP API, against the Pond simulator: a plan change of many SIMs (the calls per
//! device), a failure at each step of the package saga (never a SIM without an active package, a retry that
//! finishes what is left), status updates, intake refusals, writes disabled and throttling.

use domain::Integration;
use std::time::Duration;

use crate::support::{TestApp, device, provider, rate_plan, row};
use cli::bench::bench_iccid;
use serde_json::{Value, json};
use simulators::Faults;
use simulators::pond::{PondBehaviour, PondSim};
use store::Seed;
use store::seed::{SeedRevCustomer, SeedServiceProvider, SeedTenant};

const POND: i64 = 40;
const OLD_TYPE: i64 = 4711;
const NEW_TYPE: i64 = 4712;

fn seed(sims: usize, writes: bool) -> Seed {
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![SeedServiceProvider {
            carrier_settings: Some(json!({"DistributorId": "D-40"})),
            ..provider(POND, Integration::Pond, "", "pond-key", writes)
        }],
        carrier_rate_plans: vec![
            rate_plan(1, POND, "POND-1GB", Some(OLD_TYPE), None),
            rate_plan(2, POND, "POND-5GB", Some(NEW_TYPE), None),
            rate_plan(3, POND, "POND-LEGACY", None, None),
        ],
        devices: (0..sims).map(|i| device(POND, bench_iccid(i), "ACTIVE", Some("POND-1GB"))).collect(),
        rev_customers: vec![SeedRevCustomer { tenant_id: 1, rev_customer_id: "1001".into(), name: "Acme".into() }],
        ..Default::default()
    }
}

fn plan_change(devices: &[String], plan: &str) -> Value {
    json!({"ServiceProviderId": POND, "ChangeType": 7, "PortalType": 0, "Devices": devices,
           "CarrierRatePlanUpdate": {"CarrierRatePlan": plan}})
}

fn status_update(devices: &[String], target: &str) -> Value {
    json!({"ServiceProviderId": POND, "ChangeType": 3, "PortalType": 0, "Devices": devices,
           "StatusUpdate": {"TargetStatus": target}})
}

impl TestApp {
    fn pond(&self) -> &PondSim {
        &self.stack.simulators.pond[&POND]
    }

    async fn retry(&self, id: i64) -> i64 {
        let response = self
            .http
            .post(format!("{}/M2M/BulkChange/{id}/Retry", self.stack.base_url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("retry");
        assert_eq!(response.status().as_u16(), 202);
        let answer: Value = response.json().await.expect("json");
        answer["BulkChangeId"].as_i64().expect("id")
    }
}

/// 100 SIMs (`POND_DEVICES` scales it): each ends on exactly one ACTIVE package, of the new type, after four
/// calls (read packages, add, activate, terminate the old one).
#[tokio::test]
async fn a_plan_change_of_a_hundred_sims_takes_four_calls_each_and_leaves_one_active_package() {
    let n: usize = std::env::var("POND_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let app = TestApp::start(seed(n, true), |_| {}).await;
    let devices: Vec<String> = (0..n).map(bench_iccid).collect();
    let id = app.accepted(&plan_change(&devices, "POND-5GB")).await;
    let status = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    for iccid in &devices {
        let active = app.pond().state.active_packages(iccid);
        assert_eq!(active.len(), 1, "{iccid}: {active:?}");
        assert_eq!(active[0].package_type_id, NEW_TYPE);
        let stored = app.stack.store.devices_by_iccid(1, std::slice::from_ref(iccid)).await.expect("device");
        assert_eq!(stored[0].carrier_rate_plan.as_deref(), Some("POND-5GB"));
    }
    let calls = app.pond().state.calls();
    let per_device = calls.len() as f64 / n as f64;
    println!(
        "pond plan change: {n} SIMs, {} calls ({per_device:.2} per device: {} GET, {} POST)",
        calls.len(),
        calls.iter().filter(|c| c.method == "GET").count(),
        calls.iter().filter(|c| c.method == "POST").count()
    );
    assert_eq!(calls.len(), 4 * n, "read, add, activate, terminate per SIM");
}

#[tokio::test]
async fn a_failed_step_never_leaves_a_sim_without_an_active_package_and_a_retry_finishes_the_rest() {
    let app = TestApp::start(seed(3, true), |_| {}).await;
    let devices: Vec<String> = (0..3).map(bench_iccid).collect();
    let old_of = |i: usize| app.pond().state.active_packages(&devices[i])[0].package_id.clone();
    let (old0, old1, old2) = (old_of(0), old_of(1), old_of(2));
    app.pond().state.set_behaviour(PondBehaviour {
        fail_add_for: [devices[0].clone()].into(),
        fail_activate_for: [devices[1].clone()].into(),
        fail_terminate_of: [old2.clone()].into(),
        ..Default::default()
    });
    let first = app.accepted(&plan_change(&devices, "POND-5GB")).await;
    let status = app.final_status(first, Duration::from_secs(30)).await;
    let details = |i: usize| row(&status, &devices[i])["StatusDetails"].as_str().unwrap_or_default().to_string();
    for iccid in &devices {
        assert_eq!(row(&status, iccid)["Status"], "API_FAILED", "{status}");
    }
    // Add failed: the SIM keeps its old package.
    assert!(details(0).contains("not added"), "{}", details(0));
    let active0 = app.pond().state.active_packages(&devices[0]);
    assert_eq!((active0.len(), active0[0].package_id.as_str()), (1, old0.as_str()));
    // Activation failed: the old package untouched, the new one left PENDING for a retry.
    assert!(details(1).contains("not activated") && details(1).contains(&old1), "{}", details(1));
    let packages1 = app.pond().state.packages(&devices[1]);
    assert_eq!(app.pond().state.active_packages(&devices[1])[0].package_id, old1);
    assert!(packages1.iter().any(|p| p.package_type_id == NEW_TYPE && p.status == "PENDING"), "{packages1:?}");
    // Termination failed: the SIM is on the new, active package; the row names the package left.
    assert!(details(2).contains("still need terminating") && details(2).contains(&old2), "{}", details(2));
    let active2 = app.pond().state.active_packages(&devices[2]);
    assert!(active2.iter().any(|p| p.package_type_id == NEW_TYPE), "{active2:?}");
    let stored = app.stack.store.devices_by_iccid(1, &devices[2..3]).await.expect("device");
    assert_eq!(stored[0].carrier_rate_plan.as_deref(), Some("POND-5GB"), "the SIM is on the new plan");
    for iccid in &devices {
        assert!(!app.pond().state.active_packages(iccid).is_empty(), "{iccid} has no active package");
    }

    // Pond fixes its side; the operator retries: what is left is done, nothing twice.
    app.pond().state.set_behaviour(PondBehaviour::default());
    let adds_before =
        app.pond().state.calls().iter().filter(|c| c.method == "POST" && c.path.ends_with("/packages")).count();
    let second = app.retry(first).await;
    let retried = app.final_status(second, Duration::from_secs(30)).await;
    assert_eq!(retried["Status"], "PROCESSED", "{retried}");
    for iccid in &devices {
        let active = app.pond().state.active_packages(iccid);
        assert_eq!(active.len(), 1, "{iccid}: {active:?}");
        assert_eq!(active[0].package_type_id, NEW_TYPE);
        let new_packages =
            app.pond().state.packages(iccid).into_iter().filter(|p| p.package_type_id == NEW_TYPE).count();
        assert_eq!(new_packages, 1, "{iccid}: one package of the new plan, never a second");
    }
    let adds = app.pond().state.calls().iter().filter(|c| c.method == "POST" && c.path.ends_with("/packages")).count();
    assert_eq!(adds - adds_before, 1, "only the SIM whose add failed gets a package added on the retry");
}

#[tokio::test]
async fn status_updates_disable_and_enable_every_service() {
    let app = TestApp::start(seed(2, true), |_| {}).await;
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    // With the Rev customer to assign after the carrier's success, as for every carrier.
    let mut inactive = status_update(&devices, "Inactive");
    inactive["StatusUpdate"]["AccountNumber"] = json!("1001");
    let id = app.accepted(&inactive).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(status["Status"], "PROCESSED");
    for iccid in &devices {
        assert_eq!(app.pond().state.services_enabled(iccid), Some(false));
        let stored = app.stack.store.devices_by_iccid(1, std::slice::from_ref(iccid)).await.expect("device");
        assert_eq!((stored[0].device_status_id, stored[0].rev_customer_id.as_deref()), (1302, Some("1001")));
        let details = row(&status, iccid)["StatusDetails"].as_str().unwrap_or_default().to_string();
        assert!(details.contains("assigned to Rev customer 1001"), "{details}");
    }
    app.pond()
        .state
        .set_behaviour(PondBehaviour { fail_services_for: [devices[1].clone()].into(), ..Default::default() });
    let id = app.accepted(&status_update(&devices, "ACTIVE")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(row(&status, &devices[0])["Status"], "PROCESSED");
    let refused = row(&status, &devices[1]);
    assert_eq!(refused["Status"], "API_FAILED");
    assert!(refused["StatusDetails"].as_str().unwrap_or_default().contains("could not be changed"), "{refused}");
    assert_eq!(app.pond().state.services_enabled(&devices[0]), Some(true));
    assert_eq!(app.pond().state.services_enabled(&devices[1]), Some(false), "the refused SIM is unchanged");
    let stored = app.stack.store.devices_by_iccid(1, &devices[1..]).await.expect("device");
    assert_eq!(stored[0].device_status_id, 1302, "its status is not written either");
}

/// Two clients submit the same plan change at once while two worker processes run: the database lets one change
/// per SIM be open, and however the work is shared, each SIM gets one new package and ends with one ACTIVE.
#[tokio::test]
async fn two_clients_and_two_workers_racing_add_one_package_per_sim() {
    let n = 40;
    let app = TestApp::start(seed(n, true), |c| c.run_worker = false).await;
    let (_one, _two) = (app.worker_process("one"), app.worker_process("two"));
    let devices: Vec<String> = (0..n).map(bench_iccid).collect();
    let body = plan_change(&devices, "POND-5GB");
    let (a, b) = tokio::join!(app.submit(&body), app.submit(&body));
    let mut processed = 0;
    for (code, answer) in [a, b] {
        assert_eq!(code, 202, "{answer}");
        let id = answer["BulkChangeId"].as_i64().expect("id");
        let status = app.final_status(id, Duration::from_secs(60)).await;
        processed += status["Counts"]["PROCESSED"].as_i64().unwrap_or(0);
    }
    assert!(processed >= n as i64, "every SIM changed by one of the two: {processed}");
    let calls = app.pond().state.calls();
    for iccid in &devices {
        let adds =
            calls.iter().filter(|c| c.method == "POST" && c.path.ends_with(&format!("/{iccid}/packages"))).count();
        assert_eq!(adds, 1, "{iccid}: one package added");
        let active = app.pond().state.active_packages(iccid);
        assert_eq!((active.len(), active[0].package_type_id), (1, NEW_TYPE), "{iccid}: {active:?}");
    }
}

/// The Rev.io line a status update asks for is created once per SIM after Pond's success, as for every carrier.
#[tokio::test]
async fn a_status_update_creates_one_rev_io_line_per_sim() {
    let mut seeded = seed(2, true);
    seeded.service_providers.push(SeedServiceProvider {
        client_code: Some("acme".into()),
        subscription_key: Some("sub-key".into()),
        ..provider(41, Integration::RevIo, "rev-user", "rev-password", true)
    });
    let app = TestApp::start(seeded, |_| {}).await;
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    let mut body = status_update(&devices, "Inactive");
    body["StatusUpdate"]["RevService"] = json!({"RevCustomerId": "1001", "CreateRevService": true, "ProviderId": 12});
    let id = app.accepted(&body).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    let services = app.stack.simulators.rev_io[&41].state.services();
    for iccid in &devices {
        let lines = services.iter().filter(|s| s.number2.as_deref() == Some(iccid.as_str())).count();
        assert_eq!(lines, 1, "one Rev.io line for {iccid}");
        assert!(
            row(&status, iccid)["StatusDetails"].as_str().unwrap_or_default().contains("Rev.io service"),
            "{status}"
        );
    }
}

#[tokio::test]
async fn the_api_refuses_what_pond_cannot_do() {
    let app = TestApp::start(seed(1, true), |c| c.run_worker = false).await;
    let devices = vec![bench_iccid(0)];
    let refused = |body: Value, field: &'static str| {
        let app = &app;
        async move {
            let (status, answer) = app.submit(&body).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["errors"][0]["field"], field, "{answer}");
        }
    };
    refused(status_update(&devices, "Suspended"), "StatusUpdate.TargetStatus").await;
    refused(plan_change(&devices, "POND-LEGACY"), "CarrierRatePlanUpdate.CarrierRatePlan").await;
    refused(plan_change(&devices, "POND-NONE"), "CarrierRatePlanUpdate.CarrierRatePlan").await;
    let mut with_comm = plan_change(&devices, "POND-5GB");
    with_comm["CarrierRatePlanUpdate"]["CommunicationPlan"] = json!("CP");
    refused(with_comm, "CarrierRatePlanUpdate.CommunicationPlan").await;
    refused(
        json!({"ServiceProviderId": POND, "ChangeType": 6, "PortalType": 0, "Devices": devices,
               "Username": {"NewUsername": "x"}}),
        "ChangeType",
    )
    .await;
    let mut with_rev = status_update(&devices, "Inactive");
    with_rev["StatusUpdate"]["AccountNumber"] = json!("9999");
    refused(with_rev, "StatusUpdate.AccountNumber").await;
    assert!(app.pond().state.calls().is_empty(), "nothing reached Pond");
}

#[tokio::test]
async fn writes_disabled_fails_every_row_with_one_email_and_nothing_sent() {
    let app = TestApp::start(seed(2, false), |_| {}).await;
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    for body in [plan_change(&devices, "POND-5GB"), status_update(&devices, "Inactive")] {
        let id = app.accepted(&body).await;
        let status = app.final_status(id, Duration::from_secs(30)).await;
        for iccid in &devices {
            assert_eq!(row(&status, iccid)["StatusDetails"], "Writes disabled for this service provider.");
        }
    }
    assert!(app.pond().state.calls().is_empty());
    assert_eq!(app.mails(2, Duration::from_secs(10)).await.len(), 2, "one failure e-mail per bulk change");
}

#[tokio::test]
async fn throttled_calls_are_waited_out_and_every_row_completes() {
    let app = TestApp::start(seed(12, true), |_| {}).await;
    app.pond().state.harness.set_faults(Faults { rate_limit_per_second: Some(10.0), ..Default::default() });
    let devices: Vec<String> = (0..12).map(bench_iccid).collect();
    let id = app.accepted(&status_update(&devices, "Inactive")).await;
    let status = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    let throttled = app.pond().state.calls().iter().filter(|c| c.status == 429).count();
    assert!(throttled > 0, "the simulator's limit was reached (the account's pace is 500/s)");
    assert!(devices.iter().all(|i| app.pond().state.services_enabled(i) == Some(false)));
}

/// Pond applied a termination and its answer was lost (502): the row reads the packages and says what Pond shows
/// (the plan changed, the old package terminated) instead of naming a package that "still needs terminating".
#[tokio::test]
async fn a_termination_whose_answer_was_lost_is_read_back_not_reported_as_left() {
    let app = TestApp::start(seed(1, true), |_| {}).await;
    let devices = vec![bench_iccid(0)];
    let old = app.pond().state.active_packages(&devices[0])[0].package_id.clone();
    app.pond()
        .state
        .set_behaviour(PondBehaviour { lose_terminate_answer_of: [old.clone()].into(), ..Default::default() });
    let id = app.accepted(&plan_change(&devices, "POND-5GB")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    let found = row(&status, &devices[0]);
    let details = found["StatusDetails"].as_str().unwrap_or_default();
    assert_eq!(found["Status"], "PROCESSED", "{status}");
    assert!(details.contains(&format!("terminated {old}")) && details.contains("answer was lost"), "{details}");
    let active = app.pond().state.active_packages(&devices[0]);
    assert_eq!((active.len(), active[0].package_type_id), (1, NEW_TYPE), "{active:?}");
}

/// Pond refused a termination: the SIM is on the new package and still on the old one, billed for both; the row
/// says so, naming the package a retry must terminate.
#[tokio::test]
async fn a_refused_termination_says_the_sim_is_billed_for_both_packages() {
    let app = TestApp::start(seed(1, true), |_| {}).await;
    let devices = vec![bench_iccid(0)];
    let old = app.pond().state.active_packages(&devices[0])[0].package_id.clone();
    app.pond().state.set_behaviour(PondBehaviour { fail_terminate_of: [old.clone()].into(), ..Default::default() });
    let id = app.accepted(&plan_change(&devices, "POND-5GB")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    let found = row(&status, &devices[0]);
    let details = found["StatusDetails"].as_str().unwrap_or_default();
    assert_eq!(found["Status"], "API_FAILED", "{status}");
    assert!(details.contains(&old) && details.contains("billed for both"), "{details}");
    assert_eq!(app.pond().state.active_packages(&devices[0]).len(), 2, "what the row says is what Pond shows");
}

/// A status change whose answer was lost, and whose read-back answered without a status: the row quotes the read
/// that failed and says the change may have taken (it did), instead of quoting only the write's 502.
#[tokio::test]
async fn a_lost_status_answer_with_an_unreadable_status_says_the_read_failed() {
    let app = TestApp::start(seed(1, true), |_| {}).await;
    let devices = vec![bench_iccid(0)];
    app.pond().state.set_behaviour(PondBehaviour {
        lose_services_answer_for: [devices[0].clone()].into(),
        unreadable_services_for: [devices[0].clone()].into(),
        ..Default::default()
    });
    let id = app.accepted(&status_update(&devices, "Inactive")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    let found = row(&status, &devices[0]);
    let details = found["StatusDetails"].as_str().unwrap_or_default();
    assert_ne!(found["Status"], "PROCESSED", "{status}");
    assert!(details.contains("carries no boolean") && details.contains("may show the change"), "{details}");
    let sims = app.pond().state.account.lock().expect("account").sims.clone();
    assert!(!sims[&devices[0]].services_enabled, "the change did take on Pond");
}

/// `make chaos SEED=374` (issue 20): a row that may find what an earlier attempt left (here a retry of a SIM left
/// with two active packages) and cannot read the packages said "nothing was changed". It says now that the SIM may
/// be billed for both packages, until a retry reads them.
#[tokio::test]
async fn an_unreadable_sim_after_an_earlier_attempt_says_it_may_be_billed_for_both() {
    let app = TestApp::start(seed(1, true), |_| {}).await;
    let devices = vec![bench_iccid(0)];
    let old = app.pond().state.active_packages(&devices[0])[0].package_id.clone();
    app.pond().state.set_behaviour(PondBehaviour { fail_terminate_of: [old].into(), ..Default::default() });
    let first = app.accepted(&plan_change(&devices, "POND-5GB")).await;
    let status = app.final_status(first, Duration::from_secs(30)).await;
    assert_eq!(row(&status, &devices[0])["Status"], "API_FAILED", "{status}");
    assert_eq!(app.pond().state.active_packages(&devices[0]).len(), 2, "left with two active packages");
    // The retry cannot read the packages.
    app.pond().state.set_behaviour(PondBehaviour::default());
    app.pond().state.harness.set_faults(Faults { fail_next: 20, ..Default::default() });
    let second = app.retry(first).await;
    let retried = app.final_status(second, Duration::from_secs(30)).await;
    let r = row(&retried, &devices[0]);
    assert_eq!(r["Status"], "API_FAILED", "{retried}");
    let details = r["StatusDetails"].as_str().unwrap_or_default();
    assert!(details.contains("billed for both") && !details.contains("nothing was changed"), "{details}");
}
