//! The SQS-triggered worker: each record parsed and handled on its own; a bad record fails only itself; the
//! response lists exactly the failed message ids (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use engine::ports::WorkMessage;
use engine::{Handled, Worker};
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span};

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
