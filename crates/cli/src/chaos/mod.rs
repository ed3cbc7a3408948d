//! The seeded fault sweep (issue 20, `make chaos`): for each seed, a local stack on a fresh SQLite file whose carrier
//! simulators answer with faults drawn from the seed, bulk changes of every carrier submitted by concurrent
//! operators (some cancelled right after, the failed rows of some retried as soon as they are final), worker processes killed with SIGKILL and restarted, and then invariants
//! checked against the simulators' own state and call records, not our database.
//!
//! Faults, by the seed, on every carrier: latency; 429 with and without `Retry-After`; 500 before applying; a write
//! applied then answered 502, answered 200 with an empty body, or cut half-way through its body; a write applied then
//! hung past the client's timeout; callbacks (ThingSpace, Teal) dropped, duplicated, delayed or reordered.
//!
//! Invariants, each carrier in its own module (`control_center`, `pond`, `teal`, `telegence`, `thingspace`):
//! - every row is final;
//! - a PROCESSED row's device shows the change on the carrier;
//! - a row that did not succeed while the carrier shows its change says it may have been applied (a lost answer, an
//!   unknown outcome) rather than that it failed;
//! - no change applied twice (no second applied write of the same change to the same device);
//! - Pond: no SIM without an active package, and a row whose SIM has two says it is billed for both;
//! - Rev.io (`rev_io`): one service line per device and customer;
//!
//! and across carriers (here): the counts of every bulk change add up to its rows, every row the carrier changed
//! has an audit entry, one failure e-mail per bulk change that has failures, and nothing of the other tenant touched.
//!
//! The same seed draws the same faults, behaviours and requests; each seed's schedule is written to
//! `<record>/seed-<n>.json`, and a failing seed is printed as `make chaos SEED=<n>`. Which call meets the n-th fault
//! also depends on timing (workers and carriers run concurrently), so a replay draws the same schedule, not
//! always the same interleaving: the recorded schedule says what was drawn.

mod control_center;
mod pond;
mod rev_io;
mod teal;
mod telegence;
mod thingspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use simulators::Faults;
use simulators::common::Harness;
use store::Seed;
use store::seed::SeedTenant;

use crate::demo::wait_final_by;
use crate::stack::{Stack, StackConfig};

const SECRET: &str = "chaos-only-tokens-are-minted-here-0123456789";

pub struct ChaosOptions {
    pub first_seed: u64,
    pub seeds: u64,
    /// Devices of each carrier's account.
    pub devices: usize,
    /// Worker processes (`bulkchange worker`) beside the stack, killed and restarted by the seed; 0 works every
    /// bulk change in the stack's own worker and kills nothing.
    pub workers: usize,
    /// The `bulkchange` binary the worker processes run (this one when it is `bulkchange`).
    pub worker_exe: Option<PathBuf>,
    /// Where each seed's drawn schedule is written (none: not written).
    pub record: Option<PathBuf>,
    /// A SQL Server (T-SQL engine) connection string: the sweep runs on the production adapter, in a scratch
    /// database migrated once and wiped before each seed (none: a fresh SQLite file per seed).
    pub sql_server: Option<String>,
    /// The bound of "every row final": each bulk change final within it of its submission (none: 60 s on SQLite,
    /// 180 s on SQL Server, whose worker processes take seconds to start after each kill).
    pub final_within: Option<Duration>,
}

/// What one seed did and found.
#[derive(Default)]
pub(crate) struct Report {
    bulk_changes: usize,
    rows: usize,
    carrier_calls: usize,
    kills: usize,
    /// Rows by change type and final state (`7:PROCESSED`): what the sweep exercised.
    states: BTreeMap<String, usize>,
    faults: BTreeMap<String, u64>,
    violations: Vec<String>,
    /// From the submissions until every bulk change (retries included) was seen final.
    all_final_after: Duration,
}

impl Report {
    pub(crate) fn violation(&mut self, text: String) {
        self.violations.push(text);
    }

    /// The calls and injected faults of one simulator.
    fn count(&mut self, harness: &Harness) {
        self.carrier_calls += harness.calls().len();
        for (kind, n) in harness.injected_counts() {
            *self.faults.entry(kind.to_string()).or_default() += n;
        }
    }
}

/// One bulk change as it was submitted and as it ended.
pub(crate) struct Finished {
    pub id: i64,
    pub body: Value,
    pub status: Value,
}

