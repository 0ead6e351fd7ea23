//! Database errors: their full text, and what a collision with a live recurring task means
//! to the caller.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;

use tokio_postgres::error::SqlState;

use super::conn::{Queries, Stmt};
use crate::store::InsertTask;
use crate::{TaskError, TaskId};

pub(super) fn db_err(e: tokio_postgres::Error) -> TaskError {
    TaskError::store(describe(&e))
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
    }
}

/// Two recurring tasks with the same handler and data in one batch: the later one is a
/// duplicate of the earlier.
pub(super) fn duplicate_within(tasks: &[InsertTask]) -> Option<TaskError> {
    let mut seen: HashMap<(&str, &str), TaskId> = HashMap::new();
    for t in tasks.iter().filter(|t| t.is_recurring) {
        if let Some(first) = seen.get(&(t.handler.as_str(), t.data.as_str())) {
            return Some(duplicate(&t.handler, *first));
        }
        seen.insert((&t.handler, &t.data), t.id);
    }
    None
}
