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
}

/// `grace`: how long a bulk change may sit with no live lease before it counts as stranded (one lease,
/// `Settings::stranded_grace`).
pub async fn tick(store: &dyn Store, queue: &dyn Queue, grace: Duration) -> TickReport {
    let released = engine::scheduler::apply_due_scheduled(store, queue, SystemClock.now()).await;
    let requeued = engine::scheduler::requeue_stranded(store, queue, SystemClock.now(), grace).await;
    TickReport { released, requeued }
}
