//! Rows and parameters: instants in the `timestamptz` wire format, the arrays batched
//! statements take, and decoding rows into tasks and runs.

use std::error::Error as StdError;

use bytes::BytesMut;
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::clock::{from_micros, to_micros};
use crate::model::{Outcome, Run, State, TaskInfo};
use crate::store::{
    ExpiredTask, Finish, HistoryRow, InsertTask, LiveRow, Next, QueueRow, RunRecord, RunRow,
};
use crate::{TaskError, TaskId};

// Instants: timestamptz on the wire is microseconds since 2000-01-01 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The earliest `timestamptz` PostgreSQL holds (4714-11-24 BC), on the wire. Every later
/// instant party can name (to the year 9999) fits.
const PG_MIN_MICROS: i64 = -211_813_488_000_000_000;

/// An instant as microseconds since the Unix epoch, sent and read as `timestamptz`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PgTime(pub(super) i64);

impl PgTime {
    pub(super) fn of(t: Timestamp) -> PgTime {
        PgTime(to_micros(t))
    }

    pub(super) fn time(self) -> Timestamp {
        from_micros(self.0)
    }
}

impl ToSql for PgTime {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // An instant before any PostgreSQL can hold is sent as `-infinity`, which compares as
        // it does: before every stored time (a prune cutoff there removes nothing, a cursor
        // there lists from the first), where SQLite, which holds it, agrees.
        let micros = self.0.saturating_sub(PG_EPOCH_MICROS);
        let micros = if micros < PG_MIN_MICROS {
            i64::MIN
        } else {
            micros
        };
        out.extend_from_slice(&micros.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<PgTime, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into()?;
        Ok(PgTime(
            i64::from_be_bytes(bytes).saturating_add(PG_EPOCH_MICROS),
        ))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// A task id from its 12 stored bytes.
pub(super) fn id_at(row: &Row, i: usize) -> Result<TaskId, TaskError> {
    id_of(row.get::<_, &[u8]>(i))
}

/// A task id from 12 bytes.
pub(super) fn id_of(bytes: &[u8]) -> Result<TaskId, TaskError> {
    let bytes: [u8; 12] = bytes.try_into().map_err(|_| {
        TaskError::store(format!(
            "a task id of {} bytes is stored; ids have 12",
            bytes.len()
        ))
    })?;
    Ok(TaskId::from_bytes(bytes))
}

pub(super) fn time_at(row: &Row, i: usize) -> Timestamp {
    row.get::<_, PgTime>(i).time()
}

pub(super) fn opt_time_at(row: &Row, i: usize) -> Option<Timestamp> {
    row.get::<_, Option<PgTime>>(i).map(PgTime::time)
}

/// The arrays an insert statement takes.
pub(super) struct InsertArrays {
    pub(super) ids: Vec<Vec<u8>>,
    pub(super) handlers: Vec<String>,
    pub(super) data: Vec<String>,
    pub(super) timestamps: Vec<PgTime>,
    pub(super) max_attempts: Vec<i32>,
    pub(super) recurring: Vec<bool>,
    pub(super) rules: Vec<Option<String>>,
    pub(super) queues: Vec<String>,
    pub(super) priorities: Vec<i32>,
    pub(super) created: Vec<PgTime>,
    pub(super) unique_keys: Vec<Option<String>>,
}

impl InsertArrays {
    pub(super) fn new(tasks: &[InsertTask]) -> InsertArrays {
        InsertArrays {
            ids: tasks.iter().map(|t| t.id.as_bytes().to_vec()).collect(),
            handlers: tasks.iter().map(|t| t.handler.clone()).collect(),
            data: tasks.iter().map(|t| t.data.clone()).collect(),
            timestamps: tasks.iter().map(|t| PgTime::of(t.timestamp)).collect(),
            max_attempts: tasks
                .iter()
                .map(|t| t.max_attempts.min(i32::MAX as u32) as i32)
                .collect(),
            recurring: tasks.iter().map(|t| t.is_recurring).collect(),
            rules: tasks.iter().map(|t| t.rule.clone()).collect(),
            queues: tasks.iter().map(|t| t.queue.clone()).collect(),
            priorities: tasks.iter().map(|t| t.priority).collect(),
            created: tasks.iter().map(|t| PgTime::of(t.created_at)).collect(),
            unique_keys: tasks.iter().map(|t| t.unique_key.clone()).collect(),
        }
    }

    /// The parameters of the skipping insert, which also names the channel to notify.
    pub(super) fn params_notifying<'a>(
        &'a self,
        channel: &'a String,
    ) -> [&'a (dyn ToSql + Sync); 12] {
        let [a, b, c, d, e, f, g, h, i, j, k] = self.params();
        [a, b, c, d, e, f, g, h, i, j, k, channel]
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.ids,
            &self.handlers,
            &self.data,
            &self.timestamps,
            &self.max_attempts,
            &self.recurring,
            &self.rules,
            &self.queues,
            &self.priorities,
            &self.created,
            &self.unique_keys,
        ]
    }
}

