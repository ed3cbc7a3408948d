//! Webhooks (issue 22): endpoints are the tenant's own; an event is written once, in the transaction that makes it
//! true (one delivery per endpoint that wants it, the bulk change's NotifyUrl among them, signed with its own
//! secret); a delivery is leased to one deliverer at a time and recorded by it once.

use super::*;

fn done() -> RowOutcome {
    RowOutcome { status: RowStatus::Processed, details: "ok".into(), device_update: DeviceUpdate::default() }
}

pub async fn webhook_events_are_written_once_and_delivered_under_a_lease(store: &dyn Store) {
    let events = |list: &[&str]| list.iter().map(|e| e.to_string()).collect::<Vec<_>>();
    let all = store
        .add_webhook(TENANT, "https://hooks.example/all", &events(&EVENTS), "whsec_all", "alice", t(0))
        .await
        .expect("add");
    let paused_only = store
        .add_webhook(TENANT, "https://hooks.example/paused", &events(&[EVENT_PAUSED]), "whsec_p", "alice", t(0))
        .await
        .expect("add");
    let other = store
        .add_webhook(OTHER_TENANT, "https://hooks.example/other", &events(&EVENTS), "whsec_o", "mallory", t(0))
        .await
        .expect("add");
    let gone = store
        .add_webhook(TENANT, "https://hooks.example/gone", &events(&EVENTS), "whsec_g", "alice", t(0))
        .await
        .expect("add");
    assert!(!store.delete_webhook(OTHER_TENANT, gone, t(0)).await.expect("delete"), "not another tenant's");
    assert!(store.delete_webhook(TENANT, gone, t(0)).await.expect("delete"));
    let listed: Vec<i64> = store.webhooks(TENANT).await.expect("list").iter().map(|w| w.id).collect();
    assert_eq!(listed, vec![all, paused_only]);
    assert_eq!(store.webhooks(OTHER_TENANT).await.expect("list").len(), 1);

    let mut change = status_update_change();
    change.request.notify_url = Some("https://hooks.example/own".into());
    change.notify_secret = Some("whsec_own".into());
    let id = new_bulk_of(store, change).await;
    let lease = Duration::from_secs(60);
    // Paused: the paused-only endpoint, the all-events one and the NotifyUrl; not the deleted nor the other tenant's.
    assert!(store.pause_bulk_change(Some(TENANT), id, "operator", "alice", t(1)).await.expect("pause").is_some());
    assert!(store.resume_bulk_change(Some(TENANT), id, t(2)).await.expect("resume"));
    let rows = store.claim_rows(id, "w", 10, lease, t(3)).await.expect("claim");
    for row in &rows {
        assert!(store.complete_row(TENANT, id, row.id, "w", &done(), t(4)).await.expect("complete"));
    }
    assert_eq!(store.finalize_bulk_change(id, t(5)).await.expect("finalize"), Some(BulkStatus::Processed));
    assert_eq!(store.finalize_bulk_change(id, t(6)).await.expect("finalize"), Some(BulkStatus::Processed), "once");

    let due = store.claim_deliveries("d1", 50, t(100), t(10)).await.expect("claim");
    let mut seen: Vec<(String, Option<i64>, String)> =
        due.iter().map(|d| (d.delivery.event_type.clone(), d.delivery.webhook_id, d.secret.clone())).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (EVENT_FINISHED.to_string(), None, "whsec_own".to_string()),
            (EVENT_FINISHED.to_string(), Some(all), "whsec_all".to_string()),
            (EVENT_PAUSED.to_string(), None, "whsec_own".to_string()),
            (EVENT_PAUSED.to_string(), Some(all), "whsec_all".to_string()),
            (EVENT_PAUSED.to_string(), Some(paused_only), "whsec_p".to_string()),
        ],
        "one delivery per endpoint that wants the event, written once"
    );
    let paused: Vec<&DueDelivery> = due.iter().filter(|d| d.delivery.event_type == EVENT_PAUSED).collect();
    assert!(paused.iter().all(|d| d.delivery.event_id == paused[0].delivery.event_id), "one event id per event");
    assert_eq!(
        (paused[0].delivery.reason.as_deref(), paused[0].delivery.actor.as_deref()),
        (Some("operator"), Some("alice"))
    );
    assert!(due.iter().all(|d| d.delivery.tenant_id == TENANT && d.delivery.bulk_change_id == id && d.body.is_none()));
    assert!(store.claim_deliveries("d2", 50, t(100), t(11)).await.expect("claim").is_empty(), "leased to d1");
    let _ = other;

    // Recorded by the lease holder only; the body is kept from the first attempt; a retry is due at its time.
    let first = &due[0];
    let retry = DeliveryResult::Retry { at: t(30), status_code: Some(500), error: "HTTP 500".into() };
    assert!(!store.record_delivery(first.delivery.id, "d2", "{}", &retry, t(12)).await.expect("record"), "not d2's");
    assert!(store.record_delivery(first.delivery.id, "d1", "{\"a\":1}", &retry, t(12)).await.expect("record"));
    assert!(store.claim_deliveries("d2", 50, t(100), t(20)).await.expect("claim").is_empty(), "not due before 30");
    let again = store.claim_deliveries("d2", 50, t(100), t(30)).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].delivery.attempts, again[0].body.as_deref()), (1, Some("{\"a\":1}")));
    let delivered = DeliveryResult::Delivered { status_code: 204 };
    assert!(store.record_delivery(first.delivery.id, "d2", "{\"b\":2}", &delivered, t(31)).await.expect("record"));
    assert!(!store.record_delivery(first.delivery.id, "d2", "{}", &delivered, t(32)).await.expect("record"), "once");
    // A dead deliverer's lease ends: its deliveries are taken over.
    let taken = store.claim_deliveries("d3", 50, t(300), t(101)).await.expect("claim");
    assert_eq!(taken.len(), due.len() - 1, "the rest, d1 having died");
    if let Some(w) = first.delivery.webhook_id {
        let page = store.webhook_deliveries(TENANT, w, 10).await.expect("deliveries");
        let mine = page.iter().find(|d| d.id == first.delivery.id).expect("listed");
        assert_eq!((mine.status.as_str(), mine.attempts, mine.last_status_code), ("DELIVERED", 2, Some(204)));
        assert!(store.webhook_deliveries(OTHER_TENANT, w, 10).await.expect("deliveries").is_empty(), "scoped");
    }
    // Deleting an endpoint gives up its deliveries not made.
    assert!(store.delete_webhook(TENANT, paused_only, t(301)).await.expect("delete"));
    let page = store.webhook_deliveries(TENANT, paused_only, 10).await.expect("deliveries");
    assert!(page.iter().all(|d| d.status == "FAILED"), "{page:?}");
}

