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
        })
        .collect();
    rows.push(NewRow {
        device_id: None,
        iccid: "123".into(),
        msisdn: None,
        status: RowStatus::Error,
        status_details: Some("Invalid ICCID".into()),
        scheduled: None,
    });
    store.create_bulk_change(&status_update_change(), &rows).await.expect("create bulk change").id
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
    }
}

pub async fn bulk_change_is_tenant_scoped(store: &dyn Store) {
    let id = new_bulk(store).await;
    let own = store.bulk_change(Some(TENANT), id).await.expect("read").expect("own tenant sees it");
    assert_eq!(own.status, BulkStatus::New);
    assert_eq!(own.created_by, "alice");
    assert!(store.bulk_change(Some(OTHER_TENANT), id).await.expect("read").is_none());
    assert!(store.rows(OTHER_TENANT, id, None, 1, 100).await.expect("rows").is_empty());
    assert!(store.row_counts(OTHER_TENANT, id).await.expect("counts").is_empty());
    let counts = store.row_counts(TENANT, id).await.expect("counts");
    assert_eq!(counts.iter().find(|c| c.status == RowStatus::Pending).map(|c| c.count), Some(3));
    assert_eq!(counts.iter().find(|c| c.status == RowStatus::Error).map(|c| c.count), Some(1));
    assert!(store.devices_by_iccid(TENANT, &[OTHER_TENANT_ICCID.to_string()]).await.expect("devices").is_empty());
    assert!(store.service_provider(OTHER_TENANT, SP).await.expect("sp").is_none());
}

/// Texts of any shape (quotes, backslashes, percent signs, line breaks) are stored and read back as written, and
/// an ICCID of that shape finds no device rather than failing: the SQL Server adapter passes them inside JSON.
pub async fn texts_are_kept_as_written(store: &dyn Store) {
    let odd = ["12\"3", "4\\5%22", "8901\r\nBcc: x@example.com", "%25%", "tab\there é 😀"];
    let mut asked: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    asked.push(ICCIDS[1].to_string());
    let found = store.devices_by_iccid(TENANT, &asked).await.expect("devices");
    assert_eq!(found.iter().map(|d| d.iccid.as_str()).collect::<Vec<_>>(), vec![ICCIDS[1]]);
    let rows: Vec<NewRow> = odd
        .iter()
        .map(|iccid| NewRow {
            device_id: None,
            iccid: iccid.to_string(),
            msisdn: Some("+1\"2\\3%".into()),
            status: RowStatus::Error,
            status_details: Some(format!("Invalid ICCID \"{iccid}\" (100% \\ wrong)")),
            scheduled: None,
        })
        .collect();
    let change = NewBulkChange { created_by: "alice \"o'neil\"".into(), ..status_update_change() };
    let id = store.create_bulk_change(&change, &rows).await.expect("create").id;
    let stored = store.rows(TENANT, id, None, 1, 10).await.expect("rows");
    let read: Vec<_> =
        stored.iter().map(|r| (r.iccid.as_str(), r.msisdn.as_deref(), r.status_details.as_deref())).collect();
    let written: Vec<_> =
        rows.iter().map(|r| (r.iccid.as_str(), r.msisdn.as_deref(), r.status_details.as_deref())).collect();
    assert_eq!(read, written);
    assert_eq!(store.bulk_change(Some(TENANT), id).await.expect("read").expect("bulk").created_by, "alice \"o'neil\"");
}

pub async fn claims_are_exclusive_and_leases_expire(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let a = store.claim_rows(id, "a", 2, lease, t(0)).await.expect("claim a");
    let b = store.claim_rows(id, "b", 10, lease, t(1)).await.expect("claim b");
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 1, "b gets only the row a did not take");
    assert!(a.iter().all(|r| r.status == RowStatus::Processing && r.claims == 1));
    assert!(a.iter().all(|r| r.id != b[0].id));
    assert!(store.claim_rows(id, "c", 10, lease, t(30)).await.expect("claim c").is_empty(), "live leases hold");
    let c = store.claim_rows(id, "c", 10, lease, t(62)).await.expect("claim c");
    assert_eq!(c.len(), 3, "expired leases are claimed again");
    assert!(c.iter().all(|r| r.claims == 2), "a second claim is visible to the processor");
    claimed_rows_carry_their_devices(store, &c).await;
}

/// Each claimed row carries its device as the store reads it in the bulk change's tenant.
async fn claimed_rows_carry_their_devices(store: &dyn Store, rows: &[DeviceChangeRow]) {
    for row in rows {
        let device_id = row.device_id.expect("claimed rows have devices");
        let read = store.device(TENANT, device_id).await.expect("device");
        assert!(read.is_some(), "row {} has a device in its tenant", row.id);
        assert_eq!(row.device, read, "row {} carries the device read with its claim", row.id);
    }
}

pub async fn a_claim_reads_no_device_of_another_tenant(store: &dyn Store) {
    let foreign = store.devices_by_iccid(OTHER_TENANT, &[OTHER_TENANT_ICCID.to_string()]).await.expect("devices");
    let row = NewRow {
        device_id: Some(foreign[0].id),
        iccid: OTHER_TENANT_ICCID.into(),
        msisdn: None,
        status: RowStatus::Pending,
        status_details: None,
        scheduled: None,
    };
    let id = store.create_bulk_change(&status_update_change(), &[row]).await.expect("create").id;
    let claimed = store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].device, None, "another tenant's device is not read with a claim");
    close(store, &[id]).await;
}

pub async fn only_the_lease_holder_completes_a_row_once(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    let row = &rows[0];
    let target = store
        .device_statuses(Integration::Pod19)
        .await
        .expect("statuses")
        .into_iter()
        .find(|s| s.status == "ACTIVATED")
        .expect("ACTIVATED");
    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: "Status changed to ACTIVATED".into(),
        device_update: DeviceUpdate {
            device_status_id: Some(target.id),
            carrier_rate_plan: Some("RP-5GB".into()),
            communication_plan: Some("CP-IoT".into()),
            username: Some("truck-42".into()),
            ..DeviceUpdate::default()
        },
    };
    assert!(
        !store.complete_row(TENANT, row.bulk_change_id, row.id, "intruder", &outcome, t(1)).await.expect("complete")
    );
    assert!(store.complete_row(TENANT, row.bulk_change_id, row.id, "a", &outcome, t(1)).await.expect("complete"));
    let again = RowOutcome { status: RowStatus::ApiFailed, ..outcome.clone() };
    assert!(
        !store.complete_row(TENANT, row.bulk_change_id, row.id, "a", &again, t(2)).await.expect("complete"),
        "a final row is never overwritten"
    );
    let stored = store.rows(TENANT, id, Some(RowStatus::Processed), 1, 10).await.expect("rows");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status_details.as_deref(), Some("Status changed to ACTIVATED"));
    let device = store.device(TENANT, row.device_id.expect("device id")).await.expect("device").expect("exists");
    assert_eq!(device.device_status_id, target.id);
    assert_eq!(device.carrier_rate_plan.as_deref(), Some("RP-5GB"));
    assert_eq!(device.communication_plan.as_deref(), Some("CP-IoT"));
    assert_eq!(device.username.as_deref(), Some("truck-42"));
    assert!(device.is_active && !device.is_deleted);
}

