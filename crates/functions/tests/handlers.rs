//! The Lambda handlers fed the files in `events/`: the worker's batch contract, the deadline continuation
//! through SQS (moto), the API function against the local server, and the scheduler tick.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use cli::{Stack, StackConfig};
use engine::ports::{Queue, Store};
use functions::adapters::{self, Adapters, LogNotifier};
use functions::config::{Database, FunctionConfig};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::ServiceExt;

/// The local server's HS256 secret in these tests (32 bytes at least, as `serve` requires).
const FN_SECRET: &str = "handler-tests-secret-0123456789abcdef";
fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn event_text(rel: &str) -> String {
    std::fs::read_to_string(events_dir().join(rel)).unwrap_or_else(|e| panic!("reading events/{rel}: {e}"))
}

fn sqs_event(rel: &str) -> SqsEvent {
    serde_json::from_str(&event_text(rel)).unwrap_or_else(|e| panic!("events/{rel} is not an SQS event: {e}"))
}

async fn stack() -> (tempfile::TempDir, Stack) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = StackConfig::local(dir.path().join("fn.db"), dir.path().join("outbox"), FN_SECRET.into());
    config.seed = Some(store::Seed::from_json(&event_text("seed.json")).expect("seed"));
    config.simulators = true;
    config.run_worker = false;
    config.retry.base_delay = Duration::from_millis(10);
    let stack = Stack::start(config).await.expect("stack");
    (dir, stack)
}

fn function_config(dir: &tempfile::TempDir) -> FunctionConfig {
    FunctionConfig {
        database: Database::Sqlite(dir.path().join("fn.db")),
        queue_url: None,
        email_from: String::new(),
        email_to: vec![],
        outbox_dir: dir.path().join("outbox"),
        max_devices: 10_000,
        pool_size: 1,
        carrier_secret_ttl: std::time::Duration::from_secs(300),
        settings: engine::Settings::from_lookup(|_| None).expect("defaults"),
    }
}

fn adapters_on(stack: &Stack, queue: Arc<dyn Queue>) -> Adapters {
    Adapters { store: Arc::new(stack.store.clone()), queue, notifier: Arc::new(LogNotifier) }
}

/// Submits `events/requests/NAME` through the local server as tenant 1; returns the bulk change id.
async fn submit(stack: &Stack, name: &str) -> i64 {
    let token = api::Hs256::new(FN_SECRET).and_then(|a| a.mint(&api::Claims::new(1, "alice", 3600))).expect("token");
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/M2M/BulkChange", stack.base_url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(event_text(&format!("requests/{name}")))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    answer["BulkChangeId"].as_i64().unwrap_or_else(|| panic!("not accepted: {answer}"))
}

fn carrier_calls(stack: &Stack) -> usize {
    stack.simulators.control_center.values().map(|s| s.state.calls().len()).sum()
}

async fn bulk_status(stack: &Stack, id: i64) -> String {
    stack.store.bulk_change(Some(1), id).await.expect("read").expect("exists").status.to_string()
}

#[tokio::test]
async fn a_malformed_record_fails_only_itself() {
    let (dir, stack) = stack().await;
    let (first, second) = (
        submit(&stack, "01-activate-with-rev-service.json").await,
        submit(&stack, "02-deactivate-moves-rate-plan.json").await,
    );
    assert_eq!((first, second), (1, 2), "the event files name bulk changes 1 and 2");
    let adapters = adapters_on(&stack, Arc::new(stack.queue.clone()));
    let worker =
        adapters::worker(&adapters, &function_config(&dir), Arc::new(engine::metrics::NoMetrics)).expect("worker");
    let response = functions::worker::handle_batch(
        &worker,
        sqs_event("sqs/batch-with-malformed.json"),
        Instant::now() + Duration::from_secs(60),
    )
    .await;
    let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(failed, vec!["batch-with-malformed-2".to_string()]);
    assert_eq!(bulk_status(&stack, 1).await, "PROCESSED");
    assert_eq!(bulk_status(&stack, 2).await, "PROCESSED");
}

