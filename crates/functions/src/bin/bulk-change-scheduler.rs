//! Lambda: the every-minute scheduler tick (EventBridge schedule).

use std::sync::Arc;

use functions::{observability, scheduler};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let metrics = Arc::new(observability::EmfMetrics::for_function("bulk-change-scheduler"));
    let (config, adapters) = functions::start(Some(metrics.clone())).await?;
    let grace = config.settings.stranded_grace;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let adapters = adapters.clone();
        let metrics = metrics.clone();
        async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let tick = scheduler::tick(adapters.store.as_ref(), adapters.queue.as_ref(), grace, &adapters.webhooks);
            let report = tracing::Instrument::instrument(tick, span).await;
            scheduler::record(&metrics, &report);
            metrics.flush();
            // A failed tick fails the invocation: the function's Errors metric raises SchedulerErrorsAlarm.
            report.map_err(Error::from)
        }
    }))
    .await
}
