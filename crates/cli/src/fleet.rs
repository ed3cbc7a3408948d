//! `make bench`'s fleet figures: N `bulkchange worker` processes (the Lambda worker's code path, each its own OS
//! process) on one SQLite file and queue, against Control Center simulators in processes of their own. One large
//! bulk change alone, two accounts at once, a small bulk change beside a large one, a worker killed with SIGKILL
//! mid-run, a carrier-less change of 10,000 devices, and one process alone against a fast carrier (the engine's
//! ceiling). Prints `name=value` ratios measured in this run; never fails on a number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use engine::ports::{Queue, WorkMessage};
use engine::{Handled, WorkerConfig};
use store::migrate::ScratchDatabase;
use store::seed::{SeedCustomerPlan, SeedDevice, SeedServiceProvider, SeedTenant};
use store::{MssqlStore, Seed, SqliteQueue, SqliteStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::StackStore;
use crate::bench::bench_iccid;
use crate::stack::{StackConfig, local_worker};

pub struct FleetOptions {
    pub workers: usize,
    /// Each account's limit (calls a second) in the fleet runs.
    pub rate_limit: f64,
    pub latency_ms: u64,
    /// The fast carrier of the engine-ceiling run.
    pub ceiling_rate_limit: f64,
    /// The lease the fleet's workers hold rows with (the take-over is measured against it).
    pub lease_seconds: u64,
    /// Measure the engine's ceiling only (no fleet processes).
    pub ceiling_only: bool,
    /// The SQL Server the runs use (an ADO connection string; the bench works in a scratch database of its own
    /// beside the one it names, and drops it after). `None`: a SQLite file in a temporary folder.
    pub sql_server: Option<String>,
    /// Audit entries and row outcomes written in one transaction (`WORKER_WRITE_BATCH`; 1: one at a time).
    pub write_batch: usize,
}

const BIG: usize = 10_000;
const SMALL_DEVICE: usize = BIG;
const TWO_ACCOUNTS: usize = 5_000;
const TAKEOVER: usize = 3_000;
/// The fleet's warm-up before its timed runs: bulk changes of account 1 as many as there are workers, so that
/// each worker process likely opens its connections and compiles its procedures (Babelfish) before the clock runs.
const FLEET_WARM_UP: usize = 2_000;
/// Account 1's devices: the big run, the small one, the two-account run, the take-over run, the warm-up.
const ACCOUNT_1_DEVICES: usize = BIG + 1 + TWO_ACCOUNTS + TAKEOVER + FLEET_WARM_UP;
const CEILING: usize = 10_000;
/// The ceiling run's warm-up before it is timed (its devices follow the ceiling's): the worker's pool opens its
/// connections and, on Babelfish, each connection compiles the procedures it calls (once per connection, about
/// 1.5 s of server CPU for the claim and the group write; SQL Server caches plans for the whole server).
const WARM_UP: usize = 2_000;

/// A simulator process and its base URL.
struct Sim {
    child: Child,
    url: String,
}

async fn start_sim(exe: &Path, devices: usize, latency_ms: u64, rate_limit: f64) -> Result<Sim> {
    let mut child = Command::new(exe)
        .args(["simulate", "--bench-devices", &devices.to_string(), "--latency-ms", &latency_ms.to_string()])
        .args(["--rate-limit", &rate_limit.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a simulator process")?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if let Some(url) = line.strip_prefix("control_center_url=") {
                    return Ok(Sim { child, url: url.to_string() });
                }
            }
            _ => bail!("a simulator process did not print its URL"),
        }
    }
}

impl Sim {
    /// When each call arrived (ms since the simulator started) and how many were throttled.
    async fn calls(&self) -> Result<(Vec<u64>, usize)> {
        let admin = format!("{}/_sim/calls", self.url.trim_end_matches(simulators::control_center::API_PREFIX));
        let calls: Vec<simulators::RecordedCall> = reqwest::get(&admin).await?.json().await?;
        let throttled = calls.iter().filter(|c| c.status == 429).count();
        let mut at: Vec<u64> = calls.iter().filter(|c| c.status != 429).map(|c| c.at_ms).collect();
        at.sort_unstable();
        Ok((at, throttled))
    }
}

