//! Webhooks (issue 22, README "Webhooks"): a bulk change's events pushed to the endpoints a tenant registered and
//! to the bulk change's own `NotifyUrl`, signed like Stripe's (`t=…,v1=hex(HMAC-SHA256(secret, t + "." + body))`).
//!
//! The store writes one delivery row per event and endpoint in the transaction that makes the event true (an
//! outbox); [`deliver_due`] leases due rows, sends each, and records the attempt: delivered on a 2xx, else retried
//! with backoff until the retry window ends, then FAILED. At least once: a receiver de-duplicates by `Webhook-Id`.
//!
//! No server-side request forgery: [`check_url`] refuses anything but `https` (plain `http` only to loopback when
//! the local stack allows it), and any host that resolves to a loopback, private, link-local (the instance metadata
//! service), unique-local, shared, multicast or reserved address, at registration and again before every attempt
//! (DNS can change); the transport connects to the address checked, follows no redirect and keeps 1 KB of the answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::ports::{DeliveryResult, DueDelivery, EVENT_PAUSED, Reads, StoreError, Webhooks};

/// The signature header of every delivery.
pub const SIGNATURE_HEADER: &str = "Webhook-Signature";
/// The event id (the same on every attempt and every endpoint of one event): what a receiver de-duplicates by.
pub const ID_HEADER: &str = "Webhook-Id";
pub const EVENT_HEADER: &str = "Webhook-Event";
/// How old a signature's timestamp may be before a receiver refuses it as a replay (README's verification).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;
/// The longest URL accepted (the column's size).
pub const MAX_URL_LENGTH: usize = 2048;
/// How much of an endpoint's answer is kept (for the deliveries page).
pub const ANSWER_KEPT_BYTES: usize = 1024;

/// Where webhook URLs may point. Production: https to public addresses only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// The local stack: `http://127.0.0.1:…` (and other loopback addresses) allowed (`WEBHOOK_ALLOW_LOOPBACK`).
    pub allow_loopback: bool,
}

/// A URL that passed [`check_url`], with the address it resolved to (the one to connect to).
#[derive(Debug, Clone)]
pub struct CheckedUrl {
    pub url: url::Url,
    pub addr: SocketAddr,
}

/// Checks a webhook URL: https (http only to loopback when allowed), no credentials in it, and every address its
/// host resolves to public. The error says why, for a 400 naming the field or a delivery's last error.
pub async fn check_url(raw: &str, policy: UrlPolicy) -> Result<CheckedUrl, String> {
    if raw.len() > MAX_URL_LENGTH {
        return Err(format!("is longer than {MAX_URL_LENGTH} characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_loopback => {}
        "http" => return Err("must be https".into()),
        other => return Err(format!("must be https, not {other}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    let port = url.port_or_known_default().ok_or("has no port")?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(name)) => {
            let lookup = tokio::net::lookup_host((name, port));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => return Err(format!("host {name} does not resolve ({e})")),
                Err(_) => return Err(format!("host {name} did not resolve within 5 s")),
            }
        }
        None => return Err("has no host".into()),
    };
    let Some(first) = addrs.first().copied() else {
        return Err("host resolves to no address".into());
    };
    for addr in &addrs {
        if let Some(why) = forbidden(addr.ip(), policy) {
            return Err(format!("points at {} ({why}), which is not allowed", addr.ip()));
        }
    }
    if url.scheme() == "http" && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err("must be https (plain http is allowed only to this machine's loopback)".into());
    }
    Ok(CheckedUrl { url, addr: first })
}

/// Why an address may not be called, if it may not.
pub fn forbidden(ip: IpAddr, policy: UrlPolicy) -> Option<&'static str> {
    let ip = match ip {
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d, ::a.b.c.d, the NAT64 prefix 64:ff9b::/96) is that
        // IPv4 address.
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return (!policy.allow_loopback).then_some("loopback");
    }
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let v4_tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_unspecified() && !v6.is_loopback() {
        return Some(v4_tail);
    }
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then_some(v4_tail)
}

fn forbidden_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_unspecified() || o[0] == 0 {
        Some("this network")
    } else if v4.is_private() {
        Some("a private address")
    } else if v4.is_link_local() {
        Some("link-local, the instance metadata service's range")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared address space")
    } else if v4.is_broadcast() || v4.is_multicast() {
        Some("broadcast or multicast")
    } else if v4.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || o[0] >= 240
    {
        Some("a reserved range")
    } else {
        None
    }
}

