//! Several workers on one database, as several Lambda instances are: they share a bulk change and each carrier
//! account's pace, a dead worker's rows are taken over within about a lease, and a small bulk change is not held
//! behind a large one.

use domain::Integration;
use std::time::Duration;

use crate::support::TestApp;
use cli::StackConfig;
use cli::bench::bench_iccid;
use engine::WorkerConfig;
use serde_json::{Value, json};
use store::Seed;
use store::seed::{SeedDevice, SeedServiceProvider, SeedTenant};
use tokio::time::Instant;

const POD19: i64 = 10;

fn device(i: usize) -> String {
    bench_iccid(6000 + i)
}

fn seed(devices: usize, rate: f64) -> Seed {
    Seed {
        tenants: vec![SeedTenant { id: 1, name: "Acme".into() }],
        service_providers: vec![SeedServiceProvider {
            name: "POD19".into(),
            username: "user".into(),
            secret: "secret-key".into(),
            rate_limit_per_second: rate,
            ..SeedServiceProvider::new(POD19, 1, Integration::Pod19.id())
        }],
        device_statuses: vec![],
        carrier_rate_plans: vec![],
        rev_customers: vec![],
        customer_rate_plans: vec![],
        customer_rate_pools: vec![],
        rev_services: vec![],
        telegence_billing_accounts: vec![],
        imei_ranges: vec![],
        devices: (0..devices).map(|i| SeedDevice::new(1, POD19, device(i), "ACTIVATION_READY")).collect(),
    }
}

fn activation(devices: impl Iterator<Item = usize>) -> Value {
    json!({"ServiceProviderId": POD19, "ChangeType": 3, "Devices": devices.map(device).collect::<Vec<_>>(),
           "StatusUpdate": {"TargetStatus": "Active"}})
}

impl TestApp {
    fn second_worker(&self, name: &str) -> tokio::task::JoinHandle<()> {
        let config = WorkerConfig { worker_id: name.into(), ..self.stack.config.worker.clone() };
        self.stack.spawn_worker(config).expect("worker")
    }
}

/// The most calls the simulator saw in any one-second window (half-open), by their arrival time.
fn busiest_second(at_ms: &[u64]) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..at_ms.len() {
        while at_ms[end] - at_ms[start] >= 1000 {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test]
async fn two_workers_share_one_bulk_change_and_stay_under_the_carriers_limit() {
    let rate = 50.0;
    let app = TestApp::start(seed(150, rate), |c: &mut StackConfig| {
        c.simulator_faults.rate_limit_per_second = Some(rate);
        // Two rows in flight cannot fill 50 calls a second: the bulk change fans out to a helper message, which
        // either worker loop takes.
        c.worker.fan_out = 1;
        c.worker.concurrency = 2;
        c.worker.claim_batch = 8;
    })
    .await;
    let _second = app.second_worker("second");
    let id = app.accepted(&activation(0..150)).await;
    let status = app.wait_final(id).await;
    assert_eq!(status["Counts"], json!({"PROCESSED": 150}), "{}", status["Counts"]);
    let sim = &app.stack.simulators.control_center[&POD19];
    let calls = sim.state.calls();
    assert!(calls.iter().all(|c| c.status != 429), "the carrier never had to throttle");
    for i in 0..150 {
        assert_eq!(sim.applied_status_changes(&device(i)), 1, "{} changed once", device(i));
    }
    let mut at: Vec<u64> = calls.iter().map(|c| c.at_ms).collect();
    at.sort_unstable();
    let busiest = busiest_second(&at);
    // One call of tolerance: the simulator stamps arrival, a few milliseconds after the slot.
    assert!(busiest as f64 <= rate + 1.0, "{busiest} calls in one second against a limit of {rate}");
}

#[tokio::test]
async fn a_lease_is_renewed_while_a_slow_row_runs_and_ends_within_a_lease_of_its_worker_dying() {
    let lease = Duration::from_secs(2);
    let app = TestApp::start(seed(1, 100.0), |c: &mut StackConfig| {
        c.run_worker = false;
        c.worker.lease = lease;
        c.simulator_faults.latency_ms = 6_000;
    })
    .await;
    let id = app.accepted(&activation(0..1)).await;
    let worker = app.second_worker("slow");
    // GIVEN the row is claimed and its carrier call takes three leases
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.status(id).await["Counts"]["PROCESSING"] != 1 {
        assert!(Instant::now() < deadline, "the worker never claimed the row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let claimed_at = Instant::now();
    // WHEN more than one lease has passed, the heartbeat has kept it: nobody else can take the row
    while claimed_at.elapsed() < lease * 2 {
        let taken = app.stack.store.claim_rows(id, "thief", 10, lease, chrono::Utc::now()).await.expect("claim");
        assert!(taken.is_empty(), "taken over after {:?} although its worker is alive", claimed_at.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // THEN once its worker dies, the row is taken over within about one lease
    worker.abort();
    let died = Instant::now();
    loop {
        let taken = app.stack.store.claim_rows(id, "heir", 10, lease, chrono::Utc::now()).await.expect("claim");
        if let Some(row) = taken.first() {
            assert_eq!(row.claims, 2, "claimed before, so the heir asks the carrier first");
            break;
        }
        assert!(died.elapsed() < lease * 2, "not taken over {:?} after its worker died", died.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("measured: takeover {:?} after the worker died (lease {lease:?})", died.elapsed());
}

#[tokio::test]
async fn a_small_bulk_change_finishes_while_a_large_one_runs() {
    let rate = 20.0;
    let app = TestApp::start(seed(201, rate), |c: &mut StackConfig| {
        c.simulator_faults.rate_limit_per_second = Some(rate);
    })
    .await;
    let large = app.accepted(&activation(0..200)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.status(large).await["Counts"]["PROCESSED"].as_i64().unwrap_or(0) < 5 {
        assert!(Instant::now() < deadline, "the large bulk change never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let small = app.accepted(&activation(200..201)).await;
    let done = app.wait_final(small).await;
    let waited = started.elapsed();
    assert_eq!(done["Counts"], json!({"PROCESSED": 1}));
    let big = app.status(large).await;
    assert_eq!(big["Status"], "PROCESSING", "the large one is still running: the small one did not wait for it");
    eprintln!("measured: small bulk change done in {waited:?} beside a 200-device one at {rate}/s");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}
