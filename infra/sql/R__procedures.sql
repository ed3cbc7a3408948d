-- Stored procedures of the device bulk change store. Every one that a user request reaches takes @TenantId.
-- The Rust adapter (crates/store/src/mssql.rs) calls them with parameters only. Each is dropped and created
-- again (DROP ... IF EXISTS, then CREATE), so the file is re-runnable: `bulkchange migrate` applies it whenever
-- it changed. Written in the T-SQL that SQL Server 2019+ and Babelfish run the same way: no CREATE OR ALTER, no
-- UPDATE through a CTE or an aliased target with OUTPUT, and no race rule that rests on a table hint alone
-- (hints are ignored by Babelfish): each rests on a constraint, a conditional update or sp_getapplock.

-- A text that came inside a JSON argument, decoded: the adapter percent-encodes '%', '"', '\' and the control
-- characters of every text it puts in JSON (mssql.rs json_text), because Babelfish's OPENJSON returns a string's
-- escapes as written where SQL Server decodes them. Without escapes both engines read the same text.
DROP FUNCTION IF EXISTS dbo.fn_JsonText;
GO
CREATE FUNCTION dbo.fn_JsonText (@Text NVARCHAR(MAX)) RETURNS NVARCHAR(MAX) AS
BEGIN
    IF @Text IS NULL OR CHARINDEX(N'%', @Text) = 0 RETURN @Text;
    -- The common escapes first, with built-in REPLACEs: a JSON request or answer kept in the audit holds dozens of
    -- quotes, and the loop below cost about 0.3 ms for such a text on Babelfish. Each '%' of the text starts an
    -- escape, so "%22" and "%5C" only ever match whole escapes; %25 is turned back last, so no '%' it gives back is
    -- read as the start of another escape.
    DECLARE @T NVARCHAR(MAX) = REPLACE(REPLACE(REPLACE(REPLACE(@Text, N'%22', N'"'), N'%5C', N'\'), N'%0D', NCHAR(13)), N'%0A', NCHAR(10));
    IF CHARINDEX(N'%', REPLACE(@T, N'%25', N'')) = 0 RETURN REPLACE(@T, N'%25', N'%');
    -- Other control characters: every escape left, one by one.
    -- Characters, trailing spaces included (DATALENGTH counts UTF-16 bytes on SQL Server, UTF-8 on Babelfish).
    DECLARE @Out NVARCHAR(MAX) = N'', @At BIGINT = 1, @Percent BIGINT, @Length BIGINT = LEN(@T + N'x') - 1;
    DECLARE @Hex NCHAR(16) = N'0123456789ABCDEF';
    WHILE @At <= @Length
    BEGIN
        SET @Percent = CHARINDEX(N'%', @T, @At);
        IF @Percent = 0 OR @Percent + 2 > @Length
        BEGIN
            SET @Out = @Out + SUBSTRING(@T, @At, @Length - @At + 1);
            BREAK;
        END
        SET @Out = @Out + SUBSTRING(@T, @At, @Percent - @At)
                 + NCHAR((CHARINDEX(SUBSTRING(@T, @Percent + 1, 1), @Hex) - 1) * 16
                         + CHARINDEX(SUBSTRING(@T, @Percent + 2, 1), @Hex) - 1);
        SET @At = @Percent + 3;
    END
    RETURN @Out;
END
GO

-- One entry of a device's history of actions (legacy name kept: the portal's history pages read this table).
DROP PROCEDURE IF EXISTS dbo.usp_UpdateCrossProviderDeviceHistory;
GO
CREATE PROCEDURE dbo.usp_UpdateCrossProviderDeviceHistory
    @TenantId BIGINT, @DeviceId BIGINT, @BulkChangeId BIGINT, @Action NVARCHAR(100), @Details NVARCHAR(MAX),
    @ActionBy NVARCHAR(100), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    INSERT INTO dbo.DeviceActionHistory (DeviceId, TenantId, BulkChangeId, Action, Details, ActionBy, ActionDate)
    SELECT Id, @TenantId, @BulkChangeId, @Action, @Details, @ActionBy, @Now FROM dbo.Device WHERE Id = @DeviceId AND TenantId = @TenantId;
END
GO

-- A service provider as the store reads it: its own columns and, for ThingSpace, its settings.
DROP VIEW IF EXISTS dbo.vw_ServiceProviderSettings;
GO
CREATE VIEW dbo.vw_ServiceProviderSettings AS
    SELECT sp.Id, sp.TenantId, sp.IntegrationId, sp.Name, sp.BaseUrl, sp.Username, sp.Secret, sp.ClientCode, sp.SubscriptionKey,
           sp.WriteIsEnabled, sp.RateLimitPerSecond, sp.IsActive, ts.AppKey, ts.AppSecret, ts.AccountName, ts.CallbackUsername,
           ts.CallbackPassword, ts.LoginRefusedReason, sp.DefaultProviderId, sp.CarrierSettings
    FROM dbo.ServiceProvider sp LEFT JOIN dbo.ThingSpaceAuthentication ts ON ts.ServiceProviderId = sp.Id;
GO

DROP PROCEDURE IF EXISTS dbo.usp_ServiceProvider_Get;
GO
CREATE PROCEDURE dbo.usp_ServiceProvider_Get @TenantId BIGINT, @Id BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT * FROM dbo.vw_ServiceProviderSettings WHERE Id = @Id AND TenantId = @TenantId AND IsActive = 1;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_ServiceProvider_GetForIntegration;
GO
CREATE PROCEDURE dbo.usp_ServiceProvider_GetForIntegration @TenantId BIGINT, @IntegrationId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT TOP (1) * FROM dbo.vw_ServiceProviderSettings
    WHERE TenantId = @TenantId AND IntegrationId = @IntegrationId AND IsActive = 1 ORDER BY Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceStatus_List;
GO
CREATE PROCEDURE dbo.usp_DeviceStatus_List @IntegrationId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Id, IntegrationId, Status, DisplayName FROM dbo.DeviceStatus
    WHERE IntegrationId = @IntegrationId AND IsActive = 1 AND IsDeleted = 0 ORDER BY Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_Device_GetByIccids;
GO
CREATE PROCEDURE dbo.usp_Device_GetByIccids @TenantId BIGINT, @IccidsJson NVARCHAR(MAX) AS
BEGIN
    SET NOCOUNT ON;
    -- One row per ICCID, in the order of the request: the live device first (IsDeleted = 0), as the SQLite store does.
    SELECT d.Id, d.TenantId, d.ServiceProviderId, d.ICCID, d.IMEI, d.MSISDN, d.DeviceStatusId, d.CarrierRatePlan, d.CommunicationPlan,
           d.Username, d.LastUsageDate, d.DataUsageMB, d.RevCustomerId, d.IsActive, d.IsDeleted,
           d.CustomerRatePlanId, d.CustomerRatePoolId, d.CustomerDataAllocationMB, d.EID
    FROM (SELECT dbo.fn_JsonText([value]) AS ICCID, MIN(CAST([key] AS INT)) AS Seq FROM OPENJSON(@IccidsJson) GROUP BY [value]) AS j
    CROSS APPLY (SELECT TOP (1) * FROM dbo.Device x WHERE x.TenantId = @TenantId AND x.ICCID = j.ICCID ORDER BY x.IsDeleted, x.Id) AS d
    ORDER BY j.Seq;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_Device_Get;
GO
CREATE PROCEDURE dbo.usp_Device_Get @TenantId BIGINT, @DeviceId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Id, TenantId, ServiceProviderId, ICCID, IMEI, MSISDN, DeviceStatusId, CarrierRatePlan, CommunicationPlan,
           Username, LastUsageDate, DataUsageMB, RevCustomerId, IsActive, IsDeleted, CustomerRatePlanId, CustomerRatePoolId, CustomerDataAllocationMB, EID
    FROM dbo.Device WHERE Id = @DeviceId AND TenantId = @TenantId;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_JasperCarrierRatePlan_List;
GO
CREATE PROCEDURE dbo.usp_JasperCarrierRatePlan_List @TenantId BIGINT, @ServiceProviderId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT p.Id, p.ServiceProviderId, p.RatePlanCode, p.PlanMB, p.BaseRate, p.JasperRatePlanId, p.PlanUuid
    FROM dbo.JasperCarrierRatePlan p JOIN dbo.ServiceProvider sp ON sp.Id = p.ServiceProviderId
    WHERE p.ServiceProviderId = @ServiceProviderId AND sp.TenantId = @TenantId AND p.IsActive = 1
    ORDER BY p.BaseRate, p.Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_ImeiRange_List;
GO
CREATE PROCEDURE dbo.usp_ImeiRange_List AS
BEGIN
    SET NOCOUNT ON;
    SELECT Manufacturer, Model, FromIMEI, ToIMEI, SIMType
    FROM dbo.IMEI_DeviceType_CarrierRatePlan WHERE IsActive = 1 ORDER BY Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_RevCustomer_Get;
GO
CREATE PROCEDURE dbo.usp_RevCustomer_Get @TenantId BIGINT, @RevCustomerId NVARCHAR(100) AS
BEGIN
    SET NOCOUNT ON;
    -- Exact match only (the legacy substring match is bug 23).
    SELECT Id, TenantId, RevCustomerId, Name FROM dbo.RevCustomer
    WHERE TenantId = @TenantId AND RevCustomerId = @RevCustomerId AND IsActive = 1;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_RevService_GetActive;
GO
CREATE PROCEDURE dbo.usp_RevService_GetActive @TenantId BIGINT, @DeviceId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT TOP (1) DeviceId, RevServiceId, RevCustomerId, IsActive FROM dbo.RevService
    WHERE TenantId = @TenantId AND DeviceId = @DeviceId AND IsActive = 1 ORDER BY Id DESC;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_RevService_Create_Service;
GO
CREATE PROCEDURE dbo.usp_RevService_Create_Service
    @TenantId BIGINT, @DeviceId BIGINT, @RevServiceId BIGINT, @RevCustomerId NVARCHAR(100), @IsActive BIT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- One active line per device (UX_RevService_ActiveDevice): the same line again is a no-op, another is refused.
    -- The device's lines are decided one writer at a time (the unique index stays the backstop).
    DECLARE @Resource NVARCHAR(100) = CONCAT(N'RevService:', @DeviceId);
    DECLARE @Lock INT;
    EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @Lock < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    DECLARE @Active BIGINT = (SELECT TOP (1) RevServiceId FROM dbo.RevService
                              WHERE DeviceId = @DeviceId AND TenantId = @TenantId AND IsActive = 1);
    IF @IsActive = 1 AND @Active IS NOT NULL AND @Active <> @RevServiceId
    BEGIN
        ROLLBACK TRANSACTION;
        DECLARE @Refused NVARCHAR(400) = CONCAT(N'device ', @DeviceId, N' already has active Rev.io service ', @Active,
                                                N'; service ', @RevServiceId, N' is not recorded');
        THROW 50409, @Refused, 1;
    END
    IF @IsActive = 0 OR @Active IS NULL
    BEGIN
        -- The row that made the line active is the one holding its creation (an undo closes that line).
        INSERT INTO dbo.RevService (TenantId, DeviceId, RevServiceId, RevCustomerId, IsActive, CreatedDate, CreatedByBulkChangeId, CreatedByRowId)
        SELECT @TenantId, d.Id, @RevServiceId, @RevCustomerId, @IsActive, @Now, c.BulkChangeId, c.RowId
        FROM dbo.Device d LEFT JOIN dbo.RevServiceCreation c ON c.DeviceId = d.Id AND c.TenantId = d.TenantId
        WHERE d.Id = @DeviceId AND d.TenantId = @TenantId;
        IF @IsActive = 1
            EXEC dbo.UPDATE_DEVICE_REV_SERVICE_LINKS @TenantId = @TenantId, @DeviceId = @DeviceId, @RevServiceId = @RevServiceId;
    END
    DELETE FROM dbo.RevServiceCreation WHERE DeviceId = @DeviceId AND TenantId = @TenantId;
    COMMIT TRANSACTION;
END
GO

-- A device has one active Rev.io service line: links other than the one just recorded are closed (none remain
-- since UX_RevService_ActiveDevice; kept under the seeds' name for the portal's callers).
DROP PROCEDURE IF EXISTS dbo.UPDATE_DEVICE_REV_SERVICE_LINKS;
GO
CREATE PROCEDURE dbo.UPDATE_DEVICE_REV_SERVICE_LINKS @TenantId BIGINT, @DeviceId BIGINT, @RevServiceId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.RevService SET IsActive = 0
    WHERE TenantId = @TenantId AND DeviceId = @DeviceId AND IsActive = 1 AND RevServiceId <> @RevServiceId;
END
GO

-- Before creating a device's Rev.io service line for a row: Outcome 'Active' (with the line), 'Create' (with
-- EarlierAttempt = 1 when an earlier attempt may have created it on Rev.io), or 'Busy' (another open row is
-- creating it, BusyBulkChangeId).
DROP PROCEDURE IF EXISTS dbo.usp_RevService_BeginCreation;
GO
CREATE PROCEDURE dbo.usp_RevService_BeginCreation
    @TenantId BIGINT, @DeviceId BIGINT, @RevCustomerId NVARCHAR(100), @BulkChangeId BIGINT, @RowId BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DECLARE @Resource NVARCHAR(100) = CONCAT(N'RevService:', @DeviceId);
    DECLARE @Lock INT;
    EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @Lock < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    IF EXISTS (SELECT 1 FROM dbo.RevService WHERE DeviceId = @DeviceId AND TenantId = @TenantId AND IsActive = 1)
    BEGIN
        COMMIT TRANSACTION;
        SELECT TOP (1) N'Active' AS Outcome, DeviceId, RevServiceId, RevCustomerId, IsActive, CAST(0 AS BIT) AS EarlierAttempt,
               CAST(NULL AS BIGINT) AS BusyBulkChangeId
        FROM dbo.RevService WHERE DeviceId = @DeviceId AND TenantId = @TenantId AND IsActive = 1;
        RETURN;
    END
    DECLARE @OwnerBulk BIGINT, @OwnerRow BIGINT;
    SELECT @OwnerBulk = BulkChangeId, @OwnerRow = RowId FROM dbo.RevServiceCreation
    WHERE DeviceId = @DeviceId AND TenantId = @TenantId;
    IF @OwnerBulk IS NOT NULL AND NOT (@OwnerBulk = @BulkChangeId AND @OwnerRow = @RowId)
       AND EXISTS (SELECT 1 FROM dbo.DeviceChangeLock WHERE BulkChangeId = @OwnerBulk AND RowId = @OwnerRow)
    BEGIN
        COMMIT TRANSACTION;
        SELECT N'Busy' AS Outcome, CAST(NULL AS BIGINT) AS DeviceId, CAST(NULL AS BIGINT) AS RevServiceId,
               CAST(NULL AS NVARCHAR(100)) AS RevCustomerId, CAST(NULL AS BIT) AS IsActive, CAST(0 AS BIT) AS EarlierAttempt,
               @OwnerBulk AS BusyBulkChangeId;
        RETURN;
    END
    UPDATE dbo.RevServiceCreation
    SET RevCustomerId = @RevCustomerId, BulkChangeId = @BulkChangeId, RowId = @RowId, Attempts = Attempts + 1, StartedDate = @Now
    WHERE DeviceId = @DeviceId AND TenantId = @TenantId;
    IF @@ROWCOUNT = 0
        INSERT INTO dbo.RevServiceCreation (DeviceId, TenantId, RevCustomerId, BulkChangeId, RowId, Attempts, StartedDate)
        VALUES (@DeviceId, @TenantId, @RevCustomerId, @BulkChangeId, @RowId, 1, @Now);
    COMMIT TRANSACTION;
    SELECT N'Create' AS Outcome, CAST(NULL AS BIGINT) AS DeviceId, CAST(NULL AS BIGINT) AS RevServiceId,
           CAST(NULL AS NVARCHAR(100)) AS RevCustomerId, CAST(NULL AS BIT) AS IsActive,
           CAST(CASE WHEN @OwnerBulk IS NULL THEN 0 ELSE 1 END AS BIT) AS EarlierAttempt, CAST(NULL AS BIGINT) AS BusyBulkChangeId;
END
GO

-- The device's active line @RevServiceId was closed on Rev.io (an undo of its assignment): Closed = 1 when it was
-- the active line and is closed now, 0 when it was not active (closed already).
DROP PROCEDURE IF EXISTS dbo.usp_RevService_Close;
GO
CREATE PROCEDURE dbo.usp_RevService_Close @TenantId BIGINT, @DeviceId BIGINT, @RevServiceId BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.RevService SET IsActive = 0, ClosedDate = @Now
    WHERE TenantId = @TenantId AND DeviceId = @DeviceId AND RevServiceId = @RevServiceId AND IsActive = 1;
    DECLARE @Closed INT = @@ROWCOUNT;
    SELECT CAST(CASE WHEN @Closed > 0 THEN 1 ELSE 0 END AS BIT) AS Closed;
END
GO

-- A username change's cost centers before the row sends the new ones (an undo sets them back), while @Worker holds
-- the row; the first value kept stays.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_KeepBeforeCostCenters;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_KeepBeforeCostCenters
    @BulkChangeId BIGINT, @RowId BIGINT, @Worker NVARCHAR(100), @CostCenters NVARCHAR(MAX) AS
BEGIN
    SET NOCOUNT ON;
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
        UPDATE dbo.Mobility_DeviceChange SET BeforeCostCenters = COALESCE(BeforeCostCenters, @CostCenters)
        WHERE Id = @RowId AND BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker;
    ELSE
        UPDATE dbo.M2M_DeviceChange SET BeforeCostCenters = COALESCE(BeforeCostCenters, @CostCenters)
        WHERE Id = @RowId AND BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_RevService_AbandonCreation;
GO
CREATE PROCEDURE dbo.usp_RevService_AbandonCreation @DeviceId BIGINT, @BulkChangeId BIGINT, @RowId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    DELETE FROM dbo.RevServiceCreation WHERE DeviceId = @DeviceId AND BulkChangeId = @BulkChangeId AND RowId = @RowId;
END
GO

-- A change type's name, as intake and the conflict messages spell it (domain::ChangeType::name).
DROP FUNCTION IF EXISTS dbo.fn_ChangeTypeName;
GO
CREATE FUNCTION dbo.fn_ChangeTypeName (@ChangeRequestTypeId BIGINT) RETURNS NVARCHAR(40) AS
BEGIN
    RETURN CASE @ChangeRequestTypeId
        WHEN 1 THEN N'CustomerAssignment' WHEN 2 THEN N'ActivateNewService' WHEN 3 THEN N'StatusUpdate'
        WHEN 4 THEN N'CustomerRatePlanChange' WHEN 5 THEN N'Archival' WHEN 6 THEN N'EditUsername'
        WHEN 7 THEN N'CarrierRatePlanChange' WHEN 8 THEN N'ChangeICCIDorIMEI' WHEN 9 THEN N'DeleteDevice'
        ELSE CONCAT(N'change type ', @ChangeRequestTypeId) END;
END
GO

-- The bulk change and all its rows in one transaction. @RowsJson: [{"Seq":0,"DeviceId":1,"ICCID":"...","MSISDN":null,
-- "Status":"PENDING","StatusDetails":null}, ...]; @AttributesJson: ["Status","CarrierRatePlan"], what each open row
-- holds on its device. A row whose device has an open row holding one of them becomes ERROR naming that bulk change
-- (decided under key-range locks on DeviceChangeLock, with its primary key as the backstop). A second open retry
-- of @RetryOfBulkChangeId is refused (error 50409). Returns the new Id, then the refused rows (ICCID, StatusDetails).
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Create;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Create
    @TenantId BIGINT, @ServiceProviderId BIGINT, @IntegrationId BIGINT, @ChangeRequestTypeId BIGINT, @PortalTypeId BIGINT,
    @ChangeRequest NVARCHAR(MAX), @CreatedBy NVARCHAR(200), @RowsJson NVARCHAR(MAX), @Now DATETIME2,
    @RetryOfBulkChangeId BIGINT = NULL, @AttributesJson NVARCHAR(MAX) = N'[]', @IdempotencyKey NVARCHAR(255) = NULL,
    @CanaryDevices INT = NULL, @NotifyUrl NVARCHAR(2048) = NULL, @NotifySecret NVARCHAR(200) = NULL AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- One creation at a time per tenant: the open-change check and the lock rows below are decided together (a
    -- device belongs to one tenant, so this serialises exactly the creations that can meet). The primary key of
    -- DeviceChangeLock and UX_DeviceBulkChange_OpenRetry stay the backstops.
    DECLARE @Resource NVARCHAR(100) = CONCAT(N'DeviceBulkChange_Create:', @TenantId);
    DECLARE @Lock INT;
    EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 30000;
    IF @Lock < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    IF @RetryOfBulkChangeId IS NOT NULL
    BEGIN
        DECLARE @OpenRetry BIGINT = (SELECT TOP (1) Id FROM dbo.DeviceBulkChange
                                     WHERE RetryOfBulkChangeId = @RetryOfBulkChangeId AND Status IN (N'NEW', N'PROCESSING', N'SCHEDULED', N'PAUSED'));
        IF @OpenRetry IS NOT NULL
        BEGIN
            ROLLBACK TRANSACTION;
            DECLARE @RetryRefused NVARCHAR(400) = CONCAT(N'bulk change ', @RetryOfBulkChangeId, N' already has an open retry: bulk change ',
                                                         @OpenRetry, N'; wait for it to finish');
            THROW 50409, @RetryRefused, 1;
        END
    END
    INSERT INTO dbo.DeviceBulkChange (TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId, Status, ChangeRequest, CreatedBy, CreatedDate, ModifiedDate, RetryOfBulkChangeId, CanaryDevices, NotifyUrl, NotifySecret)
    VALUES (@TenantId, @ServiceProviderId, @IntegrationId, @ChangeRequestTypeId, @PortalTypeId, N'NEW', @ChangeRequest, @CreatedBy, @Now, @Now, @RetryOfBulkChangeId, @CanaryDevices, @NotifyUrl, @NotifySecret);
    DECLARE @Id BIGINT = SCOPE_IDENTITY();
    DECLARE @Rows TABLE (Seq INT PRIMARY KEY, DeviceId BIGINT, ICCID NVARCHAR(64), MSISDN NVARCHAR(20), Status NVARCHAR(20), StatusDetails NVARCHAR(MAX),
                         EffectiveDate DATETIME2, CustomerRatePlanId BIGINT, CustomerRatePoolId BIGINT, DataAllocationMB FLOAT,
                         RowRequest NVARCHAR(MAX));
    INSERT INTO @Rows
    SELECT Seq, DeviceId, dbo.fn_JsonText(ICCID), dbo.fn_JsonText(MSISDN), Status, dbo.fn_JsonText(StatusDetails), EffectiveDate,
           CustomerRatePlanId, CustomerRatePoolId, DataAllocationMB, dbo.fn_JsonText(RowRequest)
    FROM OPENJSON(@RowsJson) WITH (Seq INT '$.Seq', DeviceId BIGINT '$.DeviceId', ICCID NVARCHAR(MAX) '$.ICCID', MSISDN NVARCHAR(MAX) '$.MSISDN',
                                            Status NVARCHAR(20) '$.Status', StatusDetails NVARCHAR(MAX) '$.StatusDetails',
                                            EffectiveDate DATETIME2 '$.EffectiveDate', CustomerRatePlanId BIGINT '$.CustomerRatePlanId',
                                            CustomerRatePoolId BIGINT '$.CustomerRatePoolId', DataAllocationMB FLOAT '$.DataAllocationMB',
                                            RowRequest NVARCHAR(MAX) '$.RowRequest');
    -- A retry takes only devices no other retry of the same bulk change took: the API read its candidates before
    -- this transaction, and an earlier retry may have been created (and even finished) since.
    IF @RetryOfBulkChangeId IS NOT NULL
    BEGIN
        DECLARE @RetriedBy BIGINT = (SELECT TOP (1) b.Id FROM dbo.DeviceBulkChange b JOIN dbo.M2M_DeviceChange r ON r.BulkChangeId = b.Id
                                     WHERE b.RetryOfBulkChangeId = @RetryOfBulkChangeId AND b.Id <> @Id AND r.ICCID IN (SELECT ICCID FROM @Rows));
        IF @RetriedBy IS NULL
            SET @RetriedBy = (SELECT TOP (1) b.Id FROM dbo.DeviceBulkChange b JOIN dbo.Mobility_DeviceChange r ON r.BulkChangeId = b.Id
                              WHERE b.RetryOfBulkChangeId = @RetryOfBulkChangeId AND b.Id <> @Id AND r.ICCID IN (SELECT ICCID FROM @Rows));
        IF @RetriedBy IS NOT NULL
        BEGIN
            ROLLBACK TRANSACTION;
            DECLARE @AlreadyRetried NVARCHAR(400) = CONCAT(N'bulk change ', @RetryOfBulkChangeId, N' was already retried by bulk change ',
                                                           @RetriedBy, N' for these devices; retry that one');
            THROW 50409, @AlreadyRetried, 1;
        END
    END
    DECLARE @Attributes TABLE (Attribute NVARCHAR(30) PRIMARY KEY);
    INSERT INTO @Attributes SELECT DISTINCT [value] FROM OPENJSON(@AttributesJson);
    -- Open rows whose device another bulk change holds: ERROR, naming the holder of the first attribute found.
    DECLARE @Held TABLE (Seq INT PRIMARY KEY, BulkChangeId BIGINT, ChangeRequestTypeId BIGINT);
    INSERT INTO @Held (Seq, BulkChangeId, ChangeRequestTypeId)
    SELECT h.Seq, h.BulkChangeId, h.ChangeRequestTypeId
    FROM (SELECT r.Seq, l.BulkChangeId, l.ChangeRequestTypeId, ROW_NUMBER() OVER (PARTITION BY r.Seq ORDER BY l.Attribute) AS n
          FROM @Rows r CROSS JOIN @Attributes a
          JOIN dbo.DeviceChangeLock l ON l.DeviceId = r.DeviceId AND l.Attribute = a.Attribute
          WHERE r.Status IN (N'PENDING', N'SCHEDULED') AND r.DeviceId IS NOT NULL) h
    WHERE h.n = 1;
    -- A device twice in this bulk change: its first open row holds it, the later ones are refused naming this one.
    INSERT INTO @Held (Seq, BulkChangeId, ChangeRequestTypeId)
    SELECT r.Seq, @Id, @ChangeRequestTypeId FROM @Rows r
    WHERE r.Status IN (N'PENDING', N'SCHEDULED') AND r.DeviceId IS NOT NULL AND EXISTS (SELECT 1 FROM @Attributes)
      AND NOT EXISTS (SELECT 1 FROM @Held h WHERE h.Seq = r.Seq)
      AND EXISTS (SELECT 1 FROM @Rows e WHERE e.DeviceId = r.DeviceId AND e.Seq < r.Seq AND e.Status IN (N'PENDING', N'SCHEDULED'));
    UPDATE r
    SET Status = N'ERROR', StatusDetails = CONCAT(N'device ', r.ICCID, N' has an open ', dbo.fn_ChangeTypeName(h.ChangeRequestTypeId),
                                                  N' in bulk change ', h.BulkChangeId)
    FROM @Rows r JOIN @Held h ON h.Seq = r.Seq;
    -- M2M rows in M2M_DeviceChange, Mobility rows (PortalType 2) in Mobility_DeviceChange. Both engines give the
    -- identities in the ORDER BY's order, so the n-th new row (by Id) is the n-th request row (by Seq).
    DECLARE @Created TABLE (Seq INT PRIMARY KEY, Id BIGINT, DeviceId BIGINT);
    IF @PortalTypeId = 2
    BEGIN
        INSERT INTO dbo.Mobility_DeviceChange (BulkChangeId, TenantId, DeviceId, ICCID, MSISDN, Status, StatusDetails, IsProcessed, ProcessedDate, CreatedDate, RowRequest)
        SELECT @Id, @TenantId, r.DeviceId, r.ICCID, r.MSISDN, r.Status, r.StatusDetails,
               CASE WHEN r.Status IN (N'PROCESSED', N'API_FAILED', N'ERROR', N'CANCELLED') THEN 1 ELSE 0 END,
               CASE WHEN r.Status IN (N'PROCESSED', N'API_FAILED', N'ERROR', N'CANCELLED') THEN @Now END, @Now, r.RowRequest
        FROM @Rows r ORDER BY r.Seq;
        INSERT INTO @Created (Seq, Id, DeviceId)
        SELECT r.Seq, c.Id, r.DeviceId
        FROM (SELECT Id, ROW_NUMBER() OVER (ORDER BY Id) AS n FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @Id) c
        JOIN (SELECT Seq, DeviceId, ROW_NUMBER() OVER (ORDER BY Seq) AS n FROM @Rows) r ON r.n = c.n;
    END
    ELSE
    BEGIN
        INSERT INTO dbo.M2M_DeviceChange (BulkChangeId, TenantId, DeviceId, ICCID, MSISDN, Status, StatusDetails, IsProcessed, ProcessedDate, CreatedDate, RowRequest)
        SELECT @Id, @TenantId, r.DeviceId, r.ICCID, r.MSISDN, r.Status, r.StatusDetails,
               CASE WHEN r.Status IN (N'PROCESSED', N'API_FAILED', N'ERROR', N'CANCELLED') THEN 1 ELSE 0 END,
               CASE WHEN r.Status IN (N'PROCESSED', N'API_FAILED', N'ERROR', N'CANCELLED') THEN @Now END, @Now, r.RowRequest
        FROM @Rows r ORDER BY r.Seq;
        INSERT INTO @Created (Seq, Id, DeviceId)
        SELECT r.Seq, c.Id, r.DeviceId
        FROM (SELECT Id, ROW_NUMBER() OVER (ORDER BY Id) AS n FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @Id) c
        JOIN (SELECT Seq, DeviceId, ROW_NUMBER() OVER (ORDER BY Seq) AS n FROM @Rows) r ON r.n = c.n;
    END
    INSERT INTO dbo.DeviceChangeLock (DeviceId, Attribute, BulkChangeId, RowId, ChangeRequestTypeId, TenantId, CreatedDate)
    SELECT c.DeviceId, a.Attribute, @Id, c.Id, @ChangeRequestTypeId, @TenantId, @Now
    FROM @Rows r JOIN @Created c ON c.Seq = r.Seq CROSS JOIN @Attributes a
    WHERE r.Status IN (N'PENDING', N'SCHEDULED') AND c.DeviceId IS NOT NULL;
    -- Future-dated customer rate plan rows wait in the queue until their date (all of them, not the first 100).
    INSERT INTO dbo.Device_CustomerRatePlanOrRatePool_Queue (DeviceId, M2MDeviceChangeId, BulkChangeId, CustomerRatePlanId, CustomerRatePoolId,
                CustomerDataAllocationMB, EffectiveDate, PortalType, TenantId, CreatedBy, CreatedDate)
    SELECT c.DeviceId, c.Id, @Id, r.CustomerRatePlanId, r.CustomerRatePoolId, r.DataAllocationMB, r.EffectiveDate, @PortalTypeId, @TenantId, @CreatedBy, @Now
    FROM @Rows r JOIN @Created c ON c.Seq = r.Seq
    WHERE r.EffectiveDate IS NOT NULL AND r.Status = N'SCHEDULED' AND c.DeviceId IS NOT NULL;
    IF @IdempotencyKey IS NOT NULL
        UPDATE dbo.IdempotencyKey SET BulkChangeId = @Id WHERE TenantId = @TenantId AND IdempotencyKey = @IdempotencyKey;
    COMMIT TRANSACTION;
    SELECT @Id AS Id;
    SELECT r.ICCID, r.StatusDetails FROM @Rows r JOIN @Held f ON f.Seq = r.Seq ORDER BY r.Seq;
END
GO

-- The open changes (locks) of some devices of a tenant: @DeviceIdsJson [1, 2, ...].
DROP PROCEDURE IF EXISTS dbo.usp_DeviceChangeLock_List;
GO
CREATE PROCEDURE dbo.usp_DeviceChangeLock_List @TenantId BIGINT, @DeviceIdsJson NVARCHAR(MAX) AS
BEGIN
    SET NOCOUNT ON;
    SELECT l.DeviceId, l.Attribute, l.BulkChangeId, l.ChangeRequestTypeId
    FROM (SELECT DISTINCT CAST([value] AS BIGINT) AS DeviceId FROM OPENJSON(@DeviceIdsJson)) j
    JOIN dbo.DeviceChangeLock l ON l.DeviceId = j.DeviceId AND l.TenantId = @TenantId
    ORDER BY l.DeviceId, l.Attribute;
END
GO

-- What a retry of a bulk change takes: its API_FAILED and ERROR rows that no later retry of it holds.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RetryCandidates;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RetryCandidates @TenantId BIGINT, @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    WITH rows_of AS (
        SELECT Id, BulkChangeId, TenantId, ICCID, Status FROM dbo.M2M_DeviceChange
        UNION ALL SELECT Id, BulkChangeId, TenantId, ICCID, Status FROM dbo.Mobility_DeviceChange)
    SELECT r.ICCID FROM rows_of r
    WHERE r.BulkChangeId = @BulkChangeId AND r.TenantId = @TenantId AND r.Status IN (N'API_FAILED', N'ERROR')
      AND NOT EXISTS (SELECT 1 FROM dbo.DeviceBulkChange b JOIN rows_of l ON l.BulkChangeId = b.Id
                      WHERE b.RetryOfBulkChangeId = @BulkChangeId AND b.TenantId = @TenantId AND l.ICCID = r.ICCID)
    ORDER BY r.Id;
END
GO

-- Reserves an Idempotency-Key, or says what became of it: Outcome 'New', 'Replay' (ResponseStatus, ResponseBody),
-- 'Mismatch' or 'InProgress' (BulkChangeId, CreatedDate). Expired keys and stale reservations are taken over.
DROP PROCEDURE IF EXISTS dbo.usp_IdempotencyKey_Begin;
GO
CREATE PROCEDURE dbo.usp_IdempotencyKey_Begin
    @TenantId BIGINT, @IdempotencyKey NVARCHAR(255), @RequestHash NVARCHAR(64), @Now DATETIME2, @StaleBefore DATETIME2,
    @ExpiredBefore DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- One request at a time per key (the primary key stays the backstop).
    DECLARE @Resource NVARCHAR(300) = CONCAT(N'IdempotencyKey:', @TenantId, N':', @IdempotencyKey);
    DECLARE @Lock INT;
    EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @Lock < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    DECLARE @Hash NVARCHAR(64), @BulkChangeId BIGINT, @Status INT, @Body NVARCHAR(MAX), @Created DATETIME2, @Outcome NVARCHAR(20) = N'New';
    SELECT @Hash = RequestHash, @BulkChangeId = BulkChangeId, @Status = ResponseStatus, @Body = ResponseBody, @Created = CreatedDate
    FROM dbo.IdempotencyKey WHERE TenantId = @TenantId AND IdempotencyKey = @IdempotencyKey;
    IF @Created IS NOT NULL AND @Created >= @ExpiredBefore
        SET @Outcome = CASE
            WHEN @Hash <> @RequestHash THEN N'Mismatch'
            WHEN @Status IS NOT NULL AND @Body IS NOT NULL THEN N'Replay'
            WHEN @BulkChangeId IS NULL AND @Created < @StaleBefore THEN N'New'
            ELSE N'InProgress' END;
    IF @Outcome = N'New'
    BEGIN
        UPDATE dbo.IdempotencyKey
        SET RequestHash = @RequestHash, BulkChangeId = NULL, ResponseStatus = NULL, ResponseBody = NULL, CreatedDate = @Now
        WHERE TenantId = @TenantId AND IdempotencyKey = @IdempotencyKey;
        IF @@ROWCOUNT = 0
            INSERT INTO dbo.IdempotencyKey (TenantId, IdempotencyKey, RequestHash, CreatedDate) VALUES (@TenantId, @IdempotencyKey, @RequestHash, @Now);
    END
    COMMIT TRANSACTION;
    SELECT @Outcome AS Outcome, @Status AS ResponseStatus, @Body AS ResponseBody, @BulkChangeId AS BulkChangeId, @Created AS CreatedDate;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_IdempotencyKey_Finish;
GO
CREATE PROCEDURE dbo.usp_IdempotencyKey_Finish
    @TenantId BIGINT, @IdempotencyKey NVARCHAR(255), @ResponseStatus INT, @ResponseBody NVARCHAR(MAX) AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.IdempotencyKey SET ResponseStatus = @ResponseStatus, ResponseBody = @ResponseBody
    WHERE TenantId = @TenantId AND IdempotencyKey = @IdempotencyKey;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_IdempotencyKey_Abandon;
GO
CREATE PROCEDURE dbo.usp_IdempotencyKey_Abandon @TenantId BIGINT, @IdempotencyKey NVARCHAR(255) AS
BEGIN
    SET NOCOUNT ON;
    DELETE FROM dbo.IdempotencyKey
    WHERE TenantId = @TenantId AND IdempotencyKey = @IdempotencyKey AND BulkChangeId IS NULL AND ResponseStatus IS NULL;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_IdempotencyKey_Purge;
GO
CREATE PROCEDURE dbo.usp_IdempotencyKey_Purge @Before DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    DELETE FROM dbo.IdempotencyKey WHERE CreatedDate < @Before;
    SELECT @@ROWCOUNT AS Purged;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Get;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Get @TenantId BIGINT = NULL, @Id BIGINT AS
BEGIN
    SET NOCOUNT ON;
    -- @TenantId NULL is the worker's system context (it then acts only within the bulk change's own tenant).
    SELECT Id, TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId, Status, ChangeRequest, CreatedBy, CreatedDate, ProcessedDate, RetryOfBulkChangeId
    FROM dbo.DeviceBulkChange WHERE Id = @Id AND (@TenantId IS NULL OR TenantId = @TenantId);
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_List;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_List
    @TenantId BIGINT, @Status NVARCHAR(20) = NULL, @ChangeRequestTypeId BIGINT = NULL, @Offset INT, @PageSize INT AS
