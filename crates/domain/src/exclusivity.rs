//! One open change per device and attribute: what each change type holds on a device while its row is open
//! (PENDING, PROCESSING, SCHEDULED). Two open rows conflict when they hold the same attribute of the same device;
//! an identifier change, an archival and a delete hold every attribute, so they conflict with any other open row.
//! The store enforces it (a lock row per device and attribute, decided by a primary key).

use std::fmt;

use crate::model::ChangeType;
use crate::request::ChangeDetails;

/// What a change can alter on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceAttribute {
    /// The carrier status (activate, suspend, deactivate, ...).
    Status,
    /// The carrier rate plan (or ThingSpace service plan) and communication plan.
    CarrierRatePlan,
    /// The customer rate plan, pool and data allocation.
    CustomerRatePlan,
    /// The Rev.io customer and service line.
    Billing,
    /// The username and cost centers.
    Username,
    /// The ICCID, IMEI and the device's existence (identifier change, archival, delete).
    Identity,
}

impl DeviceAttribute {
    pub const ALL: [DeviceAttribute; 6] = [
        DeviceAttribute::Status,
        DeviceAttribute::CarrierRatePlan,
        DeviceAttribute::CustomerRatePlan,
        DeviceAttribute::Billing,
        DeviceAttribute::Username,
        DeviceAttribute::Identity,
    ];

    /// The name stored in `DeviceChangeLock.Attribute`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceAttribute::Status => "Status",
            DeviceAttribute::CarrierRatePlan => "CarrierRatePlan",
            DeviceAttribute::CustomerRatePlan => "CustomerRatePlan",
            DeviceAttribute::Billing => "Billing",
            DeviceAttribute::Username => "Username",
            DeviceAttribute::Identity => "Identity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        DeviceAttribute::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for DeviceAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The attributes a change holds on each of its devices while open.
///
/// A status update also holds the carrier rate plan (a Jasper-family deactivation moves it first and a
/// ThingSpace activation sets the service plan) and, with `AccountNumber` or a Rev.io service line, the billing.
pub fn attributes_of(details: &ChangeDetails) -> Vec<DeviceAttribute> {
    use DeviceAttribute::*;
    let mut held = match details {
        ChangeDetails::StatusUpdate(update) => {
            let mut held = vec![Status, CarrierRatePlan];
            let account = update.account_number.as_deref().is_some_and(|a| !a.trim().is_empty());
            if account || update.rev_service.as_ref().is_some_and(|r| r.create_rev_service) {
                held.push(Billing);
            }
            held
        }
        ChangeDetails::CarrierRatePlanChange(_) => vec![CarrierRatePlan],
        ChangeDetails::CustomerRatePlanChange(_) => vec![CustomerRatePlan],
        ChangeDetails::CustomerAssignment(options) => {
            let mut held = vec![Billing];
            if options.add_carrier_rate_plan == Some(true) {
                held.push(CarrierRatePlan);
            }
            if options.add_customer_rate_plan == Some(true) {
                held.push(CustomerRatePlan);
            }
            held
        }
        ChangeDetails::EditUsername(_) => vec![Username],
        // A new line changes every attribute of the SIM at once.
        ChangeDetails::ChangeIccidOrImei(_)
        | ChangeDetails::Archival
        | ChangeDetails::DeleteDevice
        | ChangeDetails::ActivateNewService(_) => DeviceAttribute::ALL.to_vec(),
    };
    held.sort();
    held.dedup();
    held
}

/// The reason an open change of a device refuses another: what a conflicting row says.
/// What a row cancelled by `user` says.
pub fn cancelled_by(user: &str) -> String {
    format!("Cancelled by {user}")
}

pub fn conflict_reason(iccid: &str, holder: ChangeType, holder_bulk_change_id: i64) -> String {
    format!("device {iccid} has an open {} in bulk change {holder_bulk_change_id}", holder.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{CarrierRatePlanUpdate, RevServiceOptions, StatusUpdate, UsernameUpdate};

    fn status(account: Option<&str>) -> ChangeDetails {
        ChangeDetails::StatusUpdate(StatusUpdate {
            target_status: "Active".into(),
            jasper_status_update: None,
            account_number: account.map(str::to_string),
            rev_service: None,
            thing_space: None,
            telegence: None,
        })
    }

    fn overlap(a: &ChangeDetails, b: &ChangeDetails) -> bool {
        let b = attributes_of(b);
        attributes_of(a).iter().any(|x| b.contains(x))
    }

    #[test]
    fn changes_of_different_attributes_do_not_conflict() {
        let username = ChangeDetails::EditUsername(UsernameUpdate {
            new_username: "a".into(),
            cost_center: None,
            cost_center2: None,
            cost_center3: None,
        });
        assert!(!overlap(&status(None), &username));
        assert!(overlap(&status(None), &status(None)));
        let plan = ChangeDetails::CarrierRatePlanChange(CarrierRatePlanUpdate {
            carrier_rate_plan: "P".into(),
            communication_plan: None,
            effective_date: None,
        });
        assert!(overlap(&status(None), &plan), "a deactivation moves the rate plan");
        assert!(!overlap(&plan, &username));
    }

    #[test]
    fn identifier_changes_archival_and_delete_conflict_with_everything() {
        let every = [
            status(None),
            ChangeDetails::EditUsername(UsernameUpdate {
                new_username: "a".into(),
                cost_center: None,
                cost_center2: None,
                cost_center3: None,
            }),
            ChangeDetails::CustomerAssignment(RevServiceOptions::default()),
        ];
        for exclusive in [ChangeDetails::Archival, ChangeDetails::DeleteDevice] {
            for other in &every {
                assert!(overlap(&exclusive, other), "{exclusive:?} vs {other:?}");
            }
        }
    }

    #[test]
    fn a_status_update_with_an_account_holds_the_billing_too() {
        assert!(!attributes_of(&status(None)).contains(&DeviceAttribute::Billing));
        assert!(attributes_of(&status(Some("1001"))).contains(&DeviceAttribute::Billing));
        assert!(overlap(&status(Some("1001")), &ChangeDetails::CustomerAssignment(RevServiceOptions::default())));
    }

    #[test]
    fn attribute_names_round_trip() {
        for a in DeviceAttribute::ALL {
            assert_eq!(DeviceAttribute::parse(a.as_str()), Some(a));
        }
        assert_eq!(
            conflict_reason("8901", ChangeType::StatusUpdate, 41),
            "device 8901 has an open StatusUpdate in bulk change 41"
        );
    }
}
