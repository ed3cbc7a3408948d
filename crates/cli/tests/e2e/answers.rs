//! The API's answers as an integrator reads them: unknown fields reported, type errors by JSON path, the Rev.io
//! default provider, `Location`, totals that follow the filter, per-device errors in the problem shape.

use crate::support::{TestApp, account};
use cli::bench::bench_iccid;
use domain::Integration;
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRevCustomer, SeedServiceProvider, SeedTenant};

const POD19: i64 = 10;

fn device(i: usize) -> String {
    bench_iccid(7000 + i)
}

fn seed() -> Seed {
    let sp = |id, tenant_id, integration, default_provider_id| SeedServiceProvider {
        default_provider_id,
        ..account(id, tenant_id, integration)
    };
    let device = |tenant_id, service_provider_id, iccid: String| {
        SeedDevice::new(tenant_id, service_provider_id, iccid, "ACTIVATION_READY")
    };
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }, SeedTenant { id: 2, name: "Globex".into() }],
        service_providers: vec![
            sp(POD19, 1, Integration::Pod19, None),
            sp(12, 1, Integration::RevIo, Some(7)),
            sp(20, 2, Integration::Pod19, None),
            sp(22, 2, Integration::RevIo, None),
        ],
        rev_customers: vec![
            SeedRevCustomer { tenant_id: 1, rev_customer_id: "1001".into(), name: "Acme Fleet".into() },
            SeedRevCustomer { tenant_id: 2, rev_customer_id: "2001".into(), name: "Globex".into() },
        ],
        devices: (0..5).map(|i| device(1, POD19, self::device(i))).chain([device(2, 20, self::device(50))]).collect(),
        ..Default::default()
    }
}

impl TestApp {
    async fn post_located(&self, path: &str, body: Value, token: &str) -> (u16, Option<String>, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.stack.base_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        (status, location, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn misspelled_fields_are_reported_as_warnings_not_silently_dropped() {
    let app = TestApp::start(seed(), |c| c.run_worker = false).await;
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [device(0)], "OverideValidation": true,
                      "StatusUpdate": {"TargetStatus": "Active", "AcountNumber": "1001"}});
    for path in ["/M2M/ValidateBulkChange", "/M2M/BulkChange"] {
        let (_, _, answer) = app.post_located(path, body.clone(), &app.token).await;
        assert_eq!(
            answer["Warnings"],
            json!([{"field": "OverideValidation", "message": "unknown field, ignored"},
                   {"field": "StatusUpdate.AcountNumber", "message": "unknown field, ignored"}]),
            "{path}: {answer}"
        );
    }
    let association = json!({"ServiceProviderId": POD19, "Devices": [device(4)], "RevCustomerId": "1001",
                             "CreateRevServce": true});
    let (_, _, answer) = app.post_located("/M2M/AssociateCustomer", association, &app.token).await;
    assert_eq!(
        answer["Warnings"],
        json!([{"field": "CreateRevServce", "message": "unknown field, ignored"}]),
        "{answer}"
    );
    let (code, _, problem) = app.post_located("/M2M/BulkChange", json!({"ServiceProviderId": "ten"}), &app.token).await;
    assert_eq!((code, &problem["errors"][0]["field"]), (400, &json!("ServiceProviderId")), "{problem}");
}

#[tokio::test]
async fn create_rev_service_without_provider_id_takes_the_accounts_default_or_is_refused() {
    let app = TestApp::start(seed(), |c| c.run_worker = false).await;
    let body = |customer: &str, iccid: String| {
        json!({"ServiceProviderId": if customer == "1001" { POD19 } else { 20 },
        "Devices": [iccid], "RevCustomerId": customer, "CreateRevService": true})
    };
    let (code, location, answer) =
        app.post_located("/M2M/AssociateCustomer", body("1001", device(1)), &app.token).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["BulkChangeId"].as_i64().expect("id");
    assert_eq!(location.as_deref(), Some(format!("/M2M/BulkChangeStatus/{id}").as_str()));
    let stored =
        engine::ports::Reads::bulk_change(&*app.stack.store, Some(1), id).await.expect("read").expect("exists");
    assert_eq!(
        stored.request.rev_service.and_then(|r| r.provider_id),
        Some(7),
        "the Rev.io account's default provider"
    );
    // Tenant 2's Rev.io account has no default: refused at intake, nothing sent to Rev.io.
    let (code, _, problem) = app
        .post_located("/M2M/AssociateCustomer", body("2001", device(50)), &crate::support::token_for(2, "bob"))
        .await;
    assert_eq!(code, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "RevService.ProviderId");
}

#[tokio::test]
async fn totals_follow_the_filter_and_device_errors_have_the_problem_shape() {
    let app = TestApp::start(seed(), |c| c.run_worker = false).await;
    let unknown = bench_iccid(9999);
    let body = json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": [device(2), device(3), unknown],
                      "StatusUpdate": {"TargetStatus": "Active"}});
    let (_, _, answer) = app.post_located("/M2M/BulkChange", body, &app.token).await;
    assert_eq!(
        answer["Devices"][2]["Errors"],
        json!([{"field": "Devices", "device": unknown, "message": format!("device {unknown} was not found")}])
    );
    let id = answer["BulkChangeId"].as_i64().expect("id");
    let (_, status) = app.get(&format!("/M2M/BulkChangeStatus/{id}?status=ERROR"), &app.token).await;
    assert_eq!((status["Total"].as_i64(), status["Rows"].as_array().map(Vec::len)), (Some(1), Some(1)), "{status}");
    assert_eq!(status["Counts"], json!({"ERROR": 1, "PENDING": 2}));
    let (code, problem) = app.get(&format!("/M2M/BulkChangeStatus/{id}?pageSize=0"), &app.token).await;
    assert_eq!((code, problem["title"].as_str()), (400, Some("Invalid query")));
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_and_is_the_committed_one() {
    let app = TestApp::start(seed(), |c| c.run_worker = false).await;
    let response = app.http.get(format!("{}/openapi.json", app.stack.base_url())).send().await.expect("get");
    assert_eq!(response.status().as_u16(), 200);
    let served: Value = response.json().await.expect("json");
    let committed: Value = serde_json::from_str(include_str!("../../../../openapi.json")).expect("committed");
    assert_eq!(served, committed);
}
