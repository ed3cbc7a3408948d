//! A seeded fault sweep, first slice (issue 20): for each seed, a local stack on a fresh SQLite file whose Control
//! Center and Pond simulators answer with faults drawn from the seed (latency, 500s before applying, writes applied then
//! answered 502, writes that hang past the client's timeout), a few bulk changes over random, overlapping devices,
//! and then invariants checked against the simulator's own state and audit trail, not our database:
//!
//! - every row is final;
//! - a PROCESSED row's device shows the change on the carrier;
//! - a row that did not succeed while the carrier shows its change says it may have been applied (its reason names
//!   a lost answer or an unknown outcome) rather than that it failed;
//! - no change is applied twice (the carrier's audit trail holds one entry per device and change; a Pond SIM gets
//!   one package of the new plan);
//! - no Pond SIM is left without an active package, and a row whose SIM has two says it is billed for both.
//!
//! The same seed draws the same faults and requests; a failing seed is printed as `make chaos SEED=<n>`. Other
//! carriers, worker kills and concurrent operators are the next slices.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use simulators::Faults;
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider, SeedTenant};

use crate::bench::bench_iccid;
use crate::stack::{Stack, StackConfig};

const SECRET: &str = "chaos-only-tokens-are-minted-here-0123456789";
const SP: i64 = 1;
const PLAN: &str = "RP-5GB";
/// The Pond account, its SIMs (`bench_iccid(POND_SIMS_FROM + i)`) and the package type of the plan they move to.
const POND: i64 = 2;
const POND_SIMS_FROM: usize = 1_000;
const POND_PLAN: &str = "POND-5GB";
const POND_NEW_TYPE: i64 = 4712;

pub struct ChaosOptions {
    pub first_seed: u64,
    pub seeds: u64,
    /// Devices of the account (half ready to activate, half active).
    pub devices: usize,
}

/// What one seed did and found.
#[derive(Default)]
struct Report {
    bulk_changes: usize,
    rows: usize,
    carrier_calls: usize,
    faults: BTreeMap<&'static str, usize>,
    violations: Vec<String>,
}

