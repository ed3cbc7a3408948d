//! Telegence end to end, through the HTTP API, the worker and the Telegence simulator: 450 activations in three
//! requests, polling to active / rejected / given up, line changes and their refusals, writes disabled with one
//! e-mail, an activation whose answer is lost, and a worker process killed right after its activation POST (the
//! SIMs are never activated twice). The simulator's call record is the witness.

use domain::Integration;
use std::time::Duration;

use crate::support::{TestApp, device, provider, row};
use cli::bench::bench_iccid;
use serde_json::{Value, json};
use simulators::Faults;
use simulators::telegence::ActivationFate;
use store::Seed;
use store::seed::{SeedBillingAccount, SeedDevice, SeedImeiRange, SeedRatePlan, SeedTenant};

const TELEGENCE: i64 = 30;
const BAN: &str = "287301234567";

/// SIMs `0..no_line` have no line; `lines` more have active lines 2145600000 + i.
fn seed(no_line: usize, lines: usize, writes: bool) -> Seed {
    let sim = |i: usize, line: bool| SeedDevice {
        imei: Some(format!("3567890{:07}0", i)),
        msisdn: line.then(|| format!("21456{:05}", i)),
        ..device(TELEGENCE, bench_iccid(i), if line { "A" } else { "UNKNOWN" }, line.then_some("SOC-1GB"))
    };
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![provider(TELEGENCE, Integration::Telegence, "app-id", "app-secret", writes)],
        carrier_rate_plans: ["SOC-1GB", "SOC-5GB"]
            .iter()
            .enumerate()
            .map(|(n, code)| SeedRatePlan::new(n as i64 + 1, TELEGENCE, *code, 1024.0 * (n as f64 * 4.0 + 1.0), 5.0))
            .collect(),
        devices: (0..no_line).map(|i| sim(i, false)).chain((0..lines).map(|i| sim(no_line + i, true))).collect(),
        telegence_billing_accounts: vec![SeedBillingAccount {
            service_provider_id: TELEGENCE,
            billing_account_number: BAN.into(),
            foundation_account_number: None,
        }],
        ..Default::default()
    }
}

fn new_service(devices: &[String], ban: &str) -> Value {
    json!({"ServiceProviderId": TELEGENCE, "ChangeType": 2, "PortalType": 2, "Devices": devices,
           "NewService": {"BillingAccountNumber": ban, "RatePlan": "SOC-1GB", "ServiceZipCode": "75201"}})
}

impl TestApp {
    fn telegence_calls(&self, method: &str) -> Vec<simulators::RecordedCall> {
        let sim = self.stack.simulators.telegence.get(&TELEGENCE).expect("Telegence simulator");
        sim.state.calls().into_iter().filter(|c| c.method == method).collect()
    }
}

/// 450 SIMs (`TELEGENCE_DEVICES` scales it; the closing note of issue 13 ran 1,000).
#[tokio::test]
async fn four_hundred_fifty_sims_are_activated_in_three_requests_each_row_with_its_own_line() {
    let n: usize = std::env::var("TELEGENCE_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(450);
    let app = TestApp::start(seed(n, 0, true), |c| c.worker.carrier_poll_interval = Duration::from_millis(300)).await;
    let devices: Vec<String> = (0..n).map(bench_iccid).collect();
    let id = app.accepted(&new_service(&devices, BAN)).await;
    let status = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": n}), "{}", status["Counts"]);
    let posts = app.telegence_calls("POST");
    let sizes: Vec<usize> = posts.iter().map(|c| c.body.as_array().map_or(0, Vec::len)).collect();
    let expected: Vec<usize> = (0..n.div_ceil(200)).map(|i| (n - i * 200).min(200)).collect();
    assert_eq!(sizes, expected, "at most 200 services a request, each SIM once");
    let gets = app.telegence_calls("GET");
    let status_gets = gets.iter().filter(|c| c.path.contains("serviceactivation")).count();
    let ban_gets = gets.iter().filter(|c| c.path.contains("billingaccount")).count();
    println!(
        "telegence_activation devices={n} posts={} status_gets={status_gets} billing_account_gets={ban_gets}",
        posts.len()
    );
    let stored = app.stack.store.devices_by_iccid(1, &devices).await.expect("devices");
    let mut numbers: Vec<String> = stored.iter().filter_map(|d| d.msisdn.clone()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), n, "every SIM got its own subscriber number");
    let first = row(&status, &devices[0]);
    assert!(first["StatusDetails"].as_str().unwrap_or_default().starts_with("Line "), "{first}");
}

