//! The all-in-one local stack: SQLite store and queue, API, worker loop, scheduler tick, local notifier and,
//! when asked, the carrier simulators with the seeded service providers pointed at them. `serve`, `make run`
//! and the end-to-end tests build it exactly the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use carriers::HttpCarriers;
use domain::Integration;
use engine::ports::{Clock, Queue, Store, SystemClock, WorkMessage};
use engine::rate::RateLimiters;
use engine::retry::RetryPolicy;
use engine::{Worker, WorkerConfig};
use simulators::pond::{PondAccount, PondBehaviour, PondSim, PondWire};
use simulators::teal::{TealAccount, TealBehaviour, TealSim};
use simulators::telegence::{TelegenceSim, TgAccount, TgBehaviour, TgLine};
use simulators::thingspace::{ThingSpaceSim, TsAccount, TsBehaviour};
use simulators::{Account, ControlCenterSim, Faults, RevAccount, RevCustomer, RevIoSim, SimDevice};
use store::{Seed, SqliteQueue, SqliteStore};

use crate::stack_store::StackStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::outbox::OutboxNotifier;

/// Messages one local worker loop works at once (an SQS batch holds at most 10).
const MESSAGES_IN_FLIGHT: usize = 10;
/// How often an idle local worker loop looks at the queue table when no send in its own process woke it (a send by
/// another process on the file: the API of a `serve`, another `bulkchange worker`).
const QUEUE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub listen: SocketAddr,
    /// The SQLite file: the store and the local queue, or only the queue when `sql_server` is set.
    pub database: PathBuf,
    /// The ADO connection string of a SQL Server database (migrated): the store is then the production adapter.
    pub sql_server: Option<String>,
    /// SQL Server connections of this process (`DATABASE_POOL_SIZE`).
    pub database_pool_size: usize,
    /// The API's wait for the next byte of a body (`API_BODY_IDLE_SECONDS`).
    pub api_body_idle: Duration,
    pub seed: Option<Seed>,
    pub simulators: bool,
    pub simulator_faults: Faults,
    /// How the ThingSpace simulators deliver results (delay, lost or duplicated callbacks).
    pub thingspace_behaviour: TsBehaviour,
    /// What the Telegence simulators do with activations (pending reads, fates) and swaps.
    pub telegence_behaviour: TgBehaviour,
    /// Which Pond steps fail (the plan-change saga's switches).
    pub pond_behaviour: PondBehaviour,
    /// How the Teal simulators answer (processing time, dropped, duplicated or held callbacks, failing EIDs).
    pub teal_behaviour: TealBehaviour,
    pub outbox: PathBuf,
    pub jwt_secret: String,
    pub max_devices: usize,
    pub worker: WorkerConfig,
    /// Start the worker loop with the stack (tests start workers themselves to crash them).
    pub run_worker: bool,
    /// How long a received message stays invisible to other consumers.
    pub visibility: Duration,
    /// How long one message may be worked on before a continuation takes over (the Lambda timeout locally).
    pub message_budget: Duration,
    pub scheduler_interval: Duration,
    /// How long a bulk change may sit untouched before the scheduler re-enqueues it.
    pub stranded_grace: Duration,
    pub retry: RetryPolicy,
    pub http_timeout: Duration,
    /// Webhook deliveries (`WEBHOOK_*`): the local stack allows `http://127.0.0.1` receivers unless told not to.
    pub webhooks: engine::webhooks::DeliveryConfig,
    pub webhook_timeout: Duration,
}

impl StackConfig {
    /// The settings every way of running reads (`engine::settings`): the worker's, the stranded sweep's grace
    /// and the scheduler's interval. The worker keeps this stack's id.
    pub fn apply(&mut self, settings: engine::Settings) {
        let worker_id = std::mem::take(&mut self.worker.worker_id);
        self.worker = engine::WorkerConfig { worker_id, ..settings.worker };
        self.stranded_grace = settings.stranded_grace;
        self.scheduler_interval = settings.scheduler_interval;
        self.database_pool_size = settings.database_pool_size;
        self.api_body_idle = settings.api_body_idle;
        self.http_timeout = settings.carrier_timeout;
        self.retry = settings.retry;
        self.webhooks = settings.webhooks;
        self.webhook_timeout = settings.webhook_timeout;
    }