BEGIN
    SET NOCOUNT ON;
    SELECT COUNT_BIG(*) AS Total FROM dbo.DeviceBulkChange
    WHERE TenantId = @TenantId AND (@Status IS NULL OR Status = @Status) AND (@ChangeRequestTypeId IS NULL OR ChangeRequestTypeId = @ChangeRequestTypeId);
    SELECT Id, TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId, Status, ChangeRequest, CreatedBy, CreatedDate, ProcessedDate, RetryOfBulkChangeId
    FROM dbo.DeviceBulkChange
    WHERE TenantId = @TenantId AND (@Status IS NULL OR Status = @Status) AND (@ChangeRequestTypeId IS NULL OR ChangeRequestTypeId = @ChangeRequestTypeId)
    ORDER BY Id DESC OFFSET @Offset ROWS FETCH NEXT @PageSize ROWS ONLY;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RowCounts;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RowCounts @TenantId BIGINT, @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Status, COUNT_BIG(*) AS [Count]
    FROM (SELECT Status, TenantId FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId
          UNION ALL
          SELECT Status, TenantId FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId) r
    WHERE TenantId = @TenantId GROUP BY Status ORDER BY Status;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Rows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Rows
    @TenantId BIGINT, @BulkChangeId BIGINT, @Status NVARCHAR(20) = NULL, @Offset INT, @PageSize INT AS
