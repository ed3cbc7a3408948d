//! The Control Center (POD19) part of the sweep: activations and plan changes over half-ready, half-active SIMs;
//! and tenant 2's account (`BYSTANDER`), whose SIMs tenant 1 names and which no call may reach.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider};

use super::{Finished, Report, times_asked};
use crate::bench::bench_iccid;
use crate::stack::Stack;

pub(super) const SP: i64 = 1;
const PLAN: &str = "RP-5GB";
/// Every username change names the same one: the carrier's final state says whether each took.
const USERNAME: &str = "chaos-fleet";
/// Active SIMs only ever deactivated (`bench_iccid(DEACTIVATE_FROM + i)`): a deactivation is not monotone with the
/// activations of the other SIMs, so it has its own.
const DEACTIVATE_FROM: usize = 8_000;
const DEACTIVATE_SIMS: usize = 6;
/// Spare SIMs on the carrier (not in our database) that a SIM swap of active SIM `i` moves to:
/// `bench_iccid(SPARE_FROM + i)`.
const SPARE_FROM: usize = 8_500;
/// The customer rate plan a CustomerRatePlanChange (4, no carrier call) gives; only our database holds it.
const CUSTOMER_PLAN: i64 = 5;
/// Tenant 2's Control Center account and its SIMs (`bench_iccid(BYSTANDER_SIMS_FROM + i)`).
pub(super) const BYSTANDER: i64 = 9;
const BYSTANDER_SIMS_FROM: usize = 9_000;

/// The new IMEI an IMEI change gives SIM `i` (valid: Luhn).
fn imei(i: usize) -> String {
    let payload = format!("3569380{i:07}");
    format!("{payload}{}", domain::ids::luhn_check_digit(&payload))
}

pub(super) fn seed(seed: &mut Seed, devices: usize) {
    for (id, tenant, name) in [(SP, 1, "POD19 chaos"), (BYSTANDER, 2, "POD19 bystander")] {
        seed.service_providers.push(SeedServiceProvider {
            name: name.into(),
            username: format!("chaos-{id}"),
            secret: format!("chaos-key-{id}"),
            rate_limit_per_second: 500.0,
            ..SeedServiceProvider::new(id, tenant, domain::Integration::Pod19.id())
        });
    }
    seed.carrier_rate_plans.extend([
        SeedRatePlan::new(1, SP, "RP-1GB", 1024.0, 5.0),
        SeedRatePlan::new(2, SP, PLAN, 5120.0, 12.0),
        SeedRatePlan::new(9, BYSTANDER, "RP-1GB", 1024.0, 5.0),
        SeedRatePlan::new(10, BYSTANDER, PLAN, 5120.0, 12.0),
    ]);
    seed.devices.extend((0..devices).map(|i| SeedDevice {
        carrier_rate_plan: Some("RP-1GB".into()),
        communication_plan: Some("CP-Data".into()),
        ..SeedDevice::new(1, SP, bench_iccid(i), if i % 2 == 0 { "ACTIVATION_READY" } else { "ACTIVATED" })
    }));
    seed.devices.extend(
        (0..DEACTIVATE_SIMS)
            .map(|i| SeedDevice::new(1, SP, bench_iccid(DEACTIVATE_FROM + i), "ACTIVATED"))
            .map(|d| SeedDevice { carrier_rate_plan: Some("RP-1GB".into()), ..d }),
    );
    seed.customer_rate_plans.push(store::seed::SeedCustomerPlan {
        id: CUSTOMER_PLAN,
        tenant_id: 1,
        name: "Chaos fleet plan".into(),
    });
    seed.devices.extend((0..devices.min(4)).map(|i| SeedDevice {
        carrier_rate_plan: Some("RP-1GB".into()),
        ..SeedDevice::new(2, BYSTANDER, bench_iccid(BYSTANDER_SIMS_FROM + i), "ACTIVATION_READY")
    }));
}

/// The spare SIMs a swap moves to, in the carrier's inventory only (a swap's new SIM is not a device of ours yet).
pub(super) fn spares(stack: &Stack, devices: usize) -> Result<()> {
    let sim = stack.simulators.control_center.get(&SP).context("the Control Center simulator")?;
    sim.state.upsert_devices(
        (0..devices)
            .map(|i| simulators::SimDevice {
                iccid: bench_iccid(SPARE_FROM + i),
                status: "ACTIVATION_READY".into(),
                rate_plan: Some("RP-1GB".into()),
                ..Default::default()
            })
            .collect(),
    );
    Ok(())
}

/// The SIM a swap of `iccid` moves to.
fn spare_of(iccid: &str, devices: usize) -> Option<String> {
    (0..devices).find(|i| bench_iccid(*i) == iccid).map(|i| bench_iccid(SPARE_FROM + i))
}

/// A SIM swap of an active SIM (one device a request).
fn is_swap(f: &Finished) -> bool {
    f.change_type() == 8 && f.body["ChangeIdentifier"]["NewICCID"].is_string()
}

