//! Many operators at once: the local stack driven by two HTTP clients at the same moment, as double clicks,
//! colleagues and retrying clients do. Every device is changed once on the simulator, one Rev.io line per device,
//! one retry at a time, and a repeated request with its `Idempotency-Key` writes nothing.

use domain::Integration;
use std::collections::BTreeMap;

use crate::support::{TestApp, account};
use cli::bench::bench_iccid;
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRevCustomer, SeedServiceProvider, SeedTenant};

const POD19: i64 = 10;
const REV: i64 = 12;
const TS: i64 = 14;
const DEVICES: usize = 500;

fn device(i: usize) -> String {
    bench_iccid(4000 + i)
}

fn seed() -> Seed {
    let sp = |id, integration| SeedServiceProvider { rate_limit_per_second: 1000.0, ..account(id, 1, integration) };
    let plan = |id, code: &str, mb| store::seed::SeedRatePlan::new(id, POD19, code, mb, mb / 100.0);
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![
            sp(POD19, Integration::Pod19),
            sp(REV, Integration::RevIo),
            sp(TS, Integration::ThingSpace),
        ],
        device_statuses: vec![],
        carrier_rate_plans: vec![plan(1, "RP-1GB", 1024.0), plan(2, "RP-5GB", 5120.0)],
        rev_customers: vec![SeedRevCustomer {
            tenant_id: 1,
            rev_customer_id: "1001".into(),
            name: "Acme Fleet".into(),
        }],
        customer_rate_plans: vec![],
        customer_rate_pools: vec![],
        rev_services: vec![],
        telegence_billing_accounts: vec![],
        imei_ranges: vec![],
        devices: (0..DEVICES)
            .map(|i| SeedDevice {
                carrier_rate_plan: Some("RP-1GB".into()),
                ..SeedDevice::new(1, POD19, device(i), "ACTIVATION_READY")
            })
            .collect(),
    }
}

/// The stack with a second worker loop beside its own: two workers take the two bulk changes at the same time,
/// as two Lambda instances would.
async fn spawn() -> TestApp {
    let app = TestApp::start(seed(), |_| {}).await;
    let second = engine::WorkerConfig { worker_id: "second-worker".into(), ..app.stack.config.worker.clone() };
    // Stopped with the stack (it watches the same shutdown signal).
    drop(app.stack.spawn_worker(second).expect("second worker"));
    app
}

/// The stack with no worker yet: two submissions race at intake, in the database, with nothing finished in
/// between. (With workers running, a first row can be done before a slow store has created the second bulk
/// change; its device is then free again and rightly changed twice, as a later submission would be.)
async fn spawn_idle() -> TestApp {
    TestApp::start(seed(), |c| c.run_worker = false).await
}

/// Two worker loops, as two Lambda instances; stopped with the stack (they watch its shutdown signal).
fn start_two_workers(app: &TestApp) {
    for name in ["first-worker", "second-worker"] {
        let config = engine::WorkerConfig { worker_id: name.into(), ..app.stack.config.worker.clone() };
        drop(app.stack.spawn_worker(config).expect("worker"));
    }
}

/// One answer: status, headers we read, body.
struct Answer {
    status: u16,
    replayed: bool,
    content_type: String,
    location: Option<String>,
    body: Value,
}