#[tokio::test]
async fn activations_are_polled_to_active_rejected_or_given_up() {
    let app = TestApp::start(seed(3, 0, true), |c| {
        c.worker.carrier_poll_interval = Duration::from_millis(300);
        c.worker.carrier_result_give_up = Duration::from_secs(3);
        c.telegence_behaviour.pending_reads = 2;
        c.telegence_behaviour.fates.insert(bench_iccid(1), ActivationFate::Reject);
        c.telegence_behaviour.fates.insert(bench_iccid(2), ActivationFate::StayPending);
    })
    .await;
    let devices: Vec<String> = (0..3).map(bench_iccid).collect();
    let id = app.accepted(&new_service(&devices, BAN)).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(row(&status, &devices[0])["Status"], "PROCESSED");
    let rejected = row(&status, &devices[1]);
    assert_eq!(rejected["Status"], "API_FAILED");
    assert!(rejected["StatusDetails"].as_str().unwrap_or_default().contains("cannot be activated"), "{rejected}");
    let stuck = row(&status, &devices[2]);
    assert_eq!(stuck["Status"], "API_FAILED");
    assert!(stuck["StatusDetails"].as_str().unwrap_or_default().contains("No result from carrier"), "{stuck}");
    assert!(app.telegence_calls("GET").len() >= 3, "the request was polled until it settled");
    assert_eq!(app.telegence_calls("POST").len(), 1);
}

#[tokio::test]
async fn line_changes_succeed_and_refusals_say_why() {
    let app = TestApp::start(seed(1, 4, true), |c| {
        c.telegence_behaviour.unswappable.insert(format!("21456{:05}", 4));
    })
    .await;
    let line = |i: usize| bench_iccid(1 + i);
    let suspend = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2, "Devices": [line(0)],
        "StatusUpdate": {"TargetStatus": "Suspended", "TelegenceStatusUpdate": {"ReasonCode": "CR"}}});
    let plan = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 7, "PortalType": 2, "Devices": [line(1)],
        "CarrierRatePlanUpdate": {"CarrierRatePlan": "SOC-5GB"}});
    let swap_ok = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 8, "PortalType": 2, "Devices": [line(2)],
        "ChangeIdentifier": {"NewIMEI": "356789010000998", "ServiceZipCode": "75201"}});
    let swap_refused = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 8, "PortalType": 2, "Devices": [line(3)],
        "ChangeIdentifier": {"NewIMEI": "356789010000980", "ServiceZipCode": "75201"}});
    let unknown_ban = new_service(&[bench_iccid(0)], "999999999");
    let mut ids = Vec::new();
    for body in [&suspend, &plan, &swap_ok, &swap_refused, &unknown_ban] {
        ids.push(app.accepted(body).await);
    }
    let mut statuses = Vec::new();
    for id in ids {
        statuses.push(app.final_status(id, Duration::from_secs(30)).await);
    }
    assert_eq!(row(&statuses[0], &line(0))["Status"], "PROCESSED");
    let sim = app.stack.simulators.telegence.get(&TELEGENCE).expect("sim");
    assert_eq!(sim.state.line(&format!("21456{:05}", 1)).expect("line").status, "S");
    assert_eq!(row(&statuses[1], &line(1))["Status"], "PROCESSED");
    assert_eq!(sim.state.line(&format!("21456{:05}", 2)).expect("line").plan.as_deref(), Some("SOC-5GB"));
    assert_eq!(row(&statuses[2], &line(2))["Status"], "PROCESSED");
    let refused = row(&statuses[3], &line(3));
    assert_eq!(refused["Status"], "API_FAILED");
    assert!(
        refused["StatusDetails"].as_str().unwrap_or_default().contains("line not found or not swappable"),
        "{refused}"
    );
    let ban = row(&statuses[4], &bench_iccid(0));
    assert_eq!(ban["Status"], "API_FAILED");
    assert!(ban["StatusDetails"].as_str().unwrap_or_default().contains("is not known to Telegence"), "{ban}");
    assert!(app.telegence_calls("POST").is_empty(), "no activation is sent for an unknown billing account");
    let stored = app.stack.store.devices_by_iccid(1, &[line(0)]).await.expect("device");
    assert_eq!(stored[0].device_status_id, 602, "the device is Suspended here too");
}

