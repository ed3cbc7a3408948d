//! `bulkchange` as the operator's client of the HTTP API (the local stack or a deployed one): submit a JSON body or
//! a CSV of ICCIDs, watch progress, export results, retry, cancel, validate. Every POST carries an
//! `Idempotency-Key`, so sending the same command again never creates a second bulk change.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// How to reach the API.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the API (the local `serve`, or a deployed HTTP API).
    #[arg(long, env = "BULKCHANGE_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Bearer token (`bulkchange token` mints one for the local API).
    #[arg(long, env = "BULKCHANGE_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// What to change, for `submit` and `validate`: a JSON body, or flags (and a CSV of devices).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChangeArgs {
    /// A request body as the portal sends it (README "HTTP API"); flags below override its fields.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Devices from a CSV file: one ICCID per line, or a header row with ICCID and per-device columns
    /// (NewICCID, NewIMEI: one ChangeICCIDorIMEI request per line).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Devices on the command line (ICCIDs, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// The service provider (carrier account) of the devices.
    #[arg(long)]
    pub service_provider: Option<i64>,
    /// Change type, by number or name: 1 CustomerAssignment, 2 ActivateNewService, 3 StatusUpdate,
    /// 4 CustomerRatePlanChange, 5 Archival, 6 EditUsername, 7 CarrierRatePlanChange, 8 ChangeICCIDorIMEI,
    /// 9 DeleteDevice.
    #[arg(long)]
    pub change_type: Option<String>,
    /// 0 M2M (default), 2 Mobility.
    #[arg(long)]
    pub portal_type: Option<i64>,
    /// StatusUpdate: the status to set (code or display name, e.g. Active).
    #[arg(long)]
    pub target_status: Option<String>,
    /// CarrierRatePlanChange: the carrier rate plan code.
    #[arg(long)]
    pub carrier_rate_plan: Option<String>,
    /// CarrierRatePlanChange: the communication plan, when it changes too.
    #[arg(long)]
    pub communication_plan: Option<String>,
    /// CustomerRatePlanChange: the customer rate plan id.
    #[arg(long)]
    pub customer_rate_plan_id: Option<i64>,
    /// CustomerRatePlanChange: the customer rate pool id.
    #[arg(long)]
    pub customer_rate_pool_id: Option<i64>,
    /// CustomerRatePlanChange and CustomerAssignment: when it takes effect (2099-01-01).
    #[arg(long)]
    pub effective_date: Option<String>,
    /// EditUsername: the new username.
    #[arg(long)]
    pub new_username: Option<String>,
    /// CustomerAssignment: the Rev.io customer.
    #[arg(long)]
    pub rev_customer_id: Option<String>,
    /// CustomerAssignment: also create the Rev.io service line.
    #[arg(long)]
    pub create_rev_service: bool,
    /// CustomerAssignment with --create-rev-service: the Rev.io provider (default: the account's).
    #[arg(long)]
    pub provider_id: Option<i64>,
    /// Archival: archive devices with an active Rev.io service too.
    #[arg(long)]
    pub override_validation: bool,
    /// Rollout: devices a minute this bulk change may start (below the account's pace, which still applies).
    #[arg(long)]
    pub max_per_minute: Option<i64>,
    /// Rollout: this many devices go first; the rest follow once they are final (see --canary-then).
    #[arg(long)]
    pub canary: Option<i64>,
    /// Rollout: after the canary, `continue` (default) or `pause` until someone resumes.
    #[arg(long)]
    pub canary_then: Option<String>,
    /// Rollout: abort when more than this share of the processed rows failed (`5%` or `5`).
    #[arg(long)]
    pub abort_when_failed: Option<String>,
    /// Rollout: abort when more than this many processed rows failed.
    #[arg(long)]
    pub abort_when_count: Option<i64>,
    /// Rollout: the abort rule applies once at least this many rows are final (default 0).
    #[arg(long)]
    pub abort_min: Option<i64>,
}

const CHANGE_TYPES: [(i64, &str); 9] = [
    (1, "CustomerAssignment"),
    (2, "ActivateNewService"),
    (3, "StatusUpdate"),
    (4, "CustomerRatePlanChange"),
    (5, "Archival"),
    (6, "EditUsername"),
    (7, "CarrierRatePlanChange"),
    (8, "ChangeICCIDorIMEI"),
    (9, "DeleteDevice"),
];

fn change_type_number(raw: &str) -> Result<i64> {
    if let Ok(n) = raw.trim().parse::<i64>() {
        return Ok(n);
    }
    CHANGE_TYPES
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(raw.trim()))
        .map(|(n, _)| *n)
        .with_context(|| format!("--change-type '{raw}' is not a change type (a number or one of {CHANGE_TYPES:?})"))
}

