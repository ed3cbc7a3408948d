//! Change types, integrations, statuses and the portal's request model (PascalCase JSON, the seeds' numbers).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Carrier and billing API families, with the ids of the platform's Integration table (the discriminants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::FromRepr, strum::IntoStaticStr)]
#[serde(try_from = "i64", into = "i64")]
#[repr(i64)]
pub enum Integration {
    Jasper = 1,
    #[strum(serialize = "Rev.io")]
    RevIo = 3,
    ThingSpace = 4,
    Telegence = 6,
    #[strum(serialize = "POD19")]
    Pod19 = 9,
    TMobileJasper = 11,
    Teal = 12,
    Pond = 13,
    Rogers = 14,
}

impl Integration {
    pub fn id(self) -> i64 {
        self as i64
    }

    pub fn from_id(id: i64) -> Option<Self> {
        Self::from_repr(id)
    }

    /// Jasper, POD19, T-Mobile and Rogers all speak Control Center REST.
    pub fn is_jasper_family(self) -> bool {
        matches!(self, Integration::Jasper | Integration::Pod19 | Integration::TMobileJasper | Integration::Rogers)
    }

    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl TryFrom<i64> for Integration {
    type Error = String;
    fn try_from(id: i64) -> Result<Self, String> {
        Integration::from_id(id).ok_or_else(|| format!("unknown integration id {id}"))
    }
}

impl From<Integration> for i64 {
    fn from(i: Integration) -> i64 {
        i.id()
    }
}

impl fmt::Display for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a bulk change does to each device; numbers as in the seeds (`ChangeType` in requests), the discriminants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::FromRepr, strum::IntoStaticStr)]
#[repr(i64)]
pub enum ChangeType {
    CustomerAssignment = 1,
    ActivateNewService = 2,
    StatusUpdate = 3,
    CustomerRatePlanChange = 4,
    Archival = 5,
    EditUsername = 6,
    CarrierRatePlanChange = 7,
    #[strum(serialize = "ChangeICCIDorIMEI")]
    ChangeIccidOrImei = 8,
    DeleteDevice = 9,
}

impl ChangeType {
    pub fn number(self) -> i64 {
        self as i64
    }

    pub fn from_number(n: i64) -> Option<Self> {
        Self::from_repr(n)
    }

    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The request block that must accompany this change type, if any.
    pub fn block_name(self) -> Option<&'static str> {
        match self {
            ChangeType::CustomerAssignment => Some("RevService"),
            ChangeType::StatusUpdate => Some("StatusUpdate"),
            ChangeType::CustomerRatePlanChange => Some("CustomerRatePlanUpdate"),
            ChangeType::EditUsername => Some("Username"),
            ChangeType::CarrierRatePlanChange => Some("CarrierRatePlanUpdate"),
            ChangeType::ChangeIccidOrImei => Some("ChangeIdentifier"),
            ChangeType::ActivateNewService => Some("NewService"),
            ChangeType::Archival | ChangeType::DeleteDevice => None,
        }
    }
}

impl Serialize for ChangeType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.number())
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

/// A status as its text (`as_str`, `parse`, `Display`, serde) and every value (`ALL`), derived by strum from the
/// variant names in SCREAMING_SNAKE_CASE.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumString, strum::IntoStaticStr,
            strum::Display, strum::VariantArray,
        )]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = <$name as strum::VariantArray>::VARIANTS;
            pub fn as_str(self) -> &'static str {
                self.into()
            }
            pub fn parse(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    };
}

string_enum!(
    /// Status of a whole bulk change; derived from its rows once they are final. PAUSED: no new row starts until
    /// someone resumes it (an operator, its canary), rows in flight finish. ABORTED (final): its abort rule tripped
    /// and the rows not started were cancelled.
    BulkStatus {
        New,
        Processing,
        Processed,
        Error,
        Scheduled,
        Cancelled,
        Paused,
        Aborted,
    }
);

impl BulkStatus {
    pub fn is_final(self) -> bool {
        matches!(self, BulkStatus::Processed | BulkStatus::Error | BulkStatus::Cancelled | BulkStatus::Aborted)
    }
}

string_enum!(
    /// Status of one device's change row. A final status is written once.
    RowStatus {
        Pending,
        Processing,
        Processed,
        ApiFailed,
        Error,
        Scheduled,
        Cancelled,
    }
);

