//! The embedded backend: one SQLite file in WAL mode.
//!
//! The connection lives on a dedicated thread, off the async runtime; async callers send it
//! closures and await the answers. Every write is one `BEGIN IMMEDIATE` transaction, so several
//! processes on one file serialize their writes, and waiting on another process's lock is
//! handled by SQLite's busy timeout, never surfaced as a lost task.
//!
//! The files mirror the PostgreSQL backend's: `conn` (the writer thread), `sql` (the
//! statements' text), `migrate` (and `migrations/NNN_*.sql`), `wakeup` (noticing other
//! processes' commits), `rows` (row decoding) and `error`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use self::conn::{Durability, Job, snapshot, start_writer, transaction, transaction_with};
use self::error::{db_err, existing_singleton, existing_unique, is_unique_violation};
use self::rows::{
    expired_from_row, history_row, id_from_row, id_key, json_list, live_row, queue_row,
    run_from_row, run_row, task_from_row,
};
use self::wakeup::watch_other_processes;
use super::{
    ClaimParams, ClaimedTask, CopyKey, CopyRead, CopyRows, CopyTable, ExpiredParams, ExpiredTask,
    Finish, FinishResult, Heartbeat, HeartbeatParams, InsertTask, KEPT_RUN_POSITION, LeaderParams,
    ManyCount, Next, PruneCounts, PruneParams, QueueCounts, RunsParams, StatsParams, Steer,
    SteerMany, Store, StoreStats, SuccessParams, Successes, TableSizes,
};
use crate::clock::{from_micros, to_micros};
use crate::model::{ListCursor, ListFilter, RunPage, State, TaskInfo, WorkerInfo};
use crate::queues::{QueueControl, QueueLimits};
use crate::{TaskError, TaskId};

mod conn;
mod error;
mod migrate;
mod queues;
mod rows;
mod sql;
mod wakeup;

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    tx: mpsc::Sender<Job>,
    wakeups: Arc<Notify>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// What one statement of a bulk cancel or retry does, for [`SqliteStore::steer_many`].
#[derive(Clone, Copy)]
enum Step {
    /// Changes tasks; its rows count.
    Changes,
    /// Moves live tasks into the history as cancelled (`RETURNING handler, queue`); its rows
    /// count, and are added to the counters (see `Added`).
    Cancels,
    /// Finishes what an earlier statement did to the same tasks; its rows do not count again.
    Follows,
    /// Deletes from the history the rows an earlier statement moved back to the live tasks
    /// (`RETURNING handler, queue, state`): its rows do not count again, and are taken from
    /// the counters.
    Removes,
}

