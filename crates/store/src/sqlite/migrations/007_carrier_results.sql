ALTER TABLE M2M_DeviceChange ADD COLUMN CarrierResult TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN CarrierResult TEXT;
