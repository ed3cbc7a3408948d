//! The store contract on the SQL Server adapter, on a real T-SQL/TDS server: `MSSQL_URL` holds the ADO connection
//! string of a scratch server (`make test` starts Babelfish and sets it; `make test-mssql` takes any SQL Server).
//! Each test makes a database of its own beside the one `MSSQL_URL` names, applies `infra/sql` with
//! `migrate`, seeds it and drops it at the end, so the tests run in parallel. A migrate costs ~8 s of the
//! engine's time, so the contract functions share one database, in turn. Ignored by a
//! plain `cargo test` (no server there): the Makefile runs them with `--ignored`, and each fails when `MSSQL_URL`
//! is missing, so a run never reports a pass it did not earn.

use std::future::Future;

use engine::ports::{BulkChanges, Reads};
use store::MssqlStore;
use store::contract::{self, contract_seed};
use store::migrate::{self, ScratchDatabase, Script};

fn server_url() -> String {
    std::env::var("MSSQL_URL").expect(
        "MSSQL_URL must hold an ADO connection string to a scratch T-SQL server (README: SQL Server tests); \
         `make test` starts Babelfish and sets it",
    )
}

async fn empty(prefix: &str) -> (ScratchDatabase, MssqlStore) {
    let db = ScratchDatabase::create(&server_url(), prefix).await.expect("create a scratch database");
    let store = MssqlStore::connect(&db.url, 4).await.expect("connect to the scratch database");
    (db, store)
}

/// A migrated, seeded database; `body` runs on it, then it is dropped.
async fn on_fresh<F, Fut>(body: F)
where
    F: FnOnce(MssqlStore) -> Fut,
    Fut: Future<Output = MssqlStore>,
{
    let (db, store) = empty("contract").await;
    store.migrate(None).await.expect("migrate");
    assert!(store.load_seed(&contract_seed()).await.expect("seed"));
    let store = body(store).await;
    engine::ports::Store::close(&store).await;
    db.drop_database().await;
}

/// Every contract function in turn on one database (each leaves it as it found it), as a deployed database sees
/// them: one migrate, one seed.
#[tokio::test]
#[ignore = "needs a T-SQL server: `make test` starts one, `make test-mssql` takes MSSQL_URL"]
async fn the_sql_server_adapter_passes_the_store_contract() {
    on_fresh(|store| async move {
        contract::reference_data_is_read_within_the_tenant(&store).await;
        contract::bulk_change_is_tenant_scoped(&store).await;
        contract::texts_are_kept_as_written(&store).await;
        contract::claims_are_exclusive_and_leases_expire(&store).await;
        contract::a_claim_reads_no_device_of_another_tenant(&store).await;
        contract::only_the_lease_holder_completes_a_row_once(&store).await;
        contract::rows_complete_and_entries_append_in_groups(&store).await;
        contract::archiving_a_device_hides_it_from_every_change(&store).await;
        contract::pending_rows_can_be_cancelled_and_claimed_ones_finish(&store).await;
        contract::rows_page_by_id_while_rows_change(&store).await;
        contract::retries_are_linked_and_history_is_per_device(&store).await;
        contract::scheduled_rows_wait_for_their_date(&store).await;
        contract::mobility_rows_behave_like_m2m_rows(&store).await;
        contract::bulk_status_is_derived_from_rows_and_final_once(&store).await;
        contract::stranded_bulk_changes_are_found(&store).await;
        contract::an_owed_failure_email_is_stranded_until_sent(&store).await;
        contract::a_paused_bulk_change_has_no_row_claimed_until_resumed(&store).await;
        contract::a_canary_caps_the_rows_started_until_it_passes(&store).await;
        contract::an_abort_is_decided_once_and_ends_the_bulk_change_aborted(&store).await;
        contract::webhook_events_are_written_once_and_delivered_under_a_lease(&store).await;
        contract::a_processed_row_keeps_its_device_before_the_change(&store).await;
        contract::audit_log_is_kept_per_row_and_scoped(&store).await;
        contract::carrier_waits_are_completed_once_by_their_request(&store).await;
        contract::a_callback_wakes_the_rows_waiting_on_its_request(&store).await;
        contract::thingspace_settings_are_read_and_a_refused_login_sticks(&store).await;
        contract::one_open_change_per_device_and_attribute(&store).await;
        contract::one_open_retry_and_a_retry_takes_only_rows_no_later_retry_holds(&store).await;
        contract::one_active_rev_service_line_per_device(&store).await;
        contract::idempotency_keys_replay_once_per_tenant(&store).await;
        contract::the_shared_pace_never_books_more_than_its_rate(&store).await;
        contract::leases_are_renewed_by_their_holder_only(&store).await;
        assert!(!store.load_seed(&contract_seed()).await.expect("second seed"), "a second seed is refused");
        store
    })
    .await;
}

