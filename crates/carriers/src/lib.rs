//! Carrier and billing clients (reqwest): Cisco Control Center and Rev.io, sharing one call loop with the
//! token bucket and the retry policy. ThingSpace, Telegence, Teal and Pond join here later.

pub mod control_center;
pub mod http;
pub mod rev_io;
pub mod thingspace;

use std::sync::Arc;
use std::time::Duration;

use engine::metrics::{Metrics, NoMetrics};
use engine::ports::{Carriers, ControlCenterApi, RevIoApi, Secret, ServiceProvider};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;

pub use control_center::ControlCenterClient;
pub use rev_io::{RevIoClient, RevIoCredentials};

/// Builds clients for service providers, sharing one connection pool.
pub struct HttpCarriers {
    http: reqwest::Client,
    retry: RetryPolicy,
    metrics: Arc<dyn Metrics>,
}

impl HttpCarriers {
    pub fn new(timeout: Duration, retry: RetryPolicy) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self { http, retry, metrics: Arc::new(NoMetrics) })
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
}
