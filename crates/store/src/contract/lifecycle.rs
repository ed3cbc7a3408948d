//! Reference data, paging, cancelling, retries, scheduled rows, Mobility rows, carrier waits and callbacks.

use super::*;

pub async fn reference_data_is_read_within_the_tenant(store: &dyn Store) {
    // A plan keeps the carrier's own ids (Pond's package type, Teal's plan uuid).
    let plans = store.carrier_rate_plans(TENANT, SP).await.expect("plans");
    assert_eq!(plans[0].jasper_rate_plan_id, Some(4711));
    assert_eq!(plans[0].plan_uuid.as_deref(), Some("cda438862b284bcdaec82ee516eada14"));
    let sp = store.service_provider(TENANT, SP).await.expect("sp").expect("the provider");
    let settings: serde_json::Value =
        serde_json::from_str(sp.carrier_settings.as_deref().unwrap_or("null")).expect("json");
    assert_eq!(settings["DistributorId"], "D-1", "carrier settings come back as stored");
    // Teal's and Pond's statuses are reference data in both stores.
    let teal: Vec<String> =
        store.device_statuses(Integration::Teal).await.expect("statuses").into_iter().map(|s| s.status).collect();
    assert_eq!(teal, ["ONLINE", "WAITING", "STOPPED"]);
    let pond: Vec<String> =
        store.device_statuses(Integration::Pond).await.expect("statuses").into_iter().map(|s| s.status).collect();
    assert_eq!(pond, ["ACTIVE", "INACTIVE"]);
    // IMEI ranges are shared reference data: the active ones only, with their bounds and SIM type.
    let ranges = store.imei_ranges().await.expect("IMEI ranges");
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!((ranges[0].from_imei.as_str(), ranges[0].to_imei.as_str()), ("35693803", "35693804"));
    assert!(ranges[0].is_esim() && ranges[0].contains("356938045643809"));
    assert_eq!(store.carrier_rate_plans(TENANT, SP).await.expect("plans").len(), 1);
    assert!(store.carrier_rate_plans(OTHER_TENANT, SP).await.expect("plans").is_empty());
    assert!(store.rev_customer(TENANT, "1001").await.expect("rev").is_some());
    assert!(store.rev_customer(TENANT, "100").await.expect("rev").is_none(), "exact match, never a substring");
    assert!(store.rev_customer(OTHER_TENANT, "1001").await.expect("rev").is_none());
    let statuses = store.device_statuses(Integration::Pod19).await.expect("statuses");
    assert!(statuses.iter().any(|s| s.status == "DEACTIVATED" && s.display_name == "Deactivated"));
    // Telegence's line codes, and the SIM without a line (ids 601-604 in both stores' reference data).
    let telegence = store.device_statuses(Integration::Telegence).await.expect("statuses");
    let mut codes: Vec<(i64, &str)> = telegence.iter().map(|s| (s.id, s.status.as_str())).collect();
    codes.sort();
    assert_eq!(codes, vec![(601, "A"), (602, "S"), (603, "C"), (604, "UNKNOWN")]);
    let devices =
        store.devices_by_iccid(TENANT, &[ICCIDS[2].to_string(), ICCIDS[0].to_string()]).await.expect("devices");
    let with_service = devices.iter().find(|d| d.iccid == ICCIDS[2]).expect("device");
    let without = devices.iter().find(|d| d.iccid == ICCIDS[0]).expect("device");
    let order: Vec<&str> = devices.iter().map(|d| d.iccid.as_str()).collect();
    assert_eq!(order, vec![ICCIDS[2], ICCIDS[0]], "devices come back in the order they were asked for");
    assert_eq!(without.eid, Some(eid_of(ICCIDS[0])), "the EID is read with the device");
    assert_eq!(without.eid.as_deref().map(str::len), Some(32), "an EID has 32 digits");
    let by_id = store.device(TENANT, without.id).await.expect("device").expect("found");
    assert_eq!(by_id.eid, without.eid);
    let service = store.active_rev_service(TENANT, with_service.id).await.expect("rev").expect("seeded service");
    assert_eq!((service.rev_service_id, service.rev_customer_id.as_str()), (11_001, "1001"));
    assert!(store.active_rev_service(TENANT, without.id).await.expect("rev").is_none());
    assert!(store.active_rev_service(OTHER_TENANT, with_service.id).await.expect("rev").is_none());
}

