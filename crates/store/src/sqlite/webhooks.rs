//! Webhook endpoints and their deliveries (issue 22): the outbox rows are written by `write_event` inside the
//! transaction that makes the event true; deliverers lease them with one conditional `UPDATE` each.

use super::*;

const DELIVERY_COLUMNS: &str = "d.Id, d.EventId, d.EventType, d.TenantId, d.BulkChangeId, d.WebhookId, d.Url, d.Status, \
     d.Attempts, d.NextAttemptDate, d.LastStatusCode, d.LastError, d.CreatedDate, d.DeliveredDate, d.Reason, d.Actor";

/// One delivery of `event` per endpoint that wants it: the tenant's webhooks not deleted, and the bulk change's own
/// `NotifyUrl`. Called in the caller's transaction, so the event exists if and only if what it says happened.
pub(super) fn write_event(
    tx: &rusqlite::Transaction<'_>,
    bulk_change_id: i64,
    event: &str,
    reason: Option<&str>,
    actor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let event_id: String =
        tx.query_row("SELECT 'evt_' || lower(hex(randomblob(16)))", [], |r| r.get(0)).map_err(db("event id"))?;
    tx.execute(
        "INSERT INTO WebhookDelivery (EventId, EventType, TenantId, BulkChangeId, WebhookId, Url, Reason, Actor, NextAttemptDate, CreatedDate)
         SELECT ?1, ?2, b.TenantId, b.Id, w.Id, w.Url, ?4, ?5, ?6, ?6
         FROM DeviceBulkChange b JOIN Webhook w ON w.TenantId = b.TenantId AND w.DeletedDate IS NULL
         WHERE b.Id = ?3 AND instr(w.Events, ',' || ?2 || ',') > 0
         UNION ALL
         SELECT ?1, ?2, b.TenantId, b.Id, NULL, b.NotifyUrl, ?4, ?5, ?6, ?6
         FROM DeviceBulkChange b WHERE b.Id = ?3 AND b.NotifyUrl IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM Webhook w WHERE w.TenantId = b.TenantId AND w.DeletedDate IS NULL
                           AND w.Url = b.NotifyUrl AND instr(w.Events, ',' || ?2 || ',') > 0)",
        params![event_id, event, bulk_change_id, reason, actor, ts(now)],
    )
    .map_err(db("write webhook event"))?;
    Ok(())
}

fn delivery(r: &Row<'_>) -> rusqlite::Result<(WebhookDeliveryRaw, Option<String>, Option<String>)> {
    Ok((
        WebhookDeliveryRaw {
            id: r.get(0)?,
            event_id: r.get(1)?,
            event_type: r.get(2)?,
            tenant_id: r.get(3)?,
            bulk_change_id: r.get(4)?,
            webhook_id: r.get(5)?,
            url: r.get(6)?,
            status: r.get(7)?,
            attempts: r.get(8)?,
            next_attempt: r.get(9)?,
            last_status_code: r.get(10)?,
            last_error: r.get(11)?,
            created: r.get(12)?,
            delivered: r.get(13)?,
            reason: r.get(14)?,
            actor: r.get(15)?,
        },
        r.get(16).ok(),
        r.get(17).ok(),
    ))
}

struct WebhookDeliveryRaw {
    id: i64,
    event_id: String,
    event_type: String,
    tenant_id: i64,
    bulk_change_id: i64,
    webhook_id: Option<i64>,
    url: String,
    status: String,
    attempts: i64,
    next_attempt: String,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created: String,
    delivered: Option<String>,
    reason: Option<String>,
    actor: Option<String>,
}

impl WebhookDeliveryRaw {
    fn into_delivery(self) -> Result<WebhookDelivery, StoreError> {
        Ok(WebhookDelivery {
            id: self.id,
            event_id: self.event_id,
            event_type: self.event_type,
            tenant_id: self.tenant_id,
            bulk_change_id: self.bulk_change_id,
            webhook_id: self.webhook_id,
            url: self.url,
            status: self.status,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            next_attempt: parse_ts(&self.next_attempt)?,
            last_status_code: self.last_status_code.and_then(|c| u16::try_from(c).ok()),
            last_error: self.last_error,
            created_date: parse_ts(&self.created)?,
            delivered_date: opt_ts(self.delivered)?,
            reason: self.reason,
            actor: self.actor,
        })
    }
}

