//! The worker: takes a bulk change from a queue message, claims its rows with a lease, processes them
//! concurrently under the service provider's token bucket, records each outcome, finalises the bulk status,
//! sends the failure summary, and hands over to a continuation when its deadline nears.

use std::sync::Arc;
use std::time::Duration;

use domain::{BulkStatus, ChangeDetails, Integration, RowStatus};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use crate::carrier::{self, Carriers};
use crate::carrier_wait;
use crate::change;
use crate::common;
use crate::job::{AsyncCarrier, Disposition, Job};
use crate::metrics::{Metric, Metrics};
use crate::notify;
use crate::ports::{
    BulkChange, Clock, Completion, DeviceChangeRow, DeviceUpdate, Notifier, Queue, RowOutcome, Store, StoreError,
    WorkMessage,
};
use crate::rate::RateLimiters;
use crate::recorder::Recorder;
/// The longest delay SQS allows on a message.
const MAX_QUEUE_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Who holds a lease; unique per worker instance.
    pub worker_id: String,
    /// Rows in flight at once for one bulk change.
    pub concurrency: usize,
    /// Rows claimed per round.
    pub claim_batch: u32,
    /// How long a claim holds without renewal. A heartbeat renews it every third of a lease while the worker
    /// works, so a dead worker's rows are taken over within about one lease.
    pub lease: Duration,
    /// Helper messages a large bulk change fans out to (other instances work it at once; 0: none).
    pub fan_out: u32,
    /// Stop claiming when less than this is left before the deadline.
    pub deadline_margin: Duration,
    /// Delay of the continuation sent when other workers still hold rows.
    pub continuation_delay: Duration,
    /// Rows claimed per round for ThingSpace, whose requests carry many devices (up to 10,000 an activation).
    pub thingspace_claim_batch: u32,
    /// How long a row waits for its asynchronous carrier result (a callback) before a worker polls for it.
    pub carrier_result_wait: Duration,
    /// How long after its first request a row stops waiting and fails with "no result from carrier"
    /// (ThingSpace: an activation "can take up to 24 hours").
    pub carrier_result_give_up: Duration,
    /// How often a row waiting on a carrier that sends no callback (Telegence's activations) is polled.
    pub carrier_poll_interval: Duration,
    /// How often rows waiting on a Teal operation are polled when its callback does not come.
    pub teal_poll_interval: Duration,
    /// How long after its request a Teal row stops waiting ("operations finish within 15 minutes").
    pub teal_give_up: Duration,
    /// Our `POST /Teal/Callback` as Teal reaches it; without it Teal is asked for no callback and rows are polled.
    pub teal_callback_url: Option<String>,
    pub email_from: String,
    pub email_to: Vec<String>,
    /// Audit entries and row outcomes written to the store together, at most this many in one transaction
    /// (group commit; 1: one write at a time).
    pub write_batch: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", fastrand::u64(..)),
            concurrency: 256,
            claim_batch: 64,
            lease: Duration::from_secs(30),
            fan_out: 4,
            deadline_margin: Duration::from_secs(10),
            continuation_delay: Duration::from_secs(5),
            thingspace_claim_batch: 1000,
            carrier_result_wait: Duration::from_secs(900),
            carrier_result_give_up: Duration::from_secs(24 * 3600),
            carrier_poll_interval: Duration::from_secs(60),
            teal_poll_interval: Duration::from_secs(30),
            teal_give_up: Duration::from_secs(3600),
            teal_callback_url: None,
            email_from: "bulkchange@localhost".into(),
            email_to: vec!["operations@localhost".into()],
            write_batch: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("bulk change {bulk_change_id}: {source}")]
    Store { bulk_change_id: i64, source: StoreError },
    #[error("bulk change {bulk_change_id}: could not enqueue its continuation: {message}")]
    Enqueue { bulk_change_id: i64, message: String },
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Every row final; the bulk change has this status.
    Finished(BulkStatus),
    /// Already final when the message came (a redelivery): nothing done.
    AlreadyFinal(BulkStatus),
    /// Work remains; a continuation message was sent.
    Continued,
    /// A helper found nothing more to claim (or its deadline came); the message that sent it carries on.
    Helped,
    /// No such bulk change.
    Unknown,
    /// Paused (by a person, or by its canary): rows in flight finished; a resume queues it again.
    Paused,
}

pub struct Worker {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub notifier: Arc<dyn Notifier>,
    pub carriers: Arc<dyn Carriers>,
    pub clock: Arc<dyn Clock>,
    pub limiters: Arc<RateLimiters>,
    pub metrics: Arc<dyn Metrics>,
    pub config: WorkerConfig,
    /// Writes this worker's audit entries and row outcomes in groups (`Recorder::new(store, config.write_batch)`).
    pub recorder: Arc<Recorder>,
    /// Sends the webhook events due (a bulk change just final or paused) at once; the scheduler retries.
    pub webhooks: Option<Arc<crate::webhooks::Deliverer>>,
}

