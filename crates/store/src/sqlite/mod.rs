//! The embedded store: one SQLite file (WAL), every query scoped by tenant, row claims with a lease,
//! and the embedded queue over the same file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::rules::{CarrierRatePlan, DeviceRecord, DeviceStatusDef, ImeiRange};
use domain::{BulkStatus, ChangeType, DeviceAttribute, Integration, PortalType, RowStatus, bulk_status_from_rows};
use engine::ports::*;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::seed::Seed;

const PROCESSED_BY: &str = "AltaworxDeviceBulkChange";

/// Fixed-width UTC text, so times compare correctly as strings.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp '{s}': {e}")))
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| parse_ts(&s)).transpose()
}

fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database { context, message: e.to_string() }
}

/// Where a bulk change's rows live: M2M (PortalType 0) in `M2M_DeviceChange`, Mobility (2) in `Mobility_DeviceChange`.
pub const ROW_TABLES: [&str; 2] = ["M2M_DeviceChange", "Mobility_DeviceChange"];

fn row_table_of(portal_type_id: i64) -> &'static str {
    if portal_type_id == 2 { ROW_TABLES[1] } else { ROW_TABLES[0] }
}

fn row_table(c: &Connection, bulk_change_id: i64) -> Result<&'static str, StoreError> {
    let portal: Option<i64> = c
        .query_row("SELECT PortalTypeId FROM DeviceBulkChange WHERE Id = ?1", params![bulk_change_id], |r| r.get(0))
        .optional()
        .map_err(db("read portal type"))?;
    Ok(row_table_of(portal.unwrap_or(0)))
}

/// The SQLite store. Cheap to clone; all clones share one connection (SQLite serialises writers anyway).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Calls that took the connection (one blocking task and one lock each): the bench's round trips.
    round_trips: Arc<std::sync::atomic::AtomicU64>,
}

/// How a connection waits for another process's write lock: about 10 s in all, in steps of 0.1 ms at first and
/// 1 ms after. SQLite's own busy timeout sleeps 1, 2, 5 ... up to 100 ms between tries, far longer than a write
/// holds the lock here (a group of rows takes a few milliseconds), so workers on one file idled while it was free.
fn wait_for_the_lock(tries: i32) -> bool {
    const SHORT_TRIES: i32 = 100;
    const TRIES: i32 = SHORT_TRIES + 10_000;
    if tries >= TRIES {
        return false;
    }
    std::thread::sleep(if tries < SHORT_TRIES { Duration::from_micros(100) } else { Duration::from_millis(1) });
    true
}

