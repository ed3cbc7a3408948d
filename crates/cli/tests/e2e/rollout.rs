//! Rollout control (issue 21) through the HTTP API against the Control Center simulator: the operator's pace, a
//! canary, pause and resume, the abort rule (decided once with two worker processes), invalid settings.

use domain::Integration;
use std::time::Duration;

use crate::support::TestApp;
use cli::bench::bench_iccid;
use serde_json::{Value, json};
use simulators::Faults;
use store::Seed;
use store::seed::{SeedDevice, SeedServiceProvider, SeedTenant};

const POD19: i64 = 10;

pub(crate) fn device(i: usize) -> String {
    bench_iccid(7000 + i)
}

pub(crate) fn seed(devices: usize, rate: f64) -> Seed {
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }, SeedTenant { id: 2, name: "Globex".into() }],
        service_providers: vec![SeedServiceProvider {
            name: "POD19".into(),
            username: "user".into(),
            secret: "secret-key".into(),
            rate_limit_per_second: rate,
            ..SeedServiceProvider::new(POD19, 1, Integration::Pod19.id())
        }],
        devices: (0..devices).map(|i| SeedDevice::new(1, POD19, device(i), "ACTIVATION_READY")).collect(),
        ..Default::default()
    }
}

pub(crate) fn activation(devices: std::ops::Range<usize>, rollout: Value) -> Value {
    let mut body = json!({"ServiceProviderId": POD19, "ChangeType": 3,
                          "Devices": devices.map(device).collect::<Vec<_>>(),
                          "StatusUpdate": {"TargetStatus": "Active"}});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), rollout.as_object()) {
        body.extend(extra.clone());
    }
    body
}

impl TestApp {
    fn writes(&self) -> Vec<simulators::RecordedCall> {
        self.stack.simulators.control_center[&POD19].state.calls().into_iter().filter(|c| c.method == "PUT").collect()
    }

