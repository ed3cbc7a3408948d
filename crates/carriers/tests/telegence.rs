//! The Telegence client against the Telegence simulator: both headers on every call, at most 200 services per
//! activation, a request polled to active / rejected / still pending, line changes that succeed only with line
//! details, `404 /service/`, and an activation whose answer is lost reported as ambiguous and never sent twice.

use std::sync::Arc;
use std::time::Duration;

use carriers::telegence::{TelegenceClient, is_no_line};
use engine::carrier::telegence::{TelegenceApi, TgActivation, TgLineChange};
use engine::ports::{FailureKind, Secret};
use engine::rate::TokenBucket;
use engine::retry::RetryPolicy;
use simulators::Faults;
use simulators::telegence::{ActivationFate, TelegenceSim, TgAccount, TgBehaviour, TgLine};

const BAN: &str = "287301234567";

fn iccid(i: usize) -> String {
    format!("8901410{:012}", 320_000_000 + i)
}

async fn sim(behaviour: TgBehaviour) -> TelegenceSim {
    let account = TgAccount::new("app-id-1", "app-secret-1").with_billing_account(BAN, "FAN-1").with_line(TgLine {
        subscriber_number: "2145550100".into(),
        status: "A".into(),
        ban: BAN.into(),
        iccid: iccid(9999),
        imei: Some("356789012345678".into()),
        plan: Some("SOC-1GB".into()),
        zip: Some("75201".into()),
        features: vec!["FEAT-A".into(), "FEAT-B".into()],
    });
    TelegenceSim::start("127.0.0.1:0".parse().expect("addr"), account, behaviour).await.expect("simulator")
}