impl SqliteStore {
    /// A bulk change's rows (in `status`, if given) with an Id above `after_id`, in Id order: `limit` of them from
    /// the `offset`-th.
    async fn read_rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        after_id: i64,
        limit: u32,
        offset: i64,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let status = status.map(|s| s.as_str().to_string());
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM {table} WHERE BulkChangeId = ?1 AND TenantId = ?2 AND (?3 IS NULL OR Status = ?3) AND Id > ?4 ORDER BY Id LIMIT ?5 OFFSET ?6"
                ))
                .map_err(db("read rows"))?;
            let raws = stmt
                .query_map(params![bulk_change_id, tenant_id, status, after_id, limit, offset], raw_row)
                .map_err(db("read rows"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read rows"))?;
            raws.into_iter().map(row_from_raw).collect()
        })
        .await
    }
    /// Opens (creating if needed) the database file and applies the schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(db("open database"))?;
        conn.busy_handler(Some(wait_for_the_lock)).map_err(db("set busy handler"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db("enable foreign keys"))?;
        migrate(&mut conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), round_trips: Arc::default() })
    }

    /// How many times this store (and its clones) took the connection so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.round_trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Corrupt("connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database { context: "blocking task", message: e.to_string() })?
    }

    /// Fills an empty database from a seed. Returns false (and changes nothing) when tenants already exist.
    pub async fn load_seed(&self, seed: Seed) -> Result<bool, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db("begin seed"))?;
            let tenants: i64 = tx.query_row("SELECT COUNT(*) FROM Tenant", [], |r| r.get(0)).map_err(db("count tenants"))?;
            if tenants > 0 {
                return Ok(false);
            }
            for t in &seed.tenants {
                tx.execute("INSERT INTO Tenant (Id, Name) VALUES (?1, ?2)", params![t.id, t.name]).map_err(db("seed tenant"))?;
            }
            for sp in &seed.service_providers {
                if Integration::from_id(sp.integration_id).is_none() {
                    return Err(StoreError::Seed(format!("service provider {}: unknown IntegrationId {}", sp.id, sp.integration_id)));
                }
                tx.execute(
                    "INSERT INTO ServiceProvider (Id, TenantId, IntegrationId, Name, BaseUrl, Username, Secret, ClientCode, SubscriptionKey, WriteIsEnabled, RateLimitPerSecond, DefaultProviderId, CarrierSettings)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![sp.id, sp.tenant_id, sp.integration_id, sp.name, sp.base_url, sp.username, sp.secret, sp.client_code, sp.subscription_key, sp.write_is_enabled, sp.rate_limit_per_second, sp.default_provider_id, sp.carrier_settings.as_ref().map(|v| v.to_string())],
                )
                .map_err(|e| StoreError::Seed(format!("service provider {}: {e}", sp.id)))?;
                if let Some(t) = &sp.thing_space {
                    tx.execute(
                        "INSERT INTO ThingSpaceAuthentication (ServiceProviderId, AppKey, AppSecret, AccountName, CallbackUsername, CallbackPassword)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![sp.id, t.app_key, t.app_secret, t.account_name, t.callback_username, t.callback_password],
                    )
                    .map_err(|e| StoreError::Seed(format!("service provider {} ThingSpace settings: {e}", sp.id)))?;
                }
            }
            for s in &seed.device_statuses {
                tx.execute(
                    "INSERT OR REPLACE INTO DeviceStatus (Id, IntegrationId, Status, DisplayName) VALUES (?1, ?2, ?3, ?4)",
                    params![s.id, s.integration_id, s.status, s.display_name],
                )
                .map_err(db("seed device status"))?;
            }
            for p in &seed.carrier_rate_plans {
                tx.execute(
                    "INSERT INTO JasperCarrierRatePlan (Id, ServiceProviderId, RatePlanCode, PlanMB, BaseRate, JasperRatePlanId, PlanUuid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![p.id, p.service_provider_id, p.rate_plan_code, p.plan_mb, p.base_rate, p.jasper_rate_plan_id, p.plan_uuid],
                )
                .map_err(|e| StoreError::Seed(format!("rate plan {}: {e}", p.rate_plan_code)))?;
            }
            for r in &seed.imei_ranges {
                tx.execute(
                    "INSERT INTO IMEI_DeviceType_CarrierRatePlan (Manufacturer, Model, FromIMEI, ToIMEI, SIMType, IsActive) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![r.manufacturer, r.model, r.from_imei, r.to_imei, r.sim_type, r.is_active],
                )
                .map_err(|e| StoreError::Seed(format!("IMEI range {}-{}: {e}", r.from_imei, r.to_imei)))?;
            }
            for c in &seed.rev_customers {
                tx.execute(
                    "INSERT INTO RevCustomer (TenantId, RevCustomerId, Name) VALUES (?1, ?2, ?3)",
                    params![c.tenant_id, c.rev_customer_id, c.name],
                )
                .map_err(|e| StoreError::Seed(format!("Rev customer {}: {e}", c.rev_customer_id)))?;
            }
            let now = ts(Utc::now());
            for d in &seed.devices {
                let integration: i64 = tx
                    .query_row("SELECT IntegrationId FROM ServiceProvider WHERE Id = ?1 AND TenantId = ?2", params![d.service_provider_id, d.tenant_id], |r| r.get(0))
                    .optional()
                    .map_err(db("seed device provider"))?
                    .ok_or_else(|| StoreError::Seed(format!("device {}: service provider {} of tenant {} not found", d.iccid, d.service_provider_id, d.tenant_id)))?;
                let status_id: i64 = tx
                    .query_row(
                        "SELECT Id FROM DeviceStatus WHERE IntegrationId = ?1 AND (Status = ?2 COLLATE NOCASE OR DisplayName = ?2 COLLATE NOCASE) ORDER BY Id LIMIT 1",
                        params![integration, d.status],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db("seed device status lookup"))?
                    .ok_or_else(|| StoreError::Seed(format!("device {}: status '{}' unknown for integration {integration}", d.iccid, d.status)))?;
                tx.execute(
                    "INSERT INTO Device (Id, TenantId, ServiceProviderId, ICCID, IMEI, MSISDN, EID, DeviceStatusId, CarrierRatePlan, CommunicationPlan, Username, LastUsageDate, DataUsageMB, RevCustomerId, ModifiedBy, ModifiedDate)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'seed', ?15)",
                    params![d.id, d.tenant_id, d.service_provider_id, d.iccid, d.imei, d.msisdn, d.eid, status_id, d.carrier_rate_plan, d.communication_plan, d.username, d.last_usage().map(ts), d.data_usage_mb, d.rev_customer_id, now],
                )
                .map_err(|e| StoreError::Seed(format!("device {}: {e}", d.iccid)))?;
            }
            for (table, plans) in [("CustomerRatePlan", &seed.customer_rate_plans), ("CustomerRatePool", &seed.customer_rate_pools)] {
                for p in plans {
                    tx.execute(&format!("INSERT INTO {table} (Id, TenantId, Name) VALUES (?1, ?2, ?3)"), params![p.id, p.tenant_id, p.name])
                        .map_err(|e| StoreError::Seed(format!("{table} {}: {e}", p.id)))?;
                }
            }
            for r in &seed.rev_services {
                let inserted = tx
                    .execute(
                        "INSERT INTO RevService (TenantId, DeviceId, RevServiceId, RevCustomerId, IsActive, CreatedDate)
                         SELECT ?1, Id, ?3, ?4, 1, ?5 FROM Device WHERE TenantId = ?1 AND ICCID = ?2",
                        params![r.tenant_id, r.iccid, r.rev_service_id, r.rev_customer_id, now],
                    )
                    .map_err(db("seed Rev service"))?;
                if inserted == 0 {
                    return Err(StoreError::Seed(format!("Rev service {}: device {} of tenant {} not found", r.rev_service_id, r.iccid, r.tenant_id)));
                }
            }
            tx.commit().map_err(db("commit seed"))?;
            Ok(true)
        })
        .await
    }

    /// Service providers of every tenant, for `serve --simulators` to point them at the simulators.
    pub async fn set_base_url(&self, service_provider_id: i64, base_url: &str) -> Result<(), StoreError> {
        let url = base_url.to_string();
        self.with(move |conn| {
            conn.execute("UPDATE ServiceProvider SET BaseUrl = ?1 WHERE Id = ?2", params![url, service_provider_id])
                .map_err(db("set base url"))?;
            Ok(())
        })
        .await
    }

    /// Test helper: how many change rows a bulk change has in one of [`ROW_TABLES`].
    pub async fn rows_in_table(&self, table: &'static str, bulk_change_id: i64) -> Result<i64, StoreError> {
        if !ROW_TABLES.contains(&table) {
            return Err(StoreError::Corrupt(format!("{table} is not a change row table")));
        }
        self.with(move |c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1"),
                params![bulk_change_id],
                |r| r.get(0),
            )
            .map_err(db("count rows in table"))
        })
        .await
    }

    /// Test helper: breaks the database as an outage would (the tables the scheduler reads are gone), so callers'
    /// failure paths can be tested.
    pub async fn break_for_tests(&self) {
        let _ = self
            .with(|c| {
                c.execute_batch(
                    "PRAGMA foreign_keys = OFF; DROP TABLE Device_CustomerRatePlanOrRatePool_Queue; DROP TABLE DeviceBulkChange;",
                )
                .map_err(db("break"))
            })
            .await;
    }

    /// Test helper: how many rows every table holds (to show that a refused request wrote nothing).
    pub async fn table_row_counts(&self) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        self.with(|c| {
            let tables: Vec<String> = c
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(db("list tables"))?;
            let mut counts = std::collections::BTreeMap::new();
            for table in tables {
                // Names come from sqlite_master, not from a caller.
                let n: i64 = c
                    .query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| r.get(0))
                    .map_err(db("count table"))?;
                counts.insert(table, n);
            }
            Ok(counts)
        })
        .await
    }

    /// Bench helper: who holds leases on a bulk change's PROCESSING rows, and how many each.
    pub async fn lease_holders(&self, bulk_change_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare(&format!(
                    "SELECT LeaseOwner, COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND Status = 'PROCESSING'
                     AND LeaseOwner IS NOT NULL GROUP BY LeaseOwner ORDER BY LeaseOwner"
                ))
                .map_err(db("lease holders"))?;
            stmt.query_map(params![bulk_change_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db("lease holders"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("lease holders"))
        })
        .await
    }

    /// Test and bench helper: the device as stored, by ICCID, within a tenant.
    pub async fn device_by_iccid(&self, tenant_id: i64, iccid: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.devices_by_iccid(tenant_id, &[iccid.to_string()]).await?.into_iter().next())
    }
}

