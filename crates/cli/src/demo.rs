//! `make run`: start the local stack with the simulators, submit the sample requests from `events/requests/`
//! through the HTTP API, wait for every bulk change to finish, and print each device's result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::stack::{Stack, StackConfig};

pub struct DemoOptions {
    pub seed: PathBuf,
    pub requests: PathBuf,
    pub work_dir: PathBuf,
    pub tenant: i64,
}

pub async fn run(opts: DemoOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.work_dir).with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let database = opts.work_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    let outbox = opts.work_dir.join("outbox");
    let _ = std::fs::remove_dir_all(&outbox);
    let seed_text =
        std::fs::read_to_string(&opts.seed).with_context(|| format!("reading seed {}", opts.seed.display()))?;
    let seed = store::Seed::from_json(&seed_text).with_context(|| format!("parsing seed {}", opts.seed.display()))?;
    // A fresh secret per run: only this process mints tokens for its stack.
    let secret = format!("demo-{:016x}{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..), fastrand::u64(..));
    let mut config = StackConfig::local(database, outbox.clone(), secret.clone());
    config.seed = Some(seed);
    config.simulators = true;
    config.simulator_faults.latency_ms = 20;
    // Telegence activations are polled: every second here (TELEGENCE_POLL_SECONDS, 60, in production).
    config.worker.carrier_poll_interval = Duration::from_secs(1);
    config.worker.teal_poll_interval = Duration::from_secs(1);
    let stack = Stack::start(config).await?;
    let result = submit_all(&stack, &opts, &secret).await;
    stack.stop().await;
    result?;
    let mut mails: Vec<_> =
        std::fs::read_dir(&outbox).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    mails.sort();
    println!();
    if mails.is_empty() {
        println!("No failure e-mail was needed.");
    }
    for mail in mails {
        println!("Failure e-mail: {}", mail.display());
    }
    Ok(())
}

fn request_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

async fn submit_all(stack: &Stack, opts: &DemoOptions, secret: &str) -> Result<()> {
    let token = api::Hs256::new(secret)
        .and_then(|auth| auth.mint(&api::Claims::new(opts.tenant, "demo-operator", 3600)))
        .map_err(|e| anyhow::anyhow!(e))?;
    let http = reqwest::Client::new();
    let base = stack.base_url();
    let mut submitted = Vec::new();
    for file in request_files(&opts.requests)? {
        let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let response = http
            .post(format!("{base}/M2M/BulkChange"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("submitting {}", file.display()))?;
        let status = response.status();
        let answer: Value = response.json().await.context("reading the API's answer")?;
        if status.as_u16() != 202 {
            bail!("{} was refused with {status}: {answer}", file.display());
        }
        let id = answer["BulkChangeId"].as_i64().context("answer without BulkChangeId")?;
        println!(
            "Submitted {} as bulk change {id}: {}",
            file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            answer["Counts"]
        );
        submitted.push(id);
    }
    for id in submitted {
        let status = wait_settled(&http, &base, &token, id).await?;
        print_result(&status);
    }
    Ok(())
}

const FINAL: &[&str] = &["PROCESSED", "ERROR", "CANCELLED", "ABORTED"];

/// Polls the status endpoint until the bulk change is final (60 s at most).
pub async fn wait_final(http: &reqwest::Client, base: &str, token: &str, id: i64) -> Result<Value> {
    wait_final_by(http, base, token, id, tokio::time::Instant::now() + Duration::from_secs(60)).await
}

/// Polls the status endpoint until the bulk change is final; an error once `deadline` has passed.
pub async fn wait_final_by(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: i64,
    deadline: tokio::time::Instant,
) -> Result<Value> {
    wait_for(http, base, token, id, FINAL, deadline).await
}

/// Until final, or SCHEDULED (waiting for a future date): what `make run` shows (60 s at most).
pub async fn wait_settled(http: &reqwest::Client, base: &str, token: &str, id: i64) -> Result<Value> {
    let settled = &["PROCESSED", "ERROR", "CANCELLED", "ABORTED", "SCHEDULED", "PAUSED"];
    wait_for(http, base, token, id, settled, tokio::time::Instant::now() + Duration::from_secs(60)).await
}

async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: i64,
    settled: &[&str],
    deadline: tokio::time::Instant,
) -> Result<Value> {
    loop {
        let status: Value = http
            .get(format!("{base}/M2M/BulkChangeStatus/{id}?pageSize=1000"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if status["Status"].as_str().is_some_and(|s| settled.contains(&s)) {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("bulk change {id} did not settle in time: {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_result(status: &Value) {
    println!();
    println!(
        "Bulk change {}  {}  {}  -> {}   {}",
        status["BulkChangeId"],
        status["ChangeTypeName"].as_str().unwrap_or(""),
        status["Integration"].as_str().unwrap_or(""),
        status["Status"].as_str().unwrap_or(""),
        status["Counts"]
    );
    if let Some(reason) = status["Paused"]["Reason"].as_str() {
        println!(
            "  paused ({reason}): `bulkchange resume {}` lets the rest follow (README \"Rolling out safely\")",
            status["BulkChangeId"]
        );
    }
    println!("  {:<22} {:<11} DETAILS", "ICCID", "STATUS");
    for row in status["Rows"].as_array().into_iter().flatten() {
        println!(
            "  {:<22} {:<11} {}",
            row["ICCID"].as_str().unwrap_or(""),
            row["Status"].as_str().unwrap_or(""),
            row["StatusDetails"].as_str().unwrap_or("")
        );
    }
}
