//! Rows waiting on an asynchronous carrier request, and the callbacks that settle or wake them.

use super::*;

#[async_trait]
impl CarrierWaits for MssqlStore {
    async fn await_carrier(
        &self,
        bulk_change_id: i64,
        row_ids: &[i64],
        worker: &str,
        request_id: &str,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let ids = serde_json::to_string(row_ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_AwaitCarrier @BulkChangeId = @P1, @RowIdsJson = @P2, @Worker = @P3, @RequestId = @P4, @Now = @P5, @Deadline = @P6",
            bulk_change_id,
            ids,
            worker,
            request_id,
            naive(now),
            naive(deadline),
        );
        let sets = self.exec("await carrier", q).await?;
        Ok(sets.last().and_then(|s| s.first()).and_then(|r| r.get::<i64, _>("Changed")).unwrap_or(0).max(0) as u64)
    }

    async fn carrier_request_rows(
        &self,
        service_provider_ids: &[i64],
        request_id: &str,
        iccid: Option<&str>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let ids = serde_json::to_string(service_provider_ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_CarrierRequestRows @ServiceProviderIdsJson = @P1, @RequestId = @P2, @ICCID = @P3",
            ids,
            request_id,
            iccid,
        );
        self.first("read carrier request rows", q).await?.iter().map(change_row).collect()
    }

    async fn hand_back_with_result(
        &self,
        bulk_change_id: i64,
        row_id: i64,
        owner: &str,
        result: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let q = proc_call!(
            "EXEC dbo.usp_DeviceBulkChange_HandBackWithResult @BulkChangeId = @P1, @RowId = @P2, @Owner = @P3, @Result = @P4, @Now = @P5",
            bulk_change_id,
            row_id,
            owner,
            result,
            naive(now),
        );
        let sets = self.exec("hand back row", q).await?;
        Ok(sets.last().and_then(|s| s.first()).and_then(|r| r.get::<i64, _>("Changed")).unwrap_or(0) == 1)
    }

    async fn wake_carrier_request(
        &self,
        service_provider_id: i64,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        let q = proc_call!(
            "EXEC dbo.usp_CarrierRequest_Wake @ServiceProviderId = @P1, @RequestId = @P2, @Now = @P3",
            service_provider_id,
            request_id,
            naive(now),
        );
        self.first("wake carrier request", q)
            .await?
            .iter()
            .map(|r| need(r.get::<i64, _>("BulkChangeId"), "BulkChangeId"))
            .collect()
    }

    async fn record_callback(&self, cb: &CallbackRecord) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_ThingSpaceCallBackResponseLog_Add @RequestId = @P1, @ICCID = @P2, @TenantId = @P3, @ServiceProviderId = @P4,
                  @APIStatus = @P5, @APIResponse = @P6, @Outcome = @P7, @Now = @P8",
            cb.request_id.as_str(),
            cb.iccid.as_deref(),
            cb.tenant_id,
            cb.service_provider_id,
            cb.api_status.as_str(),
            cb.api_response.as_str(),
            cb.outcome.as_str(),
            naive(cb.received_at),
        );
        self.exec("record callback", q).await.map(|_| ())
    }

    async fn unmatched_callbacks(
        &self,
        service_provider_id: i64,
        request_id: &str,
    ) -> StoreResult<Vec<CallbackRecord>> {
        let q = proc_call!(
            "EXEC dbo.usp_ThingSpaceCallBackResponseLog_Unmatched @ServiceProviderId = @P1, @RequestId = @P2",
            service_provider_id,
            request_id,
        );
        self.first("read unmatched callbacks", q)
            .await?
            .iter()
            .map(|r| {
                Ok(CallbackRecord {
                    request_id: text(r, "RequestId").unwrap_or_default(),
                    iccid: text(r, "ICCID"),
                    tenant_id: r.get("TenantId"),
                    service_provider_id: r.get("ServiceProviderId"),
                    api_status: text(r, "APIStatus").unwrap_or_default(),
                    api_response: text(r, "APIResponse").unwrap_or_default(),
                    outcome: text(r, "Outcome").unwrap_or_default(),
                    received_at: need(utc(r.get("CreatedDate")), "CreatedDate")?,
                })
            })
            .collect()
    }

    async fn purge_unmatched_callbacks(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let q = proc_call!("EXEC dbo.usp_ThingSpaceCallBackResponseLog_PurgeUnmatched @Before = @P1", naive(before),);
        let rows = self.first("purge unmatched callbacks", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i32, _>("Purged")).map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    async fn refuse_login(&self, service_provider_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let q = proc_call!(
            "EXEC dbo.usp_ThingSpaceAuthentication_RefuseLogin @ServiceProviderId = @P1, @Reason = @P2, @Now = @P3",
            service_provider_id,
            reason,
            naive(now),
        );
        self.exec("refuse login", q).await.map(|_| ())
    }
}
