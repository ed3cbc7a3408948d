//! Teal end to end through the HTTP API, against the Teal simulator: a plan change of many eSIMs (the calls per
//! device), status updates, callbacks duplicated, reordered, lost and forged, refusals, writes disabled, and a
//! worker process killed between Teal's request and its result.

use domain::Integration;
use std::time::Duration;

use crate::support::{TestApp, device, provider, rate_plan, row};
use cli::bench::bench_iccid;
use serde_json::{Value, json};
use simulators::Faults;
use simulators::teal::TealSim;
use store::Seed;
use store::seed::{SeedDevice, SeedRevCustomer, SeedTenant};

const TEAL: i64 = 50;
const OLD_PLAN: &str = "0f3d5a6e7b8c4d2e9f1a2b3c4d5e6f70";
const NEW_PLAN: &str = "cda438862b284bcdaec82ee516eada14";

fn eid(i: usize) -> String {
    format!("89049032{i:024}")
}

/// eSIMs `0..esims` with EIDs, online on TEAL-1GB; `without_eid` more SIMs without one.
fn seed(esims: usize, without_eid: usize, writes: bool) -> Seed {
    let esim = |i: usize, with_eid: bool| SeedDevice {
        eid: with_eid.then(|| eid(i)),
        ..device(TEAL, bench_iccid(i), "ONLINE", Some("TEAL-1GB"))
    };
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![provider(TEAL, Integration::Teal, "teal-key", "teal-secret", writes)],
        carrier_rate_plans: vec![
            rate_plan(1, TEAL, "TEAL-1GB", None, Some(OLD_PLAN)),
            rate_plan(2, TEAL, "TEAL-5GB", None, Some(NEW_PLAN)),
            rate_plan(3, TEAL, "TEAL-LEGACY", None, None),
        ],
        devices: (0..esims)
            .map(|i| esim(i, true))
            .chain((esims..esims + without_eid).map(|i| esim(i, false)))
            .collect(),
        rev_customers: vec![SeedRevCustomer { tenant_id: 1, rev_customer_id: "1001".into(), name: "Acme".into() }],
        ..Default::default()
    }
}

fn plan_change(devices: &[String], plan: &str) -> Value {
    json!({"ServiceProviderId": TEAL, "ChangeType": 7, "PortalType": 0, "Devices": devices,
           "CarrierRatePlanUpdate": {"CarrierRatePlan": plan}})
}

fn status_update(devices: &[String], target: &str) -> Value {
    json!({"ServiceProviderId": TEAL, "ChangeType": 3, "PortalType": 0, "Devices": devices,
           "StatusUpdate": {"TargetStatus": target}})
}

impl TestApp {
    fn teal(&self) -> &TealSim {
        &self.stack.simulators.teal[&TEAL]
    }

    fn teal_calls(&self, method: &str) -> usize {
        self.teal().state.calls().iter().filter(|c| c.method == method).count()
    }

    async fn callback(&self, query: &str) -> u16 {
        self.http
            .post(format!("{}/Teal/Callback?{query}", self.stack.base_url()))
            .json(&json!({}))
            .send()
            .await
            .expect("callback")
            .status()
            .as_u16()
    }
}

