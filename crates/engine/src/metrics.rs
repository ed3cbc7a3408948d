//! Operational metrics: rows finished per integration, carrier latency, retries and throttles. The Lambda
//! functions publish them as CloudWatch EMF; locally they are dropped (the logs carry the same facts).

use std::time::Duration;

use domain::RowStatus;

#[derive(Debug, Clone, PartialEq)]
pub enum Metric<'a> {
    /// A row reached its final status.
    RowFinished { integration: &'a str, status: RowStatus },
    /// One HTTP attempt to a carrier or billing API, with its answer's status (None: no answer).
    CarrierCall { integration: &'a str, latency: Duration, http_status: Option<u16> },
    /// An attempt that will be repeated; `throttled` when the carrier said 429.
    CarrierRetry { integration: &'a str, throttled: bool },
    /// The carrier refused our login: no worker logs in to that account again until someone fixes it (alarmed).
    LoginRefused { integration: &'a str },
    /// A worker left a bulk change paused (by a person or its canary): its rows in flight finished.
    BulkChangePaused,
    /// A worker cancelled the rows not started of a bulk change whose abort rule tripped.
    BulkChangeAborted,
}

pub trait Metrics: Send + Sync {
    fn record(&self, metric: Metric<'_>);
}

/// Drops every metric.
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _: Metric<'_>) {}
}
