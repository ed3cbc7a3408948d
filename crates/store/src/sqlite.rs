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

const SCHEMA: &str = include_str!("schema.sql");
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

/// Changes to the schema after its first version, in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "ALTER TABLE DeviceBulkChange ADD COLUMN RetryOfBulkChangeId INTEGER REFERENCES DeviceBulkChange(Id)",
    "CREATE TABLE CustomerRatePlan (Id INTEGER PRIMARY KEY, TenantId INTEGER NOT NULL REFERENCES Tenant(Id), Name TEXT NOT NULL,
                                    IsActive INTEGER NOT NULL DEFAULT 1);
     CREATE TABLE CustomerRatePool (Id INTEGER PRIMARY KEY, TenantId INTEGER NOT NULL REFERENCES Tenant(Id), Name TEXT NOT NULL,
                                    IsActive INTEGER NOT NULL DEFAULT 1);
     ALTER TABLE Device ADD COLUMN CustomerRatePlanId INTEGER;
     ALTER TABLE Device ADD COLUMN CustomerRatePoolId INTEGER;
     ALTER TABLE Device ADD COLUMN CustomerDataAllocationMB REAL;
     CREATE TABLE Device_CustomerRatePlanOrRatePool_Queue (
         Id INTEGER PRIMARY KEY, DeviceId INTEGER NOT NULL REFERENCES Device(Id),
         M2MDeviceChangeId INTEGER NOT NULL, BulkChangeId INTEGER NOT NULL,
         CustomerRatePlanId INTEGER, CustomerRatePoolId INTEGER, CustomerDataAllocationMB REAL, EffectiveDate TEXT NOT NULL,
         PortalType INTEGER NOT NULL DEFAULT 0, TenantId INTEGER NOT NULL, CreatedBy TEXT NOT NULL, CreatedDate TEXT NOT NULL,
         ModifiedBy TEXT, ModifiedDate TEXT, IsActive INTEGER NOT NULL DEFAULT 1);
     CREATE INDEX IX_CustomerPlanQueue_Due ON Device_CustomerRatePlanOrRatePool_Queue (IsActive, EffectiveDate)",
    "CREATE TABLE Device_Tenant (Id INTEGER PRIMARY KEY, DeviceId INTEGER NOT NULL REFERENCES Device(Id), TenantId INTEGER NOT NULL,
                                 RevCustomerId TEXT, IsActive INTEGER NOT NULL DEFAULT 1, IsDeleted INTEGER NOT NULL DEFAULT 0,
                                 ModifiedBy TEXT, ModifiedDate TEXT, UNIQUE (DeviceId, TenantId));
     CREATE TABLE DeviceActionHistory (Id INTEGER PRIMARY KEY, DeviceId INTEGER NOT NULL REFERENCES Device(Id), TenantId INTEGER NOT NULL,
                                       BulkChangeId INTEGER, Action TEXT NOT NULL, Details TEXT, ActionBy TEXT NOT NULL, ActionDate TEXT NOT NULL)",
    "CREATE TABLE Mobility_DeviceChange (
         Id INTEGER PRIMARY KEY, BulkChangeId INTEGER NOT NULL REFERENCES DeviceBulkChange(Id), TenantId INTEGER NOT NULL,
         DeviceId INTEGER REFERENCES Device(Id), ICCID TEXT NOT NULL, MSISDN TEXT, Status TEXT NOT NULL, StatusDetails TEXT,
         IsProcessed INTEGER NOT NULL DEFAULT 0, LeaseOwner TEXT, LeaseUntil TEXT, Claims INTEGER NOT NULL DEFAULT 0,
         ProcessedDate TEXT, CreatedDate TEXT NOT NULL);
     CREATE INDEX IX_Mobility_DeviceChange_Bulk_Status ON Mobility_DeviceChange (BulkChangeId, Status);
     ALTER TABLE DeviceBulkChangeLog ADD COLUMN MobilityDeviceChangeId INTEGER",
    "CREATE TABLE ThingSpaceAuthentication (
         ServiceProviderId INTEGER PRIMARY KEY REFERENCES ServiceProvider(Id), AppKey TEXT NOT NULL, AppSecret TEXT NOT NULL,
         AccountName TEXT NOT NULL, CallbackUsername TEXT NOT NULL, CallbackPassword TEXT NOT NULL,
         LoginRefusedReason TEXT, LoginRefusedDate TEXT);
     ALTER TABLE M2M_DeviceChange ADD COLUMN CarrierRequestId TEXT;
     ALTER TABLE M2M_DeviceChange ADD COLUMN CarrierRequestedAt TEXT;
     ALTER TABLE Mobility_DeviceChange ADD COLUMN CarrierRequestId TEXT;
     ALTER TABLE Mobility_DeviceChange ADD COLUMN CarrierRequestedAt TEXT;
     CREATE INDEX IX_M2M_DeviceChange_CarrierRequest ON M2M_DeviceChange (CarrierRequestId);
     CREATE INDEX IX_Mobility_DeviceChange_CarrierRequest ON Mobility_DeviceChange (CarrierRequestId);
     ALTER TABLE Device ADD COLUMN IpAddress TEXT;
     CREATE TABLE ThingSpaceCallBackResponseLog (
         Id INTEGER PRIMARY KEY, RequestId TEXT NOT NULL, ICCID TEXT, TenantId INTEGER, ServiceProviderId INTEGER,
         APIStatus TEXT NOT NULL, APIResponse TEXT NOT NULL, Outcome TEXT NOT NULL, CreatedDate TEXT NOT NULL);
     CREATE INDEX IX_ThingSpaceCallBackResponseLog_Request ON ThingSpaceCallBackResponseLog (RequestId)",
    "ALTER TABLE M2M_DeviceChange ADD COLUMN CarrierResult TEXT;
     ALTER TABLE Mobility_DeviceChange ADD COLUMN CarrierResult TEXT",
    // One open change per device and attribute (README "One change per device"): a lock row per attribute an
    // open row holds, keyed by device and attribute, released by the row tables' triggers when the row is final.
    // Open rows of an older database take every attribute (the first row of a device wins).
    "CREATE TABLE DeviceChangeLock (
         DeviceId INTEGER NOT NULL REFERENCES Device(Id), Attribute TEXT NOT NULL, BulkChangeId INTEGER NOT NULL,
         RowId INTEGER NOT NULL, ChangeRequestTypeId INTEGER NOT NULL, TenantId INTEGER NOT NULL, CreatedDate TEXT NOT NULL,
         PRIMARY KEY (DeviceId, Attribute));
     CREATE INDEX IX_DeviceChangeLock_Row ON DeviceChangeLock (BulkChangeId, RowId);
     CREATE TRIGGER TR_M2M_DeviceChange_Unlock AFTER UPDATE OF Status ON M2M_DeviceChange
     WHEN NEW.Status NOT IN ('PENDING', 'PROCESSING', 'SCHEDULED')
     BEGIN DELETE FROM DeviceChangeLock WHERE BulkChangeId = NEW.BulkChangeId AND RowId = NEW.Id; END;
     CREATE TRIGGER TR_Mobility_DeviceChange_Unlock AFTER UPDATE OF Status ON Mobility_DeviceChange
     WHEN NEW.Status NOT IN ('PENDING', 'PROCESSING', 'SCHEDULED')
     BEGIN DELETE FROM DeviceChangeLock WHERE BulkChangeId = NEW.BulkChangeId AND RowId = NEW.Id; END;
     INSERT OR IGNORE INTO DeviceChangeLock (DeviceId, Attribute, BulkChangeId, RowId, ChangeRequestTypeId, TenantId, CreatedDate)
     SELECT r.DeviceId, a.Attribute, r.BulkChangeId, r.Id, b.ChangeRequestTypeId, r.TenantId, r.CreatedDate
     FROM (SELECT Id, BulkChangeId, DeviceId, TenantId, CreatedDate, Status FROM M2M_DeviceChange
           UNION ALL SELECT Id, BulkChangeId, DeviceId, TenantId, CreatedDate, Status FROM Mobility_DeviceChange) r
     JOIN DeviceBulkChange b ON b.Id = r.BulkChangeId
     CROSS JOIN (SELECT 'Status' AS Attribute UNION ALL SELECT 'CarrierRatePlan' UNION ALL SELECT 'CustomerRatePlan'
                 UNION ALL SELECT 'Billing' UNION ALL SELECT 'Username' UNION ALL SELECT 'Identity') a
     WHERE r.Status IN ('PENDING', 'PROCESSING', 'SCHEDULED') AND r.DeviceId IS NOT NULL
     ORDER BY r.BulkChangeId, r.Id;
     CREATE UNIQUE INDEX UX_DeviceBulkChange_OpenRetry ON DeviceBulkChange (RetryOfBulkChangeId)
     WHERE RetryOfBulkChangeId IS NOT NULL AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED');
     UPDATE RevService SET IsActive = 0
     WHERE IsActive = 1 AND Id NOT IN (SELECT MAX(Id) FROM RevService WHERE IsActive = 1 GROUP BY DeviceId);
     CREATE UNIQUE INDEX UX_RevService_ActiveDevice ON RevService (DeviceId) WHERE IsActive = 1;
     CREATE TABLE RevServiceCreation (
         DeviceId INTEGER PRIMARY KEY REFERENCES Device(Id), TenantId INTEGER NOT NULL, RevCustomerId TEXT NOT NULL,
         BulkChangeId INTEGER NOT NULL, RowId INTEGER NOT NULL, Attempts INTEGER NOT NULL, StartedDate TEXT NOT NULL);
     CREATE TABLE IdempotencyKey (
         TenantId INTEGER NOT NULL, IdempotencyKey TEXT NOT NULL, RequestHash TEXT NOT NULL, BulkChangeId INTEGER,
         ResponseStatus INTEGER, ResponseBody TEXT, CreatedDate TEXT NOT NULL,
         PRIMARY KEY (TenantId, IdempotencyKey));
     CREATE INDEX IX_IdempotencyKey_Created ON IdempotencyKey (CreatedDate)",
    // The pace of each carrier account, shared by every worker: the next free call slot (Unix seconds).
    "CREATE TABLE RateBudget (
         ServiceProviderId INTEGER NOT NULL, Bucket TEXT NOT NULL, NextSlot REAL NOT NULL,
         PRIMARY KEY (ServiceProviderId, Bucket))",
    // The provider a Rev.io account gives a new service line when the request names none.
    "ALTER TABLE ServiceProvider ADD COLUMN DefaultProviderId INTEGER",
    // Teal and Pond: a carrier's wire settings (JSON), and the carrier's own ids of a rate plan.
    "ALTER TABLE ServiceProvider ADD COLUMN CarrierSettings TEXT;
     ALTER TABLE JasperCarrierRatePlan ADD COLUMN JasperRatePlanId INTEGER;
     ALTER TABLE JasperCarrierRatePlan ADD COLUMN PlanUuid TEXT",
];

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

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db("read schema version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1))
            .map_err(db("migrate schema"))?;
    }
    Ok(())
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
        conn.execute_batch(SCHEMA).map_err(db("apply schema"))?;
        migrate(&conn)?;
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

