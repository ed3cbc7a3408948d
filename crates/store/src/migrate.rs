//! Versioned migrations of the SQL Server schema (`bulkchange migrate`).
//!
//! `infra/sql/NNN_name.sql` are versioned steps: each is applied once, in order, beyond the version the database
//! records in `dbo.SchemaVersion`, and is never edited once landed (a changed step is refused, naming it).
//! `infra/sql/R__procedures.sql` is repeatable: every procedure is dropped and created again, and the file is
//! applied after the versioned steps whenever its text differs from the one recorded.
//!
//! Each step runs in one transaction (T-SQL DDL is transactional on SQL Server and Babelfish alike; the guarded
//! baseline is the exception, see `Script::transactional`) under the session's application lock, and reads what
//! is recorded again once it holds the lock: two `migrate` runs at once apply each step once, and a step that
//! fails leaves nothing of itself behind. A database made by the unversioned
//! scripts of earlier releases (no `SchemaVersion`) takes the versioned steps without harm: 001 and 002 guard every
//! object they create.

use sha2::{Digest, Sha256};
use tiberius::Query;

use crate::mssql::{MssqlStore, split_batches};
use engine::ports::StoreError;

/// One script of `infra/sql/`.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    pub name: &'static str,
    /// `Some(n)` for a versioned step, `None` for the repeatable procedures.
    pub version: Option<u32>,
    /// Applied in one transaction. Only the baseline is not: its index guards catch "already exists", and a
    /// caught error leaves a transaction uncommittable on Babelfish; every object in it is guarded instead, so a
    /// run that failed half-way is completed by the next.
    pub transactional: bool,
    pub sql: &'static str,
}

/// Every script of `infra/sql/`, versioned steps in order, then the repeatable one. A test keeps this list equal
/// to the folder.
pub const SCRIPTS: &[Script] = &[
    Script {
        name: "001_schema.sql",
        version: Some(1),
        transactional: false,
        sql: include_str!("../../../infra/sql/001_schema.sql"),
    },
    Script {
        name: "002_seed_reference.sql",
        version: Some(2),
        transactional: true,
        sql: include_str!("../../../infra/sql/002_seed_reference.sql"),
    },
    Script {
        name: "003_work_tables.sql",
        version: Some(3),
        transactional: true,
        sql: include_str!("../../../infra/sql/003_work_tables.sql"),
    },
    Script {
        name: "004_claim_index.sql",
        version: Some(4),
        transactional: true,
        sql: include_str!("../../../infra/sql/004_claim_index.sql"),
    },
    Script {
        name: "005_history_details.sql",
        version: Some(5),
        transactional: true,
        sql: include_str!("../../../infra/sql/005_history_details.sql"),
    },
    Script {
        name: "006_notification_lease.sql",
        version: Some(6),
        transactional: true,
        sql: include_str!("../../../infra/sql/006_notification_lease.sql"),
    },
    Script {
        name: "007_rollout.sql",
        version: Some(7),
        transactional: true,
        sql: include_str!("../../../infra/sql/007_rollout.sql"),
    },
    Script {
        name: "008_webhooks.sql",
        version: Some(8),
        transactional: true,
        sql: include_str!("../../../infra/sql/008_webhooks.sql"),
    },
    Script {
        name: "009_before_values.sql",
        version: Some(9),
        transactional: true,
        sql: include_str!("../../../infra/sql/009_before_values.sql"),
    },
    Script {
        name: "010_row_request.sql",
        version: Some(10),
        transactional: true,
        sql: include_str!("../../../infra/sql/010_row_request.sql"),
    },
    Script {
        name: "011_rev_service_creator.sql",
        version: Some(11),
        transactional: true,
        sql: include_str!("../../../infra/sql/011_rev_service_creator.sql"),
    },
    Script {
        name: "012_before_cost_centers.sql",
        version: Some(12),
        transactional: true,
        sql: include_str!("../../../infra/sql/012_before_cost_centers.sql"),
    },
    Script {
        name: "R__procedures.sql",
        version: None,
        transactional: true,
        sql: include_str!("../../../infra/sql/R__procedures.sql"),
    },
];