fn forbidden_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let first = v6.segments()[0];
    if v6.is_unspecified() {
        Some("unspecified")
    } else if v6.is_multicast() {
        Some("multicast")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("unique-local")
    } else if (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0 {
        Some("link-local")
    } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
        Some("a reserved range")
    } else {
        None
    }
}

/// A new signing secret: 32 bytes of the operating system's CSPRNG, hex, prefixed like Stripe's.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a webhook secret: {e}"))?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

fn mac(secret: &str, timestamp: i64, body: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(mac)
}

/// The `Webhook-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let v1 = mac(secret, timestamp, body).map(|m| hex::encode(m.finalize().into_bytes())).unwrap_or_default();
    format!("t={timestamp},v1={v1}")
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is not t=…,v1=…")]
    Malformed,
    #[error("the signature's timestamp is more than {REPLAY_WINDOW_SECONDS} s from now: a replay")]
    Stale,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// What a receiver does (README "Webhooks"): the timestamp within five minutes of `now`, and one `v1` equal, in
/// constant time, to the HMAC of `t + "." + body`.
pub fn verify(header: &str, secret: &str, body: &str, now: i64) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => candidates.push(hex::decode(v).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let (Some(timestamp), false) = (timestamp, candidates.is_empty()) else {
        return Err(VerifyError::Malformed);
    };
    if (now - timestamp).abs() > REPLAY_WINDOW_SECONDS {
        return Err(VerifyError::Stale);
    }
    for candidate in candidates {
        if mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&candidate).is_ok()) {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// Sends one attempt to an address already checked. Production and local: `carriers::webhook::HttpTransport`.
#[async_trait]
pub trait WebhookTransport: Send + Sync {
    /// POSTs `body` to `url` connecting to `addr`, without following redirects. Answers the status code and at
    /// most [`ANSWER_KEPT_BYTES`] of the answer, or why nothing was answered.
    async fn post(
        &self,
        url: &url::Url,
        addr: SocketAddr,
        headers: &[(&'static str, String)],
        body: &str,
    ) -> Result<(u16, String), String>;
}

/// How deliveries are made (`Settings`: `WEBHOOK_*`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub policy: UrlPolicy,
    /// Who holds a lease (the worker's id).
    pub worker_id: String,
    /// How long a delivery is held by one deliverer (longer than an attempt can take).
    pub lease: Duration,
    /// The first retry's delay; each next one doubles, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long after the event attempts go on before it is FAILED.
    pub give_up_after: Duration,
    /// Deliveries taken at once.
    pub batch: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            policy: UrlPolicy::default(),
            worker_id: "webhooks".into(),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            batch: 20,
        }
    }
}

/// A transport and how to deliver: what the worker (right after a bulk change's event) and the scheduler (every
/// tick: retries, and events a dead worker left) run.
pub struct Deliverer {
    pub transport: std::sync::Arc<dyn WebhookTransport>,
    pub config: DeliveryConfig,
}

impl Deliverer {
    /// One pass over what is due now; failures are logged (the next pass tries again).
    pub async fn run<S>(&self, store: &S) -> DeliveryReport
    where
        S: Webhooks + Reads + crate::ports::Rollouts + ?Sized,
    {
        match deliver_due(store, self.transport.as_ref(), &self.config).await {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "webhook deliveries could not be read; the next pass tries again");
                DeliveryReport::default()
            }
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: u32,
    pub retried: u32,
    pub failed: u32,
}

/// The retry delay after `attempts` attempts (1: the first failed): `base × 2^(attempts-1)`, at most `max`.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