const DEVICE_COLUMNS: &str = "Id, TenantId, ServiceProviderId, ICCID, IMEI, MSISDN, DeviceStatusId, CarrierRatePlan, CommunicationPlan, Username, LastUsageDate, DataUsageMB, RevCustomerId, IsActive, IsDeleted, CustomerRatePlanId, CustomerRatePoolId, CustomerDataAllocationMB, EID";

/// The inventory filters: ?3 status (code or display name), ?4 carrier plan, ?5 Rev customer, ?6 LIKE pattern.
const DEVICE_FILTER: &str = "AND (?3 IS NULL OR s.Status = ?3 COLLATE NOCASE OR s.DisplayName = ?3 COLLATE NOCASE)
     AND (?4 IS NULL OR d.CarrierRatePlan = ?4) AND (?5 IS NULL OR d.RevCustomerId = ?5)
     AND (?6 IS NULL OR d.ICCID LIKE ?6 ESCAPE '\\' OR d.IMEI LIKE ?6 ESCAPE '\\' OR d.MSISDN LIKE ?6 ESCAPE '\\'
          OR d.Username LIKE ?6 ESCAPE '\\')";

/// `%text%` with LIKE's wildcards in `text` taken literally.
fn like_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

fn device_from_row(r: &Row<'_>) -> rusqlite::Result<(DeviceRecord, Option<String>)> {
    Ok((
        DeviceRecord {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            service_provider_id: r.get(2)?,
            iccid: r.get(3)?,
            imei: r.get(4)?,
            msisdn: r.get(5)?,
            device_status_id: r.get(6)?,
            carrier_rate_plan: r.get(7)?,
            communication_plan: r.get(8)?,
            username: r.get(9)?,
            last_usage_date: None,
            data_usage_mb: r.get(11)?,
            rev_customer_id: r.get(12)?,
            is_active: r.get(13)?,
            is_deleted: r.get(14)?,
            customer_rate_plan_id: r.get(15)?,
            customer_rate_pool_id: r.get(16)?,
            customer_data_allocation_mb: r.get(17)?,
            eid: r.get(18)?,
        },
        r.get(10)?,
    ))
}

