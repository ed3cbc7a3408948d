//! Webhooks (issue 22) end to end: a receiver (a local HTTP server) that refuses twice gets exactly one accepted
//! delivery per event id, every attempt signed; a forged signature fails the README's verification; URLs that reach
//! inside are refused in production mode; a worker killed between the final status and the delivery still has the
//! event delivered (by the scheduler, once the dead worker's lease ends).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use engine::webhooks::{ID_HEADER, SIGNATURE_HEADER, UrlPolicy, VerifyError, verify};
use serde_json::{Value, json};

use crate::rollout::{activation, seed};
use crate::support::{TestApp, token_for};

/// One request the receiver got: its path, the three webhook headers, the body, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event_id: String,
    event_type: String,
    signature: String,
    body: String,
    answered: u16,
}

/// How the receiver answers: refuse each event's first `refusals` attempts with 500; with `hang_first`, the very
/// first request is never answered (its sender dies waiting).
#[derive(Default)]
struct Receiver {
    refusals: usize,
    hang_first: bool,
    got: Mutex<Vec<Received>>,
}

impl Receiver {
    async fn start(self) -> (Arc<Self>, String) {
        let receiver = Arc::new(self);
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .route("/notify", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Accepted (2xx) deliveries per (path, event id).
    fn accepted(&self) -> BTreeMap<(String, String), usize> {
        let mut per = BTreeMap::new();
        for r in self.got().into_iter().filter(|r| r.answered == 200) {
            *per.entry((r.path, r.event_id)).or_insert(0) += 1;
        }
        per
    }

    async fn until_accepted(&self, events: usize, within: Duration) -> BTreeMap<(String, String), usize> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= events {
                return accepted;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {accepted:?} accepted: {:#?}", self.got());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (answered, hang) = {
        let mut got = receiver.got.lock().unwrap_or_else(|p| p.into_inner());
        let event_id = header(ID_HEADER);
        let earlier = got.iter().filter(|r| r.event_id == event_id && r.path == uri.path()).count();
        let hang = receiver.hang_first && got.is_empty();
        let answered = if earlier < receiver.refusals { 500 } else { 200 };
        got.push(Received {
            path: uri.path().to_string(),
            event_id,
            event_type: header("Webhook-Event"),
            signature: header(SIGNATURE_HEADER),
            body,
            answered: if hang { 0 } else { answered },
        });
        (answered, hang)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl TestApp {
    /// The webhook's deliveries once `n` of them are DELIVERED (the receiver's 200 is recorded just after it).
    async fn delivered(&self, webhook_id: &Value, n: usize) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, page) = self.get(&format!("/M2M/Webhooks/{webhook_id}/Deliveries"), &self.token).await;
            let done = page["Items"].as_array().into_iter().flatten().filter(|d| d["Status"] == "DELIVERED").count();
            if done >= n {
                return page;
            }
            assert!(tokio::time::Instant::now() < deadline, "not {n} delivered: {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post_json(&self, path: &str, body: &Value, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.stack.base_url()))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().into_iter().flatten().filter_map(|e| e["field"].as_str().map(str::to_string)).collect()
}

/// A webhook and a `NotifyUrl` on one receiver that answers 500 twice per event: the bulk change pauses after its
/// canary (event 1), is resumed and finishes (event 2). Each endpoint gets each event accepted exactly once, after
/// three attempts, every attempt signed with that endpoint's secret; a forged signature fails verification.
#[tokio::test]
async fn a_receiver_refusing_twice_gets_one_accepted_delivery_per_event_each_attempt_signed() {
    let (receiver, base) = Receiver { refusals: 2, ..Receiver::default() }.start().await;
    let app = TestApp::start(seed(20, 100.0), |c| {
        c.webhooks.retry_base = Duration::from_millis(100);
        c.scheduler_interval = Duration::from_millis(100);
    })
    .await;
    let (code, registered) = app.post_json("/M2M/Webhooks", &json!({"Url": format!("{base}/hook")}), &app.token).await;
    assert_eq!(code, 201, "{registered}");
    let secret = registered["Secret"].as_str().expect("the secret, shown once").to_string();
    let webhook_id = registered["Id"].as_i64().expect("id");
    let (_, listed) = app.get("/M2M/Webhooks", &app.token).await;
    assert!(listed["Items"][0].get("Secret").is_none(), "never shown again: {listed}");
    let mut body = activation(0..20, json!({"Canary": {"Devices": 5, "Then": "Pause"}}));
    body["NotifyUrl"] = json!(format!("{base}/notify"));
    let (code, answer) = app.submit(&body).await;
    assert_eq!(code, 202, "{answer}");
    let id = answer["BulkChangeId"].as_i64().expect("id");
    let notify_secret = answer["NotifySecret"].as_str().expect("NotifyUrl's secret").to_string();
    assert_ne!(notify_secret, secret);
    receiver.until_accepted(2, Duration::from_secs(20)).await;
    assert_eq!(app.status(id).await["Status"], "PAUSED");
    assert_eq!(app.act(id, "Resume", &app.token).await.0, 200);
    let accepted = receiver.until_accepted(4, Duration::from_secs(20)).await;
    // Exactly one accepted per endpoint and event, and no more arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.accepted(), accepted);
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    let got = receiver.got();
    let now = chrono::Utc::now().timestamp();
    for r in &got {
        let key = if r.path == "/hook" { &secret } else { &notify_secret };
        assert_eq!(verify(&r.signature, key, &r.body, now), Ok(()), "{r:?}");
        let event: Value = serde_json::from_str(&r.body).expect("JSON");
        assert_eq!(
            (event["Id"].as_str(), event["Type"].as_str()),
            (Some(r.event_id.as_str()), Some(r.event_type.as_str()))
        );
        assert_eq!(event["Data"]["BulkChangeId"], id);
    }
    let attempts = |path: &str, event_type: &str| {
        got.iter().filter(|r| r.path == path && r.event_type == event_type).map(|r| r.answered).collect::<Vec<_>>()
    };
    for path in ["/hook", "/notify"] {
        assert_eq!(attempts(path, "bulk_change.paused"), vec![500, 500, 200], "{path}");
        assert_eq!(attempts(path, "bulk_change.finished"), vec![500, 500, 200], "{path}");
    }
    let finished = got.iter().find(|r| r.event_type == "bulk_change.finished" && r.answered == 200).expect("finished");
    let event: Value = serde_json::from_str(&finished.body).expect("JSON");
    assert_eq!(
        (event["Data"]["Status"].as_str(), &event["Data"]["Counts"]),
        (Some("PROCESSED"), &json!({"PROCESSED": 20}))
    );
    let paused = got.iter().find(|r| r.event_type == "bulk_change.paused").expect("paused");
    let event: Value = serde_json::from_str(&paused.body).expect("JSON");
    assert_eq!(event["Data"]["Paused"]["Reason"], "canary");
    // A forged delivery fails the README's verification: another body, another secret, an old timestamp.
    let forged = finished.body.replace("PROCESSED", "ERROR");
    assert_eq!(verify(&finished.signature, &secret, &forged, now), Err(VerifyError::Mismatch));
    assert_eq!(verify(&finished.signature, "whsec_guess", &finished.body, now), Err(VerifyError::Mismatch));
    assert_eq!(verify(&finished.signature, &secret, &finished.body, now + 600), Err(VerifyError::Stale));
    // The deliveries page shows them delivered after three attempts; another tenant sees nothing of it.
    let page = app.delivered(&json!(webhook_id), 2).await;
    let items = page["Items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    assert!(
        items.iter().all(|d| d["Status"] == "DELIVERED" && d["Attempts"] == 3 && d["LastStatusCode"] == 200),
        "{page}"
    );
    let (code, _) = app.get(&format!("/M2M/Webhooks/{webhook_id}/Deliveries"), &token_for(2, "mallory")).await;
    assert_eq!(code, 404);
    println!(
        "webhooks: requests={} accepted={} events={} (each refused twice, then accepted once)",
        got.len(),
        accepted.values().sum::<usize>(),
        accepted.len()
    );
}

/// In production mode (no loopback), registration refuses the instance metadata service, private and loopback
/// addresses (also by a name that resolves to 127.0.0.1, and IPv4 written as IPv6), and plain http; a bulk change's
/// `NotifyUrl` likewise, and nothing is accepted.
#[tokio::test]
async fn urls_that_reach_inside_are_refused_at_registration_in_production_mode() {
    let app = TestApp::start(seed(2, 100.0), |c| c.webhooks.policy = UrlPolicy { allow_loopback: false }).await;
    let probes = [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/",
        "http://10.0.0.1/",
        "https://10.0.0.1/hook",
        "https://192.168.0.10/hook",
        "https://localhost/hook",
        "https://127.0.0.1:8443/hook",
        "https://[::ffff:169.254.169.254]/",
        "https://[fd00::1]/",
        "http://example.com/hook",
    ];
    let mut refused = 0;
    for url in probes {
        let (code, problem) = app.post_json("/M2M/Webhooks", &json!({"Url": url}), &app.token).await;
        assert_eq!(code, 400, "{url}: {problem}");
        assert_eq!(fields(&problem), vec!["Url".to_string()], "{url}: {problem}");
        refused += 1;
    }
    let (code, problem) = app
        .post_json("/M2M/Webhooks", &json!({"Url": "https://93.184.216.34/hook", "Events": ["sent"]}), &app.token)
        .await;
    assert_eq!((code, fields(&problem)), (400, vec!["Events".to_string()]), "{problem}");
    let mut body = activation(0..2, json!({}));
    body["NotifyUrl"] = json!("http://169.254.169.254/");
    let (code, problem) = app.submit(&body).await;
    assert_eq!((code, fields(&problem)), (400, vec!["NotifyUrl".to_string()]), "{problem}");
    let (_, listed) = app.get("/M2M/BulkChanges", &app.token).await;
    assert_eq!(listed["Total"], 0, "nothing accepted: {listed}");
    let (_, webhooks) = app.get("/M2M/Webhooks", &app.token).await;
    assert_eq!(webhooks["Items"], json!([]), "nothing registered");
    println!("ssrf: {refused} of {} probes refused", probes.len());
}

/// A worker process killed while it delivers the final event (the receiver never answers it): the scheduler takes
/// the delivery once the dead worker's lease ends, and the receiver accepts the event once.
#[tokio::test]
async fn a_worker_killed_between_the_final_status_and_the_delivery_still_delivers() {
    let (receiver, base) = Receiver { hang_first: true, ..Receiver::default() }.start().await;
    let app = TestApp::start(seed(5, 100.0), |c| {
        c.run_worker = false;
        // The worker process sends the event the moment the bulk change is final; the scheduler comes later.
        c.scheduler_interval = Duration::from_secs(1);
        c.webhooks.lease = Duration::from_secs(3);
        // Should this stack's scheduler take the event first after all, its attempt ends soon too.
        c.webhook_timeout = Duration::from_secs(1);
        c.webhooks.retry_base = Duration::from_millis(200);
    })
    .await;
    let (code, registered) = app
        .post_json(
            "/M2M/Webhooks",
            &json!({"Url": format!("{base}/hook"), "Events": ["bulk_change.finished"]}),
            &app.token,
        )
        .await;
    assert_eq!(code, 201, "{registered}");
    let mut worker = app.worker_process("one");
    let id = app.accepted(&activation(0..5, json!({}))).await;
    // The worker made it final and is sending the event: the receiver holds that request, and the worker dies.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.got().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().await.expect("kill");
    assert_eq!(app.status(id).await["Status"], "PROCESSED");
    let accepted = receiver.until_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(accepted.values().copied().collect::<Vec<_>>(), vec![1], "{accepted:?}");
    let got = receiver.got();
    assert_eq!(got.len(), 2, "the unanswered attempt, then the scheduler's: {got:#?}");
    assert_eq!(got[0].event_id, got[1].event_id, "the same event");
    let page = app.delivered(&registered["Id"], 1).await;
    assert_eq!(page["Items"][0]["Status"], "DELIVERED", "{page}");
}

/// A bulk change its abort rule ends ABORTED sends one `bulk_change.aborted` event (not `finished`), carrying the
/// rule's reason and the counts.
#[tokio::test]
async fn an_aborted_bulk_change_sends_one_aborted_event_with_its_reason() {
    let (receiver, base) = Receiver::default().start().await;
    let refused: Vec<String> = (0..60).filter(|i| i % 2 == 0).map(crate::rollout::device).collect();
    let app = TestApp::start(seed(60, 100.0), |c| {
        c.simulator_faults = simulators::Faults { locked_iccids: refused.clone(), ..simulators::Faults::default() };
    })
    .await;
    let (code, registered) = app.post_json("/M2M/Webhooks", &json!({"Url": format!("{base}/hook")}), &app.token).await;
    assert_eq!(code, 201, "{registered}");
    let id = app
        .accepted(&activation(
            0..60,
            json!({"Canary": {"Devices": 10}, "AbortWhen": {"FailedPercent": 20, "MinProcessed": 10}}),
        ))
        .await;
    let done = app.final_status(id, Duration::from_secs(30)).await;
    assert_eq!(done["Status"], "ABORTED", "{}", done["Counts"]);
    let accepted = receiver.until_accepted(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 1, "one event: {got:#?} {accepted:?}");
    assert_eq!(got[0].event_type, "bulk_change.aborted");
    let event: Value = serde_json::from_str(&got[0].body).expect("JSON");
    assert_eq!(event["Data"]["Status"], "ABORTED");
    assert_eq!(event["Data"]["AbortedReason"], done["AbortedReason"]);
    assert_eq!(event["Data"]["Counts"], done["Counts"]);
}
