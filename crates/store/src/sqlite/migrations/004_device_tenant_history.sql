CREATE TABLE Device_Tenant (Id INTEGER PRIMARY KEY, DeviceId INTEGER NOT NULL REFERENCES Device(Id), TenantId INTEGER NOT NULL,
                            RevCustomerId TEXT, IsActive INTEGER NOT NULL DEFAULT 1, IsDeleted INTEGER NOT NULL DEFAULT 0,
                            ModifiedBy TEXT, ModifiedDate TEXT, UNIQUE (DeviceId, TenantId));
CREATE TABLE DeviceActionHistory (Id INTEGER PRIMARY KEY, DeviceId INTEGER NOT NULL REFERENCES Device(Id), TenantId INTEGER NOT NULL,
                                  BulkChangeId INTEGER, Action TEXT NOT NULL, Details TEXT, ActionBy TEXT NOT NULL, ActionDate TEXT NOT NULL);