impl SqliteStore {
    /// Run a bulk cancel or retry's statements in one durable transaction; returns how many
    /// tasks changed: the rows the counting statements changed.
    async fn steer_many(
        &self,
        statements: &'static [(&'static str, Step)],
        p: SteerMany<'_>,
    ) -> Result<u64, TaskError> {
        let states: Vec<String> = p.states.iter().map(|s| s.as_str().to_string()).collect();
        let (handler, queue) = (p.handler.map(str::to_string), p.queue.map(str::to_string));
        let (path, value) = (data_path(p.data), p.data.map(|m| m.value.clone()));
        let now = to_micros(p.now);
        self.call_durable(move |conn| {
            transaction(conn, |tx| {
                let states = json_list(&states);
                let mut changed = 0;
                for (sql, step) in statements {
                    let args = params![now, states, handler, queue, path, value];
                    let n = match step {
                        Step::Cancels => {
                            let moved = returned_handler_queue(tx, sql, args)?;
                            let n = moved.len();
                            Added::moved(moved, State::Cancelled).write(tx)?;
                            n
                        }
                        Step::Removes => {
                            Added::deleted(tx, sql, args)?.write(tx)?;
                            0
                        }
                        Step::Changes | Step::Follows => tx
                            .prepare_cached(sql)
                            .map_err(db_err)?
                            .execute(args)
                            .map_err(db_err)?,
                    };
                    if !matches!(step, Step::Follows | Step::Removes) {
                        changed += n as u64;
                    }
                }
                Ok(changed)
            })
        })
        .await
    }

    async fn count_many(
        &self,
        p: SteerMany<'_>,
        at_most: u64,
        examine: u64,
    ) -> Result<ManyCount, TaskError> {
        let cap = i64::try_from(at_most).unwrap_or(i64::MAX);
        let examine = i64::try_from(examine).unwrap_or(i64::MAX);
        let states = json_list(
            p.states
                .iter()
                .map(|s| s.as_str().to_string())
                .collect::<Vec<_>>()
                .as_slice(),
        );
        let (handler, queue) = (p.handler.map(str::to_string), p.queue.map(str::to_string));
        let (path, value) = (data_path(p.data), p.data.map(|m| m.value.clone()));
        let now = to_micros(p.now);
        self.call(move |conn| {
            conn.prepare_cached(sql::COUNT_MANY)
                .map_err(db_err)?
                .query_row(
                    params![now, states, handler, queue, path, value, cap, examine],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)),
                )
                .map(|(n, examined_all)| ManyCount {
                    matched: (n as u64).min(at_most),
                    examined_all,
                })
                .map_err(db_err)
        })
        .await
    }

    /// Open (creating if needed) the SQLite file at `path` and bring its schema up to date.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the file cannot be opened, and when its schema is newer than
    /// this binary knows (upgrade party instead of downgrading the database).
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, TaskError> {
        let path = path.as_ref().to_path_buf();
        let tx = start_writer(&path).await?;
        let wakeups = Arc::new(Notify::new());
        watch_other_processes(&path, Arc::downgrade(&wakeups));
        Ok(SqliteStore { tx, wakeups, path })
    }

    /// Run `PRAGMA integrity_check`; `Ok("ok")` for a sound file, otherwise SQLite's findings.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the check cannot run.
    pub async fn integrity_check(&self) -> Result<String, TaskError> {
        self.call(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(db_err)?;
            let lines = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(lines.join("\n"))
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Insert `tasks` in order, a chunk of [`sql::CHUNK_SIZES`] rows to a statement. A chunk that
/// collides with a live task is undone by SQLite and written again one row at a time, which
/// names the task that collided; the caller's transaction then takes back what went in.
fn insert_rows(conn: &Connection, tasks: &[InsertTask]) -> Result<(), TaskError> {
    for chunk in sql::chunks(tasks) {
        if let [t] = chunk {
            insert_row(conn, t)?;
            continue;
        }
        let mut stmt = conn
            .prepare_cached(sql::insert_tasks(chunk.len()))
            .map_err(db_err)?;
        for (r, t) in chunk.iter().enumerate() {
            bind_task(&mut stmt, r * sql::INSERT_TASK_VALUES, t)?;
        }
        match stmt.raw_execute() {
            Ok(_) => {
                for t in chunk {
                    refuse_recent_unique(conn, t)?;
                }
            }
            Err(e) if is_unique_violation(&e) => {
                drop(stmt);
                for t in chunk {
                    insert_row(conn, t)?;
                }
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    Ok(())
}

/// Bind `t` to the [`sql::INSERT_TASK_VALUES`] parameters of `stmt` after the first `before`.
fn bind_task(
    stmt: &mut rusqlite::CachedStatement<'_>,
    before: usize,
    t: &InsertTask,
) -> Result<(), TaskError> {
    let values: [&dyn rusqlite::ToSql; sql::INSERT_TASK_VALUES] = [
        &id_key(&t.id),
        &t.handler,
        &t.data,
        &to_micros(t.timestamp),
        &t.max_attempts,
        &t.is_recurring,
        &t.rule,
        &t.queue,
        &t.priority,
        &to_micros(t.created_at),
        &t.unique_key,
    ];
    for (i, v) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(before + i + 1, v).map_err(db_err)?;
    }
    Ok(())
}

/// Insert one task; a collision with a live task is a [`TaskError::Duplicate`] naming it.
fn insert_row(conn: &Connection, t: &InsertTask) -> Result<(), TaskError> {
    let mut stmt = conn.prepare_cached(sql::INSERT_TASK).map_err(db_err)?;
    bind_task(&mut stmt, 0, t)?;
    if let Err(e) = stmt.raw_execute() {
        if is_unique_violation(&e) {
            if let Some(key) = &t.unique_key {
                return Err(existing_unique(conn, &t.handler, key)?);
            }
        }
        if is_unique_violation(&e) && t.is_recurring {
            let existing = existing_singleton(conn, &t.handler, &t.data)?;
            return Err(TaskError::Duplicate {
                handler: t.handler.clone(),
                existing,
                unique_key: None,
                place: None,
            });
        }
        return Err(db_err(e));
    }
    refuse_recent_unique(conn, t)
}

/// Within its window, a finished task with the same unique key refuses `t` (the caller's
/// transaction then takes the row back out).
fn refuse_recent_unique(conn: &Connection, t: &InsertTask) -> Result<(), TaskError> {
    let (Some(key), Some(since)) = (&t.unique_key, t.unique_since) else {
        return Ok(());
    };
    let recent = conn
        .prepare_cached(sql::RECENT_UNIQUE)
        .map_err(db_err)?
        .query_row(params![t.handler, key, to_micros(since)], |r| {
            id_from_row(r, 0)
        })
        .optional()
        .map_err(db_err)?;
    match recent {
        Some(existing) => Err(TaskError::Duplicate {
            handler: t.handler.clone(),
            existing,
            unique_key: Some(key.clone()),
            place: None,
        }),
        None => Ok(()),
    }
}

/// A task, live or finished, with its run history if asked.
fn get_task(conn: &Connection, id: TaskId, with_runs: bool) -> Result<Option<TaskInfo>, TaskError> {
    let mut task = conn
        .prepare_cached(sql::GET)
        .map_err(db_err)?
        .query_row([id_key(&id)], task_from_row)
        .optional()
        .map_err(db_err)?;
    if task.is_none() {
        task = conn
            .prepare_cached(sql::GET_HISTORY)
            .map_err(db_err)?
            .query_row([id_key(&id)], task_from_row)
            .optional()
            .map_err(db_err)?;
    }
    if let (Some(task), true) = (task.as_mut(), with_runs) {
        let mut stmt = conn.prepare_cached(sql::GET_RUNS).map_err(db_err)?;
        let runs = stmt
            .query_map([id_key(&id)], run_from_row)
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        task.runs = runs;
    }
    Ok(task)
}

/// [`Store::task_runs`] within one snapshot.
fn task_runs(conn: &Connection, p: RunsParams) -> Result<Option<(TaskInfo, RunPage)>, TaskError> {
    let Some(task) = get_task(conn, p.id, false)? else {
        return Ok(None);
    };
    let key = id_key(&p.id);
    let kept = conn
        .prepare_cached(sql::RUNS_KEPT)
        .map_err(db_err)?
        .query_row([&key], run_from_row)
        .optional()
        .map_err(db_err)?;
    let wanted = if p.limit == 0 {
        0
    } else {
        p.limit as usize + 1
    };
    let before = p.before.map_or(KEPT_RUN_POSITION, |c| c.position);
    let mut read: Vec<(i64, crate::Run)> = Vec::with_capacity(wanted.min(1024));
    // The kept run is the latest: the first page starts with it.
    if let (Some(run), None, true) = (&kept, p.before, wanted > 0) {
        read.push((KEPT_RUN_POSITION, run.clone()));
    }
    let rest = wanted - read.len();
    if rest > 0 {
        let mut stmt = conn.prepare_cached(sql::RUNS_PAGE).map_err(db_err)?;
        let rows = stmt
            .query_map(params![key, before, rest as i64], |r| {
                Ok((r.get::<_, i64>(7)?, run_from_row(r)?))
            })
            .map_err(db_err)?;
        for row in rows {
            read.push(row.map_err(db_err)?);
        }
    }
    let counted: u64 = conn
        .prepare_cached(sql::RUNS_COUNT)
        .map_err(db_err)?
        .query_row(
            params![
                key,
                p.count_at_most.saturating_add(1).min(i64::MAX as u64) as i64
            ],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    let counted = counted + u64::from(kept.is_some());
    Ok(Some((task, p.page(read, counted))))
}

fn insert_run(conn: &Connection, f: &Finish) -> Result<(), TaskError> {
    conn.prepare_cached(sql::INSERT_RUN)
        .map_err(db_err)?
        .execute(params![
            id_key(&f.id),
            f.attempt,
            to_micros(f.timestamp),
            to_micros(f.started_at),
            to_micros(f.finished_at),
            f.outcome.as_str(),
            f.error,
            f.worker,
        ])
        .map_err(db_err)?;
    Ok(())
}

/// Finished tasks that entered or left the history, per handler, queue and state, to add to
/// (or take from) the counters `stats` reads (`task_counts`). On SQLite the statements that
/// insert or delete history rows count them (a trigger per row cost a tenth of a worker's
/// throughput on inserts and about as much of a prune, there being one writer); a trigger
/// counts the history's changes of state.
#[derive(Default)]
struct Added(HashMap<(String, String, &'static str), i64>);

impl Added {
    /// The rows a statement moved into the history in `state`, by their handler and queue.
    fn moved(moved: Vec<(String, String)>, state: State) -> Added {
        let mut added = Added::default();
        for (handler, queue) in moved {
            added.add(handler, queue, state);
        }
        added
    }

    fn add(&mut self, handler: String, queue: String, state: State) {
        *self.0.entry((handler, queue, state.as_str())).or_insert(0) += 1;
    }

    /// A row a statement deleted from the history, in the state it had there.
    fn remove(&mut self, handler: String, queue: String, state: &str) -> Result<(), TaskError> {
        let state: State = state.parse().map_err(|_| {
            TaskError::store(format!(
                "a finished task in the history has the state {state:?}, which party never \
                 writes: another program changed the database; restore it from a backup"
            ))
        })?;
        *self.0.entry((handler, queue, state.as_str())).or_insert(0) -= 1;
        Ok(())
    }

    /// The rows a statement ending in `RETURNING handler, queue, state` deleted.
    fn deleted(
        conn: &Connection,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Added, TaskError> {
        let rows: Vec<(String, String, String)> = conn
            .prepare_cached(sql)
            .map_err(db_err)?
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?;
        let mut removed = Added::default();
        for (handler, queue, state) in rows {
            removed.remove(handler, queue, &state)?;
        }
        Ok(removed)
    }

    fn merge(&mut self, other: Added) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_insert(0) += n;
        }
    }

    /// Add the counts, in the transaction that inserted or deleted the rows.
    fn write(self, conn: &Connection) -> Result<(), TaskError> {
        let mut stmt = conn.prepare_cached(sql::COUNT_ADDED).map_err(db_err)?;
        for ((handler, queue, state), n) in self.0 {
            stmt.execute(params![handler, queue, state, n])
                .map_err(db_err)?;
        }
        Ok(())
    }
}

/// The handler and queue of each row a statement ending in `RETURNING handler, queue` wrote.
fn returned_handler_queue(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(String, String)>, TaskError> {
    conn.prepare_cached(sql)
        .map_err(db_err)?
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err)?
        .collect::<Result<_, _>>()
        .map_err(db_err)
}

fn apply_finish(
    conn: &Connection,
    f: &Finish,
    added: &mut Added,
) -> Result<FinishResult, TaskError> {
    let now = to_micros(f.finished_at);
    // How the attempts change: by 0 (kept), by -1 (the claim's given back: released
    // unrun), or `None`: reset to 0 for a new occurrence.
    let mut max_attempts = None;
    let (state, timestamp, due_at, last_run_on, attempts) = match &f.next {
        Next::Done | Next::Dead | Next::Cancelled => {
            // Finished for good: the task leaves the live table for the history, then its
            // follow-up tasks go in.
            let moved = apply_moves(conn, &[f], added)?.remove(0);
            if moved == FinishResult::Applied {
                insert_rows(conn, &f.follow_ups)?;
            }
            return Ok(moved);
        }
        Next::Retry {
            due_at,
            max_attempts: at_least,
        } => {
            max_attempts = *at_least;
            (
                State::Retrying,
                None,
                Some(to_micros(*due_at)),
                None,
                Some(0),
            )
        }
        Next::Release { due_at, state } => (*state, None, Some(to_micros(*due_at)), None, Some(-1)),
        Next::Reschedule {
            timestamp,
            due_at,
            last_run_on,
        } => (
            State::Scheduled,
            Some(to_micros(*timestamp)),
            Some(to_micros(*due_at)),
            last_run_on.map(to_micros),
            None,
        ),
    };
    let changed = conn
        .prepare_cached(sql::FINISH)
        .map_err(db_err)?
        .execute(params![
            state.as_str(),
            timestamp,
            due_at,
            last_run_on,
            attempts,
            f.error,
            now,
            id_key(&f.id),
            f.fence,
            f.expired_before.map(to_micros),
            max_attempts,
        ])
        .map_err(db_err)?;
    if changed == 0 {
        return Ok(FinishResult::Stale);
    }
    finish_rest(conn, f)
}

/// Whether a finish moves its task to the history and does nothing else (no follow-up tasks
/// to insert): such finishes of distinct tasks are written together by [`apply_moves`].
fn is_move(f: &Finish) -> bool {
    f.follow_ups.is_empty() && matches!(f.next, Next::Done | Next::Dead | Next::Cancelled)
}

/// Moves of tasks that finished for good (done, dead, cancelled) to the history, each of a
/// different task, fenced, keeping the attempt that ended it in the `run_*` columns (all NULL
/// when no attempt ran); in the order given, a chunk at a time: one read of the chunk's live
/// rows, history rows inserted many to a statement, one delete. Not one `INSERT ... SELECT
/// ... RETURNING`: SQLite gives a statement that inserts from a query, or returns rows, a
/// statement journal and a scratch table of its own, which for one row cost more than the
/// row's writes. And not three statements per task, whose own costs (cursors, bindings,
/// reset) were a fifth of a move's.
fn apply_moves(
    conn: &Connection,
    moves: &[&Finish],
    added: &mut Added,
) -> Result<Vec<FinishResult>, TaskError> {
    use rusqlite::types::Value;
    use sql::move_col as col;
    let mut out = Vec::with_capacity(moves.len());
    for chunk in moves.chunks(sql::CHUNK_SIZES[0]) {
        let (read, ids) = by_ids(sql::move_read, chunk);
        let mut live: Vec<Vec<Value>> = conn
            .prepare_cached(read)
            .map_err(db_err)?
            .query_map(ids, |r| {
                (0..sql::MOVE_READ_COLUMNS)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?;
        let mut rows: Vec<Vec<Value>> = Vec::with_capacity(chunk.len());
        let mut moved: Vec<&Finish> = Vec::with_capacity(chunk.len());
        for f in chunk {
            let at = live
                .iter()
                .position(|row| matches!(&row[0], Value::Blob(id) if id[..] == *id_key(&f.id)));
            // Applied only while the task runs under this claim's fence and, for a rescue,
            // its lease ended before the rescue's cutoff.
            let applies = at.is_some_and(|at| {
                let row = &live[at];
                matches!(&row[col::STATE], Value::Text(s) if s == "running")
                    && row[col::FENCE] == Value::Integer(f.fence)
                    && f.expired_before.is_none_or(|cutoff| {
                        matches!(row[col::LEASE_UNTIL], Value::Integer(l) if l < to_micros(cutoff))
                    })
            });
            let Some(at) = at.filter(|_| applies) else {
                out.push(FinishResult::Stale);
                continue;
            };
            // The history row starts with what was read up to the state.
            let mut row = live.swap_remove(at);
            row.truncate(col::STATE);
            if let Some(e) = &f.error {
                row[col::LAST_ERROR] = Value::Text(e.clone());
            }
            let (handler, queue) = match (&row[col::HANDLER], &row[col::QUEUE]) {
                (Value::Text(h), Value::Text(q)) => (h.clone(), q.clone()),
                _ => {
                    return Err(TaskError::store(format!(
                        "task {} has a handler or queue that is not text: another program \
                         changed the database; restore it from a backup",
                        f.id
                    )));
                }
            };
            let state = match f.next {
                Next::Done => State::Done,
                Next::Dead => State::Dead,
                _ => State::Cancelled,
            };
            added.add(handler, queue, state);
            // The attempt that ended it stays on the history row (all NULL when none ran).
            let ran = f.ran;
            row.extend([
                Value::Text(state.as_str().to_string()),
                Value::Integer(to_micros(f.finished_at)),
                Value::from(ran.then_some(i64::from(f.attempt))),
                Value::from(ran.then(|| to_micros(f.timestamp))),
                Value::from(ran.then(|| to_micros(f.started_at))),
                Value::from(ran.then(|| to_micros(f.finished_at))),
                Value::from(ran.then(|| f.outcome.as_str().to_string())),
                Value::from(f.error.clone().filter(|_| ran)),
                Value::from(ran.then(|| f.worker.clone())),
            ]);
            debug_assert_eq!(row.len(), sql::MOVE_INSERT_VALUES);
            rows.push(row);
            moved.push(f);
            out.push(FinishResult::Applied);
        }
        if moved.is_empty() {
            continue;
        }
        for now in sql::chunks(&rows) {
            conn.prepare_cached(sql::move_insert(now.len()))
                .map_err(db_err)?
                .execute(rusqlite::params_from_iter(now.iter().flatten()))
                .map_err(db_err)?;
        }
        let (delete, ids) = by_ids(sql::move_delete, &moved);
        conn.prepare_cached(delete)
            .map_err(db_err)?
            .execute(ids)
            .map_err(db_err)?;
    }
    Ok(out)
}

/// The statement `sql` builds for the fewest ids that hold the tasks of `fs`, with their ids
/// (the last repeated to fill its list).
fn by_ids<'a>(
    sql: fn(usize) -> &'static str,
    fs: &'a [&'a Finish],
) -> (
    &'static str,
    rusqlite::ParamsFromIter<impl Iterator<Item = &'a [u8]>>,
) {
    let size = sql::chunk_size_for(fs.len());
    let ids = (0..size).map(move |i| id_key(&fs[i.min(fs.len() - 1)].id));
    (sql(size), rusqlite::params_from_iter(ids))
}

/// After an applied finish: its run row and follow-up tasks.
fn finish_rest(conn: &Connection, f: &Finish) -> Result<FinishResult, TaskError> {
    if f.ran {
        insert_run(conn, f)?;
    }
    insert_rows(conn, &f.follow_ups)?;
    Ok(FinishResult::Applied)
}

/// Every row `sql` returns with `args`, each read by `f`.
fn rows_of<T>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, TaskError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let rows = stmt.query_map(args, f).map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

fn conflict_or_missing(conn: &Connection, id: TaskId, op: Steer) -> TaskError {
    match get_task(conn, id, false) {
        Ok(Some(t)) => op.conflict(id, t.state),
        Ok(None) => TaskError::NotFound(id),
        Err(e) => e,
    }
}

/// Refuse a batch of copied rows when one's id is stored in `table`, the other table a task
/// can be in (each table's key refuses its own repeats): a task is live or finished, not both.
fn refuse_stored_ids<'a>(
    conn: &Connection,
    table: &str,
    ids: impl Iterator<Item = &'a TaskId>,
) -> Result<(), TaskError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = ?1"))
        .map_err(db_err)?;
    for id in ids {
        if stmt.exists([id_key(id)]).map_err(db_err)? {
            return Err(super::stored_elsewhere(*id, table));
        }
    }
    Ok(())
}

/// One prune batch: finished tasks past their cutoff, kind by kind, then old run rows of live
/// recurring tasks.
fn prune(conn: &Connection, p: &PruneParams) -> Result<PruneCounts, TaskError> {
    let mut counts = PruneCounts::default();
    let mut removed = Added::default();
    let kinds = [
        (sql::PRUNE_DONE, sql::PRUNE_DONE_COUNT, p.done_before),
        (sql::PRUNE_DEAD, sql::PRUNE_DEAD_COUNT, p.dead_before),
        (
            sql::PRUNE_RECURRING,
            sql::PRUNE_RECURRING_COUNT,
            p.recurring_before,
        ),
    ];
    for (delete, count, before) in kinds {
        let room = u64::from(p.limit).saturating_sub(counts.tasks);
        let Some(before) = before.filter(|_| room > 0) else {
            continue;
        };
        let args = params![to_micros(before), room as i64];
        if p.dry_run {
            let (tasks, runs) = conn
                .prepare_cached(count)
                .map_err(db_err)?
                .query_row(args, |r| Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?)))
                .map_err(db_err)?;
            counts.tasks += tasks;
            counts.task_runs += runs;
            continue;
        }
        // One statement removes the batch; only the rows that may have earlier attempts in
        // `runs` cost a lookup there.
        type Removed = (Vec<u8>, bool, bool, String, String, String);
        let gone = conn
            .prepare_cached(delete)
            .map_err(db_err)?
            .query_map(args, |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<Removed>, _>>()
            .map_err(db_err)?;
        let mut runs = conn
            .prepare_cached(sql::PRUNE_DELETE_RUNS)
            .map_err(db_err)?;
        for (id, kept_run, may_have_runs, handler, queue, state) in gone {
            if may_have_runs {
                counts.task_runs += runs.execute([&id]).map_err(db_err)? as u64;
            }
            counts.tasks += 1;
            counts.task_runs += u64::from(kept_run);
            removed.remove(handler, queue, &state)?;
        }
    }
    if let Some(before) = p.recurring_before {
        let args = params![to_micros(before), i64::from(p.limit)];
        counts.recurring_runs = if p.dry_run {
            conn.prepare_cached(sql::PRUNE_COUNT_OLD_RUNS)
                .map_err(db_err)?
                .query_row(args, |r| r.get::<_, u64>(0))
                .map_err(db_err)?
        } else {
            conn.prepare_cached(sql::PRUNE_DELETE_OLD_RUNS)
                .map_err(db_err)?
                .execute(args)
                .map_err(db_err)? as u64
        };
    }
    removed.write(conn)?;
    Ok(counts)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn wakeups(&self) -> Arc<Notify> {
        self.wakeups.clone()
    }

    async fn task_insert(&self, tasks: Vec<InsertTask>) -> Result<Vec<TaskId>, TaskError> {
        let ids = self
            .call_durable(move |conn| {
                transaction(conn, |tx| insert_rows(tx, &tasks))?;
                Ok(tasks.iter().map(|t| t.id).collect::<Vec<_>>())
            })
            .await?;
        self.wakeups.notify_waiters();
        Ok(ids)
    }

    async fn task_claim(&self, p: ClaimParams<'_>) -> Result<Vec<ClaimedTask>, TaskError> {
        let worker = p.worker.to_string();
        let handlers = json_list(p.handlers);
        let queues = json_list(p.queues);
        let controlled: Vec<String> = p
            .controlled
            .iter()
            .filter(|q| p.queues.contains(q))
            .cloned()
            .collect();
        let (now, lease, limit) = (to_micros(p.now), to_micros(p.lease_until), p.limit);
        let promote_limit = i64::from(p.promote_limit);
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                tx.prepare_cached(sql::PROMOTE)
                    .map_err(db_err)?
                    .execute(params![now, promote_limit])
                    .map_err(db_err)?;
                let to_claimed = |r: &rusqlite::Row<'_>| {
                    let order: (i32, i64) = (r.get(10)?, r.get(11)?);
                    let task = ClaimedTask {
                        id: id_from_row(r, 0)?,
                        handler: r.get(1)?,
                        data: r.get(2)?,
                        timestamp: from_micros(r.get(3)?),
                        last_run_on: r.get::<_, Option<i64>>(4)?.map(from_micros),
                        attempts: r.get(5)?,
                        max_attempts: r.get(6)?,
                        is_recurring: r.get(7)?,
                        rule: r.get(8)?,
                        fence: r.get(9)?,
                        started_at: from_micros(now),
                        due_at: from_micros(order.1),
                        queue: r.get(12)?,
                        cancel_requested: r.get(13)?,
                    };
                    Ok((order, task))
                };
                // Controlled queues first, each as its limits allow; then the others.
                let mut out = Vec::new();
                for queue in &controlled {
                    let want = limit.saturating_sub(out.len() as u32);
                    if want == 0 {
                        break;
                    }
                    let claim = queues::LimitedClaim {
                        queue,
                        worker: &worker,
                        handlers: &handlers,
                        now,
                        lease,
                        want,
                    };
                    queues::claim_limited(tx, &claim, &mut out, to_claimed)?;
                }
                let rest = limit.saturating_sub(out.len() as u32);
                if rest > 0 {
                    let mut stmt = tx.prepare_cached(sql::CLAIM).map_err(db_err)?;
                    let rows = stmt
                        .query_map(
                            params![worker, now, lease, handlers, queues, rest],
                            to_claimed,
                        )
                        .map_err(db_err)?;
                    for row in rows {
                        out.push(row.map_err(db_err)?);
                    }
                }
                // Hand them out in claim order: priority, then due time.
                out.sort_by_key(|(order, _)| *order);
                Ok(out.into_iter().map(|(_, task)| task).collect())
            })
        })
        .await
    }

    async fn task_finish(&self, batch: Vec<Finish>) -> Result<Vec<FinishResult>, TaskError> {
        let results = self
            .call(move |conn| {
                transaction_with(conn, Durability::Crash, |tx| {
                    let mut out = Vec::with_capacity(batch.len());
                    let mut added = Added::default();
                    // Moves to the history of distinct tasks, in batch order, not yet written.
                    let mut moves: Vec<&Finish> = Vec::new();
                    let mut moving: HashSet<TaskId> = HashSet::new();
                    for f in &batch {
                        // Anything else (or the same task again) is written after the moves
                        // before it, so the batch is applied in its order.
                        if !is_move(f) || moving.contains(&f.id) {
                            out.extend(apply_moves(tx, &moves, &mut added)?);
                            moves.clear();
                            moving.clear();
                        }
                        if is_move(f) {
                            moving.insert(f.id);
                            moves.push(f);
                            continue;
                        }
                        // Only follow-up inserts can collide with a singleton; a finish without
                        // them is one fenced write (and at most one run row): no savepoint.
                        if f.follow_ups.is_empty() {
                            out.push(apply_finish(tx, f, &mut added)?);
                            continue;
                        }
                        tx.execute_batch("SAVEPOINT finish").map_err(db_err)?;
                        let mut one = Added::default();
                        match apply_finish(tx, f, &mut one) {
                            Ok(r) => {
                                tx.execute_batch("RELEASE finish").map_err(db_err)?;
                                added.merge(one);
                                out.push(r);
                            }
                            Err(e @ TaskError::Duplicate { .. }) => {
                                tx.execute_batch("ROLLBACK TO finish; RELEASE finish")
                                    .map_err(db_err)?;
                                out.push(FinishResult::Duplicate(e));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    out.extend(apply_moves(tx, &moves, &mut added)?);
                    added.write(tx)?;
                    Ok(out)
                })
            })
            .await?;
        self.wakeups.notify_waiters();
        Ok(results)
    }

    async fn task_heartbeat(&self, p: HeartbeatParams<'_>) -> Result<Heartbeat, TaskError> {
        let worker = p.worker.clone();
        let tasks = p.tasks.to_vec();
        let (lease, now) = (to_micros(p.lease_until), to_micros(p.now));
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                tx.prepare_cached(sql::HEARTBEAT_WORKER)
                    .map_err(db_err)?
                    .execute(params![
                        worker.id,
                        json_list(&worker.handlers),
                        json_list(&worker.queues),
                        now,
                        to_micros(worker.live_until)
                    ])
                    .map_err(db_err)?;
                let mut stmt = tx.prepare_cached(sql::HEARTBEAT).map_err(db_err)?;
                let mut lost = Vec::new();
                for (id, fence) in &tasks {
                    if stmt
                        .execute(params![lease, id_key(id), fence])
                        .map_err(db_err)?
                        == 0
                    {
                        lost.push(*id);
                    }
                }
                // The one writer renews every row it holds.
                Ok(Heartbeat {
                    lost,
                    unrenewed: Vec::new(),
                })
            })
        })
        .await
    }

    async fn task_expired(&self, p: ExpiredParams) -> Result<Vec<ExpiredTask>, TaskError> {
        let now = to_micros(p.now);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(sql::EXPIRED).map_err(db_err)?;
            let rows = stmt
                .query_map(params![now, p.limit], expired_from_row)
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn task_next_due(
        &self,
        handlers: &[String],
        queues: &[String],
    ) -> Result<Option<Timestamp>, TaskError> {
        let (handlers, queues) = (json_list(handlers), json_list(queues));
        self.call(move |conn| {
            conn.prepare_cached(sql::NEXT_DUE)
                .map_err(db_err)?
                .query_row([handlers, queues], |r| r.get::<_, Option<i64>>(0))
                .map(|o| o.map(from_micros))
                .map_err(db_err)
        })
        .await
    }

    async fn task_get(&self, id: TaskId) -> Result<Option<TaskInfo>, TaskError> {
        // One snapshot: another process may move the task between the live table and the
        // history between two reads, and it would be in neither.
        self.call(move |conn| snapshot(conn, |c| get_task(c, id, true)))
            .await
    }

    async fn task_runs(&self, p: RunsParams) -> Result<Option<(TaskInfo, RunPage)>, TaskError> {
        self.call(move |conn| snapshot(conn, |c| task_runs(c, p)))
            .await
    }

    async fn task_list(&self, filter: &ListFilter) -> Result<Vec<TaskInfo>, TaskError> {
        let filter = filter.clone();
        self.call(move |conn| {
            let text = if filter.state.is_some() {
                sql::LIST_STATE
            } else {
                sql::LIST
            };
            let mut stmt = conn.prepare_cached(text).map_err(db_err)?;
            let rows = stmt
                .query_map(
                    rusqlite::params_from_iter(list_params(&filter).iter()),
                    task_from_row,
                )
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn task_list_sizes(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<(ListCursor, u64)>, TaskError> {
        let filter = filter.clone();
        self.call(move |conn| {
            let text = if filter.state.is_some() {
                sql::SIZES_STATE
            } else {
                sql::SIZES
            };
            let mut stmt = conn.prepare_cached(text).map_err(db_err)?;
            let rows = stmt
                .query_map(
                    rusqlite::params_from_iter(list_params(&filter).iter()),
                    |r| {
                        let place = ListCursor {
                            due_at: from_micros(r.get(0)?),
                            id: id_from_row(r, 1)?,
                        };
                        Ok((place, r.get::<_, i64>(2)?.max(0) as u64))
                    },
                )
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn task_list_reach(
        &self,
        filter: &ListFilter,
        n: u32,
    ) -> Result<Option<ListCursor>, TaskError> {
        // The listing's own statement, without its data filter, to its n-th task.
        let filter = ListFilter {
            data: None,
            limit: Some(n.max(1)),
            ..filter.clone()
        };
        self.call(move |conn| {
            let text = if filter.state.is_some() {
                sql::REACH_STATE
            } else {
                sql::REACH
            };
            let mut stmt = conn.prepare_cached(text).map_err(db_err)?;
            stmt.query_row(
                rusqlite::params_from_iter(list_params(&filter).iter()),
                |r| {
                    Ok(ListCursor {
                        due_at: from_micros(r.get(0)?),
                        id: id_from_row(r, 1)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let now = to_micros(now);
        self.call_durable(move |conn| {
            transaction(conn, |tx| {
                let key = id_key(&id);
                let moved = returned_handler_queue(tx, sql::CANCEL_MOVE, params![now, key])?;
                let mut n = moved.len();
                if n == 1 {
                    Added::moved(moved, State::Cancelled).write(tx)?;
                    tx.execute(sql::DELETE_LIVE, [key]).map_err(db_err)?;
                } else {
                    n = tx
                        .execute(sql::CANCEL_DEAD, params![now, key])
                        .map_err(db_err)?;
                }
                if n == 0 {
                    return Err(conflict_or_missing(tx, id, Steer::Cancel));
                }
                get_task(tx, id, true)?.ok_or(TaskError::NotFound(id))
            })
        })
        .await
    }

    async fn task_cancel_request(
        &self,
        id: TaskId,
        _now: Timestamp,
    ) -> Result<Option<TaskInfo>, TaskError> {
        self.call_durable(move |conn| {
            transaction(conn, |tx| {
                let n = tx
                    .execute(sql::CANCEL_REQUEST, [id_key(&id)])
                    .map_err(db_err)?;
                if n == 0 {
                    return Ok(None);
                }
                get_task(tx, id, true)
            })
        })
        .await
    }

    async fn task_cancel_requested(
        &self,
        claims: &[(TaskId, i64)],
    ) -> Result<Vec<TaskId>, TaskError> {
        let claims = claims.to_vec();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(sql::CANCEL_REQUESTED).map_err(db_err)?;
            let mut out = Vec::new();
            for (id, fence) in &claims {
                if stmt.exists(params![id_key(id), fence]).map_err(db_err)? {
                    out.push(*id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let now = to_micros(now);
        let task = self
            .call_durable(move |conn| {
                transaction(conn, |tx| {
                    let key = id_key(&id);
                    let r = tx
                        .execute(sql::RETRY, params![now, key])
                        .and_then(|n| match n {
                            0 => tx.execute(sql::RETRY_MOVE, params![now, key]),
                            n => Ok(n),
                        });
                    let n = match r {
                        Ok(n) => n,
                        Err(e) if is_unique_violation(&e) => {
                            let t = get_task(tx, id, false)?.ok_or(TaskError::NotFound(id))?;
                            if let Some(key) = &t.unique_key {
                                return Err(existing_unique(tx, &t.handler, key)?);
                            }
                            let data = serde_json::to_string(&t.data).map_err(TaskError::store)?;
                            let existing = existing_singleton(tx, &t.handler, &data)?;
                            return Err(TaskError::Duplicate {
                                handler: t.handler,
                                existing,
                                unique_key: None,
                                place: None,
                            });
                        }
                        Err(e) => return Err(db_err(e)),
                    };
                    if n == 0 {
                        return match get_task(tx, id, true)? {
                            Some(t) if Steer::Retry.settled(&t, from_micros(now)) => Ok(t),
                            _ => Err(conflict_or_missing(tx, id, Steer::Retry)),
                        };
                    }
                    tx.execute(sql::UNFOLD_RUN, [key]).map_err(db_err)?;
                    Added::deleted(tx, sql::DELETE_HISTORY, [key])?.write(tx)?;
                    get_task(tx, id, true)?.ok_or(TaskError::NotFound(id))
                })
            })
            .await?;
        self.wakeups.notify_waiters();
        Ok(task)
    }

    async fn task_successes(&self, params: SuccessParams<'_>) -> Result<Vec<Successes>, TaskError> {
        let tasks = params.tasks.to_vec();
        let limit = params.limit;
        // One snapshot, so each task's figures agree while a worker records runs.
        self.call(move |conn| {
            snapshot(conn, |conn| {
                let mut last = conn.prepare_cached(sql::SUCCESS_LAST).map_err(db_err)?;
                let mut recent = conn.prepare_cached(sql::SUCCESS_SINCE).map_err(db_err)?;
                let mut before = conn.prepare_cached(sql::SUCCESS_BEFORE).map_err(db_err)?;
                let mut kept = conn.prepare_cached(sql::SUCCESS_KEPT).map_err(db_err)?;
                let mut out = Vec::with_capacity(tasks.len());
                for (id, since) in &tasks {
                    let key = id_key(id);
                    let at = to_micros(*since);
                    let read = Successes {
                        last_finished_at: last
                            .query_row(params![key], |r| r.get::<_, i64>(0))
                            .optional()
                            .map_err(db_err)?
                            .map(from_micros),
                        since: recent
                            .query_map(params![key, at, limit], |r| r.get::<_, i64>(0))
                            .map_err(db_err)?
                            .map(|r| r.map(from_micros))
                            .collect::<Result<_, _>>()
                            .map_err(db_err)?,
                        before: before
                            .query_row(params![key, at], |r| r.get(0))
                            .map_err(db_err)?,
                    };
                    let kept_run = kept
                        .query_row(params![key], |r| {
                            Ok((from_micros(r.get(0)?), from_micros(r.get(1)?)))
                        })
                        .optional()
                        .map_err(db_err)?;
                    out.push(read.with_kept(kept_run, *since, limit));
                }
                Ok(out)
            })
        })
        .await
    }

    async fn stats(&self, p: StatsParams) -> Result<StoreStats, TaskError> {
        let now = to_micros(p.now);
        let since = to_micros(p.finished_since);
        // One snapshot, so the figures agree with each other while other processes write.
        self.call(move |conn| {
            snapshot(conn, |conn| {
                let counts = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
                    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
                    let rows = stmt
                        .query_map(args, |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, u64>(2)?,
                            ))
                        })
                        .map_err(db_err)?;
                    let mut out = Vec::new();
                    for row in rows {
                        let (handler, state, count) = row.map_err(db_err)?;
                        out.push((handler, state.parse::<State>()?, count));
                    }
                    Ok::<_, TaskError>(out)
                };
                let all = counts(sql::STATS_COUNTS, &[])?;
                let due = counts(sql::STATS_DUE, &[&now])?;
                let oldest_due: Option<i64> = conn
                    .query_row(sql::STATS_OLDEST, [now], |r| r.get(0))
                    .map_err(db_err)?;
                let finished_recently: u64 = conn
                    .query_row(sql::STATS_FINISHED, [since], |r| r.get(0))
                    .map_err(db_err)?;
                let mut workers = Vec::new();
                let mut stmt = conn.prepare_cached(sql::STATS_WORKERS).map_err(db_err)?;
                let rows = stmt
                    .query_map([now], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .map_err(db_err)?;
                for row in rows {
                    let (id, handlers, queues, last_seen, live_until) = row.map_err(db_err)?;
                    workers.push(WorkerInfo {
                        id,
                        handlers: serde_json::from_str(&handlers).unwrap_or_default(),
                        queues: serde_json::from_str(&queues).unwrap_or_default(),
                        last_seen: from_micros(last_seen),
                        live_until: from_micros(live_until),
                    });
                }
                let stuck_count: u64 = conn
                    .query_row(sql::EXPIRED_COUNT, [now], |r| r.get(0))
                    .map_err(db_err)?;
                let stuck = conn
                    .prepare_cached(sql::EXPIRED)
                    .map_err(db_err)?
                    .query_map(params![now, p.stuck_limit], expired_from_row)
                    .map_err(db_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err)?;
                Ok(StoreStats {
                    counts: all,
                    due,
                    oldest_due: oldest_due.map(from_micros),
                    finished_recently,
                    workers,
                    stuck_count,
                    stuck,
                })
            })
        })
        .await
    }

    async fn task_vacuum(&self) -> Result<(), TaskError> {
        Ok(())
    }

    async fn history_vacuum(&self) -> Result<(), TaskError> {
        Ok(())
    }

    fn indexes_keep_freed_pages(&self) -> bool {
        false
    }

    async fn task_reindex(&self) -> Result<(), TaskError> {
        self.call(|conn| conn.execute_batch("REINDEX tasks").map_err(db_err))
            .await
    }

    async fn table_sizes(&self) -> Result<TableSizes, TaskError> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(sql::TABLE_SIZES).map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_err)?;
            let mut sizes = TableSizes::default();
            for row in rows {
                let (table, is_index, bytes) = row.map_err(db_err)?;
                let size = match table.as_str() {
                    "tasks" => &mut sizes.live,
                    "task_history" => &mut sizes.history,
                    _ => &mut sizes.runs,
                };
                let bytes = bytes.max(0) as u64;
                if is_index {
                    size.index_bytes += bytes;
                } else {
                    size.table_bytes += bytes;
                }
            }
            Ok(sizes)
        })
        .await
    }

    async fn copy_read(&self, p: CopyRead) -> Result<CopyRows, TaskError> {
        self.call(move |conn| {
            let after_id = match &p.after {
                Some(CopyKey::Id(id) | CopyKey::Run(id, _)) => id.as_bytes().to_vec(),
                _ => Vec::new(),
            };
            let limit = i64::from(p.limit);
            Ok(match p.table {
                CopyTable::Live => CopyRows::Live(rows_of(
                    conn,
                    sql::COPY_READ_LIVE,
                    &[&after_id, &limit],
                    live_row,
                )?),
                CopyTable::History => CopyRows::History(rows_of(
                    conn,
                    sql::COPY_READ_HISTORY,
                    &[&after_id, &limit],
                    history_row,
                )?),
                CopyTable::Queues => {
                    let after = match p.after {
                        Some(CopyKey::Name(name)) => name,
                        _ => String::new(),
                    };
                    CopyRows::Queues(rows_of(
                        conn,
                        sql::COPY_READ_QUEUES,
                        &[&after, &limit],
                        queue_row,
                    )?)
                }
                CopyTable::Runs => {
                    let position = match p.after {
                        Some(CopyKey::Run(_, position)) => position,
                        _ => i64::MIN,
                    };
                    CopyRows::Runs(rows_of(
                        conn,
                        sql::COPY_READ_RUNS,
                        &[&after_id, &position, &limit],
                        run_row,
                    )?)
                }
            })
        })
        .await
    }

    async fn copy_write(&self, rows: CopyRows) -> Result<(), TaskError> {
        let live = matches!(rows, CopyRows::Live(_));
        self.call_durable(move |conn| {
            transaction(conn, |tx| {
                match &rows {
                    CopyRows::Live(rows) => {
                        refuse_stored_ids(tx, "task_history", rows.iter().map(|t| &t.id))?;
                        let mut stmt = tx.prepare_cached(sql::COPY_WRITE_LIVE).map_err(db_err)?;
                        for t in rows {
                            stmt.execute(params![
                                id_key(&t.id),
                                t.handler,
                                t.data,
                                to_micros(t.timestamp),
                                to_micros(t.due_at),
                                t.ready,
                                t.last_run_on.map(to_micros),
                                t.attempts,
                                t.max_attempts,
                                t.is_recurring,
                                t.rule,
                                t.state,
                                t.queue,
                                t.priority,
                                t.last_error,
                                t.fence,
                                t.worker,
                                t.started_at.map(to_micros),
                                t.lease_until.map(to_micros),
                                to_micros(t.created_at),
                                to_micros(t.updated_at),
                                t.unique_key,
                                t.cancel_requested,
                            ])
                            .map_err(db_err)?;
                        }
                    }
                    CopyRows::History(rows) => {
                        refuse_stored_ids(tx, "tasks", rows.iter().map(|t| &t.id))?;
                        let mut added = Added::default();
                        for t in rows.iter() {
                            let state: State = t.state.parse()?;
                            added.add(t.handler.clone(), t.queue.clone(), state);
                        }
                        added.write(tx)?;
                        let mut stmt =
                            tx.prepare_cached(sql::COPY_WRITE_HISTORY).map_err(db_err)?;
                        for t in rows {
                            stmt.execute(params![
                                id_key(&t.id),
                                t.handler,
                                t.data,
                                to_micros(t.timestamp),
                                to_micros(t.due_at),
                                t.last_run_on.map(to_micros),
                                t.attempts,
                                t.max_attempts,
                                t.is_recurring,
                                t.rule,
                                t.state,
                                t.queue,
                                t.priority,
                                t.last_error,
                                t.fence,
                                to_micros(t.created_at),
                                to_micros(t.finished_at),
                                t.unique_key,
                                t.run.as_ref().map(|r| r.attempt),
                                t.run.as_ref().map(|r| to_micros(r.timestamp)),
                                t.run.as_ref().map(|r| to_micros(r.started_at)),
                                t.run.as_ref().map(|r| to_micros(r.finished_at)),
                                t.run.as_ref().map(|r| &r.outcome),
                                t.run.as_ref().and_then(|r| r.error.as_ref()),
                                t.run.as_ref().map(|r| &r.worker),
                            ])
                            .map_err(db_err)?;
                        }
                    }
                    CopyRows::Queues(rows) => {
                        let mut stmt = tx.prepare_cached(sql::COPY_WRITE_QUEUE).map_err(db_err)?;
                        for q in rows {
                            stmt.execute(params![
                                q.name,
                                q.paused,
                                q.concurrency,
                                q.per_key,
                                q.rate_count,
                                q.rate_period_ms,
                                to_micros(q.updated_at),
                            ])
                            .map_err(db_err)?;
                        }
                    }
                    CopyRows::Runs(rows) => {
                        let mut stmt = tx.prepare_cached(sql::INSERT_RUN).map_err(db_err)?;
                        for r in rows {
                            stmt.execute(params![
                                id_key(&r.task_id),
                                r.run.attempt,
                                to_micros(r.run.timestamp),
                                to_micros(r.run.started_at),
                                to_micros(r.run.finished_at),
                                r.run.outcome,
                                r.run.error,
                                r.run.worker,
                            ])
                            .map_err(db_err)?;
                        }
                    }
                }
                Ok(())
            })
        })
        .await?;
        if live {
            self.wakeups.notify_waiters();
        }
        Ok(())
    }

    async fn server_time(&self) -> Result<Option<Timestamp>, TaskError> {
        Ok(None)
    }

    async fn worker_register(
        &self,
        worker: &WorkerInfo,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, TaskError> {
        let worker = worker.clone();
        let now = to_micros(now);
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                let written = tx
                    .execute(
                        sql::WORKER_REGISTER,
                        params![
                            worker.id,
                            json_list(&worker.handlers),
                            json_list(&worker.queues),
                            to_micros(worker.last_seen),
                            to_micros(worker.live_until),
                            now
                        ],
                    )
                    .map_err(db_err)?;
                if written > 0 {
                    return Ok(None);
                }
                let live_until: i64 = tx
                    .query_row(sql::WORKER_LIVE_UNTIL, [&worker.id], |r| r.get(0))
                    .map_err(db_err)?;
                Ok(Some(from_micros(live_until)))
            })
        })
        .await
    }

    async fn worker_remove(&self, id: &str) -> Result<(), TaskError> {
        let id = id.to_string();
        // In a transaction of its own (a savepoint of a group commit): a write answered with
        // the group's outcome must be part of it.
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                tx.execute(sql::WORKER_REMOVE, [id]).map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }

    async fn workers_forget(&self, before: Timestamp, dry_run: bool) -> Result<u64, TaskError> {
        let before = to_micros(before);
        self.call(move |conn| {
            let n = if dry_run {
                conn.query_row(sql::WORKERS_FORGET_COUNT, [before], |r| r.get::<_, i64>(0))
                    .map_err(db_err)?
                    .max(0) as u64
            } else {
                transaction_with(conn, Durability::Crash, |tx| {
                    Ok(tx.execute(sql::WORKERS_FORGET, [before]).map_err(db_err)? as u64)
                })?
            };
            Ok(n)
        })
        .await
    }

    async fn task_prune(&self, p: PruneParams) -> Result<PruneCounts, TaskError> {
        self.call(move |conn| transaction_with(conn, Durability::Crash, |tx| prune(tx, &p)))
            .await
    }

    async fn leader_elect(&self, p: LeaderParams<'_>) -> Result<bool, TaskError> {
        let (name, holder) = (p.name.to_string(), p.holder.to_string());
        let (now, until) = (to_micros(p.now), to_micros(p.until));
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                let changed = tx
                    .prepare_cached(sql::LEADER_ELECT)
                    .map_err(db_err)?
                    .execute(params![name, holder, now, until])
                    .map_err(db_err)?;
                Ok(changed == 1)
            })
        })
        .await
    }

    async fn leader_resign(&self, holder: &str) -> Result<(), TaskError> {
        let holder = holder.to_string();
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                tx.prepare_cached(sql::LEADER_RESIGN)
                    .map_err(db_err)?
                    .execute([holder])
                    .map_err(db_err)?;
                Ok(())
            })
        })
        .await
    }
    async fn queue_controls(&self, names: &[String]) -> Result<Vec<QueueControl>, TaskError> {
        let names = names.to_vec();
        self.call(move |conn| queues::controls(conn, &names)).await
    }

    async fn queue_pause(
        &self,
        queue: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<(), TaskError> {
        let queue = queue.to_string();
        self.call_durable(move |conn| {
            transaction(conn, |tx| queues::pause(tx, &queue, paused, now))
        })
        .await?;
        self.wakeups.notify_waiters();
        Ok(())
    }

    async fn queue_limit(
        &self,
        queue: &str,
        limits: &QueueLimits,
        now: Timestamp,
    ) -> Result<(), TaskError> {
        let (queue, limits) = (queue.to_string(), limits.clone());
        self.call_durable(move |conn| {
            transaction(conn, |tx| queues::limit(tx, &queue, &limits, now))
        })
        .await?;
        self.wakeups.notify_waiters();
        Ok(())
    }

    async fn queue_counts(&self, now: Timestamp) -> Result<QueueCounts, TaskError> {
        self.call(move |conn| snapshot(conn, |conn| queues::counts(conn, now)))
            .await
    }

    async fn task_cancel_many(&self, p: SteerMany<'_>) -> Result<u64, TaskError> {
        const CANCEL: &[(&str, Step)] = &[
            (sql::CANCEL_MANY_MOVE, Step::Cancels),
            (sql::CANCEL_MANY_DELETE, Step::Follows),
            (sql::CANCEL_MANY_DEAD, Step::Changes),
        ];
        self.steer_many(CANCEL, p).await
    }

    async fn task_retry_many(&self, p: SteerMany<'_>) -> Result<u64, TaskError> {
        const RETRY: &[(&str, Step)] = &[
            (sql::RETRY_MANY_LIVE, Step::Changes),
            (sql::RETRY_MANY_MOVE, Step::Changes),
            (sql::RETRY_MANY_UNFOLD, Step::Follows),
            (sql::RETRY_MANY_DELETE, Step::Removes),
        ];
        let n = self.steer_many(RETRY, p).await?;
        if n > 0 {
            self.wakeups.notify_waiters();
        }
        Ok(n)
    }

    async fn task_count_many(
        &self,
        p: SteerMany<'_>,
        at_most: u64,
        examine: u64,
    ) -> Result<ManyCount, TaskError> {
        self.count_many(p, at_most, examine).await
    }
}

