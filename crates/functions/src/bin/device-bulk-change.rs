//! Lambda: the SQS-triggered device bulk change worker.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use functions::{adapters, observability, worker};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tokio::time::Instant;

/// The Lambda deadline (epoch milliseconds) as a tokio instant.
fn deadline_instant(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let metrics = Arc::new(observability::EmfMetrics::default());
    let (config, adapters) = functions::start(Some(metrics.clone())).await?;
    let worker = Arc::new(adapters::worker(&adapters, &config, metrics.clone())?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        let metrics = metrics.clone();
        async move {
            let deadline = deadline_instant(event.context.deadline);
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let response: SqsBatchResponse =
                tracing::Instrument::instrument(worker::handle_batch(&worker, event.payload, deadline), span).await;
            metrics.flush();
            Ok::<_, Error>(response)
        }
    }))
    .await
}
