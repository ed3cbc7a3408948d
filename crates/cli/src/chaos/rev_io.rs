//! The Rev.io part of the sweep: customer assignments that create a service line, over the Control Center SIMs
//! the other bulk changes also hold (one change per device decides who goes first), against a Rev.io that may
//! lose, empty or cut its answers.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedRevCustomer, SeedServiceProvider};

use super::{Finished, Report, done_elsewhere};
use crate::stack::Stack;

const REV: i64 = 60;
const CUSTOMER: i64 = 1001;

pub(super) fn seed(seed: &mut Seed) {
    seed.service_providers.push(SeedServiceProvider {
        name: "Rev.io chaos".into(),
        username: "rev-user".into(),
        secret: "rev-password".into(),
        client_code: Some("chaos".into()),
        subscription_key: Some("sub-key".into()),
        rate_limit_per_second: 500.0,
        ..SeedServiceProvider::new(REV, 1, domain::Integration::RevIo.id())
    });
    seed.rev_customers.push(SeedRevCustomer {
        tenant_id: 1,
        rev_customer_id: CUSTOMER.to_string(),
        name: "Chaos Fleet".into(),
    });
}

/// Assignments of the Control Center SIMs (`bench_iccid(i)`) to one customer, each creating a service line.
pub(super) fn bodies(rng: &mut fastrand::Rng, devices: usize) -> Vec<Value> {
    super::picks(rng, devices, 0, 0..2)
        .into_iter()
        .map(|(picked, _)| {
            json!({"ServiceProviderId": super::control_center::SP, "ChangeType": 1, "Devices": picked,
                   "RevService": {"RevCustomerId": CUSTOMER.to_string(), "CreateRevService": true,
                                  "ProviderId": 12, "ServiceTypeId": 3}})
        })
        .collect()
}

pub(super) fn check(stack: &Stack, finished: &[&Finished], report: &mut Report) -> Result<()> {
    let rev = stack.simulators.rev_io.get(&REV).context("the Rev.io simulator")?;
    let services = rev.state.services();
    let lines = |iccid: &str| services.iter().filter(|s| s.number2.as_deref() == Some(iccid)).count();
    for f in finished.iter().filter(|f| f.change_type() == 1) {
        for row in f.rows() {
            let n = lines(row.iccid);
            if n > 1 {
                report.violation(format!("{}: {n} Rev.io service lines for one customer", row.iccid));
            }
            if row.state == "PROCESSED" && n != 1 {
                report.violation(format!("bulk change {}: {} PROCESSED with {n} Rev.io lines", f.id, row.iccid));
            }
            // Refused at intake because an earlier assignment already billed it: no call made.
            let billed_already = row.details.contains("is billed to");
            if row.state != "PROCESSED"
                && n == 1
                && !row.made_no_call()
                && !billed_already
                && !row.admits_unknown()
                && !done_elsewhere(finished, f.id, 1, row.iccid)
            {
                report.violation(format!(
                    "bulk change {}: {} {} \"{}\" but Rev.io shows its service line",
                    f.id, row.iccid, row.state, row.details
                ));
            }
        }
    }
    Ok(())
}