/// The newest version `SCRIPTS` holds.
pub fn latest_version() -> u32 {
    SCRIPTS.iter().filter_map(|s| s.version).max().unwrap_or(0)
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The version recorded before (0: none, a new or an unversioned database).
    pub from: u32,
    pub to: u32,
    /// The scripts applied, in order (empty: the database was up to date).
    pub applied: Vec<String>,
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn migration_error(script: &str, message: String) -> StoreError {
    StoreError::Database { context: "migrate", message: format!("{script}: {message}") }
}

const LOCK_AND_TABLE: &str = "DECLARE @Lock INT;
EXEC @Lock = sp_getapplock @Resource = N'bulkchange:schema-migration', @LockMode = N'Exclusive',
     @LockOwner = N'Session', @LockTimeout = 120000;
IF @Lock < 0 THROW 50503, N'another migration holds the schema lock', 1;
IF OBJECT_ID('dbo.SchemaVersion') IS NULL
CREATE TABLE dbo.SchemaVersion (
    Script NVARCHAR(200) NOT NULL PRIMARY KEY,
    Version INT NULL,
    Checksum NVARCHAR(64) NOT NULL,
    AppliedDate DATETIME2 NOT NULL
);";

impl MssqlStore {
    /// The version the database records (0 when it records none).
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        let sql = "IF OBJECT_ID('dbo.SchemaVersion') IS NULL SELECT CAST(0 AS INT) AS V
                   ELSE SELECT COALESCE(MAX(Version), 0) AS V FROM dbo.SchemaVersion";
        let mut lease = self.lease().await?;
        let rows = lease
            .conn()?
            .simple_query(sql)
            .await
            .map_err(|e| migration_error("SchemaVersion", e.to_string()))?
            .into_first_result()
            .await
            .map_err(|e| migration_error("SchemaVersion", e.to_string()))?;
        lease.give_back().await;
        Ok(rows.first().and_then(|r| r.get::<i32, _>("V")).unwrap_or(0).max(0) as u32)
    }

    /// Applies the versioned steps up to `target` (all when `None`) and, when every step is in, the repeatable
    /// procedures if they changed.
    pub async fn migrate(&self, target: Option<u32>) -> Result<MigrationReport, StoreError> {
        self.migrate_scripts(SCRIPTS, target).await
    }

    /// `migrate` over any list of scripts (tests give an older or a broken list).
    pub async fn migrate_scripts(
        &self,
        scripts: &[Script],
        target: Option<u32>,
    ) -> Result<MigrationReport, StoreError> {
        let from = self.schema_version().await?;
        let latest = scripts.iter().filter_map(|s| s.version).max().unwrap_or(0);
        let target = target.unwrap_or(latest);
        let mut applied = Vec::new();
        for script in scripts {
            match script.version {
                Some(v) if v > target => continue,
                None if target < latest => continue,
                _ => {}
            }
            if self.apply_step(script).await? {
                tracing::info!(script = script.name, "schema step applied");
                applied.push(script.name.to_string());
            }
        }
        let to = self.schema_version().await?;
        Ok(MigrationReport { from, to, applied })
    }

    /// One script in one transaction, unless the database already records it (with the same text, for a
    /// versioned step). True when it was applied.
    async fn apply_step(&self, script: &Script) -> Result<bool, StoreError> {
        let sum = checksum(script.sql);
        let mut lease = self.lease().await?;
        let conn = lease.conn()?;
        // The schema lock is the session's: held across the step's transaction and released after it.
        let outcome = async {
            conn.simple_query(LOCK_AND_TABLE).await?.into_results().await?;
            let mut q = Query::new("SELECT Version, Checksum FROM dbo.SchemaVersion WHERE Script = @P1");
            q.bind(script.name);
            let recorded = q.query(conn).await?.into_first_result().await?;
            let recorded = recorded.first().map(|r| r.get::<&str, _>("Checksum").unwrap_or_default().to_string());
            match (&recorded, script.version) {
                (Some(old), _) if *old == sum => return Ok(Ok(false)),
                (Some(_), Some(_)) => {
                    return Ok(Err(
                        "was changed after it was applied (a landed step is never edited: add a new NNN_ step)".to_string()
                    ));
                }
                _ => {}
            }
            if script.transactional {
                conn.simple_query("SET XACT_ABORT OFF; BEGIN TRANSACTION;").await?.into_results().await?;
            }
            for batch in split_batches(script.sql) {
                conn.simple_query(batch).await?.into_results().await?;
            }
            let mut q = Query::new(
                "DELETE FROM dbo.SchemaVersion WHERE Script = @P1;
                 INSERT INTO dbo.SchemaVersion (Script, Version, Checksum, AppliedDate) VALUES (@P1, @P2, @P3, SYSUTCDATETIME());",
            );
            q.bind(script.name);
            q.bind(script.version.map(|v| v as i32));
            q.bind(sum.as_str());
            q.execute(conn).await?;
            Ok::<_, tiberius::error::Error>(Ok(true))
        }
        .await;
        let end = match &outcome {
            Ok(Ok(true)) => {
                "IF @@TRANCOUNT > 0 COMMIT TRANSACTION; SET XACT_ABORT ON; EXEC sp_releaseapplock @Resource = N'bulkchange:schema-migration', @LockOwner = N'Session';"
            }
            _ => {
                "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION; SET XACT_ABORT ON; EXEC sp_releaseapplock @Resource = N'bulkchange:schema-migration', @LockOwner = N'Session';"
            }
        };
        let ended = async { conn.simple_query(end).await?.into_results().await }.await;
        match (outcome, ended) {
            (Ok(Ok(applied)), Ok(_)) => {
                lease.give_back().await;
                Ok(applied)
            }
            (Ok(Err(refusal)), _) => Err(migration_error(script.name, refusal)),
            (Err(e), _) => Err(migration_error(script.name, e.to_string())),
            (Ok(Ok(_)), Err(e)) => Err(migration_error(script.name, format!("commit: {e}"))),
        }
    }
}

