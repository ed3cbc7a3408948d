//! What the end-to-end test files share: a local stack on a temporary SQLite file with the simulators, a token
//! for tenant 1, and the status page's row of a device. With `E2E_STORE=mssql` and `MSSQL_URL`, the same stack runs
//! on the SQL Server adapter instead (`make engine-tests` runs the race and crash tests so, on Babelfish).

use std::time::Duration;

use cli::{Stack, StackConfig};
use domain::Integration;
use engine::WorkerConfig;
use serde_json::Value;
use store::Seed;
use store::seed::{SeedDevice, SeedRatePlan, SeedServiceProvider, SeedThingSpace};

pub const JWT_SECRET: &str = "end-to-end-test-secret-0123456789abcdef";

/// A started stack and what a test needs to talk to it; each test file adds its own helpers in an `impl`.
pub struct TestApp {
    pub stack: Stack,
    pub http: reqwest::Client,
    /// Tenant 1's token.
    pub token: String,
    pub _keep: Keep,
}

/// What a test keeps alive until it ends (never read: held for their drop): its folder and, on SQL Server, its
/// turn on the shared database.
pub struct Keep {
    _dir: tempfile::TempDir,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl TestApp {
    pub async fn start(seed: Seed, customize: impl FnOnce(&mut StackConfig)) -> Self {
        let (stack, keep, token) = start(seed, customize).await;
        Self { stack, http: reqwest::Client::new(), token, _keep: keep }
    }

    /// The bulk change's status once it is final, as the demo waits for it.
    pub async fn wait_final(&self, id: i64) -> Value {
        cli::demo::wait_final(&self.http, &self.stack.base_url(), &self.token, id).await.expect("bulk change finishes")
    }

    /// `GET path` with `token`: the HTTP status and the JSON answer.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response =
            self.http.get(format!("{}{path}", self.stack.base_url())).bearer_auth(token).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a bulk change as tenant 1: the HTTP status and the JSON answer.
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/M2M/BulkChange", self.stack.base_url()))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a body that must be accepted (202); its bulk change id.
    pub async fn accepted(&self, body: &Value) -> i64 {
        let (status, answer) = self.submit(body).await;
        assert_eq!(status, 202, "{answer}");
        answer["BulkChangeId"].as_i64().expect("id")
    }

    /// The text tenant 1 gets for `GET path` (a CSV export, ...).
    pub async fn text(&self, path: &str) -> String {
        let answer = self.http.get(format!("{}{path}", self.stack.base_url())).bearer_auth(&self.token).send().await;
        answer.expect("GET").text().await.expect("text")
    }

    /// The bulk change's status page (up to 1,000 rows) as tenant 1 sees it now.
    pub async fn status(&self, id: i64) -> Value {
        self.http
            .get(format!("{}/M2M/BulkChangeStatus/{id}?pageSize=1000", self.stack.base_url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }

    /// Polls the status page until the bulk change is final (PROCESSED, ERROR, CANCELLED or ABORTED).
    pub async fn final_status(&self, id: i64, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status(id).await;
            if ["PROCESSED", "ERROR", "CANCELLED", "ABORTED"].contains(&status["Status"].as_str().unwrap_or_default()) {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "bulk change {id} not final in {within:?}: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A `bulkchange worker` process on this stack's database (lease 3 s, polls every second), killed when
    /// dropped: tests kill one mid-request to see what the next one does.
    pub fn worker_process(&self, name: &str) -> tokio::process::Child {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bulkchange"));
        match &self.stack.config.sql_server {
            Some(ado) => command.args(["worker", "--database", ado.as_str(), "--queue"]),
            None => command.args(["worker", "--database"]),
        };
        command
            .arg(&self.stack.config.database)
            .arg("--outbox")
            .arg(&self.stack.config.outbox)
            .args(["--worker-id", name])
            .env("WORKER_LEASE_SECONDS", "3")
            .env("THINGSPACE_RESULT_WAIT_SECONDS", "1")
            .env("TELEGENCE_POLL_SECONDS", "1")
            .env("TEAL_POLL_SECONDS", "1")
            .env("WEBHOOK_TIMEOUT_SECONDS", "1")
            .env("WEBHOOK_RETRY_BASE_MILLISECONDS", "200")
            .env("RUST_LOG", std::env::var("E2E_WORKER_LOG").unwrap_or_else(|_| "error".into()))
            .stdin(std::process::Stdio::null());
        // `E2E_WORKER_LOG` (a RUST_LOG filter) and `E2E_WORKER_LOG_DIR`: each worker's log in `<dir>/<name>.log`.
        if let Some(dir) = std::env::var_os("E2E_WORKER_LOG_DIR") {
            let path = std::path::Path::new(&dir).join(format!("{name}.log"));
            match std::fs::File::create(&path) {
                Ok(file) => {
                    command.stdout(file);
                }
                Err(e) => eprintln!("worker log {}: {e}", path.display()),
            }
        }
        command.kill_on_drop(true).spawn().expect("worker process")
    }

    /// The `.eml` files the local notifier wrote, once at least `at_least` are there (or `within` passed).
    pub async fn mails(&self, at_least: usize, within: Duration) -> Vec<std::path::PathBuf> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mails: Vec<_> = std::fs::read_dir(&self.stack.config.outbox)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                        .collect()
                })
                .unwrap_or_default();
            if mails.len() >= at_least || tokio::time::Instant::now() > deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The stack as `bulkchange serve --simulators` starts it, seeded with `seed`, with short retry and continuation
/// delays; `customize` changes the rest. Returns the stack, the directory to keep alive, and tenant 1's token.
pub async fn start(seed: Seed, customize: impl FnOnce(&mut StackConfig)) -> (Stack, Keep, String) {
    if std::env::var("RUST_LOG").is_ok() {
        // RUST_LOG=... shows the stack's logs of a failing test.
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = StackConfig::local(dir.path().join("e2e.db"), dir.path().join("outbox"), JWT_SECRET.to_string());
    let turn = match sql_server().await {
        Some((url, turn)) => {
            config.sql_server = Some(url);
            config.database_pool_size = 16;
            Some(turn)
        }
        None => None,
    };
    config.seed = Some(seed);
    config.simulators = true;
    config.worker = WorkerConfig { continuation_delay: Duration::from_millis(200), ..WorkerConfig::default() };
    config.retry.base_delay = Duration::from_millis(20);
    config.retry.max_delay = Duration::from_secs(2);
    customize(&mut config);
    let stack = Stack::start(config).await.expect("stack starts");
    (stack, Keep { _dir: dir, _turn: turn }, token_for(1, "alice"))
}

/// With `E2E_STORE=mssql`: a database on the `MSSQL_URL` server, migrated once per test process, wiped for this
/// test, and this test's turn on it (the tests of a process take it one at a time).
async fn sql_server() -> Option<(String, tokio::sync::OwnedMutexGuard<()>)> {
    use std::sync::{Arc, OnceLock};
    static DATABASE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    static TURN: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    if std::env::var("E2E_STORE").ok().as_deref() != Some("mssql") {
        return None;
    }
    let server = std::env::var("MSSQL_URL").expect("E2E_STORE=mssql needs MSSQL_URL (make engine-tests sets both)");
    let turn = TURN.get_or_init(|| Arc::new(tokio::sync::Mutex::new(()))).clone().lock_owned().await;
    let url = DATABASE
        .get_or_init(|| async {
            let db = store::migrate::ScratchDatabase::create(&server, "e2e").await.expect("a scratch database");
            let store = store::MssqlStore::connect(&db.url, 1).await.expect("connect");
            store.migrate(None).await.expect("migrate");
            engine::ports::Store::close(&store).await;
            db.url.clone()
        })
        .await
        .clone();
    let store = store::MssqlStore::connect(&url, 1).await.expect("connect");
    store.wipe_for_tests().await.expect("wipe");
    engine::ports::Store::close(&store).await;
    Some((url, turn))
}

pub fn token_for(tenant_id: i64, user: &str) -> String {
    api::Hs256::new(JWT_SECRET).and_then(|a| a.mint(&api::Claims::new(tenant_id, user, 3600))).expect("token")
}

/// The row of `iccid` in a `BulkChangeStatus` answer.
pub fn row<'a>(status: &'a Value, iccid: &str) -> &'a Value {
    status["Rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["ICCID"] == iccid)
        .unwrap_or_else(|| panic!("no row for {iccid} in {status}"))
}

/// An account of `tenant_id` at `integration` on a placeholder URL (its simulator's replaces it), paced at 100
/// calls a second, writes enabled; a Rev.io account has its client code and subscription key, a ThingSpace one its
/// app and callback credentials.
pub fn account(id: i64, tenant_id: i64, integration: Integration) -> SeedServiceProvider {
    let rev_io = integration == Integration::RevIo;
    SeedServiceProvider {
        name: format!("sp-{id}"),
        username: format!("user-{id}"),
        secret: format!("secret-key-{id}"),
        client_code: rev_io.then(|| "acme".to_string()),
        subscription_key: rev_io.then(|| "sub-key".to_string()),
        rate_limit_per_second: 100.0,
        thing_space: (integration == Integration::ThingSpace).then(|| SeedThingSpace {
            app_key: "app-key".into(),
            app_secret: "app-secret".into(),
            account_name: "0868924207-00001".into(),
            callback_username: "callback-user".into(),
            callback_password: "callback-password".into(),
        }),
        ..SeedServiceProvider::new(id, tenant_id, integration.id())
    }
}

/// A carrier account of tenant 1 on a placeholder URL (its simulator's replaces it), paced at 500 calls a second.
pub fn provider(id: i64, integration: Integration, username: &str, secret: &str, writes: bool) -> SeedServiceProvider {
    SeedServiceProvider {
        name: format!("carrier {id}"),
        username: username.into(),
        secret: secret.into(),
        write_is_enabled: writes,
        rate_limit_per_second: 500.0,
        ..SeedServiceProvider::new(id, 1, integration.id())
    }
}

/// A device of tenant 1 on `service_provider_id`, used three days ago; the rest empty.
pub fn device(service_provider_id: i64, iccid: String, status: &str, plan: Option<&str>) -> SeedDevice {
    SeedDevice {
        carrier_rate_plan: plan.map(str::to_string),
        last_usage_days_ago: Some(3),
        ..SeedDevice::new(1, service_provider_id, iccid, status)
    }
}

/// A carrier rate plan of 1 GB at 4.00, with the carrier's own ids where it needs them.
pub fn rate_plan(
    id: i64,
    service_provider_id: i64,
    code: &str,
    package_type: Option<i64>,
    uuid: Option<&str>,
) -> SeedRatePlan {
    SeedRatePlan {
        jasper_rate_plan_id: package_type,
        plan_uuid: uuid.map(str::to_string),
        ..SeedRatePlan::new(id, service_provider_id, code, 1024.0, 4.0)
    }
}
