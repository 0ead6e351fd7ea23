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
//! - `pool_size` (8): connections kept open for queries, opened on demand, each with every
//!   statement prepared once. One more connection is the signal connection (see below).
//! - `connect_timeout` (10 s, unless the URL sets `connect_timeout`): how long opening a
//!   connection may take before the call fails with a clear error.
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
//!   looks again and nothing is missed.
//! - Migrations run under a transaction-scoped advisory lock, so many processes may start at
//!   once; a database whose schema is newer than this binary is refused.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use jiff::Timestamp;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row, Statement};

pub use tokio_postgres;

use super::{
    ClaimParams, ClaimedTask, Finish, FinishResult, HeartbeatParams, InsertTask, Next,
    SCHEMA_VERSION, Steer, Store,
};
use crate::clock::{from_micros, to_micros};
use crate::model::{HandlerCount, ListFilter, Outcome, Run, State, Stats, TaskInfo, WorkerInfo};
use crate::{TaskError, TaskId};

/// Migrations by number; the `schema_version` table records which ran.
const MIGRATIONS: [&str; 1] = [include_str!("postgres/001_tasks.sql")];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// The schema used unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "party";

/// How long a worker's heartbeat keeps it counted as live in [`Store::stats`].
const WORKER_LIVE_MICROS: i64 = 30_000_000;

/// At most this many due tasks are promoted to `ready` per claim.
const PROMOTE_BATCH: i64 = 5_000;

/// At most this many expired leases are released per statement.
const RESCUE_BATCH: usize = 1_000;

/// The first key of the migration advisory lock (the second is a hash of the schema name).
const MIGRATION_LOCK_CLASS: i32 = 0x7061_7274;

/// Longest wait between attempts to re-establish the listener connection.
const LISTENER_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a [`PgStore`] connects. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The schema holding party's tables (default `party`). Letters, digits and `_`, at most
    /// 57 characters. A `schema=NAME` parameter in the URL takes precedence.
    pub schema: String,
    /// Connections kept open for queries (default 8, at least 1).
    pub pool_size: usize,
    /// How long opening a connection may take, unless the URL sets `connect_timeout`
    /// (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: 8,
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

// ---------------------------------------------------------------------------------------------
// Errors

fn db_err(e: tokio_postgres::Error) -> TaskError {
    TaskError::store(describe(&e))
}

/// The error with its causes: tokio-postgres puts the server's message in the source.
fn describe(e: &tokio_postgres::Error) -> String {
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

fn is_singleton_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(|d| d.constraint()) == Some("tasks_singleton")
}

// ---------------------------------------------------------------------------------------------
// Instants: timestamptz on the wire is microseconds since 2000-01-01 UTC.

const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// An instant as microseconds since the Unix epoch, sent and read as `timestamptz`.
#[derive(Debug, Clone, Copy)]
struct PgTime(i64);

impl PgTime {
    fn of(t: Timestamp) -> PgTime {
        PgTime(to_micros(t))
    }

    fn time(self) -> Timestamp {
        from_micros(self.0)
    }
}

impl ToSql for PgTime {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0.saturating_sub(PG_EPOCH_MICROS).to_be_bytes());
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

fn time_at(row: &Row, i: usize) -> Timestamp {
    row.get::<_, PgTime>(i).time()
}

fn opt_time_at(row: &Row, i: usize) -> Option<Timestamp> {
    row.get::<_, Option<PgTime>>(i).map(PgTime::time)
}

// ---------------------------------------------------------------------------------------------
// Names and SQL

/// The schema and the names derived from it, already quoted for SQL.
#[derive(Debug, Clone)]
struct Names {
    /// The schema as given.
    schema: String,
    /// The schema quoted as an identifier.
    quoted: String,
    /// The notification channel (as `pg_notify` takes it).
    channel: String,
}

impl Names {
    fn new(schema: &str) -> Result<Names, TaskError> {
        let ok = !schema.is_empty()
            && schema.len() <= 57
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(TaskError::invalid(format!(
                "bad PostgreSQL schema name '{schema}': use letters, digits and '_' (not \
                 starting with a digit), at most 57 characters, e.g. 'party'"
            )));
        }
        Ok(Names {
            schema: schema.to_string(),
            quoted: quote_ident(schema),
            channel: format!("party_{schema}"),
        })
    }
}

/// Claims and results commit without waiting for the disk (`synchronous_commit = off`, for
/// these transactions only). A database crash can then lose the last few claims or results;
/// those tasks are rescued and run again, so "at least once" holds. Inserts, cancels and
/// retries keep the server's setting: a returned id is durable.
const BEGIN_ASYNC_COMMIT: &str = "BEGIN; SET LOCAL synchronous_commit TO off";

/// Inserts of at least this many rows in all may refresh the planner's statistics (see
/// `PgStore::count_inserted`).
const ANALYZE_AFTER_INSERT: usize = 1000;

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

