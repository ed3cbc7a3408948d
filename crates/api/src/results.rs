//! A bulk change's results as CSV (`GET /M2M/BulkChange/{id}/Results`): one line per row, with the carrier's error
//! code and request id where there is one.

use engine::ports::DeviceChangeRow;

use crate::export::Paged;

pub const CSV_HEADER: [&str; 6] = ["ICCID", "Status", "Details", "CarrierErrorCode", "CarrierRequestId", "ProcessedAt"];

impl Paged for DeviceChangeRow {
    fn key(&self) -> i64 {
        self.id
    }
}

/// The carrier's error code in a row's reason, as `CarrierFailure::reason` writes it ("HTTP 400, error 10000016:
/// ..." ; Rev.io's and ThingSpace's codes alike).
pub fn carrier_error_code(details: &str) -> Option<&str> {
    let (_, rest) = details.split_once("HTTP ")?;
    let (_, rest) = rest.split_once(", error ")?;
    let code = rest.split_once(':').map_or(rest, |(code, _)| code).trim();
    (!code.is_empty() && !code.contains(' ')).then_some(code)
}

pub fn csv_record(row: &DeviceChangeRow) -> Vec<String> {
    let details = row.status_details.clone().unwrap_or_default();
    let code = carrier_error_code(&details).unwrap_or_default().to_string();
    vec![
        row.iccid.clone(),
        row.status.as_str().to_string(),
        details,
        code,
        row.carrier_request_id.clone().unwrap_or_default(),
        row.processed_date.map(|t| t.to_rfc3339()).unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carrier_code_is_read_from_the_reason() {
        assert_eq!(carrier_error_code("HTTP 400, error 10000016: Invalid rate plan: RP-5GB."), Some("10000016"));
        assert_eq!(
            carrier_error_code("Carrier rate plan not changed: HTTP 404, error 20000001: Resource not found"),
            Some("20000001")
        );
        assert_eq!(carrier_error_code("HTTP 500: An unexpected error occurred."), None);
        assert_eq!(carrier_error_code("Writes disabled for this service provider."), None);
    }
}