BEGIN
    SET NOCOUNT ON;
    -- A bulk change's rows are all in one of the two tables; the union reads whichever holds them.
    SELECT Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult
    FROM (SELECT Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult, TenantId
          FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId
          UNION ALL
          SELECT Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult, TenantId
          FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId) r
    WHERE TenantId = @TenantId AND (@Status IS NULL OR Status = @Status)
    ORDER BY Id OFFSET @Offset ROWS FETCH NEXT @PageSize ROWS ONLY;
END
GO

-- Up to @Limit rows with an Id above @AfterId, in Id order (the results export pages this way: an offset over a
-- filtered set that shrinks while the bulk change runs skips rows).
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RowsAfter;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RowsAfter
    @TenantId BIGINT, @BulkChangeId BIGINT, @Status NVARCHAR(20) = NULL, @AfterId BIGINT, @Limit INT AS
BEGIN
    SET NOCOUNT ON;
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId AND TenantId = @TenantId) = 2
        SELECT TOP (@Limit) Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId,
               CarrierRequestedAt, CarrierResult
        FROM dbo.Mobility_DeviceChange
        WHERE BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND (@Status IS NULL OR Status = @Status) AND Id > @AfterId
        ORDER BY Id;
    ELSE
        SELECT TOP (@Limit) Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId,
               CarrierRequestedAt, CarrierResult
        FROM dbo.M2M_DeviceChange
        WHERE BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND (@Status IS NULL OR Status = @Status) AND Id > @AfterId
        ORDER BY Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChangeLog_List;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChangeLog_List @TenantId BIGINT, @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT l.BulkChangeId, COALESCE(l.M2MDeviceChangeId, l.MobilityDeviceChangeId) AS M2MDeviceChangeId, l.LogEntryDescription,
           l.RequestText, l.ResponseText, l.ResponseStatus, l.HasErrors, l.ErrorText, l.ProcessedDate
    FROM dbo.DeviceBulkChangeLog l JOIN dbo.DeviceBulkChange b ON b.Id = l.BulkChangeId
    WHERE l.BulkChangeId = @BulkChangeId AND b.TenantId = @TenantId ORDER BY l.Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_MarkProcessing;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_MarkProcessing @BulkChangeId BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange SET Status = N'PROCESSING', ModifiedDate = @Now
    WHERE Id = @BulkChangeId AND Status IN (N'NEW', N'PROCESSING', N'SCHEDULED');
END
GO

-- Claims up to @Limit rows: first those whose lease expired (their worker died: they have waited longest), then
-- PENDING ones, each in Id order. The candidates are picked into dbo.ClaimWork first, each kind by its own range of
-- IX_M2M_DeviceChange_Claim (004_claim_index.sql), and updated by key within the range of their Ids: plans that
-- hold whatever the statistics say (one UPDATE with an OR and a TOP subquery was planned on Babelfish as a nested
-- loop over every row of the bulk change, 57 ms a claim of 64 from 10,000; the update by key alone, as a scan of
-- the table while a new bulk change had no statistics yet, 40-100 ms). The UPDATE repeats the claim condition in its own WHERE, so a row another connection claimed
-- first is skipped, never claimed twice; on SQL Server the hints only let concurrent workers skip each other's
-- locked rows instead of waiting.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_ClaimRows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_ClaimRows
    @BulkChangeId BIGINT, @Worker NVARCHAR(100), @Limit INT, @LeaseUntil DATETIME2, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- One claim of a bulk change at a time, and never across a pause (usp_DeviceBulkChange_Pause takes the same
    -- lock): a claim that read the status before a pause commits its rows before the pause counts its rows in flight,
    -- and a claim after the pause reads PAUSED. (Babelfish ignores the table hints below, so the lock decides.)
    DECLARE @ClaimLock NVARCHAR(100) = CONCAT(N'BulkChangeClaim:', @BulkChangeId), @ClaimLocked INT;
    EXEC @ClaimLocked = sp_getapplock @Resource = @ClaimLock, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @ClaimLocked < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    -- dbo.ClaimWork, not a table variable: 003_work_tables.sql says why. @Pick: the candidates; @G: the claimed.
    DECLARE @Pick UNIQUEIDENTIFIER = NEWID(), @G UNIQUEIDENTIFIER = NEWID(), @Room INT, @Lo BIGINT, @Hi BIGINT;
    -- Rollout control: no PENDING row of a paused or aborted bulk change (its rows in flight whose lease ended are
    -- still taken, to be settled); a canary's PENDING rows only while fewer than its devices were ever claimed.
    DECLARE @Status NVARCHAR(20), @Aborted NVARCHAR(400), @Canary INT, @CanaryPassed DATETIME2, @PendingRoom INT = @Limit;
    SELECT @Status = Status, @Aborted = AbortedReason, @Canary = CanaryDevices, @CanaryPassed = CanaryPassedDate
    FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId;
    IF @Status = N'PAUSED' OR @Aborted IS NOT NULL SET @PendingRoom = 0;
    ELSE IF @Canary IS NOT NULL AND @CanaryPassed IS NULL
    BEGIN
        DECLARE @Started INT = (SELECT COUNT(*) FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Claims > 0)
                             + (SELECT COUNT(*) FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Claims > 0);
        SET @PendingRoom = CASE WHEN @Canary - @Started < 0 THEN 0 ELSE @Canary - @Started END;
    END
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
    BEGIN
        INSERT INTO dbo.ClaimWork (GroupId, Id)
        SELECT TOP (@Limit) @Pick, Id FROM dbo.Mobility_DeviceChange WITH (UPDLOCK, READPAST, ROWLOCK)
        WHERE BulkChangeId = @BulkChangeId AND Status = N'PROCESSING' AND LeaseUntil < @Now ORDER BY Id;
        SET @Room = @Limit - @@ROWCOUNT;
        IF @Room > @PendingRoom SET @Room = @PendingRoom;
        IF @Room > 0
            INSERT INTO dbo.ClaimWork (GroupId, Id)
            SELECT TOP (@Room) @Pick, Id FROM dbo.Mobility_DeviceChange WITH (UPDLOCK, READPAST, ROWLOCK)
            WHERE BulkChangeId = @BulkChangeId AND Status = N'PENDING' ORDER BY Id;
        SELECT @Lo = MIN(Id), @Hi = MAX(Id) FROM dbo.ClaimWork WHERE GroupId = @Pick;
        UPDATE dbo.Mobility_DeviceChange SET Status = N'PROCESSING', LeaseOwner = @Worker, LeaseUntil = @LeaseUntil, Claims = Claims + 1
        OUTPUT @G, inserted.Id, inserted.BulkChangeId, inserted.DeviceId, inserted.ICCID, inserted.MSISDN, inserted.Status,
               inserted.StatusDetails, inserted.Claims, inserted.ProcessedDate, inserted.CarrierRequestId,
               inserted.CarrierRequestedAt, inserted.CarrierResult, inserted.RowRequest
        INTO dbo.ClaimWork (GroupId, Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate,
                            CarrierRequestId, CarrierRequestedAt, CarrierResult, RowRequest)
        WHERE Id BETWEEN @Lo AND @Hi AND BulkChangeId = @BulkChangeId
          AND (Status = N'PENDING' OR (Status = N'PROCESSING' AND LeaseUntil < @Now))
          AND Id IN (SELECT Id FROM dbo.ClaimWork WHERE GroupId = @Pick);
    END
    ELSE
    BEGIN
        INSERT INTO dbo.ClaimWork (GroupId, Id)
        SELECT TOP (@Limit) @Pick, Id FROM dbo.M2M_DeviceChange WITH (UPDLOCK, READPAST, ROWLOCK)
        WHERE BulkChangeId = @BulkChangeId AND Status = N'PROCESSING' AND LeaseUntil < @Now ORDER BY Id;
        SET @Room = @Limit - @@ROWCOUNT;
        IF @Room > @PendingRoom SET @Room = @PendingRoom;
        IF @Room > 0
            INSERT INTO dbo.ClaimWork (GroupId, Id)
            SELECT TOP (@Room) @Pick, Id FROM dbo.M2M_DeviceChange WITH (UPDLOCK, READPAST, ROWLOCK)
            WHERE BulkChangeId = @BulkChangeId AND Status = N'PENDING' ORDER BY Id;
        SELECT @Lo = MIN(Id), @Hi = MAX(Id) FROM dbo.ClaimWork WHERE GroupId = @Pick;
        UPDATE dbo.M2M_DeviceChange SET Status = N'PROCESSING', LeaseOwner = @Worker, LeaseUntil = @LeaseUntil, Claims = Claims + 1
        OUTPUT @G, inserted.Id, inserted.BulkChangeId, inserted.DeviceId, inserted.ICCID, inserted.MSISDN, inserted.Status,
               inserted.StatusDetails, inserted.Claims, inserted.ProcessedDate, inserted.CarrierRequestId,
               inserted.CarrierRequestedAt, inserted.CarrierResult, inserted.RowRequest
        INTO dbo.ClaimWork (GroupId, Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate,
                            CarrierRequestId, CarrierRequestedAt, CarrierResult, RowRequest)
        WHERE Id BETWEEN @Lo AND @Hi AND BulkChangeId = @BulkChangeId
          AND (Status = N'PENDING' OR (Status = N'PROCESSING' AND LeaseUntil < @Now))
          AND Id IN (SELECT Id FROM dbo.ClaimWork WHERE GroupId = @Pick);
    END
    IF EXISTS (SELECT 1 FROM dbo.ClaimWork WHERE GroupId = @G)
        UPDATE dbo.DeviceBulkChange SET ModifiedDate = @Now WHERE Id = @BulkChangeId;
    SELECT Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt,
           CarrierResult, RowRequest
    FROM dbo.ClaimWork WHERE GroupId = @G ORDER BY Id;
    -- The claimed rows' devices in the bulk change's tenant: the worker needs no request per row to read them.
    SELECT d.Id, d.TenantId, d.ServiceProviderId, d.ICCID, d.IMEI, d.MSISDN, d.DeviceStatusId, d.CarrierRatePlan,
           d.CommunicationPlan, d.Username, d.LastUsageDate, d.DataUsageMB, d.RevCustomerId, d.IsActive, d.IsDeleted,
           d.CustomerRatePlanId, d.CustomerRatePoolId, d.CustomerDataAllocationMB, d.EID
    FROM dbo.Device d JOIN dbo.DeviceBulkChange b ON b.Id = @BulkChangeId AND d.TenantId = b.TenantId
    WHERE d.Id IN (SELECT DeviceId FROM dbo.ClaimWork WHERE GroupId = @G);
    DELETE FROM dbo.ClaimWork WHERE GroupId IN (@G, @Pick);
    COMMIT TRANSACTION;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChangeLog_Add;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChangeLog_Add
    @BulkChangeId BIGINT, @M2MDeviceChangeId BIGINT = NULL, @LogEntryDescription NVARCHAR(500), @RequestText NVARCHAR(MAX),
    @ResponseText NVARCHAR(MAX), @ResponseStatus NVARCHAR(50), @HasErrors BIT, @ErrorText NVARCHAR(MAX) = NULL,
    @ProcessBy NVARCHAR(100), @ProcessedDate DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    -- @M2MDeviceChangeId is the row of the bulk change's own table: Mobility rows go to MobilityDeviceChangeId.
    INSERT INTO dbo.DeviceBulkChangeLog (BulkChangeId, M2MDeviceChangeId, MobilityDeviceChangeId, LogEntryDescription, RequestText, ResponseText,
                                         ResponseStatus, HasErrors, ErrorText, ProcessBy, ProcessedDate)
    SELECT @BulkChangeId, CASE WHEN b.PortalTypeId = 2 THEN NULL ELSE @M2MDeviceChangeId END,
           CASE WHEN b.PortalTypeId = 2 THEN @M2MDeviceChangeId END, @LogEntryDescription, @RequestText, @ResponseText,
           @ResponseStatus, @HasErrors, @ErrorText, @ProcessBy, @ProcessedDate
    FROM dbo.DeviceBulkChange b WHERE b.Id = @BulkChangeId;
