//! Lambda: the SQS-triggered device bulk change worker.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use functions::worker::deadline_instant;
use functions::{adapters, observability, worker};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let metrics = Arc::new(observability::EmfMetrics::for_function("device-bulk-change"));
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
