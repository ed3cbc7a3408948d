//! Small in-memory fakes of the ports for the engine's unit tests: a store that keeps what the worker and the
//! processors touch in vectors (every other method says it is not faked), a queue and a notifier that record,
//! a Control Center that counts its edits, and a `Job` built over them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::request::ChangeDetails;
use domain::rules::{CarrierRatePlan, DeviceRecord, DeviceStatusDef, ImeiRange};
use domain::{BulkChangeRequestWire, BulkStatus, Integration, PortalType, RowStatus};

use crate::carrier::Carriers;
use crate::carrier::control_center::{CcAuditEntry, CcDevice, CcEdit, ControlCenterApi};
use crate::carrier::pond::PondApi;
use crate::carrier::teal::TealApi;
use crate::carrier::telegence::TelegenceApi;
use crate::carrier::thingspace::ThingSpaceApi;
use crate::job::{Carrier, Job};
use crate::ports::*;
use crate::rate::TokenBucket;
use crate::recorder::Recorder;

pub(crate) const TENANT: i64 = 1;
pub(crate) const SP: i64 = 10;
pub(crate) const WORKER: &str = "worker-under-test";

/// A row as the fake keeps it: the row and who holds its lease until when.
#[derive(Debug, Clone)]
pub(crate) struct MemRow {
    pub row: DeviceChangeRow,
    pub owner: Option<String>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub(crate) struct MemState {
    pub providers: Vec<ServiceProvider>,
    pub statuses: Vec<DeviceStatusDef>,
    pub devices: Vec<DeviceRecord>,
    pub rev_services: Vec<RevServiceRecord>,
    pub bulk: Vec<BulkChange>,
    pub rows: Vec<MemRow>,
    pub logs: Vec<LogEntry>,
    pub notified: HashSet<i64>,
    pub refused_logins: Vec<(i64, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct MemStore(Mutex<MemState>);

fn unfaked(method: &str) -> StoreError {
    StoreError::Corrupt(format!("{method} is not in the in-memory fake"))
}

impl MemStore {
    pub fn state(&self) -> MutexGuard<'_, MemState> {
        match self.0.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A store with one Jasper account of tenant 1 and its statuses.
    pub fn with_jasper_account() -> Arc<Self> {
        let store = Self::default();
        {
            let mut s = store.state();
            s.providers.push(provider(SP, Integration::Jasper));
            let status = |id, status: &str, display: &str| DeviceStatusDef {
                id,
                integration_id: Integration::Jasper.id(),
                status: status.into(),
                display_name: display.into(),
            };
            s.statuses.extend([status(1, "ACTIVATED", "Active"), status(2, "DEACTIVATED", "Deactivated")]);
        }
        Arc::new(store)
    }

    /// A device of tenant 1 at the account, active, with `iccid`.
    pub fn add_device(&self, id: i64, iccid: &str) -> DeviceRecord {
        let device = DeviceRecord {
            id,
            tenant_id: TENANT,
            service_provider_id: SP,
            iccid: iccid.into(),
            imei: None,
            msisdn: None,
            eid: None,
            device_status_id: 1,
            carrier_rate_plan: None,
            communication_plan: None,
            username: None,
            last_usage_date: None,
            data_usage_mb: 0.0,
            rev_customer_id: None,
            customer_rate_plan_id: None,
            customer_rate_pool_id: None,
            customer_data_allocation_mb: None,
            is_active: true,
            is_deleted: false,
        };
        self.state().devices.push(device.clone());
        device
    }

    /// A NEW bulk change of `details` with one PENDING row per device.
    pub fn add_bulk_change(&self, id: i64, details: &ChangeDetails, devices: &[DeviceRecord]) -> BulkChange {
        let request = domain::BulkChangeRequest {
            service_provider_id: SP,
            portal_type: PortalType::M2M,
            devices: vec![String::new()],
            override_validation: false,
            details: details.clone(),
            rollout: Default::default(),
            notify_url: None,
        };
        let bulk = BulkChange {
            id,
            tenant_id: TENANT,
            service_provider_id: SP,
            integration: Integration::Jasper,
            change_type: details.change_type(),
            portal_type: PortalType::M2M,
            status: BulkStatus::New,
            request: BulkChangeRequestWire { devices: Vec::new(), ..request.to_wire() },
            created_by: "test".into(),
            created_at: Utc::now(),
            processed_at: None,
            retry_of: None,
        };
        let mut s = self.state();
        s.bulk.push(bulk.clone());
        for (n, device) in devices.iter().enumerate() {
            s.rows.push(MemRow { row: row(id, n as i64 + 1, device), owner: None, until: None });
        }
        bulk
    }

    pub fn row_status(&self, bulk_change_id: i64, row_id: i64) -> (RowStatus, Option<String>) {
        let s = self.state();
        s.rows
            .iter()
            .find(|r| r.row.bulk_change_id == bulk_change_id && r.row.id == row_id)
            .map_or((RowStatus::Pending, None), |r| (r.row.status, r.row.status_details.clone()))
    }
}

/// A PENDING row of `device` (not claimed: no device read with it).
pub(crate) fn row(bulk_change_id: i64, id: i64, device: &DeviceRecord) -> DeviceChangeRow {
    DeviceChangeRow {
        id,
        bulk_change_id,
        device_id: Some(device.id),
        iccid: device.iccid.clone(),
        msisdn: device.msisdn.clone(),
        status: RowStatus::Pending,
        status_details: None,
        claims: 0,
        processed_date: None,
        carrier_request_id: None,
        carrier_requested_at: None,
        carrier_result: None,
        device: None,
        request: None,
    }
}

pub(crate) fn provider(id: i64, integration: Integration) -> ServiceProvider {
    ServiceProvider {
        id,
        tenant_id: TENANT,
        integration,
        name: format!("{integration} account"),
        base_url: "http://carrier.invalid".into(),
        username: "user".into(),
        secret: Secret::new("key"),
        client_code: None,
        subscription_key: None,
        write_is_enabled: true,
        rate_limit_per_second: 1000.0,
        default_provider_id: None,
        thingspace: None,
        carrier_settings: None,
    }
}

/// A queue that keeps what is sent.
#[derive(Debug, Default)]
pub(crate) struct MemQueue(pub Mutex<Vec<(WorkMessage, Duration)>>);

#[async_trait]
impl Queue for MemQueue {
    async fn send(&self, message: &WorkMessage, delay: Duration) -> Result<(), QueueError> {
        if let Ok(mut sent) = self.0.lock() {
            sent.push((*message, delay));
        }
        Ok(())
    }
    async fn receive(&self, _max: u32, _visibility: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _receipt: &str) -> Result<(), QueueError> {
        Ok(())
    }
}

/// A notifier that keeps what it sends.
#[derive(Debug, Default)]
pub(crate) struct MemNotifier(pub Mutex<Vec<Email>>);

#[async_trait]
impl Notifier for MemNotifier {
    async fn send(&self, email: &Email) -> Result<String, NotifyError> {
        let mut sent = self.0.lock().map_err(|_| NotifyError("poisoned".into()))?;
        sent.push(email.clone());
        Ok(format!("mem:{}", sent.len()))
    }
}

/// A Control Center whose edits take and are counted per ICCID.
#[derive(Debug, Default)]
pub(crate) struct CountingCc(pub Mutex<Vec<String>>);

#[async_trait]
impl ControlCenterApi for CountingCc {
    async fn get_device(&self, _iccid: &domain::Iccid) -> Result<(CcDevice, CallRecord), CarrierFailure> {
        Ok((CcDevice::default(), CallRecord::default()))
    }
    async fn edit_device(&self, iccid: &domain::Iccid, _edit: &CcEdit) -> Result<CallRecord, CarrierFailure> {
        if let Ok(mut edits) = self.0.lock() {
            edits.push(iccid.to_string());
        }
        Ok(CallRecord::default())
    }
    async fn audit_trail(&self, _iccid: &domain::Iccid) -> Result<(Vec<CcAuditEntry>, CallRecord), CarrierFailure> {
        Ok((Vec::new(), CallRecord::default()))
    }
}

/// Builds only a Control Center client (the counting one); any other carrier is an error.
pub(crate) struct OnlyControlCenter(pub Arc<CountingCc>);

impl Carriers for OnlyControlCenter {
    fn control_center(&self, _sp: &ServiceProvider, _limiter: Arc<TokenBucket>) -> Arc<dyn ControlCenterApi> {
        self.0.clone()
    }
    fn rev_io(&self, _sp: &ServiceProvider, _limiter: Arc<TokenBucket>) -> Arc<dyn RevIoApi> {
        unreachable!("no Rev.io account in these tests")
    }
    fn thingspace(
        &self,
        _sp: &ServiceProvider,
        _limiter: Arc<TokenBucket>,
        _activations: Arc<TokenBucket>,
    ) -> Result<Arc<dyn ThingSpaceApi>, String> {
        Err("no ThingSpace in this fake".into())
    }
    fn telegence(&self, _sp: &ServiceProvider, _limiter: Arc<TokenBucket>) -> Result<Arc<dyn TelegenceApi>, String> {
        Err("no Telegence in this fake".into())
    }
    fn pond(&self, _sp: &ServiceProvider, _limiter: Arc<TokenBucket>) -> Result<Arc<dyn PondApi>, String> {
        Err("no Pond in this fake".into())
    }
    fn teal(&self, _sp: &ServiceProvider, _limiter: Arc<TokenBucket>) -> Result<Arc<dyn TealApi>, String> {
        Err("no Teal in this fake".into())
    }
}

/// A carrier that takes no change of its own (every row goes to `change`).
pub(crate) struct NoCarrierStep;

#[async_trait]
impl Carrier for NoCarrierStep {
    async fn process_row(&self, _job: &Job, _row: &DeviceChangeRow, _details: &ChangeDetails) -> Option<RowOutcome> {
        None
    }
}

/// A job of `bulk` at the store's account, its carrier taking no change of its own, writing one entry at a time.
pub(crate) fn job(store: Arc<MemStore>, bulk: BulkChange, details: ChangeDetails) -> Job {
    let sp = provider(SP, Integration::Jasper);
    let statuses = store.state().statuses.clone();
    Job {
        pace: None,
        recorder: Arc::new(Recorder::new(store.clone(), 1)),
        bulk,
        sp,
        statuses,
        rate_plans: Vec::new(),
        carrier: Arc::new(NoCarrierStep),
        rev_io: None,
        devices: store.clone(),
        rev_services: store.clone(),
        waits: store.clone(),
        callbacks: store,
        clock: Arc::new(SystemClock),
        details,
        override_validation: false,
        queue: Arc::new(MemQueue::default()),
        worker_id: WORKER.into(),
        carrier_result_wait: Duration::from_secs(60),
        carrier_result_give_up: Duration::from_secs(3600),
        carrier_poll_interval: Duration::from_secs(60),
        teal_poll_interval: Duration::from_secs(30),
        teal_give_up: Duration::from_secs(3600),
        teal_callback_url: None,
        lease: Duration::from_secs(30),
    }
}

#[async_trait]
impl Store for MemStore {}

#[async_trait]
impl ReferenceData for MemStore {
    async fn service_provider(&self, tenant_id: i64, id: i64) -> StoreResult<Option<ServiceProvider>> {
        Ok(self.state().providers.iter().find(|p| p.id == id && p.tenant_id == tenant_id).cloned())
    }

    async fn service_provider_for(
        &self,
        tenant_id: i64,
        integration: Integration,
    ) -> StoreResult<Option<ServiceProvider>> {
        Ok(self.state().providers.iter().find(|p| p.tenant_id == tenant_id && p.integration == integration).cloned())
    }

    async fn device_statuses(&self, integration: Integration) -> StoreResult<Vec<DeviceStatusDef>> {
        Ok(self.state().statuses.iter().filter(|s| s.integration_id == integration.id()).cloned().collect())
    }

    async fn carrier_rate_plans(&self, tenant_id: i64, service_provider_id: i64) -> StoreResult<Vec<CarrierRatePlan>> {
        let _ = (tenant_id, service_provider_id);
        Ok(Vec::new())
    }

    async fn imei_ranges(&self) -> StoreResult<Vec<ImeiRange>> {
        Err(unfaked("imei_ranges"))
    }

    async fn rev_customer(&self, _tenant_id: i64, _rev_customer_id: &str) -> StoreResult<Option<RevCustomer>> {
        Err(unfaked("rev_customer"))
    }

    async fn rev_customers(&self, _tenant_id: i64) -> StoreResult<Vec<RevCustomer>> {
        Err(unfaked("rev_customers"))
    }

    async fn customer_rate_plan(&self, _tenant_id: i64, _id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        Err(unfaked("customer_rate_plan"))
    }

    async fn customer_rate_pool(&self, _tenant_id: i64, _id: i64) -> StoreResult<Option<CustomerPlanRef>> {
        Err(unfaked("customer_rate_pool"))
    }

    async fn providers_of(&self, _integration: Integration) -> StoreResult<Vec<ServiceProvider>> {
        Err(unfaked("providers_of"))
    }
}

#[async_trait]
impl Devices for MemStore {
    async fn devices_by_iccid(&self, _tenant_id: i64, _iccids: &[String]) -> StoreResult<Vec<DeviceRecord>> {
        Err(unfaked("devices_by_iccid"))
    }

    async fn device(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<DeviceRecord>> {
        Ok(self.state().devices.iter().find(|d| d.id == device_id && d.tenant_id == tenant_id).cloned())
    }

    async fn list_devices(
        &self,
        _tenant_id: i64,
        _filter: &DeviceFilter,
        _after_id: i64,
        _offset: u32,
        _limit: u32,
    ) -> StoreResult<Vec<DeviceListItem>> {
        Err(unfaked("list_devices"))
    }

    async fn count_devices(&self, _tenant_id: i64, _filter: &DeviceFilter) -> StoreResult<i64> {
        Err(unfaked("count_devices"))
    }

    async fn device_history(
        &self,
        _tenant_id: i64,
        _device_id: i64,
        _limit: u32,
    ) -> StoreResult<Vec<DeviceHistoryEntry>> {
        Err(unfaked("device_history"))
    }
}

#[async_trait]
impl RevServices for MemStore {
    async fn active_rev_service(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<RevServiceRecord>> {
        Ok(self
            .state()
            .rev_services
            .iter()
            .find(|s| s.device_id == device_id && s.is_active)
            .cloned()
            .filter(|_| tenant_id > 0))
    }

    async fn add_rev_service(&self, _tenant_id: i64, _service: &RevServiceRecord) -> StoreResult<()> {
        Err(unfaked("add_rev_service"))
    }

    async fn begin_rev_service(
        &self,
        _tenant_id: i64,
        _device_id: i64,
        _rev_customer_id: &str,
        _bulk_change_id: i64,
        _row_id: i64,
        _now: DateTime<Utc>,
    ) -> StoreResult<RevServiceStart> {
        Err(unfaked("begin_rev_service"))
    }

    async fn abandon_rev_service(&self, _device_id: i64, _bulk_change_id: i64, _row_id: i64) -> StoreResult<()> {
        Err(unfaked("abandon_rev_service"))
    }

    async fn keep_before_cost_centers(
        &self,
        _bulk_change_id: i64,
        _row_id: i64,
        _worker: &str,
        _cost_centers: &CostCenters,
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn close_rev_service(
        &self,
        _tenant_id: i64,
        _device_id: i64,
        _rev_service_id: i64,
        _now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Err(unfaked("close_rev_service"))
    }
}

#[async_trait]
impl BulkChanges for MemStore {
    async fn create_bulk_change(&self, _change: &NewBulkChange, _rows: &[NewRow]) -> StoreResult<CreatedBulkChange> {
        Err(unfaked("create_bulk_change"))
    }

    async fn open_changes(&self, _tenant_id: i64, _device_ids: &[i64]) -> StoreResult<Vec<OpenChange>> {
        Err(unfaked("open_changes"))
    }

    async fn retry_candidates(&self, _tenant_id: i64, _bulk_change_id: i64) -> StoreResult<Vec<String>> {
        Err(unfaked("retry_candidates"))
    }

    async fn cancel_rows(
        &self,
        _tenant_id: i64,
        _bulk_change_id: i64,
        _by: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        Err(unfaked("cancel_rows"))
    }

    async fn mark_processing(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        let _ = now;
        if let Some(b) = self.state().bulk.iter_mut().find(|b| b.id == bulk_change_id && b.status == BulkStatus::New) {
            b.status = BulkStatus::Processing;
        }
        Ok(())
    }

    async fn pending_rows(&self, bulk_change_id: i64) -> StoreResult<u64> {
        Ok(self
            .state()
            .rows
            .iter()
            .filter(|r| r.row.bulk_change_id == bulk_change_id && r.row.status == RowStatus::Pending)
            .count() as u64)
    }

    async fn finalize_bulk_change(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<Option<BulkStatus>> {
        let mut s = self.state();
        let statuses: Vec<RowStatus> =
            s.rows.iter().filter(|r| r.row.bulk_change_id == bulk_change_id).map(|r| r.row.status).collect();
        if statuses.iter().any(|st| !st.is_final()) {
            return Ok(None);
        }
        let status = domain::bulk_status_from_rows(statuses);
        if let (Some(status), Some(b)) = (status, s.bulk.iter_mut().find(|b| b.id == bulk_change_id)) {
            b.status = status;
            b.processed_at = Some(now);
        }
        Ok(status)
    }

    async fn claim_notification(
        &self,
        bulk_change_id: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _ = (now, until);
        Ok(self.state().notified.insert(bulk_change_id))
    }

    async fn notification_sent(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        let _ = (bulk_change_id, now);
        Ok(())
    }

    async fn release_notification(&self, bulk_change_id: i64) -> StoreResult<()> {
        self.state().notified.remove(&bulk_change_id);
        Ok(())
    }
}

#[async_trait]
impl Idempotency for MemStore {
    async fn begin_idempotent(
        &self,
        _tenant_id: i64,
        _key: &str,
        _request_hash: &str,
        _now: DateTime<Utc>,
        _stale_before: DateTime<Utc>,
        _expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart> {
        Err(unfaked("begin_idempotent"))
    }

    async fn finish_idempotent(&self, _tenant_id: i64, _key: &str, _status: u16, _body: &str) -> StoreResult<()> {
        Err(unfaked("finish_idempotent"))
    }

    async fn abandon_idempotent(&self, _tenant_id: i64, _key: &str) -> StoreResult<()> {
        Err(unfaked("abandon_idempotent"))
    }

    async fn purge_idempotency_keys(&self, _before: DateTime<Utc>) -> StoreResult<u64> {
        Err(unfaked("purge_idempotency_keys"))
    }
}

#[async_trait]
impl Pace for MemStore {
    async fn reserve_rate_slots(
        &self,
        _service_provider_id: i64,
        _bucket: &str,
        _interval: Duration,
        _count: u32,
        _horizon: Duration,
        _now: DateTime<Utc>,
    ) -> StoreResult<RateSlots> {
        Err(unfaked("reserve_rate_slots"))
    }
}

/// No rollout settings in these tests: a bulk change is never paused nor aborted, and its progress is its rows'.
#[async_trait]
impl Rollouts for MemStore {
    async fn rollout_progress(&self, bulk_change_id: i64) -> StoreResult<RolloutProgress> {
        let s = self.state();
        let rows: Vec<&DeviceChangeRow> =
            s.rows.iter().map(|r| &r.row).filter(|r| r.bulk_change_id == bulk_change_id && r.claims > 0).collect();
        let status = s.bulk.iter().find(|b| b.id == bulk_change_id).map_or(BulkStatus::New, |b| b.status);
        Ok(RolloutProgress {
            status,
            hold: None,
            canary_passed: false,
            aborted_reason: None,
            started: rows.len() as u64,
            finished: rows.iter().filter(|r| r.status.is_final()).count() as u64,
            failed: rows.iter().filter(|r| matches!(r.status, RowStatus::ApiFailed | RowStatus::Error)).count() as u64,
        })
    }
    async fn pause_bulk_change(
        &self,
        _tenant_id: Option<i64>,
        _bulk_change_id: i64,
        _reason: &str,
        _by: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>> {
        Err(unfaked("pause_bulk_change"))
    }
    async fn resume_bulk_change(&self, _tenant: Option<i64>, _id: i64, _now: DateTime<Utc>) -> StoreResult<bool> {
        Err(unfaked("resume_bulk_change"))
    }
    async fn pass_canary(&self, _bulk_change_id: i64, _now: DateTime<Utc>) -> StoreResult<()> {
        Err(unfaked("pass_canary"))
    }
    async fn abort_bulk_change(&self, _id: i64, _reason: &str, _now: DateTime<Utc>) -> StoreResult<bool> {
        Err(unfaked("abort_bulk_change"))
    }
}

/// No webhook endpoints in these tests: nothing is ever due.
#[async_trait]
impl Webhooks for MemStore {
    async fn add_webhook(
        &self,
        _tenant_id: i64,
        _url: &str,
        _events: &[String],
        _secret: &str,
        _created_by: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<i64> {
        Err(unfaked("add_webhook"))
    }
    async fn webhooks(&self, _tenant_id: i64) -> StoreResult<Vec<Webhook>> {
        Ok(Vec::new())
    }
    async fn delete_webhook(&self, _tenant_id: i64, _id: i64, _now: DateTime<Utc>) -> StoreResult<bool> {
        Err(unfaked("delete_webhook"))
    }
    async fn webhook_deliveries(&self, _tenant: i64, _webhook: i64, _limit: u32) -> StoreResult<Vec<WebhookDelivery>> {
        Ok(Vec::new())
    }
    async fn claim_deliveries(
        &self,
        _worker: &str,
        _limit: u32,
        _until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<DueDelivery>> {
        Ok(Vec::new())
    }
    async fn record_delivery(
        &self,
        _id: i64,
        _worker: &str,
        _body: &str,
        _result: &DeliveryResult,
        _now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Err(unfaked("record_delivery"))
    }
}

#[async_trait]
impl Leases for MemStore {
    async fn claim_rows(
        &self,
        bulk_change_id: i64,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let mut s = self.state();
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let devices = s.devices.clone();
        let mut claimed = Vec::new();
        for r in s.rows.iter_mut().filter(|r| r.row.bulk_change_id == bulk_change_id) {
            if claimed.len() >= limit as usize {
                break;
            }
            let expired = r.row.status == RowStatus::Processing && r.until.is_some_and(|u| u <= now);
            if r.row.status != RowStatus::Pending && !expired {
                continue;
            }
            r.row.status = RowStatus::Processing;
            r.row.claims += 1;
            r.owner = Some(worker.to_string());
            r.until = Some(until);
            let mut row = r.row.clone();
            row.device = row.device_id.and_then(|id| devices.iter().find(|d| d.id == id).cloned());
            claimed.push(row);
        }
        Ok(claimed)
    }

    async fn renew_leases(&self, bulk_change_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<u64> {
        let mut s = self.state();
        let mut held = 0;
        for r in
            s.rows.iter_mut().filter(|r| r.row.bulk_change_id == bulk_change_id && r.owner.as_deref() == Some(worker))
        {
            r.until = Some(until);
            held += 1;
        }
        Ok(held)
    }

    async fn next_lease_expiry(&self, bulk_change_id: i64) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self
            .state()
            .rows
            .iter()
            .filter(|r| r.row.bulk_change_id == bulk_change_id && !r.row.status.is_final())
            .filter_map(|r| r.until)
            .min())
    }

    async fn release_due_scheduled_rows(&self, _now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        Err(unfaked("release_due_scheduled_rows"))
    }

    async fn stranded_bulk_changes(&self, _before: DateTime<Utc>, _now: DateTime<Utc>) -> StoreResult<Vec<i64>> {
        Err(unfaked("stranded_bulk_changes"))
    }
}

#[async_trait]
impl Outcomes for MemStore {
    async fn complete_row(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        outcome: &RowOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _ = tenant_id;
        let mut s = self.state();
        let Some(r) = s.rows.iter_mut().find(|r| r.row.bulk_change_id == bulk_change_id && r.row.id == row_id) else {
            return Ok(false);
        };
        if r.row.status.is_final() || r.owner.as_deref() != Some(worker) {
            return Ok(false);
        }
        r.row.status = outcome.status;
        r.row.status_details = Some(outcome.details.clone());
        r.row.processed_date = Some(now);
        r.owner = None;
        let device_id = r.row.device_id;
        if let Some(d) = device_id.and_then(|id| s.devices.iter_mut().find(|d| d.id == id)) {
            let update = &outcome.device_update;
            if let Some(username) = &update.username {
                d.username = Some(username.clone());
            }
            if let Some(status) = update.device_status_id {
                d.device_status_id = status;
            }
            if update.archive {
                d.is_active = false;
                d.is_deleted = true;
            }
        }
        Ok(true)
    }

    async fn append_log(&self, entry: &LogEntry) -> StoreResult<()> {
        self.state().logs.push(entry.clone());
        Ok(())
    }
}

#[async_trait]
impl Reads for MemStore {
    async fn applied_rows(&self, _tenant_id: i64, _bulk_change_id: i64) -> StoreResult<Vec<AppliedRow>> {
        Err(unfaked("applied_rows"))
    }
    async fn bulk_change(&self, tenant_id: Option<i64>, id: i64) -> StoreResult<Option<BulkChange>> {
        Ok(self.state().bulk.iter().find(|b| b.id == id && tenant_id.is_none_or(|t| t == b.tenant_id)).cloned())
    }

    async fn list_bulk_changes(
        &self,
        _tenant_id: i64,
        _filter: &BulkChangeFilter,
        _page: u32,
        _page_size: u32,
    ) -> StoreResult<(Vec<BulkChange>, i64)> {
        Err(unfaked("list_bulk_changes"))
    }

    async fn row_counts(&self, _tenant_id: i64, _bulk_change_id: i64) -> StoreResult<Vec<StatusCount>> {
        Err(unfaked("row_counts"))
    }

    async fn rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        page: u32,
        page_size: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        let _ = tenant_id;
        let skip = (page.max(1) as usize - 1) * page_size as usize;
        Ok(self
            .state()
            .rows
            .iter()
            .filter(|r| r.row.bulk_change_id == bulk_change_id && status.is_none_or(|s| s == r.row.status))
            .skip(skip)
            .take(page_size as usize)
            .map(|r| r.row.clone())
            .collect())
    }

    async fn rows_after(
        &self,
        _tenant_id: i64,
        _bulk_change_id: i64,
        _status: Option<RowStatus>,
        _after_id: i64,
        _limit: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        Err(unfaked("rows_after"))
    }

    async fn logs(&self, _tenant_id: i64, _bulk_change_id: i64) -> StoreResult<Vec<LogEntry>> {
        Err(unfaked("logs"))
    }
}

#[async_trait]
impl CarrierWaits for MemStore {
    async fn await_carrier(
        &self,
        bulk_change_id: i64,
        row_ids: &[i64],
        worker: &str,
        request_id: &str,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut s = self.state();
        let owner = format!("carrier:{request_id}");
        let mut handed = 0;
        for r in s.rows.iter_mut().filter(|r| r.row.bulk_change_id == bulk_change_id && row_ids.contains(&r.row.id)) {
            if r.row.status.is_final()
                || !(r.owner.as_deref() == Some(worker) || r.owner.as_deref() == Some(owner.as_str()))
            {
                continue;
            }
            r.row.carrier_request_id = Some(request_id.to_string());
            r.row.carrier_requested_at.get_or_insert(now);
            r.owner = Some(owner.clone());
            r.until = Some(deadline);
            handed += 1;
        }
        Ok(handed)
    }

    async fn carrier_request_rows(
        &self,
        _service_provider_ids: &[i64],
        _request_id: &str,
        _iccid: Option<&str>,
    ) -> StoreResult<Vec<DeviceChangeRow>> {
        Err(unfaked("carrier_request_rows"))
    }

    async fn hand_back_with_result(
        &self,
        _bulk_change_id: i64,
        _row_id: i64,
        _owner: &str,
        _result: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Err(unfaked("hand_back_with_result"))
    }

    async fn wake_carrier_request(
        &self,
        _service_provider_id: i64,
        _request_id: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        Err(unfaked("wake_carrier_request"))
    }

    async fn record_callback(&self, _callback: &CallbackRecord) -> StoreResult<()> {
        Err(unfaked("record_callback"))
    }

    async fn unmatched_callbacks(
        &self,
        _service_provider_id: i64,
        _request_id: &str,
    ) -> StoreResult<Vec<CallbackRecord>> {
        Err(unfaked("unmatched_callbacks"))
    }

    async fn purge_unmatched_callbacks(&self, _before: DateTime<Utc>) -> StoreResult<u64> {
        Err(unfaked("purge_unmatched_callbacks"))
    }

    async fn refuse_login(&self, service_provider_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let _ = now;
        self.state().refused_logins.push((service_provider_id, reason.to_string()));
        Ok(())
    }
}
