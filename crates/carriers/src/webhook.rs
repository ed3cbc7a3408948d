//! The webhook transport (issue 22): one POST to an address `engine::webhooks::check_url` checked, connecting to
//! that address (a name that resolves elsewhere a moment later is not followed), no redirect followed, a short
//! timeout, and at most 1 KB of the answer kept.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use engine::webhooks::{ANSWER_KEPT_BYTES, WebhookTransport};

/// Sends webhook deliveries with reqwest.
pub struct HttpTransport {
    timeout: Duration,
}

impl HttpTransport {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

#[async_trait]
impl WebhookTransport for HttpTransport {
    async fn post(
        &self,
        url: &url::Url,
        addr: SocketAddr,
        headers: &[(&'static str, String)],
        body: &str,
    ) -> Result<(u16, String), String> {
        let host = url.host_str().unwrap_or_default();
        // A client per attempt: pinned to the checked address (reqwest's resolve override applies per client).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .resolve(host, addr)
            .user_agent("bulkchange-webhooks/1")
            .build()
            .map_err(|e| format!("no HTTP client: {e}"))?;
        let mut request = client.post(url.as_str()).header("Content-Type", "application/json").body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut kept = Vec::new();
        while kept.len() < ANSWER_KEPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(ANSWER_KEPT_BYTES - kept.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        Ok((status, String::from_utf8_lossy(&kept).into_owned()))
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        format!("request failed: {}", e.without_url())
    }
}