/// Activations and plan changes over random, overlapping SIMs (both idempotent and monotone, so the carrier's
/// final state says whether each took), some naming a SIM of tenant 2; and, one seed in three, tenant 1 asking
/// for tenant 2's account.
pub(super) fn bodies(rng: &mut fastrand::Rng, devices: usize) -> Vec<Value> {
    let mut bodies = Vec::new();
    for _ in 0..rng.usize(2..5) {
        let mut picked: Vec<String> = (0..devices).filter(|_| rng.bool()).map(bench_iccid).collect();
        if rng.u8(..3) == 0 {
            picked.push(bench_iccid(BYSTANDER_SIMS_FROM + rng.usize(..devices.clamp(1, 4))));
        }
        if picked.is_empty() {
            continue;
        }
        bodies.push(match rng.u8(..3) {
            0 => json!({"ServiceProviderId": SP, "ChangeType": 3, "Devices": picked,
                        "StatusUpdate": {"TargetStatus": "Active"}}),
            1 => json!({"ServiceProviderId": SP, "ChangeType": 7, "Devices": picked,
                        "CarrierRatePlanUpdate": {"CarrierRatePlan": PLAN}}),
            _ => json!({"ServiceProviderId": SP, "ChangeType": 6, "Devices": picked,
                        "Username": {"NewUsername": USERNAME}}),
        });
    }
    // An IMEI change of one SIM (one new IMEI per SIM: monotone) and an archival of a few (no carrier call: the
    // rows end, the counts add up, and the SIMs are refused by later changes).
    if rng.bool() {
        let i = rng.usize(..devices.max(1));
        bodies.push(json!({"ServiceProviderId": SP, "ChangeType": 8, "Devices": [bench_iccid(i)],
                           "ChangeIdentifier": {"NewIMEI": imei(i)}}));
    }
    // A SIM swap of an active (odd) SIM to its spare: the new SIM takes the plans and status, the old one is
    // deactivated, or every step is undone.
    if rng.bool() && devices > 1 {
        let i = rng.usize(..devices / 2) * 2 + 1;
        bodies.push(json!({"ServiceProviderId": SP, "ChangeType": 8, "Devices": [bench_iccid(i)],
                           "ChangeIdentifier": {"NewICCID": bench_iccid(SPARE_FROM + i)}}));
    }
    if rng.u8(..3) == 0 {
        let picked: Vec<String> = (0..devices).filter(|_| rng.u8(..8) == 0).map(bench_iccid).collect();
        if !picked.is_empty() {
            bodies.push(json!({"ServiceProviderId": SP, "ChangeType": 5, "Devices": picked}));
        }
    }
    // Deactivations of the SIMs kept for them, and customer rate plans over the others (no carrier call).
    if rng.bool() {
        let picked: Vec<String> =
            (0..DEACTIVATE_SIMS).filter(|_| rng.bool()).map(|i| bench_iccid(DEACTIVATE_FROM + i)).collect();
        if !picked.is_empty() {
            bodies.push(json!({"ServiceProviderId": SP, "ChangeType": 3, "Devices": picked,
                               "StatusUpdate": {"TargetStatus": "Deactivated"}}));
        }
    }
    if rng.bool() {
        let picked: Vec<String> = (0..devices).filter(|_| rng.u8(..3) == 0).map(bench_iccid).collect();
        if !picked.is_empty() {
            bodies.push(json!({"ServiceProviderId": SP, "ChangeType": 4, "Devices": picked,
                               "CustomerRatePlanUpdate": {"CustomerRatePlanId": CUSTOMER_PLAN}}));
        }
    }
    if rng.u8(..3) == 0 {
        bodies.push(
            json!({"ServiceProviderId": BYSTANDER, "ChangeType": 3, "Devices": [bench_iccid(BYSTANDER_SIMS_FROM)],
                           "StatusUpdate": {"TargetStatus": "Active"}}),
        );
    }
    bodies
}

