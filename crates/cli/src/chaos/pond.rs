//! The Pond part of the sweep: plan changes (the package saga: add the new package, activate it, terminate the old)
//! and services disabled (status Inactive; every SIM starts enabled) over random, overlapping SIMs.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider};

use super::{Finished, Report, done_elsewhere, picks, spoken_later};
use crate::bench::bench_iccid;
use crate::stack::Stack;

const POND: i64 = 2;
/// The SIMs are `bench_iccid(SIMS_FROM + i)`.
const SIMS_FROM: usize = 1_000;
const PLAN: &str = "POND-5GB";
const NEW_TYPE: i64 = 4712;

pub(super) fn seed(seed: &mut Seed, devices: usize) {
    seed.service_providers.push(SeedServiceProvider {
        name: "Pond chaos".into(),
        secret: "pond-chaos-key".into(),
        rate_limit_per_second: 500.0,
        carrier_settings: Some(json!({"DistributorId": "D-CHAOS"})),
        ..SeedServiceProvider::new(POND, 1, domain::Integration::Pond.id())
    });
    seed.carrier_rate_plans.extend([
        SeedRatePlan { jasper_rate_plan_id: Some(4711), ..SeedRatePlan::new(3, POND, "POND-1GB", 1024.0, 4.0) },
        SeedRatePlan { jasper_rate_plan_id: Some(NEW_TYPE), ..SeedRatePlan::new(4, POND, PLAN, 5120.0, 9.0) },
    ]);
    seed.devices.extend((0..devices).map(|i| SeedDevice {
        carrier_rate_plan: Some("POND-1GB".into()),
        ..SeedDevice::new(1, POND, bench_iccid(SIMS_FROM + i), "ACTIVE")
    }));
}

pub(super) fn bodies(rng: &mut fastrand::Rng, devices: usize) -> Vec<Value> {
    let mut bodies: Vec<Value> = picks(rng, devices, SIMS_FROM, 1..3)
        .into_iter()
        .map(|(picked, _)| {
            json!({"ServiceProviderId": POND, "ChangeType": 7, "Devices": picked,
                   "CarrierRatePlanUpdate": {"CarrierRatePlan": PLAN}})
        })
        .collect();
    bodies.extend(picks(rng, devices, SIMS_FROM, 0..2).into_iter().map(|(picked, _)| {
        json!({"ServiceProviderId": POND, "ChangeType": 3, "Devices": picked,
               "StatusUpdate": {"TargetStatus": "Inactive"}})
    }));
    bodies
}

pub(super) fn check(stack: &Stack, finished: &[&Finished], report: &mut Report) -> Result<()> {
    let pond = stack.simulators.pond.get(&POND).context("the Pond simulator")?;
    // Services disabled: the SIM's services on Pond are the witness.
    for f in finished.iter().filter(|f| f.service_provider() == POND && f.change_type() == 3) {
        for row in f.rows() {
            let shows = pond.state.services_enabled(row.iccid) == Some(false);
            super::check_row(report, finished, f, &row, "Pond", shows, false);
        }
    }
    for f in finished.iter().filter(|f| f.service_provider() == POND && f.change_type() == 7) {
        for row in f.rows() {
            let active = pond.state.active_packages(row.iccid);
            let new_ones = pond.state.packages(row.iccid).iter().filter(|p| p.package_type_id == NEW_TYPE).count();
            let on_new_alone = active.len() == 1 && active[0].package_type_id == NEW_TYPE;
            if active.is_empty() {
                report.violation(format!("bulk change {}: {} has no active package on Pond", f.id, row.iccid));
            }
            if new_ones > 1 {
                report
                    .violation(format!("bulk change {}: {} got {new_ones} packages of the new plan", f.id, row.iccid));
            }
            if row.state == "PROCESSED" && !on_new_alone {
                report.violation(format!(
                    "bulk change {}: {} PROCESSED but Pond shows {} active package(s)",
                    f.id,
                    row.iccid,
                    active.len()
                ));
            }
            if row.state != "PROCESSED"
                && !row.made_no_call()
                && active.len() > 1
                && !row.details.contains("billed for both")
                && !spoken_later(finished, f.id, row.iccid)
            {
                report.violation(format!(
                    "bulk change {}: {} has {} active packages on Pond but its row does not say so: {}",
                    f.id,
                    row.iccid,
                    active.len(),
                    row.details
                ));
            }
            let admits = ["may", "unknown", "lost"].iter().any(|w| row.details.to_lowercase().contains(w));
            if row.state != "PROCESSED"
                && on_new_alone
                && !row.made_no_call()
                && !admits
                && !done_elsewhere(finished, f.id, 7, row.iccid)
            {
                report.violation(format!(
                    "bulk change {}: {} {} \"{}\" but Pond shows the new plan alone",
                    f.id, row.iccid, row.state, row.details
                ));
            }
        }
    }
    Ok(())
}