/// Rows completed and audit entries written in one group (the worker's group commit): each row under
/// `complete_row`'s rules, the held ones recorded, the others untouched, and the entries kept in order.
pub async fn rows_complete_and_entries_append_in_groups(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 2, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(rows.len(), 2);
    let unclaimed = store.rows(TENANT, id, Some(RowStatus::Pending), 1, 10).await.expect("rows");
    let done = |row: &DeviceChangeRow, worker: &str, user: &str| Completion {
        tenant_id: TENANT,
        bulk_change_id: id,
        row_id: row.id,
        worker: worker.into(),
        outcome: RowOutcome {
            status: RowStatus::Processed,
            details: format!("renamed {user}"),
            device_update: DeviceUpdate { username: Some(user.into()), ..DeviceUpdate::default() },
        },
        now: t(1),
    };
    let group = [
        done(&rows[0], "a", "truck-1 \"50%\" \\"),
        done(&rows[1], "intruder", "truck-2"),
        done(&unclaimed[0], "a", "truck-3"),
    ];
    assert_eq!(store.complete_rows(&group).await.expect("complete"), vec![true, false, false]);
    let device = |row: &DeviceChangeRow| {
        let id = row.device_id.expect("device id");
        async move { store.device(TENANT, id).await.expect("device").expect("exists") }
    };
    assert_eq!(device(&rows[0]).await.username.as_deref(), Some("truck-1 \"50%\" \\"), "texts kept as written");
    assert_ne!(device(&rows[1]).await.username.as_deref(), Some("truck-2"), "a row not held changes nothing");
    let processed = store.rows(TENANT, id, Some(RowStatus::Processed), 1, 10).await.expect("rows");
    assert_eq!(processed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![rows[0].id]);
    assert_eq!(store.rows(TENANT, id, Some(RowStatus::Processing), 1, 10).await.expect("rows").len(), 1);
    let entry = |n: i64| LogEntry {
        bulk_change_id: id,
        device_change_id: Some(rows[(n % 2) as usize].id),
        description: format!("call {n}"),
        request_text: format!("PUT devices/{n}"),
        response_text: "{}".into(),
        response_status: "PROCESSED".into(),
        has_errors: n == 2,
        error_text: (n == 2).then(|| "HTTP 500: \"busy\" 100%\r\n".into()),
        processed_date: t(n),
    };
    let entries: Vec<LogEntry> = (1..=3).map(entry).collect();
    store.append_logs(&entries).await.expect("append");
    assert_eq!(store.logs(TENANT, id).await.expect("logs"), entries);
}

pub async fn archiving_a_device_hides_it_from_every_change(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    let archive = RowOutcome {
        status: RowStatus::Processed,
        details: "archived".into(),
        device_update: DeviceUpdate { archive: true, ..DeviceUpdate::default() },
    };
    assert!(
        store.complete_row(TENANT, rows[0].bulk_change_id, rows[0].id, "a", &archive, t(1)).await.expect("complete")
    );
    let device =
        store.device(TENANT, rows[0].device_id.expect("device id")).await.expect("read").expect("still stored");
    assert!(device.is_deleted && !device.is_active, "IsActive = false, IsDeleted = true");
}

pub async fn bulk_status_is_derived_from_rows_and_final_once(store: &dyn Store) {
    let id = new_bulk(store).await;
    store.mark_processing(id, t(0)).await.expect("mark");
    assert_eq!(store.finalize_bulk_change(id, t(0)).await.expect("finalize"), None, "open rows keep it open");
    let rows = store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    for (i, row) in rows.iter().enumerate() {
        let status = if i == 0 { RowStatus::Processed } else { RowStatus::ApiFailed };
        let outcome = RowOutcome { status, details: "x".into(), device_update: DeviceUpdate::default() };
        assert!(store.complete_row(TENANT, row.bulk_change_id, row.id, "a", &outcome, t(1)).await.expect("complete"));
    }
    assert_eq!(store.finalize_bulk_change(id, t(2)).await.expect("finalize"), Some(BulkStatus::Processed));
    store.mark_processing(id, t(3)).await.expect("mark");
    let bulk = store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists");
    assert_eq!(bulk.status, BulkStatus::Processed, "a late mark_processing never reopens a final bulk change");
    assert!(bulk.processed_at.is_some());
    assert!(store.claim_notification(id, t(4)).await.expect("claim"));
    assert!(!store.claim_notification(id, t(5)).await.expect("claim"), "one e-mail only");
    store.release_notification(id).await.expect("release");
    assert!(store.claim_notification(id, t(6)).await.expect("claim"));
}

pub async fn stranded_bulk_changes_are_found(store: &dyn Store) {
    let now = Utc::now();
    let id = new_bulk(store).await;
    let later = now + chrono::Duration::minutes(10);
    let stranded = store.stranded_bulk_changes(later - chrono::Duration::minutes(2), later).await.expect("stranded");
    assert!(stranded.contains(&id), "a NEW bulk change nobody picked up is stranded");
    store.claim_rows(id, "a", 1, Duration::from_secs(3600), later).await.expect("claim");
    let stranded = store
        .stranded_bulk_changes(later + chrono::Duration::minutes(1), later + chrono::Duration::minutes(1))
        .await
        .expect("stranded");
    assert!(!stranded.contains(&id), "a live lease means somebody is working on it");
}

pub async fn audit_log_is_kept_per_row_and_scoped(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    let entry = LogEntry {
        bulk_change_id: id,
        device_change_id: Some(rows[0].id),
        description: "Update Jasper Status: Jasper API".into(),
        request_text: "PUT devices/x".into(),
        response_text: "{\"iccid\":\"x\"}".into(),
        response_status: "PROCESSED".into(),
        has_errors: false,
        error_text: None,
        processed_date: t(1),
    };
    store.append_log(&entry).await.expect("append");
    assert_eq!(store.logs(TENANT, id).await.expect("logs"), vec![entry]);
    assert!(store.logs(OTHER_TENANT, id).await.expect("logs").is_empty());
}