#[async_trait]
impl Webhooks for SqliteStore {
    async fn add_webhook(
        &self,
        tenant_id: i64,
        url: &str,
        events: &[String],
        secret: &str,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let (url, secret, created_by) = (url.to_string(), secret.to_string(), created_by.to_string());
        let events = format!(",{},", events.join(","));
        self.with(move |c| {
            c.execute(
                "INSERT INTO Webhook (TenantId, Url, Events, Secret, CreatedBy, CreatedDate) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![tenant_id, url, events, secret, created_by, ts(now)],
            )
            .map_err(db("add webhook"))?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn webhooks(&self, tenant_id: i64) -> StoreResult<Vec<Webhook>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT Id, TenantId, Url, Events, Secret, CreatedBy, CreatedDate FROM Webhook
                     WHERE TenantId = ?1 AND DeletedDate IS NULL ORDER BY Id",
                )
                .map_err(db("list webhooks"))?;
            let raws = stmt
                .query_map(params![tenant_id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })
                .map_err(db("list webhooks"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("list webhooks"))?;
            raws.into_iter()
                .map(|(id, tenant_id, url, events, secret, created_by, created)| {
                    Ok(Webhook {
                        id,
                        tenant_id,
                        url,
                        events: events.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect(),
                        secret,
                        created_by,
                        created_date: parse_ts(&created)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn delete_webhook(&self, tenant_id: i64, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin delete"))?;
            let n = tx
                .execute(
                    "UPDATE Webhook SET DeletedDate = ?3 WHERE Id = ?1 AND TenantId = ?2 AND DeletedDate IS NULL",
                    params![id, tenant_id, ts(now)],
                )
                .map_err(db("delete webhook"))?;
            tx.execute(
                "UPDATE WebhookDelivery SET Status = 'FAILED', LastError = 'the endpoint was deleted', LeaseOwner = NULL, LeaseUntil = NULL
                 WHERE WebhookId = ?1 AND TenantId = ?2 AND Status = 'PENDING'",
                params![id, tenant_id],
            )
            .map_err(db("give up deliveries"))?;
            tx.commit().map_err(db("commit delete webhook"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn webhook_deliveries(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM WebhookDelivery d
                     WHERE d.TenantId = ?1 AND d.WebhookId = ?2 ORDER BY d.Id DESC LIMIT ?3"
                ))
                .map_err(db("list deliveries"))?;
            let raws = stmt
                .query_map(params![tenant_id, webhook_id, limit], delivery)
                .map_err(db("list deliveries"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("list deliveries"))?;
            raws.into_iter().map(|(raw, _, _)| raw.into_delivery()).collect()
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        limit: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DueDelivery>> {
        let worker = worker.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db("begin claim"))?;
            let ids: Vec<i64> = {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE WebhookDelivery SET LeaseOwner = ?1, LeaseUntil = ?2
                         WHERE Id IN (SELECT Id FROM WebhookDelivery WHERE Status = 'PENDING' AND NextAttemptDate <= ?3
                                        AND (LeaseUntil IS NULL OR LeaseUntil < ?3) ORDER BY NextAttemptDate, Id LIMIT ?4)
                         RETURNING Id",
                    )
                    .map_err(db("claim deliveries"))?;
                stmt.query_map(params![worker, ts(until), ts(now), limit], |r| r.get(0))
                    .map_err(db("claim deliveries"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("claim deliveries"))?
            };
            let mut due = Vec::with_capacity(ids.len());
            {
                let mut read = tx
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLUMNS}, COALESCE(w.Secret, b.NotifySecret), d.Body
                         FROM WebhookDelivery d JOIN DeviceBulkChange b ON b.Id = d.BulkChangeId
                         LEFT JOIN Webhook w ON w.Id = d.WebhookId WHERE d.Id = ?1"
                    ))
                    .map_err(db("read delivery"))?;
                for id in ids {
                    let (raw, secret, body) = read.query_row(params![id], delivery).map_err(db("read delivery"))?;
                    due.push(DueDelivery { delivery: raw.into_delivery()?, secret: secret.unwrap_or_default(), body });
                }
            }
            tx.commit().map_err(db("commit claim deliveries"))?;
            Ok(due)
        })
        .await
    }

    async fn record_delivery(
        &self,
        id: i64,
        worker: &str,
        body: &str,
        result: &DeliveryResult,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (worker, body) = (worker.to_string(), body.to_string());
        let (status, next, code, error, delivered) = match result {
            DeliveryResult::Delivered { status_code } => ("DELIVERED", None, Some(*status_code), None, Some(ts(now))),
            DeliveryResult::Retry { at, status_code, error } => {
                ("PENDING", Some(ts(*at)), *status_code, Some(error.clone()), None)
            }
            DeliveryResult::Failed { status_code, error } => ("FAILED", None, *status_code, Some(error.clone()), None),
        };
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE WebhookDelivery
                     SET Status = ?3, Attempts = Attempts + 1, NextAttemptDate = COALESCE(?4, NextAttemptDate),
                         LastStatusCode = ?5, LastError = ?6, DeliveredDate = ?7, Body = COALESCE(Body, ?8),
                         LeaseOwner = NULL, LeaseUntil = NULL
                     WHERE Id = ?1 AND LeaseOwner = ?2 AND Status = 'PENDING'",
                    params![id, worker, status, next, code, error, delivered, body],
                )
                .map_err(db("record delivery"))?;
            Ok(n == 1)
        })
        .await
    }
}