/// The arrays the finish statement takes.
#[derive(Default)]
pub(super) struct FinishArrays {
    pub(super) ids: Vec<Vec<u8>>,
    pub(super) fences: Vec<i64>,
    pub(super) states: Vec<&'static str>,
    pub(super) timestamps: Vec<Option<PgTime>>,
    pub(super) due: Vec<Option<PgTime>>,
    pub(super) last_run_on: Vec<Option<PgTime>>,
    /// How each task's attempts change: by 0, by -1 (released unrun), or `None`: reset to 0.
    pub(super) attempts_by: Vec<Option<i32>>,
    pub(super) errors: Vec<Option<String>>,
    pub(super) finished: Vec<PgTime>,
    pub(super) ran: Vec<bool>,
    pub(super) attempts: Vec<i32>,
    pub(super) run_timestamps: Vec<PgTime>,
    pub(super) started: Vec<PgTime>,
    pub(super) workers: Vec<String>,
    pub(super) outcomes: Vec<&'static str>,
    pub(super) expired_before: Vec<Option<PgTime>>,
    pub(super) max_attempts: Vec<Option<i32>>,
}

impl FinishArrays {
    pub(super) fn push(&mut self, f: &Finish) {
        let (state, timestamp, due_at, last_run_on, attempts_by) = match &f.next {
            Next::Done => (State::Done, None, None, None, Some(0)),
            Next::Dead => (State::Dead, None, None, None, Some(0)),
            Next::Cancelled => (State::Cancelled, None, None, None, Some(0)),
            Next::Retry { due_at, .. } => (State::Retrying, None, Some(*due_at), None, Some(0)),
            Next::Release { due_at, state } => (*state, None, Some(*due_at), None, Some(-1)),
            Next::Reschedule {
                timestamp,
                due_at,
                last_run_on,
            } => (
                State::Scheduled,
                Some(*timestamp),
                Some(*due_at),
                *last_run_on,
                None,
            ),
        };
        self.ids.push(f.id.as_bytes().to_vec());
        self.fences.push(f.fence);
        self.states.push(state.as_str());
        self.timestamps.push(timestamp.map(PgTime::of));
        self.due.push(due_at.map(PgTime::of));
        self.last_run_on.push(last_run_on.map(PgTime::of));
        self.attempts_by.push(attempts_by);
        self.errors.push(f.error.clone());
        self.finished.push(PgTime::of(f.finished_at));
        self.ran.push(f.ran);
        self.attempts.push(f.attempt.min(i32::MAX as u32) as i32);
        self.run_timestamps.push(PgTime::of(f.timestamp));
        self.started.push(PgTime::of(f.started_at));
        self.workers.push(f.worker.clone());
        self.outcomes.push(f.outcome.as_str());
        self.expired_before.push(f.expired_before.map(PgTime::of));
        let max_attempts = match &f.next {
            Next::Retry { max_attempts, .. } => *max_attempts,
            _ => None,
        };
        self.max_attempts
            .push(max_attempts.map(|n| n.min(i32::MAX as u32) as i32));
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 17] {
        [
            &self.ids,
            &self.fences,
            &self.states,
            &self.timestamps,
            &self.due,
            &self.last_run_on,
            &self.attempts_by,
            &self.errors,
            &self.finished,
            &self.ran,
            &self.attempts,
            &self.run_timestamps,
            &self.started,
            &self.workers,
            &self.outcomes,
            &self.expired_before,
            &self.max_attempts,
        ]
    }

