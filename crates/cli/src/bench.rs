//! `make bench`: a status update of N devices against a Control Center simulator running as a process of its
//! own (so the figures are the worker's alone), compared with the carrier's rate limit and with the same work
//! done one device at a time, measured in the same run. Prints `name=value` lines; never fails on a number.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use domain::ids::luhn_check_digit;
use engine::ports::{Store, WorkMessage};
use engine::{Handled, WorkerConfig};
use store::Seed;
use store::seed::{SeedDevice, SeedServiceProvider, SeedTenant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::stack::{Stack, StackConfig};

pub struct BenchOptions {
    pub devices: usize,
    pub sequential_devices: usize,
    pub latency_ms: u64,
    pub rate_limit: f64,
}

/// The ICCID of bench device `i` (20 digits, valid Luhn), the same in the worker and the simulator process.
pub fn bench_iccid(i: usize) -> String {
    let payload = format!("8901260{i:012}");
    format!("{payload}{}", luhn_check_digit(&payload))
}

/// Peak resident set size of this process, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    rss_mib("VmHWM:")
}

pub async fn run(opts: BenchOptions) -> Result<()> {
    let total = seeded_devices(&opts);
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "simulate",
            "--bench-devices",
            &total.to_string(),
            "--latency-ms",
            &opts.latency_ms.to_string(),
            "--rate-limit",
            &opts.rate_limit.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the simulator process")?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if let Some(url) = line.strip_prefix("control_center_url=") {
                    break url.to_string();
                }
            }
            _ => bail!("the simulator process did not print its URL"),
        }
    };
    let result = measure(&opts, &url).await;
    if result.is_ok() {
        report_throttling(&url).await;
    }
    let _ = child.kill().await;
    result
}

