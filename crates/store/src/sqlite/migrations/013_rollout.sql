-- Rollout control (issue 21). CanaryDevices: PENDING rows are claimed only while fewer rows than it were ever
-- claimed, until CanaryPassedDate. A paused bulk change (Status PAUSED, with who and why) and an aborted one
-- (AbortedReason, decided once) have no row claimed at all. A paused retry is still an open retry.
ALTER TABLE DeviceBulkChange ADD COLUMN CanaryDevices INTEGER;
ALTER TABLE DeviceBulkChange ADD COLUMN CanaryPassedDate TEXT;
ALTER TABLE DeviceBulkChange ADD COLUMN HoldReason TEXT;
ALTER TABLE DeviceBulkChange ADD COLUMN HoldBy TEXT;
ALTER TABLE DeviceBulkChange ADD COLUMN HoldDate TEXT;
ALTER TABLE DeviceBulkChange ADD COLUMN AbortedReason TEXT;
DROP INDEX IF EXISTS UX_DeviceBulkChange_OpenRetry;
CREATE UNIQUE INDEX UX_DeviceBulkChange_OpenRetry ON DeviceBulkChange (RetryOfBulkChangeId)
WHERE RetryOfBulkChangeId IS NOT NULL AND Status IN ('NEW', 'PROCESSING', 'SCHEDULED', 'PAUSED');