#[tokio::test]
async fn the_api_refuses_what_telegence_could_not_do() {
    let app = TestApp::start(seed(1, 1, true), |c| c.run_worker = false).await;
    let no_reason = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2, "Devices": [bench_iccid(1)],
        "StatusUpdate": {"TargetStatus": "Suspended"}});
    let (status, answer) = app.submit(&no_reason).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["field"], "StatusUpdate.TelegenceStatusUpdate.ReasonCode", "{answer}");

    let activate_without_ban = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2,
        "Devices": [bench_iccid(0)], "StatusUpdate": {"TargetStatus": "Active"}});
    let (status, answer) = app.submit(&activate_without_ban).await;
    assert_eq!(status, 202, "{answer}");
    let reason = answer["Devices"][0]["Errors"][0]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("BillingAccountNumber"), "{answer}");

    let (status, answer) = app.submit(&new_service(&[bench_iccid(1)], BAN)).await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["Devices"][0]["Errors"][0]["message"].as_str().unwrap_or_default().contains("already has line"));

    let (status, answer) = app.submit(&new_service(&[bench_iccid(0)], "12")).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["field"], "NewService.BillingAccountNumber", "{answer}");
    assert!(app.telegence_calls("POST").is_empty() && app.telegence_calls("PATCH").is_empty());
}

#[tokio::test]
async fn an_esim_device_keeps_an_esim_compatible_imei() {
    // Every seeded IMEI starts 35678900: make that TAC an eSIM-only model.
    let mut seeded = seed(0, 2, true);
    seeded.imei_ranges = vec![SeedImeiRange {
        manufacturer: "Acme".into(),
        model: "Tracker eSIM".into(),
        from_imei: "35678900".into(),
        to_imei: "35678900".into(),
        sim_type: "eSIM".into(),
        is_active: true,
    }];
    let app = TestApp::start(seeded, |_| {}).await;
    let swap = |i: usize, imei: &str| {
        json!({"ServiceProviderId": TELEGENCE, "ChangeType": 8, "PortalType": 2,
        "Devices": [bench_iccid(i)], "ChangeIdentifier": {"NewIMEI": imei, "ServiceZipCode": "75201"}})
    };
    let (status, answer) = app.submit(&swap(0, "490154203237518")).await;
    assert_eq!(status, 202, "{answer}");
    let reason = answer["Devices"][0]["Errors"][0]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("eSIM-compatible IMEI") && reason.contains("490154203237518"), "{answer}");
    let refused = answer["BulkChangeId"].as_i64().expect("id");
    let refused = app.final_status(refused, Duration::from_secs(30)).await;
    assert_eq!(row(&refused, &bench_iccid(0))["Status"], "ERROR");

    let accepted = app.accepted(&swap(1, "356789001234564")).await;
    let accepted = app.final_status(accepted, Duration::from_secs(30)).await;
    assert_eq!(row(&accepted, &bench_iccid(1))["Status"], "PROCESSED", "{accepted}");
    let patched: Vec<String> = app.telegence_calls("PATCH").into_iter().map(|c| c.path).collect();
    assert_eq!(patched.len(), 1, "only the eSIM-compatible swap reached Telegence: {patched:?}");
    assert!(patched[0].ends_with(&format!("21456{:05}", 1)), "{patched:?}");
}

