//! The store a local stack runs on: the embedded SQLite file, or a SQL Server database through the production
//! adapter (`--database "Server=..."`). Everything but a few local and test helpers goes through the `Store` port.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use domain::rules::DeviceRecord;
use engine::ports::{Store, StoreError};
use store::{MssqlStore, Seed, SqliteStore};

/// Where a `--database` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` or a plain path.
    Sqlite(PathBuf),
    /// An ADO connection string (`Server=tcp:host,1433;Database=...;User Id=...;Password=...`).
    SqlServer(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            bail!("--database is empty: give sqlite://PATH or an ADO connection string (Server=...;Database=...)");
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("server=") || lower.contains(";database=") || lower.contains(";initial catalog=") {
            return Ok(Self::SqlServer(url.to_string()));
        }
        Ok(Self::Sqlite(PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url))))
    }
}

#[derive(Clone)]
pub enum StackStore {
    Sqlite(SqliteStore),
    SqlServer(Arc<MssqlStore>),
}

impl StackStore {
    /// Opens the SQLite file (creating it), or connects to SQL Server and checks its schema is current.
    pub async fn open(sql_server: Option<&str>, sqlite: &Path, pool_size: usize) -> Result<Self> {
        match sql_server {
            None => Ok(Self::Sqlite(
                SqliteStore::open(sqlite).with_context(|| format!("opening database {}", sqlite.display()))?,
            )),
            Some(url) => {
                let store = MssqlStore::connect(url, pool_size).await.context("connecting to SQL Server")?;
                let (have, want) = (store.schema_version().await?, store::migrate::latest_version());
                if have < want {
                    bail!(
                        "the SQL Server schema is at version {have}, this binary needs {want}: run `bulkchange migrate --database ...` first"
                    );
                }
                Ok(Self::SqlServer(Arc::new(store)))
            }
        }
    }

    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::SqlServer(s) => s.clone(),
        }
    }

    pub async fn load_seed(&self, seed: Seed) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.load_seed(seed).await,
            Self::SqlServer(s) => s.load_seed(&seed).await,
        }
    }

    pub async fn set_base_url(&self, service_provider_id: i64, base_url: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.set_base_url(service_provider_id, base_url).await,
            Self::SqlServer(s) => s.set_base_url(service_provider_id, base_url).await,
        }
    }

    /// Bench helper: who holds leases on a bulk change's rows, and how many each.
    pub async fn lease_holders(&self, bulk_change_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.lease_holders(bulk_change_id).await,
            Self::SqlServer(s) => s.lease_holders(bulk_change_id).await,
        }
    }

    /// Round trips to the database so far (the bench's figure).
    pub fn round_trips(&self) -> u64 {
        match self {
            Self::Sqlite(s) => s.round_trips(),
            Self::SqlServer(s) => s.round_trips(),
        }
    }

    /// Test helper: rows in every table, by name.
    pub async fn table_row_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        match self {
            Self::Sqlite(s) => s.table_row_counts().await,
            Self::SqlServer(s) => s.table_row_counts().await,
        }
    }

    /// Test helper: a tenant's device by ICCID.
    pub async fn device_by_iccid(&self, tenant_id: i64, iccid: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.devices_by_iccid(tenant_id, &[iccid.to_string()]).await?.into_iter().next())
    }

    /// Test helper (SQLite only): change rows of a bulk change in one row table.
    pub async fn rows_in_table(&self, table: &'static str, bulk_change_id: i64) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(s) => s.rows_in_table(table, bulk_change_id).await,
            Self::SqlServer(_) => Err(StoreError::Corrupt("rows_in_table reads the SQLite store only".into())),
        }
    }
}

impl Deref for StackStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Sqlite(s) => s,
            Self::SqlServer(s) => s.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_a_sqlite_path_or_an_ado_string() {
        assert_eq!(DatabaseUrl::parse("sqlite://a/b.db").expect("ok"), DatabaseUrl::Sqlite("a/b.db".into()));
        assert_eq!(DatabaseUrl::parse("x.db").expect("ok"), DatabaseUrl::Sqlite("x.db".into()));
        let ado = "Server=tcp:127.0.0.1,1433;Database=bc;User Id=u;Password=p";
        assert_eq!(DatabaseUrl::parse(ado).expect("ok"), DatabaseUrl::SqlServer(ado.into()));
        assert!(matches!(DatabaseUrl::parse("data source=x;Initial Catalog=bc"), Ok(DatabaseUrl::SqlServer(_))));
        assert!(DatabaseUrl::parse("  ").is_err());
    }
}