/// A reader paging a filtered set by row id while rows leave it (the results export during a run) gets every
/// row still in the set once: paging by offset over the shrinking set skipped the row after each page.
pub async fn rows_page_by_id_while_rows_change(store: &dyn Store) {
    let id = new_bulk(store).await;
    let pending = store.rows(TENANT, id, Some(RowStatus::Pending), 1, 10).await.expect("rows");
    assert!(pending.len() >= 3);
    let first = store.rows_after(TENANT, id, Some(RowStatus::Pending), 0, 1).await.expect("page 1");
    assert_eq!(first.len(), 1);
    // The row just read leaves PENDING before the next page is read.
    let claimed = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(claimed[0].id, first[0].id);
    let rest = store.rows_after(TENANT, id, Some(RowStatus::Pending), first[0].id, 10).await.expect("page 2");
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), pending[1..].iter().map(|r| r.id).collect::<Vec<_>>());
    assert!(store.rows_after(OTHER_TENANT, id, None, 0, 10).await.expect("other").is_empty(), "tenant-scoped");
}

pub async fn pending_rows_can_be_cancelled_and_claimed_ones_finish(store: &dyn Store) {
    let id = new_bulk(store).await;
    let claimed = store.claim_rows(id, "a", 1, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(
        store.cancel_rows(OTHER_TENANT, id, &domain::cancelled_by("mallory"), t(1)).await.expect("cancel"),
        0,
        "another tenant cancels nothing"
    );
    assert_eq!(
        store.cancel_rows(TENANT, id, &domain::cancelled_by("alice"), t(1)).await.expect("cancel"),
        2,
        "the two PENDING rows"
    );
    let cancelled = store.rows(TENANT, id, Some(RowStatus::Cancelled), 1, 10).await.expect("rows");
    assert!(cancelled.iter().all(|r| r.status_details.as_deref() == Some("Cancelled by alice")));
    assert!(store.claim_rows(id, "b", 10, Duration::from_secs(60), t(2)).await.expect("claim").is_empty());
    let done =
        RowOutcome { status: RowStatus::Processed, details: "ok".into(), device_update: DeviceUpdate::default() };
    assert!(
        store.complete_row(TENANT, claimed[0].bulk_change_id, claimed[0].id, "a", &done, t(3)).await.expect("complete"),
        "a claimed row still finishes"
    );
    assert_eq!(store.finalize_bulk_change(id, t(4)).await.expect("finalize"), Some(BulkStatus::Processed));
}

pub async fn retries_are_linked_and_history_is_per_device(store: &dyn Store) {
    let first = new_bulk(store).await;
    let devices = store.devices_by_iccid(TENANT, &[ICCIDS[0].to_string()]).await.expect("devices");
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::Archival,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(5), ..Default::default() },
        created_by: "bob".into(),
        retry_of: Some(first),
        attributes: vec![],
        idempotency_key: None,
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
    let second = store.create_bulk_change(&change, &[row]).await.expect("create").id;
    assert_eq!(store.bulk_change(Some(TENANT), second).await.expect("read").expect("exists").retry_of, Some(first));
    let history = store.device_history(TENANT, devices[0].id, 10).await.expect("history");
    assert!(history.len() >= 2);
    assert_eq!(
        (history[0].bulk_change_id, history[0].change_type, history[0].created_by.as_str()),
        (second, ChangeType::Archival, "bob")
    );
    assert!(history.iter().any(|h| h.bulk_change_id == first));
    assert!(store.device_history(OTHER_TENANT, devices[0].id, 10).await.expect("history").is_empty());
    let customers = store.rev_customers(TENANT).await.expect("customers");
    assert_eq!(customers.iter().map(|c| c.rev_customer_id.as_str()).collect::<Vec<_>>(), vec!["1001"]);
    assert!(store.rev_customers(OTHER_TENANT).await.expect("customers").is_empty());
}

