//! `bulkchange` as the operator's client, run as a process against the local stack: a CSV of 1,000 ICCIDs
//! submitted with `--watch`, the results exported as CSV, a failing row making the exit code non-zero, and the same
//! submission sent again with its key returning the same bulk change.

use domain::Integration;
use std::process::Output;

use crate::support::TestApp;
use cli::bench::bench_iccid;
use store::Seed;
use store::seed::{SeedDevice, SeedServiceProvider, SeedTenant};

const POD19: i64 = 10;
const DEVICES: usize = 1000;

fn seed() -> Seed {
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![SeedServiceProvider {
            name: "POD19".into(),
            username: "user".into(),
            secret: "secret-key".into(),
            rate_limit_per_second: 2000.0,
            ..SeedServiceProvider::new(POD19, 1, Integration::Pod19.id())
        }],
        devices: (0..DEVICES).map(|i| SeedDevice::new(1, POD19, bench_iccid(8000 + i), "ACTIVATION_READY")).collect(),
        ..Default::default()
    }
}

async fn bulkchange(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_bulkchange"))
        .args(args)
        .env("BULKCHANGE_API", app.stack.base_url())
        .env("BULKCHANGE_TOKEN", &app.token)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("bulkchange runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_csv_submitted_with_watch_then_exported_and_resubmitted_with_its_key() {
    let app = TestApp::start(seed(), |_| {}).await;
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("devices.csv");
    let unknown = bench_iccid(9_999_999);
    let mut lines: Vec<String> = (0..DEVICES).map(|i| bench_iccid(8000 + i)).collect();
    lines.push(unknown.clone());
    std::fs::write(&csv, lines.join("\n")).expect("csv");
    let csv_path = csv.to_string_lossy().into_owned();
    let submit = [
        "submit",
        "--csv",
        &csv_path,
        "--service-provider",
        "10",
        "--change-type",
        "StatusUpdate",
        "--target-status",
        "Active",
        "--watch",
        "--idempotency-key",
        "ops-2026-12-02-activation",
    ];
    let out = bulkchange(&app, &submit).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed row makes the exit code non-zero:\n{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("bulk change 1 accepted: 1000 valid, 1 invalid"), "{stdout}");
    assert!(stdout.contains(&format!("refused {unknown}  device {unknown} was not found")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("bulk change 1: ") && l.contains("rows/s")),
        "plain progress lines: {stdout}"
    );
    assert!(stdout.trim_end().ends_with("bulk change 1 PROCESSED: ERROR 1, PROCESSED 1000"), "{stdout}");

    let export = dir.path().join("results.csv");
    let export_path = export.to_string_lossy().into_owned();
    let out = bulkchange(&app, &["results", "1", "-o", &export_path]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_path(&export).expect("results csv");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(rows.len(), DEVICES + 1, "one line per row");
    assert_eq!(rows.iter().filter(|r| &r[1] == "PROCESSED").count(), DEVICES);
    let failed: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[1] == "ERROR").collect();
    assert_eq!((&failed[0][0], &failed[0][2]), (unknown.as_str(), format!("device {unknown} was not found").as_str()));
    let out = bulkchange(&app, &["results", "1", "--status", "ERROR"]).await;
    assert_eq!(text(&out.stdout).lines().count(), 2, "header and the one ERROR row");

    // The operator's terminal lost the answer; the same command again returns the same bulk change.
    let out = bulkchange(
        &app,
        &submit[..submit.len() - 3]
            .iter()
            .copied()
            .chain(["--idempotency-key", "ops-2026-12-02-activation"])
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(text(&out.stdout).contains("bulk change 1 accepted"), "{}", text(&out.stdout));
    assert_eq!(app.stack.store.table_row_counts().await.expect("counts")["DeviceBulkChange"], 1);
}

#[tokio::test]
async fn the_smoke_check_passes_on_a_working_api_and_fails_on_a_refused_token() {
    let app = TestApp::start(seed(), |_| {}).await;
    let dir = tempfile::tempdir().expect("dir");
    let request = dir.path().join("request.json");
    let body = serde_json::json!({"ServiceProviderId": POD19, "ChangeType": 3,
        "StatusUpdate": {"TargetStatus": "Active"}, "Devices": [bench_iccid(8000), bench_iccid(8001)]});
    std::fs::write(&request, body.to_string()).expect("write");
    let file = request.to_str().expect("utf-8 path");

    let empty = bulkchange(&app, &["smoke", "--file", file]).await;
    assert!(empty.status.success(), "{}{}", text(&empty.stdout), text(&empty.stderr));
    assert!(text(&empty.stdout).contains("404 for an unknown bulk change"), "{}", text(&empty.stdout));
    assert!(text(&empty.stdout).contains("valid 2, invalid 0"), "{}", text(&empty.stdout));

    let submitted = bulkchange(&app, &["submit", "--file", file]).await;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let with_one = bulkchange(&app, &["smoke", "--file", file]).await;
    assert!(with_one.status.success(), "{}", text(&with_one.stderr));
    assert!(text(&with_one.stdout).contains("bulk change 1 "), "{}", text(&with_one.stdout));

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_bulkchange"))
        .args(["smoke", "--file", file])
        .env("BULKCHANGE_API", app.stack.base_url())
        .env("BULKCHANGE_TOKEN", "not-a-token")
        .output()
        .await
        .expect("bulkchange runs");
    assert!(!refused.status.success(), "a refused token fails the smoke check");
    assert!(text(&refused.stderr).contains("the token was refused (401)"), "{}", text(&refused.stderr));
}

/// `bulkchange undo --dry-run` prints the plan (refused rows with why) and records nothing; `undo --watch` follows
/// the undo to its end (exit 0 when every row was restored).
#[tokio::test]
async fn undo_dry_run_prints_the_plan_and_undo_watch_follows_it() {
    let mut active = seed();
    active.devices.truncate(5);
    for d in &mut active.devices {
        d.status = "ACTIVATED".into();
    }
    let app = TestApp::start(active, |_| {}).await;
    let devices: Vec<String> = (0..5).map(|i| bench_iccid(8000 + i)).collect();
    let body = serde_json::json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices,
                                  "StatusUpdate": {"TargetStatus": "Deactivated"}});
    let id = app.accepted(&body).await;
    app.final_status(id, std::time::Duration::from_secs(30)).await;
    let id = id.to_string();
    let dry = bulkchange(&app, &["undo", &id, "--dry-run"]).await;
    let out = text(&dry.stdout);
    assert!(dry.status.success(), "{out}{}", text(&dry.stderr));
    assert!(out.contains(&format!("undo of bulk change {id} (dry run): 5 to restore, 0 refused")), "{out}");
    assert_eq!(out.matches("  restore  ").count(), 5, "{out}");
    let undo = bulkchange(&app, &["undo", &id, "--watch"]).await;
    let out = text(&undo.stdout);
    assert!(undo.status.success(), "{out}{}", text(&undo.stderr));
    assert!(out.contains(&format!("undoes {id}: 5 to restore, 0 refused")), "{out}");
    assert!(out.contains("PROCESSED 5"), "{out}");
    for iccid in &devices {
        let sim = app.stack.simulators.control_center[&POD19].state.device(iccid).expect("sim");
        assert_eq!(sim.status, "ACTIVATED", "{iccid}");
    }
}