const ROW_COLUMNS: &str = "Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult";

type RawRow = (
    (i64, i64, Option<i64>, String, Option<String>),
    (String, Option<String>, i64, Option<String>, Option<String>, Option<String>, Option<String>),
);

fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
        (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?),
    ))
}

fn row_from_raw(raw: RawRow) -> Result<DeviceChangeRow, StoreError> {
    let (
        (id, bulk_change_id, device_id, iccid, msisdn),
        (status, status_details, claims, processed, request, requested, carrier_result),
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
    })
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

fn from_unix_seconds(s: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros((s * 1e6).round() as i64).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The pacing rule both stores apply (`Store::reserve_rate_slots`): from the next free slot (never before now),
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
        "SELECT Id FROM DeviceBulkChange WHERE RetryOfBulkChangeId = ?1 AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED')",
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
impl Store for SqliteStore {
    async fn service_provider(&self, tenant_id: i64, id: i64) -> StoreResult<Option<ServiceProvider>> {
        self.with(move |c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT {SP_COLUMNS} FROM {SP_FROM} WHERE sp.Id = ?1 AND sp.TenantId = ?2 AND sp.IsActive = 1"
                    ),
                    params![id, tenant_id],
                    service_provider_from_row,
                )
                .optional()
                .map_err(db("read service provider"))?;
            checked_sp(found)
        })
        .await
    }

    async fn service_provider_for(
        &self,
        tenant_id: i64,
        integration: Integration,
    ) -> StoreResult<Option<ServiceProvider>> {
        self.with(move |c| {
            let found = c
                .query_row(
                    &format!("SELECT {SP_COLUMNS} FROM {SP_FROM} WHERE sp.TenantId = ?1 AND sp.IntegrationId = ?2 AND sp.IsActive = 1 ORDER BY sp.Id LIMIT 1"),
                    params![tenant_id, integration.id()],
                    service_provider_from_row,
                )
                .optional()
                .map_err(db("read service provider by integration"))?;
            checked_sp(found)
        })
        .await
    }

    async fn device_statuses(&self, integration: Integration) -> StoreResult<Vec<DeviceStatusDef>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT Id, IntegrationId, Status, DisplayName FROM DeviceStatus WHERE IntegrationId = ?1 AND IsActive = 1 AND IsDeleted = 0 ORDER BY Id")
                .map_err(db("read device statuses"))?;
            let rows = stmt
                .query_map(params![integration.id()], |r| Ok(DeviceStatusDef { id: r.get(0)?, integration_id: r.get(1)?, status: r.get(2)?, display_name: r.get(3)? }))
                .map_err(db("read device statuses"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db("read device statuses"))
        })
        .await
    }

    async fn devices_by_iccid(&self, tenant_id: i64, iccids: &[String]) -> StoreResult<Vec<DeviceRecord>> {
        let iccids = iccids.to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM Device WHERE TenantId = ?1 AND ICCID = ?2 ORDER BY IsDeleted, Id"
                ))
                .map_err(db("read devices"))?;
            let mut out = Vec::with_capacity(iccids.len());
            for iccid in &iccids {
                let found = stmt
                    .query_row(params![tenant_id, iccid], device_from_row)
                    .optional()
                    .map_err(db("read devices"))?;
                if let Some(raw) = found {
                    out.push(finish_device(raw)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn device(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<DeviceRecord>> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM Device WHERE Id = ?1 AND TenantId = ?2"),
                params![device_id, tenant_id],
                device_from_row,
            )
            .optional()
            .map_err(db("read device"))?
            .map(finish_device)
            .transpose()
        })
        .await
    }

    async fn carrier_rate_plans(&self, tenant_id: i64, service_provider_id: i64) -> StoreResult<Vec<CarrierRatePlan>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT p.Id, p.ServiceProviderId, p.RatePlanCode, p.PlanMB, p.BaseRate, p.JasperRatePlanId, p.PlanUuid FROM JasperCarrierRatePlan p
                     JOIN ServiceProvider sp ON sp.Id = p.ServiceProviderId
                     WHERE p.ServiceProviderId = ?1 AND sp.TenantId = ?2 AND p.IsActive = 1 ORDER BY p.BaseRate, p.Id",
                )
                .map_err(db("read rate plans"))?;
            let rows = stmt
                .query_map(params![service_provider_id, tenant_id], |r| {
                    Ok(CarrierRatePlan {
                        id: r.get(0)?,
                        service_provider_id: r.get(1)?,
                        rate_plan_code: r.get(2)?,
                        plan_mb: r.get(3)?,
                        base_rate: r.get(4)?,
                        jasper_rate_plan_id: r.get(5)?,
                        plan_uuid: r.get(6)?,
                    })
                })
                .map_err(db("read rate plans"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db("read rate plans"))
        })
        .await
    }

    async fn imei_ranges(&self) -> StoreResult<Vec<ImeiRange>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT Manufacturer, Model, FromIMEI, ToIMEI, SIMType FROM IMEI_DeviceType_CarrierRatePlan
                     WHERE IsActive = 1 ORDER BY Id",
                )
                .map_err(db("read IMEI ranges"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ImeiRange {
                        manufacturer: r.get(0)?,
                        model: r.get(1)?,
                        from_imei: r.get(2)?,
                        to_imei: r.get(3)?,
                        sim_type: r.get(4)?,
                    })
                })
                .map_err(db("read IMEI ranges"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db("read IMEI ranges"))
        })
        .await
    }

    async fn rev_customer(&self, tenant_id: i64, rev_customer_id: &str) -> StoreResult<Option<RevCustomer>> {
        let rev_customer_id = rev_customer_id.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT Id, TenantId, RevCustomerId, Name FROM RevCustomer WHERE TenantId = ?1 AND RevCustomerId = ?2 AND IsActive = 1",
                params![tenant_id, rev_customer_id],
                |r| Ok(RevCustomer { id: r.get(0)?, tenant_id: r.get(1)?, rev_customer_id: r.get(2)?, name: r.get(3)? }),
            )
            .optional()
            .map_err(db("read Rev customer"))
        })
        .await
    }

    async fn active_rev_service(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<RevServiceRecord>> {
        self.with(move |c| {
            c.query_row(
                "SELECT DeviceId, RevServiceId, RevCustomerId, IsActive FROM RevService WHERE TenantId = ?1 AND DeviceId = ?2 AND IsActive = 1 ORDER BY Id DESC LIMIT 1",
                params![tenant_id, device_id],
                |r| Ok(RevServiceRecord { device_id: r.get(0)?, rev_service_id: r.get(1)?, rev_customer_id: r.get(2)?, is_active: r.get(3)? }),
            )
            .optional()
            .map_err(db("read Rev service"))
        })
        .await
    }

    async fn add_rev_service(&self, tenant_id: i64, s: &RevServiceRecord) -> StoreResult<()> {
        let s = s.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin add Rev service"))?;
            let active: Option<i64> = tx
                .query_row(
                    "SELECT RevServiceId FROM RevService WHERE DeviceId = ?1 AND TenantId = ?2 AND IsActive = 1",
                    params![s.device_id, tenant_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("read Rev service"))?;
            match active {
                Some(id) if s.is_active && id != s.rev_service_id => {
                    return Err(StoreError::Conflict(format!(
                        "device {} already has active Rev.io service {id}; service {} is not recorded",
                        s.device_id, s.rev_service_id
                    )));
                }
                Some(_) if s.is_active => {}
                _ => {
                    tx.execute(
                        "INSERT INTO RevService (TenantId, DeviceId, RevServiceId, RevCustomerId, IsActive, CreatedDate)
                         SELECT ?1, Id, ?3, ?4, ?5, ?6 FROM Device WHERE Id = ?2 AND TenantId = ?1",
                        params![tenant_id, s.device_id, s.rev_service_id, s.rev_customer_id, s.is_active, ts(Utc::now())],
                    )
                    .map_err(db("add Rev service"))?;
                }
            }
            tx.execute("DELETE FROM RevServiceCreation WHERE DeviceId = ?1 AND TenantId = ?2", params![s.device_id, tenant_id])
                .map_err(db("end Rev service creation"))?;
            tx.commit().map_err(db("commit add Rev service"))?;
            Ok(())
        })
        .await
    }

    async fn begin_rev_service(
        &self,
        tenant_id: i64,
        device_id: i64,
        rev_customer_id: &str,
        bulk_change_id: i64,
        row_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<RevServiceStart> {
        let customer = rev_customer_id.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin Rev service creation"))?;
            let active = tx
                .query_row(
                    "SELECT DeviceId, RevServiceId, RevCustomerId, IsActive FROM RevService WHERE TenantId = ?1 AND DeviceId = ?2 AND IsActive = 1",
                    params![tenant_id, device_id],
                    |r| Ok(RevServiceRecord { device_id: r.get(0)?, rev_service_id: r.get(1)?, rev_customer_id: r.get(2)?, is_active: r.get(3)? }),
                )
                .optional()
                .map_err(db("read Rev service"))?;
            if let Some(active) = active {
                return Ok(RevServiceStart::Active(active));
            }
            let held: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT BulkChangeId, RowId FROM RevServiceCreation WHERE DeviceId = ?1 AND TenantId = ?2",
                    params![device_id, tenant_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db("read Rev service creation"))?;
            let start = match held {
                None => RevServiceStart::Create { earlier_attempt: false },
                Some(owner) if owner == (bulk_change_id, row_id) => RevServiceStart::Create { earlier_attempt: true },
                Some((bulk, row)) => {
                    let open: bool = tx
                        .query_row(
                            "SELECT EXISTS (SELECT 1 FROM DeviceChangeLock WHERE BulkChangeId = ?1 AND RowId = ?2)",
                            params![bulk, row],
                            |r| r.get(0),
                        )
                        .map_err(db("read Rev service creation owner"))?;
                    if open { RevServiceStart::Busy { bulk_change_id: bulk } } else { RevServiceStart::Create { earlier_attempt: true } }
                }
            };
            if let RevServiceStart::Create { .. } = start {
                tx.execute(
                    "INSERT INTO RevServiceCreation (DeviceId, TenantId, RevCustomerId, BulkChangeId, RowId, Attempts, StartedDate)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
                     ON CONFLICT (DeviceId) DO UPDATE SET RevCustomerId = excluded.RevCustomerId, BulkChangeId = excluded.BulkChangeId,
                         RowId = excluded.RowId, Attempts = Attempts + 1, StartedDate = excluded.StartedDate",
                    params![device_id, tenant_id, customer, bulk_change_id, row_id, ts(now)],
                )
                .map_err(db("begin Rev service creation"))?;
            }
            tx.commit().map_err(db("commit Rev service creation"))?;
            Ok(start)
        })
        .await
    }

    async fn abandon_rev_service(&self, device_id: i64, bulk_change_id: i64, row_id: i64) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "DELETE FROM RevServiceCreation WHERE DeviceId = ?1 AND BulkChangeId = ?2 AND RowId = ?3",
                params![device_id, bulk_change_id, row_id],
            )
            .map_err(db("abandon Rev service creation"))?;
            Ok(())
        })
        .await
    }

    async fn create_bulk_change(&self, change: &NewBulkChange, rows: &[NewRow]) -> StoreResult<CreatedBulkChange> {
        let change = change.clone();
        let rows = rows.to_vec();
        self.with(move |c| {
            let now = ts(Utc::now());
            let request = serde_json::to_string(&change.request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin create bulk change"))?;
            if let Some(original) = change.retry_of {
                if let Some(open) = open_retry(&tx, original)? {
                    return Err(StoreError::Conflict(format!(
                        "bulk change {original} already has an open retry: bulk change {open}; wait for it to finish"
                    )));
                }
            }
            tx.execute(
                "INSERT INTO DeviceBulkChange (TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId, Status, ChangeRequest, CreatedBy, CreatedDate, ModifiedDate, RetryOfBulkChangeId)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'NEW', ?6, ?7, ?8, ?8, ?9)",
                params![change.tenant_id, change.service_provider_id, change.integration.id(), change.change_type.number(), i64::from(change.portal_type), request, change.created_by, now, change.retry_of],
            )
            .map_err(|e| match (e.sqlite_error_code(), change.retry_of) {
                // The unique index over open retries decides when the check above raced (another connection).
                (Some(rusqlite::ErrorCode::ConstraintViolation), Some(original)) => {
                    StoreError::Conflict(format!("bulk change {original} already has an open retry; wait for it to finish"))
                }
                _ => db("insert bulk change")(e),
            })?;
            let id = tx.last_insert_rowid();
            if let Some(original) = change.retry_of {
                // A retry takes only devices no other retry of the same bulk change took: the API read its
                // candidates before this transaction, and an earlier retry may have been created (and finished) since.
                let mut taken = tx
                    .prepare_cached(
                        "SELECT b.Id FROM DeviceBulkChange b JOIN M2M_DeviceChange r ON r.BulkChangeId = b.Id
                         WHERE b.RetryOfBulkChangeId = ?1 AND b.Id <> ?2 AND r.ICCID = ?3
                         UNION ALL
                         SELECT b.Id FROM DeviceBulkChange b JOIN Mobility_DeviceChange r ON r.BulkChangeId = b.Id
                         WHERE b.RetryOfBulkChangeId = ?1 AND b.Id <> ?2 AND r.ICCID = ?3 LIMIT 1",
                    )
                    .map_err(db("read earlier retries"))?;
                for row in &rows {
                    let by: Option<i64> = taken
                        .query_row(params![original, id, row.iccid], |r| r.get(0))
                        .optional()
                        .map_err(db("read earlier retries"))?;
                    if let Some(by) = by {
                        return Err(StoreError::Conflict(format!(
                            "bulk change {original} was already retried by bulk change {by} for these devices; retry that one"
                        )));
                    }
                }
            }
            // By name, so the holder a conflict names is the one SQL Server's procedure names too.
            let mut attributes = change.attributes.clone();
            attributes.sort_by_key(|a| a.as_str());
            attributes.dedup();
            let mut conflicts = Vec::new();
            {
                let table = row_table_of(i64::from(change.portal_type));
                let mut insert_row = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (BulkChangeId, TenantId, DeviceId, ICCID, MSISDN, Status, StatusDetails, IsProcessed, ProcessedDate, CreatedDate)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                    ))
                    .map_err(db("insert rows"))?;
                let mut lock = tx
                    .prepare_cached(
                        "INSERT INTO DeviceChangeLock (DeviceId, Attribute, BulkChangeId, RowId, ChangeRequestTypeId, TenantId, CreatedDate)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (DeviceId, Attribute) DO NOTHING",
                    )
                    .map_err(db("lock device"))?;
                let mut holder = tx
                    .prepare_cached("SELECT BulkChangeId, ChangeRequestTypeId FROM DeviceChangeLock WHERE DeviceId = ?1 AND Attribute = ?2")
                    .map_err(db("read device lock"))?;
                for row in &rows {
                    let is_final = row.status.is_final();
                    insert_row
                        .execute(params![id, change.tenant_id, row.device_id, row.iccid, row.msisdn, row.status.as_str(), row.status_details, is_final, is_final.then_some(&now), now])
                        .map_err(db("insert rows"))?;
                    let row_id = tx.last_insert_rowid();
                    let Some(device_id) = row.device_id.filter(|_| !is_final) else { continue };
                    let mut refused = None;
                    for attribute in &attributes {
                        let taken = lock
                            .execute(params![device_id, attribute.as_str(), id, row_id, change.change_type.number(), change.tenant_id, now])
                            .map_err(db("lock device"))?;
                        if taken == 0 {
                            let (bulk, kind): (i64, i64) = holder
                                .query_row(params![device_id, attribute.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                                .map_err(db("read device lock"))?;
                            refused = Some(holder_reason(&row.iccid, bulk, kind)?);
                            break;
                        }
                    }
                    if let Some(reason) = refused {
                        // The status trigger releases the locks this row took before it met the conflict.
                        tx.execute(
                            &format!("UPDATE {table} SET Status = 'ERROR', StatusDetails = ?2, IsProcessed = 1, ProcessedDate = ?3 WHERE Id = ?1"),
                            params![row_id, reason, now],
                        )
                        .map_err(db("refuse conflicting row"))?;
                        conflicts.push(RowConflict { iccid: row.iccid.clone(), reason });
                        continue;
                    }
                    if let Some(plan) = &row.scheduled {
                        tx.execute(
                            "INSERT INTO Device_CustomerRatePlanOrRatePool_Queue (DeviceId, M2MDeviceChangeId, BulkChangeId, CustomerRatePlanId,
                                    CustomerRatePoolId, CustomerDataAllocationMB, EffectiveDate, PortalType, TenantId, CreatedBy, CreatedDate)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                            params![
                                device_id,
                                row_id,
                                id,
                                plan.change.customer_rate_plan_id,
                                plan.change.customer_rate_pool_id,
                                plan.change.data_allocation_mb,
                                ts(plan.effective_date),
                                i64::from(change.portal_type),
                                change.tenant_id,
                                change.created_by,
                                now
                            ],
                        )
                        .map_err(db("queue scheduled row"))?;
                    }
                }
            }
            if let Some(key) = &change.idempotency_key {
                tx.execute(
                    "UPDATE IdempotencyKey SET BulkChangeId = ?3 WHERE TenantId = ?1 AND IdempotencyKey = ?2",
                    params![change.tenant_id, key, id],
                )
                .map_err(db("record idempotency key"))?;
            }
            tx.commit().map_err(db("commit bulk change"))?;
            Ok(CreatedBulkChange { id, conflicts })
        })
        .await
    }

    async fn open_changes(&self, tenant_id: i64, device_ids: &[i64]) -> StoreResult<Vec<OpenChange>> {
        let device_ids = device_ids.to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT DeviceId, Attribute, BulkChangeId, ChangeRequestTypeId FROM DeviceChangeLock
                     WHERE DeviceId = ?1 AND TenantId = ?2 ORDER BY Attribute",
                )
                .map_err(db("read open changes"))?;
            let mut out = Vec::new();
            for device_id in device_ids {
                let raws = stmt
                    .query_map(params![device_id, tenant_id], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
                    })
                    .map_err(db("read open changes"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("read open changes"))?;
                for (device_id, attribute, bulk_change_id, kind) in raws {
                    out.push(OpenChange {
                        device_id,
                        attribute: DeviceAttribute::parse(&attribute)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown locked attribute {attribute}")))?,
                        bulk_change_id,
                        change_type: ChangeType::from_number(kind)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown change type {kind}")))?,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn retry_candidates(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<String>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT r.ICCID FROM {table} r
                     WHERE r.BulkChangeId = ?1 AND r.TenantId = ?2 AND r.Status IN ('API_FAILED', 'ERROR')
                       AND NOT EXISTS (SELECT 1 FROM DeviceBulkChange b JOIN M2M_DeviceChange l ON l.BulkChangeId = b.Id
                                       WHERE b.RetryOfBulkChangeId = ?1 AND b.TenantId = ?2 AND l.ICCID = r.ICCID)
                       AND NOT EXISTS (SELECT 1 FROM DeviceBulkChange b JOIN Mobility_DeviceChange l ON l.BulkChangeId = b.Id
                                       WHERE b.RetryOfBulkChangeId = ?1 AND b.TenantId = ?2 AND l.ICCID = r.ICCID)
                     ORDER BY r.Id"
                ))
                .map_err(db("read retry candidates"))?;
            stmt.query_map(params![bulk_change_id, tenant_id], |r| r.get(0))
                .map_err(db("read retry candidates"))?
                .collect::<Result<Vec<String>, _>>()
                .map_err(db("read retry candidates"))
        })
        .await
    }

    async fn begin_idempotent(
        &self,
        tenant_id: i64,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart> {
        let (key, hash) = (key.to_string(), request_hash.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin idempotency"))?;
            type Raw = (String, Option<i64>, Option<i64>, Option<String>, String);
            let found: Option<Raw> = tx
                .query_row(
                    "SELECT RequestHash, BulkChangeId, ResponseStatus, ResponseBody, CreatedDate FROM IdempotencyKey WHERE TenantId = ?1 AND IdempotencyKey = ?2",
                    params![tenant_id, key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(db("read idempotency key"))?;
            let start = match found {
                Some((stored_hash, bulk, status, body, created)) if created >= ts(expired_before) => {
                    let created_at = parse_ts(&created)?;
                    match (status, body) {
                        _ if stored_hash != hash => IdempotencyStart::Mismatch,
                        (Some(status), Some(body)) => {
                            IdempotencyStart::Replay { status: u16::try_from(status).unwrap_or(500), body }
                        }
                        _ if bulk.is_none() && created_at < stale_before => IdempotencyStart::New,
                        _ => IdempotencyStart::InProgress { bulk_change_id: bulk, since: created_at },
                    }
                }
                _ => IdempotencyStart::New,
            };
            if start == IdempotencyStart::New {
                tx.execute(
                    "INSERT INTO IdempotencyKey (TenantId, IdempotencyKey, RequestHash, CreatedDate) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (TenantId, IdempotencyKey) DO UPDATE SET RequestHash = excluded.RequestHash, BulkChangeId = NULL,
                         ResponseStatus = NULL, ResponseBody = NULL, CreatedDate = excluded.CreatedDate",
                    params![tenant_id, key, hash, ts(now)],
                )
                .map_err(db("reserve idempotency key"))?;
            }
            tx.commit().map_err(db("commit idempotency"))?;
            Ok(start)
        })
        .await
    }

    async fn finish_idempotent(&self, tenant_id: i64, key: &str, status: u16, body: &str) -> StoreResult<()> {
        let (key, body) = (key.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE IdempotencyKey SET ResponseStatus = ?3, ResponseBody = ?4 WHERE TenantId = ?1 AND IdempotencyKey = ?2",
                params![tenant_id, key, status, body],
            )
            .map_err(db("keep idempotent answer"))?;
            Ok(())
        })
        .await
    }

    async fn abandon_idempotent(&self, tenant_id: i64, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.with(move |c| {
            c.execute(
                "DELETE FROM IdempotencyKey WHERE TenantId = ?1 AND IdempotencyKey = ?2 AND BulkChangeId IS NULL AND ResponseStatus IS NULL",
                params![tenant_id, key],
            )
            .map_err(db("free idempotency key"))?;
            Ok(())
        })
        .await
    }

    async fn reserve_rate_slots(
        &self,
        service_provider_id: i64,
        bucket: &str,
        interval: Duration,
        count: u32,
        horizon: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<RateSlots> {
        let bucket = bucket.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin rate"))?;
            let now_s = unix_seconds(now);
            let stored: Option<f64> = tx
                .query_row(
                    "SELECT NextSlot FROM RateBudget WHERE ServiceProviderId = ?1 AND Bucket = ?2",
                    params![service_provider_id, bucket],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("read rate budget"))?;
            let (first, granted, next) = pace(stored, now_s, interval, count, horizon);
            if granted > 0 {
                tx.execute(
                    "INSERT INTO RateBudget (ServiceProviderId, Bucket, NextSlot) VALUES (?1, ?2, ?3)
                     ON CONFLICT (ServiceProviderId, Bucket) DO UPDATE SET NextSlot = excluded.NextSlot",
                    params![service_provider_id, bucket, next],
                )
                .map_err(db("book rate slots"))?;
            }
            tx.commit().map_err(db("commit rate"))?;
            Ok(RateSlots { first: from_unix_seconds(first), granted, interval })
        })
        .await
    }

    async fn renew_leases(&self, bulk_change_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<u64> {
        let worker = worker.to_string();
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            c.execute(
                &format!(
                    "UPDATE {table} SET LeaseUntil = ?3
                     WHERE BulkChangeId = ?1 AND LeaseOwner = ?2 AND Status = 'PROCESSING' AND LeaseUntil < ?3"
                ),
                params![bulk_change_id, worker, ts(until)],
            )
            .map_err(db("renew leases"))?;
            let held: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND LeaseOwner = ?2 AND Status = 'PROCESSING'"),
                    params![bulk_change_id, worker],
                    |r| r.get(0),
                )
                .map_err(db("count held rows"))?;
            Ok(held as u64)
        })
        .await
    }

    async fn pending_rows(&self, bulk_change_id: i64) -> StoreResult<u64> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let n: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND Status = 'PENDING'"),
                    params![bulk_change_id],
                    |r| r.get(0),
                )
                .map_err(db("count pending rows"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM IdempotencyKey WHERE CreatedDate < ?1", params![ts(before)])
                .map_err(db("purge idempotency keys"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn bulk_change(&self, tenant_id: Option<i64>, id: i64) -> StoreResult<Option<BulkChange>> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {BULK_COLUMNS} FROM DeviceBulkChange WHERE Id = ?1 AND (?2 IS NULL OR TenantId = ?2)"),
                params![id, tenant_id],
                raw_bulk,
            )
            .optional()
            .map_err(db("read bulk change"))?
            .map(bulk_from_raw)
            .transpose()
        })
        .await
    }

    async fn list_bulk_changes(
        &self,
        tenant_id: i64,
        filter: &BulkChangeFilter,
        page: u32,
        page_size: u32,
    ) -> StoreResult<(Vec<BulkChange>, i64)> {
        let status = filter.status.map(|s| s.as_str().to_string());
        let change_type = filter.change_type.map(ChangeType::number);
        self.with(move |c| {
            let filter_sql =
                "TenantId = ?1 AND (?2 IS NULL OR Status = ?2) AND (?3 IS NULL OR ChangeRequestTypeId = ?3)";
            let total: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM DeviceBulkChange WHERE {filter_sql}"),
                    params![tenant_id, status, change_type],
                    |r| r.get(0),
                )
                .map_err(db("count bulk changes"))?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {BULK_COLUMNS} FROM DeviceBulkChange WHERE {filter_sql} ORDER BY Id DESC LIMIT ?4 OFFSET ?5"
                ))
                .map_err(db("list bulk changes"))?;
            let offset = i64::from(page.max(1) - 1) * i64::from(page_size);
            let raws = stmt
                .query_map(params![tenant_id, status, change_type, page_size, offset], raw_bulk)
                .map_err(db("list bulk changes"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("list bulk changes"))?;
            Ok((raws.into_iter().map(bulk_from_raw).collect::<Result<Vec<_>, _>>()?, total))
        })
        .await
    }

    async fn row_counts(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<StatusCount>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let mut stmt = c
                .prepare_cached(&format!("SELECT Status, COUNT(*) FROM {table} WHERE BulkChangeId = ?1 AND TenantId = ?2 GROUP BY Status ORDER BY Status"))
                .map_err(db("count rows"))?;
            let raws = stmt
                .query_map(params![bulk_change_id, tenant_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db("count rows"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("count rows"))?;
            raws.into_iter()
                .map(|(s, count)| Ok(StatusCount { status: RowStatus::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown row status {s}")))?, count }))
                .collect()
        })
        .await
    }

    async fn rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        page: u32,
        page_size: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let offset = i64::from(page.max(1) - 1) * i64::from(page_size);
        self.read_rows(tenant_id, bulk_change_id, status, 0, page_size, offset).await
    }

    async fn rows_after(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        self.read_rows(tenant_id, bulk_change_id, status, after_id, limit, 0).await
    }

    async fn logs(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<LogEntry>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT l.BulkChangeId, COALESCE(l.M2MDeviceChangeId, l.MobilityDeviceChangeId), l.LogEntryDescription, l.RequestText, l.ResponseText, l.ResponseStatus, l.HasErrors, l.ErrorText, l.ProcessedDate
                     FROM DeviceBulkChangeLog l JOIN DeviceBulkChange b ON b.Id = l.BulkChangeId
                     WHERE l.BulkChangeId = ?1 AND b.TenantId = ?2 ORDER BY l.Id",
                )
                .map_err(db("read logs"))?;
            let raws = stmt
                .query_map(params![bulk_change_id, tenant_id], |r| {
                    Ok((
                        LogEntry {
                            bulk_change_id: r.get(0)?,
                            device_change_id: r.get(1)?,
                            description: r.get(2)?,
                            request_text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            response_text: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            response_status: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                            has_errors: r.get(6)?,
                            error_text: r.get(7)?,
                            processed_date: DateTime::<Utc>::MIN_UTC,
                        },
                        r.get::<_, String>(8)?,
                    ))
                })
                .map_err(db("read logs"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read logs"))?;
            raws.into_iter()
                .map(|(mut e, t)| {
                    e.processed_date = parse_ts(&t)?;
                    Ok(e)
                })
                .collect()
        })
        .await
    }

    async fn mark_processing(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE DeviceBulkChange SET Status = 'PROCESSING', ModifiedDate = ?2 WHERE Id = ?1 AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED')",
                params![bulk_change_id, ts(now)],
            )
            .map_err(db("mark processing"))?;
            Ok(())
        })
        .await
    }

    async fn claim_rows(
        &self,
        bulk_change_id: i64,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let worker = worker.to_string();
        self.with(move |c| {
            let until = ts(now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(5)));
            let now = ts(now);
            let tx =
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin claim"))?;
            let table = row_table(&tx, bulk_change_id)?;
            let raws = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE {table} SET Status = 'PROCESSING', LeaseOwner = ?1, LeaseUntil = ?2, Claims = Claims + 1
                         WHERE Id IN (SELECT Id FROM {table} WHERE BulkChangeId = ?3
                                      AND (Status = 'PENDING' OR (Status = 'PROCESSING' AND LeaseUntil < ?4))
                                      ORDER BY Status = 'PENDING', Id LIMIT ?5)
                         RETURNING {ROW_COLUMNS}"
                    ))
                    .map_err(db("claim rows"))?;
                stmt.query_map(params![worker, until, bulk_change_id, now, limit], raw_row)
                    .map_err(db("claim rows"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("claim rows"))?
            };
            let mut rows = raws.into_iter().map(row_from_raw).collect::<Result<Vec<_>, _>>()?;
            if !rows.is_empty() {
                tx.execute("UPDATE DeviceBulkChange SET ModifiedDate = ?2 WHERE Id = ?1", params![bulk_change_id, now])
                    .map_err(db("touch bulk change"))?;
                // Each row's device, read with the claim so the processor needs no request of its own for it.
                let mut read = tx
                    .prepare_cached(&format!(
                        "SELECT {DEVICE_COLUMNS} FROM Device
                         WHERE Id = ?1 AND TenantId = (SELECT TenantId FROM DeviceBulkChange WHERE Id = ?2)"
                    ))
                    .map_err(db("read claimed devices"))?;
                for row in &mut rows {
                    if let Some(device_id) = row.device_id {
                        row.device = read
                            .query_row(params![device_id, bulk_change_id], device_from_row)
                            .optional()
                            .map_err(db("read claimed devices"))?
                            .map(finish_device)
                            .transpose()?;
                    }
                }
            }
            tx.commit().map_err(db("commit claim"))?;
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
        .await
    }

    async fn append_log(&self, e: &LogEntry) -> StoreResult<()> {
        self.append_logs(std::slice::from_ref(e)).await
    }

    async fn append_logs(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(db("begin append log"))?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO DeviceBulkChangeLog (BulkChangeId, M2MDeviceChangeId, MobilityDeviceChangeId, LogEntryDescription, RequestText, ResponseText, ResponseStatus, HasErrors, ErrorText, ProcessBy, ProcessedDate)
                         SELECT ?1, CASE WHEN b.PortalTypeId = 2 THEN NULL ELSE ?2 END, CASE WHEN b.PortalTypeId = 2 THEN ?2 END, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
                         FROM DeviceBulkChange b WHERE b.Id = ?1",
                    )
                    .map_err(db("append log"))?;
                for e in &entries {
                    insert
                        .execute(params![e.bulk_change_id, e.device_change_id, e.description, e.request_text, e.response_text, e.response_status, e.has_errors, e.error_text, PROCESSED_BY, ts(e.processed_date)])
                        .map_err(db("append log"))?;
                }
            }
            tx.commit().map_err(db("commit append log"))?;
            Ok(())
        })
        .await
    }

    async fn complete_row(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        outcome: &RowOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let c =
            Completion { tenant_id, bulk_change_id, row_id, worker: worker.to_string(), outcome: outcome.clone(), now };
        self.complete_rows(std::slice::from_ref(&c)).await.map(|done| done.first().copied().unwrap_or(false))
    }

    async fn complete_rows(&self, rows: &[Completion]) -> StoreResult<Vec<bool>> {
        let rows = rows.to_vec();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db("begin complete row"))?;
            let done = rows.iter().map(|r| complete_in(&tx, r)).collect::<Result<Vec<bool>, StoreError>>()?;
            tx.commit().map_err(db("commit complete row"))?;
            Ok(done)
        })
        .await
    }

    async fn finalize_bulk_change(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<Option<BulkStatus>> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin finalize"))?;
            let table = row_table(&tx, bulk_change_id)?;
            let statuses = {
                let mut stmt =
                    tx.prepare_cached(&format!("SELECT DISTINCT Status FROM {table} WHERE BulkChangeId = ?1")).map_err(db("finalize"))?;
                stmt.query_map(params![bulk_change_id], |r| r.get::<_, String>(0))
                    .map_err(db("finalize"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("finalize"))?
            };
            let statuses = statuses
                .iter()
                .map(|s| RowStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown row status {s}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let Some(status) = bulk_status_from_rows(statuses) else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE DeviceBulkChange SET Status = ?2, ProcessedDate = CASE WHEN ?3 THEN ?4 ELSE ProcessedDate END, ModifiedDate = ?4
                 WHERE Id = ?1 AND Status NOT IN ('PROCESSED', 'ERROR', 'CANCELLED')",
                params![bulk_change_id, status.as_str(), status.is_final(), ts(now)],
            )
            .map_err(db("finalize"))?;
            let current: String = tx.query_row("SELECT Status FROM DeviceBulkChange WHERE Id = ?1", params![bulk_change_id], |r| r.get(0)).map_err(db("finalize"))?;
            tx.commit().map_err(db("commit finalize"))?;
            BulkStatus::parse(&current).map(Some).ok_or_else(|| StoreError::Corrupt(format!("unknown bulk status {current}")))
        })
        .await
    }

    async fn claim_notification(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        self.with(move |c| {
            let n = c
                .execute("UPDATE DeviceBulkChange SET NotificationSentDate = ?2 WHERE Id = ?1 AND NotificationSentDate IS NULL", params![bulk_change_id, ts(now)])
                .map_err(db("claim notification"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_notification(&self, bulk_change_id: i64) -> StoreResult<()> {
        self.with(move |c| {
            c.execute("UPDATE DeviceBulkChange SET NotificationSentDate = NULL WHERE Id = ?1", params![bulk_change_id])
                .map_err(db("release notification"))?;
            Ok(())
        })
        .await
    }

    async fn stranded_bulk_changes(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT b.Id FROM DeviceBulkChange b
                     WHERE b.Status IN ('NEW', 'PROCESSING') AND b.ModifiedDate < ?1
                       AND NOT EXISTS (SELECT 1 FROM M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = 'PROCESSING' AND r.LeaseUntil >= ?2)
                       AND NOT EXISTS (SELECT 1 FROM Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = 'PROCESSING' AND r.LeaseUntil >= ?2)
                     ORDER BY b.Id",
                )
                .map_err(db("find stranded"))?;
            stmt.query_map(params![ts(before), ts(now)], |r| r.get(0))
                .map_err(db("find stranded"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("find stranded"))
        })
        .await
    }

    async fn cancel_rows(&self, tenant_id: i64, bulk_change_id: i64, by: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let details = format!("Cancelled by {by}");
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let n = c
                .execute(
                    &format!(
                        "UPDATE {table} SET Status = 'CANCELLED', StatusDetails = ?3, IsProcessed = 1, ProcessedDate = ?4,
                                LeaseOwner = NULL, LeaseUntil = NULL
                         WHERE BulkChangeId = ?1 AND TenantId = ?2 AND Status IN ('PENDING', 'SCHEDULED')"
                    ),
                    params![bulk_change_id, tenant_id, details, ts(now)],
                )
                .map_err(db("cancel rows"))?;
            c.execute(
                &format!(
                    "UPDATE Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedDate = ?3
                     WHERE BulkChangeId = ?1 AND TenantId = ?2 AND IsActive = 1
                       AND M2MDeviceChangeId IN (SELECT Id FROM {table} WHERE BulkChangeId = ?1 AND Status = 'CANCELLED')"
                ),
                params![bulk_change_id, tenant_id, ts(now)],
            )
            .map_err(db("cancel queued changes"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn rev_customers(&self, tenant_id: i64) -> StoreResult<Vec<RevCustomer>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT Id, TenantId, RevCustomerId, Name FROM RevCustomer WHERE TenantId = ?1 AND IsActive = 1 ORDER BY Name, Id",
                )
                .map_err(db("list Rev customers"))?;
            stmt.query_map(params![tenant_id], |r| {
                Ok(RevCustomer { id: r.get(0)?, tenant_id: r.get(1)?, rev_customer_id: r.get(2)?, name: r.get(3)? })
            })
            .map_err(db("list Rev customers"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("list Rev customers"))
        })
        .await
    }

    async fn device_history(&self, tenant_id: i64, device_id: i64, limit: u32) -> StoreResult<Vec<DeviceHistoryEntry>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT r.BulkChangeId, b.ChangeRequestTypeId, r.Status, r.StatusDetails, b.CreatedBy, b.CreatedDate, r.ProcessedDate
                     FROM (SELECT BulkChangeId, Status, StatusDetails, ProcessedDate, DeviceId, TenantId FROM M2M_DeviceChange
                           UNION ALL
                           SELECT BulkChangeId, Status, StatusDetails, ProcessedDate, DeviceId, TenantId FROM Mobility_DeviceChange) r
                     JOIN DeviceBulkChange b ON b.Id = r.BulkChangeId
                     WHERE r.DeviceId = ?1 AND r.TenantId = ?2 AND b.TenantId = ?2
                     ORDER BY b.Id DESC LIMIT ?3",
                )
                .map_err(db("device history"))?;
            let raws = stmt
                .query_map(params![device_id, tenant_id, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(db("device history"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("device history"))?;
            raws.into_iter()
                .map(|(bulk_change_id, change_type, status, status_details, created_by, created, processed)| {
                    Ok(DeviceHistoryEntry {
                        bulk_change_id,
                        change_type: ChangeType::from_number(change_type)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown change type {change_type}")))?,
                        status: RowStatus::parse(&status)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown row status {status}")))?,
                        status_details,
                        created_by,
                        created_date: parse_ts(&created)?,
                        processed_date: opt_ts(processed)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn customer_rate_plan(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        self.with(move |c| {
            c.query_row(
                "SELECT Id, Name FROM CustomerRatePlan WHERE Id = ?1 AND TenantId = ?2 AND IsActive = 1",
                params![id, tenant_id],
                |r| Ok(CustomerPlanRef { id: r.get(0)?, name: r.get(1)? }),
            )
            .optional()
            .map_err(db("read customer rate plan"))
        })
        .await
    }

    async fn customer_rate_pool(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        self.with(move |c| {
            c.query_row(
                "SELECT Id, Name FROM CustomerRatePool WHERE Id = ?1 AND TenantId = ?2 AND IsActive = 1",
                params![id, tenant_id],
                |r| Ok(CustomerPlanRef { id: r.get(0)?, name: r.get(1)? }),
            )
            .optional()
            .map_err(db("read customer rate pool"))
        })
        .await
    }

    async fn list_devices(
        &self,
        tenant_id: i64,
        filter: &DeviceFilter,
        after_id: i64,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<DeviceListItem>> {
        let filter = filter.clone();
        self.with(move |c| {
            let columns = DEVICE_COLUMNS.split(", ").map(|col| format!("d.{col}")).collect::<Vec<_>>().join(", ");
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {columns}, s.Status, s.DisplayName FROM Device d LEFT JOIN DeviceStatus s ON s.Id = d.DeviceStatusId
                     WHERE d.TenantId = ?1 AND d.IsDeleted = 0 AND d.Id > ?2 {DEVICE_FILTER}
                     ORDER BY d.Id LIMIT ?7 OFFSET ?8"
                ))
                .map_err(db("list devices"))?;
            let text = filter.text.as_deref().map(like_pattern);
            // The status code and display name follow the device's columns.
            let n = DEVICE_COLUMNS.split(", ").count();
            let raws = stmt
                .query_map(
                    params![tenant_id, after_id, filter.status, filter.carrier_rate_plan, filter.rev_customer_id, text, limit, offset],
                    |r| Ok((device_from_row(r)?, r.get::<_, Option<String>>(n)?, r.get::<_, Option<String>>(n + 1)?)),
                )
                .map_err(db("list devices"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("list devices"))?;
            raws.into_iter()
                .map(|(raw, status, status_display_name)| Ok(DeviceListItem { device: finish_device(raw)?, status, status_display_name }))
                .collect()
        })
        .await
    }

    async fn count_devices(&self, tenant_id: i64, filter: &DeviceFilter) -> StoreResult<i64> {
        let filter = filter.clone();
        self.with(move |c| {
            let text = filter.text.as_deref().map(like_pattern);
            c.query_row(
                &format!(
                    "SELECT COUNT(*) FROM Device d LEFT JOIN DeviceStatus s ON s.Id = d.DeviceStatusId
                     WHERE d.TenantId = ?1 AND d.IsDeleted = 0 AND d.Id > ?2 {DEVICE_FILTER}"
                ),
                params![tenant_id, 0, filter.status, filter.carrier_rate_plan, filter.rev_customer_id, text],
                |r| r.get(0),
            )
            .map_err(db("count devices"))
        })
        .await
    }

    async fn release_due_scheduled_rows(&self, now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        self.with(move |c| {
            let now = ts(now);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin release"))?;
            let mut bulk_ids: Vec<i64> = Vec::new();
            for (portal, table) in [(0, ROW_TABLES[0]), (2, ROW_TABLES[1])] {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE {table} SET Status = 'PENDING'
                         WHERE Status = 'SCHEDULED' AND Id IN (SELECT M2MDeviceChangeId FROM Device_CustomerRatePlanOrRatePool_Queue
                                                               WHERE IsActive = 1 AND EffectiveDate <= ?1 AND PortalType = ?2)
                         RETURNING BulkChangeId"
                    ))
                    .map_err(db("release scheduled rows"))?;
                let released = stmt
                    .query_map(params![now, portal], |r| r.get(0))
                    .map_err(db("release scheduled rows"))?
                    .collect::<Result<Vec<i64>, _>>()
                    .map_err(db("release scheduled rows"))?;
                bulk_ids.extend(released);
            }
            bulk_ids.sort_unstable();
            bulk_ids.dedup();
            for id in &bulk_ids {
                tx.execute(
                    "UPDATE DeviceBulkChange SET Status = 'PROCESSING', ModifiedDate = ?2 WHERE Id = ?1 AND Status = 'SCHEDULED'",
                    params![id, now],
                )
                .map_err(db("reopen bulk change"))?;
            }
            tx.commit().map_err(db("commit release"))?;
            Ok(bulk_ids)
        })
        .await
    }

    async fn await_carrier(
        &self,
        bulk_change_id: i64,
        row_ids: &[i64],
        worker: &str,
        request_id: &str,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (row_ids, worker, request_id) = (row_ids.to_vec(), worker.to_string(), request_id.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin await carrier"))?;
            let table = row_table(&tx, bulk_change_id)?;
            let mut changed = 0;
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE {table} SET CarrierRequestId = ?1, CarrierRequestedAt = COALESCE(CarrierRequestedAt, ?2),
                                LeaseUntil = CASE WHEN LeaseOwner = 'carrier:' || ?1 THEN MIN(LeaseUntil, ?3) ELSE ?3 END,
                                LeaseOwner = 'carrier:' || ?1
                         WHERE Id = ?4 AND BulkChangeId = ?5 AND LeaseOwner = ?6 AND Status = 'PROCESSING'"
                    ))
                    .map_err(db("await carrier"))?;
                for id in row_ids {
                    changed += stmt
                        .execute(params![request_id, ts(now), ts(deadline), id, bulk_change_id, worker])
                        .map_err(db("await carrier"))? as u64;
                }
            }
            tx.commit().map_err(db("commit await carrier"))?;
            Ok(changed)
        })
        .await
    }

    async fn carrier_request_rows(
        &self,
        service_provider_ids: &[i64],
        request_id: &str,
        iccid: Option<&str>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let (sps, request_id, iccid) =
            (service_provider_ids.to_vec(), request_id.to_string(), iccid.map(str::to_string));
        self.with(move |c| {
            let mut rows = Vec::new();
            for table in ROW_TABLES {
                let columns = ROW_COLUMNS.split(", ").map(|col| format!("r.{col}")).collect::<Vec<_>>().join(", ");
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM {table} r JOIN DeviceBulkChange b ON b.Id = r.BulkChangeId
                         WHERE r.CarrierRequestId = ?1 AND b.ServiceProviderId = ?2 AND (?3 IS NULL OR r.ICCID = ?3) ORDER BY r.Id"
                    ))
                    .map_err(db("read carrier request rows"))?;
                for sp in &sps {
                    let raws = stmt
                        .query_map(params![request_id, sp, iccid], raw_row)
                        .map_err(db("read carrier request rows"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db("read carrier request rows"))?;
                    for raw in raws {
                        rows.push(row_from_raw(raw)?);
                    }
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn hand_back_with_result(
        &self,
        bulk_change_id: i64,
        row_id: i64,
        owner: &str,
        result: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (owner, result) = (owner.to_string(), result.to_string());
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let changed = c
                .execute(
                    &format!(
                        "UPDATE {table} SET CarrierResult = ?1, LeaseOwner = 'result', LeaseUntil = ?2
                         WHERE Id = ?3 AND BulkChangeId = ?4 AND LeaseOwner = ?5 AND Status = 'PROCESSING'"
                    ),
                    params![result, ts(now), row_id, bulk_change_id, owner],
                )
                .map_err(db("hand back row"))?;
            Ok(changed == 1)
        })
        .await
    }

    async fn providers_of(&self, integration: Integration) -> StoreResult<Vec<ServiceProvider>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SP_COLUMNS} FROM {SP_FROM} WHERE sp.IntegrationId = ?1 AND sp.IsActive = 1 ORDER BY sp.Id"
                ))
                .map_err(db("read providers"))?;
            let found = stmt
                .query_map(params![integration.id()], service_provider_from_row)
                .map_err(db("read providers"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read providers"))?;
            found
                .into_iter()
                .map(|f| checked_sp(Some(f)).map(|sp| sp.into_iter()))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.into_iter().flatten().collect())
        })
        .await
    }

    async fn wake_carrier_request(
        &self,
        service_provider_id: i64,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        let owner = format!("carrier:{request_id}");
        self.with(move |c| {
            let mut woken = std::collections::BTreeSet::new();
            for table in ROW_TABLES {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "UPDATE {table} SET LeaseUntil = ?1
                         WHERE LeaseOwner = ?2 AND Status = 'PROCESSING' AND LeaseUntil > ?1
                           AND BulkChangeId IN (SELECT Id FROM DeviceBulkChange WHERE ServiceProviderId = ?3)
                         RETURNING BulkChangeId"
                    ))
                    .map_err(db("wake carrier request"))?;
                let ids = stmt
                    .query_map(params![ts(now), owner, service_provider_id], |r| r.get::<_, i64>(0))
                    .map_err(db("wake carrier request"))?;
                for id in ids {
                    woken.insert(id.map_err(db("wake carrier request"))?);
                }
            }
            Ok(woken.into_iter().collect())
        })
        .await
    }

    async fn record_callback(&self, cb: &CallbackRecord) -> StoreResult<()> {
        let cb = cb.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO ThingSpaceCallBackResponseLog (RequestId, ICCID, TenantId, ServiceProviderId, APIStatus, APIResponse, Outcome, CreatedDate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![cb.request_id, cb.iccid, cb.tenant_id, cb.service_provider_id, cb.api_status, cb.api_response, cb.outcome, ts(cb.received_at)],
            )
            .map_err(db("record callback"))?;
            Ok(())
        })
        .await
    }

    async fn purge_unmatched_callbacks(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM ThingSpaceCallBackResponseLog WHERE Outcome LIKE 'unmatched%' AND CreatedDate < ?1",
                    params![ts(before)],
                )
                .map_err(db("purge unmatched callbacks"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn unmatched_callbacks(
        &self,
        service_provider_id: i64,
        request_id: &str,
    ) -> StoreResult<Vec<CallbackRecord>> {
        let request_id = request_id.to_string();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT RequestId, ICCID, TenantId, ServiceProviderId, APIStatus, APIResponse, Outcome, CreatedDate
                     FROM ThingSpaceCallBackResponseLog WHERE ServiceProviderId = ?1 AND RequestId = ?2 AND Outcome LIKE 'unmatched%' ORDER BY Id",
                )
                .map_err(db("read unmatched callbacks"))?;
            let raws = stmt
                .query_map(params![service_provider_id, request_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get::<_, String>(7)?))
                })
                .map_err(db("read unmatched callbacks"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read unmatched callbacks"))?;
            raws.into_iter()
                .map(|(request_id, iccid, tenant_id, service_provider_id, api_status, api_response, outcome, at)| {
                    Ok(CallbackRecord { request_id, iccid, tenant_id, service_provider_id, api_status, api_response, outcome, received_at: parse_ts(&at)? })
                })
                .collect()
        })
        .await
    }

    async fn refuse_login(&self, service_provider_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let reason = reason.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE ThingSpaceAuthentication SET LoginRefusedReason = ?2, LoginRefusedDate = ?3 WHERE ServiceProviderId = ?1",
                params![service_provider_id, reason, ts(now)],
            )
            .map_err(db("refuse login"))?;
            Ok(())
        })
        .await
    }

    async fn next_lease_expiry(&self, bulk_change_id: i64) -> StoreResult<Option<DateTime<Utc>>> {
        self.with(move |c| {
            let table = row_table(c, bulk_change_id)?;
            let next: Option<String> = c
                .query_row(
                    &format!("SELECT MIN(LeaseUntil) FROM {table} WHERE BulkChangeId = ?1 AND Status = 'PROCESSING'"),
                    params![bulk_change_id],
                    |r| r.get(0),
                )
                .map_err(db("next lease expiry"))?;
            opt_ts(next)
        })
        .await
    }
}

