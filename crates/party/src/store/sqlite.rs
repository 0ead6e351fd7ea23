//! The embedded backend: one SQLite file in WAL mode.
//!
//! The connection lives on a dedicated thread, off the async runtime; async callers send it
//! closures and await the answers. Every write is one `BEGIN IMMEDIATE` transaction, so several
//! processes on one file serialize their writes, and waiting on another process's lock is
//! handled by SQLite's busy timeout, never surfaced as a lost task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, oneshot};

use super::{
    ClaimParams, ClaimedTask, Finish, FinishResult, HeartbeatParams, InsertTask, Next,
    SCHEMA_VERSION, Steer, Store,
};
use crate::clock::{from_micros, to_micros};
use crate::model::{HandlerCount, ListFilter, Outcome, Run, State, Stats, TaskInfo, WorkerInfo};
use crate::{TaskError, TaskId};

/// Migrations by number; `PRAGMA user_version` records how many ran.
const MIGRATIONS: [&str; 1] = [include_str!("sqlite/001_tasks.sql")];

/// How long a worker's heartbeat keeps it counted as live in [`Store::stats`].
const WORKER_LIVE_MICROS: i64 = 30_000_000;

/// A call for the writer thread, and how durable its commit must be.
struct Job {
    durability: Durability,
    run: Box<dyn FnOnce(&mut Connection) + Send>,
}

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

fn db_err(e: rusqlite::Error) -> TaskError {
    TaskError::store(e)
}

impl SqliteStore {
    /// Open (creating if needed) the SQLite file at `path` and bring its schema up to date.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the file cannot be opened, and when its schema is newer than
    /// this binary knows (upgrade party instead of downgrading the database).
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, TaskError> {
        let path = path.as_ref().to_path_buf();
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("party-sqlite".into())
            .spawn(move || {
                let mut conn = match open_connection(&thread_path) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < GROUP_MAX {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    run_jobs(&mut conn, jobs);
                }
            })
            .map_err(TaskError::store)?;
        ready_rx.await.map_err(|_| thread_stopped())??;
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

    /// Run `f` on the writer thread; its commit survives a process crash.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, TaskError> + Send + 'static,
    ) -> Result<R, TaskError> {
        self.call_with(Durability::Crash, f).await
    }

    /// Run `f` on the writer thread; its commit survives a power cut.
    async fn call_durable<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, TaskError> + Send + 'static,
    ) -> Result<R, TaskError> {
        self.call_with(Durability::PowerCut, f).await
    }

    async fn call_with<R: Send + 'static>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut Connection) -> Result<R, TaskError> + Send + 'static,
    ) -> Result<R, TaskError> {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |conn: &mut Connection| {
            let result = f(conn);
            // Inside a group the answer waits for the group's commit.
            defer(Box::new(move |failed: Option<&TaskError>| {
                let _ = tx.send(match failed {
                    Some(e) => Err(e.clone()),
                    None => result,
                });
            }));
        });
        self.tx
            .send(Job { durability, run })
            .map_err(|_| thread_stopped())?;
        rx.await.map_err(|_| thread_stopped())?
    }
}

/// The error for a call that finds the connection's thread gone.
fn thread_stopped() -> TaskError {
    TaskError::store(
        "the SQLite connection thread has stopped (an earlier database call panicked); \
         restart the process to open the database again",
    )
}

/// How often the watcher asks SQLite whether another process committed.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// Wake this process's workers when another process commits to the file: `PRAGMA
/// data_version` changes exactly then. It is a cheap read of a counter; the thread ends when
/// the store is dropped.
fn watch_other_processes(path: &Path, wakeups: std::sync::Weak<Notify>) {
    let path = path.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("party-sqlite-watch".into())
        .spawn(move || {
            let Ok(conn) = Connection::open(&path) else {
                return;
            };
            let version = |c: &Connection| {
                c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                    .ok()
            };
            let mut last = version(&conn);
            loop {
                std::thread::sleep(WATCH_INTERVAL);
                let Some(notify) = wakeups.upgrade() else {
                    return;
                };
                let now = version(&conn);
                if now != last {
                    last = now;
                    notify.notify_waiters();
                }
            }
        });
}

