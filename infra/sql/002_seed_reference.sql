-- Reference data: the Integration table and the Control Center statuses of every Jasper-family integration
-- (DeviceStatus.Id = IntegrationId * 100 + n, as in the SQLite store). Idempotent: inserts what is missing
-- (no MERGE: it has known race and correctness bugs, and engines other than SQL Server lack it).
GO
INSERT INTO dbo.Integration (Id, Name)
SELECT s.Id, s.Name
FROM (VALUES (1, N'Jasper'), (3, N'Rev.io'), (4, N'ThingSpace'), (6, N'Telegence'), (9, N'POD19'),
             (11, N'TMobileJasper'), (12, N'Teal'), (13, N'Pond'), (14, N'Rogers')) AS s (Id, Name)
WHERE NOT EXISTS (SELECT 1 FROM dbo.Integration t WITH (UPDLOCK, HOLDLOCK) WHERE t.Id = s.Id);

INSERT INTO dbo.DeviceStatus (Id, IntegrationId, Status, DisplayName)
SELECT i.Id * 100 + s.n, i.Id, s.Status, s.DisplayName
FROM (VALUES (1), (9), (11), (14)) AS i (Id)
CROSS JOIN (VALUES (1, N'ACTIVATED', N'Active'), (2, N'ACTIVATION_READY', N'Activation Ready'),
                   (3, N'DEACTIVATED', N'Deactivated'), (4, N'INVENTORY', N'Inventory'), (5, N'PURGED', N'Purged'),
                   (6, N'REPLACED', N'Replaced'), (7, N'RETIRED', N'Retired'), (8, N'TEST_READY', N'Test Ready')) AS s (n, Status, DisplayName)
WHERE NOT EXISTS (SELECT 1 FROM dbo.DeviceStatus t WITH (UPDLOCK, HOLDLOCK) WHERE t.Id = i.Id * 100 + s.n);
GO

-- ThingSpace statuses (Integration 4). INVENTORY: known here, not yet on ThingSpace; the others are ThingSpace's.
INSERT INTO dbo.DeviceStatus (Id, IntegrationId, Status, DisplayName)
SELECT s.Id, s.IntegrationId, s.Status, s.DisplayName
FROM (VALUES (401, 4, N'ACTIVE', N'Active'), (402, 4, N'PREACTIVE', N'Pre-Active'), (403, 4, N'DEACTIVE', N'Deactivated'),
             (404, 4, N'INVENTORY', N'Inventory'), (405, 4, N'SUSPEND', N'Suspended')) AS s (Id, IntegrationId, Status, DisplayName)
WHERE NOT EXISTS (SELECT 1 FROM dbo.DeviceStatus t WITH (UPDLOCK, HOLDLOCK) WHERE t.Id = s.Id);
GO

-- Telegence statuses (Integration 6): the carrier's line codes A, S, C; UNKNOWN: a SIM with no line yet (AMOP's own).
INSERT INTO dbo.DeviceStatus (Id, IntegrationId, Status, DisplayName)
SELECT s.Id, s.IntegrationId, s.Status, s.DisplayName
FROM (VALUES (601, 6, N'A', N'Active'), (602, 6, N'S', N'Suspended'), (603, 6, N'C', N'Cancelled'),
             (604, 6, N'UNKNOWN', N'No line')) AS s (Id, IntegrationId, Status, DisplayName)
WHERE NOT EXISTS (SELECT 1 FROM dbo.DeviceStatus t WITH (UPDLOCK, HOLDLOCK) WHERE t.Id = s.Id);
GO

-- Teal (Integration 12): what Teal reports; Pond (13): every service enabled or disabled.
INSERT INTO dbo.DeviceStatus (Id, IntegrationId, Status, DisplayName)
SELECT s.Id, s.IntegrationId, s.Status, s.DisplayName
FROM (VALUES (1201, 12, N'ONLINE', N'Online'), (1202, 12, N'WAITING', N'Waiting'), (1203, 12, N'STOPPED', N'Stopped'),
             (1301, 13, N'ACTIVE', N'Active'), (1302, 13, N'INACTIVE', N'Inactive')) AS s (Id, IntegrationId, Status, DisplayName)
WHERE NOT EXISTS (SELECT 1 FROM dbo.DeviceStatus t WITH (UPDLOCK, HOLDLOCK) WHERE t.Id = s.Id);
GO
