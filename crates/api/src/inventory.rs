//! The device inventory: `/M2M/Index` (paged JSON) and `/M2M/DeviceInventoryExport` (CSV, streamed page by page,
//! so an export of any size holds one page of devices in memory).

use std::future::Future;

use axum::body::Bytes;
use engine::ports::{DeviceFilter, DeviceListItem, StoreError};
use futures::Stream;
use serde::Deserialize;

pub use crate::export::PAGE as EXPORT_PAGE;
use crate::export::Paged;

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InventoryQuery {
    /// Carrier status code or display name (ACTIVATED, Active).
    pub status: Option<String>,
    pub carrier_rate_plan: Option<String>,
    pub customer: Option<String>,
    pub q: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

impl InventoryQuery {
    pub fn filter(&self) -> DeviceFilter {
        let clean = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        DeviceFilter {
            status: clean(&self.status),
            carrier_rate_plan: clean(&self.carrier_rate_plan),
            rev_customer_id: clean(&self.customer),
            text: clean(&self.q),
        }
    }
}

/// The export's columns.
pub const CSV_HEADER: [&str; 14] = [
    "ICCID",
    "IMEI",
    "MSISDN",
    "ServiceProviderId",
    "Status",
    "StatusDisplayName",
    "CarrierRatePlan",
    "CommunicationPlan",
    "Username",
    "RevCustomerId",
    "CustomerRatePlanId",
    "CustomerRatePoolId",
    "DataUsageMB",
    "LastUsageDate",
];

impl Paged for DeviceListItem {
    fn key(&self) -> i64 {
        self.device.id
    }
}

/// One device as a CSV record.
pub fn csv_record(item: &DeviceListItem) -> Vec<String> {
    let d = &item.device;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    vec![
        d.iccid.clone(),
        opt(&d.imei),
        opt(&d.msisdn),
        d.service_provider_id.to_string(),
        opt(&item.status),
        opt(&item.status_display_name),
        opt(&d.carrier_rate_plan),
        opt(&d.communication_plan),
        opt(&d.username),
        opt(&d.rev_customer_id),
        num(d.customer_rate_plan_id),
        num(d.customer_rate_pool_id),
        d.data_usage_mb.to_string(),
        d.last_usage_date.map(|t| t.to_rfc3339()).unwrap_or_default(),
    ]
}

/// The inventory as CSV, keyset-paged by device id.
pub fn csv_stream<F, Fut>(fetch: F) -> impl Stream<Item = Result<Bytes, StoreError>>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Vec<DeviceListItem>, StoreError>>,
{
    crate::export::csv_stream(&CSV_HEADER, fetch, csv_record, "inventory")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use domain::rules::DeviceRecord;
    use futures::StreamExt;

    use super::*;

    fn item(id: i64) -> DeviceListItem {
        DeviceListItem {
            device: DeviceRecord {
                id,
                tenant_id: 1,
                service_provider_id: 10,
                iccid: format!("8901{id:015}"),
                imei: None,
                msisdn: None,
                eid: None,
                device_status_id: 901,
                carrier_rate_plan: Some("RP, \"big\"".into()),
                communication_plan: None,
                username: Some("=cmd".into()),
                last_usage_date: None,
                data_usage_mb: 1.5,
                rev_customer_id: None,
                customer_rate_plan_id: None,
                customer_rate_pool_id: None,
                customer_data_allocation_mb: None,
                is_active: true,
                is_deleted: false,
            },
            status: Some("ACTIVATED".into()),
            status_display_name: Some("Active".into()),
        }
    }

    #[tokio::test]
    async fn export_reads_page_by_page_and_never_more_than_a_page() {
        let total = 1_234i64;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let stream = csv_stream(move |after| {
            let seen = seen.clone();
            async move {
                let page: Vec<_> = ((after + 1)..=total).take(EXPORT_PAGE as usize).map(item).collect();
                seen.lock().map(|mut c| c.push((after, page.len()))).ok();
                Ok(page)
            }
        });
        let chunks: Vec<Bytes> = stream.map(|c| c.expect("chunk")).collect().await;
        let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c).to_string()).collect();
        assert_eq!(text.lines().count(), 1 + total as usize);
        let calls = calls.lock().expect("calls").clone();
        assert_eq!(calls, vec![(0, 500), (500, 500), (1000, 234)], "keyset pages of at most 500");
        assert_eq!(chunks.len(), 4, "the header and one chunk per page");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let text = crate::export::csv_text(&[csv_record(&item(1))]).expect("csv");
        let line = String::from_utf8_lossy(&text);
        assert!(line.contains(",\"RP, \"\"big\"\"\","), "{line}");
        assert!(line.contains(",'=cmd,"), "{line}");
        assert!(line.ends_with("\r\n"));
    }
}