/// The most calls in any one-second window (half-open) of arrival times in ms.
fn busiest_second(at_ms: &[u64]) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..at_ms.len() {
        while at_ms[end] - at_ms[start] >= 1000 {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn seed(urls: [&str; 3], opts: &FleetOptions) -> Seed {
    let sp = |id: i64, url: &str, rate: f64| SeedServiceProvider {
        name: format!("POD19 fleet {id}"),
        base_url: url.to_string(),
        username: "bench".into(),
        secret: "bench-key".into(),
        rate_limit_per_second: rate,
        ..SeedServiceProvider::new(id, id, 9)
    };
    let devices = |tenant: i64, n: usize| {
        (0..n).map(move |i| SeedDevice {
            carrier_rate_plan: Some("RP-1GB".into()),
            ..SeedDevice::new(tenant, tenant, bench_iccid(i), "ACTIVATION_READY")
        })
    };
    Seed {
        tenants: (1..=3).map(|id| SeedTenant { id, name: format!("Fleet {id}") }).collect(),
        service_providers: vec![
            sp(1, urls[0], opts.rate_limit),
            sp(2, urls[1], opts.rate_limit),
            sp(3, urls[2], opts.ceiling_rate_limit),
        ],
        customer_rate_plans: vec![SeedCustomerPlan { id: 1, tenant_id: 1, name: "Fleet plan".into() }],
        devices: devices(1, ACCOUNT_1_DEVICES)
            .chain(devices(2, TWO_ACCOUNTS))
            .chain(devices(3, CEILING + WARM_UP))
            .collect(),
        ..Default::default()
    }
}

/// Records a bulk change as the API does and queues it; returns its id.
async fn submit(store: &StackStore, queue: &SqliteQueue, tenant: i64, body: serde_json::Value) -> Result<i64> {
    let caller = api::Caller { tenant_id: tenant, user: "fleet".into(), roles: vec![] };
    let intake = api::intake::evaluate(&**store, &caller, body.to_string().as_bytes(), 20_000)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = store.create_bulk_change(&intake.change, &intake.rows).await?.id;
    queue.send(&WorkMessage::new(id), Duration::ZERO).await?;
    Ok(id)
}

fn activation(tenant: i64, devices: std::ops::Range<usize>) -> serde_json::Value {
    serde_json::json!({"ServiceProviderId": tenant, "ChangeType": 3, "Devices": devices.map(bench_iccid).collect::<Vec<_>>(),
                       "StatusUpdate": {"TargetStatus": "Active"}})
}

async fn wait_final(store: &StackStore, id: i64, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if store.bulk_change(None, id).await?.is_some_and(|b| b.status.is_final()) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("bulk change {id} did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_worker(exe: &Path, db: &Database, outbox: &Path, id: usize, opts: &FleetOptions) -> Result<Child> {
    Command::new(exe)
        .args(["worker", "--database"])
        .arg(&db.url)
        .arg("--queue")
        .arg(&db.queue)
        .arg("--outbox")
        .arg(outbox)
        .args(["--worker-id", &format!("fleet-{id}")])
        .env("WORKER_LEASE_SECONDS", opts.lease_seconds.to_string())
        .env("WORKER_MAXIMUM_CONCURRENCY", opts.workers.to_string())
        .env("WORKER_WRITE_BATCH", opts.write_batch.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")
}

pub async fn run(opts: FleetOptions) -> Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let (a, b, fast) = tokio::try_join!(
        start_sim(&exe, ACCOUNT_1_DEVICES, opts.latency_ms, opts.rate_limit),
        start_sim(&exe, TWO_ACCOUNTS, opts.latency_ms, opts.rate_limit),
        start_sim(&exe, CEILING + WARM_UP, opts.latency_ms, opts.ceiling_rate_limit),
    )?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let outbox = dir.path().join("outbox");
    let db = Database::open(&opts, dir.path()).await?;
    let store = db.store.clone();
    let seeding = Instant::now();
    store.load_seed(seed([&a.url, &b.url, &fast.url], &opts)).await?;
    println!("store={}", db.kind);
    println!("write_batch={}", opts.write_batch);
    println!(
        "seed_devices_per_second={:.0}",
        (ACCOUNT_1_DEVICES + TWO_ACCOUNTS + CEILING) as f64 / seeding.elapsed().as_secs_f64()
    );
    let queue = crate::stack::local_queue(&store, &db.queue)?;
    let result = runs(&exe, &db, &store, &queue, &outbox, [&a, &b], &opts).await;
    for mut sim in [a, b, fast] {
        let _ = sim.child.start_kill();
        let _ = sim.child.wait().await;
    }
    db.close().await;
    result
}

/// The database of the fleet runs and where its worker processes find it.
struct Database {
    kind: &'static str,
    store: StackStore,
    /// What the worker processes get as `--database`.
    url: String,
    /// The local queue file (with SQL Server; with SQLite the queue lives in the database file).
    queue: PathBuf,
    scratch: Option<ScratchDatabase>,
}

impl Database {
    async fn open(opts: &FleetOptions, dir: &Path) -> Result<Self> {
        let queue = dir.join("queue.db");
        match &opts.sql_server {
            None => {
                let path = dir.join("fleet.db");
                let store = StackStore::Sqlite(SqliteStore::open(&path)?);
                Ok(Self { kind: "sqlite", store, url: path.display().to_string(), queue, scratch: None })
            }
            Some(server) => {
                let scratch = ScratchDatabase::create(server, "bench").await.context("creating the bench database")?;
                let store =
                    MssqlStore::connect(&scratch.url, POOL).await.context("connecting to the bench database")?;
                store.migrate(None).await.context("applying infra/sql to the bench database")?;
                let store = StackStore::SqlServer(Arc::new(store));
                Ok(Self { kind: "sqlserver", store, url: scratch.url.clone(), queue, scratch: Some(scratch) })
            }
        }
    }

    async fn close(self) {
        if let StackStore::SqlServer(s) = &self.store {
            engine::ports::Store::close(s.as_ref()).await;
        }
        drop(self.store);
        if let Some(scratch) = self.scratch {
            scratch.drop_database().await;
        }
    }
}

/// Connections of the bench process's SQL Server pool (the worker processes have their own).
const POOL: usize = 16;

#[allow(clippy::too_many_arguments)]
async fn runs(
    exe: &Path,
    db: &Database,
    store: &StackStore,
    queue: &SqliteQueue,
    outbox: &Path,
    [a, b]: [&Sim; 2],
    opts: &FleetOptions,
) -> Result<()> {
    // The engine's ceiling: one process, one bulk change, a carrier fast enough that only the engine limits it.
    let (warm_up, ceiling, trips) = engine_ceiling(store, queue, opts).await?;
    println!("engine_ceiling_rate_limit={}", opts.ceiling_rate_limit);
    println!(
        "engine_ceiling_warm_up_ratio_to_limit={:.3}",
        WARM_UP as f64 / warm_up.as_secs_f64() / opts.ceiling_rate_limit
    );
    println!("engine_ceiling_devices_per_second={:.1}", CEILING as f64 / ceiling.as_secs_f64());
    println!("engine_ceiling_ratio_to_limit={:.3}", CEILING as f64 / ceiling.as_secs_f64() / opts.ceiling_rate_limit);
    println!("engine_ceiling_round_trips_per_row={:.2}", trips as f64 / CEILING as f64);
    if opts.ceiling_only {
        return Ok(());
    }

    let mut workers: Vec<Child> =
        (0..opts.workers).map(|i| spawn_worker(exe, db, outbox, i, opts)).collect::<Result<_>>()?;
    println!("fleet_workers={}", opts.workers);
    println!("fleet_rate_limit={}", opts.rate_limit);
    println!("fleet_lease_seconds={}", opts.lease_seconds);
    let limit = Duration::from_secs(600);

    // The warm-up (not timed in the figures below): one bulk change per worker, at once.
    let warm_up_from = ACCOUNT_1_DEVICES - FLEET_WARM_UP;
    let per_worker = FLEET_WARM_UP / opts.workers.max(1);
    let started = Instant::now();
    let mut warm_ups = Vec::new();
    for w in 0..opts.workers.max(1) {
        let first = warm_up_from + w * per_worker;
        warm_ups.push(submit(store, queue, 1, activation(1, first..first + per_worker)).await?);
    }
    for id in warm_ups {
        wait_final(store, id, limit).await?;
    }
    println!("fleet_warm_up_seconds={:.2}", started.elapsed().as_secs_f64());

    // One large bulk change alone, and a one-device bulk change of the same account submitted while it runs.
    // Timed from its acceptance, as the single-process figure is (the intake is measured on its own).
    let big = submit(store, queue, 1, activation(1, 0..BIG)).await?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let small = submit(store, queue, 1, activation(1, SMALL_DEVICE..SMALL_DEVICE + 1)).await?;
    let small_took = wait_final(store, small, limit).await?;
    wait_final(store, big, limit).await?;
    let big_took = start.elapsed();
    println!("fleet_single_bulk_devices={BIG}");
    println!("fleet_single_bulk_ratio_to_limit={:.3}", BIG as f64 / big_took.as_secs_f64() / opts.rate_limit);
    println!("fleet_small_bulk_seconds={:.2}", small_took.as_secs_f64());

    // Two accounts at once, each against its own limit.
    let first = SMALL_DEVICE + 1;
    let one = submit(store, queue, 1, activation(1, first..first + TWO_ACCOUNTS)).await?;
    let one_accepted = Instant::now();
    let two = submit(store, queue, 2, activation(2, 0..TWO_ACCOUNTS)).await?;
    let since_one = one_accepted.elapsed();
    let (took_one, took_two) = tokio::try_join!(wait_final(store, one, limit), wait_final(store, two, limit))?;
    let took_one = took_one + since_one;
    let ratio = |took: Duration| TWO_ACCOUNTS as f64 / took.as_secs_f64() / opts.rate_limit;
    println!("fleet_two_accounts_min_ratio={:.3}", ratio(took_one).min(ratio(took_two)));

    // A worker killed with SIGKILL mid-run: how long its rows sit before others work them again.
    let first = SMALL_DEVICE + 1 + TWO_ACCOUNTS;
    let doomed = submit(store, queue, 1, activation(1, first..first + TAKEOVER)).await?;
    let victim = loop {
        let holders = store.lease_holders(doomed).await?;
        if let Some((owner, _)) = holders.iter().filter(|(o, _)| o.starts_with("fleet-")).max_by_key(|(_, n)| *n) {
            break owner.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let index: usize = victim.trim_start_matches("fleet-").parse().context("worker id")?;
    workers[index].start_kill().context("killing a worker")?;
    let killed = Instant::now();
    while store.lease_holders(doomed).await?.iter().any(|(o, _)| *o == victim) {
        if killed.elapsed() > limit {
            bail!("the killed worker's rows were never taken over");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("fleet_takeover_seconds={:.2}", killed.elapsed().as_secs_f64());
    println!("fleet_takeover_leases={:.2}", killed.elapsed().as_secs_f64() / opts.lease_seconds as f64);
    wait_final(store, doomed, limit).await?;

    // A carrier-less change of 10,000 devices, end to end through the queue.
    let start = Instant::now();
    let devices: Vec<String> = (0..BIG).map(bench_iccid).collect();
    let plan = serde_json::json!({"ServiceProviderId": 1, "ChangeType": 4, "Devices": devices,
                                  "CustomerRatePlanUpdate": {"CustomerRatePlanId": 1}});
    let carrierless = submit(store, queue, 1, plan).await?;
    wait_final(store, carrierless, limit).await?;
    println!("carrierless_10000_rows_seconds={:.2}", start.elapsed().as_secs_f64());

    let mut busiest = 0.0f64;
    let mut throttled = 0;
    for sim in [&a, &b] {
        let (at, t) = sim.calls().await?;
        busiest = busiest.max(busiest_second(&at) as f64 / opts.rate_limit);
        throttled += t;
    }
    println!("fleet_max_calls_in_any_second_ratio={busiest:.3}");
    println!("fleet_throttled_calls={throttled}");
    let counts = processed_per_status(store, &[big, small, one, two, doomed, carrierless]).await?;
    println!(
        "fleet_rows_not_processed={}",
        counts.iter().filter(|(s, _)| s.as_str() != "PROCESSED").map(|(_, n)| n).sum::<i64>()
    );
    for mut w in workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
    Ok(())
}

async fn processed_per_status(store: &StackStore, ids: &[i64]) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let bulk = store.bulk_change(None, *id).await?.context("bulk change")?;
        for c in store.row_counts(bulk.tenant_id, *id).await? {
            *out.entry(c.status.as_str().to_string()).or_insert(0) += c.count;
        }
    }
    Ok(out)
}

/// One worker process alone (this one) on one bulk change of `CEILING` devices against the fast carrier, after a
/// warm-up bulk change of `WARM_UP` devices on the same worker: how long each took, and the store's round trips
/// of the timed one.
async fn engine_ceiling(
    store: &StackStore,
    queue: &SqliteQueue,
    opts: &FleetOptions,
) -> Result<(Duration, Duration, u64)> {
    let caller = api::Caller { tenant_id: 3, user: "fleet".into(), roles: vec![] };
    let mut stack = StackConfig::local(PathBuf::new(), std::env::temp_dir(), String::new());
    stack.apply(engine::Settings::from_env()?);
    let config = WorkerConfig {
        fan_out: 0,
        lease: Duration::from_secs(opts.lease_seconds.max(3)),
        write_batch: opts.write_batch,
        ..stack.worker.clone()
    };
    let worker = Arc::new(local_worker(store, queue, &stack, config)?);
    let mut took = Vec::new();
    for devices in [CEILING..CEILING + WARM_UP, 0..CEILING] {
        let body = activation(3, devices).to_string();
        let intake = api::intake::evaluate(&**store, &caller, body.as_bytes(), 20_000)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = store.create_bulk_change(&intake.change, &intake.rows).await?.id;
        let (start, trips) = (Instant::now(), store.round_trips());
        let handled = worker.handle(WorkMessage::new(id), Instant::now() + Duration::from_secs(3600)).await?;
        if !matches!(handled, Handled::Finished(_)) {
            bail!("the ceiling run ended {handled:?}");
        }
        took.push((start.elapsed(), store.round_trips() - trips));
    }
    Ok((took[0].0, took[1].0, took[1].1))
}
