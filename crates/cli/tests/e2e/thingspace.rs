//! ThingSpace end to end: the local stack with the ThingSpace simulator, its `CarrierService` callback registered
//! to the stack's `/ThingSpace/Callback`, driven through HTTP; outcomes read through the API, the database and the
//! simulator's call record.

use domain::Integration;
use std::time::Duration;

use crate::support::{TestApp, row};
use cli::StackConfig;
use cli::bench::bench_iccid;
use serde_json::{Value, json};
use simulators::thingspace::{ThingSpaceSim, TsBehaviour};
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider, SeedTenant, SeedThingSpace};

const TS: i64 = 40;
const OTHER_TS: i64 = 41;
const REV: i64 = 42;

fn preactive(i: usize) -> String {
    bench_iccid(2000 + i)
}
fn active(i: usize) -> String {
    bench_iccid(2100 + i)
}
fn inventory(i: usize) -> String {
    bench_iccid(2200 + i)
}
fn deactive(i: usize) -> String {
    bench_iccid(3000 + i)
}
fn other_tenant() -> String {
    bench_iccid(2300)
}

fn thingspace_sp(id: i64, tenant_id: i64) -> SeedServiceProvider {
    SeedServiceProvider {
        name: format!("ThingSpace {tenant_id}"),
        username: format!("uws-{tenant_id}"),
        secret: format!("uws-password-{tenant_id}"),
        rate_limit_per_second: 100.0,
        thing_space: Some(SeedThingSpace {
            app_key: format!("app-key-{tenant_id}"),
            app_secret: format!("app-secret-{tenant_id}"),
            account_name: format!("086892420{tenant_id}-00001"),
            callback_username: format!("callback-{tenant_id}"),
            callback_password: format!("callback-password-{tenant_id}"),
        }),
        ..SeedServiceProvider::new(id, tenant_id, Integration::ThingSpace.id())
    }
}

fn device(tenant_id: i64, sp: i64, iccid: String, status: &str, imei: Option<String>) -> SeedDevice {
    SeedDevice { imei, carrier_rate_plan: Some("m2m_4G".into()), ..SeedDevice::new(tenant_id, sp, iccid, status) }
}

fn seed() -> Seed {
    let imei = |i: usize| {
        let payload = format!("35000022{i:06}");
        Some(format!("{payload}{}", domain::ids::luhn_check_digit(&payload)))
    };
    let mut devices: Vec<SeedDevice> = (0..6).map(|i| device(1, TS, preactive(i), "PREACTIVE", imei(i))).collect();
    devices.extend((0..6).map(|i| device(1, TS, active(i), "ACTIVE", imei(100 + i))));
    devices.extend((0..2).map(|i| device(1, TS, inventory(i), "INVENTORY", imei(200 + i))));
    devices.extend((0..250).map(|i| device(1, TS, deactive(i), "DEACTIVE", None)));
    devices.push(device(2, OTHER_TS, other_tenant(), "ACTIVE", None));
    let plan = |id, sp, code: &str| SeedRatePlan::new(id, sp, code, 1024.0, 5.0);
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }, SeedTenant { id: 2, name: "Globex".into() }],
        service_providers: vec![
            thingspace_sp(TS, 1),
            thingspace_sp(OTHER_TS, 2),
            SeedServiceProvider {
                integration_id: Integration::RevIo.id(),
                name: "Rev.io".into(),
                client_code: Some("acme".into()),
                subscription_key: Some("sub-key".into()),
                thing_space: None,
                ..thingspace_sp(REV, 1)
            },
        ],
        device_statuses: vec![],
        carrier_rate_plans: vec![plan(1, TS, "m2m_4G"), plan(2, TS, "m2m_4G_5GB"), plan(3, OTHER_TS, "m2m_4G")],
        rev_customers: vec![store::seed::SeedRevCustomer {
            tenant_id: 1,
            rev_customer_id: "1001".into(),
            name: "Acme Fleet".into(),
        }],
        devices,
        rev_services: vec![],
        telegence_billing_accounts: vec![],
        imei_ranges: vec![],
        customer_rate_plans: vec![store::seed::SeedCustomerPlan { id: 5, tenant_id: 1, name: "Fleet 5 GB".into() }],
        customer_rate_pools: vec![],
    }
}

async fn spawn_with(customize: impl FnOnce(&mut StackConfig)) -> TestApp {
    TestApp::start(seed(), |c| {
        c.worker.carrier_result_wait = Duration::from_secs(30);
        customize(c);
    })
    .await
}

impl TestApp {
    fn sim(&self) -> &ThingSpaceSim {
        &self.stack.simulators.thingspace[&TS]
    }

    async fn post_with(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.stack.base_url())).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// The bulk change's status once every row has a carrier request id (rows wait on the carrier).
    async fn wait_waiting(&self, id: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let response = self
                .http
                .get(format!("{}/M2M/BulkChangeStatus/{id}?pageSize=1000", self.stack.base_url()))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("status");
            let status: Value = response.json().await.expect("json");
            let rows = status["Rows"].as_array().cloned().unwrap_or_default();
            if !rows.is_empty() && rows.iter().all(|r| r["CarrierRequestId"].is_string()) {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "rows never waited on the carrier: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn calls(&self, method: &str, path_end: &str) -> Vec<simulators::RecordedCall> {
        self.sim().state.calls().into_iter().filter(|c| c.method == method && c.path.ends_with(path_end)).collect()
    }

    async fn device(&self, iccid: &str) -> domain::rules::DeviceRecord {
        self.stack.store.device_by_iccid(1, iccid).await.expect("read").expect("device")
    }
}

