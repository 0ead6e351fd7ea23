//! Database errors: their full text, and what a collision with a live recurring task or a
//! unique key means to the caller.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;

use tokio_postgres::error::SqlState;

use super::conn::{Queries, Stmt};
use crate::policy;
use crate::store::{Fault, InsertTask};
use crate::{TaskError, TaskId};

/// A PostgreSQL error as party reports it: its kind ([`fault`]) decides, above the seam,
/// whether it is [`TaskError::Unusable`] (retrying cannot help; the message says what to do)
/// or [`TaskError::Store`].
pub(super) fn db_err(e: tokio_postgres::Error) -> TaskError {
    let kind = fault(e.code().map(SqlState::code));
    if policy::fault_is_permanent(kind) {
        policy::database_error(
            kind,
            format!("{}; {}", describe(&e), policy::fault_advice(kind)),
        )
    } else {
        policy::database_error(kind, describe(&e))
    }
}

/// What kind of failure an error with this SQLSTATE is (`None`: no answer from the server,
/// such as a connection that broke). Party's statements are fixed in the binary, so an
/// undefined table, column or function means tables not as this binary wrote them.
pub(super) fn fault(code: Option<&str>) -> Fault {
    let Some(code) = code else {
        return Fault::Unreachable;
    };
    match code {
        // Insufficient privilege; a read-only transaction (a standby, or
        // default_transaction_read_only).
        "42501" | "25006" => Fault::ReadOnly,
        // The server is shutting down, crashed or starting; a statement cancelled (a timeout,
        // or an administrator).
        "57P01" | "57P02" | "57P03" | "57014" => Fault::Restarting,
        // The database was dropped.
        "57P04" | "3D000" | "3F000" => Fault::Schema,
        // A prepared statement that already exists: a connection pooler between party and
        // the server, whose next connection may not have it.
        "42P05" => Fault::Other,
        // A lock not available, an object in use.
        "55P03" | "55006" => Fault::Busy,
        // Data corrupted, an index corrupted.
        "XX001" | "XX002" => Fault::Damaged,
        _ => match &code[..2.min(code.len())] {
            // Connection exceptions.
            "08" => Fault::Unreachable,
            // Serialization failures and deadlocks: run again.
            "40" => Fault::Busy,
            // Out of disk, memory or connections.
            "53" => Fault::Resources,
            // Data exceptions, constraint violations, a row past a limit.
            "22" | "23" | "54" => Fault::Refused,
            // Undefined tables, columns and functions, and other statements it refuses.
            "42" => Fault::Schema,
            _ => Fault::Other,
        },
    }
}

/// The error with its causes: tokio-postgres puts the server's message in the source.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            let _ = write!(s, " ({detail})");
        }
        if let Some(hint) = db.hint() {
            let _ = write!(s, "; hint: {hint}");
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

pub(super) fn is_singleton_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some("tasks_singleton")
}

/// The existing live recurring task with this handler and data, as seen by `client`.
pub(super) async fn existing_singleton(
    client: &impl Queries,
    stmt: &Stmt,
    handler: &str,
    data: &str,
) -> Result<Option<TaskId>, TaskError> {
    let row = client
        .query_opt(stmt, &[&handler, &data])
        .await
        .map_err(db_err)?;
    row.map(|r| super::rows::id_at(&r, 0)).transpose()
}

pub(super) fn duplicate(handler: &str, existing: TaskId) -> TaskError {
    TaskError::Duplicate {
        handler: handler.to_string(),
        existing,
        unique_key: None,
        place: None,
    }
}

/// A task refused because `existing` holds `handler`'s unique `key`.
pub(super) fn duplicate_key(handler: &str, key: &str, existing: TaskId) -> TaskError {
    TaskError::Duplicate {
        handler: handler.to_string(),
        existing,
        unique_key: Some(key.to_string()),
        place: None,
    }
}

