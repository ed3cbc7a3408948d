//! Bulk changes within their tenant, claims and leases, completions, the bulk status and the audit trail.

use super::*;

pub async fn bulk_change_is_tenant_scoped(store: &dyn Store) {
    let id = new_bulk(store).await;
    let own = store.bulk_change(Some(TENANT), id).await.expect("read").expect("own tenant sees it");
    assert_eq!(own.status, BulkStatus::New);
    assert_eq!(own.created_by, "alice");
    assert!(store.bulk_change(Some(OTHER_TENANT), id).await.expect("read").is_none());
    assert!(store.rows(OTHER_TENANT, id, None, 1, 100).await.expect("rows").is_empty());
    assert!(store.row_counts(OTHER_TENANT, id).await.expect("counts").is_empty());
    let counts = store.row_counts(TENANT, id).await.expect("counts");
    assert_eq!(counts.iter().find(|c| c.status == RowStatus::Pending).map(|c| c.count), Some(3));
    assert_eq!(counts.iter().find(|c| c.status == RowStatus::Error).map(|c| c.count), Some(1));
    assert!(store.devices_by_iccid(TENANT, &[OTHER_TENANT_ICCID.to_string()]).await.expect("devices").is_empty());
    assert!(store.service_provider(OTHER_TENANT, SP).await.expect("sp").is_none());
}

/// Texts of any shape (quotes, backslashes, percent signs, line breaks) are stored and read back as written, and
/// an ICCID of that shape finds no device rather than failing: the SQL Server adapter passes them inside JSON.
pub async fn texts_are_kept_as_written(store: &dyn Store) {
    let odd = ["12\"3", "4\\5%22", "8901\r\nBcc: x@example.com", "%25%", "tab\there é 😀"];
    let mut asked: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    asked.push(ICCIDS[1].to_string());
    let found = store.devices_by_iccid(TENANT, &asked).await.expect("devices");
    assert_eq!(found.iter().map(|d| d.iccid.as_str()).collect::<Vec<_>>(), vec![ICCIDS[1]]);
    let rows: Vec<NewRow> = odd
        .iter()
        .map(|iccid| NewRow {
            device_id: None,
            iccid: iccid.to_string(),
            msisdn: Some("+1\"2\\3%".into()),
            status: RowStatus::Error,
            status_details: Some(format!("Invalid ICCID \"{iccid}\" (100% \\ wrong)")),
            scheduled: None,
            request: None,
        })
        .collect();
    let change = NewBulkChange { created_by: "alice \"o'neil\"".into(), ..status_update_change() };
    let id = store.create_bulk_change(&change, &rows).await.expect("create").id;
    let stored = store.rows(TENANT, id, None, 1, 10).await.expect("rows");
    let read: Vec<_> =
        stored.iter().map(|r| (r.iccid.as_str(), r.msisdn.as_deref(), r.status_details.as_deref())).collect();
    let written: Vec<_> =
        rows.iter().map(|r| (r.iccid.as_str(), r.msisdn.as_deref(), r.status_details.as_deref())).collect();
    assert_eq!(read, written);
    assert_eq!(store.bulk_change(Some(TENANT), id).await.expect("read").expect("bulk").created_by, "alice \"o'neil\"");
}

pub async fn claims_are_exclusive_and_leases_expire(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let a = store.claim_rows(id, "a", 2, lease, t(0)).await.expect("claim a");
    let b = store.claim_rows(id, "b", 10, lease, t(1)).await.expect("claim b");
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 1, "b gets only the row a did not take");
    assert!(a.iter().all(|r| r.status == RowStatus::Processing && r.claims == 1));
    assert!(a.iter().all(|r| r.id != b[0].id));
    assert!(store.claim_rows(id, "c", 10, lease, t(30)).await.expect("claim c").is_empty(), "live leases hold");
    let c = store.claim_rows(id, "c", 10, lease, t(62)).await.expect("claim c");
    assert_eq!(c.len(), 3, "expired leases are claimed again");
    assert!(c.iter().all(|r| r.claims == 2), "a second claim is visible to the processor");
    claimed_rows_carry_their_devices(store, &c).await;
}

