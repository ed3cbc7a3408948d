//! `bulkchange`: the local all-in-one stack and its tools. Parses arguments and configuration, then hands over.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cli::bench::{self, BenchOptions};
use cli::client::{self, ApiArgs, ChangeArgs, Client};
use cli::demo::{self, DemoOptions};
use cli::{Stack, StackConfig};

#[derive(Parser)]
#[command(name = "bulkchange", version, about = "Device bulk change: the local stack and its tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API, worker and scheduler in one process, on SQLite (or SQL Server), the local queue and the outbox notifier.
    Serve {
        /// Address the API listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// `sqlite://PATH` or a plain path, or the ADO connection string of a migrated SQL Server database.
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://bulkchange.db", hide_env_values = true)]
        database: String,
        /// The local queue's SQLite file when `--database` is SQL Server (with SQLite the queue is in its file).
        #[arg(long, env = "LOCAL_QUEUE_FILE", default_value = "bulkchange-queue.db")]
        queue: PathBuf,
        /// Seed JSON loaded into an empty database (format in the README).
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Also start the carrier simulators and point the seeded service providers at them.
        #[arg(long)]
        simulators: bool,
        /// Latency the simulators add to each answer.
        #[arg(long, default_value_t = 20)]
        simulator_latency_ms: u64,
        /// Folder the local notifier writes failure e-mails to (.eml files).
        #[arg(long, env = "OUTBOX_DIR", default_value = "outbox")]
        outbox: PathBuf,
        /// HS256 secret of the API's tokens (32 bytes at least).
        #[arg(long, env = "BULKCHANGE_JWT_SECRET", hide_env_values = true)]
        jwt_secret: String,
        /// Most devices one bulk change may carry (413 above; at most 30,000).
        #[arg(long, env = "MAX_DEVICES_PER_BULK_CHANGE", default_value_t = 10_000, value_parser = max_devices)]
        max_devices: usize,
        /// Sender of failure summaries.
        #[arg(long, env = "EMAIL_FROM", default_value = "bulkchange@localhost")]
        email_from: String,
        /// Recipients of failure summaries, separated by ';'.
        #[arg(long, env = "ERROR_EMAIL_TO", default_value = "operations@localhost")]
        error_email_to: String,
        /// Serve the API, the scheduler and the simulators, but process no rows: a `bulkchange worker` or the
        /// worker Lambda function run locally (`make invoke-worker`) does.
        #[arg(long)]
        no_worker: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// A worker loop alone on the database a `serve` runs on (what one Lambda worker instance does): several of
    /// them, in their own processes, share the queue, the leases and each carrier account's pace.
    Worker {
        /// The database of the running stack: `sqlite://PATH`, a plain path, or an ADO connection string.
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://bulkchange.db", hide_env_values = true)]
        database: String,
        /// The stack's local queue file when `--database` is SQL Server (the `--queue` of its `serve`).
        #[arg(long, env = "LOCAL_QUEUE_FILE", default_value = "bulkchange-queue.db")]
        queue: PathBuf,
        /// Folder the local notifier writes failure e-mails to (.eml files).
        #[arg(long, env = "OUTBOX_DIR", default_value = "outbox")]
        outbox: PathBuf,
        /// This worker's name on the leases it holds (default: a random one).
        #[arg(long)]
        worker_id: Option<String>,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Apply the SQL Server schema of `infra/sql/` beyond the version the database records (README "Deploy"):
    /// each versioned step once, then the procedures when they changed. Running it twice is a no-op.
    Migrate {
        /// The ADO connection string of the database (`Server=tcp:host,1433;Database=...;User Id=...;Password=...`).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database: String,
        /// Stop at this version (default: the newest this binary carries).
        #[arg(long)]
        to: Option<u32>,
    },
    /// Run simulators alone: for every seeded service provider, or one bench account.
    Simulate {
        /// Seed JSON: one simulator per seeded service provider.
        #[arg(long, conflicts_with = "bench_devices")]
        seed: Option<PathBuf>,
        /// One Control Center account with N bench devices (what `make bench` starts).
        #[arg(long)]
        bench_devices: Option<usize>,
        /// Latency the simulators add to each answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Calls per second before the simulator answers 429.
        #[arg(long)]
        rate_limit: Option<f64>,
    },
    /// Mint an HS256 token for the local API.
    Token {
        /// The tenant the token acts for (claim tenant_id).
        #[arg(long)]
        tenant: i64,
        /// The user (claim sub).
        #[arg(long)]
        user: String,
        /// The local API's HS256 secret.
        #[arg(long, env = "BULKCHANGE_JWT_SECRET", hide_env_values = true)]
        jwt_secret: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 12)]
        hours: i64,
    },
    /// Submit a bulk change to the API (a JSON body, or flags and a CSV of ICCIDs); with --watch, follow it to the
    /// end and exit non-zero when any row failed.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// Follow the bulk change with a progress bar (plain lines when output is not a terminal).
        #[arg(long)]
        watch: bool,
        /// The key of this submission; the same key sent again returns the same bulk change (default: a new one,
        /// printed so the command can be repeated safely).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Check a bulk change without recording it (the dry run); exits non-zero when any device is refused.
    Validate {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// The post-deploy check (`make smoke`): health, the token and a database read, a dry run of a request, a
    /// status read. Exits non-zero at the first step that fails.
    Smoke {
        #[command(flatten)]
        api: ApiArgs,
        /// The request body of the dry run (one of the tenant's own service providers and devices, ideally).
        #[arg(long, default_value = "events/requests/01-activate-with-rev-service.json")]
        file: PathBuf,
    },
    /// A bulk change's status and counts per row status.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
    },
    /// Follow a bulk change to its end with a progress bar; exits non-zero when any row failed.
    Watch {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
    },
    /// A bulk change's rows as CSV (ICCID, status, details, carrier error code, request id, processed at).
    Results {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
        /// Only rows in this status (PROCESSED, API_FAILED, ERROR, ...).
        #[arg(long)]
        status: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Retry the rows of a bulk change that failed (a new bulk change); with --watch, follow it.
    Retry {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
        /// Follow the retry to its end.
        #[arg(long)]
        watch: bool,
        /// The key of this retry (the same key sent again returns the same retry).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Cancel the rows of a bulk change not started yet.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
        /// The key of this cancellation.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Pause a bulk change: no device starts until it is resumed; devices in flight finish.
    Pause {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
        /// The key of this pause.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Undo a finished bulk change: every device it changed goes back to what it was (a new bulk change);
    /// --dry-run shows the plan (refused rows first, with why) and changes nothing.
    Undo {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
        /// Show what would be restored and what cannot be, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow the undo to its end.
        #[arg(long)]
        watch: bool,
        /// The key of this undo (the same key sent again returns the same undo).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Resume a paused bulk change where it stopped.
    Resume {
        #[command(flatten)]
        api: ApiArgs,
        /// The bulk change id.
        id: i64,
        /// The key of this resume.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// What `make run` does: start the stack with simulators, submit the sample requests, print the results.
    Demo {
        /// Seed JSON of the demo's stack.
        #[arg(long, default_value = "events/seed.json")]
        seed: PathBuf,
        /// Folder of request bodies submitted in name order.
        #[arg(long, default_value = "events/requests")]
        requests: PathBuf,
        /// Where the demo's database and outbox go.
        #[arg(long, default_value = ".run")]
        work_dir: PathBuf,
        /// The tenant the requests are submitted for.
        #[arg(long, default_value_t = 1)]
        tenant: i64,
    },
    /// What `make chaos` does: seeded fault sweeps, invariants checked against the simulators (`cli::chaos`).
    Chaos {
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds, from the first.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Devices of each carrier's account.
        #[arg(long, default_value_t = 24)]
        devices: usize,
        /// Worker processes beside the stack, killed with SIGKILL and restarted by the seed (0: the stack's own
        /// worker, nothing killed).
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// Folder each seed's drawn schedule is written to (`seed-<n>.json`).
        #[arg(long, default_value = "target/chaos")]
        record: PathBuf,
        /// A SQL Server connection string (ADO; the T-SQL engine): the sweep runs on the production adapter, in a
        /// scratch database of that server (none: SQLite).
        #[arg(long)]
        sql_server: Option<String>,
        /// Seconds within which every bulk change must be final, from its submission (default: 60 on SQLite, 180
        /// on SQL Server).
        #[arg(long)]
        final_within: Option<u64>,
    },
    /// What `make bench` does.
    Bench {
        /// Devices of the single-process run.
        #[arg(long, default_value_t = 2000)]
        devices: usize,
        /// Devices of the one-at-a-time run it is compared with.
        #[arg(long, default_value_t = 200)]
        sequential_devices: usize,
        /// The simulators' latency per call.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        /// The carrier's limit in the single-process run (calls a second).
        #[arg(long, default_value_t = 200.0)]
        rate_limit: f64,
        /// Worker processes of the fleet runs (0: skip them).
        #[arg(long, default_value_t = 5)]
        fleet_workers: usize,
        /// Each account's limit in the fleet runs (calls a second).
        #[arg(long, default_value_t = 1000.0)]
        fleet_rate_limit: f64,
        /// The fast carrier of the engine-ceiling run (calls a second).
        #[arg(long, default_value_t = 2000.0)]
        ceiling_rate_limit: f64,
        /// The fleet's lease, against which its take-over after a SIGKILL is measured.
        #[arg(long, default_value_t = 5)]
        fleet_lease_seconds: u64,
        /// Only the engine-ceiling run (one process against the fast carrier), after the single-process figures.
        #[arg(long)]
        ceiling_only: bool,
        /// The store of the fleet runs: `sqlite` (a temporary file) or an ADO connection string of a SQL Server,
        /// where the bench creates a scratch database of its own (and drops it after).
        #[arg(long, default_value = "sqlite")]
        database: String,
        /// Audit entries and row outcomes written in one transaction (WORKER_WRITE_BATCH; 1: one at a time).
        #[arg(long, default_value_t = 64)]
        write_batch: usize,
        /// Skip the single-process run against the 200/s carrier (the fleet figures only).
        #[arg(long)]
        fleet_only: bool,
    },
}

/// Overrides of the settings every way of running reads from the environment (README "Configuration").
#[derive(clap::Args, Debug, Default)]
struct Tuning {
    /// How long a row's lease holds without its heartbeat (WORKER_LEASE_SECONDS); a dead worker's rows are taken
    /// over within about one lease.
    #[arg(long)]
    lease_seconds: Option<u64>,
    /// How long a ThingSpace row waits for its callback before a worker polls (THINGSPACE_RESULT_WAIT_SECONDS).
    #[arg(long)]
    result_wait_seconds: Option<u64>,
    /// Rows one worker works at once for one bulk change (WORKER_ROWS_IN_FLIGHT).
    #[arg(long)]
    rows_in_flight: Option<usize>,
}

impl Tuning {
    /// The environment's settings with these flags on top.
    fn settings(&self) -> Result<engine::Settings> {
        let mut settings = engine::Settings::from_env()?;
        // On one machine, webhook receivers are on it too: http://127.0.0.1 is allowed unless the environment says.
        if std::env::var_os("WEBHOOK_ALLOW_LOOPBACK").is_none() {
            settings.webhooks.policy.allow_loopback = true;
        }
        if let Some(secs) = self.lease_seconds {
            anyhow::ensure!(secs >= 3, "--lease-seconds must be at least 3 (the heartbeat renews every third)");
            settings.worker.lease = std::time::Duration::from_secs(secs);
            settings.stranded_grace = settings.worker.lease;
        }
        if let Some(secs) = self.result_wait_seconds {
            settings.worker.carrier_result_wait = std::time::Duration::from_secs(secs);
        }
        if let Some(n) = self.rows_in_flight {
            settings.worker.concurrency = n.max(1);
        }
        Ok(settings)
    }
}

/// The API of `simulate`'s stack is never called; its secret only has to be a valid one.
const UNUSED_SECRET: &str = "simulate-only-the-api-is-never-called-0000";

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.compact().init();
    }
}

/// The stack's SQLite file (the store and queue, or the queue alone) and, for SQL Server, its connection string.
fn database_of(url: &str, queue: PathBuf) -> Result<(PathBuf, Option<String>)> {
    Ok(match cli::DatabaseUrl::parse(url)? {
        cli::DatabaseUrl::Sqlite(path) => (path, None),
        cli::DatabaseUrl::SqlServer(ado) => (queue, Some(ado)),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve {
            listen,
            database,
            queue,
            seed,
            simulators,
            simulator_latency_ms,
            outbox,
            jwt_secret,
            max_devices,
            email_from,
            error_email_to,
            no_worker,
            tuning,
        } => {
            if std::env::var("QUEUE_URL").is_ok_and(|q| !q.is_empty()) {
                bail!("QUEUE_URL is set, but `serve` runs the in-process queue; SQS is used by the Lambda functions");
            }
            let (file, sql_server) = database_of(&database, queue)?;
            let mut config = StackConfig::local(file, outbox, jwt_secret);
            config.sql_server = sql_server;
            config.apply(tuning.settings()?);
            config.listen = listen;
            config.max_devices = max_devices;
            config.simulators = simulators;
            config.run_worker = !no_worker;
            config.simulator_faults.latency_ms = simulator_latency_ms;
            config.worker.email_from = email_from;
            config.worker.email_to =
                error_email_to.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
            if let Some(path) = seed {
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading seed {}", path.display()))?;
                config.seed =
                    Some(store::Seed::from_json(&text).with_context(|| format!("parsing seed {}", path.display()))?);
            }
            let stack = Stack::start(config).await?;
            println!("listening on {}", stack.base_url());
            bench::wait_for_stop().await;
            stack.stop().await;
        }
        Command::Worker { database, queue, outbox, worker_id, tuning } => {
            let (path, sql_server) = database_of(&database, queue)?;
            anyhow::ensure!(path.exists(), "{} does not exist: start `bulkchange serve` on it first", path.display());
            let mut stack = StackConfig::local(path, outbox, String::new());
            stack.apply(tuning.settings()?);
            let store = cli::StackStore::open(sql_server.as_deref(), &stack.database, stack.database_pool_size).await?;
            let queue = cli::stack::local_queue(&store, &stack.database)?;
            if let Some(id) = worker_id {
                stack.worker.worker_id = id;
            }
            let worker = cli::stack::local_worker(&store, &queue, &stack, stack.worker.clone())?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            // The scheduler's stranded sweep, at the pace of the lease: the messages a killed worker process held
            // stay invisible for the queue's visibility timeout, its bulk changes are queued again within a lease.
            let sweep = {
                let (store, queue, grace) = (store.clone(), queue.clone(), stack.stranded_grace);
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(grace / 2) => {}
                            _ = stopped.changed() => break,
                        }
                        // A failure is logged and tried again at the next sweep.
                        let _ = engine::scheduler::requeue_stranded(&*store, &queue, chrono::Utc::now(), grace).await;
                    }
                })
            };
            let task = cli::stack::spawn_worker_loop(
                std::sync::Arc::new(worker),
                queue,
                stopped,
                stack.visibility,
                stack.message_budget,
            );
            let on = if sql_server.is_some() { "SQL Server".to_string() } else { stack.database.display().to_string() };
            println!("worker {} on {on}", stack.worker.worker_id);
            bench::wait_for_stop().await;
            let _ = stop.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sweep).await;
        }
        Command::Simulate { seed, bench_devices, latency_ms, rate_limit } => match (seed, bench_devices) {
            (_, Some(n)) => bench::serve_bench_simulator(n, latency_ms, rate_limit.unwrap_or(f64::INFINITY)).await?,
            (Some(path), None) => {
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading seed {}", path.display()))?;
                let dir = tempfile::tempdir()?;
                let mut config =
                    StackConfig::local(dir.path().join("sim.db"), dir.path().join("outbox"), UNUSED_SECRET.into());
                config.seed = Some(store::Seed::from_json(&text)?);
                config.simulators = true;
                config.run_worker = false;
                config.simulator_faults.latency_ms = latency_ms;
                config.simulator_faults.rate_limit_per_second = rate_limit;
                let stack = Stack::start(config).await?;
                for (id, sim) in &stack.simulators.control_center {
                    println!("service_provider={id} control_center_url={}", sim.base_url());
                }
                for (id, sim) in &stack.simulators.rev_io {
                    println!("service_provider={id} rev_io_url={}", sim.base_url());
                }
                bench::wait_for_stop().await;
                stack.stop().await;
            }
            (None, None) => bail!("simulate needs --seed FILE or --bench-devices N"),
        },
        Command::Migrate { database, to } => {
            anyhow::ensure!(
                !database.starts_with("sqlite://"),
                "migrate is for SQL Server (an ADO connection string); the SQLite store migrates itself when opened"
            );
            let store = store::MssqlStore::connect(&database, 1).await.context("connecting to the database")?;
            let report = store.migrate(to).await.context("migrating the schema")?;
            engine::ports::Store::close(&store).await;
            if report.applied.is_empty() {
                println!("schema at version {}: up to date", report.to);
            } else {
                println!("schema from version {} to {}: applied {}", report.from, report.to, report.applied.join(", "));
            }
        }
        Command::Token { tenant, user, jwt_secret, hours } => {
            api::auth::check_user(&user).map_err(anyhow::Error::msg)?;
            let auth = api::Hs256::new(&jwt_secret).map_err(anyhow::Error::msg)?;
            println!("{}", auth.mint(&api::Claims::new(tenant, &user, hours * 3600)).map_err(anyhow::Error::msg)?);
        }
        Command::Submit { api, change, watch, idempotency_key } => {
            let client = Client::new(&api)?;
            let ids = client::submit(&client, &change, idempotency_key).await?;
            if watch {
                let mut failed = false;
                for id in ids {
                    failed |= client::watch(&client, id).await?;
                }
                if failed {
                    std::process::exit(1);
                }
            }
        }
        Command::Validate { api, change } => {
            if !client::validate(&Client::new(&api)?, &change).await? {
                std::process::exit(1);
            }
        }
        Command::Smoke { api, file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let body: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            client::smoke(&Client::new(&api)?, &body).await?;
            println!("smoke test passed against {}", api.api);
        }
        Command::Status { api, id } => {
            let status = Client::new(&api)?.status(id).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Command::Watch { api, id } => {
            if client::watch(&Client::new(&api)?, id).await? {
                std::process::exit(1);
            }
        }
        Command::Results { api, id, status, output } => {
            let rows = client::results(&Client::new(&api)?, id, status.as_deref(), output.as_deref()).await?;
            if let Some(path) = output {
                eprintln!("{rows} rows written to {}", path.display());
            }
        }
        Command::Retry { api, id, watch, idempotency_key } => {
            let client = Client::new(&api)?;
            let answer = client::act(&client, id, "Retry", idempotency_key).await?;
            let retry = answer["BulkChangeId"].as_i64().context("the answer has no BulkChangeId")?;
            println!("bulk change {retry} retries the failed rows of {id}: {}", answer["Counts"]);
            if watch && client::watch(&client, retry).await? {
                std::process::exit(1);
            }
        }
        Command::Cancel { api, id, idempotency_key } => {
            let answer = client::act(&Client::new(&api)?, id, "Cancel", idempotency_key).await?;
            println!("bulk change {id}: {} rows cancelled; now {}", answer["Cancelled"], answer["Status"]);
        }
        Command::Pause { api, id, idempotency_key } => {
            let answer = client::act(&Client::new(&api)?, id, "Pause", idempotency_key).await?;
            println!("bulk change {id}: {}; {} device(s) in flight finish", answer["Status"], answer["InFlight"]);
        }
        Command::Undo { api, id, dry_run, watch, idempotency_key } => {
            let client = Client::new(&api)?;
            let action = if dry_run { "Undo?dryRun=true" } else { "Undo" };
            let answer = client::act(&client, id, action, idempotency_key).await?;
            for row in answer["Rows"].as_array().into_iter().flatten() {
                match row["Refused"].as_str() {
                    Some(why) => println!("  refused  {}  {why}", row["ICCID"].as_str().unwrap_or_default()),
                    None => println!("  restore  {}  {}", row["ICCID"].as_str().unwrap_or_default(), row["Restore"]),
                }
            }
            let counts = &answer["Counts"];
            match answer["BulkChangeId"].as_i64() {
                None => println!(
                    "undo of bulk change {id} (dry run): {} to restore, {} refused",
                    counts["Restore"], counts["Refused"]
                ),
                Some(undo) => {
                    println!(
                        "bulk change {undo} undoes {id}: {} to restore, {} refused",
                        counts["Restore"], counts["Refused"]
                    );
                    if watch && client::watch(&client, undo).await? {
                        std::process::exit(1);
                    }
                }
            }
        }
        Command::Resume { api, id, idempotency_key } => {
            let answer = client::act(&Client::new(&api)?, id, "Resume", idempotency_key).await?;
            println!("bulk change {id}: {}", answer["Status"]);
        }
        Command::Demo { seed, requests, work_dir, tenant } => {
            demo::run(DemoOptions { seed, requests, work_dir, tenant }).await?
        }
        Command::Chaos { seed, seeds, devices, workers, record, sql_server, final_within } => {
            let opts = cli::chaos::ChaosOptions {
                first_seed: seed,
                seeds,
                devices,
                workers,
                worker_exe: None,
                record: Some(record),
                sql_server,
                final_within: final_within.map(std::time::Duration::from_secs),
            };
            cli::chaos::run(opts).await?
        }
        Command::Bench {
            devices,
            sequential_devices,
            latency_ms,
            rate_limit,
            fleet_workers,
            fleet_rate_limit,
            ceiling_rate_limit,
            fleet_lease_seconds,
            ceiling_only,
            database,
            write_batch,
            fleet_only,
        } => {
            let sql_server = match cli::DatabaseUrl::parse(&database)? {
                cli::DatabaseUrl::SqlServer(url) => Some(url),
                cli::DatabaseUrl::Sqlite(_) => None,
            };
            if !fleet_only {
                bench::run(BenchOptions { devices, sequential_devices, latency_ms, rate_limit }).await?;
            }
            if fleet_workers > 0 {
                cli::fleet::run(cli::fleet::FleetOptions {
                    workers: fleet_workers,
                    rate_limit: fleet_rate_limit,
                    latency_ms,
                    ceiling_rate_limit,
                    lease_seconds: fleet_lease_seconds,
                    ceiling_only,
                    sql_server,
                    write_batch: write_batch.max(1),
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// `--max-devices` / `MAX_DEVICES_PER_BULK_CHANGE`, within `api::MAX_DEVICES_CEILING`.
fn max_devices(raw: &str) -> Result<usize, String> {
    let n: usize = raw.trim().parse().map_err(|_| format!("'{raw}' is not a whole number"))?;
    api::check_max_devices(n)
}