fn finish_device((mut d, last): (DeviceRecord, Option<String>)) -> Result<DeviceRecord, StoreError> {
    d.last_usage_date = opt_ts(last)?;
    Ok(d)
}

fn service_provider_from_row(r: &Row<'_>) -> rusqlite::Result<(ServiceProvider, i64)> {
    let integration_id: i64 = r.get(2)?;
    let subscription_key: Option<String> = r.get(8)?;
    Ok((
        ServiceProvider {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            integration: Integration::from_id(integration_id).unwrap_or(Integration::Jasper),
            name: r.get(3)?,
            base_url: r.get(4)?,
            username: r.get(5)?,
            secret: Secret::new(r.get::<_, String>(6)?),
            client_code: r.get(7)?,
            subscription_key: subscription_key.map(Secret::new),
            write_is_enabled: r.get(9)?,
            rate_limit_per_second: r.get(10)?,
            default_provider_id: r.get(17)?,
            carrier_settings: r.get(18)?,
            thingspace: match r.get::<_, Option<String>>(11)? {
                Some(app_key) => Some(ThingSpaceSettings {
                    app_key,
                    app_secret: Secret::new(r.get::<_, String>(12)?),
                    account_name: r.get(13)?,
                    callback_username: r.get(14)?,
                    callback_password: Secret::new(r.get::<_, String>(15)?),
                    login_refused: r.get(16)?,
                }),
                None => None,
            },
        },
        integration_id,
    ))
}

const SP_COLUMNS: &str = "sp.Id, sp.TenantId, sp.IntegrationId, sp.Name, sp.BaseUrl, sp.Username, sp.Secret, sp.ClientCode, sp.SubscriptionKey, sp.WriteIsEnabled, sp.RateLimitPerSecond,
     ts.AppKey, ts.AppSecret, ts.AccountName, ts.CallbackUsername, ts.CallbackPassword, ts.LoginRefusedReason, sp.DefaultProviderId, sp.CarrierSettings";
const SP_FROM: &str = "ServiceProvider sp LEFT JOIN ThingSpaceAuthentication ts ON ts.ServiceProviderId = sp.Id";

fn checked_sp(found: Option<(ServiceProvider, i64)>) -> Result<Option<ServiceProvider>, StoreError> {
    match found {
        Some((sp, id)) if Integration::from_id(id).is_none() => {
            Err(StoreError::Corrupt(format!("service provider {} has unknown integration {id}", sp.id)))
        }
        Some((sp, _)) => Ok(Some(sp)),
        None => Ok(None),
    }
}