/// One row of a finished bulk change.
pub(crate) struct Row<'a> {
    pub id: i64,
    pub iccid: &'a str,
    pub state: &'a str,
    pub details: &'a str,
}

impl Row<'_> {
    /// Its reason admits the change may have been applied (a lost answer, an unknown outcome, read back).
    pub fn admits_unknown(&self) -> bool {
        let d = self.details.to_lowercase();
        ["may", "unknown", "lost", "already"].iter().any(|w| d.contains(w))
    }

    /// Refused because another bulk change holds the device: it made no call.
    pub fn held_elsewhere(&self) -> bool {
        self.details.contains("has an open")
    }

    /// It made no carrier call: another bulk change held the device, it was cancelled before it started, or its
    /// device was archived or had its ICCID swapped away before it ran (refused before any call).
    pub fn made_no_call(&self) -> bool {
        self.held_elsewhere()
            || self.state == "CANCELLED"
            || (self.state == "ERROR" && (self.details.contains("archived") || self.details.contains("was not found")))
    }

    pub fn is_final(&self) -> bool {
        ["PROCESSED", "API_FAILED", "ERROR", "CANCELLED"].contains(&self.state)
    }
}

impl Finished {
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.status["Rows"].as_array().into_iter().flatten().map(|row| Row {
            id: row["Id"].as_i64().unwrap_or_default(),
            iccid: row["ICCID"].as_str().unwrap_or_default(),
            state: row["Status"].as_str().unwrap_or_default(),
            details: row["StatusDetails"].as_str().unwrap_or_default(),
        })
    }

    pub fn change_type(&self) -> i64 {
        self.body["ChangeType"].as_i64().unwrap_or_default()
    }

    pub fn service_provider(&self) -> i64 {
        self.body["ServiceProviderId"].as_i64().unwrap_or_default()
    }

    /// Checks every row is final; the rows' count.
    fn check_final(&self, report: &mut Report) {
        for row in self.rows() {
            if !row.is_final() {
                report.violation(format!("bulk change {}: row of {} is not final ({})", self.id, row.iccid, row.state));
            }
        }
    }
}

/// The two invariants every carrier's rows keep: a PROCESSED row's device shows the change on `carrier`, and a row
/// that did not succeed while the carrier shows its change (`shows`) says it may have been applied, unless it made no
/// call, the change was there before it (`already_so`), or another bulk change's row did it or says it may have.
pub(crate) fn check_row(
    report: &mut Report,
    finished: &[&Finished],
    f: &Finished,
    row: &Row<'_>,
    carrier: &str,
    shows: bool,
    already_so: bool,
) {
    if row.state == "PROCESSED" && !shows {
        trace(finished, row.iccid);
        report.violation(format!(
            "bulk change {}: {} PROCESSED but {carrier} does not show it: \"{}\"",
            f.id, row.iccid, row.details
        ));
    }
    if row.state != "PROCESSED"
        && shows
        && !already_so
        && !row.made_no_call()
        && !row.admits_unknown()
        && !maybe_done_elsewhere(finished, f.id, f.change_type(), row.iccid)
    {
        trace(finished, row.iccid);
        report.violation(format!(
            "bulk change {}: {} {} \"{}\" but {carrier} shows the change",
            f.id, row.iccid, row.state, row.details
        ));
    }
}

/// Every audit entry of the rows of `iccid` (with `CHAOS_TRACE`): what each call was and how it ended.
async fn trace_audit(stack: &Stack, finished: &[&Finished], iccid: &str) {
    for f in finished {
        let rows: Vec<i64> = f.rows().filter(|r| r.iccid == iccid).map(|r| r.id).collect();
        if rows.is_empty() {
            continue;
        }
        let Ok(logs) = stack.store.logs(1, f.id).await else { continue };
        for l in logs.iter().filter(|l| l.device_change_id.is_some_and(|id| rows.contains(&id))) {
            eprintln!(
                "  audit {iccid}: bulk change {} at {}: {} [{}] {}",
                f.id,
                l.processed_date.format("%H:%M:%S%.3f"),
                l.description,
                l.response_status,
                l.error_text.as_deref().unwrap_or("")
            );
        }
    }
}

