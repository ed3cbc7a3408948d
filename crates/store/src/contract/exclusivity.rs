//! One open change per device and attribute, one open retry, one Rev.io line, Idempotency-Keys.

use super::*;

/// A bulk change over `iccids` of tenant 1 that holds `attributes` on each device; returns what was created.
pub async fn holding(
    store: &dyn Store,
    change_type: ChangeType,
    attributes: &[DeviceAttribute],
    iccids: &[&str],
    retry_of: Option<i64>,
) -> StoreResult<CreatedBulkChange> {
    let mut rows = Vec::new();
    for iccid in iccids {
        rows.push(NewRow {
            device_id: Some(device_id(store, iccid).await),
            iccid: iccid.to_string(),
            msisdn: None,
            status: RowStatus::Pending,
            status_details: None,
            scheduled: None,
            request: None,
        });
    }
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire {
            service_provider_id: Some(SP),
            change_type: Some(change_type.number()),
            ..Default::default()
        },
        created_by: "alice".into(),
        retry_of,
        attributes: attributes.to_vec(),
        idempotency_key: None,
        notify_secret: None,
    };
    store.create_bulk_change(&change, &rows).await
}

pub(super) async fn device_id(store: &dyn Store, iccid: &str) -> i64 {
    store.devices_by_iccid(TENANT, &[iccid.to_string()]).await.expect("device")[0].id
}

/// Ends every open row of these bulk changes (their locks go with them), so later contract functions start clean.
pub(super) async fn close(store: &dyn Store, ids: &[i64]) {
    for id in ids {
        store.cancel_rows(TENANT, *id, "contract", t(0)).await.expect("cancel");
        // Rows other workers held: their leases have long ended by then.
        for row in store.claim_rows(*id, "closer", 100, Duration::from_secs(60), t(10_000)).await.expect("claim") {
            let done = RowOutcome {
                status: RowStatus::Error,
                details: "closed".into(),
                device_update: DeviceUpdate::default(),
            };
            store.complete_row(TENANT, *id, row.id, "closer", &done, t(10_000)).await.expect("complete");
        }
        store.finalize_bulk_change(*id, t(10_001)).await.expect("finalize");
    }
}

