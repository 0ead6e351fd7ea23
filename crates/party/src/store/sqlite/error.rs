//! Database errors: what a busy file and a collision with a live recurring task or a live
//! unique key mean to the caller.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{TaskError, TaskId};

/// A SQLite error as party reports it. A damaged file, a file that is not a database and a
/// file party may not write are [`TaskError::Unusable`], with what to do: retrying cannot
/// help. Everything else (busy, I/O, full disk) is [`TaskError::Store`].
pub(super) fn db_err(e: rusqlite::Error) -> TaskError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase, ReadOnly};
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    match code {
        Some(DatabaseCorrupt) => TaskError::Unusable(format!(
            "{e}: the database file is damaged; stop every party process on it and restore it \
             from a backup (`sqlite3 FILE 'PRAGMA integrity_check'` lists what is wrong)"
        )),
        Some(NotADatabase) => TaskError::Unusable(format!(
            "{e}: the file is not a SQLite database; check that --db names the party database"
        )),
        Some(ReadOnly) => TaskError::Unusable(format!(
            "{e}: party may not write to the database; check that this user can write the file \
             and its directory (SQLite writes the -wal and -shm files beside it)"
        )),
        _ => TaskError::store(e),
    }
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
    let id = conn
        .query_row(super::sql::EXISTING, params![handler, data], |r| {
            super::rows::id_from_row(r, 0)
        })
        .optional()
        .map_err(db_err)?;
    match id {
        Some(id) => Ok(id),
        None => Err(TaskError::store(
            "unique constraint failed but no singleton was found",
        )),
    }
}

/// The live task holding `handler`'s unique `key`, as a duplicate error.
pub(super) fn existing_unique(
    conn: &Connection,
    handler: &str,
    key: &str,
) -> Result<TaskError, TaskError> {
    let id = conn
        .query_row(super::sql::EXISTING_UNIQUE, params![handler, key], |r| {
            super::rows::id_from_row(r, 0)
        })
        .optional()
        .map_err(db_err)?;
    match id {
        Some(existing) => Ok(TaskError::Duplicate {
            handler: handler.to_string(),
            existing,
            unique_key: Some(key.to_string()),
        }),
        None => Err(TaskError::store(
            "unique constraint failed but no task holds the key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn errors_no_retry_can_fix_are_unusable_and_say_what_to_do() {
        let read_only = db_err(failure(rusqlite::ffi::SQLITE_READONLY));
        assert!(matches!(&read_only, TaskError::Unusable(m) if m.contains("its directory")));
        let corrupt = db_err(failure(rusqlite::ffi::SQLITE_CORRUPT));
        assert!(matches!(&corrupt, TaskError::Unusable(m) if m.contains("backup")));
        let not_db = db_err(failure(rusqlite::ffi::SQLITE_NOTADB));
        assert!(matches!(&not_db, TaskError::Unusable(m) if m.contains("--db")));
        assert!(matches!(
            db_err(failure(rusqlite::ffi::SQLITE_BUSY)),
            TaskError::Store(_)
        ));
    }
}
