//! Change types, integrations, statuses and the portal's request model (PascalCase JSON, the seeds' numbers).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Carrier and billing API families, with the ids of the platform's Integration table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub enum Integration {
    Jasper,
    RevIo,
    ThingSpace,
    Telegence,
    Pod19,
    TMobileJasper,
    Teal,
    Pond,
    Rogers,
}

impl Integration {
    pub fn id(self) -> i64 {
        match self {
            Integration::Jasper => 1,
            Integration::RevIo => 3,
            Integration::ThingSpace => 4,
            Integration::Telegence => 6,
            Integration::Pod19 => 9,
            Integration::TMobileJasper => 11,
            Integration::Teal => 12,
            Integration::Pond => 13,
            Integration::Rogers => 14,
        }
    }

    pub fn from_id(id: i64) -> Option<Self> {
        Some(match id {
            1 => Integration::Jasper,
            3 => Integration::RevIo,
            4 => Integration::ThingSpace,
            6 => Integration::Telegence,
            9 => Integration::Pod19,
            11 => Integration::TMobileJasper,
            12 => Integration::Teal,
            13 => Integration::Pond,
            14 => Integration::Rogers,
            _ => return None,
        })
    }

    /// Jasper, POD19, T-Mobile and Rogers all speak Control Center REST.
    pub fn is_jasper_family(self) -> bool {
        matches!(self, Integration::Jasper | Integration::Pod19 | Integration::TMobileJasper | Integration::Rogers)
    }

    pub fn name(self) -> &'static str {
        match self {
            Integration::Jasper => "Jasper",
            Integration::RevIo => "Rev.io",
            Integration::ThingSpace => "ThingSpace",
            Integration::Telegence => "Telegence",
            Integration::Pod19 => "POD19",
            Integration::TMobileJasper => "TMobileJasper",
            Integration::Teal => "Teal",
            Integration::Pond => "Pond",
            Integration::Rogers => "Rogers",
        }
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

/// What a bulk change does to each device; numbers as in the seeds (`ChangeType` in requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    CustomerAssignment,
    ActivateNewService,
    StatusUpdate,
    CustomerRatePlanChange,
    Archival,
    EditUsername,
    CarrierRatePlanChange,
    ChangeIccidOrImei,
    DeleteDevice,
}

impl ChangeType {
    pub fn number(self) -> i64 {
        match self {
            ChangeType::CustomerAssignment => 1,
            ChangeType::ActivateNewService => 2,
            ChangeType::StatusUpdate => 3,
            ChangeType::CustomerRatePlanChange => 4,
            ChangeType::Archival => 5,
            ChangeType::EditUsername => 6,
            ChangeType::CarrierRatePlanChange => 7,
            ChangeType::ChangeIccidOrImei => 8,
            ChangeType::DeleteDevice => 9,
        }
    }

    pub fn from_number(n: i64) -> Option<Self> {
        Some(match n {
            1 => ChangeType::CustomerAssignment,
            2 => ChangeType::ActivateNewService,
            3 => ChangeType::StatusUpdate,
            4 => ChangeType::CustomerRatePlanChange,
            5 => ChangeType::Archival,
            6 => ChangeType::EditUsername,
            7 => ChangeType::CarrierRatePlanChange,
            8 => ChangeType::ChangeIccidOrImei,
            9 => ChangeType::DeleteDevice,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ChangeType::CustomerAssignment => "CustomerAssignment",
            ChangeType::ActivateNewService => "ActivateNewService",
            ChangeType::StatusUpdate => "StatusUpdate",
            ChangeType::CustomerRatePlanChange => "CustomerRatePlanChange",
            ChangeType::Archival => "Archival",
            ChangeType::EditUsername => "EditUsername",
            ChangeType::CarrierRatePlanChange => "CarrierRatePlanChange",
            ChangeType::ChangeIccidOrImei => "ChangeICCIDorIMEI",
            ChangeType::DeleteDevice => "DeleteDevice",
        }
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

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// Status of a whole bulk change; derived from its rows once they are final.
    BulkStatus {
        New => "NEW",
        Processing => "PROCESSING",
        Processed => "PROCESSED",
        Error => "ERROR",
        Scheduled => "SCHEDULED",
        Cancelled => "CANCELLED",
    }
);

impl BulkStatus {
    pub fn is_final(self) -> bool {
        matches!(self, BulkStatus::Processed | BulkStatus::Error | BulkStatus::Cancelled)
    }
}

string_enum!(
    /// Status of one device's change row. A final status is written once.
    RowStatus {
        Pending => "PENDING",
        Processing => "PROCESSING",
        Processed => "PROCESSED",
        ApiFailed => "API_FAILED",
        Error => "ERROR",
        Scheduled => "SCHEDULED",
        Cancelled => "CANCELLED",
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
    }
}