const BULK_COLUMNS: &str = "Id, TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId, Status, ChangeRequest, CreatedBy, CreatedDate, ProcessedDate, RetryOfBulkChangeId";

type RawBulk = (i64, i64, i64, i64, i64, i64, String, String, String, String, Option<String>, Option<i64>);

fn raw_bulk(r: &Row<'_>) -> rusqlite::Result<RawBulk> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn bulk_from_raw(raw: RawBulk) -> Result<BulkChange, StoreError> {
    let (
        id,
        tenant_id,
        sp,
        integration,
        change_type,
        portal,
        status,
        request,
        created_by,
        created,
        processed,
        retry_of,
    ) = raw;
    let bad = |what: String| StoreError::Corrupt(format!("bulk change {id}: {what}"));
    Ok(BulkChange {
        id,
        tenant_id,
        service_provider_id: sp,
        integration: Integration::from_id(integration)
            .ok_or_else(|| bad(format!("unknown integration {integration}")))?,
        change_type: ChangeType::from_number(change_type)
            .ok_or_else(|| bad(format!("unknown change type {change_type}")))?,
        portal_type: PortalType::try_from(portal).map_err(bad)?,
        status: BulkStatus::parse(&status).ok_or_else(|| bad(format!("unknown status {status}")))?,
        request: serde_json::from_str(&request).map_err(|e| bad(format!("unreadable ChangeRequest: {e}")))?,
        created_by,
        created_at: parse_ts(&created)?,
        processed_at: opt_ts(processed)?,
        retry_of,
    })
}

const ROW_COLUMNS: &str = "Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult, RowRequest";

type RawRow = (
    (i64, i64, Option<i64>, String, Option<String>),
    (String, Option<String>, i64, Option<String>, Option<String>, Option<String>, Option<String>),
    Option<String>,
);

fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
        (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?),
        r.get(12)?,
    ))
}

fn row_from_raw(raw: RawRow) -> Result<DeviceChangeRow, StoreError> {
    let (
        (id, bulk_change_id, device_id, iccid, msisdn),
        (status, status_details, claims, processed, request, requested, carrier_result),
        row_request,
    ) = raw;
    Ok(DeviceChangeRow {
        id,
        bulk_change_id,
        device_id,
        iccid,
        msisdn,
        status: RowStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("row {id}: unknown status {status}")))?,
        status_details,
        claims,
        processed_date: opt_ts(processed)?,
        carrier_request_id: request,
        carrier_requested_at: opt_ts(requested)?,
        carrier_result,
        device: None,
        request: row_request,
    })
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

fn from_unix_seconds(s: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros((s * 1e6).round() as i64).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The pacing rule both stores apply (`Pace::reserve_rate_slots`): from the next free slot (never before now),
/// `count` slots one `interval` apart, unless that slot is more than `horizon` ahead. Returns the first slot, how
/// many were granted and the next free slot after them (all Unix seconds).
pub fn pace(next_free: Option<f64>, now: f64, interval: Duration, count: u32, horizon: Duration) -> (f64, u32, f64) {
    let first = next_free.map_or(now, |n| n.max(now));
    if first > now + horizon.as_secs_f64() || count == 0 {
        return (first, 0, first);
    }
    (first, count, first + f64::from(count) * interval.as_secs_f64())
}

/// The open retry of a bulk change, if one is running.
fn open_retry(c: &Connection, original: i64) -> Result<Option<i64>, StoreError> {
    c.query_row(
        "SELECT Id FROM DeviceBulkChange WHERE RetryOfBulkChangeId = ?1 AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED', 'PAUSED')",
        params![original],
        |r| r.get(0),
    )
    .optional()
    .map_err(db("read open retry"))
}

/// What a row refused by another bulk change's open change says.
fn holder_reason(iccid: &str, bulk_change_id: i64, change_type: i64) -> Result<String, StoreError> {
    let kind = ChangeType::from_number(change_type).ok_or_else(|| {
        StoreError::Corrupt(format!("device lock of bulk change {bulk_change_id}: change type {change_type}"))
    })?;
    Ok(domain::conflict_reason(iccid, kind, bulk_change_id))
}

#[async_trait]
impl Store for SqliteStore {}

// The adapter by concern, one file per port trait (after the macros above, which they use).
mod queue;
mod schema;
pub use queue::SqliteQueue;
use schema::migrate;
mod bulk_changes;
mod carrier_waits;
mod devices;
mod idempotency;
mod leases;
mod outcomes;
mod pace;
mod reads;
mod reference;
mod rev_services;
mod rollouts;
mod webhooks;
use webhooks::write_event;
