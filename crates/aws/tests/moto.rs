//! The SQS queue and SES notifier against a moto server (`make test` starts one and sets `AWS_ENDPOINT_URL`).
//! Without it these tests say so and pass, unless `BULKCHANGE_REQUIRE_MOTO=1` (set by `make test`) makes that
//! an error, so CI can never skip them silently.

use std::time::{Duration, Instant};

use aws::{SdkConfig, SesNotifier, SqsQueue};
use engine::ports::{Email, Notifier, Queue, WorkMessage};

async fn moto() -> Option<(SdkConfig, String)> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(endpoint) if !endpoint.is_empty() => Some((aws::load_config().await, endpoint)),
        _ => {
            assert!(
                std::env::var("BULKCHANGE_REQUIRE_MOTO").is_err(),
                "BULKCHANGE_REQUIRE_MOTO is set but AWS_ENDPOINT_URL is not"
            );
            eprintln!("AWS_ENDPOINT_URL not set: moto tests not run (use `make test`)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{nanos}")
}

async fn new_queue(config: &SdkConfig) -> SqsQueue {
    let client = aws_sdk_sqs::Client::new(config);
    let out = client.create_queue().queue_name(unique("bulkchange-test")).send().await.expect("create queue");
    SqsQueue::new(config, out.queue_url().expect("queue url"))
}

#[tokio::test]
async fn sqs_send_receive_delete() {
    let Some((config, _)) = moto().await else {
        return;
    };
    let queue = new_queue(&config).await;
    let message = WorkMessage { bulk_change_id: 42, attempt: 3, helper: false };
    queue.send(&message, Duration::ZERO).await.expect("send");
    let received = queue.receive(10, Duration::from_secs(30)).await.expect("receive");
    assert_eq!(received.len(), 1);
    assert_eq!(serde_json::from_str::<WorkMessage>(&received[0].body).expect("body"), message);
    assert_eq!(received[0].receive_count, 1);
    queue.delete(&received[0].receipt).await.expect("delete");
    assert!(queue.receive(10, Duration::ZERO).await.expect("receive").is_empty(), "deleted messages do not come back");
}

#[tokio::test]
async fn sqs_message_not_deleted_comes_back_with_its_receive_count() {
    let Some((config, _)) = moto().await else {
        return;
    };
    let queue = new_queue(&config).await;
    queue.send(&WorkMessage::new(7), Duration::ZERO).await.expect("send");
    let first = queue.receive(1, Duration::ZERO).await.expect("receive");
    assert_eq!(first.len(), 1);
    let second = queue.receive(1, Duration::from_secs(30)).await.expect("receive");
    assert_eq!(second.len(), 1, "a message not deleted is delivered again");
    assert_eq!(second[0].receive_count, 2);
}

#[tokio::test]
async fn sqs_delayed_continuation_is_invisible_until_its_delay() {
    let Some((config, _)) = moto().await else {
        return;
    };
    let queue = new_queue(&config).await;
    let start = Instant::now();
    queue
        .send(&WorkMessage { bulk_change_id: 9, attempt: 1, helper: true }, Duration::from_secs(2))
        .await
        .expect("send");
    assert!(
        queue.receive(10, Duration::from_secs(30)).await.expect("receive").is_empty(),
        "not visible before its delay"
    );
    let received = loop {
        let got = queue.receive(10, Duration::from_secs(30)).await.expect("receive");
        if !got.is_empty() {
            break got;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "delayed message never arrived");
    };
    assert!(start.elapsed() >= Duration::from_secs(2), "arrived after {:?}", start.elapsed());
    assert_eq!(serde_json::from_str::<WorkMessage>(&received[0].body).expect("body").attempt, 1);
}

#[tokio::test]
async fn ses_failure_summary_is_sent_with_its_content() {
    let Some((config, endpoint)) = moto().await else {
        return;
    };
    let sender = format!("{}@example.com", unique("bulkchange"));
    aws_sdk_sesv2::Client::new(&config).create_email_identity().email_identity(&sender).send().await.expect("identity");
    let email = Email {
        from: sender.clone(),
        to: vec!["ops@example.com".into(), "noc@example.com".into()],
        subject: "Bulk change 5: 1 device(s) failed".into(),
        body: "89014100000000000019  ERROR  Invalid ICCID".into(),
    };
    let id = SesNotifier::new(&config).send(&email).await.expect("sent");
    assert!(!id.is_empty());
    let data: serde_json::Value =
        reqwest::get(format!("{endpoint}/moto-api/data.json")).await.expect("moto data").json().await.expect("json");
    let sent = data["ses"]["Message"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["source"] == sender.as_str())
        .cloned()
        .expect("our message");
    assert_eq!(sent["subject"], email.subject);
    assert_eq!(sent["body"], email.body);
    assert_eq!(sent["destinations"]["ToAddresses"], serde_json::json!(["ops@example.com", "noc@example.com"]));
}

#[tokio::test]
async fn ses_refuses_an_unverified_sender() {
    let Some((config, _)) = moto().await else {
        return;
    };
    let email = Email {
        from: format!("{}@example.com", unique("nobody")),
        to: vec!["ops@example.com".into()],
        subject: "s".into(),
        body: "b".into(),
    };
    let err = SesNotifier::new(&config).send(&email).await.expect_err("unverified");
    assert!(err.to_string().contains("SES SendEmail failed"), "{err}");
}

fn provider_with_secret(secret: &str) -> engine::ports::ServiceProvider {
    engine::ports::ServiceProvider {
        id: 10,
        tenant_id: 1,
        integration: domain::Integration::Pod19,
        name: "POD19".into(),
        base_url: "http://127.0.0.1:9".into(),
        username: "api-user".into(),
        secret: engine::ports::Secret::new(secret),
        client_code: None,
        subscription_key: None,
        write_is_enabled: true,
        rate_limit_per_second: 1.0,
        default_provider_id: None,
        carrier_settings: None,
        thingspace: None,
    }
}

#[tokio::test]
async fn carrier_credentials_by_reference_are_read_from_secrets_manager_and_a_rotation_is_picked_up() {
    let Some((config, _)) = moto().await else {
        return;
    };
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let created = client
        .create_secret()
        .name(unique("bulkchange/pod19"))
        .secret_string(r#"{"apiKey":"first-key"}"#)
        .send()
        .await
        .expect("create secret");
    let arn = created.arn().expect("arn").to_string();
    let secrets = std::sync::Arc::new(aws::SecretsManager::new(&config));
    let references = store::SecretReferences::new(secrets.clone(), Duration::ZERO);

    let sp = references.resolve(provider_with_secret(&format!("{arn}#apiKey"))).await.expect("resolved");
    assert_eq!(sp.secret.expose(), "first-key");

    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"apiKey":"rotated-key"}"#)
        .send()
        .await
        .expect("rotate");
    let sp = references.resolve(provider_with_secret(&format!("{arn}#apiKey"))).await.expect("resolved again");
    assert_eq!(sp.secret.expose(), "rotated-key", "a rotated credential is read once the cache is older than its ttl");

    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:bulkchange-no-such-secret";
    let e = references.resolve(provider_with_secret(missing)).await.expect_err("missing");
    assert!(e.to_string().contains("service provider 10, Secret"), "{e}");
    assert!(!e.to_string().contains("rotated-key"), "an error never shows a secret: {e}");
}