/// The embedded queue: messages in the store's file, with SQS's visibility-timeout semantics
/// (a received message reappears unless deleted), so nothing is lost when a worker dies.
#[derive(Clone)]
pub struct SqliteQueue {
    store: SqliteStore,
    notify: Arc<tokio::sync::Notify>,
}

impl SqliteQueue {
    pub fn new(store: SqliteStore) -> Self {
        Self { store, notify: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Resolves when a message may have become available (or after `max_wait`), for a polling consumer.
    pub async fn wait(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.notify.notified()).await;
    }

    /// Messages waiting or in flight (for tests and `make run`).
    pub async fn depth(&self) -> Result<i64, QueueError> {
        self.store
            .with(|c| c.query_row("SELECT COUNT(*) FROM QueueMessage", [], |r| r.get(0)).map_err(db("queue depth")))
            .await
            .map_err(queue_err("depth"))
    }
}

fn queue_err(context: &'static str) -> impl Fn(StoreError) -> QueueError {
    move |e| QueueError { context, message: e.to_string() }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(message).map_err(|e| QueueError { context: "send", message: e.to_string() })?;
        self.send_raw(body, delay).await
    }

    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.store
            .with(move |c| {
                let now = Utc::now();
                let until = ts(now + chrono::Duration::from_std(visibility).unwrap_or_else(|_| chrono::Duration::seconds(30)));
                let receipt_base = format!("{}-{}", now.timestamp_micros(), fastrand_u64());
                let mut stmt = c
                    .prepare_cached(
                        "UPDATE QueueMessage SET VisibleAt = ?1, ReceiveCount = ReceiveCount + 1, Receipt = ?2 || '-' || Id
                         WHERE Id IN (SELECT Id FROM QueueMessage WHERE VisibleAt <= ?3 ORDER BY VisibleAt, Id LIMIT ?4)
                         RETURNING Id, Receipt, Body, ReceiveCount",
                    )
                    .map_err(db("receive"))?;
                let rows = stmt
                    .query_map(params![until, receipt_base, ts(now), max], |r| {
                        Ok(ReceivedMessage { message_id: r.get::<_, i64>(0)?.to_string(), receipt: r.get(1)?, body: r.get(2)?, receive_count: r.get(3)? })
                    })
                    .map_err(db("receive"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("receive"))?;
                Ok(rows)
            })
            .await
            .map_err(queue_err("receive"))
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let receipt = receipt.to_string();
        self.store
            .with(move |c| {
                c.execute("DELETE FROM QueueMessage WHERE Receipt = ?1", params![receipt])
                    .map_err(db("delete message"))?;
                Ok(())
            })
            .await
            .map_err(queue_err("delete"))
    }
}