pub async fn reference_data_is_read_within_the_tenant(store: &dyn Store) {
    // A plan keeps the carrier's own ids (Pond's package type, Teal's plan uuid).
    let plans = store.carrier_rate_plans(TENANT, SP).await.expect("plans");
    assert_eq!(plans[0].jasper_rate_plan_id, Some(4711));
    assert_eq!(plans[0].plan_uuid.as_deref(), Some("cda438862b284bcdaec82ee516eada14"));
    let sp = store.service_provider(TENANT, SP).await.expect("sp").expect("the provider");
    let settings: serde_json::Value =
        serde_json::from_str(sp.carrier_settings.as_deref().unwrap_or("null")).expect("json");
    assert_eq!(settings["DistributorId"], "D-1", "carrier settings come back as stored");
    // Teal's and Pond's statuses are reference data in both stores.
    let teal: Vec<String> =
        store.device_statuses(Integration::Teal).await.expect("statuses").into_iter().map(|s| s.status).collect();
    assert_eq!(teal, ["ONLINE", "WAITING", "STOPPED"]);
    let pond: Vec<String> =
        store.device_statuses(Integration::Pond).await.expect("statuses").into_iter().map(|s| s.status).collect();
    assert_eq!(pond, ["ACTIVE", "INACTIVE"]);
    // IMEI ranges are shared reference data: the active ones only, with their bounds and SIM type.
    let ranges = store.imei_ranges().await.expect("IMEI ranges");
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!((ranges[0].from_imei.as_str(), ranges[0].to_imei.as_str()), ("35693803", "35693804"));
    assert!(ranges[0].is_esim() && ranges[0].contains("356938045643809"));
    assert_eq!(store.carrier_rate_plans(TENANT, SP).await.expect("plans").len(), 1);
    assert!(store.carrier_rate_plans(OTHER_TENANT, SP).await.expect("plans").is_empty());
    assert!(store.rev_customer(TENANT, "1001").await.expect("rev").is_some());
    assert!(store.rev_customer(TENANT, "100").await.expect("rev").is_none(), "exact match, never a substring");
    assert!(store.rev_customer(OTHER_TENANT, "1001").await.expect("rev").is_none());
    let statuses = store.device_statuses(Integration::Pod19).await.expect("statuses");
    assert!(statuses.iter().any(|s| s.status == "DEACTIVATED" && s.display_name == "Deactivated"));
    // Telegence's line codes, and the SIM without a line (ids 601-604 in both stores' reference data).
    let telegence = store.device_statuses(Integration::Telegence).await.expect("statuses");
    let mut codes: Vec<(i64, &str)> = telegence.iter().map(|s| (s.id, s.status.as_str())).collect();
    codes.sort();
    assert_eq!(codes, vec![(601, "A"), (602, "S"), (603, "C"), (604, "UNKNOWN")]);
    let devices =
        store.devices_by_iccid(TENANT, &[ICCIDS[2].to_string(), ICCIDS[0].to_string()]).await.expect("devices");
    let with_service = devices.iter().find(|d| d.iccid == ICCIDS[2]).expect("device");
    let without = devices.iter().find(|d| d.iccid == ICCIDS[0]).expect("device");
    let order: Vec<&str> = devices.iter().map(|d| d.iccid.as_str()).collect();
    assert_eq!(order, vec![ICCIDS[2], ICCIDS[0]], "devices come back in the order they were asked for");
    assert_eq!(without.eid, Some(eid_of(ICCIDS[0])), "the EID is read with the device");
    assert_eq!(without.eid.as_deref().map(str::len), Some(32), "an EID has 32 digits");
    let by_id = store.device(TENANT, without.id).await.expect("device").expect("found");
    assert_eq!(by_id.eid, without.eid);
    let service = store.active_rev_service(TENANT, with_service.id).await.expect("rev").expect("seeded service");
    assert_eq!((service.rev_service_id, service.rev_customer_id.as_str()), (11_001, "1001"));
    assert!(store.active_rev_service(TENANT, without.id).await.expect("rev").is_none());
    assert!(store.active_rev_service(OTHER_TENANT, with_service.id).await.expect("rev").is_none());
}

/// A reader paging a filtered set by row id while rows leave it (the results export during a run) gets every
/// row still in the set once: paging by offset over the shrinking set skipped the row after each page.
pub async fn rows_page_by_id_while_rows_change(store: &dyn Store) {
    let id = new_bulk(store).await;
    let pending = store.rows(TENANT, id, Some(RowStatus::Pending), 1, 10).await.expect("rows");
    assert!(pending.len() >= 3);
    let first = store.rows_after(TENANT, id, Some(RowStatus::Pending), 0, 1).await.expect("page 1");
    assert_eq!(first.len(), 1);
    // The row just read leaves PENDING before the next page is read.
    let claimed = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(claimed[0].id, first[0].id);
    let rest = store.rows_after(TENANT, id, Some(RowStatus::Pending), first[0].id, 10).await.expect("page 2");
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), pending[1..].iter().map(|r| r.id).collect::<Vec<_>>());
    assert!(store.rows_after(OTHER_TENANT, id, None, 0, 10).await.expect("other").is_empty(), "tenant-scoped");
}

pub async fn pending_rows_can_be_cancelled_and_claimed_ones_finish(store: &dyn Store) {
    let id = new_bulk(store).await;
    let claimed = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(
        store.cancel_rows(OTHER_TENANT, id, "mallory", t(1)).await.expect("cancel"),
        0,
        "another tenant cancels nothing"
    );
    assert_eq!(store.cancel_rows(TENANT, id, "alice", t(1)).await.expect("cancel"), 2, "the two PENDING rows");
    let cancelled = store.rows(TENANT, id, Some(RowStatus::Cancelled), 1, 10).await.expect("rows");
    assert!(cancelled.iter().all(|r| r.status_details.as_deref() == Some("Cancelled by alice")));
    assert!(store.claim_rows(id, "b", 10, Duration::from_secs(60), t(2)).await.expect("claim").is_empty());
    let done =
        RowOutcome { status: RowStatus::Processed, details: "ok".into(), device_update: DeviceUpdate::default() };
    assert!(
        store.complete_row(TENANT, claimed[0].bulk_change_id, claimed[0].id, "a", &done, t(3)).await.expect("complete"),
        "a claimed row still finishes"
    );
    assert_eq!(store.finalize_bulk_change(id, t(4)).await.expect("finalize"), Some(BulkStatus::Processed));
}