/// Whether `e` is a repeatable-read transaction's refusal to change a row another
/// transaction changed since its snapshot: run it again.
pub(super) fn is_serialization_failure(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

pub(super) fn is_unique_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some("tasks_unique")
}

/// The live task holding `handler`'s unique `key`, as seen by `client`.
pub(super) async fn existing_unique(
    client: &impl Queries,
    stmt: &Stmt,
    handler: &str,
    key: &str,
) -> Result<Option<TaskId>, TaskError> {
    let row = client
        .query_opt(stmt, &[&handler, &key])
        .await
        .map_err(db_err)?;
    row.map(|r| super::rows::id_at(&r, 0)).transpose()
}

/// The parameters of the window check for `tasks` (handlers, keys, windows' starts), or
/// `None` when none of them has a window.
pub(super) fn window_params(
    tasks: &[InsertTask],
) -> Option<(Vec<&str>, Vec<&str>, Vec<super::rows::PgTime>)> {
    let windowed: Vec<&InsertTask> = tasks.iter().filter(|t| t.unique_since.is_some()).collect();
    if windowed.is_empty() {
        return None;
    }
    Some((
        windowed.iter().map(|t| t.handler.as_str()).collect(),
        windowed
            .iter()
            .map(|t| t.unique_key.as_deref().unwrap_or_default())
            .collect(),
        windowed
            .iter()
            .map(|t| super::rows::PgTime::of(t.unique_since.unwrap_or(t.created_at)))
            .collect(),
    ))
}

/// The refusal for a row of the window check: handler, key and the finished task's id.
pub(super) fn recent_duplicate(r: &tokio_postgres::Row) -> Result<TaskError, TaskError> {
    Ok(duplicate_key(r.get(0), r.get(1), super::rows::id_at(r, 2)?))
}

/// Of `tasks`, the first refused by a task with its unique key that finished within its
/// window, as seen by `client` (run after inserting them, in the same transaction, so a task
/// that finished while the insert waited is seen too).
pub(super) async fn recently_finished(
    client: &impl Queries,
    stmt: &Stmt,
    tasks: &[InsertTask],
) -> Result<Option<TaskError>, TaskError> {
    let Some((handlers, keys, since)) = window_params(tasks) else {
        return Ok(None);
    };
    let row = client
        .query_opt(stmt, &[&handlers, &keys, &since])
        .await
        .map_err(db_err)?;
    row.as_ref().map(recent_duplicate).transpose()
}

/// Two recurring tasks with the same handler and data in one batch, or two tasks with the same
/// handler and unique key: the later one is a duplicate of the earlier.
pub(super) fn duplicate_within(tasks: &[InsertTask]) -> Option<TaskError> {
    let mut seen: HashMap<(&str, &str), TaskId> = HashMap::new();
    for t in tasks.iter().filter(|t| t.is_recurring) {
        if let Some(first) = seen.get(&(t.handler.as_str(), t.data.as_str())) {
            return Some(duplicate(&t.handler, *first));
        }
        seen.insert((&t.handler, &t.data), t.id);
    }
    let mut keys: HashMap<(&str, &str), TaskId> = HashMap::new();
    for t in tasks {
        let Some(key) = t.unique_key.as_deref() else {
            continue;
        };
        if let Some(first) = keys.get(&(t.handler.as_str(), key)) {
            return Some(duplicate_key(&t.handler, key, *first));
        }
        keys.insert((&t.handler, key), t.id);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_no_retry_can_fix_are_told_from_outages() {
        let permanent = |code| policy::fault_is_permanent(fault(code));
        for code in [
            "23514", "23502", "22003", "22P05", "42703", "42P01", "42501", "25006", "XX001",
        ] {
            assert!(permanent(Some(code)), "{code}");
        }
        for code in [
            None,
            Some("08006"),
            Some("57P01"),
            Some("57P03"),
            Some("40001"),
            Some("40P01"),
            Some("55P03"),
            Some("53100"),
            Some("53300"),
            Some("XX000"),
        ] {
            assert!(!permanent(code), "{code:?}");
        }
    }
}
