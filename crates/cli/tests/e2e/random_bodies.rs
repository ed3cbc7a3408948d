//! Property: whatever body a client sends to the routes that write, the API never answers 5xx, and a 4xx leaves
//! every table as it was. Bodies are random JSON shaped like requests (known field names, odd values) and raw bytes.

use crate::support::{TestApp, account};
use domain::Integration;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRevCustomer, SeedTenant};

const ICCIDS: [&str; 3] = ["89148000008245116615", "89148000008245116623", "89148000008245116631"];

fn seed() -> Seed {
    let sp = |id, integration| account(id, 1, integration);
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![sp(10, Integration::Pod19), sp(12, Integration::RevIo)],
        device_statuses: vec![],
        carrier_rate_plans: vec![store::seed::SeedRatePlan::new(1, 10, "RP-1GB", 1024.0, 5.0)],
        rev_customers: vec![SeedRevCustomer { tenant_id: 1, rev_customer_id: "1001".into(), name: "Fleet".into() }],
        customer_rate_plans: vec![store::seed::SeedCustomerPlan { id: 5, tenant_id: 1, name: "5 GB".into() }],
        customer_rate_pools: vec![],
        rev_services: vec![],
        telegence_billing_accounts: vec![],
        imei_ranges: vec![],
        devices: ICCIDS
            .iter()
            .map(|iccid| SeedDevice {
                carrier_rate_plan: Some("RP-1GB".into()),
                ..SeedDevice::new(1, 10, iccid.to_string(), "ACTIVATION_READY")
            })
            .collect(),
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,30}".prop_map(Value::from),
        Just(json!("+10000-01-01")),
        Just(json!("2026-12-31")),
        Just(json!("\u{1b}[31m\r\n<b>x</b>")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a field a request knows: mostly plausible, sometimes anything.
fn field_value(name: &'static str) -> BoxedStrategy<Value> {
    let plausible: BoxedStrategy<Value> = match name {
        "ServiceProviderId" => prop_oneof![Just(json!(10)), Just(json!(12)), Just(json!(99)), Just(json!(-1))].boxed(),
        "ChangeType" => (0i64..12).prop_map(Value::from).boxed(),
        "PortalType" => (-1i64..4).prop_map(Value::from).boxed(),
        "Devices" => prop::collection::vec(
            prop_oneof![
                prop::sample::select(ICCIDS.to_vec()).prop_map(Value::from),
                "[0-9]{0,25}".prop_map(Value::from),
                any_json(),
            ],
            0..6,
        )
        .prop_map(Value::from)
        .boxed(),
        "StatusUpdate" => block(&["TargetStatus", "AccountNumber", "RevService", "ThingSpaceStatusUpdate"]),
        "CarrierRatePlanUpdate" => block(&["CarrierRatePlan", "CommunicationPlan", "EffectiveDate"]),
        "CustomerRatePlanUpdate" => {
            block(&["CustomerRatePlanId", "CustomerRatePoolId", "DataAllocationMB", "EffectiveDate"])
        }
        "RevService" => {
            block(&["RevCustomerId", "CreateRevService", "ProviderId", "AddCarrierRatePlan", "EffectiveDate"])
        }
        "Username" => block(&["NewUsername", "CostCenter", "CostCenter2"]),
        "ChangeIdentifier" => block(&["NewICCID", "NewIMEI"]),
        _ => any_json().boxed(),
    };
    prop_oneof![4 => plausible, 1 => any_json()].boxed()
}

/// A request block with some of its fields, each a plausible string or anything.
fn block(fields: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::collection::btree_map(
        prop::sample::select(fields.to_vec()),
        prop_oneof![
            Just(json!("Active")),
            Just(json!("RP-1GB")),
            Just(json!("1001")),
            Just(json!(true)),
            Just(json!(5)),
            Just(json!("+10000-01-01")),
            any_json(),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    .boxed()
}

const FIELDS: [&str; 12] = [
    "ServiceProviderId",
    "ChangeType",
    "PortalType",
    "OverrideValidation",
    "Devices",
    "StatusUpdate",
    "CarrierRatePlanUpdate",
    "CustomerRatePlanUpdate",
    "RevService",
    "Username",
    "ChangeIdentifier",
    "RevCustomerId",
];

/// Valid requests of every change type, the starting points that mutations bend.
fn valid_requests() -> Vec<Value> {
    let devices = json!(ICCIDS);
    vec![
        json!({"ServiceProviderId": 10, "ChangeType": 3, "Devices": devices, "StatusUpdate": {"TargetStatus": "Active"}}),
        json!({"ServiceProviderId": 10, "ChangeType": 7, "Devices": devices, "CarrierRatePlanUpdate": {"CarrierRatePlan": "RP-1GB"}}),
        json!({"ServiceProviderId": 10, "ChangeType": 4, "Devices": devices,
               "CustomerRatePlanUpdate": {"CustomerRatePlanId": 5, "EffectiveDate": "2099-01-01"}}),
        json!({"ServiceProviderId": 10, "ChangeType": 1, "Devices": devices,
               "RevService": {"RevCustomerId": "1001", "CreateRevService": true, "ProviderId": 3}}),
        json!({"ServiceProviderId": 10, "ChangeType": 5, "Devices": devices, "OverrideValidation": true}),
        json!({"ServiceProviderId": 10, "ChangeType": 6, "Devices": devices, "Username": {"NewUsername": "truck-7"}}),
        json!({"ServiceProviderId": 10, "ChangeType": 8, "Devices": [ICCIDS[0]], "ChangeIdentifier": {"NewIMEI": "490154203237518"}}),
        json!({"ServiceProviderId": 10, "Devices": devices, "RevCustomerId": "1001", "CreateRevService": false}),
    ]
}

/// One change to a request: a field removed, replaced (plausibly or by anything) or added.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static str),
    Set(&'static str, Value),
    SetInBlock(&'static str, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let name = prop::sample::select(FIELDS.to_vec());
    prop_oneof![
        name.clone().prop_map(Mutation::Remove),
        name.clone().prop_flat_map(|n| field_value(n).prop_map(move |v| Mutation::Set(n, v))),
        (prop::sample::select(BLOCK_FIELDS.to_vec()), field_value("")).prop_map(|(n, v)| Mutation::SetInBlock(n, v)),
    ]
}

const BLOCK_FIELDS: [&str; 10] = [
    "TargetStatus",
    "CarrierRatePlan",
    "EffectiveDate",
    "CustomerRatePlanId",
    "DataAllocationMB",
    "RevCustomerId",
    "CreateRevService",
    "NewUsername",
    "NewIMEI",
    "NewICCID",
];

fn apply(mut request: Value, mutations: Vec<Mutation>) -> Value {
    for m in mutations {
        let Some(obj) = request.as_object_mut() else { break };
        match m {
            Mutation::Remove(name) => {
                obj.remove(name);
            }
            Mutation::Set(name, value) => {
                obj.insert(name.to_string(), value);
            }
            Mutation::SetInBlock(name, value) => {
                // Into whichever block the request has (the first object-valued field).
                if let Some(block) = obj.values_mut().find_map(Value::as_object_mut) {
                    block.insert(name.to_string(), value);
                }
            }
        }
    }
    request
}

fn request_body() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (prop::sample::select(valid_requests()), prop::collection::vec(mutation(), 0..3))
        .prop_map(|(request, mutations)| apply(request, mutations).to_string().into_bytes());
    let shaped = prop::collection::vec(prop::sample::select(FIELDS.to_vec()), 0..8)
        .prop_flat_map(|names| {
            let values: Vec<_> = names.iter().map(|n| field_value(n)).collect();
            (Just(names), values)
        })
        .prop_map(|(names, values)| {
            let map: Map<String, Value> = names.into_iter().map(str::to_string).zip(values).collect();
            Value::Object(map).to_string().into_bytes()
        });
    prop_oneof![
        12 => mutated,
        4 => shaped,
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn random_request_bodies_never_get_a_5xx_nor_write_on_a_4xx() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app = runtime.block_on(TestApp::start(seed(), |c| c.run_worker = false));
    let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
    let routes = prop::sample::select(vec!["/M2M/BulkChange", "/M2M/ValidateBulkChange", "/M2M/AssociateCustomer"]);
    let result = runner.run(&(routes, request_body()), |(route, body)| {
        runtime.block_on(async {
            let before = app.stack.store.table_row_counts().await.expect("counts");
            let response = app
                .http
                .post(format!("{}{route}", app.stack.base_url()))
                .bearer_auth(&app.token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body).into_owned();
            prop_assert!(status < 500, "{route} {shown} -> {status} {text}");
            if (400..500).contains(&status) {
                let after = app.stack.store.table_row_counts().await.expect("counts");
                prop_assert_eq!(&after, &before, "{} {} -> {} wrote", route, shown, status);
            }
            Ok::<(), TestCaseError>(())
        })
    });
    runtime.block_on(app.stack.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
