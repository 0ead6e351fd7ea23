//! A fresh store on every backend, what the trait does not show (the recorded schema
//! version), and builders for the trait's parameters with the suite's defaults.

use std::path::PathBuf;
use std::sync::Arc;

use party::jiff::{SignedDuration, Timestamp};
use party::store::postgres::{PgOptions, PgStore, tokio_postgres};
use party::store::sqlite::SqliteStore;
use party::store::{
    ClaimParams, ClaimedTask, ExpiredParams, Finish, InsertTask, Next, StatsParams, Store,
    StoreStats,
};
use party::{Outcome, State, TaskError, TaskId, TaskInfo};

/// The backends every test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's store lives.
enum Place {
    /// A fresh SQLite file.
    Sqlite(PathBuf),
    /// A fresh schema on the test database, or on a database of its own (`own`: the test
    /// database's URL and the database's name, dropped with the schema).
    Postgres {
        base: String,
        schema: String,
        own: Option<(String, String)>,
    },
}

/// One test's store, removed (file or schema) when dropped.
pub struct Harness {
    pub store: Arc<dyn Store>,
    place: Place,
}

/// The test database's URL; `None` after a printed skip line when it is not set, and a
/// failure under `CI=true`, so PostgreSQL never passes by doing nothing.
fn postgres_url() -> Option<String> {
    match std::env::var("PARTY_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but PARTY_TEST_DATABASE_URL is not set: the store conformance \
                     suite must run on PostgreSQL in CI; start PostgreSQL and set it, e.g. \
                     postgres://postgres@127.0.0.1:5432/test"
                );
            }
            println!(
                "skipped on PostgreSQL: set PARTY_TEST_DATABASE_URL=postgres://... to run the \
                 store conformance suite there"
            );
            None
        }
    }
}

impl Harness {
    /// A fresh, migrated store; `None` when the backend cannot run here (a line says why).
    pub async fn new(backend: Backend) -> Option<Harness> {
        let place = match backend {
            Backend::Sqlite => Place::Sqlite(std::env::temp_dir().join(format!(
                "party-store-{}-{:016x}.db",
                std::process::id(),
                fastrand::u64(..)
            ))),
            Backend::Postgres => Place::Postgres {
                base: postgres_url()?,
                schema: format!("party_store_{:016x}", fastrand::u64(..)),
                own: None,
            },
        };
        let store = open(&place).await.expect("a fresh store opens");
        Some(Harness { store, place })
    }

    /// Like [`Harness::new`], but on PostgreSQL in a fresh database of its own: a vacuum there
    /// reclaims every row version it removed, since no other test's transaction runs in that
    /// database (PostgreSQL keeps what a transaction begun earlier in the same database might
    /// still read).
    pub async fn new_alone(backend: Backend) -> Option<Harness> {
        if backend == Backend::Sqlite {
            return Harness::new(backend).await;
        }
        let admin = postgres_url()?;
        let name = format!("party_alone_{:016x}", fastrand::u64(..));
        pg_client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a scratch database");
        let place = Place::Postgres {
            base: with_database(&admin, &name),
            schema: format!("party_store_{:016x}", fastrand::u64(..)),
            own: Some((admin, name)),
        };
        let store = open(&place).await.expect("a fresh store opens");
        Some(Harness { store, place })
    }

