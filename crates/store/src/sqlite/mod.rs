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
impl Store for SqliteStore {}

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

/// One row's outcome and its device update inside `tx` (`Outcomes::complete_row`'s rules): false, and nothing
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
// The adapter by concern, one file per port trait (after the macros above, which they use).
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