/// The rows of a change that only our database holds (no carrier keeps it): the database is the witness, by `shows`
/// of each row's device, under `check_row`'s rules.
pub(crate) async fn check_in_database(
    stack: &Stack,
    finished: &[&Finished],
    service_provider: i64,
    change_type: i64,
    shows: impl Fn(&domain::rules::DeviceRecord) -> bool,
    report: &mut Report,
) -> Result<()> {
    for f in finished.iter().filter(|f| f.service_provider() == service_provider && f.change_type() == change_type) {
        for row in f.rows() {
            let Some(device) = stack.store.device_by_iccid(1, row.iccid).await.context("reading a device")? else {
                continue;
            };
            check_row(report, finished, f, &row, "the database", shows(&device), false);
        }
    }
    Ok(())
}

/// Every row of `iccid` in `finished`, oldest bulk change first: printed with a violation when `CHAOS_TRACE` is set.
pub(crate) fn trace(finished: &[&Finished], iccid: &str) {
    if std::env::var_os("CHAOS_TRACE").is_none() {
        return;
    }
    for f in finished {
        for r in f.rows().filter(|r| r.iccid == iccid) {
            eprintln!("  trace {iccid}: bulk change {} type {}: {} \"{}\"", f.id, f.change_type(), r.state, r.details);
        }
    }
}

/// Which of the SIMs `bench_iccid(from + i)`, `i` below `devices`, `iccid` is.
pub(crate) fn sim_index(iccid: &str, from: usize, devices: usize) -> Option<usize> {
    (0..devices).find(|i| crate::bench::bench_iccid(from + i) == iccid)
}

/// How many of `finished` bulk changes of `change_type` named `iccid`: the most times its change may be applied.
pub(crate) fn times_asked(finished: &[&Finished], change_type: i64, iccid: &str) -> usize {
    finished.iter().filter(|f| f.change_type() == change_type && f.rows().any(|r| r.iccid == iccid)).count()
}

/// Another of `finished` (not `me`) has a PROCESSED row of `change_type` for `iccid`: the carrier showing that
/// change says nothing of `me`'s row.
pub(crate) fn done_elsewhere(finished: &[&Finished], me: i64, change_type: i64, iccid: &str) -> bool {
    finished.iter().any(|f| {
        f.id != me && f.change_type() == change_type && f.rows().any(|r| r.iccid == iccid && r.state == "PROCESSED")
    })
}

/// Another of `finished` (not `me`) has a row of `change_type` for `iccid` that did it (PROCESSED) or says it may
/// have (a lost answer, an unconfirmed write): the carrier showing that change says nothing of `me`'s row
/// (`make chaos SEED=155`: a username throttled to the end, while another operator's, unconfirmed, took).
pub(crate) fn maybe_done_elsewhere(finished: &[&Finished], me: i64, change_type: i64, iccid: &str) -> bool {
    done_elsewhere(finished, me, change_type, iccid)
        || finished.iter().any(|f| {
            f.id != me
                && f.change_type() == change_type
                && f.rows().any(|r| r.iccid == iccid && r.admits_unknown() && !r.made_no_call())
        })
}

/// `rounds` random, overlapping picks of the SIMs `bench_iccid(from + i)` for `i` below `devices`, each with a
/// coin toss that chooses its change; empty picks dropped.
pub(crate) fn picks(
    rng: &mut fastrand::Rng,
    devices: usize,
    from: usize,
    rounds: std::ops::Range<usize>,
) -> Vec<(Vec<String>, bool)> {
    let mut picks = Vec::new();
    for _ in 0..rng.usize(rounds) {
        let picked: Vec<String> =
            (0..devices).filter(|_| rng.bool()).map(|i| crate::bench::bench_iccid(from + i)).collect();
        let coin = rng.bool();
        if !picked.is_empty() {
            picks.push((picked, coin));
        }
    }
    picks
}

/// A later bulk change (a retry, or another operator's) has a row for `iccid` that reached the carrier: the word
/// on what the carrier shows now is that row's, not `me`'s.
pub(crate) fn spoken_later(finished: &[&Finished], me: i64, iccid: &str) -> bool {
    finished.iter().any(|f| f.id > me && f.rows().any(|r| r.iccid == iccid && !r.made_no_call() && r.state != "ERROR"))
}