pub async fn scheduled_rows_wait_for_their_date(store: &dyn Store) {
    use engine::ports::{CustomerPlanChange, ScheduledCustomerPlan};
    let devices = store.devices_by_iccid(TENANT, &[ICCIDS[1].to_string()]).await.expect("devices");
    assert!(store.customer_rate_plan(TENANT, 1).await.expect("plan").is_some());
    assert!(store.customer_rate_plan(OTHER_TENANT, 1).await.expect("plan").is_none());
    assert!(store.customer_rate_pool(TENANT, 7).await.expect("pool").is_some());
    let due = t(1000);
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::CustomerRatePlanChange,
        portal_type: PortalType::M2M,
        request: BulkChangeRequestWire { service_provider_id: Some(SP), change_type: Some(4), ..Default::default() },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: None,
        notify_secret: None,
    };
    let plan = CustomerPlanChange {
        customer_rate_plan_id: Some(1),
        customer_rate_pool_id: Some(7),
        data_allocation_mb: Some(512.0),
    };
    let row = NewRow {
        device_id: Some(devices[0].id),
        iccid: ICCIDS[1].into(),
        msisdn: None,
        status: RowStatus::Scheduled,
        status_details: None,
        scheduled: Some(ScheduledCustomerPlan { effective_date: due, change: plan.clone() }),
        request: None,
    };
    let id = store.create_bulk_change(&change, &[row]).await.expect("create").id;
    assert_eq!(store.finalize_bulk_change(id, t(0)).await.expect("finalize"), Some(BulkStatus::Scheduled));
    assert!(
        store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim").is_empty(),
        "not claimable yet"
    );
    assert!(!store.release_due_scheduled_rows(t(999)).await.expect("release").contains(&id), "not due yet");
    // Paused while it waits: its row keeps its date, is released at that date, and starts only once resumed.
    assert_eq!(store.pause_bulk_change(Some(TENANT), id, "operator", "alice", t(999)).await.expect("pause"), Some(0));
    assert_eq!(store.release_due_scheduled_rows(due).await.expect("release"), vec![id]);
    assert_eq!(store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists").status, BulkStatus::Paused);
    assert!(
        store.claim_rows(id, "a", 10, Duration::from_secs(60), due).await.expect("claim").is_empty(),
        "due, but paused"
    );
    assert!(store.resume_bulk_change(Some(TENANT), id, due).await.expect("resume"));
    assert_eq!(
        store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists").status,
        BulkStatus::Processing
    );
    let rows = store.claim_rows(id, "a", 10, Duration::from_secs(60), due).await.expect("claim");
    assert_eq!(rows.len(), 1);
    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: "applied".into(),
        device_update: DeviceUpdate { customer_plan: Some(plan), ..DeviceUpdate::default() },
    };
    assert!(
        store.complete_row(TENANT, rows[0].bulk_change_id, rows[0].id, "a", &outcome, due).await.expect("complete")
    );
    let device = store.device(TENANT, devices[0].id).await.expect("read").expect("device");
    assert_eq!(
        (device.customer_rate_plan_id, device.customer_rate_pool_id, device.customer_data_allocation_mb),
        (Some(1), Some(7), Some(512.0))
    );
    assert!(store.release_due_scheduled_rows(t(5000)).await.expect("release").is_empty(), "released once");
}

