//! The one HTTP call loop every client uses: token bucket first, then bounded retries of 429 (honouring
//! `Retry-After`), and of 5xx and lost connections for reads. A write answered 5xx or whose answer is lost is
//! reported as ambiguous and never re-sent here: a carrier (or its gateway) may have applied it before failing,
//! so the caller reads before it sends again.

use std::sync::Arc;
use std::time::Duration;

use engine::metrics::{Metric, Metrics};
use engine::ports::{CallRecord, CarrierFailure, FailureKind};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use reqwest::{Method, RequestBuilder, StatusCode};
use tracing::{debug, warn};

const MAX_LOGGED_BODY: usize = 4000;

/// A successful answer: status, body text and what to log.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub call: CallRecord,
}

/// Reads the carrier's error code and message out of an error body.
pub type ErrorParser = fn(&str) -> (Option<String>, String);

pub struct CallSpec<'a> {
    pub method: Method,
    pub url: String,
    pub body: Option<&'a serde_json::Value>,
    /// Reads are retried after a 5xx or a lost connection; writes are not (the carrier may have applied them).
    pub idempotent: bool,
    /// Which API, for metrics.
    pub integration: &'a str,
    pub metrics: &'a dyn Metrics,
    /// Send the body as `application/json-patch+json` (Rev.io's PATCH).
    pub json_patch: bool,
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_LOGGED_BODY {
        return s.to_string();
    }
    let mut end = MAX_LOGGED_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