pub async fn retries_are_linked_and_history_is_per_device(store: &dyn Store) {
    let first = new_bulk(store).await;
    let devices = store.devices_by_iccid(TENANT, &[ICCIDS[0].to_string()]).await.expect("devices");
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::Archival,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(5), ..Default::default() },
        created_by: "bob".into(),
        retry_of: Some(first),
        attributes: vec![],
        idempotency_key: None,
    };
    let row = NewRow {
        device_id: Some(devices[0].id),
        iccid: ICCIDS[0].into(),
        msisdn: None,
        status: RowStatus::Pending,
        status_details: None,
        scheduled: None,
    };
    let second = store.create_bulk_change(&change, &[row]).await.expect("create").id;
    assert_eq!(store.bulk_change(Some(TENANT), second).await.expect("read").expect("exists").retry_of, Some(first));
    let history = store.device_history(TENANT, devices[0].id, 10).await.expect("history");
    assert!(history.len() >= 2);
    assert_eq!(
        (history[0].bulk_change_id, history[0].change_type, history[0].created_by.as_str()),
        (second, ChangeType::Archival, "bob")
    );
    assert!(history.iter().any(|h| h.bulk_change_id == first));
    assert!(store.device_history(OTHER_TENANT, devices[0].id, 10).await.expect("history").is_empty());
    let customers = store.rev_customers(TENANT).await.expect("customers");
    assert_eq!(customers.iter().map(|c| c.rev_customer_id.as_str()).collect::<Vec<_>>(), vec!["1001"]);
    assert!(store.rev_customers(OTHER_TENANT).await.expect("customers").is_empty());
}

pub async fn scheduled_rows_wait_for_their_date(store: &dyn Store) {
    use engine::ports::{CustomerPlanChange, ScheduledCustomerPlan};
    let devices = store.devices_by_iccid(TENANT, &[ICCIDS[1].to_string()]).await.expect("devices");
    assert!(store.customer_rate_plan(TENANT, 1).await.expect("plan").is_some());
    assert!(store.customer_rate_plan(OTHER_TENANT, 1).await.expect("plan").is_none());
    assert!(store.customer_rate_pool(TENANT, 7).await.expect("pool").is_some());
    let due = t(1000);
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::CustomerRatePlanChange,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(4), ..Default::default() },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: None,
    };
    let plan = CustomerPlanChange {
        customer_rate_plan_id: Some(1),
        customer_rate_pool_id: Some(7),
        data_allocation_mb: Some(512.0),
    };
    let row = NewRow {
        device_id: Some(devices[0].id),
        iccid: ICCIDS[1].into(),
        msisdn: None,
        status: RowStatus::Scheduled,
        status_details: None,
        scheduled: Some(ScheduledCustomerPlan { effective_date: due, change: plan.clone() }),
    };
    let id = store.create_bulk_change(&change, &[row]).await.expect("create").id;
    assert_eq!(store.finalize_bulk_change(id, t(0)).await.expect("finalize"), Some(BulkStatus::Scheduled));
    assert!(
        store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim").is_empty(),
        "not claimable yet"
    );
    assert!(!store.release_due_scheduled_rows(t(999)).await.expect("release").contains(&id), "not due yet");
    assert_eq!(store.release_due_scheduled_rows(due).await.expect("release"), vec![id]);
    assert_eq!(
        store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists").status,
        BulkStatus::Processing
    );
    let rows = store.claim_rows(id, "a", 10, Duration::from_secs(60), due).await.expect("claim");
    assert_eq!(rows.len(), 1);
    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: "applied".into(),
        device_update: DeviceUpdate { customer_plan: Some(plan), ..DeviceUpdate::default() },
    };
    assert!(
        store.complete_row(TENANT, rows[0].bulk_change_id, rows[0].id, "a", &outcome, due).await.expect("complete")
    );
    let device = store.device(TENANT, devices[0].id).await.expect("read").expect("device");
    assert_eq!(
        (device.customer_rate_plan_id, device.customer_rate_pool_id, device.customer_data_allocation_mb),
        (Some(1), Some(7), Some(512.0))
    );
    assert!(store.release_due_scheduled_rows(t(5000)).await.expect("release").is_empty(), "released once");
}

pub async fn mobility_rows_behave_like_m2m_rows(store: &dyn Store) {
    let devices =
        store.devices_by_iccid(TENANT, &[ICCIDS[0].to_string(), ICCIDS[1].to_string()]).await.expect("devices");
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::StatusUpdate,
        portal_type: PortalType::Mobility,
        request: BulkChangeRequestWire {
            service_provider_id: Some(SP),
            change_type: Some(3),
            portal_type: Some(2),
            ..Default::default()
        },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: None,
    };
    let rows: Vec<NewRow> = devices
        .iter()
        .map(|d| NewRow {
            device_id: Some(d.id),
            iccid: d.iccid.clone(),
            msisdn: None,
            status: RowStatus::Pending,
            status_details: None,
            scheduled: None,
        })
        .collect();
    let m2m = new_bulk(store).await;
    let id = store.create_bulk_change(&change, &rows).await.expect("create").id;
    assert_eq!(
        store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists").portal_type,
        PortalType::Mobility
    );
    assert_eq!(
        store.row_counts(TENANT, id).await.expect("counts"),
        vec![StatusCount { status: RowStatus::Pending, count: 2 }]
    );
    let claimed = store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|r| r.bulk_change_id == id));
    claimed_rows_carry_their_devices(store, &claimed).await;
    let entry = LogEntry {
        bulk_change_id: id,
        device_change_id: Some(claimed[0].id),
        description: "mobility".into(),
        request_text: String::new(),
        response_text: String::new(),
        response_status: "PROCESSED".into(),
        has_errors: false,
        error_text: None,
        processed_date: t(1),
    };
    store.append_log(&entry).await.expect("log");
    assert_eq!(store.logs(TENANT, id).await.expect("logs"), vec![entry]);
    let done = RowOutcome {
        status: RowStatus::Processed,
        details: "ok".into(),
        device_update: DeviceUpdate { username: Some("mob-1".into()), ..DeviceUpdate::default() },
    };
    for row in &claimed {
        assert!(store.complete_row(TENANT, id, row.id, "a", &done, t(2)).await.expect("complete"));
    }
    assert_eq!(store.finalize_bulk_change(id, t(3)).await.expect("finalize"), Some(BulkStatus::Processed));
    assert_eq!(
        store.device(TENANT, devices[0].id).await.expect("read").expect("device").username.as_deref(),
        Some("mob-1")
    );
    let history = store.device_history(TENANT, devices[0].id, 10).await.expect("history");
    assert!(
        history.iter().any(|h| h.bulk_change_id == id) && history.iter().any(|h| h.bulk_change_id == m2m),
        "both portals"
    );
    let m2m_counts = store.row_counts(TENANT, m2m).await.expect("counts");
    assert_eq!(m2m_counts.iter().map(|c| c.count).sum::<i64>(), 4, "the M2M bulk change's rows are untouched");
}

