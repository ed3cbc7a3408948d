-- The text of a device's history entry is built by the engine (DeviceUpdate.history) and passed in, rather than
-- written a second time in the procedures: the group procedure stages it with its row. A versioned step runs once.
ALTER TABLE dbo.CompletionWork ADD HistoryDetails NVARCHAR(MAX) NULL;
GO
