//! Row decoding: tasks and runs from rows, instants stored as microseconds since the Unix
//! epoch (`INTEGER`), lists as JSON text.

use crate::clock::from_micros;
use crate::model::{Outcome, Run, TaskInfo};
use crate::store::{ExpiredTask, HistoryRow, LiveRow, QueueRow, RunRecord, RunRow};
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
        finished_at: r.get::<_, Option<i64>>(18)?.map(from_micros),
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

fn opt_time(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<jiff::Timestamp>> {
    Ok(r.get::<_, Option<i64>>(i)?.map(from_micros))
}

/// A live task with every column, from `sql::COPY_READ_LIVE`.
pub(super) fn live_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LiveRow> {
    Ok(LiveRow {
        id: id_from_row(r, 0)?,
        handler: r.get(1)?,
        data: r.get(2)?,
        timestamp: from_micros(r.get(3)?),
        due_at: from_micros(r.get(4)?),
        ready: r.get(5)?,
        last_run_on: opt_time(r, 6)?,
        attempts: r.get(7)?,
        max_attempts: r.get(8)?,
        is_recurring: r.get(9)?,
        rule: r.get(10)?,
        state: r.get(11)?,
        queue: r.get(12)?,
        priority: r.get(13)?,
        last_error: r.get(14)?,
        fence: r.get(15)?,
        worker: r.get(16)?,
        started_at: opt_time(r, 17)?,
        lease_until: opt_time(r, 18)?,
        created_at: from_micros(r.get(19)?),
        updated_at: from_micros(r.get(20)?),
        unique_key: r.get(21)?,
        cancel_requested: r.get(22)?,
    })
}

/// A finished task with every column, from `sql::COPY_READ_HISTORY`.
pub(super) fn history_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRow> {
    Ok(HistoryRow {
        id: id_from_row(r, 0)?,
        handler: r.get(1)?,
        data: r.get(2)?,
        timestamp: from_micros(r.get(3)?),
        due_at: from_micros(r.get(4)?),
        last_run_on: opt_time(r, 5)?,
        attempts: r.get(6)?,
        max_attempts: r.get(7)?,
        is_recurring: r.get(8)?,
        rule: r.get(9)?,
        state: r.get(10)?,
        queue: r.get(11)?,
        priority: r.get(12)?,
        last_error: r.get(13)?,
        fence: r.get(14)?,
        created_at: from_micros(r.get(15)?),
        finished_at: from_micros(r.get(16)?),
        unique_key: r.get(17)?,
        run: match r.get::<_, Option<String>>(24)? {
            Some(_) => Some(run_record(r, 18)?),
            None => None,
        },
    })
}

/// An attempt's seven columns (attempt, occurrence, start, end, outcome, error, worker) from
/// column `at` on.
fn run_record(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        attempt: r.get(at)?,
        timestamp: from_micros(r.get(at + 1)?),
        started_at: from_micros(r.get(at + 2)?),
        finished_at: from_micros(r.get(at + 3)?),
        outcome: r.get(at + 4)?,
        error: r.get(at + 5)?,
        worker: r.get(at + 6)?,
    })
}

/// A run row with its position, from `sql::COPY_READ_RUNS`.
pub(super) fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        position: r.get(0)?,
        task_id: id_from_row(r, 1)?,
        run: run_record(r, 2)?,
    })
}

/// A queue's controls, from `sql::COPY_READ_QUEUES`.
pub(super) fn queue_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueueRow> {
    Ok(QueueRow {
        name: r.get(0)?,
        paused: r.get(1)?,
        concurrency: r.get(2)?,
        per_key: r.get(3)?,
        rate_count: r.get(4)?,
        rate_period_ms: r.get(5)?,
        updated_at: from_micros(r.get(6)?),
    })
}
