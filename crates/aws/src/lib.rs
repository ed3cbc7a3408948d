//! AWS adapters behind the engine's ports: the SQS queue, the SES v2 notifier, Secrets Manager (the database
//! connection string, carrier credentials) and S3 for large exports. `AWS_ENDPOINT_URL` points them at moto in
//! tests; only S3 knows (path-style addressing, as a custom endpoint needs).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use engine::ports::{Email, Notifier, NotifyError, Queue, QueueError, ReceivedMessage, WorkMessage};
use tracing::debug;

pub use aws_config::SdkConfig;

/// The SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn load_config() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// SQS's longest delay; a longer one is capped (the scheduler covers anything later).
const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(config: &SdkConfig, queue_url: impl Into<String>) -> Self {
        Self { client: aws_sdk_sqs::Client::new(config), queue_url: queue_url.into() }
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }
}

fn sqs_err(context: &'static str) -> impl Fn(String) -> QueueError {
    move |message| QueueError { context, message }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(|e| sqs_err("send")(e.to_string()))?;
        let delay = delay.min(MAX_DELAY).as_secs() as i32;
        let out = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map_err(|e| sqs_err("send")(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        debug!(
            bulk_change_id = message.bulk_change_id,
            message_id = out.message_id().unwrap_or_default(),
            delay,
            "message sent"
        );
        Ok(())
    }

    async fn receive(&self, max: u32, visibility: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(visibility.as_secs().min(43_200) as i32)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sqs_err("receive")(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| ReceivedMessage {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| sqs_err("delete")(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

/// Failure summaries through SES v2 (`SendEmail`, simple content).
pub struct SesNotifier {
    client: aws_sdk_sesv2::Client,
}

impl SesNotifier {
    pub fn new(config: &SdkConfig) -> Self {
        Self { client: aws_sdk_sesv2::Client::new(config) }
    }
}

fn content(text: &str) -> Result<Content, NotifyError> {
    Content::builder().data(text).charset("UTF-8").build().map_err(|e| NotifyError(e.to_string()))
}

#[async_trait]
impl Notifier for SesNotifier {
    async fn send(&self, email: &Email) -> Result<String, NotifyError> {
        let message = Message::builder()
            .subject(content(&email.subject)?)
            .body(Body::builder().text(content(&email.body)?).build())
            .build();
        let out = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(Destination::builder().set_to_addresses(Some(email.to.clone())).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| {
                NotifyError(format!("SES SendEmail failed: {}", aws_sdk_sesv2::error::DisplayErrorContext(&e)))
            })?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not read secret {arn}: {message}")]
pub struct SecretError {
    pub arn: String,
    pub message: String,
}

/// The secret's string value (the database connection string, a carrier's credentials). Never logged.
pub async fn secret_string(config: &SdkConfig, arn: &str) -> Result<String, SecretError> {
    read_secret(&aws_sdk_secretsmanager::Client::new(config), arn).await
}

async fn read_secret(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<String, SecretError> {
    let out = client.get_secret_value().secret_id(arn).send().await.map_err(|e| SecretError {
        arn: arn.to_string(),
        message: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
    })?;
    out.secret_string()
        .map(str::to_string)
        .ok_or_else(|| SecretError { arn: arn.to_string(), message: "the secret has no string value".into() })
}

/// Secrets Manager as the store's `SecretSource`: the database connection string (read again when a login is
/// refused) and carrier credentials kept by reference.
#[derive(Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub fn new(config: &SdkConfig) -> Self {
        Self { client: aws_sdk_secretsmanager::Client::new(config) }
    }
}

#[async_trait::async_trait]
impl engine::ports::SecretSource for SecretsManager {
    async fn read(&self, arn: &str) -> Result<String, String> {
        read_secret(&self.client, arn).await.map_err(|e| e.message)
    }
}

/// Large exports in an S3 bucket, fetched with a presigned GET URL valid for `ttl`. The bucket expires them
/// (template.yaml: a lifecycle rule of one day).
#[derive(Clone)]
pub struct S3Exports {
    client: aws_sdk_s3::Client,
    bucket: String,
    ttl: Duration,
}

impl S3Exports {
    pub fn new(config: &SdkConfig, bucket: impl Into<String>, ttl: Duration) -> Self {
        // A custom endpoint (moto, a VPC endpoint by URL) serves buckets by path, not by host name.
        let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some()).build();
        Self { client: aws_sdk_s3::Client::from_conf(s3), bucket: bucket.into(), ttl }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

#[async_trait]
impl engine::ports::ExportStore for S3Exports {
    async fn publish(
        &self,
        key: &str,
        path: &std::path::Path,
        filename: &str,
    ) -> Result<engine::ports::PublishedExport, String> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .content_type("text/csv; charset=utf-8")
            .content_disposition(format!("attachment; filename=\"{filename}\""))
            .send()
            .await
            .map_err(|e| format!("s3://{}/{key}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(&e)))?;
        let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(self.ttl).map_err(|e| e.to_string())?;
        let presigned =
            self.client.get_object().bucket(&self.bucket).key(key).presigned(presigning).await.map_err(|e| {
                format!("presigning s3://{}/{key}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(&e))
            })?;
        let expires_at = chrono::Utc::now() + self.ttl;
        Ok(engine::ports::PublishedExport { url: presigned.uri().to_string(), expires_at })
    }
}