/// Rows one worker works at once for one bulk change: its setting, but no more than a quarter second of the
/// account's pace, so that the calls queued for the pace are few and another bulk change's call gets its slot soon.
fn in_flight(configured: usize, rate_per_second: f64) -> usize {
    let quarter_second = (rate_per_second * 0.25).ceil();
    let cap = if quarter_second.is_finite() && quarter_second > 0.0 { quarter_second as usize } else { 1 };
    configured.min(cap.max(2)).max(1)
}

/// What a worker knows of its leases on one bulk change's rows, by its own monotonic clock: a row claimed at `t`
/// holds until `t + lease`, each renewal that succeeds extends every row it reaches to its start + lease, and a
/// renewal that starts after the rows' leases ran out (a slow or failing database) may find rows another worker has
/// taken since. A row starts its carrier work only while its lease surely holds for a third of a lease more: a
/// worker whose lease lapsed must not send a change the row's new holder may be sending too (the database decides
/// who records a row; only this check keeps the carrier from getting it twice).
pub(crate) struct LeaseGuard {
    lease: Duration,
    state: std::sync::Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// The start of the last renewal that succeeded.
    renewed: Option<Instant>,
    /// The first claim's start: before any renewal, its rows are the first to run out.
    first_claimed: Option<Instant>,
    /// A renewal started after every lease it was to extend had run out: rows claimed before it may be lost.
    lapsed_before: Option<Instant>,
    /// Rows were left unworked because their lease might have lapsed (`LeaseGuard::gave_up`).
    gave_up: bool,
}