    /// The webhook deliverer of this stack's workers and scheduler.
    pub fn deliverer(&self, worker_id: &str) -> Arc<engine::webhooks::Deliverer> {
        Arc::new(engine::webhooks::Deliverer {
            transport: Arc::new(carriers::webhook::HttpTransport::new(self.webhook_timeout)),
            config: engine::webhooks::DeliveryConfig { worker_id: worker_id.to_string(), ..self.webhooks.clone() },
        })
    }

    pub fn local(database: PathBuf, outbox: PathBuf, jwt_secret: String) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database,
            sql_server: None,
            database_pool_size: 4,
            api_body_idle: Duration::from_secs(10),
            seed: None,
            simulators: false,
            simulator_faults: Faults::default(),
            thingspace_behaviour: TsBehaviour::default(),
            telegence_behaviour: TgBehaviour::default(),
            pond_behaviour: PondBehaviour::default(),
            teal_behaviour: TealBehaviour::default(),
            outbox,
            jwt_secret,
            max_devices: 10_000,
            worker: WorkerConfig::default(),
            run_worker: true,
            visibility: Duration::from_secs(900),
            message_budget: Duration::from_secs(840),
            scheduler_interval: Duration::from_secs(60),
            // One lease, as the settings have it: a dead worker's bulk change is queued again within about a lease.
            stranded_grace: WorkerConfig::default().lease,
            retry: RetryPolicy::default(),
            http_timeout: Duration::from_secs(30),
            webhooks: engine::webhooks::DeliveryConfig {
                policy: engine::webhooks::UrlPolicy { allow_loopback: true },
                ..engine::webhooks::DeliveryConfig::default()
            },
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

/// The simulators started for the seeded service providers, by service provider id.
#[derive(Default)]
pub struct Simulators {
    pub control_center: BTreeMap<i64, ControlCenterSim>,
    pub rev_io: BTreeMap<i64, RevIoSim>,
    pub thingspace: BTreeMap<i64, ThingSpaceSim>,
    pub telegence: BTreeMap<i64, TelegenceSim>,
    pub pond: BTreeMap<i64, PondSim>,
    pub teal: BTreeMap<i64, TealSim>,
}

pub struct Stack {
    pub addr: SocketAddr,
    pub store: StackStore,
    pub queue: SqliteQueue,
    pub simulators: Simulators,
    pub config: StackConfig,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    pub async fn start(config: StackConfig) -> Result<Self> {
        if let Some(folder) = config.database.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
        }
        let store = StackStore::open(config.sql_server.as_deref(), &config.database, config.database_pool_size).await?;
        if let Some(seed) = config.seed.clone() {
            if store.load_seed(seed).await.context("loading the seed")? {
                info!("seed loaded into an empty database");
            } else {
                info!("database already holds data; seed not loaded");
            }
        }
        let simulators = if config.simulators {
            start_simulators(&store, config.seed.as_ref(), &config.simulator_faults, &config).await?
        } else {
            Simulators::default()
        };
        let queue = local_queue(&store, &config.database)?;
        let (shutdown, _) = watch::channel(false);
        let state = api::AppState {
            store: store.shared(),
            queue: Arc::new(queue.clone()),
            auth: Arc::new(api::Hs256::new(&config.jwt_secret).map_err(anyhow::Error::msg)?),
            max_devices: config.max_devices,
            body_idle: config.api_body_idle,
            // Served from this process, an export streams inline whatever its size (no 6 MB answer limit here).
            large_exports: None,
            webhook_policy: config.webhooks.policy,
        };
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let app = api::router(state);
        let mut rx = shutdown.subscribe();
        let mut tasks = vec![tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                error!(error = %e, "API server stopped");
            }
        })];
        let mut stack = Self { addr, store, queue, simulators, config: config.clone(), shutdown, tasks: Vec::new() };
        stack.register_thingspace_callbacks().await?;
        tasks.push(stack.spawn_scheduler());
        if config.run_worker {
            tasks.push(stack.spawn_worker(config.worker.clone())?);
        }
        stack.tasks = tasks;
        info!(%addr, "local stack listening");
        Ok(stack)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers this API's `/ThingSpace/Callback` with every ThingSpace account, with the callback credentials
    /// the store holds for it: what an operator does once per account in production (README).
    async fn register_thingspace_callbacks(&self) -> Result<()> {
        let carriers = HttpCarriers::new(self.config.http_timeout, self.config.retry)?;
        let limiters = RateLimiters::default();
        for id in self.simulators.thingspace.keys() {
            let Some(sp) = self.store.providers_of(Integration::ThingSpace).await?.into_iter().find(|sp| sp.id == *id)
            else {
                continue;
            };
            let settings = sp.thingspace.clone().context("ThingSpace settings")?;
            let client = carriers::ThingSpaceClient::new(
                reqwest::Client::new(),
                &sp.base_url,
                carriers::ThingSpaceCredentials {
                    app_key: settings.app_key.clone(),
                    app_secret: settings.app_secret.clone(),
                    username: sp.username.clone(),
                    password: sp.secret.clone(),
                    account_name: settings.account_name.clone(),
                },
                limiters.for_provider(sp.id, sp.rate_limit_per_second),
                self.config.retry,
            );
            let url = format!("{}/ThingSpace/Callback", self.base_url());
            client
                .register_callback(&url, &settings.callback_username, &settings.callback_password)
                .await
                .map_err(|f| anyhow::anyhow!("registering the ThingSpace callback of service provider {id}: {f}"))?;
            info!(service_provider_id = id, %url, "ThingSpace CarrierService callback registered");
        }
        drop(carriers);
        Ok(())
    }

    /// A worker of this stack; Teal calls back this stack's API unless `TEAL_CALLBACK_URL` says otherwise.
    pub fn worker(&self, mut config: WorkerConfig) -> Result<Worker> {
        if config.teal_callback_url.is_none() {
            config.teal_callback_url = Some(format!("{}/Teal/Callback", self.base_url()));
        }
        local_worker(&self.store, &self.queue, &self.config, config)
    }

    /// Starts a worker loop consuming the queue; aborting the handle is a crash.
    pub fn spawn_worker(&self, config: WorkerConfig) -> Result<JoinHandle<()>> {
        let worker = Arc::new(self.worker(config)?);
        Ok(spawn_worker_loop(
            worker,
            self.queue.clone(),
            self.shutdown.subscribe(),
            self.config.visibility,
            self.config.message_budget,
        ))
    }

    fn spawn_scheduler(&self) -> JoinHandle<()> {
        let store = self.store.clone();
        let deliverer = self.config.deliverer("scheduler");
        let queue = self.queue.clone();
        let mut rx = self.shutdown.subscribe();
        let (interval, grace) = (self.config.scheduler_interval, self.config.stranded_grace);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = rx.changed() => break,
                }
                // Failures are logged by the tick and tried again at the next one.
                let _ = engine::scheduler::apply_due_scheduled(&*store, &queue, SystemClock.now()).await;
                let _ = engine::scheduler::requeue_stranded(&*store, &queue, SystemClock.now(), grace).await;
                let _ = store.purge_idempotency_keys(SystemClock.now() - chrono::Duration::hours(24)).await;
                let _ = store
                    .purge_unmatched_callbacks(SystemClock.now() - engine::carrier::thingspace::UNMATCHED_KEPT)
                    .await;
                deliverer.run(&*store).await;
            }
        })
    }

    /// Stops every task and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// The local queue: a table of the SQLite file (the store's own file, or a file of its own beside a SQL Server store),