pub async fn carrier_waits_are_completed_once_by_their_request(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let rows = store.claim_rows(id, "w", 10, lease, t(0)).await.expect("claim");
    assert_eq!(rows.len(), 3);
    let waiting = [rows[0].id, rows[1].id];
    assert_eq!(store.await_carrier(id, &waiting, "other", "req-1", t(0), t(600)).await.expect("await"), 0);
    assert_eq!(store.await_carrier(id, &waiting, "w", "req-1", t(1), t(600)).await.expect("await"), 2);
    assert_eq!(store.next_lease_expiry(id).await.expect("expiry"), Some(t(60)), "the worker's lease ends first");

    let found = store.carrier_request_rows(&[SP], "req-1", None).await.expect("rows of request");
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), waiting.to_vec());
    assert!(
        found.iter().all(|r| r.carrier_request_id.as_deref() == Some("req-1") && r.carrier_requested_at == Some(t(1)))
    );
    assert!(store.carrier_request_rows(&[20, 40], "req-1", None).await.expect("other tenant").is_empty());
    let one = store.carrier_request_rows(&[SP], "req-1", Some(&rows[1].iccid)).await.expect("one device");
    assert_eq!(one.iter().map(|r| r.id).collect::<Vec<_>>(), vec![waiting[1]], "only that device's row");

    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: "activated".into(),
        device_update: DeviceUpdate {
            msisdn: Some("15550001111".into()),
            ip_address: Some("10.1.2.3".into()),
            ..Default::default()
        },
    };
    assert!(!store.complete_row(TENANT, id, waiting[0], "w", &outcome, t(2)).await.expect("complete"), "handed over");
    assert!(store.complete_row(TENANT, id, waiting[0], "carrier:req-1", &outcome, t(2)).await.expect("complete"));
    assert!(!store.complete_row(TENANT, id, waiting[0], "carrier:req-1", &outcome, t(3)).await.expect("again"));
    assert!(
        !store.hand_back_with_result(id, waiting[0], "carrier:req-1", "{}", t(3)).await.expect("hand back"),
        "a final row is not handed back"
    );
    let device = store.device(TENANT, rows[0].device_id.expect("device")).await.expect("read").expect("device");
    assert_eq!(device.msisdn.as_deref(), Some("15550001111"));

    // Past the deadline the waiting row is claimed again, still naming its request; the first time is kept.
    assert!(store.claim_rows(id, "poller", 10, lease, t(599)).await.expect("claim").iter().all(|r| r.id != waiting[1]));
    let again = store.claim_rows(id, "poller", 10, lease, t(601)).await.expect("claim");
    let polled = again.iter().find(|r| r.id == waiting[1]).expect("reclaimed after the deadline");
    assert_eq!((polled.carrier_request_id.as_deref(), polled.claims), (Some("req-1"), 2));
    assert_eq!(store.await_carrier(id, &[polled.id], "poller", "req-1", t(602), t(900)).await.expect("wait again"), 1);
    let found = store.carrier_request_rows(&[SP], "req-1", None).await.expect("rows of request");
    assert_eq!(found.iter().find(|r| r.id == polled.id).and_then(|r| r.carrier_requested_at), Some(t(1)));

    // A result kept for the steps after the carrier: the row is claimable at once and carries it.
    assert!(!store.hand_back_with_result(id, polled.id, "carrier:other", "{}", t(603)).await.expect("wrong owner"));
    assert!(
        store.hand_back_with_result(id, polled.id, "carrier:req-1", r#"{"success":true}"#, t(603)).await.expect("ok")
    );
    let again = store.claim_rows(id, "finisher", 10, lease, t(604)).await.expect("claim");
    let handed = again.iter().find(|r| r.id == polled.id).expect("handed back rows are claimed at once");
    assert_eq!(handed.carrier_result.as_deref(), Some(r#"{"success":true}"#));
}

/// A callback wakes the rows waiting on its request, of its own provider only, once; a row a worker already
/// polls (or one that is final) is not touched.
pub async fn a_callback_wakes_the_rows_waiting_on_its_request(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let rows = store.claim_rows(id, "w", 10, lease, t(0)).await.expect("claim");
    let waiting = [rows[0].id, rows[1].id];
    assert_eq!(store.await_carrier(id, &waiting, "w", "req-w", t(1), t(900)).await.expect("await"), 2);
    assert!(store.wake_carrier_request(20, "req-w", t(5)).await.expect("wake").is_empty(), "another provider");
    assert!(store.wake_carrier_request(SP, "req-other", t(5)).await.expect("wake").is_empty(), "another request");
    assert!(store.claim_rows(id, "poller", 10, lease, t(5)).await.expect("claim").is_empty(), "still held");
    assert_eq!(store.wake_carrier_request(SP, "req-w", t(5)).await.expect("wake"), vec![id]);
    assert!(store.wake_carrier_request(SP, "req-w", t(5)).await.expect("again").is_empty(), "woken once");
    // The sender setting the wait to its poll interval afterwards does not undo the wake.
    assert_eq!(store.await_carrier(id, &waiting, "carrier:req-w", "req-w", t(5), t(300)).await.expect("re-wait"), 2);
    assert_eq!(store.next_lease_expiry(id).await.expect("expiry"), Some(t(5)), "the wake is kept");
    let polled = store.claim_rows(id, "poller", 10, lease, t(6)).await.expect("claim");
    let ids: Vec<i64> = polled.iter().map(|r| r.id).filter(|r| waiting.contains(r)).collect();
    assert_eq!(ids, waiting.to_vec(), "woken rows are claimed at once, still naming their request");
    assert!(polled.iter().all(|r| !waiting.contains(&r.id) || r.carrier_request_id.as_deref() == Some("req-w")));
    assert!(store.wake_carrier_request(SP, "req-w", t(7)).await.expect("wake").is_empty(), "a poller holds them");
    let teal = store.providers_of(Integration::ThingSpace).await.expect("providers");
    assert!(teal.iter().all(|sp| sp.integration == Integration::ThingSpace) && !teal.is_empty());
}

pub async fn thingspace_settings_are_read_and_a_refused_login_sticks(store: &dyn Store) {
    let sp = store.service_provider(TENANT, TS_SP).await.expect("read").expect("ThingSpace provider");
    let ts = sp.thingspace.expect("ThingSpace settings");
    assert_eq!((ts.app_key.as_str(), ts.callback_username.as_str()), ("app-1", "cb-1"));
    assert_eq!(ts.callback_password.expose(), "cb-password");
    assert!(ts.login_refused.is_none());
    assert!(store.service_provider(TENANT, SP).await.expect("read").expect("POD19").thingspace.is_none());
    let all = store.thingspace_providers().await.expect("list");
    assert_eq!(all.iter().map(|s| (s.id, s.tenant_id)).collect::<Vec<_>>(), vec![(TS_SP, TENANT), (40, OTHER_TENANT)]);

    store.refuse_login(TS_SP, "login refused: invalid password", t(0)).await.expect("refuse");
    let ts = store.service_provider(TENANT, TS_SP).await.expect("read").expect("sp").thingspace.expect("settings");
    assert_eq!(ts.login_refused.as_deref(), Some("login refused: invalid password"));
    let other =
        store.service_provider(OTHER_TENANT, 40).await.expect("read").expect("sp").thingspace.expect("settings");
    assert!(other.login_refused.is_none(), "only that account");

    let callback = CallbackRecord {
        request_id: "req-9".into(),
        iccid: Some(ICCIDS[0].into()),
        tenant_id: Some(TENANT),
        service_provider_id: Some(TS_SP),
        api_status: "Success".into(),
        api_response: "{}".into(),
        outcome: "applied".into(),
        received_at: t(0),
    };
    store.record_callback(&callback).await.expect("callback recorded");
    let early = CallbackRecord { outcome: "unmatched: no row waits yet".into(), ..callback.clone() };
    store.record_callback(&early).await.expect("early callback recorded");
    let other = CallbackRecord { service_provider_id: Some(40), ..early.clone() };
    store.record_callback(&other).await.expect("other account's callback recorded");
    let found = store.unmatched_callbacks(TS_SP, "req-9").await.expect("unmatched");
    assert_eq!(found, vec![early.clone()], "only this account's unmatched callbacks of this request");
    assert!(store.unmatched_callbacks(TS_SP, "req-10").await.expect("unmatched").is_empty());
    // Unmatched callbacks are kept a bounded time: the old ones go, the recent ones and every other stay.
    let recent = CallbackRecord { received_at: t(7_200), ..early.clone() };
    store.record_callback(&recent).await.expect("recent early callback recorded");
    assert_eq!(store.purge_unmatched_callbacks(t(3_600)).await.expect("purge"), 2, "this account's and the other's");
    assert_eq!(store.unmatched_callbacks(TS_SP, "req-9").await.expect("unmatched"), vec![recent]);
}

/// A bulk change over `iccids` of tenant 1 that holds `attributes` on each device; returns what was created.
pub async fn holding(
    store: &dyn Store,
    change_type: ChangeType,
    attributes: &[DeviceAttribute],
    iccids: &[&str],
    retry_of: Option<i64>,
) -> StoreResult<CreatedBulkChange> {
    let mut rows = Vec::new();
    for iccid in iccids {
        rows.push(NewRow {
            device_id: Some(device_id(store, iccid).await),
            iccid: iccid.to_string(),
            msisdn: None,
            status: RowStatus::Pending,
            status_details: None,
            scheduled: None,
        });
    }
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire {
            service_provider_id: Some(SP),
            change_type: Some(change_type.number()),
            ..Default::default()
        },
        created_by: "alice".into(),
        retry_of,
        attributes: attributes.to_vec(),
        idempotency_key: None,
    };
    store.create_bulk_change(&change, &rows).await
}

async fn device_id(store: &dyn Store, iccid: &str) -> i64 {
    store.devices_by_iccid(TENANT, &[iccid.to_string()]).await.expect("device")[0].id
}

/// Ends every open row of these bulk changes (their locks go with them), so later contract functions start clean.
async fn close(store: &dyn Store, ids: &[i64]) {
    for id in ids {
        store.cancel_rows(TENANT, *id, "contract", t(0)).await.expect("cancel");
        // Rows other workers held: their leases have long ended by then.
        for row in store.claim_rows(*id, "closer", 100, Duration::from_secs(60), t(10_000)).await.expect("claim") {
            let done = RowOutcome {
                status: RowStatus::Error,
                details: "closed".into(),
                device_update: DeviceUpdate::default(),
            };
            store.complete_row(TENANT, *id, row.id, "closer", &done, t(10_000)).await.expect("complete");
        }
        store.finalize_bulk_change(*id, t(10_001)).await.expect("finalize");
    }
}

pub async fn one_open_change_per_device_and_attribute(store: &dyn Store) {
    use DeviceAttribute::*;
    let status = [Status, CarrierRatePlan];
    let a = holding(store, ChangeType::StatusUpdate, &status, &ICCIDS[..2], None).await.expect("a");
    assert!(a.conflicts.is_empty());
    let open = store.open_changes(TENANT, &[device_id(store, ICCIDS[0]).await]).await.expect("open");
    assert_eq!(
        open.iter().map(|o| (o.attribute, o.bulk_change_id, o.change_type)).collect::<Vec<_>>(),
        vec![(CarrierRatePlan, a.id, ChangeType::StatusUpdate), (Status, a.id, ChangeType::StatusUpdate)]
    );
    assert!(store.open_changes(OTHER_TENANT, &[open[0].device_id]).await.expect("open").is_empty());

    // Another attribute of the same devices: no conflict.
    let b = holding(store, ChangeType::EditUsername, &[Username], &ICCIDS[..2], None).await.expect("b");
    assert!(b.conflicts.is_empty(), "{:?}", b.conflicts);
    // The same attribute: the held device is refused by the store, naming the holder; the free one is not.
    let c = holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[0], ICCIDS[2]], None).await.expect("c");
    let reason = domain::conflict_reason(ICCIDS[0], ChangeType::StatusUpdate, a.id);
    assert_eq!(c.conflicts, vec![RowConflict { iccid: ICCIDS[0].into(), reason: reason.clone() }]);
    let rows = store.rows(TENANT, c.id, None, 1, 10).await.expect("rows");
    let refused = rows.iter().find(|r| r.iccid == ICCIDS[0]).expect("row");
    assert_eq!((refused.status, refused.status_details.as_deref()), (RowStatus::Error, Some(reason.as_str())));
    assert_eq!(rows.iter().find(|r| r.iccid == ICCIDS[2]).expect("row").status, RowStatus::Pending);
    // An archival holds every attribute: it conflicts with any open change.
    let d = holding(store, ChangeType::Archival, &DeviceAttribute::ALL, &[ICCIDS[1]], None).await.expect("d");
    assert_eq!(d.conflicts.len(), 1);
    assert!(d.conflicts[0].reason.starts_with(&format!("device {} has an open ", ICCIDS[1])), "{:?}", d.conflicts);
    assert!(store.claim_rows(d.id, "w", 10, Duration::from_secs(60), t(0)).await.expect("claim").is_empty());

    // A final row frees its device: claimed and completed, or cancelled.
    let claimed = store.claim_rows(a.id, "w", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    let row0 = claimed.iter().find(|r| r.iccid == ICCIDS[0]).expect("row");
    let done =
        RowOutcome { status: RowStatus::Processed, details: "ok".into(), device_update: DeviceUpdate::default() };
    assert!(store.complete_row(TENANT, a.id, row0.id, "w", &done, t(1)).await.expect("complete"));
    let e = holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[0]], None).await.expect("e");
    assert!(e.conflicts.is_empty(), "a final row no longer holds its device: {:?}", e.conflicts);
    let f = holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[1]], None).await.expect("f");
    assert_eq!(f.conflicts.len(), 1, "a PROCESSING row still holds its device");
    close(store, &[a.id, b.id, c.id, d.id, e.id, f.id]).await;
    let g = holding(store, ChangeType::Archival, &DeviceAttribute::ALL, &ICCIDS, None).await.expect("g");
    assert!(g.conflicts.is_empty(), "closed rows hold nothing: {:?}", g.conflicts);
    close(store, &[g.id]).await;

    // One device twice in one bulk change: its first row holds it, the later one is an ERROR row naming this bulk
    // change, and the bulk change is still recorded.
    let h =
        holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[2], ICCIDS[1], ICCIDS[2]], None).await.expect("h");
    let reason = domain::conflict_reason(ICCIDS[2], ChangeType::StatusUpdate, h.id);
    assert_eq!(h.conflicts, vec![RowConflict { iccid: ICCIDS[2].into(), reason: reason.clone() }]);
    let rows = store.rows(TENANT, h.id, None, 1, 10).await.expect("rows");
    let seen: Vec<(&str, RowStatus)> = rows.iter().map(|r| (r.iccid.as_str(), r.status)).collect();
    assert_eq!(
        seen,
        vec![(ICCIDS[2], RowStatus::Pending), (ICCIDS[1], RowStatus::Pending), (ICCIDS[2], RowStatus::Error)]
    );
    assert_eq!(rows[2].status_details.as_deref(), Some(reason.as_str()));
    let open = store.open_changes(TENANT, &[device_id(store, ICCIDS[2]).await]).await.expect("open");
    assert!(open.iter().all(|o| o.bulk_change_id == h.id), "{open:?}");
    assert_eq!(open.len(), 2, "the first row holds both attributes: {open:?}");
    close(store, &[h.id]).await;
}