    /// Whether every finish moves its task to the history, so the batch can be written by
    /// the moves-only statement with [`FinishArrays::moves_params`].
    pub(super) fn all_move(&self) -> bool {
        self.states
            .iter()
            .all(|s| matches!(*s, "done" | "dead" | "cancelled"))
    }

    /// The arrays the moves-only finish statement takes, in its order: those of
    /// [`FinishArrays::params`] that [`super::sql::MOVE_PARAMS`] names.
    pub(super) fn moves_params(&self) -> [&(dyn ToSql + Sync); 12] {
        let all = self.params();
        super::sql::MOVE_PARAMS.map(|n| all[n - 1])
    }
}

pub(super) fn task_from_row(r: &Row) -> Result<TaskInfo, TaskError> {
    let data: &str = r.get(2);
    let state: &str = r.get(7);
    let rule: Option<&str> = r.get(12);
    Ok(TaskInfo {
        id: id_at(r, 0)?,
        handler: r.get(1),
        data: serde_json::from_str(data).unwrap_or(serde_json::Value::Null),
        timestamp: time_at(r, 3),
        last_run_on: opt_time_at(r, 4),
        attempts: r.get::<_, i32>(5).max(0) as u32,
        is_recurring: r.get(6),
        state: state.parse()?,
        queue: r.get(8),
        priority: r.get(9),
        max_attempts: r.get::<_, i32>(10).max(0) as u32,
        last_error: r.get(11),
        rule: rule.and_then(|s| serde_json::from_str(s).ok()),
        due_at: time_at(r, 13),
        created_at: time_at(r, 14),
        worker: r.get(15),
        unique_key: r.get(16),
        cancel_requested: r.get(17),
        finished_at: opt_time_at(r, 18),
        runs: Vec::new(),
    })
}

pub(super) fn run_from_row(r: &Row) -> Run {
    let outcome: &str = r.get(4);
    Run {
        attempt: r.get::<_, i32>(0).max(0) as u32,
        timestamp: time_at(r, 1),
        started_at: time_at(r, 2),
        finished_at: time_at(r, 3),
        outcome: Outcome::parse(outcome).unwrap_or(Outcome::Failed),
        error: r.get(5),
        worker: r.get(6),
    }
}

pub(super) fn count_at(r: &Row, i: usize) -> u64 {
    r.get::<_, i64>(i).max(0) as u64
}

/// An expired lease, from `sql::sql_expired`'s columns.
pub(super) fn expired_from_row(r: &Row) -> Result<ExpiredTask, TaskError> {
    Ok(ExpiredTask {
        id: id_at(r, 0)?,
        fence: r.get(1),
        attempts: r.get::<_, i32>(2).max(0) as u32,
        max_attempts: r.get::<_, i32>(3).max(0) as u32,
        timestamp: time_at(r, 4),
        worker: r.get(5),
        started_at: time_at(r, 6),
        lease_until: time_at(r, 7),
        cancel_requested: r.get(8),
    })
}

/// A live task with every column, from `sql::sql_copy_read_live`.
pub(super) fn live_row(r: &Row) -> Result<LiveRow, TaskError> {
    Ok(LiveRow {
        id: id_at(r, 0)?,
        handler: r.get(1),
        data: r.get(2),
        timestamp: time_at(r, 3),
        due_at: time_at(r, 4),
        ready: r.get(5),
        last_run_on: opt_time_at(r, 6),
        attempts: r.get(7),
        max_attempts: r.get(8),
        is_recurring: r.get(9),
        rule: r.get(10),
        state: r.get(11),
        queue: r.get(12),
        priority: r.get(13),
        last_error: r.get(14),
        fence: r.get(15),
        worker: r.get(16),
        started_at: opt_time_at(r, 17),
        lease_until: opt_time_at(r, 18),
        created_at: time_at(r, 19),
        updated_at: time_at(r, 20),
        unique_key: r.get(21),
        cancel_requested: r.get(22),
    })
}