/// A migrated, seeded database and two stores on it: two pools, other connections, as two Lambda instances have.
async fn two_pools(prefix: &str) -> (ScratchDatabase, MssqlStore, MssqlStore) {
    let (db, a) = empty(prefix).await;
    a.migrate(None).await.expect("migrate");
    assert!(a.load_seed(&contract_seed()).await.expect("seed"));
    let b = MssqlStore::connect(&db.url, 4).await.expect("a second pool");
    (db, a, b)
}

async fn close_pools(db: ScratchDatabase, a: MssqlStore, b: MssqlStore) {
    engine::ports::Store::close(&a).await;
    engine::ports::Store::close(&b).await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn two_pools_never_claim_the_same_row() {
    use engine::ports::{BulkChanges, Leases, Outcomes};
    let (db, a, b) = two_pools("claims").await;
    let lease = std::time::Duration::from_secs(60);
    for _ in 0..10 {
        let id = contract::new_bulk(&a).await;
        let now = chrono::Utc::now();
        let (ra, rb) = tokio::join!(a.claim_rows(id, "a", 10, lease, now), b.claim_rows(id, "b", 10, lease, now));
        let (ra, rb) = (ra.expect("claim a"), rb.expect("claim b"));
        assert_eq!(ra.len() + rb.len(), 3, "every row claimed once: {ra:?} {rb:?}");
        assert!(ra.iter().all(|x| rb.iter().all(|y| x.id != y.id)), "no row claimed by both");
        a.cancel_rows(contract::TENANT, id, "test", now).await.expect("cancel");
        for row in ra.iter().chain(&rb) {
            let owner = if ra.iter().any(|r| r.id == row.id) { "a" } else { "b" };
            let done = engine::ports::RowOutcome {
                status: domain::RowStatus::Error,
                details: "closed".into(),
                device_update: Default::default(),
            };
            a.complete_row(contract::TENANT, id, row.id, owner, &done, now).await.expect("complete");
        }
    }
    close_pools(db, a, b).await;
}

#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn two_pools_creating_bulk_changes_over_the_same_devices_never_both_hold_one() {
    use domain::{ChangeType, DeviceAttribute};
    use engine::ports::BulkChanges;
    let (db, a, b) = two_pools("locks").await;
    let held = [DeviceAttribute::Status];
    for _ in 0..20 {
        let (x, y) = tokio::join!(
            contract::holding(&a, ChangeType::StatusUpdate, &held, &contract::ICCIDS, None),
            contract::holding(&b, ChangeType::StatusUpdate, &held, &contract::ICCIDS, None),
        );
        let (x, y) = (x.expect("a creates"), y.expect("b creates"));
        assert_eq!(x.conflicts.len() + y.conflicts.len(), 3, "each device is held by exactly one: {x:?} {y:?}");
        for id in [x.id, y.id] {
            a.cancel_rows(contract::TENANT, id, "test", chrono::Utc::now()).await.expect("cancel");
        }
    }
    close_pools(db, a, b).await;
}

#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn two_pools_booking_one_pace_at_once_never_exceed_its_rate() {
    let (db, a, b) = two_pools("pace").await;
    let rate = 200.0;
    let slots = contract::book_pace(&[&a, &b, &a, &b], rate, 4, 5).await;
    let busiest = contract::busiest_second(&slots);
    assert!(busiest as f64 <= rate, "{busiest} slots in one second against a pace of {rate}");
    assert!(slots.len() as f64 >= rate * 3.5, "the pace is used: {} slots in 4 s", slots.len());
    assert!(slots.windows(2).all(|w| w[1] - w[0] >= 1.0 / rate - 1e-5), "no slot granted twice");
    close_pools(db, a, b).await;
}

// Migrations -------------------------------------------------------------------------------------------------

