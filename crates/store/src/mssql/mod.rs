//! The production store: SQL Server through tiberius, calling the stored procedures in `infra/sql/` with
//! parameters only. A small pool of connections; every procedure that writes runs `SET XACT_ABORT ON`.
//!
//! TLS: tiberius 0.13 with its `rustls` feature (rustls 0.23, the same stack as reqwest and the AWS SDK), not
//! native-tls/OpenSSL: one TLS implementation in the Lambda binaries and no system library to ship.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use domain::rules::{CarrierRatePlan, DeviceRecord, DeviceStatusDef, ImeiRange};
use domain::{BulkStatus, ChangeType, DeviceAttribute, Integration, PortalType, RowStatus, bulk_status_from_rows};
use engine::ports::*;
use tiberius::{Client, Config, Query, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::secrets::{SecretReferences, SecretSource};
use crate::seed::Seed;

pub(crate) type Conn = Client<Compat<TcpStream>>;

/// A procedure call with its parameters bound in order (`@P1`, `@P2`, ...).
macro_rules! proc_call {
    ($sql:expr $(, $arg:expr)* $(,)?) => {{
        let mut q = Query::new($sql);
        $(q.bind($arg);)*
        q
    }};
}
const PROCESSED_BY: &str = "AltaworxDeviceBulkChange";

/// Error 50409 is our procedures' refusal (`THROW 50409`): a rule the database keeps, not a failure.
const REFUSED: u32 = 50409;
/// SQL Server chose this transaction as a deadlock victim and rolled it back: safe to run again.
const DEADLOCK_VICTIM: u32 = 1205;

fn server_code(e: &tiberius::error::Error) -> Option<u32> {
    match e {
        tiberius::error::Error::Server(t) => Some(t.code()),
        _ => None,
    }
}

fn db(context: &'static str) -> impl Fn(tiberius::error::Error) -> StoreError {
    move |e| match &e {
        tiberius::error::Error::Server(t) if t.code() == REFUSED => StoreError::Conflict(t.message().to_string()),
        _ => StoreError::Database { context, message: e.to_string() },
    }
}

/// What every connection sets first, as ODBC drivers do: filtered indexes (UX_DeviceBulkChange_OpenRetry,
/// UX_RevService_ActiveDevice) refuse writes from sessions with other settings.
const SESSION_OPTIONS: &str = "SET ANSI_NULLS ON; SET ANSI_PADDING ON; SET ANSI_WARNINGS ON; SET ARITHABORT ON;
     SET CONCAT_NULL_YIELDS_NULL ON; SET QUOTED_IDENTIFIER ON; SET NUMERIC_ROUNDABORT OFF;";

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

fn utc(t: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    t.map(|n| n.and_utc())
}

/// The SQL Server store over a pool of a few connections (`pool`: deadpool's managed pool with our tiberius 0.13
/// manager; deadpool-tiberius and bb8-tiberius pin tiberius 0.12).
pub struct MssqlStore {
    pool: pool::Pool,
    secrets: SecretReferences,
    /// Requests sent (one procedure call, or one group of them, each): the bench's round trips.
    round_trips: std::sync::atomic::AtomicU64,
}

impl MssqlStore {
    /// Connects with an ADO.NET connection string (`Server=tcp:host,1433;Database=...;User Id=...;Password=...;
    /// TrustServerCertificate=true` for a local container).
    pub async fn connect(ado: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::start(ado, None, pool_size).await
    }

    /// Connects with the connection string held by the secret `arn`, and reads that secret again whenever the
    /// server refuses a login.
    pub async fn connect_with_secret(
        source: Arc<dyn SecretSource>,
        arn: &str,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let ado = source
            .read(arn)
            .await
            .map_err(|message| StoreError::Database { context: "read the database secret", message })?;
        Self::start(&ado, Some((source, arn.to_string())), pool_size).await
    }

    async fn start(
        ado: &str,
        rotation: Option<(Arc<dyn SecretSource>, String)>,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let config = Config::from_ado_string(ado).map_err(db("parse connection string"))?;
        let store = Self {
            pool: pool::pool(pool::TdsManager::new(config, rotation), pool_size)?,
            secrets: SecretReferences::default(),
            round_trips: std::sync::atomic::AtomicU64::new(0),
        };
        let lease = store.lease().await?;
        lease.give_back().await;
        Ok(store)
    }

    /// Requests this store has sent so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Carrier credentials stored as Secrets Manager references are read through `secrets`.
    pub fn with_secret_references(mut self, secrets: SecretReferences) -> Self {
        self.secrets = secrets;
        self
    }

    /// Runs one procedure call and returns all its result sets. The connection goes back to the pool only on success.
    async fn exec(&self, context: &'static str, query: Query<'_>) -> Result<Vec<Vec<Row>>, StoreError> {
        match self.lease().await {
            Ok(lease) => Self::run(lease, query).await.map_err(db(context)),
            Err(e) => Err(e),
        }
    }

    /// `exec` with the server's error as it came, for callers that act on its number.
    async fn exec_raw(&self, query: Query<'_>) -> Result<Vec<Vec<Row>>, tiberius::error::Error> {
        let lease = self
            .lease()
            .await
            .map_err(|e| tiberius::error::Error::Io { kind: std::io::ErrorKind::Other, message: e.to_string() })?;
        Self::run(lease, query).await
    }

    async fn run(mut lease: Lease<'_>, query: Query<'_>) -> Result<Vec<Vec<Row>>, tiberius::error::Error> {
        lease.store.round_trips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = lease
            .conn()
            .map_err(|e| tiberius::error::Error::Io { kind: std::io::ErrorKind::Other, message: e.to_string() })?;
        let result = match query.query(conn).await {
            Ok(stream) => stream.into_results().await,
            Err(e) => Err(e),
        };
        // A refusal (50409) leaves a healthy connection; any other error drops it.
        if result.is_ok() || result.as_ref().err().and_then(server_code) == Some(REFUSED) {
            lease.give_back().await;
        }
        result
    }

    async fn first(&self, context: &'static str, query: Query<'_>) -> Result<Vec<Row>, StoreError> {
        Ok(self.exec(context, query).await?.into_iter().next().unwrap_or_default())
    }

    async fn customer_plan_ref(
        &self,
        context: &'static str,
        sql: &'static str,
        tenant_id: i64,
        id: i64,
    ) -> StoreResult<Option<CustomerPlanRef>> {
        let q = proc_call!(sql, tenant_id, id,);
        self.first(context, q)
            .await?
            .first()
            .map(|r| Ok(CustomerPlanRef { id: need(r.get("Id"), "Id")?, name: text(r, "Name").unwrap_or_default() }))
            .transpose()
    }

    /// Runs the scripts of `infra/sql/` (batches separated by `GO`): schema, reference data, procedures.
    pub async fn apply_scripts(&self, scripts: &[&str]) -> Result<(), StoreError> {
        let mut lease = self.lease().await?;
        for script in scripts {
            for batch in split_batches(script) {
                lease
                    .conn()?
                    .simple_query(batch)
                    .await
                    .map_err(db("apply script"))?
                    .into_results()
                    .await
                    .map_err(db("apply script"))?;
            }
        }
        lease.give_back().await;
        Ok(())
    }

    /// The server's id of the session a call runs on (`@@SPID`; pool tests only).
    pub async fn session_id_for_tests(&self) -> Result<i64, StoreError> {
        let rows = self.first("read the session id", Query::new("SELECT CAST(@@SPID AS BIGINT) AS Spid")).await?;
        rows.first().and_then(|r| r.get::<i64, _>("Spid")).ok_or_else(|| StoreError::Corrupt("no session id".into()))
    }

    /// Deletes every row but the reference data (contract tests only).
    pub async fn wipe_for_tests(&self) -> Result<(), StoreError> {
        let sql = "DELETE FROM dbo.WebhookDelivery; DELETE FROM dbo.Webhook; DELETE FROM dbo.DeviceChangeLock; DELETE FROM dbo.RevServiceCreation; DELETE FROM dbo.IdempotencyKey; DELETE FROM dbo.RateBudget;
                   DELETE FROM dbo.Device_CustomerRatePlanOrRatePool_Queue; DELETE FROM dbo.DeviceBulkChangeLog;
                   DELETE FROM dbo.ThingSpaceCallBackResponseLog; DELETE FROM dbo.ThingSpaceAuthentication;
                   DELETE FROM dbo.DeviceActionHistory; DELETE FROM dbo.Device_Tenant;
                   DELETE FROM dbo.M2M_DeviceChange; DELETE FROM dbo.Mobility_DeviceChange; DELETE FROM dbo.DeviceBulkChange; DELETE FROM dbo.RevService; DELETE FROM dbo.Device;
                   DELETE FROM dbo.CustomerRatePlan; DELETE FROM dbo.CustomerRatePool; DELETE FROM dbo.RevCustomer; DELETE FROM dbo.JasperCarrierRatePlan;
                   DELETE FROM dbo.ServiceProvider; DELETE FROM dbo.Tenant;";
        self.apply_scripts(&[sql]).await
    }

    /// Points a service provider at another carrier URL (the local stack's simulators).
    pub async fn set_base_url(&self, service_provider_id: i64, base_url: &str) -> Result<(), StoreError> {
        let q =
            proc_call!("UPDATE dbo.ServiceProvider SET BaseUrl = @P1 WHERE Id = @P2", base_url, service_provider_id,);
        self.exec("set base url", q).await.map(|_| ())
    }

    /// Test helper: the number of rows of every table of the schema, by name.
    pub async fn table_row_counts(&self) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let sql = TABLES
            .iter()
            .map(|t| format!("SELECT N'{t}' AS Name, COUNT_BIG(*) AS N FROM dbo.{t}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let rows = self.first("count rows", Query::new(sql)).await?;
        rows.iter().map(|r| Ok((text(r, "Name").unwrap_or_default(), need(r.get::<i64, _>("N"), "N")?))).collect()
    }

    /// Bench helper: who holds leases on a bulk change's PROCESSING rows (M2M), and how many each.
    pub async fn lease_holders(&self, bulk_change_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let q = proc_call!(
            "SELECT LeaseOwner, COUNT_BIG(*) AS N FROM dbo.M2M_DeviceChange WHERE BulkChangeId = @P1 AND Status = N'PROCESSING'
             AND LeaseOwner IS NOT NULL GROUP BY LeaseOwner ORDER BY LeaseOwner",
            bulk_change_id,
        );
        let rows = self.first("lease holders", q).await?;
        rows.iter().map(|r| Ok((text(r, "LeaseOwner").unwrap_or_default(), need(r.get::<i64, _>("N"), "N")?))).collect()
    }

    /// Fills an empty database from a seed (tests and first-time set-up). False when tenants exist.
    pub async fn load_seed(&self, seed: &Seed) -> Result<bool, StoreError> {
        let rows = self.first("count tenants", Query::new("SELECT COUNT_BIG(*) AS N FROM dbo.Tenant")).await?;
        if rows.first().and_then(|r| r.get::<i64, _>("N")).unwrap_or(0) > 0 {
            return Ok(false);
        }
        for t in &seed.tenants {
            let q = proc_call!("INSERT INTO dbo.Tenant (Id, Name) VALUES (@P1, @P2)", t.id, t.name.as_str(),);
            self.exec("seed tenant", q).await?;
        }
        for sp in &seed.service_providers {
            let q = proc_call!(
                "INSERT INTO dbo.ServiceProvider (Id, TenantId, IntegrationId, Name, BaseUrl, Username, Secret, ClientCode, SubscriptionKey, WriteIsEnabled, RateLimitPerSecond, DefaultProviderId, CarrierSettings)
                 VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13)",
                sp.id,
                sp.tenant_id,
                sp.integration_id,
                sp.name.as_str(),
                sp.base_url.as_str(),
                sp.username.as_str(),
                sp.secret.as_str(),
                sp.client_code.as_deref(),
                sp.subscription_key.as_deref(),
                sp.write_is_enabled,
                sp.rate_limit_per_second,
                sp.default_provider_id,
                sp.carrier_settings.as_ref().map(|v| v.to_string()),
            );
            self.exec("seed service provider", q).await?;
            if let Some(t) = &sp.thing_space {
                let q = proc_call!(
                    "INSERT INTO dbo.ThingSpaceAuthentication (ServiceProviderId, AppKey, AppSecret, AccountName, CallbackUsername, CallbackPassword)
                     VALUES (@P1, @P2, @P3, @P4, @P5, @P6)",
                    sp.id,
                    t.app_key.as_str(),
                    t.app_secret.as_str(),
                    t.account_name.as_str(),
                    t.callback_username.as_str(),
                    t.callback_password.as_str(),
                );
                self.exec("seed ThingSpace settings", q).await?;
            }
        }
        for p in &seed.carrier_rate_plans {
            let q = proc_call!(
                "INSERT INTO dbo.JasperCarrierRatePlan (Id, ServiceProviderId, RatePlanCode, PlanMB, BaseRate, JasperRatePlanId, PlanUuid) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7)",
                p.id,
                p.service_provider_id,
                p.rate_plan_code.as_str(),
                p.plan_mb,
                p.base_rate,
                p.jasper_rate_plan_id,
                p.plan_uuid.as_deref(),
            );
            self.exec("seed rate plan", q).await?;
        }
        for r in &seed.imei_ranges {
            let q = proc_call!(
                "INSERT INTO dbo.IMEI_DeviceType_CarrierRatePlan (Manufacturer, Model, FromIMEI, ToIMEI, SIMType, IsActive) VALUES (@P1, @P2, @P3, @P4, @P5, @P6)",
                r.manufacturer.as_str(),
                r.model.as_str(),
                r.from_imei.as_str(),
                r.to_imei.as_str(),
                r.sim_type.as_str(),
                r.is_active,
            );
            self.exec("seed IMEI range", q).await?;
        }
        for c in &seed.rev_customers {
            let mut q =
                Query::new("INSERT INTO dbo.RevCustomer (TenantId, RevCustomerId, Name) VALUES (@P1, @P2, @P3)");
            q.bind(c.tenant_id);
            q.bind(c.rev_customer_id.as_str());
            q.bind(c.name.as_str());
            self.exec("seed Rev customer", q).await?;
        }
        for chunk in seed.devices.chunks(SEED_DEVICES_PER_REQUEST) {
            self.seed_devices(chunk).await?;
        }
        for (sql, plans) in [
            ("INSERT INTO dbo.CustomerRatePlan (Id, TenantId, Name) VALUES (@P1, @P2, @P3)", &seed.customer_rate_plans),
            ("INSERT INTO dbo.CustomerRatePool (Id, TenantId, Name) VALUES (@P1, @P2, @P3)", &seed.customer_rate_pools),
        ] {
            for p in plans {
                let q = proc_call!(sql, p.id, p.tenant_id, p.name.as_str(),);
                self.exec("seed customer plan", q).await?;
            }
        }
        for r in &seed.rev_services {
            let mut q = Query::new(
                "INSERT INTO dbo.RevService (TenantId, DeviceId, RevServiceId, RevCustomerId, IsActive, CreatedDate)
                 SELECT @P1, Id, @P3, @P4, 1, SYSUTCDATETIME() FROM dbo.Device WHERE TenantId = @P1 AND ICCID = @P2;
                 SELECT @@ROWCOUNT AS N;",
            );
            q.bind(r.tenant_id);
            q.bind(r.iccid.as_str());
            q.bind(r.rev_service_id);
            q.bind(r.rev_customer_id.as_str());
            let sets = self.exec("seed Rev service", q).await?;
            if sets.last().and_then(|s| s.first()).and_then(|r| r.get::<i32, _>("N")).unwrap_or(0) != 1 {
                return Err(StoreError::Seed(format!(
                    "Rev service {}: device {} of tenant {} not found",
                    r.rev_service_id, r.iccid, r.tenant_id
                )));
            }
        }
        Ok(true)
    }
}

fn device_list_query(
    tenant_id: i64,
    filter: &DeviceFilter,
    after_id: i64,
    offset: u32,
    limit: u32,
    count_only: bool,
) -> Query<'static> {
    let mut q = Query::new(
        "EXEC dbo.usp_Device_List @TenantId = @P1, @Status = @P2, @CarrierRatePlan = @P3, @RevCustomerId = @P4, @TextPattern = @P5,
              @AfterId = @P6, @Offset = @P7, @Limit = @P8, @CountOnly = @P9",
    );
    q.bind(tenant_id);
    q.bind(filter.status.clone());
    q.bind(filter.carrier_rate_plan.clone());
    q.bind(filter.rev_customer_id.clone());
    q.bind(filter.text.as_deref().map(|t| {
        let escaped = t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_").replace('[', "\\[");
        format!("%{escaped}%")
    }));
    q.bind(after_id);
    q.bind(offset.min(i32::MAX as u32) as i32);
    q.bind(limit.min(i32::MAX as u32) as i32);
    q.bind(count_only);
    q
}

/// A text as it travels inside a JSON argument that a procedure reads with `OPENJSON`: `%`, `"`, `\\` and the
/// control characters percent-encoded (`%22`), so the JSON holds no escape. Babelfish's `OPENJSON` returns a
/// string's escapes as written (`\"`, `\\`, `\n`) where SQL Server decodes them; without escapes both read the
/// same text, and `dbo.fn_JsonText` decodes it on both.
fn json_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' || c == '"' || c == '\\' || (c as u32) < 0x20 {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Every table of `infra/sql/001_schema.sql` (the engine may report its own spelling of the names).
const TABLES: [&str; 24] = [
    "Tenant",
    "Integration",
    "ServiceProvider",
    "DeviceStatus",
    "JasperCarrierRatePlan",
    "IMEI_DeviceType_CarrierRatePlan",
    "RevCustomer",
    "Device",
    "RevService",
    "DeviceBulkChange",
    "M2M_DeviceChange",
    "DeviceBulkChangeLog",
    "CustomerRatePlan",
    "CustomerRatePool",
    "Device_CustomerRatePlanOrRatePool_Queue",
    "Device_Tenant",
    "DeviceActionHistory",
    "Mobility_DeviceChange",
    "ThingSpaceAuthentication",
    "ThingSpaceCallBackResponseLog",
    "DeviceChangeLock",
    "RevServiceCreation",
    "IdempotencyKey",
    "RateBudget",
];

/// Splits a T-SQL script on lines that hold only `GO`.
pub(crate) fn split_batches(script: &str) -> Vec<String> {
    let mut batches = vec![String::new()];
    for line in script.lines() {
        if line.trim().eq_ignore_ascii_case("GO") {
            batches.push(String::new());
        } else if let Some(current) = batches.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    batches.into_iter().filter(|b| !b.trim().is_empty()).collect()
}

fn text(row: &Row, col: &str) -> Option<String> {
    row.get::<&str, _>(col).map(str::to_string)
}

/// A text column only some result sets carry (`None` where absent, rather than a panic).
fn text_if_present(row: &Row, col: &str) -> Option<String> {
    row.try_get::<&str, _>(col).ok().flatten().map(str::to_string)
}

fn need<T>(value: Option<T>, what: &str) -> Result<T, StoreError> {
    value.ok_or_else(|| StoreError::Corrupt(format!("column {what} is NULL or missing")))
}

fn service_provider(row: &Row) -> Result<ServiceProvider, StoreError> {
    let integration_id = need(row.get::<i64, _>("IntegrationId"), "IntegrationId")?;
    Ok(ServiceProvider {
        id: need(row.get("Id"), "Id")?,
        tenant_id: need(row.get("TenantId"), "TenantId")?,
        integration: Integration::from_id(integration_id)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown integration {integration_id}")))?,
        name: text(row, "Name").unwrap_or_default(),
        base_url: text(row, "BaseUrl").unwrap_or_default(),
        username: text(row, "Username").unwrap_or_default(),
        secret: Secret::new(text(row, "Secret").unwrap_or_default()),
        client_code: text(row, "ClientCode"),
        subscription_key: text(row, "SubscriptionKey").map(Secret::new),
        write_is_enabled: row.get("WriteIsEnabled").unwrap_or(false),
        rate_limit_per_second: row.get("RateLimitPerSecond").unwrap_or(1.0),
        default_provider_id: row.get("DefaultProviderId"),
        carrier_settings: text(row, "CarrierSettings"),
        thingspace: text(row, "AppKey").map(|app_key| ThingSpaceSettings {
            app_key,
            app_secret: Secret::new(text(row, "AppSecret").unwrap_or_default()),
            account_name: text(row, "AccountName").unwrap_or_default(),
            callback_username: text(row, "CallbackUsername").unwrap_or_default(),
            callback_password: Secret::new(text(row, "CallbackPassword").unwrap_or_default()),
            login_refused: text(row, "LoginRefusedReason"),
        }),
    })
}

fn device(row: &Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        id: need(row.get("Id"), "Id")?,
        tenant_id: need(row.get("TenantId"), "TenantId")?,
        service_provider_id: need(row.get("ServiceProviderId"), "ServiceProviderId")?,
        iccid: need(text(row, "ICCID"), "ICCID")?,
        imei: text(row, "IMEI"),
        msisdn: text(row, "MSISDN"),
        eid: text(row, "EID"),
        device_status_id: need(row.get("DeviceStatusId"), "DeviceStatusId")?,
        carrier_rate_plan: text(row, "CarrierRatePlan"),
        communication_plan: text(row, "CommunicationPlan"),
        username: text(row, "Username"),
        last_usage_date: utc(row.get("LastUsageDate")),
        data_usage_mb: row.get("DataUsageMB").unwrap_or(0.0),
        rev_customer_id: text(row, "RevCustomerId"),
        is_active: row.get("IsActive").unwrap_or(false),
        is_deleted: row.get("IsDeleted").unwrap_or(true),
        customer_rate_plan_id: row.get("CustomerRatePlanId"),
        customer_rate_pool_id: row.get("CustomerRatePoolId"),
        customer_data_allocation_mb: row.get("CustomerDataAllocationMB"),
    })
}