pub async fn one_open_change_per_device_and_attribute(store: &dyn Store) {
    use DeviceAttribute::*;
    let status = [Status, CarrierRatePlan];
    let a = holding(store, ChangeType::StatusUpdate, &status, &ICCIDS[..2], None).await.expect("a");
    assert!(a.conflicts.is_empty());
    let open = store.open_changes(TENANT, &[device_id(store, ICCIDS[0]).await]).await.expect("open");
    assert_eq!(
        open.iter().map(|o| (o.attribute, o.bulk_change_id, o.change_type)).collect::<Vec<_>>(),
        vec![(CarrierRatePlan, a.id, ChangeType::StatusUpdate), (Status, a.id, ChangeType::StatusUpdate)]
    );
    assert!(store.open_changes(OTHER_TENANT, &[open[0].device_id]).await.expect("open").is_empty());

    // Another attribute of the same devices: no conflict.
    let b = holding(store, ChangeType::EditUsername, &[Username], &ICCIDS[..2], None).await.expect("b");
    assert!(b.conflicts.is_empty(), "{:?}", b.conflicts);
    // The same attribute: the held device is refused by the store, naming the holder; the free one is not.
    let c = holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[0], ICCIDS[2]], None).await.expect("c");
    let reason = domain::conflict_reason(ICCIDS[0], ChangeType::StatusUpdate, a.id);
    assert_eq!(c.conflicts, vec![RowConflict { iccid: ICCIDS[0].into(), reason: reason.clone() }]);
    let rows = store.rows(TENANT, c.id, None, 1, 10).await.expect("rows");
    let refused = rows.iter().find(|r| r.iccid == ICCIDS[0]).expect("row");
    assert_eq!((refused.status, refused.status_details.as_deref()), (RowStatus::Error, Some(reason.as_str())));
    assert_eq!(rows.iter().find(|r| r.iccid == ICCIDS[2]).expect("row").status, RowStatus::Pending);
    // An archival holds every attribute: it conflicts with any open change.
    let d = holding(store, ChangeType::Archival, &DeviceAttribute::ALL, &[ICCIDS[1]], None).await.expect("d");
    assert_eq!(d.conflicts.len(), 1);
    assert!(d.conflicts[0].reason.starts_with(&format!("device {} has an open ", ICCIDS[1])), "{:?}", d.conflicts);
    assert!(store.claim_rows(d.id, "w", 10, Duration::from_secs(60), t(0)).await.expect("claim").is_empty());

    // A final row frees its device: claimed and completed, or cancelled.
    let claimed = store.claim_rows(a.id, "w", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    let row0 = claimed.iter().find(|r| r.iccid == ICCIDS[0]).expect("row");
    let done =
        RowOutcome { status: RowStatus::Processed, details: "ok".into(), device_update: DeviceUpdate::default() };
    assert!(store.complete_row(TENANT, a.id, row0.id, "w", &done, t(1)).await.expect("complete"));
    let e = holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[0]], None).await.expect("e");
    assert!(e.conflicts.is_empty(), "a final row no longer holds its device: {:?}", e.conflicts);
    let f = holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[1]], None).await.expect("f");
    assert_eq!(f.conflicts.len(), 1, "a PROCESSING row still holds its device");
    close(store, &[a.id, b.id, c.id, d.id, e.id, f.id]).await;
    let g = holding(store, ChangeType::Archival, &DeviceAttribute::ALL, &ICCIDS, None).await.expect("g");
    assert!(g.conflicts.is_empty(), "closed rows hold nothing: {:?}", g.conflicts);
    close(store, &[g.id]).await;

    // One device twice in one bulk change: its first row holds it, the later one is an ERROR row naming this bulk
    // change, and the bulk change is still recorded.
    let h =
        holding(store, ChangeType::StatusUpdate, &status, &[ICCIDS[2], ICCIDS[1], ICCIDS[2]], None).await.expect("h");
    let reason = domain::conflict_reason(ICCIDS[2], ChangeType::StatusUpdate, h.id);
    assert_eq!(h.conflicts, vec![RowConflict { iccid: ICCIDS[2].into(), reason: reason.clone() }]);
    let rows = store.rows(TENANT, h.id, None, 1, 10).await.expect("rows");
    let seen: Vec<(&str, RowStatus)> = rows.iter().map(|r| (r.iccid.as_str(), r.status)).collect();
    assert_eq!(
        seen,
        vec![(ICCIDS[2], RowStatus::Pending), (ICCIDS[1], RowStatus::Pending), (ICCIDS[2], RowStatus::Error)]
    );
    assert_eq!(rows[2].status_details.as_deref(), Some(reason.as_str()));
    let open = store.open_changes(TENANT, &[device_id(store, ICCIDS[2]).await]).await.expect("open");
    assert!(open.iter().all(|o| o.bulk_change_id == h.id), "{open:?}");
    assert_eq!(open.len(), 2, "the first row holds both attributes: {open:?}");
    close(store, &[h.id]).await;
}

