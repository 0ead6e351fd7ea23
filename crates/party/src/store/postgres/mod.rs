//! The PostgreSQL backend: many workers on many machines share one database.
//!
//! # How to use
//! Give [`crate::Party::connect`] (or the CLI's `--db`) a `postgres://` or `postgresql://` URL.
//! The tables live in their own schema, `party` unless the URL says `?schema=NAME` or
//! [`PgOptions::schema`] says otherwise, so party sits beside an application's own tables.
//! The schema is created and migrated on first use.
//!
//! # Options and their defaults
//! - `schema` (`party`): the schema holding the tables; also names the wake-up channel
//!   `party_<schema>`.
//! - `pool_size` (8; the URL's `pool_max=N` wins): connections kept open for queries, opened
//!   on demand, each with every statement prepared once. One more connection is the signal
//!   connection (see below). A connection the server closed is replaced on the next checkout.
//! - `pool_timeout` (30 s; the URL's `pool_timeout=SECONDS` wins): how long a statement waits
//!   for a free connection before it fails, saying so.
//! - TLS: the URL's `sslmode` (`prefer` unless set) and `sslrootcert`, as libpq reads them
//!   (see `tls.rs`).
//! - `pooler` (`none`; the URL's `pooler=transaction`): behind a pooler in transaction mode
//!   nothing stays prepared on a connection (each statement goes unnamed) and the signal
//!   connection uses the URL's `listen_url` (a direct connection); without one, this process
//!   sends its notifications through the pool and its workers poll.
//! - `connect_timeout` (10 s, unless the URL sets `connect_timeout`): how long opening a
//!   connection may take before the call fails with a clear error.
//! - TCP keepalives (unless the URL sets `keepalives_idle`, `keepalives_interval`,
//!   `keepalives_retries`): probes after 60 s without traffic, every 10 s, the connection
//!   dropped after 3 unanswered, so an idle connection whose peer vanished silently is closed
//!   within 90 s instead of the system's two hours.
//!
//! # How it works
//! - Every hot-path call is one round trip with prepared statements and the binary protocol.
//!   A claim promotes due tasks to `ready` and locks up to N of them with
//!   `FOR UPDATE SKIP LOCKED` in one transaction (the statements are pipelined); a batch of
//!   finishes updates its tasks, fenced, and appends their run rows in one statement built from
//!   arrays (`unnest`).
//! - Tasks waiting for their time are not in the claim index, so a million future tasks do not
//!   slow claims. A task already due when it is written (the usual "run now") is written
//!   `ready` and needs no promotion.
//! - Wake-ups: one extra connection per store, the signal connection, LISTENs on the channel
//!   and turns notifications into [`Store::wakeups`]. After a write that makes a task
//!   claimable (insert, retry, reschedule, rescue) commits, the store asks it to send a NOTIFY;
//!   requests made while one is in flight share the next one. A NOTIFY inside the writing
//!   transaction would hold PostgreSQL's cluster-wide notification lock through that
//!   transaction's disk flush and serialize all such commits; sent afterwards, on a connection
//!   that commits asynchronously, it costs no flush and lets inserts commit in groups. Tasks
//!   added inside a caller's own transaction ([`PgStore::task_insert_in`]) notify within it, as
//!   only its commit makes them visible. If the signal connection is lost it is re-established
//!   with backoff; then this process's workers are woken and the others notified, so everyone
//!   looks again and nothing is missed. A connection that dies silently (a dropped flow: no
//!   FIN, no RST) is noticed too: after [`crate::policy::WAKEUP_PROBE_AFTER`] with nothing
//!   heard it is probed, and every statement on it (probe, NOTIFY, the LISTEN of a reconnect)
//!   that goes unanswered for [`crate::policy::WAKEUP_ANSWER`] counts as losing it.
//! - Migrations run under a transaction-scoped advisory lock, so many processes may start at
//!   once; a database whose schema is newer than this binary is refused.
//!
//! The files mirror the SQLite backend's: `conn` (connections, the pool, the URL), `sql` (the
//! statements' text), `migrate` (and `migrations/NNN_*.sql`), `wakeup` (the signal
//! connection), `rows` (row decoding and batch arrays) and `error`; `tls` is PostgreSQL's own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

pub use tokio_postgres;

use self::conn::{
    Conn, DEFAULT_POOL_MAX, DEFAULT_POOL_TIMEOUT, PgClient, PgUrl, Pool, Queries, Sending, Stmt,
    connect, parse_url,
};
use self::error::{
    db_err, duplicate, duplicate_key, duplicate_within, existing_singleton, existing_unique,
    is_serialization_failure, is_singleton_violation, is_unique_key_violation, recent_duplicate,
    recently_finished, window_params,
};
use self::migrate::migrate;
use self::rows::{
    FinishArrays, InsertArrays, PgTime, count_at, expired_from_row, history_columns, history_row,
    id_at, live_columns, live_row, opt_time_at, queue_columns, queue_row, run_columns,
    run_from_row, run_row, task_from_row, time_at,
};
use self::sql::{
    BEGIN_ASYNC_COMMIT, BEGIN_CLAIM, BEGIN_SNAPSHOT, BEGIN_STEER, Names, Statements, sql_existing,
    sql_existing_unique, sql_insert_skipping, sql_recent_unique,
};
use self::wakeup::{Probe, listen, notify_loop, signal_loop};
use super::{
    ClaimParams, ClaimedTask, CopyKey, CopyRead, CopyRows, CopyTable, ExpiredParams, ExpiredTask,
    Finish, FinishResult, Heartbeat, HeartbeatParams, InsertTask, KEPT_RUN_POSITION, LeaderParams,
    ManyCount, PruneCounts, PruneParams, QueueCounts, RunsParams, StatsParams, Steer, SteerMany,
    Store, StoreStats, SuccessParams, Successes, TableSize, TableSizes,
};
use crate::model::{ListCursor, ListFilter, RunPage, State, TaskInfo, WorkerInfo};
use crate::queues::{QueueControl, QueueLimits};
use crate::validate::Pooler;
use crate::{TaskError, TaskId};

mod conn;
mod error;
mod migrate;
mod queues;
mod rows;
mod sql;
mod tls;
mod wakeup;
/// The schema used unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "party";

/// How a [`PgStore`] connects. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The schema holding party's tables (default `party`). Letters, digits and `_`, at most
    /// 57 characters. A `schema=NAME` parameter in the URL takes precedence.
    pub schema: String,
    /// Connections kept open for queries (default 8, at least 1). A `pool_max=N` parameter
    /// in the URL takes precedence.
    pub pool_size: usize,
    /// How long a statement waits for a free connection before it fails (default 30 s). A
    /// `pool_timeout=SECONDS` parameter in the URL takes precedence.
    pub pool_timeout: Duration,
    /// How long opening a connection may take, unless the URL sets `connect_timeout`
    /// (default 10 s).
    pub connect_timeout: Duration,
}

impl PgOptions {
    /// Fill in what the URL left unsaid.
    fn apply(&self, config: &mut tokio_postgres::Config) {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("party");
        }
    }
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: DEFAULT_POOL_MAX,
            pool_timeout: DEFAULT_POOL_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A PostgreSQL-backed [`Store`]. Cheap to share behind an `Arc`; dropping it closes its
/// connections and stops its listener.
pub struct PgStore {
    pool: Arc<Pool>,
    /// Rows inserted since the planner's statistics were last refreshed.
    statistics: Arc<InsertStatistics>,
    wakeups: Arc<Notify>,
    /// Asks the signal connection to NOTIFY other processes.
    requests: Arc<Notify>,
    /// The signal connection's loop (or, behind a transaction pooler without `listen_url`,
    /// the loop that sends notifications on pooled connections).
    signal: JoinHandle<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.pool.names.schema)
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.signal.abort();
    }
}

/// Inserts of at least this many rows in all may refresh the planner's statistics (see
/// `PgStore::count_inserted`).
const ANALYZE_AFTER_INSERT: usize = 1000;

/// How often a write that lost a race to another connection (a unique index taken, a task
/// changed after the statement looked) is run again before the caller is told to try later.
const RACE_TRIES: usize = 5;

/// Rows inserted through this store since its last statistics refresh.
#[derive(Debug, Default)]
struct InsertStatistics {
    /// Inserted since the last refresh.
    pending: std::sync::atomic::AtomicU64,
    /// Counted into the statistics by earlier refreshes: the table's size as they saw it.
    base: std::sync::atomic::AtomicU64,
    /// A refresh is under way.
    running: std::sync::atomic::AtomicBool,
}

impl PgStore {
    /// Run one listing statement with `filter`'s parameters: `pick` chooses it from the
    /// connection's statements, told whether the filter names a state.
    async fn list_query(
        &self,
        filter: &ListFilter,
        pick: impl FnOnce(&Statements, bool) -> &Stmt,
    ) -> Result<Vec<Row>, TaskError> {
        let conn = self.pool.get().await?;
        let params = list_params(filter);
        conn.client
            .query(pick(&conn.st, filter.state.is_some()), &param_refs(&params))
            .await
            .map_err(db_err)
    }

