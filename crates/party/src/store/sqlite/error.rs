//! Database errors: what a busy file and a collision with a live recurring task or a live
//! unique key mean to the caller.

use rusqlite::{Connection, OptionalExtension, params};

use crate::policy;
use crate::store::Fault;
use crate::{TaskError, TaskId};

/// A SQLite error as party reports it: its kind ([`fault`]) decides, above the seam, whether
/// it is [`TaskError::Unusable`] (retrying cannot help; the message says what to do) or
/// [`TaskError::Store`].
pub(super) fn db_err(e: rusqlite::Error) -> TaskError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase, ReadOnly};
    let kind = fault(&e);
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let message = match code {
        Some(DatabaseCorrupt) => format!(
            "{e}: the database file is damaged; stop every party process on it and restore it \
             from a backup (`sqlite3 FILE 'PRAGMA integrity_check'` lists what is wrong)"
        ),
        Some(NotADatabase) => format!(
            "{e}: the file is not a SQLite database; check that --db names the party database"
        ),
        Some(ReadOnly) => format!(
            "{e}: party may not write to the database; check that this user can write the file \
             and its directory (SQLite writes the -wal and -shm files beside it)"
        ),
        _ if policy::fault_is_permanent(kind) => {
            format!("{e}; {}", policy::fault_advice(kind))
        }
        _ => e.to_string(),
    };
    policy::database_error(kind, message)
}

/// What kind of failure a SQLite error is. Party's statements are fixed in the binary, so a
/// statement SQLite cannot prepare ("no such table", "no such column") means tables not as
/// this binary wrote them.
pub(super) fn fault(e: &rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked | C::SchemaChanged => Fault::Busy,
            C::DatabaseCorrupt | C::NotADatabase => Fault::Damaged,
            C::ReadOnly | C::PermissionDenied | C::AuthorizationForStatementDenied => {
                Fault::ReadOnly
            }
            C::ConstraintViolation | C::TypeMismatch | C::TooBig => Fault::Refused,
            C::DiskFull | C::OutOfMemory => Fault::Resources,
            C::CannotOpen => Fault::Unreachable,
            C::Unknown if f.extended_code == rusqlite::ffi::SQLITE_ERROR => Fault::Schema,
            _ => Fault::Other,
        },
        rusqlite::Error::SqlInputError { .. } => Fault::Schema,
        _ => Fault::Other,
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
            place: None,
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
        // A refused row, or tables not as party wrote them: no retry passes either.
        let refused = db_err(failure(rusqlite::ffi::SQLITE_CONSTRAINT_CHECK));
        assert!(matches!(&refused, TaskError::Unusable(m) if m.contains("refused a row")));
        let schema = db_err(failure(rusqlite::ffi::SQLITE_ERROR));
        assert!(matches!(&schema, TaskError::Unusable(m) if m.contains("tables are not")));
    }

    #[test]
    fn outages_are_transient() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_CANTOPEN,
        ] {
            let e = db_err(failure(code));
            assert!(matches!(&e, TaskError::Store(_)), "{code}: {e:?}");
            assert!(!e.is_permanent());
        }
    }
}
