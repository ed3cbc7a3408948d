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

/// An applied row with the cost centers its worker kept before sending new ones (the `BeforeCostCenters` JSON of
/// either store), as part of what the device was before.
pub(crate) fn with_cost_centers(
    mut row: engine::ports::AppliedRow,
    kept: Option<&str>,
) -> Result<engine::ports::AppliedRow, engine::ports::StoreError> {
    if let (Some(json), Some(before)) = (kept, row.before.as_mut()) {
        let kept = serde_json::from_str(json).map_err(|e| {
            engine::ports::StoreError::Corrupt(format!("row {}: cost centers kept are unreadable: {e}", row.row_id))
        })?;
        before.cost_centers = Some(kept);
    }
    Ok(row)
}