/// Faults drawn for one simulator.
fn draw_faults(rng: &mut fastrand::Rng) -> Faults {
    Faults {
        latency_ms: rng.u64(0..15),
        fail_every: [0, 0, 3, 4, 5, 7][rng.usize(..6)],
        apply_then_fail_next_writes: rng.u32(0..5),
        hang_next_writes: rng.u32(0..3),
        hang_ms: 1_500,
        empty_next_writes: rng.u32(0..3),
        truncate_next_writes: rng.u32(0..3),
        // A throttling carrier one seed in four, with or without a Retry-After.
        rate_limit_per_second: (rng.u8(..4) == 0).then(|| f64::from(rng.u32(20..60))),
        retry_after_seconds: rng.u64(0..2),
        ..Faults::default()
    }
}

async fn submit(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Result<(u16, Value)> {
    let answer = http.post(format!("{base}/M2M/BulkChange")).bearer_auth(token).json(body).send().await?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().await.unwrap_or(Value::Null)))
}

pub async fn run(opts: ChaosOptions) -> Result<()> {
    let scratch = match &opts.sql_server {
        Some(server) => {
            let scratch = store::migrate::ScratchDatabase::create(server, "chaos")
                .await
                .context("creating the sweep's database")?;
            let store = store::MssqlStore::connect(&scratch.url, 1).await.context("connecting to it")?;
            store.migrate(None).await.context("applying infra/sql to it")?;
            engine::ports::Store::close(&store).await;
            Some(scratch)
        }
        None => None,
    };
    let result = sweep(&opts, scratch.as_ref().map(|s| s.url.as_str())).await;
    if let Some(scratch) = scratch {
        scratch.drop_database().await;
    }
    result
}

async fn sweep(opts: &ChaosOptions, sql_server: Option<&str>) -> Result<()> {
    let mut total = Report::default();
    let mut failing = Vec::new();
    println!("store={}", if sql_server.is_some() { "sqlserver" } else { "sqlite" });
    for seed in opts.first_seed..opts.first_seed + opts.seeds {
        // A seed that cannot finish (a bulk change never final within the bound, a worker that cannot start) is a
        // violation of its own, reported like the others; the sweep goes on.
        let report = match one(seed, opts, sql_server).await {
            Ok(report) => report,
            Err(e) => Report { violations: vec![format!("the seed did not finish: {e:#}")], ..Report::default() },
        };
        println!(
            "seed={seed} bulk_changes={} rows={} carrier_calls={} kills={} all_final_after_s={:.1} faults={:?} violations={}",
            report.bulk_changes,
            report.rows,
            report.carrier_calls,
            report.kills,
            report.all_final_after.as_secs_f64(),
            report.faults,
            report.violations.len()
        );
        for v in &report.violations {
            println!("  violation: {v}");
            failing.push(format!("make chaos SEED={seed}: {v}"));
        }
        total.bulk_changes += report.bulk_changes;
        total.rows += report.rows;
        total.carrier_calls += report.carrier_calls;
        total.kills += report.kills;
        total.all_final_after = total.all_final_after.max(report.all_final_after);
        for (kind, n) in report.faults {
            *total.faults.entry(kind).or_default() += n;
        }
        for (state, n) in report.states {
            *total.states.entry(state).or_default() += n;
        }
    }
    println!("rows by change type and state: {:?}", total.states);
    println!(
        "seeds={} bulk_changes={} rows={} carrier_calls={} kills={} slowest_all_final_s={:.1} faults={:?} violations={}",
        opts.seeds,
        total.bulk_changes,
        total.rows,
        total.carrier_calls,
        total.kills,
        total.all_final_after.as_secs_f64(),
        total.faults,
        failing.len()
    );
    if !failing.is_empty() {
        for f in &failing {
            eprintln!("{f}");
        }
        bail!("{} invariant violation(s); replay a seed with the line above", failing.len());
    }
    Ok(())
}

/// The accounts of every carrier, tenant 1's, and one Control Center account of tenant 2 that nothing may touch.
fn seed_data(devices: usize) -> Seed {
    let mut seed = Seed {
        tenants: vec![SeedTenant { id: 1, name: "Chaos".into() }, SeedTenant { id: 2, name: "Bystander".into() }],
        ..Default::default()
    };
    control_center::seed(&mut seed, devices);
    pond::seed(&mut seed, devices);
    rev_io::seed(&mut seed);
    teal::seed(&mut seed, devices);
    telegence::seed(&mut seed, devices);
    thingspace::seed(&mut seed, devices);
    seed
}