END
GO

-- A row's final outcome, written only while @Worker holds its lease and the row is not final, with the
-- device update in the same transaction. Returns Completed = 1, or 0 when nothing was changed.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords
    @TenantId BIGINT, @BulkChangeId BIGINT, @ChangeDetailId BIGINT, @Worker NVARCHAR(100), @Status NVARCHAR(20), @StatusDetails NVARCHAR(MAX),
    @NewDeviceStatusId BIGINT = NULL, @CarrierRatePlan NVARCHAR(200) = NULL, @CommunicationPlan NVARCHAR(200) = NULL,
    @RevCustomerId NVARCHAR(100) = NULL, @Username NVARCHAR(200) = NULL, @Archive BIT = 0,
    @CustomerRatePlanId BIGINT = NULL, @CustomerRatePoolId BIGINT = NULL, @CustomerDataAllocationMB FLOAT = NULL,
    @NewICCID NVARCHAR(25) = NULL, @NewIMEI NVARCHAR(20) = NULL, @NewMSISDN NVARCHAR(20) = NULL, @IpAddress NVARCHAR(64) = NULL,
    @HistoryDetails NVARCHAR(MAX) = NULL, @ProcessedBy NVARCHAR(100), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DECLARE @Done TABLE (DeviceId BIGINT);
    -- The row is in its bulk change's table (M2M, or Mobility for PortalType 2).
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
        UPDATE dbo.Mobility_DeviceChange
        SET Status = @Status, StatusDetails = @StatusDetails, IsProcessed = 1, ProcessedDate = @Now, LeaseOwner = NULL, LeaseUntil = NULL
        OUTPUT inserted.DeviceId INTO @Done
        WHERE Id = @ChangeDetailId AND BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND LeaseOwner = @Worker AND Status = N'PROCESSING';
    ELSE
        UPDATE dbo.M2M_DeviceChange
        SET Status = @Status, StatusDetails = @StatusDetails, IsProcessed = 1, ProcessedDate = @Now, LeaseOwner = NULL, LeaseUntil = NULL
        OUTPUT inserted.DeviceId INTO @Done
        WHERE Id = @ChangeDetailId AND BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND LeaseOwner = @Worker AND Status = N'PROCESSING';
    DECLARE @Completed BIT = CASE WHEN EXISTS (SELECT 1 FROM @Done) THEN 1 ELSE 0 END;
    DECLARE @DeviceId BIGINT = (SELECT TOP (1) DeviceId FROM @Done);
    IF @Completed = 1 AND @DeviceId IS NOT NULL AND @Status = N'PROCESSED'
    BEGIN
        -- What the device was, just before this row's change is applied below (an undo sets it back).
        DECLARE @BStatus BIGINT, @BPlan NVARCHAR(200), @BComm NVARCHAR(200), @BCustomer NVARCHAR(100), @BUser NVARCHAR(200),
                @BRatePlan BIGINT, @BRatePool BIGINT, @BAlloc FLOAT, @BIccid NVARCHAR(25), @BImei NVARCHAR(20);
        SELECT @BStatus = DeviceStatusId, @BPlan = CarrierRatePlan, @BComm = CommunicationPlan, @BCustomer = RevCustomerId,
               @BUser = Username, @BRatePlan = CustomerRatePlanId, @BRatePool = CustomerRatePoolId, @BAlloc = CustomerDataAllocationMB,
               @BIccid = ICCID, @BImei = IMEI
        FROM dbo.Device WHERE Id = @DeviceId AND TenantId = @TenantId;
        IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
            UPDATE dbo.Mobility_DeviceChange
            SET BeforeDeviceStatusId = @BStatus, BeforeCarrierRatePlan = @BPlan, BeforeCommunicationPlan = @BComm,
                BeforeRevCustomerId = @BCustomer, BeforeUsername = @BUser, BeforeCustomerRatePlanId = @BRatePlan,
                BeforeCustomerRatePoolId = @BRatePool, BeforeDataAllocationMB = @BAlloc, BeforeICCID = @BIccid, BeforeIMEI = @BImei
            WHERE Id = @ChangeDetailId;
        ELSE
            UPDATE dbo.M2M_DeviceChange
            SET BeforeDeviceStatusId = @BStatus, BeforeCarrierRatePlan = @BPlan, BeforeCommunicationPlan = @BComm,
                BeforeRevCustomerId = @BCustomer, BeforeUsername = @BUser, BeforeCustomerRatePlanId = @BRatePlan,
                BeforeCustomerRatePoolId = @BRatePool, BeforeDataAllocationMB = @BAlloc, BeforeICCID = @BIccid, BeforeIMEI = @BImei
            WHERE Id = @ChangeDetailId;
    END
    IF @Completed = 1 AND @DeviceId IS NOT NULL
    BEGIN
        IF @NewDeviceStatusId IS NOT NULL OR @CarrierRatePlan IS NOT NULL OR @CommunicationPlan IS NOT NULL OR @RevCustomerId IS NOT NULL
           OR @Username IS NOT NULL OR @Archive = 1 OR @NewICCID IS NOT NULL OR @NewIMEI IS NOT NULL
           OR @NewMSISDN IS NOT NULL OR @IpAddress IS NOT NULL
            UPDATE dbo.Device
            SET DeviceStatusId = COALESCE(@NewDeviceStatusId, DeviceStatusId), CarrierRatePlan = COALESCE(@CarrierRatePlan, CarrierRatePlan),
                CommunicationPlan = COALESCE(@CommunicationPlan, CommunicationPlan),
                RevCustomerId = CASE WHEN @RevCustomerId = N'' THEN NULL ELSE COALESCE(@RevCustomerId, RevCustomerId) END,
                Username = COALESCE(@Username, Username), ICCID = COALESCE(@NewICCID, ICCID), IMEI = COALESCE(@NewIMEI, IMEI),
                MSISDN = COALESCE(@NewMSISDN, MSISDN), IpAddress = COALESCE(@IpAddress, IpAddress),
                IsActive = CASE WHEN @Archive = 1 THEN 0 ELSE IsActive END, IsDeleted = CASE WHEN @Archive = 1 THEN 1 ELSE IsDeleted END,
                ModifiedBy = @ProcessedBy, ModifiedDate = @Now
            WHERE Id = @DeviceId AND TenantId = @TenantId;
        IF @CustomerRatePlanId IS NOT NULL OR @CustomerRatePoolId IS NOT NULL OR @CustomerDataAllocationMB IS NOT NULL
            UPDATE dbo.Device
            SET CustomerRatePlanId = COALESCE(@CustomerRatePlanId, CustomerRatePlanId), CustomerRatePoolId = COALESCE(@CustomerRatePoolId, CustomerRatePoolId),
                CustomerDataAllocationMB = COALESCE(@CustomerDataAllocationMB, CustomerDataAllocationMB)
            WHERE Id = @DeviceId AND TenantId = @TenantId;
        IF @RevCustomerId IS NOT NULL
        BEGIN
            -- Update, else insert (no MERGE: it has known race and correctness bugs, and Babelfish lacks it). Only
            -- the row holding the device's Billing lock gets here, and UQ_Device_Tenant is the backstop.
            UPDATE dbo.Device_Tenant
            SET RevCustomerId = NULLIF(@RevCustomerId, N''), IsActive = 1, IsDeleted = 0, ModifiedBy = @ProcessedBy, ModifiedDate = @Now
            WHERE DeviceId = @DeviceId AND TenantId = @TenantId;
            IF @@ROWCOUNT = 0
                INSERT INTO dbo.Device_Tenant (DeviceId, TenantId, RevCustomerId, IsActive, IsDeleted, ModifiedBy, ModifiedDate)
                VALUES (@DeviceId, @TenantId, NULLIF(@RevCustomerId, N''), 1, 0, @ProcessedBy, @Now);
            IF @HistoryDetails IS NOT NULL
            EXEC dbo.usp_UpdateCrossProviderDeviceHistory @TenantId = @TenantId, @DeviceId = @DeviceId, @BulkChangeId = @BulkChangeId,
                 @Action = N'CustomerAssignment', @Details = @HistoryDetails, @ActionBy = @ProcessedBy, @Now = @Now;
        END
    END
    IF @Completed = 1
        UPDATE dbo.Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedBy = @ProcessedBy, ModifiedDate = @Now
        WHERE BulkChangeId = @BulkChangeId AND M2MDeviceChangeId = @ChangeDetailId AND IsActive = 1;
    COMMIT TRANSACTION;
    SELECT @Completed AS Completed;
END
GO