pub async fn mobility_rows_behave_like_m2m_rows(store: &dyn Store) {
    let devices =
        store.devices_by_iccid(TENANT, &[ICCIDS[0].to_string(), ICCIDS[1].to_string()]).await.expect("devices");
    let change = NewBulkChange {
        tenant_id: TENANT,
        service_provider_id: SP,
        integration: Integration::Pod19,
        change_type: ChangeType::StatusUpdate,
        portal_type: PortalType::Mobility,
        request: BulkChangeRequestWire {
            service_provider_id: Some(SP),
            change_type: Some(3),
            portal_type: Some(2),
            ..Default::default()
        },
        created_by: "alice".into(),
        retry_of: None,
        attributes: vec![],
        idempotency_key: None,
        notify_secret: None,
    };
    let rows: Vec<NewRow> = devices
        .iter()
        .map(|d| NewRow {
            device_id: Some(d.id),
            iccid: d.iccid.clone(),
            msisdn: None,
            status: RowStatus::Pending,
            status_details: None,
            scheduled: None,
            request: None,
        })
        .collect();
    let m2m = new_bulk(store).await;
    let id = store.create_bulk_change(&change, &rows).await.expect("create").id;
    assert_eq!(
        store.bulk_change(Some(TENANT), id).await.expect("read").expect("exists").portal_type,
        PortalType::Mobility
    );
    assert_eq!(
        store.row_counts(TENANT, id).await.expect("counts"),
        vec![StatusCount { status: RowStatus::Pending, count: 2 }]
    );
    let claimed = store.claim_rows(id, "a", 10, Duration::from_secs(60), t(0)).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|r| r.bulk_change_id == id));
    claimed_rows_carry_their_devices(store, &claimed).await;
    let entry = LogEntry {
        bulk_change_id: id,
        device_change_id: Some(claimed[0].id),
        description: "mobility".into(),
        request_text: String::new(),
        response_text: String::new(),
        response_status: "PROCESSED".into(),
        has_errors: false,
        error_text: None,
        processed_date: t(1),
    };
    store.append_log(&entry).await.expect("log");
    assert_eq!(store.logs(TENANT, id).await.expect("logs"), vec![entry]);
    let done = RowOutcome {
        status: RowStatus::Processed,
        details: "ok".into(),
        device_update: DeviceUpdate { username: Some("mob-1".into()), ..DeviceUpdate::default() },
    };
    for row in &claimed {
        assert!(store.complete_row(TENANT, id, row.id, "a", &done, t(2)).await.expect("complete"));
    }
    assert_eq!(store.finalize_bulk_change(id, t(3)).await.expect("finalize"), Some(BulkStatus::Processed));
    assert_eq!(
        store.device(TENANT, devices[0].id).await.expect("read").expect("device").username.as_deref(),
        Some("mob-1")
    );
    let history = store.device_history(TENANT, devices[0].id, 10).await.expect("history");
    assert!(
        history.iter().any(|h| h.bulk_change_id == id) && history.iter().any(|h| h.bulk_change_id == m2m),
        "both portals"
    );
    let m2m_counts = store.row_counts(TENANT, m2m).await.expect("counts");
    assert_eq!(m2m_counts.iter().map(|c| c.count).sum::<i64>(), 4, "the M2M bulk change's rows are untouched");
}

