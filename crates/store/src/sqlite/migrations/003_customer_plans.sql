CREATE TABLE CustomerRatePlan (Id INTEGER PRIMARY KEY, TenantId INTEGER NOT NULL REFERENCES Tenant(Id), Name TEXT NOT NULL,
                               IsActive INTEGER NOT NULL DEFAULT 1);
CREATE TABLE CustomerRatePool (Id INTEGER PRIMARY KEY, TenantId INTEGER NOT NULL REFERENCES Tenant(Id), Name TEXT NOT NULL,
                               IsActive INTEGER NOT NULL DEFAULT 1);
ALTER TABLE Device ADD COLUMN CustomerRatePlanId INTEGER;
ALTER TABLE Device ADD COLUMN CustomerRatePoolId INTEGER;
ALTER TABLE Device ADD COLUMN CustomerDataAllocationMB REAL;
CREATE TABLE Device_CustomerRatePlanOrRatePool_Queue (
    Id INTEGER PRIMARY KEY, DeviceId INTEGER NOT NULL REFERENCES Device(Id),
    M2MDeviceChangeId INTEGER NOT NULL, BulkChangeId INTEGER NOT NULL,
    CustomerRatePlanId INTEGER, CustomerRatePoolId INTEGER, CustomerDataAllocationMB REAL, EffectiveDate TEXT NOT NULL,
    PortalType INTEGER NOT NULL DEFAULT 0, TenantId INTEGER NOT NULL, CreatedBy TEXT NOT NULL, CreatedDate TEXT NOT NULL,
    ModifiedBy TEXT, ModifiedDate TEXT, IsActive INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IX_CustomerPlanQueue_Due ON Device_CustomerRatePlanOrRatePool_Queue (IsActive, EffectiveDate);
