//! Lambda: the HTTP API (API Gateway HTTP API, JWT authorizer) serving the bulk change routes.

use functions::api;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (config, adapters) = functions::start(None).await?;
    lambda_http::run(api::app(&adapters, config.max_devices)).await
}
