//! The store port, split by concern: each caller takes the narrowest trait it needs; `Store` is all of them
//! (what an adapter implements, and what a composition root hands around).

use super::*;

/// Reference data a request is checked against: service providers, statuses, plans, IMEI ranges, Rev.io customers.
#[async_trait]
pub trait ReferenceData: Send + Sync {
    async fn service_provider(&self, tenant_id: i64, id: i64) -> StoreResult<Option<ServiceProvider>>;
    /// The tenant's account at an integration (Rev.io billing is one per tenant).
    async fn service_provider_for(
        &self,
        tenant_id: i64,
        integration: Integration,
    ) -> StoreResult<Option<ServiceProvider>>;
    async fn device_statuses(&self, integration: Integration) -> StoreResult<Vec<DeviceStatusDef>>;
    async fn carrier_rate_plans(&self, tenant_id: i64, service_provider_id: i64) -> StoreResult<Vec<CarrierRatePlan>>;
    /// The active IMEI ranges of device models (reference data shared by every tenant).
    async fn imei_ranges(&self) -> StoreResult<Vec<ImeiRange>>;
    async fn rev_customer(&self, tenant_id: i64, rev_customer_id: &str) -> StoreResult<Option<RevCustomer>>;
    /// The tenant's Rev.io customers.
    async fn rev_customers(&self, tenant_id: i64) -> StoreResult<Vec<RevCustomer>>;
    async fn customer_rate_plan(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>>;
    async fn customer_rate_pool(&self, tenant_id: i64, id: i64) -> StoreResult<Option<CustomerPlanRef>>;
    /// Every active service provider of `integration`, of every tenant (a callback finds its account).
    async fn providers_of(&self, integration: Integration) -> StoreResult<Vec<ServiceProvider>>;
    /// Every ThingSpace service provider of every tenant (the callback endpoint finds the account by its
    /// callback credentials).
    async fn thingspace_providers(&self) -> StoreResult<Vec<ServiceProvider>> {
        self.providers_of(Integration::ThingSpace).await
    }
}

/// A tenant's devices: by ICCID or id, listed and counted for exports, and their change history.
#[async_trait]
pub trait Devices: Send + Sync {
    async fn devices_by_iccid(&self, tenant_id: i64, iccids: &[String]) -> StoreResult<Vec<DeviceRecord>>;
    async fn device(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<DeviceRecord>>;
    /// The tenant's live devices matching `filter`, by ascending id: those after `after_id`, skipping `offset`.
    /// Keyset paging (`after_id`) streams an export; `offset` serves page numbers.
    async fn list_devices(
        &self,
        tenant_id: i64,
        filter: &DeviceFilter,
        after_id: i64,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<DeviceListItem>>;
    async fn count_devices(&self, tenant_id: i64, filter: &DeviceFilter) -> StoreResult<i64>;
    /// A device's change rows, newest first, with their bulk change's type and author.
    async fn device_history(&self, tenant_id: i64, device_id: i64, limit: u32) -> StoreResult<Vec<DeviceHistoryEntry>>;
}

/// A device's Rev.io service line: at most one active, and one creator at a time.
#[async_trait]
pub trait RevServices: Send + Sync {
    async fn active_rev_service(&self, tenant_id: i64, device_id: i64) -> StoreResult<Option<RevServiceRecord>>;
    /// Records a device's Rev.io service line and ends its creation (`begin_rev_service`). A device has at most
    /// one active line: recording a second one with another id is `StoreError::Conflict`.
    async fn add_rev_service(&self, tenant_id: i64, service: &RevServiceRecord) -> StoreResult<()>;
    /// Before creating a Rev.io service line for a device on behalf of a row: the active line if there is one,
    /// else the right to create it (remembered until `add_rev_service` or `abandon_rev_service`), or `Busy` while
    /// another open row holds that right.
    async fn begin_rev_service(
        &self,
        tenant_id: i64,
        device_id: i64,
        rev_customer_id: &str,
        bulk_change_id: i64,
        row_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<RevServiceStart>;
    /// Gives the right to create a device's line back when Rev.io refused it (nothing was created).
    async fn abandon_rev_service(&self, device_id: i64, bulk_change_id: i64, row_id: i64) -> StoreResult<()>;
    /// Keeps what a username change's cost centers were on the device's Rev.io service before the row sends the
    /// new ones (an undo sets them back), while `worker` holds the row; the first value kept stays (a row taken
    /// over after its cost centers were sent does not keep the new ones as the old).
    async fn keep_before_cost_centers(
        &self,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        cost_centers: &CostCenters,
    ) -> StoreResult<()>;
    /// Records that the device's active line `rev_service_id` was closed on Rev.io (an undo of its assignment):
    /// true when it was the active line and is closed now, false when it was not active (closed already).
    async fn close_rev_service(
        &self,
        tenant_id: i64,
        device_id: i64,
        rev_service_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

/// A bulk change's life: recorded with its rows, started, cancelled, finalized, its e-mail claimed.
#[async_trait]
pub trait BulkChanges: Send + Sync {
    /// Records the bulk change and all its rows in one transaction. A valid row whose device has an open row
    /// holding one of `change.attributes` in another bulk change becomes ERROR naming it (the database decides:
    /// two racing creations cannot both hold a device). With `retry_of`, a second open retry of the same bulk
    /// change is `StoreError::Conflict`.
    async fn create_bulk_change(&self, change: &NewBulkChange, rows: &[NewRow]) -> StoreResult<CreatedBulkChange>;
    /// The open changes of these devices (for intake and the dry run; creation decides again).
    async fn open_changes(&self, tenant_id: i64, device_ids: &[i64]) -> StoreResult<Vec<OpenChange>>;
    /// The ICCIDs a retry of a bulk change takes: its API_FAILED and ERROR rows that no later retry of it holds.
    async fn retry_candidates(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<String>>;
    /// Cancels the rows not started (PENDING, SCHEDULED) of a bulk change, each keeping `details` (as the user reads
    /// it: `domain::cancelled_by`); returns how many.
    async fn cancel_rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        details: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// NEW → PROCESSING; never touches a final bulk change.
    async fn mark_processing(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()>;
    /// How many rows of a bulk change are PENDING (work a helper could take).
    async fn pending_rows(&self, bulk_change_id: i64) -> StoreResult<u64>;
    /// Sets the bulk status from its rows when every row is final (or only scheduled ones remain).
    /// Returns the status it has now, or None while rows are open.
    async fn finalize_bulk_change(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<Option<BulkStatus>>;
    /// Takes the right to send the failure e-mail of a bulk change until `until`: false once it is sent, or while
    /// another sender holds it. A lease, not a flag: a sender that dies before `notification_sent` leaves the
    /// e-mail to the next one (the scheduler queues the bulk change again, see `stranded_bulk_changes`).
    async fn claim_notification(
        &self,
        bulk_change_id: i64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The e-mail went: never again.
    async fn notification_sent(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()>;
    /// Gives the right back when sending failed, so the next sender can try at once.
    async fn release_notification(&self, bulk_change_id: i64) -> StoreResult<()>;
}

/// `Idempotency-Key`s: reserved, answered, freed, purged.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Reserves an `Idempotency-Key` of a tenant for a request (`request_hash`), or says what became of it.
    /// A key used before `expired_before` counts as unused; a reservation without a bulk change or an answer
    /// made before `stale_before` (its request died) is taken over.
    async fn begin_idempotent(
        &self,
        tenant_id: i64,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        expired_before: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart>;
    /// Keeps the answer of a reserved key for its replays.
    async fn finish_idempotent(&self, tenant_id: i64, key: &str, status: u16, body: &str) -> StoreResult<()>;
    /// Frees a reserved key whose request failed before writing anything (a 5xx), so the client can retry.
    async fn abandon_idempotent(&self, tenant_id: i64, key: &str) -> StoreResult<()>;
    /// Deletes keys used before `before` (24 h); returns how many.
    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// A carrier account's pace, shared by every worker of every instance.
#[async_trait]
pub trait Pace: Send + Sync {
    /// Reserves up to `count` call slots of a carrier account's pace (`bucket`: "calls", "activations"), shared by
    /// every worker of every instance: one call every `interval` for all of them together, never a burst. Slots
    /// are booked at most `horizon` ahead of `now`; beyond it nothing is granted and `first` says when the next
    /// free slot is. Decided in one transaction, so two workers never get the same slot.
    async fn reserve_rate_slots(
        &self,
        service_provider_id: i64,
        bucket: &str,
        interval: Duration,
        count: u32,
        horizon: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<RateSlots>;
}

/// Rows a worker holds: claimed with a lease, renewed, and the sweeps that bring back work nobody holds.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Claims up to `limit` rows that are PROCESSING with an expired lease (their worker died: they have waited
    /// longest), then PENDING, each in Id order, for `worker`.
    async fn claim_rows(
        &self,
        bulk_change_id: i64,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DeviceChangeRow>>;
    /// Extends the leases `worker` holds on rows of a bulk change (a heartbeat while it works them); returns how
    /// many it still holds.
    async fn renew_leases(&self, bulk_change_id: i64, worker: &str, until: DateTime<Utc>) -> StoreResult<u64>;
    /// When the earliest lease on an open row of the bulk change ends (a worker's or a carrier wait's).
    async fn next_lease_expiry(&self, bulk_change_id: i64) -> StoreResult<Option<DateTime<Utc>>>;
    /// Turns SCHEDULED rows whose date has come into PENDING (every one of them, in every tenant) and returns
    /// the bulk changes that now have work, so the caller can queue them.
    async fn release_due_scheduled_rows(&self, now: DateTime<Utc>) -> StoreResult<Vec<i64>>;
    /// Bulk changes whose work nobody holds: NEW or PROCESSING with no live lease, untouched since `before`; and final
    /// ones, finished since `now` minus a day, that still owe their failure e-mail (failed rows, not sent, no live
    /// claim): a worker that died between the final status and the e-mail left it to whoever takes the message.
    async fn stranded_bulk_changes(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<Vec<i64>>;
}

/// What a lease holder writes: a row's final outcome (with its device update) and the audit trail.
#[async_trait]
pub trait Outcomes: Send + Sync {
    /// Writes a row's final outcome and its device update, only while `worker` still holds the row's lease
    /// and the row is not final. Returns false (and changes nothing) otherwise.
    async fn complete_row(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        row_id: i64,
        worker: &str,
        outcome: &RowOutcome,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Several rows' outcomes in one transaction, each under `complete_row`'s rules; per row, whether it was
    /// recorded. A failure records none of them. Default: one `complete_row` after the other.
    async fn complete_rows(&self, rows: &[Completion]) -> StoreResult<Vec<bool>> {
        let mut done = Vec::with_capacity(rows.len());
        for c in rows {
            done.push(self.complete_row(c.tenant_id, c.bulk_change_id, c.row_id, &c.worker, &c.outcome, c.now).await?);
        }
        Ok(done)
    }
    async fn append_log(&self, entry: &LogEntry) -> StoreResult<()>;
    /// Several audit entries in one transaction. Default: one `append_log` after the other.
    async fn append_logs(&self, entries: &[LogEntry]) -> StoreResult<()> {
        for e in entries {
            self.append_log(e).await?;
        }
        Ok(())
    }
}

/// What the API shows of a bulk change: the bulk change, its rows, counts and audit entries.
#[async_trait]
pub trait Reads: Send + Sync {
    async fn bulk_change(&self, tenant_id: Option<i64>, id: i64) -> StoreResult<Option<BulkChange>>;
    /// The tenant's bulk change's PROCESSED rows, by id, each with what its device was before the row changed it
    /// and what it is now (an undo's plan).
    async fn applied_rows(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<AppliedRow>>;
    async fn list_bulk_changes(
        &self,
        tenant_id: i64,
        filter: &BulkChangeFilter,
        page: u32,
        page_size: u32,
    ) -> StoreResult<(Vec<BulkChange>, i64)>;
    async fn row_counts(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<StatusCount>>;
    async fn rows(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        page: u32,
        page_size: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>>;
    /// Up to `limit` of a bulk change's rows (in `status`, if given) with an Id above `after_id`, in Id order: a
    /// reader that pages this way never skips nor repeats a row while rows change status.
    async fn rows_after(
        &self,
        tenant_id: i64,
        bulk_change_id: i64,
        status: Option<RowStatus>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<DeviceChangeRow>>;
    async fn logs(&self, tenant_id: i64, bulk_change_id: i64) -> StoreResult<Vec<LogEntry>>;
}

/// Rows waiting on an asynchronous carrier request, and the callbacks that settle or wake them.
#[async_trait]
pub trait CarrierWaits: Send + Sync {
    /// Hands rows `worker` holds over to an asynchronous carrier request: they stay PROCESSING with
    /// `CarrierRequestId`, the lease owner `carrier:{request_id}` and the lease until `deadline`, so a callback
    /// can complete them and, past the deadline, a worker reclaims them to poll. `CarrierRequestedAt` keeps the
    /// first request's time. Returns how many rows were handed over.
    /// When `worker` is the request's own holder (`carrier:{request_id}`), the wait can only get shorter: a
    /// callback that woke the rows meanwhile is kept.
    async fn await_carrier(
        &self,
        bulk_change_id: i64,
        row_ids: &[i64],
        worker: &str,
        request_id: &str,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Every row (any status) that waits or waited on carrier request `request_id`, in bulk changes of these
    /// service providers; only the device `iccid`'s when given (a callback names one device).
    async fn carrier_request_rows(
        &self,
        service_provider_ids: &[i64],
        request_id: &str,
        iccid: Option<&str>,
    ) -> StoreResult<Vec<DeviceChangeRow>>;
    /// Keeps the carrier's result on a row waiting for it (held by `owner`, `carrier:{requestId}`) and hands the
    /// row back to the workers at once (its lease ends `now`), for the steps after the carrier. False (nothing
    /// changed) when the row was not waiting under `owner`.
    async fn hand_back_with_result(
        &self,
        bulk_change_id: i64,
        row_id: i64,
        owner: &str,
        result: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Wakes the rows of `service_provider_id` that wait on carrier request `request_id` (a callback said its
    /// result is ready): their hold ends `now`, so the next worker polls the request. Returns the bulk changes
    /// woken; none when no row waits (already settled, or being polled).
    async fn wake_carrier_request(
        &self,
        service_provider_id: i64,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>>;
    /// Appends a callback to `ThingSpaceCallBackResponseLog`.
    async fn record_callback(&self, callback: &CallbackRecord) -> StoreResult<()>;
    /// Callbacks of this account for `request_id` that arrived before any row waited on it (outcome
    /// `unmatched`), oldest first: the worker applies them once it has recorded the request id.
    async fn unmatched_callbacks(&self, service_provider_id: i64, request_id: &str)
    -> StoreResult<Vec<CallbackRecord>>;
    /// Deletes the unmatched callbacks (see `unmatched_callbacks`) that arrived before `before`; returns how many.
    /// An early callback is applied within moments of its request being recorded, so older ones only take room
    /// (a sender with an account's callback credentials could otherwise fill the table).
    async fn purge_unmatched_callbacks(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Stops every worker from logging in to this ThingSpace account again.
    async fn refuse_login(&self, service_provider_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<()>;
}

/// What applying a carrier's result from outside a worker reads and writes (a callback, or one replayed).
pub trait Callbacks: ReferenceData + Devices + Reads + CarrierWaits + Outcomes + BulkChanges + Rollouts {}
impl<T: ReferenceData + Devices + Reads + CarrierWaits + Outcomes + BulkChanges + Rollouts + ?Sized> Callbacks for T {}

/// Rollout control (issue 21): pause, resume, the canary's passing and the abort decision, each decided once in
/// the store (the claim itself refuses rows of a paused or aborted bulk change and caps a canary's).
#[async_trait]
pub trait Rollouts: Send + Sync {
    async fn rollout_progress(&self, bulk_change_id: i64) -> StoreResult<RolloutProgress>;
    /// Pauses a bulk change that is not final nor paused (in `tenant_id` when given): no row of it is claimed until
    /// it is resumed. Returns the rows in flight at that moment (claimed, not final), or None when it could not be
    /// paused.
    async fn pause_bulk_change(
        &self,
        tenant_id: Option<i64>,
        bulk_change_id: i64,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>>;
    /// Resumes a PAUSED bulk change (one its canary paused has passed its canary): true when it was paused.
    async fn resume_bulk_change(
        &self,
        tenant_id: Option<i64>,
        bulk_change_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The canary's rows are final and the abort rule held: claims are no longer capped.
    async fn pass_canary(&self, bulk_change_id: i64, now: DateTime<Utc>) -> StoreResult<()>;
    /// Records the abort decision once: true for the one caller that recorded it. Its rows not started are the
    /// caller's to cancel (`cancel_rows`, idempotent); the bulk change ends ABORTED when its rows are final.
    async fn abort_bulk_change(&self, bulk_change_id: i64, reason: &str, now: DateTime<Utc>) -> StoreResult<bool>;
}

/// Webhook endpoints and their deliveries (README "Webhooks"). The events themselves are written by the store in
/// the transaction that makes them true (`finalize_bulk_change`, `pause_bulk_change`), one delivery per endpoint.
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Registers an endpoint; returns its id.
    async fn add_webhook(
        &self,
        tenant_id: i64,
        url: &str,
        events: &[String],
        secret: &str,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// The tenant's endpoints not deleted, by id.
    async fn webhooks(&self, tenant_id: i64) -> StoreResult<Vec<Webhook>>;
    /// Deletes the tenant's endpoint (false: none such); its deliveries not yet made are given up.
    async fn delete_webhook(&self, tenant_id: i64, id: i64, now: DateTime<Utc>) -> StoreResult<bool>;
    /// The latest deliveries to one of the tenant's endpoints, newest first.
    async fn webhook_deliveries(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    /// Leases up to `limit` PENDING deliveries due at `now` (no live lease) to `worker` until `until`.
    async fn claim_deliveries(
        &self,
        worker: &str,
        limit: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Records an attempt by the lease holder (false: the lease was lost, nothing written); `body` is kept the
    /// first time, so every attempt sends the same event.
    async fn record_delivery(
        &self,
        id: i64,
        worker: &str,
        body: &str,
        result: &DeliveryResult,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

/// Everything persisted. Every read a caller makes on behalf of a user names the tenant; `tenant: None` is the
/// worker's system context, which reads a bulk change by id and then acts only within that bulk change's tenant.
#[async_trait]
pub trait Store:
    ReferenceData
    + Devices
    + RevServices
    + BulkChanges
    + Idempotency
    + Pace
    + Leases
    + Outcomes
    + Reads
    + CarrierWaits
    + Callbacks
    + Rollouts
    + Webhooks
{
    /// Closes pooled connections (the Lambda shutdown hook calls it). Default: nothing to close.
    async fn close(&self) {}
}
