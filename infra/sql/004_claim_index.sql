-- The claim's index: a bulk change's rows of one status in Id order, so usp_DeviceBulkChange_ClaimRows reads its
-- TOP (n) candidates as one ordered range. SQL Server's nonclustered (BulkChangeId, Status) index already kept the
-- clustered key (Id) in order; Babelfish's does not, and sorted every PENDING row of the bulk change on each claim.
-- It replaces IX_*_Bulk_Status (the same leading columns serve the queries that used it). A versioned step runs
-- once, so the indexes need no guard.
CREATE INDEX IX_M2M_DeviceChange_Claim ON dbo.M2M_DeviceChange (BulkChangeId, Status, Id) INCLUDE (LeaseUntil);
GO
DROP INDEX IF EXISTS IX_M2M_DeviceChange_Bulk_Status ON dbo.M2M_DeviceChange;
GO
CREATE INDEX IX_Mobility_DeviceChange_Claim ON dbo.Mobility_DeviceChange (BulkChangeId, Status, Id) INCLUDE (LeaseUntil);
GO
DROP INDEX IF EXISTS IX_Mobility_DeviceChange_Bulk_Status ON dbo.Mobility_DeviceChange;
GO
