//! Undo (issue 22) end to end through the HTTP API and the Control Center simulator: a 200-device status change
//! undone puts every device back on the carrier and in the database; a dry run records nothing; two undos of one
//! bulk change at the same moment undo each device once (one change per device); an undo is not retried.

use std::time::Duration;

use serde_json::{Value, json};

use crate::rollout::{activation, device, seed};
use crate::support::TestApp;

const POD19: i64 = 10;

impl TestApp {
    pub(crate) async fn undo(&self, id: i64, dry_run: bool, key: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/M2M/BulkChange/{id}/Undo?dryRun={dry_run}", self.stack.base_url()))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn sim_status(&self, iccid: &str) -> Option<String> {
        self.stack.simulators.control_center[&POD19].state.device(iccid).map(|d| d.status)
    }
}

fn deactivation(devices: std::ops::Range<usize>) -> Value {
    json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices.map(device).collect::<Vec<_>>(),
           "StatusUpdate": {"TargetStatus": "Deactivated"}})
}

/// 200 active SIMs, deactivated, then undone: every SIM is active again on the carrier and in the database.
#[tokio::test]
async fn an_undo_of_a_200_device_status_change_puts_every_device_back() {
    let mut active = seed(200, 500.0);
    for d in &mut active.devices {
        d.status = "ACTIVATED".into();
    }
    let app = TestApp::start(active, |_| {}).await;
    let devices: Vec<String> = (0..200).map(device).collect();
    let before: Vec<Option<String>> = devices.iter().map(|d| app.sim_status(d)).collect();
    let status_before = app.stored_status(&devices[0]).await.1;
    let id = app.accepted(&deactivation(0..200)).await;
    let done = app.final_status(id, Duration::from_secs(60)).await;
    assert_eq!(done["Counts"], json!({"PROCESSED": 200}), "{done}");
    assert!(devices.iter().all(|d| app.sim_status(d).as_deref() == Some("DEACTIVATED")));
    let writes_before_undo = app.stack.simulators.control_center[&POD19].state.calls().len();

    let (code, plan) = app.undo(id, true, "undo-dry").await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["Counts"], json!({"Restore": 200, "Refused": 0}), "{}", plan["Counts"]);
    assert_eq!(plan["Rows"][0]["Restore"]["DeviceStatusId"], json!(status_before), "{}", plan["Rows"][0]);
    assert_eq!(
        app.stack.simulators.control_center[&POD19].state.calls().len(),
        writes_before_undo,
        "a dry run calls no carrier"
    );
    let (_, listed) = app.get("/M2M/BulkChanges", &app.token).await;
    assert_eq!(listed["Total"], 1, "a dry run records nothing");

    let (code, accepted) = app.undo(id, false, "undo-1").await;
    assert_eq!(code, 202, "{accepted}");
    let undo = accepted["BulkChangeId"].as_i64().expect("id");
    let undone = app.final_status(undo, Duration::from_secs(60)).await;
    assert_eq!(undone["Counts"], json!({"PROCESSED": 200}), "{undone}");
    assert_eq!(undone["UndoOf"], id);
    let restored = devices.iter().zip(&before).filter(|(d, was)| app.sim_status(d) == **was).count();
    let mut stored_back = 0;
    for d in &devices {
        let (status, _) = app.stored_status(d).await;
        if status == "ACTIVATED" {
            stored_back += 1;
        }
    }
    println!("undo: {restored} of 200 devices restored on the carrier, {stored_back} of 200 in the database");
    assert_eq!((restored, stored_back), (200, 200));
    // Replayed under its key: the same undo, nothing new.
    let (code, again) = app.undo(id, false, "undo-1").await;
    assert_eq!((code, &again["BulkChangeId"]), (202, &json!(undo)));
    let (code, problem) = app.act(undo, "Retry", &app.token).await;
    assert_eq!(code, 409, "an undo is not retried: {problem}");
    // An undo is undone like any bulk change: each row's own value is what it set.
    let (code, again) = app.undo(undo, false, "undo-of-undo").await;
    assert_eq!((code, &again["Counts"]), (202, &json!({"Restore": 200, "Refused": 0})), "{again}");
    let redone = app.final_status(again["BulkChangeId"].as_i64().expect("id"), Duration::from_secs(60)).await;
    assert_eq!(redone["Counts"], json!({"PROCESSED": 200}), "{redone}");
    assert!(devices.iter().all(|d| app.sim_status(d).as_deref() == Some("DEACTIVATED")), "deactivated again");
}

