//! The store contract: behaviour every Store adapter must show. SQLite runs it always; the SQL Server adapter
//! runs the same functions when `MSSQL_URL` is set. Each function expects a store loaded with [`contract_seed`].

use std::time::Duration;

use chrono::{TimeZone, Utc};
use domain::{BulkChangeRequestWire, BulkStatus, ChangeType, DeviceAttribute, Integration, PortalType, RowStatus};
use engine::ports::*;

use crate::seed::*;

pub const TENANT: i64 = 1;
pub const OTHER_TENANT: i64 = 2;
pub const SP: i64 = 10;
pub const ICCIDS: [&str; 3] = ["89148000008245116615", "89148000008245116623", "89148000008245116631"];
pub const OTHER_TENANT_ICCID: &str = "89148000008245116649";
/// Tenant 1's ThingSpace account (tenant 2 has 40).
pub const TS_SP: i64 = 30;

/// A real eSIM EID (32 digits: the GSMA prefix 89049032, then a number of our own) for a seeded ICCID.
pub fn eid_of(iccid: &str) -> String {
    format!("890490320000{iccid}")
}

/// Two tenants, a POD19 provider each, three devices for tenant 1 and one for tenant 2.
pub fn contract_seed() -> Seed {
    let sp = |id, tenant_id| SeedServiceProvider {
        name: format!("POD19 {tenant_id}"),
        base_url: "http://127.0.0.1:9".into(),
        username: "user".into(),
        secret: "key".into(),
        rate_limit_per_second: 50.0,
        carrier_settings: Some(serde_json::json!({"DistributorId": "D-1"})),
        ..SeedServiceProvider::new(id, tenant_id, 9)
    };
    let thingspace = |id, tenant_id| SeedServiceProvider {
        integration_id: 4,
        name: format!("ThingSpace {tenant_id}"),
        thing_space: Some(SeedThingSpace {
            app_key: format!("app-{tenant_id}"),
            app_secret: "app-secret".into(),
            account_name: format!("0000000{tenant_id}-00001"),
            callback_username: format!("cb-{tenant_id}"),
            callback_password: "cb-password".into(),
        }),
        ..sp(id, tenant_id)
    };
    let device = |tenant_id, service_provider_id, iccid: &str| SeedDevice {
        eid: Some(eid_of(iccid)),
        carrier_rate_plan: Some("RP-1GB".into()),
        communication_plan: Some("CP-Data".into()),
        data_usage_mb: 12.5,
        ..SeedDevice::new(tenant_id, service_provider_id, iccid, "ACTIVATION_READY")
    };
    Seed {
        tenants: vec![
            SeedTenant { id: TENANT, name: "Acme".into() },
            SeedTenant { id: OTHER_TENANT, name: "Globex".into() },
        ],
        service_providers: vec![
            sp(SP, TENANT),
            sp(20, OTHER_TENANT),
            thingspace(TS_SP, TENANT),
            thingspace(40, OTHER_TENANT),
        ],
        device_statuses: vec![],
        carrier_rate_plans: vec![SeedRatePlan {
            jasper_rate_plan_id: Some(4711),
            plan_uuid: Some("cda438862b284bcdaec82ee516eada14".into()),
            ..SeedRatePlan::new(1, SP, "RP-1GB", 1024.0, 5.0)
        }],
        rev_customers: vec![SeedRevCustomer {
            tenant_id: TENANT,
            rev_customer_id: "1001".into(),
            name: "Acme Fleet".into(),
        }],
        devices: ICCIDS
            .iter()
            .map(|i| device(TENANT, SP, i))
            .chain([device(OTHER_TENANT, 20, OTHER_TENANT_ICCID)])
            .collect(),
        customer_rate_plans: vec![SeedCustomerPlan { id: 1, tenant_id: TENANT, name: "Fleet 1 GB".into() }],
        customer_rate_pools: vec![SeedCustomerPlan { id: 7, tenant_id: TENANT, name: "Shared pool".into() }],
        rev_services: vec![SeedRevService {
            tenant_id: TENANT,
            iccid: ICCIDS[2].into(),
            rev_service_id: 11_001,
            rev_customer_id: "1001".into(),
        }],
        telegence_billing_accounts: Vec::new(),
        imei_ranges: vec![
            SeedImeiRange {
                manufacturer: "Acme".into(),
                model: "Tracker eSIM".into(),
                from_imei: "35693803".into(),
                to_imei: "35693804".into(),
                sim_type: "eSIM".into(),
                is_active: true,
            },
            SeedImeiRange {
                manufacturer: "Acme".into(),
                model: "Retired".into(),
                from_imei: "49015420".into(),
                to_imei: "49015420".into(),
                sim_type: "eSIM".into(),
                is_active: false,
            },
        ],
    }
}

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_900_000_000 + secs, 0).single().unwrap_or_default()
}

pub async fn new_bulk(store: &dyn Store) -> i64 {
    new_bulk_of(store, status_update_change()).await
}

/// As `new_bulk`, for `change`.
pub async fn new_bulk_of(store: &dyn Store, change: NewBulkChange) -> i64 {
    let devices = store.devices_by_iccid(TENANT, &ICCIDS.map(String::from)).await.expect("devices");
    assert_eq!(devices.len(), 3, "seeded devices are visible to their tenant");
    let mut rows: Vec<NewRow> = devices
        .iter()
        .map(|d| NewRow {
            device_id: Some(d.id),
            iccid: d.iccid.clone(),
            msisdn: None,
            status: RowStatus::Pending,
            status_details: None,
            scheduled: None,
            request: None,
        })
        .collect();
    rows.push(NewRow {
        device_id: None,
        iccid: "123".into(),
        msisdn: None,
        status: RowStatus::Error,
        status_details: Some("Invalid ICCID".into()),
        scheduled: None,
        request: None,
    });
    store.create_bulk_change(&change, &rows).await.expect("create bulk change").id
}

/// Alice's status update on tenant 1's POD19 provider, holding nothing.
fn status_update_change() -> NewBulkChange {
    NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::StatusUpdate,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(3), ..Default::default() },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: None,
        notify_secret: None,
    }
}

mod claims;
mod exclusivity;
mod lifecycle;
mod pace;
mod rollout;

pub use claims::*;
pub use exclusivity::*;
pub use lifecycle::*;
pub use pace::*;
pub use rollout::*;
mod webhooks;
pub use webhooks::*;
