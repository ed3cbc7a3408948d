//! CSV exports streamed page by page (the device inventory, a bulk change's results): written with the `csv`
//! crate (RFC 4180 quoting), a leading `=`, `+`, `-` or `@` prefixed with `'` so a spreadsheet never runs a cell
//! as a formula, and one page of records in memory at a time whatever the export's size.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use engine::ports::StoreError;
use futures::Stream;

/// Records read per page while exporting.
pub const PAGE: u32 = 500;

/// A cell as a spreadsheet may show it: a value that starts like a formula is prefixed with `'`.
pub fn defused(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@']) { format!("'{value}") } else { value.to_string() }
}

/// Records as CSV text (CRLF line ends), every cell defused.
pub fn csv_text(records: &[Vec<String>]) -> Result<Bytes, csv::Error> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    for record in records {
        writer.write_record(record.iter().map(|cell| defused(cell)))?;
    }
    let bytes = writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(Bytes::from(bytes))
}

/// Where a page ends, for the next fetch: the last item's key, or `None` after a short page.
pub trait Paged {
    fn key(&self) -> i64;
}

/// The export as a stream: `header`, then one chunk per page fetched by `fetch(after)` (from `after = 0`, then
/// the last key of the previous page) until a page shorter than [`PAGE`].
pub fn csv_stream<T, F, Fut>(
    header: &'static [&'static str],
    mut fetch: F,
    record: fn(&T) -> Vec<String>,
    what: &'static str,
) -> impl Stream<Item = Result<Bytes, StoreError>>
where
    T: Paged,
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Vec<T>, StoreError>>,
{
    let head = csv_text(&[header.iter().map(|h| h.to_string()).collect()])
        .map_err(|e| StoreError::Corrupt(format!("CSV header: {e}")));
    let header = futures::stream::once(async move { head });
    let pages = futures::stream::unfold(Some(0i64), move |after| {
        let next = after.map(&mut fetch);
        async move {
            let page = match next?.await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, export = what, "export stopped");
                    return Some((Err(e), None));
                }
            };
            let after = if page.len() < PAGE as usize { None } else { page.last().map(Paged::key) };
            let records: Vec<Vec<String>> = page.iter().map(record).collect();
            let chunk = csv_text(&records).map_err(|e| StoreError::Corrupt(format!("CSV: {e}")));
            Some((chunk, after))
        }
    });
    futures::StreamExt::chain(header, pages)
}

/// A streamed CSV answer, downloaded as `filename`.
pub fn csv_response<S>(stream: S, filename: &'static str) -> Response
where
    S: Stream<Item = Result<Bytes, StoreError>> + Send + 'static,
{
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let text =
            csv_text(&[vec!["RP, \"big\"".into(), "=cmd".into(), "line\nbreak".into(), "-1".into()]]).expect("csv");
        assert_eq!(String::from_utf8_lossy(&text), "\"RP, \"\"big\"\"\",'=cmd,\"line\nbreak\",'-1\r\n");
    }
}