impl LeaseGuard {
    pub(crate) fn new(lease: Duration) -> Self {
        Self { lease, state: std::sync::Mutex::new(LeaseState::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A claim that started at `at` (its rows hold until `at + lease`).
    pub(crate) fn claimed(&self, at: Instant) {
        let mut s = self.state();
        s.first_claimed = Some(s.first_claimed.map_or(at, |c| c.min(at)));
    }

    /// A renewal that started at `at` (its new leases run from then) and succeeded at `done`. The database applied
    /// it somewhere in between, so one that ends after the leases it extends ran out (a lease after the previous
    /// renewal, or after the first claim) may have come too late for any row claimed before it — another worker
    /// may have claimed the row meanwhile, and the renewal then extends only the rows still this worker's, without
    /// saying which. A later claim does not hide that (its rows are new, the old ones are not).
    pub(crate) fn renewed(&self, at: Instant, done: Instant) {
        let mut s = self.state();
        let covered = s.renewed.or(s.first_claimed);
        if covered.is_some_and(|c| done > c + self.lease) {
            s.lapsed_before = Some(at);
        }
        s.renewed = Some(s.renewed.map_or(at, |r| r.max(at)));
    }

    /// Rows were left unworked, their lease maybe lapsed. They are still this worker's in the database unless
    /// another worker took them, so its heartbeat keeps renewing them: the worker must let its leases go (stop
    /// working the bulk change, its heartbeat with it) for anyone to take them over.
    pub(crate) fn give_up(&self) {
        self.state().gave_up = true;
    }

    pub(crate) fn gave_up(&self) -> bool {
        self.state().gave_up
    }

    /// Whether a row claimed at `claimed_at` surely holds its lease now and for a third of a lease more.
    pub(crate) fn holds(&self, claimed_at: Instant, now: Instant) -> bool {
        let s = self.state();
        if s.lapsed_before.is_some_and(|l| claimed_at < l) {
            return false;
        }
        let since = s.renewed.map_or(claimed_at, |r| r.max(claimed_at));
        now + self.lease / 3 < since + self.lease
    }
}

/// Renews the leases a worker holds on a bulk change's rows every third of a lease, until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        bulk_change_id: i64,
        config: &WorkerConfig,
        guard: Arc<LeaseGuard>,
    ) -> Self {
        let (worker, lease) = (config.worker_id.clone(), config.lease);
        let every = (lease / 3).max(Duration::from_millis(100));
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let started = Instant::now();
                let until = clock.now() + chrono::Duration::from_std(lease).unwrap_or_default();
                match store.renew_leases(bulk_change_id, &worker, until).await {
                    Ok(_) => guard.renewed(started, Instant::now()),
                    Err(e) => warn!(bulk_change_id, error = %e, "lease renewal failed; the rows may be taken over"),
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// Handles one queue message. Returns an error only when the message must be retried (it stays on the queue).
    pub async fn handle(&self, message: WorkMessage, deadline: Instant) -> Result<Handled, WorkerError> {
        let id = message.bulk_change_id;
        let span = info_span!("bulk_change", bulk_change_id = id, attempt = message.attempt);
        self.handle_inner(message, deadline).instrument(span).await
    }

    async fn handle_inner(&self, message: WorkMessage, deadline: Instant) -> Result<Handled, WorkerError> {
        let id = message.bulk_change_id;
        let store_err = |source| WorkerError::Store { bulk_change_id: id, source };
        let Some(bulk) = self.store.bulk_change(None, id).await.map_err(store_err)? else {
            warn!("message for an unknown bulk change; dropping it");
            return Ok(Handled::Unknown);
        };
        if bulk.status.is_final() {
            // A redelivery, or a continuation that lost the race: the e-mail may still be owed.
            self.notify_failures(&bulk).await;
            return Ok(Handled::AlreadyFinal(bulk.status));
        }
        self.store.mark_processing(id, self.clock.now()).await.map_err(store_err)?;
        let job = self.load_job(bulk.clone()).await;
        if let Err(reason) = &job {
            warn!(%reason, "cannot process bulk change; failing its open rows");
        }
        let batched = job.as_ref().ok().and_then(|j| j.carrier.batched(&j.details));
        let claim_batch = if batched.is_some() { self.config.thingspace_claim_batch } else { self.config.claim_batch };
        // The leases of the rows this worker holds stay alive while it works them (and die with it).
        let guard = Arc::new(LeaseGuard::new(self.config.lease));
        let _heartbeat = Heartbeat::start(self.store.clone(), self.clock.clone(), id, &self.config, guard.clone());
        let mut fanned_out = message.helper || batched.is_some();
        let rollout = bulk.request.rollout();
        let rate = job.as_ref().map_or(1.0, |j| j.sp.rate_limit_per_second);
        let mut cancelled_for_abort = false;
        // Rows held at once: ThingSpace takes whole claims into multi-device requests; the others are kept
        // `in_flight` rows busy, claiming more as rows finish (no round waits for its slowest row).
        let cap = if batched.is_some() { claim_batch as usize } else { in_flight(self.config.concurrency, rate) };
        // The operator's pace, when slower, bounds the rows held at once too: a second of it (rows wait there for
        // their slots; a pause lets them finish, so this is also what a pause leaves in flight).
        let cap = rollout.max_per_minute.map_or(cap, |m| cap.min((f64::from(m) / 60.0).ceil().max(2.0) as usize));
        let job_ref = job.as_ref().map_err(String::as_str);
        let mut working = futures::stream::FuturesUnordered::new();
        let mut exhausted = false;
        loop {
            let near_deadline = deadline.saturating_duration_since(Instant::now()) < self.config.deadline_margin;
            // Rows left unworked (their lease maybe lapsed) stay this worker's while its heartbeat runs: claim no
            // more, and once the rows in hand are done let the leases go (below).
            let gave_up = guard.gave_up();
            if gave_up {
                exhausted = true;
            }
            if !exhausted && !near_deadline && working.len() <= cap / 2 && rollout.gates_claims() {
                match crate::rollout::before_claim(self.store.as_ref(), id, &rollout, self.clock.now()).await {
                    Ok(crate::rollout::Step::Go) => {}
                    // The claim below takes no PENDING row of a paused bulk change, only rows in flight whose
                    // lease ended (a dead worker's, a carrier's result not come), to be settled.
                    Ok(crate::rollout::Step::Paused) => {}
                    // The rows not started are cancelled; the claim below takes no PENDING row of an aborted bulk
                    // change, only rows in flight whose lease ended (a dead worker's, one left by a worker whose
                    // lease lapsed), to be settled: without it they would stay PROCESSING and the bulk change never
                    // end.
                    Ok(crate::rollout::Step::Aborted(reason)) => {
                        if !cancelled_for_abort {
                            let cancelled = self.store.cancel_rows(bulk.tenant_id, id, &reason, self.clock.now());
                            match driving(&mut working, cancelled).await {
                                Ok(n) => {
                                    cancelled_for_abort = true;
                                    self.metrics.record(Metric::BulkChangeAborted);
                                    info!(rows = n, %reason, "rows not started cancelled by the abort rule");
                                }
                                Err(e) => warn!(error = %e, "could not cancel the rows of an aborted bulk change"),
                            }
                        }
                    }
                    Err(e) => return Err(store_err(e)),
                }
            }
            if !exhausted && !near_deadline && working.len() <= cap / 2 {
                let want = u32::try_from((cap - working.len()).clamp(1, claim_batch as usize)).unwrap_or(claim_batch);
                let claimed_at = Instant::now();
                let claim =
                    self.store.claim_rows(id, &self.config.worker_id, want, self.config.lease, self.clock.now());
                let rows = driving(&mut working, claim).await.map_err(store_err)?;
                guard.claimed(claimed_at);
                let held = Held { guard: &guard, claimed_at };
                if rows.is_empty() {
                    exhausted = true;
                } else {
                    if !fanned_out {
                        fanned_out = true;
                        driving(&mut working, self.fan_out(id, rate)).await;
                    }
                    if let (Ok(job), Some(carrier)) = (&job, batched) {
                        self.process_async(job, carrier, rows, held).await;
                        continue;
                    }
                    working.extend(rows.into_iter().map(|row| self.process_row(job_ref, row, held)));
                    // Other messages of this process (a small bulk change beside a large one) get their turn.
                    tokio::task::yield_now().await;
                }
            }
            if working.next().await.is_some() {
                continue;
            }
            // Nothing in hand: the deadline is near, rows were left unworked, or no row is left to claim.
            if gave_up {
                // The heartbeat stops with this message; once the leases have run out the next message (or another
                // worker) takes the rows over, reading the carrier before sending anything again.
                warn!("rows left unworked, their leases maybe lapsed; letting the leases go and continuing later");
                if message.helper {
                    return Ok(Handled::Helped);
                }
                self.continue_later(message, self.config.lease + Duration::from_secs(1)).await?;
                return Ok(Handled::Continued);
            }
            if near_deadline {
                if message.helper {
                    return Ok(Handled::Helped);
                }
                self.continue_later(message, Duration::ZERO).await?;
                info!("deadline near; continuation enqueued");
                return Ok(Handled::Continued);
            }
            if !exhausted {
                continue;
            }
            return match self.store.finalize_bulk_change(id, self.clock.now()).await.map_err(store_err)? {
                Some(status) if status.is_final() => {
                    info!(status = %status, "bulk change finished");
                    if let Ok(Some(bulk)) = self.store.bulk_change(None, id).await {
                        self.notify_failures(&bulk).await;
                    }
                    self.deliver_webhooks().await;
                    Ok(Handled::Finished(status))
                }
                Some(status) => Ok(Handled::Finished(status)),
                None if matches!(self.store.rollout_progress(id).await.map(|p| p.status), Ok(BulkStatus::Paused))
                    && matches!(self.store.next_lease_expiry(id).await, Ok(None)) =>
                {
                    // No row in flight any more (rows waiting on a carrier's result are waited for below); the
                    // resume queues the bulk change again.
                    info!("bulk change paused; rows in flight finished");
                    self.metrics.record(Metric::BulkChangePaused);
                    self.deliver_webhooks().await;
                    Ok(Handled::Paused)
                }
                None => {
                    // Rows held by another worker's lease or waiting on a carrier's result. A worker lease ends
                    // soon (its worker renews it while alive): wait for it here and take its rows if its worker
                    // died. A long wait (a carrier's result) goes to a continuation; a helper leaves it to the
                    // message that sent it.
                    let delay = self.delay_until_next_expiry(id).await;
                    let short = delay <= self.config.lease * 2;
                    let time_left = deadline.saturating_duration_since(Instant::now());
                    if short && time_left > delay + self.config.deadline_margin {
                        tokio::time::sleep(delay).await;
                        exhausted = false;
                        continue;
                    }
                    if message.helper {
                        return Ok(Handled::Helped);
                    }
                    self.continue_later(message, delay).await?;
                    Ok(Handled::Continued)
                }
            };
        }
    }

    /// Sends helper messages for a bulk change with more rows left than this worker takes in a few rounds, so
    /// other instances work it at once (rows are still claimed with leases: nothing is processed twice).
    async fn fan_out(&self, id: i64, rate: f64) {
        // Helpers only when one worker cannot fill the account's pace: each row in flight makes at least two
        // calls a second (carrier answers within half a second).
        let useful = (rate / (self.config.concurrency.max(1) as f64 * 2.0)).ceil() as u64;
        let wanted = useful.saturating_sub(1).min(u64::from(self.config.fan_out));
        if wanted == 0 {
            return;
        }
        let pending = match self.store.pending_rows(id).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "could not count pending rows; no fan-out");
                return;
            }
        };
        let per_helper = u64::from(self.config.claim_batch.max(1)) * 4;
        let helpers = (pending / per_helper).min(wanted) as u32;
        for _ in 0..helpers {
            let helper = WorkMessage { bulk_change_id: id, attempt: 0, helper: true };
            if let Err(e) = self.queue.send(&helper, Duration::ZERO).await {
                warn!(error = %e, "could not send a fan-out helper; this worker carries on alone");
                return;
            }
        }
        if helpers > 0 {
            info!(helpers, pending, "bulk change fanned out to helper messages");
        }
    }

