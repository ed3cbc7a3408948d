//! Lambda: the SQS-triggered device bulk change worker.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use functions::{adapters, config::FunctionConfig, observability, worker};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tokio::time::Instant;

/// The Lambda deadline (epoch milliseconds) as a tokio instant.
fn deadline_instant(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    observability::init_tracing();
    let sdk = aws::load_config().await;
    let config = FunctionConfig::from_env(&sdk).await?;
    let adapters = adapters::build(&config, &sdk).await?;
    let metrics = Arc::new(observability::EmfMetrics::default());
    let worker = Arc::new(adapters::worker(&adapters, &config, metrics.clone())?);
    let (store, last_metrics) = (adapters.store.clone(), metrics.clone());
    lambda_runtime::spawn_graceful_shutdown_handler(|| async move {
        last_metrics.flush();
        store.close().await;
        tracing::info!("shut down: metrics flushed, connections closed");
    })
    .await;
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