/// A listing's parameters, ?1 to ?11 of [`sql::LIST`] (and of the reach statements).
fn list_params(f: &ListFilter) -> [Box<dyn rusqlite::ToSql>; 11] {
    [
        Box::new(f.state.map(State::as_str)),
        Box::new(f.handler.clone()),
        Box::new(f.limit.unwrap_or(crate::policy::DEFAULT_LIST_LIMIT)),
        Box::new(f.queue.clone()),
        Box::new(f.cursor.map(|c| to_micros(c.due_at))),
        Box::new(f.cursor.map(|c| c.id.as_bytes().to_vec())),
        Box::new(data_path(f.data.as_ref())),
        Box::new(f.data.as_ref().map(|m| m.value.clone())),
        Box::new(f.recurring),
        Box::new(f.until.map(|c| to_micros(c.due_at))),
        Box::new(f.until.map(|c| c.id.as_bytes().to_vec())),
    ]
}

/// The JSON path of a data filter's field (`$."customer"`; the field's characters need no
/// escaping, see [`crate::validate::data_filter`]), or NULL for no filter.
fn data_path(m: Option<&crate::DataMatch>) -> Option<String> {
    m.map(|m| format!("$.\"{}\"", m.field))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `EXPLAIN QUERY PLAN` says SQLite does for a listing statement `text`, one line per
    /// step, on a fresh store.
    fn plan(conn: &Connection, text: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}")).unwrap();
        let filter = ListFilter::default();
        stmt.query_map(
            rusqlite::params_from_iter(list_params(&filter).iter()),
            |r| r.get::<_, String>(3),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn a_listing_walks_the_history_through_its_state_index_in_order() {
        let conn = conn::open_connection(Path::new(":memory:")).unwrap();
        // Every finished state read through `(state, due_at, id)` from the cursor on, in
        // order: no scan of the history, no sort of it, a part per state without a filter;
        // only the merged page is sorted.
        for (text, parts) in [
            (sql::LIST, 3),
            (sql::LIST_STATE, 1),
            (sql::REACH, 3),
            (sql::REACH_STATE, 1),
        ] {
            let steps = plan(&conn, text);
            let history: Vec<&String> = steps
                .iter()
                .filter(|s| s.contains("task_history"))
                .collect();
            assert_eq!(history.len(), parts, "{steps:#?}");
            for step in history {
                assert!(
                    step.starts_with("SEARCH task_history USING INDEX history_state (state=?"),
                    "{steps:#?}"
                );
            }
            let sorted = steps.iter().filter(|s| s.contains("TEMP B-TREE")).count();
            assert_eq!(sorted, 1, "{steps:#?}");
        }
    }

    #[test]
    fn a_listings_sizes_walk_the_same_indexes_and_sort_only_page_sized_parts() {
        let conn = conn::open_connection(Path::new(":memory:")).unwrap();
        // SQLite merges the parts of the sizes statements, sorting each part's output (at
        // most a page of places and sizes, read in index order and cut at the limit); no
        // table is scanned or sorted.
        for (text, parts) in [(sql::SIZES, 3), (sql::SIZES_STATE, 1)] {
            let steps = plan(&conn, text);
            let history = steps.iter().filter(|s| s.contains("task_history"));
            assert_eq!(history.clone().count(), parts, "{steps:#?}");
            for step in history {
                assert!(
                    step.starts_with("SEARCH task_history USING INDEX history_state (state=?"),
                    "{steps:#?}"
                );
            }
            for (i, step) in steps.iter().enumerate() {
                assert!(!step.starts_with("SCAN task"), "{steps:#?}");
                if step.contains("TEMP B-TREE") {
                    assert!(
                        i == 0 || !steps[i - 1].starts_with("SEARCH"),
                        "a table read sorted: {steps:#?}"
                    );
                }
            }
        }
    }
}
