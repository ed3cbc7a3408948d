-- SQL Server schema of the device bulk change store. Names follow the seeds (DESIGN 4.5) and mirror the
-- embedded SQLite schema (crates/store/src/schema.sql). Times are UTC DATETIME2. Idempotent: every object is guarded, so it also
-- applies over a database made by the unversioned scripts. Applied by `bulkchange migrate` as version 1.
IF OBJECT_ID('dbo.Tenant') IS NULL
CREATE TABLE dbo.Tenant (
    Id BIGINT NOT NULL PRIMARY KEY,
    Name NVARCHAR(200) NOT NULL
);
IF OBJECT_ID('dbo.Integration') IS NULL
CREATE TABLE dbo.Integration (
    Id BIGINT NOT NULL PRIMARY KEY,
    Name NVARCHAR(100) NOT NULL
);
IF OBJECT_ID('dbo.ServiceProvider') IS NULL
CREATE TABLE dbo.ServiceProvider (
    Id BIGINT NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL REFERENCES dbo.Tenant(Id),
    IntegrationId BIGINT NOT NULL REFERENCES dbo.Integration(Id),
    Name NVARCHAR(200) NOT NULL,
    BaseUrl NVARCHAR(500) NOT NULL,
    Username NVARCHAR(200) NOT NULL DEFAULT N'',
    Secret NVARCHAR(500) NOT NULL DEFAULT N'',
    ClientCode NVARCHAR(100) NULL,
    SubscriptionKey NVARCHAR(500) NULL,
    WriteIsEnabled BIT NOT NULL DEFAULT 1,
    RateLimitPerSecond FLOAT NOT NULL DEFAULT 10,
    IsActive BIT NOT NULL DEFAULT 1
);
IF OBJECT_ID('dbo.DeviceStatus') IS NULL
CREATE TABLE dbo.DeviceStatus (
    Id BIGINT NOT NULL PRIMARY KEY,
    IntegrationId BIGINT NOT NULL,
    Status NVARCHAR(100) NOT NULL,
    DisplayName NVARCHAR(100) NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1,
    IsDeleted BIT NOT NULL DEFAULT 0
);
IF OBJECT_ID('dbo.JasperCarrierRatePlan') IS NULL
CREATE TABLE dbo.JasperCarrierRatePlan (
    Id BIGINT NOT NULL PRIMARY KEY,
    ServiceProviderId BIGINT NOT NULL REFERENCES dbo.ServiceProvider(Id),
    RatePlanCode NVARCHAR(200) NOT NULL,
    PlanMB FLOAT NOT NULL,
    BaseRate FLOAT NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1
);
IF OBJECT_ID('dbo.IMEI_DeviceType_CarrierRatePlan') IS NULL
CREATE TABLE dbo.IMEI_DeviceType_CarrierRatePlan (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    Manufacturer NVARCHAR(200) NOT NULL,
    Model NVARCHAR(200) NOT NULL,
    FromIMEI VARCHAR(20) NOT NULL,
    ToIMEI VARCHAR(20) NOT NULL,
    SIMType NVARCHAR(50) NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1
);
IF OBJECT_ID('dbo.RevCustomer') IS NULL
CREATE TABLE dbo.RevCustomer (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL REFERENCES dbo.Tenant(Id),
    RevCustomerId NVARCHAR(100) NOT NULL,
    Name NVARCHAR(200) NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1,
    CONSTRAINT UQ_RevCustomer UNIQUE (TenantId, RevCustomerId)
);
IF OBJECT_ID('dbo.Device') IS NULL
CREATE TABLE dbo.Device (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL REFERENCES dbo.Tenant(Id),
    ServiceProviderId BIGINT NOT NULL REFERENCES dbo.ServiceProvider(Id),
    ICCID NVARCHAR(25) NOT NULL,
    IMEI NVARCHAR(20) NULL,
    MSISDN NVARCHAR(20) NULL,
    EID NVARCHAR(40) NULL,
    DeviceStatusId BIGINT NOT NULL REFERENCES dbo.DeviceStatus(Id),
    CarrierRatePlan NVARCHAR(200) NULL,
    CommunicationPlan NVARCHAR(200) NULL,
    Username NVARCHAR(200) NULL,
    LastUsageDate DATETIME2 NULL,
    DataUsageMB FLOAT NOT NULL DEFAULT 0,
    RevCustomerId NVARCHAR(100) NULL,
    IsActive BIT NOT NULL DEFAULT 1,
    IsDeleted BIT NOT NULL DEFAULT 0,
    ModifiedBy NVARCHAR(100) NULL,
    ModifiedDate DATETIME2 NULL,
    CONSTRAINT UQ_Device_Provider_ICCID UNIQUE (ServiceProviderId, ICCID)
);
BEGIN TRY
    CREATE INDEX IX_Device_Tenant_ICCID ON dbo.Device (TenantId, ICCID);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF OBJECT_ID('dbo.RevService') IS NULL