pub(super) fn check(stack: &Stack, finished: &[&Finished], devices: usize, report: &mut Report) -> Result<()> {
    let bystander = stack.simulators.control_center.get(&BYSTANDER).context("the bystander's simulator")?;
    let calls = bystander.state.calls();
    if !calls.is_empty() {
        report.violation(format!("tenant 2's Control Center account got {} call(s) from tenant 1", calls.len()));
    }
    let sim = stack.simulators.control_center.get(&SP).context("the Control Center simulator")?;
    let (sim_devices, audit) = {
        let account = sim.state.account.lock().map_err(|_| anyhow::anyhow!("simulator state"))?;
        (account.devices.clone(), account.audit.clone())
    };
    // SIMs a swap may have taken out of service: what their other rows set is no longer theirs to show.
    let swapped: Vec<&str> = finished
        .iter()
        .filter(|f| is_swap(f))
        .flat_map(|f| f.rows().filter(|r| !r.made_no_call() && r.state != "ERROR").map(|r| r.iccid).collect::<Vec<_>>())
        .collect();
    for f in finished.iter().filter(|f| f.service_provider() == SP && is_swap(f)) {
        for row in f.rows() {
            let (Some(old), Some(new)) = (sim_devices.get(row.iccid), spare_of(row.iccid, devices)) else { continue };
            let new_in_service = sim_devices.get(&new).is_some_and(|d| d.status == "ACTIVATED");
            let shows = old.status == "DEACTIVATED" && new_in_service;
            // Another swap of the SIM (an operator's retry) that did it, or says it may have, speaks for the old
            // SIM's state (`make chaos SEED=137`: a swap not started, throttled; its retry swapped it).
            let swapped_elsewhere = finished.iter().any(|g| {
                g.id != f.id
                    && is_swap(g)
                    && g.rows().any(|r| r.iccid == row.iccid && (r.state == "PROCESSED" || r.admits_unknown()))
            });
            if row.state != "PROCESSED"
                && !row.made_no_call()
                && old.status != "ACTIVATED"
                && !row.admits_unknown()
                && !swapped_elsewhere
            {
                report.violation(format!(
                    "bulk change {}: swap of {} {} \"{}\" but the old SIM is {} on the carrier",
                    f.id, row.iccid, row.state, row.details, old.status
                ));
            }
            super::check_row(report, finished, f, &row, "the carrier", shows, false);
        }
    }
    for f in finished.iter().filter(|f| f.service_provider() == SP && [3, 6, 7, 8].contains(&f.change_type())) {
        if is_swap(f) {
            continue;
        }
        let deactivation = f.body["StatusUpdate"]["TargetStatus"] == "Deactivated";
        let activation = f.change_type() == 3 && !deactivation;
        for row in f.rows() {
            if (0..4).any(|i| bench_iccid(BYSTANDER_SIMS_FROM + i) == row.iccid) && row.state == "PROCESSED" {
                report.violation(format!("bulk change {}: tenant 2's {} PROCESSED for tenant 1", f.id, row.iccid));
            }
            let Some(device) = sim_devices.get(row.iccid) else { continue };
            if swapped.contains(&row.iccid) {
                continue;
            }
            // Odd SIMs were active before any change (the seed): their activation shows whatever happened.
            let was_active = (0..devices).any(|i| i % 2 == 1 && bench_iccid(i) == row.iccid);
            let shows = match f.change_type() {
                3 if deactivation => device.status == "DEACTIVATED",
                3 => device.status == "ACTIVATED",
                7 => device.rate_plan.as_deref() == Some(PLAN),
                8 => (0..devices)
                    .any(|i| bench_iccid(i) == row.iccid && device.modem_id.as_deref() == Some(imei(i).as_str())),
                _ => device.device_id.as_deref() == Some(USERNAME),
            };
            // An activation of a SIM active before any change shows whatever happened to the row.
            let already_so = activation && was_active;
            super::check_row(report, finished, f, &row, "the carrier", shows, already_so);
        }
    }
    for (iccid, entries) in &audit {
        let plan_sets = entries.iter().filter(|e| e.field == "ratePlan" && e.value.as_deref() == Some(PLAN)).count();
        if plan_sets > 1 {
            report.violation(format!("{iccid}: the plan change was applied {plan_sets} times"));
        }
        // A spare SIM takes the username of the SIM it replaces once, by the swap.
        let spare = (0..devices).any(|i| bench_iccid(SPARE_FROM + i) == *iccid);
        let asked = times_asked(finished, 6, iccid) + usize::from(spare);
        let renames = entries.iter().filter(|e| e.field == "deviceID" && e.value.as_deref() == Some(USERNAME)).count();
        if renames > asked {
            super::trace(finished, iccid);
            report.violation(format!("{iccid}: renamed {renames} times for {asked} bulk change(s)"));
        }
        // A SIM deactivated again while deactivated is a change applied twice. Set again after another status (a
        // swap compensated: its new SIM deactivated, then activated again by the retry) it is a change of its own:
        // counting every activation blamed that (`make chaos SEED=325`). Control Center refuses an activation of
        // an activated SIM (400), so the row checks catch an activation sent twice.
        let statuses: Vec<&str> =
            entries.iter().filter(|e| e.field == "status").filter_map(|e| e.value.as_deref()).collect();
        if statuses.windows(2).any(|w| w[0] == "DEACTIVATED" && w[1] == "DEACTIVATED") {
            report.violation(format!("{iccid}: deactivated again while deactivated ({statuses:?}, newest first)"));
        }
    }
    Ok(())
}

/// Customer rate plans (4) have no carrier: our database is where they live, so it is the witness. A PROCESSED row's
/// device has the plan; a row that did not succeed while the device has it was done by another bulk change.
pub(super) async fn check_customer_plans(stack: &Stack, finished: &[&Finished], report: &mut Report) -> Result<()> {
    let shows = |device: &domain::rules::DeviceRecord| device.customer_rate_plan_id == Some(CUSTOMER_PLAN);
    super::check_in_database(stack, finished, SP, 4, shows, report).await
}