#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn migrate_applies_each_step_once_and_twice_is_a_no_op() {
    let (db, store) = empty("migrate").await;
    assert_eq!(store.schema_version().await.expect("version"), 0);
    let first = store.migrate(None).await.expect("migrate");
    assert_eq!(first.from, 0);
    assert_eq!(first.to, migrate::latest_version());
    assert_eq!(first.applied, migrate::SCRIPTS.iter().map(|s| s.name.to_string()).collect::<Vec<_>>());
    let again = store.migrate(None).await.expect("migrate again");
    assert!(again.applied.is_empty(), "nothing to do the second time: {again:?}");
    assert_eq!((again.from, again.to), (first.to, first.to));
    engine::ports::Store::close(&store).await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn two_migrations_at_once_apply_each_step_once() {
    let (db, a) = empty("migrate2").await;
    let b = MssqlStore::connect(&db.url, 1).await.expect("second pool");
    let (ra, rb) = tokio::join!(a.migrate(None), b.migrate(None));
    let (ra, rb) = (ra.expect("a migrates"), rb.expect("b migrates"));
    let mut all: Vec<String> = ra.applied.iter().chain(&rb.applied).cloned().collect();
    all.sort();
    let mut expected: Vec<String> = migrate::SCRIPTS.iter().map(|s| s.name.to_string()).collect();
    expected.sort();
    assert_eq!(all, expected, "each step applied by exactly one of the two: {ra:?} {rb:?}");
    assert!(a.load_seed(&contract_seed()).await.expect("seed"), "the schema works");
    engine::ports::Store::close(&a).await;
    engine::ports::Store::close(&b).await;
    db.drop_database().await;
}

/// The previous landed schema, then the upgrade: a database made by the unversioned scripts of the previous
/// release (applied by hand, no SchemaVersion), holding a bulk change with an open row, takes `migrate`; the data
/// stay, the procedures are the new ones, and the contract holds on the upgraded database.
#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn an_unversioned_database_of_the_previous_release_is_upgraded_in_place() {
    use engine::ports::Store;
    let (db, store) = empty("upgrade").await;
    // The releases before versioned migrations shipped 001, 002 and the procedures.
    let unversioned: Vec<&str> =
        migrate::SCRIPTS.iter().filter(|s| s.version.is_none_or(|v| v <= 2)).map(|s| s.sql).collect();
    store.apply_scripts(&unversioned).await.expect("the previous release's scripts, by hand");
    assert_eq!(store.schema_version().await.expect("version"), 0, "nothing recorded yet");
    assert!(store.load_seed(&contract_seed()).await.expect("seed"));
    // An open bulk change as that release recorded it (its own procedures, not today's, which need later columns):
    // three PENDING rows on tenant 1's devices.
    let by_hand = format!(
        "INSERT INTO dbo.DeviceBulkChange (TenantId, ServiceProviderId, IntegrationId, ChangeRequestTypeId, PortalTypeId,
                                          Status, ChangeRequest, CreatedBy, CreatedDate, ModifiedDate)
         VALUES ({tenant}, {sp}, 12, 3, 0, N'NEW', N'{{\"ServiceProviderId\":{sp},\"ChangeType\":3}}', N'alice',
                 SYSUTCDATETIME(), SYSUTCDATETIME());
         INSERT INTO dbo.M2M_DeviceChange (BulkChangeId, TenantId, DeviceId, ICCID, Status, CreatedDate)
         SELECT (SELECT MAX(Id) FROM dbo.DeviceBulkChange), TenantId, Id, ICCID, N'PENDING', SYSUTCDATETIME()
         FROM dbo.Device WHERE TenantId = {tenant} AND ICCID IN ('{}');",
        contract::ICCIDS.join("', '"),
        tenant = contract::TENANT,
        sp = contract::SP,
    );
    store.apply_scripts(&[by_hand.as_str()]).await.expect("the previous release's bulk change");
    // The first bulk change of a new database.
    let open = 1;
    let report = store.migrate(None).await.expect("upgrade");
    assert_eq!(report.from, 0);
    assert_eq!(report.to, migrate::latest_version());
    let kept = store.bulk_change(Some(contract::TENANT), open).await.expect("read").expect("the bulk change is kept");
    assert_eq!((kept.id, kept.created_by.as_str()), (open, "alice"));
    assert_eq!(store.pending_rows(open).await.expect("pending"), 3, "its rows are kept");
    assert!(store.migrate(None).await.expect("again").applied.is_empty());
    store.cancel_rows(contract::TENANT, open, "test", chrono::Utc::now()).await.expect("cancel");
    contract::one_open_change_per_device_and_attribute(&store).await;
    store.close().await;
    db.drop_database().await;
}