    /// Connect to the database a `postgres://` URL names, with the default options; a
    /// `schema=NAME` query parameter picks the schema. The schema is created or migrated.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a malformed URL or schema name; [`TaskError::Store`] when
    /// the server cannot be reached, or its schema is newer than this binary (upgrade party).
    pub async fn connect(url: &str) -> Result<PgStore, TaskError> {
        PgStore::connect_with(url, PgOptions::default()).await
    }

    /// Connect with these options (a `schema` parameter in the URL overrides
    /// [`PgOptions::schema`]).
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<PgStore, TaskError> {
        PgStore::open(url, options, Probe::default())
            .await
            .map_err(|e| crate::validate::scrub_error(e, url))
    }

    /// [`PgStore::connect_with`], with the signal connection probed after `quiet` instead of
    /// [`crate::policy::WAKEUP_PROBE_AFTER`] and its statements allowed `answer` instead of
    /// [`crate::policy::WAKEUP_ANSWER`], so a test can show in seconds that a connection that
    /// died silently is replaced. Not part of the supported interface: it may change or go
    /// away in any release.
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    #[doc(hidden)]
    pub async fn connect_probing(
        url: &str,
        options: PgOptions,
        quiet: Duration,
        answer: Duration,
    ) -> Result<PgStore, TaskError> {
        PgStore::open(url, options, Probe { quiet, answer })
            .await
            .map_err(|e| crate::validate::scrub_error(e, url))
    }

    async fn open(url: &str, options: PgOptions, probe: Probe) -> Result<PgStore, TaskError> {
        let PgUrl {
            mut target,
            schema,
            pool_max,
            pool_timeout,
            pooler,
            listen: listen_target,
        } = parse_url(url)?;
        let names = Names::new(schema.as_deref().unwrap_or(&options.schema))?;
        options.apply(&mut target.config);
        let sending = Sending::for_pooler(pooler);
        let mut first = PgClient::new(connect(&target).await?, sending.clone());
        migrate(&mut first, &names).await?;
        sending
            .learn_all(&first.inner, &Statements::sql(&names.quoted))
            .await
            .map_err(db_err)?;
        let st = Statements::new(&names.quoted);

        let pool = Arc::new(Pool::new(
            target.clone(),
            names.clone(),
            Conn { client: first, st },
            pool_max.unwrap_or(options.pool_size).max(1),
            pool_timeout.unwrap_or(options.pool_timeout),
        ));

        // Wake-ups need a session of their own: the listen_url's, else the URL's own unless
        // it goes through a pooler in transaction mode. Without one this process sends its
        // notifications on pooled connections and its workers find others' tasks by polling.
        let signal_target = match (listen_target, pooler) {
            (Some(t), _) => Some(t),
            (None, Pooler::None) => Some(target),
            (None, Pooler::Transaction) => None,
        };
        let wakeups = Arc::new(Notify::new());
        let requests = Arc::new(Notify::new());
        let signal = match signal_target {
            Some(mut t) => {
                options.apply(&mut t.config);
                // Named after the pool's application, so a process's connections go together.
                let app = t.config.get_application_name().unwrap_or("party");
                let signal_name = format!("{app} signal");
                t.config.application_name(signal_name);
                let signal = listen(&t, &names, &wakeups, probe).await?;
                tokio::spawn(signal_loop(
                    t,
                    names,
                    wakeups.clone(),
                    requests.clone(),
                    probe,
                    signal,
                ))
            }
            None => tokio::spawn(notify_loop(pool.clone(), requests.clone())),
        };
        Ok(PgStore {
            pool,
            statistics: Arc::default(),
            wakeups,
            requests,
            signal,
        })
    }