pub async fn carrier_waits_are_completed_once_by_their_request(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let rows = store.claim_rows(id, "w", 10, lease, t(0)).await.expect("claim");
    assert_eq!(rows.len(), 3);
    let waiting = [rows[0].id, rows[1].id];
    assert_eq!(store.await_carrier(id, &waiting, "other", "req-1", t(0), t(600)).await.expect("await"), 0);
    assert_eq!(store.await_carrier(id, &waiting, "w", "req-1", t(1), t(600)).await.expect("await"), 2);
    assert_eq!(store.next_lease_expiry(id).await.expect("expiry"), Some(t(60)), "the worker's lease ends first");

    let found = store.carrier_request_rows(&[SP], "req-1", None).await.expect("rows of request");
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), waiting.to_vec());
    assert!(
        found.iter().all(|r| r.carrier_request_id.as_deref() == Some("req-1") && r.carrier_requested_at == Some(t(1)))
    );
    assert!(store.carrier_request_rows(&[20, 40], "req-1", None).await.expect("other tenant").is_empty());
    let one = store.carrier_request_rows(&[SP], "req-1", Some(&rows[1].iccid)).await.expect("one device");
    assert_eq!(one.iter().map(|r| r.id).collect::<Vec<_>>(), vec![waiting[1]], "only that device's row");

    let outcome = RowOutcome {
        status: RowStatus::Processed,
        details: "activated".into(),
        device_update: DeviceUpdate {
            msisdn: Some("15550001111".into()),
            ip_address: Some("10.1.2.3".into()),
            ..Default::default()
        },
    };
    assert!(!store.complete_row(TENANT, id, waiting[0], "w", &outcome, t(2)).await.expect("complete"), "handed over");
    assert!(store.complete_row(TENANT, id, waiting[0], "carrier:req-1", &outcome, t(2)).await.expect("complete"));
    assert!(!store.complete_row(TENANT, id, waiting[0], "carrier:req-1", &outcome, t(3)).await.expect("again"));
    assert!(
        !store.hand_back_with_result(id, waiting[0], "carrier:req-1", "{}", t(3)).await.expect("hand back"),
        "a final row is not handed back"
    );
    let device = store.device(TENANT, rows[0].device_id.expect("device")).await.expect("read").expect("device");
    assert_eq!(device.msisdn.as_deref(), Some("15550001111"));

    // Past the deadline the waiting row is claimed again, still naming its request; the first time is kept.
    assert!(store.claim_rows(id, "poller", 10, lease, t(599)).await.expect("claim").iter().all(|r| r.id != waiting[1]));
    let again = store.claim_rows(id, "poller", 10, lease, t(601)).await.expect("claim");
    let polled = again.iter().find(|r| r.id == waiting[1]).expect("reclaimed after the deadline");
    assert_eq!((polled.carrier_request_id.as_deref(), polled.claims), (Some("req-1"), 2));
    assert_eq!(store.await_carrier(id, &[polled.id], "poller", "req-1", t(602), t(900)).await.expect("wait again"), 1);
    let found = store.carrier_request_rows(&[SP], "req-1", None).await.expect("rows of request");
    assert_eq!(found.iter().find(|r| r.id == polled.id).and_then(|r| r.carrier_requested_at), Some(t(1)));

    // A result kept for the steps after the carrier: the row is claimable at once and carries it.
    assert!(!store.hand_back_with_result(id, polled.id, "carrier:other", "{}", t(603)).await.expect("wrong owner"));
    assert!(
        store.hand_back_with_result(id, polled.id, "carrier:req-1", r#"{"success":true}"#, t(603)).await.expect("ok")
    );
    let again = store.claim_rows(id, "finisher", 10, lease, t(604)).await.expect("claim");
    let handed = again.iter().find(|r| r.id == polled.id).expect("handed back rows are claimed at once");
    assert_eq!(handed.carrier_result.as_deref(), Some(r#"{"success":true}"#));
}

/// A callback wakes the rows waiting on its request, of its own provider only, once; a row a worker already
/// polls (or one that is final) is not touched.
pub async fn a_callback_wakes_the_rows_waiting_on_its_request(store: &dyn Store) {
    let id = new_bulk(store).await;
    let lease = Duration::from_secs(60);
    let rows = store.claim_rows(id, "w", 10, lease, t(0)).await.expect("claim");
    let waiting = [rows[0].id, rows[1].id];
    assert_eq!(store.await_carrier(id, &waiting, "w", "req-w", t(1), t(900)).await.expect("await"), 2);
    assert!(store.wake_carrier_request(20, "req-w", t(5)).await.expect("wake").is_empty(), "another provider");
    assert!(store.wake_carrier_request(SP, "req-other", t(5)).await.expect("wake").is_empty(), "another request");
    assert!(store.claim_rows(id, "poller", 10, lease, t(5)).await.expect("claim").is_empty(), "still held");
    assert_eq!(store.wake_carrier_request(SP, "req-w", t(5)).await.expect("wake"), vec![id]);
    assert!(store.wake_carrier_request(SP, "req-w", t(5)).await.expect("again").is_empty(), "woken once");
    // The sender setting the wait to its poll interval afterwards does not undo the wake.
    assert_eq!(store.await_carrier(id, &waiting, "carrier:req-w", "req-w", t(5), t(300)).await.expect("re-wait"), 2);
    assert_eq!(store.next_lease_expiry(id).await.expect("expiry"), Some(t(5)), "the wake is kept");
    let polled = store.claim_rows(id, "poller", 10, lease, t(6)).await.expect("claim");
    let ids: Vec<i64> = polled.iter().map(|r| r.id).filter(|r| waiting.contains(r)).collect();
    assert_eq!(ids, waiting.to_vec(), "woken rows are claimed at once, still naming their request");
    assert!(polled.iter().all(|r| !waiting.contains(&r.id) || r.carrier_request_id.as_deref() == Some("req-w")));
    assert!(store.wake_carrier_request(SP, "req-w", t(7)).await.expect("wake").is_empty(), "a poller holds them");
    let teal = store.providers_of(Integration::ThingSpace).await.expect("providers");
    assert!(teal.iter().all(|sp| sp.integration == Integration::ThingSpace) && !teal.is_empty());
}

pub async fn thingspace_settings_are_read_and_a_refused_login_sticks(store: &dyn Store) {
    let sp = store.service_provider(TENANT, TS_SP).await.expect("read").expect("ThingSpace provider");
    let ts = sp.thingspace.expect("ThingSpace settings");
    assert_eq!((ts.app_key.as_str(), ts.callback_username.as_str()), ("app-1", "cb-1"));
    assert_eq!(ts.callback_password.expose(), "cb-password");
    assert!(ts.login_refused.is_none());
    assert!(store.service_provider(TENANT, SP).await.expect("read").expect("POD19").thingspace.is_none());
    let all = store.thingspace_providers().await.expect("list");
    assert_eq!(all.iter().map(|s| (s.id, s.tenant_id)).collect::<Vec<_>>(), vec![(TS_SP, TENANT), (40, OTHER_TENANT)]);

    store.refuse_login(TS_SP, "login refused: invalid password", t(0)).await.expect("refuse");
    let ts = store.service_provider(TENANT, TS_SP).await.expect("read").expect("sp").thingspace.expect("settings");
    assert_eq!(ts.login_refused.as_deref(), Some("login refused: invalid password"));
    let other =
        store.service_provider(OTHER_TENANT, 40).await.expect("read").expect("sp").thingspace.expect("settings");
    assert!(other.login_refused.is_none(), "only that account");

    let callback = CallbackRecord {
        request_id: "req-9".into(),
        iccid: Some(ICCIDS[0].into()),
        tenant_id: Some(TENANT),
        service_provider_id: Some(TS_SP),
        api_status: "Success".into(),
        api_response: "{}".into(),
        outcome: "applied".into(),
        received_at: t(0),
    };
    store.record_callback(&callback).await.expect("callback recorded");
    let early = CallbackRecord { outcome: "unmatched: no row waits yet".into(), ..callback.clone() };
    store.record_callback(&early).await.expect("early callback recorded");
    let other = CallbackRecord { service_provider_id: Some(40), ..early.clone() };
    store.record_callback(&other).await.expect("other account's callback recorded");
    let found = store.unmatched_callbacks(TS_SP, "req-9").await.expect("unmatched");
    assert_eq!(found, vec![early.clone()], "only this account's unmatched callbacks of this request");
    assert!(store.unmatched_callbacks(TS_SP, "req-10").await.expect("unmatched").is_empty());
    // Unmatched callbacks are kept a bounded time: the old ones go, the recent ones and every other stay.
    let recent = CallbackRecord { received_at: t(7_200), ..early.clone() };
    store.record_callback(&recent).await.expect("recent early callback recorded");
    assert_eq!(store.purge_unmatched_callbacks(t(3_600)).await.expect("purge"), 2, "this account's and the other's");
    assert_eq!(store.unmatched_callbacks(TS_SP, "req-9").await.expect("unmatched"), vec![recent]);
}
