//! What a processor works with: the bulk change, its service provider and reference data, the carrier clients,
//! the store and the clock, loaded once per message by the worker (`Worker::load_job`). Processors import this
//! module, not the worker that calls them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use domain::request::ChangeDetails;
use domain::rules::{CarrierRatePlan, DeviceStatusDef};
use tracing::error;

use crate::audit;
use crate::ports::{
    BulkChange, CallRecord, Callbacks, CarrierWaits, Clock, DeviceChangeRow, Devices, Queue, RevIoApi, RevServices,
    RowOutcome, ServiceProvider, StoreError,
};
use crate::recorder::Recorder;

/// Everything a row's processing needs, loaded once per message.
#[derive(Clone)]
pub(crate) struct Job {
    pub bulk: BulkChange,
    /// The bulk change's own pace (its `MaxPerMinute`): every row waits for a slot before its carrier call.
    pub pace: Option<Arc<crate::rate::TokenBucket>>,
    pub sp: ServiceProvider,
    pub statuses: Vec<DeviceStatusDef>,
    pub rate_plans: Vec<CarrierRatePlan>,
    /// The service provider's carrier, its client built (`carrier::connect`).
    pub carrier: Arc<dyn Carrier>,
    pub rev_io: Option<Arc<dyn RevIoApi>>,
    /// The store, by what processors do with it: read a device, keep its Rev.io line, hand rows to a carrier
    /// request; `callbacks` applies results that came before their request id was recorded (ThingSpace).
    pub devices: Arc<dyn Devices>,
    pub rev_services: Arc<dyn RevServices>,
    pub waits: Arc<dyn CarrierWaits>,
    pub callbacks: Arc<dyn Callbacks>,
    pub clock: Arc<dyn Clock>,
    /// The stored change request, parsed once per message.
    pub details: ChangeDetails,
    pub override_validation: bool,
    pub queue: Arc<dyn Queue>,
    /// Who holds this worker's leases (rows are handed from it to a carrier request).
    pub worker_id: String,
    pub carrier_result_wait: Duration,
    pub carrier_result_give_up: Duration,
    pub carrier_poll_interval: Duration,
    pub teal_poll_interval: Duration,
    pub teal_give_up: Duration,
    pub teal_callback_url: Option<String>,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// Where audit entries go (in groups with other rows').
    pub recorder: Arc<Recorder>,
}

impl Job {
    /// This job for rows that carry a change of their own (an undo's rows, grouped by their change for an
    /// asynchronous carrier): every processor step reads `details`.
    pub fn with_details(&self, details: ChangeDetails) -> Job {
        Job { details, ..self.clone() }
    }

    /// Whether an earlier attempt may already have sent this row's change: a row claimed before (its worker died),
    /// or any row of a retry (its first attempt may have reached the carrier without us knowing). Such a row is
    /// looked up on the carrier before anything is sent.
    pub fn may_have_been_sent(&self, row: &DeviceChangeRow) -> bool {
        row.claims > 1 || self.bulk.retry_of.is_some()
    }

    /// Appends an audit entry; an audit write that fails is reported but does not undo the carrier's answer.
    pub async fn log(&self, row: &DeviceChangeRow, description: &str, call: &CallRecord, error: Option<&str>) {
        let entry = audit::entry(self.bulk.id, row.id, description, call, error, self.clock.now());
        if let Err(e) = self.recorder.log(entry).await {
            error!(bulk_change_id = self.bulk.id, iccid = %row.iccid, error = %e, "audit log write failed");
        }
    }
}

/// A service provider's carrier, connected for one job (its client built): how each change reaches it. Each
/// carrier's folder (`carrier/<name>/`) implements it; the worker and `change` know no carrier by name.
#[async_trait]
pub(crate) trait Carrier: Send + Sync {
    /// The asynchronous path of `details` when this carrier takes that change in grouped requests whose results
    /// come later (`carrier_wait`); None when its rows are processed one by one.
    fn batched(&self, _details: &ChangeDetails) -> Option<&dyn AsyncCarrier> {
        None
    }

    /// A row of `details` processed on its own; None when the change does not reach this carrier (a change type
    /// with no carrier step, done by `change`, or one the carrier does not take).
    async fn process_row(&self, job: &Job, row: &DeviceChangeRow, details: &ChangeDetails) -> Option<RowOutcome>;
}

/// What becomes of a claimed row. (Most rows end `Done`; boxing it would allocate per row for nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Disposition {
    Done(RowOutcome),
    /// Sent (or still pending): wait for the result of this request.
    Await(String),
    /// Handed back to the workers with its result kept on the row (`CarrierWaits::hand_back_with_result`): the next
    /// claim finishes it.
    HandedBack,
}

/// One device's result, from a callback or a poll. Stored on the row (JSON) while its follow-up steps wait.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct CarrierResult {
    pub success: bool,
    pub reason: Option<String>,
    pub msisdn: Option<String>,
    pub ip_address: Option<String>,
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PollAnswer {
    /// The carrier is still working on the request.
    Pending,
    /// The result of each row the carrier settled, by row id; a row missing here is still pending.
    Results(BTreeMap<i64, CarrierResult>),
}

/// A carrier whose changes complete asynchronously: it groups and sends rows, reads a request's result, and
/// finishes a row once its result is known.
#[async_trait]
pub(crate) trait AsyncCarrier: Send + Sync {
    /// The carrier's name in row reasons ("ThingSpace").
    fn name(&self) -> &'static str;

    /// How long a row waits on a request before a worker polls it: for a carrier with callbacks, their deadline;
    /// for one without, the poll interval.
    fn result_wait(&self, job: &Job) -> Duration {
        job.carrier_result_wait
    }

    /// How long after its first request a row stops waiting and fails with "No result from carrier".
    fn give_up(&self, job: &Job) -> Duration {
        job.carrier_result_give_up
    }

    /// Sends fresh rows; each ends `Done`, or `Await`s the request it was handed over to (`carrier_wait::wait_on`).
    async fn send(&self, job: &Job, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)>;

    /// The result of `request_id` for `rows`, whose result did not come by their deadline.
    async fn poll(&self, job: &Job, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer;

    /// The row's outcome from its carrier result, with the steps that follow a success.
    async fn finish(&self, job: &Job, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome;

    /// Called once rows wait on `request_id`: applies results that came before (a callback faster than the
    /// recording of the request id). Returns how many were applied.
    async fn after_wait(&self, _job: &Job, _request_id: &str) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// After a claim: why the carrier refused our login, when it did (no worker logs in to the account again).
    fn login_refused(&self) -> Option<String> {
        None
    }
}
