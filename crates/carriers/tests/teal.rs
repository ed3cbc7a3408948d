//! The Teal client against the Teal simulator: both headers, an operation that is processing and then has a
//! result per EID, a repeated request id that returns the first operation, an unknown request id, callbacks
//! delivered with `requestId` appended (duplicated, held and released in reverse, dropped), and a lost answer
//! reported as ambiguous and sent once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::post;
use carriers::teal::TealClient;
use engine::carrier::teal::{TealApi, TealOperation, TealOperationResult};
use engine::ports::{FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use simulators::Faults;
use simulators::teal::{TealAccount, TealBehaviour, TealSim};

const EID_A: &str = "89049032000000000000000000000001";
const EID_B: &str = "89049032000000000000000000000002";
const PLAN: &str = "cda438862b284bcdaec82ee516eada14";

async fn sim(behaviour: TealBehaviour) -> TealSim {
    let account = TealAccount::new("key-1", "secret-1")
        .with_esim(EID_A, "8901260000000000011", None)
        .with_esim(EID_B, "8901260000000000029", None)
        .with_plan(PLAN);
    TealSim::start("127.0.0.1:0".parse().expect("addr"), account, behaviour).await.expect("simulator")
}

fn client(sim: &TealSim, secret: &str) -> TealClient {
    let retry = RetryPolicy {
        max_attempts: 3,
        max_throttled_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    TealClient::new(
        reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("http"),
        &sim.base_url(),
        "key-1",
        Secret::new(secret),
        Arc::new(TokenBucket::new(1000.0)),
        retry,
    )
}

/// Polls until the operation is no longer processing; returns how many reads answered "processing".
async fn result_of(api: &TealClient, request_id: &str) -> (TealOperationResult, usize) {
    let mut processing = 0;
    loop {
        match api.operation_result(request_id).await.expect("result").0 {
            TealOperationResult::Processing => processing += 1,
            other => return (other, processing),
        }
        assert!(processing < 200, "the operation never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server that records the query of every callback it receives.
async fn callback_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/cb",
            post(|State(seen): State<Arc<Mutex<Vec<String>>>>, RawQuery(q): RawQuery| async move {
                seen.lock().expect("lock").push(q.unwrap_or_default());
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/cb?sig=abc"), seen)
}

async fn wait_for(seen: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let now = seen.lock().expect("lock").clone();
        if now.len() >= n {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().expect("lock").clone()
}

#[tokio::test]
async fn both_headers_are_sent_and_a_wrong_secret_is_refused() {
    let sim = sim(TealBehaviour::default()).await;
    let f =
        client(&sim, "wrong").submit("r1", None, &TealOperation::Enable(vec![EID_A.into()])).await.expect_err("401");
    assert_eq!((f.kind, f.call.http_status), (FailureKind::Refused, Some(401)));
    assert_eq!(f.code.as_deref(), Some("UNAUTHORIZED"));
    client(&sim, "secret-1").submit("r2", None, &TealOperation::Enable(vec![EID_A.into()])).await.expect("taken");
}

#[tokio::test]
async fn an_operation_is_processing_then_has_a_result_per_eid() {
    let behaviour = TealBehaviour {
        processing: Duration::from_millis(150),
        fail_eids: [(EID_B.to_string(), "FLOW_RESTRICTED_ERROR".to_string())].into(),
        ..Default::default()
    };
    let sim = sim(behaviour).await;
    let api = client(&sim, "secret-1");
    let op = TealOperation::Disable(vec![EID_A.into(), EID_B.into(), "89049032000000000000000000000099".into()]);
    api.submit("req-1", None, &op).await.expect("taken");
    let (result, processing) = result_of(&api, "req-1").await;
    assert!(processing > 0, "Teal answers 'processing' before the result");
    let TealOperationResult::Done { entries, .. } = result else { panic!("done: {result:?}") };
    let by_eid = |eid: &str| entries.iter().find(|e| e.eid.as_deref() == Some(eid)).expect("entry").clone();
    assert!(by_eid(EID_A).success);
    assert_eq!(by_eid(EID_B).error_message.as_deref(), Some("FLOW_RESTRICTED_ERROR"));
    assert_eq!(by_eid("89049032000000000000000000000099").error_message.as_deref(), Some("ESIM_NOT_FOUND"));
    assert!(sim.state.esim(EID_A).expect("esim").suspended, "data disabled");
    assert!(!sim.state.esim(EID_B).expect("esim").suspended, "a failed entry changes nothing");

    api.submit("req-2", None, &TealOperation::AssignPlan(vec![(EID_A.into(), PLAN.into())])).await.expect("taken");
    let (result, _) = result_of(&api, "req-2").await;
    assert!(matches!(result, TealOperationResult::Done { ref entries, .. } if entries[0].success), "{result:?}");
    assert_eq!(sim.state.esim(EID_A).expect("esim").plan_uuid.as_deref(), Some(PLAN));
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_operation_and_an_unknown_one_is_unknown() {
    let sim = sim(TealBehaviour { processing: Duration::from_millis(10), ..Default::default() }).await;
    let api = client(&sim, "secret-1");
    assert_eq!(api.operation_result("never-sent").await.expect("answered").0, TealOperationResult::Unknown);
    api.submit("same", None, &TealOperation::Disable(vec![EID_A.into()])).await.expect("taken");
    api.submit("same", None, &TealOperation::Disable(vec![EID_B.into()])).await.expect("taken again");
    result_of(&api, "same").await;
    assert_eq!(sim.state.operations(), 1);
    assert!(sim.state.esim(EID_A).expect("esim").suspended);
    assert!(!sim.state.esim(EID_B).expect("esim").suspended, "the second operation under the id did nothing");
}

#[tokio::test]
async fn callbacks_carry_the_request_id_and_are_duplicated_held_or_dropped_on_demand() {
    let (url, seen) = callback_server().await;
    let sim =
        sim(TealBehaviour { processing: Duration::from_millis(10), duplicate_callbacks: true, ..Default::default() })
            .await;
    let api = client(&sim, "secret-1");
    api.submit("dup", Some(&url), &TealOperation::Enable(vec![EID_A.into()])).await.expect("taken");
    assert_eq!(wait_for(&seen, 2).await, vec!["sig=abc&requestId=dup".to_string(); 2]);

    sim.state.set_behaviour(TealBehaviour {
        processing: Duration::from_millis(10),
        hold_callbacks: true,
        ..Default::default()
    });
    api.submit("first", Some(&url), &TealOperation::Enable(vec![EID_A.into()])).await.expect("taken");
    api.submit("second", Some(&url), &TealOperation::Enable(vec![EID_B.into()])).await.expect("taken");
    result_of(&api, "first").await;
    result_of(&api, "second").await;
    for _ in 0..100 {
        if sim.state.held_callbacks().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.state.release_callbacks(true, 1).await, vec![200, 200]);
    let got = wait_for(&seen, 4).await;
    assert_eq!(got[2..].to_vec(), vec!["sig=abc&requestId=second".to_string(), "sig=abc&requestId=first".to_string()]);

    sim.state.set_behaviour(TealBehaviour {
        processing: Duration::from_millis(10),
        drop_callbacks: true,
        ..Default::default()
    });
    api.submit("dropped", Some(&url), &TealOperation::Enable(vec![EID_A.into()])).await.expect("taken");
    result_of(&api, "dropped").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.lock().expect("lock").len(), 4, "a dropped callback never comes");
}

#[tokio::test]
async fn a_lost_answer_is_ambiguous_and_sent_once() {
    let sim = sim(TealBehaviour::default()).await;
    sim.state.harness.set_faults(Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let f = client(&sim, "secret-1")
        .submit("lost", None, &TealOperation::Disable(vec![EID_A.into()]))
        .await
        .expect_err("answer lost");
    assert_eq!(f.kind, FailureKind::Ambiguous);
    assert_eq!(sim.state.calls().iter().filter(|c| c.method == "POST").count(), 1);
    assert_eq!(sim.state.operations(), 1, "Teal has it: a poll will find it");
}