impl TestApp {
    /// A POST from its own HTTP client (its own connection), as a second browser tab or colleague would send it.
    async fn post_as(&self, path: &str, body: &Value, token: &str, key: Option<&str>) -> Answer {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.stack.base_url()))
            .bearer_auth(token)
            .header("content-type", "application/json");
        if !body.is_null() {
            request = request.body(body.to_string());
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = response.json().await.unwrap_or(Value::Null);
        Answer { status, replayed, content_type, location, body }
    }

    async fn finished(&self, answer: &Answer) -> Value {
        assert_eq!(answer.status, 202, "{}", answer.body);
        let id = answer.body["BulkChangeId"].as_i64().expect("id");
        cli::demo::wait_final(&self.http, &self.stack.base_url(), &self.token, id).await.expect("finishes")
    }

    /// How many PUTs of each device reached the simulator with `field` in their body.
    fn puts_per_device(&self, field: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for call in self.stack.simulators.control_center[&POD19].state.calls() {
            if call.method == "PUT" && call.body.get(field).is_some() {
                if let Some(iccid) = call.path.rsplit('/').next() {
                    *counts.entry(iccid.to_string()).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    async fn bulk_changes(&self) -> i64 {
        self.stack.store.table_row_counts().await.expect("counts")["DeviceBulkChange"]
    }
}

fn rows(status: &Value) -> Vec<Value> {
    status["Rows"].as_array().cloned().unwrap_or_default()
}

/// Each device: one PROCESSED row in one of the two bulk changes, and in the other an ERROR naming the first.
fn assert_each_device_changed_once(a: &Value, b: &Value, change_type: &str, devices: &[String]) {
    for iccid in devices {
        let of = |s: &Value| rows(s).into_iter().find(|r| r["ICCID"] == *iccid).expect("row of every device");
        let (ra, rb) = (of(a), of(b));
        let (winner, loser, winner_id) = match (ra["Status"].as_str(), rb["Status"].as_str()) {
            (Some("PROCESSED"), Some("ERROR")) => (&ra, &rb, &a["BulkChangeId"]),
            (Some("ERROR"), Some("PROCESSED")) => (&rb, &ra, &b["BulkChangeId"]),
            other => panic!("{iccid}: expected one PROCESSED and one ERROR row, got {other:?}"),
        };
        assert_eq!(winner["Status"], "PROCESSED");
        assert_eq!(
            loser["StatusDetails"],
            format!("device {iccid} has an open {change_type} in bulk change {winner_id}"),
            "the refused row names the bulk change that holds the device"
        );
    }
}

#[tokio::test]
async fn the_same_devices_submitted_twice_at_once_are_changed_once() {
    let app = spawn_idle().await;
    let devices: Vec<String> = (0..200).map(device).collect();
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 7, "Devices": devices,
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "RP-5GB"}});
    // WHEN one operator's double click sends the request twice at the same moment, on two connections
    let (first, second) = tokio::join!(
        app.post_as("/M2M/BulkChange", &body, &app.token, None),
        app.post_as("/M2M/BulkChange", &body, &app.token, None)
    );
    start_two_workers(&app);
    let (a, b) = (app.finished(&first).await, app.finished(&second).await);
    // THEN every device got the plan change exactly once
    let puts = app.puts_per_device("ratePlan");
    let twice = devices.iter().filter(|d| puts.get(*d).copied().unwrap_or(0) > 1).count();
    eprintln!("measured: devices changed twice = {twice} of {}", devices.len());
    assert_eq!(twice, 0);
    assert!(devices.iter().all(|d| puts.get(d) == Some(&1)), "each device changed once: {puts:?}");
    assert_each_device_changed_once(&a, &b, "CarrierRatePlanChange", &devices);
    // The answer of the refused submission already says so, device by device.
    let refused = if first.body["Counts"]["Valid"] == 0 { &first } else { &second };
    assert_eq!(refused.body["Counts"]["Invalid"], 200, "{}", refused.body);
}

#[tokio::test]
async fn two_users_activating_the_same_devices_at_once_send_one_change_per_device() {
    let app = spawn_idle().await;
    let devices: Vec<String> = (0..DEVICES).map(device).collect();
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices,
                      "StatusUpdate": {"TargetStatus": "Active"}});
    let (alice, bob) = (crate::support::token_for(1, "alice"), crate::support::token_for(1, "bob"));
    let (first, second) = tokio::join!(
        app.post_as("/M2M/BulkChange", &body, &alice, None),
        app.post_as("/M2M/BulkChange", &body, &bob, None)
    );
    start_two_workers(&app);
    let (a, b) = (app.finished(&first).await, app.finished(&second).await);
    let puts = app.puts_per_device("status");
    let twice = devices.iter().filter(|d| puts.get(*d).copied().unwrap_or(0) > 1).count();
    eprintln!("measured: devices activated twice = {twice} of {}", devices.len());
    assert_eq!(twice, 0);
    assert_each_device_changed_once(&a, &b, "StatusUpdate", &devices);
    for status in [&a, &b] {
        assert!(
            status["Counts"].get("API_FAILED").is_none(),
            "no carrier refusal for devices that are active: {status}"
        );
    }
    // A submission 150 ms after a finished one is not refused: its devices are free again.
    let again = app.post_as("/M2M/BulkChange", &body, &alice, None).await;
    assert_eq!(again.body["Counts"]["Valid"], DEVICES as i64, "{}", again.body);
}

