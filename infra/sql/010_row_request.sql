-- A row's own change (issue 22, undo): set when it differs from its bulk change's request (an undo sets each device
-- back to its own value); read with the claim (through dbo.ClaimWork). A versioned step runs once.
ALTER TABLE dbo.M2M_DeviceChange ADD RowRequest NVARCHAR(MAX) NULL;
GO
ALTER TABLE dbo.Mobility_DeviceChange ADD RowRequest NVARCHAR(MAX) NULL;
GO
ALTER TABLE dbo.ClaimWork ADD RowRequest NVARCHAR(MAX) NULL;
GO
