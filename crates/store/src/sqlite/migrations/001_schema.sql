-- SQLite schema of the embedded store. Table and column names follow the legacy database's; the SQL Server
-- version is in infra/sql/. Times are UTC text in one fixed format, so they compare as strings.
CREATE TABLE IF NOT EXISTS Tenant (
    Id INTEGER PRIMARY KEY,
    Name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS Integration (
    Id INTEGER PRIMARY KEY,
    Name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ServiceProvider (
    Id INTEGER PRIMARY KEY,
    TenantId INTEGER NOT NULL REFERENCES Tenant(Id),
    IntegrationId INTEGER NOT NULL REFERENCES Integration(Id),
    Name TEXT NOT NULL,
    BaseUrl TEXT NOT NULL,
    Username TEXT NOT NULL DEFAULT '',
    Secret TEXT NOT NULL DEFAULT '',
    ClientCode TEXT,
    SubscriptionKey TEXT,
    WriteIsEnabled INTEGER NOT NULL DEFAULT 1,
    RateLimitPerSecond REAL NOT NULL DEFAULT 10,
    IsActive INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS DeviceStatus (
    Id INTEGER PRIMARY KEY,
    IntegrationId INTEGER NOT NULL,
    Status TEXT NOT NULL,
    DisplayName TEXT NOT NULL,
    IsActive INTEGER NOT NULL DEFAULT 1,
    IsDeleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS JasperCarrierRatePlan (
    Id INTEGER PRIMARY KEY,
    ServiceProviderId INTEGER NOT NULL REFERENCES ServiceProvider(Id),
    RatePlanCode TEXT NOT NULL,
    PlanMB REAL NOT NULL,
    BaseRate REAL NOT NULL,
    IsActive INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS IMEI_DeviceType_CarrierRatePlan (
    Id INTEGER PRIMARY KEY,
    Manufacturer TEXT NOT NULL,
    Model TEXT NOT NULL,
    FromIMEI TEXT NOT NULL,
    ToIMEI TEXT NOT NULL,
    SIMType TEXT NOT NULL,
    IsActive INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS RevCustomer (
    Id INTEGER PRIMARY KEY,
    TenantId INTEGER NOT NULL REFERENCES Tenant(Id),
    RevCustomerId TEXT NOT NULL,
    Name TEXT NOT NULL,
    IsActive INTEGER NOT NULL DEFAULT 1,
    UNIQUE (TenantId, RevCustomerId)
);
CREATE TABLE IF NOT EXISTS Device (
    Id INTEGER PRIMARY KEY,
    TenantId INTEGER NOT NULL REFERENCES Tenant(Id),
    ServiceProviderId INTEGER NOT NULL REFERENCES ServiceProvider(Id),
    ICCID TEXT NOT NULL,
    IMEI TEXT,
    MSISDN TEXT,
    EID TEXT,
    DeviceStatusId INTEGER NOT NULL REFERENCES DeviceStatus(Id),
    CarrierRatePlan TEXT,
    CommunicationPlan TEXT,
    Username TEXT,
    LastUsageDate TEXT,
    DataUsageMB REAL NOT NULL DEFAULT 0,
    RevCustomerId TEXT,
    IsActive INTEGER NOT NULL DEFAULT 1,
    IsDeleted INTEGER NOT NULL DEFAULT 0,
    ModifiedBy TEXT,
    ModifiedDate TEXT,
    UNIQUE (ServiceProviderId, ICCID)
);
CREATE INDEX IF NOT EXISTS IX_Device_Tenant_ICCID ON Device (TenantId, ICCID);
CREATE TABLE IF NOT EXISTS RevService (
    Id INTEGER PRIMARY KEY,
    TenantId INTEGER NOT NULL,
    DeviceId INTEGER NOT NULL REFERENCES Device(Id),
    RevServiceId INTEGER NOT NULL,
    RevCustomerId TEXT NOT NULL,
    IsActive INTEGER NOT NULL DEFAULT 1,
    CreatedDate TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS IX_RevService_Device ON RevService (DeviceId, IsActive);
CREATE TABLE IF NOT EXISTS DeviceBulkChange (
    Id INTEGER PRIMARY KEY,
    TenantId INTEGER NOT NULL REFERENCES Tenant(Id),
    ServiceProviderId INTEGER NOT NULL REFERENCES ServiceProvider(Id),
    IntegrationId INTEGER NOT NULL,
    ChangeRequestTypeId INTEGER NOT NULL,
    PortalTypeId INTEGER NOT NULL,
    Status TEXT NOT NULL,
    -- The change request, stored once per bulk change (never copied into every row).
    ChangeRequest TEXT NOT NULL,
    CreatedBy TEXT NOT NULL,
    CreatedDate TEXT NOT NULL,
    ModifiedDate TEXT NOT NULL,
    ProcessedDate TEXT,
    NotificationSentDate TEXT
);
CREATE INDEX IF NOT EXISTS IX_DeviceBulkChange_Tenant ON DeviceBulkChange (TenantId, Id);
CREATE INDEX IF NOT EXISTS IX_DeviceBulkChange_Status ON DeviceBulkChange (Status, ModifiedDate);
CREATE TABLE IF NOT EXISTS M2M_DeviceChange (
    Id INTEGER PRIMARY KEY,
    BulkChangeId INTEGER NOT NULL REFERENCES DeviceBulkChange(Id),
    TenantId INTEGER NOT NULL,
    DeviceId INTEGER REFERENCES Device(Id),
    ICCID TEXT NOT NULL,
    MSISDN TEXT,
    Status TEXT NOT NULL,
    StatusDetails TEXT,
    IsProcessed INTEGER NOT NULL DEFAULT 0,
    LeaseOwner TEXT,
    LeaseUntil TEXT,
    Claims INTEGER NOT NULL DEFAULT 0,
    ProcessedDate TEXT,
    CreatedDate TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS IX_M2M_DeviceChange_Bulk_Status ON M2M_DeviceChange (BulkChangeId, Status);
CREATE TABLE IF NOT EXISTS DeviceBulkChangeLog (
    Id INTEGER PRIMARY KEY,
    BulkChangeId INTEGER NOT NULL REFERENCES DeviceBulkChange(Id),
    M2MDeviceChangeId INTEGER,
    LogEntryDescription TEXT NOT NULL,
    RequestText TEXT,
    ResponseText TEXT,
    ResponseStatus TEXT,
    HasErrors INTEGER NOT NULL,
    ErrorText TEXT,
    ProcessBy TEXT NOT NULL,
    ProcessedDate TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS IX_DeviceBulkChangeLog_Bulk ON DeviceBulkChangeLog (BulkChangeId);
-- The embedded queue (the production queue is SQS).
CREATE TABLE IF NOT EXISTS QueueMessage (
    Id INTEGER PRIMARY KEY,
    Body TEXT NOT NULL,
    VisibleAt TEXT NOT NULL,
    ReceiveCount INTEGER NOT NULL DEFAULT 0,
    Receipt TEXT
);
CREATE INDEX IF NOT EXISTS IX_QueueMessage_Visible ON QueueMessage (VisibleAt);

INSERT OR IGNORE INTO Integration (Id, Name) VALUES
    (1, 'Jasper'), (3, 'Rev.io'), (4, 'ThingSpace'), (6, 'Telegence'), (9, 'POD19'),
    (11, 'TMobileJasper'), (12, 'Teal'), (13, 'Pond'), (14, 'Rogers');

-- Control Center statuses for every Jasper-family integration: Id = IntegrationId * 100 + n.
INSERT OR IGNORE INTO DeviceStatus (Id, IntegrationId, Status, DisplayName)
SELECT i.Id * 100 + s.n, i.Id, s.Status, s.DisplayName
FROM (SELECT 1 AS Id UNION ALL SELECT 9 UNION ALL SELECT 11 UNION ALL SELECT 14) AS i
CROSS JOIN (
    SELECT 1 AS n, 'ACTIVATED' AS Status, 'Active' AS DisplayName
    UNION ALL SELECT 2, 'ACTIVATION_READY', 'Activation Ready'
    UNION ALL SELECT 3, 'DEACTIVATED', 'Deactivated'
    UNION ALL SELECT 4, 'INVENTORY', 'Inventory'
    UNION ALL SELECT 5, 'PURGED', 'Purged'
    UNION ALL SELECT 6, 'REPLACED', 'Replaced'
    UNION ALL SELECT 7, 'RETIRED', 'Retired'
    UNION ALL SELECT 8, 'TEST_READY', 'Test Ready'
) AS s;

-- ThingSpace statuses (Integration 4). INVENTORY: known here, not yet on ThingSpace; the others are ThingSpace's.
INSERT OR IGNORE INTO DeviceStatus (Id, IntegrationId, Status, DisplayName) VALUES
    (401, 4, 'ACTIVE', 'Active'), (402, 4, 'PREACTIVE', 'Pre-Active'), (403, 4, 'DEACTIVE', 'Deactivated'),
    (404, 4, 'INVENTORY', 'Inventory'), (405, 4, 'SUSPEND', 'Suspended');

-- Telegence statuses (Integration 6): the carrier's line codes A, S, C; UNKNOWN: a SIM with no line yet (AMOP's own).
INSERT OR IGNORE INTO DeviceStatus (Id, IntegrationId, Status, DisplayName) VALUES
    (601, 6, 'A', 'Active'), (602, 6, 'S', 'Suspended'), (603, 6, 'C', 'Cancelled'), (604, 6, 'UNKNOWN', 'No line');

-- Teal statuses (Integration 12): what Teal reports (deviceStatus); enable/disable data moves between them.
INSERT OR IGNORE INTO DeviceStatus (Id, IntegrationId, Status, DisplayName) VALUES
    (1201, 12, 'ONLINE', 'Online'), (1202, 12, 'WAITING', 'Waiting'), (1203, 12, 'STOPPED', 'Stopped');

-- Pond statuses (Integration 13): every service enabled, or every service disabled.
INSERT OR IGNORE INTO DeviceStatus (Id, IntegrationId, Status, DisplayName) VALUES
    (1301, 13, 'ACTIVE', 'Active'), (1302, 13, 'INACTIVE', 'Inactive');