    /// How long until the first lease on an open row ends (at least the continuation delay, at most SQS's 15 min).
    /// Sends the webhook events due now (this bulk change's among them); what fails is retried by the scheduler.
    async fn deliver_webhooks(&self) {
        if let Some(deliverer) = &self.webhooks {
            let report = deliverer.run(self.store.as_ref()).await;
            if report != crate::webhooks::DeliveryReport::default() {
                info!(delivered = report.delivered, retried = report.retried, failed = report.failed, "webhooks sent");
            }
        }
    }

    async fn delay_until_next_expiry(&self, id: i64) -> Duration {
        let now = self.clock.now();
        let until = match self.store.next_lease_expiry(id).await {
            Ok(Some(expiry)) => (expiry - now).to_std().unwrap_or_default() + Duration::from_secs(1),
            _ => self.config.continuation_delay,
        };
        until.clamp(self.config.continuation_delay, MAX_QUEUE_DELAY)
    }

    /// One claim of an asynchronous carrier: rows grouped into its requests; sent rows wait on their request id.
    async fn process_async(&self, job: &Job, carrier: &dyn AsyncCarrier, rows: Vec<DeviceChangeRow>, held: Held<'_>) {
        if let Some(pace) = &job.pace {
            for _ in &rows {
                pace.acquire().await;
            }
        }
        if !self.still_holds(job.bulk.id, held).await {
            // Not one is sent: another worker takes them once the leases have run out, reading the carrier first.
            warn!(rows = rows.len(), "the rows' leases may have lapsed; left to the worker that takes them over");
            return;
        }
        let now = self.clock.now();
        // Rows with a change of their own (an undo's: each device back to its own value) go to the carrier in
        // groups of one change each, each group with its change as the job's.
        let (own, plain): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.request.is_some());
        let mut groups: Vec<(ChangeDetails, Vec<DeviceChangeRow>)> = Vec::new();
        for row in own {
            let change = match row.request.as_deref().map(crate::undo::row_change) {
                Some(Ok(change)) => change,
                Some(Err(e)) => {
                    let outcome = common::fail(RowStatus::Error, format!("the row's own change is unreadable: {e}"));
                    self.record(Ok(job), &row, outcome).await;
                    continue;
                }
                None => continue,
            };
            // Not sent yet: it runs only while its device still is what the original set.
            let fresh = row.carrier_request_id.is_none() && row.carrier_result.is_none();
            let changed = change
                .expect
                .as_ref()
                .zip(row.device.as_ref())
                .and_then(|(e, d)| crate::undo::unexpected(e, d))
                .filter(|_| fresh);
            if let Some(why) = changed {
                self.record(Ok(job), &row, common::fail(RowStatus::Error, format!("not undone: {why}"))).await;
                continue;
            }
            if let Some(back) = &change.unassign {
                let outcome = change::customer_assignment::undo(job, &row, back).await;
                self.record(Ok(job), &row, outcome).await;
                continue;
            }
            match groups.iter_mut().find(|(details, _)| *details == change.details) {
                Some((_, rows)) => rows.push(row),
                None => groups.push((change.details, vec![row])),
            }
        }
        let mut results = carrier_wait::process(job, carrier, plain, now).await;
        for (details, rows) in groups {
            results.extend(carrier_wait::process(&job.with_details(details), carrier, rows, now).await);
        }
        let mut waiting = 0;
        for (row, disposition) in results {
            match disposition {
                Disposition::Done(outcome) => self.record(Ok(job), &row, outcome).await,
                // Already handed over to its request (`carrier_wait::wait_on`) as soon as the carrier answered.
                Disposition::Await(_) => waiting += 1,
                // Back with its result kept on the row: the next claim finishes it.
                Disposition::HandedBack => {}
            }
        }
        if waiting > 0 {
            info!(rows = waiting, carrier = carrier.name(), "rows wait for the carrier's results");
        }
        if let Some(reason) = carrier.login_refused() {
            self.metrics.record(Metric::LoginRefused { integration: job.sp.integration.name() });
            error!(
                alert = "carrier_login_refused",
                service_provider_id = job.sp.id,
                carrier = carrier.name(),
                %reason,
                "the carrier refused the login: no worker will log in to this account again until the credentials are fixed"
            );
            if let Err(e) = self.store.refuse_login(job.sp.id, &reason, self.clock.now()).await {
                error!(error = %e, "could not record the refused login");
            }
        }
    }

    async fn continue_later(&self, message: WorkMessage, delay: Duration) -> Result<(), WorkerError> {
        let next = WorkMessage { bulk_change_id: message.bulk_change_id, attempt: message.attempt + 1, helper: false };
        self.queue
            .send(&next, delay)
            .await
            .map_err(|e| WorkerError::Enqueue { bulk_change_id: message.bulk_change_id, message: e.to_string() })
    }

    async fn load_job(&self, bulk: BulkChange) -> Result<Job, String> {
        let tenant = bulk.tenant_id;
        let sp = self
            .store
            .service_provider(tenant, bulk.service_provider_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("service provider {} no longer exists", bulk.service_provider_id))?;
        let statuses = self.store.device_statuses(sp.integration).await.map_err(|e| e.to_string())?;
        let rate_plans = self.store.carrier_rate_plans(tenant, sp.id).await.map_err(|e| e.to_string())?;
        let carrier = carrier::connect(&sp, self.carriers.as_ref(), &self.limiters)?;
        let rev_io =
            match self.store.service_provider_for(tenant, Integration::RevIo).await.map_err(|e| e.to_string())? {
                Some(rev_sp) => {
                    let limiter = self.limiters.for_provider(rev_sp.id, rev_sp.rate_limit_per_second);
                    Some(self.carriers.rev_io(&rev_sp, limiter))
                }
                None => None,
            };
        let request = bulk.parsed_request()?;
        let pace = request
            .rollout
            .max_per_minute
            .map(|per_minute| self.limiters.for_bulk_change(bulk.service_provider_id, bulk.id, per_minute));
        Ok(Job {
            pace,
            recorder: self.recorder.clone(),
            details: request.details,
            override_validation: request.override_validation,
            bulk,
            sp,
            statuses,
            rate_plans,
            carrier,
            rev_io,
            queue: self.queue.clone(),
            worker_id: self.config.worker_id.clone(),
            carrier_result_wait: self.config.carrier_result_wait,
            carrier_result_give_up: self.config.carrier_result_give_up,
            carrier_poll_interval: self.config.carrier_poll_interval,
            teal_poll_interval: self.config.teal_poll_interval,
            teal_give_up: self.config.teal_give_up,
            teal_callback_url: self.config.teal_callback_url.clone(),
            lease: self.config.lease,
            devices: self.store.clone(),
            rev_services: self.store.clone(),
            waits: self.store.clone(),
            callbacks: self.store.clone(),
            clock: self.clock.clone(),
        })
    }

    async fn process_row(&self, job: Result<&Job, &str>, row: DeviceChangeRow, held: Held<'_>) {
        let carrier = job.map_or("unknown", |j| j.sp.integration.name());
        let span = info_span!("row", iccid = %row.iccid, row_id = row.id, carrier);
        async {
            let outcome = match job {
                Ok(job) => self.outcome_for(job, &row, held).await,
                Err(reason) => RowOutcome {
                    status: RowStatus::Error,
                    details: format!("Service provider of this bulk change is not available: {reason}"),
                    device_update: DeviceUpdate::default(),
                },
            };
            self.complete(job, &row, outcome).await;
        }
        .instrument(span)
        .await
    }

    /// Records a row's final outcome while this worker holds it (in the row's span).
    async fn record(&self, job: Result<&Job, &str>, row: &DeviceChangeRow, outcome: RowOutcome) {
        let carrier = job.map_or("unknown", |j| j.sp.integration.name());
        let span = info_span!("row", iccid = %row.iccid, row_id = row.id, carrier);
        self.complete(job, row, outcome).instrument(span).await
    }

    async fn complete(&self, job: Result<&Job, &str>, row: &DeviceChangeRow, outcome: RowOutcome) {
        if !outcome.status.is_final() {
            // Handed to a later look (an outcome not known yet): a worker takes the row again when its wait ends.
            info!(details = %outcome.details, "row waits to be settled later");
            return;
        }
        let carrier = job.map_or("unknown", |j| j.sp.integration.name());
        info!(status = %outcome.status, details = %outcome.details, "row finished");
        self.metrics.record(Metric::RowFinished { integration: carrier, status: outcome.status });
        let completion = Completion {
            tenant_id: job.map_or(0, |j| j.bulk.tenant_id),
            bulk_change_id: row.bulk_change_id,
            row_id: row.id,
            worker: self.config.worker_id.clone(),
            outcome,
            now: self.clock.now(),
        };
        match self.recorder.complete(completion).await {
            Ok(true) => {}
            Ok(false) => warn!("row was taken over by another worker before it completed; its outcome is theirs"),
            // The lease will expire and the row will be claimed again; the next worker asks the carrier first.
            Err(e) => error!(error = %e, "could not record the row's outcome"),
        }
    }

    /// A row processed on its own: by the carrier when the change reaches it, else by `change` (no carrier step).
    async fn outcome_for(&self, job: &Job, row: &DeviceChangeRow, held: Held<'_>) -> RowOutcome {
        // A row with a change of its own (an undo's: each device back to its own value), else its bulk change's.
        let own = match row.request.as_deref().map(crate::undo::row_change) {
            None => None,
            Some(Ok(own)) => {
                // An undo's row runs only while its device still is what the original set.
                let changed =
                    own.expect.as_ref().zip(row.device.as_ref()).and_then(|(e, d)| crate::undo::unexpected(e, d));
                if let Some(why) = changed {
                    return RowOutcome {
                        status: RowStatus::Error,
                        details: format!("not undone: {why}"),
                        device_update: DeviceUpdate::default(),
                    };
                }
                Some(own)
            }
            Some(Err(e)) => {
                return RowOutcome {
                    status: RowStatus::Error,
                    details: format!("the row's own change is unreadable: {e}"),
                    device_update: DeviceUpdate::default(),
                };
            }
        };
        let details = own.as_ref().map_or(&job.details, |own| &own.details);
        if let Some(pace) = &job.pace {
            pace.acquire().await;
        }
        if !self.still_holds(job.bulk.id, held).await {
            // Nothing sent: the worker that takes the row over once its lease has run out reads the carrier first.
            warn!("the row's lease may have lapsed; left to the worker that takes it over");
            return RowOutcome {
                status: RowStatus::Processing,
                details: "lease may have lapsed; left to the worker that takes the row over".into(),
                device_update: DeviceUpdate::default(),
            };
        }
        if let Some(back) = own.as_ref().and_then(|own| own.unassign.as_ref()) {
            return change::customer_assignment::undo(job, row, back).await;
        }
        if let Some(outcome) = job.carrier.process_row(job, row, details).await {
            return outcome;
        }
        if let Some(outcome) = change::process(job, row, details).await {
            return outcome;
        }
        RowOutcome {
            status: RowStatus::Error,
            details: format!("{} for {} is not supported yet", details.change_type(), job.sp.integration),
            device_update: DeviceUpdate::default(),
        }
    }

    /// Whether a claim's rows surely hold their lease for a while yet; when near its end (a slow claim, a pace
    /// wait), renewed first: a renewal that succeeds in time keeps them this worker's, one that comes after the
    /// leases ran out does not (`LeaseGuard::renewed`).
    async fn still_holds(&self, bulk_change_id: i64, held: Held<'_>) -> bool {
        if held.holds() {
            return true;
        }
        let started = Instant::now();
        let until = self.clock.now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        match self.store.renew_leases(bulk_change_id, &self.config.worker_id, until).await {
            Ok(_) => held.guard.renewed(started, Instant::now()),
            Err(e) => warn!(error = %e, "lease renewal before a carrier call failed"),
        }
        let holds = held.holds();
        if !holds {
            held.guard.give_up();
        }
        holds
    }

    async fn notify_failures(&self, bulk: &BulkChange) {
        if let Err(e) = notify::send_failure_summary(
            self.store.as_ref(),
            self.notifier.as_ref(),
            (&self.config.email_from, &self.config.email_to),
            bulk,
            self.clock.now(),
            self.config.lease,
        )
        .await
        {
            error!(error = %e, "failure summary e-mail not sent; the scheduler will queue it again");
        }
    }
}

