//! Store adapters: the embedded SQLite store (with the embedded queue over the same file) and the seed loader.
//! The SQL Server adapter joins them in the production-adapters work; both pass the same contract tests.

pub mod contract;
pub mod mssql;
pub mod secrets;
pub mod seed;
pub mod sqlite;

pub use mssql::MssqlStore;
pub use secrets::{SecretReferences, SecretSource};
pub use seed::Seed;
pub use sqlite::{SqliteQueue, SqliteStore};
