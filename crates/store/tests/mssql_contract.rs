//! The store contract on SQL Server, when `MSSQL_URL` holds an ADO connection string to a scratch database
//! (README: "Running the SQL Server tests"). It applies `infra/sql/`, wipes the data, seeds, and runs every
//! contract function in turn (one database, so one test). Ignored by `make test` (no SQL Server there), so it
//! never reports a pass it did not earn: `make test-mssql` runs it and fails when `MSSQL_URL` is missing.

use store::MssqlStore;
use store::contract::{self, contract_seed};

const SCRIPTS: [&str; 3] = [
    include_str!("../../../infra/sql/001_schema.sql"),
    include_str!("../../../infra/sql/002_seed_reference.sql"),
    include_str!("../../../infra/sql/003_procedures.sql"),
];

#[tokio::test]
#[ignore = "needs a SQL Server: run `make test-mssql` with MSSQL_URL set"]
async fn sql_server_passes_the_store_contract() {
    let url = std::env::var("MSSQL_URL").expect(
        "MSSQL_URL must hold an ADO connection string to a scratch SQL Server database (README: SQL Server tests)",
    );
    let store = MssqlStore::connect(&url, 4).await.expect("connect to SQL Server");
    store.apply_scripts(&SCRIPTS).await.expect("apply infra/sql");
    store.wipe_for_tests().await.expect("wipe");
    assert!(store.load_seed(&contract_seed()).await.expect("seed"));
    assert!(!store.load_seed(&contract_seed()).await.expect("second seed"), "a second seed is refused");
    contract::reference_data_is_read_within_the_tenant(&store).await;
    contract::bulk_change_is_tenant_scoped(&store).await;
    contract::claims_are_exclusive_and_leases_expire(&store).await;
    contract::only_the_lease_holder_completes_a_row_once(&store).await;
    contract::archiving_a_device_hides_it_from_every_change(&store).await;
    contract::pending_rows_can_be_cancelled_and_claimed_ones_finish(&store).await;
    contract::retries_are_linked_and_history_is_per_device(&store).await;
    contract::scheduled_rows_wait_for_their_date(&store).await;
    contract::mobility_rows_behave_like_m2m_rows(&store).await;
    contract::bulk_status_is_derived_from_rows_and_final_once(&store).await;
    contract::stranded_bulk_changes_are_found(&store).await;
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
}
