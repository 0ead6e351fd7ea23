//! Database errors: what a busy file and a collision with a live recurring task mean to the
//! caller.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{TaskError, TaskId};

pub(super) fn db_err(e: rusqlite::Error) -> TaskError {
    TaskError::store(e)
}

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

pub(super) fn existing_singleton(
    conn: &Connection,
    handler: &str,
    data: &str,
) -> Result<TaskId, TaskError> {
    let id: Option<String> = conn
        .query_row(super::sql::EXISTING, params![handler, data], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    match id {
        Some(id) => id.parse(),
        None => Err(TaskError::store(
            "unique constraint failed but no singleton was found",
        )),
    }
}
