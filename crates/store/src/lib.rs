//! Store adapters: the embedded SQLite store (with the embedded queue over the same file) and the seed loader.
//! The SQL Server adapter (`mssql`, its schema versioned by `migrate`); both pass the same contract tests.

pub mod contract;
pub mod migrate;
pub mod mssql;
pub mod secrets;
pub mod seed;
pub mod sqlite;

pub use mssql::MssqlStore;
pub use secrets::{SecretReferences, SecretSource};
pub use seed::Seed;
pub use sqlite::{SqliteQueue, SqliteStore};
