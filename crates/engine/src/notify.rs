//! The failure summary: one e-mail per finished bulk change that has failed rows, sent once.

use chrono::{DateTime, Utc};
use domain::RowStatus;
use domain::rules::{MAX_SHOWN_DEVICE_CHARS, bounded_text};
use tracing::info;

use crate::ports::{BulkChange, BulkChanges, Email, Notifier, Reads};

const PAGE: u32 = 1000;
/// The longest reason a failure line shows (a carrier's message is rarely a tenth of it).
const MAX_REASON_CHARS: usize = 500;

/// Sends the summary when the bulk change is final and has failures, unless it was sent already. The right to
/// send is held for `lease`; a sender that dies holding it leaves the e-mail to the next after the lease (at least
/// once: one that dies between sending and recording it may have the e-mail sent again).
/// The e-mail comes `from` and goes `to` (the worker's settings).
pub async fn send_failure_summary(
    store: &(impl Reads + BulkChanges + ?Sized),
    notifier: &dyn Notifier,
    (from, to): (&str, &[String]),
    bulk: &BulkChange,
    now: DateTime<Utc>,
    lease: std::time::Duration,
) -> Result<Option<String>, String> {
    if !bulk.status.is_final() {
        return Ok(None);
    }
    let mut failed = Vec::new();
    for status in [RowStatus::ApiFailed, RowStatus::Error] {
        let mut page = 1;
        loop {
            let rows =
                store.rows(bulk.tenant_id, bulk.id, Some(status), page, PAGE).await.map_err(|e| e.to_string())?;
            let done = rows.len() < PAGE as usize;
            failed.extend(rows);
            if done {
                break;
            }
            page += 1;
        }
    }
    if failed.is_empty() {
        return Ok(None);
    }
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(1));
    if !store.claim_notification(bulk.id, now, until).await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    failed.sort_by_key(|r| r.id);
    // An abort says so first, with its rule and figures (every cancelled row carries them).
    let aborted = if bulk.status == domain::BulkStatus::Aborted {
        let cancelled =
            store.rows(bulk.tenant_id, bulk.id, Some(RowStatus::Cancelled), 1, 1).await.map_err(|e| e.to_string())?;
        Some(cancelled.first().and_then(|r| r.status_details.clone()).unwrap_or_else(|| "aborted".into()))
    } else {
        None
    };
    let mut body = aborted
        .as_ref()
        .map(|reason| format!("ABORTED — {reason}; the rows not started were cancelled.\n\n"))
        .unwrap_or_default();
    body += &format!(
        "Bulk change {} ({}) for service provider {} finished with status {}.\n{} device(s) failed:\n\n",
        bulk.id,
        bulk.change_type.name(),
        bulk.service_provider_id,
        bulk.status,
        failed.len()
    );
    for row in &failed {
        // Device strings came from a request: one line each, control characters escaped, bounded.
        body.push_str(&format!(
            "{}  {}  {}\n",
            bounded_text(&row.iccid, MAX_SHOWN_DEVICE_CHARS),
            row.status,
            bounded_text(row.status_details.as_deref().unwrap_or("no reason recorded"), MAX_REASON_CHARS)
        ));
    }
    let email = Email {
        from: from.to_string(),
        to: to.to_vec(),
        subject: match aborted {
            Some(_) => format!("Bulk change {} aborted: {} device(s) failed", bulk.id, failed.len()),
            None => format!("Bulk change {}: {} device(s) failed", bulk.id, failed.len()),
        },
        body,
    };
    match notifier.send(&email).await {
        Ok(location) => {
            store.notification_sent(bulk.id, now).await.map_err(|e| e.to_string())?;
            info!(bulk_change_id = bulk.id, %location, "failure summary sent");
            Ok(Some(location))
        }
        Err(e) => {
            store.release_notification(bulk.id).await.map_err(|e| e.to_string())?;
            Err(e.to_string())
        }
    }
}
