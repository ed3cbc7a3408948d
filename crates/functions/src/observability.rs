//! JSON logs for CloudWatch (one object per line, span fields included: bulk change id, ICCID, request id).

use tracing_subscriber::EnvFilter;

pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(true)
        .flatten_event(true)
        .without_time()
        .with_target(false)
        .try_init();
}

/// CloudWatch Embedded Metric Format: metrics gathered during an invocation, printed to stdout as one EMF
/// document per integration when it ends (`flush`). Namespace `DeviceBulkChange`, dimension `Integration`.
#[derive(Default)]
pub struct EmfMetrics {
    state: std::sync::Mutex<std::collections::BTreeMap<String, Aggregate>>,
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
        }
    }
}

impl EmfMetrics {
    /// The EMF documents for what was gathered, emptying the buffer.
    pub fn drain(&self, timestamp_ms: i64) -> Vec<serde_json::Value> {
        let taken = match self.state.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return Vec::new(),
        };
        taken
            .into_iter()
            .map(|(integration, a)| {
                serde_json::json!({
                    "_aws": {
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": NAMESPACE,
                            "Dimensions": [["Integration"]],
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
            })
            .collect()
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
