//! The Pond client against the Pond simulator: the key header on every call, wire settings (paths, header, keys)
//! taken from the provider on both sides, the package life cycle (add → PENDING → ACTIVE → TERMINATED, never
//! back), service status set and read, reads retried after a 5xx, a lost add reported as ambiguous, sent once.

use std::sync::Arc;
use std::time::Duration;

use carriers::pond::{PondClient, PondSettings};
use engine::carrier::pond::PondApi;
use engine::ports::{FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use simulators::Faults;
use simulators::pond::{PondAccount, PondBehaviour, PondSim, PondWire};

const SIM: &str = "8901260000000000011";

fn wire_of(s: &PondSettings) -> PondWire {
    PondWire {
        api_key_header: s.api_key_header.clone(),
        packages_path: s.packages_path.clone(),
        package_status_path: s.package_status_path.clone(),
        service_status_path: s.service_status_path.clone(),
        package_status_key: s.package_status_key.clone(),
        services_key: s.services_key.clone(),
    }
}

async fn start(settings: &PondSettings, behaviour: PondBehaviour) -> PondSim {
    let account = PondAccount::new("key-1", &settings.distributor_id)
        .with_package_type(4711, 1 << 30)
        .with_package_type(4712, 5 << 30)
        .with_sim(SIM, Some(4711));
    PondSim::start("127.0.0.1:0".parse().expect("addr"), account, wire_of(settings), behaviour).await.expect("sim")
}

fn client(sim: &PondSim, settings: &PondSettings, key: &str) -> PondClient {
    let retry = RetryPolicy {
        max_attempts: 3,
        max_throttled_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    PondClient::new(
        reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("http"),
        &sim.base_url(),
        settings.clone(),
        Secret::new(key),
        Arc::new(TokenBucket::new(1000.0)),
        retry,
    )
}

fn settings(json: &str) -> PondSettings {
    PondSettings::parse(Some(json)).expect("settings")
}

#[tokio::test]
async fn the_key_header_is_sent_and_a_wrong_key_is_refused() {
    let s = settings(r#"{"DistributorId": "D-7"}"#);
    let sim = start(&s, PondBehaviour::default()).await;
    let (packages, _) = client(&sim, &s, "key-1").packages(SIM).await.expect("packages");
    assert_eq!(packages.len(), 1);
    assert_eq!((packages[0].package_type_id, packages[0].status.as_str()), (4711, "ACTIVE"));
    let f = client(&sim, &s, "wrong").packages(SIM).await.expect_err("refused");
    assert_eq!((f.kind, f.call.http_status), (FailureKind::Refused, Some(401)));
    assert!(f.reason().contains("invalid API key"), "{}", f.reason());
}

#[tokio::test]
async fn another_providers_paths_header_and_keys_are_used_on_both_sides() {
    let s = settings(
        r#"{"DistributorId": "42", "ApiKeyHeader": "X-Pond-Key", "PackagesPath": "v2/{distributorId}/sim/{iccid}/pkg",
            "PackageStatusPath": "v2/{distributorId}/pkg/{packageId}", "ServiceStatusPath": "v2/{distributorId}/sim/{iccid}/svc",
            "PackageStatusKey": "status", "ServicesKey": "allEnabled"}"#,
    );
    let sim = start(&s, PondBehaviour::default()).await;
    let api = client(&sim, &s, "key-1");
    let (new, _) = api.add_package(SIM, 4712).await.expect("added");
    api.set_package_status(&new.package_id, "ACTIVE").await.expect("activated");
    api.set_services(SIM, false).await.expect("disabled");
    assert!(!api.services_enabled(SIM).await.expect("read").0);
    let paths: Vec<String> = sim.state.calls().into_iter().map(|c| c.path).collect();
    assert!(paths.iter().all(|p| p.starts_with("/v2/42/")), "{paths:?}");
    assert_eq!(sim.state.active_packages(SIM).len(), 2);
}

#[tokio::test]
async fn packages_go_pending_active_terminated_and_never_back() {
    let s = settings(r#"{"DistributorId": "D-7"}"#);
    let sim = start(&s, PondBehaviour::default()).await;
    let api = client(&sim, &s, "key-1");
    let old = sim.state.active_packages(SIM)[0].package_id.clone();
    let (new, _) = api.add_package(SIM, 4712).await.expect("added");
    assert_eq!((new.package_type_id, new.status.as_str()), (4712, "PENDING"));
    api.set_package_status(&new.package_id, "ACTIVE").await.expect("activated");
    api.set_package_status(&old, "TERMINATED").await.expect("terminated");
    let f = api.set_package_status(&old, "ACTIVE").await.expect_err("a terminated package stays terminated");
    assert_eq!(f.call.http_status, Some(409));
    let active = sim.state.active_packages(SIM);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].package_id, new.package_id);
    let f = api.add_package(SIM, 9999).await.expect_err("unknown package type");
    assert_eq!(f.kind, FailureKind::Refused);
    assert!(f.message.contains("9999"), "the carrier's message is kept: {}", f.message);
}

#[tokio::test]
async fn each_saga_step_fails_on_demand() {
    let s = settings(r#"{"DistributorId": "D-7"}"#);
    let old = "88001".to_string();
    let behaviour = PondBehaviour {
        fail_add_for: [SIM.to_string()].into(),
        fail_terminate_of: [old.clone()].into(),
        ..Default::default()
    };
    let sim = start(&s, behaviour).await;
    let api = client(&sim, &s, "key-1");
    assert_eq!(api.add_package(SIM, 4712).await.expect_err("add fails").call.http_status, Some(409));
    assert_eq!(api.set_package_status(&old, "TERMINATED").await.expect_err("fails").call.http_status, Some(409));
    sim.state.set_behaviour(PondBehaviour { fail_activate_for: [SIM.to_string()].into(), ..Default::default() });
    let (new, _) = api.add_package(SIM, 4712).await.expect("added now");
    assert_eq!(api.set_package_status(&new.package_id, "ACTIVE").await.expect_err("fails").call.http_status, Some(409));
    assert_eq!(sim.state.active_packages(SIM).len(), 1, "nothing changed by a failed step");
}

#[tokio::test]
async fn reads_are_retried_and_a_lost_add_is_ambiguous_and_sent_once() {
    let s = settings(r#"{"DistributorId": "D-7"}"#);
    let sim = start(&s, PondBehaviour::default()).await;
    let api = client(&sim, &s, "key-1");
    sim.state.harness.set_faults(Faults { fail_next: 1, ..Default::default() });
    assert!(api.services_enabled(SIM).await.expect("read after a retry").0);
    sim.state.harness.set_faults(Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let f = api.add_package(SIM, 4712).await.expect_err("answer lost");
    assert_eq!(f.kind, FailureKind::Ambiguous);
    let posts = sim.state.calls().into_iter().filter(|c| c.method == "POST").count();
    assert_eq!(posts, 1, "a write that may have arrived is never re-sent by the client");
    assert_eq!(sim.state.packages(SIM).len(), 2, "the package was added once");
}