/// An activation from a pre-activation status is not undone on Control Center (it refuses such a move): the dry
/// run says so for every row, and the undo itself is refused with nothing to do.
#[tokio::test]
async fn an_activation_is_not_undone_back_to_a_pre_activation_status() {
    let app = TestApp::start(seed(3, 100.0), |_| {}).await;
    let id = app.accepted(&activation(0..3, json!({}))).await;
    app.final_status(id, Duration::from_secs(30)).await;
    let (code, plan) = app.undo(id, true, "dry").await;
    assert_eq!((code, &plan["Counts"]), (200, &json!({"Restore": 0, "Refused": 3})), "{plan}");
    assert!(plan["Rows"][0]["Refused"].as_str().is_some_and(|r| r.contains("pre-activation")), "{plan}");
    let (code, problem) = app.undo(id, false, "real").await;
    assert_eq!(code, 409, "{problem}");
}

/// Two undos of one bulk change at the same moment: each device is undone by one of them; the other's row is an
/// ERROR, naming the holder (the database decides when both are recorded) or, when the first already finished the
/// device, saying it changed since (at planning, or at the worker's check before the carrier call).
#[tokio::test]
async fn two_undos_at_once_undo_each_device_once() {
    let mut active = seed(40, 20.0);
    for d in &mut active.devices {
        d.status = "ACTIVATED".into();
    }
    let app = TestApp::start(active, |_| {}).await;
    let id = app.accepted(&deactivation(0..40)).await;
    app.final_status(id, Duration::from_secs(30)).await;
    let (first, second) = tokio::join!(app.undo(id, false, "undo-a"), app.undo(id, false, "undo-b"));
    assert_eq!((first.0, second.0), (202, 202), "{first:?} {second:?}");
    let ids = [first.1["BulkChangeId"].as_i64().expect("id"), second.1["BulkChangeId"].as_i64().expect("id")];
    let mut pending_or_done = 0;
    let mut held = 0;
    for undo in ids {
        let status = app.final_status(undo, Duration::from_secs(30)).await;
        pending_or_done += status["Counts"]["PROCESSED"].as_u64().unwrap_or(0);
        for row in status["Rows"].as_array().into_iter().flatten().filter(|r| r["Status"] == "ERROR") {
            // Held by the other undo when this one was recorded, or already undone by it when this one was planned
            // or when its row ran.
            let why = row["StatusDetails"].as_str().unwrap_or_default();
            assert!(why.contains("has an open") || why.contains("changed since"), "{row}");
            held += 1;
        }
    }
    assert_eq!((pending_or_done, held), (40, 40), "each device undone once, refused once");
    let writes: usize =
        app.stack.simulators.control_center[&POD19].state.calls().iter().filter(|c| c.method == "PUT").count();
    assert_eq!(writes, 80, "40 deactivations and 40 undos: {writes}");
}

impl TestApp {
    /// The device's status code and id in the database.
    async fn stored_status(&self, iccid: &str) -> (String, i64) {
        let stored = self.stack.store.device_by_iccid(1, iccid).await.expect("read").expect("device");
        let statuses = self.stack.store.device_statuses(domain::Integration::Pod19).await.expect("statuses");
        let code =
            statuses.iter().find(|s| s.id == stored.device_status_id).map(|s| s.status.clone()).unwrap_or_default();
        (code, stored.device_status_id)
    }
}
