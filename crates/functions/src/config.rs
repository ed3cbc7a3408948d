//! Configuration of the functions, from the environment, read in one place.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Sqlite(PathBuf),
    /// An ADO.NET connection string (`Server=tcp:...;Database=...;User Id=...;Password=...`). Never logged.
    SqlServer(String),
    /// The ARN of a Secrets Manager secret holding the connection string: read at start, and again when the
    /// server refuses a login (a rotated password).
    SqlServerSecret(String),
}

#[derive(Clone)]
pub struct FunctionConfig {
    pub database: Database,
    /// SQS queue URL; absent means the embedded queue in the SQLite file (local invocation only).
    pub queue_url: Option<String>,
    pub email_from: String,
    pub email_to: Vec<String>,
    /// Where the local notifier writes when SES is not configured (no `EMAIL_FROM`).
    pub outbox_dir: PathBuf,
    pub max_devices: usize,
    /// SQL Server connections per execution environment (`DATABASE_POOL_SIZE`, default 4). The API handles one
    /// request at a time per environment, so its reserved concurrency times this is what the server must accept.
    pub pool_size: usize,
    /// How long a carrier credential read from Secrets Manager is reused (`CARRIER_SECRET_TTL_SECONDS`, 300).
    pub carrier_secret_ttl: std::time::Duration,
    /// The S3 bucket exports too large for an inline answer are written to (`EXPORT_BUCKET`); none: every
    /// export is answered inline, which API Gateway cuts at 6 MB.
    pub export_bucket: Option<String>,
    /// Largest export answered inline (`EXPORT_INLINE_LIMIT_BYTES`, 5 MiB).
    pub export_inline_limit: usize,
    /// How long an export's presigned URL works (`EXPORT_URL_TTL_SECONDS`, 900).
    pub export_url_ttl: std::time::Duration,
    /// The worker's and scheduler's settings, read by the same module as `bulkchange serve` reads them
    /// (`engine::settings`: lease, rows in flight, fan-out, ThingSpace waits, ...).
    pub settings: engine::Settings,
}

impl std::fmt::Debug for FunctionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let database = match &self.database {
            Database::Sqlite(p) => format!("sqlite://{}", p.display()),
            Database::SqlServer(_) => "sqlserver://***".to_string(),
            Database::SqlServerSecret(arn) => format!("sqlserver from secret {arn}"),
        };
        f.debug_struct("FunctionConfig")
            .field("database", &database)
            .field("queue_url", &self.queue_url)
            .field("email_from", &self.email_from)
            .field("email_to", &self.email_to)
            .field("max_devices", &self.max_devices)
            .field("pool_size", &self.pool_size)
            .field("carrier_secret_ttl", &self.carrier_secret_ttl)
            .field("export_bucket", &self.export_bucket)
            .field("export_inline_limit", &self.export_inline_limit)
            .field("export_url_ttl", &self.export_url_ttl)
            .field("settings", &self.settings)
            .finish()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Parses `DATABASE_URL`: `sqlite://PATH`, or a SQL Server ADO string.
pub fn parse_database(url: &str) -> Result<Database> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    let lower = url.to_ascii_lowercase();
    if lower.contains("server=") || lower.contains("data source=") {
        return Ok(Database::SqlServer(url.to_string()));
    }
    bail!("DATABASE_URL must be sqlite://PATH or a SQL Server connection string (Server=...;Database=...)")
}

impl FunctionConfig {
    /// Reads the environment; the SQL Server connection string comes from Secrets Manager
    /// (`DATABASE_SECRET_ARN`) unless `DATABASE_URL` is set.
    pub fn from_env() -> Result<Self> {
        let database = match (var("DATABASE_URL"), var("DATABASE_SECRET_ARN")) {
            (Some(url), _) => parse_database(&url)?,
            (None, Some(arn)) => Database::SqlServerSecret(arn),
            (None, None) => bail!("set DATABASE_SECRET_ARN (AWS) or DATABASE_URL (local)"),
        };
        let number = |name: &str, default: usize| -> Result<usize> {
            match var(name) {
                Some(v) => v.parse().with_context(|| format!("{name} '{v}' is not a whole number")),
                None => Ok(default),
            }
        };
        let max_devices =
            ::api::check_max_devices(number("MAX_DEVICES_PER_BULK_CHANGE", 10_000)?).map_err(anyhow::Error::msg)?;
        let pool_size = number("DATABASE_POOL_SIZE", 4)?;
        if pool_size == 0 {
            bail!("DATABASE_POOL_SIZE must be at least 1");
        }
        let carrier_secret_ttl = std::time::Duration::from_secs(number("CARRIER_SECRET_TTL_SECONDS", 300)? as u64);
        let export_inline_limit = number("EXPORT_INLINE_LIMIT_BYTES", ::api::export::DEFAULT_INLINE_LIMIT)?;
        let export_url_ttl = std::time::Duration::from_secs(number("EXPORT_URL_TTL_SECONDS", 900)? as u64);
        Ok(Self {
            database,
            queue_url: var("QUEUE_URL"),
            email_from: var("EMAIL_FROM").unwrap_or_default(),
            email_to: var("ERROR_EMAIL_TO")
                .map(|v| v.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
            outbox_dir: PathBuf::from(var("OUTBOX_DIR").unwrap_or_else(|| "/tmp/outbox".into())),
            max_devices,
            pool_size,
            carrier_secret_ttl,
            export_bucket: var("EXPORT_BUCKET"),
            export_inline_limit,
            export_url_ttl,
            settings: engine::Settings::from_env()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_recognised() {
        assert_eq!(parse_database("sqlite:///tmp/x.db").unwrap(), Database::Sqlite("/tmp/x.db".into()));
        assert!(matches!(
            parse_database("Server=tcp:db,1433;Database=amop;User Id=sa;Password=x").unwrap(),
            Database::SqlServer(_)
        ));
        assert!(parse_database("postgres://x").is_err());
    }

    #[test]
    fn debug_never_shows_the_connection_string() {
        let config = FunctionConfig {
            database: Database::SqlServer("Server=db;Password=hunter2".into()),
            queue_url: None,
            email_from: String::new(),
            email_to: vec![],
            outbox_dir: "/tmp".into(),
            max_devices: 1,
            pool_size: 1,
            carrier_secret_ttl: std::time::Duration::ZERO,
            export_bucket: None,
            export_inline_limit: 1,
            export_url_ttl: std::time::Duration::ZERO,
            settings: engine::Settings::from_lookup(|_| None).expect("defaults"),
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
