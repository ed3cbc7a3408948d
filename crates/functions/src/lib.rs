//! The Lambda functions' library: configuration read once, adapters built once, and the three handlers
//! (API, SQS worker, scheduler). The binaries in `src/bin/` only call into here.

pub mod adapters;
pub mod api;
pub mod config;
pub mod observability;
pub mod scheduler;
pub mod worker;

use std::sync::Arc;

/// What every function's `main` does first: JSON logs, configuration read once, adapters built once, and the
/// shutdown hook that flushes `metrics` (when given) and closes the database pool.
pub async fn start(
    metrics: Option<Arc<observability::EmfMetrics>>,
) -> anyhow::Result<(config::FunctionConfig, adapters::Adapters)> {
    observability::init_tracing();
    let sdk = aws::load_config().await;
    let config = config::FunctionConfig::from_env()?;
    let adapters = adapters::build(&config, &sdk).await?;
    let store = adapters.store.clone();
    lambda_runtime::spawn_graceful_shutdown_handler(|| async move {
        if let Some(metrics) = metrics {
            metrics.flush();
        }
        store.close().await;
        tracing::info!("shut down: metrics flushed, connections closed");
    })
    .await;
    Ok((config, adapters))
}