fn bulk_change(row: &Row) -> Result<BulkChange, StoreError> {
    let id: i64 = need(row.get("Id"), "Id")?;
    let bad = |what: String| StoreError::Corrupt(format!("bulk change {id}: {what}"));
    let integration: i64 = need(row.get("IntegrationId"), "IntegrationId")?;
    let change_type: i64 = need(row.get("ChangeRequestTypeId"), "ChangeRequestTypeId")?;
    let status = need(text(row, "Status"), "Status")?;
    Ok(BulkChange {
        id,
        tenant_id: need(row.get("TenantId"), "TenantId")?,
        service_provider_id: need(row.get("ServiceProviderId"), "ServiceProviderId")?,
        integration: Integration::from_id(integration)
            .ok_or_else(|| bad(format!("unknown integration {integration}")))?,
        change_type: ChangeType::from_number(change_type)
            .ok_or_else(|| bad(format!("unknown change type {change_type}")))?,
        portal_type: PortalType::try_from(need(row.get::<i64, _>("PortalTypeId"), "PortalTypeId")?).map_err(bad)?,
        status: BulkStatus::parse(&status).ok_or_else(|| bad(format!("unknown status {status}")))?,
        request: serde_json::from_str(row.get::<&str, _>("ChangeRequest").unwrap_or("{}"))
            .map_err(|e| bad(format!("unreadable ChangeRequest: {e}")))?,
        created_by: text(row, "CreatedBy").unwrap_or_default(),
        created_at: need(utc(row.get("CreatedDate")), "CreatedDate")?,
        processed_at: utc(row.get("ProcessedDate")),
        retry_of: row.get("RetryOfBulkChangeId"),
    })
}