/// Each claimed row carries its device as the store reads it in the bulk change's tenant.
pub(super) async fn claimed_rows_carry_their_devices(store: &dyn Store, rows: &[DeviceChangeRow]) {
    for row in rows {
        let device_id = row.device_id.expect("claimed rows have devices");
        let read = store.device(TENANT, device_id).await.expect("device");
        assert!(read.is_some(), "row {} has a device in its tenant", row.id);
        assert_eq!(row.device, read, "row {} carries the device read with its claim", row.id);
    }
}

pub async fn a_claim_reads_no_device_of_another_tenant(store: &dyn Store) {
    let foreign = store.devices_by_iccid(OTHER_TENANT, &[OTHER_TENANT_ICCID.to_string()]).await.expect("devices");
    let row = NewRow {
        device_id: Some(foreign[0].id),
        iccid: OTHER_TENANT_ICCID.into(),
        msisdn: None,
        status: RowStatus::Pending,
        status_details: None,
        scheduled: None,
        request: None,
    };
    let id = store.create_bulk_change(&status_update_change(), &[row]).await.expect("create").id;
    let claimed = store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].device, None, "another tenant's device is not read with a claim");
    close(store, &[id]).await;
}

pub async fn only_the_lease_holder_completes_a_row_once(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    let row = &rows[0];
    let target = store
        .device_statuses(Integration::Pod19)
        .await
        .expect("statuses")
        .into_iter()
        .find(|s| s.status == "ACTIVATED")
        .expect("ACTIVATED");
    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: "Status changed to ACTIVATED".into(),
        device_update: DeviceUpdate {
            device_status_id: Some(target.id),
            carrier_rate_plan: Some("RP-5GB".into()),
            communication_plan: Some("CP-IoT".into()),
            username: Some("truck-42".into()),
            ..DeviceUpdate::default()
        },
    };
    assert!(
        !store.complete_row(TENANT, row.bulk_change_id, row.id, "intruder", &outcome, t(1)).await.expect("complete")
    );
    assert!(store.complete_row(TENANT, row.bulk_change_id, row.id, "a", &outcome, t(1)).await.expect("complete"));
    let again = RowOutcome { status: RowStatus::ApiFailed, ..outcome.clone() };
    assert!(
        !store.complete_row(TENANT, row.bulk_change_id, row.id, "a", &again, t(2)).await.expect("complete"),
        "a final row is never overwritten"
    );
    let stored = store.rows(TENANT, id, Some(RowStatus::Processed), 1, 10).await.expect("rows");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status_details.as_deref(), Some("Status changed to ACTIVATED"));
    let device = store.device(TENANT, row.device_id.expect("device id")).await.expect("device").expect("exists");
    assert_eq!(device.device_status_id, target.id);
    assert_eq!(device.carrier_rate_plan.as_deref(), Some("RP-5GB"));
    assert_eq!(device.communication_plan.as_deref(), Some("CP-IoT"));
    assert_eq!(device.username.as_deref(), Some("truck-42"));
    assert!(device.is_active && !device.is_deleted);
}

/// Rows completed and audit entries written in one group (the worker's group commit): each row under
/// `complete_row`'s rules, the held ones recorded, the others untouched, and the entries kept in order.
pub async fn rows_complete_and_entries_append_in_groups(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 2, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(rows.len(), 2);
    let unclaimed = store.rows(TENANT, id, Some(RowStatus::Pending), 1, 10).await.expect("rows");
    let done = |row: &DeviceChangeRow, worker: &str, user: &str| Completion {
        tenant_id: TENANT,
        bulk_change_id: id,
        row_id: row.id,
        worker: worker.into(),
        outcome: RowOutcome {
            status: RowStatus::Processed,
            details: format!("renamed {user}"),
            device_update: DeviceUpdate { username: Some(user.into()), ..DeviceUpdate::default() },
        },
        now: t(1),
    };
    let group = [
        done(&rows[0], "a", "truck-1 \"50%\" \\"),
        done(&rows[1], "intruder", "truck-2"),
        done(&unclaimed[0], "a", "truck-3"),
    ];
    assert_eq!(store.complete_rows(&group).await.expect("complete"), vec![true, false, false]);
    let device = |row: &DeviceChangeRow| {
        let id = row.device_id.expect("device id");
        async move { store.device(TENANT, id).await.expect("device").expect("exists") }
    };
    assert_eq!(device(&rows[0]).await.username.as_deref(), Some("truck-1 \"50%\" \\"), "texts kept as written");
    assert_ne!(device(&rows[1]).await.username.as_deref(), Some("truck-2"), "a row not held changes nothing");
    let processed = store.rows(TENANT, id, Some(RowStatus::Processed), 1, 10).await.expect("rows");
    assert_eq!(processed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![rows[0].id]);
    assert_eq!(store.rows(TENANT, id, Some(RowStatus::Processing), 1, 10).await.expect("rows").len(), 1);
    let entry = |n: i64| LogEntry {
        bulk_change_id: id,
        device_change_id: Some(rows[(n % 2) as usize].id),
        description: format!("call {n}"),
        request_text: format!("PUT devices/{n}"),
        response_text: "{}".into(),
        response_status: "PROCESSED".into(),
        has_errors: n == 2,
        error_text: (n == 2).then(|| "HTTP 500: \"busy\" 100%\r\n".into()),
        processed_date: t(n),
    };
    let entries: Vec<LogEntry> = (1..=3).map(entry).collect();
    store.append_logs(&entries).await.expect("append");
    assert_eq!(store.logs(TENANT, id).await.expect("logs"), entries);
}

