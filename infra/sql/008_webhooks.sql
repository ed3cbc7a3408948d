-- Webhooks (issue 22). A tenant's endpoints (Events: a comma list between commas, ',bulk_change.finished,'; the
-- signing secret kept to sign, never shown again), and one delivery row per event and endpoint, written in the
-- transaction that makes the event true (an outbox: usp_WebhookEvent_Write), delivered at least once under a
-- lease. A bulk change's own NotifyUrl is signed with its NotifySecret. A versioned step runs once.
CREATE TABLE dbo.Webhook (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    TenantId BIGINT NOT NULL,
    Url NVARCHAR(2048) NOT NULL,
    Events NVARCHAR(400) NOT NULL,
    Secret NVARCHAR(200) NOT NULL,
    CreatedBy NVARCHAR(200) NOT NULL,
    CreatedDate DATETIME2 NOT NULL,
    DeletedDate DATETIME2 NULL
);
GO
CREATE INDEX IX_Webhook_Tenant ON dbo.Webhook (TenantId, DeletedDate);
GO
CREATE TABLE dbo.WebhookDelivery (
    Id BIGINT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    EventId NVARCHAR(64) NOT NULL,
    EventType NVARCHAR(50) NOT NULL,
    TenantId BIGINT NOT NULL,
    BulkChangeId BIGINT NOT NULL,
    WebhookId BIGINT NULL,
    Url NVARCHAR(2048) NOT NULL,
    Reason NVARCHAR(50) NULL,
    Actor NVARCHAR(200) NULL,
    Body NVARCHAR(MAX) NULL,
    Status NVARCHAR(20) NOT NULL DEFAULT N'PENDING',
    Attempts INT NOT NULL DEFAULT 0,
    NextAttemptDate DATETIME2 NOT NULL,
    LeaseOwner NVARCHAR(100) NULL,
    LeaseUntil DATETIME2 NULL,
    LastStatusCode INT NULL,
    LastError NVARCHAR(1000) NULL,
    CreatedDate DATETIME2 NOT NULL,
    DeliveredDate DATETIME2 NULL
);
GO
CREATE INDEX IX_WebhookDelivery_Due ON dbo.WebhookDelivery (Status, NextAttemptDate);
GO
CREATE INDEX IX_WebhookDelivery_Webhook ON dbo.WebhookDelivery (WebhookId, Id);
GO
ALTER TABLE dbo.DeviceBulkChange ADD NotifyUrl NVARCHAR(2048) NULL;
GO
ALTER TABLE dbo.DeviceBulkChange ADD NotifySecret NVARCHAR(200) NULL;
GO