fn change_row(row: &Row) -> Result<DeviceChangeRow, StoreError> {
    let status = need(text(row, "Status"), "Status")?;
    Ok(DeviceChangeRow {
        id: need(row.get("Id"), "Id")?,
        bulk_change_id: need(row.get("BulkChangeId"), "BulkChangeId")?,
        device_id: row.get("DeviceId"),
        iccid: text(row, "ICCID").unwrap_or_default(),
        msisdn: text(row, "MSISDN"),
        status: RowStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("unknown row status {status}")))?,
        status_details: text(row, "StatusDetails"),
        claims: i64::from(row.get::<i32, _>("Claims").unwrap_or(0)),
        processed_date: utc(row.get("ProcessedDate")),
        carrier_request_id: text(row, "CarrierRequestId"),
        carrier_requested_at: utc(row.get("CarrierRequestedAt")),
        carrier_result: text(row, "CarrierResult"),
        device: None,
        // Only the claim's result set carries it (the row's own change, for the worker).
        request: text_if_present(row, "RowRequest"),
    })
}

fn offset(page: u32, page_size: u32) -> i32 {
    ((i64::from(page.max(1)) - 1) * i64::from(page_size)).min(i64::from(i32::MAX)) as i32
}

/// The most rows (or audit entries) sent in one call of a group procedure.
const GROUP: usize = 500;

