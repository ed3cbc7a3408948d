-- One open change per device and attribute (README "One change per device"): a lock row per attribute an open row
-- holds, keyed by device and attribute, released by the row tables' triggers when the row is final. Open rows of an
-- older database take every attribute (the first row of a device wins).
CREATE TABLE DeviceChangeLock (
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
CREATE INDEX IX_IdempotencyKey_Created ON IdempotencyKey (CreatedDate);
