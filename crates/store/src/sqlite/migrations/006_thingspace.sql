CREATE TABLE ThingSpaceAuthentication (
    ServiceProviderId INTEGER PRIMARY KEY REFERENCES ServiceProvider(Id), AppKey TEXT NOT NULL, AppSecret TEXT NOT NULL,
    AccountName TEXT NOT NULL, CallbackUsername TEXT NOT NULL, CallbackPassword TEXT NOT NULL,
    LoginRefusedReason TEXT, LoginRefusedDate TEXT);
ALTER TABLE M2M_DeviceChange ADD COLUMN CarrierRequestId TEXT;
ALTER TABLE M2M_DeviceChange ADD COLUMN CarrierRequestedAt TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN CarrierRequestId TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN CarrierRequestedAt TEXT;
CREATE INDEX IX_M2M_DeviceChange_CarrierRequest ON M2M_DeviceChange (CarrierRequestId);
CREATE INDEX IX_Mobility_DeviceChange_CarrierRequest ON Mobility_DeviceChange (CarrierRequestId);
ALTER TABLE Device ADD COLUMN IpAddress TEXT;
CREATE TABLE ThingSpaceCallBackResponseLog (
    Id INTEGER PRIMARY KEY, RequestId TEXT NOT NULL, ICCID TEXT, TenantId INTEGER, ServiceProviderId INTEGER,
    APIStatus TEXT NOT NULL, APIResponse TEXT NOT NULL, Outcome TEXT NOT NULL, CreatedDate TEXT NOT NULL);
CREATE INDEX IX_ThingSpaceCallBackResponseLog_Request ON ThingSpaceCallBackResponseLog (RequestId);