impl SqliteQueue {
    /// Sends a body as is (tests use it to deliver malformed messages).
    pub async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.store
            .with(move |c| {
                let visible = ts(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
                c.execute("INSERT INTO QueueMessage (Body, VisibleAt) VALUES (?1, ?2)", params![body, visible])
                    .map_err(db("send message"))?;
                Ok(())
            })
            .await
            .map_err(queue_err("send"))?;
        self.notify.notify_waiters();
        Ok(())
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// One row's outcome and its device update inside `tx` (`Store::complete_row`'s rules): false, and nothing
/// written, when `c.worker` no longer holds the row.
fn complete_in(tx: &rusqlite::Transaction<'_>, c: &Completion) -> Result<bool, StoreError> {
    let (tenant_id, bulk_change_id, row_id, worker, outcome) =
        (c.tenant_id, c.bulk_change_id, c.row_id, &c.worker, &c.outcome);
    let now = ts(c.now);
    let table = row_table(tx, bulk_change_id)?;
    let changed = tx
                .execute(
                    &format!("UPDATE {table} SET Status = ?1, StatusDetails = ?2, IsProcessed = 1, ProcessedDate = ?3, LeaseOwner = NULL, LeaseUntil = NULL
                     WHERE Id = ?4 AND LeaseOwner = ?5 AND Status = 'PROCESSING'"),
                    params![outcome.status.as_str(), outcome.details, now, row_id, worker],
                )
                .map_err(db("complete row"))?;
    if changed == 0 {
        return Ok(false);
    }
    let u = &outcome.device_update;
    if !u.is_empty() {
        tx.execute(
                    &format!("UPDATE Device SET DeviceStatusId = COALESCE(?1, DeviceStatusId), CarrierRatePlan = COALESCE(?2, CarrierRatePlan),
                            CommunicationPlan = COALESCE(?3, CommunicationPlan), RevCustomerId = COALESCE(?4, RevCustomerId),
                            Username = COALESCE(?5, Username), ICCID = COALESCE(?11, ICCID), IMEI = COALESCE(?12, IMEI),
                            MSISDN = COALESCE(?13, MSISDN), IpAddress = COALESCE(?14, IpAddress),
                            IsActive = CASE WHEN ?6 THEN 0 ELSE IsActive END, IsDeleted = CASE WHEN ?6 THEN 1 ELSE IsDeleted END,
                            ModifiedBy = ?7, ModifiedDate = ?8
                     WHERE Id = (SELECT DeviceId FROM {table} WHERE Id = ?9) AND TenantId = ?10"),
                    params![
                        u.device_status_id,
                        u.carrier_rate_plan,
                        u.communication_plan,
                        u.rev_customer_id,
                        u.username,
                        u.archive,
                        PROCESSED_BY,
                        now,
                        row_id,
                        tenant_id,
                        u.iccid,
                        u.imei,
                        u.msisdn,
                        u.ip_address
                    ],
                )
                .map_err(db("update device"))?;
    }
    if let Some(plan) = &u.customer_plan {
        tx.execute(
                    &format!("UPDATE Device SET CustomerRatePlanId = COALESCE(?1, CustomerRatePlanId), CustomerRatePoolId = COALESCE(?2, CustomerRatePoolId),
                            CustomerDataAllocationMB = COALESCE(?3, CustomerDataAllocationMB)
                     WHERE Id = (SELECT DeviceId FROM {table} WHERE Id = ?4) AND TenantId = ?5"),
                    params![plan.customer_rate_plan_id, plan.customer_rate_pool_id, plan.data_allocation_mb, row_id, tenant_id],
                )
                .map_err(db("update customer plan"))?;
    }
    if let Some(customer) = &u.rev_customer_id {
        // The assignment in the tenant's device list, and the device's history of actions.
        tx.execute(
                    &format!("INSERT INTO Device_Tenant (DeviceId, TenantId, RevCustomerId, IsActive, IsDeleted, ModifiedBy, ModifiedDate)
                     SELECT DeviceId, ?2, ?3, 1, 0, ?4, ?5 FROM {table} WHERE Id = ?1 AND DeviceId IS NOT NULL
                     ON CONFLICT (DeviceId, TenantId) DO UPDATE SET RevCustomerId = excluded.RevCustomerId, IsActive = 1, IsDeleted = 0,
                                                                    ModifiedBy = excluded.ModifiedBy, ModifiedDate = excluded.ModifiedDate"),
                    params![row_id, tenant_id, customer, PROCESSED_BY, now],
                )
                .map_err(db("assign device to customer"))?;
        tx.execute(
                    &format!("INSERT INTO DeviceActionHistory (DeviceId, TenantId, BulkChangeId, Action, Details, ActionBy, ActionDate)
                     SELECT DeviceId, ?2, BulkChangeId, 'CustomerAssignment', ?3, ?4, ?5 FROM {table} WHERE Id = ?1 AND DeviceId IS NOT NULL"),
                    params![row_id, tenant_id, format!("Assigned to Rev customer {customer}"), PROCESSED_BY, now],
                )
                .map_err(db("record device action"))?;
    }
    tx.execute(
        "UPDATE Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedBy = ?2, ModifiedDate = ?3
                 WHERE M2MDeviceChangeId = ?1 AND IsActive = 1",
        params![row_id, PROCESSED_BY, now],
    )
    .map_err(db("close queued change"))?;
    Ok(true)
}