    pub(crate) async fn act(&self, id: i64, action: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/M2M/BulkChange/{id}/{action}", self.stack.base_url()))
            .bearer_auth(token)
            .header("Idempotency-Key", format!("{action}-{id}-{}", fastrand::u64(..)))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the status page until the bulk change is in `wanted` (or panics after `within`).
    async fn until_status(&self, id: i64, wanted: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status(id).await;
            if status["Status"] == wanted {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "bulk change {id} not {wanted} in {within:?}: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn invalid_rollout_settings_are_400_naming_the_field() {
    let app = TestApp::start(seed(2, 100.0), |_| {}).await;
    let cases = [
        (json!({"MaxPerMinute": 0}), "MaxPerMinute"),
        (json!({"MaxPerMinute": "fast"}), "MaxPerMinute"),
        (json!({"Canary": {"Devices": 0}}), "Canary.Devices"),
        (json!({"Canary": {"Devices": 5, "Then": "Wait"}}), "Canary.Then"),
        (json!({"AbortWhen": {"MinProcessed": 10}}), "AbortWhen"),
        (json!({"AbortWhen": {"FailedPercent": 120}}), "AbortWhen.FailedPercent"),
        (json!({"AbortWhen": {"Count": -1}}), "AbortWhen.Count"),
    ];
    for (rollout, field) in cases {
        let (status, problem) = app.submit(&activation(0..2, rollout.clone())).await;
        assert_eq!(status, 400, "{rollout}: {problem}");
        let fields: Vec<&str> =
            problem["errors"].as_array().into_iter().flatten().filter_map(|e| e["field"].as_str()).collect();
        assert!(fields.contains(&field), "{rollout}: {problem}");
    }
    assert!(app.writes().is_empty(), "nothing was accepted, nothing sent");
}

/// A canary of 50 with `Then: Pause` makes exactly 50 carrier writes and pauses (reason: canary); resume finishes
/// the rest.
#[tokio::test]
async fn a_canary_of_fifty_then_pause_makes_fifty_writes_and_resume_finishes_the_rest() {
    let app = TestApp::start(seed(120, 200.0), |_| {}).await;
    let id = app.accepted(&activation(0..120, json!({"Canary": {"Devices": 50, "Then": "Pause"}}))).await;
    let paused = app.until_status(id, "PAUSED", Duration::from_secs(30)).await;
    assert_eq!(paused["Paused"]["Reason"], "canary", "{paused}");
    assert_eq!(paused["Counts"]["PROCESSED"], 50, "{}", paused["Counts"]);
    assert_eq!(paused["Counts"]["PENDING"], 70);
    // Nothing more starts while it waits for a person.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.writes().len(), 50, "exactly the canary's writes");
    let (code, answer) = app.act(id, "Resume", &app.token).await;
    assert_eq!((code, answer["Status"].as_str()), (200, Some("PROCESSING")), "{answer}");
    let done = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(done["Counts"], json!({"PROCESSED": 120}), "{done}");
    assert_eq!(app.writes().len(), 120, "each device written once");
    let (code, problem) = app.act(id, "Resume", &app.token).await;
    assert_eq!(code, 409, "a final bulk change is not paused: {problem}");
}

/// Pause during a run: no carrier call starts after the pause beyond the rows a worker held at that moment
/// (the answer's InFlight); resume continues where it stopped; another tenant can do neither.
#[tokio::test]
async fn a_pause_during_a_run_starts_nothing_beyond_the_rows_in_flight_and_resume_goes_on() {
    let app =
        TestApp::start(seed(400, 100.0), |c| c.simulator_faults = Faults { latency_ms: 5, ..Faults::default() }).await;
    let id = app.accepted(&activation(0..400, json!({}))).await;
    while app.writes().len() < 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = crate::support::token_for(2, "mallory");
    assert_eq!(app.act(id, "Pause", &other).await.0, 404, "another tenant's bulk change is not found");
    let (code, answer) = app.act(id, "Pause", &app.token).await;
    let at_pause = app.writes().len();
    assert_eq!(code, 200, "{answer}");
    let in_flight = answer["InFlight"].as_u64().expect("InFlight");
    let paused = app.until_status(id, "PAUSED", Duration::from_secs(5)).await;
    assert_eq!(paused["Paused"]["Reason"], "operator");
    // The rows in flight finish (none stays PROCESSING), then nothing more is written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.status(id).await["Counts"]["PROCESSING"].as_i64().unwrap_or(0) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "rows in flight never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = app.writes().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = app.writes().len();
    println!("pause: writes_at_pause={at_pause} in_flight={in_flight} writes_after_pause={}", after - at_pause);
    assert!(
        after - at_pause <= in_flight as usize,
        "{} writes after the pause, {in_flight} were in flight",
        after - at_pause
    );
    assert_eq!(after, settled, "nothing starts while paused");
    assert_eq!(app.act(id, "Pause", &app.token).await.0, 409, "paused already");
    assert_eq!(app.act(id, "Resume", &app.token).await.0, 200);
    let done = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(done["Counts"], json!({"PROCESSED": 400}), "{done}");
    assert_eq!(app.writes().len(), 400, "each device written once");
}

/// A carrier that refuses 30 % of the devices trips `FailedPercent: 10, MinProcessed: 100` with two worker
/// processes: the abort is decided once (one e-mail), the rest is cancelled with the rule's figures, the bulk
/// change ends ABORTED, and the writes beyond the first 100 final rows are bounded by the rows in flight.
#[tokio::test]
async fn an_abort_rule_trips_once_with_two_workers_and_cancels_the_rest() {
    let refused: Vec<String> = (0..600).filter(|i| i % 10 < 3).map(device).collect();
    let app = TestApp::start(seed(600, 100.0), |c| {
        c.run_worker = false;
        c.simulator_faults = Faults { locked_iccids: refused.clone(), ..Faults::default() };
    })
    .await;
    let (_one, _two) = (app.worker_process("one"), app.worker_process("two"));
    let rule = json!({"AbortWhen": {"FailedPercent": 10, "MinProcessed": 100}});
    let id = app.accepted(&activation(0..600, rule)).await;
    let done = app.until_status(id, "ABORTED", Duration::from_secs(60)).await;
    let reason = done["AbortedReason"].as_str().expect("the reason").to_string();
    assert!(reason.starts_with("aborted: ") && reason.contains("> 10 %"), "{reason}");
    let counts = &done["Counts"];
    let finished = counts["PROCESSED"].as_u64().unwrap_or(0) + counts["API_FAILED"].as_u64().unwrap_or(0);
    let writes = app.writes();
    println!(
        "abort: writes={} finished_rows={finished} cancelled={} reason={reason}",
        writes.len(),
        counts["CANCELLED"]
    );
    assert!(counts["CANCELLED"].as_u64().unwrap_or(0) > 300, "most rows never started: {counts}");
    // Each device's writes against its row: a cancelled row was never sent, a processed row's SIM was activated
    // once, a failed row's SIM never. (A row taken over from a worker whose lease lapsed while its outcome was being
    // written is sent again by its new holder when the carrier shows nothing done — a refused write, twice: that is
    // a takeover doing its job, not a change applied twice.)
    let rows = app.get(&format!("/M2M/BulkChangeStatus/{id}?pageSize=1000"), &app.token).await.1;
    let state: std::collections::HashMap<&str, &str> = rows["Rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["ICCID"].as_str().unwrap_or_default(), r["Status"].as_str().unwrap_or_default()))
        .collect();
    let mut by_device: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for w in &writes {
        let iccid = w.path.rsplit('/').next().unwrap_or_default();
        let entry = by_device.entry(iccid).or_default();
        if w.status == 200 { entry.0 += 1 } else { entry.1 += 1 }
    }
    for (iccid, (applied, refused)) in &by_device {
        let row = state.get(iccid).copied().unwrap_or("none");
        if applied + refused > 1 {
            let times: Vec<_> =
                writes.iter().filter(|w| w.path.ends_with(iccid)).map(|w| (w.status, w.at_ms)).collect();
            println!("abort: {iccid} ({row}) written {times:?}");
        }
        match row {
            "PROCESSED" => assert_eq!((*applied, *refused), (1, 0), "{iccid}: processed, written {applied}+{refused}"),
            "API_FAILED" => assert_eq!(*applied, 0, "{iccid}: failed, yet applied {applied} times"),
            other => panic!("{iccid}: written {applied}+{refused} times for a row {other}"),
        }
    }
    assert_eq!(by_device.len() as u64, finished, "a write for each row that ran");
    if writes.len() as u64 != finished {
        println!("abort: {} refused write(s) sent again after a takeover", writes.len() as u64 - finished);
    }
    // Each worker holds at most a quarter second of the account's pace (25 rows at 100 calls a second).
    assert!(writes.len() <= 100 + 2 * 25, "{} writes for a rule that trips at 100 final rows", writes.len());
    let cancelled = app.get(&format!("/M2M/BulkChangeStatus/{id}?status=CANCELLED&pageSize=5"), &app.token).await.1;
    assert!(cancelled["Rows"][0]["StatusDetails"].as_str().is_some_and(|d| d == reason), "{cancelled}");
    let mails = app.mails(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1, "one e-mail for one abort");
    let mail = std::fs::read_to_string(&mails[0]).expect("mail");
    assert!(mail.contains(&format!("Subject: Bulk change {id} aborted")), "{mail}");
    assert!(mail.contains(&reason), "{mail}");
}

/// Rows a dead worker held when the abort rule tripped are settled, not left PROCESSING for ever: after an abort
/// the worker still claims rows in flight whose lease ended (no PENDING row: those are cancelled). Found on the
/// T-SQL engine (`an_abort_rule_trips_once…`: "not ABORTED in 60 s", 14 rows PROCESSING) where a worker whose lease
/// lapsed leaves its rows to the next holder.
#[tokio::test]
async fn rows_a_dead_worker_held_when_the_abort_tripped_are_settled() {
    // Every device after the first five is locked: the abort rule trips on the first rows that run.
    let locked: Vec<String> = (5..60).map(device).collect();
    let app = TestApp::start(seed(60, 100.0), |c| {
        c.run_worker = false;
        c.simulator_faults = Faults { locked_iccids: locked.clone(), ..Faults::default() };
    })
    .await;
    let rule = json!({"AbortWhen": {"FailedPercent": 10, "MinProcessed": 10}});
    let id = app.accepted(&activation(0..60, rule)).await;
    // GIVEN a worker that claimed the first five rows (1 s leases) and died before sending anything
    let store = &*app.stack.store;
    let now = chrono::Utc::now();
    let held =
        engine::ports::Leases::claim_rows(store, id, "dead", 5, Duration::from_secs(1), now).await.expect("claim");
    assert_eq!(held.len(), 5, "the dead worker's claim");
    // WHEN a worker runs the bulk change and its abort rule trips
    let worker = engine::WorkerConfig {
        worker_id: "live".into(),
        lease: Duration::from_secs(3),
        continuation_delay: Duration::from_millis(200),
        ..engine::WorkerConfig::default()
    };
    let _live = app.stack.spawn_worker(worker).expect("worker");
    // THEN the dead worker's rows are taken over and settled, and the bulk change ends ABORTED
    let done = app.until_status(id, "ABORTED", Duration::from_secs(30)).await;
    let counts = &done["Counts"];
    assert_eq!(counts["PROCESSING"], Value::Null, "{counts}");
    for iccid in (0..5).map(device) {
        let status = row_status(&done, &iccid);
        assert_eq!(status, "PROCESSED", "{iccid}: the dead worker's row, settled: {done}");
    }
}

fn row_status<'a>(status: &'a Value, iccid: &str) -> &'a str {
    status["Rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["ICCID"] == iccid))
        .and_then(|r| r["Status"].as_str())
        .unwrap_or("none")
}

/// `MaxPerMinute` 600 keeps within 5 % of it on the simulator's call record, while a second bulk change on the same
/// account runs at the account's pace.
#[tokio::test]
async fn max_per_minute_paces_one_bulk_change_while_another_runs_at_the_accounts_pace() {
    let app = TestApp::start(seed(2200, 100.0), |_| {}).await;
    let slow = app.accepted(&activation(0..2000, json!({"MaxPerMinute": 600}))).await;
    let fast = app.accepted(&activation(2000..2200, json!({}))).await;
    let fast_done = app.final_status(fast, Duration::from_secs(30)).await;
    assert_eq!(fast_done["Counts"], json!({"PROCESSED": 200}));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let slow_devices: std::collections::HashSet<String> = (0..2000).map(device).collect();
    let at: Vec<u64> = app
        .writes()
        .iter()
        .filter(|c| c.path.rsplit('/').next().is_some_and(|iccid| slow_devices.contains(iccid)))
        .map(|c| c.at_ms)
        .collect();
    let fast_at: Vec<u64> = app
        .writes()
        .iter()
        .filter(|c| c.path.rsplit('/').next().is_some_and(|iccid| !slow_devices.contains(iccid)))
        .map(|c| c.at_ms)
        .collect();
    // The steady pace: writes between the 2nd and the last second of the window, per minute.
    let (first, last) = (at[0], at[at.len() - 1]);
    let window: Vec<&u64> = at.iter().filter(|t| **t >= first + 2000).collect();
    let span = (last - (first + 2000)) as f64 / 60_000.0;
    let per_minute = (window.len().saturating_sub(1)) as f64 / span;
    let fast_span = (fast_at[fast_at.len() - 1] - fast_at[0]) as f64 / 1000.0;
    let fast_rate = (fast_at.len() - 1) as f64 / fast_span;
    println!(
        "pace: slow {per_minute:.0}/min ({:.3} of 600), fast {fast_rate:.0}/s against the account's 100/s",
        per_minute / 600.0
    );
    assert!((per_minute / 600.0 - 1.0).abs() <= 0.05, "{per_minute:.0} a minute against MaxPerMinute 600");
    assert!(fast_rate > 30.0, "the other bulk change is not held to 10 a second: {fast_rate:.0}/s");
    let (code, _) = app.act(slow, "Cancel", &app.token).await;
    assert_eq!(code, 200);
}

const TEAL: i64 = 50;
const TS: i64 = 40;
const NEW_PLAN: &str = "cda438862b284bcdaec82ee516eada14";

fn eid(i: usize) -> String {
    format!("89049032{i:024}")
}

/// Teal eSIMs `0..n` (devices `device(i)`) and ThingSpace devices `device(1000 + i)`, all active.
fn async_seed(n: usize) -> Seed {
    use crate::support::{account, provider, rate_plan};
    let mut devices: Vec<SeedDevice> = (0..n)
        .map(|i| SeedDevice {
            eid: Some(eid(i)),
            carrier_rate_plan: Some("TEAL-1GB".into()),
            ..SeedDevice::new(1, TEAL, device(i), "ONLINE")
        })
        .collect();
    devices.extend((0..n).map(|i| SeedDevice {
        carrier_rate_plan: Some("m2m_4G".into()),
        ..SeedDevice::new(1, TS, device(1000 + i), "ACTIVE")
    }));
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![
            provider(TEAL, Integration::Teal, "teal-key", "teal-secret", true),
            account(TS, 1, Integration::ThingSpace),
        ],
        carrier_rate_plans: vec![
            rate_plan(1, TEAL, "TEAL-1GB", None, Some("0f3d5a6e7b8c4d2e9f1a2b3c4d5e6f70")),
            rate_plan(2, TEAL, "TEAL-5GB", None, Some(NEW_PLAN)),
            rate_plan(3, TS, "m2m_4G", None, None),
            rate_plan(4, TS, "m2m_4G_5GB", None, None),
        ],
        devices,
        ..Default::default()
    }
}

/// Teal, asynchronous: a canary of 10 with `Then: Pause` sends one operation of the 10 eSIMs, pauses once their
/// results are in, and resume finishes the rest; no eSIM is sent twice.
#[tokio::test]
async fn a_teal_canary_pauses_after_its_operation_and_resume_finishes() {
    let app = TestApp::start(async_seed(100), |c| c.worker.teal_poll_interval = Duration::from_secs(1)).await;
    let body = json!({"ServiceProviderId": TEAL, "ChangeType": 7, "Devices": (0..100).map(device).collect::<Vec<_>>(),
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "TEAL-5GB"}, "Canary": {"Devices": 10, "Then": "Pause"}});
    let id = app.accepted(&body).await;
    let paused = app.until_status(id, "PAUSED", Duration::from_secs(30)).await;
    let teal = &app.stack.simulators.teal[&TEAL].state;
    assert_eq!(paused["Counts"]["PROCESSED"], 10, "{}", paused["Counts"]);
    assert_eq!(teal.operations(), 1, "one operation, of the canary's eSIMs");
    let on_new =
        (0..100).filter(|i| teal.esim(&eid(*i)).and_then(|e| e.plan_uuid).as_deref() == Some(NEW_PLAN)).count();
    assert_eq!(on_new, 10);
    assert_eq!(app.act(id, "Resume", &app.token).await.0, 200);
    let done = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(done["Counts"], json!({"PROCESSED": 100}), "{done}");
    for i in 0..100 {
        assert_eq!(teal.operations_naming(&eid(i)).len(), 1, "eSIM {i} sent once");
    }
}

/// ThingSpace, asynchronous: a canary of 20 whose results come by callback, half refused, trips
/// `FailedPercent: 10, MinProcessed: 20` once its results are in; the other 180 are cancelled and never sent.
#[tokio::test]
async fn a_thingspace_canary_whose_results_fail_trips_the_abort_rule() {
    let failing: Vec<String> = (0..200).filter(|i| i % 2 == 0).map(|i| device(1000 + i)).collect();
    // A result wait of 30 s: the canary's last callback queues the bulk change, so the rule is looked at at once.
    let app = TestApp::start(async_seed(200), |c| {
        c.worker.carrier_result_wait = Duration::from_secs(30);
        c.thingspace_behaviour.failing_iccids = failing.clone();
    })
    .await;
    let body = json!({"ServiceProviderId": TS, "ChangeType": 7, "Devices": (0..200).map(|i| device(1000 + i)).collect::<Vec<_>>(),
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "m2m_4G_5GB"},
                      "Canary": {"Devices": 20}, "AbortWhen": {"FailedPercent": 10, "MinProcessed": 20}});
    let id = app.accepted(&body).await;
    let done = app.until_status(id, "ABORTED", Duration::from_secs(15)).await;
    assert_eq!(done["Counts"]["CANCELLED"], 180, "{}", done["Counts"]);
    assert_eq!(done["AbortedReason"], "aborted: 10 of 20 processed rows failed (50 %) > 10 %");
    let sent: usize = app.stack.simulators.thingspace[&TS]
        .state
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/devices/actions/plan") && c.status == 200)
        .map(|c| c.body["devices"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(sent, 20, "only the canary's devices reached ThingSpace");
}

impl TestApp {
    /// The devices of the ThingSpace plan requests ThingSpace accepted, in the order sent.
    fn thingspace_plan_devices(&self) -> Vec<String> {
        self.stack.simulators.thingspace[&TS]
            .state
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/devices/actions/plan") && c.status == 200)
            .flat_map(|c| c.body["devices"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| {
                let ids = d["deviceIds"].as_array()?;
                ids.iter().find(|i| i["kind"] == "iccid").and_then(|i| i["id"].as_str()).map(str::to_string)
            })
            .collect()
    }

    /// Waits until no row of the bulk change is in flight; answers its status then.
    async fn until_settled(&self, id: i64, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status(id).await;
            if status["Counts"]["PROCESSING"].as_i64().unwrap_or(0) == 0 {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "rows in flight never finished: {}", status["Counts"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Pauses `id` once `sent()` reaches `at_least`; checks that the rows in flight then are settled while it stays
/// paused, that nothing more is sent than they were, and that nothing is sent afterwards. Answers the number sent.
async fn pause_midway(app: &TestApp, id: i64, at_least: usize, sent: impl Fn() -> usize, settle: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sent() < at_least {
        assert!(tokio::time::Instant::now() < deadline, "only {} sent", sent());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, answer) = app.act(id, "Pause", &app.token).await;
    let at_pause = sent();
    assert_eq!(code, 200, "{answer}");
    let in_flight = answer["InFlight"].as_u64().expect("InFlight") as usize;
    let settled = app.until_settled(id, settle).await;
    assert_eq!(settled["Status"], "PAUSED", "{settled}");
    let after = sent();
    println!("async pause: sent_at_pause={at_pause} in_flight={in_flight} sent_after_pause={}", after - at_pause);
    assert!(after - at_pause <= in_flight, "{} sent after the pause, {in_flight} were in flight", after - at_pause);
    let counts = &settled["Counts"];
    let finished = counts["PROCESSED"].as_u64().unwrap_or(0) as usize;
    assert_eq!(finished, after, "each row sent is recorded, none is left waiting: {counts}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sent(), after, "nothing starts while paused");
    after
}

/// ThingSpace, asynchronous, at the operator's pace (requests of 20 devices, one a second: the account's pace), paused while requests wait on results
/// whose callbacks never come: the waiting rows are settled by polling while it stays paused, nothing is sent beyond
/// the rows in flight at the pause, and resume finishes the rest; no device is sent twice.
#[tokio::test]
async fn a_thingspace_pause_settles_rows_waiting_on_results_and_resume_finishes() {
    let app = TestApp::start(async_seed(200), |c| {
        c.worker.carrier_result_wait = Duration::from_secs(2);
        c.thingspace_behaviour.drop_callbacks = true;
    })
    .await;
    let devices: Vec<String> = (0..100).map(|i| device(1000 + i)).collect();
    let body = json!({"ServiceProviderId": TS, "ChangeType": 7, "Devices": devices,
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "m2m_4G_5GB"}, "MaxPerMinute": 1200});
    let id = app.accepted(&body).await;
    let sent = pause_midway(&app, id, 40, || app.thingspace_plan_devices().len(), Duration::from_secs(15)).await;
    assert!(sent < 100, "paused midway");
    assert_eq!(app.act(id, "Resume", &app.token).await.0, 200);
    let done = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(done["Counts"], json!({"PROCESSED": 100}), "{done}");
    let mut all = app.thingspace_plan_devices();
    all.sort();
    all.dedup();
    assert_eq!((all.len(), app.thingspace_plan_devices().len()), (100, 100), "each device sent once");
}

/// Teal, asynchronous, at the operator's pace (operations of 10 eSIMs), paused midway: the operations in flight
/// finish and are recorded, no operation starts while paused, resume finishes the rest, each eSIM sent once.
#[tokio::test]
async fn a_teal_pause_lets_its_operations_finish_and_resume_finishes() {
    let app = TestApp::start(async_seed(100), |c| {
        c.worker.teal_poll_interval = Duration::from_secs(1);
        c.teal_behaviour.processing = Duration::from_millis(400);
    })
    .await;
    let body = json!({"ServiceProviderId": TEAL, "ChangeType": 7, "Devices": (0..60).map(device).collect::<Vec<_>>(),
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "TEAL-5GB"}, "MaxPerMinute": 600});
    let id = app.accepted(&body).await;
    let teal = &app.stack.simulators.teal[&TEAL].state;
    let named = || (0..60).filter(|i| !teal.operations_naming(&eid(*i)).is_empty()).count();
    let sent = pause_midway(&app, id, 20, named, Duration::from_secs(15)).await;
    assert!(sent < 60, "paused midway");
    assert_eq!(app.act(id, "Resume", &app.token).await.0, 200);
    let done = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(done["Counts"], json!({"PROCESSED": 60}), "{done}");
    for i in 0..60 {
        assert_eq!(teal.operations_naming(&eid(i)).len(), 1, "eSIM {i} sent once");
    }
}

/// ThingSpace, asynchronous, no canary, at the operator's pace: the worker sending the next requests sees the
/// callbacks' failures trip the abort rule (not when the rows' 30 s result wait ends); the rows not sent are
/// cancelled.
#[tokio::test]
async fn a_thingspace_abort_rule_without_a_canary_is_decided_when_its_results_come() {
    let failing: Vec<String> = (0..200).filter(|i| i % 2 == 0).map(|i| device(1000 + i)).collect();
    let app = TestApp::start(async_seed(200), |c| {
        c.worker.carrier_result_wait = Duration::from_secs(30);
        c.thingspace_behaviour.failing_iccids = failing.clone();
    })
    .await;
    let devices: Vec<String> = (0..200).map(|i| device(1000 + i)).collect();
    let body = json!({"ServiceProviderId": TS, "ChangeType": 7, "Devices": devices,
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "m2m_4G_5GB"}, "MaxPerMinute": 600,
                      "AbortWhen": {"FailedPercent": 10, "MinProcessed": 20}});
    let id = app.accepted(&body).await;
    let done = app.until_status(id, "ABORTED", Duration::from_secs(15)).await;
    let counts = &done["Counts"];
    let sent = app.thingspace_plan_devices().len() as u64;
    let finished = counts["PROCESSED"].as_u64().unwrap_or(0) + counts["API_FAILED"].as_u64().unwrap_or(0);
    println!("thingspace abort: sent={sent} finished={finished} cancelled={}", counts["CANCELLED"]);
    assert_eq!(sent, finished, "each device sent is recorded: {counts}");
    assert!(counts["CANCELLED"].as_u64().unwrap_or(0) >= 150, "the rest never sent: {counts}");
    assert!(done["AbortedReason"].as_str().is_some_and(|r| r.contains("> 10 %")), "{done}");
}
