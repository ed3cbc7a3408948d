//! The device inventory: `/M2M/Index` (paged JSON) and `/M2M/DeviceInventoryExport` (CSV, streamed page by page,
//! so an export of any size holds one page of devices in memory).

use std::future::Future;

use axum::body::{Body, Bytes};
use engine::ports::{DeviceFilter, DeviceListItem, StoreError};
use futures::Stream;
use serde::Deserialize;

/// Devices read per page while exporting.
pub const EXPORT_PAGE: u32 = 500;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InventoryQuery {
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

pub const CSV_HEADER: &str = "ICCID,IMEI,MSISDN,ServiceProviderId,Status,StatusDisplayName,CarrierRatePlan,CommunicationPlan,Username,RevCustomerId,CustomerRatePlanId,CustomerRatePoolId,DataUsageMB,LastUsageDate\r\n";

/// One CSV field, quoted when it holds a comma, quote or line break (RFC 4180). A leading `=+-@` is prefixed
/// with `'` so a spreadsheet does not run it as a formula.
fn field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() };
    if value.contains([',', '"', '\r', '\n']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

pub fn csv_line(item: &DeviceListItem) -> String {
    let d = &item.device;
    let opt = |v: &Option<String>| field(v.as_deref().unwrap_or_default());
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
        field(&d.iccid),
        opt(&d.imei),
        opt(&d.msisdn),
        d.service_provider_id,
        opt(&item.status),
        opt(&item.status_display_name),
        opt(&d.carrier_rate_plan),
        opt(&d.communication_plan),
        opt(&d.username),
        opt(&d.rev_customer_id),
        num(d.customer_rate_plan_id),
        num(d.customer_rate_pool_id),
        d.data_usage_mb,
        d.last_usage_date.map(|t| t.to_rfc3339()).unwrap_or_default()
    )
}

/// The CSV as a stream: the header, then one chunk per page fetched by `fetch(after_id)` until a short page.
pub fn csv_stream<F, Fut>(fetch: F) -> impl Stream<Item = Result<Bytes, StoreError>>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Vec<DeviceListItem>, StoreError>>,
{
    let header = futures::stream::once(async { Ok(Bytes::from_static(CSV_HEADER.as_bytes())) });
    let pages = futures::stream::unfold((fetch, Some(0i64)), |(mut fetch, after)| async move {
        let after = after?;
        match fetch(after).await {
            Ok(page) => {
                let next = if page.len() < EXPORT_PAGE as usize { None } else { page.last().map(|i| i.device.id) };
                let chunk: String = page.iter().map(csv_line).collect();
                Some((Ok(Bytes::from(chunk)), (fetch, next)))
            }
            Err(e) => {
                tracing::error!(error = %e, "inventory export stopped");
                Some((Err(e), (fetch, None)))
            }
        }
    });
    futures::StreamExt::chain(header, pages)
}

pub fn body<S>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, StoreError>> + Send + 'static,
{
    Body::from_stream(stream)
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
        let line = csv_line(&item(1));
        assert!(line.contains(",\"RP, \"\"big\"\"\","), "{line}");
        assert!(line.contains(",'=cmd,"), "{line}");
        assert!(line.ends_with("\r\n"));
    }
}