/// Sends one logical call with retries. `authorise` adds the credentials to each attempt.
pub async fn call(
    http: &reqwest::Client,
    limiter: &Arc<TokenBucket>,
    policy: &RetryPolicy,
    spec: CallSpec<'_>,
    authorise: impl Fn(RequestBuilder) -> RequestBuilder,
    parse_error: ErrorParser,
) -> Result<Answer, CarrierFailure> {
    let body_text = spec.body.map(|b| b.to_string()).unwrap_or_default();
    let request_text = if body_text.is_empty() {
        format!("{} {}", spec.method, spec.url)
    } else {
        format!("{} {}\n{}", spec.method, spec.url, body_text)
    };
    let (mut failures, mut throttles, mut attempts) = (0u32, 0u32, 0u32);
    loop {
        attempts += 1;
        limiter.acquire().await;
        let mut request = authorise(http.request(spec.method.clone(), &spec.url));
        match (spec.body, spec.json_patch) {
            (Some(body), true) => {
                request =
                    request.header(reqwest::header::CONTENT_TYPE, "application/json-patch+json").body(body.to_string());
            }
            (Some(body), false) => request = request.json(body),
            (None, _) => {}
        }
        let failure = |kind, http_status: Option<u16>, code, message: String, response_text: String| CarrierFailure {
            kind,
            code,
            message,
            attempts,
            call: CallRecord { request_text: request_text.clone(), response_text, http_status },
        };
        let sent_at = std::time::Instant::now();
        let result = request.send().await;
        spec.metrics.record(Metric::CarrierCall {
            integration: spec.integration,
            latency: sent_at.elapsed(),
            http_status: result.as_ref().ok().map(|r| r.status().as_u16()),
        });
        match result {
            Err(e) => {
                // A connection never made carried nothing: safe to retry even a write.
                let never_sent = e.is_connect();
                failures += 1;
                if (spec.idempotent || never_sent) && failures < policy.max_attempts {
                    let wait = policy.delay(failures, None);
                    warn!(url = %spec.url, error = %e, attempt = attempts, ?wait, "carrier call failed; retrying");
                    spec.metrics.record(Metric::CarrierRetry { integration: spec.integration, throttled: false });
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let kind = if never_sent { FailureKind::Unavailable } else { FailureKind::Ambiguous };
                let message = if e.is_timeout() {
                    format!("no answer within the timeout ({e})")
                } else {
                    format!("connection failed ({e})")
                };
                return Err(failure(kind, None, None, message, String::new()));
            }
            Ok(response) => {
                let status = response.status();
                let after = retry_after(response.headers());
                let text = match response.text().await {
                    Ok(text) => text,
                    // The status arrived and the body did not (the connection was cut): a read is tried again; a
                    // write was received, so its outcome is unknown.
                    Err(e) => {
                        failures += 1;
                        if spec.idempotent && failures < policy.max_attempts {
                            let wait = policy.delay(failures, None);
                            warn!(url = %spec.url, error = %e, attempt = attempts, ?wait, "answer cut short; retrying");
                            spec.metrics
                                .record(Metric::CarrierRetry { integration: spec.integration, throttled: false });
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        let kind = if spec.idempotent { FailureKind::Unavailable } else { FailureKind::Ambiguous };
                        let message = format!(
                            "HTTP {}, then the connection was cut before the whole answer arrived ({e}){}",
                            status.as_u16(),
                            if spec.idempotent { "" } else { ": the write may have been applied" }
                        );
                        return Err(failure(kind, Some(status.as_u16()), None, message, String::new()));
                    }
                };
                if status.is_success() {
                    debug!(url = %spec.url, status = status.as_u16(), attempt = attempts, "carrier call succeeded");
                    return Ok(Answer {
                        status,
                        call: CallRecord {
                            request_text,
                            response_text: truncate(&text),
                            http_status: Some(status.as_u16()),
                        },
                        body: text,
                    });
                }
                let (code, message) = parse_error(&text);
                if status == StatusCode::TOO_MANY_REQUESTS {
                    throttles += 1;
                    if throttles < policy.max_throttled_attempts {
                        let wait = policy.delay(throttles, after);
                        warn!(url = %spec.url, attempt = attempts, ?wait, throttled = true, "carrier throttled the call; waiting");
                        spec.metrics.record(Metric::CarrierRetry { integration: spec.integration, throttled: true });
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(failure(
                        FailureKind::Throttled,
                        Some(429),
                        code,
                        format!("still throttled after {throttles} attempts: {message}"),
                        truncate(&text),
                    ));
                }
                if status.is_server_error() && !spec.idempotent {
                    return Err(failure(
                        FailureKind::Ambiguous,
                        Some(status.as_u16()),
                        code,
                        format!("{message} (a write answered {status}: it may have been applied)"),
                        truncate(&text),
                    ));
                }
                if status.is_server_error() {
                    failures += 1;
                    if failures < policy.max_attempts {
                        let wait = policy.delay(failures, after);
                        warn!(url = %spec.url, status = status.as_u16(), attempt = attempts, ?wait, "carrier error; retrying");
                        spec.metrics.record(Metric::CarrierRetry { integration: spec.integration, throttled: false });
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(failure(
                        FailureKind::Unavailable,
                        Some(status.as_u16()),
                        code,
                        message,
                        truncate(&text),
                    ));
                }
                return Err(failure(FailureKind::Refused, Some(status.as_u16()), code, message, truncate(&text)));
            }
        }
    }
}

/// What a client holds to reach one API: the connection pool, base URL, token bucket, retry policy and metrics.
pub struct Endpoint {
    pub http: reqwest::Client,
    pub base_url: String,
    pub limiter: Arc<TokenBucket>,
    pub retry: RetryPolicy,
    /// Which API, in metrics (Jasper, POD19, Rev.io, ...).
    pub integration: String,
    pub metrics: Arc<dyn Metrics>,
}

impl Endpoint {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        limiter: Arc<TokenBucket>,
        retry: RetryPolicy,
        integration: &str,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            limiter,
            retry,
            integration: integration.to_string(),
            metrics: Arc::new(engine::metrics::NoMetrics),
        }
    }

    /// One logical call to `{base_url}/{path}`: GETs are reads (retried), anything else a write; PATCH bodies
    /// are JSON Patch.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        authorise: impl Fn(RequestBuilder) -> RequestBuilder,
        parse_error: ErrorParser,
    ) -> Result<Answer, CarrierFailure> {
        let read = method == Method::GET;
        self.send_as(method, path, body, read, authorise, parse_error).await
    }

    /// `send`, saying whether the call only reads (a POST search, say) and may be repeated after a 5xx.
    pub async fn send_as(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        read: bool,
        authorise: impl Fn(RequestBuilder) -> RequestBuilder,
        parse_error: ErrorParser,
    ) -> Result<Answer, CarrierFailure> {
        let json_patch = method == Method::PATCH;
        self.call(method, path, body, read, json_patch, authorise, parse_error).await
    }

    /// `send_as` with the body as plain `application/json` whatever the method (Telegence's PATCH).
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        read: bool,
        authorise: impl Fn(RequestBuilder) -> RequestBuilder,
        parse_error: ErrorParser,
    ) -> Result<Answer, CarrierFailure> {
        self.call(method, path, body, read, false, authorise, parse_error).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        read: bool,
        json_patch: bool,
        authorise: impl Fn(RequestBuilder) -> RequestBuilder,
        parse_error: ErrorParser,
    ) -> Result<Answer, CarrierFailure> {
        let spec = CallSpec {
            idempotent: read,
            json_patch,
            url: format!("{}/{path}", self.base_url),
            method,
            body,
            integration: &self.integration,
            metrics: self.metrics.as_ref(),
        };
        call(&self.http, &self.limiter, &self.retry, spec, authorise, parse_error).await
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986): ids and URLs put into paths and queries.
pub fn encode(value: &str) -> String {
    value
        .trim()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
