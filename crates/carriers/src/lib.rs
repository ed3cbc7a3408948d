//! Carrier and billing clients (reqwest): Cisco Control Center and Rev.io, sharing one call loop with the
//! token bucket and the retry policy; ThingSpace and Telegence too. Teal and Pond join here later.

pub mod control_center;
pub mod http;
pub mod pond;
pub mod rev_io;
pub mod teal;
pub mod telegence;
pub mod thingspace;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use engine::carrier::Carriers;
use engine::carrier::control_center::ControlCenterApi;
use engine::carrier::pond::PondApi;
use engine::carrier::teal::TealApi;
use engine::carrier::telegence::TelegenceApi;
use engine::carrier::thingspace::ThingSpaceApi;
use engine::metrics::{Metrics, NoMetrics};
use engine::ports::{RevIoApi, Secret, ServiceProvider, ThingSpaceSettings};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;

pub use control_center::ControlCenterClient;
pub use pond::{PondClient, PondSettings};
pub use rev_io::{RevIoClient, RevIoCredentials};
pub use teal::TealClient;
pub use telegence::TelegenceClient;
pub use thingspace::{ThingSpaceClient, ThingSpaceCredentials};

/// What a cached ThingSpace client was built from: a change of any of it builds a new client.
type ThingSpaceKey = (String, String, Secret, ThingSpaceSettings);

/// Builds clients for service providers, sharing one connection pool.
pub struct HttpCarriers {
    http: reqwest::Client,
    retry: RetryPolicy,
    metrics: Arc<dyn Metrics>,
    /// ThingSpace clients by service provider, kept for the process so their OAuth and session tokens are
    /// reused across messages (a login per message would also multiply the risk of a lockout).
    thingspace: std::sync::Mutex<std::collections::HashMap<i64, (ThingSpaceKey, Arc<ThingSpaceClient>)>>,
}

impl HttpCarriers {
    pub fn new(timeout: Duration, retry: RetryPolicy) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self { http, retry, metrics: Arc::new(NoMetrics), thingspace: Default::default() })
    }

    /// Publishes each call's latency, retries and throttles.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Carriers for HttpCarriers {
    fn control_center(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Arc<dyn ControlCenterApi> {
        Arc::new(
            ControlCenterClient::new(
                self.http.clone(),
                &sp.base_url,
                &sp.username,
                sp.secret.clone(),
                limiter,
                self.retry,
            )
            .with_metrics(sp.integration.name(), self.metrics.clone()),
        )
    }

    fn rev_io(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Arc<dyn RevIoApi> {
        let credentials = RevIoCredentials {
            username: sp.username.clone(),
            client_code: sp.client_code.clone().unwrap_or_default(),
            password: sp.secret.clone(),
            subscription_key: sp.subscription_key.clone().unwrap_or_else(|| Secret::new("")),
        };
        Arc::new(
            RevIoClient::new(self.http.clone(), &sp.base_url, credentials, limiter, self.retry)
                .with_metrics(self.metrics.clone()),
        )
    }

    fn thingspace(
        &self,
        sp: &ServiceProvider,
        limiter: Arc<TokenBucket>,
        activations: Arc<TokenBucket>,
    ) -> Result<Arc<dyn ThingSpaceApi>, String> {
        let settings =
            sp.thingspace.clone().ok_or_else(|| format!("service provider {} has no ThingSpace settings", sp.id))?;
        let key: ThingSpaceKey = (sp.base_url.clone(), sp.username.clone(), sp.secret.clone(), settings.clone());
        let mut cache = self.thingspace.lock().map_err(|_| "ThingSpace client cache poisoned".to_string())?;
        if let Some((cached, client)) = cache.get(&sp.id) {
            if *cached == key {
                return Ok(client.clone());
            }
        }
        let credentials = ThingSpaceCredentials {
            app_key: settings.app_key,
            app_secret: settings.app_secret,
            username: sp.username.clone(),
            password: sp.secret.clone(),
            account_name: settings.account_name,
        };
        let client = Arc::new(
            ThingSpaceClient::new(self.http.clone(), &sp.base_url, credentials, limiter, self.retry)
                .with_activation_limit(activations),
        );
        cache.insert(sp.id, (key, client.clone()));
        Ok(client)
    }

    fn telegence(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Result<Arc<dyn TelegenceApi>, String> {
        // The app id is the service provider's Username, the app secret its Secret (README "Telegence").
        if sp.username.trim().is_empty() || sp.secret.expose().trim().is_empty() {
            return Err(format!("service provider {} has no Telegence app-id or app-secret", sp.id));
        }
        Ok(Arc::new(
            TelegenceClient::new(self.http.clone(), &sp.base_url, &sp.username, sp.secret.clone(), limiter, self.retry)
                .with_metrics(self.metrics.clone()),
        ))
    }

    fn pond(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Result<Arc<dyn PondApi>, String> {
        if sp.secret.expose().trim().is_empty() {
            return Err(format!("service provider {} has no Pond API key (Secret)", sp.id));
        }
        let settings = PondSettings::parse(sp.carrier_settings.as_deref())
            .map_err(|e| format!("service provider {}: {e}", sp.id))?;
        Ok(Arc::new(
            PondClient::new(self.http.clone(), &sp.base_url, settings, sp.secret.clone(), limiter, self.retry)
                .with_metrics(self.metrics.clone()),
        ))
    }

    fn teal(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Result<Arc<dyn TealApi>, String> {
        // The API key is the service provider's Username, the API secret its Secret (README "Teal and Pond").
        if sp.username.trim().is_empty() || sp.secret.expose().trim().is_empty() {
            return Err(format!("service provider {} has no Teal ApiKey or ApiSecret", sp.id));
        }
        Ok(Arc::new(
            TealClient::new(self.http.clone(), &sp.base_url, &sp.username, sp.secret.clone(), limiter, self.retry)
                .with_metrics(self.metrics.clone()),
        ))
    }
}
