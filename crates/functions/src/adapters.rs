//! The adapters a function uses, built once per execution environment.

use std::sync::Arc;

use anyhow::{Context, Result};
use carriers::HttpCarriers;
use engine::metrics::Metrics;
use engine::ports::{Email, Notifier, NotifyError, Queue, Store, SystemClock};
use engine::rate::RateLimiters;
use engine::{Worker, WorkerConfig};

use crate::config::{Database, FunctionConfig};

#[derive(Clone)]
pub struct Adapters {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub notifier: Arc<dyn Notifier>,
    /// The API's exports over the inline limit go to S3 (`EXPORT_BUCKET`).
    pub large_exports: Option<api::export::LargeExports>,
    /// Sends webhook events (`WEBHOOK_*` settings), from the worker and the scheduler.
    pub webhooks: Arc<engine::webhooks::Deliverer>,
}

/// The webhook deliverer of a function: reqwest, the settings' policy and retries, `worker_id` holding leases.
pub fn deliverer(settings: &engine::Settings, worker_id: &str) -> Arc<engine::webhooks::Deliverer> {
    Arc::new(engine::webhooks::Deliverer {
        transport: Arc::new(carriers::webhook::HttpTransport::new(settings.webhook_timeout)),
        config: engine::webhooks::DeliveryConfig { worker_id: worker_id.to_string(), ..settings.webhooks.clone() },
    })
}

/// Writes e-mails as log lines when SES is not configured (local invocation).
pub struct LogNotifier;

#[async_trait::async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, email: &Email) -> Result<String, NotifyError> {
        tracing::warn!(subject = %email.subject, body = %email.body, "EMAIL_FROM not set; failure summary logged instead of sent");
        Ok("log".into())
    }
}

pub async fn build(config: &FunctionConfig, sdk: &aws::SdkConfig) -> Result<Adapters> {
    let (store, sqlite): (Arc<dyn Store>, Option<store::SqliteStore>) = match &config.database {
        Database::Sqlite(path) => {
            let s = store::SqliteStore::open(path).with_context(|| format!("opening {}", path.display()))?;
            (Arc::new(s.clone()), Some(s))
        }
        Database::SqlServer(conn) => {
            let store = store::MssqlStore::connect(conn, config.pool_size).await.context("connecting to SQL Server")?;
            (Arc::new(store.with_secret_references(carrier_secrets(config, sdk))), None)
        }
        Database::SqlServerSecret(arn) => {
            let secrets = Arc::new(aws::SecretsManager::new(sdk));
            let store = store::MssqlStore::connect_with_secret(secrets, arn, config.pool_size)
                .await
                .with_context(|| format!("connecting to SQL Server with the connection string of secret {arn}"))?;
            (Arc::new(store.with_secret_references(carrier_secrets(config, sdk))), None)
        }
    };
    let queue: Arc<dyn Queue> = match (&config.queue_url, sqlite) {
        (Some(url), _) => Arc::new(aws::SqsQueue::new(sdk, url.clone())),
        (None, Some(s)) => Arc::new(store::SqliteQueue::new(s)),
        (None, None) => anyhow::bail!("QUEUE_URL is required with SQL Server"),
    };
    let notifier: Arc<dyn Notifier> =
        if config.email_from.is_empty() { Arc::new(LogNotifier) } else { Arc::new(aws::SesNotifier::new(sdk)) };
    let large_exports = config.export_bucket.as_ref().map(|bucket| api::export::LargeExports {
        store: Arc::new(aws::S3Exports::new(sdk, bucket.clone(), config.export_url_ttl)),
        inline_limit: config.export_inline_limit,
        spool_dir: std::env::temp_dir(),
    });
    let webhooks = deliverer(&config.settings, &config.settings.worker.worker_id);
    Ok(Adapters { store, queue, notifier, large_exports, webhooks })
}

/// Carrier credentials stored as Secrets Manager ARNs are read there, and kept `carrier_secret_ttl`.
fn carrier_secrets(config: &FunctionConfig, sdk: &aws::SdkConfig) -> store::SecretReferences {
    store::SecretReferences::new(Arc::new(aws::SecretsManager::new(sdk)), config.carrier_secret_ttl)
}

/// The worker as the SQS function runs it: carriers over HTTP, each account's pace shared through the store by
/// every instance.
pub fn worker(adapters: &Adapters, config: &FunctionConfig, metrics: Arc<dyn Metrics>) -> Result<Worker> {
    let carriers = HttpCarriers::new(config.settings.carrier_timeout, config.settings.retry)
        .context("building the HTTP client")?
        .with_metrics(metrics.clone());
    let worker_config: WorkerConfig = config.settings.worker.clone();
    Ok(Worker {
        store: adapters.store.clone(),
        queue: adapters.queue.clone(),
        notifier: adapters.notifier.clone(),
        carriers: Arc::new(carriers),
        clock: Arc::new(SystemClock),
        limiters: Arc::new(RateLimiters::shared(adapters.store.clone())),
        metrics: metrics.clone(),
        recorder: Arc::new(engine::recorder::Recorder::new(adapters.store.clone(), worker_config.write_batch)),
        webhooks: Some(adapters.webhooks.clone()),
        config: worker_config,
    })
}