fn client(sim: &TelegenceSim, secret: &str) -> TelegenceClient {
    let retry = RetryPolicy {
        max_attempts: 3,
        max_throttled_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    TelegenceClient::new(
        reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("http"),
        &sim.base_url(),
        "app-id-1",
        Secret::new(secret),
        Arc::new(TokenBucket::new(1000.0)),
        retry,
    )
}

fn service(i: usize) -> TgActivation {
    TgActivation {
        ban: BAN.into(),
        iccid: iccid(i),
        imei: Some(format!("3567890{:08}", i)),
        plan: "SOC-1GB".into(),
        zip: "75201".into(),
        features: vec!["FEAT-A".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn every_call_carries_both_headers_and_a_wrong_secret_is_refused() {
    let sim = sim(TgBehaviour::default()).await;
    let (line, _) = client(&sim, "app-secret-1").line("2145550100").await.expect("line");
    let line = line.expect("known line");
    assert_eq!(line.status.as_deref(), Some("A"));
    assert_eq!(line.plan.as_deref(), Some("SOC-1GB"));
    assert_eq!(line.imei.as_deref(), Some("356789012345678"));
    assert_eq!(line.features, vec!["FEAT-A".to_string(), "FEAT-B".to_string()]);

    let refused = client(&sim, "wrong").line("2145550100").await.expect_err("401");
    assert_eq!((refused.kind, refused.call.http_status), (FailureKind::Refused, Some(401)));
    assert!(!refused.call.request_text.contains("app-secret-1"), "the secret is never logged");
}

#[tokio::test]
async fn an_unknown_line_is_none_and_a_patch_to_it_says_not_found() {
    let sim = sim(TgBehaviour::default()).await;
    let tg = client(&sim, "app-secret-1");
    assert_eq!(tg.line("2145559999").await.expect("answered").0, None);
    let change = TgLineChange::Plan { plan: "SOC-5GB".into(), effective_date: None };
    let f = tg.change_line("2145559999", &change).await.expect_err("404");
    assert!(is_no_line(&f) || f.message.contains("line not found or not swappable"), "{f:?}");
    assert!(f.reason().contains("HTTP 404"), "{}", f.reason());
    let empty = tg.change_line("  ", &change).await.expect_err("never sent");
    assert_eq!(empty.attempts, 0);
    assert!(sim.state.calls().iter().all(|c| c.path != "/sp/mobility/lineconfig/api/v1/service/"));
}

#[tokio::test]
async fn line_changes_succeed_with_line_details_and_refusals_carry_the_carriers_reason() {
    let behaviour = TgBehaviour { plans: ["SOC-1GB".to_string(), "SOC-5GB".to_string()].into(), ..Default::default() };
    let sim = sim(behaviour).await;
    let tg = client(&sim, "app-secret-1");
    let date = chrono::NaiveDate::from_ymd_opt(2099, 1, 1);
    let (line, _) = tg
        .change_line("2145550100", &TgLineChange::Plan { plan: "SOC-5GB".into(), effective_date: date })
        .await
        .expect("plan");
    assert_eq!(line.plan.as_deref(), Some("SOC-5GB"));
    let sent = sim.state.calls().into_iter().find(|c| c.method == "PATCH").expect("patch recorded");
    assert_eq!(sent.body["effectiveDate"], "2099-01-01Z");
    assert_eq!(sent.body["serviceCharacteristic"][0]["name"], "singleUserCode");

    let bad = tg.change_line("2145550100", &TgLineChange::Plan { plan: "NOPE".into(), effective_date: None }).await;
    let bad = bad.expect_err("unknown plan");
    assert_eq!(bad.kind, FailureKind::Refused);
    assert!(bad.message.contains("NOPE"), "{}", bad.message);

    let suspend = TgLineChange::Status { mode: "S".into(), reason_code: "CR".into(), effective_date: None };
    assert_eq!(tg.change_line("2145550100", &suspend).await.expect("suspend").0.status.as_deref(), Some("S"));
    let swap = TgLineChange::Swap {
        iccid: iccid(8888),
        imei: None,
        zip: "75201".into(),
        reason_code: "SW".into(),
        technology_type: "LTE".into(),
    };
    assert_eq!(tg.change_line("2145550100", &swap).await.expect("swap").0.iccid, Some(iccid(8888)));
    let removed = tg.change_line("2145550100", &TgLineChange::RemoveFeatures(vec!["FEAT-A".into()])).await;
    assert_eq!(removed.expect("removed").0.features, vec!["FEAT-B".to_string()]);
}

#[tokio::test]
async fn an_unswappable_line_answers_404_service_and_is_not_a_success() {
    let mut behaviour = TgBehaviour::default();
    behaviour.unswappable.insert("2145550100".into());
    let sim = sim(behaviour).await;
    let swap = TgLineChange::Swap {
        iccid: iccid(7777),
        imei: Some("356789012340000".into()),
        zip: "75201".into(),
        reason_code: "SW".into(),
        technology_type: "LTE".into(),
    };
    let f = client(&sim, "app-secret-1").change_line("2145550100", &swap).await.expect_err("404");
    assert!(f.message.contains("line not found or not swappable"), "{}", f.message);
    assert_eq!(sim.state.line("2145550100").expect("line").iccid, iccid(9999), "nothing changed");
}

#[tokio::test]
async fn an_activation_is_polled_to_active_rejected_or_left_pending() {
    let mut behaviour = TgBehaviour { pending_reads: 1, ..Default::default() };
    behaviour.fates.insert(iccid(2), ActivationFate::Reject);
    behaviour.fates.insert(iccid(3), ActivationFate::StayPending);
    let sim = sim(behaviour).await;
    let tg = client(&sim, "app-secret-1");
    let services: Vec<TgActivation> = (1..=3).map(service).collect();
    let (request_id, entries, _) = tg.activate(&services).await.expect("accepted");
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.status == "pending"));
    assert_eq!(entries[0].iccid, Some(iccid(1)));

    let (first, _) = tg.activation_status(&request_id).await.expect("status");
    assert!(first.iter().all(|e| e.status == "pending"), "one read still pending: {first:?}");
    let (second, _) = tg.activation_status(&request_id).await.expect("status");
    let by_iccid = |i: usize| second.iter().find(|e| e.iccid == Some(iccid(i))).expect("entry").clone();
    let active = by_iccid(1);
    assert_eq!(active.status, "active");
    let number = active.subscriber_number.expect("a new subscriber number");
    assert_eq!(sim.state.line(&number).expect("new line").iccid, iccid(1));
    assert_eq!(by_iccid(2).status, "rejected");
    assert!(by_iccid(2).error.is_some());
    assert_eq!(by_iccid(3).status, "pending");
}

#[tokio::test]
async fn more_than_200_services_are_never_sent_in_one_request() {
    let sim = sim(TgBehaviour::default()).await;
    let services: Vec<TgActivation> = (0..201).map(service).collect();
    let f = client(&sim, "app-secret-1").activate(&services).await.expect_err("refused before sending");
    assert_eq!(f.attempts, 0);
    assert!(sim.state.calls().is_empty());
    let (_, entries, _) = client(&sim, "app-secret-1").activate(&services[..200]).await.expect("200 fit");
    assert_eq!(entries.len(), 200);
}

#[tokio::test]
async fn an_activation_whose_answer_is_lost_is_ambiguous_and_sent_once() {
    let sim = sim(TgBehaviour::default()).await;
    sim.state.harness.set_faults(Faults { apply_then_fail_next_writes: 1, ..Default::default() });
    let f = client(&sim, "app-secret-1").activate(&[service(1)]).await.expect_err("answer lost");
    assert_eq!(f.kind, FailureKind::Ambiguous);
    let posts = sim.state.calls().into_iter().filter(|c| c.method == "POST").count();
    assert_eq!(posts, 1, "a write that may have arrived is never re-sent by the client");

    sim.state.harness.set_faults(Faults { hang_next_writes: 1, hang_ms: 5_000, ..Default::default() });
    let f = client(&sim, "app-secret-1").activate(&[service(2)]).await.expect_err("timed out");
    assert_eq!(f.kind, FailureKind::Ambiguous);
    let posts = sim.state.calls().into_iter().filter(|c| c.method == "POST").count();
    assert_eq!(posts, 2, "one more request, not a retry of it");
}

#[tokio::test]
async fn reads_are_retried_after_a_5xx_and_the_billing_account_is_read() {
    let sim = sim(TgBehaviour::default()).await;
    sim.state.harness.set_faults(Faults { fail_next: 1, ..Default::default() });
    let (ban, _) = client(&sim, "app-secret-1").billing_account(BAN).await.expect("read after a retry");
    assert_eq!(ban.expect("known").fan.as_deref(), Some("FAN-1"));
    assert_eq!(client(&sim, "app-secret-1").billing_account("000").await.expect("answered").0, None);
}
