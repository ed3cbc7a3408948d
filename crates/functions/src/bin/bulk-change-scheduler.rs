//! Lambda: the every-minute scheduler tick (EventBridge schedule).

use functions::scheduler;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, adapters) = functions::start(None).await?;
    let grace = config.settings.stranded_grace;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let adapters = adapters.clone();
        async move {
            let span = tracing::info_span!("invocation", request_id = %event.context.request_id);
            let tick = scheduler::tick(adapters.store.as_ref(), adapters.queue.as_ref(), grace);
            Ok::<_, Error>(tracing::Instrument::instrument(tick, span).await)
        }
    }))
    .await
}