/// so worker processes on the same file share it and a crashed one loses nothing.
pub fn local_queue(store: &StackStore, file: &std::path::Path) -> Result<SqliteQueue> {
    match store {
        StackStore::Sqlite(s) => Ok(SqliteQueue::new(s.clone())),
        StackStore::SqlServer(_) => {
            let file = SqliteStore::open(file).with_context(|| format!("opening the queue file {}", file.display()))?;
            Ok(SqliteQueue::new(file))
        }
    }
}

/// A worker on the stack's store and the local queue, its e-mails in the outbox, its carriers over HTTP.
pub fn local_worker(
    store: &StackStore,
    queue: &SqliteQueue,
    stack: &StackConfig,
    config: WorkerConfig,
) -> Result<Worker> {
    let carriers = HttpCarriers::new(stack.http_timeout, stack.retry).context("building the HTTP client")?;
    Ok(Worker {
        store: store.shared(),
        queue: Arc::new(queue.clone()),
        notifier: Arc::new(OutboxNotifier { dir: stack.outbox.clone() }),
        carriers: Arc::new(carriers),
        clock: Arc::new(SystemClock),
        // Every worker on this database (this stack's, and any `bulkchange worker` process) shares each account's
        // pace through the store.
        limiters: Arc::new(RateLimiters::shared(store.shared())),
        metrics: Arc::new(engine::metrics::NoMetrics),
        recorder: Arc::new(engine::recorder::Recorder::new(store.shared(), config.write_batch)),
        webhooks: Some(stack.deliverer(&config.worker_id)),
        config,
    })
}