CREATE TABLE dbo.RevService (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL,
    DeviceId BIGINT NOT NULL REFERENCES dbo.Device(Id),
    RevServiceId BIGINT NOT NULL,
    RevCustomerId NVARCHAR(100) NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1,
    CreatedDate DATETIME2 NOT NULL
);
IF OBJECT_ID('dbo.DeviceBulkChange') IS NULL
CREATE TABLE dbo.DeviceBulkChange (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL REFERENCES dbo.Tenant(Id),
    ServiceProviderId BIGINT NOT NULL REFERENCES dbo.ServiceProvider(Id),
    IntegrationId BIGINT NOT NULL,
    ChangeRequestTypeId BIGINT NOT NULL,
    PortalTypeId BIGINT NOT NULL,
    Status NVARCHAR(20) NOT NULL,
    ChangeRequest NVARCHAR(MAX) NOT NULL,
    CreatedBy NVARCHAR(200) NOT NULL,
    CreatedDate DATETIME2 NOT NULL,
    ModifiedDate DATETIME2 NOT NULL,
    ProcessedDate DATETIME2 NULL,
    NotificationSentDate DATETIME2 NULL
);
IF COL_LENGTH('dbo.DeviceBulkChange', 'RetryOfBulkChangeId') IS NULL
    ALTER TABLE dbo.DeviceBulkChange ADD RetryOfBulkChangeId BIGINT NULL REFERENCES dbo.DeviceBulkChange(Id);
BEGIN TRY
    CREATE INDEX IX_DeviceBulkChange_Tenant ON dbo.DeviceBulkChange (TenantId, Id DESC);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
BEGIN TRY
    CREATE INDEX IX_DeviceBulkChange_Status ON dbo.DeviceBulkChange (Status, ModifiedDate);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF OBJECT_ID('dbo.M2M_DeviceChange') IS NULL
CREATE TABLE dbo.M2M_DeviceChange (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    BulkChangeId BIGINT NOT NULL REFERENCES dbo.DeviceBulkChange(Id),
    TenantId BIGINT NOT NULL,
    DeviceId BIGINT NULL REFERENCES dbo.Device(Id),
    ICCID NVARCHAR(64) NOT NULL,
    MSISDN NVARCHAR(20) NULL,
    Status NVARCHAR(20) NOT NULL,
    StatusDetails NVARCHAR(MAX) NULL,
    IsProcessed BIT NOT NULL DEFAULT 0,
    LeaseOwner NVARCHAR(100) NULL,
    LeaseUntil DATETIME2 NULL,
    Claims INT NOT NULL DEFAULT 0,
    ProcessedDate DATETIME2 NULL,
    CreatedDate DATETIME2 NOT NULL
);
BEGIN TRY
    CREATE INDEX IX_M2M_DeviceChange_Bulk_Status ON dbo.M2M_DeviceChange (BulkChangeId, Status) INCLUDE (LeaseUntil);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF OBJECT_ID('dbo.DeviceBulkChangeLog') IS NULL
CREATE TABLE dbo.DeviceBulkChangeLog (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    BulkChangeId BIGINT NOT NULL REFERENCES dbo.DeviceBulkChange(Id),
    M2MDeviceChangeId BIGINT NULL,
    LogEntryDescription NVARCHAR(500) NOT NULL,
    RequestText NVARCHAR(MAX) NULL,
    ResponseText NVARCHAR(MAX) NULL,
    ResponseStatus NVARCHAR(50) NULL,
    HasErrors BIT NOT NULL,
    ErrorText NVARCHAR(MAX) NULL,
    ProcessBy NVARCHAR(100) NOT NULL,
    ProcessedDate DATETIME2 NOT NULL
);
BEGIN TRY
    CREATE INDEX IX_DeviceBulkChangeLog_Bulk ON dbo.DeviceBulkChangeLog (BulkChangeId);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF OBJECT_ID('dbo.CustomerRatePlan') IS NULL