    /// The store as a second process would open it (migrations run again if needed).
    pub async fn reopen(&self) -> Result<Arc<dyn Store>, TaskError> {
        open(&self.place).await
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> i64 {
        match &self.place {
            Place::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap(),
            Place::Postgres { base, schema, .. } => {
                let client = pg_client(base).await;
                let v: i32 = client
                    .query_one(
                        &format!("SELECT max(version) FROM \"{schema}\".schema_version"),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                i64::from(v)
            }
        }
    }

    /// Record `version` as a newer binary's migration would.
    pub async fn record_schema_version(&self, version: i64) {
        match &self.place {
            Place::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .pragma_update(None, "user_version", version)
                .unwrap(),
            Place::Postgres { base, schema, .. } => {
                pg_client(base)
                    .await
                    .execute(
                        &format!("INSERT INTO \"{schema}\".schema_version (version) VALUES ($1)"),
                        &[&(version as i32)],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// The plan the database makes for a query: on SQLite `EXPLAIN QUERY PLAN` of `sqlite`'s
    /// text, on PostgreSQL `EXPLAIN` of `postgres`'s (its `{s}` the store's schema) with
    /// sequential scans and sorts priced out, so the plan uses an index whenever one serves.
    pub async fn plan(&self, sqlite: &str, postgres: &str) -> String {
        match &self.place {
            Place::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sqlite}"))
                    .unwrap();
                let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
                rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
            }
            Place::Postgres { base, schema, .. } => {
                let client = pg_client(base).await;
                client
                    .batch_execute("SET enable_seqscan = off; SET enable_sort = off")
                    .await
                    .unwrap();
                let sql = postgres.replace("{s}", &format!("\"{schema}\""));
                client
                    .query(&format!("EXPLAIN {sql}"), &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    /// Insert tasks that must go in.
    pub async fn insert(&self, tasks: Vec<InsertTask>) -> Vec<TaskId> {
        self.store.task_insert(tasks).await.expect("insert")
    }

    /// Read a task that must exist.
    pub async fn get(&self, id: TaskId) -> TaskInfo {
        self.store
            .task_get(id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("task {id} exists"))
    }

    /// Claim with the suite's worker, every handler and queue the suite uses.
    pub async fn claim(&self, now: Timestamp, limit: u32) -> Vec<ClaimedTask> {
        self.claim_for(&[], &[], now, limit).await
    }

    /// Claim only these handlers and queues (empty: the suite's defaults).
    pub async fn claim_for(
        &self,
        handlers: &[&str],
        queues: &[&str],
        now: Timestamp,
        limit: u32,
    ) -> Vec<ClaimedTask> {
        claim_on(self.store.as_ref(), handlers, queues, now, limit).await
    }

    /// Claim the one due task of `handler`.
    pub async fn claim_one(&self, handler: &str, now: Timestamp) -> ClaimedTask {
        let mut got = self.claim_for(&[handler], &[], now, 10).await;
        assert_eq!(got.len(), 1, "one '{handler}' task is due at {now}");
        got.remove(0)
    }

    /// Finish one attempt that must be applied.
    pub async fn finish(&self, f: Finish) {
        let results = self.store.task_finish(vec![f]).await.expect("finish");
        assert_eq!(results, vec![party::store::FinishResult::Applied]);
    }

    /// The ids of running tasks whose lease ended before `now`, earliest expiry first.
    pub async fn expired(&self, now: Timestamp) -> Vec<TaskId> {
        self.store
            .task_expired(ExpiredParams { now, limit: 100 })
            .await
            .expect("expired")
            .into_iter()
            .map(|t| t.id)
            .collect()
    }

    /// The store's figures at `now`, counting attempts of the last minute.
    pub async fn stats(&self, now: Timestamp) -> StoreStats {
        self.store
            .stats(StatsParams {
                now,
                finished_since: now - party::policy::THROUGHPUT_WINDOW,
                stuck_limit: party::policy::STUCK_LISTED,
            })
            .await
            .expect("stats")
    }

    /// A task of `handler` brought into `state` through the trait, as the runtime would.
    pub async fn task_in(&self, state: State, handler: &str) -> TaskId {
        let id = self.insert(vec![task(handler)]).await[0];
        let claimed = || async { self.claim_one(handler, t0()).await };
        match state {
            State::Scheduled => {}
            State::Running => {
                claimed().await;
            }
            State::Retrying => {
                let c = claimed().await;
                self.finish(failed(&c, t0(), "boom", Next::retry_at(t0() + secs(600))))
                    .await;
            }
            State::Done => {
                let c = claimed().await;
                self.finish(finish(&c, t0(), Next::Done)).await;
            }
            State::Dead => {
                let c = claimed().await;
                self.finish(failed(&c, t0(), "boom", Next::Dead)).await;
            }
            State::Cancelled => {
                self.store.task_cancel(id, t0()).await.expect("cancel");
            }
        }
        assert_eq!(self.get(id).await.state, state);
        id
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        match &self.place {
            Place::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Place::Postgres { base, schema, own } => {
                // Drop runs on the test's runtime: clean up on a thread with a runtime of its
                // own. A schema left behind is harmless.
                // A database cannot be dropped from a connection to it: connect to the test
                // database instead.
                let base = own.as_ref().map_or(base, |(admin, _)| admin).clone();
                let (schema, own) = (schema.clone(), own.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let Ok((client, connection)) =
                            tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                        else {
                            return;
                        };
                        tokio::spawn(connection);
                        // A database of its own goes whole, the schema with it (FORCE ends
                        // the store's connections, still open); otherwise the schema goes.
                        let drop = match own {
                            Some((_, name)) => {
                                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
                            }
                            None => format!(
                                "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                            ),
                        };
                        let _ = client.batch_execute(&drop).await;
                    });
                })
                .join();
            }
        }
    }
}

async fn open(place: &Place) -> Result<Arc<dyn Store>, TaskError> {
    Ok(match place {
        Place::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        Place::Postgres { base, schema, .. } => Arc::new(
            PgStore::connect_with(
                base,
                PgOptions {
                    schema: schema.clone(),
                    ..PgOptions::default()
                },
            )
            .await?,
        ),
    })
}

/// `url` naming the database `name` instead of its own (any `?options` kept).
fn with_database(url: &str, name: &str) -> String {
    let (place, options) = match url.split_once('?') {
        Some((place, options)) => (place, Some(options)),
        None => (url, None),
    };
    let (server, _) = place
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("://") && !server.ends_with('/'))
        .expect("a postgres:// URL naming its database");
    match options {
        Some(options) => format!("{server}/{name}?{options}"),
        None => format!("{server}/{name}"),
    }
}

async fn pg_client(base: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// The worker every claim and finish of the suite names.
pub const WORKER: &str = "worker-1";
/// The handlers [`Harness::claim`] takes.
pub const HANDLERS: &[&str] = &["noop", "other"];
/// The queues [`Harness::claim`] takes.
pub const QUEUES: &[&str] = &["default"];
/// How long a claim's lease lasts.
pub const LEASE: SignedDuration = SignedDuration::from_secs(30);

/// The suite's "now".
/// Claim on `store` with the suite's worker, these handlers and queues (empty: the suite's
/// defaults).
pub async fn claim_on(
    store: &dyn Store,
    handlers: &[&str],
    queues: &[&str],
    now: Timestamp,
    limit: u32,
) -> Vec<ClaimedTask> {
    let own = |given: &[&str], default: &[&str]| -> Vec<String> {
        let list = if given.is_empty() { default } else { given };
        list.iter().map(|s| s.to_string()).collect()
    };
    store
        .task_claim(ClaimParams {
            worker: WORKER,
            handlers: &own(handlers, HANDLERS),
            queues: &own(queues, QUEUES),
            limit,
            now,
            lease_until: now + LEASE,
            promote_limit: party::policy::PROMOTE_BATCH,
            controlled: &[],
        })
        .await
        .expect("claim")
}

pub fn t0() -> Timestamp {
    "2027-03-01T12:00:00Z".parse().unwrap()
}

pub fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

/// A one-off task of `handler` with empty data, due and created at [`t0`].
pub fn task(handler: &str) -> InsertTask {
    InsertTask {
        id: TaskId::generate(t0()),
        handler: handler.to_string(),
        data: "{}".to_string(),
        timestamp: t0(),
        is_recurring: false,
        rule: None,
        max_attempts: 3,
        queue: "default".to_string(),
        priority: 0,
        created_at: t0(),
        unique_key: None,
        unique_since: None,
    }
}

/// [`task`] due at `at`.
pub fn task_at(handler: &str, at: Timestamp) -> InsertTask {
    InsertTask {
        timestamp: at,
        ..task(handler)
    }
}

/// A recurring task of `handler` with this (canonical) data, every hour.
pub fn recurring(handler: &str, data: &str) -> InsertTask {
    InsertTask {
        data: data.to_string(),
        is_recurring: true,
        rule: Some(r#"{"every":"1h"}"#.to_string()),
        ..task(handler)
    }
}

/// A succeeded attempt of `c`, ended at `at`, moving the task to `next`.
pub fn finish(c: &ClaimedTask, at: Timestamp, next: Next) -> Finish {
    Finish {
        id: c.id,
        fence: c.fence,
        attempt: c.attempts,
        timestamp: c.timestamp,
        started_at: c.started_at,
        finished_at: at,
        worker: WORKER.to_string(),
        outcome: Outcome::Succeeded,
        error: None,
        next,
        follow_ups: Vec::new(),
        ran: true,
        expired_before: None,
    }
}

/// A failed attempt of `c` with `error`.
pub fn failed(c: &ClaimedTask, at: Timestamp, error: &str, next: Next) -> Finish {
    Finish {
        outcome: Outcome::Failed,
        error: Some(error.to_string()),
        ..finish(c, at, next)
    }
}

/// Instantiate each listed `async fn name(backend)` once per backend, as
/// `MODULE::sqlite::name` and `MODULE::postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;