pub async fn run(opts: ChaosOptions) -> Result<()> {
    let mut total = Report::default();
    let mut failing = Vec::new();
    for seed in opts.first_seed..opts.first_seed + opts.seeds {
        let report = one(seed, opts.devices).await.with_context(|| format!("seed {seed}"))?;
        println!(
            "seed={seed} bulk_changes={} rows={} carrier_calls={} faults={:?} violations={}",
            report.bulk_changes,
            report.rows,
            report.carrier_calls,
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
        for (kind, n) in report.faults {
            *total.faults.entry(kind).or_default() += n;
        }
    }
    println!(
        "seeds={} bulk_changes={} rows={} carrier_calls={} faults={:?} violations={}",
        opts.seeds,
        total.bulk_changes,
        total.rows,
        total.carrier_calls,
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

fn seed_data(devices: usize) -> Seed {
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Chaos".into() }],
        service_providers: vec![
            SeedServiceProvider {
                name: "POD19 chaos".into(),
                username: "chaos".into(),
                secret: "chaos-key".into(),
                rate_limit_per_second: 500.0,
                ..SeedServiceProvider::new(SP, 1, domain::Integration::Pod19.id())
            },
            SeedServiceProvider {
                name: "Pond chaos".into(),
                secret: "pond-chaos-key".into(),
                rate_limit_per_second: 500.0,
                carrier_settings: Some(json!({"DistributorId": "D-CHAOS"})),
                ..SeedServiceProvider::new(POND, 1, domain::Integration::Pond.id())
            },
        ],
        carrier_rate_plans: vec![
            SeedRatePlan::new(1, SP, "RP-1GB", 1024.0, 5.0),
            SeedRatePlan::new(2, SP, PLAN, 5120.0, 12.0),
            SeedRatePlan { jasper_rate_plan_id: Some(4711), ..SeedRatePlan::new(3, POND, "POND-1GB", 1024.0, 4.0) },
            SeedRatePlan {
                jasper_rate_plan_id: Some(POND_NEW_TYPE),
                ..SeedRatePlan::new(4, POND, POND_PLAN, 5120.0, 9.0)
            },
        ],
        devices: (0..devices)
            .map(|i| SeedDevice {
                carrier_rate_plan: Some("RP-1GB".into()),
                communication_plan: Some("CP-Data".into()),
                ..SeedDevice::new(1, SP, bench_iccid(i), if i % 2 == 0 { "ACTIVATION_READY" } else { "ACTIVATED" })
            })
            .chain((0..devices).map(|i| SeedDevice {
                carrier_rate_plan: Some("POND-1GB".into()),
                ..SeedDevice::new(1, POND, bench_iccid(POND_SIMS_FROM + i), "ACTIVE")
            }))
            .collect(),
        ..Default::default()
    }
}

async fn one(seed: u64, devices: usize) -> Result<Report> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let faults = Faults {
        latency_ms: rng.u64(0..15),
        fail_every: [0, 0, 3, 4, 5, 7][rng.usize(..6)],
        apply_then_fail_next_writes: rng.u32(0..6),
        hang_next_writes: rng.u32(0..3),
        hang_ms: 1_500,
        ..Faults::default()
    };
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = StackConfig::local(dir.path().join("chaos.db"), dir.path().join("outbox"), SECRET.into());
    config.seed = Some(seed_data(devices));
    config.simulators = true;
    config.simulator_faults = faults.clone();
    config.http_timeout = Duration::from_secs(1);
    config.retry.base_delay = Duration::from_millis(20);
    config.retry.max_delay = Duration::from_millis(500);
    config.worker.continuation_delay = Duration::from_millis(200);
    config.worker.carrier_result_wait = Duration::from_millis(500);
    let stack = Stack::start(config).await?;
    let token = api::Hs256::new(SECRET)
        .and_then(|a| a.mint(&api::Claims::new(1, "chaos", 3600)))
        .map_err(|e| anyhow::anyhow!("token: {e}"))?;
    let http = reqwest::Client::new();
    let base = stack.base_url();

    // A few bulk changes over random, overlapping devices: activations and plan changes, both idempotent and
    // monotone, so the carrier's final state says whether each took.
    let mut submitted = Vec::new();
    for _ in 0..rng.usize(2..5) {
        let mut picked: Vec<String> = (0..devices).filter(|_| rng.bool()).map(bench_iccid).collect();
        picked.truncate(devices.max(1));
        if picked.is_empty() {
            continue;
        }
        let body = if rng.bool() {
            json!({"ServiceProviderId": SP, "ChangeType": 3, "Devices": picked, "StatusUpdate": {"TargetStatus": "Active"}})
        } else {
            json!({"ServiceProviderId": SP, "ChangeType": 7, "Devices": picked,
                   "CarrierRatePlanUpdate": {"CarrierRatePlan": PLAN}})
        };
        let answer: Value =
            http.post(format!("{base}/M2M/BulkChange")).bearer_auth(&token).json(&body).send().await?.json().await?;
        let id = answer["BulkChangeId"].as_i64().with_context(|| format!("not accepted: {answer}"))?;
        submitted.push((id, body["ChangeType"].as_i64() == Some(3)));
    }
    // Pond plan changes (the package saga) over random, overlapping SIMs.
    let mut pond_submitted = Vec::new();
    for _ in 0..rng.usize(1..3) {
        let picked: Vec<String> =
            (0..devices).filter(|_| rng.bool()).map(|i| bench_iccid(POND_SIMS_FROM + i)).collect();
        if picked.is_empty() {
            continue;
        }
        let body = json!({"ServiceProviderId": POND, "ChangeType": 7, "Devices": picked,
                          "CarrierRatePlanUpdate": {"CarrierRatePlan": POND_PLAN}});
        let answer: Value =
            http.post(format!("{base}/M2M/BulkChange")).bearer_auth(&token).json(&body).send().await?.json().await?;
        pond_submitted.push(answer["BulkChangeId"].as_i64().with_context(|| format!("not accepted: {answer}"))?);
    }
    let mut report = Report { bulk_changes: submitted.len() + pond_submitted.len(), ..Report::default() };
    let mut statuses = Vec::new();
    for (id, activation) in &submitted {
        let status = tokio::time::timeout(Duration::from_secs(120), crate::demo::wait_final(&http, &base, &token, *id))
            .await
            .map_err(|_| anyhow::anyhow!("bulk change {id} not final within 120 s"))??;
        statuses.push((*id, *activation, status));
    }
    let sim = stack.simulators.control_center.get(&SP).context("the Control Center simulator")?;
    let calls = sim.state.calls();
    report.carrier_calls = calls.len();
    for call in &calls {
        let kind = match call.status {
            500 => "server_error_before_applying",
            502 => "applied_then_bad_gateway",
            429 => "throttled",
            _ => continue,
        };
        *report.faults.entry(kind).or_default() += 1;
    }
    if faults.hang_next_writes > 0 {
        report.faults.insert("hung_writes", faults.hang_next_writes as usize);
    }
    let (sim_devices, audit) = {
        let account = sim.state.account.lock().map_err(|_| anyhow::anyhow!("simulator state"))?;
        (account.devices.clone(), account.audit.clone())
    };
    for (id, activation, status) in &statuses {
        for row in status["Rows"].as_array().into_iter().flatten() {
            report.rows += 1;
            let iccid = row["ICCID"].as_str().unwrap_or_default();
            let state = row["Status"].as_str().unwrap_or_default();
            let details = row["StatusDetails"].as_str().unwrap_or_default();
            let Some(device) = sim_devices.get(iccid) else { continue };
            // Odd devices were active before any change (the seed): their activation shows whatever happened.
            let was_active = (0..devices).any(|i| i % 2 == 1 && bench_iccid(i) == iccid);
            let shows =
                if *activation { device.status == "ACTIVATED" } else { device.rate_plan.as_deref() == Some(PLAN) };
            if !["PROCESSED", "API_FAILED", "ERROR", "CANCELLED"].contains(&state) {
                report.violations.push(format!("bulk change {id}: row of {iccid} is not final ({state})"));
            }
            if state == "PROCESSED" && !shows {
                report.violations.push(format!("bulk change {id}: {iccid} PROCESSED but the carrier does not show it"));
            }
            let held_elsewhere = details.contains("has an open");
            let admits = ["may", "unknown", "lost", "already"].iter().any(|w| details.to_lowercase().contains(w));
            if state != "PROCESSED" && shows && !held_elsewhere && !admits && !(*activation && was_active) {
                report
                    .violations
                    .push(format!("bulk change {id}: {iccid} {state} \"{details}\" but the carrier shows the change"));
            }
        }
    }
    for (iccid, entries) in &audit {
        let plan_sets = entries.iter().filter(|e| e.field == "ratePlan" && e.value.as_deref() == Some(PLAN)).count();
        if plan_sets > 1 {
            report.violations.push(format!("{iccid}: the plan change was applied {plan_sets} times"));
        }
        let activations =
            entries.iter().filter(|e| e.field == "status" && e.value.as_deref() == Some("ACTIVATED")).count();
        if activations > 1 {
            report.violations.push(format!("{iccid}: activated {activations} times"));
        }
    }
    let pond = stack.simulators.pond.get(&POND).context("the Pond simulator")?;
    report.carrier_calls += pond.state.calls().len();
    for call in pond.state.calls() {
        match call.status {
            500 => *report.faults.entry("server_error_before_applying").or_default() += 1,
            502 => *report.faults.entry("applied_then_bad_gateway").or_default() += 1,
            _ => {}
        }
    }
    for id in &pond_submitted {
        let status = tokio::time::timeout(Duration::from_secs(120), crate::demo::wait_final(&http, &base, &token, *id))
            .await
            .map_err(|_| anyhow::anyhow!("bulk change {id} not final within 120 s"))??;
        for row in status["Rows"].as_array().into_iter().flatten() {
            report.rows += 1;
            let iccid = row["ICCID"].as_str().unwrap_or_default();
            let state = row["Status"].as_str().unwrap_or_default();
            let details = row["StatusDetails"].as_str().unwrap_or_default();
            let active = pond.state.active_packages(iccid);
            let new_ones = pond.state.packages(iccid).iter().filter(|p| p.package_type_id == POND_NEW_TYPE).count();
            let on_new_alone = active.len() == 1 && active[0].package_type_id == POND_NEW_TYPE;
            if !["PROCESSED", "API_FAILED", "ERROR", "CANCELLED"].contains(&state) {
                report.violations.push(format!("bulk change {id}: row of {iccid} is not final ({state})"));
            }
            if active.is_empty() {
                report.violations.push(format!("bulk change {id}: {iccid} has no active package on Pond"));
            }
            if new_ones > 1 {
                report.violations.push(format!("bulk change {id}: {iccid} got {new_ones} packages of the new plan"));
            }
            if state == "PROCESSED" && !on_new_alone {
                report.violations.push(format!(
                    "bulk change {id}: {iccid} PROCESSED but Pond shows {} active package(s)",
                    active.len()
                ));
            }
            let held_elsewhere = details.contains("has an open");
            if state != "PROCESSED" && !held_elsewhere && active.len() > 1 && !details.contains("billed for both") {
                report.violations.push(format!(
                    "bulk change {id}: {iccid} has {} active packages on Pond but its row does not say so: {details}",
                    active.len()
                ));
            }
            let admits = ["may", "unknown", "lost"].iter().any(|w| details.to_lowercase().contains(w));
            if state != "PROCESSED" && !held_elsewhere && on_new_alone && !admits {
                report
                    .violations
                    .push(format!("bulk change {id}: {iccid} {state} \"{details}\" but Pond shows the new plan alone"));
            }
        }
    }
    stack.stop().await;
    Ok(report)
}
