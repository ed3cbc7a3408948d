//! CSV exports streamed page by page (the device inventory, a bulk change's results): written with the `csv`
//! crate (RFC 4180 quoting), a leading `=`, `+`, `-` or `@` prefixed with `'` so a spreadsheet never runs a cell
//! as a formula, and one page of records in memory at a time whatever the export's size.
//!
//! Behind API Gateway an answer is at most 6 MB and 29 s, and `lambda_http` collects the whole body. So where an
//! [`ExportStore`] is configured (the Lambda function: S3), an export is answered inline only while it stays
//! under the inline limit; a larger one is written to a temporary file as it is read, published there, and the
//! answer is `303 See Other` with the presigned URL in `Location` and in a small JSON body. The local server has
//! no export store and streams every export inline.

use std::future::Future;

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::ports::{ExportStore, StoreError};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::ApiError;

/// Records read per page while exporting.
pub const PAGE: u32 = 500;

/// A cell as a spreadsheet may show it: a value that starts like a formula is prefixed with `'`. "Starts" looks past
/// what a spreadsheet drops before reading a formula: spaces and invisible characters (zero-width space U+200B,
/// byte order mark U+FEFF, ...); a tab or carriage return in front is a formula start of its own.
pub fn defused(value: &str) -> String {
    let invisible = |c: char| c.is_whitespace() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}');
    let formula =
        value.starts_with(['\t', '\r']) || value.trim_start_matches(invisible).starts_with(['=', '+', '-', '@']);
    if formula { format!("'{value}") } else { value.to_string() }
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

/// Exports larger than `inline_limit` bytes go to `store` (API Gateway answers at most 6 MB).
#[derive(Clone)]
pub struct LargeExports {
    pub store: Arc<dyn ExportStore>,
    pub inline_limit: usize,
    /// Where the temporary file of a large export is written (the Lambda's `/tmp`).
    pub spool_dir: std::path::PathBuf,
}

/// Below API Gateway's 6 MB answer limit, with room for headers and the base64 of a binary answer not needed here.
pub const DEFAULT_INLINE_LIMIT: usize = 5 * 1024 * 1024;

/// The export's answer: streamed as it is read when there is no export store; otherwise inline while it stays
/// under the limit, or published and answered with a `303` to its URL. `key_prefix` names the object (tenant
/// and export), `filename` the download.
pub async fn deliver<S>(
    stream: S,
    large: Option<&LargeExports>,
    key_prefix: String,
    filename: &'static str,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, StoreError>> + Send + 'static,
{
    let Some(large) = large else {
        return Ok(csv_response(stream, filename));
    };
    let mut stream = Box::pin(stream);
    let mut head = Vec::new();
    while head.len() <= large.inline_limit {
        match stream.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => return Ok(csv_response(futures::stream::once(async { Ok(Bytes::from(head)) }), filename)),
        }
    }
    let started = std::time::Instant::now();
    let io = |e: std::io::Error| ApiError::Internal(format!("spooling a large export: {e}"));
    let spool = tempfile::Builder::new().prefix("export-").suffix(".csv").tempfile_in(&large.spool_dir).map_err(io)?;
    let mut file = tokio::fs::File::create(spool.path()).await.map_err(io)?;
    file.write_all(&head).await.map_err(io)?;
    let mut bytes = head.len();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    let key = format!("{key_prefix}/{:016x}/{filename}", fastrand::u64(..));
    let published = large
        .store
        .publish(&key, spool.path(), filename)
        .await
        .map_err(|message| ApiError::Internal(format!("publishing a large export as {key}: {message}")))?;
    tracing::info!(bytes, key = %key, elapsed_ms = started.elapsed().as_millis() as u64, "large export published");
    let mut response = (
        StatusCode::SEE_OTHER,
        Json(json!({"Url": published.url, "ExpiresAt": published.expires_at, "Bytes": bytes, "Filename": filename})),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&published.url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
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

    #[test]
    fn formulas_behind_invisible_characters_are_defused() {
        for hidden in ["\u{200B}=cmd", "\u{FEFF}=cmd", " \u{00A0}+1", "\u{2060}@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(defused(hidden), format!("'{hidden}"), "{hidden:?}");
        }
        for plain in ["8901260000000000001", "a=b", "\u{200B}x", "RP-1GB"] {
            assert_eq!(defused(plain), plain, "{plain:?}");
        }
    }
}
