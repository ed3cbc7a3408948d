-- Teal and Pond: a carrier's wire settings (JSON), and the carrier's own ids of a rate plan.
ALTER TABLE ServiceProvider ADD COLUMN CarrierSettings TEXT;
ALTER TABLE JasperCarrierRatePlan ADD COLUMN JasperRatePlanId INTEGER;
ALTER TABLE JasperCarrierRatePlan ADD COLUMN PlanUuid TEXT;
