-- Reference data: the Integration table and the Control Center statuses of every Jasper-family integration
-- (DeviceStatus.Id = IntegrationId * 100 + n, as in the SQLite store). Idempotent.
SET XACT_ABORT ON;
GO
MERGE dbo.Integration AS t
USING (VALUES (1, N'Jasper'), (3, N'Rev.io'), (4, N'ThingSpace'), (6, N'Telegence'), (9, N'POD19'),
              (11, N'TMobileJasper'), (12, N'Teal'), (13, N'Pond'), (14, N'Rogers')) AS s (Id, Name)
ON t.Id = s.Id
WHEN NOT MATCHED THEN INSERT (Id, Name) VALUES (s.Id, s.Name);

MERGE dbo.DeviceStatus AS t
USING (
    SELECT i.Id * 100 + s.n AS Id, i.Id AS IntegrationId, s.Status, s.DisplayName
    FROM (VALUES (1), (9), (11), (14)) AS i (Id)
    CROSS JOIN (VALUES (1, N'ACTIVATED', N'Active'), (2, N'ACTIVATION_READY', N'Activation Ready'),
                       (3, N'DEACTIVATED', N'Deactivated'), (4, N'INVENTORY', N'Inventory'), (5, N'PURGED', N'Purged'),
                       (6, N'REPLACED', N'Replaced'), (7, N'RETIRED', N'Retired'), (8, N'TEST_READY', N'Test Ready')) AS s (n, Status, DisplayName)
) AS s
ON t.Id = s.Id
WHEN NOT MATCHED THEN INSERT (Id, IntegrationId, Status, DisplayName) VALUES (s.Id, s.IntegrationId, s.Status, s.DisplayName);
GO

-- ThingSpace statuses (Integration 4). INVENTORY: known here, not yet on ThingSpace; the others are ThingSpace's.
MERGE dbo.DeviceStatus AS t
USING (VALUES (401, 4, N'ACTIVE', N'Active'), (402, 4, N'PREACTIVE', N'Pre-Active'), (403, 4, N'DEACTIVE', N'Deactivated'),
              (404, 4, N'INVENTORY', N'Inventory'), (405, 4, N'SUSPEND', N'Suspended')) AS s (Id, IntegrationId, Status, DisplayName)
ON t.Id = s.Id
WHEN NOT MATCHED THEN INSERT (Id, IntegrationId, Status, DisplayName) VALUES (s.Id, s.IntegrationId, s.Status, s.DisplayName);
GO
