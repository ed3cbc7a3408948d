-- The pace of each carrier account, shared by every worker: the next free call slot (Unix seconds).
CREATE TABLE RateBudget (
ServiceProviderId INTEGER NOT NULL, Bucket TEXT NOT NULL, NextSlot REAL NOT NULL,
PRIMARY KEY (ServiceProviderId, Bucket));
