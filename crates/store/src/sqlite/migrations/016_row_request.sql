-- A row's own change (issue 22, undo): set when it differs from its bulk change's request (an undo sets each device
-- back to its own value); read with the claim.
ALTER TABLE M2M_DeviceChange ADD COLUMN RowRequest TEXT;
ALTER TABLE Mobility_DeviceChange ADD COLUMN RowRequest TEXT;