/// The highest migration recorded in `version_table` (0 when none is).
async fn recorded_version(
    client: &impl tokio_postgres::GenericClient,
    version_table: &str,
) -> Result<i32, TaskError> {
    Ok(client
        .query_one(
            &format!("SELECT COALESCE(max(version), 0) FROM {version_table}"),
            &[],
        )
        .await
        .map_err(db_err)?
        .get(0))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

const TASK_COLUMNS: &str = "id, handler, data, timestamp, last_run_on, attempts, is_recurring, \
    state, queue, priority, max_attempts, last_error, rule, due_at, created_at, worker";

const LIVE: &str = "('scheduled','running','retrying')";
const WAITING: &str = "('scheduled','retrying')";

/// The columns and source of a task insert from arrays: `$1..$10`. A task already due when it
/// is created (the common "run now") goes straight into the claim index, with no promotion.
fn insert_from_arrays(s: &str) -> String {
    format!(
        "INSERT INTO {s}.tasks (id, handler, data, timestamp, due_at, ready, attempts, \
           max_attempts, is_recurring, rule, state, queue, priority, fence, created_at, updated_at) \
         SELECT id, handler, data, ts, ts, ts <= created_at, 0, max_attempts, is_recurring, rule, \
           'scheduled', queue, priority, 0, created_at, created_at \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[], \
           $6::bool[], $7::text[], $8::text[], $9::int4[], $10::timestamptz[]) \
           AS t(id, handler, data, ts, max_attempts, is_recurring, rule, queue, priority, created_at)"
    )
}

/// Insert all or none: a singleton collision fails the statement.
fn sql_insert(s: &str) -> String {
    insert_from_arrays(s)
}

/// Insert, skipping rows that collide with a live recurring task; returns the ids inserted
/// and, if any were, notifies when the surrounding transaction commits (this one is used
/// inside transactions, where only the commit knows when the tasks become visible).
fn sql_insert_skipping(s: &str) -> String {
    format!(
        "WITH ins AS ({} ON CONFLICT (handler, md5(data)) \
           WHERE is_recurring AND state IN {LIVE} DO NOTHING RETURNING id) \
         SELECT id, pg_notify($11, '') FROM ins",
        insert_from_arrays(s)
    )
}

fn sql_existing(s: &str) -> String {
    format!(
        "SELECT id FROM {s}.tasks WHERE handler = $1 AND md5(data) = md5($2) AND data = $2 \
         AND is_recurring AND state IN {LIVE}"
    )
}

fn sql_promote(s: &str) -> String {
    format!(
        "UPDATE {s}.tasks SET ready = true WHERE id = ANY(ARRAY( \
           SELECT id FROM {s}.tasks WHERE NOT ready AND state IN {WAITING} AND due_at <= $1 \
           ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
    )
}

/// Ready tasks are due, but one written ready by a process whose clock is a little ahead may
/// not be due yet by ours: the claim checks `due_at` as well, so nothing starts early.
fn sql_claim(s: &str) -> String {
    format!(
        "UPDATE {s}.tasks t SET state = 'running', ready = false, attempts = t.attempts + 1, \
           fence = t.fence + 1, worker = $1, started_at = $2, lease_until = $3, updated_at = $2 \
         WHERE t.id = ANY(ARRAY(SELECT id FROM {s}.tasks WHERE ready AND state IN {WAITING} \
           AND due_at <= $2 AND handler = ANY($4::text[]) AND queue = ANY($5::text[]) \
           ORDER BY priority, due_at LIMIT $6 FOR UPDATE SKIP LOCKED)) \
         RETURNING t.id, t.handler, t.data, t.timestamp, t.last_run_on, t.attempts, \
           t.max_attempts, t.is_recurring, t.rule, t.fence, t.priority, t.due_at"
    )
}

/// A batch of fenced finishes and their run rows: one statement. Returns the applied ids and
/// their new states.
fn sql_finish(s: &str) -> String {
    // The arrays are unnested where they are joined (no shared CTE), so the planner drives
    // each join from the batch through the primary key.
    format!(
        "WITH u AS (UPDATE {s}.tasks t SET state = i.state, \
           timestamp = COALESCE(i.ts, t.timestamp), due_at = COALESCE(i.due_at, t.due_at), \
           last_run_on = COALESCE(i.last_run_on, t.last_run_on), \
           attempts = CASE WHEN i.reset THEN 0 ELSE t.attempts END, \
           last_error = COALESCE(i.error, t.last_error), \
           ready = COALESCE(i.due_at <= i.finished_at, false), worker = NULL, \
           started_at = NULL, lease_until = NULL, updated_at = i.finished_at \
           FROM unnest($1::text[], $2::int8[], $3::text[], $4::timestamptz[], \
             $5::timestamptz[], $6::timestamptz[], $7::bool[], $8::text[], $9::timestamptz[]) \
             AS i(id, fence, state, ts, due_at, last_run_on, reset, error, finished_at) \
           WHERE t.id = i.id AND t.fence = i.fence AND t.state = 'running' \
           RETURNING t.id, t.state), \
         r AS (INSERT INTO {s}.runs (task_id, attempt, timestamp, started_at, finished_at, \
           outcome, error, worker) \
           SELECT i.id, i.attempt, i.run_ts, i.started_at, i.finished_at, i.outcome, i.error, \
             i.worker \
           FROM unnest($1::text[], $8::text[], $9::timestamptz[], $10::bool[], $11::int4[], \
             $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[]) \
             AS i(id, error, finished_at, ran, attempt, run_ts, started_at, worker, outcome) \
           JOIN u ON u.id = i.id WHERE i.ran) \
         SELECT u.id, u.state FROM u"
    )
}

fn sql_heartbeat(s: &str) -> String {
    format!(
        "WITH w AS (INSERT INTO {s}.workers (id, handlers, queues, last_seen) \
           VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET handlers = excluded.handlers, \
           queues = excluded.queues, last_seen = excluded.last_seen) \
         UPDATE {s}.tasks t SET lease_until = $5 \
         FROM unnest($6::text[], $7::int8[]) AS h(id, fence) \
         WHERE t.id = h.id AND t.fence = h.fence AND t.state = 'running' RETURNING t.id"
    )
}

fn sql_rescue(s: &str) -> String {
    format!(
        "WITH e AS MATERIALIZED (SELECT id, attempts, max_attempts, timestamp, started_at, \
           COALESCE(worker, '') AS worker, lease_until FROM {s}.tasks \
           WHERE state = 'running' AND lease_until < $1 LIMIT {RESCUE_BATCH} \
           FOR UPDATE SKIP LOCKED), \
         m AS (SELECT e.*, 'worker ' || e.worker || ' lost its lease (it expired at ' || \
           to_char(e.lease_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || \
           ' without a heartbeat); the task was rescued' AS error FROM e), \
         u AS (UPDATE {s}.tasks t SET \
           state = CASE WHEN m.attempts >= m.max_attempts THEN 'dead' ELSE 'retrying' END, \
           due_at = $1, ready = m.attempts < m.max_attempts, last_error = m.error, worker = NULL, \
           started_at = NULL, \
           lease_until = NULL, updated_at = $1 FROM m WHERE t.id = m.id \
           RETURNING t.id, t.state), \
         r AS (INSERT INTO {s}.runs (task_id, attempt, timestamp, started_at, finished_at, \
           outcome, error, worker) \
           SELECT m.id, m.attempts, m.timestamp, m.started_at, $1, 'lost', m.error, m.worker \
           FROM m JOIN u ON u.id = m.id) \
         SELECT u.id, u.state FROM u"
    )
}

fn sql_next_due(s: &str) -> String {
    format!(
        "SELECT min(due_at) FROM ( \
           (SELECT due_at FROM {s}.tasks WHERE ready AND state IN {WAITING} \
             AND handler = ANY($1::text[]) AND queue = ANY($2::text[]) LIMIT 1) \
           UNION ALL \
           (SELECT due_at FROM {s}.tasks WHERE NOT ready AND state IN {WAITING} \
             AND handler = ANY($1::text[]) AND queue = ANY($2::text[]) ORDER BY due_at LIMIT 1) \
         ) d"
    )
}

/// Every statement a pooled connection prepares once.
struct Statements {
    insert: Statement,
    insert_skipping: Statement,
    existing: Statement,
    promote: Statement,
    claim: Statement,
    finish: Statement,
    heartbeat: Statement,
    rescue: Statement,
    next_due: Statement,
    get: Statement,
    runs: Statement,
    list: Statement,
    cancel: Statement,
    retry: Statement,
    stats_counts: Statement,
    stats_oldest: Statement,
    stats_finished: Statement,
    stats_workers: Statement,
    stats_unhandled: Statement,
    worker_remove: Statement,
}

impl Statements {
    /// The SQL of every statement, in field order.
    fn sql(s: &str) -> Vec<String> {
        vec![
            sql_insert(s),
            sql_insert_skipping(s),
            sql_existing(s),
            sql_promote(s),
            sql_claim(s),
            sql_finish(s),
            sql_heartbeat(s),
            sql_rescue(s),
            sql_next_due(s),
            format!("SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE id = $1"),
            format!(
                "SELECT attempt, timestamp, started_at, finished_at, outcome, error, worker \
                 FROM {s}.runs WHERE task_id = $1 ORDER BY seq"
            ),
            format!(
                "SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE ($1::text IS NULL OR state = $1) \
                 AND ($2::text IS NULL OR handler = $2) ORDER BY due_at, id LIMIT $3"
            ),
            format!(
                "UPDATE {s}.tasks SET state = 'cancelled', ready = false, updated_at = $1 \
                 WHERE id = $2 AND state IN ('scheduled','retrying','dead') RETURNING id"
            ),
            format!(
                "UPDATE {s}.tasks SET state = 'scheduled', due_at = $1, ready = true, \
                 max_attempts = GREATEST(max_attempts, attempts + 1), updated_at = $1 \
                 WHERE id = $2 AND state IN ('dead','cancelled','retrying')"
            ),
            format!(
                "SELECT handler, state, count(*) FROM {s}.tasks GROUP BY handler, state \
                 ORDER BY handler, state"
            ),
            format!("SELECT min(due_at) FROM {s}.tasks WHERE state IN {WAITING} AND due_at <= $1"),
            format!("SELECT count(*) FROM {s}.runs WHERE finished_at > $1"),
            format!(
                "SELECT id, handlers, queues, last_seen FROM {s}.workers WHERE last_seen >= $1 \
                 ORDER BY id"
            ),
            format!(
                "SELECT handler, state, count(*) FROM {s}.tasks t WHERE state IN {WAITING} \
                 AND due_at <= $1 AND NOT EXISTS (SELECT 1 FROM {s}.workers w \
                   WHERE w.last_seen >= $2 AND t.handler = ANY(w.handlers)) \
                 GROUP BY handler, state ORDER BY handler, state"
            ),
            format!("DELETE FROM {s}.workers WHERE id = $1"),
        ]
    }

    async fn prepare(client: &Client, s: &str) -> Result<Statements, tokio_postgres::Error> {
        let sql = Statements::sql(s);
        // All prepared at once, so the requests are pipelined on the connection.
        let mut pending: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = sql
            .iter()
            .map(|q| Box::pin(client.prepare(q)) as Pin<Box<dyn Future<Output = _> + Send>>)
            .collect();
        let mut done: Vec<Option<Statement>> = vec![None; pending.len()];
        std::future::poll_fn(|cx| {
            for (f, slot) in pending.iter_mut().zip(done.iter_mut()) {
                if slot.is_none() {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        *slot = Some(r?);
                    }
                }
            }
            if done.iter().all(Option::is_some) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
        let mut it = done.into_iter().map(|s| s.expect("all prepared"));
        let mut next = || it.next().expect("one statement per field");
        Ok(Statements {
            insert: next(),
            insert_skipping: next(),
            existing: next(),
            promote: next(),
            claim: next(),
            finish: next(),
            heartbeat: next(),
            rescue: next(),
            next_due: next(),
            get: next(),
            runs: next(),
            list: next(),
            cancel: next(),
            retry: next(),
            stats_counts: next(),
            stats_oldest: next(),
            stats_finished: next(),
            stats_workers: next(),
            stats_unhandled: next(),
            worker_remove: next(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and the pool

async fn connect(config: &Config) -> Result<Client, TaskError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        TaskError::store(format!(
            "cannot connect to PostgreSQL: {}; check that the server runs and the URL is right",
            describe(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// An open connection with its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

/// A small pool: up to `size` connections, opened on demand, each preparing every statement
/// once. A connection found closed is dropped and replaced on the next checkout.
struct Pool {
    config: Config,
    names: Names,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

/// A connection checked out of the pool; it goes back when dropped, unless it was closed.
struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _slot: SemaphorePermit<'a>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                self.pool.idle.lock().unwrap().push(conn);
            }
        }
    }
}

impl Pooled<'_> {
    /// Close the connection instead of returning it to the pool.
    fn discard(mut self) {
        self.conn = None;
    }
}

impl Pool {
    async fn get(&self) -> Result<Pooled<'_>, TaskError> {
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the pool is never closed");
        let reused = {
            let mut idle = self.idle.lock().unwrap();
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.client.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(c) => c,
            None => {
                let client = connect(&self.config).await?;
                let st = Statements::prepare(&client, &self.names.quoted)
                    .await
                    .map_err(db_err)?;
                Conn { client, st }
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            _slot: slot,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// URLs

/// Split a `postgres://` URL into the connection configuration and the `schema` parameter,
/// which is party's own and is removed before tokio-postgres reads the URL.
fn parse_url(url: &str) -> Result<(Config, Option<String>), TaskError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("schema", v)) => schema = Some(percent_decode(v)?),
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let clean = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config: Config = clean.parse().map_err(|e: tokio_postgres::Error| {
        TaskError::invalid(format!(
            "bad PostgreSQL URL: {}; write it like \
             postgres://user:password@host:5432/database?schema=party",
            describe(&e)
        ))
    })?;
    Ok((config, schema))
}

fn percent_decode(s: &str) -> Result<String, TaskError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        TaskError::invalid(format!("bad percent escape in the URL value '{s}'"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| TaskError::invalid(format!("the URL value '{s}' is not UTF-8")))
}

// ---------------------------------------------------------------------------------------------
// Migrations

async fn migrate(client: &mut Client, names: &Names) -> Result<(), TaskError> {
    let q = &names.quoted;
    let version_table = format!("{q}.schema_version");
    let newer = |v: i32| {
        TaskError::store(format!(
            "the PostgreSQL schema '{}' has schema version {v}, newer than this party binary \
             knows ({SCHEMA_VERSION}); upgrade party to a version that knows it",
            names.schema
        ))
    };
    // Fast path: already up to date, no lock and no DDL privileges needed.
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&version_table.as_str()],
        )
        .await
        .map_err(db_err)?;
    if row.get::<_, bool>(0) {
        let v = recorded_version(client, &version_table).await?;
        if i64::from(v) > SCHEMA_VERSION {
            return Err(newer(v));
        }
        if i64::from(v) == SCHEMA_VERSION {
            return Ok(());
        }
    }
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK_CLASS, &names.schema.as_str()],
    )
    .await
    .map_err(db_err)?;
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&names.schema.as_str()],
        )
        .await
        .map_err(db_err)?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {q}"))
            .await
            .map_err(|e| {
                TaskError::store(format!(
                    "cannot create the schema '{}': {}; create it, or grant CREATE on the database",
                    names.schema,
                    describe(&e)
                ))
            })?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {version_table} (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(db_err)?;
    let v = recorded_version(&tx, &version_table).await?;
    if i64::from(v) > SCHEMA_VERSION {
        return Err(newer(v));
    }
    tx.batch_execute(&format!("SET LOCAL search_path TO {q}"))
        .await
        .map_err(db_err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        tx.batch_execute(sql).await.map_err(|e| {
            TaskError::store(format!("migration {} failed: {}", i + 1, describe(&e)))
        })?;
        tx.execute(
            &format!("INSERT INTO {version_table} (version) VALUES ($1)"),
            &[&((i + 1) as i32)],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    if (v as usize) < MIGRATIONS.len() {
        tracing::info!(schema = %names.schema, from = v, to = SCHEMA_VERSION, "migrated the PostgreSQL schema");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The signal connection: LISTEN for other processes' changes, NOTIFY them of ours

/// The signal connection: its client, and a receiver that completes when the connection ends.
struct Signal {
    client: Client,
    closed: oneshot::Receiver<String>,
}

/// Open the signal connection and LISTEN on the channel; returns once the server confirmed
/// it. Notifications wake `wakeups`. The connection commits its own NOTIFYs asynchronously:
/// a notification needs no durability, so it never waits for a disk flush.
async fn listen(
    config: &Config,
    names: &Names,
    wakeups: &Arc<Notify>,
) -> Result<Signal, TaskError> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| {
        TaskError::store(format!(
            "cannot connect to PostgreSQL: {}; check that the server runs and the URL is right",
            describe(&e)
        ))
    })?;
    let (closed_tx, closed) = oneshot::channel();
    let wake = wakeups.clone();
    tokio::spawn(async move {
        let why = loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_waiters(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break describe(&e),
                None => break "the connection closed".to_string(),
            }
        };
        let _ = closed_tx.send(why);
    });
    client
        .batch_execute(&format!(
            "SET synchronous_commit TO off; LISTEN {}",
            quote_ident(&names.channel)
        ))
        .await
        .map_err(db_err)?;
    Ok(Signal { client, closed })
}

/// The signal loop: send one NOTIFY per request (requests made while one is in flight share
/// the next), and re-establish the connection with backoff when it drops. Once back, it wakes
/// this process's workers and notifies the others, so everyone looks again and nothing that
/// happened meanwhile is missed.
async fn signal_loop(
    config: Config,
    names: Names,
    wakeups: Arc<Notify>,
    requests: Arc<Notify>,
    mut signal: Signal,
) {
    let notify_sql = format!("NOTIFY {}", quote_ident(&names.channel));
    loop {
        let why = loop {
            tokio::select! {
                why = &mut signal.closed => break why.unwrap_or_default(),
                _ = requests.notified() => {
                    if let Err(e) = signal.client.batch_execute(&notify_sql).await {
                        break describe(&e);
                    }
                }
            }
        };
        tracing::warn!(error = %why, "the PostgreSQL signal connection was lost; reconnecting");
        let mut delay = Duration::from_millis(100);
        signal = loop {
            tokio::time::sleep(delay).await;
            match listen(&config, &names, &wakeups).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot re-establish the PostgreSQL signal connection");
                    delay = (delay * 2).min(LISTENER_MAX_BACKOFF);
                }
            }
        };
        tracing::info!(channel = %names.channel, "the PostgreSQL signal connection is back");
        wakeups.notify_waiters();
        requests.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

/// The arrays an insert statement takes.
struct InsertArrays {
    ids: Vec<String>,
    handlers: Vec<String>,
    data: Vec<String>,
    timestamps: Vec<PgTime>,
    max_attempts: Vec<i32>,
    recurring: Vec<bool>,
    rules: Vec<Option<String>>,
    queues: Vec<String>,
    priorities: Vec<i32>,
    created: Vec<PgTime>,
}

impl InsertArrays {
    fn new(tasks: &[InsertTask]) -> InsertArrays {
        InsertArrays {
            ids: tasks.iter().map(|t| t.id.to_string()).collect(),
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
        }
    }

    /// The parameters of the skipping insert, which also names the channel to notify.
    fn params_notifying<'a>(&'a self, channel: &'a String) -> [&'a (dyn ToSql + Sync); 11] {
        let [a, b, c, d, e, f, g, h, i, j] = self.params();
        [a, b, c, d, e, f, g, h, i, j, channel]
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
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
        ]
    }
}

/// The arrays the finish statement takes.
#[derive(Default)]
struct FinishArrays {
    ids: Vec<String>,
    fences: Vec<i64>,
    states: Vec<&'static str>,
    timestamps: Vec<Option<PgTime>>,
    due: Vec<Option<PgTime>>,
    last_run_on: Vec<Option<PgTime>>,
    reset: Vec<bool>,
    errors: Vec<Option<String>>,
    finished: Vec<PgTime>,
    ran: Vec<bool>,
    attempts: Vec<i32>,
    run_timestamps: Vec<PgTime>,
    started: Vec<PgTime>,
    workers: Vec<String>,
    outcomes: Vec<&'static str>,
}

impl FinishArrays {
    fn push(&mut self, f: &Finish) {
        let (state, timestamp, due_at, last_run_on, reset) = match &f.next {
            Next::Done => (State::Done, None, None, None, false),
            Next::Dead => (State::Dead, None, None, None, false),
            Next::Retry { due_at } => (State::Retrying, None, Some(*due_at), None, false),
            Next::Reschedule {
                timestamp,
                last_run_on,
            } => (
                State::Scheduled,
                Some(*timestamp),
                Some(*timestamp),
                *last_run_on,
                true,
            ),
        };
        self.ids.push(f.id.to_string());
        self.fences.push(f.fence);
        self.states.push(state.as_str());
        self.timestamps.push(timestamp.map(PgTime::of));
        self.due.push(due_at.map(PgTime::of));
        self.last_run_on.push(last_run_on.map(PgTime::of));
        self.reset.push(reset);
        self.errors.push(f.error.clone());
        self.finished.push(PgTime::of(f.finished_at));
        self.ran.push(f.ran);
        self.attempts.push(f.attempt.min(i32::MAX as u32) as i32);
        self.run_timestamps.push(PgTime::of(f.timestamp));
        self.started.push(PgTime::of(f.started_at));
        self.workers.push(f.worker.clone());
        self.outcomes.push(f.outcome.as_str());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.ids,
            &self.fences,
            &self.states,
            &self.timestamps,
            &self.due,
            &self.last_run_on,
            &self.reset,
            &self.errors,
            &self.finished,
            &self.ran,
            &self.attempts,
            &self.run_timestamps,
            &self.started,
            &self.workers,
            &self.outcomes,
        ]
    }
}

