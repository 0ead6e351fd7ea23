//! Row decoding: tasks and runs from rows, instants stored as microseconds since the Unix
//! epoch (`INTEGER`), lists as JSON text.

use crate::clock::from_micros;
use crate::model::{Outcome, Run, TaskInfo};
use crate::store::ExpiredTask;
use crate::{TaskError, TaskId};

/// A task id read straight from its 12 stored bytes.
pub(super) fn id_from_row(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<TaskId> {
    let bytes = r.get_ref(i)?.as_blob()?;
    let bytes: [u8; 12] = bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            Box::new(TaskError::store(format!(
                "a task id of {} bytes is stored; ids have 12",
                bytes.len()
            ))),
        )
    })?;
    Ok(TaskId::from_bytes(bytes))
}

/// A task id as it is stored: its 12 bytes.
pub(super) fn id_key(id: &TaskId) -> &[u8] {
    &id.as_bytes()[..]
}

pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

pub(super) fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskInfo> {
    let data: String = r.get(2)?;
    let state: String = r.get(7)?;
    let rule: Option<String> = r.get(12)?;
    let conv = |e: TaskError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(TaskInfo {
        id: id_from_row(r, 0)?,
        handler: r.get(1)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        timestamp: from_micros(r.get(3)?),
        last_run_on: r.get::<_, Option<i64>>(4)?.map(from_micros),
        attempts: r.get(5)?,
        is_recurring: r.get(6)?,
        state: state.parse().map_err(conv)?,
        queue: r.get(8)?,
        priority: r.get(9)?,
        max_attempts: r.get(10)?,
        last_error: r.get(11)?,
        rule: rule.and_then(|s| serde_json::from_str(&s).ok()),
        due_at: from_micros(r.get(13)?),
        created_at: from_micros(r.get(14)?),
        worker: r.get(15)?,
        unique_key: r.get(16)?,
        cancel_requested: r.get(17)?,
        runs: Vec::new(),
    })
}

pub(super) fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let outcome: String = r.get(4)?;
    Ok(Run {
        attempt: r.get(0)?,
        timestamp: from_micros(r.get(1)?),
        started_at: from_micros(r.get(2)?),
        finished_at: from_micros(r.get(3)?),
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
        error: r.get(5)?,
        worker: r.get(6)?,
    })
}

/// An expired lease, from `sql::EXPIRED`'s columns.
pub(super) fn expired_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExpiredTask> {
    Ok(ExpiredTask {
        id: id_from_row(r, 0)?,
        fence: r.get(1)?,
        attempts: r.get(2)?,
        max_attempts: r.get(3)?,
        timestamp: from_micros(r.get(4)?),
        worker: r.get(5)?,
        started_at: from_micros(r.get::<_, Option<i64>>(6)?.unwrap_or(r.get(7)?)),
        lease_until: from_micros(r.get(7)?),
        cancel_requested: r.get(8)?,
    })
}
