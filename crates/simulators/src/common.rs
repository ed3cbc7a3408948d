//! What every simulator shares: fault and latency settings, the rate limit answered by 429, Basic auth,
//! and the record of every call that tests read.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Knobs a test or an operator turns at run time (`POST /_sim/config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "snake_case")]
pub struct Faults {
    /// Added to every answer, after the change is applied.
    pub latency_ms: u64,
    /// Calls a second the account may make; beyond it the answer is 429. `None`: unlimited.
    pub rate_limit_per_second: Option<f64>,
    /// The `Retry-After` sent with a 429, in seconds; 0 sends none (a gateway that throttles without saying when).
    pub retry_after_seconds: u64,
    /// The next N calls answer 500 without doing anything.
    pub fail_next: u32,
    /// Every Nth call answers 500 without doing anything (0 = never).
    pub fail_every: u32,
    /// The next N writes are applied, then hang this long before answering (a timeout for the client).
    pub hang_next_writes: u32,
    pub hang_ms: u64,
    /// The next N writes are applied, then answered 502 Bad Gateway (a gateway that lost the carrier's answer).
    pub apply_then_fail_next_writes: u32,
    /// The next N writes are applied, then answered 200 with an empty body (a gateway that dropped the answer's body).
    pub empty_next_writes: u32,
    /// The next N writes are applied, then answered 200 with half of the body before the connection is cut.
    pub truncate_next_writes: u32,
    /// Edits answer 200 but do not take; the audit trail records them in error (POD19's known behaviour).
    pub edits_do_not_take: bool,
    /// Edits of these ICCIDs are refused (400, `10000099`), as for a SIM the carrier has locked.
    pub locked_iccids: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            rate_limit_per_second: None,
            retry_after_seconds: 1,
            fail_next: 0,
            fail_every: 0,
            hang_next_writes: 0,
            hang_ms: 30_000,
            apply_then_fail_next_writes: 0,
            empty_next_writes: 0,
            truncate_next_writes: 0,
            edits_do_not_take: false,
            locked_iccids: Vec::new(),
        }
    }
}

/// One call as the simulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
    pub status: u16,
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
}

/// A token bucket holding one second of the limit: the carrier counts calls per second.
#[derive(Debug)]
pub struct Limiter {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    pub fn new() -> Self {
        Self { tokens: f64::MAX, last: Instant::now() }
    }

    pub fn try_take(&mut self, rate: f64) -> bool {
        let now = Instant::now();
        let burst = rate.max(1.0);
        self.tokens = (self.tokens.min(burst) + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// Fault state and call record of one simulator.
#[derive(Debug)]
pub struct Harness {
    pub started: Instant,
    pub faults: Mutex<Faults>,
    pub calls: Mutex<Vec<RecordedCall>>,
    limiter: Mutex<Limiter>,
    counter: Mutex<u64>,
    /// Faults injected so far, by kind (`throttled`, `server_error_before_applying`, `hung_write`, ...).
    injected: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// What the harness decided before the handler runs.
pub enum Gate {
    Proceed,
    Throttled(u64),
    Fail,
}

impl Harness {
    pub fn new(faults: Faults) -> Self {
        Self {
            started: Instant::now(),
            faults: Mutex::new(faults),
            calls: Mutex::new(Vec::new()),
            limiter: Mutex::new(Limiter::new()),
            counter: Mutex::new(0),
            injected: Mutex::new(Default::default()),
        }
    }

    /// Counts one injected fault of `kind`.
    pub fn injected(&self, kind: &'static str) {
        if let Ok(mut counts) = self.injected.lock() {
            *counts.entry(kind).or_default() += 1;
        }
    }

    /// The faults injected so far, by kind.
    pub fn injected_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.injected.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.faults.lock() {
            *f = faults;
        }
    }

    /// Rate limit, then injected failures, in that order (a throttled call never reaches the service).
    pub fn gate(&self) -> Gate {
        let mut faults = match self.faults.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        if let Some(rate) = faults.rate_limit_per_second {
            let mut limiter = match self.limiter.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            if !limiter.try_take(rate) {
                self.injected("throttled");
                return Gate::Throttled(faults.retry_after_seconds);
            }
        }
        let n = {
            let mut c = match self.counter.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            *c += 1;
            *c
        };
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            self.injected("server_error_before_applying");
            return Gate::Fail;
        }
        if faults.fail_every > 0 && n % u64::from(faults.fail_every) == 0 {
            self.injected("server_error_before_applying");
            return Gate::Fail;
        }
        Gate::Proceed
    }

    /// True (and counts down) when this write must hang after being applied.
    pub fn take_hang(&self) -> Option<Duration> {
        let mut faults = self.faults.lock().ok()?;
        if faults.hang_next_writes > 0 {
            faults.hang_next_writes -= 1;
            self.injected("hung_write");
            return Some(Duration::from_millis(faults.hang_ms));
        }
        None
    }

    /// True (and counts down) when this write, already applied, must be answered 502.
    pub fn take_apply_then_fail(&self) -> bool {
        let Ok(mut faults) = self.faults.lock() else { return false };
        if faults.apply_then_fail_next_writes > 0 {
            faults.apply_then_fail_next_writes -= 1;
            self.injected("applied_then_bad_gateway");
            return true;
        }
        false
    }

    /// How this write, already applied, must be answered when its answer is damaged (and counts it down).
    pub fn take_damaged_answer(&self) -> Option<Damage> {
        let Ok(mut faults) = self.faults.lock() else { return None };
        if faults.empty_next_writes > 0 {
            faults.empty_next_writes -= 1;
            self.injected("applied_then_empty_200");
            return Some(Damage::Empty);
        }
        if faults.truncate_next_writes > 0 {
            faults.truncate_next_writes -= 1;
            self.injected("applied_then_truncated");
            return Some(Damage::Truncated);
        }
        None
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.faults().latency_ms)
    }

    pub fn record(&self, method: &str, path: &str, body: serde_json::Value, status: StatusCode) {
        let call = RecordedCall {
            method: method.to_string(),
            path: path.to_string(),
            body,
            status: status.as_u16(),
            at_ms: self.started.elapsed().as_millis() as u64,
        };
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }

    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn clear_calls(&self) {
        if let Ok(mut c) = self.calls.lock() {
            c.clear();
        }
    }
}

/// Decodes `Authorization: Basic ...` into (user, secret).
pub fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

/// What a gateway answers when it lost the service's answer: 502 with an HTML page, not the API's error body.
pub fn bad_gateway() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        StatusCode::BAD_GATEWAY,
        [(axum::http::header::CONTENT_TYPE, "text/html")],
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
    )
        .into_response()
}