CREATE TABLE dbo.CustomerRatePlan (
    Id BIGINT NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL REFERENCES dbo.Tenant(Id),
    Name NVARCHAR(200) NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1
);
IF OBJECT_ID('dbo.CustomerRatePool') IS NULL
CREATE TABLE dbo.CustomerRatePool (
    Id BIGINT NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL REFERENCES dbo.Tenant(Id),
    Name NVARCHAR(200) NOT NULL,
    IsActive BIT NOT NULL DEFAULT 1
);
IF COL_LENGTH('dbo.Device', 'CustomerRatePlanId') IS NULL
BEGIN
    ALTER TABLE dbo.Device ADD CustomerRatePlanId BIGINT NULL;
    ALTER TABLE dbo.Device ADD CustomerRatePoolId BIGINT NULL;
    ALTER TABLE dbo.Device ADD CustomerDataAllocationMB FLOAT NULL;
END
IF OBJECT_ID('dbo.Device_CustomerRatePlanOrRatePool_Queue') IS NULL
CREATE TABLE dbo.Device_CustomerRatePlanOrRatePool_Queue (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    DeviceId BIGINT NOT NULL REFERENCES dbo.Device(Id),
    -- The row of the entry's PortalType table (M2M_DeviceChange, or Mobility_DeviceChange for 2).
    M2MDeviceChangeId BIGINT NOT NULL,
    BulkChangeId BIGINT NOT NULL,
    CustomerRatePlanId BIGINT NULL,
    CustomerRatePoolId BIGINT NULL,
    CustomerDataAllocationMB FLOAT NULL,
    EffectiveDate DATETIME2 NOT NULL,
    PortalType INT NOT NULL DEFAULT 0,
    TenantId BIGINT NOT NULL,
    CreatedBy NVARCHAR(200) NOT NULL,
    CreatedDate DATETIME2 NOT NULL,
    ModifiedBy NVARCHAR(100) NULL,
    ModifiedDate DATETIME2 NULL,
    IsActive BIT NOT NULL DEFAULT 1
);
BEGIN TRY
    CREATE INDEX IX_CustomerPlanQueue_Due ON dbo.Device_CustomerRatePlanOrRatePool_Queue (IsActive, EffectiveDate) INCLUDE (M2MDeviceChangeId);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF OBJECT_ID('dbo.Device_Tenant') IS NULL
CREATE TABLE dbo.Device_Tenant (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    DeviceId BIGINT NOT NULL REFERENCES dbo.Device(Id),
    TenantId BIGINT NOT NULL,
    RevCustomerId NVARCHAR(100) NULL,
    IsActive BIT NOT NULL DEFAULT 1,
    IsDeleted BIT NOT NULL DEFAULT 0,
    ModifiedBy NVARCHAR(100) NULL,
    ModifiedDate DATETIME2 NULL,
    CONSTRAINT UQ_Device_Tenant UNIQUE (DeviceId, TenantId)
);
IF OBJECT_ID('dbo.DeviceActionHistory') IS NULL
CREATE TABLE dbo.DeviceActionHistory (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    DeviceId BIGINT NOT NULL REFERENCES dbo.Device(Id),
    TenantId BIGINT NOT NULL,
    BulkChangeId BIGINT NULL,
    Action NVARCHAR(100) NOT NULL,
    Details NVARCHAR(MAX) NULL,
    ActionBy NVARCHAR(100) NOT NULL,
    ActionDate DATETIME2 NOT NULL
);
IF OBJECT_ID('dbo.Mobility_DeviceChange') IS NULL
CREATE TABLE dbo.Mobility_DeviceChange (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    BulkChangeId BIGINT NOT NULL REFERENCES dbo.DeviceBulkChange(Id),
    TenantId BIGINT NOT NULL,
    DeviceId BIGINT NULL REFERENCES dbo.Device(Id),
    ICCID NVARCHAR(64) NOT NULL,
    MSISDN NVARCHAR(20) NULL,
    Status NVARCHAR(20) NOT NULL,
    StatusDetails NVARCHAR(MAX) NULL,
    IsProcessed BIT NOT NULL DEFAULT 0,
    LeaseOwner NVARCHAR(100) NULL,
    LeaseUntil DATETIME2 NULL,
    Claims INT NOT NULL DEFAULT 0,
    ProcessedDate DATETIME2 NULL,
    CreatedDate DATETIME2 NOT NULL
);
BEGIN TRY
    CREATE INDEX IX_Mobility_DeviceChange_Bulk_Status ON dbo.Mobility_DeviceChange (BulkChangeId, Status) INCLUDE (LeaseUntil);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF COL_LENGTH('dbo.DeviceBulkChangeLog', 'MobilityDeviceChangeId') IS NULL
    ALTER TABLE dbo.DeviceBulkChangeLog ADD MobilityDeviceChangeId BIGINT NULL;