pub async fn archiving_a_device_hides_it_from_every_change(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    let archive = RowOutcome {
        status: RowStatus::Processed,
        details: "archived".into(),
        device_update: DeviceUpdate { archive: true, ..DeviceUpdate::default() },
    };
    assert!(
        store.complete_row(TENANT, rows[0].bulk_change_id, rows[0].id, "a", &archive, t(1)).await.expect("complete")
    );
    let device =
        store.device(TENANT, rows[0].device_id.expect("device id")).await.expect("read").expect("still stored");
    assert!(device.is_deleted && !device.is_active, "IsActive = false, IsDeleted = true");
}

pub async fn bulk_status_is_derived_from_rows_and_final_once(store: &dyn Store) {
    let id = new_bulk(store).await;
    store.mark_processing(id, t(0)).await.expect("mark");
    assert_eq!(store.finalize_bulk_change(id, t(0)).await.expect("finalize"), None, "open rows keep it open");
    let rows = store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    for (i, row) in rows.iter().enumerate() {
        let status = if i == 0 { RowStatus::Processed } else { RowStatus::ApiFailed };
        let outcome = RowOutcome { status, details: "x".into(), device_update: DeviceUpdate::default() };
        assert!(store.complete_row(TENANT, row.bulk_change_id, row.id, "a", &outcome, t(1)).await.expect("complete"));
    }
    assert_eq!(store.finalize_bulk_change(id, t(2)).await.expect("finalize"), Some(BulkStatus::Processed));
    store.mark_processing(id, t(3)).await.expect("mark");
    let bulk = store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists");
    assert_eq!(bulk.status, BulkStatus::Processed, "a late mark_processing never reopens a final bulk change");
    assert!(bulk.processed_at.is_some());
    assert!(store.claim_notification(id, t(4), t(64)).await.expect("claim"));
    assert!(!store.claim_notification(id, t(5), t(65)).await.expect("claim"), "one sender at a time");
    store.release_notification(id).await.expect("release");
    assert!(store.claim_notification(id, t(6), t(66)).await.expect("claim"), "released: the next sender at once");
    // The sender dies holding the right: it is the next one's once the lease is over, not before.
    assert!(!store.claim_notification(id, t(65), t(125)).await.expect("claim"), "the lease still holds");
    assert!(store.claim_notification(id, t(67), t(127)).await.expect("claim"), "a dead sender's lease ran out");
    store.notification_sent(id, t(70)).await.expect("sent");
    assert!(!store.claim_notification(id, t(200), t(260)).await.expect("claim"), "sent: never again");
    store.release_notification(id).await.expect("a late release");
    assert!(!store.claim_notification(id, t(300), t(360)).await.expect("claim"), "a release never unsends");
}

