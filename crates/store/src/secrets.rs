//! Credentials kept by reference. In production a service provider's secret columns (`Secret`, `SubscriptionKey`,
//! ThingSpace `AppSecret` and `CallbackPassword`) hold a Secrets Manager ARN, not the password:
//! `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME` reads the whole secret string,
//! `arn:...:secret:NAME#password` one field of a JSON secret (one secret per account, holding every credential
//! of it). The local seed keeps plain values, which are used as they are.
//!
//! A value read is kept for `ttl` (five minutes by default), so a rotated password is picked up without a new
//! execution environment and a burst of rows does not call Secrets Manager once per row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use engine::ports::SecretSource;
use engine::ports::{Secret, ServiceProvider, StoreError};
use tokio::sync::Mutex;

/// What a secret column holds when it is a reference.
pub const REFERENCE_PREFIX: &str = "arn:aws:secretsmanager:";

/// Resolves the references of service providers' credentials, with a cache.
pub struct SecretReferences {
    source: Option<Arc<dyn SecretSource>>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, String)>>,
}

impl Default for SecretReferences {
    /// No source: plain values pass, a reference is an error naming the service provider.
    fn default() -> Self {
        Self { source: None, ttl: Duration::from_secs(300), cache: Mutex::default() }
    }
}

impl SecretReferences {
    pub fn new(source: Arc<dyn SecretSource>, ttl: Duration) -> Self {
        Self { source: Some(source), ttl, cache: Mutex::default() }
    }

    /// The service provider with every referenced credential replaced by its value.
    pub async fn resolve(&self, mut sp: ServiceProvider) -> Result<ServiceProvider, StoreError> {
        let id = sp.id;
        sp.secret = self.value(id, "Secret", sp.secret).await?;
        if let Some(key) = sp.subscription_key.take() {
            sp.subscription_key = Some(self.value(id, "SubscriptionKey", key).await?);
        }
        if let Some(mut ts) = sp.thingspace.take() {
            ts.app_secret = self.value(id, "AppSecret", ts.app_secret).await?;
            ts.callback_password = self.value(id, "CallbackPassword", ts.callback_password).await?;
            sp.thingspace = Some(ts);
        }
        Ok(sp)
    }