GO

-- ThingSpace (issue 5): account settings, rows waiting on an asynchronous carrier request, callbacks as received,
-- and the IP address an activation assigns.
IF OBJECT_ID('dbo.ThingSpaceAuthentication') IS NULL
CREATE TABLE dbo.ThingSpaceAuthentication (
    ServiceProviderId BIGINT NOT NULL PRIMARY KEY REFERENCES dbo.ServiceProvider(Id),
    AppKey NVARCHAR(200) NOT NULL,
    AppSecret NVARCHAR(400) NOT NULL,
    AccountName NVARCHAR(100) NOT NULL,
    CallbackUsername NVARCHAR(200) NOT NULL,
    CallbackPassword NVARCHAR(400) NOT NULL,
    LoginRefusedReason NVARCHAR(1000) NULL,
    LoginRefusedDate DATETIME2 NULL
);
IF COL_LENGTH('dbo.M2M_DeviceChange', 'CarrierRequestId') IS NULL
BEGIN
    ALTER TABLE dbo.M2M_DeviceChange ADD CarrierRequestId NVARCHAR(100) NULL;
    ALTER TABLE dbo.M2M_DeviceChange ADD CarrierRequestedAt DATETIME2 NULL;
END
IF COL_LENGTH('dbo.Mobility_DeviceChange', 'CarrierRequestId') IS NULL
BEGIN
    ALTER TABLE dbo.Mobility_DeviceChange ADD CarrierRequestId NVARCHAR(100) NULL;
    ALTER TABLE dbo.Mobility_DeviceChange ADD CarrierRequestedAt DATETIME2 NULL;
END
IF COL_LENGTH('dbo.Device', 'IpAddress') IS NULL
    ALTER TABLE dbo.Device ADD IpAddress NVARCHAR(64) NULL;
IF OBJECT_ID('dbo.ThingSpaceCallBackResponseLog') IS NULL
CREATE TABLE dbo.ThingSpaceCallBackResponseLog (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    RequestId NVARCHAR(100) NOT NULL,
    ICCID NVARCHAR(64) NULL,
    TenantId BIGINT NULL,
    ServiceProviderId BIGINT NULL,
    APIStatus NVARCHAR(50) NOT NULL,
    APIResponse NVARCHAR(MAX) NOT NULL,
    Outcome NVARCHAR(200) NOT NULL,
    CreatedDate DATETIME2 NOT NULL
);
GO
BEGIN TRY
    CREATE INDEX IX_M2M_DeviceChange_CarrierRequest ON dbo.M2M_DeviceChange (CarrierRequestId) WHERE CarrierRequestId IS NOT NULL;
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
BEGIN TRY
    CREATE INDEX IX_Mobility_DeviceChange_CarrierRequest ON dbo.Mobility_DeviceChange (CarrierRequestId) WHERE CarrierRequestId IS NOT NULL;
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
BEGIN TRY
    CREATE INDEX IX_ThingSpaceCallBackResponseLog_Request ON dbo.ThingSpaceCallBackResponseLog (RequestId);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
GO
IF COL_LENGTH('dbo.M2M_DeviceChange', 'CarrierResult') IS NULL
    ALTER TABLE dbo.M2M_DeviceChange ADD CarrierResult NVARCHAR(MAX) NULL;
IF COL_LENGTH('dbo.Mobility_DeviceChange', 'CarrierResult') IS NULL
    ALTER TABLE dbo.Mobility_DeviceChange ADD CarrierResult NVARCHAR(MAX) NULL;