impl RowStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RowStatus::Processed | RowStatus::ApiFailed | RowStatus::Error | RowStatus::Cancelled)
    }
}

/// The bulk status that follows from the final statuses of all rows: PROCESSED when at least one
/// row succeeded, ERROR when none did, CANCELLED when every row was cancelled. `None` while a row is
/// still open.
pub fn bulk_status_from_rows(rows: impl IntoIterator<Item = RowStatus>) -> Option<BulkStatus> {
    let (mut any, mut ok, mut all_cancelled, mut scheduled) = (false, false, true, false);
    for row in rows {
        any = true;
        if row == RowStatus::Scheduled {
            scheduled = true;
            continue;
        }
        if !row.is_final() {
            return None;
        }
        ok |= row == RowStatus::Processed;
        all_cancelled &= row == RowStatus::Cancelled;
    }
    Some(match (any, scheduled, ok, all_cancelled) {
        (false, ..) => BulkStatus::Error,
        (true, true, ..) => BulkStatus::Scheduled,
        (true, false, true, _) => BulkStatus::Processed,
        (true, false, false, true) => BulkStatus::Cancelled,
        (true, false, false, false) => BulkStatus::Error,
    })
}

/// M2M = 0 (rows in `M2M_DeviceChange`), Mobility = 2 (rows in `Mobility_DeviceChange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "i64", into = "i64")]
pub enum PortalType {
    #[default]
    M2M,
    Mobility,
}

impl TryFrom<i64> for PortalType {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match n {
            0 => Ok(PortalType::M2M),
            2 => Ok(PortalType::Mobility),
            other => Err(format!("unknown PortalType {other} (0 = M2M, 2 = Mobility)")),
        }
    }
}

impl From<PortalType> for i64 {
    fn from(p: PortalType) -> i64 {
        match p {
            PortalType::M2M => 0,
            PortalType::Mobility => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_status_follows_rows() {
        use RowStatus::*;
        assert_eq!(bulk_status_from_rows([Processed, ApiFailed]), Some(BulkStatus::Processed));
        assert_eq!(bulk_status_from_rows([ApiFailed, Error]), Some(BulkStatus::Error));
        assert_eq!(bulk_status_from_rows([Processed, Pending]), None);
        assert_eq!(bulk_status_from_rows([Processing]), None);
        assert_eq!(bulk_status_from_rows([Cancelled, Cancelled]), Some(BulkStatus::Cancelled));
        assert_eq!(bulk_status_from_rows([]), Some(BulkStatus::Error));
        assert_eq!(bulk_status_from_rows([Scheduled, Processed]), Some(BulkStatus::Scheduled));
        assert_eq!(bulk_status_from_rows([Scheduled, Pending]), None);
    }

    #[test]
    fn change_type_numbers_round_trip() {
        for n in 1..=9 {
            assert_eq!(ChangeType::from_number(n).map(ChangeType::number), Some(n));
        }
        assert_eq!(ChangeType::from_number(42), None);
    }

    #[test]
    fn integration_ids_round_trip_and_family() {
        for id in [1, 3, 4, 6, 9, 11, 12, 13, 14] {
            assert_eq!(Integration::from_id(id).map(Integration::id), Some(id));
        }
        assert!(Integration::Pod19.is_jasper_family());
        assert!(!Integration::ThingSpace.is_jasper_family());
        assert_eq!(Integration::from_id(2), None);
        assert_eq!((Integration::RevIo.name(), Integration::Pod19.to_string()), ("Rev.io", "POD19".to_string()));
    }

    #[test]
    fn statuses_read_and_write_as_their_screaming_snake_case_names() {
        let texts: Vec<&str> = RowStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["PENDING", "PROCESSING", "PROCESSED", "API_FAILED", "ERROR", "SCHEDULED", "CANCELLED"]);
        for status in RowStatus::ALL {
            assert_eq!(RowStatus::parse(status.as_str()), Some(*status));
            assert_eq!(serde_json::to_string(status).expect("json"), format!("\"{status}\""));
        }
        assert_eq!(BulkStatus::parse("NEW"), Some(BulkStatus::New));
        assert_eq!(BulkStatus::parse("New"), None, "exact text only");
        assert_eq!(ChangeType::ChangeIccidOrImei.to_string(), "ChangeICCIDorIMEI (8)");
    }
}