/// The lease a claim's rows hold: whether they surely still hold it (`LeaseGuard::holds`).
#[derive(Clone, Copy)]
struct Held<'a> {
    guard: &'a LeaseGuard,
    claimed_at: Instant,
}

impl Held<'_> {
    fn holds(&self) -> bool {
        self.guard.holds(self.claimed_at, Instant::now())
    }
}

/// Awaits `task` while still driving the rows in `working`. A row in flight may hold one of the store's few
/// connections with its answer unread; awaiting a claim (which needs a connection) without polling those rows
/// would wait for ever once every connection is held so (the SQL Server pool has 16; SQLite has no such limit).
async fn driving<F: std::future::Future>(
    working: &mut futures::stream::FuturesUnordered<impl std::future::Future<Output = ()>>,
    task: F,
) -> F::Output {
    tokio::pin!(task);
    loop {
        tokio::select! {
            biased;
            out = &mut task => return out,
            Some(()) = working.next(), if !working.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod lease_guard_tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::LeaseGuard;

    #[test]
    fn a_row_is_worked_only_while_its_lease_surely_holds() {
        let lease = Duration::from_secs(3);
        let guard = LeaseGuard::new(lease);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        guard.claimed(t0);
        assert!(guard.holds(t0, at(1_000)), "fresh from its claim");
        assert!(!guard.holds(t0, at(2_500)), "within a third of a lease of its end: not started");
        // Renewals every second keep it.
        guard.renewed(at(1_000), at(1_050));
        guard.renewed(at(2_000), at(2_050));
        assert!(guard.holds(t0, at(3_500)));
        // The database was slow: the next renewal started after the leases ran out (another worker may hold them
        // now). Rows claimed before are never worked again by this worker, even once renewals succeed.
        guard.renewed(at(5_500), at(5_550));
        assert!(!guard.holds(t0, at(5_600)), "claimed before the gap");
        guard.claimed(at(5_700));
        assert!(guard.holds(at(5_700), at(5_800)), "a row claimed after the gap is this worker's");

        // A claim between renewals does not hide a gap from the rows claimed before it.
        let guard = LeaseGuard::new(lease);
        guard.claimed(t0);
        guard.renewed(at(1_000), at(1_050));
        guard.claimed(at(3_000));
        guard.renewed(at(4_500), at(4_550));
        assert!(!guard.holds(t0, at(4_600)), "its lease ran out at 4 s, before this renewal");
    }

    /// A renewal that starts in time but ends after the leases it extends ran out (it waited for a lock, the
    /// database was slow) may have been applied after another worker claimed a row: that row is not this worker's
    /// any more, and the renewal does not say which rows it reached (a renewal waits for the lock a group of this
    /// worker's completions holds, which on the T-SQL engine under load can take seconds).
    #[test]
    fn a_renewal_that_ends_after_the_leases_ran_out_keeps_no_row_claimed_before_it() {
        let lease = Duration::from_secs(3);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let guard = LeaseGuard::new(lease);
        guard.claimed(t0);
        guard.renewed(at(1_000), at(1_100));
        // The renewal of 2 s failed; the next started at 3.5 s, before the leases end at 4 s, and answered at 4.2 s.
        guard.renewed(at(3_500), at(4_200));
        assert!(!guard.holds(t0, at(4_300)), "claimed before the late renewal");
        guard.claimed(at(4_400));
        assert!(guard.holds(at(4_400), at(4_500)), "a row claimed after it is this worker's");

        // The same renewal answered in time keeps them.
        let guard = LeaseGuard::new(lease);
        guard.claimed(t0);
        guard.renewed(at(1_000), at(1_100));
        guard.renewed(at(3_500), at(3_900));
        assert!(guard.holds(t0, at(4_300)), "renewed from 3.5 s: holds until 6.5 s");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::stream::FuturesUnordered;
    use tokio::sync::Semaphore;

    use super::driving;

    /// A row in flight holds the only connection and gives it back once polled again: a claim awaiting a
    /// connection completes only if the rows are driven meanwhile.
    #[tokio::test]
    async fn a_claim_waiting_for_a_connection_held_by_a_row_in_flight_completes() {
        let pool = Semaphore::new(1);
        let held = pool.try_acquire().expect("the only connection");
        let working = FuturesUnordered::new();
        working.push(async move {
            tokio::task::yield_now().await;
            drop(held);
        });
        let mut working = working;
        let claim = async { pool.acquire().await.map(|_| "claimed") };
        let got = tokio::time::timeout(Duration::from_secs(5), driving(&mut working, claim)).await;
        assert_eq!(got.expect("not stalled").expect("permit"), "claimed");
        assert!(working.is_empty(), "the row finished meanwhile");
    }

    use std::sync::Arc;

    use domain::request::{ChangeDetails, UsernameUpdate};
    use domain::{BulkStatus, RowStatus};

    use super::{Handled, Worker, WorkerConfig};
    use crate::fakes::{CountingCc, MemNotifier, MemQueue, MemStore, OnlyControlCenter, WORKER};
    use crate::metrics::NoMetrics;
    use crate::ports::{SystemClock, WorkMessage};
    use crate::rate::RateLimiters;
    use crate::recorder::Recorder;

    const ICCIDS: [&str; 2] = ["89148000008245116615", "89148000008245116623"];

    fn worker(store: Arc<MemStore>, cc: Arc<CountingCc>, notifier: Arc<MemNotifier>) -> Worker {
        Worker {
            recorder: Arc::new(Recorder::new(store.clone(), 1)),
            webhooks: None,
            store,
            queue: Arc::new(MemQueue::default()),
            notifier,
            carriers: Arc::new(OnlyControlCenter(cc)),
            clock: Arc::new(SystemClock),
            limiters: Arc::new(RateLimiters::default()),
            metrics: Arc::new(NoMetrics),
            config: WorkerConfig { worker_id: WORKER.into(), fan_out: 0, write_batch: 1, ..WorkerConfig::default() },
        }
    }

    fn deadline() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    /// The worker knows no carrier: it connects the account's and each row goes through it once.
    #[tokio::test]
    async fn each_row_goes_through_the_accounts_carrier_once_and_a_redelivery_changes_nothing() {
        let store = MemStore::with_jasper_account();
        let devices = [store.add_device(1, ICCIDS[0]), store.add_device(2, ICCIDS[1])];
        let details = ChangeDetails::EditUsername(UsernameUpdate {
            new_username: "meter-7".into(),
            cost_center: None,
            cost_center2: None,
            cost_center3: None,
        });
        store.add_bulk_change(5, &details, &devices);
        let cc = Arc::new(CountingCc::default());
        let worker = worker(store.clone(), cc.clone(), Arc::default());

        let handled = worker.handle(WorkMessage::new(5), deadline()).await.expect("handled");

        assert_eq!(handled, Handled::Finished(BulkStatus::Processed));
        for row in [1, 2] {
            assert_eq!(store.row_status(5, row).0, RowStatus::Processed, "row {row}");
        }
        let mut edits = cc.0.lock().expect("edits").clone();
        edits.sort();
        assert_eq!(edits, ICCIDS, "one edit per device");
        assert!(store.state().devices.iter().all(|d| d.username.as_deref() == Some("meter-7")));
        let again = worker.handle(WorkMessage::new(5), deadline()).await.expect("handled");
        assert_eq!(again, Handled::AlreadyFinal(BulkStatus::Processed));
        assert_eq!(cc.0.lock().expect("edits").len(), 2, "nothing sent twice");
    }

    /// A change type the account's carrier does not take ends its rows in ERROR with the reason, calls nobody, and
    /// sends one failure summary.
    #[tokio::test]
    async fn a_change_the_carrier_does_not_take_fails_its_rows_and_sends_one_summary() {
        let store = MemStore::with_jasper_account();
        let devices = [store.add_device(1, ICCIDS[0])];
        store.add_bulk_change(6, &ChangeDetails::DeleteDevice, &devices);
        let cc = Arc::new(CountingCc::default());
        let notifier = Arc::new(MemNotifier::default());
        let worker = worker(store.clone(), cc.clone(), notifier.clone());

        let handled = worker.handle(WorkMessage::new(6), deadline()).await.expect("handled");

        assert_eq!(handled, Handled::Finished(BulkStatus::Error));
        let (status, details) = store.row_status(6, 1);
        assert_eq!(status, RowStatus::Error);
        assert_eq!(details.as_deref(), Some("DeleteDevice (9) for Jasper is not supported yet"));
        assert!(cc.0.lock().expect("edits").is_empty(), "no carrier call");
        let mails = notifier.0.lock().expect("mails");
        assert_eq!(mails.len(), 1);
        assert!(mails[0].body.contains(ICCIDS[0]), "{}", mails[0].body);
    }
}
