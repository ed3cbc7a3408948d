//! What a processor works with: the bulk change, its service provider and reference data, the carrier clients,
//! the store and the clock, loaded once per message by the worker (`Worker::load_job`). Processors import this
//! module, not the worker that calls them.

use std::sync::Arc;
use std::time::Duration;

use domain::request::ChangeDetails;
use domain::rules::{CarrierRatePlan, DeviceStatusDef};
use tracing::error;

use crate::audit;
use crate::ports::{
    BulkChange, CallRecord, Clock, ControlCenterApi, DeviceChangeRow, PondApi, Queue, RevIoApi, ServiceProvider, Store,
    TealApi, TelegenceApi, ThingSpaceApi,
};
use crate::recorder::Recorder;

/// Everything a row's processing needs, loaded once per message.
pub(crate) struct Job {
    pub bulk: BulkChange,
    pub sp: ServiceProvider,
    pub statuses: Vec<DeviceStatusDef>,
    pub rate_plans: Vec<CarrierRatePlan>,
    pub control_center: Arc<dyn ControlCenterApi>,
    pub rev_io: Option<Arc<dyn RevIoApi>>,
    /// ThingSpace accounts only.
    pub thingspace: Option<Arc<dyn ThingSpaceApi>>,
    /// Telegence accounts only.
    pub telegence: Option<Arc<dyn TelegenceApi>>,
    /// Pond accounts only.
    pub pond: Option<Arc<dyn PondApi>>,
    /// Teal accounts only.
    pub teal: Option<Arc<dyn TealApi>>,
    pub store: Arc<dyn Store>,
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
