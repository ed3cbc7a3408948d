-- Webhooks (issue 22). A tenant's endpoints (Events: a comma list between commas, ',bulk_change.finished,'; the
-- signing secret kept to sign, never shown again), and one delivery row per event and endpoint, written in the
-- transaction that makes the event true (an outbox), delivered at least once under a lease. A bulk change's own
-- NotifyUrl is signed with its NotifySecret.
CREATE TABLE Webhook (
    Id INTEGER PRIMARY KEY AUTOINCREMENT,
    TenantId INTEGER NOT NULL,
    Url TEXT NOT NULL,
    Events TEXT NOT NULL,
    Secret TEXT NOT NULL,
    CreatedBy TEXT NOT NULL,
    CreatedDate TEXT NOT NULL,
    DeletedDate TEXT
);
CREATE INDEX IX_Webhook_Tenant ON Webhook (TenantId, DeletedDate);
CREATE TABLE WebhookDelivery (
    Id INTEGER PRIMARY KEY AUTOINCREMENT,
    EventId TEXT NOT NULL,
    EventType TEXT NOT NULL,
    TenantId INTEGER NOT NULL,
    BulkChangeId INTEGER NOT NULL,
    WebhookId INTEGER,
    Url TEXT NOT NULL,
    Reason TEXT,
    Actor TEXT,
    Body TEXT,
    Status TEXT NOT NULL DEFAULT 'PENDING',
    Attempts INTEGER NOT NULL DEFAULT 0,
    NextAttemptDate TEXT NOT NULL,
    LeaseOwner TEXT,
    LeaseUntil TEXT,
    LastStatusCode INTEGER,
    LastError TEXT,
    CreatedDate TEXT NOT NULL,
    DeliveredDate TEXT
);
CREATE UNIQUE INDEX UX_WebhookDelivery_Event ON WebhookDelivery (EventId, Url);
CREATE INDEX IX_WebhookDelivery_Due ON WebhookDelivery (Status, NextAttemptDate);
CREATE INDEX IX_WebhookDelivery_Webhook ON WebhookDelivery (WebhookId, Id);
ALTER TABLE DeviceBulkChange ADD COLUMN NotifyUrl TEXT;
ALTER TABLE DeviceBulkChange ADD COLUMN NotifySecret TEXT;