/// Up to a version, then the rest: the steps after it and the procedures come in the second run.
#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn a_database_at_an_older_version_takes_only_the_steps_beyond_it() {
    let (db, store) = empty("older").await;
    let first = store.migrate(Some(1)).await.expect("to version 1");
    assert_eq!((first.to, first.applied.as_slice()), (1, &["001_schema.sql".to_string()][..]));
    let rest = store.migrate(None).await.expect("the rest");
    assert_eq!(rest.from, 1);
    let expected: Vec<String> = migrate::SCRIPTS.iter().skip(1).map(|s| s.name.to_string()).collect();
    assert_eq!(rest.applied, expected);
    assert!(store.load_seed(&contract_seed()).await.expect("seed"));
    engine::ports::Store::close(&store).await;
    db.drop_database().await;
}

/// A step that fails leaves nothing of itself (one transaction), and a landed step that was edited is refused.
#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn a_failing_step_leaves_nothing_and_an_edited_step_is_refused() {
    let (db, store) = empty("broken").await;
    let broken = [
        migrate::SCRIPTS[0],
        Script {
            name: "002_broken.sql",
            version: Some(2),
            transactional: true,
            sql: "CREATE TABLE dbo.HalfDone (Id INT NOT NULL);\nGO\nINSERT INTO dbo.NoSuchTable (Id) VALUES (1);\n",
        },
    ];
    let err = store.migrate_scripts(&broken, None).await.expect_err("the step fails").to_string();
    assert!(err.contains("002_broken.sql"), "the error names the step: {err}");
    assert_eq!(store.schema_version().await.expect("version"), 1, "the good step stays recorded");
    let half = store.apply_scripts(&["SELECT COUNT(*) FROM dbo.HalfDone"]).await;
    assert!(half.is_err(), "the failed step's table was rolled back");
    let edited = [Script { sql: "-- edited\nSELECT 1;\n", ..migrate::SCRIPTS[0] }];
    let err = store.migrate_scripts(&edited, None).await.expect_err("refused").to_string();
    assert!(err.contains("001_schema.sql") && err.contains("changed after it was applied"), "{err}");
    engine::ports::Store::close(&store).await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn history_entries_are_written_as_given() {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let (db, store) = empty("history").await;
    store.migrate(None).await.expect("migrate");
    assert!(store.load_seed(&contract_seed()).await.expect("seed"));
    let (id, texts) = contract::history_entries_are_written_as_given(&store).await;
    let config = tiberius::Config::from_ado_string(&db.url).expect("connection string");
    let tcp = tokio::net::TcpStream::connect(config.get_addr()).await.expect("connect");
    let mut client = tiberius::Client::connect(config, tcp.compat_write()).await.expect("login");
    let rows = client
        .query("SELECT Details FROM dbo.DeviceActionHistory WHERE BulkChangeId = @P1 ORDER BY Details", &[&id])
        .await
        .expect("query")
        .into_first_result()
        .await
        .expect("rows");
    let found: Vec<String> = rows.iter().filter_map(|r| r.get::<&str, _>(0).map(str::to_string)).collect();
    assert_eq!(found, texts);
    drop(client);
    engine::ports::Store::close(&store).await;
    db.drop_database().await;
}

/// A pooled connection the server closed while it idled is checked (`SELECT 1`) before it is handed out again,
/// and replaced: the next call succeeds on a new session instead of failing on the dead one.
#[tokio::test]
#[ignore = "needs a T-SQL server"]
async fn a_pooled_connection_closed_while_idle_is_replaced_not_used() {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let db = ScratchDatabase::create(&server_url(), "idle").await.expect("create a scratch database");
    let store = MssqlStore::connect(&db.url, 1).await.expect("connect");
    let first = store.session_id_for_tests().await.expect("first session");
    let config = tiberius::Config::from_ado_string(&db.url).expect("connection string");
    let tcp = tokio::net::TcpStream::connect(config.get_addr()).await.expect("connect");
    let mut admin = tiberius::Client::connect(config, tcp.compat_write()).await.expect("login");
    admin.simple_query(format!("KILL {first}")).await.expect("kill").into_results().await.expect("killed");
    drop(admin);
    // The check runs for a connection idle at least this long.
    tokio::time::sleep(store::mssql::CHECK_IDLE_AFTER + std::time::Duration::from_millis(500)).await;
    let second = store.session_id_for_tests().await.expect("the call after the kill succeeds");
    assert_ne!(first, second, "a new session");
    engine::ports::Store::close(&store).await;
    db.drop_database().await;
}