#[tokio::test]
async fn a_second_submission_while_the_first_is_open_is_refused_at_intake_and_in_the_dry_run() {
    let app = TestApp::start(seed(), |c| c.run_worker = false).await;
    let devices: Vec<String> = (0..3).map(device).collect();
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices,
                      "StatusUpdate": {"TargetStatus": "Active"}});
    let first = app.post_as("/M2M/BulkChange", &body, &app.token, None).await;
    let first_id = first.body["BulkChangeId"].as_i64().expect("id");
    let expected = |iccid: &str| format!("device {iccid} has an open StatusUpdate in bulk change {first_id}");
    let dry = app.post_as("/M2M/ValidateBulkChange", &body, &app.token, None).await;
    assert_eq!(dry.status, 200);
    assert_eq!(dry.body["Devices"][0]["Errors"][0]["message"], expected(&devices[0]), "{}", dry.body);
    let second = app.post_as("/M2M/BulkChange", &body, &app.token, None).await;
    assert_eq!(second.status, 202);
    assert_eq!(second.body["Counts"], json!({"Valid": 0, "Invalid": 3, "Duplicates": 0}));
    assert_eq!(second.body["Devices"][1]["Errors"][0]["message"], expected(&devices[1]));
    // A change of another attribute of the same devices is not held up.
    let rename = json!({"ServiceProviderId": POD19, "ChangeType": 6, "Devices": devices, "Username": {"NewUsername": "truck-1"}});
    assert_eq!(app.post_as("/M2M/BulkChange", &rename, &app.token, None).await.body["Counts"]["Valid"], 3);
    // An archival holds everything: refused while the status update is open.
    let archive = json!({"ServiceProviderId": POD19, "ChangeType": 5, "Devices": [devices[2]]});
    let archived = app.post_as("/M2M/BulkChange", &archive, &app.token, None).await;
    assert!(
        archived.body["Devices"][0]["Errors"][0]["message"]
            .as_str()
            .expect("error")
            .starts_with(&format!("device {} has an open", devices[2]))
    );
}

#[tokio::test]
async fn the_same_association_with_a_rev_io_service_sent_twice_at_once_creates_one_line_per_device() {
    let app = spawn().await;
    let devices: Vec<String> = (0..100).map(device).collect();
    let body = json!({"ServiceProviderId": POD19, "Devices": devices, "RevCustomerId": "1001",
                      "CreateRevService": true, "ProviderId": 7});
    let (first, second) = tokio::join!(
        app.post_as("/M2M/AssociateCustomer", &body, &app.token, None),
        app.post_as("/M2M/AssociateCustomer", &body, &app.token, None)
    );
    app.finished(&first).await;
    app.finished(&second).await;
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    for service in app.stack.simulators.rev_io[&REV].state.services() {
        *lines.entry(service.number2.unwrap_or_default()).or_insert(0) += 1;
    }
    let counts: Vec<usize> = devices.iter().map(|d| lines.get(d).copied().unwrap_or(0)).collect();
    eprintln!("measured: Rev.io lines per device: min {:?} max {:?}", counts.iter().min(), counts.iter().max());
    assert!(counts.iter().all(|&n| n == 1), "one Rev.io service line per device: {lines:?}");
}