/// A finished task with every column, from `sql::sql_copy_read_history`.
pub(super) fn history_row(r: &Row) -> Result<HistoryRow, TaskError> {
    Ok(HistoryRow {
        id: id_at(r, 0)?,
        handler: r.get(1),
        data: r.get(2),
        timestamp: time_at(r, 3),
        due_at: time_at(r, 4),
        last_run_on: opt_time_at(r, 5),
        attempts: r.get(6),
        max_attempts: r.get(7),
        is_recurring: r.get(8),
        rule: r.get(9),
        state: r.get(10),
        queue: r.get(11),
        priority: r.get(12),
        last_error: r.get(13),
        fence: r.get(14),
        created_at: time_at(r, 15),
        finished_at: time_at(r, 16),
        unique_key: r.get(17),
        run: r.get::<_, Option<String>>(24).map(|_| run_record(r, 18)),
    })
}

/// An attempt's seven columns (attempt, occurrence, start, end, outcome, error, worker) from
/// column `at` on.
fn run_record(r: &Row, at: usize) -> RunRecord {
    RunRecord {
        attempt: r.get(at),
        timestamp: time_at(r, at + 1),
        started_at: time_at(r, at + 2),
        finished_at: time_at(r, at + 3),
        outcome: r.get(at + 4),
        error: r.get(at + 5),
        worker: r.get(at + 6),
    }
}

/// A run row with its position, from `sql::sql_copy_read_runs`.
pub(super) fn run_row(r: &Row) -> Result<RunRow, TaskError> {
    Ok(RunRow {
        position: r.get(0),
        task_id: id_at(r, 1)?,
        run: run_record(r, 2),
    })
}

fn times(rows: impl Iterator<Item = Timestamp>) -> Vec<PgTime> {
    rows.map(PgTime::of).collect()
}

fn opt_times(rows: impl Iterator<Item = Option<Timestamp>>) -> Vec<Option<PgTime>> {
    rows.map(|t| t.map(PgTime::of)).collect()
}

fn ids(rows: impl Iterator<Item = TaskId>) -> Vec<Vec<u8>> {
    rows.map(|id| id.as_bytes().to_vec()).collect()
}

/// Sends a statement's parameters, each a column of the batch as an array.
pub(super) type Columns = Vec<Box<dyn ToSql + Sync + Send>>;

/// The arrays of `sql::sql_copy_write_live`.
pub(super) fn live_columns(rows: &[LiveRow]) -> Columns {
    let col = |f: fn(&LiveRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&LiveRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    vec![
        Box::new(ids(rows.iter().map(|r| r.id))),
        Box::new(col(|r| r.handler.clone())),
        Box::new(col(|r| r.data.clone())),
        Box::new(times(rows.iter().map(|r| r.timestamp))),
        Box::new(times(rows.iter().map(|r| r.due_at))),
        Box::new(rows.iter().map(|r| r.ready).collect::<Vec<_>>()),
        Box::new(opt_times(rows.iter().map(|r| r.last_run_on))),
        Box::new(rows.iter().map(|r| r.attempts).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.max_attempts).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.is_recurring).collect::<Vec<_>>()),
        Box::new(opt(|r| r.rule.clone())),
        Box::new(col(|r| r.state.clone())),
        Box::new(col(|r| r.queue.clone())),
        Box::new(rows.iter().map(|r| r.priority).collect::<Vec<_>>()),
        Box::new(opt(|r| r.last_error.clone())),
        Box::new(rows.iter().map(|r| r.fence).collect::<Vec<_>>()),
        Box::new(opt(|r| r.worker.clone())),
        Box::new(opt_times(rows.iter().map(|r| r.started_at))),
        Box::new(opt_times(rows.iter().map(|r| r.lease_until))),
        Box::new(times(rows.iter().map(|r| r.created_at))),
        Box::new(times(rows.iter().map(|r| r.updated_at))),
        Box::new(opt(|r| r.unique_key.clone())),
        Box::new(rows.iter().map(|r| r.cancel_requested).collect::<Vec<_>>()),
    ]
}