/// The event as sent: its id, type and time, and the bulk change it is about (status, counts per row status, and
/// a pause's or an abort's reason).
async fn event_body(store: &(impl Reads + ?Sized), due: &DueDelivery) -> Result<String, StoreError> {
    let d = &due.delivery;
    let bulk = store.bulk_change(Some(d.tenant_id), d.bulk_change_id).await?;
    let counts: serde_json::Map<String, serde_json::Value> = store
        .row_counts(d.tenant_id, d.bulk_change_id)
        .await?
        .into_iter()
        .map(|c| (c.status.as_str().to_string(), json!(c.count)))
        .collect();
    let mut data = json!({
        "BulkChangeId": d.bulk_change_id,
        "Counts": counts,
    });
    if let Some(bulk) = &bulk {
        data["Status"] = json!(if d.event_type == EVENT_PAUSED { "PAUSED" } else { bulk.status.as_str() });
        data["ServiceProviderId"] = json!(bulk.service_provider_id);
        data["ChangeType"] = json!(bulk.change_type.name());
        data["ProcessedDate"] = json!(bulk.processed_at);
    }
    if d.event_type == EVENT_PAUSED {
        data["Paused"] = json!({"Reason": d.reason, "By": d.actor, "Since": d.created_date});
    }
    Ok(json!({"Id": d.event_id, "Type": d.event_type, "Created": d.created_date, "Data": data}).to_string())
}

/// Delivers what is due now: leases up to a batch, sends each once, records each attempt. Deliveries another
/// deliverer holds are left to it; one whose deliverer died is taken once its lease ends.
pub async fn deliver_due<S>(
    store: &S,
    transport: &dyn WebhookTransport,
    config: &DeliveryConfig,
) -> Result<DeliveryReport, StoreError>
where
    S: Webhooks + Reads + crate::ports::Rollouts + ?Sized,
{
    let mut report = DeliveryReport::default();
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(config.lease).unwrap_or_else(|_| chrono::Duration::minutes(1));
    let due = store.claim_deliveries(&config.worker_id, config.batch, until, now).await?;
    // At once: a pass takes about one attempt's time however many endpoints are slow.
    let attempts = due.iter().map(|item| deliver_one(store, transport, config, item));
    let results = futures::future::join_all(attempts).await;
    for (item, result) in due.iter().zip(results) {
        let (body, result) = match result {
            Ok(pair) => pair,
            Err(e) => {
                warn!(delivery = item.delivery.id, error = %e, "could not build a webhook event; tried again later");
                continue;
            }
        };
        match &result {
            DeliveryResult::Delivered { .. } => report.delivered += 1,
            DeliveryResult::Retry { .. } => report.retried += 1,
            DeliveryResult::Failed { .. } => report.failed += 1,
        }
        if !store.record_delivery(item.delivery.id, &config.worker_id, &body, &result, Utc::now()).await? {
            warn!(delivery = item.delivery.id, "webhook delivery lease lost before its attempt was recorded");
        }
    }
    Ok(report)
}

async fn deliver_one<S>(
    store: &S,
    transport: &dyn WebhookTransport,
    config: &DeliveryConfig,
    item: &DueDelivery,
) -> Result<(String, DeliveryResult), StoreError>
where
    S: Webhooks + Reads + crate::ports::Rollouts + ?Sized,
{
    let d = &item.delivery;
    let body = match &item.body {
        Some(body) => body.clone(),
        None => event_body_with_reason(store, item).await?,
    };
    let attempt = d.attempts + 1;
    let outcome = match check_url(&d.url, config.policy).await {
        Err(why) => Err((None, format!("URL refused: {why}"))),
        Ok(checked) => {
            let t = Utc::now().timestamp();
            let headers = [
                (SIGNATURE_HEADER, signature(&item.secret, t, &body)),
                (ID_HEADER, d.event_id.clone()),
                (EVENT_HEADER, d.event_type.clone()),
            ];
            match transport.post(&checked.url, checked.addr, &headers, &body).await {
                Ok((code, _)) if (200..300).contains(&code) => Ok(code),
                Ok((code, answer)) => Err((Some(code), format!("HTTP {code}: {}", answer.trim()))),
                Err(e) => Err((None, e)),
            }
        }
    };
    let result = match outcome {
        Ok(status_code) => {
            info!(bulk_change_id = d.bulk_change_id, event_id = %d.event_id, url = %redacted(&d.url), attempt,
                  "webhook delivered");
            DeliveryResult::Delivered { status_code }
        }
        Err((status_code, error)) => {
            let at = Utc::now()
                + chrono::Duration::from_std(backoff(attempt, config.retry_base, config.retry_max)).unwrap_or_default();
            let window_ends = d.created_date
                + chrono::Duration::from_std(config.give_up_after).unwrap_or_else(|_| chrono::Duration::days(1));
            if at > window_ends {
                warn!(bulk_change_id = d.bulk_change_id, event_id = %d.event_id, url = %redacted(&d.url), attempt,
                      %error, "webhook given up");
                DeliveryResult::Failed { status_code, error }
            } else {
                info!(bulk_change_id = d.bulk_change_id, event_id = %d.event_id, url = %redacted(&d.url), attempt,
                      %error, retry_at = %at, "webhook not accepted; tried again");
                DeliveryResult::Retry { at, status_code, error }
            }
        }
    };
    Ok((body, result))
}