-- A group of rows' outcomes in one transaction (the worker's group commit), each under the rules of
-- usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords, set-based: a row is written only while @Worker holds it and
-- it is not final, with its device update, Rev customer assignment and queued change. Texts in @RowsJson are
-- percent-encoded (dbo.fn_JsonText). A group that would update one device twice is refused whole (error 50510): the
-- caller records its rows one by one. Returns Seq and Completed of every row, in order.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_CompleteRows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_CompleteRows @Worker NVARCHAR(100), @ProcessedBy NVARCHAR(100), @RowsJson NVARCHAR(MAX) AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    -- The group's rows live in dbo.CompletionWork under @G for the length of the transaction (003_work_tables.sql
    -- says why not a table variable); a rollback takes them away with everything else.
    DECLARE @G UNIQUEIDENTIFIER = NEWID();
    BEGIN TRANSACTION;
    INSERT INTO dbo.CompletionWork (GroupId, Seq, TenantId, BulkChangeId, RowId, Mobility, Status, StatusDetails, NewDeviceStatusId, CarrierRatePlan,
                                    CommunicationPlan, RevCustomerId, Username, Archive, CustomerRatePlanId, CustomerRatePoolId, CustomerDataAllocationMB,
                                    NewICCID, NewIMEI, NewMSISDN, IpAddress, HistoryDetails, Now, DeviceId, Completed)
    SELECT @G, j.Seq, j.TenantId, j.BulkChangeId, j.RowId, CASE WHEN b.PortalTypeId = 2 THEN 1 ELSE 0 END, j.Status, CASE WHEN CHARINDEX(N'%', j.StatusDetails) > 0 THEN dbo.fn_JsonText(j.StatusDetails) ELSE j.StatusDetails END,
           j.NewDeviceStatusId, CASE WHEN CHARINDEX(N'%', j.CarrierRatePlan) > 0 THEN dbo.fn_JsonText(j.CarrierRatePlan) ELSE j.CarrierRatePlan END, CASE WHEN CHARINDEX(N'%', j.CommunicationPlan) > 0 THEN dbo.fn_JsonText(j.CommunicationPlan) ELSE j.CommunicationPlan END,
           CASE WHEN CHARINDEX(N'%', j.RevCustomerId) > 0 THEN dbo.fn_JsonText(j.RevCustomerId) ELSE j.RevCustomerId END, CASE WHEN CHARINDEX(N'%', j.Username) > 0 THEN dbo.fn_JsonText(j.Username) ELSE j.Username END, j.Archive, j.CustomerRatePlanId, j.CustomerRatePoolId,
           j.CustomerDataAllocationMB, CASE WHEN CHARINDEX(N'%', j.NewICCID) > 0 THEN dbo.fn_JsonText(j.NewICCID) ELSE j.NewICCID END, CASE WHEN CHARINDEX(N'%', j.NewIMEI) > 0 THEN dbo.fn_JsonText(j.NewIMEI) ELSE j.NewIMEI END, CASE WHEN CHARINDEX(N'%', j.NewMSISDN) > 0 THEN dbo.fn_JsonText(j.NewMSISDN) ELSE j.NewMSISDN END,
           CASE WHEN CHARINDEX(N'%', j.IpAddress) > 0 THEN dbo.fn_JsonText(j.IpAddress) ELSE j.IpAddress END,
           CASE WHEN CHARINDEX(N'%', j.HistoryDetails) > 0 THEN dbo.fn_JsonText(j.HistoryDetails) ELSE j.HistoryDetails END, j.Now, NULL, 0
    FROM OPENJSON(@RowsJson) WITH (Seq INT '$.Seq', TenantId BIGINT '$.TenantId', BulkChangeId BIGINT '$.BulkChangeId', RowId BIGINT '$.RowId',
             Status NVARCHAR(20) '$.Status', StatusDetails NVARCHAR(MAX) '$.StatusDetails', NewDeviceStatusId BIGINT '$.NewDeviceStatusId',
             CarrierRatePlan NVARCHAR(MAX) '$.CarrierRatePlan', CommunicationPlan NVARCHAR(MAX) '$.CommunicationPlan',
             RevCustomerId NVARCHAR(MAX) '$.RevCustomerId', Username NVARCHAR(MAX) '$.Username', Archive BIT '$.Archive',
             CustomerRatePlanId BIGINT '$.CustomerRatePlanId', CustomerRatePoolId BIGINT '$.CustomerRatePoolId',
             CustomerDataAllocationMB FLOAT '$.CustomerDataAllocationMB', NewICCID NVARCHAR(MAX) '$.NewICCID', NewIMEI NVARCHAR(MAX) '$.NewIMEI',
             NewMSISDN NVARCHAR(MAX) '$.NewMSISDN', IpAddress NVARCHAR(MAX) '$.IpAddress', HistoryDetails NVARCHAR(MAX) '$.HistoryDetails',
             Now DATETIME2 '$.Now') AS j
    LEFT JOIN dbo.DeviceBulkChange b ON b.Id = j.BulkChangeId;
    -- The lock usp_DeviceBulkChange_RenewLeases takes, per bulk change, in order: a renewal's one statement over
    -- all the worker's rows and this group's statements would otherwise lock the same rows in other orders.
    DECLARE @Resource NVARCHAR(255), @Lock INT, @Bulk BIGINT = (SELECT MIN(BulkChangeId) FROM dbo.CompletionWork WHERE GroupId = @G);
    WHILE @Bulk IS NOT NULL
    BEGIN
        SET @Resource = CONCAT(N'Leases:', @Bulk, N':', @Worker);
        EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
        IF @Lock < 0
        BEGIN
            ROLLBACK TRANSACTION;
            THROW 50503, N'the database is busy: try again', 1;
        END
        SET @Bulk = (SELECT MIN(BulkChangeId) FROM dbo.CompletionWork WHERE GroupId = @G AND BulkChangeId > @Bulk);
    END
    UPDATE dbo.M2M_DeviceChange
    SET Status = (SELECT r.Status FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 0 AND r.RowId = dbo.M2M_DeviceChange.Id),
        StatusDetails = (SELECT r.StatusDetails FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 0 AND r.RowId = dbo.M2M_DeviceChange.Id),
        ProcessedDate = (SELECT r.Now FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 0 AND r.RowId = dbo.M2M_DeviceChange.Id),
        IsProcessed = 1, LeaseOwner = NULL, LeaseUntil = NULL
    OUTPUT @G, 0, inserted.Id, inserted.DeviceId INTO dbo.CompletionDone (GroupId, Mobility, Id, DeviceId)
    WHERE LeaseOwner = @Worker AND Status = N'PROCESSING'
      AND EXISTS (SELECT 1 FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 0 AND r.RowId = dbo.M2M_DeviceChange.Id
                  AND r.BulkChangeId = dbo.M2M_DeviceChange.BulkChangeId AND r.TenantId = dbo.M2M_DeviceChange.TenantId);
    IF EXISTS (SELECT 1 FROM dbo.CompletionWork WHERE GroupId = @G AND Mobility = 1)
        UPDATE dbo.Mobility_DeviceChange
        SET Status = (SELECT r.Status FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 1 AND r.RowId = dbo.Mobility_DeviceChange.Id),
            StatusDetails = (SELECT r.StatusDetails FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 1 AND r.RowId = dbo.Mobility_DeviceChange.Id),
            ProcessedDate = (SELECT r.Now FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 1 AND r.RowId = dbo.Mobility_DeviceChange.Id),
            IsProcessed = 1, LeaseOwner = NULL, LeaseUntil = NULL
        OUTPUT @G, 1, inserted.Id, inserted.DeviceId INTO dbo.CompletionDone (GroupId, Mobility, Id, DeviceId)
        WHERE LeaseOwner = @Worker AND Status = N'PROCESSING'
          AND EXISTS (SELECT 1 FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Mobility = 1 AND r.RowId = dbo.Mobility_DeviceChange.Id
                      AND r.BulkChangeId = dbo.Mobility_DeviceChange.BulkChangeId AND r.TenantId = dbo.Mobility_DeviceChange.TenantId);
    UPDATE dbo.CompletionWork
    SET Completed = 1,
        DeviceId = (SELECT d.DeviceId FROM dbo.CompletionDone d WHERE d.GroupId = @G AND d.Mobility = dbo.CompletionWork.Mobility AND d.Id = dbo.CompletionWork.RowId)
    WHERE GroupId = @G
      AND EXISTS (SELECT 1 FROM dbo.CompletionDone d WHERE d.GroupId = @G AND d.Mobility = dbo.CompletionWork.Mobility AND d.Id = dbo.CompletionWork.RowId);
    IF EXISTS (SELECT DeviceId FROM dbo.CompletionWork WHERE GroupId = @G AND Completed = 1 AND DeviceId IS NOT NULL GROUP BY DeviceId HAVING COUNT(*) > 1)
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50510, N'a group of completions updates one device twice: complete its rows one by one', 1;
    END
    -- What each device was, just before a PROCESSED row's change is applied below (an undo sets it back).
    UPDATE dbo.M2M_DeviceChange
    SET BeforeDeviceStatusId = d.DeviceStatusId, BeforeCarrierRatePlan = d.CarrierRatePlan, BeforeCommunicationPlan = d.CommunicationPlan,
        BeforeRevCustomerId = d.RevCustomerId, BeforeUsername = d.Username, BeforeCustomerRatePlanId = d.CustomerRatePlanId,
        BeforeCustomerRatePoolId = d.CustomerRatePoolId, BeforeDataAllocationMB = d.CustomerDataAllocationMB, BeforeICCID = d.ICCID,
        BeforeIMEI = d.IMEI
    FROM dbo.Device d
    WHERE d.Id = dbo.M2M_DeviceChange.DeviceId AND d.TenantId = dbo.M2M_DeviceChange.TenantId
      AND EXISTS (SELECT 1 FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Completed = 1 AND r.Mobility = 0
                  AND r.Status = N'PROCESSED' AND r.RowId = dbo.M2M_DeviceChange.Id);
    UPDATE dbo.Mobility_DeviceChange
    SET BeforeDeviceStatusId = d.DeviceStatusId, BeforeCarrierRatePlan = d.CarrierRatePlan, BeforeCommunicationPlan = d.CommunicationPlan,
        BeforeRevCustomerId = d.RevCustomerId, BeforeUsername = d.Username, BeforeCustomerRatePlanId = d.CustomerRatePlanId,
        BeforeCustomerRatePoolId = d.CustomerRatePoolId, BeforeDataAllocationMB = d.CustomerDataAllocationMB, BeforeICCID = d.ICCID,
        BeforeIMEI = d.IMEI
    FROM dbo.Device d
    WHERE d.Id = dbo.Mobility_DeviceChange.DeviceId AND d.TenantId = dbo.Mobility_DeviceChange.TenantId
      AND EXISTS (SELECT 1 FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Completed = 1 AND r.Mobility = 1
                  AND r.Status = N'PROCESSED' AND r.RowId = dbo.Mobility_DeviceChange.Id);
    UPDATE dbo.Device
    SET DeviceStatusId = COALESCE(r.NewDeviceStatusId, dbo.Device.DeviceStatusId), CarrierRatePlan = COALESCE(r.CarrierRatePlan, dbo.Device.CarrierRatePlan),
        CommunicationPlan = COALESCE(r.CommunicationPlan, dbo.Device.CommunicationPlan), RevCustomerId = CASE WHEN r.RevCustomerId = N'' THEN NULL ELSE COALESCE(r.RevCustomerId, dbo.Device.RevCustomerId) END,
        Username = COALESCE(r.Username, dbo.Device.Username), ICCID = COALESCE(r.NewICCID, dbo.Device.ICCID), IMEI = COALESCE(r.NewIMEI, dbo.Device.IMEI),
        MSISDN = COALESCE(r.NewMSISDN, dbo.Device.MSISDN), IpAddress = COALESCE(r.IpAddress, dbo.Device.IpAddress),
        IsActive = CASE WHEN r.Archive = 1 THEN 0 ELSE dbo.Device.IsActive END, IsDeleted = CASE WHEN r.Archive = 1 THEN 1 ELSE dbo.Device.IsDeleted END,
        ModifiedBy = @ProcessedBy, ModifiedDate = r.Now
    FROM dbo.CompletionWork r
    WHERE r.GroupId = @G AND r.Completed = 1 AND r.DeviceId = dbo.Device.Id AND r.TenantId = dbo.Device.TenantId
      AND (r.NewDeviceStatusId IS NOT NULL OR r.CarrierRatePlan IS NOT NULL OR r.CommunicationPlan IS NOT NULL OR r.RevCustomerId IS NOT NULL
           OR r.Username IS NOT NULL OR r.Archive = 1 OR r.NewICCID IS NOT NULL OR r.NewIMEI IS NOT NULL OR r.NewMSISDN IS NOT NULL
           OR r.IpAddress IS NOT NULL);
    UPDATE dbo.Device
    SET CustomerRatePlanId = COALESCE(r.CustomerRatePlanId, dbo.Device.CustomerRatePlanId),
        CustomerRatePoolId = COALESCE(r.CustomerRatePoolId, dbo.Device.CustomerRatePoolId),
        CustomerDataAllocationMB = COALESCE(r.CustomerDataAllocationMB, dbo.Device.CustomerDataAllocationMB)
    FROM dbo.CompletionWork r
    WHERE r.GroupId = @G AND r.Completed = 1 AND r.DeviceId = dbo.Device.Id AND r.TenantId = dbo.Device.TenantId
      AND (r.CustomerRatePlanId IS NOT NULL OR r.CustomerRatePoolId IS NOT NULL OR r.CustomerDataAllocationMB IS NOT NULL);
    -- Update, else insert (no MERGE); only the rows holding their device's Billing lock get here.
    UPDATE dbo.Device_Tenant
    SET RevCustomerId = NULLIF(r.RevCustomerId, N''), IsActive = 1, IsDeleted = 0, ModifiedBy = @ProcessedBy, ModifiedDate = r.Now
    FROM dbo.CompletionWork r
    WHERE r.GroupId = @G AND r.Completed = 1 AND r.RevCustomerId IS NOT NULL AND r.DeviceId = dbo.Device_Tenant.DeviceId
      AND r.TenantId = dbo.Device_Tenant.TenantId;
    INSERT INTO dbo.Device_Tenant (DeviceId, TenantId, RevCustomerId, IsActive, IsDeleted, ModifiedBy, ModifiedDate)
    SELECT r.DeviceId, r.TenantId, NULLIF(r.RevCustomerId, N''), 1, 0, @ProcessedBy, r.Now FROM dbo.CompletionWork r
    WHERE r.GroupId = @G AND r.Completed = 1 AND r.RevCustomerId IS NOT NULL AND r.DeviceId IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM dbo.Device_Tenant t WHERE t.DeviceId = r.DeviceId AND t.TenantId = r.TenantId);
    INSERT INTO dbo.DeviceActionHistory (DeviceId, TenantId, BulkChangeId, Action, Details, ActionBy, ActionDate)
    SELECT d.Id, r.TenantId, r.BulkChangeId, N'CustomerAssignment', r.HistoryDetails, @ProcessedBy, r.Now
    FROM dbo.CompletionWork r JOIN dbo.Device d ON d.Id = r.DeviceId AND d.TenantId = r.TenantId
    WHERE r.GroupId = @G AND r.Completed = 1 AND r.RevCustomerId IS NOT NULL AND r.HistoryDetails IS NOT NULL
    ORDER BY r.Seq;
    UPDATE dbo.Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedBy = @ProcessedBy,
        ModifiedDate = (SELECT MAX(r.Now) FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Completed = 1
                        AND r.BulkChangeId = dbo.Device_CustomerRatePlanOrRatePool_Queue.BulkChangeId
                        AND r.RowId = dbo.Device_CustomerRatePlanOrRatePool_Queue.M2MDeviceChangeId)
    WHERE IsActive = 1
      AND EXISTS (SELECT 1 FROM dbo.CompletionWork r WHERE r.GroupId = @G AND r.Completed = 1
                  AND r.BulkChangeId = dbo.Device_CustomerRatePlanOrRatePool_Queue.BulkChangeId
                  AND r.RowId = dbo.Device_CustomerRatePlanOrRatePool_Queue.M2MDeviceChangeId);
    SELECT Seq, Completed FROM dbo.CompletionWork WHERE GroupId = @G ORDER BY Seq;
    DELETE FROM dbo.CompletionDone WHERE GroupId = @G;
    DELETE FROM dbo.CompletionWork WHERE GroupId = @G;
    COMMIT TRANSACTION;
END
GO

-- A group of audit entries in one statement, in order (texts percent-encoded, dbo.fn_JsonText); @EntriesJson:
-- [{"Seq":0,"BulkChangeId":1,"RowId":2,"Description":"...","RequestText":"...",...}, ...].
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChangeLog_AddMany;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChangeLog_AddMany @ProcessBy NVARCHAR(100), @EntriesJson NVARCHAR(MAX) AS
BEGIN
    SET NOCOUNT ON;
    INSERT INTO dbo.DeviceBulkChangeLog (BulkChangeId, M2MDeviceChangeId, MobilityDeviceChangeId, LogEntryDescription, RequestText, ResponseText,
                                         ResponseStatus, HasErrors, ErrorText, ProcessBy, ProcessedDate)
    SELECT j.BulkChangeId, CASE WHEN b.PortalTypeId = 2 THEN NULL ELSE j.RowId END, CASE WHEN b.PortalTypeId = 2 THEN j.RowId END,
           CASE WHEN CHARINDEX(N'%', j.Description) > 0 THEN dbo.fn_JsonText(j.Description) ELSE j.Description END, CASE WHEN CHARINDEX(N'%', j.RequestText) > 0 THEN dbo.fn_JsonText(j.RequestText) ELSE j.RequestText END, CASE WHEN CHARINDEX(N'%', j.ResponseText) > 0 THEN dbo.fn_JsonText(j.ResponseText) ELSE j.ResponseText END,
           CASE WHEN CHARINDEX(N'%', j.ResponseStatus) > 0 THEN dbo.fn_JsonText(j.ResponseStatus) ELSE j.ResponseStatus END, j.HasErrors, CASE WHEN CHARINDEX(N'%', j.ErrorText) > 0 THEN dbo.fn_JsonText(j.ErrorText) ELSE j.ErrorText END, @ProcessBy, j.ProcessedDate
    FROM OPENJSON(@EntriesJson) WITH (Seq INT '$.Seq', BulkChangeId BIGINT '$.BulkChangeId', RowId BIGINT '$.RowId',
             Description NVARCHAR(MAX) '$.Description', RequestText NVARCHAR(MAX) '$.RequestText', ResponseText NVARCHAR(MAX) '$.ResponseText',
             ResponseStatus NVARCHAR(MAX) '$.ResponseStatus', HasErrors BIT '$.HasErrors', ErrorText NVARCHAR(MAX) '$.ErrorText',
             ProcessedDate DATETIME2 '$.ProcessedDate') AS j
    JOIN dbo.DeviceBulkChange b ON b.Id = j.BulkChangeId
    ORDER BY j.Seq;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RowStatuses;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RowStatuses @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Status FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId
    UNION
    SELECT Status FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId;
END
GO

