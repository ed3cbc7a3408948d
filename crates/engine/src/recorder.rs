//! Group commit of what rows write last: their audit entries and their outcomes. Every row still awaits its own
//! write (nothing is reported done before the store has it), but the writes of rows finishing at the same time go
//! to the store together, one transaction (one round trip on SQL Server) for up to `batch` of them, instead of one
//! each. While a group is being written the next one gathers, so no write waits for a timer.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::ports::Outcomes;
use crate::ports::{Completion, LogEntry, StoreError, StoreResult};

enum Write {
    Log(LogEntry, oneshot::Sender<StoreResult<()>>),
    Complete(Box<Completion>, oneshot::Sender<StoreResult<bool>>),
}

/// The writer of one worker. `batch` ≤ 1: every write goes straight to the store, as before group commit.
pub struct Recorder {
    store: Arc<dyn Outcomes>,
    batch: usize,
    /// Started on first use (inside the runtime); stops when the recorder is dropped.
    writer: OnceLock<mpsc::Sender<Write>>,
}

impl Recorder {
    pub fn new(store: Arc<dyn Outcomes>, batch: usize) -> Self {
        Self { store, batch, writer: OnceLock::new() }
    }

    fn writer(&self) -> &mpsc::Sender<Write> {
        self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.batch * 4);
            tokio::spawn(run(self.store.clone(), rx, self.batch));
            tx
        })
    }

    /// Appends an audit entry once the store has it.
    pub async fn log(&self, entry: LogEntry) -> StoreResult<()> {
        if self.batch <= 1 {
            return self.store.append_log(&entry).await;
        }
        let (done, answer) = oneshot::channel();
        self.send(Write::Log(entry, done)).await?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Records a row's outcome (`Outcomes::complete_row`); returns whether this worker still held the row.
    pub async fn complete(&self, completion: Completion) -> StoreResult<bool> {
        if self.batch <= 1 {
            let c = completion;
            return self
                .store
                .complete_row(c.tenant_id, c.bulk_change_id, c.row_id, &c.worker, &c.outcome, c.now)
                .await;
        }
        let (done, answer) = oneshot::channel();
        self.send(Write::Complete(Box::new(completion), done)).await?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    async fn send(&self, write: Write) -> StoreResult<()> {
        self.writer().send(write).await.map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::Corrupt("the worker's store writer stopped".into())
}

/// Groups written at once: while one is at the database the next gathers and may go too (SQL Server works them
/// on two connections). Order is safe: a row's next write is sent only after its previous one was answered.
const FLUSHES_IN_FLIGHT: usize = 2;

async fn run(store: Arc<dyn Outcomes>, mut rx: mpsc::Receiver<Write>, batch: usize) {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        let mut group = Vec::with_capacity(batch);
        tokio::select! {
            received = rx.recv_many(&mut group, batch), if in_flight.len() < FLUSHES_IN_FLIGHT => {
                if received == 0 {
                    break;
                }
                let store = store.clone();
                in_flight.push(async move { flush(store.as_ref(), group).await });
            }
            Some(()) = futures::StreamExt::next(&mut in_flight), if !in_flight.is_empty() => {}
        }
    }
    while futures::StreamExt::next(&mut in_flight).await.is_some() {}
}

/// Writes a group: its audit entries, then its outcomes (a row awaits its entries before it completes, so no
/// outcome is ever written before its own entries). A group that fails is written again one write at a time, so
/// each row gets its own answer and one bad write does not fail the others.
async fn flush(store: &dyn Outcomes, group: Vec<Write>) {
    let (mut logs, mut completions) = (Vec::new(), Vec::new());
    for write in group {
        match write {
            Write::Log(entry, done) => logs.push((entry, done)),
            Write::Complete(c, done) => completions.push((c, done)),
        }
    }
    if !logs.is_empty() {
        let entries: Vec<LogEntry> = logs.iter().map(|(e, _)| e.clone()).collect();
        let started = std::time::Instant::now();
        let written = store.append_logs(&entries).await;
        tracing::debug!(
            entries = entries.len(),
            ms = started.elapsed().as_millis() as u64,
            "a group of audit entries written"
        );
        match written {
            Ok(()) => logs.into_iter().for_each(|(_, done)| {
                let _ = done.send(Ok(()));
            }),
            Err(e) => {
                warn!(entries = entries.len(), error = %e, "a group of audit entries failed; writing them one by one");
                for (entry, done) in logs {
                    let _ = done.send(store.append_log(&entry).await);
                }
            }
        }
    }
    if !completions.is_empty() {
        let rows: Vec<Completion> = completions.iter().map(|(c, _)| Completion::clone(c)).collect();
        let started = std::time::Instant::now();
        let written = store.complete_rows(&rows).await;
        tracing::debug!(
            rows = rows.len(),
            ms = started.elapsed().as_millis() as u64,
            "a group of row outcomes written"
        );
        match written {
            Ok(held) if held.len() == rows.len() => {
                for ((_, done), held) in completions.into_iter().zip(held) {
                    let _ = done.send(Ok(held));
                }
            }
            outcome => {
                let error = outcome.err().map(|e| e.to_string()).unwrap_or_else(|| "wrong number of answers".into());
                warn!(rows = rows.len(), %error, "a group of row outcomes failed; recording them one by one");
                for (c, done) in completions {
                    let one = store.complete_row(c.tenant_id, c.bulk_change_id, c.row_id, &c.worker, &c.outcome, c.now);
                    let _ = done.send(one.await);
                }
            }
        }
    }
}
