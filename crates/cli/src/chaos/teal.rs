//! The Teal part of the sweep: plan changes and data disabled (status Stopped) over random, overlapping eSIMs, data
//! enabled (status Online) on eSIMs of their own that start stopped; operations whose callbacks may be dropped or
//! duplicated.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider};

use super::{Finished, Report, picks, times_asked};
use crate::bench::bench_iccid;
use crate::stack::Stack;

const TEAL: i64 = 50;
/// The eSIMs are `bench_iccid(SIMS_FROM + i)`, EID `eid(i)`.
const SIMS_FROM: usize = 5_000;
const OLD_PLAN: &str = "0f3d5a6e7b8c4d2e9f1a2b3c4d5e6f70";
const NEW_PLAN: &str = "cda438862b284bcdaec82ee516eada14";

/// eSIMs that start stopped, only ever enabled (not monotone with the others' disable): `bench_iccid(STOPPED_FROM +
/// i)`, EID `eid(STOPPED_EIDS + i)`.
const STOPPED_FROM: usize = 5_500;
const STOPPED_EIDS: usize = 1_000;
const STOPPED_SIMS: usize = 6;

fn eid(i: usize) -> String {
    format!("89049032{i:024}")
}

fn eid_of(iccid: &str, devices: usize) -> Option<String> {
    (0..devices)
        .find(|i| bench_iccid(SIMS_FROM + i) == iccid)
        .map(eid)
        .or_else(|| (0..STOPPED_SIMS).find(|i| bench_iccid(STOPPED_FROM + i) == iccid).map(|i| eid(STOPPED_EIDS + i)))
}

/// One of the eSIMs that start stopped.
fn starts_stopped(iccid: &str) -> bool {
    (0..STOPPED_SIMS).any(|i| bench_iccid(STOPPED_FROM + i) == iccid)
}

pub(super) fn seed(seed: &mut Seed, devices: usize) {
    seed.service_providers.push(SeedServiceProvider {
        name: "Teal chaos".into(),
        username: "teal-key".into(),
        secret: "teal-secret".into(),
        rate_limit_per_second: 500.0,
        ..SeedServiceProvider::new(TEAL, 1, domain::Integration::Teal.id())
    });
    seed.carrier_rate_plans.extend([
        SeedRatePlan { plan_uuid: Some(OLD_PLAN.into()), ..SeedRatePlan::new(50, TEAL, "TEAL-1GB", 1024.0, 4.0) },
        SeedRatePlan { plan_uuid: Some(NEW_PLAN.into()), ..SeedRatePlan::new(51, TEAL, "TEAL-5GB", 5120.0, 9.0) },
    ]);
    seed.devices.extend((0..devices).map(|i| SeedDevice {
        eid: Some(eid(i)),
        carrier_rate_plan: Some("TEAL-1GB".into()),
        ..SeedDevice::new(1, TEAL, bench_iccid(SIMS_FROM + i), "ONLINE")
    }));
    seed.devices.extend((0..STOPPED_SIMS).map(|i| SeedDevice {
        eid: Some(eid(STOPPED_EIDS + i)),
        carrier_rate_plan: Some("TEAL-1GB".into()),
        ..SeedDevice::new(1, TEAL, bench_iccid(STOPPED_FROM + i), "STOPPED")
    }));
}

pub(super) fn bodies(rng: &mut fastrand::Rng, devices: usize) -> Vec<Value> {
    let mut bodies: Vec<Value> = picks(rng, STOPPED_SIMS, STOPPED_FROM, 0..2)
        .into_iter()
        .map(|(picked, _)| {
            json!({"ServiceProviderId": TEAL, "ChangeType": 3, "Devices": picked,
                   "StatusUpdate": {"TargetStatus": "Online"}})
        })
        .collect();
    bodies.extend(picks(rng, devices, SIMS_FROM, 1..3).into_iter().map(|(picked, coin)| {
        if coin {
            json!({"ServiceProviderId": TEAL, "ChangeType": 7, "Devices": picked,
                       "CarrierRatePlanUpdate": {"CarrierRatePlan": "TEAL-5GB"}})
        } else {
            json!({"ServiceProviderId": TEAL, "ChangeType": 3, "Devices": picked,
                       "StatusUpdate": {"TargetStatus": "Stopped"}})
        }
    }));
    bodies
}

pub(super) fn check(stack: &Stack, finished: &[&Finished], devices: usize, report: &mut Report) -> Result<()> {
    let teal = stack.simulators.teal.get(&TEAL).context("the Teal simulator")?;
    for f in finished.iter().filter(|f| f.service_provider() == TEAL) {
        let plan = f.change_type() == 7;
        for row in f.rows() {
            let Some(esim) = eid_of(row.iccid, devices).and_then(|e| teal.state.esim(&e)) else { continue };
            let shows = if plan {
                esim.plan_uuid.as_deref() == Some(NEW_PLAN)
            } else if starts_stopped(row.iccid) {
                !esim.suspended
            } else {
                esim.suspended
            };
            super::check_row(report, finished, f, &row, "Teal", shows, false);
        }
    }
    let sims = (0..devices).map(|i| (bench_iccid(SIMS_FROM + i), eid(i)));
    let stopped = (0..STOPPED_SIMS).map(|i| (bench_iccid(STOPPED_FROM + i), eid(STOPPED_EIDS + i)));
    for (iccid, eid) in sims.chain(stopped) {
        let kinds = teal.state.operations_naming(&eid);
        for (kind, change_type) in [("assign-plan", 7), ("disable", 3), ("enable", 3)] {
            let sent = kinds.iter().filter(|k| *k == kind).count();
            let asked = times_asked(finished, change_type, &iccid);
            if sent > asked {
                report.violation(format!("{iccid}: {sent} Teal {kind} operations for {asked} bulk change(s)"));
            }
        }
    }
    Ok(())
}