#[tokio::test]
async fn writes_disabled_fails_every_row_with_its_reason_and_one_email() {
    let app = TestApp::start(seed(1, 2, false), |_| {}).await;
    let body = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2,
        "Devices": [bench_iccid(1), bench_iccid(2)],
        "StatusUpdate": {"TargetStatus": "Suspended", "TelegenceStatusUpdate": {"ReasonCode": "CR"}}});
    let id = app.accepted(&body).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(status["Status"], "ERROR");
    for i in [1, 2] {
        assert_eq!(row(&status, &bench_iccid(i))["StatusDetails"], "Writes disabled for this service provider.");
    }
    assert!(app.telegence_calls("PATCH").is_empty());
    let outbox = app.stack.config.outbox.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mails = loop {
        let mails: Vec<_> = std::fs::read_dir(&outbox).map(|d| d.filter_map(|e| e.ok()).collect()).unwrap_or_default();
        if !mails.is_empty() || tokio::time::Instant::now() > deadline {
            break mails;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(mails.len(), 1, "one failure e-mail for the bulk change");
}

#[tokio::test]
async fn an_activation_whose_answer_is_lost_is_failed_and_never_sent_again() {
    let app = TestApp::start(seed(2, 0, true), |c| c.worker.carrier_poll_interval = Duration::from_millis(300)).await;
    let sim = app.stack.simulators.telegence.get(&TELEGENCE).expect("sim");
    sim.state.harness.set_faults(Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    let id = app.accepted(&new_service(&devices, BAN)).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    for iccid in &devices {
        let r = row(&status, iccid);
        assert_eq!(r["Status"], "API_FAILED");
        assert!(r["StatusDetails"].as_str().unwrap_or_default().contains("may have accepted the activation"), "{r}");
    }
    assert_eq!(app.telegence_calls("POST").len(), 1, "the activation is not sent twice");
}

/// A real worker process takes the bulk change and is killed while its activation POST waits for an answer
/// (Telegence applied it). Another worker process takes over once the rows' hold ends: it never POSTs again.
#[tokio::test]
async fn a_worker_killed_after_its_activation_post_never_has_it_sent_twice() {
    let app = TestApp::start(seed(2, 0, true), |c| c.run_worker = false).await;
    let sim = app.stack.simulators.telegence.get(&TELEGENCE).expect("sim");
    sim.state.harness.set_faults(Faults { hang_next_writes: 1, hang_ms: 120_000, ..Default::default() });
    let mut first = app.worker_process("first");
    let devices: Vec<String> = (0..2).map(bench_iccid).collect();
    let id = app.accepted(&new_service(&devices, BAN)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.telegence_calls("POST").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the first worker never sent the activation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await.expect("kill the first worker");
    let _second = app.worker_process("second");
    let status = app.final_status(id, Duration::from_secs(60)).await;
    for iccid in &devices {
        let r = row(&status, iccid);
        assert_eq!(r["Status"], "API_FAILED", "{r}");
        assert!(r["StatusDetails"].as_str().unwrap_or_default().contains("it was not sent again"), "{r}");
    }
    assert_eq!(app.telegence_calls("POST").len(), 1, "no second activation request");
}

#[tokio::test]
async fn a_status_update_activates_sims_without_a_line_restores_cancels_and_usernames_need_no_carrier() {
    // SIM 0 has no line; 1 and 2 have active lines; 3 is a line we suspend first, then restore.
    let app = TestApp::start(seed(1, 3, true), |c| c.worker.carrier_poll_interval = Duration::from_millis(300)).await;
    let suspend = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2, "Devices": [bench_iccid(3)],
        "StatusUpdate": {"TargetStatus": "S", "TelegenceStatusUpdate": {"ReasonCode": "CR"}}});
    let id = app.accepted(&suspend).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");

    let activate = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2,
        "Devices": [bench_iccid(0), bench_iccid(3)],
        "StatusUpdate": {"TargetStatus": "Active", "TelegenceStatusUpdate": {
            "BillingAccountNumber": BAN, "RatePlan": "SOC-1GB", "ServiceZipCode": "75201"}}});
    let cancel = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2, "Devices": [bench_iccid(1)],
        "StatusUpdate": {"TargetStatus": "Cancelled", "TelegenceStatusUpdate": {"ReasonCode": "CR", "EffectiveDate": "2099-01-01"}}});
    let username = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 6, "PortalType": 2, "Devices": [bench_iccid(2)],
        "Username": {"NewUsername": "truck-2"}});
    let patches_before = app.telegence_calls("PATCH").len();
    let (a, c, u) = (app.accepted(&activate).await, app.accepted(&cancel).await, app.accepted(&username).await);
    let activated = app.final_status(a, Duration::from_secs(30)).await;
    let new_line = row(&activated, &bench_iccid(0));
    assert_eq!(new_line["Status"], "PROCESSED", "{new_line}");
    assert!(new_line["StatusDetails"].as_str().unwrap_or_default().starts_with("Line "), "{new_line}");
    let restored = row(&activated, &bench_iccid(3));
    assert_eq!(
        (restored["Status"].as_str(), restored["StatusDetails"].as_str()),
        (Some("PROCESSED"), Some("Status changed to Active"))
    );
    let sim = app.stack.simulators.telegence.get(&TELEGENCE).expect("sim");
    assert_eq!(sim.state.line(&format!("21456{:05}", 3)).expect("line").status, "A");
    assert!(sim.state.line_of_iccid(&bench_iccid(0)).is_some(), "the SIM has a line on Telegence now");

    let cancelled = app.final_status(c, Duration::from_secs(30)).await;
    assert_eq!(row(&cancelled, &bench_iccid(1))["Status"], "PROCESSED");
    let sent = app.telegence_calls("PATCH").into_iter().find(|p| p.body["mode"] == "C").expect("cancel sent");
    assert_eq!(sent.body["effectiveDate"], "2099-01-01Z");

    let renamed = app.final_status(u, Duration::from_secs(30)).await;
    assert_eq!(row(&renamed, &bench_iccid(2))["Status"], "PROCESSED");
    let patches = app.telegence_calls("PATCH").len() - patches_before;
    assert_eq!(patches, 2, "the restore and the cancel; the username makes no carrier call");
    let stored = app.stack.store.devices_by_iccid(1, &[bench_iccid(2)]).await.expect("device");
    assert_eq!(stored[0].username.as_deref(), Some("truck-2"));
    // The chaos sweep (seed 1) found such rows PROCESSED without an audit entry: the change is ours alone, and the
    // audit trail says so.
    let row_id = row(&renamed, &bench_iccid(2))["Id"].as_i64().expect("row id");
    let logs = app.stack.store.logs(1, u).await.expect("logs");
    assert!(
        logs.iter().any(|l| l.device_change_id == Some(row_id) && l.description.contains("no carrier call")),
        "{logs:?}"
    );
}