pub async fn one_open_retry_and_a_retry_takes_only_rows_no_later_retry_holds(store: &dyn Store) {
    let original = holding(store, ChangeType::StatusUpdate, &[], &ICCIDS[..2], None).await.expect("original").id;
    let rows = store.claim_rows(original, "w", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    for (row, status) in rows.iter().zip([RowStatus::ApiFailed, RowStatus::Processed]) {
        let outcome = RowOutcome { status, details: "carrier said so".into(), device_update: DeviceUpdate::default() };
        assert!(store.complete_row(TENANT, original, row.id, "w", &outcome, t(1)).await.expect("complete"));
    }
    store.finalize_bulk_change(original, t(2)).await.expect("finalize");
    assert_eq!(store.retry_candidates(TENANT, original).await.expect("candidates"), vec![ICCIDS[0].to_string()]);
    assert!(store.retry_candidates(OTHER_TENANT, original).await.expect("candidates").is_empty());

    let first = holding(store, ChangeType::StatusUpdate, &[], &[ICCIDS[0]], Some(original)).await.expect("retry");
    match holding(store, ChangeType::StatusUpdate, &[], &[ICCIDS[0]], Some(original)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already has an open retry"), "{why}"),
        other => panic!("a second open retry must be refused, got {other:?}"),
    }
    assert!(
        store.retry_candidates(TENANT, original).await.expect("candidates").is_empty(),
        "the later retry holds the failed row"
    );
    close(store, &[first.id]).await;
    assert!(store.retry_candidates(TENANT, original).await.expect("candidates").is_empty(), "settled by the retry");
    // A retry whose candidates were read before the first retry was created, and that arrives after the first
    // finished, changes nothing twice.
    match holding(store, ChangeType::StatusUpdate, &[], &[ICCIDS[0]], Some(original)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already retried by bulk change"), "{why}"),
        other => panic!("a device an earlier retry took must not be retried again, got {other:?}"),
    }
}

pub async fn one_active_rev_service_line_per_device(store: &dyn Store) {
    let with_line = device_id(store, ICCIDS[2]).await;
    match store.begin_rev_service(TENANT, with_line, "1001", 1, 1, t(0)).await.expect("begin") {
        RevServiceStart::Active(line) => assert_eq!(line.rev_service_id, 11_001),
        other => panic!("the seeded line is active: {other:?}"),
    }
    let owner = holding(store, ChangeType::CustomerAssignment, &[DeviceAttribute::Billing], &ICCIDS[..2], None)
        .await
        .expect("owner");
    let rows = store.rows(TENANT, owner.id, None, 1, 10).await.expect("rows");
    let (row0, row1) = (rows[0].id, rows[1].id);
    let (dev0, dev1) = (device_id(store, ICCIDS[0]).await, device_id(store, ICCIDS[1]).await);
    let begin = |device, row| store.begin_rev_service(TENANT, device, "1001", owner.id, row, t(0));
    assert_eq!(begin(dev0, row0).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    assert_eq!(
        begin(dev0, row0).await.expect("begin"),
        RevServiceStart::Create { earlier_attempt: true },
        "the same row again (a crash, a lost answer): look on Rev.io first"
    );
    assert_eq!(
        store.begin_rev_service(TENANT, dev0, "1001", owner.id + 1000, 1, t(0)).await.expect("begin"),
        RevServiceStart::Busy { bulk_change_id: owner.id },
        "another row while the creating row is open"
    );
    let line =
        |id| RevServiceRecord { device_id: dev0, rev_service_id: id, rev_customer_id: "1001".into(), is_active: true };
    store.add_rev_service(TENANT, &line(500)).await.expect("record");
    store.add_rev_service(TENANT, &line(500)).await.expect("the same line again is no change");
    match store.add_rev_service(TENANT, &line(501)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already has active Rev.io service 500"), "{why}"),
        other => panic!("a second active line must be refused, got {other:?}"),
    }
    assert_eq!(store.active_rev_service(TENANT, dev0).await.expect("read").map(|l| l.rev_service_id), Some(500));
    assert_eq!(begin(dev0, row0).await.expect("begin"), RevServiceStart::Active(line(500)));

    // Rev.io refused: the right is given back, and the next attempt starts afresh.
    assert_eq!(begin(dev1, row1).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    store.abandon_rev_service(dev1, owner.id, row1).await.expect("abandon");
    assert_eq!(begin(dev1, row1).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    // Once the creating row is final, another row takes over, warned that a line may exist on Rev.io.
    close(store, &[owner.id]).await;
    assert_eq!(
        store.begin_rev_service(TENANT, dev1, "1001", owner.id + 1000, 1, t(0)).await.expect("begin"),
        RevServiceStart::Create { earlier_attempt: true }
    );
    store.abandon_rev_service(dev1, owner.id + 1000, 1).await.expect("abandon");
}

pub async fn idempotency_keys_replay_once_per_tenant(store: &dyn Store) {
    let begin = |tenant, key: &'static str, hash: &'static str, now| {
        store.begin_idempotent(
            tenant,
            key,
            hash,
            now,
            now - chrono::Duration::seconds(60),
            now - chrono::Duration::hours(24),
        )
    };
    assert_eq!(begin(TENANT, "k1", "h1", t(0)).await.expect("begin"), IdempotencyStart::New);
    assert_eq!(
        begin(TENANT, "k1", "h1", t(1)).await.expect("begin"),
        IdempotencyStart::InProgress { bulk_change_id: None, since: t(0) }
    );
    store.finish_idempotent(TENANT, "k1", 202, "{\"BulkChangeId\":7}").await.expect("finish");
    assert_eq!(
        begin(TENANT, "k1", "h1", t(2)).await.expect("begin"),
        IdempotencyStart::Replay { status: 202, body: "{\"BulkChangeId\":7}".into() }
    );
    assert_eq!(begin(TENANT, "k1", "other body", t(3)).await.expect("begin"), IdempotencyStart::Mismatch);
    assert_eq!(
        begin(OTHER_TENANT, "k1", "other body", t(3)).await.expect("begin"),
        IdempotencyStart::New,
        "per tenant"
    );
    assert_eq!(begin(TENANT, "k1", "other body", t(90_000)).await.expect("begin"), IdempotencyStart::New, "expired");

    // A reservation whose request died before recording anything is taken over; one with a bulk change is not.
    assert_eq!(begin(TENANT, "k2", "h", t(0)).await.expect("begin"), IdempotencyStart::New);
    assert_eq!(begin(TENANT, "k2", "h", t(120)).await.expect("begin"), IdempotencyStart::New);
    assert_eq!(begin(TENANT, "k3", "h", t(0)).await.expect("begin"), IdempotencyStart::New);
    let devices = store.devices_by_iccid(TENANT, &[ICCIDS[0].to_string()]).await.expect("devices");
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::StatusUpdate,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(3), ..Default::default() },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: Some("k3".into()),
    };
    let row = NewRow {
        device_id: Some(devices[0].id),
        iccid: ICCIDS[0].into(),
        msisdn: None,
        status: RowStatus::Pending,
        status_details: None,
        scheduled: None,
    };
    let id = store.create_bulk_change(&change, &[row]).await.expect("create").id;
    assert_eq!(
        begin(TENANT, "k3", "h", t(120)).await.expect("begin"),
        IdempotencyStart::InProgress { bulk_change_id: Some(id), since: t(0) },
        "the bulk change was recorded on the key with it"
    );
    // A request that failed before writing gives its key back.
    assert_eq!(begin(TENANT, "k4", "h", t(0)).await.expect("begin"), IdempotencyStart::New);
    store.abandon_idempotent(TENANT, "k4").await.expect("abandon");
    assert_eq!(begin(TENANT, "k4", "h", t(1)).await.expect("begin"), IdempotencyStart::New);
    store.abandon_idempotent(TENANT, "k3").await.expect("abandon");
    assert!(
        matches!(begin(TENANT, "k3", "h", t(2)).await.expect("begin"), IdempotencyStart::InProgress { .. }),
        "kept"
    );
    assert!(store.purge_idempotency_keys(t(100_000)).await.expect("purge") >= 4);
    assert_eq!(begin(TENANT, "k3", "h", t(3)).await.expect("begin"), IdempotencyStart::New, "purged");
    close(store, &[id]).await;
}

/// Books a carrier account's pace as `workers` workers would, every `step_ms` of synthetic time for `seconds`;
/// returns every granted slot (Unix seconds).
pub async fn book_pace(stores: &[&dyn Store], rate: f64, seconds: u32, step_ms: i64) -> Vec<f64> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let batch = (rate / 20.0).max(1.0) as u32;
    let mut slots = Vec::new();
    let mut at = 0;
    while at < i64::from(seconds) * 1000 {
        let now = t(0) + chrono::Duration::milliseconds(at);
        let booked = futures::future::join_all(
            stores.iter().map(|s| s.reserve_rate_slots(SP, "calls", interval, batch, Duration::from_millis(100), now)),
        )
        .await;
        for b in booked {
            let b = b.expect("book");
            let first = b.first.timestamp_micros() as f64 / 1e6;
            slots.extend((0..b.granted).map(|i| first + f64::from(i) * interval.as_secs_f64()));
        }
        at += step_ms;
    }
    slots.sort_by(f64::total_cmp);
    slots
}

/// The most slots in any window of one second (half-open: a call exactly one second after another is in the next
/// window; ten microseconds of rounding are forgiven: Unix seconds near 2030 keep about a quarter microsecond).
pub fn busiest_second(slots: &[f64]) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..slots.len() {
        while slots[end] - slots[start] >= 1.0 - 1e-5 {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

pub async fn the_shared_pace_never_books_more_than_its_rate(store: &dyn Store) {
    let rate = 200.0;
    let slots = book_pace(&[store, store], rate, 5, 10).await;
    assert!(busiest_second(&slots) as f64 <= rate, "at most {rate} slots in any second: {}", busiest_second(&slots));
    assert!(slots.len() as f64 >= rate * 4.5, "and the whole pace is used: {} slots in 5 s", slots.len());
    assert!(slots.windows(2).all(|w| w[1] - w[0] >= 1.0 / rate - 1e-5), "no slot handed out twice");
    // Far booked ahead: nothing more until the horizon comes back.
    let interval = Duration::from_secs_f64(1.0 / rate);
    let now = t(0);
    let other = store.reserve_rate_slots(SP, "activations", interval, 10, Duration::from_millis(100), now).await;
    assert_eq!(other.expect("book").granted, 10, "each kind of call has its own pace");
}

pub async fn leases_are_renewed_by_their_holder_only(store: &dyn Store) {
    let id = new_bulk(store).await;
    assert_eq!(store.pending_rows(id).await.expect("pending"), 3);
    let mine = store.claim_rows(id, "a", 2, Duration::from_secs(30), t(0)).await.expect("claim");
    assert_eq!(store.pending_rows(id).await.expect("pending"), 1);
    // Renewed at t(20) for 30 s more: still held at t(40), when the first lease would have ended.
    assert_eq!(store.renew_leases(id, "a", t(50)).await.expect("renew"), 2);
    assert_eq!(store.renew_leases(id, "b", t(50)).await.expect("renew"), 0, "b holds nothing");
    assert_eq!(
        store.claim_rows(id, "b", 10, Duration::from_secs(30), t(40)).await.expect("claim").len(),
        1,
        "only the pending row"
    );
    // Not renewed again: taken over once the renewed lease ends.
    let taken = store.claim_rows(id, "c", 10, Duration::from_secs(30), t(51)).await.expect("claim");
    assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), mine.iter().map(|r| r.id).collect::<Vec<_>>());
    assert!(taken.iter().all(|r| r.claims == 2));
    close(store, &[id]).await;
}
