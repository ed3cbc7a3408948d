//! The SQS-triggered worker: each record parsed and handled on its own; a bad record fails only itself; the
//! response lists exactly the failed message ids (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use engine::ports::WorkMessage;
use engine::{Handled, Worker};
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span};

/// Deadlines below this many milliseconds are durations, not epoch times (`cargo lambda watch` sends a relative
/// `lambda-runtime-deadline-ms`, 600000; epoch milliseconds have been above 10^12 since 2001).
const RELATIVE_DEADLINE_BELOW_MS: u64 = 100_000_000_000;

/// The invocation's deadline as a tokio instant: Lambda's epoch milliseconds, or a duration from now.
pub fn deadline_instant(deadline_ms: u64) -> Instant {
    if deadline_ms < RELATIVE_DEADLINE_BELOW_MS {
        return Instant::now() + std::time::Duration::from_millis(deadline_ms);
    }
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Handles a batch; records run concurrently (each is its own bulk change).
pub async fn handle_batch(worker: &Worker, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    let work = event.records.into_iter().map(|record| {
        let message_id = record.message_id.clone().unwrap_or_default();
        let span = info_span!("sqs_record", message_id = %message_id);
        async move {
            let body = record.body.unwrap_or_default();
            let message: WorkMessage = match serde_json::from_str(&body) {
                Ok(m) => m,
                Err(e) => {
                    error!(error = %e, body = %body, "malformed record; reported as failed (it goes to the DLQ after its retries)");
                    return Some(message_id);
                }
            };
            match worker.handle(message, deadline).await {
                Ok(handled) => {
                    info!(bulk_change_id = message.bulk_change_id, ?handled, "record handled");
                    if matches!(handled, Handled::Unknown) {
                        error!(bulk_change_id = message.bulk_change_id, "record names no bulk change; acknowledged");
                    }
                    None
                }
                Err(e) => {
                    error!(bulk_change_id = message.bulk_change_id, error = %e, "record failed; SQS will deliver it again");
                    Some(message_id)
                }
            }
        }
        .instrument(span)
    });
    // A batch holds at most BatchSize (≤ 10) records: join them in place.
    let failed = futures::future::join_all(work).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .flatten()
        .map(|item_identifier| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = item_identifier;
            f
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_are_epoch_milliseconds_or_durations() {
        let in_ten_minutes = deadline_instant(600_000);
        let left = in_ten_minutes.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(590), "cargo lambda's relative 600000 ms is ten minutes, not now: {left:?}");
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
        let left = deadline_instant(now_ms + 30_000).saturating_duration_since(Instant::now());
        assert!((Duration::from_secs(29)..=Duration::from_secs(30)).contains(&left), "{left:?}");
        assert_eq!(deadline_instant(now_ms - 5_000).saturating_duration_since(Instant::now()), Duration::ZERO);
    }
}
