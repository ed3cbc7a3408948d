-- Work tables of the set-based group procedures (usp_DeviceBulkChange_CompleteRows). A group's rows are staged
-- here under a GroupId of their own (NEWID()) inside the procedure's transaction and deleted before it commits, so
-- the tables are empty between calls and two groups never share a key. Why not table variables: on Babelfish a
-- statement that reads a table variable is parsed again (ANTLR) on every execution, 84 % of the CPU of a group
-- (measured, make bench); a permanent table keeps its statements' plans. SQL Server runs the same text.
IF OBJECT_ID('dbo.CompletionWork') IS NULL
CREATE TABLE dbo.CompletionWork (
    GroupId UNIQUEIDENTIFIER NOT NULL,
    Seq INT NOT NULL,
    TenantId BIGINT NULL,
    BulkChangeId BIGINT NULL,
    RowId BIGINT NULL,
    Mobility BIT NULL,
    Status NVARCHAR(20) NULL,
    StatusDetails NVARCHAR(MAX) NULL,
    NewDeviceStatusId BIGINT NULL,
    CarrierRatePlan NVARCHAR(200) NULL,
    CommunicationPlan NVARCHAR(200) NULL,
    RevCustomerId NVARCHAR(100) NULL,
    Username NVARCHAR(200) NULL,
    Archive BIT NULL,
    CustomerRatePlanId BIGINT NULL,
    CustomerRatePoolId BIGINT NULL,
    CustomerDataAllocationMB FLOAT NULL,
    NewICCID NVARCHAR(25) NULL,
    NewIMEI NVARCHAR(20) NULL,
    NewMSISDN NVARCHAR(20) NULL,
    IpAddress NVARCHAR(64) NULL,
    Now DATETIME2 NULL,
    DeviceId BIGINT NULL,
    Completed BIT NOT NULL,
    CONSTRAINT PK_CompletionWork PRIMARY KEY (GroupId, Seq)
);
GO
-- The rows of a group that its UPDATE completed (OUTPUT INTO), per table (Mobility 0: M2M, 1: Mobility).
IF OBJECT_ID('dbo.CompletionDone') IS NULL
CREATE TABLE dbo.CompletionDone (
    GroupId UNIQUEIDENTIFIER NOT NULL,
    Mobility BIT NOT NULL,
    Id BIGINT NOT NULL,
    DeviceId BIGINT NULL,
    CONSTRAINT PK_CompletionDone PRIMARY KEY (GroupId, Mobility, Id)
);
GO
-- The rows a claim took (usp_DeviceBulkChange_ClaimRows), under the claim's GroupId, for the same reason.
IF OBJECT_ID('dbo.ClaimWork') IS NULL
CREATE TABLE dbo.ClaimWork (
    GroupId UNIQUEIDENTIFIER NOT NULL,
    Id BIGINT NOT NULL,
    BulkChangeId BIGINT NULL,
    DeviceId BIGINT NULL,
    ICCID NVARCHAR(64) NULL,
    MSISDN NVARCHAR(20) NULL,
    Status NVARCHAR(20) NULL,
    StatusDetails NVARCHAR(MAX) NULL,
    Claims INT NULL,
    ProcessedDate DATETIME2 NULL,
    CarrierRequestId NVARCHAR(100) NULL,
    CarrierRequestedAt DATETIME2 NULL,
    CarrierResult NVARCHAR(MAX) NULL,
    CONSTRAINT PK_ClaimWork PRIMARY KEY (GroupId, Id)
);
GO
