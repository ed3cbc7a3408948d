-- What each device was before a row changed it (issue 22, undo): the device's changeable attributes, read in the
-- transaction that records the row PROCESSED and applies its change, just before the change.
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeDeviceStatusId INTEGER;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeCarrierRatePlan TEXT;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeCommunicationPlan TEXT;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeRevCustomerId TEXT;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeUsername TEXT;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeCustomerRatePlanId INTEGER;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeCustomerRatePoolId INTEGER;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeDataAllocationMB REAL;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeICCID TEXT;
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeIMEI TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeDeviceStatusId INTEGER;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeCarrierRatePlan TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeCommunicationPlan TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeRevCustomerId TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeUsername TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeCustomerRatePlanId INTEGER;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeCustomerRatePoolId INTEGER;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeDataAllocationMB REAL;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeICCID TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeIMEI TEXT;
