//! The SQLite schema: `schema.sql` (every table, `IF NOT EXISTS`) and the changes made to tables that existed
//! before them, counted by `PRAGMA user_version`.

use super::*;

pub(super) const SCHEMA: &str = include_str!("schema.sql");

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

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db("read schema version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1))
            .map_err(db("migrate schema"))?;
    }
    Ok(())
}