/// A device line of a CSV: the ICCID and the per-device columns it has.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvDevice {
    pub iccid: String,
    pub new_iccid: Option<String>,
    pub new_imei: Option<String>,
}

/// Reads a CSV of devices: one ICCID per line, or a header (ICCID, NewICCID, NewIMEI, in any order).
pub fn read_csv(path: &Path) -> Result<Vec<CsvDevice>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_csv(&text).with_context(|| format!("reading {}", path.display()))
}

pub fn parse_csv(text: &str) -> Result<Vec<CsvDevice>> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let mut records = reader.records();
    let mut devices = Vec::new();
    let Some(first) = records.next().transpose()? else { return Ok(devices) };
    let header = first.iter().any(|c| c.eq_ignore_ascii_case("ICCID"));
    let column = |name: &str| if header { first.iter().position(|c| c.eq_ignore_ascii_case(name)) } else { None };
    let (iccid, new_iccid, new_imei) = (column("ICCID").unwrap_or(0), column("NewICCID"), column("NewIMEI"));
    let cell = |r: &csv::StringRecord, i: Option<usize>| {
        i.and_then(|i| r.get(i)).map(str::to_string).filter(|v| !v.is_empty())
    };
    let rows = if header { None } else { Some(first.clone()) };
    for (line, record) in rows.into_iter().map(Ok).chain(records).enumerate() {
        let record = record?;
        let Some(value) = cell(&record, Some(iccid)) else {
            if record.iter().all(str::is_empty) {
                continue;
            }
            bail!("line {}: no ICCID", line + 1 + usize::from(header));
        };
        devices.push(CsvDevice {
            iccid: value,
            new_iccid: cell(&record, new_iccid),
            new_imei: cell(&record, new_imei),
        });
    }
    Ok(devices)
}

impl ChangeArgs {
    /// The request bodies to send: one, or one per CSV line that carries its own new identifiers.
    pub fn bodies(&self) -> Result<Vec<Value>> {
        let mut body: Map<String, Value> = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                match serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))? {
                    Value::Object(map) => map,
                    _ => bail!("{} must hold a JSON object (a bulk change request)", path.display()),
                }
            }
            None => Map::new(),
        };
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                body.insert(key.to_string(), v);
            }
        };
        set("ServiceProviderId", self.service_provider.map(Value::from));
        set("ChangeType", self.change_type.as_deref().map(change_type_number).transpose()?.map(Value::from));
        set("PortalType", self.portal_type.map(Value::from));
        if self.override_validation {
            set("OverrideValidation", Some(json!(true)));
        }
        let block = |pairs: &[(&str, Option<Value>)]| -> Option<Value> {
            let map: Map<String, Value> =
                pairs.iter().filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v))).collect();
            (!map.is_empty()).then_some(Value::Object(map))
        };
        let s = |v: &Option<String>| v.clone().map(Value::from);
        set("StatusUpdate", block(&[("TargetStatus", s(&self.target_status))]));
        set(
            "CarrierRatePlanUpdate",
            block(&[
                ("CarrierRatePlan", s(&self.carrier_rate_plan)),
                ("CommunicationPlan", s(&self.communication_plan)),
            ]),
        );
        let assignment = self.rev_customer_id.is_some() || self.create_rev_service;
        if !assignment {
            set(
                "CustomerRatePlanUpdate",
                block(&[
                    ("CustomerRatePlanId", self.customer_rate_plan_id.map(Value::from)),
                    ("CustomerRatePoolId", self.customer_rate_pool_id.map(Value::from)),
                    ("EffectiveDate", s(&self.effective_date)),
                ]),
            );
        }
        set("Username", block(&[("NewUsername", s(&self.new_username))]));
        set("MaxPerMinute", self.max_per_minute.map(Value::from));
        if self.canary.is_some() || self.canary_then.is_some() {
            let then = match self.canary_then.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("continue") => "Continue",
                Some("pause") => "Pause",
                Some(other) => bail!("--canary-then '{other}' is not continue or pause"),
            };
            set("Canary", Some(json!({"Devices": self.canary, "Then": then})));
        }
        let failed_percent = match self.abort_when_failed.as_deref() {
            Some(raw) => Some(
                raw.trim()
                    .trim_end_matches('%')
                    .trim()
                    .parse::<f64>()
                    .with_context(|| format!("--abort-when-failed '{raw}' is not a percentage (5% or 5)"))?,
            ),
            None => None,
        };
        set(
            "AbortWhen",
            block(&[
                ("FailedPercent", failed_percent.map(Value::from)),
                ("Count", self.abort_when_count.map(Value::from)),
                ("MinProcessed", self.abort_min.map(Value::from)),
            ]),
        );
        if assignment {
            set(
                "RevService",
                block(&[
                    ("RevCustomerId", s(&self.rev_customer_id)),
                    ("CreateRevService", Some(Value::from(self.create_rev_service))),
                    ("ProviderId", self.provider_id.map(Value::from)),
                    ("EffectiveDate", s(&self.effective_date)),
                ]),
            );
        }
        let mut devices: Vec<CsvDevice> = match &self.csv {
            Some(path) => read_csv(path)?,
            None => Vec::new(),
        };
        devices.extend(self.devices.iter().map(|d| CsvDevice { iccid: d.clone(), new_iccid: None, new_imei: None }));
        if devices.is_empty() {
            return Ok(vec![Value::Object(body)]);
        }
        let per_device = devices.iter().any(|d| d.new_iccid.is_some() || d.new_imei.is_some());
        if !per_device {
            body.insert("Devices".into(), devices.iter().map(|d| Value::from(d.iccid.clone())).collect());
            return Ok(vec![Value::Object(body)]);
        }
        // One identifier change per device: one request per line.
        Ok(devices
            .into_iter()
            .map(|d| {
                let mut one = body.clone();
                one.insert("ChangeType".into(), json!(8));
                one.insert("Devices".into(), json!([d.iccid]));
                let mut change = Map::new();
                if let Some(i) = d.new_iccid {
                    change.insert("NewICCID".into(), json!(i));
                }
                if let Some(i) = d.new_imei {
                    change.insert("NewIMEI".into(), json!(i));
                }
                one.insert("ChangeIdentifier".into(), Value::Object(change));
                Value::Object(one)
            })
            .collect())
    }
}