#[tokio::test]
async fn a_rev_io_line_created_then_answered_502_is_found_not_created_twice() {
    let app = spawn().await;
    app.stack.simulators.rev_io[&REV]
        .state
        .harness
        .set_faults(simulators::Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let body = json!({"ServiceProviderId": POD19, "Devices": [device(0)], "RevCustomerId": "1001",
                      "CreateRevService": true, "ProviderId": 7});
    let status = app.finished(&app.post_as("/M2M/AssociateCustomer", &body, &app.token, None).await).await;
    assert_eq!(rows(&status)[0]["Status"], "PROCESSED", "{status}");
    let lines = app.stack.simulators.rev_io[&REV].state.services();
    assert_eq!(lines.len(), 1, "the line Rev.io created before its 502 was found, not created again");
    let stored = app.stack.store.device_by_iccid(1, &device(0)).await.expect("read").expect("device");
    let active = engine::ports::RevServices::active_rev_service(&*app.stack.store, 1, stored.id).await.expect("read");
    assert_eq!(active.map(|l| l.rev_service_id), Some(lines[0].service_id));
}

#[tokio::test]
async fn two_retries_at_once_make_one_bulk_change_and_a_third_takes_nothing() {
    let app = spawn().await;
    app.stack.simulators.control_center[&POD19].state.account.lock().expect("lock").rate_plans.remove("RP-5GB");
    let devices: Vec<String> = (0..50).map(device).collect();
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 7, "Devices": devices,
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "RP-5GB"}});
    let failed = app.finished(&app.post_as("/M2M/BulkChange", &body, &app.token, None).await).await;
    assert_eq!(failed["Counts"], json!({"API_FAILED": 50}));
    app.stack.simulators.control_center[&POD19].state.account.lock().expect("lock").rate_plans.insert("RP-5GB".into());
    let path = format!("/M2M/BulkChange/{}/Retry", failed["BulkChangeId"]);
    let before = app.bulk_changes().await;
    let (x, y) = tokio::join!(
        app.post_as(&path, &Value::Null, &app.token, None),
        app.post_as(&path, &Value::Null, &app.token, None)
    );
    let mut codes = [x.status, y.status];
    codes.sort_unstable();
    assert_eq!(codes, [202, 409], "{} / {}", x.body, y.body);
    assert_eq!(app.bulk_changes().await, before + 1);
    let accepted = if x.status == 202 { &x } else { &y };
    let retried = app.finished(accepted).await;
    assert_eq!(retried["Counts"], json!({"PROCESSED": 50}));
    let puts = app.puts_per_device("ratePlan");
    assert!(devices.iter().all(|d| puts.get(d) == Some(&2)), "one refused PUT, then one retried PUT: {puts:?}");
    let third = app.post_as(&path, &Value::Null, &app.token, None).await;
    assert_eq!(third.status, 409, "{}", third.body);
    assert_eq!(app.bulk_changes().await, before + 1);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_writes_nothing() {
    let app = TestApp::start(seed(), |c| c.run_worker = false).await;
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [device(0), device(1), "123"],
                      "StatusUpdate": {"TargetStatus": "Active"}});
    let first = app.post_as("/M2M/BulkChange", &body, &app.token, Some("key-1")).await;
    assert_eq!((first.status, first.replayed), (202, false), "{}", first.body);
    let tables = app.stack.store.table_row_counts().await.expect("counts");
    // The client lost the answer and sends the same request again: same answer, same bulk change.
    let again = app.post_as("/M2M/BulkChange", &body, &app.token, Some("key-1")).await;
    assert_eq!((again.status, again.replayed, &again.body), (202, true, &first.body));
    let status_url = format!("/M2M/BulkChangeStatus/{}", first.body["BulkChangeId"]);
    assert_eq!((first.location.as_deref(), again.location.as_deref()), (Some(&status_url[..]), Some(&status_url[..])));
    assert_eq!(app.stack.store.table_row_counts().await.expect("counts"), tables, "a replay writes nothing");
    // Another request under the same key is refused; the key is per tenant.
    let other = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [device(2)], "StatusUpdate": {"TargetStatus": "Active"}});
    let reused = app.post_as("/M2M/BulkChange", &other, &app.token, Some("key-1")).await;
    assert_eq!((reused.status, reused.content_type.as_str()), (422, "application/problem+json"), "{}", reused.body);
    assert_eq!(reused.body["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(
        app.stack.store.table_row_counts().await.expect("counts")["DeviceBulkChange"],
        tables["DeviceBulkChange"]
    );
    // Two sends of a new key at the same moment: one bulk change; the other answer is the same or "in progress".
    let (x, y) = tokio::join!(
        app.post_as("/M2M/BulkChange", &other, &app.token, Some("key-2")),
        app.post_as("/M2M/BulkChange", &other, &app.token, Some("key-2"))
    );
    for answer in [&x, &y] {
        assert!(answer.status == 202 || answer.status == 409, "{} {}", answer.status, answer.body);
    }
    let ids: Vec<&Value> = [&x, &y].iter().filter(|a| a.status == 202).map(|a| &a.body["BulkChangeId"]).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one bulk change for one key: {ids:?}");
    assert_eq!(app.bulk_changes().await, tables["DeviceBulkChange"] + 1);
    // A refused request frees its key: the same body is refused again (not replayed, nothing kept), and the
    // client that fixes its body sends it under the same key.
    let bad = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [device(3)]});
    let first_bad = app.post_as("/M2M/BulkChange", &bad, &app.token, Some("key-3")).await;
    let second_bad = app.post_as("/M2M/BulkChange", &bad, &app.token, Some("key-3")).await;
    assert_eq!((first_bad.status, second_bad.status, second_bad.replayed), (400, 400, false));
    assert_eq!(second_bad.body, first_bad.body);
    let fixed = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [device(3)],
                       "StatusUpdate": {"TargetStatus": "Active"}});
    let corrected = app.post_as("/M2M/BulkChange", &fixed, &app.token, Some("key-3")).await;
    assert_eq!((corrected.status, corrected.replayed), (202, false), "{}", corrected.body);
    // Retry and Cancel take keys as well.
    let id = first.body["BulkChangeId"].as_i64().expect("id");
    let cancel = format!("/M2M/BulkChange/{id}/Cancel");
    let c1 = app.post_as(&cancel, &Value::Null, &app.token, Some("cancel-1")).await;
    let c2 = app.post_as(&cancel, &Value::Null, &app.token, Some("cancel-1")).await;
    assert_eq!((c1.body["Cancelled"].as_i64(), c2.replayed), (Some(2), true));
    assert_eq!(c2.body, c1.body, "the replay says what the first cancel did");
}