/// 100 eSIMs (`TEAL_DEVICES` scales it) move to a new plan: one assign-plan operation per claimed batch, never
/// sent twice, the result read once per operation after its callback; every eSIM on the new plan.
#[tokio::test]
async fn a_plan_change_of_a_hundred_esims_takes_one_operation_per_batch() {
    let n: usize = std::env::var("TEAL_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    // A poll only 60 s after sending: the callbacks settle the rows.
    let app = TestApp::start(seed(n, 0, true), |c| c.worker.teal_poll_interval = Duration::from_secs(60)).await;
    let devices: Vec<String> = (0..n).map(bench_iccid).collect();
    let id = app.accepted(&plan_change(&devices, "TEAL-5GB")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    for i in 0..n {
        assert_eq!(app.teal().state.esim(&eid(i)).expect("esim").plan_uuid.as_deref(), Some(NEW_PLAN));
    }
    let stored = app.stack.store.devices_by_iccid(1, &devices[..1]).await.expect("device");
    assert_eq!(stored[0].carrier_rate_plan.as_deref(), Some("TEAL-5GB"));
    let (posts, gets, operations) = (app.teal_calls("POST"), app.teal_calls("GET"), app.teal().state.operations());
    println!(
        "teal plan change: {n} eSIMs, {operations} operations, {posts} POST, {gets} GET ({:.3} calls per device)",
        (posts + gets) as f64 / n as f64
    );
    assert_eq!(posts, operations, "no operation sent twice");
    assert!(operations <= n.div_ceil(64) + 1, "eSIMs are batched: {operations} operations for {n}");
    assert_eq!(gets, operations, "one result read per operation, woken by its callback");
}

#[tokio::test]
async fn status_updates_disable_and_enable_data_by_eid() {
    let app = TestApp::start(seed(2, 0, true), |_| {}).await;
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    // With the Rev customer to assign once Teal's result is in, as for every carrier.
    let mut stopped = status_update(&devices, "Stopped");
    stopped["StatusUpdate"]["AccountNumber"] = json!("1001");
    let id = app.accepted(&stopped).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(status["Status"], "PROCESSED");
    for (i, iccid) in devices.iter().enumerate() {
        assert!(app.teal().state.esim(&eid(i)).expect("esim").suspended, "data disabled");
        let details = row(&status, iccid)["StatusDetails"].as_str().unwrap_or_default().to_string();
        assert!(details.contains("assigned to Rev customer 1001"), "{details}");
    }
    let stored = app.stack.store.devices_by_iccid(1, &devices[..1]).await.expect("device");
    assert_eq!((stored[0].device_status_id, stored[0].rev_customer_id.as_deref()), (1203, Some("1001")));
    let id = app.accepted(&status_update(&devices[..1], "Online")).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");
    assert!(
        !app.teal().state.esim(&eid(0)).expect("esim").suspended,
        "enable for online (the legacy system disabled it)"
    );
    assert!(app.teal().state.esim(&eid(1)).expect("esim").suspended);
}

#[tokio::test]
async fn lost_callbacks_are_made_up_for_by_polling() {
    let app = TestApp::start(seed(3, 0, true), |c| {
        c.teal_behaviour.drop_callbacks = true;
        c.worker.teal_poll_interval = Duration::from_millis(300);
    })
    .await;
    let devices: Vec<String> = (0..3).map(bench_iccid).collect();
    let id = app.accepted(&status_update(&devices, "Stopped")).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");
    assert_eq!(app.teal_calls("POST"), 1);
    assert!(app.teal_calls("GET") >= 1, "the result was polled");
}

#[tokio::test]
async fn an_operation_that_never_finishes_is_given_up() {
    let app = TestApp::start(seed(1, 0, true), |c| {
        c.teal_behaviour.processing = Duration::from_secs(3600);
        c.worker.teal_poll_interval = Duration::from_millis(200);
        c.worker.teal_give_up = Duration::from_secs(1);
    })
    .await;
    let id = app.accepted(&status_update(&[bench_iccid(0)], "Stopped")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    let r = row(&status, &bench_iccid(0));
    assert_eq!(r["Status"], "API_FAILED", "{r}");
    assert!(r["StatusDetails"].as_str().unwrap_or_default().starts_with("No result from carrier"), "{r}");
    assert!(app.teal_calls("GET") >= 1, "asked before giving up");
    assert_eq!(app.teal_calls("POST"), 1, "never sent again while Teal knows the request");
}

/// Callbacks held, then delivered newest first and each twice, plus forged ones: each operation's rows are
/// settled once, and a forged callback changes nothing.
#[tokio::test]
async fn duplicated_reordered_and_forged_callbacks_settle_each_row_once() {
    let app = TestApp::start(seed(2, 0, true), |c| {
        c.teal_behaviour.hold_callbacks = true;
        c.worker.teal_poll_interval = Duration::from_secs(60);
    })
    .await;
    let first = app.accepted(&status_update(&[bench_iccid(0)], "Stopped")).await;
    let second = app.accepted(&plan_change(&[bench_iccid(1)], "TEAL-5GB")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.teal().state.held_callbacks().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "two operations were never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Forged: no signature, another request's signature, a made-up request id.
    let held = app.teal().state.held_callbacks();
    let sig_of = |url: &str| url.split("sig=").nth(1).and_then(|s| s.split('&').next()).unwrap_or_default().to_string();
    let request_of = |url: &str| url.split("requestId=").nth(1).unwrap_or_default().to_string();
    assert_eq!(app.callback(&format!("requestId={}", request_of(&held[0]))).await, 401);
    assert_eq!(app.callback(&format!("sig={}&requestId={}", sig_of(&held[0]), request_of(&held[1]))).await, 401);
    assert_eq!(app.callback(&format!("sig={}&requestId=made-up", sig_of(&held[0]))).await, 401);
    let pending = app.stack.store.bulk_change(None, first).await.expect("read").expect("bulk");
    assert!(!pending.status.is_final(), "a forged callback settles nothing");

    assert_eq!(app.teal().state.release_callbacks(true, 2).await, vec![200; 4]);
    let one = app.final_status(first, Duration::from_secs(30)).await;
    let two = app.final_status(second, Duration::from_secs(30)).await;
    assert_eq!((one["Status"].as_str(), two["Status"].as_str()), (Some("PROCESSED"), Some("PROCESSED")));
    assert_eq!(app.teal_calls("POST"), 2, "each operation sent once");
    assert!(app.teal_calls("GET") <= 4, "results read once per wake-up at most: {}", app.teal_calls("GET"));
    assert!(app.teal().state.esim(&eid(0)).expect("esim").suspended);
    assert_eq!(app.teal().state.esim(&eid(1)).expect("esim").plan_uuid.as_deref(), Some(NEW_PLAN));
    // A late duplicate finds nothing waiting.
    let late = held.iter().map(|u| format!("sig={}&requestId={}", sig_of(u), request_of(u))).next().unwrap_or_default();
    assert_eq!(app.callback(&late).await, 200);
}

#[tokio::test]
async fn refusals_say_why_and_the_api_refuses_what_teal_cannot_do() {
    let mut seeded = seed(2, 1, true);
    seeded.device_statuses = vec![domain::rules::DeviceStatusDef {
        id: 1299,
        integration_id: Integration::Teal.id(),
        status: "DELETED".into(),
        display_name: "Deleted".into(),
    }];
    let app = TestApp::start(seeded, |c| {
        c.teal_behaviour.fail_eids = [(eid(1), "FLOW_RESTRICTED_ERROR".to_string())].into();
        c.worker.teal_poll_interval = Duration::from_millis(300);
    })
    .await;
    // The eSIM Teal refuses fails with its reason; the other one changes.
    let id = app.accepted(&status_update(&[bench_iccid(0), bench_iccid(1)], "Stopped")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(row(&status, &bench_iccid(0))["Status"], "PROCESSED");
    let refused = row(&status, &bench_iccid(1));
    assert_eq!(refused["Status"], "API_FAILED");
    assert_eq!(refused["StatusDetails"], "Teal: FLOW_RESTRICTED_ERROR");
    // A plan change Teal refuses for one eSIM.
    let id = app.accepted(&plan_change(&[bench_iccid(0), bench_iccid(1)], "TEAL-5GB")).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(row(&status, &bench_iccid(0))["Status"], "PROCESSED");
    assert_eq!(row(&status, &bench_iccid(1))["StatusDetails"], "Teal: FLOW_RESTRICTED_ERROR");
    assert_eq!(app.teal().state.esim(&eid(1)).expect("esim").plan_uuid.as_deref(), Some(OLD_PLAN));
    // A device without an EID is an ERROR row at intake.
    let (code, answer) = app.submit(&status_update(&[bench_iccid(2)], "Stopped")).await;
    assert_eq!(code, 202, "{answer}");
    assert!(answer["Devices"][0]["Errors"][0]["message"].as_str().unwrap_or_default().contains("no EID"), "{answer}");
    for (body, field) in [
        (plan_change(&[bench_iccid(0)], "TEAL-LEGACY"), "CarrierRatePlanUpdate.CarrierRatePlan"),
        (status_update(&[bench_iccid(0)], "Deleted"), "StatusUpdate.TargetStatus"),
        (status_update(&[bench_iccid(0)], "Suspended"), "StatusUpdate.TargetStatus"),
    ] {
        let (code, answer) = app.submit(&body).await;
        assert_eq!(code, 400, "{answer}");
        assert_eq!(answer["errors"][0]["field"], field, "{answer}");
    }
}

#[tokio::test]
async fn writes_disabled_fails_every_row_with_one_email_and_nothing_sent() {
    let app = TestApp::start(seed(2, 0, false), |_| {}).await;
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    for body in [plan_change(&devices, "TEAL-5GB"), status_update(&devices, "Stopped")] {
        let id = app.accepted(&body).await;
        let status = app.final_status(id, Duration::from_secs(30)).await;
        for iccid in &devices {
            assert_eq!(row(&status, iccid)["StatusDetails"], "Writes disabled for this service provider.");
        }
    }
    assert!(app.teal().state.calls().is_empty());
    assert_eq!(app.mails(2, Duration::from_secs(10)).await.len(), 2, "one failure e-mail per bulk change");
}

#[tokio::test]
async fn throttled_operations_are_waited_out_and_every_row_completes() {
    let app = TestApp::start(seed(6, 0, true), |c| c.worker.teal_poll_interval = Duration::from_millis(300)).await;
    app.teal().state.harness.set_faults(Faults { rate_limit_per_second: Some(2.0), ..Default::default() });
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.accepted(&status_update(&[bench_iccid(i)], "Stopped")).await);
    }
    for id in ids {
        assert_eq!(app.final_status(id, Duration::from_secs(60)).await["Status"], "PROCESSED");
    }
    let throttled = app.teal().state.calls().iter().filter(|c| c.status == 429).count();
    assert!(throttled > 0, "Teal's limit was reached (the account's pace is 500/s)");
    assert_eq!(app.teal().state.operations(), 6, "each operation taken once");
}

/// Two worker processes take one plan change of 120 eSIMs at once: rows are claimed by one of them each, so every
/// EID is in exactly one operation, and every eSIM ends on the new plan.
#[tokio::test]
async fn two_worker_processes_send_each_esim_in_one_operation() {
    let n = 120;
    let app = TestApp::start(seed(n, 0, true), |c| c.run_worker = false).await;
    let (_one, _two) = (app.worker_process("one"), app.worker_process("two"));
    let devices: Vec<String> = (0..n).map(bench_iccid).collect();
    let id = app.accepted(&plan_change(&devices, "TEAL-5GB")).await;
    let status = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    let mut sent: Vec<String> = app
        .teal()
        .state
        .calls()
        .iter()
        .filter(|c| c.method == "POST")
        .flat_map(|c| c.body["entries"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["eid"].as_str().map(str::to_string))
        .collect();
    sent.sort();
    let expected: Vec<String> = (0..n).map(eid).collect();
    assert_eq!(sent, expected, "each EID in exactly one operation");
    for i in 0..n {
        assert_eq!(app.teal().state.esim(&eid(i)).expect("esim").plan_uuid.as_deref(), Some(NEW_PLAN));
    }
}

/// A real worker process sends the operation and is killed while waiting for Teal's answer (Teal has it). The
/// next worker process polls the request id the rows already carry: the result is applied, nothing is sent twice.
#[tokio::test]
async fn a_worker_killed_between_the_request_and_its_result_sends_nothing_twice() {
    let app = TestApp::start(seed(2, 0, true), |c| c.run_worker = false).await;
    app.teal().state.harness.set_faults(Faults { hang_next_writes: 1, hang_ms: 120_000, ..Default::default() });
    let mut first = app.worker_process("first");
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    let id = app.accepted(&plan_change(&devices, "TEAL-5GB")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.teal_calls("POST") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first worker never sent the operation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await.expect("kill the first worker");
    let _second = app.worker_process("second");
    let status = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    assert_eq!(app.teal_calls("POST"), 1, "the operation is not sent again");
    assert_eq!(app.teal().state.operations(), 1);
    for i in 0..2 {
        assert_eq!(app.teal().state.esim(&eid(i)).expect("esim").plan_uuid.as_deref(), Some(NEW_PLAN));
    }
}

/// Undo on Teal, whose results come later (callback, then a read of the operation): eSIMs whose data was disabled
/// are enabled again, eSIMs moved to a new plan go back to their own, each device in the database too.
#[tokio::test]
async fn an_undo_of_a_stop_and_of_a_plan_change_goes_back_through_teal() {
    let app = TestApp::start(seed(6, 0, true), |_| {}).await;
    let devices: Vec<String> = (0..6).map(bench_iccid).collect();
    let id = app.accepted(&status_update(&devices, "Stopped")).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");
    let (code, answer) = app.undo(id, false, "undo-stop").await;
    assert_eq!((code, &answer["Counts"]), (202, &json!({"Restore": 6, "Refused": 0})), "{answer}");
    let undone = app.final_status(answer["BulkChangeId"].as_i64().expect("id"), Duration::from_secs(30)).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 6}), "{undone}");
    let enabled = (0..6).filter(|i| !app.teal().state.esim(&eid(*i)).expect("esim").suspended).count();
    let stored = app.stack.store.devices_by_iccid(1, &devices).await.expect("devices");
    let online = stored.iter().filter(|d| d.device_status_id == 1201).count();
    println!("Teal undo of a stop: {enabled} of 6 enabled on the carrier, {online} of 6 online in the database");
    assert_eq!((enabled, online), (6, 6));

    let id = app.accepted(&plan_change(&devices, "TEAL-5GB")).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");
    let (code, answer) = app.undo(id, false, "undo-plan").await;
    assert_eq!(code, 202, "{answer}");
    let undone = app.final_status(answer["BulkChangeId"].as_i64().expect("id"), Duration::from_secs(30)).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 6}), "{undone}");
    for i in 0..6 {
        assert_eq!(app.teal().state.esim(&eid(i)).expect("esim").plan_uuid.as_deref(), Some(OLD_PLAN), "{i}");
    }
    let stored = app.stack.store.devices_by_iccid(1, &devices).await.expect("devices");
    assert!(stored.iter().all(|d| d.carrier_rate_plan.as_deref() == Some("TEAL-1GB")), "{stored:?}");
}