-- Webhooks (issue 22): one delivery of @EventType per endpoint that wants it, the tenant's webhooks not deleted
-- and the bulk change's own NotifyUrl. Called inside the caller's transaction (the outbox): the event exists if and
-- only if what it says happened.
DROP PROCEDURE IF EXISTS dbo.usp_WebhookEvent_Write;
GO
CREATE PROCEDURE dbo.usp_WebhookEvent_Write
    @BulkChangeId BIGINT, @EventType NVARCHAR(50), @Reason NVARCHAR(50) = NULL, @Actor NVARCHAR(200) = NULL, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @EventId NVARCHAR(64) = CONCAT(N'evt_', LOWER(REPLACE(CONVERT(NVARCHAR(36), NEWID()), N'-', N'')));
    DECLARE @Wanted NVARCHAR(60) = CONCAT(N',', @EventType, N',');
    INSERT INTO dbo.WebhookDelivery (EventId, EventType, TenantId, BulkChangeId, WebhookId, Url, Reason, Actor, NextAttemptDate, CreatedDate)
    SELECT @EventId, @EventType, b.TenantId, b.Id, w.Id, w.Url, @Reason, @Actor, @Now, @Now
    FROM dbo.DeviceBulkChange b JOIN dbo.Webhook w ON w.TenantId = b.TenantId AND w.DeletedDate IS NULL
    WHERE b.Id = @BulkChangeId AND CHARINDEX(@Wanted, w.Events) > 0;
    INSERT INTO dbo.WebhookDelivery (EventId, EventType, TenantId, BulkChangeId, WebhookId, Url, Reason, Actor, NextAttemptDate, CreatedDate)
    SELECT @EventId, @EventType, b.TenantId, b.Id, NULL, b.NotifyUrl, @Reason, @Actor, @Now, @Now
    FROM dbo.DeviceBulkChange b
    WHERE b.Id = @BulkChangeId AND b.NotifyUrl IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM dbo.Webhook w WHERE w.TenantId = b.TenantId AND w.DeletedDate IS NULL
                      AND w.Url = b.NotifyUrl AND CHARINDEX(@Wanted, w.Events) > 0);
END
GO