/// A fresh key for one operator action.
pub fn new_idempotency_key() -> String {
    format!("cli-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

pub struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

/// An answer: status code and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().context("HTTP client")?;
        Ok(Self { http, api: args.api.trim_end_matches('/').to_string(), token: args.token.clone() })
    }

    pub async fn post(&self, path: &str, body: Option<&Value>, key: &str) -> Result<Answer> {
        let mut request =
            self.http.post(format!("{}{path}", self.api)).bearer_auth(&self.token).header("Idempotency-Key", key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("POST {}{path}", self.api))?;
        let status = response.status().as_u16();
        Ok(Answer { status, body: response.json().await.unwrap_or(Value::Null) })
    }

    pub async fn get(&self, path: &str) -> Result<reqwest::Response> {
        self.http
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {}{path}", self.api))
    }

    pub async fn status(&self, id: i64) -> Result<Value> {
        let response = self.get(&format!("/M2M/BulkChangeStatus/{id}?pageSize=1")).await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("bulk change {id}: {}", problem_text(&body));
        }
        Ok(body)
    }
}

/// A problem+json answer as one line.
pub fn problem_text(body: &Value) -> String {
    let mut text = format!("{} ({})", body["title"].as_str().unwrap_or("error"), body["status"]);
    if let Some(detail) = body["detail"].as_str() {
        text.push_str(&format!(": {detail}"));
    }
    text
}

fn print_devices_refused(body: &Value) {
    let refused: Vec<&Value> =
        body["Devices"].as_array().map(|d| d.iter().filter(|d| d["Valid"] == false).collect()).unwrap_or_default();
    for d in refused.iter().take(20) {
        let reason = d["Errors"][0]["message"].as_str().unwrap_or("refused");
        println!("  refused {}  {reason}", d["ICCID"].as_str().unwrap_or("?"));
    }
    if refused.len() > 20 {
        println!("  ... and {} more refused (see `bulkchange results ID --status ERROR`)", refused.len() - 20);
    }
    for w in body["Warnings"].as_array().into_iter().flatten() {
        println!("  warning {}: {}", w["field"].as_str().unwrap_or("?"), w["message"].as_str().unwrap_or(""));
    }
}

/// `submit`: sends each body; returns the bulk change ids accepted.
pub async fn submit(client: &Client, change: &ChangeArgs, key: Option<String>) -> Result<Vec<i64>> {
    let bodies = change.bodies()?;
    let base = key.unwrap_or_else(new_idempotency_key);
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let key = if bodies.len() == 1 { base.clone() } else { format!("{base}-{i}") };
        let answer = client.post("/M2M/BulkChange", Some(body), &key).await?;
        if answer.status != 202 {
            bail!("{}", problem_text(&answer.body));
        }
        let id = answer.body["BulkChangeId"].as_i64().context("the answer has no BulkChangeId")?;
        let counts = &answer.body["Counts"];
        println!(
            "bulk change {id} accepted: {} valid, {} invalid, {} duplicates (Idempotency-Key {key}: send the same command with --idempotency-key {base} to retry it safely)",
            counts["Valid"], counts["Invalid"], counts["Duplicates"]
        );
        print_devices_refused(&answer.body);
        ids.push(id);
    }
    Ok(ids)
}

