-- Rollout control (issue 21). CanaryDevices: PENDING rows are claimed only while fewer rows than it were ever
-- claimed, until CanaryPassedDate. A paused bulk change (Status PAUSED, with who and why) and an aborted one
-- (AbortedReason, decided once) have no row claimed at all. A paused retry is still an open retry, so the filtered
-- index over open retries is made again with PAUSED in it. A versioned step runs once.
ALTER TABLE dbo.DeviceBulkChange ADD CanaryDevices INT NULL;
GO
ALTER TABLE dbo.DeviceBulkChange ADD CanaryPassedDate DATETIME2 NULL;
GO
ALTER TABLE dbo.DeviceBulkChange ADD HoldReason NVARCHAR(50) NULL;
GO
ALTER TABLE dbo.DeviceBulkChange ADD HoldBy NVARCHAR(200) NULL;
GO
ALTER TABLE dbo.DeviceBulkChange ADD HoldDate DATETIME2 NULL;
GO
ALTER TABLE dbo.DeviceBulkChange ADD AbortedReason NVARCHAR(400) NULL;
GO
DROP INDEX IF EXISTS UX_DeviceBulkChange_OpenRetry ON dbo.DeviceBulkChange;
GO
CREATE UNIQUE INDEX UX_DeviceBulkChange_OpenRetry ON dbo.DeviceBulkChange (RetryOfBulkChangeId)
WHERE RetryOfBulkChangeId IS NOT NULL AND Status IN (N'NEW', N'PROCESSING', N'SCHEDULED', N'PAUSED');
GO