-- Sets the status derived from the rows (by the caller, with the domain's one rule) unless already final; made
-- final just now, its webhook event is written in the same transaction. Returns the status the bulk change has now.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_SetStatus;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_SetStatus @BulkChangeId BIGINT, @Status NVARCHAR(20), @IsFinal BIT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    UPDATE dbo.DeviceBulkChange
    SET Status = CASE WHEN @IsFinal = 1 AND AbortedReason IS NOT NULL THEN N'ABORTED' ELSE @Status END,
        ProcessedDate = CASE WHEN @IsFinal = 1 THEN @Now ELSE ProcessedDate END, ModifiedDate = @Now
    WHERE Id = @BulkChangeId AND Status NOT IN (N'PROCESSED', N'ERROR', N'CANCELLED', N'ABORTED')
      AND NOT (Status = N'PAUSED' AND @IsFinal = 0);
    IF @@ROWCOUNT = 1 AND @IsFinal = 1
    BEGIN
        DECLARE @Event NVARCHAR(50) = CASE WHEN (SELECT Status FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = N'ABORTED'
                                           THEN N'bulk_change.aborted' ELSE N'bulk_change.finished' END;
        EXEC dbo.usp_WebhookEvent_Write @BulkChangeId = @BulkChangeId, @EventType = @Event, @Now = @Now;
    END
    COMMIT TRANSACTION;
    SELECT Status FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId;
END
GO

-- Rollout control (issue 21): what a worker decides on before it claims, and what the status page shows.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RolloutProgress;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RolloutProgress @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @Started INT, @Finished INT, @Failed INT;
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
        SELECT @Started = COUNT(*),
               @Finished = COALESCE(SUM(CASE WHEN Status IN (N'PROCESSED', N'API_FAILED', N'ERROR', N'CANCELLED') THEN 1 ELSE 0 END), 0),
               @Failed = COALESCE(SUM(CASE WHEN Status IN (N'API_FAILED', N'ERROR') THEN 1 ELSE 0 END), 0)
        FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Claims > 0;
    ELSE
        SELECT @Started = COUNT(*),
               @Finished = COALESCE(SUM(CASE WHEN Status IN (N'PROCESSED', N'API_FAILED', N'ERROR', N'CANCELLED') THEN 1 ELSE 0 END), 0),
               @Failed = COALESCE(SUM(CASE WHEN Status IN (N'API_FAILED', N'ERROR') THEN 1 ELSE 0 END), 0)
        FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Claims > 0;
    SELECT Status, HoldReason, HoldBy, HoldDate, CanaryPassedDate, AbortedReason,
           CAST(@Started AS BIGINT) AS Started, CAST(@Finished AS BIGINT) AS Finished, CAST(@Failed AS BIGINT) AS Failed
    FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId;
END
GO

-- Pauses a bulk change not final nor paused: no row of it is claimed until it is resumed. Returns the rows in
-- flight at that moment, or nothing when it could not be paused.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Pause;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Pause
    @TenantId BIGINT = NULL, @BulkChangeId BIGINT, @Reason NVARCHAR(50), @By NVARCHAR(200), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- After any claim in progress (usp_DeviceBulkChange_ClaimRows takes the same lock): its rows are counted in flight.
    DECLARE @ClaimLock NVARCHAR(100) = CONCAT(N'BulkChangeClaim:', @BulkChangeId), @ClaimLocked INT;
    EXEC @ClaimLocked = sp_getapplock @Resource = @ClaimLock, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @ClaimLocked < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    UPDATE dbo.DeviceBulkChange SET Status = N'PAUSED', HoldReason = @Reason, HoldBy = @By, HoldDate = @Now, ModifiedDate = @Now
    WHERE Id = @BulkChangeId AND (@TenantId IS NULL OR TenantId = @TenantId) AND Status IN (N'NEW', N'PROCESSING', N'SCHEDULED')
      AND AbortedReason IS NULL;
    DECLARE @Paused INT = @@ROWCOUNT;
    IF @Paused = 1
        EXEC dbo.usp_WebhookEvent_Write @BulkChangeId = @BulkChangeId, @EventType = N'bulk_change.paused',
             @Reason = @Reason, @Actor = @By, @Now = @Now;
    IF @Paused = 1
        SELECT CAST((SELECT COUNT(*) FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Status = N'PROCESSING')
                  + (SELECT COUNT(*) FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Status = N'PROCESSING')
                    AS BIGINT) AS InFlight;
    COMMIT TRANSACTION;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Resume;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Resume @TenantId BIGINT = NULL, @BulkChangeId BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange
    SET Status = N'PROCESSING', ModifiedDate = @Now,
        CanaryPassedDate = CASE WHEN HoldReason = N'canary' THEN @Now ELSE CanaryPassedDate END,
        HoldReason = NULL, HoldBy = NULL, HoldDate = NULL
    WHERE Id = @BulkChangeId AND (@TenantId IS NULL OR TenantId = @TenantId) AND Status = N'PAUSED';
    SELECT CAST(CASE WHEN @@ROWCOUNT = 1 THEN 1 ELSE 0 END AS BIT) AS Resumed;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_PassCanary;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_PassCanary @BulkChangeId BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange SET CanaryPassedDate = @Now WHERE Id = @BulkChangeId AND CanaryPassedDate IS NULL;
END
GO

-- The abort decision, recorded once: Aborted is 1 for the one caller that recorded it.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Abort;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Abort @BulkChangeId BIGINT, @Reason NVARCHAR(400), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange SET AbortedReason = @Reason, ModifiedDate = @Now
    WHERE Id = @BulkChangeId AND AbortedReason IS NULL AND Status NOT IN (N'PROCESSED', N'ERROR', N'CANCELLED', N'ABORTED');
    SELECT CAST(CASE WHEN @@ROWCOUNT = 1 THEN 1 ELSE 0 END AS BIT) AS Aborted;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_ClaimNotification;
GO
-- The right to send the failure e-mail, held until @Until (a lease: a sender that dies leaves it to the next).
CREATE PROCEDURE dbo.usp_DeviceBulkChange_ClaimNotification @BulkChangeId BIGINT, @Now DATETIME2, @Until DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange SET NotificationClaimedUntil = @Until
    WHERE Id = @BulkChangeId AND NotificationSentDate IS NULL
      AND (NotificationClaimedUntil IS NULL OR NotificationClaimedUntil < @Now);
    SELECT CAST(CASE WHEN @@ROWCOUNT = 1 THEN 1 ELSE 0 END AS BIT) AS Claimed;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_NotificationSent;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_NotificationSent @BulkChangeId BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange SET NotificationSentDate = @Now, NotificationClaimedUntil = NULL WHERE Id = @BulkChangeId;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_ReleaseNotification;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_ReleaseNotification @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.DeviceBulkChange SET NotificationClaimedUntil = NULL WHERE Id = @BulkChangeId AND NotificationSentDate IS NULL;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Stranded;
GO
-- Work nobody holds (a paused bulk change's rows in flight whose lease ended too), and final bulk changes of the last day that still owe their failure e-mail.
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Stranded @Before DATETIME2, @Now DATETIME2, @Since DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SELECT b.Id FROM dbo.DeviceBulkChange b
    WHERE b.Status IN (N'NEW', N'PROCESSING') AND b.ModifiedDate < @Before
      AND NOT EXISTS (SELECT 1 FROM dbo.M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = N'PROCESSING' AND r.LeaseUntil >= @Now)
      AND NOT EXISTS (SELECT 1 FROM dbo.Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = N'PROCESSING' AND r.LeaseUntil >= @Now)
    UNION
    SELECT b.Id FROM dbo.DeviceBulkChange b
    WHERE b.Status = N'PAUSED' AND b.ModifiedDate < @Before
      AND (EXISTS (SELECT 1 FROM dbo.M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = N'PROCESSING' AND r.LeaseUntil < @Now)
        OR EXISTS (SELECT 1 FROM dbo.Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status = N'PROCESSING' AND r.LeaseUntil < @Now))
    UNION
    SELECT b.Id FROM dbo.DeviceBulkChange b
    WHERE b.Status IN (N'PROCESSED', N'ERROR', N'CANCELLED', N'ABORTED') AND b.NotificationSentDate IS NULL
      AND b.ProcessedDate >= @Since AND b.ModifiedDate < @Before
      AND (b.NotificationClaimedUntil IS NULL OR b.NotificationClaimedUntil < @Now)
      AND (EXISTS (SELECT 1 FROM dbo.M2M_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status IN (N'API_FAILED', N'ERROR'))
        OR EXISTS (SELECT 1 FROM dbo.Mobility_DeviceChange r WHERE r.BulkChangeId = b.Id AND r.Status IN (N'API_FAILED', N'ERROR')))
    ORDER BY Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_CancelRows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_CancelRows @TenantId BIGINT, @BulkChangeId BIGINT, @StatusDetails NVARCHAR(400), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DECLARE @Cancelled TABLE (Id BIGINT);
    UPDATE dbo.M2M_DeviceChange
    SET Status = N'CANCELLED', StatusDetails = @StatusDetails, IsProcessed = 1, ProcessedDate = @Now, LeaseOwner = NULL, LeaseUntil = NULL
    OUTPUT inserted.Id INTO @Cancelled
    WHERE BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND Status IN (N'PENDING', N'SCHEDULED');
    UPDATE dbo.Mobility_DeviceChange
    SET Status = N'CANCELLED', StatusDetails = @StatusDetails, IsProcessed = 1, ProcessedDate = @Now, LeaseOwner = NULL, LeaseUntil = NULL
    OUTPUT inserted.Id INTO @Cancelled
    WHERE BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND Status IN (N'PENDING', N'SCHEDULED');
    UPDATE dbo.Device_CustomerRatePlanOrRatePool_Queue SET IsActive = 0, ModifiedDate = @Now
    WHERE BulkChangeId = @BulkChangeId AND TenantId = @TenantId AND IsActive = 1 AND M2MDeviceChangeId IN (SELECT Id FROM @Cancelled);
    COMMIT TRANSACTION;
    SELECT CAST(COUNT(*) AS BIGINT) AS Cancelled FROM @Cancelled;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_RevCustomer_List;
GO
CREATE PROCEDURE dbo.usp_RevCustomer_List @TenantId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Id, TenantId, RevCustomerId, Name FROM dbo.RevCustomer WHERE TenantId = @TenantId AND IsActive = 1 ORDER BY Name, Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_Device_History;
GO
CREATE PROCEDURE dbo.usp_Device_History @TenantId BIGINT, @DeviceId BIGINT, @Limit INT AS
BEGIN
    SET NOCOUNT ON;
    SELECT TOP (@Limit) r.BulkChangeId, b.ChangeRequestTypeId, r.Status, r.StatusDetails, b.CreatedBy, b.CreatedDate, r.ProcessedDate
    FROM (SELECT BulkChangeId, Status, StatusDetails, ProcessedDate, DeviceId, TenantId FROM dbo.M2M_DeviceChange
          UNION ALL
          SELECT BulkChangeId, Status, StatusDetails, ProcessedDate, DeviceId, TenantId FROM dbo.Mobility_DeviceChange) r
    JOIN dbo.DeviceBulkChange b ON b.Id = r.BulkChangeId
    WHERE r.DeviceId = @DeviceId AND r.TenantId = @TenantId AND b.TenantId = @TenantId
    ORDER BY b.Id DESC;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_CustomerRatePlan_Get;
GO
CREATE PROCEDURE dbo.usp_CustomerRatePlan_Get @TenantId BIGINT, @Id BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Id, Name FROM dbo.CustomerRatePlan WHERE Id = @Id AND TenantId = @TenantId AND IsActive = 1;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_CustomerRatePool_Get;
GO
CREATE PROCEDURE dbo.usp_CustomerRatePool_Get @TenantId BIGINT, @Id BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Id, Name FROM dbo.CustomerRatePool WHERE Id = @Id AND TenantId = @TenantId AND IsActive = 1;
END
GO

-- Every SCHEDULED row whose date has come becomes PENDING; its bulk change is reopened. Returns the bulk changes.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_CustomerRatePlanChange_ReleaseDue;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_CustomerRatePlanChange_ReleaseDue @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DECLARE @Released TABLE (BulkChangeId BIGINT);
    UPDATE dbo.M2M_DeviceChange SET Status = N'PENDING'
    OUTPUT inserted.BulkChangeId INTO @Released
    WHERE Status = N'SCHEDULED'
      AND Id IN (SELECT q.M2MDeviceChangeId FROM dbo.Device_CustomerRatePlanOrRatePool_Queue q
                 WHERE q.PortalType <> 2 AND q.IsActive = 1 AND q.EffectiveDate <= @Now);
    UPDATE dbo.Mobility_DeviceChange SET Status = N'PENDING'
    OUTPUT inserted.BulkChangeId INTO @Released
    WHERE Status = N'SCHEDULED'
      AND Id IN (SELECT q.M2MDeviceChangeId FROM dbo.Device_CustomerRatePlanOrRatePool_Queue q
                 WHERE q.PortalType = 2 AND q.IsActive = 1 AND q.EffectiveDate <= @Now);
    UPDATE dbo.DeviceBulkChange SET Status = N'PROCESSING', ModifiedDate = @Now
    WHERE Id IN (SELECT BulkChangeId FROM @Released) AND Status = N'SCHEDULED';
    COMMIT TRANSACTION;
    SELECT DISTINCT BulkChangeId FROM @Released ORDER BY BulkChangeId;
END
GO

-- The tenant's live devices, filtered (status by code or display name, carrier plan, Rev customer, text in
-- ICCID/IMEI/MSISDN/username with @TextPattern already a LIKE pattern), by ascending Id after @AfterId.
DROP PROCEDURE IF EXISTS dbo.usp_Device_List;
GO
CREATE PROCEDURE dbo.usp_Device_List
    @TenantId BIGINT, @Status NVARCHAR(100) = NULL, @CarrierRatePlan NVARCHAR(200) = NULL, @RevCustomerId NVARCHAR(100) = NULL,
    @TextPattern NVARCHAR(210) = NULL, @AfterId BIGINT = 0, @Offset INT = 0, @Limit INT = 100, @CountOnly BIT = 0 AS
BEGIN
    SET NOCOUNT ON;
    WITH filtered AS (
        SELECT d.Id, d.TenantId, d.ServiceProviderId, d.ICCID, d.IMEI, d.MSISDN, d.DeviceStatusId, d.CarrierRatePlan, d.CommunicationPlan,
               d.Username, d.LastUsageDate, d.DataUsageMB, d.RevCustomerId, d.IsActive, d.IsDeleted,
               d.CustomerRatePlanId, d.CustomerRatePoolId, d.CustomerDataAllocationMB, d.EID, s.Status AS StatusCode, s.DisplayName AS StatusDisplayName
        FROM dbo.Device d LEFT JOIN dbo.DeviceStatus s ON s.Id = d.DeviceStatusId
        WHERE d.TenantId = @TenantId AND d.IsDeleted = 0 AND d.Id > @AfterId
          AND (@Status IS NULL OR s.Status = @Status OR s.DisplayName = @Status)
          AND (@CarrierRatePlan IS NULL OR d.CarrierRatePlan = @CarrierRatePlan)
          AND (@RevCustomerId IS NULL OR d.RevCustomerId = @RevCustomerId)
          AND (@TextPattern IS NULL OR d.ICCID LIKE @TextPattern ESCAPE '\' OR d.IMEI LIKE @TextPattern ESCAPE '\'
               OR d.MSISDN LIKE @TextPattern ESCAPE '\' OR d.Username LIKE @TextPattern ESCAPE '\')
    )
    SELECT * FROM filtered WHERE @CountOnly = 0 ORDER BY Id OFFSET @Offset ROWS FETCH NEXT @Limit ROWS ONLY;
    IF @CountOnly = 1
        SELECT COUNT_BIG(*) AS Total FROM dbo.Device d LEFT JOIN dbo.DeviceStatus s ON s.Id = d.DeviceStatusId
        WHERE d.TenantId = @TenantId AND d.IsDeleted = 0
          AND (@Status IS NULL OR s.Status = @Status OR s.DisplayName = @Status)
          AND (@CarrierRatePlan IS NULL OR d.CarrierRatePlan = @CarrierRatePlan)
          AND (@RevCustomerId IS NULL OR d.RevCustomerId = @RevCustomerId)
          AND (@TextPattern IS NULL OR d.ICCID LIKE @TextPattern ESCAPE '\' OR d.IMEI LIKE @TextPattern ESCAPE '\'
               OR d.MSISDN LIKE @TextPattern ESCAPE '\' OR d.Username LIKE @TextPattern ESCAPE '\');
END
GO

-- The seeds' name for completing an archival row (IsActive = 0, IsDeleted = 1): the same checks and writes as
-- usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords, under the name operators know.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_Archival_ArchiveDevices;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_Archival_ArchiveDevices
    @TenantId BIGINT, @BulkChangeId BIGINT, @ChangeDetailId BIGINT, @Worker NVARCHAR(100), @Status NVARCHAR(20), @StatusDetails NVARCHAR(MAX),
    @NewDeviceStatusId BIGINT = NULL, @CarrierRatePlan NVARCHAR(200) = NULL, @CommunicationPlan NVARCHAR(200) = NULL,
    @RevCustomerId NVARCHAR(100) = NULL, @Username NVARCHAR(200) = NULL, @Archive BIT = 0,
    @CustomerRatePlanId BIGINT = NULL, @CustomerRatePoolId BIGINT = NULL, @CustomerDataAllocationMB FLOAT = NULL,
    @NewICCID NVARCHAR(25) = NULL, @NewIMEI NVARCHAR(20) = NULL, @NewMSISDN NVARCHAR(20) = NULL, @IpAddress NVARCHAR(64) = NULL,
    @HistoryDetails NVARCHAR(MAX) = NULL, @ProcessedBy NVARCHAR(100), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    EXEC dbo.usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords @TenantId = @TenantId, @BulkChangeId = @BulkChangeId, @ChangeDetailId = @ChangeDetailId, @Worker = @Worker, @Status = @Status,
         @StatusDetails = @StatusDetails, @NewDeviceStatusId = @NewDeviceStatusId, @CarrierRatePlan = @CarrierRatePlan,
         @CommunicationPlan = @CommunicationPlan, @RevCustomerId = @RevCustomerId, @Username = @Username, @Archive = @Archive,
         @CustomerRatePlanId = @CustomerRatePlanId, @CustomerRatePoolId = @CustomerRatePoolId,
         @CustomerDataAllocationMB = @CustomerDataAllocationMB, @NewICCID = @NewICCID, @NewIMEI = @NewIMEI, @NewMSISDN = @NewMSISDN, @IpAddress = @IpAddress,
         @HistoryDetails = @HistoryDetails, @ProcessedBy = @ProcessedBy, @Now = @Now;
END
GO

-- The seeds' name for completing a customer rate plan row: the same checks and writes as
-- usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords, under the name operators know.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_CustomerRatePlanChange_UpdateDevices;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_CustomerRatePlanChange_UpdateDevices
    @TenantId BIGINT, @BulkChangeId BIGINT, @ChangeDetailId BIGINT, @Worker NVARCHAR(100), @Status NVARCHAR(20), @StatusDetails NVARCHAR(MAX),
    @NewDeviceStatusId BIGINT = NULL, @CarrierRatePlan NVARCHAR(200) = NULL, @CommunicationPlan NVARCHAR(200) = NULL,
    @RevCustomerId NVARCHAR(100) = NULL, @Username NVARCHAR(200) = NULL, @Archive BIT = 0,
    @CustomerRatePlanId BIGINT = NULL, @CustomerRatePoolId BIGINT = NULL, @CustomerDataAllocationMB FLOAT = NULL,
    @NewICCID NVARCHAR(25) = NULL, @NewIMEI NVARCHAR(20) = NULL, @NewMSISDN NVARCHAR(20) = NULL, @IpAddress NVARCHAR(64) = NULL,
    @HistoryDetails NVARCHAR(MAX) = NULL, @ProcessedBy NVARCHAR(100), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    EXEC dbo.usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords @TenantId = @TenantId, @BulkChangeId = @BulkChangeId, @ChangeDetailId = @ChangeDetailId, @Worker = @Worker, @Status = @Status,
         @StatusDetails = @StatusDetails, @NewDeviceStatusId = @NewDeviceStatusId, @CarrierRatePlan = @CarrierRatePlan,
         @CommunicationPlan = @CommunicationPlan, @RevCustomerId = @RevCustomerId, @Username = @Username, @Archive = @Archive,
         @CustomerRatePlanId = @CustomerRatePlanId, @CustomerRatePoolId = @CustomerRatePoolId,
         @CustomerDataAllocationMB = @CustomerDataAllocationMB, @NewICCID = @NewICCID, @NewIMEI = @NewIMEI, @NewMSISDN = @NewMSISDN, @IpAddress = @IpAddress,
         @HistoryDetails = @HistoryDetails, @ProcessedBy = @ProcessedBy, @Now = @Now;
END
GO

-- The seeds' name for completing a Rev customer assignment row (Device_Tenant, history): the same checks and writes as
-- usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords, under the name operators know.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RevService_UpdateM2MChange;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RevService_UpdateM2MChange
    @TenantId BIGINT, @BulkChangeId BIGINT, @ChangeDetailId BIGINT, @Worker NVARCHAR(100), @Status NVARCHAR(20), @StatusDetails NVARCHAR(MAX),
    @NewDeviceStatusId BIGINT = NULL, @CarrierRatePlan NVARCHAR(200) = NULL, @CommunicationPlan NVARCHAR(200) = NULL,
    @RevCustomerId NVARCHAR(100) = NULL, @Username NVARCHAR(200) = NULL, @Archive BIT = 0,
    @CustomerRatePlanId BIGINT = NULL, @CustomerRatePoolId BIGINT = NULL, @CustomerDataAllocationMB FLOAT = NULL,
    @NewICCID NVARCHAR(25) = NULL, @NewIMEI NVARCHAR(20) = NULL, @NewMSISDN NVARCHAR(20) = NULL, @IpAddress NVARCHAR(64) = NULL,
    @HistoryDetails NVARCHAR(MAX) = NULL, @ProcessedBy NVARCHAR(100), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    EXEC dbo.usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords @TenantId = @TenantId, @BulkChangeId = @BulkChangeId, @ChangeDetailId = @ChangeDetailId, @Worker = @Worker, @Status = @Status,
         @StatusDetails = @StatusDetails, @NewDeviceStatusId = @NewDeviceStatusId, @CarrierRatePlan = @CarrierRatePlan,
         @CommunicationPlan = @CommunicationPlan, @RevCustomerId = @RevCustomerId, @Username = @Username, @Archive = @Archive,
         @CustomerRatePlanId = @CustomerRatePlanId, @CustomerRatePoolId = @CustomerRatePoolId,
         @CustomerDataAllocationMB = @CustomerDataAllocationMB, @NewICCID = @NewICCID, @NewIMEI = @NewIMEI, @NewMSISDN = @NewMSISDN, @IpAddress = @IpAddress,
         @HistoryDetails = @HistoryDetails, @ProcessedBy = @ProcessedBy, @Now = @Now;
END
GO

-- ThingSpace (issue 5) --------------------------------------------------------------------------------------------

IF OBJECT_ID('dbo.usp_ServiceProvider_ListThingSpace') IS NOT NULL DROP PROCEDURE dbo.usp_ServiceProvider_ListThingSpace;
GO

-- Every active provider of one integration, of every tenant: a callback finds its account among them.
DROP PROCEDURE IF EXISTS dbo.usp_ServiceProvider_ListByIntegration;
GO
CREATE PROCEDURE dbo.usp_ServiceProvider_ListByIntegration @IntegrationId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT * FROM dbo.vw_ServiceProviderSettings WHERE IntegrationId = @IntegrationId AND IsActive = 1 ORDER BY Id;
END
GO

-- A callback said request @RequestId has its result: the rows that wait on it are handed to the next worker now.
DROP PROCEDURE IF EXISTS dbo.usp_CarrierRequest_Wake;
GO
CREATE PROCEDURE dbo.usp_CarrierRequest_Wake @ServiceProviderId BIGINT, @RequestId NVARCHAR(200), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @Owner NVARCHAR(220) = N'carrier:' + @RequestId;
    DECLARE @Woken TABLE (BulkChangeId BIGINT NOT NULL);
    UPDATE dbo.M2M_DeviceChange SET LeaseUntil = @Now
    OUTPUT inserted.BulkChangeId INTO @Woken
    WHERE LeaseOwner = @Owner AND Status = N'PROCESSING' AND LeaseUntil > @Now
      AND BulkChangeId IN (SELECT Id FROM dbo.DeviceBulkChange WHERE ServiceProviderId = @ServiceProviderId);
    UPDATE dbo.Mobility_DeviceChange SET LeaseUntil = @Now
    OUTPUT inserted.BulkChangeId INTO @Woken
    WHERE LeaseOwner = @Owner AND Status = N'PROCESSING' AND LeaseUntil > @Now
      AND BulkChangeId IN (SELECT Id FROM dbo.DeviceBulkChange WHERE ServiceProviderId = @ServiceProviderId);
    SELECT DISTINCT BulkChangeId FROM @Woken ORDER BY BulkChangeId;
END
GO

-- Rows @Worker holds wait on carrier request @RequestId: lease owner 'carrier:' + id until @Deadline, so a callback
-- completes them and, past the deadline, a worker reclaims them to poll. CarrierRequestedAt keeps the first request.
-- The request's own holder setting the wait again (@Worker = @Owner) only shortens it: a callback's wake is kept.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_AwaitCarrier;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_AwaitCarrier
    @BulkChangeId BIGINT, @RowIdsJson NVARCHAR(MAX), @Worker NVARCHAR(100), @RequestId NVARCHAR(100), @Now DATETIME2, @Deadline DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @Owner NVARCHAR(100) = N'carrier:' + @RequestId;
    DECLARE @Ids TABLE (Id BIGINT PRIMARY KEY);
    INSERT INTO @Ids (Id) SELECT DISTINCT CAST([value] AS BIGINT) FROM OPENJSON(@RowIdsJson);
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
        UPDATE dbo.Mobility_DeviceChange
        SET CarrierRequestId = @RequestId, CarrierRequestedAt = COALESCE(CarrierRequestedAt, @Now), LeaseOwner = @Owner,
            LeaseUntil = CASE WHEN LeaseOwner = @Owner AND LeaseUntil < @Deadline THEN LeaseUntil ELSE @Deadline END
        WHERE BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker AND Status = N'PROCESSING' AND Id IN (SELECT Id FROM @Ids);
    ELSE
        UPDATE dbo.M2M_DeviceChange
        SET CarrierRequestId = @RequestId, CarrierRequestedAt = COALESCE(CarrierRequestedAt, @Now), LeaseOwner = @Owner,
            LeaseUntil = CASE WHEN LeaseOwner = @Owner AND LeaseUntil < @Deadline THEN LeaseUntil ELSE @Deadline END
        WHERE BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker AND Status = N'PROCESSING' AND Id IN (SELECT Id FROM @Ids);
    SELECT CAST(@@ROWCOUNT AS BIGINT) AS Changed;
END
GO

-- A waiting row's carrier result, kept for the steps after the carrier (Rev.io); the row's lease ends now so a
-- worker claims it at once.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_HandBackWithResult;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_HandBackWithResult
    @BulkChangeId BIGINT, @RowId BIGINT, @Owner NVARCHAR(100), @Result NVARCHAR(MAX), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
        UPDATE dbo.Mobility_DeviceChange SET CarrierResult = @Result, LeaseOwner = N'result', LeaseUntil = @Now
        WHERE Id = @RowId AND BulkChangeId = @BulkChangeId AND LeaseOwner = @Owner AND Status = N'PROCESSING';
    ELSE
        UPDATE dbo.M2M_DeviceChange SET CarrierResult = @Result, LeaseOwner = N'result', LeaseUntil = @Now
        WHERE Id = @RowId AND BulkChangeId = @BulkChangeId AND LeaseOwner = @Owner AND Status = N'PROCESSING';
    SELECT CAST(@@ROWCOUNT AS BIGINT) AS Changed;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_CarrierRequestRows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_CarrierRequestRows
    @ServiceProviderIdsJson NVARCHAR(MAX), @RequestId NVARCHAR(100), @ICCID NVARCHAR(64) = NULL AS
BEGIN
    SET NOCOUNT ON;
    SELECT r.Id, r.BulkChangeId, r.DeviceId, r.ICCID, r.MSISDN, r.Status, r.StatusDetails, r.Claims, r.ProcessedDate,
           r.CarrierRequestId, r.CarrierRequestedAt, r.CarrierResult, r.RowRequest
    FROM (SELECT Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult, RowRequest
          FROM dbo.M2M_DeviceChange WHERE CarrierRequestId = @RequestId AND (@ICCID IS NULL OR ICCID = @ICCID)
          UNION ALL
          SELECT Id, BulkChangeId, DeviceId, ICCID, MSISDN, Status, StatusDetails, Claims, ProcessedDate, CarrierRequestId, CarrierRequestedAt, CarrierResult, RowRequest
          FROM dbo.Mobility_DeviceChange WHERE CarrierRequestId = @RequestId AND (@ICCID IS NULL OR ICCID = @ICCID)) r
    JOIN dbo.DeviceBulkChange b ON b.Id = r.BulkChangeId
    WHERE b.ServiceProviderId IN (SELECT CAST([value] AS BIGINT) FROM OPENJSON(@ServiceProviderIdsJson))
    ORDER BY r.Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_ThingSpaceCallBackResponseLog_Add;
GO
CREATE PROCEDURE dbo.usp_ThingSpaceCallBackResponseLog_Add
    @RequestId NVARCHAR(100), @ICCID NVARCHAR(64) = NULL, @TenantId BIGINT = NULL, @ServiceProviderId BIGINT = NULL,
    @APIStatus NVARCHAR(50), @APIResponse NVARCHAR(MAX), @Outcome NVARCHAR(200), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    INSERT INTO dbo.ThingSpaceCallBackResponseLog (RequestId, ICCID, TenantId, ServiceProviderId, APIStatus, APIResponse, Outcome, CreatedDate)
    VALUES (@RequestId, @ICCID, @TenantId, @ServiceProviderId, @APIStatus, @APIResponse, @Outcome, @Now);
END
GO

-- Callbacks that came before any row waited on their request (the worker records the request id just after
-- ThingSpace answers; a fast callback can beat it). The worker applies them once the rows wait.
DROP PROCEDURE IF EXISTS dbo.usp_ThingSpaceCallBackResponseLog_Unmatched;
GO
CREATE PROCEDURE dbo.usp_ThingSpaceCallBackResponseLog_Unmatched @ServiceProviderId BIGINT, @RequestId NVARCHAR(100) AS
BEGIN
    SET NOCOUNT ON;
    SELECT RequestId, ICCID, TenantId, ServiceProviderId, APIStatus, APIResponse, Outcome, CreatedDate
    FROM dbo.ThingSpaceCallBackResponseLog
    WHERE ServiceProviderId = @ServiceProviderId AND RequestId = @RequestId AND Outcome LIKE N'unmatched%'
    ORDER BY Id;
END
GO

-- Unmatched callbacks older than @Before go: an early callback is applied within moments of its request being
-- recorded; older ones only take room.
DROP PROCEDURE IF EXISTS dbo.usp_ThingSpaceCallBackResponseLog_PurgeUnmatched;
GO
CREATE PROCEDURE dbo.usp_ThingSpaceCallBackResponseLog_PurgeUnmatched @Before DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    DELETE FROM dbo.ThingSpaceCallBackResponseLog WHERE Outcome LIKE N'unmatched%' AND CreatedDate < @Before;
    SELECT @@ROWCOUNT AS Purged;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_ThingSpaceAuthentication_RefuseLogin;
GO
CREATE PROCEDURE dbo.usp_ThingSpaceAuthentication_RefuseLogin @ServiceProviderId BIGINT, @Reason NVARCHAR(1000), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.ThingSpaceAuthentication SET LoginRefusedReason = @Reason, LoginRefusedDate = @Now WHERE ServiceProviderId = @ServiceProviderId;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_NextLeaseExpiry;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_NextLeaseExpiry @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT MIN(LeaseUntil) AS NextExpiry
    FROM (SELECT LeaseUntil FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Status = N'PROCESSING'
          UNION ALL
          SELECT LeaseUntil FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Status = N'PROCESSING') l;
END
GO

-- Books up to @Count call slots of an account's pace, one every @IntervalSeconds for every worker together, from
-- the next free slot (never before now), unless that slot is more than @HorizonSeconds ahead (then none).
-- The same rule as the SQLite store's `pace`. Times are Unix seconds.
DROP PROCEDURE IF EXISTS dbo.usp_RateBudget_Reserve;
GO
CREATE PROCEDURE dbo.usp_RateBudget_Reserve
    @ServiceProviderId BIGINT, @Bucket NVARCHAR(40), @IntervalSeconds FLOAT, @Count INT, @HorizonSeconds FLOAT,
    @NowSeconds FLOAT AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- One booking at a time per account and bucket: read, decide and write the next slot under an application lock.
    DECLARE @Resource NVARCHAR(100) = CONCAT(N'RateBudget:', @ServiceProviderId, N':', @Bucket);
    DECLARE @Lock INT;
    EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @Lock < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    DECLARE @Next FLOAT;
    SELECT @Next = NextSlot FROM dbo.RateBudget
    WHERE ServiceProviderId = @ServiceProviderId AND Bucket = @Bucket;
    DECLARE @First FLOAT = CASE WHEN @Next IS NULL OR @Next < @NowSeconds THEN @NowSeconds ELSE @Next END;
    DECLARE @Granted INT = CASE WHEN @First > @NowSeconds + @HorizonSeconds OR @Count <= 0 THEN 0 ELSE @Count END;
    IF @Granted > 0
    BEGIN
        UPDATE dbo.RateBudget SET NextSlot = @First + @Granted * @IntervalSeconds
        WHERE ServiceProviderId = @ServiceProviderId AND Bucket = @Bucket;
        IF @@ROWCOUNT = 0
            INSERT INTO dbo.RateBudget (ServiceProviderId, Bucket, NextSlot)
            VALUES (@ServiceProviderId, @Bucket, @First + @Granted * @IntervalSeconds);
    END
    COMMIT TRANSACTION;
    SELECT @First AS FirstSlot, @Granted AS Granted;
END
GO

-- A heartbeat: extends the leases @Worker holds on rows of a bulk change; returns how many it holds.
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_RenewLeases;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_RenewLeases @BulkChangeId BIGINT, @Worker NVARCHAR(100), @Until DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    -- The lock a group of this worker's completions takes too: the renewal's one statement over all the rows and
    -- a group's statements row after row would otherwise lock the same rows in different orders (a deadlock).
    DECLARE @Resource NVARCHAR(255) = CONCAT(N'Leases:', @BulkChangeId, N':', @Worker);
    DECLARE @Lock INT;
    EXEC @Lock = sp_getapplock @Resource = @Resource, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 10000;
    IF @Lock < 0
    BEGIN
        ROLLBACK TRANSACTION;
        THROW 50503, N'the database is busy: try again', 1;
    END
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId) = 2
    BEGIN
        UPDATE dbo.Mobility_DeviceChange SET LeaseUntil = @Until
        WHERE BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker AND Status = N'PROCESSING' AND LeaseUntil < @Until;
        SELECT COUNT_BIG(*) AS Held FROM dbo.Mobility_DeviceChange
        WHERE BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker AND Status = N'PROCESSING';
    END
    ELSE
    BEGIN
        UPDATE dbo.M2M_DeviceChange SET LeaseUntil = @Until
        WHERE BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker AND Status = N'PROCESSING' AND LeaseUntil < @Until;
        SELECT COUNT_BIG(*) AS Held FROM dbo.M2M_DeviceChange
        WHERE BulkChangeId = @BulkChangeId AND LeaseOwner = @Worker AND Status = N'PROCESSING';
    END
    COMMIT TRANSACTION;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_PendingRows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_PendingRows @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT (SELECT COUNT_BIG(*) FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Status = N'PENDING')
         + (SELECT COUNT_BIG(*) FROM dbo.Mobility_DeviceChange WHERE BulkChangeId = @BulkChangeId AND Status = N'PENDING') AS Pending;
END
GO

-- Webhooks (issue 22): a tenant's endpoints and their deliveries.
DROP PROCEDURE IF EXISTS dbo.usp_Webhook_Add;
GO
CREATE PROCEDURE dbo.usp_Webhook_Add
    @TenantId BIGINT, @Url NVARCHAR(2048), @Events NVARCHAR(400), @Secret NVARCHAR(200), @CreatedBy NVARCHAR(200), @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    INSERT INTO dbo.Webhook (TenantId, Url, Events, Secret, CreatedBy, CreatedDate)
    VALUES (@TenantId, @Url, @Events, @Secret, @CreatedBy, @Now);
    SELECT CAST(SCOPE_IDENTITY() AS BIGINT) AS Id;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_Webhook_List;
GO
CREATE PROCEDURE dbo.usp_Webhook_List @TenantId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    SELECT Id, TenantId, Url, Events, Secret, CreatedBy, CreatedDate FROM dbo.Webhook
    WHERE TenantId = @TenantId AND DeletedDate IS NULL ORDER BY Id;
END
GO

-- Deletes the tenant's endpoint; its deliveries not yet made are given up. Returns Deleted (1 or 0).
DROP PROCEDURE IF EXISTS dbo.usp_Webhook_Delete;
GO
CREATE PROCEDURE dbo.usp_Webhook_Delete @TenantId BIGINT, @Id BIGINT, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    UPDATE dbo.Webhook SET DeletedDate = @Now WHERE Id = @Id AND TenantId = @TenantId AND DeletedDate IS NULL;
    DECLARE @Deleted INT = @@ROWCOUNT;
    UPDATE dbo.WebhookDelivery SET Status = N'FAILED', LastError = N'the endpoint was deleted', LeaseOwner = NULL, LeaseUntil = NULL
    WHERE WebhookId = @Id AND TenantId = @TenantId AND Status = N'PENDING';
    COMMIT TRANSACTION;
    SELECT CAST(@Deleted AS INT) AS Deleted;
END
GO

DROP PROCEDURE IF EXISTS dbo.usp_WebhookDelivery_List;
GO
CREATE PROCEDURE dbo.usp_WebhookDelivery_List @TenantId BIGINT, @WebhookId BIGINT, @Limit INT AS
BEGIN
    SET NOCOUNT ON;
    SELECT TOP (@Limit) Id, EventId, EventType, TenantId, BulkChangeId, WebhookId, Url, Status, Attempts, NextAttemptDate,
           LastStatusCode, LastError, CreatedDate, DeliveredDate, Reason, Actor
    FROM dbo.WebhookDelivery WHERE TenantId = @TenantId AND WebhookId = @WebhookId ORDER BY Id DESC;
END
GO

-- Leases up to @Limit PENDING deliveries due at @Now (no live lease) to @Worker: the UPDATE repeats the condition,
-- so a delivery another connection leased first is skipped, never held twice. Returns them with their secret.
DROP PROCEDURE IF EXISTS dbo.usp_WebhookDelivery_Claim;
GO
CREATE PROCEDURE dbo.usp_WebhookDelivery_Claim @Worker NVARCHAR(100), @Limit INT, @Until DATETIME2, @Now DATETIME2 AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @Claimed TABLE (Id BIGINT PRIMARY KEY);
    UPDATE dbo.WebhookDelivery SET LeaseOwner = @Worker, LeaseUntil = @Until
    OUTPUT inserted.Id INTO @Claimed
    WHERE Status = N'PENDING' AND NextAttemptDate <= @Now AND (LeaseUntil IS NULL OR LeaseUntil < @Now)
      AND Id IN (SELECT TOP (@Limit) Id FROM dbo.WebhookDelivery
                 WHERE Status = N'PENDING' AND NextAttemptDate <= @Now AND (LeaseUntil IS NULL OR LeaseUntil < @Now)
                 ORDER BY NextAttemptDate, Id);
    SELECT d.Id, d.EventId, d.EventType, d.TenantId, d.BulkChangeId, d.WebhookId, d.Url, d.Status, d.Attempts, d.NextAttemptDate,
           d.LastStatusCode, d.LastError, d.CreatedDate, d.DeliveredDate, d.Reason, d.Actor,
           COALESCE(w.Secret, b.NotifySecret) AS Secret, d.Body
    FROM dbo.WebhookDelivery d JOIN dbo.DeviceBulkChange b ON b.Id = d.BulkChangeId
    LEFT JOIN dbo.Webhook w ON w.Id = d.WebhookId
    WHERE d.Id IN (SELECT Id FROM @Claimed) AND d.LeaseOwner = @Worker
    ORDER BY d.Id;
END
GO

-- Records an attempt by the lease holder; the body is kept the first time. Returns Recorded (1 or 0).
DROP PROCEDURE IF EXISTS dbo.usp_WebhookDelivery_Record;
GO
CREATE PROCEDURE dbo.usp_WebhookDelivery_Record
    @Id BIGINT, @Worker NVARCHAR(100), @Body NVARCHAR(MAX), @Status NVARCHAR(20), @NextAttemptDate DATETIME2 = NULL,
    @LastStatusCode INT = NULL, @LastError NVARCHAR(1000) = NULL, @DeliveredDate DATETIME2 = NULL AS
BEGIN
    SET NOCOUNT ON;
    UPDATE dbo.WebhookDelivery
    SET Status = @Status, Attempts = Attempts + 1, NextAttemptDate = COALESCE(@NextAttemptDate, NextAttemptDate),
        LastStatusCode = @LastStatusCode, LastError = @LastError, DeliveredDate = @DeliveredDate, Body = COALESCE(Body, @Body),
        LeaseOwner = NULL, LeaseUntil = NULL
    WHERE Id = @Id AND LeaseOwner = @Worker AND Status = N'PENDING';
    SELECT CAST(@@ROWCOUNT AS INT) AS Recorded;
END
GO

-- An undo's plan (issue 22): the tenant's bulk change's PROCESSED rows with their device before the row changed it
-- (Before*, kept by usp_DeviceBulkChange_CompleteRows) and now (Now*; NowId NULL: the device is gone).
DROP PROCEDURE IF EXISTS dbo.usp_DeviceBulkChange_AppliedRows;
GO
CREATE PROCEDURE dbo.usp_DeviceBulkChange_AppliedRows @TenantId BIGINT, @BulkChangeId BIGINT AS
BEGIN
    SET NOCOUNT ON;
    IF (SELECT PortalTypeId FROM dbo.DeviceBulkChange WHERE Id = @BulkChangeId AND TenantId = @TenantId) = 2
        SELECT r.Id, r.ICCID, r.DeviceId, r.BeforeDeviceStatusId, r.BeforeCarrierRatePlan, r.BeforeCommunicationPlan, r.BeforeRevCustomerId, r.BeforeUsername, r.BeforeCustomerRatePlanId, r.BeforeCustomerRatePoolId, r.BeforeDataAllocationMB, r.BeforeICCID, r.BeforeIMEI,
               d.Id AS NowId, d.DeviceStatusId AS NowDeviceStatusId, d.CarrierRatePlan AS NowCarrierRatePlan, d.CommunicationPlan AS NowCommunicationPlan, d.RevCustomerId AS NowRevCustomerId, d.Username AS NowUsername, d.CustomerRatePlanId AS NowCustomerRatePlanId, d.CustomerRatePoolId AS NowCustomerRatePoolId, d.CustomerDataAllocationMB AS NowDataAllocationMB, d.ICCID AS NowICCID, d.IMEI AS NowIMEI, r.RowRequest, r.BeforeCostCenters,
               (SELECT TOP (1) s.RevServiceId FROM dbo.RevService s WHERE s.CreatedByBulkChangeId = r.BulkChangeId AND s.CreatedByRowId = r.Id AND s.TenantId = r.TenantId ORDER BY s.Id DESC) AS CreatedRevServiceId
        FROM dbo.Mobility_DeviceChange r LEFT JOIN dbo.Device d ON d.Id = r.DeviceId AND d.TenantId = r.TenantId
        WHERE r.BulkChangeId = @BulkChangeId AND r.TenantId = @TenantId AND r.Status = N'PROCESSED' ORDER BY r.Id;
    ELSE
        SELECT r.Id, r.ICCID, r.DeviceId, r.BeforeDeviceStatusId, r.BeforeCarrierRatePlan, r.BeforeCommunicationPlan, r.BeforeRevCustomerId, r.BeforeUsername, r.BeforeCustomerRatePlanId, r.BeforeCustomerRatePoolId, r.BeforeDataAllocationMB, r.BeforeICCID, r.BeforeIMEI,
               d.Id AS NowId, d.DeviceStatusId AS NowDeviceStatusId, d.CarrierRatePlan AS NowCarrierRatePlan, d.CommunicationPlan AS NowCommunicationPlan, d.RevCustomerId AS NowRevCustomerId, d.Username AS NowUsername, d.CustomerRatePlanId AS NowCustomerRatePlanId, d.CustomerRatePoolId AS NowCustomerRatePoolId, d.CustomerDataAllocationMB AS NowDataAllocationMB, d.ICCID AS NowICCID, d.IMEI AS NowIMEI, r.RowRequest, r.BeforeCostCenters,
               (SELECT TOP (1) s.RevServiceId FROM dbo.RevService s WHERE s.CreatedByBulkChangeId = r.BulkChangeId AND s.CreatedByRowId = r.Id AND s.TenantId = r.TenantId ORDER BY s.Id DESC) AS CreatedRevServiceId
        FROM dbo.M2M_DeviceChange r LEFT JOIN dbo.Device d ON d.Id = r.DeviceId AND d.TenantId = r.TenantId
        WHERE r.BulkChangeId = @BulkChangeId AND r.TenantId = @TenantId AND r.Status = N'PROCESSED' ORDER BY r.Id;
END
GO