fn task_from_row(r: &Row) -> Result<TaskInfo, TaskError> {
    let id: &str = r.get(0);
    let data: &str = r.get(2);
    let state: &str = r.get(7);
    let rule: Option<&str> = r.get(12);
    Ok(TaskInfo {
        id: id.parse()?,
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
        runs: Vec::new(),
    })
}

fn run_from_row(r: &Row) -> Run {
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

fn count_at(r: &Row, i: usize) -> u64 {
    r.get::<_, i64>(i).max(0) as u64
}

/// The existing live recurring task with this handler and data, as seen by `client`.
async fn existing_singleton(
    client: &impl tokio_postgres::GenericClient,
    stmt: &Statement,
    handler: &str,
    data: &str,
) -> Result<Option<TaskId>, TaskError> {
    let row = client
        .query_opt(stmt, &[&handler, &data])
        .await
        .map_err(db_err)?;
    row.map(|r| r.get::<_, &str>(0).parse()).transpose()
}

fn duplicate(handler: &str, existing: TaskId) -> TaskError {
    TaskError::Duplicate {
        handler: handler.to_string(),
        existing,
    }
}

/// Two recurring tasks with the same handler and data in one batch: the later one is a
/// duplicate of the earlier.
fn duplicate_within(tasks: &[InsertTask]) -> Option<TaskError> {
    let mut seen: HashMap<(&str, &str), TaskId> = HashMap::new();
    for t in tasks.iter().filter(|t| t.is_recurring) {
        if let Some(first) = seen.get(&(t.handler.as_str(), t.data.as_str())) {
            return Some(duplicate(&t.handler, *first));
        }
        seen.insert((&t.handler, &t.data), t.id);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The store

impl PgStore {
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
        let (mut config, url_schema) = parse_url(url)?;
        let names = Names::new(url_schema.as_deref().unwrap_or(&options.schema))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("party");
        }
        let mut first = connect(&config).await?;
        migrate(&mut first, &names).await?;
        let st = Statements::prepare(&first, &names.quoted)
            .await
            .map_err(db_err)?;

        let mut signal_config = config.clone();
        signal_config.application_name("party signal");
        let wakeups = Arc::new(Notify::new());
        let signal = listen(&signal_config, &names, &wakeups).await?;
        let requests = Arc::new(Notify::new());
        let signal = tokio::spawn(signal_loop(
            signal_config,
            names.clone(),
            wakeups.clone(),
            requests.clone(),
            signal,
        ));

        let pool_size = options.pool_size.max(1);
        let pool = Arc::new(Pool {
            config,
            names,
            idle: Mutex::new(vec![Conn { client: first, st }]),
            slots: Semaphore::new(pool_size),
        });
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
        if rows.len() == tasks.len() {
            return Ok(tasks.iter().map(|t| t.id).collect());
        }
        let inserted: HashSet<&str> = rows.iter().map(|r| r.get::<_, &str>(0)).collect();
        let refused = tasks
            .iter()
            .find(|t| !inserted.contains(t.id.to_string().as_str()))
            .expect("fewer rows than tasks");
        let existing = client
            .query_opt(&sql_existing(s), &[&refused.handler, &refused.data])
            .await
            .map_err(db_err)?;
        // Undo the rows of the batch that did go in, so it is all or none.
        let ids: Vec<&str> = inserted.into_iter().collect();
        client
            .execute(
                &format!("DELETE FROM {s}.tasks WHERE id = ANY($1::text[])"),
                &[&ids],
            )
            .await
            .map_err(db_err)?;
        match existing {
            Some(row) => Err(duplicate(&refused.handler, row.get::<_, &str>(0).parse()?)),
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
            let params = arrays.params();
            let sent = tokio::try_join!(
                conn.client.batch_execute(BEGIN_ASYNC_COMMIT),
                conn.client.query(&conn.st.finish, &params),
                conn.client.batch_execute("COMMIT"),
            );
            let rows = match sent {
                Ok((_, rows, _)) => rows,
                Err(e) => {
                    // The transaction may be left open: close it before the connection goes
                    // back to the pool (a broken connection is dropped by the pool).
                    let _ = conn.client.batch_execute("ROLLBACK").await;
                    return Err(db_err(e));
                }
            };
            let applied: HashSet<&str> = rows.iter().map(|r| r.get::<_, &str>(0)).collect();
            let results = batch
                .iter()
                .map(|f| {
                    if applied.contains(f.id.to_string().as_str()) {
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
            let applied: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            let mut follow_ups = Vec::new();
            let mut owner = Vec::new();
            for &i in &live {
                if applied.contains(&batch[i].id.to_string()) {
                    for t in &batch[i].follow_ups {
                        follow_ups.push(t.clone());
                        owner.push(i);
                    }
                }
            }
            let mut newly_refused = false;
            if !follow_ups.is_empty() {
                let arrays = InsertArrays::new(&follow_ups);
                let inserted: HashSet<String> = tx
                    .query(&st.insert_skipping, &arrays.params_notifying(channel))
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect();
                for (t, &i) in follow_ups.iter().zip(&owner) {
                    if inserted.contains(&t.id.to_string()) || refused.contains_key(&i) {
                        continue;
                    }
                    let e = match existing_singleton(&tx, &st.existing, &t.handler, &t.data).await?
                    {
                        Some(id) => duplicate(&t.handler, id),
                        None => TaskError::Conflict(format!(
                            "a follow-up '{}' task collided with a recurring task that has \
                             since finished",
                            t.handler
                        )),
                    };
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
                    None if applied.contains(&batch[i].id.to_string()) => FinishResult::Applied,
                    None => FinishResult::Stale,
                })
                .collect();
            return Ok((results, claimable(&rows) || !follow_ups.is_empty()));
        }
    }

    async fn get_with_runs(&self, conn: &Conn, id: TaskId) -> Result<Option<TaskInfo>, TaskError> {
        let key = id.to_string();
        let params: [&(dyn ToSql + Sync); 1] = [&key];
        let (task, runs) = tokio::try_join!(
            conn.client.query_opt(&conn.st.get, &params),
            conn.client.query(&conn.st.runs, &params),
        )
        .map_err(db_err)?;
        let Some(row) = task else {
            return Ok(None);
        };
        let mut task = task_from_row(&row)?;
        task.runs = runs.iter().map(run_from_row).collect();
        Ok(Some(task))
    }

    async fn conflict_or_missing(&self, conn: &Conn, id: TaskId, op: Steer) -> TaskError {
        match conn
            .client
            .query_opt(&conn.st.get, &[&id.to_string()])
            .await
        {
            Ok(Some(row)) => match task_from_row(&row) {
                Ok(t) => op.conflict(id, t.state),
                Err(e) => e,
            },
            Ok(None) => TaskError::NotFound(id),
            Err(e) => db_err(e),
        }
    }
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
        let conn = self.pool.get().await?;
        let arrays = InsertArrays::new(&tasks);
        // A duplicate whose holder finishes before we can name it: try again.
        for _ in 0..5 {
            match conn.client.execute(&conn.st.insert, &arrays.params()).await {
                Ok(_) => {
                    self.count_inserted(tasks.len());
                    self.signal();
                    return Ok(tasks.iter().map(|t| t.id).collect());
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
        let conn = self.pool.get().await?;
        let now = PgTime::of(p.now);
        let lease = PgTime::of(p.lease_until);
        let limit = i64::from(p.limit);
        let handlers: Vec<&str> = p.handlers.iter().map(String::as_str).collect();
        let queues: Vec<&str> = p.queues.iter().map(String::as_str).collect();
        // Promotion and claim in one transaction (one commit), sent together (one round trip).
        let promote: [&(dyn ToSql + Sync); 2] = [&now, &PROMOTE_BATCH];
        let claim: [&(dyn ToSql + Sync); 6] = [&p.worker, &now, &lease, &handlers, &queues, &limit];
        let sent = tokio::try_join!(
            conn.client.batch_execute(BEGIN_ASYNC_COMMIT),
            conn.client.execute(&conn.st.promote, &promote),
            conn.client.query(&conn.st.claim, &claim),
            conn.client.batch_execute("COMMIT"),
        );
        let rows = match sent {
            Ok((_, _, rows, _)) => rows,
            Err(e) => {
                // The transaction may be left open: never reuse this connection.
                conn.discard();
                return Err(db_err(e));
            }
        };
        let started_at = now.time();
        let mut out = Vec::with_capacity(rows.len());
        let mut order = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: &str = r.get(0);
            out.push(ClaimedTask {
                id: id.parse()?,
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
        let (results, claimable) = self.finish_batch(&mut conn, &batch).await?;
        if claimable {
            self.signal();
        } else {
            self.wakeups.notify_waiters();
        }
        Ok(results)
    }

    async fn task_heartbeat(&self, p: HeartbeatParams<'_>) -> Result<Vec<TaskId>, TaskError> {
        let conn = self.pool.get().await?;
        let ids: Vec<String> = p.tasks.iter().map(|(id, _)| id.to_string()).collect();
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
                ],
            )
            .await
            .map_err(db_err)?;
        let kept: HashSet<&str> = rows.iter().map(|r| r.get::<_, &str>(0)).collect();
        Ok(p.tasks
            .iter()
            .zip(&ids)
            .filter(|(_, key)| !kept.contains(key.as_str()))
            .map(|((id, _), _)| *id)
            .collect())
    }

    async fn task_rescue(&self, now: Timestamp) -> Result<Vec<TaskId>, TaskError> {
        let conn = self.pool.get().await?;
        let mut ids = Vec::new();
        // Each statement rescues a bounded number; a crash of many workers takes a few rounds.
        loop {
            let rows = conn
                .client
                .query(&conn.st.rescue, &[&PgTime::of(now)])
                .await
                .map_err(db_err)?;
            for r in &rows {
                ids.push(r.get::<_, &str>(0).parse()?);
            }
            if rows.len() < RESCUE_BATCH {
                break;
            }
        }
        if !ids.is_empty() {
            self.signal();
        }
        Ok(ids)
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

    async fn task_list(&self, filter: &ListFilter) -> Result<Vec<TaskInfo>, TaskError> {
        let conn = self.pool.get().await?;
        let state = filter.state.map(State::as_str);
        let limit = i64::from(filter.limit.unwrap_or(100));
        let rows = conn
            .client
            .query(&conn.st.list, &[&state, &filter.handler, &limit])
            .await
            .map_err(db_err)?;
        rows.iter().map(task_from_row).collect()
    }

    async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let conn = self.pool.get().await?;
        let n = conn
            .client
            .execute(&conn.st.cancel, &[&PgTime::of(now), &id.to_string()])
            .await
            .map_err(db_err)?;
        if n == 0 {
            return Err(self.conflict_or_missing(&conn, id, Steer::Cancel).await);
        }
        self.get_with_runs(&conn, id)
            .await?
            .ok_or(TaskError::NotFound(id))
    }

    async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
        let conn = self.pool.get().await?;
        let r = conn
            .client
            .execute(&conn.st.retry, &[&PgTime::of(now), &id.to_string()])
            .await;
        let n = match r {
            Ok(n) => n,
            Err(e) if is_singleton_violation(&e) => {
                let row = conn
                    .client
                    .query_opt(&conn.st.get, &[&id.to_string()])
                    .await
                    .map_err(db_err)?
                    .ok_or(TaskError::NotFound(id))?;
                let (handler, data): (String, String) = (row.get(1), row.get(2));
                return match existing_singleton(&conn.client, &conn.st.existing, &handler, &data)
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
        if n == 0 {
            return Err(self.conflict_or_missing(&conn, id, Steer::Retry).await);
        }
        let task = self
            .get_with_runs(&conn, id)
            .await?
            .ok_or(TaskError::NotFound(id))?;
        self.signal();
        Ok(task)
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats, TaskError> {
        let conn = self.pool.get().await?;
        let (c, st) = (&conn.client, &conn.st);
        let micros = to_micros(now);
        let now_t = PgTime(micros);
        let minute_ago = PgTime(micros - 60_000_000);
        let live_since = PgTime(micros - WORKER_LIVE_MICROS);
        let at_now: [&(dyn ToSql + Sync); 1] = [&now_t];
        let since_minute: [&(dyn ToSql + Sync); 1] = [&minute_ago];
        let since_live: [&(dyn ToSql + Sync); 1] = [&live_since];
        let unhandled: [&(dyn ToSql + Sync); 2] = [&now_t, &live_since];
        let (counts, oldest, finished, workers, unhandled) = tokio::try_join!(
            c.query(&st.stats_counts, &[]),
            c.query_one(&st.stats_oldest, &at_now),
            c.query_one(&st.stats_finished, &since_minute),
            c.query(&st.stats_workers, &since_live),
            c.query(&st.stats_unhandled, &unhandled),
        )
        .map_err(db_err)?;
        let mut by_state: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
        let mut by_handler = Vec::with_capacity(counts.len());
        for r in &counts {
            let state: State = r.get::<_, &str>(1).parse()?;
            let count = count_at(r, 2);
            if let Some(e) = by_state.iter_mut().find(|(s, _)| *s == state) {
                e.1 += count;
            }
            by_handler.push(HandlerCount {
                handler: r.get(0),
                state,
                count,
            });
        }
        let unhandled = unhandled
            .iter()
            .map(|r| {
                Ok(HandlerCount {
                    handler: r.get(0),
                    state: r.get::<_, &str>(1).parse()?,
                    count: count_at(r, 2),
                })
            })
            .collect::<Result<Vec<_>, TaskError>>()?;
        let workers = workers
            .iter()
            .map(|r| WorkerInfo {
                id: r.get(0),
                handlers: r.get(1),
                queues: r.get(2),
                last_seen: time_at(r, 3),
            })
            .collect();
        Ok(Stats {
            by_state,
            by_handler,
            oldest_due: opt_time_at(&oldest, 0),
            finished_last_minute: count_at(&finished, 0),
            unhandled,
            workers,
        })
    }

    async fn worker_remove(&self, id: &str) -> Result<(), TaskError> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(&conn.st.worker_remove, &[&id])
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_taken_out_of_the_url() {
        let (config, schema) =
            parse_url("postgres://u@localhost:5433/db?schema=app_party&application_name=x")
                .unwrap();
        assert_eq!(schema.as_deref(), Some("app_party"));
        assert_eq!(config.get_dbname(), Some("db"));
        assert_eq!(config.get_application_name(), Some("x"));
        let (_, schema) = parse_url("postgresql://u@localhost/db").unwrap();
        assert_eq!(schema, None);
        let (_, schema) = parse_url("postgres://u@h/db?schema=a%5Fb").unwrap();
        assert_eq!(schema.as_deref(), Some("a_b"));
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(Names::new("party").is_ok());
        assert!(Names::new("party_test_0af3").is_ok());
        for bad in ["", "1party", "a-b", "a\"b", &"x".repeat(58)] {
            assert!(
                matches!(Names::new(bad), Err(TaskError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(Names::new("p").unwrap().channel, "party_p");
    }

    #[test]
    fn instants_round_trip_through_the_wire_format() {
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
