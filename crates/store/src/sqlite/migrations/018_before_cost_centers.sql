-- A username change's cost centers as the device's Rev.io service had them before the change (issue 22, undo):
-- JSON {"CostCenter", "CostCenter2", "CostCenter3"}, read from Rev.io and kept by the row's worker before it sends
-- the new ones (the first kept value stays).
ALTER TABLE M2M_DeviceChange ADD COLUMN BeforeCostCenters TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN BeforeCostCenters TEXT;
