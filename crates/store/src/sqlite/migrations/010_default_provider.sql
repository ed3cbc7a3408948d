-- The provider a Rev.io account gives a new service line when the request names none.
ALTER TABLE ServiceProvider ADD COLUMN DefaultProviderId INTEGER;
