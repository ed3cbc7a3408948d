//! The scheduler function's tick (EventBridge, every minute): re-enqueue stranded bulk changes (accepted but
//! never picked up, or whose leases expired), so nothing accepted is lost.

use std::time::Duration;

use engine::ports::{Clock, Queue, Store, SystemClock};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TickReport {
    /// Bulk changes whose scheduled rows became due.
    pub released: Vec<i64>,
    pub requeued: Vec<i64>,
    /// Idempotency keys older than 24 h deleted.
    pub keys_purged: u64,
    /// ThingSpace callbacks kept unmatched for over an hour, deleted.
    pub callbacks_purged: u64,
    /// Webhook deliveries made, to be tried again, and given up in this tick.
    pub webhooks_delivered: u32,
    pub webhooks_retried: u32,
    pub webhooks_failed: u32,
}

/// The tick failed: the database could not be read. Returned from the invocation, so the function's `Errors`
/// metric (and its alarm) sees the outage.
#[derive(Debug, thiserror::Error)]
#[error("scheduler tick failed: {0}")]
pub struct TickFailed(String);

/// `grace`: how long a bulk change may sit with no live lease before it counts as stranded (one lease,
/// `Settings::stranded_grace`). Every duty is tried even when an earlier one failed.
pub async fn tick(
    store: &dyn Store,
    queue: &dyn Queue,
    grace: Duration,
    webhooks: &engine::webhooks::Deliverer,
) -> Result<TickReport, TickFailed> {
    let now = SystemClock.now();
    let released = engine::scheduler::apply_due_scheduled(store, queue, now).await;
    let requeued = engine::scheduler::requeue_stranded(store, queue, now, grace).await;
    let purged = store.purge_idempotency_keys(now - chrono::Duration::hours(24)).await;
    let callbacks = store.purge_unmatched_callbacks(now - engine::carrier::thingspace::UNMATCHED_KEPT).await;
    let delivered = engine::webhooks::deliver_due(store, webhooks.transport.as_ref(), &webhooks.config).await;
    match (released, requeued, purged, callbacks, delivered) {
        (Ok(released), Ok(requeued), Ok(keys_purged), Ok(callbacks_purged), Ok(sent)) => Ok(TickReport {
            released,
            requeued,
            keys_purged,
            callbacks_purged,
            webhooks_delivered: sent.delivered,
            webhooks_retried: sent.retried,
            webhooks_failed: sent.failed,
        }),
        (a, b, c, d, e) => {
            let failures: Vec<String> =
                [a.err(), b.err(), c.err(), d.err(), e.err()].into_iter().flatten().map(|e| e.to_string()).collect();
            Err(TickFailed(failures.join("; ")))
        }
    }
}

/// The tick's counters in the scheduler function's metrics (`Released`, `Requeued`, `KeysPurged`, `TickFailed`).
pub fn record(metrics: &crate::observability::EmfMetrics, report: &Result<TickReport, TickFailed>) {
    match report {
        Ok(r) => {
            metrics.count("Released", r.released.len() as u64);
            metrics.count("Requeued", r.requeued.len() as u64);
            metrics.count("KeysPurged", r.keys_purged);
            metrics.count("CallbacksPurged", r.callbacks_purged);
            metrics.count("WebhooksDelivered", u64::from(r.webhooks_delivered));
            metrics.count("WebhooksFailed", u64::from(r.webhooks_failed));
        }
        Err(_) => metrics.count("TickFailed", 1),
    }
}
