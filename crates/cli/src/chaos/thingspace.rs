//! The ThingSpace part of the sweep: activations of pre-active (and some active) devices, plan changes, usernames
//! (custom fields), archivals (no carrier call), IMEI changes and ICCID swaps of active devices, asynchronous
//! requests whose callbacks may be dropped, duplicated, delayed or reordered; deletions of deactivated devices.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider, SeedThingSpace};

use super::{Finished, Report, maybe_done_elsewhere, picks, times_asked};
use crate::bench::bench_iccid;
use crate::stack::Stack;

const TS: i64 = 40;
/// The devices are `bench_iccid(SIMS_FROM + i)`: even ones pre-active, odd ones active.
const SIMS_FROM: usize = 4_000;
const PLAN: &str = "m2m_4G_5GB";
/// Every username change names the same one (CustomField1): the carrier's final state says whether each took.
const USERNAME: &str = "chaos-ts-fleet";
/// Deactivated devices, for deletions: `bench_iccid(DEACTIVE_FROM + i)`.
const DEACTIVE_FROM: usize = SIMS_FROM + 500;
/// The ICCID a swap gives device `i`: `bench_iccid(SWAP_FROM + i)`, unknown to ThingSpace and to us until then.
const SWAP_FROM: usize = 7_000;

/// The IMEI an IMEI change gives device `i` (one per device: a second change names the same).
fn new_imei(i: usize) -> String {
    let payload = format!("35000023{i:06}");
    format!("{payload}{}", domain::ids::luhn_check_digit(&payload))
}

pub(super) fn seed(seed: &mut Seed, devices: usize) {
    seed.service_providers.push(SeedServiceProvider {
        name: "ThingSpace chaos".into(),
        username: "uws-chaos".into(),
        secret: "uws-password-chaos".into(),
        rate_limit_per_second: 500.0,
        thing_space: Some(SeedThingSpace {
            app_key: "app-key-chaos".into(),
            app_secret: "app-secret-chaos".into(),
            account_name: "0868924201-00001".into(),
            callback_username: "callback-chaos".into(),
            callback_password: "callback-password-chaos".into(),
        }),
        ..SeedServiceProvider::new(TS, 1, domain::Integration::ThingSpace.id())
    });
    seed.carrier_rate_plans
        .extend([SeedRatePlan::new(40, TS, "m2m_4G", 1024.0, 5.0), SeedRatePlan::new(41, TS, PLAN, 5120.0, 9.0)]);
    seed.devices.extend((0..devices).map(|i| {
        let payload = format!("35000022{i:06}");
        SeedDevice {
            imei: Some(format!("{payload}{}", domain::ids::luhn_check_digit(&payload))),
            carrier_rate_plan: Some("m2m_4G".into()),
            ..SeedDevice::new(1, TS, bench_iccid(SIMS_FROM + i), if i % 2 == 0 { "PREACTIVE" } else { "ACTIVE" })
        }
    }));
    seed.devices.extend((0..devices).map(|i| SeedDevice {
        carrier_rate_plan: Some("m2m_4G".into()),
        ..SeedDevice::new(1, TS, bench_iccid(DEACTIVE_FROM + i), "DEACTIVE")
    }));
}

pub(super) fn bodies(rng: &mut fastrand::Rng, devices: usize) -> Vec<Value> {
    picks(rng, devices, SIMS_FROM, 1..3)
        .into_iter()
        .map(|(picked, coin)| {
            if coin {
                json!({"ServiceProviderId": TS, "ChangeType": 3, "PortalType": 0, "Devices": picked,
                       "StatusUpdate": {"TargetStatus": "Active",
                                        "ThingSpaceStatusUpdate": {"ServicePlan": "m2m_4G", "MdnZipCode": "98801"}}})
            } else {
                json!({"ServiceProviderId": TS, "ChangeType": 7, "Devices": picked,
                       "CarrierRatePlanUpdate": {"CarrierRatePlan": PLAN}})
            }
        })
        .chain(picks(rng, devices, SIMS_FROM, 0..2).into_iter().map(|(picked, archive)| {
            if archive && picked.len() > 2 {
                // A few devices archived (no carrier call): later rows naming them are refused.
                json!({"ServiceProviderId": TS, "ChangeType": 5, "Devices": picked[..2]})
            } else {
                json!({"ServiceProviderId": TS, "ChangeType": 6, "Devices": picked,
                       "Username": {"NewUsername": USERNAME}})
            }
        }))
        .chain(
            picks(rng, devices, DEACTIVE_FROM, 0..2)
                .into_iter()
                .map(|(picked, _)| json!({"ServiceProviderId": TS, "ChangeType": 9, "Devices": picked})),
        )
        .chain(picks(rng, devices, SIMS_FROM, 0..2).into_iter().filter_map(|(picked, iccid)| {
            // One active device's identifier (a request names one device): its ICCID or its IMEI.
            let (device, i) = picked
                .iter()
                .find_map(|d| super::sim_index(d, SIMS_FROM, devices).filter(|i| i % 2 == 1).map(|i| (d, i)))?;
            let change =
                if iccid { json!({"NewICCID": bench_iccid(SWAP_FROM + i)}) } else { json!({"NewIMEI": new_imei(i)}) };
            Some(json!({"ServiceProviderId": TS, "ChangeType": 8, "Devices": [device], "ChangeIdentifier": change}))
        }))
        .collect()
}

