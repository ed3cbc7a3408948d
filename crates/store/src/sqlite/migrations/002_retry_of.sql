ALTER TABLE DeviceBulkChange ADD COLUMN RetryOfBulkChangeId INTEGER REFERENCES DeviceBulkChange(Id);
