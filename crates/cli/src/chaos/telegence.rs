//! The Telegence part of the sweep: plan changes, suspensions, IMEI swaps and SIM swaps of active lines over random,
//! overlapping SIMs (a line PATCH; a second suspension of a suspended line is refused, so a lost answer must be read
//! back), usernames (no carrier call: our database is the witness), and new services of SIMs without a line.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedBillingAccount, SeedDevice, SeedRatePlan, SeedServiceProvider};

use super::{Finished, Report, picks, times_asked};
use crate::bench::bench_iccid;
use crate::stack::Stack;

const TELEGENCE: i64 = 30;
/// The SIMs are `bench_iccid(SIMS_FROM + i)`, on line `number(i)`.
const SIMS_FROM: usize = 6_000;
const PLAN: &str = "SOC-5GB";
/// SIMs with no line yet, for new services: `bench_iccid(NEW_FROM + i)`.
const NEW_FROM: usize = SIMS_FROM + 500;
const BAN: &str = "287301234567";
/// Every username change names the same one (Telegence keeps none: ours).
const USERNAME: &str = "chaos-tg-fleet";
/// The SIM a SIM swap gives line `i`: `bench_iccid(SWAP_FROM + i)`, on no line and unknown to us until then.
const SWAP_FROM: usize = 7_500;

/// The IMEI an IMEI swap gives SIM `i` (one per SIM: monotone).
fn new_imei(i: usize) -> String {
    let payload = format!("3567892{i:07}");
    format!("{payload}{}", domain::ids::luhn_check_digit(&payload))
}

fn number(i: usize) -> String {
    format!("21456{i:05}")
}

pub(super) fn seed(seed: &mut Seed, devices: usize) {
    seed.service_providers.push(SeedServiceProvider {
        name: "Telegence chaos".into(),
        username: "app-id".into(),
        secret: "app-secret".into(),
        rate_limit_per_second: 500.0,
        ..SeedServiceProvider::new(TELEGENCE, 1, domain::Integration::Telegence.id())
    });
    seed.carrier_rate_plans.extend([
        SeedRatePlan::new(30, TELEGENCE, "SOC-1GB", 1024.0, 5.0),
        SeedRatePlan::new(31, TELEGENCE, PLAN, 5120.0, 9.0),
    ]);
    seed.telegence_billing_accounts.push(SeedBillingAccount {
        service_provider_id: TELEGENCE,
        billing_account_number: BAN.into(),
        foundation_account_number: None,
    });
    seed.devices.extend((0..devices).map(|i| SeedDevice {
        msisdn: Some(number(i)),
        imei: Some(format!("3567890{i:07}0")),
        carrier_rate_plan: Some("SOC-1GB".into()),
        ..SeedDevice::new(1, TELEGENCE, bench_iccid(SIMS_FROM + i), "A")
    }));
    seed.devices.extend((0..devices).map(|i| SeedDevice {
        imei: Some(format!("3567891{i:07}0")),
        ..SeedDevice::new(1, TELEGENCE, bench_iccid(NEW_FROM + i), "UNKNOWN")
    }));
}

pub(super) fn bodies(rng: &mut fastrand::Rng, devices: usize) -> Vec<Value> {
    picks(rng, devices, SIMS_FROM, 1..3)
        .into_iter()
        .map(|(picked, coin)| {
            if coin {
                json!({"ServiceProviderId": TELEGENCE, "ChangeType": 7, "PortalType": 2, "Devices": picked,
                       "CarrierRatePlanUpdate": {"CarrierRatePlan": PLAN}})
            } else {
                json!({"ServiceProviderId": TELEGENCE, "ChangeType": 3, "PortalType": 2, "Devices": picked,
                       "StatusUpdate": {"TargetStatus": "Suspended", "TelegenceStatusUpdate": {"ReasonCode": "CR"}}})
            }
        })
        .chain(picks(rng, devices, SIMS_FROM, 0..2).into_iter().map(|(picked, swap)| {
            if swap {
                // One line's IMEI swap or SIM swap (a request names one device), by the pick's size.
                let i = super::sim_index(&picked[0], SIMS_FROM, devices).unwrap_or_default();
                let change = if picked.len() % 2 == 0 {
                    json!({"NewIMEI": new_imei(i), "ServiceZipCode": "75201"})
                } else {
                    json!({"NewICCID": bench_iccid(SWAP_FROM + i), "ServiceZipCode": "75201"})
                };
                json!({"ServiceProviderId": TELEGENCE, "ChangeType": 8, "PortalType": 2, "Devices": [picked[0]],
                       "ChangeIdentifier": change})
            } else {
                json!({"ServiceProviderId": TELEGENCE, "ChangeType": 6, "PortalType": 2, "Devices": picked,
                       "Username": {"NewUsername": USERNAME}})
            }
        }))
        .chain(picks(rng, devices, NEW_FROM, 0..2).into_iter().map(|(picked, _)| {
            json!({"ServiceProviderId": TELEGENCE, "ChangeType": 2, "PortalType": 2, "Devices": picked,
                   "NewService": {"BillingAccountNumber": BAN, "RatePlan": "SOC-1GB", "ServiceZipCode": "75201"}})
        }))
        .collect()
}

