CREATE TABLE Mobility_DeviceChange (
    Id INTEGER PRIMARY KEY, BulkChangeId INTEGER NOT NULL REFERENCES DeviceBulkChange(Id), TenantId INTEGER NOT NULL,
    DeviceId INTEGER REFERENCES Device(Id), ICCID TEXT NOT NULL, MSISDN TEXT, Status TEXT NOT NULL, StatusDetails TEXT,
    IsProcessed INTEGER NOT NULL DEFAULT 0, LeaseOwner TEXT, LeaseUntil TEXT, Claims INTEGER NOT NULL DEFAULT 0,
    ProcessedDate TEXT, CreatedDate TEXT NOT NULL);
CREATE INDEX IX_Mobility_DeviceChange_Bulk_Status ON Mobility_DeviceChange (BulkChangeId, Status);
ALTER TABLE DeviceBulkChangeLog ADD COLUMN MobilityDeviceChangeId INTEGER;