/// A bulk change finished with failures whose e-mail was never sent (its worker died between the final status and
/// the e-mail) is handed to the queue again, while no sender holds it and until it is sent.
pub async fn an_owed_failure_email_is_stranded_until_sent(store: &dyn Store) {
    let now = Utc::now();
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 10, Duration::from_secs(60), now).await.expect("claim");
    for row in &rows {
        let outcome =
            RowOutcome { status: RowStatus::ApiFailed, details: "x".into(), device_update: DeviceUpdate::default() };
        assert!(store.complete_row(TENANT, id, row.id, "a", &outcome, now).await.expect("complete"));
    }
    assert!(store.finalize_bulk_change(id, now).await.expect("finalize").is_some_and(|s| s.is_final()));
    let later = now + chrono::Duration::minutes(10);
    let stranded = |at: chrono::DateTime<Utc>| async move {
        store.stranded_bulk_changes(at - chrono::Duration::minutes(2), at).await.expect("stranded")
    };
    assert!(stranded(later).await.contains(&id), "final with failures and no e-mail: owed");
    assert!(store.claim_notification(id, later, later + chrono::Duration::minutes(1)).await.expect("claim"));
    assert!(!stranded(later).await.contains(&id), "a sender holds it");
    let after_lease = later + chrono::Duration::minutes(5);
    assert!(stranded(after_lease).await.contains(&id), "its sender died: owed again");
    store.notification_sent(id, after_lease).await.expect("sent");
    assert!(!stranded(after_lease + chrono::Duration::minutes(1)).await.contains(&id), "sent");
    assert!(
        !stranded(now + chrono::Duration::days(2)).await.contains(&id),
        "a day after it finished the sweep no longer looks (nor at any bulk change that old)"
    );
}

pub async fn stranded_bulk_changes_are_found(store: &dyn Store) {
    let now = Utc::now();
    let id = new_bulk(store).await;
    let later = now + chrono::Duration::minutes(10);
    let stranded = store.stranded_bulk_changes(later - chrono::Duration::minutes(2), later).await.expect("stranded");
    assert!(stranded.contains(&id), "a NEW bulk change nobody picked up is stranded");
    store.claim_rows(id, "a", 1, Duration::from_secs(3600), later).await.expect("claim");
    let stranded = store
        .stranded_bulk_changes(later + chrono::Duration::minutes(1), later + chrono::Duration::minutes(1))
        .await
        .expect("stranded");
    assert!(!stranded.contains(&id), "a live lease means somebody is working on it");
}

pub async fn audit_log_is_kept_per_row_and_scoped(store: &dyn Store) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    let entry = LogEntry {
        bulk_change_id: id,
        device_change_id: Some(rows[0].id),
        description: "Update Jasper Status: Jasper API".into(),
        request_text: "PUT devices/x".into(),
        response_text: "{\"iccid\":\"x\"}".into(),
        response_status: "PROCESSED".into(),
        has_errors: false,
        error_text: None,
        processed_date: t(1),
    };
    store.append_log(&entry).await.expect("append");
    assert_eq!(store.logs(TENANT, id).await.expect("logs"), vec![entry]);
    assert!(store.logs(OTHER_TENANT, id).await.expect("logs").is_empty());
}

/// A Rev customer assignment writes the device's history entry with the text the engine built
/// (`DeviceUpdate::history`), not one of the store's own: one completed alone, one in a group. No port reads the
/// history, so each adapter's test reads it back; this returns the bulk change and the texts it should find.
pub async fn history_entries_are_written_as_given(store: &dyn Store) -> (i64, [String; 2]) {
    let id = new_bulk(store).await;
    let rows = store.claim_rows(id, "a", 2, Duration::from_secs(60), t(0)).await.expect("claim");
    let texts = ["Assigned to Rev customer 1001 (alone)".to_string(), "Assigned to Rev customer 1001 (grouped)".into()];
    let outcome = |history: &str| RowOutcome {
        status: RowStatus::Processed,
        details: "assigned".into(),
        device_update: DeviceUpdate { history: Some(history.into()), ..DeviceUpdate::assigned_to("1001") },
    };
    assert!(store.complete_row(TENANT, id, rows[0].id, "a", &outcome(&texts[0]), t(1)).await.expect("complete"));
    let grouped = Completion {
        tenant_id: TENANT,
        bulk_change_id: id,
        row_id: rows[1].id,
        worker: "a".into(),
        outcome: outcome(&texts[1]),
        now: t(1),
    };
    assert_eq!(store.complete_rows(&[grouped]).await.expect("complete group"), [true]);
    (id, texts)
}