fn status_update(devices: &[String], target: &str, thing_space: Value) -> Value {
    json!({"ServiceProviderId": TS, "ChangeType": 3, "PortalType": 0, "Devices": devices,
           "StatusUpdate": {"TargetStatus": target, "ThingSpaceStatusUpdate": thing_space}})
}

fn activation(devices: &[String]) -> Value {
    status_update(devices, "Active", json!({"ServicePlan": "m2m_4G", "MdnZipCode": "98801"}))
}

#[tokio::test]
async fn a_multi_device_activation_is_one_request_and_callbacks_finish_it() {
    let app = spawn_with(|_| {}).await;
    let mut devices: Vec<String> = (0..4).map(preactive).collect();
    devices.push(inventory(0));
    let new_imei = "490154203237518";
    let body = status_update(
        &devices,
        "Active",
        json!({"ServicePlan": "m2m_4G", "MdnZipCode": "98801", "Devices": [{"ICCID": inventory(0), "IMEI": new_imei}]}),
    );
    let id = app.accepted(&body).await;
    let status = app.wait_final(id).await;
    assert_eq!((status["Status"].as_str(), status["Counts"]["PROCESSED"].as_i64()), (Some("PROCESSED"), Some(5)));

    let activations = app.calls("POST", "/devices/actions/activate");
    assert_eq!(activations.len(), 1, "one request for every device");
    assert_eq!(activations[0].body["devices"].as_array().map(Vec::len), Some(5));
    assert_eq!(activations[0].body["mdnZipCode"], "98801");
    let adds = app.calls("POST", "/devices/actions/add");
    assert_eq!(adds.len(), 1, "the INVENTORY device is added first");
    assert_eq!(adds[0].body["devicesToAdd"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.calls("CALLBACK", "/ThingSpace/Callback").len(), 5, "one callback per device");
    assert_eq!(app.device(&inventory(0)).await.imei.as_deref(), Some(new_imei), "the IMEI sent with the device");

    for iccid in &devices {
        let carrier = app.sim().state.device(iccid).expect("on ThingSpace");
        let stored = app.device(iccid).await;
        assert_eq!(stored.device_status_id, 401, "ThingSpace ACTIVE");
        assert_eq!(stored.msisdn, carrier.mdn, "the MSISDN the carrier assigned");
        assert_eq!(stored.carrier_rate_plan.as_deref(), Some("m2m_4G"), "the service plan it was activated with");
        assert!(row(&status, iccid)["StatusDetails"].as_str().is_some_and(|d| d.contains("IP address 10.")));
    }
    let logs = app.stack.store.logs(1, id).await.expect("logs");
    assert_eq!(logs.iter().filter(|l| l.description == "ThingSpace Callback (CarrierService)").count(), 5);
    assert!(
        logs.iter().all(|l| !l.request_text.contains("uws-password") && !l.response_text.contains("callback-password"))
    );
}

#[tokio::test]
async fn activation_without_a_zip_code_is_refused_at_validation() {
    let app = spawn_with(|_| {}).await;
    let devices = vec![preactive(0), preactive(1)];
    let body = status_update(
        &devices,
        "Active",
        json!({"ServicePlan": "m2m_4G", "Devices": [{"ICCID": preactive(1), "MdnZipCode": "98802"}]}),
    );
    let (status, answer) = app.post_with("/M2M/ValidateBulkChange", &body, Some(&app.token)).await;
    assert_eq!(status, 200, "{answer}");
    let result =
        |iccid: &str| answer["Devices"].as_array().and_then(|d| d.iter().find(|x| x["ICCID"] == iccid)).cloned();
    let first = result(&preactive(0)).expect("first device");
    assert_eq!(first["Valid"], false);
    assert_eq!(
        first["Errors"][0]["message"],
        format!("MdnZipCode is required to activate {} on ThingSpace", preactive(0))
    );
    assert_eq!(result(&preactive(1)).expect("second device")["Valid"], true, "its own ZIP code");
    let no_plan = status_update(&devices, "Active", json!({"MdnZipCode": "98801"}));
    let (_, answer) = app.post_with("/M2M/ValidateBulkChange", &no_plan, Some(&app.token)).await;
    assert!(
        answer["Devices"][0]["Errors"][0]["message"].as_str().is_some_and(|e| e.starts_with("ServicePlan is required"))
    );
    assert!(app.calls("POST", "/devices/actions/activate").is_empty());
}

#[tokio::test]
async fn suspend_restore_and_deactivate_follow_the_state_table() {
    let app = spawn_with(|_| {}).await;
    let pair = vec![active(0), active(1)];
    let suspended = app.wait_final(app.accepted(&status_update(&pair, "Suspended", json!({}))).await).await;
    assert_eq!(suspended["Counts"]["PROCESSED"], 2, "{suspended}");
    assert_eq!(app.sim().state.device(&active(0)).expect("device").state, "suspend");
    // SUSPEND → DEACTIVE is not in ThingSpace's table: refused per device at intake.
    let (_, answer) = app
        .post_with("/M2M/ValidateBulkChange", &status_update(&pair, "Deactivated", json!({})), Some(&app.token))
        .await;
    assert!(
        answer["Devices"][0]["Errors"][0]["message"]
            .as_str()
            .is_some_and(|e| e.contains("does not allow SUSPEND to DEACTIVE"))
    );
    let restored = app.wait_final(app.accepted(&status_update(&pair, "Active", json!({}))).await).await;
    assert_eq!(restored["Counts"]["PROCESSED"], 2, "{restored}");
    assert_eq!(app.calls("POST", "/devices/actions/restore").len(), 1, "restore, not activate");
    let body = status_update(&[active(2)], "Deactivated", json!({"EtfWaiver": true}));
    let deactivated = app.wait_final(app.accepted(&body).await).await;
    assert_eq!(deactivated["Counts"]["PROCESSED"], 1, "{deactivated}");
    let call = &app.calls("POST", "/devices/actions/deactivate")[0];
    assert_eq!((&call.body["reasonCode"], &call.body["etfWaiver"]), (&json!("FF"), &json!(true)));
    assert_eq!(app.device(&active(2)).await.device_status_id, 403, "DEACTIVE");
}

#[tokio::test]
async fn a_lost_callback_is_recovered_by_polling() {
    let app = spawn_with(|c| {
        c.thingspace_behaviour = TsBehaviour { drop_callbacks: true, ..TsBehaviour::default() };
        c.worker.carrier_result_wait = Duration::from_millis(500);
    })
    .await;
    let devices = vec![preactive(0), preactive(1)];
    let status = app.wait_final(app.accepted(&activation(&devices)).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    assert!(app.calls("CALLBACK", "").is_empty(), "no callback came");
    assert_eq!(app.calls("GET", "/status").len(), 1, "one request-status poll for the request");
    for iccid in &devices {
        assert_eq!(
            app.device(iccid).await.msisdn,
            app.sim().state.device(iccid).expect("device").mdn,
            "read by polling"
        );
    }
}

#[tokio::test]
async fn no_result_at_all_fails_the_row_after_the_give_up_time() {
    let app = spawn_with(|c| {
        c.thingspace_behaviour =
            TsBehaviour { drop_callbacks: true, callback_delay: Duration::from_secs(600), ..TsBehaviour::default() };
        c.worker.carrier_result_wait = Duration::from_millis(300);
        c.worker.carrier_result_give_up = Duration::from_secs(1);
    })
    .await;
    let status = app.wait_final(app.accepted(&activation(&[preactive(2)])).await).await;
    let r = row(&status, &preactive(2));
    assert_eq!(r["Status"], "API_FAILED");
    assert!(r["StatusDetails"].as_str().is_some_and(|d| d.starts_with("No result from carrier for request")), "{r}");
    assert!(!app.calls("GET", "/status").is_empty(), "it asked before giving up");
}

#[tokio::test]
async fn duplicated_and_reordered_callbacks_change_nothing() {
    let app = spawn_with(|c| {
        c.thingspace_behaviour =
            TsBehaviour { duplicate_callbacks: true, reorder_callbacks: true, ..TsBehaviour::default() };
    })
    .await;
    let devices: Vec<String> = (0..3).map(preactive).collect();
    let id = app.accepted(&activation(&devices)).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"]["PROCESSED"], 3);
    // Wait for the duplicates to be delivered too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.calls("CALLBACK", "/ThingSpace/Callback").len() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "duplicates never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let callbacks = app.calls("CALLBACK", "/ThingSpace/Callback");
    assert!(callbacks.iter().all(|c| c.status == 200), "duplicates are acknowledged");
    assert_eq!(callbacks[0].body["deviceIds"][0]["id"], devices[2], "last device first");
    let logs = app.stack.store.logs(1, id).await.expect("logs");
    assert_eq!(
        logs.iter().filter(|l| l.description == "ThingSpace Callback (CarrierService)").count(),
        3,
        "applied once"
    );
    let again = app.wait_final(id).await;
    for iccid in &devices {
        assert_eq!(row(&again, iccid)["ProcessedDate"], row(&status, iccid)["ProcessedDate"], "unchanged");
    }
}

#[tokio::test]
async fn a_callback_with_a_wrong_password_or_for_another_tenants_request_is_refused() {
    let app = spawn_with(|c| {
        c.thingspace_behaviour = TsBehaviour { drop_callbacks: true, ..TsBehaviour::default() };
        c.worker.carrier_result_wait = Duration::from_secs(600);
    })
    .await;
    let id = app.accepted(&activation(&[preactive(3)])).await;
    let waiting = app.wait_waiting(id).await;
    let request_id = row(&waiting, &preactive(3))["CarrierRequestId"].as_str().expect("request id").to_string();
    let callback = |user: &str, password: &str| {
        json!({"requestId": request_id, "deviceIds": [{"kind": "iccid", "id": preactive(3)}],
               "username": user, "password": password, "status": "Success"})
    };
    let (status, _) = app.post_with("/ThingSpace/Callback", &callback("callback-1", "guess"), None).await;
    assert_eq!(status, 401, "wrong password");
    let (status, _) = app.post_with("/ThingSpace/Callback", &callback("callback-2", "callback-password-2"), None).await;
    assert_eq!(status, 404, "tenant 2's account cannot answer tenant 1's request");
    let still = app.wait_waiting(id).await;
    assert_eq!(row(&still, &preactive(3))["Status"], "PROCESSING", "nothing changed");
    let (status, answer) =
        app.post_with("/ThingSpace/Callback", &callback("callback-1", "callback-password-1"), None).await;
    assert_eq!((status, &answer["Applied"]), (200, &json!(true)), "{answer}");
    assert_eq!(app.wait_final(id).await["Status"], "PROCESSED");
}

#[tokio::test]
async fn plan_username_and_identifier_changes_go_through_thingspace() {
    let app = spawn_with(|_| {}).await;
    let pair = vec![active(3), active(4)];
    let plan = json!({"ServiceProviderId": TS, "ChangeType": 7, "Devices": pair,
                      "CarrierRatePlanUpdate": {"CarrierRatePlan": "m2m_4G_5GB"}});
    let status = app.wait_final(app.accepted(&plan).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    assert_eq!(app.calls("PUT", "/devices/actions/plan").len(), 1, "one request for both");
    assert_eq!(app.device(&active(3)).await.carrier_rate_plan.as_deref(), Some("m2m_4G_5GB"));

    let username = json!({"ServiceProviderId": TS, "ChangeType": 6, "Devices": pair,
                          "Username": {"NewUsername": "truck-17", "CostCenter": "West", "CostCenter3": "Reefer"}});
    let status = app.wait_final(app.accepted(&username).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    let fields = &app.calls("PUT", "/devices/actions/customFields")[0].body["customFieldsToUpdate"];
    assert_eq!(
        fields,
        &json!([{"key": "CustomField1", "value": "truck-17"}, {"key": "CustomField2", "value": "West"},
                {"key": "CustomField4", "value": "Reefer"}]),
        "username and cost centers in one request"
    );
    let carrier = app.sim().state.device(&active(4)).expect("device");
    assert!(carrier.custom_fields.contains(&("CustomField2".to_string(), "West".to_string())));
    assert_eq!(app.device(&active(4)).await.username.as_deref(), Some("truck-17"));

    let new_iccid = bench_iccid(2900);
    let swap = json!({"ServiceProviderId": TS, "ChangeType": 8, "Devices": [active(5)],
                      "ChangeIdentifier": {"NewICCID": new_iccid}});
    let status = app.wait_final(app.accepted(&swap).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 1, "{status}");
    assert_eq!(app.calls("PUT", "/actions/deviceId")[0].body["change4gOption"], "ChangeICCID");
    assert!(
        app.stack.store.device_by_iccid(1, &new_iccid).await.expect("read").is_some(),
        "the device has its new SIM"
    );
    assert!(app.sim().state.device(&new_iccid).is_some());
}

#[tokio::test]
async fn deleting_250_devices_makes_three_calls_and_reports_each_device() {
    let app = spawn_with(|_| {}).await;
    // The carrier shows one of them active (our database is behind): that one fails, the others are deleted.
    app.sim().state.account.lock().expect("lock").devices.get_mut(&deactive(7)).expect("device").state =
        "active".into();
    let devices: Vec<String> = (0..250).map(deactive).collect();
    let mut body = json!({"ServiceProviderId": TS, "ChangeType": 9, "Devices": devices});
    body["Devices"].as_array_mut().expect("devices").push(json!(active(0)));
    let id = app.accepted(&body).await;
    let status = app.wait_final(id).await;
    assert_eq!(app.calls("POST", "/devices/actions/delete").len(), 3, "100 + 100 + 50");
    assert_eq!((status["Counts"]["PROCESSED"].as_i64(), status["Counts"]["API_FAILED"].as_i64()), (Some(249), Some(1)));
    let failed = row(&status, &deactive(7));
    assert_eq!(failed["Status"], "API_FAILED");
    assert!(failed["StatusDetails"].as_str().is_some_and(|d| d.contains("not in deactive state")), "{failed}");
    assert!(row(&status, &active(0))["StatusDetails"].as_str().is_some_and(|d| d.contains("only deactivated")));
    assert!(app.stack.store.device_by_iccid(1, &deactive(0)).await.expect("read").is_none_or(|d| d.is_deleted));
    assert!(!app.device(&deactive(7)).await.is_deleted);
}

#[tokio::test]
async fn an_expired_session_is_renewed_once_and_the_work_goes_on() {
    let app = spawn_with(|_| {}).await;
    assert_eq!(app.wait_final(app.accepted(&activation(&[preactive(0)])).await).await["Status"], "PROCESSED");
    let logins = || app.calls("POST", "/session/login").len();
    // The stack registered the callback (one login); the worker's client logged in once and keeps its session.
    let before = logins();
    app.sim().state.expire_sessions();
    let status = app.wait_final(app.accepted(&activation(&[preactive(1)])).await).await;
    assert_eq!(status["Status"], "PROCESSED", "{status}");
    assert_eq!(logins(), before + 1, "one new login after the session expired");
}

#[tokio::test]
async fn bad_credentials_stop_after_one_failed_login() {
    let app = spawn_with(|_| {}).await;
    app.sim().state.account.lock().expect("lock").password = "rotated-by-someone-else".into();
    let first = app.wait_final(app.accepted(&activation(&[preactive(0), preactive(1)])).await).await;
    assert_eq!(first["Status"], "ERROR");
    assert!(
        row(&first, &preactive(0))["StatusDetails"].as_str().is_some_and(|d| d.contains("login refused")),
        "{first}"
    );
    let second = app.wait_final(app.accepted(&activation(&[preactive(2)])).await).await;
    let reason = row(&second, &preactive(2))["StatusDetails"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("ThingSpace login is stopped for this account"), "{reason}");
    assert_eq!(app.sim().state.failed_logins(), 1, "one failed login, never five");
    let sp = app.stack.store.service_provider(1, TS).await.expect("read").expect("sp");
    assert!(sp.thingspace.and_then(|t| t.login_refused).is_some(), "recorded for every worker");
    let outbox = std::fs::read_dir(app.stack.config.outbox.clone()).map(|d| d.count()).unwrap_or(0);
    assert!(outbox >= 1, "the failure e-mail went out");
}

#[tokio::test]
async fn customer_plan_and_archival_work_for_thingspace_devices_without_a_carrier_call() {
    let app = spawn_with(|_| {}).await;
    let plan = json!({"ServiceProviderId": TS, "ChangeType": 4, "Devices": [active(0)],
                      "CustomerRatePlanUpdate": {"CustomerRatePlanId": 5}});
    assert_eq!(app.wait_final(app.accepted(&plan).await).await["Status"], "PROCESSED");
    assert_eq!(app.device(&active(0)).await.customer_rate_plan_id, Some(5));
    let archive = json!({"ServiceProviderId": TS, "ChangeType": 5, "Devices": [deactive(0)]});
    assert_eq!(app.wait_final(app.accepted(&archive).await).await["Status"], "PROCESSED");
    let calls = app.sim().state.calls();
    assert!(
        calls.iter().all(|c| c.path.contains("oauth2") || c.path.contains("session") || c.path.contains("callbacks")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_callback_that_beats_the_recording_of_its_request_id_is_still_applied() {
    // ThingSpace delivers the callbacks before it answers the request: no row waits on the request id yet.
    let app = spawn_with(|c| {
        c.thingspace_behaviour =
            TsBehaviour { callback_delay: Duration::ZERO, callbacks_before_answer: true, ..TsBehaviour::default() };
        c.worker.carrier_result_wait = Duration::from_secs(600);
    })
    .await;
    let devices = vec![preactive(0), preactive(1)];
    let status = app.wait_final(app.accepted(&activation(&devices)).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    let callbacks = app.calls("CALLBACK", "/ThingSpace/Callback");
    assert!(callbacks.iter().all(|c| c.status == 404), "no row waited yet when they came: {callbacks:?}");
    assert!(app.calls("GET", "/status").is_empty(), "settled by the callbacks, not by polling after 10 minutes");
    for iccid in &devices {
        assert_eq!(app.device(iccid).await.msisdn, app.sim().state.device(iccid).expect("device").mdn);
    }
}

#[tokio::test]
async fn activating_1000_devices_takes_one_carrier_request() {
    let many: Vec<String> = (0..1000).map(|i| bench_iccid(5000 + i)).collect();
    let seeded = many.clone();
    let app = spawn_with(move |c| {
        if let Some(seed) = c.seed.as_mut() {
            seed.devices.extend(seeded.into_iter().map(|iccid| device(1, TS, iccid, "PREACTIVE", None)));
        }
    })
    .await;
    let before = app.sim().state.calls().len();
    let status = app.wait_final(app.accepted(&activation(&many)).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 1000, "{}", status["Counts"]);
    let calls = app.sim().state.calls().split_off(before);
    let count = |method: &str, end: &str| calls.iter().filter(|c| c.method == method && c.path.ends_with(end)).count();
    let (tokens, logins, activations, callbacks) = (
        count("POST", "/oauth2/token"),
        count("POST", "/session/login"),
        count("POST", "/devices/actions/activate"),
        count("CALLBACK", "/ThingSpace/Callback"),
    );
    eprintln!(
        "1,000-device activation: {activations} activate request(s), {tokens} OAuth token request(s), {logins} session login(s), {callbacks} callbacks, {} carrier calls in all",
        calls.len() - callbacks
    );
    assert_eq!(activations, 1, "one request for 1,000 devices");
    assert!(tokens <= 1 && logins <= 1, "tokens reused: {tokens} token requests, {logins} logins");
    assert_eq!(callbacks, 1000, "one callback per device");
    assert_eq!(calls.len() - callbacks, activations + tokens + logins, "nothing else was called");
}

/// Claims the rows of bulk change `id` as a worker that then dies: its lease runs out after a second.
async fn claimed_by_a_dead_worker(app: &TestApp, id: i64) {
    let rows = app
        .stack
        .store
        .claim_rows(id, "dead-worker", 100, Duration::from_secs(1), chrono::Utc::now())
        .await
        .expect("claim");
    assert!(!rows.is_empty(), "the dead worker held the rows");
}

#[tokio::test]
async fn a_request_a_dead_worker_sent_is_not_sent_again() {
    let app = spawn_with(|c| c.run_worker = false).await;
    let id = app.accepted(&activation(&[preactive(0), preactive(1)])).await;
    claimed_by_a_dead_worker(&app, id).await;
    // The dead worker's request reached ThingSpace for the first device only.
    app.sim().state.account.lock().expect("lock").devices.get_mut(&preactive(0)).expect("device").state =
        "active".into();
    let _worker = app.stack.spawn_worker(app.stack.config.worker.clone()).expect("worker");
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    let confirmed = row(&status, &preactive(0))["StatusDetails"].as_str().unwrap_or_default().to_string();
    assert!(confirmed.ends_with("(found done on the carrier: an earlier attempt had sent it)"), "{confirmed}");
    let activations = app.calls("POST", "/devices/actions/activate");
    assert_eq!(activations.len(), 1);
    assert_eq!(
        activations[0].body["devices"],
        json!([{"deviceIds": [
        {"kind": "iccid", "id": preactive(1)}, {"kind": "imei", "id": app.device(&preactive(1)).await.imei}]}]),
        "only the device whose request never arrived"
    );
}

#[tokio::test]
async fn a_delete_a_dead_worker_sent_is_not_sent_again() {
    let app = spawn_with(|c| c.run_worker = false).await;
    let id =
        app.accepted(&json!({"ServiceProviderId": TS, "ChangeType": 9, "Devices": [deactive(0), deactive(1)]})).await;
    claimed_by_a_dead_worker(&app, id).await;
    app.sim().state.account.lock().expect("lock").devices.remove(&deactive(0));
    let _worker = app.stack.spawn_worker(app.stack.config.worker.clone()).expect("worker");
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    let deletes = app.calls("POST", "/devices/actions/delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body["devicesToDelete"].as_array().map(Vec::len), Some(1), "only the one still there");
    assert!(app.stack.store.device_by_iccid(1, &deactive(0)).await.expect("read").is_none_or(|d| d.is_deleted));
}

#[tokio::test]
async fn billing_steps_follow_the_carrier_result_and_only_a_success() {
    let app = spawn_with(|_| {}).await;
    // The second device is not on ThingSpace: its activation fails in the callback.
    app.sim().state.account.lock().expect("lock").devices.remove(&preactive(5));
    let devices = vec![preactive(4), preactive(5)];
    let mut body = activation(&devices);
    body["StatusUpdate"]["AccountNumber"] = json!("1001");
    body["StatusUpdate"]["RevService"] =
        json!({"RevCustomerId": "1001", "CreateRevService": true, "ProviderId": 12, "ServiceTypeId": 3});
    let status = app.wait_final(app.accepted(&body).await).await;
    let ok = row(&status, &preactive(4));
    assert_eq!(ok["Status"], "PROCESSED", "{status}");
    let details = ok["StatusDetails"].as_str().unwrap_or_default();
    assert!(details.contains("Status changed to ACTIVE") && details.contains("Rev.io service"), "{details}");
    assert!(details.contains("assigned to Rev customer 1001"), "{details}");
    assert_eq!(row(&status, &preactive(5))["Status"], "API_FAILED");
    let services = app.stack.simulators.rev_io[&REV].state.services();
    let lines: Vec<_> =
        services.iter().filter(|s| s.number2.as_deref().is_some_and(|n| devices.contains(&n.to_string()))).collect();
    assert_eq!(lines.len(), 1, "a service line for the activated device only: {services:?}");
    assert_eq!(lines[0].number2.as_deref(), Some(preactive(4).as_str()));
    assert_eq!(app.device(&preactive(4)).await.rev_customer_id.as_deref(), Some("1001"));
    assert_eq!(app.device(&preactive(5)).await.rev_customer_id, None);
}

#[tokio::test]
async fn an_assignment_with_a_service_plan_moves_the_plan_first_then_assigns() {
    let app = spawn_with(|_| {}).await;
    let body = json!({"ServiceProviderId": TS, "ChangeType": 1, "Devices": [active(0), active(1)],
                      "RevService": {"RevCustomerId": "1001", "AddCarrierRatePlan": true, "CarrierRatePlan": "m2m_4G_5GB"}});
    let status = app.wait_final(app.accepted(&body).await).await;
    assert_eq!(status["Counts"]["PROCESSED"], 2, "{status}");
    assert_eq!(app.calls("PUT", "/devices/actions/plan").len(), 1, "one plan request for both");
    for iccid in [active(0), active(1)] {
        let stored = app.device(&iccid).await;
        assert_eq!(
            (stored.carrier_rate_plan.as_deref(), stored.rev_customer_id.as_deref()),
            (Some("m2m_4G_5GB"), Some("1001"))
        );
        assert_eq!(app.sim().state.device(&iccid).expect("device").service_plan.as_deref(), Some("m2m_4G_5GB"));
    }
}

#[tokio::test]
async fn a_device_added_before_its_activation_failed_is_recorded_as_pre_active() {
    let failing = inventory(1);
    let app = spawn_with(|c| {
        c.thingspace_behaviour = TsBehaviour { failing_iccids: vec![inventory(1)], ..TsBehaviour::default() };
    })
    .await;
    let status = app.wait_final(app.accepted(&activation(&[failing.clone(), inventory(0)])).await).await;
    let failed = row(&status, &failing);
    assert_eq!(failed["Status"], "API_FAILED", "{status}");
    assert!(failed["StatusDetails"].as_str().is_some_and(|d| d.contains("at the network") && d.contains("pre-active")));
    assert_eq!(app.device(&failing).await.device_status_id, 402, "PREACTIVE, as ThingSpace holds it");
    assert_eq!(app.sim().state.device(&failing).expect("added").state, "preactive");
    assert_eq!(app.device(&inventory(0)).await.device_status_id, 401, "the other one is active");
}

#[tokio::test]
async fn an_activation_applied_then_answered_502_is_never_sent_twice() {
    let app = spawn_with(|_| {}).await;
    app.sim().state.harness.set_faults(simulators::Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let devices: Vec<String> = (0..2).map(preactive).collect();
    let status = app.wait_final(app.accepted(&activation(&devices)).await).await;
    assert_eq!(app.calls("POST", "/devices/actions/activate").len(), 1, "the lost answer is not a reason to resend");
    for iccid in &devices {
        // ThingSpace still works on it when the rows are settled by reading the devices: the row says so.
        let details = row(&status, iccid)["StatusDetails"].as_str().expect("details").to_string();
        assert!(details.contains("HTTP 502") && details.contains("may still apply it"), "{details}");
    }
    // Once ThingSpace has applied it, an operator's retry finds the devices active and sends nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while devices.iter().any(|d| app.sim().state.device(d).is_none_or(|x| x.state != "active")) {
        assert!(tokio::time::Instant::now() < deadline, "ThingSpace never applied the request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = format!("/M2M/BulkChange/{}/Retry", status["BulkChangeId"]);
    let (code, retried) = app.post_with(&path, &json!(null), Some(&app.token)).await;
    assert_eq!(code, 202, "{retried}");
    let again = app.wait_final(retried["BulkChangeId"].as_i64().expect("id")).await;
    for iccid in &devices {
        let details = row(&again, iccid)["StatusDetails"].as_str().expect("details").to_string();
        assert!(details.ends_with("(found done on the carrier: an earlier attempt had sent it)"), "{details}");
        assert_eq!(app.device(iccid).await.device_status_id, 401, "the database follows the carrier");
    }
    assert_eq!(app.calls("POST", "/devices/actions/activate").len(), 1);
}

/// `make chaos SEED=32` (before the fix): an ICCID swap whose answer was lost (the request taken, the connection
/// dropped) ended API_FAILED "no response" while ThingSpace showed the device under its new ICCID. The row now reads
/// the device under the new ICCID and says what it found; a retry finds the swap done and sends nothing again.
#[tokio::test]
async fn a_sim_swap_whose_answer_is_lost_is_read_back_and_never_sent_twice() {
    let app = spawn_with(|_| {}).await;
    app.sim().state.harness.set_faults(simulators::Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let new_iccid = bench_iccid(2901);
    let swap = json!({"ServiceProviderId": TS, "ChangeType": 8, "Devices": [active(5)],
                      "ChangeIdentifier": {"NewICCID": new_iccid}});
    let status = app.wait_final(app.accepted(&swap).await).await;
    assert_eq!(app.calls("PUT", "/actions/deviceId").len(), 1, "the lost answer is not a reason to resend: {status}");
    let first = row(&status, &active(5))["StatusDetails"].as_str().expect("details").to_string();
    assert!(
        first.contains("HTTP 502")
            && (first.contains("may still apply it") || first.contains("confirmed on the carrier")),
        "the row says what the read found: {first}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.sim().state.device(&new_iccid).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "ThingSpace never applied the swap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if status["Counts"]["PROCESSED"] != 1 {
        let path = format!("/M2M/BulkChange/{}/Retry", status["BulkChangeId"]);
        let (code, retried) = app.post_with(&path, &json!(null), Some(&app.token)).await;
        assert_eq!(code, 202, "{retried}");
        let again = app.wait_final(retried["BulkChangeId"].as_i64().expect("id")).await;
        let details = row(&again, &active(5))["StatusDetails"].as_str().expect("details").to_string();
        assert!(details.ends_with("(found done on the carrier: an earlier attempt had sent it)"), "{details}");
    }
    assert_eq!(app.calls("PUT", "/actions/deviceId").len(), 1, "never sent twice");
    assert!(
        app.stack.store.device_by_iccid(1, &new_iccid).await.expect("read").is_some(),
        "the device has its new SIM"
    );
}

/// An INVENTORY device's add whose answer was lost (ThingSpace added it, then a 502): the device is read, found
/// listed, and activated; the add is not sent again and the row does not say the add failed.
#[tokio::test]
async fn an_add_to_inventory_whose_answer_is_lost_is_read_back_and_the_device_activated() {
    let app = spawn_with(|_| {}).await;
    app.sim().state.harness.set_faults(simulators::Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let status = app.wait_final(app.accepted(&activation(&[inventory(0)])).await).await;
    assert_eq!(app.calls("POST", "/devices/actions/add").len(), 1, "the add is not sent again: {status}");
    assert_eq!(status["Counts"]["PROCESSED"], 1, "added, then activated: {status}");
    assert_eq!(app.calls("POST", "/devices/actions/activate").len(), 1);
    assert_eq!(app.device(&inventory(0)).await.device_status_id, 401, "ThingSpace ACTIVE");
    let logs = app.stack.store.logs(1, status["BulkChangeId"].as_i64().expect("id")).await.expect("logs");
    assert!(logs.iter().any(|l| l.description == "ThingSpace device list (the add's answer was lost)"), "{logs:?}");
}

/// `make chaos SEED=114` (before the fix): an ICCID swap answered 502 left our database on the old SIM while
/// ThingSpace moved the device to the new one; an activation of the old ICCID, which our database has as active,
/// found ThingSpace not listing it, took it for a new device and added the old SIM back: two devices of one line.
/// A device our database has as listed but ThingSpace does not list is now refused, and nothing is sent.
#[tokio::test]
async fn an_activation_of_a_device_thingspace_no_longer_lists_sends_nothing() {
    let app = spawn_with(|_| {}).await;
    let gone = active(4);
    app.sim().state.account.lock().expect("account").devices.remove(&gone);
    let body = json!({"ServiceProviderId": TS, "ChangeType": 3, "Devices": [gone],
                      "StatusUpdate": {"TargetStatus": "Active",
                                       "ThingSpaceStatusUpdate": {"ServicePlan": "m2m_4G", "MdnZipCode": "98801"}}});
    let status = app.wait_final(app.accepted(&body).await).await;
    let details = row(&status, &gone)["StatusDetails"].as_str().expect("details").to_string();
    assert_eq!(row(&status, &gone)["Status"], "ERROR", "{status}");
    assert!(details.contains("ThingSpace does not list the device"), "{details}");
    assert!(app.calls("POST", "/devices/actions/add").is_empty(), "the old SIM is not added back");
    assert!(app.calls("POST", "/devices/actions/activate").is_empty());
    assert!(app.sim().state.device(&gone).is_none());
}

/// Undo on ThingSpace, whose results come later by callback: a suspension undone restores each device, a plan
/// change undone puts each back on its plan, one request per change; a deactivation is refused (ThingSpace brings a
/// deactivated line back only as a new activation).
#[tokio::test]
async fn an_undo_of_a_suspension_and_of_a_plan_change_goes_back_through_thingspace() {
    let app = spawn_with(|_| {}).await;
    let devices: Vec<String> = (0..4).map(active).collect();
    let id = app.accepted(&status_update(&devices, "Suspended", json!({}))).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 4}));
    assert!(devices.iter().all(|d| app.sim().state.device(d).is_some_and(|s| s.state == "suspend")));
    let (code, answer) = app.undo(id, false, "undo-suspend").await;
    assert_eq!((code, &answer["Counts"]), (202, &json!({"Restore": 4, "Refused": 0})), "{answer}");
    let undone = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 4}), "{undone}");
    let restored = devices.iter().filter(|d| app.sim().state.device(d).is_some_and(|s| s.state == "active")).count();
    let mut stored = 0;
    for d in &devices {
        stored += usize::from(app.device(d).await.device_status_id == 401);
    }
    println!("ThingSpace undo of a suspension: {restored} of 4 restored on the carrier, {stored} of 4 in the database");
    assert_eq!((restored, stored), (4, 4));
    assert_eq!(app.calls("POST", "/devices/actions/restore").len(), 1, "one restore request for the four");

    // Two devices come from m2m_4G_5GB, two from m2m_4G: the undo sends one request per plan to go back to.
    let plan = |devices: &[String], plan: &str| {
        json!({"ServiceProviderId": TS, "ChangeType": 7, "Devices": devices,
               "CarrierRatePlanUpdate": {"CarrierRatePlan": plan}})
    };
    let id = app.accepted(&plan(&devices[..2], "m2m_4G_5GB")).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 2}));
    let id = app.accepted(&plan(&devices, "m2m_4G")).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 4}));
    let requests_before = app.calls("PUT", "/devices/actions/plan").len();
    let (code, answer) = app.undo(id, false, "undo-plan").await;
    assert_eq!(code, 202, "{answer}");
    let undone = app.wait_final(answer["BulkChangeId"].as_i64().expect("id")).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 4}), "{undone}");
    for (i, d) in devices.iter().enumerate() {
        let own = if i < 2 { "m2m_4G_5GB" } else { "m2m_4G" };
        let sim = app.sim().state.device(d).expect("device");
        assert_eq!(sim.service_plan.as_deref(), Some(own), "{d}");
        assert_eq!(app.device(d).await.carrier_rate_plan.as_deref(), Some(own), "{d}");
    }
    let requests = app.calls("PUT", "/devices/actions/plan").len() - requests_before;
    assert_eq!(requests, 2, "one request per plan the devices go back to");

    let id = app.accepted(&status_update(&[active(5)], "Deactivated", json!({}))).await;
    assert_eq!(app.wait_final(id).await["Counts"], json!({"PROCESSED": 1}));
    let (code, plan) = app.undo(id, true, "dry").await;
    assert_eq!((code, &plan["Counts"]), (200, &json!({"Restore": 0, "Refused": 1})), "{plan}");
    assert!(plan["Rows"][0]["Refused"].as_str().is_some_and(|r| r.contains("does not reverse")), "{plan}");
}