fn open_connection(path: &Path) -> Result<Connection, TaskError> {
    let conn = Connection::open(path).map_err(|e| {
        TaskError::store(format!(
            "cannot open SQLite database {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(db_err)?;
    // Switching a new file to WAL needs a moment alone with it; SQLite reports "locked" at
    // once, without its busy handler, when another process opens the file at the same instant.
    // Wait for it as the busy timeout would.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5 + u64::from(fastrand::u8(..20))));
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    conn.pragma_update(None, "cache_size", -32_768)
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&conn, path)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), TaskError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let result = (|| {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err)?;
        if version > SCHEMA_VERSION {
            return Err(TaskError::store(format!(
                "the database {} has schema version {version}, newer than this party binary knows \
                 ({SCHEMA_VERSION}); upgrade party to a version that knows it",
                path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(sql).map_err(db_err)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db_err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn existing_singleton(conn: &Connection, handler: &str, data: &str) -> Result<TaskId, TaskError> {
    let id: Option<String> = conn
        .query_row(
            "SELECT id FROM tasks WHERE handler = ?1 AND data = ?2 AND is_recurring = 1 \
             AND state IN ('scheduled','running','retrying')",
            params![handler, data],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    match id {
        Some(id) => id.parse(),
        None => Err(TaskError::store(
            "unique constraint failed but no singleton was found",
        )),
    }
}

fn insert_rows(conn: &Connection, tasks: &[InsertTask]) -> Result<(), TaskError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO tasks (id, handler, data, timestamp, due_at, ready, attempts, max_attempts, \
             is_recurring, rule, state, queue, priority, fence, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?4 <= ?10, 0, ?5, ?6, ?7, 'scheduled', ?8, ?9, 0, ?10, ?10)",
        )
        .map_err(db_err)?;
    for t in tasks {
        let r = stmt.execute(params![
            t.id.to_string(),
            t.handler,
            t.data,
            to_micros(t.timestamp),
            t.max_attempts,
            t.is_recurring,
            t.rule,
            t.queue,
            t.priority,
            to_micros(t.created_at),
        ]);
        if let Err(e) = r {
            if is_unique_violation(&e) && t.is_recurring {
                let existing = existing_singleton(conn, &t.handler, &t.data)?;
                return Err(TaskError::Duplicate {
                    handler: t.handler.clone(),
                    existing,
                });
            }
            return Err(db_err(e));
        }
    }
    Ok(())
}

/// A task id read straight from a text column, without an intermediate `String`.
fn id_from_row(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<TaskId> {
    let text = r.get_ref(i)?.as_str()?;
    text.parse().map_err(|e: TaskError| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

const TASK_COLUMNS: &str = "id, handler, data, timestamp, last_run_on, attempts, is_recurring, \
    state, queue, priority, max_attempts, last_error, rule, due_at, created_at, worker";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskInfo> {
    let id: String = r.get(0)?;
    let data: String = r.get(2)?;
    let state: String = r.get(7)?;
    let rule: Option<String> = r.get(12)?;
    let conv = |e: TaskError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(TaskInfo {
        id: id.parse().map_err(conv)?,
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
        runs: Vec::new(),
    })
}

fn get_task(conn: &Connection, id: TaskId, with_runs: bool) -> Result<Option<TaskInfo>, TaskError> {
    let mut task = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
        .map_err(db_err)?
        .query_row([id.to_string()], task_from_row)
        .optional()
        .map_err(db_err)?;
    if let (Some(task), true) = (task.as_mut(), with_runs) {
        let mut stmt = conn
            .prepare_cached(
                "SELECT attempt, timestamp, started_at, finished_at, outcome, error, worker \
                 FROM runs WHERE task_id = ?1 ORDER BY rowid",
            )
            .map_err(db_err)?;
        let runs = stmt
            .query_map([id.to_string()], |r| {
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
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        task.runs = runs;
    }
    Ok(task)
}

fn insert_run(conn: &Connection, f: &Finish) -> Result<(), TaskError> {
    conn.prepare_cached(
        "INSERT INTO runs (task_id, attempt, timestamp, started_at, finished_at, outcome, error, worker) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(db_err)?
    .execute(params![
        f.id.to_string(),
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

fn apply_finish(conn: &Connection, f: &Finish) -> Result<FinishResult, TaskError> {
    let now = to_micros(f.finished_at);
    let (state, timestamp, due_at, last_run_on, reset_attempts) = match &f.next {
        Next::Done => (State::Done, None, None, None, false),
        Next::Dead => (State::Dead, None, None, None, false),
        Next::Retry { due_at } => (State::Retrying, None, Some(to_micros(*due_at)), None, false),
        Next::Reschedule {
            timestamp,
            last_run_on,
        } => (
            State::Scheduled,
            Some(to_micros(*timestamp)),
            Some(to_micros(*timestamp)),
            last_run_on.map(to_micros),
            true,
        ),
    };
    let changed = conn
        .prepare_cached(
            "UPDATE tasks SET state = ?1, timestamp = COALESCE(?2, timestamp), \
             due_at = COALESCE(?3, due_at), last_run_on = COALESCE(?4, last_run_on), \
             attempts = CASE WHEN ?5 THEN 0 ELSE attempts END, \
             last_error = COALESCE(?6, last_error), ready = 0, worker = NULL, started_at = NULL, \
             lease_until = NULL, updated_at = ?7 \
             WHERE id = ?8 AND fence = ?9 AND state = 'running'",
        )
        .map_err(db_err)?
        .execute(params![
            state.as_str(),
            timestamp,
            due_at,
            last_run_on,
            reset_attempts,
            f.error,
            now,
            f.id.to_string(),
            f.fence,
        ])
        .map_err(db_err)?;
    if changed == 0 {
        return Ok(FinishResult::Stale);
    }
    if f.ran {
        insert_run(conn, f)?;
    }
    insert_rows(conn, &f.follow_ups)?;
    Ok(FinishResult::Applied)
}

/// How durable a write transaction must be when it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Survives a power cut (`synchronous=FULL`: the WAL is synced at commit). For writes whose
    /// success a caller is told about: inserts, cancel, retry.
    PowerCut,
    /// Survives a crash of the process, not necessarily a power cut (`synchronous=NORMAL`).
    /// For claims, results, heartbeats and rescues: losing the last of them to a power cut
    /// means those tasks run again (at least once), never that a task is lost. The next
    /// `PowerCut` commit syncs the whole WAL, these included.
    Crash,
}

thread_local! {
    /// The `synchronous` level the connection on this thread is set to.
    static SYNC_LEVEL: std::cell::Cell<Option<Durability>> = const { std::cell::Cell::new(None) };
    /// The group commit under way on this thread, if any.
    static GROUP: std::cell::RefCell<Option<Group>> = const { std::cell::RefCell::new(None) };
}

/// At most this many queued calls share one commit.
const GROUP_MAX: usize = 64;

/// An answer to send once the group's commit is known (`Some` if it failed).
type Answer = Box<dyn FnOnce(Option<&TaskError>) + Send>;

/// Calls that queued up while the writer was busy run in one transaction and share one commit:
/// each call's own transaction becomes a savepoint, its answer waits for the commit, and the
/// commit is as durable as the most demanding call needs.
struct Group {
    answers: Vec<Answer>,
}

/// Send `answer` now, or after the group's commit when one is under way.
fn defer(answer: Answer) {
    let answer = GROUP.with_borrow_mut(|g| match g {
        Some(group) => {
            group.answers.push(answer);
            None
        }
        None => Some(answer),
    });
    if let Some(answer) = answer {
        answer(None);
    }
}

/// Run the queued calls: alone, or several in one transaction with one commit.
fn run_jobs(conn: &mut Connection, jobs: Vec<Job>) {
    // The commit is as durable as the most demanding call needs (set before the transaction:
    // SQLite does not change it inside one).
    let durability = if jobs.iter().any(|j| j.durability == Durability::PowerCut) {
        Durability::PowerCut
    } else {
        Durability::Crash
    };
    if jobs.len() == 1
        || set_durability(conn, durability).is_err()
        || conn.execute_batch("BEGIN IMMEDIATE").is_err()
    {
        for job in jobs {
            (job.run)(conn);
        }
        return;
    }
    GROUP.set(Some(Group {
        answers: Vec::new(),
    }));
    for job in jobs {
        (job.run)(conn);
    }
    let group = GROUP.take().expect("the group under way");
    let committed = conn.execute_batch("COMMIT").map_err(db_err);
    let failed = match committed {
        Ok(()) => None,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Some(e)
        }
    };
    for answer in group.answers {
        answer(failed.as_ref());
    }
}

fn set_durability(conn: &Connection, d: Durability) -> Result<(), TaskError> {
    if SYNC_LEVEL.get() != Some(d) {
        let level = match d {
            Durability::PowerCut => "FULL",
            Durability::Crash => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", level)
            .map_err(db_err)?;
        SYNC_LEVEL.set(Some(d));
    }
    Ok(())
}

fn transaction<R>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    transaction_with(conn, Durability::PowerCut, f)
}

/// One write transaction of `durability`; inside a group commit, a savepoint of the group's.
fn transaction_with<R>(
    conn: &mut Connection,
    durability: Durability,
    f: impl FnOnce(&Connection) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    if GROUP.with_borrow(Option::is_some) {
        let sp = conn.savepoint().map_err(db_err)?;
        let r = f(&sp)?;
        sp.commit().map_err(db_err)?;
        return Ok(r);
    }
    set_durability(conn, durability)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let r = f(&tx)?;
    tx.commit().map_err(db_err)?;
    Ok(r)
}

fn conflict_or_missing(conn: &Connection, id: TaskId, op: Steer) -> TaskError {
    match get_task(conn, id, false) {
        Ok(Some(t)) => op.conflict(id, t.state),
        Ok(None) => TaskError::NotFound(id),
        Err(e) => e,
    }
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
        let (now, lease, limit) = (to_micros(p.now), to_micros(p.lease_until), p.limit);
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                tx.prepare_cached(
                    "UPDATE tasks SET ready = 1 WHERE ready = 0 \
                     AND state IN ('scheduled','retrying') AND due_at <= ?1",
                )
                .map_err(db_err)?
                .execute([now])
                .map_err(db_err)?;
                let mut stmt = tx
                    // `LIMIT (?6 + 0)`, not `LIMIT ?6`: SQLite plans with a bare parameter's
                    // value and re-prepares the statement whenever it changes, and the limit
                    // (the free slots) changes on almost every claim.
                    .prepare_cached(
                        "UPDATE tasks SET state = 'running', ready = 0, attempts = attempts + 1, \
                         fence = fence + 1, worker = ?1, started_at = ?2, lease_until = ?3, updated_at = ?2 \
                         WHERE id IN (SELECT id FROM tasks WHERE ready = 1 \
                           AND state IN ('scheduled','retrying') \
                           AND handler IN (SELECT value FROM json_each(?4)) \
                           AND queue IN (SELECT value FROM json_each(?5)) \
                           ORDER BY priority, due_at LIMIT (?6 + 0)) \
                         RETURNING id, handler, data, timestamp, last_run_on, attempts, max_attempts, \
                           is_recurring, rule, fence",
                    )
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![worker, now, lease, handlers, queues, limit], |r| {
                        Ok(ClaimedTask {
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
                        })
                    })
                    .map_err(db_err)?;
                let out = rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?;
                Ok(out)
            })
        })
        .await
    }

    async fn task_finish(&self, batch: Vec<Finish>) -> Result<Vec<FinishResult>, TaskError> {
        let results = self
            .call(move |conn| {
                transaction_with(conn, Durability::Crash, |tx| {
                    let mut out = Vec::with_capacity(batch.len());
                    for f in &batch {
                        // Only follow-up inserts can collide with a singleton; a finish without
                        // them is one fenced UPDATE plus one run row and needs no savepoint.
                        if f.follow_ups.is_empty() {
                            out.push(apply_finish(tx, f)?);
                            continue;
                        }
                        tx.execute_batch("SAVEPOINT finish").map_err(db_err)?;
                        match apply_finish(tx, f) {
                            Ok(r) => {
                                tx.execute_batch("RELEASE finish").map_err(db_err)?;
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
                    Ok(out)
                })
            })
            .await?;
        self.wakeups.notify_waiters();
        Ok(results)
    }

    async fn task_heartbeat(&self, p: HeartbeatParams<'_>) -> Result<Vec<TaskId>, TaskError> {
        let worker = p.worker.clone();
        let tasks = p.tasks.to_vec();
        let (lease, now) = (to_micros(p.lease_until), to_micros(p.now));
        self.call(move |conn| {
            transaction_with(conn, Durability::Crash, |tx| {
                tx.prepare_cached(
                    "INSERT INTO workers (id, handlers, queues, last_seen) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO UPDATE SET handlers = ?2, queues = ?3, last_seen = ?4",
                )
                .map_err(db_err)?
                .execute(params![worker.id, json_list(&worker.handlers), json_list(&worker.queues), now])
                .map_err(db_err)?;
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE tasks SET lease_until = ?1 WHERE id = ?2 AND fence = ?3 AND state = 'running'",
                    )
                    .map_err(db_err)?;
                let mut lost = Vec::new();
                for (id, fence) in &tasks {
                    if stmt.execute(params![lease, id.to_string(), fence]).map_err(db_err)? == 0 {
                        lost.push(*id);
                    }
                }
                Ok(lost)
            })
        })
        .await
    }

    async fn task_rescue(&self, now: Timestamp) -> Result<Vec<TaskId>, TaskError> {
        let now = to_micros(now);
        let ids = self
            .call(move |conn| {
                transaction_with(conn, Durability::Crash, |tx| {
                    let expired: Vec<(String, u32, u32, i64, i64, Option<String>, i64)> = tx
                        .prepare_cached(
                            "SELECT id, attempts, max_attempts, timestamp, started_at, worker, lease_until \
                             FROM tasks WHERE state = 'running' AND lease_until < ?1",
                        )
                        .map_err(db_err)?
                        .query_map([now], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                        })
                        .map_err(db_err)?
                        .collect::<Result<_, _>>()
                        .map_err(db_err)?;
                    let mut ids = Vec::new();
                    for (id, attempts, max, ts, started, worker, lease) in expired {
                        let worker = worker.unwrap_or_default();
                        let error = format!(
                            "worker {worker} lost its lease (it expired at {} without a heartbeat); \
                             the task was rescued",
                            crate::clock::format_time(from_micros(lease))
                        );
                        let state = if attempts >= max { State::Dead } else { State::Retrying };
                        tx.prepare_cached(
                            "UPDATE tasks SET state = ?1, due_at = ?2, ready = 0, last_error = ?3, \
                             worker = NULL, started_at = NULL, lease_until = NULL, updated_at = ?2 \
                             WHERE id = ?4",
                        )
                        .map_err(db_err)?
                        .execute(params![state.as_str(), now, error, id])
                        .map_err(db_err)?;
                        tx.prepare_cached(
                            "INSERT INTO runs (task_id, attempt, timestamp, started_at, finished_at, \
                             outcome, error, worker) VALUES (?1, ?2, ?3, ?4, ?5, 'lost', ?6, ?7)",
                        )
                        .map_err(db_err)?
                        .execute(params![id, attempts, ts, started, now, error, worker])
                        .map_err(db_err)?;
                        ids.push(id.parse()?);
                    }
                    Ok(ids)
                })
            })
            .await?;
        if !ids.is_empty() {
            self.wakeups.notify_waiters();
        }
        Ok(ids)
    }

    async fn task_next_due(
        &self,
        handlers: &[String],
        queues: &[String],
    ) -> Result<Option<Timestamp>, TaskError> {
        let (handlers, queues) = (json_list(handlers), json_list(queues));
        self.call(move |conn| {
            conn.prepare_cached(
                "SELECT min(due_at) FROM ( \
                   SELECT * FROM (SELECT due_at FROM tasks WHERE ready = 1 \
                     AND state IN ('scheduled','retrying') \
                     AND handler IN (SELECT value FROM json_each(?1)) \
                     AND queue IN (SELECT value FROM json_each(?2)) LIMIT 1) \
                   UNION ALL \
                   SELECT * FROM (SELECT due_at FROM tasks WHERE ready = 0 \
                     AND state IN ('scheduled','retrying') \
                     AND handler IN (SELECT value FROM json_each(?1)) \
                     AND queue IN (SELECT value FROM json_each(?2)) ORDER BY due_at LIMIT 1))",
            )
            .map_err(db_err)?
            .query_row([handlers, queues], |r| r.get::<_, Option<i64>>(0))
            .map(|o| o.map(from_micros))
            .map_err(db_err)
        })
        .await
    }

    async fn task_get(&self, id: TaskId) -> Result<Option<TaskInfo>, TaskError> {
        self.call(move |conn| get_task(conn, id, true)).await
    }

    async fn task_list(&self, filter: &ListFilter) -> Result<Vec<TaskInfo>, TaskError> {
        let filter = filter.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR state = ?1) \
                     AND (?2 IS NULL OR handler = ?2) ORDER BY due_at, id LIMIT ?3"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.state.map(State::as_str),
                        filter.handler,
                        filter.limit.unwrap_or(100)
                    ],
                    task_from_row,
                )
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let now = to_micros(now);
        self.call_durable(move |conn| {
            transaction(conn, |tx| {
                let n = tx
                    .execute(
                        "UPDATE tasks SET state = 'cancelled', ready = 0, updated_at = ?1 \
                         WHERE id = ?2 AND state IN ('scheduled','retrying','dead')",
                        params![now, id.to_string()],
                    )
                    .map_err(db_err)?;
                if n == 0 {
                    return Err(conflict_or_missing(tx, id, Steer::Cancel));
                }
                get_task(tx, id, true)?.ok_or(TaskError::NotFound(id))
            })
        })
        .await
    }

    async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let now = to_micros(now);
        let task = self
            .call_durable(move |conn| {
                transaction(conn, |tx| {
                    let r = tx.execute(
                        "UPDATE tasks SET state = 'scheduled', due_at = ?1, ready = 0, \
                         max_attempts = MAX(max_attempts, attempts + 1), updated_at = ?1 \
                         WHERE id = ?2 AND state IN ('dead','cancelled','retrying')",
                        params![now, id.to_string()],
                    );
                    let n = match r {
                        Ok(n) => n,
                        Err(e) if is_unique_violation(&e) => {
                            let t = get_task(tx, id, false)?.ok_or(TaskError::NotFound(id))?;
                            let data = serde_json::to_string(&t.data).map_err(TaskError::store)?;
                            let existing = existing_singleton(tx, &t.handler, &data)?;
                            return Err(TaskError::Duplicate {
                                handler: t.handler,
                                existing,
                            });
                        }
                        Err(e) => return Err(db_err(e)),
                    };
                    if n == 0 {
                        return Err(conflict_or_missing(tx, id, Steer::Retry));
                    }
                    get_task(tx, id, true)?.ok_or(TaskError::NotFound(id))
                })
            })
            .await?;
        self.wakeups.notify_waiters();
        Ok(task)
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats, TaskError> {
        let now = to_micros(now);
        self.call(move |conn| {
            let mut by_state: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
            let mut by_handler = Vec::new();
            let mut stmt = conn
                .prepare_cached("SELECT handler, state, count(*) FROM tasks GROUP BY handler, state ORDER BY handler, state")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?)))
                .map_err(db_err)?;
            for row in rows {
                let (handler, state, count) = row.map_err(db_err)?;
                let state: State = state.parse()?;
                if let Some(e) = by_state.iter_mut().find(|(s, _)| *s == state) {
                    e.1 += count;
                }
                by_handler.push(HandlerCount { handler, state, count });
            }
            let oldest_due: Option<i64> = conn
                .query_row(
                    "SELECT min(due_at) FROM tasks WHERE state IN ('scheduled','retrying') AND due_at <= ?1",
                    [now],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let finished_last_minute: u64 = conn
                .query_row("SELECT count(*) FROM runs WHERE finished_at > ?1", [now - 60_000_000], |r| r.get(0))
                .map_err(db_err)?;
            let mut workers = Vec::new();
            let mut stmt = conn
                .prepare_cached("SELECT id, handlers, queues, last_seen FROM workers WHERE last_seen >= ?1 ORDER BY id")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([now - WORKER_LIVE_MICROS], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                })
                .map_err(db_err)?;
            for row in rows {
                let (id, handlers, queues, last_seen) = row.map_err(db_err)?;
                workers.push(WorkerInfo {
                    id,
                    handlers: serde_json::from_str(&handlers).unwrap_or_default(),
                    queues: serde_json::from_str(&queues).unwrap_or_default(),
                    last_seen: from_micros(last_seen),
                });
            }
            let known: Vec<String> = workers.iter().flat_map(|w| w.handlers.iter().cloned()).collect();
            let mut unhandled = Vec::new();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT handler, state, count(*) FROM tasks WHERE state IN ('scheduled','retrying') \
                     AND due_at <= ?1 AND handler NOT IN (SELECT value FROM json_each(?2)) \
                     GROUP BY handler, state ORDER BY handler, state",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![now, json_list(&known)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?))
                })
                .map_err(db_err)?;
            for row in rows {
                let (handler, state, count) = row.map_err(db_err)?;
                unhandled.push(HandlerCount { handler, state: state.parse()?, count });
            }
            Ok(Stats {
                by_state,
                by_handler,
                oldest_due: oldest_due.map(from_micros),
                finished_last_minute,
                unhandled,
                workers,
            })
        })
        .await
    }

    async fn worker_remove(&self, id: &str) -> Result<(), TaskError> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM workers WHERE id = ?1", [id])
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}