/// New services: one line per SIM at most (a second is a second subscription billed), a PROCESSED row's SIM on
/// its line, and a failed row whose SIM got a line saying it may have.
fn check_new_services(sim: &simulators::telegence::TelegenceSim, finished: &[&Finished], report: &mut Report) {
    let lines: Vec<simulators::telegence::TgLine> =
        sim.state.account.lock().map(|a| a.lines.values().cloned().collect()).unwrap_or_default();
    for f in finished.iter().filter(|f| f.service_provider() == TELEGENCE && f.change_type() == 2) {
        for row in f.rows() {
            let n = lines.iter().filter(|l| l.iccid == row.iccid).count();
            if n > 1 {
                report.violation(format!("{}: {n} Telegence lines for one SIM", row.iccid));
            }
            super::check_row(report, finished, f, &row, "Telegence (one new line)", n == 1, false);
        }
    }
}

pub(super) fn check(stack: &Stack, finished: &[&Finished], devices: usize, report: &mut Report) -> Result<()> {
    let sim = stack.simulators.telegence.get(&TELEGENCE).context("the Telegence simulator")?;
    check_new_services(sim, finished, report);
    for f in finished.iter().filter(|f| f.service_provider() == TELEGENCE && [3, 7, 8].contains(&f.change_type())) {
        for row in f.rows() {
            let Some(i) = super::sim_index(row.iccid, SIMS_FROM, devices) else { continue };
            let Some(line) = sim.state.line(&number(i)) else { continue };
            let shows = match f.change_type() {
                7 => line.plan.as_deref() == Some(PLAN),
                8 if f.body["ChangeIdentifier"]["NewICCID"].is_string() => line.iccid == bench_iccid(SWAP_FROM + i),
                8 => line.imei.as_deref() == Some(new_imei(i).as_str()),
                _ => line.status == "S",
            };
            super::check_row(report, finished, f, &row, "Telegence", shows, false);
        }
    }
    // No applied PATCH twice for one change: the record's successful PATCHes of each line, by what they set.
    let calls = sim.state.calls();
    for i in 0..devices {
        let iccid = bench_iccid(SIMS_FROM + i);
        let applied: Vec<&Value> = calls
            .iter()
            .filter(|c| c.method == "PATCH" && c.status == 200 && c.path.ends_with(&number(i)))
            .map(|c| &c.body)
            .collect();
        let suspensions = applied.iter().filter(|b| b["mode"].as_str() == Some("S")).count();
        let plan_sets = applied.iter().filter(|b| b.to_string().contains(PLAN)).count();
        let swaps = applied.iter().filter(|b| b.to_string().contains(&new_imei(i))).count();
        let sim_swaps = applied.iter().filter(|b| b.to_string().contains(&bench_iccid(SWAP_FROM + i))).count();
        let changes = [
            ("suspensions", suspensions, 3),
            ("plan changes", plan_sets, 7),
            ("IMEI swaps", swaps, 8),
            ("SIM swaps", sim_swaps, 8),
        ];
        for (what, sent, change_type) in changes {
            let asked = times_asked(finished, change_type, &iccid);
            if sent > asked {
                report.violation(format!("{iccid}: {sent} applied {what} for {asked} bulk change(s)"));
            }
        }
    }
    Ok(())
}

/// Usernames (6): Telegence keeps none, our database does: it is the witness.
pub(super) async fn check_usernames(stack: &Stack, finished: &[&Finished], report: &mut Report) -> Result<()> {
    let shows = |device: &domain::rules::DeviceRecord| device.username.as_deref() == Some(USERNAME);
    super::check_in_database(stack, finished, TELEGENCE, 6, shows, report).await
}