/// The arrays of `sql::sql_copy_write_history`.
pub(super) fn history_columns(rows: &[HistoryRow]) -> Columns {
    let col = |f: fn(&HistoryRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&HistoryRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    vec![
        Box::new(ids(rows.iter().map(|r| r.id))),
        Box::new(col(|r| r.handler.clone())),
        Box::new(col(|r| r.data.clone())),
        Box::new(times(rows.iter().map(|r| r.timestamp))),
        Box::new(times(rows.iter().map(|r| r.due_at))),
        Box::new(opt_times(rows.iter().map(|r| r.last_run_on))),
        Box::new(rows.iter().map(|r| r.attempts).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.max_attempts).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.is_recurring).collect::<Vec<_>>()),
        Box::new(opt(|r| r.rule.clone())),
        Box::new(col(|r| r.state.clone())),
        Box::new(col(|r| r.queue.clone())),
        Box::new(rows.iter().map(|r| r.priority).collect::<Vec<_>>()),
        Box::new(opt(|r| r.last_error.clone())),
        Box::new(rows.iter().map(|r| r.fence).collect::<Vec<_>>()),
        Box::new(times(rows.iter().map(|r| r.created_at))),
        Box::new(times(rows.iter().map(|r| r.finished_at))),
        Box::new(opt(|r| r.unique_key.clone())),
        Box::new(
            rows.iter()
                .map(|r| r.run.as_ref().map(|k| k.attempt))
                .collect::<Vec<_>>(),
        ),
        Box::new(opt_times(
            rows.iter().map(|r| r.run.as_ref().map(|k| k.timestamp)),
        )),
        Box::new(opt_times(
            rows.iter().map(|r| r.run.as_ref().map(|k| k.started_at)),
        )),
        Box::new(opt_times(
            rows.iter().map(|r| r.run.as_ref().map(|k| k.finished_at)),
        )),
        Box::new(opt(|r| r.run.as_ref().map(|k| k.outcome.clone()))),
        Box::new(opt(|r| r.run.as_ref().and_then(|k| k.error.clone()))),
        Box::new(opt(|r| r.run.as_ref().map(|k| k.worker.clone()))),
    ]
}

/// The arrays of `sql::sql_copy_write_runs`.
pub(super) fn run_columns(rows: &[RunRow]) -> Columns {
    vec![
        Box::new(ids(rows.iter().map(|r| r.task_id))),
        Box::new(rows.iter().map(|r| r.run.attempt).collect::<Vec<_>>()),
        Box::new(times(rows.iter().map(|r| r.run.timestamp))),
        Box::new(times(rows.iter().map(|r| r.run.started_at))),
        Box::new(times(rows.iter().map(|r| r.run.finished_at))),
        Box::new(
            rows.iter()
                .map(|r| r.run.outcome.clone())
                .collect::<Vec<_>>(),
        ),
        Box::new(rows.iter().map(|r| r.run.error.clone()).collect::<Vec<_>>()),
        Box::new(
            rows.iter()
                .map(|r| r.run.worker.clone())
                .collect::<Vec<_>>(),
        ),
    ]
}

/// A queue's controls, from `sql::sql_copy_read_queues`.
pub(super) fn queue_row(r: &Row) -> QueueRow {
    QueueRow {
        name: r.get(0),
        paused: r.get(1),
        concurrency: r.get(2),
        per_key: r.get(3),
        rate_count: r.get(4),
        rate_period_ms: r.get(5),
        updated_at: time_at(r, 6),
    }
}

/// The arrays of `sql::sql_copy_write_queues`.
pub(super) fn queue_columns(rows: &[QueueRow]) -> Columns {
    vec![
        Box::new(rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.paused).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.concurrency).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.per_key.clone()).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.rate_count).collect::<Vec<_>>()),
        Box::new(rows.iter().map(|r| r.rate_period_ms).collect::<Vec<_>>()),
        Box::new(times(rows.iter().map(|r| r.updated_at))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn instants_round_trip_through_the_wire_format() {
        let t: Timestamp = "2026-11-29T04:03:11.123456Z".parse().unwrap();
        let mut buf = BytesMut::new();
        PgTime::of(t).to_sql(&Type::TIMESTAMPTZ, &mut buf).unwrap();
        let back = PgTime::from_sql(&Type::TIMESTAMPTZ, &buf).unwrap();
        assert_eq!(back.time(), t);
        // 2000-01-01T00:00:00Z is zero on the wire.
        let mut buf = BytesMut::new();
        PgTime::of("2000-01-01T00:00:00Z".parse().unwrap())
            .to_sql(&Type::TIMESTAMPTZ, &mut buf)
            .unwrap();
        assert_eq!(&buf[..], &[0u8; 8]);
    }
}