/// A database of its own on a T-SQL server, for one test or one bench run: created empty beside the database the
/// connection string names, and dropped by `drop_database` once every store on it is closed.
pub struct ScratchDatabase {
    /// The connection string of the new database.
    pub url: String,
    name: String,
    server_url: String,
}

/// `ado` with its `Database` (or `Initial Catalog`) set to `database`.
pub fn with_database(ado: &str, database: &str) -> String {
    let mut parts: Vec<String> = ado
        .split(';')
        .filter(|p| !p.trim().is_empty())
        .filter(|p| {
            let key = p.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
            key != "database" && key != "initial catalog"
        })
        .map(str::to_string)
        .collect();
    parts.push(format!("Database={database}"));
    parts.join(";")
}

impl ScratchDatabase {
    /// Creates `{prefix}_{process}_{n}` on the server of `server_url`.
    pub async fn create(server_url: &str, prefix: &str) -> Result<Self, StoreError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
        let name =
            format!("{prefix}_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), stamp % 1_000_000);
        Self::on_server(server_url, &format!("CREATE DATABASE [{name}]")).await?;
        Ok(Self { url: with_database(server_url, &name), name, server_url: server_url.to_string() })
    }

    /// One database statement at a time on the server (Babelfish refuses two at once: "tuple concurrently
    /// updated"), tried again a few times.
    async fn on_server(server_url: &str, statement: &str) -> Result<(), StoreError> {
        let sql = format!(
            "DECLARE @Lock INT; EXEC @Lock = sp_getapplock @Resource = N'bulkchange:scratch-databases', @LockMode = N'Exclusive', @LockOwner = N'Session', @LockTimeout = 60000;
             {statement};
             EXEC sp_releaseapplock @Resource = N'bulkchange:scratch-databases', @LockOwner = N'Session';"
        );
        let mut last = None;
        for attempt in 0..10u64 {
            let done = async {
                let admin = MssqlStore::connect(server_url, 1).await?;
                let result = admin.apply_scripts(&[&sql]).await;
                engine::ports::Store::close(&admin).await;
                result
            }
            .await;
            match done {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 * (attempt + 1))).await;
        }
        Err(last.unwrap_or(StoreError::Corrupt("no attempt made".into())))
    }

    /// Drops the database (tried a few times: the server may still be ending the connections just closed).
    pub async fn drop_database(self) {
        if let Err(e) = Self::on_server(&self.server_url, &format!("DROP DATABASE [{}]", self.name)).await {
            tracing::warn!(database = %self.name, error = %e, "scratch database left behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_of_infra_sql_is_listed_once_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/sql");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("infra/sql")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SCRIPTS.iter().map(|s| s.name.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "infra/sql and migrate::SCRIPTS must hold the same files");
        let versions: Vec<u32> = SCRIPTS.iter().filter_map(|s| s.version).collect();
        assert!(versions.windows(2).all(|w| w[1] == w[0] + 1), "versions follow each other: {versions:?}");
        for s in SCRIPTS {
            match s.version {
                Some(v) => assert!(s.name.starts_with(&format!("{v:03}_")), "{} is version {v}", s.name),
                None => assert!(s.name.starts_with("R__"), "{} is repeatable", s.name),
            }
        }
        assert_eq!(SCRIPTS.last().and_then(|s| s.version), None, "the procedures come after every step");
    }

    #[test]
    fn a_checksum_is_the_sha256_of_the_text() {
        assert_eq!(checksum("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