/// The worker processes of one seed, killed and restarted by it.
struct Workers {
    exe: PathBuf,
    /// Their `--database`: the SQLite file, or the SQL Server connection string.
    database: String,
    /// Their `--queue` with SQL Server (the stack's local queue file).
    queue: Option<PathBuf>,
    outbox: PathBuf,
    base: String,
    /// Their `WORKER_LEASE_SECONDS`: the stack's.
    lease: Duration,
    children: Vec<tokio::process::Child>,
    /// When each of `children` was started.
    born: Vec<tokio::time::Instant>,
    /// A worker younger than this is not killed (the kill drawn for it is skipped).
    min_life: Duration,
    started: usize,
}

impl Workers {
    fn spawn(&mut self) -> Result<tokio::process::Child> {
        self.started += 1;
        let mut command = tokio::process::Command::new(&self.exe);
        command.args(["worker", "--database"]).arg(&self.database);
        if let Some(queue) = &self.queue {
            command.arg("--queue").arg(queue);
        }
        command
            .arg("--outbox")
            .arg(&self.outbox)
            .args(["--worker-id", &format!("chaos-{}", self.started)])
            .env("WORKER_LEASE_SECONDS", self.lease.as_secs().to_string())
            .env("WORKER_CONTINUATION_DELAY_SECONDS", "0")
            .env("THINGSPACE_RESULT_WAIT_SECONDS", "1")
            .env("TELEGENCE_POLL_SECONDS", "1")
            .env("TEAL_POLL_SECONDS", "1")
            .env("TEAL_CALLBACK_URL", format!("{}/Teal/Callback", self.base))
            .env("SCHEDULER_INTERVAL_SECONDS", "1")
            .env("CARRIER_TIMEOUT_SECONDS", "1")
            .env("CARRIER_RETRY_BASE_MILLISECONDS", "20")
            .env("CARRIER_RETRY_MAX_MILLISECONDS", "500")
            // `CHAOS_WORKER_LOG` (a RUST_LOG filter) makes the worker processes say more, on this process's stderr.
            .env("RUST_LOG", std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "error".into()))
            .stdin(std::process::Stdio::null())
            .stdout(if std::env::var_os("CHAOS_WORKER_LOG").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")
    }