    /// Count `rows` just inserted; once the rows inserted since the last refresh reach a
    /// fifth of the table as it was then (and at least [`ANALYZE_AFTER_INSERT`]), refresh the
    /// planner's statistics of the tasks table in the background. Without fresh statistics a
    /// claim right after a large burst of inserts may sort every ready row instead of walking
    /// the ready index; autovacuum catches up only later.
    fn count_inserted(&self, rows: usize) {
        use std::sync::atomic::Ordering;
        let stats = &self.statistics;
        let pending = stats.pending.fetch_add(rows as u64, Ordering::Relaxed) + rows as u64;
        let base = stats.base.load(Ordering::Relaxed);
        if pending < ANALYZE_AFTER_INSERT as u64 || pending < base / 5 {
            return;
        }
        if stats.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.pool.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let counted = stats.pending.load(Ordering::Relaxed);
            let sql = format!("ANALYZE {}.tasks", pool.names.quoted);
            let done = match pool.get().await {
                Ok(conn) => conn.client.batch_execute(&sql).await.map_err(db_err),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    stats.pending.fetch_sub(counted, Ordering::Relaxed);
                    stats.base.fetch_add(counted, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(error = %e, "refreshing statistics failed"),
            }
            stats.running.store(false, Ordering::Release);
        });
    }

    /// A task may have become claimable: wake this process's workers now, and the other
    /// processes' through a notification sent after our commit.
    fn signal(&self) {
        self.wakeups.notify_waiters();
        self.requests.notify_one();
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.pool.names.schema
    }

    /// The channel notifications are sent on: `party_<schema>`.
    pub fn channel(&self) -> &str {
        &self.pool.names.channel
    }

    /// Insert tasks inside the caller's open transaction (or on any client): they exist if and
    /// only if that transaction commits, and workers cannot see them before. Workers are
    /// notified when it commits. A duplicate recurring task is refused without aborting the
    /// caller's transaction, and nothing of the batch is written.
    ///
    /// [`crate::Party::add_in_transaction`] validates a [`crate::NewTask`] and calls this.
    ///
    /// # Errors
    /// [`TaskError::Duplicate`] naming the existing task; [`TaskError::Store`] when the
    /// statement fails (which aborts the caller's transaction, as any failed statement does).
    pub async fn task_insert_in(
        &self,
        client: &impl tokio_postgres::GenericClient,
        tasks: Vec<InsertTask>,
    ) -> Result<Vec<TaskId>, TaskError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(e) = duplicate_within(&tasks) {
            return Err(e);
        }
        let s = &self.pool.names.quoted;
        let arrays = InsertArrays::new(&tasks);
        let channel = self.pool.names.channel.clone();
        let rows = client
            .query(&sql_insert_skipping(s), &arrays.params_notifying(&channel))
            .await
            .map_err(db_err)?;
        let inserted: HashSet<&[u8]> = rows.iter().map(|r| r.get::<_, &[u8]>(0)).collect();
        let undo = || async {
            // Undo the rows of the batch that did go in, so it is all or none.
            let ids: Vec<&[u8]> = inserted.iter().copied().collect();
            client
                .execute(
                    &format!("DELETE FROM {s}.tasks WHERE id = ANY($1::bytea[])"),
                    &[&ids],
                )
                .await
                .map_err(db_err)
        };
        if rows.len() == tasks.len() {
            if let Some((handlers, keys, since)) = window_params(&tasks) {
                let recent = client
                    .query_opt(&sql_recent_unique(s), &[&handlers, &keys, &since])
                    .await
                    .map_err(db_err)?;
                if let Some(row) = recent {
                    undo().await?;
                    return Err(recent_duplicate(&row)?);
                }
            }
            return Ok(tasks.iter().map(|t| t.id).collect());
        }
        let refused = tasks
            .iter()
            .find(|t| !inserted.contains(&t.id.as_bytes()[..]))
            .expect("fewer rows than tasks");
        if let Some(key) = &refused.unique_key {
            let existing = client
                .query_opt(&sql_existing_unique(s), &[&refused.handler, key])
                .await
                .map_err(db_err)?
                .map(|row| id_at(&row, 0))
                .transpose()?;
            undo().await?;
            return match existing {
                Some(id) => Err(duplicate_key(&refused.handler, key, id)),
                None => Err(TaskError::Conflict(format!(
                    "a '{}' task with the unique key {} exists but is not visible to this \
                     transaction; retry the transaction",
                    refused.handler,
                    crate::validate::quote(key)
                ))),
            };
        }
        let existing = client
            .query_opt(&sql_existing(s), &[&refused.handler, &refused.data])
            .await
            .map_err(db_err)?;
        undo().await?;
        match existing {
            Some(row) => Err(duplicate(&refused.handler, id_at(&row, 0)?)),
            None => Err(TaskError::Conflict(format!(
                "a recurring '{}' task with the same data exists but is not visible to this \
                 transaction; retry the transaction",
                refused.handler
            ))),
        }
    }

    /// Apply a batch of finishes on one connection: the common case is one statement; finishes
    /// with follow-up tasks go in one transaction, and a follow-up that collides with a live
    /// recurring task fails only its own finish. Also says whether a task became claimable.
    async fn finish_batch(
        &self,
        conn: &mut Conn,
        batch: &[Finish],
    ) -> Result<(Vec<FinishResult>, bool), TaskError> {
        let claimable = |rows: &[Row]| {
            rows.iter()
                .any(|r| matches!(r.get::<_, &str>(1), "scheduled" | "retrying"))
        };
        if batch.iter().all(|f| f.follow_ups.is_empty()) {
            let mut arrays = FinishArrays::default();
            batch.iter().for_each(|f| arrays.push(f));
            let (all, moves);
            let (statement, params): (_, &[&(dyn ToSql + Sync)]) = if arrays.all_move() {
                moves = arrays.moves_params();
                (&conn.st.finish_moves, &moves)
            } else {
                all = arrays.params();
                (&conn.st.finish, &all)
            };
            conn.client.ready(&[statement]).await.map_err(db_err)?;
            let (begun, written, committed) = tokio::join!(
                conn.client.batch_execute(BEGIN_ASYNC_COMMIT),
                conn.client.query(statement, params),
                conn.client.batch_execute("COMMIT"),
            );
            // The first error in statement order.
            let sent = begun.and(written).and_then(|rows| committed.map(|()| rows));
            let rows = match sent {
                Ok(rows) => rows,
                Err(e) => {
                    // The transaction may be left open: close it before the connection goes
                    // back to the pool (a broken connection is dropped by the pool).
                    let _ = conn.client.batch_execute("ROLLBACK").await;
                    return Err(db_err(e));
                }
            };
            let applied: HashSet<(&[u8], i64)> = rows.iter().map(fenced_key).collect();
            let results = batch
                .iter()
                .map(|f| {
                    if applied.contains(&(&f.id.as_bytes()[..], f.fence)) {
                        FinishResult::Applied
                    } else {
                        FinishResult::Stale
                    }
                })
                .collect();
            return Ok((results, claimable(&rows)));
        }
        let channel = &self.pool.names.channel;
        let mut refused: HashMap<usize, TaskError> = HashMap::new();
        loop {
            let live: Vec<usize> = (0..batch.len())
                .filter(|i| !refused.contains_key(i))
                .collect();
            let mut arrays = FinishArrays::default();
            live.iter().for_each(|&i| arrays.push(&batch[i]));
            let Conn { client, st } = &mut *conn;
            let tx = client.transaction().await.map_err(db_err)?;
            let rows = tx
                .query(&st.finish, &arrays.params())
                .await
                .map_err(db_err)?;
            let applied: HashSet<(&[u8], i64)> = rows.iter().map(fenced_key).collect();
            let is_applied = |f: &Finish| applied.contains(&(&f.id.as_bytes()[..], f.fence));
            let mut follow_ups = Vec::new();
            let mut owner = Vec::new();
            for &i in &live {
                if is_applied(&batch[i]) {
                    for t in &batch[i].follow_ups {
                        follow_ups.push(t.clone());
                        owner.push(i);
                    }
                }
            }
            let mut newly_refused = false;
            if !follow_ups.is_empty() {
                let arrays = InsertArrays::new(&follow_ups);
                let inserted: HashSet<Vec<u8>> = tx
                    .query(&st.insert_skipping, &arrays.params_notifying(channel))
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.get::<_, Vec<u8>>(0))
                    .collect();
                for (t, &i) in follow_ups.iter().zip(&owner) {
                    if refused.contains_key(&i) {
                        continue;
                    }
                    if inserted.contains(&t.id.as_bytes()[..]) {
                        // Inserted: still refused if a task with its unique key finished
                        // within its window.
                        if let Some(e) =
                            recently_finished(&tx, &st.recent_unique, std::slice::from_ref(t))
                                .await?
                        {
                            refused.insert(i, e);
                            newly_refused = true;
                        }
                        continue;
                    }
                    let existing = match &t.unique_key {
                        Some(key) => existing_unique(&tx, &st.existing_unique, &t.handler, key)
                            .await?
                            .map(|id| duplicate_key(&t.handler, key, id)),
                        None => existing_singleton(&tx, &st.existing, &t.handler, &t.data)
                            .await?
                            .map(|id| duplicate(&t.handler, id)),
                    };
                    let e = existing.unwrap_or_else(|| {
                        TaskError::Conflict(format!(
                            "a follow-up '{}' task collided with a task that has since finished",
                            t.handler
                        ))
                    });
                    refused.insert(i, e);
                    newly_refused = true;
                }
            }
            if newly_refused {
                tx.rollback().await.map_err(db_err)?;
                continue;
            }
            tx.commit().await.map_err(db_err)?;
            let results = (0..batch.len())
                .map(|i| match refused.remove(&i) {
                    Some(e) => FinishResult::Duplicate(e),
                    None if is_applied(&batch[i]) => FinishResult::Applied,
                    None => FinishResult::Stale,
                })
                .collect();
            return Ok((results, claimable(&rows) || !follow_ups.is_empty()));
        }
    }

    async fn get_with_runs(&self, conn: &Conn, id: TaskId) -> Result<Option<TaskInfo>, TaskError> {
        // One snapshot for the three reads: read one after the other, a task moving between
        // the live table and the history in between is in neither.
        let read = self
            .run_then_read(conn, BEGIN_SNAPSHOT, &[], &[], id)
            .await
            .map_err(db_err)?;
        read.task()
    }

    /// Run `steps` (each with `params`) and then read task `id` with its runs, in one
    /// transaction opened by `begin` and sent in one round trip. A steer's answer is read
    /// this way: the rows it changed stay locked until the commit, so the task read is what
    /// the steer left, whatever other connections do.
    async fn run_then_read(
        &self,
        conn: &Conn,
        begin: &str,
        steps: &[&Stmt],
        params: &[&(dyn ToSql + Sync)],
        id: TaskId,
    ) -> Result<Read, Error> {
        let (c, st) = (&conn.client, &conn.st);
        let mut all: Vec<&Stmt> = steps.to_vec();
        all.extend([&st.get, &st.get_history, &st.runs]);
        c.ready(&all).await?;
        let key = &id.as_bytes()[..];
        let by_id: [&(dyn ToSql + Sync); 1] = [&key];
        debug_assert!(steps.len() <= 2, "at most two steps");
        let step = |i: usize| async move {
            match steps.get(i) {
                Some(s) => c.execute(*s, params).await,
                None => Ok(0),
            }
        };
        let (begun, first, second, live, finished, runs, committed) = tokio::join!(
            c.batch_execute(begin),
            step(0),
            step(1),
            c.query_opt(&st.get, &by_id),
            c.query_opt(&st.get_history, &by_id),
            c.query(&st.runs, &by_id),
            c.batch_execute("COMMIT"),
        );
        // The first error in the order the statements ran: those after it only say that the
        // transaction was aborted.
        let read = (|| {
            begun?;
            let changed = first? + second?;
            let (live, finished, runs) = (live?, finished?, runs?);
            committed?;
            Ok(Read {
                changed,
                row: live.or(finished),
                runs,
            })
        })();
        if read.is_err() {
            // Close the transaction if it is still open (a broken connection is dropped by
            // the pool).
            let _ = c.batch_execute("ROLLBACK").await;
        }
        read
    }

    /// One try of a steer (`steps`, then the read of its answer) in one repeatable-read
    /// transaction; `None` when another transaction changed the task first (a serialization
    /// failure), and the caller tries again.
    async fn try_steer(
        &self,
        conn: &Conn,
        steps: &[&Stmt],
        params: &[&(dyn ToSql + Sync)],
        id: TaskId,
    ) -> Result<Option<Read>, Error> {
        match self
            .run_then_read(conn, BEGIN_STEER, steps, params, id)
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(e) if is_serialization_failure(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What [`PgStore::run_then_read`] found: the rows its steps changed, and the task's row
/// (live or finished) with its runs.
struct Read {
    changed: u64,
    row: Option<Row>,
    runs: Vec<Row>,
}

impl Read {
    /// The task with its runs, if it exists.
    fn task(&self) -> Result<Option<TaskInfo>, TaskError> {
        let Some(row) = &self.row else {
            return Ok(None);
        };
        let mut task = task_from_row(row)?;
        task.runs = self.runs.iter().map(run_from_row).collect();
        Ok(Some(task))
    }
}

/// The answer to a steer of task `id` that [`PgStore::run_then_read`] ran, or `None` when it
/// changed nothing although the task, as read after it, allows it: another connection changed
/// the task in between, and the steer is run again.
fn steered(
    id: TaskId,
    op: Steer,
    r: &Read,
    now: Timestamp,
) -> Result<Option<Result<TaskInfo, TaskError>>, TaskError> {
    let Some(task) = r.task()? else {
        return Ok(Some(Err(TaskError::NotFound(id))));
    };
    if r.changed > 0 || op.settled(&task, now) {
        return Ok(Some(Ok(task)));
    }
    if op.allowed().contains(&task.state) {
        return Ok(None);
    }
    Ok(Some(Err(op.conflict(id, task.state))))
}

/// The refusal of a steer that lost the race for its task [`RACE_TRIES`] times.
fn raced(id: TaskId, op: Steer, last: Option<Read>) -> TaskError {
    let state = last
        .and_then(|r| r.task().ok().flatten())
        .map_or_else(|| "changing".to_string(), |t| t.state.to_string());
    TaskError::Conflict(format!(
        "cannot {} task {id}: other clients kept changing it (last seen {state}); try again",
        op.verb()
    ))
}

/// The task id and fence of a row a fenced finish returned.
fn fenced_key(r: &Row) -> (&[u8], i64) {
    (r.get(0), r.get(2))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn wakeups(&self) -> Arc<Notify> {
        self.wakeups.clone()
    }

    fn as_postgres(&self) -> Option<&PgStore> {
        Some(self)
    }

    async fn task_insert(&self, tasks: Vec<InsertTask>) -> Result<Vec<TaskId>, TaskError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(e) = duplicate_within(&tasks) {
            return Err(e);
        }
        let mut conn = self.pool.get().await?;
        let arrays = InsertArrays::new(&tasks);
        let windowed = tasks.iter().any(|t| t.unique_since.is_some());
        // A duplicate whose holder finishes before we can name it: try again.
        for _ in 0..RACE_TRIES {
            let inserted = if windowed {
                // With a unique window: insert, then look for a task with the key that
                // finished within it, in one transaction. Looking after the insert sees a
                // task that finished while the insert waited for it.
                let Conn { client, st } = &mut *conn;
                let tx = client.transaction().await.map_err(db_err)?;
                match tx.execute(&st.insert, &arrays.params()).await {
                    Ok(_) => {
                        if let Some(e) = recently_finished(&tx, &st.recent_unique, &tasks).await? {
                            return Err(e);
                        }
                        tx.commit().await
                    }
                    Err(e) => Err(e),
                }
            } else {
                conn.client
                    .execute(&conn.st.insert, &arrays.params())
                    .await
                    .map(|_| ())
            };
            match inserted {
                Ok(()) => {
                    self.count_inserted(tasks.len());
                    self.signal();
                    return Ok(tasks.iter().map(|t| t.id).collect());
                }
                Err(e) if is_unique_key_violation(&e) => {
                    for t in &tasks {
                        let Some(key) = &t.unique_key else { continue };
                        if let Some(id) =
                            existing_unique(&conn.client, &conn.st.existing_unique, &t.handler, key)
                                .await?
                        {
                            return Err(duplicate_key(&t.handler, key, id));
                        }
                    }
                }
                Err(e) if is_singleton_violation(&e) => {
                    for t in tasks.iter().filter(|t| t.is_recurring) {
                        if let Some(id) =
                            existing_singleton(&conn.client, &conn.st.existing, &t.handler, &t.data)
                                .await?
                        {
                            return Err(duplicate(&t.handler, id));
                        }
                    }
                }
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(TaskError::store(
            "inserting kept colliding with recurring tasks that finished meanwhile; try again",
        ))
    }

    async fn task_claim(&self, p: ClaimParams<'_>) -> Result<Vec<ClaimedTask>, TaskError> {
        let mut conn = self.pool.get().await?;
        let now = PgTime::of(p.now);
        let lease = PgTime::of(p.lease_until);
        let handlers: Vec<&str> = p.handlers.iter().map(String::as_str).collect();
        let queues: Vec<&str> = p.queues.iter().map(String::as_str).collect();
        // Controlled queues first, each in a transaction of its own that holds the queue's
        // lock only while it claims; then the others.
        let mut rows = Vec::new();
        for queue in p.controlled.iter().filter(|q| p.queues.contains(q)) {
            let want = p.limit.saturating_sub(rows.len() as u32);
            if want == 0 {
                break;
            }
            let claim = queues::LimitedClaim {
                schema: &self.pool.names.quoted,
                queue,
                worker: p.worker,
                handlers: &handlers,
                now,
                lease,
                want,
                returning: sql::CLAIM_RETURNING,
            };
            let tx = conn.client.transaction().await.map_err(db_err)?;
            let got = queues::claim_limited(&tx, &claim).await?;
            tx.commit().await.map_err(db_err)?;
            rows.extend(got);
        }
        let limit = i64::from(p.limit.saturating_sub(rows.len() as u32));
        // Promotion and claim in one transaction (one commit), sent together (one round trip),
        // in this order: the claim takes what the promotion made ready.
        conn.client
            .ready(&[&conn.st.promote, &conn.st.claim])
            .await
            .map_err(db_err)?;
        let promote_limit = i64::from(p.promote_limit);
        let promote: [&(dyn ToSql + Sync); 2] = [&now, &promote_limit];
        let claim: [&(dyn ToSql + Sync); 6] = [&p.worker, &now, &lease, &handlers, &queues, &limit];
        let (begun, promoted, claimed, committed) = tokio::join!(
            conn.client.batch_execute(BEGIN_CLAIM),
            conn.client.execute(&conn.st.promote, &promote),
            conn.client.query(&conn.st.claim, &claim),
            conn.client.batch_execute("COMMIT"),
        );
        // The first error in statement order: the statements after a failed one only say the
        // transaction was aborted.
        let sent = begun
            .and(promoted)
            .and(claimed)
            .and_then(|got| committed.map(|()| got));
        match sent {
            Ok(got) => rows.extend(got),
            Err(e) => {
                // The transaction may be left open: never reuse this connection.
                conn.discard();
                return Err(db_err(e));
            }
        }
        let started_at = now.time();
        let mut out = Vec::with_capacity(rows.len());
        let mut order = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(ClaimedTask {
                id: id_at(r, 0)?,
                handler: r.get(1),
                data: r.get(2),
                timestamp: time_at(r, 3),
                last_run_on: opt_time_at(r, 4),
                attempts: r.get::<_, i32>(5).max(0) as u32,
                max_attempts: r.get::<_, i32>(6).max(0) as u32,
                is_recurring: r.get(7),
                rule: r.get(8),
                fence: r.get(9),
                started_at,
                due_at: time_at(r, 11),
                queue: r.get(12),
                cancel_requested: r.get(13),
            });
            order.push((r.get::<_, i32>(10), r.get::<_, PgTime>(11).0));
        }
        // RETURNING has no order: hand them out in claim order.
        let mut indexed: Vec<(usize, ClaimedTask)> = out.into_iter().enumerate().collect();
        indexed.sort_by_key(|(i, _)| order[*i]);
        Ok(indexed.into_iter().map(|(_, t)| t).collect())
    }

    async fn task_finish(&self, batch: Vec<Finish>) -> Result<Vec<FinishResult>, TaskError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.get().await?;
        // A finish repeated in one batch (same task, same claim) is applied once and the
        // repeats are stale, as they would be one after another.
        let mut seen = HashSet::with_capacity(batch.len());
        let first: Vec<bool> = batch.iter().map(|f| seen.insert((f.id, f.fence))).collect();
        let (results, claimable) = if first.iter().all(|f| *f) {
            self.finish_batch(&mut conn, &batch).await?
        } else {
            let unique: Vec<Finish> = batch
                .iter()
                .zip(&first)
                .filter(|(_, first)| **first)
                .map(|(f, _)| f.clone())
                .collect();
            let (results, claimable) = self.finish_batch(&mut conn, &unique).await?;
            let mut results = results.into_iter();
            let all = first
                .iter()
                .map(|first| match first {
                    true => results.next().expect("one result per unique finish"),
                    false => FinishResult::Stale,
                })
                .collect();
            (all, claimable)
        };
        if claimable {
            self.signal();
        } else {
            self.wakeups.notify_waiters();
        }
        Ok(results)
    }

    async fn task_heartbeat(&self, p: HeartbeatParams<'_>) -> Result<Heartbeat, TaskError> {
        let conn = self.pool.get().await?;
        let ids: Vec<&[u8]> = p.tasks.iter().map(|(id, _)| &id.as_bytes()[..]).collect();
        let fences: Vec<i64> = p.tasks.iter().map(|(_, f)| *f).collect();
        let rows = conn
            .client
            .query(
                &conn.st.heartbeat,
                &[
                    &p.worker.id,
                    &p.worker.handlers,
                    &p.worker.queues,
                    &PgTime::of(p.now),
                    &PgTime::of(p.lease_until),
                    &ids,
                    &fences,
                    &PgTime::of(p.worker.live_until),
                ],
            )
            .await
            .map_err(db_err)?;
        // Told apart by fence: a stale claim listed beside a current one of the same task is
        // reported.
        let kept: HashSet<(&[u8], i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let unrenewed: HashSet<(&[u8], i64)> = rows
            .iter()
            .filter(|r| !r.get::<_, bool>(2))
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut beat = Heartbeat::default();
        for ((id, fence), key) in p.tasks.iter().zip(&ids) {
            if !kept.contains(&(*key, *fence)) {
                beat.lost.push(*id);
            } else if unrenewed.contains(&(*key, *fence)) {
                beat.unrenewed.push(*id);
            }
        }
        Ok(beat)
    }

    async fn task_expired(&self, p: ExpiredParams) -> Result<Vec<ExpiredTask>, TaskError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(&conn.st.expired, &[&PgTime::of(p.now), &i64::from(p.limit)])
            .await
            .map_err(db_err)?;
        rows.iter().map(expired_from_row).collect()
    }

    async fn task_next_due(
        &self,
        handlers: &[String],
        queues: &[String],
    ) -> Result<Option<Timestamp>, TaskError> {
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one(&conn.st.next_due, &[&handlers, &queues])
            .await
            .map_err(db_err)?;
        Ok(opt_time_at(&row, 0))
    }

    async fn task_get(&self, id: TaskId) -> Result<Option<TaskInfo>, TaskError> {
        let conn = self.pool.get().await?;
        self.get_with_runs(&conn, id).await
    }

    async fn task_runs(&self, p: RunsParams) -> Result<Option<(TaskInfo, RunPage)>, TaskError> {
        let conn = self.pool.get().await?;
        let (c, st) = (&conn.client, &conn.st);
        c.ready(&[
            &st.get,
            &st.get_history,
            &st.runs_kept,
            &st.runs_page,
            &st.runs_count,
        ])
        .await
        .map_err(db_err)?;
        let key = &p.id.as_bytes()[..];
        let by_id: [&(dyn ToSql + Sync); 1] = [&key];
        let before = p.before.map_or(KEPT_RUN_POSITION, |c| c.position);
        // One more than asked: it says whether an older page exists. The kept run, when the
        // page starts with it, takes one place of those.
        let wanted = if p.limit == 0 {
            0
        } else {
            i64::from(p.limit) + 1
        };
        let page: [&(dyn ToSql + Sync); 3] = [&key, &before, &wanted];
        let count_to = p.count_at_most.saturating_add(1).min(i64::MAX as u64) as i64;
        let count: [&(dyn ToSql + Sync); 2] = [&key, &count_to];
        // One snapshot, the statements sent in one round trip: a task moving between the live
        // table and the history meanwhile is read once, with its runs as they were.
        let sent = tokio::try_join!(
            c.batch_execute(BEGIN_SNAPSHOT),
            c.query_opt(&st.get, &by_id),
            c.query_opt(&st.get_history, &by_id),
            c.query_opt(&st.runs_kept, &by_id),
            c.query(&st.runs_page, &page),
            c.query_one(&st.runs_count, &count),
            c.batch_execute("COMMIT"),
        );
        let (_, live, finished, kept, rows, counted, _) = match sent {
            Ok(got) => got,
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(db_err(e));
            }
        };
        let Some(row) = live.or(finished) else {
            return Ok(None);
        };
        let task = task_from_row(&row)?;
        let mut read: Vec<(i64, crate::Run)> = Vec::with_capacity(rows.len() + 1);
        // The kept run is the latest: the first page starts with it.
        if let (Some(k), None, true) = (&kept, p.before, wanted > 0) {
            read.push((KEPT_RUN_POSITION, run_from_row(k)));
        }
        read.extend(rows.iter().map(|r| (r.get::<_, i64>(7), run_from_row(r))));
        read.truncate(wanted as usize);
        let counted = count_at(&counted, 0) + u64::from(kept.is_some());
        Ok(Some((task, p.page(read, counted))))
    }

    async fn task_list(&self, filter: &ListFilter) -> Result<Vec<TaskInfo>, TaskError> {
        let rows = self
            .list_query(
                filter,
                |st, by_state| {
                    if by_state { &st.list_state } else { &st.list }
                },
            )
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn task_list_sizes(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<(ListCursor, u64)>, TaskError> {
        let rows = self
            .list_query(
                filter,
                |st, by_state| {
                    if by_state { &st.sizes_state } else { &st.sizes }
                },
            )
            .await?;
        rows.iter()
            .map(|r| {
                let place = ListCursor {
                    due_at: time_at(r, 0),
                    id: id_at(r, 1)?,
                };
                Ok((place, r.get::<_, i64>(2).max(0) as u64))
            })
            .collect()
    }

    async fn task_list_reach(
        &self,
        filter: &ListFilter,
        n: u32,
    ) -> Result<Option<ListCursor>, TaskError> {
        let conn = self.pool.get().await?;
        // The listing's own statement, without its data filter, to its n-th task.
        let params = list_params(&ListFilter {
            data: None,
            limit: Some(n.max(1)),
            ..filter.clone()
        });
        let row = conn
            .client
            .query_opt(
                if filter.state.is_some() {
                    &conn.st.reach_state
                } else {
                    &conn.st.reach
                },
                &param_refs(&params),
            )
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok(ListCursor {
                due_at: time_at(&r, 0),
                id: id_at(&r, 1)?,
            })
        })
        .transpose()
    }

    async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let conn = self.pool.get().await?;
        let key = &id.as_bytes()[..];
        let at = now;
        let (now, steps) = (PgTime::of(now), [&conn.st.cancel]);
        let params: [&(dyn ToSql + Sync); 2] = [&now, &key];
        let mut read = None;
        for _ in 0..RACE_TRIES {
            let Some(r) = self
                .try_steer(&conn, &steps, &params, id)
                .await
                .map_err(db_err)?
            else {
                continue;
            };
            if let Some(done) = steered(id, Steer::Cancel, &r, at)? {
                return done;
            }
            read = Some(r);
        }
        Err(raced(id, Steer::Cancel, read))
    }

    async fn task_cancel_request(
        &self,
        id: TaskId,
        _now: Timestamp,
    ) -> Result<Option<TaskInfo>, TaskError> {
        let conn = self.pool.get().await?;
        let key = &id.as_bytes()[..];
        let params: [&(dyn ToSql + Sync); 1] = [&key];
        for _ in 0..RACE_TRIES {
            // A heartbeat or the end of the attempt may change the row meanwhile.
            let Some(r) = self
                .try_steer(&conn, &[&conn.st.cancel_request], &params, id)
                .await
                .map_err(db_err)?
            else {
                continue;
            };
            if r.changed == 0 {
                return Ok(None);
            }
            return r.task();
        }
        Err(raced(id, Steer::Cancel, None))
    }

    async fn task_cancel_requested(
        &self,
        claims: &[(TaskId, i64)],
    ) -> Result<Vec<TaskId>, TaskError> {
        let conn = self.pool.get().await?;
        let ids: Vec<&[u8]> = claims.iter().map(|(id, _)| &id.as_bytes()[..]).collect();
        let fences: Vec<i64> = claims.iter().map(|(_, f)| *f).collect();
        let rows = conn
            .client
            .query(&conn.st.cancel_requested, &[&ids, &fences])
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| id_at(r, 0)).collect()
    }

    async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let conn = self.pool.get().await?;
        let key = &id.as_bytes()[..];
        let at = now;
        let now = PgTime::of(now);
        let params: [&(dyn ToSql + Sync); 2] = [&now, &key];
        // A retrying task is made due where it is; a dead or cancelled one moves back. A task
        // is in one table, so at most one of the two changes it.
        let steps = [&conn.st.retry, &conn.st.retry_move];
        let mut read = None;
        for _ in 0..RACE_TRIES {
            let r = match self.try_steer(&conn, &steps, &params, id).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) if is_unique_key_violation(&e) => {
                    let t = self
                        .get_with_runs(&conn, id)
                        .await?
                        .ok_or(TaskError::NotFound(id))?;
                    let key = t.unique_key.unwrap_or_default();
                    return match existing_unique(
                        &conn.client,
                        &conn.st.existing_unique,
                        &t.handler,
                        &key,
                    )
                    .await?
                    {
                        Some(existing) => Err(duplicate_key(&t.handler, &key, existing)),
                        None => Err(TaskError::Conflict(format!(
                            "task {id} collided with a task with its unique key that has since \
                             finished; retry it again"
                        ))),
                    };
                }
                Err(e) if is_singleton_violation(&e) => {
                    let t = self
                        .get_with_runs(&conn, id)
                        .await?
                        .ok_or(TaskError::NotFound(id))?;
                    let data = serde_json::to_string(&t.data).map_err(TaskError::store)?;
                    let handler = t.handler;
                    return match existing_singleton(
                        &conn.client,
                        &conn.st.existing,
                        &handler,
                        &data,
                    )
                    .await?
                    {
                        Some(existing) => Err(duplicate(&handler, existing)),
                        None => Err(TaskError::Conflict(format!(
                            "task {id} collided with a recurring task that has since finished; \
                             retry it again"
                        ))),
                    };
                }
                Err(e) => return Err(db_err(e)),
            };
            if let Some(done) = steered(id, Steer::Retry, &r, at)? {
                if done.is_ok() {
                    self.signal();
                }
                return done;
            }
            read = Some(r);
        }
        Err(raced(id, Steer::Retry, read))
    }

    async fn task_successes(&self, params: SuccessParams<'_>) -> Result<Vec<Successes>, TaskError> {
        if params.tasks.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.pool.get().await?;
        let ids: Vec<&[u8]> = params
            .tasks
            .iter()
            .map(|(id, _)| &id.as_bytes()[..])
            .collect();
        let since: Vec<PgTime> = params.tasks.iter().map(|(_, t)| PgTime::of(*t)).collect();
        let limit = i64::from(params.limit);
        let rows = conn
            .client
            .query(&conn.st.successes, &[&ids, &since, &limit])
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .zip(params.tasks)
            .map(|(r, (_, since))| {
                let kept = opt_time_at(r, 3).zip(opt_time_at(r, 4));
                Successes {
                    last_finished_at: opt_time_at(r, 0),
                    since: r
                        .get::<_, Vec<PgTime>>(1)
                        .into_iter()
                        .map(PgTime::time)
                        .collect(),
                    before: r.get(2),
                }
                .with_kept(kept, *since, params.limit)
            })
            .collect())
    }

    async fn stats(&self, p: StatsParams) -> Result<StoreStats, TaskError> {
        let conn = self.pool.get().await?;
        let (c, st) = (&conn.client, &conn.st);
        let now = PgTime::of(p.now);
        let since = PgTime::of(p.finished_since);
        let stuck_limit = i64::from(p.stuck_limit);
        let at_now: [&(dyn ToSql + Sync); 1] = [&now];
        let since: [&(dyn ToSql + Sync); 1] = [&since];
        let stuck: [&(dyn ToSql + Sync); 2] = [&now, &stuck_limit];
        // The finished-task counters are deltas: fold them first, so the sum reads few rows.
        c.execute(&st.fold_counts, &[]).await.map_err(db_err)?;
        // The figures from one snapshot, so they agree with each other while workers write;
        // the statements still go in one round trip.
        c.ready(&[
            &st.stats_counts,
            &st.stats_due,
            &st.stats_oldest,
            &st.stats_finished,
            &st.stats_workers,
            &st.stats_stuck,
            &st.expired,
        ])
        .await
        .map_err(db_err)?;
        let sent = tokio::try_join!(
            c.batch_execute(BEGIN_SNAPSHOT),
            c.query(&st.stats_counts, &[]),
            c.query(&st.stats_due, &at_now),
            c.query_one(&st.stats_oldest, &at_now),
            c.query_one(&st.stats_finished, &since),
            c.query(&st.stats_workers, &at_now),
            c.query_one(&st.stats_stuck, &at_now),
            c.query(&st.expired, &stuck),
            c.batch_execute("COMMIT"),
        );
        let (_, counts, due, oldest, finished, workers, stuck_count, stuck, _) = match sent {
            Ok(got) => got,
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(db_err(e));
            }
        };
        let counted = |rows: &[Row]| {
            rows.iter()
                .map(|r| {
                    Ok((
                        r.get::<_, String>(0),
                        r.get::<_, &str>(1).parse::<State>()?,
                        count_at(r, 2),
                    ))
                })
                .collect::<Result<Vec<_>, TaskError>>()
        };
        Ok(StoreStats {
            counts: counted(&counts)?,
            due: counted(&due)?,
            oldest_due: opt_time_at(&oldest, 0),
            finished_recently: count_at(&finished, 0),
            workers: workers
                .iter()
                .map(|r| WorkerInfo {
                    id: r.get(0),
                    handlers: r.get(1),
                    queues: r.get(2),
                    last_seen: time_at(r, 3),
                    live_until: time_at(r, 4),
                })
                .collect(),
            stuck_count: count_at(&stuck_count, 0),
            stuck: stuck
                .iter()
                .map(expired_from_row)
                .collect::<Result<_, _>>()?,
        })
    }

    async fn task_vacuum(&self) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        let s = &self.pool.names.quoted;
        conn.client
            .batch_execute(&format!("VACUUM {s}.tasks, {s}.task_counts"))
            .await
            .map_err(db_err)
    }

    async fn history_vacuum(&self) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        let s = &self.pool.names.quoted;
        conn.client
            .batch_execute(&format!("VACUUM (SKIP_LOCKED) {s}.task_history, {s}.runs"))
            .await
            .map_err(db_err)
    }

    fn indexes_keep_freed_pages(&self) -> bool {
        true
    }

    async fn task_reindex(&self) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        let s = &self.pool.names.quoted;
        // A rebuild interrupted (a stopped worker, a lost connection) leaves its half-built
        // indexes behind, invalid but still written on every change: drop them first. Only
        // a rebuild's (PostgreSQL names them `<index>_ccnew` and `_ccold`, numbered on a
        // clash): an invalid index of another name may be one a person is building.
        let leftovers = conn
            .client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE i.indrelid = $1::text::regclass AND NOT i.indisvalid \
                 AND c.relname ~ '_cc(new|old)[0-9]*$'",
                &[&format!("{s}.tasks")],
            )
            .await
            .map_err(db_err)?;
        for row in leftovers {
            let name: String = row.get(0);
            conn.client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await
                .map_err(db_err)?;
        }
        conn.client
            .batch_execute(&format!("REINDEX TABLE CONCURRENTLY {s}.tasks"))
            .await
            .map_err(db_err)
    }

    async fn table_sizes(&self) -> Result<TableSizes, TaskError> {
        let s = &self.pool.names.quoted;
        // Rare (benchmarks, dashboards): not among the statements every connection prepares.
        let query = format!(
            "SELECT pg_table_size('{s}.tasks'), pg_indexes_size('{s}.tasks'), \
               pg_table_size('{s}.task_history'), pg_indexes_size('{s}.task_history'), \
               pg_table_size('{s}.runs'), pg_indexes_size('{s}.runs')"
        );
        let conn = self.pool.get().await?;
        let row = conn.client.query_one(&query, &[]).await.map_err(db_err)?;
        let size = |i: usize| TableSize {
            table_bytes: count_at(&row, i),
            index_bytes: count_at(&row, i + 1),
        };
        Ok(TableSizes {
            live: size(0),
            history: size(2),
            runs: size(4),
        })
    }

    async fn copy_read(&self, p: CopyRead) -> Result<CopyRows, TaskError> {
        let s = &self.pool.names.quoted;
        let after_id: Vec<u8> = match &p.after {
            Some(CopyKey::Id(id) | CopyKey::Run(id, _)) => id.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        let limit = i64::from(p.limit);
        let conn = self.pool.get().await?;
        // Rare (a copy): not among the statements every connection prepares.
        Ok(match p.table {
            CopyTable::Live => {
                let rows = conn
                    .client
                    .query(&sql::sql_copy_read_live(s), &[&after_id, &limit])
                    .await
                    .map_err(db_err)?;
                CopyRows::Live(rows.iter().map(live_row).collect::<Result<_, _>>()?)
            }
            CopyTable::History => {
                let rows = conn
                    .client
                    .query(&sql::sql_copy_read_history(s), &[&after_id, &limit])
                    .await
                    .map_err(db_err)?;
                CopyRows::History(rows.iter().map(history_row).collect::<Result<_, _>>()?)
            }
            CopyTable::Queues => {
                let after = match p.after {
                    Some(CopyKey::Name(name)) => name,
                    _ => String::new(),
                };
                let rows = conn
                    .client
                    .query(&sql::sql_copy_read_queues(s), &[&after, &limit])
                    .await
                    .map_err(db_err)?;
                CopyRows::Queues(rows.iter().map(queue_row).collect())
            }
            CopyTable::Runs => {
                let position = match p.after {
                    Some(CopyKey::Run(_, position)) => position,
                    _ => i64::MIN,
                };
                let rows = conn
                    .client
                    .query(&sql::sql_copy_read_runs(s), &[&after_id, &position, &limit])
                    .await
                    .map_err(db_err)?;
                CopyRows::Runs(rows.iter().map(run_row).collect::<Result<_, _>>()?)
            }
        })
    }

    async fn copy_write(&self, rows: CopyRows) -> Result<(), TaskError> {
        if rows.is_empty() {
            return Ok(());
        }
        let s = &self.pool.names.quoted;
        let (query, columns) = match &rows {
            CopyRows::Live(r) => (sql::sql_copy_write_live(s), live_columns(r)),
            CopyRows::History(r) => (sql::sql_copy_write_history(s), history_columns(r)),
            CopyRows::Runs(r) => (sql::sql_copy_write_runs(s), run_columns(r)),
            CopyRows::Queues(r) => (sql::sql_copy_write_queues(s), queue_columns(r)),
        };
        let params: Vec<&(dyn ToSql + Sync)> = columns
            .iter()
            .map(|c| &**c as &(dyn ToSql + Sync))
            .collect();
        // A task is live or finished, not both: a row whose id the other table holds fails the
        // batch (each table's key refuses its own repeats).
        let other = match &rows {
            CopyRows::Live(r) => Some(("task_history", r.iter().map(|t| t.id).collect::<Vec<_>>())),
            CopyRows::History(r) => Some(("tasks", r.iter().map(|t| t.id).collect())),
            _ => None,
        };
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(db_err)?;
        if let Some((table, ids)) = other {
            let keys: Vec<&[u8]> = ids.iter().map(|id| &id.as_bytes()[..]).collect();
            let clash = tx
                .query_opt(
                    &format!("SELECT id FROM {s}.{table} WHERE id = ANY($1::bytea[]) LIMIT 1"),
                    &[&keys],
                )
                .await
                .map_err(db_err)?;
            if let Some(row) = clash {
                return Err(super::stored_elsewhere(id_at(&row, 0)?, table));
            }
        }
        // One statement, its history counted by the statement's trigger.
        tx.execute(&query, &params).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        if let CopyRows::Live(r) = &rows {
            self.count_inserted(r.len());
            self.signal();
        }
        Ok(())
    }

    async fn server_time(&self) -> Result<Option<Timestamp>, TaskError> {
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one("SELECT clock_timestamp()", &[])
            .await
            .map_err(db_err)?;
        Ok(Some(time_at(&row, 0)))
    }

    async fn worker_register(
        &self,
        worker: &WorkerInfo,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, TaskError> {
        let s = &self.pool.names.quoted;
        // Once per worker start: not prepared on every connection.
        let register = format!(
            "INSERT INTO {s}.workers (id, handlers, queues, last_seen, live_until) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             handlers = excluded.handlers, queues = excluded.queues, \
             last_seen = excluded.last_seen, live_until = excluded.live_until \
             WHERE {s}.workers.live_until <= $6 RETURNING 1"
        );
        let live = format!("SELECT live_until FROM {s}.workers WHERE id = $1");
        let conn = self.pool.get().await?;
        // Refused, the live row is read by a statement of its own, which sees the row that
        // refused it even when that was written meanwhile; removed in between, the start is
        // tried again.
        for _ in 0..3 {
            let written = conn
                .client
                .query(
                    &register,
                    &[
                        &worker.id,
                        &worker.handlers,
                        &worker.queues,
                        &PgTime::of(worker.last_seen),
                        &PgTime::of(worker.live_until),
                        &PgTime::of(now),
                    ],
                )
                .await
                .map_err(db_err)?;
            if !written.is_empty() {
                return Ok(None);
            }
            if let Some(row) = conn
                .client
                .query_opt(&live, &[&worker.id])
                .await
                .map_err(db_err)?
            {
                return Ok(Some(time_at(&row, 0)));
            }
        }
        Err(TaskError::store(format!(
            "worker {} could not record itself as live: its row kept changing",
            worker.id
        )))
    }

    async fn worker_remove(&self, id: &str) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(&conn.st.worker_remove, &[&id])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn workers_forget(&self, before: Timestamp, dry_run: bool) -> Result<u64, TaskError> {
        let s = &self.pool.names.quoted;
        // Once a pass, as the prune's own statements: not prepared on every connection. One
        // statement, sent as one message also behind a transaction pooler.
        let query = if dry_run {
            format!("SELECT count(*) FROM {s}.workers WHERE live_until < $1")
        } else {
            format!(
                "WITH gone AS (DELETE FROM {s}.workers WHERE live_until < $1 RETURNING 1) \
                 SELECT count(*) FROM gone"
            )
        };
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_one(&query, &[&PgTime::of(before)])
            .await
            .map_err(db_err)?;
        Ok(count_at(&row, 0))
    }

    async fn task_prune(&self, p: PruneParams) -> Result<PruneCounts, TaskError> {
        let s = &self.pool.names.quoted;
        // Rare (once a minute at most): not among the statements every connection prepares.
        let query = if p.dry_run {
            sql::sql_prune_count(s)
        } else {
            sql::sql_prune(s)
        };
        let mut conn = self.pool.get().await?;
        let Conn { client, st } = &mut *conn;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.batch_execute(sql::PRUNE_BY_FINISHED_INDEX)
            .await
            .map_err(db_err)?;
        let row = tx
            .query_one(
                &query,
                &[
                    &p.done_before.map(PgTime::of),
                    &p.dead_before.map(PgTime::of),
                    &p.recurring_before.map(PgTime::of),
                    &i64::from(p.limit),
                ],
            )
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        if !p.dry_run {
            client.execute(&st.fold_counts, &[]).await.map_err(db_err)?;
        }
        Ok(PruneCounts {
            tasks: count_at(&row, 0),
            task_runs: count_at(&row, 1),
            recurring_runs: count_at(&row, 2),
        })
    }

    async fn leader_elect(&self, p: LeaderParams<'_>) -> Result<bool, TaskError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                &conn.st.leader_elect,
                &[&p.name, &p.holder, &PgTime::of(p.now), &PgTime::of(p.until)],
            )
            .await
            .map_err(db_err)?;
        Ok(!rows.is_empty())
    }

    async fn leader_resign(&self, holder: &str) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(&conn.st.leader_resign, &[&holder])
            .await
            .map_err(db_err)?;
        Ok(())
    }
    async fn queue_controls(&self, names: &[String]) -> Result<Vec<QueueControl>, TaskError> {
        let conn = self.pool.get().await?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let rows = conn
            .client
            .query(&queues::sql_controls(&self.pool.names.quoted), &[&names])
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(queues::control_from_row).collect())
    }

    async fn queue_pause(
        &self,
        queue: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                &queues::sql_pause(&self.pool.names.quoted),
                &[&queue, &paused, &PgTime::of(now)],
            )
            .await
            .map_err(db_err)?;
        conn.client
            .execute(
                &queues::sql_drop_if_empty(&self.pool.names.quoted),
                &[&queue],
            )
            .await
            .map_err(db_err)?;
        self.signal();
        Ok(())
    }

    async fn queue_limit(
        &self,
        queue: &str,
        limits: &QueueLimits,
        now: Timestamp,
    ) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        let concurrency = limits.concurrency.map(|n| n as i32);
        let rate_count = limits.rate.map(|r| r.count as i32);
        let rate_ms = limits.rate.map(|r| r.period.as_millis() as i64);
        conn.client
            .execute(
                &queues::sql_limit(&self.pool.names.quoted),
                &[
                    &queue,
                    &concurrency,
                    &limits.per,
                    &rate_count,
                    &rate_ms,
                    &PgTime::of(now),
                ],
            )
            .await
            .map_err(db_err)?;
        conn.client
            .execute(
                &queues::sql_drop_if_empty(&self.pool.names.quoted),
                &[&queue],
            )
            .await
            .map_err(db_err)?;
        self.signal();
        Ok(())
    }

    async fn queue_counts(&self, now: Timestamp) -> Result<QueueCounts, TaskError> {
        let mut conn = self.pool.get().await?;
        let s = &self.pool.names.quoted;
        // One snapshot: a task claimed between two reads would count as running and as due.
        let tx = conn.client.transaction().await.map_err(db_err)?;
        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db_err)?;
        let counts = tx
            .query(&queues::sql_counts(s), &[])
            .await
            .map_err(db_err)?;
        let due = tx
            .query(&queues::sql_due(s), &[&PgTime::of(now)])
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        queues::counts_from_rows(&counts, &due)
    }

    async fn task_cancel_many(&self, p: SteerMany<'_>) -> Result<u64, TaskError> {
        let conn = self.pool.get().await?;
        let states: Vec<&str> = p.states.iter().map(|s| s.as_str()).collect();
        let row = conn
            .client
            .query_one(
                &conn.st.cancel_many,
                &[
                    &PgTime::of(p.now),
                    &states,
                    &p.handler,
                    &p.queue,
                    &p.data.map(|m| m.field.as_str()),
                    &p.data.map(|m| m.value.as_str()),
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(count_at(&row, 0))
    }

    async fn task_retry_many(&self, p: SteerMany<'_>) -> Result<u64, TaskError> {
        let mut conn = self.pool.get().await?;
        let states: Vec<&str> = p.states.iter().map(|s| s.as_str()).collect();
        let (field, value) = (
            p.data.map(|m| m.field.as_str()),
            p.data.map(|m| m.value.as_str()),
        );
        let params: [&(dyn ToSql + Sync); 6] = [
            &PgTime::of(p.now),
            &states,
            &p.handler,
            &p.queue,
            &field,
            &value,
        ];
        // Both sides in one transaction: the count is of one moment. The move leaves a task
        // whose singleton or unique key a live task holds, but it sees only what had committed
        // when it began: a copy moved back by another connection since then makes it fail on
        // the index, and the transaction runs again, seeing that copy.
        let Conn { client, st } = &mut *conn;
        for _ in 0..RACE_TRIES {
            let tx = client.transaction().await.map_err(db_err)?;
            let moved = match tx.execute(&st.retry_many, &params).await {
                Ok(n) => tx
                    .execute(&st.retry_many_move, &params)
                    .await
                    .map(|m| n + m),
                Err(e) => Err(e),
            };
            match moved {
                Ok(n) => {
                    tx.commit().await.map_err(db_err)?;
                    if n > 0 {
                        self.signal();
                    }
                    return Ok(n);
                }
                Err(e) if is_unique_key_violation(&e) || is_singleton_violation(&e) => {
                    tx.rollback().await.map_err(db_err)?;
                }
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(TaskError::Conflict(
            "the bulk retry kept colliding with tasks other clients moved back at the same \
             time; try again"
                .to_string(),
        ))
    }

    async fn task_count_many(
        &self,
        p: SteerMany<'_>,
        at_most: u64,
        examine: u64,
    ) -> Result<ManyCount, TaskError> {
        let conn = self.pool.get().await?;
        let cap = i64::try_from(at_most).unwrap_or(i64::MAX);
        let examine = i64::try_from(examine).unwrap_or(i64::MAX);
        let states: Vec<&str> = p.states.iter().map(|s| s.as_str()).collect();
        let row = conn
            .client
            .query_one(
                &conn.st.count_many,
                &[
                    &PgTime::of(p.now),
                    &states,
                    &p.handler,
                    &p.queue,
                    &p.data.map(|m| m.field.as_str()),
                    &p.data.map(|m| m.value.as_str()),
                    &cap,
                    &examine,
                ],
            )
            .await
            .map_err(db_err)?;
        Ok(ManyCount {
            matched: count_at(&row, 0).min(at_most),
            examined_all: row.get(1),
        })
    }
}

/// A listing's parameters, $1 to $11 of the list statements (and of the reach statements).
fn list_params(f: &ListFilter) -> [Box<dyn ToSql + Send + Sync>; 11] {
    [
        Box::new(f.state.map(State::as_str)),
        Box::new(f.handler.clone()),
        Box::new(i64::from(
            f.limit.unwrap_or(crate::policy::DEFAULT_LIST_LIMIT),
        )),
        Box::new(f.queue.clone()),
        Box::new(f.cursor.map(|c| PgTime::of(c.due_at))),
        Box::new(f.cursor.map(|c| c.id.as_bytes().to_vec())),
        Box::new(f.data.as_ref().map(|m| m.field.clone())),
        Box::new(f.data.as_ref().map(|m| m.value.clone())),
        Box::new(f.recurring),
        Box::new(f.until.map(|c| PgTime::of(c.due_at))),
        Box::new(f.until.map(|c| c.id.as_bytes().to_vec())),
    ]
}

/// Owned parameters as the client takes them.
fn param_refs(params: &[Box<dyn ToSql + Send + Sync>]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test database, or `None` with a printed line (a failure under `CI=true`).
    fn test_url() -> Option<String> {
        match std::env::var("PARTY_TEST_DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
            _ => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "CI=true but PARTY_TEST_DATABASE_URL is not set"
                );
                println!("skipped: set PARTY_TEST_DATABASE_URL=postgres://... to run it");
                None
            }
        }
    }

    /// A `json` value's text.
    struct JsonText(String);

    impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
        fn from_sql(
            _: &tokio_postgres::types::Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(JsonText(String::from_utf8(raw.to_vec())?))
        }

        fn accepts(ty: &tokio_postgres::types::Type) -> bool {
            *ty == tokio_postgres::types::Type::JSON
        }
    }

    /// The plan nodes that ran and read `relation` or sorted, as `(node type, index name)`.
    fn scans(relation: &str, plan: &serde_json::Value, out: &mut Vec<(String, String)>) {
        if plan.get("Actual Loops").and_then(|v| v.as_u64()) == Some(0) {
            return;
        }
        let text = |key: &str| plan.get(key).and_then(|v| v.as_str()).unwrap_or_default();
        if text("Relation Name") == relation || text("Node Type") == "Sort" {
            out.push((
                text("Node Type").to_string(),
                text("Index Name").to_string(),
            ));
        }
        for child in plan
            .get("Plans")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            scans(relation, child, out);
        }
    }

    #[test]
    fn a_prune_batch_reads_the_finished_index_in_order_on_a_history_never_analyzed() {
        let Some(url) = test_url() else { return };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let schema = format!("party_plan_{}", std::process::id());
            let store = PgStore::connect_with(
                &url,
                PgOptions {
                    schema: schema.clone(),
                    ..PgOptions::default()
                },
            )
            .await
            .unwrap();
            let s = store.pool.names.quoted.clone();
            let mut conn = store.pool.get().await.unwrap();
            // 20,000 tasks waiting for tomorrow in the hot table, each with a failed attempt,
            // and 20,000 done tasks finished a day ago, written as a burst: no statistics yet.
            conn.client
                .batch_execute(&format!(
                    "INSERT INTO {s}.tasks (id, handler, data, timestamp, due_at, ready, \
                       attempts, max_attempts, is_recurring, state, queue, priority, fence, \
                       created_at, updated_at) \
                     SELECT decode(lpad(to_hex(i + 100000), 24, '0'), 'hex'), 'noop', '{{}}', \
                       now(), now() + interval '1 day', false, 0, 3, false, 'scheduled', \
                       'default', 0, 0, now(), now() \
                     FROM generate_series(1, 20000) i; \
                     INSERT INTO {s}.runs (task_id, attempt, timestamp, started_at, \
                       finished_at, outcome, error, worker) \
                     SELECT id, 1, now(), now(), now(), 'failed', 'boom', 'w' FROM {s}.tasks"
                ))
                .await
                .unwrap();
            conn.client
                .batch_execute(&format!(
                    "INSERT INTO {s}.task_history (id, handler, data, timestamp, due_at, \
                       attempts, max_attempts, is_recurring, state, queue, priority, fence, \
                       created_at, finished_at) \
                     SELECT decode(lpad(to_hex(i), 24, '0'), 'hex'), 'noop', '{{}}', t, t, 1, \
                       3, false, 'done', 'default', 0, 1, t, t + interval '1 second' \
                     FROM generate_series(1, 20000) i, \
                       LATERAL (SELECT now() - interval '1 day' + i * interval '1 ms' AS t) x"
                ))
                .await
                .unwrap();
            let Conn { client, .. } = &mut *conn;
            let now = Some(PgTime::of(Timestamp::now()));
            // Every kind past a cutoff (a worker's defaults), and done tasks only (the other
            // kinds kept forever: their branches are planned out).
            let settings = ["enable_seqscan", "enable_bitmapscan", "enable_sort", "jit"];
            let mut before = Vec::new();
            for setting in settings {
                let row = client.query_one(&format!("SHOW {setting}"), &[]).await;
                before.push(row.unwrap().get::<_, String>(0));
            }
            for cutoffs in [[now, now, now], [now, None, None]] {
                let tx = client.transaction().await.unwrap();
                tx.batch_execute(sql::PRUNE_BY_FINISHED_INDEX)
                    .await
                    .unwrap();
                let row = tx
                    .query_one(
                        &format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", sql::sql_prune(&s)),
                        &[&cutoffs[0], &cutoffs[1], &cutoffs[2], &1000_i64],
                    )
                    .await
                    .unwrap();
                tx.rollback().await.unwrap();
                for (setting, before) in settings.iter().zip(&before) {
                    let row = client.query_one(&format!("SHOW {setting}"), &[]).await;
                    let after = row.unwrap().get::<_, String>(0);
                    assert_eq!(&after, before, "{setting} after the batch");
                }
                let plan: serde_json::Value =
                    serde_json::from_str(&row.get::<_, JsonText>(0).0).unwrap();
                let mut reads = Vec::new();
                scans("task_history", &plan[0]["Plan"], &mut reads);
                // Old runs of live recurring tasks: the live recurring tasks through the
                // singleton index, never the whole hot table.
                let mut live = Vec::new();
                scans("tasks", &plan[0]["Plan"], &mut live);
                assert!(
                    live.iter().all(|(node, index)| node == "Sort"
                        || (node == "Index Scan" && index == "tasks_singleton")),
                    "{cutoffs:?}: {live:?}"
                );
                // Each state's candidates: an ordered range of the finished index, then the
                // delete by row place. No sort, no scan of every finished task.
                assert!(
                    reads.iter().all(|(node, index)| node == "ModifyTable"
                        || node == "Tid Scan"
                        || (node == "Index Scan" && index == "history_finished")),
                    "{cutoffs:?}: {reads:?}"
                );
                assert!(
                    reads.iter().any(|(_, i)| i == "history_finished"),
                    "{cutoffs:?}: {reads:?}"
                );
                // The paths turned off cost ten billion each in the plan: without `jit = off`
                // PostgreSQL compiles the statement, 400 ms a batch.
                assert_eq!(plan[0].get("JIT"), None, "{cutoffs:?}: {plan}");
            }
            conn.client
                .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
                .await
                .unwrap();
            drop(conn);
            drop(store);
        });
    }
}