/// How many calls the carrier answered 429: pacing below the limit means none.
async fn report_throttling(url: &str) {
    let admin = format!("{}/_sim/calls", url.trim_end_matches(simulators::control_center::API_PREFIX));
    let calls: Option<Vec<simulators::RecordedCall>> = match reqwest::get(&admin).await {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    match calls {
        Some(calls) => {
            println!("carrier_calls={}", calls.len());
            println!("carrier_throttled_calls={}", calls.iter().filter(|c| c.status == 429).count());
        }
        None => println!("carrier_throttled_calls=unknown"),
    }
}

async fn measure(opts: &BenchOptions, url: &str) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let seed = Seed {
        tenants: vec![SeedTenant { id: 1, name: "Bench".into() }],
        service_providers: vec![SeedServiceProvider {
            name: "POD19 bench".into(),
            base_url: url.to_string(),
            username: "bench".into(),
            secret: "bench-key".into(),
            rate_limit_per_second: opts.rate_limit,
            ..SeedServiceProvider::new(1, 1, 9)
        }],
        devices: (0..seeded_devices(opts))
            .map(|i| SeedDevice {
                carrier_rate_plan: Some("RP-1GB".into()),
                communication_plan: Some("CP-Data".into()),
                ..SeedDevice::new(1, 1, bench_iccid(i), "ACTIVATION_READY")
            })
            .collect(),
        ..Default::default()
    };
    let mut config = StackConfig::local(dir.path().join("bench.db"), dir.path().join("outbox"), BENCH_SECRET.into());
    config.seed = Some(seed);
    config.run_worker = false;
    let stack = Stack::start(config).await?;

    let intake = time_intake(&stack, INTAKE_DEVICES).await?;
    let parallel = run_one(&stack, 0..opts.devices, WorkerConfig::default()).await?;
    let sequential_config = WorkerConfig { concurrency: 1, claim_batch: 1, ..WorkerConfig::default() };
    let sequential = run_one(&stack, opts.devices..opts.devices + opts.sequential_devices, sequential_config).await?;
    let worker_peak = peak_rss_mib();
    // After the runs, so the worker's peak above is not the intake's.
    let mut intake_peaks = Vec::new();
    for n in [INTAKE_DEVICES, INTAKE_MEMORY_DEVICES] {
        intake_peaks.push((n, intake_peak(&stack, n).await?));
    }
    stack.stop().await;

    let dps = opts.devices as f64 / parallel.as_secs_f64();
    let seq_dps = opts.sequential_devices as f64 / sequential.as_secs_f64();
    println!("devices={}", opts.devices);
    println!("rate_limit_per_second={}", opts.rate_limit);
    println!("carrier_latency_ms={}", opts.latency_ms);
    println!("elapsed_seconds={:.2}", parallel.as_secs_f64());
    println!("devices_per_second={dps:.1}");
    println!("sequential_devices_per_second={seq_dps:.1}");
    println!("throughput_ratio_to_limit={:.3}", dps / opts.rate_limit);
    println!("speedup_vs_one_at_a_time={:.2}", dps / seq_dps);
    println!("intake_devices={INTAKE_DEVICES}");
    println!("intake_ms={:.0}", intake.as_secs_f64() * 1000.0);
    println!("intake_devices_per_second={:.0}", INTAKE_DEVICES as f64 / intake.as_secs_f64());
    match worker_peak {
        Some(mib) => println!("worker_peak_rss_mib={mib:.1}"),
        None => println!("worker_peak_rss_mib=unknown"),
    }
    for (n, (peak, answer)) in intake_peaks {
        let mib = peak as f64 / (1024.0 * 1024.0);
        println!("intake_{n}_peak_heap_mib={mib:.1}");
        println!("intake_{n}_peak_heap_kib_per_device={:.2}", peak as f64 / 1024.0 / n as f64);
        println!("intake_{n}_answer_mib={:.1}", answer as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}

/// The most heap the API's intake of one request of `n` devices held at once beyond what was held before (the
/// body, its parse, every device's check and verdict, the recording transaction, the answer written out), counted
/// by `heap::Counting`, and the answer's size. Devices the store does not hold (beyond the seed), so each is
/// refused with its reason: the heavier answer.
async fn intake_peak(stack: &Stack, n: usize) -> Result<(usize, usize)> {
    let first = UNSEEDED_FROM;
    crate::heap::reset_peak();
    let before = crate::heap::in_use();
    let answer = {
        let devices: Vec<String> = (first..first + n).map(bench_iccid).collect();
        let body = serde_json::json!({"ServiceProviderId": 1, "ChangeType": 3, "Devices": devices, "StatusUpdate": {"TargetStatus": "Active"}})
            .to_string();
        let caller = api::Caller { tenant_id: 1, user: "bench".into(), roles: vec![] };
        let intake = api::intake::evaluate(&*stack.store, &caller, body.as_bytes(), n)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = stack.store.create_bulk_change(&intake.change, &intake.rows).await?.id;
        let answer = serde_json::to_vec(&serde_json::json!({"BulkChangeId": id, "Counts": intake.counts(),
            "Devices": intake.devices, "Duplicates": intake.duplicates, "Warnings": intake.warnings}))?;
        answer.len()
    };
    Ok((crate::heap::peak().saturating_sub(before), answer))
}

/// The first bench ICCID beyond every seeded one.
const UNSEEDED_FROM: usize = 10_000_000;

fn rss_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn run_one(stack: &Stack, range: std::ops::Range<usize>, worker_config: WorkerConfig) -> Result<Duration> {
    let n = range.len();
    let devices: Vec<String> = range.map(bench_iccid).collect();
    let body = serde_json::json!({"ServiceProviderId": 1, "ChangeType": 3, "Devices": devices, "StatusUpdate": {"TargetStatus": "Active"}});
    let caller = api::Caller { tenant_id: 1, user: "bench".into(), roles: vec![] };
    let store: Arc<dyn Store> = stack.store.shared();
    let intake = api::intake::evaluate(store.as_ref(), &caller, body.to_string().as_bytes(), 10_000)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = store.create_bulk_change(&intake.change, &intake.rows).await?.id;
    let worker = stack.worker(worker_config)?;
    let start = Instant::now();
    let handled = worker.handle(WorkMessage::new(id), Instant::now() + Duration::from_secs(3600)).await?;
    let elapsed = start.elapsed();
    let processed = processed_rows(&*stack.store, id).await?;
    if handled != Handled::Finished(domain::BulkStatus::Processed) || processed != n {
        bail!("bench bulk change {id} ended {handled:?} with {processed} of {n} rows processed");
    }
    Ok(elapsed)
}

/// The size of the API intake measured: a request at the default device limit.
const INTAKE_DEVICES: usize = 10_000;
/// The larger request whose intake memory is measured too (ten times the default limit).
const INTAKE_MEMORY_DEVICES: usize = 100_000;

/// The bench calls the store and worker directly; its stack's API secret only has to be valid.
const BENCH_SECRET: &str = "bench-only-the-api-is-never-called-000000";
fn seeded_devices(opts: &BenchOptions) -> usize {
    (opts.devices + opts.sequential_devices).max(INTAKE_DEVICES)
}

/// Time for the API to check and record one request of `n` devices (validation, one transaction), no carrier call.
async fn time_intake(stack: &Stack, n: usize) -> Result<Duration> {
    let devices: Vec<String> = (0..n).map(bench_iccid).collect();
    let body = serde_json::json!({"ServiceProviderId": 1, "ChangeType": 3, "Devices": devices, "StatusUpdate": {"TargetStatus": "Active"}});
    let bytes = body.to_string();
    let caller = api::Caller { tenant_id: 1, user: "bench".into(), roles: vec![] };
    let start = Instant::now();
    let intake =
        api::intake::evaluate(&*stack.store, &caller, bytes.as_bytes(), n).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = stack.store.create_bulk_change(&intake.change, &intake.rows).await?.id;
    let took = start.elapsed();
    // Never worked: its rows are cancelled so they hold none of the devices the runs below change.
    stack.store.cancel_rows(1, id, "bench", chrono::Utc::now()).await?;
    Ok(took)
}

async fn processed_rows(store: &dyn Store, id: i64) -> Result<usize> {
    let counts = store.row_counts(1, id).await?;
    Ok(counts.iter().filter(|c| c.status == domain::RowStatus::Processed).map(|c| c.count as usize).sum())
}

/// `bulkchange simulate --bench-devices N`: one Control Center account with N bench devices.
pub async fn serve_bench_simulator(devices: usize, latency_ms: u64, rate_limit: f64) -> Result<()> {
    let mut account =
        simulators::Account { username: "bench".into(), api_key: "bench-key".into(), ..Default::default() };
    for i in 0..devices {
        let iccid = bench_iccid(i);
        account.devices.insert(
            iccid.clone(),
            simulators::SimDevice {
                iccid,
                status: "ACTIVATION_READY".into(),
                rate_plan: Some("RP-1GB".into()),
                ..Default::default()
            },
        );
    }
    let faults = simulators::Faults { latency_ms, rate_limit_per_second: Some(rate_limit), ..Default::default() };
    let sim = simulators::ControlCenterSim::start("127.0.0.1:0".parse()?, account, faults).await?;
    println!("control_center_url={}", sim.base_url());
    wait_for_stop().await;
    let throttled = sim.state.calls().iter().filter(|c| c.status == 429).count();
    eprintln!("simulator: {} calls, {throttled} throttled", sim.state.calls().len());
    Ok(())
}

/// Until Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
