//! Logs and metrics as Lambda reads them: JSON lines with a timestamp and a level, filtered by the function's
//! log-level setting (`AWS_LAMBDA_LOG_LEVEL`, `AWS_LAMBDA_LOG_FORMAT`, which Lambda sets from the template's
//! `LoggingConfig`; `RUST_LOG` when they are absent), span fields included (bulk change id, ICCID, request id); and
//! EMF metric lines carrying the configured level, so log-level filtering never drops the metrics.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// How the functions log, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// An `EnvFilter` directive (`warn`, or `RUST_LOG`'s).
    pub filter: String,
    pub json: bool,
    /// The level EMF lines carry: the lowest one Lambda lets through.
    pub level: String,
}

/// Reads `AWS_LAMBDA_LOG_LEVEL` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL) first, then `RUST_LOG`, else INFO; and
/// `AWS_LAMBDA_LOG_FORMAT` (JSON unless it says Text).
pub fn log_settings(lookup: impl Fn(&str) -> Option<String>) -> LogSettings {
    let lambda_level = lookup("AWS_LAMBDA_LOG_LEVEL").map(|l| l.trim().to_ascii_uppercase()).filter(|l| !l.is_empty());
    let (filter, level) = match lambda_level.as_deref() {
        Some("FATAL") => ("error".to_string(), "FATAL".to_string()),
        Some(l @ ("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")) => (l.to_ascii_lowercase(), l.to_string()),
        _ => (lookup("RUST_LOG").filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "info".into()), "INFO".into()),
    };
    let json = !lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("text"));
    LogSettings { filter, json, level }
}

static EMF_LEVEL: OnceLock<String> = OnceLock::new();

/// The subscriber of `settings`, writing to `writer` (stdout in Lambda; a buffer in tests).
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false);
    if settings.json {
        Box::new(builder.json().with_current_span(true).with_span_list(true).flatten_event(true).finish())
    } else {
        Box::new(builder.compact().finish())
    }
}

pub fn init_tracing() {
    let settings = log_settings(|name| std::env::var(name).ok());
    let _ = EMF_LEVEL.set(settings.level.clone());
    let _ = tracing::subscriber::set_global_default(subscriber(&settings, std::io::stdout));
}

/// CloudWatch Embedded Metric Format: metrics gathered during an invocation, printed to stdout as one EMF
/// document per integration when it ends (`flush`). Namespace `DeviceBulkChange`, dimension `Integration`.
#[derive(Default)]
pub struct EmfMetrics {
    state: std::sync::Mutex<std::collections::BTreeMap<String, Aggregate>>,
    /// The function's own counters (dimension `Function`): requests, 5xx answers, scheduler duties, cold starts.
    counters: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    function: String,
    /// Set once the first document went out: the first invocation of an environment is its cold start.
    warm: std::sync::atomic::AtomicBool,
}

#[derive(Default, Debug, Clone, PartialEq)]
struct Aggregate {
    rows_processed: u64,
    rows_failed: u64,
    calls: u64,
    retries: u64,
    throttles: u64,
    logins_refused: u64,
    /// Up to 100 latency samples in milliseconds (EMF's limit for one value array).
    latencies_ms: Vec<f64>,
}

const NAMESPACE: &str = "DeviceBulkChange";

impl engine::metrics::Metrics for EmfMetrics {
    fn record(&self, metric: engine::metrics::Metric<'_>) {
        use engine::metrics::Metric;
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match metric {
            Metric::RowFinished { integration, status } => {
                let a = state.entry(integration.to_string()).or_default();
                if status == domain::RowStatus::Processed {
                    a.rows_processed += 1;
                } else {
                    a.rows_failed += 1;
                }
            }
            Metric::CarrierCall { integration, latency, .. } => {
                let a = state.entry(integration.to_string()).or_default();
                a.calls += 1;
                if a.latencies_ms.len() < 100 {
                    a.latencies_ms.push(latency.as_secs_f64() * 1000.0);
                }
            }
            Metric::CarrierRetry { integration, throttled } => {
                let a = state.entry(integration.to_string()).or_default();
                a.retries += 1;
                a.throttles += u64::from(throttled);
            }
            Metric::LoginRefused { integration } => {
                state.entry(integration.to_string()).or_default().logins_refused += 1;
            }
            Metric::BulkChangePaused => {
                drop(state);
                self.count("BulkChangesPaused", 1);
            }
            Metric::BulkChangeAborted => {
                drop(state);
                self.count("BulkChangesAborted", 1);
            }
        }
    }
}

impl EmfMetrics {
    /// Metrics of one function (`bulk-change-api`, `device-bulk-change`, `bulk-change-scheduler`).
    pub fn for_function(function: &str) -> Self {
        Self { function: function.to_string(), ..Self::default() }
    }