/// Telegence applied a rate plan change and answered 200 with an empty body: the row reads the line, finds the new
/// plan and is PROCESSED, instead of failing on "the answer is not line details" without looking.
#[tokio::test]
async fn a_plan_change_answered_with_an_empty_body_is_read_back() {
    let line = format!("21456{:05}", 0);
    let app = TestApp::start(seed(0, 1, true), |c| {
        c.telegence_behaviour.empty_answers_for.insert(line.clone());
    })
    .await;
    let device = bench_iccid(0);
    let plan = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 7, "PortalType": 2, "Devices": [device],
        "CarrierRatePlanUpdate": {"CarrierRatePlan": "SOC-5GB"}});
    let id = app.accepted(&plan).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    let found = row(&status, &device);
    assert_eq!(found["Status"], "PROCESSED", "{status}");
    assert!(found["StatusDetails"].as_str().unwrap_or_default().contains("its answer was not line details"), "{found}");
    let sim = app.stack.simulators.telegence.get(&TELEGENCE).expect("sim");
    assert_eq!(sim.state.line(&line).expect("line").plan.as_deref(), Some("SOC-5GB"));
    assert_eq!(app.telegence_calls("PATCH").len(), 1, "sent once");
}

/// Rollout control on Telegence (asynchronous, polled): a canary of 20 whose activations are half rejected trips
/// `FailedPercent: 10, MinProcessed: 20` once their results are polled; the other 40 SIMs are cancelled with the
/// rule's figures and never sent.
#[tokio::test]
async fn a_canary_of_activations_half_rejected_trips_the_abort_rule_and_sends_nothing_more() {
    let app = TestApp::start(seed(60, 0, true), |c| {
        c.worker.carrier_poll_interval = Duration::from_millis(300);
        for i in (0..20).filter(|i| i % 2 == 0) {
            c.telegence_behaviour.fates.insert(bench_iccid(i), ActivationFate::Reject);
        }
    })
    .await;
    let devices: Vec<String> = (0..60).map(bench_iccid).collect();
    let mut body = new_service(&devices, BAN);
    body["Canary"] = json!({"Devices": 20});
    body["AbortWhen"] = json!({"FailedPercent": 10, "MinProcessed": 20});
    let id = app.accepted(&body).await;
    let status = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(status["Status"], "ABORTED", "{}", status["Counts"]);
    assert_eq!(status["Counts"], json!({"PROCESSED": 10, "API_FAILED": 10, "CANCELLED": 40}));
    assert_eq!(status["AbortedReason"], "aborted: 10 of 20 processed rows failed (50 %) > 10 %");
    let sent: usize = app.telegence_calls("POST").iter().map(|c| c.body.as_array().map_or(0, Vec::len)).sum();
    assert_eq!(sent, 20, "only the canary's SIMs reached Telegence");
    assert_eq!(row(&status, &devices[59])["StatusDetails"], status["AbortedReason"]);
}