    /// Kills every worker and waits for each: gone before the next seed wipes the database (and before the sweep
    /// drops it), no session left open.
    async fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGKILLs worker `index` and starts another in its place; false when it is younger than `min_life` (left
    /// alone).
    async fn kill_and_restart(&mut self, index: usize) -> Result<bool> {
        if self.born.get(index).is_some_and(|b| b.elapsed() < self.min_life) {
            return Ok(false);
        }
        let Some(child) = self.children.get_mut(index) else { return Ok(false) };
        child.start_kill().context("killing a worker")?;
        let _ = child.wait().await;
        let fresh = self.spawn()?;
        self.children[index] = fresh;
        self.born[index] = tokio::time::Instant::now();
        Ok(true)
    }
}

async fn one(seed: u64, opts: &ChaosOptions, sql_server: Option<&str>) -> Result<Report> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let devices = opts.devices;
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = StackConfig::local(dir.path().join("chaos.db"), dir.path().join("outbox"), SECRET.into());
    if let Some(url) = sql_server {
        // Each seed on an empty database (the stack loads its seed into it); the queue stays a local file.
        let store = store::MssqlStore::connect(url, 1).await.context("connecting to the sweep's database")?;
        store.wipe_for_tests().await.context("wiping the sweep's database")?;
        engine::ports::Store::close(&store).await;
        config.sql_server = Some(url.to_string());
    }
    config.seed = Some(seed_data(devices));
    config.simulators = true;
    config.http_timeout = Duration::from_secs(1);
    config.retry.base_delay = Duration::from_millis(20);
    config.retry.max_delay = Duration::from_millis(500);
    config.worker.continuation_delay = Duration::from_millis(200);
    config.worker.carrier_result_wait = Duration::from_millis(500);
    config.worker.carrier_poll_interval = Duration::from_secs(1);
    config.worker.teal_poll_interval = Duration::from_secs(1);
    config.scheduler_interval = Duration::from_secs(1);
    // Short leases make take-overs frequent. On SQL Server a claim under this load (several worker processes
    // logging in at once on the T-SQL engine) can take seconds, and a claim whose lease is mostly gone by the time it
    // returns sends nothing (`LeaseGuard`): 3 s there would leave the rows taken and given up again and again.
    let lease = Duration::from_secs(if sql_server.is_some() { 8 } else { 3 });
    config.stranded_grace = lease;
    config.worker.lease = lease;
    config.run_worker = opts.workers == 0;
    // Callbacks: dropped, duplicated, delayed or reordered, by the seed.
    config.thingspace_behaviour.callback_delay = Duration::from_millis(rng.u64(0..400));
    config.thingspace_behaviour.drop_callbacks = rng.u8(..4) == 0;
    config.thingspace_behaviour.duplicate_callbacks = rng.bool();
    config.thingspace_behaviour.reorder_callbacks = rng.bool();
    config.teal_behaviour.processing = Duration::from_millis(rng.u64(0..300));
    config.teal_behaviour.drop_callbacks = rng.u8(..4) == 0;
    config.teal_behaviour.duplicate_callbacks = rng.bool();
    let stack = Stack::start(config.clone()).await?;
    control_center::spares(&stack, devices)?;
    // Each simulator its own faults, drawn in a fixed order.
    let harnesses: Vec<(&'static str, &Harness)> = stack
        .simulators
        .control_center
        .values()
        .map(|s| ("control_center", &s.state.harness))
        .chain(stack.simulators.pond.values().map(|s| ("pond", &s.state.harness)))
        .chain(stack.simulators.teal.values().map(|s| ("teal", &s.state.harness)))
        .chain(stack.simulators.telegence.values().map(|s| ("telegence", &s.state.harness)))
        .chain(stack.simulators.thingspace.values().map(|s| ("thingspace", &s.state.harness)))
        .chain(stack.simulators.rev_io.values().map(|s| ("rev_io", &s.state.harness)))
        .collect();
    let mut drawn = Vec::new();
    for (name, harness) in &harnesses {
        let faults = draw_faults(&mut rng);
        drawn.push(json!({"carrier": name, "faults": faults}));
        harness.set_faults(faults);
    }
    let token = api::Hs256::new(SECRET)
        .and_then(|a| a.mint(&api::Claims::new(1, "chaos", 3600)))
        .map_err(|e| anyhow::anyhow!("token: {e}"))?;
    let http = reqwest::Client::new();
    let base = stack.base_url();

    // Every carrier's bulk changes over random, overlapping devices, in a seeded order.
    let mut bodies = Vec::new();
    bodies.extend(control_center::bodies(&mut rng, devices));
    bodies.extend(pond::bodies(&mut rng, devices));
    bodies.extend(rev_io::bodies(&mut rng, devices));
    bodies.extend(teal::bodies(&mut rng, devices));
    bodies.extend(telegence::bodies(&mut rng, devices));
    bodies.extend(thingspace::bodies(&mut rng, devices));
    rng.shuffle(&mut bodies);
    let cancels: Vec<bool> = bodies.iter().map(|_| rng.u8(..8) == 0).collect();
    // An operator retries the failed rows of some bulk changes as soon as they are final.
    let retries: Vec<bool> = bodies.iter().map(|_| rng.bool()).collect();
    let kill_every = Duration::from_millis(rng.u64(300..1_500));
    // A worker process on SQL Server takes seconds to start (its pool's TLS logins): killed at SQLite's pace it
    // would never work a row. The drawn pace is stretched, not redrawn (the schedule stays the seed's).
    let kill_every = if sql_server.is_some() { kill_every * 6 } else { kill_every };
    if let Some(dir) = &opts.record {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let schedule = json!({
            "seed": seed, "devices": devices, "workers": opts.workers, "faults": drawn,
            "thingspace": format!("{:?}", config.thingspace_behaviour),
            "teal": format!("{:?}", config.teal_behaviour),
            "bodies": bodies, "cancels": cancels, "retries": retries, "kill_every_ms": kill_every.as_millis() as u64,
        });
        let path = dir.join(format!("seed-{seed}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&schedule)?).with_context(|| format!("{}", path.display()))?;
    }

    let mut workers = match (&opts.worker_exe, opts.workers) {
        (_, 0) => None,
        (exe, n) => {
            let exe = match exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().context("locating this binary")?,
            };
            let mut w = Workers {
                exe,
                database: sql_server.map_or_else(|| config.database.display().to_string(), str::to_string),
                queue: sql_server.map(|_| config.database.clone()),
                outbox: config.outbox.clone(),
                base: base.clone(),
                lease,
                children: Vec::new(),
                born: Vec::new(),
                // On SQL Server a worker process takes seconds to log in, and a claim's reads and writes take
                // seconds more under this load: killed within a lease or two of its start, a worker would rarely
                // finish a claim, and each kill strands its rows for a lease and a grace (a Lambda instance lives
                // minutes, not seconds).
                min_life: if sql_server.is_some() { lease * 2 } else { Duration::ZERO },
                started: 0,
            };
            for _ in 0..n {
                let child = w.spawn()?;
                w.children.push(child);
                w.born.push(tokio::time::Instant::now());
            }
            Some(w)
        }
    };

    // Concurrent operators: every body at once; some cancelled right after they are accepted.
    let submissions = bodies.iter().zip(&cancels).map(|(body, cancel)| {
        let (http, base, token) = (&http, &base, &token);
        async move {
            let (status, answer) = submit(http, base, token, body).await?;
            let id = answer["BulkChangeId"].as_i64();
            if let (Some(id), true) = (id, *cancel) {
                http.post(format!("{base}/M2M/BulkChange/{id}/Cancel"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", format!("chaos-cancel-{id}"))
                    .send()
                    .await?;
            }
            anyhow::Ok((status, answer, body.clone()))
        }
    });
    let answers = futures::future::join_all(submissions).await;
    let bound = opts.final_within.unwrap_or(Duration::from_secs(if sql_server.is_some() { 180 } else { 60 }));
    let submitted = tokio::time::Instant::now();
    // A bulk change not final by then is a violation of its own: the seed does not finish.
    let deadline = submitted + bound;
    let mut report = Report::default();
    let mut accepted = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let (status, answer, body) = answer?;
        match answer["BulkChangeId"].as_i64() {
            Some(id) => accepted.push((id, body, retries[i])),
            // Tenant 2's devices and account are refused to tenant 1 as a whole; any other refusal is a fault.
            None if body["ServiceProviderId"].as_i64() == Some(control_center::BYSTANDER) => {}
            None => report.violation(format!("a bulk change was refused ({status}): {answer} for {body}")),
        }
    }

    // Until every bulk change is final, workers are killed at the seed's pace and restarted.
    let waiting = async {
        let mut finished = Vec::new();
        let mut retried = Vec::new();
        for (id, body, retry) in &accepted {
            let status = wait_final_by(&http, &base, &token, *id, deadline).await?;
            let failed = status["Rows"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| ["API_FAILED", "ERROR"].contains(&r["Status"].as_str().unwrap_or_default()));
            finished.push(Finished { id: *id, body: body.clone(), status });
            if *retry && failed {
                let answer: Value = http
                    .post(format!("{base}/M2M/BulkChange/{id}/Retry"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("chaos-retry-{id}"))
                    .send()
                    .await?
                    .json()
                    .await
                    .unwrap_or(Value::Null);
                // Nothing left to retry (every failed row was refused for good) is an answer too.
                if let Some(retry) = answer["BulkChangeId"].as_i64() {
                    retried.push((retry, body.clone(), tokio::time::Instant::now() + bound));
                }
            }
        }
        for (id, body, deadline) in retried {
            let status = wait_final_by(&http, &base, &token, id, deadline).await?;
            finished.push(Finished { id, body, status });
        }
        anyhow::Ok(finished)
    };
    tokio::pin!(waiting);
    let finished = loop {
        tokio::select! {
            done = &mut waiting => match done {
                Ok(finished) => break finished,
                Err(e) => {
                    // The workers gone before the sweep wipes or drops the database (no session left open).
                    if let Some(w) = workers.as_mut() {
                        w.stop().await;
                    }
                    stack.stop().await;
                    return Err(e);
                }
            },
            _ = tokio::time::sleep(kill_every), if workers.is_some() => {
                if let Some(w) = workers.as_mut() {
                    let index = rng.usize(..w.children.len());
                    if w.kill_and_restart(index).await? {
                        report.kills += 1;
                    }
                }
            }
        }
    };

    // When the last bulk change was seen final (polled one after another: an upper bound), against the bound.
    report.all_final_after = submitted.elapsed();
    report.bulk_changes = finished.len();
    let refs: Vec<&Finished> = finished.iter().collect();
    for f in &refs {
        f.check_final(&mut report);
        report.rows += f.rows().count();
        for row in f.rows() {
            *report.states.entry(format!("{}:{}", f.change_type(), row.state)).or_default() += 1;
        }
        check_counts(f, &mut report);
    }
    for (_, harness) in &harnesses {
        report.count(harness);
    }
    let before = report.violations.len();
    control_center::check(&stack, &refs, devices, &mut report)?;
    if std::env::var_os("CHAOS_TRACE").is_some() {
        let named: Vec<String> = report.violations[before..]
            .iter()
            .filter_map(|v| v.split(':').next().filter(|t| t.len() >= 19 && t.chars().all(|c| c.is_ascii_digit())))
            .map(str::to_string)
            .collect();
        for iccid in named {
            trace_audit(&stack, &refs, &iccid).await;
        }
    }
    control_center::check_customer_plans(&stack, &refs, &mut report).await?;
    pond::check(&stack, &refs, &mut report)?;
    rev_io::check(&stack, &refs, &mut report)?;
    teal::check(&stack, &refs, devices, &mut report)?;
    telegence::check(&stack, &refs, devices, &mut report)?;
    telegence::check_usernames(&stack, &refs, &mut report).await?;
    thingspace::check(&stack, &refs, devices, &mut report)?;
    // The workers stay until the e-mails are checked: an e-mail whose sender was killed is sent by the next worker
    // once the dead one's claim has run out (a lease) and the scheduler has queued the bulk change again.
    check_mail(&config, &refs, &mut report).await?;
    check_audit(&stack, &refs, &mut report).await?;
    if let Some(w) = workers.as_mut() {
        w.stop().await;
    }
    stack.stop().await;
    Ok(report)
}

/// A bulk change's counts add up to its rows, state by state.
fn check_counts(f: &Finished, report: &mut Report) {
    let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
    for row in f.rows() {
        *by_state.entry(row.state).or_default() += 1;
    }
    let counts: BTreeMap<&str, i64> = f.status["Counts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_i64().unwrap_or_default()))
        .filter(|(_, n)| *n > 0)
        .collect();
    if counts != by_state {
        report.violation(format!("bulk change {}: counts {counts:?} but rows {by_state:?}", f.id));
    }
}

/// One failure e-mail per bulk change that has failed rows, none for the others.
async fn check_mail(config: &StackConfig, finished: &[&Finished], report: &mut Report) -> Result<()> {
    let failed: Vec<i64> = finished
        .iter()
        .filter(|f| f.rows().any(|r| ["API_FAILED", "ERROR"].contains(&r.state)))
        .map(|f| f.id)
        .collect();
    // The e-mail is sent right after the bulk change is final, or, when its sender was killed, within a lease, a
    // stranded grace and a scheduler tick (3 + 3 + 1 s on SQLite): wait for each (bounded), then count.
    let deadline = tokio::time::Instant::now() + config.worker.lease * 2 + Duration::from_secs(14);
    let subjects = loop {
        let subjects: Vec<String> = std::fs::read_dir(&config.outbox)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|text| text.lines().find(|l| l.starts_with("Subject:")).map(str::to_string))
            .collect();
        let have_all = failed.iter().all(|id| subjects.iter().any(|s| s.contains(&format!("Bulk change {id}:"))));
        if have_all || tokio::time::Instant::now() > deadline {
            break subjects;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for f in finished {
        let n = subjects.iter().filter(|s| s.contains(&format!("Bulk change {}:", f.id))).count();
        let expected = usize::from(failed.contains(&f.id));
        if n != expected {
            report.violation(format!("bulk change {}: {n} failure e-mail(s), expected {expected}", f.id));
        }
    }
    Ok(())
}

/// Every row that reached the carrier (PROCESSED, or API_FAILED by the carrier) has an audit entry naming it.
async fn check_audit(stack: &Stack, finished: &[&Finished], report: &mut Report) -> Result<()> {
    for f in finished {
        let logs = stack.store.logs(1, f.id).await.context("reading the audit log")?;
        for row in f.rows().filter(|r| r.state == "PROCESSED" || r.state == "API_FAILED") {
            if row.held_elsewhere() {
                continue;
            }
            if !logs.iter().any(|l| l.device_change_id == Some(row.id)) {
                report.violation(format!("bulk change {}: no audit entry for {} ({})", f.id, row.iccid, row.state));
            }
        }
    }
    Ok(())
}
