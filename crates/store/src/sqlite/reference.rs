//! Reference data a request is checked against: service providers, statuses, plans, IMEI ranges, Rev.io customers.

use super::*;

#[async_trait]
impl ReferenceData for SqliteStore {
    async fn service_provider(&self, tenant_id: i64, id: i64) -> StoreResult<Option<ServiceProvider>> {
        self.with(move |c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT {SP_COLUMNS} FROM {SP_FROM} WHERE sp.Id = ?1 AND sp.TenantId = ?2 AND sp.IsActive = 1"
                    ),
                    params![id, tenant_id],
                    service_provider_from_row,
                )
                .optional()
                .map_err(db("read service provider"))?;
            checked_sp(found)
        })
        .await
    }

    async fn service_provider_for(
        &self,
        tenant_id: i64,
        integration: Integration,
    ) -> StoreResult<Option<ServiceProvider>> {
        self.with(move |c| {
            let found = c
                .query_row(
                    &format!("SELECT {SP_COLUMNS} FROM {SP_FROM} WHERE sp.TenantId = ?1 AND sp.IntegrationId = ?2 AND sp.IsActive = 1 ORDER BY sp.Id LIMIT 1"),
                    params![tenant_id, integration.id()],
                    service_provider_from_row,
                )
                .optional()
                .map_err(db("read service provider by integration"))?;
            checked_sp(found)
        })
        .await
    }

    async fn device_statuses(&self, integration: Integration) -> StoreResult<Vec<DeviceStatusDef>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT Id, IntegrationId, Status, DisplayName FROM DeviceStatus WHERE IntegrationId = ?1 AND IsActive = 1 AND IsDeleted = 0 ORDER BY Id")
                .map_err(db("read device statuses"))?;
            let rows = stmt
                .query_map(params![integration.id()], |r| Ok(DeviceStatusDef { id: r.get(0)?, integration_id: r.get(1)?, status: r.get(2)?, display_name: r.get(3)? }))
                .map_err(db("read device statuses"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db("read device statuses"))
        })
        .await
    }

    async fn carrier_rate_plans(&self, tenant_id: i64, service_provider_id: i64) -> StoreResult<Vec<CarrierRatePlan>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT p.Id, p.ServiceProviderId, p.RatePlanCode, p.PlanMB, p.BaseRate, p.JasperRatePlanId, p.PlanUuid FROM JasperCarrierRatePlan p
                     JOIN ServiceProvider sp ON sp.Id = p.ServiceProviderId
                     WHERE p.ServiceProviderId = ?1 AND sp.TenantId = ?2 AND p.IsActive = 1 ORDER BY p.BaseRate, p.Id",
                )
                .map_err(db("read rate plans"))?;
            let rows = stmt
                .query_map(params![service_provider_id, tenant_id], |r| {
                    Ok(CarrierRatePlan {
                        id: r.get(0)?,
                        service_provider_id: r.get(1)?,
                        rate_plan_code: r.get(2)?,
                        plan_mb: r.get(3)?,
                        base_rate: r.get(4)?,
                        jasper_rate_plan_id: r.get(5)?,
                        plan_uuid: r.get(6)?,
                    })
                })
                .map_err(db("read rate plans"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db("read rate plans"))
        })
        .await
    }

    async fn imei_ranges(&self) -> StoreResult<Vec<ImeiRange>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT Manufacturer, Model, FromIMEI, ToIMEI, SIMType FROM IMEI_DeviceType_CarrierRatePlan
                     WHERE IsActive = 1 ORDER BY Id",
                )
                .map_err(db("read IMEI ranges"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ImeiRange {
                        manufacturer: r.get(0)?,
                        model: r.get(1)?,
                        from_imei: r.get(2)?,
                        to_imei: r.get(3)?,
                        sim_type: r.get(4)?,
                    })
                })
                .map_err(db("read IMEI ranges"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db("read IMEI ranges"))
        })
        .await
    }

    async fn rev_customer(&self, tenant_id: i64, rev_customer_id: &str) -> StoreResult<Option<RevCustomer>> {
        let rev_customer_id = rev_customer_id.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT Id, TenantId, RevCustomerId, Name FROM RevCustomer WHERE TenantId = ?1 AND RevCustomerId = ?2 AND IsActive = 1",
                params![tenant_id, rev_customer_id],
                |r| Ok(RevCustomer { id: r.get(0)?, tenant_id: r.get(1)?, rev_customer_id: r.get(2)?, name: r.get(3)? }),
            )
            .optional()
            .map_err(db("read Rev customer"))
        })
        .await
    }

    async fn rev_customers(&self, tenant_id: i64) -> StoreResult<Vec<RevCustomer>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT Id, TenantId, RevCustomerId, Name FROM RevCustomer WHERE TenantId = ?1 AND IsActive = 1 ORDER BY Name, Id",
                )
                .map_err(db("list Rev customers"))?;
            stmt.query_map(params![tenant_id], |r| {
                Ok(RevCustomer { id: r.get(0)?, tenant_id: r.get(1)?, rev_customer_id: r.get(2)?, name: r.get(3)? })
            })
            .map_err(db("list Rev customers"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("list Rev customers"))
        })
        .await
    }

    async fn customer_rate_plan(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        self.with(move |c| {
            c.query_row(
                "SELECT Id, Name FROM CustomerRatePlan WHERE Id = ?1 AND TenantId = ?2 AND IsActive = 1",
                params![id, tenant_id],
                |r| Ok(CustomerPlanRef { id: r.get(0)?, name: r.get(1)? }),
            )
            .optional()
            .map_err(db("read customer rate plan"))
        })
        .await
    }

    async fn customer_rate_pool(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        self.with(move |c| {
            c.query_row(
                "SELECT Id, Name FROM CustomerRatePool WHERE Id = ?1 AND TenantId = ?2 AND IsActive = 1",
                params![id, tenant_id],
                |r| Ok(CustomerPlanRef { id: r.get(0)?, name: r.get(1)? }),
            )
            .optional()
            .map_err(db("read customer rate pool"))
        })
        .await
    }

    async fn providers_of(&self, integration: Integration) -> StoreResult<Vec<ServiceProvider>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SP_COLUMNS} FROM {SP_FROM} WHERE sp.IntegrationId = ?1 AND sp.IsActive = 1 ORDER BY sp.Id"
                ))
                .map_err(db("read providers"))?;
            let found = stmt
                .query_map(params![integration.id()], service_provider_from_row)
                .map_err(db("read providers"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("read providers"))?;
            found
                .into_iter()
                .map(|f| checked_sp(Some(f)).map(|sp| sp.into_iter()))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.into_iter().flatten().collect())
        })
        .await
    }
}
