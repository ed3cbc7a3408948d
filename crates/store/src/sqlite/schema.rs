//! The SQLite schema as numbered steps (`migrations/NNN_*.sql`), each applied once, in order, and recorded in
//! `SchemaVersion`, as `infra/sql/` is on SQL Server. A change to the schema is a new step; a step that ran is
//! never edited.

use rusqlite::TransactionBehavior;

use super::*;

macro_rules! step {
    ($version:literal, $name:literal) => {
        ($version, $name, include_str!(concat!("migrations/", $name)))
    };
}

/// Every step: its version, its file and its text.
pub(super) const STEPS: &[(u32, &str, &str)] = &[
    step!(1, "001_schema.sql"),
    step!(2, "002_retry_of.sql"),
    step!(3, "003_customer_plans.sql"),
    step!(4, "004_device_tenant_history.sql"),
    step!(5, "005_mobility_rows.sql"),
    step!(6, "006_thingspace.sql"),
    step!(7, "007_carrier_results.sql"),
    step!(8, "008_device_change_lock.sql"),
    step!(9, "009_rate_budget.sql"),
    step!(10, "010_default_provider.sql"),
    step!(11, "011_carrier_settings.sql"),
    step!(12, "012_notification_lease.sql"),
    step!(13, "013_rollout.sql"),
    step!(14, "014_webhooks.sql"),
    step!(15, "015_before_values.sql"),
    step!(16, "016_row_request.sql"),
    step!(17, "017_rev_service_creator.sql"),
    step!(18, "018_before_cost_centers.sql"),
];

/// Applies the steps this file has not had yet, each in a transaction of its own that takes the write lock first,
/// so two processes opening a new file at once apply each step once.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS SchemaVersion (Version INTEGER PRIMARY KEY, Name TEXT NOT NULL, AppliedDate TEXT NOT NULL)",
    )
    .map_err(db("create SchemaVersion"))?;
    adopt_a_file_of_the_earlier_layout(conn)?;
    for (version, name, sql) in STEPS {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("begin a schema step"))?;
        let done: bool = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM SchemaVersion WHERE Version = ?1)", params![version], |r| r.get(0))
            .map_err(db("read SchemaVersion"))?;
        if !done {
            tx.execute_batch(sql).map_err(db("apply a schema step"))?;
            tx.execute(
                "INSERT INTO SchemaVersion (Version, Name, AppliedDate) VALUES (?1, ?2, ?3)",
                params![version, name, ts(Utc::now())],
            )
            .map_err(db("record a schema step"))?;
        }
        tx.commit().map_err(db("commit a schema step"))?;
    }
    Ok(())
}

/// A file made before `SchemaVersion` (the first step applied at every open, `PRAGMA user_version` counting the
/// steps after it): the first step runs again (it only creates what is missing), and it and the `user_version`
/// steps after it are recorded as applied.
fn adopt_a_file_of_the_earlier_layout(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("begin adopting"))?;
    let recorded: i64 =
        tx.query_row("SELECT COUNT(*) FROM SchemaVersion", [], |r| r.get(0)).map_err(db("read SchemaVersion"))?;
    let has_tables: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'Tenant')", [], |r| {
            r.get(0)
        })
        .map_err(db("look for the earlier layout"))?;
    if recorded == 0 && has_tables {
        let counted: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db("read user_version"))?;
        tx.execute_batch(STEPS[0].2).map_err(db("apply the first schema step"))?;
        for (version, name, _) in STEPS.iter().take(1 + counted.max(0) as usize) {
            tx.execute(
                "INSERT INTO SchemaVersion (Version, Name, AppliedDate) VALUES (?1, ?2, ?3)",
                params![version, name, ts(Utc::now())],
            )
            .map_err(db("record an adopted step"))?;
        }
    }
    tx.commit().map_err(db("commit adopting"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(path: &Path) -> Vec<i64> {
        let conn = Connection::open(path).expect("open");
        let mut stmt = conn.prepare("SELECT Version FROM SchemaVersion ORDER BY Version").expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("read")
    }

    fn every_version() -> Vec<i64> {
        STEPS.iter().map(|(v, _, _)| i64::from(*v)).collect()
    }

    #[test]
    fn the_steps_are_numbered_one_after_the_other_as_their_files() {
        for (n, (version, name, _)) in STEPS.iter().enumerate() {
            assert_eq!(*version as usize, n + 1);
            assert!(name.starts_with(&format!("{version:03}_")), "{name}");
        }
    }

    #[test]
    fn a_new_file_takes_every_step_once_and_opening_it_again_takes_none() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path).expect("first open"));
        drop(SqliteStore::open(&path).expect("second open"));
        assert_eq!(versions(&path), every_version());
    }

    #[test]
    fn two_connections_opening_a_new_file_at_once_apply_each_step_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("race.db");
        let opens: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path).map(drop))
            })
            .collect();
        for open in opens {
            open.join().expect("thread").expect("open");
        }
        assert_eq!(versions(&path), every_version());
    }

    /// A file of the earlier layout: the first step and `user_version` steps after it, no `SchemaVersion`.
    #[test]
    fn a_file_of_the_earlier_layout_is_adopted_and_takes_only_the_steps_it_lacks() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).expect("open");
            for (_, _, sql) in &STEPS[..4] {
                conn.execute_batch(sql).expect("an earlier step");
            }
            conn.pragma_update(None, "user_version", 3).expect("user_version");
        }
        drop(SqliteStore::open(&path).expect("open the old file"));
        assert_eq!(versions(&path), every_version());
        let conn = Connection::open(&path).expect("open");
        let has_settings: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('ServiceProvider') WHERE name = 'CarrierSettings')",
                [],
                |r| r.get(0),
            )
            .expect("columns");
        assert!(has_settings, "the last step ran on the adopted file");
    }
}
