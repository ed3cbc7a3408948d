//! The embedded queue over the store's file.

use super::*;

/// The embedded queue: messages in the store's file, with SQS's visibility-timeout semantics
/// (a received message reappears unless deleted), so nothing is lost when a worker dies.
#[derive(Clone)]
pub struct SqliteQueue {
    store: SqliteStore,
    notify: Arc<tokio::sync::Notify>,
}

impl SqliteQueue {
    pub fn new(store: SqliteStore) -> Self {
        Self { store, notify: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Resolves when a message may have become available (or after `max_wait`), for a polling consumer.
    pub async fn wait(&self, max_wait: Duration) {
        let _ = tokio::time::timeout(max_wait, self.notify.notified()).await;
    }

    /// Messages waiting or in flight (for tests and `make run`).
    pub async fn depth(&self) -> Result<i64, QueueError> {
        self.store
            .with(|c| c.query_row("SELECT COUNT(*) FROM QueueMessage", [], |r| r.get(0)).map_err(db("queue depth")))
            .await
            .map_err(queue_err("depth"))
    }
}

fn queue_err(context: &'static str) -> impl Fn(StoreError) -> QueueError {
    move |e| QueueError { context, message: e.to_string() }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(message).map_err(|e| QueueError { context: "send", message: e.to_string() })?;
        self.send_raw(body, delay).await
    }

    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.store
            .with(move |c| {
                let now = Utc::now();
                let until = ts(now + chrono::Duration::from_std(visibility).unwrap_or_else(|_| chrono::Duration::seconds(30)));
                let receipt_base = format!("{}-{}", now.timestamp_micros(), fastrand_u64());
                let mut stmt = c
                    .prepare_cached(
                        "UPDATE QueueMessage SET VisibleAt = ?1, ReceiveCount = ReceiveCount + 1, Receipt = ?2 || '-' || Id
                         WHERE Id IN (SELECT Id FROM QueueMessage WHERE VisibleAt <= ?3 ORDER BY VisibleAt, Id LIMIT ?4)
                         RETURNING Id, Receipt, Body, ReceiveCount",
                    )
                    .map_err(db("receive"))?;
                let rows = stmt
                    .query_map(params![until, receipt_base, ts(now), max], |r| {
                        Ok(ReceivedMessage { message_id: r.get::<_, i64>(0)?.to_string(), receipt: r.get(1)?, body: r.get(2)?, receive_count: r.get(3)? })
                    })
                    .map_err(db("receive"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db("receive"))?;
                Ok(rows)
            })
            .await
            .map_err(queue_err("receive"))
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let receipt = receipt.to_string();
        self.store
            .with(move |c| {
                c.execute("DELETE FROM QueueMessage WHERE Receipt = ?1", params![receipt])
                    .map_err(db("delete message"))?;
                Ok(())
            })
            .await
            .map_err(queue_err("delete"))
    }
}

impl SqliteQueue {
    /// Sends a body as is (tests use it to deliver malformed messages).
    pub async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.store
            .with(move |c| {
                let visible = ts(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
                c.execute("INSERT INTO QueueMessage (Body, VisibleAt) VALUES (?1, ?2)", params![body, visible])
                    .map_err(db("send message"))?;
                Ok(())
            })
            .await
            .map_err(queue_err("send"))?;
        self.notify.notify_waiters();
        Ok(())
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}
