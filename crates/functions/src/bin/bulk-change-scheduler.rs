//! Lambda: the every-minute scheduler tick (EventBridge schedule).

use functions::{adapters, config::FunctionConfig, observability, scheduler};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    observability::init_tracing();
    let sdk = aws::load_config().await;
    let config = FunctionConfig::from_env(&sdk).await?;
    let adapters = adapters::build(&config, &sdk).await?;
    let store = adapters.store.clone();
    lambda_runtime::spawn_graceful_shutdown_handler(|| async move {
        store.close().await;
        tracing::info!("shut down: connections closed");
    })
    .await;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let adapters = adapters.clone();
        async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let report = tracing::Instrument::instrument(
                scheduler::tick(adapters.store.as_ref(), adapters.queue.as_ref(), scheduler::STRANDED_GRACE),
                span,
            )
            .await;
            Ok::<_, Error>(report)
        }
    }))
    .await
}