    async fn value(&self, sp: i64, column: &str, stored: Secret) -> Result<Secret, StoreError> {
        let Some(reference) = stored.expose().strip_prefix(REFERENCE_PREFIX).map(|_| stored.expose()) else {
            return Ok(stored);
        };
        let (arn, field) = match reference.split_once('#') {
            Some((arn, field)) => (arn, Some(field)),
            None => (reference, None),
        };
        let refused = |message: String| StoreError::Database {
            context: "read a carrier credential from Secrets Manager",
            message: format!("service provider {sp}, {column} ({arn}): {message}"),
        };
        let Some(source) = &self.source else {
            return Err(refused(
                "the column holds a Secrets Manager reference, but no secret source is configured".into(),
            ));
        };
        let text = self.read(source.as_ref(), arn).await.map_err(refused)?;
        let Some(field) = field else {
            return Ok(Secret::new(text));
        };
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| refused(format!("the secret is not JSON, so it has no field '{field}'")))?;
        match json.get(field) {
            Some(serde_json::Value::String(s)) => Ok(Secret::new(s.clone())),
            Some(_) => Err(refused(format!("field '{field}' of the secret is not a string"))),
            None => Err(refused(format!("the secret has no field '{field}'"))),
        }
    }

    async fn read(&self, source: &dyn SecretSource, arn: &str) -> Result<String, String> {
        if let Some((at, text)) = self.cache.lock().await.get(arn) {
            if at.elapsed() < self.ttl {
                return Ok(text.clone());
            }
        }
        let text = source.read(arn).await?;
        self.cache.lock().await.insert(arn.to_string(), (Instant::now(), text.clone()));
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use domain::Integration;
    use engine::ports::ThingSpaceSettings;

    use async_trait::async_trait;

    use super::*;

    /// A Secrets Manager stand-in: its value can be rotated, and it counts its reads.
    #[derive(Default)]
    struct Rotating {
        value: std::sync::Mutex<String>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SecretSource for Rotating {
        async fn read(&self, arn: &str) -> Result<String, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if arn.ends_with("missing") {
                return Err("ResourceNotFoundException".into());
            }
            Ok(self.value.lock().map_err(|e| e.to_string())?.clone())
        }
    }

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pod19-AbCdEf";

    fn provider(secret: &str, callback_password: &str) -> ServiceProvider {
        ServiceProvider {
            id: 10,
            tenant_id: 1,
            integration: Integration::ThingSpace,
            name: "ThingSpace".into(),
            base_url: "http://127.0.0.1:9".into(),
            username: "uws".into(),
            secret: Secret::new(secret),
            client_code: None,
            subscription_key: None,
            write_is_enabled: true,
            rate_limit_per_second: 1.0,
            default_provider_id: None,
            carrier_settings: None,
            thingspace: Some(ThingSpaceSettings {
                app_key: "key".into(),
                app_secret: Secret::new("inline-app-secret"),
                account_name: "0000123456-00001".into(),
                callback_username: "cb".into(),
                callback_password: Secret::new(callback_password),
                login_refused: None,
            }),
        }
    }

    #[tokio::test]
    async fn references_are_read_fields_picked_and_plain_values_kept() {
        let source = Arc::new(Rotating::default());
        *source.value.lock().expect("lock") = r#"{"password":"uws-pass","callback":"cb-pass"}"#.into();
        let refs = SecretReferences::new(source.clone(), Duration::from_secs(300));
        let sp =
            refs.resolve(provider(&format!("{ARN}#password"), &format!("{ARN}#callback"))).await.expect("resolved");
        assert_eq!(sp.secret.expose(), "uws-pass");
        let ts = sp.thingspace.expect("settings");
        assert_eq!(ts.callback_password.expose(), "cb-pass");
        assert_eq!(ts.app_secret.expose(), "inline-app-secret", "a plain value is used as it is");
        assert_eq!(source.reads.load(Ordering::SeqCst), 1, "one read for both fields of one secret");

        let missing = refs.resolve(provider(&format!("{ARN}#nope"), "x")).await.expect_err("no such field");
        assert!(missing.to_string().contains("service provider 10, Secret") && missing.to_string().contains("'nope'"));
        assert!(!missing.to_string().contains("uws-pass"), "an error never shows the secret: {missing}");
    }

    #[tokio::test]
    async fn a_rotated_secret_is_read_again_once_the_cached_value_is_older_than_the_ttl() {
        let source = Arc::new(Rotating::default());
        *source.value.lock().expect("lock") = "old".into();
        let refs = SecretReferences::new(source.clone(), Duration::from_millis(50));
        assert_eq!(refs.resolve(provider(ARN, "x")).await.expect("old").secret.expose(), "old");
        *source.value.lock().expect("lock") = "new".into();
        assert_eq!(refs.resolve(provider(ARN, "x")).await.expect("cached").secret.expose(), "old");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(refs.resolve(provider(ARN, "x")).await.expect("new").secret.expose(), "new");
    }

    #[tokio::test]
    async fn a_reference_without_a_source_or_to_a_missing_secret_is_an_error_naming_the_account() {
        let none = SecretReferences::default().resolve(provider(ARN, "x")).await.expect_err("no source");
        assert!(none.to_string().contains("no secret source is configured"), "{none}");
        let refs = SecretReferences::new(Arc::new(Rotating::default()), Duration::from_secs(1));
        let missing = refs.resolve(provider(&format!("{ARN}missing"), "x")).await.expect_err("missing");
        assert!(missing.to_string().contains("ResourceNotFoundException"), "{missing}");
        assert_eq!(
            SecretReferences::default().resolve(provider("plain", "x")).await.expect("plain").secret.expose(),
            "plain"
        );
    }
}