GO

-- One open change per device and attribute (issue 9, README "One change per device"). An open row (PENDING,
-- PROCESSING, SCHEDULED) holds a lock row per attribute it changes; the primary key decides between two racing
-- creations. The row tables' triggers release a row's locks when it becomes final. Open rows of an older database
-- take every attribute (the first row of a device wins).
IF OBJECT_ID('dbo.DeviceChangeLock') IS NULL
CREATE TABLE dbo.DeviceChangeLock (
    DeviceId BIGINT NOT NULL REFERENCES dbo.Device(Id),
    Attribute NVARCHAR(30) NOT NULL,
    BulkChangeId BIGINT NOT NULL,
    RowId BIGINT NOT NULL,
    ChangeRequestTypeId BIGINT NOT NULL,
    TenantId BIGINT NOT NULL,
    CreatedDate DATETIME2 NOT NULL,
    CONSTRAINT PK_DeviceChangeLock PRIMARY KEY (DeviceId, Attribute)
);
BEGIN TRY
    CREATE INDEX IX_DeviceChangeLock_Row ON dbo.DeviceChangeLock (BulkChangeId, RowId);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
GO
DROP TRIGGER IF EXISTS dbo.TR_M2M_DeviceChange_Unlock;
GO
CREATE TRIGGER dbo.TR_M2M_DeviceChange_Unlock ON dbo.M2M_DeviceChange AFTER UPDATE AS
BEGIN
    SET NOCOUNT ON;
    -- Decided from the rows, not IF UPDATE(Status) (false on some engines when the UPDATE has an OUTPUT clause).
    DELETE FROM dbo.DeviceChangeLock
    WHERE EXISTS (SELECT 1 FROM inserted i
                  WHERE i.BulkChangeId = DeviceChangeLock.BulkChangeId AND i.Id = DeviceChangeLock.RowId
                    AND i.Status NOT IN (N'PENDING', N'PROCESSING', N'SCHEDULED'));
END
GO
DROP TRIGGER IF EXISTS dbo.TR_Mobility_DeviceChange_Unlock;
GO
CREATE TRIGGER dbo.TR_Mobility_DeviceChange_Unlock ON dbo.Mobility_DeviceChange AFTER UPDATE AS
BEGIN
    SET NOCOUNT ON;
    -- Decided from the rows, not IF UPDATE(Status) (false on some engines when the UPDATE has an OUTPUT clause).
    DELETE FROM dbo.DeviceChangeLock
    WHERE EXISTS (SELECT 1 FROM inserted i
                  WHERE i.BulkChangeId = DeviceChangeLock.BulkChangeId AND i.Id = DeviceChangeLock.RowId
                    AND i.Status NOT IN (N'PENDING', N'PROCESSING', N'SCHEDULED'));
END
GO
INSERT INTO dbo.DeviceChangeLock (DeviceId, Attribute, BulkChangeId, RowId, ChangeRequestTypeId, TenantId, CreatedDate)
SELECT x.DeviceId, x.Attribute, x.BulkChangeId, x.Id, x.ChangeRequestTypeId, x.TenantId, x.CreatedDate
FROM (
    SELECT r.DeviceId, a.Attribute, r.BulkChangeId, r.Id, b.ChangeRequestTypeId, r.TenantId, r.CreatedDate,
           ROW_NUMBER() OVER (PARTITION BY r.DeviceId, a.Attribute ORDER BY r.BulkChangeId, r.Id) AS n
    FROM (SELECT Id, BulkChangeId, DeviceId, TenantId, CreatedDate, Status FROM dbo.M2M_DeviceChange
          UNION ALL SELECT Id, BulkChangeId, DeviceId, TenantId, CreatedDate, Status FROM dbo.Mobility_DeviceChange) r
    JOIN dbo.DeviceBulkChange b ON b.Id = r.BulkChangeId
    CROSS JOIN (VALUES (N'Status'), (N'CarrierRatePlan'), (N'CustomerRatePlan'), (N'Billing'), (N'Username'), (N'Identity')) a (Attribute)
    WHERE r.Status IN (N'PENDING', N'PROCESSING', N'SCHEDULED') AND r.DeviceId IS NOT NULL
) x
WHERE x.n = 1 AND NOT EXISTS (SELECT 1 FROM dbo.DeviceChangeLock l WHERE l.DeviceId = x.DeviceId AND l.Attribute = x.Attribute);
GO
-- At most one open retry of a bulk change.
BEGIN TRY
    CREATE UNIQUE INDEX UX_DeviceBulkChange_OpenRetry ON dbo.DeviceBulkChange (RetryOfBulkChangeId)