/// Undo on Telegence: suspended lines are restored, lines moved to a new plan go back to their own, on the carrier
/// and in the database.
#[tokio::test]
async fn an_undo_of_a_suspension_and_of_a_plan_change_goes_back_through_telegence() {
    let app = TestApp::start(seed(0, 3, true), |_| {}).await;
    let devices: Vec<String> = (0..3).map(bench_iccid).collect();
    let lines: Vec<String> = (0..3).map(|i| format!("21456{i:05}")).collect();
    let sim = app.stack.simulators.telegence.get(&TELEGENCE).expect("sim");
    let suspend = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2, "Devices": devices,
        "StatusUpdate": {"TargetStatus": "Suspended", "TelegenceStatusUpdate": {"ReasonCode": "CR"}}});
    let id = app.accepted(&suspend).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");
    assert!(lines.iter().all(|l| sim.state.line(l).is_some_and(|l| l.status == "S")));
    let (code, answer) = app.undo(id, false, "undo-suspend").await;
    assert_eq!((code, &answer["Counts"]), (202, &json!({"Restore": 3, "Refused": 0})), "{answer}");
    let undone = app.final_status(answer["BulkChangeId"].as_i64().expect("id"), Duration::from_secs(30)).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 3}), "{undone}");
    let restored = lines.iter().filter(|l| sim.state.line(l).is_some_and(|l| l.status == "A")).count();
    let stored = app.stack.store.devices_by_iccid(1, &devices).await.expect("devices");
    let active = stored.iter().filter(|d| d.device_status_id == 601).count();
    println!("Telegence undo of a suspension: {restored} of 3 restored on the carrier, {active} of 3 in the database");
    assert_eq!((restored, active), (3, 3));

    let plan = json!({"ServiceProviderId": TELEGENCE, "ChangeType": 7, "PortalType": 2, "Devices": devices,
        "CarrierRatePlanUpdate": {"CarrierRatePlan": "SOC-5GB"}});
    let id = app.accepted(&plan).await;
    assert_eq!(app.final_status(id, Duration::from_secs(30)).await["Status"], "PROCESSED");
    let (code, answer) = app.undo(id, false, "undo-plan").await;
    assert_eq!(code, 202, "{answer}");
    let undone = app.final_status(answer["BulkChangeId"].as_i64().expect("id"), Duration::from_secs(30)).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 3}), "{undone}");
    assert!(lines.iter().all(|l| sim.state.line(l).is_some_and(|l| l.plan.as_deref() == Some("SOC-1GB"))));
    let stored = app.stack.store.devices_by_iccid(1, &devices).await.expect("devices");
    assert!(stored.iter().all(|d| d.carrier_rate_plan.as_deref() == Some("SOC-1GB")), "{stored:?}");
}