/// A client that hangs up while its keyed request runs (a closed laptop, a proxy timeout) and sends it again: the
/// dropped request runs to its end in the server all the same, so the retry gets its answer within a moment (a
/// replay of the one bulk change it made) instead of 409 "still being processed" until the reservation goes stale
/// (60 s), and the devices are not submitted twice.
#[tokio::test]
async fn a_request_its_client_dropped_is_answered_to_its_retry() {
    let app = spawn_idle().await;
    let devices: Vec<String> = (0..10_000).map(|i| bench_iccid(100_000 + i)).collect();
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices,
                      "StatusUpdate": {"TargetStatus": "Active"}});
    let before = app.stack.store.table_row_counts().await.expect("counts");
    let sending = tokio::spawn({
        let (url, token, body) =
            (format!("{}/M2M/BulkChange", app.stack.base_url()), app.token.clone(), body.to_string());
        async move {
            let client = reqwest::Client::new();
            let request = client.post(url).bearer_auth(token).header("content-type", "application/json");
            request.header("Idempotency-Key", "dropped").body(body).send().await.map(|r| r.status().as_u16())
        }
    });
    // The request runs once its key is reserved: the client hangs up then, before its answer.
    loop {
        let now = app.stack.store.table_row_counts().await.expect("counts");
        if now["IdempotencyKey"] > before["IdempotencyKey"] {
            break;
        }
        assert!(!sending.is_finished(), "answered before the client could hang up: {:?}", sending.await);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    sending.abort();
    let hung_up = std::time::Instant::now();
    let retry = loop {
        let answer = app.post_as("/M2M/BulkChange", &body, &app.token, Some("dropped")).await;
        if answer.status != 409 {
            break answer;
        }
        assert!(hung_up.elapsed() < std::time::Duration::from_secs(10), "the key stayed reserved: {}", answer.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    eprintln!("measured: the key answered 409 for {:.2} s after the client hung up", hung_up.elapsed().as_secs_f64());
    assert_eq!((retry.status, retry.replayed), (202, true), "the dropped request's answer: {}", retry.body);
    assert_eq!(app.bulk_changes().await, before["DeviceBulkChange"] + 1, "one bulk change: the dropped request's");
    let counts = &retry.body["Counts"];
    let judged = counts["Valid"].as_i64().unwrap_or_default() + counts["Invalid"].as_i64().unwrap_or_default();
    assert_eq!(judged, 10_000, "the first answer, whole: {counts}");
    let id = retry.body["BulkChangeId"].as_i64().expect("the bulk change's id");
    assert_eq!(app.status(id).await["Total"].as_i64(), Some(10_000), "every device, once");
}

#[tokio::test]
async fn forged_and_oversized_callbacks_store_nothing() {
    let app = spawn().await;
    let before = app.stack.store.table_row_counts().await.expect("counts");
    let forged = |padding: usize| {
        json!({"username": "callback-user", "password": "not-the-password", "requestId": "req-1",
               "deviceIds": [{"id": device(0), "kind": "iccid"}], "status": "Success", "padding": "x".repeat(padding)})
        .to_string()
    };
    let http = reqwest::Client::new();
    let url = format!("{}/ThingSpace/Callback", app.stack.base_url());
    let mut codes = BTreeMap::new();
    for _ in 0..20 {
        let response =
            http.post(&url).header("content-type", "application/json").body(forged(4 * 1024 * 1024)).send().await;
        // The server may close the connection while the 4 MB body is still being sent.
        let code = response.map(|r| r.status().as_u16()).unwrap_or(413);
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(codes, BTreeMap::from([(413, 20)]), "refused on size, before parsing");
    let small = http.post(&url).header("content-type", "application/json").body(forged(10)).send().await.expect("send");
    assert_eq!(small.status().as_u16(), 401);
    assert_eq!(small.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    let after = app.stack.store.table_row_counts().await.expect("counts");
    eprintln!(
        "measured: rows added by 20 forged 4 MB callbacks and one small one = {}",
        after.values().sum::<i64>() - before.values().sum::<i64>()
    );
    assert_eq!(after, before, "no table gained a row");
}

/// A client that announces a body and stalls is answered 408 once no byte came for `API_BODY_IDLE_SECONDS`, and
/// its connection is closed (it held it 20 s and more); a Teal callback with a body above its route's limit is 413
/// like every route's, not 401.
#[tokio::test]
async fn a_stalled_body_is_answered_408_and_a_large_teal_callback_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(seed(), |c| {
        c.run_worker = false;
        c.api_body_idle = std::time::Duration::from_secs(1);
    })
    .await;
    let mut socket =
        tokio::net::TcpStream::connect(app.stack.base_url().trim_start_matches("http://")).await.expect("connect");
    let head = format!(
        "POST /M2M/BulkChange HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{{\"Devi",
        app.token
    );
    socket.write_all(head.as_bytes()).await.expect("send the start");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the connection is still held after 10 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    eprintln!("measured: a stalled body's connection held {:.1} s (idle limit 1 s)", started.elapsed().as_secs_f64());
    assert_eq!(app.bulk_changes().await, 0, "nothing recorded");

    // Chunked (no Content-Length), so only the route's own limit can refuse it.
    let mut socket =
        tokio::net::TcpStream::connect(app.stack.base_url().trim_start_matches("http://")).await.expect("connect");
    let head = format!(
        "POST /Teal/Callback?sig={}&requestId=r-1 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        "0".repeat(64)
    );
    socket.write_all(head.as_bytes()).await.expect("send the head");
    let chunk = format!("{:x}\r\n{}\r\n", 1024, " ".repeat(1024));
    for _ in 0..100 {
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break; // refused before the whole body was sent
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut teal = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read_to_end(&mut teal)).await;
    let teal = String::from_utf8_lossy(&teal);
    assert!(teal.starts_with("HTTP/1.1 413"), "a 100 KB callback body: {teal}");
}

/// A body of thousands of unknown fields is answered with the first 100 named and the rest counted (one such body
/// answered 23 MB and took 370 MB of memory); the submission itself is taken.
#[tokio::test]
async fn unknown_fields_are_reported_capped() {
    let app = spawn_idle().await;
    let mut body = serde_json::Map::new();
    for (k, v) in [
        ("ServiceProviderId", json!(POD19)),
        ("ChangeType", json!(3)),
        ("Devices", json!([device(0)])),
        ("StatusUpdate", json!({"TargetStatus": "Active"})),
    ] {
        body.insert(k.into(), v);
    }
    for i in 0..50_000 {
        body.insert(format!("unknown{i}"), json!(0));
    }
    let answer = app.post_as("/M2M/BulkChange", &Value::Object(body), &app.token, None).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let warnings = answer.body["Warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 101, "100 named, one counting the rest");
    assert!(
        warnings[100]["message"].as_str().expect("message").starts_with("49900 more unknown fields"),
        "{}",
        warnings[100]
    );
    assert!(answer.body.to_string().len() < 64 * 1024, "the answer stays small");
}

#[tokio::test]
async fn tokens_without_exp_not_yet_valid_or_without_a_user_are_401() {
    let app = spawn().await;
    let key = jsonwebtoken::EncodingKey::from_secret(crate::support::JWT_SECRET.as_bytes()).expect("key");
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value| jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign");
    for (claims, why) in [
        (json!({"tenant_id": 1, "sub": "alice"}), "exp"),
        (json!({"tenant_id": 1, "sub": "alice", "exp": now + 600, "nbf": now + 300}), "nbf"),
        (json!({"tenant_id": 1, "sub": "", "exp": now + 600}), "sub"),
        (json!({"tenant_id": 1, "sub": "eve\n2026-12-02T00:00:00Z INFO forged", "exp": now + 600}), "control"),
    ] {
        let answer = app.post_as("/M2M/ValidateBulkChange", &json!({}), &sign(claims.clone()), None).await;
        assert_eq!(answer.status, 401, "{claims}");
        assert!(answer.body["detail"].as_str().expect("detail").contains(why), "{claims}: {}", answer.body);
    }
    let fine = sign(json!({"tenant_id": 1, "sub": "alice", "exp": now + 600}));
    assert_eq!(
        app.post_as("/M2M/ValidateBulkChange", &json!({}), &fine, None).await.status,
        400,
        "valid token, bad body"
    );
}

#[tokio::test]
async fn every_refusal_is_problem_json_and_far_dates_are_400() {
    let app = spawn().await;
    let base = app.stack.base_url();
    let http = reqwest::Client::new();
    let far = json!({"ServiceProviderId": POD19, "ChangeType": 4, "Devices": [device(0)],
                     "CustomerRatePlanUpdate": {"DataAllocationMB": 10, "EffectiveDate": "+10000-01-01"}});
    let answer = app.post_as("/M2M/BulkChange", &far, &app.token, None).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["errors"][0]["field"], "CustomerRatePlanUpdate.EffectiveDate");
    let cases = [
        (http.get(format!("{base}/M2M/BulkChanges?page=abc")), 400),
        (http.delete(format!("{base}/M2M/BulkChange")), 405),
        (http.post(format!("{base}/M2M/BulkChange")).body(vec![b' '; 5 * 1024 * 1024]), 413),
        (http.get(format!("{base}/no/such/route")), 404),
    ];
    for (request, expected) in cases {
        let response = request.bearer_auth(&app.token).send().await.expect("send");
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!((status, content_type.as_deref()), (expected, Some("application/problem+json")), "{body}");
        assert_eq!(body["status"], expected);
    }
}

#[tokio::test]
async fn hostile_device_strings_reach_the_status_page_and_the_email_bounded_and_escaped() {
    let app = spawn().await;
    let long = "9".repeat(10_000);
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "StatusUpdate": {"TargetStatus": "Active"},
                      "Devices": ["8901\r\nBcc: attacker@example.com", "<script>alert(1)</script>", long]});
    let status = app.finished(&app.post_as("/M2M/BulkChange", &body, &app.token, None).await).await;
    let shown: Vec<String> = rows(&status).iter().map(|r| r["ICCID"].as_str().expect("iccid").to_string()).collect();
    assert!(shown.contains(&"8901\\r\\nBcc: attacker@example.com".to_string()), "{shown:?}");
    assert!(shown.iter().all(|s| s.chars().count() <= 41), "bounded: {shown:?}");
    // The e-mail is sent just after the status turns final.
    let mails = app.mails(1, std::time::Duration::from_secs(10)).await;
    let mail = std::fs::read_to_string(mails.first().expect("one failure e-mail")).expect("mail");
    assert!(!mail.lines().any(|l| l.starts_with("Bcc:")), "no header injected through a device string:\n{mail}");
    assert!(mail.len() < 5_000, "the 10 KB entry was cut: {} bytes", mail.len());
    assert!(mail.contains("8901\\r\\nBcc: attacker@example.com"));
}