#[tokio::test]
async fn a_record_for_a_final_bulk_change_is_acknowledged_without_carrier_calls() {
    let (dir, stack) = stack().await;
    submit(&stack, "01-activate-with-rev-service.json").await;
    let adapters = adapters_on(&stack, Arc::new(stack.queue.clone()));
    let worker =
        adapters::worker(&adapters, &function_config(&dir), Arc::new(engine::metrics::NoMetrics)).expect("worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = functions::worker::handle_batch(&worker, sqs_event("sqs/status-update.json"), deadline).await;
    assert!(first.batch_item_failures.is_empty());
    let calls = carrier_calls(&stack);
    assert!(calls > 0);
    let again = functions::worker::handle_batch(&worker, sqs_event("sqs/continuation.json"), deadline).await;
    assert!(again.batch_item_failures.is_empty(), "acknowledged");
    assert_eq!(carrier_calls(&stack), calls, "no carrier call for a final bulk change");
}

#[tokio::test]
async fn a_deadline_near_zero_hands_over_through_sqs_and_nothing_is_sent_twice() {
    let Ok(_) = std::env::var("AWS_ENDPOINT_URL") else {
        assert!(
            std::env::var("BULKCHANGE_REQUIRE_MOTO").is_err(),
            "BULKCHANGE_REQUIRE_MOTO is set but AWS_ENDPOINT_URL is not"
        );
        eprintln!("AWS_ENDPOINT_URL not set: moto test not run (use `make test`)");
        return;
    };
    let (dir, stack) = stack().await;
    let id = submit(&stack, "01-activate-with-rev-service.json").await;
    let sdk = aws::load_config().await;
    let name = format!(
        "fn-test-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    let url = aws_sdk_sqs::Client::new(&sdk)
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_string();
    let sqs = aws::SqsQueue::new(&sdk, url);
    let adapters = adapters_on(&stack, Arc::new(sqs.clone()));
    let worker =
        adapters::worker(&adapters, &function_config(&dir), Arc::new(engine::metrics::NoMetrics)).expect("worker");

    // WHEN the invocation has no time left
    let response = functions::worker::handle_batch(&worker, sqs_event("sqs/status-update.json"), Instant::now()).await;
    // THEN the record is done (handed over), a continuation waits in SQS, and no carrier was called
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(carrier_calls(&stack), 0);
    let received = sqs.receive(10, Duration::from_secs(60)).await.expect("receive");
    assert_eq!(received.len(), 1);
    let continuation: Value = serde_json::from_str(&received[0].body).expect("json");
    assert_eq!(continuation, json!({"BulkChangeId": id, "Attempt": 1}));

    // AND the continuation, delivered as SQS delivers it, finishes the work once
    let mut message = SqsMessage::default();
    message.message_id = Some(received[0].message_id.clone());
    message.body = Some(received[0].body.clone());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    let response = functions::worker::handle_batch(&worker, event, Instant::now() + Duration::from_secs(60)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(bulk_status(&stack, id).await, "PROCESSED");
    for sim in stack.simulators.control_center.values() {
        for call in sim.state.calls().iter().filter(|c| c.method == "PUT") {
            let iccid = call.path.rsplit('/').next().unwrap_or_default();
            assert_eq!(sim.applied_status_changes(iccid), 1, "{iccid} changed once");
        }
    }
}

fn normalise(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for key in ["CreatedDate", "ProcessedDate"] {
                map.remove(key);
            }
            for value in map.values_mut() {
                *value = normalise(value.take());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| *i = normalise(i.take())),
        _ => {}
    }
    v
}

#[tokio::test]
async fn every_api_event_answers_as_the_local_server_does() {
    let (_dir_a, lambda_side) = stack().await;
    let (_dir_b, local_side) = stack().await;
    let app = functions::api::app(&adapters_on(&lambda_side, Arc::new(lambda_side.queue.clone())), 10_000, None);
    let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir().join("api"))
        .expect("events/api")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    let http = reqwest::Client::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("event");
        let event: Value = serde_json::from_str(&text).expect("json");
        // Through the Lambda adapter: API Gateway's event, claims in the request context.
        let request = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let response = app.clone().oneshot(request).await.expect("router answers");
        let lambda_status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
        let lambda_body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        // Through the local server: the same request with an HS256 token carrying the same claims (none for a
        // route without the authorizer, such as ThingSpace's callback).
        let claims = &event["requestContext"]["authorizer"]["jwt"]["claims"];
        let token = claims["tenant_id"].as_str().map(|tenant| {
            let claims = api::Claims::new(
                tenant.parse().expect("tenant_id claim"),
                claims["sub"].as_str().expect("sub claim"),
                3600,
            );
            api::Hs256::new(FN_SECRET).and_then(|a| a.mint(&claims)).expect("token")
        });
        let query =
            event["rawQueryString"].as_str().filter(|q| !q.is_empty()).map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{}{}{query}", local_side.base_url(), event["rawPath"].as_str().expect("rawPath"));
        let method = event["requestContext"]["http"]["method"].as_str().expect("method");
        let mut request = http.request(method.parse().expect("method"), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = event["body"].as_str() {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("local server answers");
        let local_status = response.status().as_u16();
        let local_body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(lambda_status, local_status, "{}", file.display());
        assert_eq!(normalise(lambda_body), normalise(local_body), "{}", file.display());
    }
}

#[tokio::test]
async fn api_event_without_claims_is_401() {
    let (_dir, stack) = stack().await;
    let app = functions::api::app(&adapters_on(&stack, Arc::new(stack.queue.clone())), 10_000, None);
    let mut event: Value = serde_json::from_str(&event_text("api/04-list-bulk-changes.json")).expect("json");
    event["requestContext"].as_object_mut().expect("context").remove("authorizer");
    let request = lambda_http::request::from_str(&event.to_string()).expect("request");
    let response = app.oneshot(request).await.expect("answer");
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn scheduler_tick_requeues_a_bulk_change_nobody_picked_up() {
    let (_dir, stack) = stack().await;
    let _: Value = serde_json::from_str(&event_text("schedule/every-minute.json")).expect("the schedule event is JSON");
    let id = submit(&stack, "01-activate-with-rev-service.json").await;
    let report = functions::scheduler::tick(&stack.store, &stack.queue, Duration::ZERO).await.expect("tick");
    assert_eq!(report.requeued, vec![id]);
    let processed = {
        let worker = stack.worker(engine::WorkerConfig::default()).expect("worker");
        worker
            .handle(engine::ports::WorkMessage::new(id), Instant::now() + Duration::from_secs(60))
            .await
            .expect("handled")
    };
    assert_eq!(processed, engine::Handled::Finished(domain::BulkStatus::Processed));
    let report = functions::scheduler::tick(&stack.store, &stack.queue, Duration::ZERO).await.expect("tick");
    assert!(report.requeued.is_empty(), "a finished bulk change is never requeued");
}

#[tokio::test]
async fn a_scheduler_tick_on_a_failing_database_is_an_error() {
    // GIVEN a database whose tables the tick reads are gone
    let dir = tempfile::tempdir().expect("dir");
    let store = store::SqliteStore::open(&dir.path().join("broken.db")).expect("open");
    let queue = store::SqliteQueue::new(store.clone());
    store.break_for_tests().await;
    // THEN the tick fails (the invocation fails and the Errors alarm sees it) instead of logging and returning
    let failed = functions::scheduler::tick(&store, &queue, Duration::ZERO).await;
    assert!(failed.is_err(), "{failed:?}");
}

#[tokio::test]
async fn the_worker_with_cargo_lambdas_relative_deadline_processes_the_rows() {
    // GIVEN a new bulk change and the deadline `cargo lambda watch` sends (600000: ten minutes from now)
    let (dir, stack) = stack().await;
    let id = submit(&stack, "01-activate-with-rev-service.json").await;
    let adapters = adapters_on(&stack, Arc::new(stack.queue.clone()));
    let worker =
        adapters::worker(&adapters, &function_config(&dir), Arc::new(engine::metrics::NoMetrics)).expect("worker");
    let deadline = functions::worker::deadline_instant(600_000);
    // WHEN the worker handles its message
    let response = functions::worker::handle_batch(&worker, sqs_event("sqs/status-update.json"), deadline).await;
    // THEN the rows are processed, not handed to a continuation at once
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(bulk_status(&stack, id).await, "PROCESSED");
    assert!(carrier_calls(&stack) > 0);
}