/// Undo (issue 22): a PROCESSED row keeps what its device was just before its change; a failed row keeps nothing;
/// another tenant reads nothing of it.
pub async fn a_processed_row_keeps_its_device_before_the_change(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "w", 10, Duration::from_secs(60), t(1)).await.expect("claim");
    let device_id = rows[0].device_id.expect("device");
    let before = store.device(TENANT, device_id).await.expect("read").expect("device");
    let applied = RowOutcome {
        status: RowStatus::Processed,
        details: "plan changed".into(),
        device_update: DeviceUpdate {
            carrier_rate_plan: Some("PLAN-UNDO".into()),
            username: Some("renamed".into()),
            ..DeviceUpdate::default()
        },
    };
    assert!(store.complete_row(TENANT, id, rows[0].id, "w", &applied, t(2)).await.expect("complete"));
    let failed =
        RowOutcome { status: RowStatus::ApiFailed, details: "HTTP 400".into(), device_update: DeviceUpdate::default() };
    assert!(store.complete_row(TENANT, id, rows[1].id, "w", &failed, t(2)).await.expect("complete"));
    // The group commit's path keeps it too.
    let grouped = Completion {
        tenant_id: TENANT,
        bulk_change_id: id,
        row_id: rows[2].id,
        worker: "w".into(),
        outcome: applied.clone(),
        now: t(3),
    };
    assert_eq!(store.complete_rows(&[grouped]).await.expect("complete rows"), vec![true]);
    let kept = store.applied_rows(TENANT, id).await.expect("applied rows");
    assert_eq!(kept.len(), 2, "only the PROCESSED rows: {kept:?}");
    assert_eq!(kept[1].row_id, rows[2].id);
    assert_eq!(kept[1].before.as_ref().and_then(|b| b.iccid.clone()), Some(rows[2].iccid.clone()), "{kept:?}");
    assert_eq!(kept[1].now.as_ref().and_then(|n| n.username.clone()).as_deref(), Some("renamed"));
    let row = &kept[0];
    assert_eq!((row.row_id, row.device_id, row.iccid.as_str()), (rows[0].id, Some(device_id), rows[0].iccid.as_str()));
    let was = row.before.as_ref().expect("kept");
    assert_eq!(
        (was.carrier_rate_plan.as_deref(), was.username.as_deref(), was.device_status_id, was.iccid.as_deref()),
        (
            before.carrier_rate_plan.as_deref(),
            before.username.as_deref(),
            Some(before.device_status_id),
            Some(before.iccid.as_str())
        )
    );
    let is = row.now.as_ref().expect("the device now");
    assert_eq!((is.carrier_rate_plan.as_deref(), is.username.as_deref()), (Some("PLAN-UNDO"), Some("renamed")));
    assert!(store.applied_rows(OTHER_TENANT, id).await.expect("applied rows").is_empty(), "scoped to the tenant");
}