/// A date as `OPENJSON ... DATETIME2` reads it.
fn json_date(t: DateTime<Utc>) -> String {
    t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The procedure call completing one row (`@P1`..`@P21`, bound by `bind_completion`). The seeds' procedure names
/// where they fit; all share one implementation.
fn complete_call(c: &Completion) -> String {
    let u = &c.outcome.device_update;
    let procedure = if u.archive {
        "usp_DeviceBulkChange_Archival_ArchiveDevices"
    } else if u.customer_plan.is_some() {
        "usp_DeviceBulkChange_CustomerRatePlanChange_UpdateDevices"
    } else if u.rev_customer_id.is_some() {
        "usp_DeviceBulkChange_RevService_UpdateM2MChange"
    } else {
        "usp_DeviceBulkChange_StatusUpdate_UpdateDeviceRecords"
    };
    format!(
        "EXEC dbo.{procedure} @TenantId = @P1, @ChangeDetailId = @P2, @Worker = @P3, @BulkChangeId = @P19,
              @Status = @P4, @StatusDetails = @P5, @NewDeviceStatusId = @P6, @CarrierRatePlan = @P7, @CommunicationPlan = @P8,
              @RevCustomerId = @P9, @Username = @P10, @Archive = @P11, @ProcessedBy = @P12, @Now = @P13,
              @CustomerRatePlanId = @P14, @CustomerRatePoolId = @P15, @CustomerDataAllocationMB = @P16,
              @NewICCID = @P17, @NewIMEI = @P18, @NewMSISDN = @P20, @IpAddress = @P21, @HistoryDetails = @P22;"
    )
}

fn bind_completion(q: &mut Query<'_>, c: &Completion) {
    let u = &c.outcome.device_update;
    q.bind(c.tenant_id);
    q.bind(c.row_id);
    q.bind(c.worker.clone());
    q.bind(c.outcome.status.as_str());
    q.bind(c.outcome.details.clone());
    q.bind(u.device_status_id);
    q.bind(u.carrier_rate_plan.clone());
    q.bind(u.communication_plan.clone());
    q.bind(u.rev_customer_id.clone());
    q.bind(u.username.clone());
    q.bind(u.archive);
    q.bind(PROCESSED_BY);
    q.bind(naive(c.now));
    let plan = u.customer_plan.clone().unwrap_or_default();
    q.bind(plan.customer_rate_plan_id);
    q.bind(plan.customer_rate_pool_id);
    q.bind(plan.data_allocation_mb);
    q.bind(u.iccid.clone());
    q.bind(u.imei.clone());
    q.bind(c.bulk_change_id);
    q.bind(u.msisdn.clone());
    q.bind(u.ip_address.clone());
    q.bind(u.history.clone());
}

/// One row of `usp_DeviceBulkChange_CompleteRows`'s `@RowsJson`.
fn completion_json(seq: usize, c: &Completion) -> serde_json::Value {
    let u = &c.outcome.device_update;
    let plan = u.customer_plan.clone().unwrap_or_default();
    let text = |t: &Option<String>| t.as_deref().map(json_text);
    serde_json::json!({
        "Seq": seq, "TenantId": c.tenant_id, "BulkChangeId": c.bulk_change_id, "RowId": c.row_id,
        "Status": c.outcome.status.as_str(), "StatusDetails": json_text(&c.outcome.details),
        "NewDeviceStatusId": u.device_status_id, "CarrierRatePlan": text(&u.carrier_rate_plan),
        "CommunicationPlan": text(&u.communication_plan), "RevCustomerId": text(&u.rev_customer_id),
        "Username": text(&u.username), "Archive": u.archive, "CustomerRatePlanId": plan.customer_rate_plan_id,
        "CustomerRatePoolId": plan.customer_rate_pool_id, "CustomerDataAllocationMB": plan.data_allocation_mb,
        "NewICCID": text(&u.iccid), "NewIMEI": text(&u.imei), "NewMSISDN": text(&u.msisdn),
        "IpAddress": text(&u.ip_address), "HistoryDetails": text(&u.history), "Now": json_date(c.now),
    })
}

#[async_trait]
impl Store for MssqlStore {
    async fn close(&self) {
        // The idle connections say goodbye; the pool takes no new work.
        let conns = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        for conn in conns {
            if let Err(e) = conn.close().await {
                tracing::warn!(error = %e, "closing a SQL Server connection failed");
            }
        }
    }
}

// The adapter by concern, one file per port trait (after the macros above, which they use).
mod pool;
pub use pool::CHECK_IDLE_AFTER;
use pool::Lease;
use seed::SEED_DEVICES_PER_REQUEST;
mod bulk_changes;
mod carrier_waits;
mod devices;
mod idempotency;
mod leases;
mod outcomes;
mod pace;
mod reads;
mod reference;
mod rev_services;
mod rollouts;
mod seed;
mod webhooks;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::pool::{Login, OpenError, open_with_rotation};
    use super::*;

    fn refused() -> OpenError {
        OpenError::LoginRefused(StoreError::Database {
            context: "login",
            message: "Login failed for user 'app'".into(),
        })
    }

    /// A server that accepts only `accepts`, and a secret whose value is `secret` (or no secret at all).
    struct FakeLogin {
        accepts: &'static str,
        secret: Option<&'static str>,
        unreachable: bool,
        rereads: AtomicUsize,
    }

    impl FakeLogin {
        fn new(accepts: &'static str, secret: Option<&'static str>) -> Self {
            Self { accepts, secret, unreachable: false, rereads: AtomicUsize::new(0) }
        }
    }

    #[async_trait]
    impl Login for FakeLogin {
        type Conn = &'static str;
        async fn attempt(&self, fresh: Option<&str>) -> Result<&'static str, OpenError> {
            if self.unreachable {
                return Err(OpenError::Other(StoreError::Database { context: "connect", message: "timed out".into() }));
            }
            if fresh.unwrap_or("Password=old") == self.accepts { Ok("connection") } else { Err(refused()) }
        }
        async fn reread(&self) -> Option<Result<String, StoreError>> {
            self.rereads.fetch_add(1, Ordering::SeqCst);
            self.secret.map(|s| Ok(s.to_string()))
        }
    }

    #[tokio::test]
    async fn a_refused_login_reads_the_secret_again_and_logs_in_with_the_rotated_password() {
        let login = FakeLogin::new("Password=new", Some("Password=new"));
        let (conn, fresh) = open_with_rotation(&login).await.expect("logged in after the re-read");
        assert_eq!((conn, fresh.as_deref()), ("connection", Some("Password=new")));
        assert_eq!(login.rereads.load(Ordering::SeqCst), 1);

        let unchanged = FakeLogin::new("Password=old", Some("Password=new"));
        assert_eq!(open_with_rotation(&unchanged).await.expect("logged in").1, None);
        assert_eq!(unchanged.rereads.load(Ordering::SeqCst), 0, "a login that works reads no secret");
    }

    #[tokio::test]
    async fn the_secret_is_read_again_only_for_a_refused_login_and_only_once() {
        let still_wrong = FakeLogin::new("Password=newest", Some("Password=new"));
        let e = open_with_rotation(&still_wrong).await.expect_err("still refused");
        assert!(e.to_string().contains("Login failed"), "{e}");
        assert_eq!(still_wrong.rereads.load(Ordering::SeqCst), 1, "one re-read, not a loop that locks the login out");

        let mut unreachable = FakeLogin::new("Password=old", Some("Password=old"));
        unreachable.unreachable = true;
        assert!(open_with_rotation(&unreachable).await.is_err());
        assert_eq!(unreachable.rereads.load(Ordering::SeqCst), 0, "a network failure is not a rotation");

        let no_secret = FakeLogin::new("Password=new", None);
        let e = open_with_rotation(&no_secret).await.expect_err("nothing to re-read");
        assert!(e.to_string().contains("Login failed"), "{e}");
    }

    #[test]
    fn texts_inside_json_arguments_carry_no_escape() {
        assert_eq!(json_text("8901"), "8901");
        assert_eq!(json_text("a\"b\\c%d\r\n\u{1}é"), "a%22b%5Cc%25d%0D%0A%01é");
        let json = serde_json::to_string(&json_text("x\"\\\n\t%")).expect("json");
        assert!(!json[1..json.len() - 1].contains('\\'), "{json}");
    }

    #[test]
    fn scripts_split_on_go_lines_only() {
        let script = "CREATE TABLE a (x INT);\nGO\nSELECT 'GO' AS word;\n  go  \n\nGO\n";
        assert_eq!(
            split_batches(script),
            vec!["CREATE TABLE a (x INT);\n".to_string(), "SELECT 'GO' AS word;\n".to_string()]
        );
    }
}
