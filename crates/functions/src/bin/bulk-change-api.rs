//! Lambda: the HTTP API (API Gateway HTTP API, JWT authorizer) serving the bulk change routes.

use std::sync::Arc;

use functions::{api, observability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let metrics = Arc::new(observability::EmfMetrics::for_function("bulk-change-api"));
    let (config, adapters) = functions::start(Some(metrics.clone())).await?;
    lambda_http::run(api::app(&adapters, config.max_devices, config.settings.api_body_idle, Some(metrics))).await
}