impl Harness {
    /// After a simulator's own auth check: the rate limit (429 with `Retry-After`) and injected 500s, each
    /// answered with the carrier's error body (`error(status, message)`) and recorded. `Ok` lets the call through.
    pub fn admit(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
        error: impl Fn(StatusCode, &str) -> axum::response::Response,
    ) -> Result<(), axum::response::Response> {
        match self.gate() {
            Gate::Proceed => Ok(()),
            Gate::Throttled(after) => {
                self.record(method, path, body.clone(), StatusCode::TOO_MANY_REQUESTS);
                let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
                if after > 0
                    && let Ok(v) = axum::http::HeaderValue::from_str(&after.to_string())
                {
                    response.headers_mut().insert("retry-after", v);
                }
                Err(response)
            }
            Gate::Fail => {
                self.record(method, path, body.clone(), StatusCode::INTERNAL_SERVER_ERROR);
                Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"))
            }
        }
    }

    /// Records the call with its answer's status, then waits the configured latency.
    pub async fn answer(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
        response: axum::response::Response,
    ) -> axum::response::Response {
        self.record(method, path, body, response.status());
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        response
    }

    /// A write already applied: hangs (the client's timeout), answers 502, answers 200 with an empty body or with
    /// half of its body before the connection is cut, when the faults say so.
    pub async fn after_write(&self, response: axum::response::Response) -> axum::response::Response {
        if let Some(hang) = self.take_hang() {
            tokio::time::sleep(hang).await;
        }
        if self.take_apply_then_fail() {
            return bad_gateway();
        }
        match self.take_damaged_answer() {
            Some(damage) => damage.of(response).await,
            None => response,
        }
    }
}

/// An answer a gateway damaged after the service applied the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// 200 with no body at all.
    Empty,
    /// 200, then half of the body, then the connection is cut.
    Truncated,
}

impl Damage {
    pub async fn of(self, response: axum::response::Response) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        match self {
            Damage::Empty => (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")]).into_response(),
            Damage::Truncated => {
                let half = bytes.slice(..bytes.len() / 2);
                // A body that yields its first half, then fails: the server cuts the connection mid-body.
                let stream = futures::stream::iter([
                    Ok::<_, std::io::Error>(half),
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection cut by the gateway")),
                ]);
                let mut damaged = axum::response::Response::from_parts(parts, axum::body::Body::from_stream(stream));
                *damaged.status_mut() = StatusCode::OK;
                damaged.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
                damaged
            }
        }
    }
}

/// Serves `app` on `listen` until the task is aborted; `name` labels the error if the server stops.
pub async fn serve(
    listen: std::net::SocketAddr,
    app: axum::Router,
    name: &'static str,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, simulator = name, "simulator stopped");
        }
    });
    Ok((addr, task))
}
