//! The store contract on a real SQLite file.

use store::SqliteStore;
use store::contract::{self, contract_seed};

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("contract.db")).expect("open");
    assert!(store.load_seed(contract_seed()).await.expect("seed"));
    (dir, store)
}

macro_rules! contract_tests {
    ($($name:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_dir, store) = fresh().await;
            contract::$name(&store).await;
        }
    )+};
}

contract_tests!(
    bulk_change_is_tenant_scoped,
    texts_are_kept_as_written,
    claims_are_exclusive_and_leases_expire,
    a_claim_reads_no_device_of_another_tenant,
    only_the_lease_holder_completes_a_row_once,
    rows_complete_and_entries_append_in_groups,
    archiving_a_device_hides_it_from_every_change,
    pending_rows_can_be_cancelled_and_claimed_ones_finish,
    rows_page_by_id_while_rows_change,
    retries_are_linked_and_history_is_per_device,
    scheduled_rows_wait_for_their_date,
    mobility_rows_behave_like_m2m_rows,
    bulk_status_is_derived_from_rows_and_final_once,
    stranded_bulk_changes_are_found,
    an_owed_failure_email_is_stranded_until_sent,
    a_paused_bulk_change_has_no_row_claimed_until_resumed,
    a_canary_caps_the_rows_started_until_it_passes,
    an_abort_is_decided_once_and_ends_the_bulk_change_aborted,
    webhook_events_are_written_once_and_delivered_under_a_lease,
    a_processed_row_keeps_its_device_before_the_change,
    audit_log_is_kept_per_row_and_scoped,
    reference_data_is_read_within_the_tenant,
    carrier_waits_are_completed_once_by_their_request,
    a_callback_wakes_the_rows_waiting_on_its_request,
    thingspace_settings_are_read_and_a_refused_login_sticks,
    one_open_change_per_device_and_attribute,
    one_open_retry_and_a_retry_takes_only_rows_no_later_retry_holds,
    one_active_rev_service_line_per_device,
    idempotency_keys_replay_once_per_tenant,
    the_shared_pace_never_books_more_than_its_rate,
    leases_are_renewed_by_their_holder_only,
);

#[tokio::test]
async fn seed_fills_only_an_empty_database() {
    let (_dir, store) = fresh().await;
    assert!(!store.load_seed(contract_seed()).await.expect("second seed"), "a second seed is refused");
}

#[tokio::test]
async fn seed_with_unknown_status_names_the_device() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bad.db")).expect("open");
    let mut seed = contract_seed();
    seed.devices[0].status = "SLEEPING".into();
    let err = store.load_seed(seed).await.expect_err("refused").to_string();
    assert!(err.contains("89148000008245116615") && err.contains("SLEEPING"), "{err}");
}

#[tokio::test]
async fn two_connections_on_one_file_never_claim_the_same_row() {
    use engine::ports::Leases;
    let (dir, a) = fresh().await;
    let b = SqliteStore::open(&dir.path().join("contract.db")).expect("second connection");
    let id = contract::new_bulk(&a).await;
    let now = chrono::Utc::now();
    let lease = std::time::Duration::from_secs(60);
    let (ra, rb) = tokio::join!(a.claim_rows(id, "a", 10, lease, now), b.claim_rows(id, "b", 10, lease, now));
    let (ra, rb) = (ra.expect("claim a"), rb.expect("claim b"));
    assert_eq!(ra.len() + rb.len(), 3);
    assert!(ra.iter().all(|x| rb.iter().all(|y| x.id != y.id)));
}

#[tokio::test]
async fn two_connections_creating_bulk_changes_over_the_same_devices_never_both_hold_one() {
    use domain::{ChangeType, DeviceAttribute};
    let (dir, a) = fresh().await;
    let b = SqliteStore::open(&dir.path().join("contract.db")).expect("second connection");
    let held = [DeviceAttribute::Status];
    for _ in 0..20 {
        let (x, y) = tokio::join!(
            contract::holding(&a, ChangeType::StatusUpdate, &held, &contract::ICCIDS, None),
            contract::holding(&b, ChangeType::StatusUpdate, &held, &contract::ICCIDS, None),
        );
        let (x, y) = (x.expect("a creates"), y.expect("b creates"));
        assert_eq!(x.conflicts.len() + y.conflicts.len(), 3, "each device is held by exactly one: {x:?} {y:?}");
        for id in [x.id, y.id] {
            engine::ports::BulkChanges::cancel_rows(&a, contract::TENANT, id, "test", chrono::Utc::now())
                .await
                .expect("cancel");
        }
    }
}

#[tokio::test]
async fn two_connections_booking_one_pace_at_once_never_exceed_its_rate() {
    let (dir, a) = fresh().await;
    let b = SqliteStore::open(&dir.path().join("contract.db")).expect("second connection");
    let rate = 500.0;
    let slots = contract::book_pace(&[&a, &b, &a, &b], rate, 4, 5).await;
    let busiest = contract::busiest_second(&slots);
    assert!(busiest as f64 <= rate, "{busiest} slots in one second against a pace of {rate}");
    assert!(slots.len() as f64 >= rate * 3.5, "the pace is used: {} slots in 4 s", slots.len());
    assert!(slots.windows(2).all(|w| w[1] - w[0] >= 1.0 / rate - 1e-5), "no slot granted twice");
}

#[tokio::test]
async fn history_entries_are_written_as_given() {
    let (dir, store) = fresh().await;
    let (id, texts) = contract::history_entries_are_written_as_given(&store).await;
    let conn = rusqlite::Connection::open(dir.path().join("contract.db")).expect("open");
    let mut stmt = conn
        .prepare("SELECT Details FROM DeviceActionHistory WHERE BulkChangeId = ?1 ORDER BY Details")
        .expect("prepare");
    let found: Vec<String> =
        stmt.query_map([id], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("read");
    assert_eq!(found, texts);
}
