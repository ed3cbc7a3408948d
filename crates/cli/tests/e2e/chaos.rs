//! The bounded part of the fault sweep that `make test` runs (`make chaos` runs more): twenty seeds, each a stack
//! whose carrier simulators inject the seed's faults while two worker processes are killed and restarted, every
//! invariant checked against the simulators.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_seeds_of_faults_keep_every_invariant() {
    let opts = cli::chaos::ChaosOptions {
        first_seed: 1,
        seeds: 20,
        devices: 12,
        workers: 2,
        worker_exe: Some(env!("CARGO_BIN_EXE_bulkchange").into()),
        record: None,
        sql_server: None,
        final_within: None,
    };
    if let Err(e) = cli::chaos::run(opts).await {
        panic!("{e:#}");
    }
}