/// `validate`: the dry run.
pub async fn validate(client: &Client, change: &ChangeArgs) -> Result<bool> {
    let mut all_valid = true;
    for body in change.bodies()? {
        let answer = client.post("/M2M/ValidateBulkChange", Some(&body), &new_idempotency_key()).await?;
        if answer.status != 200 {
            bail!("{}", problem_text(&answer.body));
        }
        let counts = &answer.body["Counts"];
        println!("valid {}, invalid {}, duplicates {}", counts["Valid"], counts["Invalid"], counts["Duplicates"]);
        print_devices_refused(&answer.body);
        all_valid &= counts["Invalid"] == 0;
    }
    Ok(all_valid)
}

const FINAL: [&str; 4] = ["PROCESSED", "ERROR", "CANCELLED", "ABORTED"];

fn counts_of(status: &Value) -> BTreeMap<String, i64> {
    status["Counts"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0))).collect())
        .unwrap_or_default()
}

fn counts_text(counts: &BTreeMap<String, i64>) -> String {
    counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// `watch`: progress until the bulk change is final (or only scheduled rows remain). Returns whether any row
/// failed (API_FAILED or ERROR).
pub async fn watch(client: &Client, id: i64) -> Result<bool> {
    let terminal = std::io::stdout().is_terminal();
    let mut status = client.status(id).await?;
    let total: i64 = counts_of(&status).values().sum();
    let bar = if terminal {
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} bulk change {prefix} [{bar:40}] {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(id.to_string());
        Some(bar)
    } else {
        None
    };
    let start = Instant::now();
    let mut last_line = String::new();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        let counts = counts_of(&status);
        let done: i64 = counts
            .iter()
            .filter(|(k, _)| FINAL.contains(&k.as_str()) || k.as_str() == "API_FAILED")
            .map(|(_, v)| v)
            .sum();
        let bulk = status["Status"].as_str().unwrap_or("?").to_string();
        // A pause waits for a person: watch says why and stops (resume, then watch again).
        let settled = FINAL.contains(&bulk.as_str()) || bulk == "SCHEDULED" || bulk == "PAUSED";
        match &bar {
            Some(bar) => {
                bar.set_position(u64::try_from(done).unwrap_or(0));
                bar.set_message(counts_text(&counts));
            }
            None => {
                // Plain lines for logs and pipes: one when the counts change, at most one a second.
                let line = counts_text(&counts);
                if line != last_line && (settled || last_print.elapsed() >= Duration::from_secs(1)) {
                    let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                    println!("bulk change {id}: {bulk}  {done}/{total} rows  {rate:.0} rows/s  {line}");
                    last_line = line;
                    last_print = Instant::now();
                }
            }
        }
        if settled {
            if let Some(bar) = &bar {
                // The summary line below says it all; the bar (on standard error) goes.
                bar.finish_and_clear();
            }
            let failed = counts.get("API_FAILED").copied().unwrap_or(0) + counts.get("ERROR").copied().unwrap_or(0);
            println!("bulk change {id} {bulk}: {}", counts_text(&counts));
            if let Some(paused) = status["Paused"].as_object() {
                let text = |k: &str| paused.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                println!(
                    "  paused by {} ({}) since {}: `bulkchange resume {id}` goes on",
                    text("By"),
                    text("Reason"),
                    text("Since")
                );
            }
            if let Some(reason) = status["AbortedReason"].as_str() {
                println!("  {reason}");
            }
            if let Some(pace) = status["Rollout"]["MaxPerMinute"].as_i64() {
                println!("  pace: at most {pace} devices a minute");
            }
            std::io::stdout().flush().ok();
            return Ok(failed > 0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        status = client.status(id).await?;
    }
}

/// `results`: the rows as CSV, to `output` or standard output; returns how many rows.
pub async fn results(client: &Client, id: i64, status: Option<&str>, output: Option<&Path>) -> Result<usize> {
    let query = status.map(|s| format!("?status={s}")).unwrap_or_default();
    let mut response = client.get(&format!("/M2M/BulkChange/{id}/Results{query}")).await?;
    if !response.status().is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!("{}", problem_text(&body));
    }
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?),
        None => Box::new(std::io::stdout()),
    };
    let mut lines = 0usize;
    while let Some(chunk) = response.chunk().await.context("reading the export")? {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        sink.write_all(&chunk)?;
    }
    sink.flush()?;
    Ok(lines.saturating_sub(1))
}

