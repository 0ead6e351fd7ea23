//! The dedicated writer thread: it owns the connection, runs the calls sent to it (several
//! queued ones in one transaction with one commit), and sets how durable each commit is.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::SqliteStore;
use super::error::{db_err, is_busy};
use super::migrate::migrate;
use crate::TaskError;

/// A call for the writer thread, and how durable its commit must be.
pub(super) struct Job {
    durability: Durability,
    run: Box<dyn FnOnce(&mut Connection) + Send>,
}

/// Start the writer thread on the file at `path`: it opens the connection, brings the schema
/// up to date, then runs the calls sent to it, several queued ones in one commit.
pub(super) async fn start_writer(path: &Path) -> Result<mpsc::Sender<Job>, TaskError> {
    let (tx, rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let thread_path = path.to_path_buf();
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
    Ok(tx)
}

impl SqliteStore {
    /// Run `f` on the writer thread; its commit survives a process crash.
    pub(super) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, TaskError> + Send + 'static,
    ) -> Result<R, TaskError> {
        self.call_with(Durability::Crash, f).await
    }

    /// Run `f` on the writer thread; its commit survives a power cut.
    pub(super) async fn call_durable<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, TaskError> + Send + 'static,
    ) -> Result<R, TaskError> {
        self.call_with(Durability::PowerCut, f).await
    }

    pub(super) async fn call_with<R: Send + 'static>(
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
pub(super) fn thread_stopped() -> TaskError {
    TaskError::store(
        "the SQLite connection thread has stopped (an earlier database call panicked); \
         restart the process to open the database again",
    )
}

pub(super) fn open_connection(path: &Path) -> Result<Connection, TaskError> {
    let conn = Connection::open(path).map_err(|e| {
        TaskError::store(format!(
            "cannot open SQLite database {}: {e}; check that its directory exists and this \
             user may write there",
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
            // The -wal and -shm files beside it cannot be made: a read-only file system, or a
            // directory this user may not write.
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly
                ) =>
            {
                return Err(TaskError::Unusable(format!(
                    "cannot use SQLite database {}: party may not write to it or beside it \
                     (a read-only file system, or a directory this user may not write); SQLite \
                     keeps its -wal and -shm files next to the database, so check that this \
                     user can write the file and its directory",
                    path.display()
                )));
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    // 2 MB of page cache. A workload's hot pages are few (the front of the claim index, the
    // rows just claimed, the end of the history), and a larger cache costs at each commit:
    // SQLite's b-tree balancing briefly numbers a page past the end of the file, after which
    // the commit walks the cache's whole hash table to drop pages past the end. 32 MB drained
    // 8-15% slower, with a million future tasks too (docs/BENCHMARKS.md, "A smaller page
    // cache").
    conn.pragma_update(None, "cache_size", -2048)
        .map_err(db_err)?;
    // Each call in a group commit is a savepoint, whose statement journal would otherwise be
    // a temporary file created, written and removed every few commits.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db_err)?;
    // The WAL grows past its usual few megabytes while a long reader (a backup, a report)
    // holds checkpoints back, and SQLite keeps the file at its largest for good unless told:
    // once a checkpoint has let the log start over, it is cut back to this.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&conn, path)?;
    Ok(conn)
}

/// The size, in bytes, the WAL file is cut back to once a checkpoint lets it start over:
/// 16 MiB, four times what SQLite's automatic checkpoints let it reach in a steady flow.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// How durable a write transaction must be when it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
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
pub(super) const GROUP_MAX: usize = 64;

/// An answer to send once the group's commit is known (`Some` if it failed).
pub(super) type Answer = Box<dyn FnOnce(Option<&TaskError>) + Send>;

/// Calls that queued up while the writer was busy run in one transaction and share one commit:
/// each call's own transaction becomes a savepoint, its answer waits for the commit, and the
/// commit is as durable as the most demanding call needs.
pub(super) struct Group {
    answers: Vec<Answer>,
    /// Why the group's transaction is gone, if SQLite rolled it back under a call (a full
    /// disk, an I/O error): everything the group wrote is undone, and the calls after it are
    /// refused rather than run on their own.
    broken: Option<TaskError>,
}

/// Send `answer` now, or after the group's commit when one is under way.
pub(super) fn defer(answer: Answer) {
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
pub(super) fn run_jobs(conn: &mut Connection, jobs: Vec<Job>) {
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
        broken: None,
    }));
    for job in jobs {
        (job.run)(conn);
    }
    let group = GROUP.take().expect("the group under way");
    let failed = match group.broken {
        // Nothing to commit: the transaction is gone, and with it what the group wrote.
        Some(e) => Some(e),
        None => match conn.execute_batch("COMMIT").map_err(db_err) {
            Ok(()) => None,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(e)
            }
        },
    };
    for answer in group.answers {
        answer(failed.as_ref());
    }
}

pub(super) fn set_durability(conn: &Connection, d: Durability) -> Result<(), TaskError> {
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

pub(super) fn transaction<R>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    transaction_with(conn, Durability::PowerCut, f)
}

/// Several reads in one snapshot: a read transaction, or, inside a group commit, the group's
/// own (which already holds the write lock).
pub(super) fn snapshot<R>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    if GROUP.with_borrow(Option::is_some) {
        return f(conn);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(db_err)?;
    let r = f(&tx)?;
    tx.commit().map_err(db_err)?;
    Ok(r)
}

/// One write transaction of `durability`; inside a group commit, a savepoint of the group's.
pub(super) fn transaction_with<R>(
    conn: &mut Connection,
    durability: Durability,
    f: impl FnOnce(&Connection) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    if GROUP.with_borrow(Option::is_some) {
        if let Some(e) = GROUP.with_borrow(|g| g.as_ref().and_then(|g| g.broken.clone())) {
            return Err(e);
        }
        let r = {
            let sp = conn.savepoint().map_err(db_err)?;
            match f(&sp) {
                Ok(r) => sp.commit().map_err(db_err).map(|()| r),
                Err(e) => Err(e),
            }
        };
        if conn.is_autocommit() {
            // SQLite rolled the group's transaction back under this call.
            let e = match &r {
                Err(e) => e.clone(),
                Ok(_) => TaskError::store("the shared write transaction was rolled back"),
            };
            GROUP.with_borrow_mut(|g| {
                if let Some(g) = g {
                    g.broken.get_or_insert_with(|| e.clone());
                }
            });
            return Err(e);
        }
        return r;
    }
    set_durability(conn, durability)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let r = f(&tx)?;
    tx.commit().map_err(db_err)?;
    Ok(r)
}
