-- Which row made a device's Rev.io service line active (issue 22, undo: the line an assignment created is closed
-- by its undo, a line that was there before is not), and when a line was closed.
ALTER TABLE RevService ADD COLUMN CreatedByBulkChangeId INTEGER;
ALTER TABLE RevService ADD COLUMN CreatedByRowId INTEGER;
ALTER TABLE RevService ADD COLUMN ClosedDate TEXT;
CREATE INDEX IF NOT EXISTS IX_RevService_Row ON RevService (CreatedByBulkChangeId, CreatedByRowId);
