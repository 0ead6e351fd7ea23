//! Migrations: the numbered `migrations/NNN_*.sql` files, applied in order in one
//! `BEGIN IMMEDIATE` transaction; `PRAGMA user_version` records how many ran.

use std::path::Path;

use rusqlite::Connection;

use super::error::db_err;
use crate::TaskError;
use crate::store::SCHEMA_VERSION;

/// Migrations by number; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: [&str; 11] = [
    include_str!("migrations/001_tasks.sql"),
    include_str!("migrations/002_liveness_leaders.sql"),
    include_str!("migrations/003_finished_index.sql"),
    include_str!("migrations/004_hot_cold.sql"),
    include_str!("migrations/005_unique_cancel.sql"),
    include_str!("migrations/006_queue_controls.sql"),
    include_str!("migrations/007_final_run.sql"),
    include_str!("migrations/008_fewer_index_entries.sql"),
    include_str!("migrations/009_history_by_state.sql"),
    include_str!("migrations/010_succeeded_runs.sql"),
    include_str!("migrations/011_runs_by_task.sql"),
];

pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), TaskError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let result = (|| {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err)?;
        if version < 0 {
            return Err(TaskError::Unusable(format!(
                "the database {} has schema version {version}, which party never writes: it is \
                 not a party database, or another program changed it; check that --db names \
                 the party database, or restore it from a backup",
                path.display()
            )));
        }
        if version > SCHEMA_VERSION {
            return Err(TaskError::store(format!(
                "the database {} has schema version {version}, newer than this party binary knows \
                 ({SCHEMA_VERSION}); upgrade party to a version that knows it",
                path.display()
            )));
        }
        if version == 0 {
            // Party writes its tables and the schema version in one transaction: tables
            // without a version are another program's.
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if tables > 0 {
                return Err(TaskError::Unusable(format!(
                    "the database {} holds tables but no party schema version: it is \
                     another program's database; check that --db names the \
                     party database, or name a new file",
                    path.display()
                )));
            }
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql).map_err(|e| match e {
                // Said without the statement's text (a whole migration file); any other
                // error (a damaged or read-only file) keeps its own answer.
                rusqlite::Error::SqlInputError { msg, .. } => TaskError::store(format!(
                    "the database {} could not be upgraded to schema version {}: {msg}; it is \
                     left as it was",
                    path.display(),
                    i + 1
                )),
                e => db_err(e),
            })?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db_err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
