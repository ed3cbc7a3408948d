-- What each device was before a row changed it (issue 22, undo): the device's changeable attributes, read in the
-- transaction that records the row PROCESSED and applies its change (usp_DeviceBulkChange_CompleteRows), just
-- before the change. One column per ALTER (Babelfish). A versioned step runs once.
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeDeviceStatusId BIGINT NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeCarrierRatePlan NVARCHAR(255) NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeCommunicationPlan NVARCHAR(255) NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeRevCustomerId NVARCHAR(100) NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeUsername NVARCHAR(255) NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeCustomerRatePlanId BIGINT NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeCustomerRatePoolId BIGINT NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeDataAllocationMB FLOAT NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeICCID NVARCHAR(64) NULL;
GO
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeIMEI NVARCHAR(64) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeDeviceStatusId BIGINT NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeCarrierRatePlan NVARCHAR(255) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeCommunicationPlan NVARCHAR(255) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeRevCustomerId NVARCHAR(100) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeUsername NVARCHAR(255) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeCustomerRatePlanId BIGINT NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeCustomerRatePoolId BIGINT NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeDataAllocationMB FLOAT NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeICCID NVARCHAR(64) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeIMEI NVARCHAR(64) NULL;
GO