/// `retry` / `cancel`: a POST on a bulk change; prints the answer.
pub async fn act(client: &Client, id: i64, action: &str, key: Option<String>) -> Result<Value> {
    let key = key.unwrap_or_else(new_idempotency_key);
    let answer = client.post(&format!("/M2M/BulkChange/{id}/{action}"), None, &key).await?;
    if !(200..300).contains(&answer.status) {
        bail!("{}", problem_text(&answer.body));
    }
    Ok(answer.body)
}

/// `smoke`: the post-deploy check. The API answers `/health` without a token; the token is accepted and the
/// database read (a page of bulk changes); a dry run of `body` goes through intake (a refusal of the request itself,
/// a 4xx problem other than 401/403, still proves that path); the newest bulk change's status is read (or an
/// unknown one is a 404). Prints one line per step; returns an error at the first step that fails.
pub async fn smoke(client: &Client, body: &Value) -> Result<()> {
    let step = |name: &str, started: Instant, outcome: &str| {
        println!("ok   {name:<28} {outcome} ({} ms)", started.elapsed().as_millis());
    };
    let started = Instant::now();
    let response = client.get("/health").await?;
    if response.status() != 200 {
        bail!("GET /health answered {}", response.status());
    }
    step("health", started, "200");

    let started = Instant::now();
    let response = client.get("/M2M/BulkChanges?page=1&pageSize=1").await?;
    let status = response.status().as_u16();
    let page: Value = response.json().await.unwrap_or(Value::Null);
    match status {
        200 => step("token and database", started, &format!("200, {} bulk change(s)", page["Total"])),
        401 | 403 => bail!("the token was refused ({status}): {}", problem_text(&page)),
        _ => bail!("listing bulk changes answered {status}: {}", problem_text(&page)),
    }

    let started = Instant::now();
    let answer = client.post("/M2M/ValidateBulkChange", Some(body), &new_idempotency_key()).await?;
    match answer.status {
        200 => {
            let counts = &answer.body["Counts"];
            step("dry run", started, &format!("200, valid {}, invalid {}", counts["Valid"], counts["Invalid"]));
        }
        401 | 403 => bail!("the dry run's token was refused ({}): {}", answer.status, problem_text(&answer.body)),
        400..=499 => step("dry run", started, &format!("{} {}", answer.status, problem_text(&answer.body))),
        _ => bail!("the dry run answered {}: {}", answer.status, problem_text(&answer.body)),
    }

    let started = Instant::now();
    match page["Items"][0]["BulkChangeId"].as_i64() {
        Some(id) => {
            let status = client.status(id).await?;
            step("status", started, &format!("bulk change {id} {}", status["Status"]));
        }
        None => {
            let response = client.get("/M2M/BulkChangeStatus/0").await?;
            if response.status() != 404 {
                bail!("the status of an unknown bulk change answered {}, not 404", response.status());
            }
            step("status", started, "404 for an unknown bulk change (none exists yet)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_is_one_column_or_a_header_with_per_device_columns() {
        let plain = parse_csv("8901\n8902\n\n").expect("plain");
        assert_eq!(plain.iter().map(|d| d.iccid.as_str()).collect::<Vec<_>>(), vec!["8901", "8902"]);
        let swaps = parse_csv("NewICCID,ICCID\n8999,8901\n,8902\n").expect("header");
        assert_eq!(swaps[0], CsvDevice { iccid: "8901".into(), new_iccid: Some("8999".into()), new_imei: None });
        assert_eq!(swaps[1].new_iccid, None);
        assert!(parse_csv("ICCID,NewIMEI\n,3500\n").is_err(), "a line without its ICCID is refused");
    }

    #[test]
    fn flags_make_the_block_of_the_change_type() {
        let args = ChangeArgs {
            service_provider: Some(10),
            change_type: Some("StatusUpdate".into()),
            target_status: Some("Active".into()),
            devices: vec!["8901".into()],
            ..Default::default()
        };
        assert_eq!(
            args.bodies().expect("body"),
            vec![json!({"ServiceProviderId": 10, "ChangeType": 3, "StatusUpdate": {"TargetStatus": "Active"},
                        "Devices": ["8901"]})]
        );
        assert!(ChangeArgs { change_type: Some("Sleep".into()), ..Default::default() }.bodies().is_err());
    }
}
