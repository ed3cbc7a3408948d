//! Reference data a request is checked against: service providers, statuses, plans, IMEI ranges, Rev.io customers.

use super::*;

#[async_trait]
impl ReferenceData for MssqlStore {
    async fn service_provider(&self, tenant_id: i64, id: i64) -> StoreResult<Option<ServiceProvider>> {
        let q = proc_call!("EXEC dbo.usp_ServiceProvider_Get @TenantId = @P1, @Id = @P2", tenant_id, id,);
        match self.first("read service provider", q).await?.first().map(service_provider).transpose()? {
            Some(sp) => Ok(Some(self.secrets.resolve(sp).await?)),
            None => Ok(None),
        }
    }

    async fn service_provider_for(
        &self,
        tenant_id: i64,
        integration: Integration,
    ) -> StoreResult<Option<ServiceProvider>> {
        let q = proc_call!(
            "EXEC dbo.usp_ServiceProvider_GetForIntegration @TenantId = @P1, @IntegrationId = @P2",
            tenant_id,
            integration.id(),
        );
        match self.first("read service provider by integration", q).await?.first().map(service_provider).transpose()? {
            Some(sp) => Ok(Some(self.secrets.resolve(sp).await?)),
            None => Ok(None),
        }
    }

    async fn device_statuses(&self, integration: Integration) -> StoreResult<Vec<DeviceStatusDef>> {
        let q = proc_call!("EXEC dbo.usp_DeviceStatus_List @IntegrationId = @P1", integration.id(),);
        self.first("read device statuses", q)
            .await?
            .iter()
            .map(|r| {
                Ok(DeviceStatusDef {
                    id: need(r.get("Id"), "Id")?,
                    integration_id: need(r.get("IntegrationId"), "IntegrationId")?,
                    status: text(r, "Status").unwrap_or_default(),
                    display_name: text(r, "DisplayName").unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn carrier_rate_plans(&self, tenant_id: i64, service_provider_id: i64) -> StoreResult<Vec<CarrierRatePlan>> {
        let q = proc_call!(
            "EXEC dbo.usp_JasperCarrierRatePlan_List @TenantId = @P1, @ServiceProviderId = @P2",
            tenant_id,
            service_provider_id,
        );
        self.first("read rate plans", q)
            .await?
            .iter()
            .map(|r| {
                Ok(CarrierRatePlan {
                    id: need(r.get("Id"), "Id")?,
                    service_provider_id: need(r.get("ServiceProviderId"), "ServiceProviderId")?,
                    rate_plan_code: text(r, "RatePlanCode").unwrap_or_default(),
                    plan_mb: r.get("PlanMB").unwrap_or(0.0),
                    base_rate: r.get("BaseRate").unwrap_or(0.0),
                    jasper_rate_plan_id: r.get("JasperRatePlanId"),
                    plan_uuid: text(r, "PlanUuid"),
                })
            })
            .collect()
    }

    async fn imei_ranges(&self) -> StoreResult<Vec<ImeiRange>> {
        let q = Query::new("EXEC dbo.usp_ImeiRange_List");
        self.first("read IMEI ranges", q)
            .await?
            .iter()
            .map(|r| {
                Ok(ImeiRange {
                    manufacturer: text(r, "Manufacturer").unwrap_or_default(),
                    model: text(r, "Model").unwrap_or_default(),
                    from_imei: need(text(r, "FromIMEI"), "FromIMEI")?,
                    to_imei: need(text(r, "ToIMEI"), "ToIMEI")?,
                    sim_type: text(r, "SIMType").unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn rev_customer(&self, tenant_id: i64, rev_customer_id: &str) -> StoreResult<Option<RevCustomer>> {
        let q = proc_call!(
            "EXEC dbo.usp_RevCustomer_Get @TenantId = @P1, @RevCustomerId = @P2",
            tenant_id,
            rev_customer_id,
        );
        self.first("read Rev customer", q)
            .await?
            .first()
            .map(|r| {
                Ok(RevCustomer {
                    id: need(r.get("Id"), "Id")?,
                    tenant_id: need(r.get("TenantId"), "TenantId")?,
                    rev_customer_id: text(r, "RevCustomerId").unwrap_or_default(),
                    name: text(r, "Name").unwrap_or_default(),
                })
            })
            .transpose()
    }

    async fn rev_customers(&self, tenant_id: i64) -> StoreResult<Vec<RevCustomer>> {
        let q = proc_call!("EXEC dbo.usp_RevCustomer_List @TenantId = @P1", tenant_id,);
        self.first("list Rev customers", q)
            .await?
            .iter()
            .map(|r| {
                Ok(RevCustomer {
                    id: need(r.get("Id"), "Id")?,
                    tenant_id: need(r.get("TenantId"), "TenantId")?,
                    rev_customer_id: text(r, "RevCustomerId").unwrap_or_default(),
                    name: text(r, "Name").unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn customer_rate_plan(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        self.customer_plan_ref(
            "read customer rate plan",
            "EXEC dbo.usp_CustomerRatePlan_Get @TenantId = @P1, @Id = @P2",
            tenant_id,
            id,
        )
        .await
    }

    async fn customer_rate_pool(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        self.customer_plan_ref(
            "read customer rate pool",
            "EXEC dbo.usp_CustomerRatePool_Get @TenantId = @P1, @Id = @P2",
            tenant_id,
            id,
        )
        .await
    }

    async fn providers_of(&self, integration: Integration) -> StoreResult<Vec<ServiceProvider>> {
        let q = proc_call!("EXEC dbo.usp_ServiceProvider_ListByIntegration @IntegrationId = @P1", integration.id());
        let rows = self.first("read providers", q).await?;
        let mut providers = Vec::with_capacity(rows.len());
        for sp in rows.iter().map(service_provider) {
            providers.push(self.secrets.resolve(sp?).await?);
        }
        Ok(providers)
    }
}
