//! The bounded part of the fault sweep that `make test` runs (`make chaos` runs more): seeds each a stack whose
//! carrier simulators inject the seed's faults while two worker processes are killed and restarted, every invariant
//! checked against the simulators. Twenty seeds on SQLite; with `E2E_STORE=mssql` (`make engine-tests`), three on
//! the SQL Server adapter against `MSSQL_URL` (a seed there takes one to two minutes: workers log in slowly).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_of_faults_keep_every_invariant() {
    let sql_server = (std::env::var("E2E_STORE").ok().as_deref() == Some("mssql"))
        .then(|| std::env::var("MSSQL_URL").expect("E2E_STORE=mssql needs MSSQL_URL (make engine-tests sets both)"));
    let opts = cli::chaos::ChaosOptions {
        first_seed: 1,
        seeds: if sql_server.is_some() { 3 } else { 20 },
        devices: 12,
        workers: 2,
        worker_exe: Some(env!("CARGO_BIN_EXE_bulkchange").into()),
        record: None,
        sql_server,
        final_within: None,
    };
    if let Err(e) = cli::chaos::run(opts).await {
        panic!("{e:#}");
    }
}