async fn event_body_with_reason<S>(store: &S, item: &DueDelivery) -> Result<String, StoreError>
where
    S: Reads + crate::ports::Rollouts + ?Sized,
{
    let body = event_body(store, item).await?;
    if item.delivery.event_type != crate::ports::EVENT_ABORTED {
        return Ok(body);
    }
    let reason = store.rollout_progress(item.delivery.bulk_change_id).await?.aborted_reason;
    let mut value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("event body: {e}")))?;
    value["Data"]["AbortedReason"] = json!(reason);
    Ok(value.to_string())
}

/// The URL without its query (which may carry a receiver's token), for logs.
fn redacted(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_forged_or_old_one_does_not() {
        let body = r#"{"Id":"evt_1","Type":"bulk_change.finished"}"#;
        let header = signature("whsec_abc", 1_800_000_000, body);
        assert!(header.starts_with("t=1800000000,v1="), "{header}");
        assert_eq!(verify(&header, "whsec_abc", body, 1_800_000_010), Ok(()));
        assert_eq!(verify(&header, "whsec_other", body, 1_800_000_010), Err(VerifyError::Mismatch));
        assert_eq!(
            verify(&header, "whsec_abc", &body.replace("finished", "paused"), 1_800_000_010),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(verify(&header, "whsec_abc", body, 1_800_000_000 + 301), Err(VerifyError::Stale), "a replay");
        let forged = header.replace("t=1800000000", "t=1800000300");
        assert_eq!(verify(&forged, "whsec_abc", body, 1_800_000_300), Err(VerifyError::Mismatch), "a new timestamp");
        assert_eq!(verify("v1=00", "whsec_abc", body, 0), Err(VerifyError::Malformed));
        assert_eq!(verify("t=1,v1=zz", "whsec_abc", body, 1), Err(VerifyError::Malformed));
    }

    #[test]
    fn secrets_are_random_and_long() {
        let (a, b) = (new_secret().expect("secret"), new_secret().expect("secret"));
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn addresses_of_this_machine_its_network_and_the_metadata_service_are_refused() {
        let production = UrlPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(forbidden(ip, production).is_some(), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(forbidden(ip, production), None, "{ip} is public");
        }
        let local = UrlPolicy { allow_loopback: true };
        assert_eq!(forbidden("127.0.0.1".parse().expect("ip"), local), None);
        assert!(forbidden("10.0.0.1".parse().expect("ip"), local).is_some(), "loopback only, not the network");
    }

    #[tokio::test]
    async fn urls_are_https_to_public_hosts_and_http_only_to_loopback_locally() {
        let production = UrlPolicy::default();
        for (url, why) in [
            ("http://169.254.169.254/latest/meta-data", "https"),
            ("https://169.254.169.254/", "link-local"),
            ("https://10.0.0.1/hook", "private"),
            ("https://localhost:8443/hook", "loopback"),
            ("https://[::1]/hook", "loopback"),
            ("https://user:pw@93.184.216.34/", "password"),
            ("ftp://93.184.216.34/", "https"),
            ("not a url", "not a URL"),
        ] {
            let refused = check_url(url, production).await.expect_err(url);
            assert!(refused.contains(why), "{url}: {refused}");
        }
        assert!(check_url("https://93.184.216.34:8443/hook?token=x", production).await.is_ok());
        let local = UrlPolicy { allow_loopback: true };
        let checked = check_url("http://127.0.0.1:9000/hook", local).await.expect("local stack");
        assert_eq!(checked.addr, "127.0.0.1:9000".parse().expect("addr"));
        assert!(check_url("http://93.184.216.34/hook", local).await.is_err(), "http only to loopback");
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n, base, max).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn logged_urls_lose_their_query() {
        assert_eq!(redacted("https://example.com/hook?token=secret"), "https://example.com/hook");
    }
}
