-- A username change's cost centers as the device's Rev.io service had them before the change (issue 22, undo):
-- JSON {"CostCenter", "CostCenter2", "CostCenter3"}, read from Rev.io and kept by the row's worker before it sends
-- the new ones (usp_DeviceBulkChange_KeepBeforeCostCenters; the first kept value stays). A versioned step runs once.
ALTER TABLE dbo.M2M_DeviceChange ADD BeforeCostCenters NVARCHAR(MAX) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD BeforeCostCenters NVARCHAR(MAX) NULL;
GO