WHERE RetryOfBulkChangeId IS NOT NULL AND Status IN (N'NEW', N'PROCESSING', N'SCHEDULED');
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
GO
-- At most one active Rev.io service line per device (older duplicates, from before this rule, are closed), and
-- the creation in flight of a device's line, so a crashed or ambiguous attempt is looked up on Rev.io first.
UPDATE dbo.RevService SET IsActive = 0
WHERE Id IN (SELECT Id FROM (SELECT Id, ROW_NUMBER() OVER (PARTITION BY DeviceId ORDER BY Id DESC) AS n
                             FROM dbo.RevService WHERE IsActive = 1) r WHERE n > 1);
BEGIN TRY
    CREATE UNIQUE INDEX UX_RevService_ActiveDevice ON dbo.RevService (DeviceId) WHERE IsActive = 1;
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
IF OBJECT_ID('dbo.RevServiceCreation') IS NULL
CREATE TABLE dbo.RevServiceCreation (
    DeviceId BIGINT NOT NULL PRIMARY KEY REFERENCES dbo.Device(Id),
    TenantId BIGINT NOT NULL,
    RevCustomerId NVARCHAR(100) NOT NULL,
    BulkChangeId BIGINT NOT NULL,
    RowId BIGINT NOT NULL,
    Attempts INT NOT NULL,
    StartedDate DATETIME2 NOT NULL
);
-- Idempotency-Key of the POST routes, per tenant, kept 24 h.
IF OBJECT_ID('dbo.IdempotencyKey') IS NULL
CREATE TABLE dbo.IdempotencyKey (
    TenantId BIGINT NOT NULL,
    IdempotencyKey NVARCHAR(255) NOT NULL,
    RequestHash NVARCHAR(64) NOT NULL,
    BulkChangeId BIGINT NULL,
    ResponseStatus INT NULL,
    ResponseBody NVARCHAR(MAX) NULL,
    CreatedDate DATETIME2 NOT NULL,
    CONSTRAINT PK_IdempotencyKey PRIMARY KEY (TenantId, IdempotencyKey)
);
BEGIN TRY
    CREATE INDEX IX_IdempotencyKey_Created ON dbo.IdempotencyKey (CreatedDate);
END TRY BEGIN CATCH IF ERROR_NUMBER() NOT IN (1913, 2714) THROW; END CATCH;
GO

-- The pace of each carrier account, shared by every worker instance (issue 10): the next free call slot, in Unix
-- seconds. Workers book a few slots at a time (usp_RateBudget_Reserve).
IF OBJECT_ID('dbo.RateBudget') IS NULL
CREATE TABLE dbo.RateBudget (
    ServiceProviderId BIGINT NOT NULL,
    Bucket NVARCHAR(40) NOT NULL,
    NextSlot FLOAT NOT NULL,
    CONSTRAINT PK_RateBudget PRIMARY KEY (ServiceProviderId, Bucket)
);
GO

-- The provider a Rev.io account gives a new service line when the request names none (issue 11).
IF COL_LENGTH('dbo.ServiceProvider', 'DefaultProviderId') IS NULL
    ALTER TABLE dbo.ServiceProvider ADD DefaultProviderId BIGINT NULL;
-- Teal and Pond: the carrier's wire settings (JSON: Pond's distributor, key header and paths) and plan ids.
IF COL_LENGTH('dbo.ServiceProvider', 'CarrierSettings') IS NULL
    ALTER TABLE dbo.ServiceProvider ADD CarrierSettings NVARCHAR(MAX) NULL;
IF COL_LENGTH('dbo.JasperCarrierRatePlan', 'JasperRatePlanId') IS NULL
    ALTER TABLE dbo.JasperCarrierRatePlan ADD JasperRatePlanId BIGINT NULL;
IF COL_LENGTH('dbo.JasperCarrierRatePlan', 'PlanUuid') IS NULL
    ALTER TABLE dbo.JasperCarrierRatePlan ADD PlanUuid NVARCHAR(64) NULL;
GO
