//! The scheduler tick: finds accepted bulk changes nobody is working on (the enqueue failed, a worker died,
//! a lease expired) and hands them to the queue again. Nothing accepted is lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::ports::Leases;
use crate::ports::{Queue, StoreError, WorkMessage};

/// Re-enqueues stranded bulk changes untouched for `grace`; returns their ids. A store that cannot be read is an
/// error (the scheduler's invocation fails, so its `Errors` alarm sees an outage); a failed send is logged and left
/// to the next tick.
pub async fn requeue_stranded(
    store: &(impl Leases + ?Sized),
    queue: &dyn Queue,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Vec<i64>, StoreError> {
    let before = now - chrono::Duration::from_std(grace).unwrap_or_default();
    let ids = store.stranded_bulk_changes(before, now).await.inspect_err(|e| {
        warn!(error = %e, "scheduler could not look for stranded bulk changes");
    })?;
    let mut sent = Vec::new();
    for id in ids {
        match queue.send(&WorkMessage::new(id), Duration::ZERO).await {
            Ok(()) => {
                info!(bulk_change_id = id, "stranded bulk change re-enqueued");
                sent.push(id);
            }
            Err(e) => {
                warn!(bulk_change_id = id, error = %e, "could not re-enqueue stranded bulk change")
            }
        }
    }
    Ok(sent)
}

/// Releases every scheduled row whose date has come (customer rate plan changes) and queues its bulk change.
/// `now` comes from the caller's clock, so tests can move time forward.
pub async fn apply_due_scheduled(
    store: &(impl Leases + ?Sized),
    queue: &dyn Queue,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    let ids = store.release_due_scheduled_rows(now).await.inspect_err(|e| {
        warn!(error = %e, "scheduler could not release due scheduled rows");
    })?;
    for id in &ids {
        // A failed send is not lost: the bulk change is PROCESSING with PENDING rows, so it is stranded and
        // `requeue_stranded` sends it on a later tick.
        match queue.send(&WorkMessage::new(*id), Duration::ZERO).await {
            Ok(()) => info!(bulk_change_id = id, "scheduled rows are due; bulk change queued"),
            Err(e) => warn!(bulk_change_id = id, error = %e, "could not queue a bulk change with due rows"),
        }
    }
    Ok(ids)
}