pub async fn one_open_retry_and_a_retry_takes_only_rows_no_later_retry_holds(store: &dyn Store) {
    let original = holding(store, ChangeType::StatusUpdate, &[], &ICCIDS[..2], None).await.expect("original").id;
    let rows = store.claim_rows(original, "w", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    for (row, status) in rows.iter().zip([RowStatus::ApiFailed, RowStatus::Processed]) {
        let outcome = RowOutcome { status, details: "carrier said so".into(), device_update: DeviceUpdate::default() };
        assert!(store.complete_row(TENANT, original, row.id, "w", &outcome, t(1)).await.expect("complete"));
    }
    store.finalize_bulk_change(original, t(2)).await.expect("finalize");
    assert_eq!(store.retry_candidates(TENANT, original).await.expect("candidates"), vec![ICCIDS[0].to_string()]);
    assert!(store.retry_candidates(OTHER_TENANT, original).await.expect("candidates").is_empty());

    let first = holding(store, ChangeType::StatusUpdate, &[], &[ICCIDS[0]], Some(original)).await.expect("retry");
    match holding(store, ChangeType::StatusUpdate, &[], &[ICCIDS[0]], Some(original)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already has an open retry"), "{why}"),
        other => panic!("a second open retry must be refused, got {other:?}"),
    }
    assert!(
        store.retry_candidates(TENANT, original).await.expect("candidates").is_empty(),
        "the later retry holds the failed row"
    );
    close(store, &[first.id]).await;
    assert!(store.retry_candidates(TENANT, original).await.expect("candidates").is_empty(), "settled by the retry");
    // A retry whose candidates were read before the first retry was created, and that arrives after the first
    // finished, changes nothing twice.
    match holding(store, ChangeType::StatusUpdate, &[], &[ICCIDS[0]], Some(original)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already retried by bulk change"), "{why}"),
        other => panic!("a device an earlier retry took must not be retried again, got {other:?}"),
    }
}

pub async fn one_active_rev_service_line_per_device(store: &dyn Store) {
    let with_line = device_id(store, ICCIDS[2]).await;
    match store.begin_rev_service(TENANT, with_line, "1001", 1, 1, t(0)).await.expect("begin") {
        RevServiceStart::Active(line) => assert_eq!(line.rev_service_id, 11_001),
        other => panic!("the seeded line is active: {other:?}"),
    }
    let owner = holding(store, ChangeType::CustomerAssignment, &[DeviceAttribute::Billing], &ICCIDS[..2], None)
        .await
        .expect("owner");
    let rows = store.rows(TENANT, owner.id, None, 1, 10).await.expect("rows");
    let (row0, row1) = (rows[0].id, rows[1].id);
    let (dev0, dev1) = (device_id(store, ICCIDS[0]).await, device_id(store, ICCIDS[1]).await);
    let begin = |device, row| store.begin_rev_service(TENANT, device, "1001", owner.id, row, t(0));
    assert_eq!(begin(dev0, row0).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    assert_eq!(
        begin(dev0, row0).await.expect("begin"),
        RevServiceStart::Create { earlier_attempt: true },
        "the same row again (a crash, a lost answer): look on Rev.io first"
    );
    assert_eq!(
        store.begin_rev_service(TENANT, dev0, "1001", owner.id + 1000, 1, t(0)).await.expect("begin"),
        RevServiceStart::Busy { bulk_change_id: owner.id },
        "another row while the creating row is open"
    );
    let line =
        |id| RevServiceRecord { device_id: dev0, rev_service_id: id, rev_customer_id: "1001".into(), is_active: true };
    store.add_rev_service(TENANT, &line(500)).await.expect("record");
    store.add_rev_service(TENANT, &line(500)).await.expect("the same line again is no change");
    match store.add_rev_service(TENANT, &line(501)).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already has active Rev.io service 500"), "{why}"),
        other => panic!("a second active line must be refused, got {other:?}"),
    }
    assert_eq!(store.active_rev_service(TENANT, dev0).await.expect("read").map(|l| l.rev_service_id), Some(500));
    assert_eq!(begin(dev0, row0).await.expect("begin"), RevServiceStart::Active(line(500)));
    // Closed by an undo of the assignment: once, only by its tenant; the device may then get a new line.
    assert!(!store.close_rev_service(OTHER_TENANT, dev0, 500, t(1)).await.expect("close"), "not its tenant's line");
    assert!(!store.close_rev_service(TENANT, dev0, 499, t(1)).await.expect("close"), "not the active line");
    assert!(store.close_rev_service(TENANT, dev0, 500, t(1)).await.expect("close"));
    assert!(!store.close_rev_service(TENANT, dev0, 500, t(1)).await.expect("close"), "closed already");
    assert_eq!(store.active_rev_service(TENANT, dev0).await.expect("read"), None);
    assert_eq!(begin(dev0, row0).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    store.abandon_rev_service(dev0, owner.id, row0).await.expect("abandon");

    // Rev.io refused: the right is given back, and the next attempt starts afresh.
    assert_eq!(begin(dev1, row1).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    store.abandon_rev_service(dev1, owner.id, row1).await.expect("abandon");
    assert_eq!(begin(dev1, row1).await.expect("begin"), RevServiceStart::Create { earlier_attempt: false });
    // Once the creating row is final, another row takes over, warned that a line may exist on Rev.io.
    close(store, &[owner.id]).await;
    assert_eq!(
        store.begin_rev_service(TENANT, dev1, "1001", owner.id + 1000, 1, t(0)).await.expect("begin"),
        RevServiceStart::Create { earlier_attempt: true }
    );
    store.abandon_rev_service(dev1, owner.id + 1000, 1).await.expect("abandon");
}

pub async fn idempotency_keys_replay_once_per_tenant(store: &dyn Store) {
    let begin = |tenant, key: &'static str, hash: &'static str, now| {
        store.begin_idempotent(
            tenant,
            key,
            hash,
            now,
            now - chrono::Duration::seconds(60),
            now - chrono::Duration::hours(24),
        )
    };
    assert_eq!(begin(TENANT, "k1", "h1", t(0)).await.expect("begin"), IdempotencyStart::New);
    assert_eq!(
        begin(TENANT, "k1", "h1", t(1)).await.expect("begin"),
        IdempotencyStart::InProgress { bulk_change_id: None, since: t(0) }
    );
    store.finish_idempotent(TENANT, "k1", 202, "{\"BulkChangeId\":7}").await.expect("finish");
    assert_eq!(
        begin(TENANT, "k1", "h1", t(2)).await.expect("begin"),
        IdempotencyStart::Replay { status: 202, body: "{\"BulkChangeId\":7}".into() }
    );
    assert_eq!(begin(TENANT, "k1", "other body", t(3)).await.expect("begin"), IdempotencyStart::Mismatch);
    assert_eq!(
        begin(OTHER_TENANT, "k1", "other body", t(3)).await.expect("begin"),
        IdempotencyStart::New,
        "per tenant"
    );
    assert_eq!(begin(TENANT, "k1", "other body", t(90_000)).await.expect("begin"), IdempotencyStart::New, "expired");

    // A reservation whose request died before recording anything is taken over; one with a bulk change is not.
    assert_eq!(begin(TENANT, "k2", "h", t(0)).await.expect("begin"), IdempotencyStart::New);
    assert_eq!(begin(TENANT, "k2", "h", t(120)).await.expect("begin"), IdempotencyStart::New);
    assert_eq!(begin(TENANT, "k3", "h", t(0)).await.expect("begin"), IdempotencyStart::New);
    let devices = store.devices_by_iccid(TENANT, &[ICCIDS[0].to_string()]).await.expect("devices");
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::StatusUpdate,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(3), ..Default::default() },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: Some("k3".into()),
        notify_secret: None,
    };
    let row = NewRow {
        device_id: Some(devices[0].id),
        iccid: ICCIDS[0].into(),
        msisdn: None,
        status: RowStatus::Pending,
        status_details: None,
        scheduled: None,
        request: None,
    };
    let id = store.create_bulk_change(&change, &[row]).await.expect("create").id;
    assert_eq!(
        begin(TENANT, "k3", "h", t(120)).await.expect("begin"),
        IdempotencyStart::InProgress { bulk_change_id: Some(id), since: t(0) },
        "the bulk change was recorded on the key with it"
    );
    // A request that failed before writing gives its key back.
    assert_eq!(begin(TENANT, "k4", "h", t(0)).await.expect("begin"), IdempotencyStart::New);
    store.abandon_idempotent(TENANT, "k4").await.expect("abandon");
    assert_eq!(begin(TENANT, "k4", "h", t(1)).await.expect("begin"), IdempotencyStart::New);
    store.abandon_idempotent(TENANT, "k3").await.expect("abandon");
    assert!(
        matches!(begin(TENANT, "k3", "h", t(2)).await.expect("begin"), IdempotencyStart::InProgress { .. }),
        "kept"
    );
    assert!(store.purge_idempotency_keys(t(100_000)).await.expect("purge") >= 4);
    assert_eq!(begin(TENANT, "k3", "h", t(3)).await.expect("begin"), IdempotencyStart::New, "purged");
    close(store, &[id]).await;
}
