//! Webhook endpoints and their deliveries (issue 22) through their procedures; the outbox rows are written by
//! `usp_WebhookEvent_Write` inside `usp_DeviceBulkChange_SetStatus` and `usp_DeviceBulkChange_Pause`.

use super::*;

fn delivery(row: &Row) -> Result<WebhookDelivery, StoreError> {
    Ok(WebhookDelivery {
        id: need(row.get::<i64, _>("Id"), "Id")?,
        event_id: need(text(row, "EventId"), "EventId")?,
        event_type: need(text(row, "EventType"), "EventType")?,
        tenant_id: need(row.get::<i64, _>("TenantId"), "TenantId")?,
        bulk_change_id: need(row.get::<i64, _>("BulkChangeId"), "BulkChangeId")?,
        webhook_id: row.get::<i64, _>("WebhookId"),
        url: need(text(row, "Url"), "Url")?,
        status: need(text(row, "Status"), "Status")?,
        attempts: row.get::<i32, _>("Attempts").and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
        next_attempt: need(utc(row.get("NextAttemptDate")), "NextAttemptDate")?,
        last_status_code: row.get::<i32, _>("LastStatusCode").and_then(|c| u16::try_from(c).ok()),
        last_error: text(row, "LastError"),
        created_date: need(utc(row.get("CreatedDate")), "CreatedDate")?,
        delivered_date: utc(row.get("DeliveredDate")),
        reason: text(row, "Reason"),
        actor: text(row, "Actor"),
    })
}

#[async_trait]
impl Webhooks for MssqlStore {
    async fn add_webhook(
        &self,
        tenant_id: i64,
        url: &str,
        events: &[String],
        secret: &str,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let events = format!(",{},", events.join(","));
        let q = proc_call!(
            "EXEC dbo.usp_Webhook_Add @TenantId = @P1, @Url = @P2, @Events = @P3, @Secret = @P4, @CreatedBy = @P5, @Now = @P6",
            tenant_id,
            url,
            events.as_str(),
            secret,
            created_by,
            naive(now),
        );
        let rows = self.first("add webhook", q).await?;
        need(rows.first().and_then(|r| r.get::<i64, _>("Id")), "Id")
    }

    async fn webhooks(&self, tenant_id: i64) -> StoreResult<Vec<Webhook>> {
        let q = proc_call!("EXEC dbo.usp_Webhook_List @TenantId = @P1", tenant_id);
        self.first("list webhooks", q)
            .await?
            .iter()
            .map(|row| {
                Ok(Webhook {
                    id: need(row.get::<i64, _>("Id"), "Id")?,
                    tenant_id: need(row.get::<i64, _>("TenantId"), "TenantId")?,
                    url: need(text(row, "Url"), "Url")?,
                    events: text(row, "Events")
                        .unwrap_or_default()
                        .split(',')
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect(),
                    secret: need(text(row, "Secret"), "Secret")?,
                    created_by: text(row, "CreatedBy").unwrap_or_default(),
                    created_date: need(utc(row.get("CreatedDate")), "CreatedDate")?,
                })
            })
            .collect()
    }

    async fn delete_webhook(&self, tenant_id: i64, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        let q =
            proc_call!("EXEC dbo.usp_Webhook_Delete @TenantId = @P1, @Id = @P2, @Now = @P3", tenant_id, id, naive(now));
        let rows = self.first("delete webhook", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i32, _>("Deleted")) == Some(1))
    }

    async fn webhook_deliveries(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let q = proc_call!(
            "EXEC dbo.usp_WebhookDelivery_List @TenantId = @P1, @WebhookId = @P2, @Limit = @P3",
            tenant_id,
            webhook_id,
            i32::try_from(limit).unwrap_or(i32::MAX),
        );
        self.first("list deliveries", q).await?.iter().map(delivery).collect()
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        limit: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DueDelivery>> {
        let q = proc_call!(
            "EXEC dbo.usp_WebhookDelivery_Claim @Worker = @P1, @Limit = @P2, @Until = @P3, @Now = @P4",
            worker,
            i32::try_from(limit).unwrap_or(i32::MAX),
            naive(until),
            naive(now),
        );
        self.first("claim deliveries", q)
            .await?
            .iter()
            .map(|row| {
                Ok(DueDelivery {
                    delivery: delivery(row)?,
                    secret: text(row, "Secret").unwrap_or_default(),
                    body: text(row, "Body"),
                })
            })
            .collect()
    }

    async fn record_delivery(
        &self,
        id: i64,
        worker: &str,
        body: &str,
        result: &DeliveryResult,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (status, next, code, error, delivered) = match result {
            DeliveryResult::Delivered { status_code } => {
                ("DELIVERED", None, Some(*status_code), None, Some(naive(now)))
            }
            DeliveryResult::Retry { at, status_code, error } => {
                ("PENDING", Some(naive(*at)), *status_code, Some(error.as_str()), None)
            }
            DeliveryResult::Failed { status_code, error } => ("FAILED", None, *status_code, Some(error.as_str()), None),
        };
        let error = error.map(|e| e.chars().take(1000).collect::<String>());
        let q = proc_call!(
            "EXEC dbo.usp_WebhookDelivery_Record @Id = @P1, @Worker = @P2, @Body = @P3, @Status = @P4, @NextAttemptDate = @P5,
                  @LastStatusCode = @P6, @LastError = @P7, @DeliveredDate = @P8",
            id,
            worker,
            body,
            status,
            next,
            code.map(i32::from),
            error.as_deref(),
            delivered,
        );
        let rows = self.first("record delivery", q).await?;
        Ok(rows.first().and_then(|r| r.get::<i32, _>("Recorded")) == Some(1))
    }
}
