//! The bounded part of the fault sweep that `make test` runs (`make chaos` runs more): twenty seeds, each a stack
//! whose Control Center and Pond simulators inject the seed's faults, every invariant checked against them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_seeds_of_faults_keep_every_invariant() {
    let opts = cli::chaos::ChaosOptions { first_seed: 1, seeds: 20, devices: 24 };
    if let Err(e) = cli::chaos::run(opts).await {
        panic!("{e:#}");
    }
}
