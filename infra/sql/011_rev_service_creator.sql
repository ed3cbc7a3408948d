-- Which row made a device's Rev.io service line active (issue 22, undo: the line an assignment created is closed
-- by its undo, a line that was there before is not), and when a line was closed. One column per ALTER (Babelfish).
-- A versioned step runs once.
ALTER TABLE dbo.RevService ADD CreatedByBulkChangeId BIGINT NULL;
GO
ALTER TABLE dbo.RevService ADD CreatedByRowId BIGINT NULL;
GO
ALTER TABLE dbo.RevService ADD ClosedDate DATETIME2 NULL;
GO
CREATE INDEX IX_RevService_Row ON dbo.RevService (CreatedByBulkChangeId, CreatedByRowId);
GO
