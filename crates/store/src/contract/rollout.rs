//! Rollout control (issue 21): a paused bulk change has no row claimed until it is resumed, a canary caps the rows
//! started until it passes, and the abort is decided once and ends the bulk change ABORTED.

use super::*;

fn with_canary(devices: i64) -> NewBulkChange {
    let mut change = status_update_change();
    change.request.canary = Some(domain::rollout::CanaryWire { devices: Some(devices), then: Some("Pause".into()) });
    change
}

fn failed() -> RowOutcome {
    RowOutcome { status: RowStatus::ApiFailed, details: "HTTP 400".into(), device_update: DeviceUpdate::default() }
}

pub async fn a_paused_bulk_change_has_no_row_claimed_until_resumed(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let first = store.claim_rows(id, "a", 1, lease, t(0)).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(
        store.pause_bulk_change(Some(OTHER_TENANT), id, "operator", "mallory", t(1)).await.expect("pause"),
        None,
        "another tenant pauses nothing"
    );
    assert_eq!(
        store.pause_bulk_change(Some(TENANT), id, "operator", "alice", t(1)).await.expect("pause"),
        Some(1),
        "paused, with the row in flight counted"
    );
    assert_eq!(store.pause_bulk_change(Some(TENANT), id, "operator", "alice", t(2)).await.expect("pause"), None);
    assert!(store.claim_rows(id, "b", 10, lease, t(2)).await.expect("claim").is_empty(), "no row while paused");
    let progress = store.rollout_progress(id).await.expect("progress");
    assert_eq!(progress.status, BulkStatus::Paused);
    assert_eq!(progress.hold, Some(("operator".to_string(), "alice".to_string(), t(1))));
    assert_eq!((progress.started, progress.finished), (1, 0));
    // The row in flight, its worker gone, is found and taken again to be settled (not a PENDING row with it);
    // it finishes and is recorded; the bulk change stays paused.
    let stranded = store.stranded_bulk_changes(t(100), t(100)).await.expect("stranded");
    assert!(stranded.contains(&id), "a paused bulk change with a row nobody holds is swept: {stranded:?}");
    let again = store.claim_rows(id, "b", 10, lease, t(100)).await.expect("claim");
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), vec![first[0].id], "only the row in flight");
    assert!(store.complete_row(TENANT, id, first[0].id, "b", &failed(), t(101)).await.expect("complete"));
    assert_eq!(store.finalize_bulk_change(id, t(101)).await.expect("finalize"), None);
    store.mark_processing(id, t(101)).await.expect("mark");
    let stranded = store.stranded_bulk_changes(t(200), t(200)).await.expect("stranded");
    assert!(!stranded.contains(&id), "paused with nothing in flight: nothing to sweep");
    assert_eq!(store.rollout_progress(id).await.expect("progress").status, BulkStatus::Paused, "still paused");
    assert!(!store.resume_bulk_change(Some(OTHER_TENANT), id, t(102)).await.expect("resume"), "not another tenant's");
    assert!(store.resume_bulk_change(Some(TENANT), id, t(102)).await.expect("resume"));
    assert!(!store.resume_bulk_change(Some(TENANT), id, t(102)).await.expect("resume"), "resumed once");
    let progress = store.rollout_progress(id).await.expect("progress");
    assert_eq!((progress.status, progress.hold, progress.failed), (BulkStatus::Processing, None, 1));
    assert_eq!(
        store.claim_rows(id, "b", 10, lease, t(103)).await.expect("claim").len(),
        2,
        "the rest, where they were"
    );
}

pub async fn a_canary_caps_the_rows_started_until_it_passes(store: &dyn Store) {
    let id = new_bulk_of(store, with_canary(2)).await;
    let lease = Duration::from_secs(60);
    let canary = store.claim_rows(id, "a", 10, lease, t(0)).await.expect("claim");
    assert_eq!(canary.len(), 2, "the canary's devices only");
    assert!(store.claim_rows(id, "b", 10, lease, t(1)).await.expect("claim").is_empty(), "not one more");
    // A dead worker's canary row is claimed again: it was started already.
    let again = store.claim_rows(id, "b", 10, lease, t(120)).await.expect("claim");
    assert_eq!(again.len(), 2, "expired leases are taken over within the canary");
    for row in &again {
        assert!(store.complete_row(TENANT, id, row.id, "b", &failed(), t(121)).await.expect("complete"));
    }
    assert!(store.claim_rows(id, "b", 10, lease, t(122)).await.expect("claim").is_empty(), "not passed yet");
    assert_eq!(store.pause_bulk_change(None, id, "canary", "canary", t(123)).await.expect("pause"), Some(0));
    assert!(store.resume_bulk_change(Some(TENANT), id, t(124)).await.expect("resume"));
    let progress = store.rollout_progress(id).await.expect("progress");
    assert!(progress.canary_passed, "a canary's pause, resumed, passes the canary");
    assert_eq!((progress.started, progress.finished, progress.failed), (2, 2, 2));
    assert_eq!(store.claim_rows(id, "b", 10, lease, t(125)).await.expect("claim").len(), 1, "the rest");
}

pub async fn an_abort_is_decided_once_and_ends_the_bulk_change_aborted(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let first = store.claim_rows(id, "a", 1, lease, t(0)).await.expect("claim");
    let reason = "aborted: 1 of 1 processed rows failed (100 %) > 10 %";
    assert!(store.abort_bulk_change(id, reason, t(1)).await.expect("abort"), "the first decides");
    assert!(!store.abort_bulk_change(id, "again", t(1)).await.expect("abort"), "never twice");
    assert!(store.claim_rows(id, "b", 10, lease, t(2)).await.expect("claim").is_empty(), "nothing after an abort");
    assert!(store.pause_bulk_change(Some(TENANT), id, "operator", "alice", t(2)).await.expect("pause").is_none());
    assert_eq!(store.cancel_rows(TENANT, id, reason, t(2)).await.expect("cancel"), 2, "the rows not started");
    assert_eq!(store.finalize_bulk_change(id, t(2)).await.expect("finalize"), None, "a row in flight");
    assert!(store.complete_row(TENANT, id, first[0].id, "a", &failed(), t(3)).await.expect("complete"));
    assert_eq!(store.finalize_bulk_change(id, t(4)).await.expect("finalize"), Some(BulkStatus::Aborted));
    let progress = store.rollout_progress(id).await.expect("progress");
    assert_eq!(progress.aborted_reason.as_deref(), Some(reason));
    let cancelled = store.rows(TENANT, id, Some(RowStatus::Cancelled), 1, 10).await.expect("rows");
    assert!(cancelled.iter().all(|r| r.status_details.as_deref() == Some(reason)), "each says why");
    assert!(!store.abort_bulk_change(id, reason, t(5)).await.expect("abort"), "a final bulk change is not aborted");
}