    /// Adds to one of the function's counters (`Requests`, `ServerErrors`, `Requeued`, ...).
    pub fn count(&self, name: &'static str, n: u64) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry(name).or_insert(0) += n;
        }
    }

    /// The EMF documents for what was gathered, emptying the buffer. Row counts are published per integration and
    /// in total (the share-of-failures alarm reads the total).
    pub fn drain(&self, timestamp_ms: i64) -> Vec<serde_json::Value> {
        let taken = match self.state.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return Vec::new(),
        };
        let mut counters = match self.counters.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => Default::default(),
        };
        if !self.warm.swap(true, std::sync::atomic::Ordering::SeqCst) {
            counters.insert("ColdStart", 1);
        }
        let level = EMF_LEVEL.get().map_or("INFO", String::as_str);
        let timestamp = chrono::DateTime::from_timestamp_millis(timestamp_ms).unwrap_or_default().to_rfc3339();
        let mut docs = Vec::new();
        if !counters.is_empty() && !self.function.is_empty() {
            let mut doc = serde_json::json!({
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": [["Function"]],
                        "Metrics": counters.keys().map(|name| serde_json::json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
                    }]
                },
                "Function": self.function,
                "level": level,
                "timestamp": timestamp,
            });
            for (name, value) in &counters {
                doc[*name] = serde_json::json!(value);
            }
            docs.push(doc);
        }
        docs.extend(taken.into_iter().map(|(integration, a)| {
            serde_json::json!({
                "level": level,
                "timestamp": timestamp,
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": [["Integration"], []],
                        "Metrics": [
                            {"Name": "RowsProcessed", "Unit": "Count"},
                            {"Name": "RowsFailed", "Unit": "Count"},
                            {"Name": "CarrierCalls", "Unit": "Count"},
                            {"Name": "CarrierRetries", "Unit": "Count"},
                            {"Name": "CarrierThrottles", "Unit": "Count"},
                            {"Name": "LoginsRefused", "Unit": "Count"},
                            {"Name": "CarrierLatency", "Unit": "Milliseconds"}
                        ]
                    }]
                },
                "Integration": integration,
                "RowsProcessed": a.rows_processed,
                "RowsFailed": a.rows_failed,
                "CarrierCalls": a.calls,
                "CarrierRetries": a.retries,
                "CarrierThrottles": a.throttles,
                "LoginsRefused": a.logins_refused,
                "CarrierLatency": a.latencies_ms,
            })
        }));
        docs
    }

    /// Prints the gathered metrics to stdout, where CloudWatch Logs extracts them.
    pub fn flush(&self) {
        for doc in self.drain(chrono::Utc::now().timestamp_millis()) {
            println!("{doc}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engine::metrics::{Metric, Metrics};

    use super::EmfMetrics;

    #[test]
    fn emf_documents_aggregate_per_integration() {
        let m = EmfMetrics::default();
        m.record(Metric::RowFinished { integration: "POD19", status: domain::RowStatus::Processed });
        m.record(Metric::RowFinished { integration: "POD19", status: domain::RowStatus::ApiFailed });
        m.record(Metric::CarrierCall {
            integration: "POD19",
            latency: Duration::from_millis(20),
            http_status: Some(200),
        });
        m.record(Metric::CarrierRetry { integration: "POD19", throttled: true });
        m.record(Metric::LoginRefused { integration: "ThingSpace" });
        m.record(Metric::CarrierCall {
            integration: "Rev.io",
            latency: Duration::from_millis(5),
            http_status: Some(201),
        });
        let docs = m.drain(1_000);
        assert_eq!(docs.len(), 3);
        let thingspace = docs.iter().find(|d| d["Integration"] == "ThingSpace").expect("ThingSpace");
        assert_eq!(thingspace["LoginsRefused"].as_u64(), Some(1));
        let pod19 = docs.iter().find(|d| d["Integration"] == "POD19").expect("POD19");
        assert_eq!(pod19["_aws"]["CloudWatchMetrics"][0]["Namespace"], "DeviceBulkChange");
        assert_eq!(pod19["_aws"]["Timestamp"], 1_000);
        assert_eq!((pod19["RowsProcessed"].as_u64(), pod19["RowsFailed"].as_u64()), (Some(1), Some(1)));
        assert_eq!((pod19["CarrierRetries"].as_u64(), pod19["CarrierThrottles"].as_u64()), (Some(1), Some(1)));
        assert_eq!(pod19["CarrierLatency"], serde_json::json!([20.0]));
        assert!(m.drain(2_000).is_empty(), "drained");
    }
}

#[cfg(test)]
mod log_tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn settings(vars: &[(&str, &str)]) -> LogSettings {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        log_settings(|name| map.get(name).cloned())
    }

    #[test]
    fn the_lambda_log_level_wins_over_rust_log() {
        assert_eq!(settings(&[("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "debug")]).filter, "warn");
        assert_eq!(settings(&[("RUST_LOG", "engine=debug")]).filter, "engine=debug");
        assert_eq!(settings(&[]).filter, "info");
        assert!(settings(&[]).json);
        assert!(!settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).json);
        assert_eq!(settings(&[("AWS_LAMBDA_LOG_LEVEL", "error")]).level, "ERROR");
    }

    #[test]
    fn at_warn_an_error_line_appears_with_a_timestamp_and_a_level_and_info_does_not() {
        let buffer = Buffer::default();
        let sub = subscriber(&settings(&[("AWS_LAMBDA_LOG_LEVEL", "WARN")]), buffer.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(bulk_change_id = 7, "routine");
            tracing::error!(bulk_change_id = 7, "the store is down");
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf8");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["level"], "ERROR");
        let stamp = lines[0]["timestamp"].as_str().expect("timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "RFC 3339: {stamp}");
        assert_eq!(lines[0]["bulk_change_id"], 7);
    }

    #[test]
    fn emf_lines_carry_a_level_and_the_first_one_counts_the_cold_start() {
        let metrics = EmfMetrics::for_function("bulk-change-scheduler");
        metrics.count("Requeued", 2);
        let first = metrics.drain(1_000);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0]["ColdStart"].as_u64(), first[0]["Requeued"].as_u64()), (Some(1), Some(2)));
        assert!(first[0]["level"].is_string() && first[0]["timestamp"].is_string(), "{}", first[0]);
        metrics.count("Requeued", 1);
        assert!(metrics.drain(2_000)[0].get("ColdStart").is_none(), "only the first invocation is a cold start");
    }
}