/// Identifier changes: a PROCESSED row's device shows its new ICCID (listed under it) or IMEI, a failed row whose
/// device shows it says it may have; no change accepted twice.
fn check_identifiers(
    sim: &simulators::thingspace::ThingSpaceSim,
    finished: &[&Finished],
    devices: usize,
    report: &mut Report,
) {
    for f in finished.iter().filter(|f| f.service_provider() == TS && f.change_type() == 8) {
        let swap = f.body["ChangeIdentifier"]["NewICCID"].is_string();
        for row in f.rows() {
            let Some(i) = super::sim_index(row.iccid, SIMS_FROM, devices) else { continue };
            let swapped = sim.state.device(&bench_iccid(SWAP_FROM + i));
            let shows = if swap {
                swapped.is_some() && sim.state.device(row.iccid).is_none()
            } else {
                swapped
                    .or_else(|| sim.state.device(row.iccid))
                    .is_some_and(|d| d.imei.as_deref() == Some(new_imei(i).as_str()))
            };
            super::check_row(report, finished, f, &row, "ThingSpace (identifier)", shows, false);
        }
    }
    let accepted: Vec<String> = sim
        .state
        .calls()
        .iter()
        .filter(|c| c.status == 200 && c.path.ends_with("/actions/deviceId"))
        .map(|c| c.body.to_string())
        .collect();
    for i in (0..devices).filter(|i| i % 2 == 1) {
        let iccid = bench_iccid(SIMS_FROM + i);
        let asked = times_asked(finished, 8, &iccid);
        for (what, new) in [("ICCID swaps", bench_iccid(SWAP_FROM + i)), ("IMEI changes", new_imei(i))] {
            let sent = accepted.iter().filter(|b| b.contains(&new)).count();
            if sent > asked {
                report.violation(format!("{iccid}: {sent} accepted ThingSpace {what} for {asked} bulk change(s)"));
            }
        }
    }
}

/// Deletions: a PROCESSED row's device is gone from ThingSpace, and one gone while its row failed says it may be.
fn check_deletions(sim: &simulators::thingspace::ThingSpaceSim, finished: &[&Finished], report: &mut Report) {
    for f in finished.iter().filter(|f| f.service_provider() == TS && f.change_type() == 9) {
        for row in f.rows() {
            let gone = sim.state.device(row.iccid).is_none();
            super::check_row(report, finished, f, &row, "ThingSpace (the device deleted)", gone, false);
        }
    }
}

pub(super) fn check(stack: &Stack, finished: &[&Finished], devices: usize, report: &mut Report) -> Result<()> {
    let sim = stack.simulators.thingspace.get(&TS).context("the ThingSpace simulator")?;
    check_deletions(sim, finished, report);
    check_identifiers(sim, finished, devices, report);
    for f in finished.iter().filter(|f| f.service_provider() == TS && f.change_type() == 6) {
        for row in f.rows() {
            let Some(device) = sim.state.device(row.iccid) else { continue };
            let shows = device.custom_fields.iter().any(|(k, v)| k == "CustomField1" && v == USERNAME);
            super::check_row(report, finished, f, &row, "ThingSpace", shows, false);
        }
    }
    for f in finished.iter().filter(|f| f.service_provider() == TS && [3, 7].contains(&f.change_type())) {
        let activation = f.change_type() == 3;
        for row in f.rows() {
            let Some(device) = sim.state.device(row.iccid) else { continue };
            let was_active = super::sim_index(row.iccid, SIMS_FROM, devices).is_some_and(|i| i % 2 == 1);
            let shows =
                if activation { device.state == "active" } else { device.service_plan.as_deref() == Some(PLAN) };
            // An activation of a SIM active before any change shows whatever happened to the row.
            let already_so = activation && was_active;
            // An activation names its service plan (the old one): one applied after a plan change (its row
            // PROCESSED, or saying it may still be) sets it back. Bulk changes run at once, so "after" is not
            // "of a higher id" (`make chaos SEED=407`: an older activation, applied after a newer plan change).
            let undone_later = !activation
                && finished.iter().any(|g| {
                    g.id != f.id
                        && g.service_provider() == TS
                        && g.change_type() == 3
                        && g.rows().any(|r| {
                            r.iccid == row.iccid
                                && (r.state == "PROCESSED" || (r.state == "API_FAILED" && r.admits_unknown()))
                        })
                });
            if row.state == "PROCESSED" && !shows && !undone_later {
                super::trace(finished, row.iccid);
                report.violation(format!(
                    "bulk change {}: {} PROCESSED but ThingSpace does not show it: \"{}\"",
                    f.id, row.iccid, row.details
                ));
            }
            if row.state != "PROCESSED"
                && shows
                && !row.made_no_call()
                && !row.admits_unknown()
                && !already_so
                && !maybe_done_elsewhere(finished, f.id, f.change_type(), row.iccid)
            {
                super::trace(finished, row.iccid);
                report.violation(format!(
                    "bulk change {}: {} {} \"{}\" but ThingSpace shows the change",
                    f.id, row.iccid, row.state, row.details
                ));
            }
        }
    }
    // No request accepted twice for one change of one device.
    let calls = sim.state.calls();
    for i in 0..devices {
        let iccid = bench_iccid(SIMS_FROM + i);
        let writes =
            [("/devices/actions/activate", 3), ("/devices/actions/plan", 7), ("/devices/actions/customFields", 6)];
        for (suffix, change_type) in writes {
            let sent = calls
                .iter()
                .filter(|c| c.status == 200 && c.path.ends_with(suffix) && c.body.to_string().contains(&iccid))
                .count();
            let asked = times_asked(finished, change_type, &iccid);
            if sent > asked {
                report.violation(format!(
                    "{iccid}: {sent} accepted ThingSpace {suffix} requests for {asked} bulk change(s)"
                ));
            }
        }
    }
    Ok(())
}