/// A worker loop on the embedded queue, as `serve` and `bulkchange worker` run it: up to `MESSAGES_IN_FLIGHT`
/// messages at once, new ones taken while earlier ones run. Ends when `shutdown` turns true; aborting it is a crash.
pub fn spawn_worker_loop(
    worker: Arc<Worker>,
    queue: SqliteQueue,
    mut shutdown: watch::Receiver<bool>,
    visibility: Duration,
    budget: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Owned by this task: when the loop dies (or is aborted, as a crash), its messages' work dies too.
        let mut work = tokio::task::JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // New messages are taken while earlier ones run: a small bulk change never waits for a large one.
            // A busy loop takes one at a time, so other worker processes on the file get their share (of a fan-out's
            // helper messages, say).
            let room = MESSAGES_IN_FLIGHT.saturating_sub(work.len()).min(if work.is_empty() { usize::MAX } else { 1 });
            if room > 0 {
                match queue.receive(room as u32, visibility).await {
                    Ok(messages) => {
                        for m in messages {
                            let (worker, queue) = (worker.clone(), queue.clone());
                            work.spawn(async move { consume(&worker, &queue, m, Instant::now() + budget).await });
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "queue receive failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                Some(_) = work.join_next(), if !work.is_empty() => {}
                _ = queue.wait(QUEUE_POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

/// One message: parsed on its own; a malformed one is logged and removed (in AWS it goes to the DLQ).
async fn consume(worker: &Worker, queue: &SqliteQueue, message: engine::ports::ReceivedMessage, deadline: Instant) {
    let parsed: Result<WorkMessage, _> = serde_json::from_str(&message.body);
    let Ok(work) = parsed else {
        error!(message_id = %message.message_id, body = %message.body, "malformed queue message dropped");
        let _ = queue.delete(&message.receipt).await;
        return;
    };
    match worker.handle(work, deadline).await {
        Ok(handled) => {
            info!(bulk_change_id = work.bulk_change_id, ?handled, "message handled");
            if let Err(e) = queue.delete(&message.receipt).await {
                warn!(error = %e, "could not delete a handled message; it will be delivered again, harmlessly");
            }
        }
        Err(e) => {
            error!(bulk_change_id = work.bulk_change_id, error = %e, "message failed; it will be delivered again")
        }
    }
}

async fn start_simulators(
    store: &StackStore,
    seed: Option<&Seed>,
    faults: &Faults,
    config: &StackConfig,
) -> Result<Simulators> {
    let thingspace = &config.thingspace_behaviour;
    let seed = seed.context("--simulators needs --seed: the simulators serve the seeded accounts")?;
    let mut sims = Simulators::default();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    for sp in &seed.service_providers {
        match Integration::from_id(sp.integration_id) {
            Some(i) if i.is_jasper_family() => {
                let mut account =
                    Account { username: sp.username.clone(), api_key: sp.secret.clone(), ..Default::default() };
                account.rate_plans.extend(
                    seed.carrier_rate_plans
                        .iter()
                        .filter(|p| p.service_provider_id == sp.id)
                        .map(|p| p.rate_plan_code.clone()),
                );
                for d in seed.devices.iter().filter(|d| d.service_provider_id == sp.id) {
                    account.devices.insert(
                        d.iccid.clone(),
                        SimDevice {
                            iccid: d.iccid.clone(),
                            status: d.status.to_ascii_uppercase(),
                            rate_plan: d.carrier_rate_plan.clone(),
                            communication_plan: d.communication_plan.clone(),
                            device_id: d.username.clone(),
                            imei: d.imei.clone(),
                            msisdn: d.msisdn.clone(),
                            ..Default::default()
                        },
                    );
                }
                let sim = ControlCenterSim::start(any, account, faults.clone())
                    .await
                    .context("starting a Control Center simulator")?;
                store.set_base_url(sp.id, &sim.base_url()).await?;
                info!(service_provider_id = sp.id, url = %sim.base_url(), "Control Center simulator started");
                sims.control_center.insert(sp.id, sim);
            }
            Some(Integration::RevIo) => {
                let customers = seed
                    .rev_customers
                    .iter()
                    .filter(|c| c.tenant_id == sp.tenant_id)
                    .filter_map(|c| {
                        c.rev_customer_id
                            .parse::<i64>()
                            .ok()
                            .map(|id| (id, RevCustomer { customer_id: id, name: c.name.clone() }))
                    })
                    .collect();
                let services = seed
                    .rev_services
                    .iter()
                    .filter(|r| r.tenant_id == sp.tenant_id)
                    .filter_map(|r| {
                        let customer_id = r.rev_customer_id.parse().ok()?;
                        Some((
                            r.rev_service_id,
                            simulators::rev_io::RevService {
                                service_id: r.rev_service_id,
                                customer_id,
                                provider_id: 0,
                                service_type_id: None,
                                number: None,
                                number2: Some(r.iccid.clone()),
                                usage_plan_group_id: None,
                                activated_date: None,
                                fields: Default::default(),
                                disconnected_date: None,
                            },
                        ))
                    })
                    .collect();
                let account = RevAccount {
                    services,
                    username: sp.username.clone(),
                    client_code: sp.client_code.clone().unwrap_or_default(),
                    password: sp.secret.clone(),
                    subscription_key: sp.subscription_key.clone().unwrap_or_default(),
                    customers,
                    ..Default::default()
                };
                let sim =
                    RevIoSim::start(any, account, Faults::default()).await.context("starting a Rev.io simulator")?;
                store.set_base_url(sp.id, &sim.base_url()).await?;
                info!(service_provider_id = sp.id, url = %sim.base_url(), "Rev.io simulator started");
                sims.rev_io.insert(sp.id, sim);
            }
            Some(Integration::ThingSpace) => {
                let settings =
                    sp.thing_space.as_ref().context("a ThingSpace service provider needs ThingSpace settings")?;
                let mut account = TsAccount::new(
                    &settings.account_name,
                    &settings.app_key,
                    &settings.app_secret,
                    &sp.username,
                    &sp.secret,
                );
                // Devices in our INVENTORY status are not on ThingSpace yet; the others are, in their state.
                for d in seed.devices.iter().filter(|d| d.service_provider_id == sp.id) {
                    let state = d.status.to_ascii_lowercase();
                    if state != "inventory" {
                        account =
                            account.with_device(&d.iccid, d.imei.as_deref(), &state, d.carrier_rate_plan.as_deref());
                    }
                }
                let sim = ThingSpaceSim::start(any, account, thingspace.clone())
                    .await
                    .context("starting a ThingSpace simulator")?;
                store.set_base_url(sp.id, &sim.base_url()).await?;
                info!(service_provider_id = sp.id, url = %sim.base_url(), "ThingSpace simulator started");
                sims.thingspace.insert(sp.id, sim);
            }
            Some(Integration::Telegence) => {
                // The app id and secret are the service provider's Username and Secret.
                let mut account = TgAccount::new(&sp.username, &sp.secret);
                for ban in seed.telegence_billing_accounts.iter().filter(|b| b.service_provider_id == sp.id) {
                    let fan = ban
                        .foundation_account_number
                        .clone()
                        .unwrap_or_else(|| format!("FAN-{}", ban.billing_account_number));
                    account = account.with_billing_account(&ban.billing_account_number, &fan);
                }
                // A device with a number has a line, in its status; one without is a SIM waiting for a new service.
                for d in seed.devices.iter().filter(|d| d.service_provider_id == sp.id) {
                    let Some(number) = d.msisdn.clone().filter(|m| !m.trim().is_empty()) else { continue };
                    account = account.with_line(TgLine {
                        subscriber_number: number,
                        status: d.status.to_ascii_uppercase(),
                        ban: seed
                            .telegence_billing_accounts
                            .iter()
                            .find(|b| b.service_provider_id == sp.id)
                            .map(|b| b.billing_account_number.clone())
                            .unwrap_or_default(),
                        iccid: d.iccid.clone(),
                        imei: d.imei.clone(),
                        plan: d.carrier_rate_plan.clone(),
                        zip: None,
                        features: Vec::new(),
                    });
                }
                let mut behaviour = config.telegence_behaviour.clone();
                behaviour.plans.extend(
                    seed.carrier_rate_plans
                        .iter()
                        .filter(|p| p.service_provider_id == sp.id)
                        .map(|p| p.rate_plan_code.clone()),
                );
                let sim =
                    TelegenceSim::start(any, account, behaviour).await.context("starting a Telegence simulator")?;
                sim.state.harness.set_faults(faults.clone());
                store.set_base_url(sp.id, &sim.base_url()).await?;
                info!(service_provider_id = sp.id, url = %sim.base_url(), "Telegence simulator started");
                sims.telegence.insert(sp.id, sim);
            }
            Some(Integration::Teal) => {
                // The API key and secret are the service provider's Username and Secret.
                let plans: Vec<_> = seed.carrier_rate_plans.iter().filter(|p| p.service_provider_id == sp.id).collect();
                let mut account = TealAccount::new(&sp.username, &sp.secret);
                for uuid in plans.iter().filter_map(|p| p.plan_uuid.as_deref()) {
                    account = account.with_plan(uuid);
                }
                // Each eSIM on its plan's uuid, data disabled when it is STOPPED.
                for d in seed.devices.iter().filter(|d| d.service_provider_id == sp.id) {
                    let Some(eid) = d.eid.as_deref().filter(|e| !e.trim().is_empty()) else { continue };
                    let plan = d
                        .carrier_rate_plan
                        .as_deref()
                        .and_then(|code| plans.iter().find(|p| p.rate_plan_code == code))
                        .and_then(|p| p.plan_uuid.as_deref());
                    account = account.with_esim(eid, &d.iccid, plan);
                    if let Some(esim) = account.esims.get_mut(eid) {
                        esim.suspended = d.status.eq_ignore_ascii_case("STOPPED");
                    }
                }
                let sim = TealSim::start(any, account, config.teal_behaviour.clone())
                    .await
                    .context("starting a Teal simulator")?;
                sim.state.harness.set_faults(faults.clone());
                store.set_base_url(sp.id, &sim.base_url()).await?;
                info!(service_provider_id = sp.id, url = %sim.base_url(), "Teal simulator started");
                sims.teal.insert(sp.id, sim);
            }
            Some(Integration::Pond) => {
                // The simulator answers on the provider's own wire settings (README "Teal and Pond").
                let settings_json = sp.carrier_settings.as_ref().map(|v| v.to_string());
                let settings = carriers::PondSettings::parse(settings_json.as_deref())
                    .map_err(|e| anyhow::anyhow!("Pond service provider {}: {e}", sp.id))?;
                let wire = PondWire {
                    api_key_header: settings.api_key_header.clone(),
                    packages_path: settings.packages_path.clone(),
                    package_status_path: settings.package_status_path.clone(),
                    service_status_path: settings.service_status_path.clone(),
                    package_status_key: settings.package_status_key.clone(),
                    services_key: settings.services_key.clone(),
                };
                let plans: Vec<_> = seed.carrier_rate_plans.iter().filter(|p| p.service_provider_id == sp.id).collect();
                let mut account = PondAccount::new(&sp.secret, &settings.distributor_id);
                for p in &plans {
                    if let Some(t) = p.jasper_rate_plan_id {
                        account = account.with_package_type(t, (p.plan_mb * 1024.0 * 1024.0) as u64);
                    }
                }
                // Each SIM is on the package of its plan, its services enabled unless it is INACTIVE.
                for d in seed.devices.iter().filter(|d| d.service_provider_id == sp.id) {
                    let package_type = d
                        .carrier_rate_plan
                        .as_deref()
                        .and_then(|code| plans.iter().find(|p| p.rate_plan_code == code))
                        .and_then(|p| p.jasper_rate_plan_id);
                    account = account.with_sim(&d.iccid, package_type);
                    if let Some(sim) = account.sims.get_mut(&d.iccid) {
                        sim.services_enabled = !d.status.eq_ignore_ascii_case("INACTIVE");
                    }
                }
                let sim = PondSim::start(any, account, wire, config.pond_behaviour.clone())
                    .await
                    .context("starting a Pond simulator")?;
                sim.state.harness.set_faults(faults.clone());
                store.set_base_url(sp.id, &sim.base_url()).await?;
                info!(service_provider_id = sp.id, url = %sim.base_url(), "Pond simulator started");
                sims.pond.insert(sp.id, sim);
            }
            _ => warn!(service_provider_id = sp.id, "no simulator for this integration yet"),
        }
    }
    Ok(sims)
}

/// Sends work for a bulk change (tests use it to deliver a message twice).
pub async fn enqueue(queue: &SqliteQueue, bulk_change_id: i64) -> Result<()> {
    queue.send(&WorkMessage::new(bulk_change_id), Duration::ZERO).await.map_err(anyhow::Error::from)
}

pub fn store_handle(stack: &Stack) -> Arc<dyn Store> {
    stack.store.shared()
}
