//! Lambda: the HTTP API (API Gateway HTTP API, JWT authorizer) serving the bulk change routes.

use functions::{adapters, api, config::FunctionConfig, observability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
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
    lambda_http::run(api::app(&adapters, config.max_devices)).await
}
