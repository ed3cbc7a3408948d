//! The one configuration of the worker and the scheduler, whatever runs them: the Lambda functions and the local
//! `bulkchange serve` / `bulkchange worker` read the same environment variables here (the local binary's flags
//! only override them). README "Configuration" lists them.

use std::time::Duration;

use crate::worker::WorkerConfig;

#[derive(Debug, Clone)]
pub struct Settings {
    pub worker: WorkerConfig,
    /// How long a bulk change may sit with no live lease before the scheduler hands it to the queue again: one
    /// lease, the same timing as a worker's take-over of a dead worker's rows.
    pub stranded_grace: Duration,
    /// How often the local scheduler ticks (EventBridge's schedule in AWS).
    pub scheduler_interval: Duration,
    /// SQL Server connections per process (a Lambda execution environment, or a local stack on SQL Server).
    pub database_pool_size: usize,
    /// How long the API waits for the next byte of a request's body before answering 408 (a stalled client frees
    /// its connection; behind API Gateway bodies arrive whole).
    pub api_body_idle: Duration,
    /// How long a carrier call may take before it is abandoned (its outcome then unknown).
    pub carrier_timeout: Duration,
    /// Attempts and backoff of every carrier client.
    pub retry: crate::retry::RetryPolicy,
    /// Webhook deliveries (README "Webhooks"): where URLs may point, the retries, when to give up.
    pub webhooks: crate::webhooks::DeliveryConfig,
    /// How long a webhook endpoint may take to answer.
    pub webhook_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{name} '{value}' {problem}")]
pub struct SettingsError {
    pub name: &'static str,
    pub value: String,
    pub problem: &'static str,
}

/// Every variable read here, with its default, for the README and `--help`.
pub const VARIABLES: [(&str, &str); 26] = [
    ("WORKER_LEASE_SECONDS", "30"),
    ("WORKER_ROWS_IN_FLIGHT", "256"),
    ("WORKER_CLAIM_BATCH", "64"),
    ("WORKER_MAXIMUM_CONCURRENCY", "5"),
    ("WORKER_CONTINUATION_DELAY_SECONDS", "5"),
    ("THINGSPACE_RESULT_WAIT_SECONDS", "900"),
    ("THINGSPACE_RESULT_GIVE_UP_SECONDS", "86400"),
    ("TELEGENCE_POLL_SECONDS", "60"),
    ("TEAL_POLL_SECONDS", "30"),
    ("TEAL_RESULT_GIVE_UP_SECONDS", "3600"),
    ("TEAL_CALLBACK_URL", ""),
    ("SCHEDULER_INTERVAL_SECONDS", "60"),
    ("EMAIL_FROM", "bulkchange@localhost"),
    ("ERROR_EMAIL_TO", "operations@localhost"),
    ("DATABASE_POOL_SIZE", "4"),
    ("API_BODY_IDLE_SECONDS", "10"),
    ("WORKER_WRITE_BATCH", "64"),
    ("CARRIER_TIMEOUT_SECONDS", "30"),
    ("CARRIER_RETRY_ATTEMPTS", "5"),
    ("CARRIER_RETRY_BASE_MILLISECONDS", "200"),
    ("CARRIER_RETRY_MAX_MILLISECONDS", "20000"),
    ("WEBHOOK_ALLOW_LOOPBACK", "false"),
    ("WEBHOOK_TIMEOUT_SECONDS", "10"),
    ("WEBHOOK_RETRY_BASE_MILLISECONDS", "30000"),
    ("WEBHOOK_RETRY_MAX_MILLISECONDS", "3600000"),
    ("WEBHOOK_GIVE_UP_HOURS", "24"),
];

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a test's map); empty values are unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let number = |name: &'static str, default: u64, min: u64| -> Result<u64, SettingsError> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    Ok(_) => Err(SettingsError { name, value: v, problem: "is below the smallest allowed value" }),
                    Err(_) => Err(SettingsError { name, value: v, problem: "is not a whole number" }),
                },
            }
        };
        let defaults = WorkerConfig::default();
        let lease = Duration::from_secs(number("WORKER_LEASE_SECONDS", 30, 3)?);
        let maximum_concurrency = number("WORKER_MAXIMUM_CONCURRENCY", 5, 1)?;
        let worker = WorkerConfig {
            lease,
            concurrency: number("WORKER_ROWS_IN_FLIGHT", 256, 1)? as usize,
            claim_batch: u32::try_from(number("WORKER_CLAIM_BATCH", 64, 1)?).unwrap_or(u32::MAX),
            write_batch: number("WORKER_WRITE_BATCH", 64, 1)? as usize,
            // One instance takes the message; the others the fan-out's helpers.
            fan_out: u32::try_from(maximum_concurrency.saturating_sub(1)).unwrap_or(u32::MAX),
            continuation_delay: Duration::from_secs(number("WORKER_CONTINUATION_DELAY_SECONDS", 5, 0)?),
            carrier_result_wait: Duration::from_secs(number("THINGSPACE_RESULT_WAIT_SECONDS", 900, 1)?),
            carrier_result_give_up: Duration::from_secs(number("THINGSPACE_RESULT_GIVE_UP_SECONDS", 24 * 3600, 1)?),
            carrier_poll_interval: Duration::from_secs(number("TELEGENCE_POLL_SECONDS", 60, 1)?),
            teal_poll_interval: Duration::from_secs(number("TEAL_POLL_SECONDS", 30, 1)?),
            teal_give_up: Duration::from_secs(number("TEAL_RESULT_GIVE_UP_SECONDS", 3600, 1)?),
            teal_callback_url: match get("TEAL_CALLBACK_URL") {
                Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                    return Err(SettingsError {
                        name: "TEAL_CALLBACK_URL",
                        value: url,
                        problem: "is not an http(s) URL",
                    });
                }
                url => url,
            },
            email_from: get("EMAIL_FROM").unwrap_or(defaults.email_from.clone()),
            email_to: get("ERROR_EMAIL_TO")
                .map(|v| v.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or(defaults.email_to.clone()),
            ..defaults
        };
        let allow_loopback = match get("WEBHOOK_ALLOW_LOOPBACK").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(SettingsError {
                    name: "WEBHOOK_ALLOW_LOOPBACK",
                    value: other.to_string(),
                    problem: "is not true or false",
                });
            }
        };
        let webhook_timeout = Duration::from_secs(number("WEBHOOK_TIMEOUT_SECONDS", 10, 1)?);
        let webhooks = crate::webhooks::DeliveryConfig {
            policy: crate::webhooks::UrlPolicy { allow_loopback },
            worker_id: worker.worker_id.clone(),
            // Held past any attempt's end; a dead deliverer's deliveries are taken over once it ends.
            lease: lease.max(webhook_timeout * 2),
            retry_base: Duration::from_millis(number("WEBHOOK_RETRY_BASE_MILLISECONDS", 30_000, 1)?),
            retry_max: Duration::from_millis(number("WEBHOOK_RETRY_MAX_MILLISECONDS", 3_600_000, 1)?),
            give_up_after: Duration::from_secs(3600 * number("WEBHOOK_GIVE_UP_HOURS", 24, 1)?),
            ..crate::webhooks::DeliveryConfig::default()
        };
        Ok(Self {
            webhooks,
            webhook_timeout,
            stranded_grace: lease,
            scheduler_interval: Duration::from_secs(number("SCHEDULER_INTERVAL_SECONDS", 60, 1)?),
            database_pool_size: number("DATABASE_POOL_SIZE", 4, 1)? as usize,
            api_body_idle: Duration::from_secs(number("API_BODY_IDLE_SECONDS", 10, 1)?),
            carrier_timeout: Duration::from_secs(number("CARRIER_TIMEOUT_SECONDS", 30, 1)?),
            retry: crate::retry::RetryPolicy {
                max_attempts: u32::try_from(number("CARRIER_RETRY_ATTEMPTS", 5, 1)?).unwrap_or(u32::MAX),
                base_delay: Duration::from_millis(number("CARRIER_RETRY_BASE_MILLISECONDS", 200, 1)?),
                max_delay: Duration::from_millis(number("CARRIER_RETRY_MAX_MILLISECONDS", 20_000, 1)?),
                ..crate::retry::RetryPolicy::default()
            },
            worker,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let s = read(&[]).expect("defaults");
        assert_eq!(
            (s.worker.lease, s.stranded_grace, s.worker.fan_out),
            (Duration::from_secs(30), Duration::from_secs(30), 4)
        );
        assert_eq!(s.worker.carrier_result_wait, Duration::from_secs(900));
        let s = read(&[
            ("WORKER_LEASE_SECONDS", "12"),
            ("THINGSPACE_RESULT_WAIT_SECONDS", "7"),
            ("WORKER_MAXIMUM_CONCURRENCY", "1"),
            ("ERROR_EMAIL_TO", "a@x; b@x"),
        ])
        .expect("read");
        assert_eq!((s.worker.lease, s.stranded_grace), (Duration::from_secs(12), Duration::from_secs(12)));
        assert_eq!(s.worker.carrier_result_wait, Duration::from_secs(7));
        assert_eq!(s.worker.fan_out, 0, "one instance: no helpers");
        assert_eq!(s.worker.email_to, vec!["a@x".to_string(), "b@x".to_string()]);
        let s = read(&[("TEAL_POLL_SECONDS", "5"), ("TEAL_CALLBACK_URL", "https://api.example/Teal/Callback")])
            .expect("read");
        assert_eq!(s.worker.teal_poll_interval, Duration::from_secs(5));
        assert_eq!(s.worker.teal_give_up, Duration::from_secs(3600));
        assert_eq!(s.worker.teal_callback_url.as_deref(), Some("https://api.example/Teal/Callback"));
        assert_eq!(read(&[("TEAL_CALLBACK_URL", "ftp://x")]).unwrap_err().name, "TEAL_CALLBACK_URL");
    }

    #[test]
    fn webhooks_refuse_loopback_unless_told() {
        let s = read(&[]).expect("defaults");
        assert!(!s.webhooks.policy.allow_loopback, "production refuses loopback");
        assert_eq!(
            (s.webhooks.give_up_after, s.webhook_timeout),
            (Duration::from_secs(86_400), Duration::from_secs(10))
        );
        let s = read(&[("WEBHOOK_ALLOW_LOOPBACK", "true"), ("WEBHOOK_RETRY_BASE_MILLISECONDS", "100")]).expect("read");
        assert!(s.webhooks.policy.allow_loopback);
        assert_eq!(s.webhooks.retry_base, Duration::from_millis(100));
        assert_eq!(read(&[("WEBHOOK_ALLOW_LOOPBACK", "yes")]).unwrap_err().name, "WEBHOOK_ALLOW_LOOPBACK");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = read(&[("WORKER_LEASE_SECONDS", "soon")]).expect_err("refused");
        assert_eq!(e.to_string(), "WORKER_LEASE_SECONDS 'soon' is not a whole number");
        assert!(read(&[("WORKER_LEASE_SECONDS", "1")]).is_err(), "a lease too short to renew");
    }
}
