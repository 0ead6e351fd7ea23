//! Migrations: the numbered `migrations/NNN_*.sql` files, applied in order under an advisory
//! lock and recorded in the schema's `schema_version` table.

use super::conn::{PgClient, Queries};
use super::error::{db_err, describe};
use super::sql::Names;
use crate::TaskError;
use crate::store::SCHEMA_VERSION;

/// Migrations by number; the `schema_version` table records which ran.
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

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// The first key of the migration advisory lock (the second is a hash of the schema name).
pub(super) const MIGRATION_LOCK_CLASS: i32 = 0x7061_7274;

/// The highest migration recorded in `version_table` (0 when none is).
pub(super) async fn recorded_version(
    client: &impl Queries,
    version_table: &str,
) -> Result<i32, TaskError> {
    Ok(client
        .query_one(
            &format!("SELECT COALESCE(max(version), 0) FROM {version_table}"),
            &[],
        )
        .await
        .map_err(db_err)?
        .get(0))
}

pub(super) async fn migrate(client: &mut PgClient, names: &Names) -> Result<(), TaskError> {
    let q = &names.quoted;
    let version_table = format!("{q}.schema_version");
    let newer = |v: i32| {
        TaskError::store(format!(
            "the PostgreSQL schema '{}' has schema version {v}, newer than this party binary \
             knows ({SCHEMA_VERSION}); upgrade party to a version that knows it",
            names.schema
        ))
    };
    // Fast path: already up to date, no lock and no DDL privileges needed.
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&version_table.as_str()],
        )
        .await
        .map_err(db_err)?;
    if row.get::<_, bool>(0) {
        let v = recorded_version(client, &version_table).await?;
        if i64::from(v) > SCHEMA_VERSION {
            return Err(newer(v));
        }
        if i64::from(v) == SCHEMA_VERSION {
            return Ok(());
        }
    }
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK_CLASS, &names.schema.as_str()],
    )
    .await
    .map_err(db_err)?;
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&names.schema.as_str()],
        )
        .await
        .map_err(db_err)?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {q}"))
            .await
            .map_err(|e| {
                TaskError::store(format!(
                    "cannot create the schema '{}': {}; create it, or grant CREATE on the database",
                    names.schema,
                    describe(&e)
                ))
            })?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {version_table} (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(db_err)?;
    let v = recorded_version(&tx, &version_table).await?;
    if i64::from(v) > SCHEMA_VERSION {
        return Err(newer(v));
    }
    tx.batch_execute(&format!("SET LOCAL search_path TO {q}"))
        .await
        .map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.batch_execute(sql).await.map_err(|e| {
            TaskError::store(format!("migration {} failed: {}", i + 1, describe(&e)))
        })?;
        tx.execute(
            &format!("INSERT INTO {version_table} (version) VALUES ($1)"),
            &[&((i + 1) as i32)],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    if (v as usize) < MIGRATIONS.len() {
        tracing::info!(schema = %names.schema, from = v, to = SCHEMA_VERSION, "migrated the PostgreSQL schema");
    }
    Ok(())
}
