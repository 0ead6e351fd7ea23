//! What every behaviour test shares: a fresh store on each backend, a manual clock, and
//! handlers that record what they saw.

use std::sync::{Arc, Mutex};

use party::jiff::Timestamp;
use party::store::Store;
use party::{ManualClock, Party, Registry};

/// The backends the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// A fresh SQLite file in the temp dir, removed when dropped.
#[cfg(feature = "sqlite")]
pub struct TempDb {
    pub path: std::path::PathBuf,
}

#[cfg(feature = "sqlite")]
impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

#[cfg(feature = "sqlite")]
pub fn temp_db_path(tag: &str) -> TempDb {
    let path = std::env::temp_dir().join(format!(
        "party-test-{tag}-{}-{:016x}.db",
        std::process::id(),
        fastrand_u64()
    ));
    TempDb { path }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A fresh store; `None` when the backend is not available here (a line says why).
pub async fn fresh_store(
    backend: Backend,
) -> Option<(Arc<dyn Store>, Box<dyn std::any::Any + Send>)> {
    match backend {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let db = temp_db_path("behaviour");
            let store = party::open_store(db.path.to_str().unwrap())
                .await
                .expect("open sqlite");
            Some((store, Box::new(db)))
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => postgres_store().await,
    }
}

/// The test server's URL; `None` (with a printed line) when it is not configured, which fails
/// under `CI=true`.
#[cfg(feature = "postgres")]
pub fn postgres_url() -> Option<String> {
    let Some(url) = std::env::var("PARTY_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true but PARTY_TEST_DATABASE_URL is not set: the PostgreSQL behaviour tests must run in CI"
            );
        }
        println!(
            "skipped: set PARTY_TEST_DATABASE_URL=postgres://... to run the PostgreSQL behaviour tests"
        );
        return None;
    };
    Some(url.trim().to_string())
}

#[cfg(feature = "postgres")]
async fn postgres_store() -> Option<(Arc<dyn Store>, Box<dyn std::any::Any + Send>)> {
    let url = postgres_url()?;
    let schema = TempSchema::new(&url);
    let sep = if schema.url.contains('?') { '&' } else { '?' };
    let store = party::open_store(&format!("{}{sep}schema={}", schema.url, schema.name))
        .await
        .expect("open postgres");
    Some((store, Box::new(schema)))
}

/// Run `sql` directly on the fixture's database (tables unqualified), bypassing party: to
/// damage a row the way a person or a bug could. Returns the first column of any rows as text.
/// A task id as an SQL literal of the fixture's backend (ids are stored as their 12 bytes).
pub fn id_literal(f: &Fixture, id: party::TaskId) -> String {
    let _ = f;
    #[cfg(feature = "sqlite")]
    if f._keep.downcast_ref::<TempDb>().is_some() {
        return format!("X'{id}'");
    }
    format!("'\\x{id}'::bytea")
}

/// Move a live task to the finished tasks' table in `state` (done, dead or cancelled), as if
/// it had finished now; for tests that need a task in a state no quick path reaches.
pub async fn set_finished(f: &Fixture, id: party::TaskId, state: &str) {
    let key = id_literal(f, id);
    raw_sql(
        f,
        &format!(
            "INSERT INTO task_history (id, handler, data, timestamp, due_at, last_run_on, \
             attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, \
             fence, created_at, finished_at) SELECT id, handler, data, timestamp, due_at, \
             last_run_on, attempts, max_attempts, is_recurring, rule, '{state}', queue, \
             priority, last_error, fence, created_at, updated_at FROM tasks WHERE id = {key}"
        ),
    )
    .await;
    raw_sql(f, &format!("DELETE FROM tasks WHERE id = {key}")).await;
}

pub async fn raw_sql(f: &Fixture, sql: &str) -> Vec<String> {
    #[cfg(feature = "sqlite")]
    if let Some(db) = f._keep.downcast_ref::<TempDb>() {
        let conn = rusqlite::Connection::open(&db.path).expect("open the test's SQLite file");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let mut stmt = conn.prepare(sql).expect("prepare");
        if stmt.column_count() == 0 {
            stmt.execute([]).expect("execute");
            return Vec::new();
        }
        return stmt
            .query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
    }
    #[cfg(not(feature = "postgres"))]
    panic!("in a build without PostgreSQL every fixture keeps a SQLite file");
    #[cfg(feature = "postgres")]
    raw_postgres(f, sql).await
}

#[cfg(feature = "postgres")]
async fn raw_postgres(f: &Fixture, sql: &str) -> Vec<String> {
    let schema = f
        ._keep
        .downcast_ref::<TempSchema>()
        .expect("a SQLite file or a PostgreSQL schema");
    use party::store::postgres::tokio_postgres;
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", schema.name))
        .await
        .unwrap();
    let rows = client.simple_query(sql).await.expect("execute");
    rows.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// A fresh PostgreSQL schema for one test, dropped when the test is done.
#[cfg(feature = "postgres")]
pub struct TempSchema {
    url: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl TempSchema {
    /// A schema name no other test uses, on the server at `url`.
    pub fn new(url: &str) -> TempSchema {
        TempSchema {
            url: url.to_string(),
            name: format!("party_test_{:016x}", fastrand_u64()),
        }
    }

    /// The schema's name.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(feature = "postgres")]
impl Drop for TempSchema {
    fn drop(&mut self) {
        // Drop is synchronous and may run on the test's runtime: clean up on a thread of its
        // own with a runtime of its own. A schema left behind is harmless.
        let (url, name) = (self.url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use party::store::postgres::tokio_postgres;
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!(
                        "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                    ))
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

pub fn t0() -> Timestamp {
    "2027-01-31T09:00:00Z".parse().unwrap()
}

/// A party on a fresh store with a manual clock at [`t0`].
pub struct Fixture {
    pub party: Party,
    pub clock: ManualClock,
    _keep: Box<dyn std::any::Any + Send>,
}

pub async fn fixture(backend: Backend, registry: Registry) -> Option<Fixture> {
    let (store, keep) = fresh_store(backend).await?;
    let clock = ManualClock::new(t0());
    let party = Party::with_store(store, registry).with_clock(Arc::new(clock.clone()));
    Some(Fixture {
        party,
        clock,
        _keep: keep,
    })
}

/// Move the clock past a running task's lease and rescue it. The worker's heartbeat may renew
/// the lease between the two (it renews from the clock it reads), so repeat until the rescue
/// took the task.
pub async fn expire_and_rescue(f: &Fixture, id: party::TaskId) {
    for _ in 0..50 {
        f.clock.advance(party::jiff::SignedDuration::from_secs(1));
        party::maintenance::Rescuer::new(
            f.party.store().clone(),
            Arc::new(f.clock.clone()),
            Default::default(),
        )
        .run_once()
        .await
        .unwrap();
        if f.party.get(id).await.unwrap().state != party::State::Running {
            return;
        }
    }
    panic!("task {id} was never rescued");
}

/// What a recording handler saw on one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: String,
    pub timestamp: Timestamp,
    pub last_run_on: Option<Timestamp>,
    pub attempts: u32,
    pub is_recurring: bool,
    pub data: party::serde_json::Value,
    pub now: Timestamp,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

pub fn seen(ctx: &party::TaskContext) -> Seen {
    Seen {
        id: ctx.id().to_string(),
        timestamp: ctx.timestamp(),
        last_run_on: ctx.last_run_on(),
        attempts: ctx.attempts(),
        is_recurring: ctx.is_recurring(),
        data: ctx.data().clone(),
        now: ctx.now(),
    }
}

/// A worker running in the background until [`Running::stop`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<party::WorkerReport, party::TaskError>>,
}

/// Start `worker` with [`party::Worker::run`] in the background.
pub fn start(worker: party::Worker) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    Running { stop, join }
}

impl Running {
    /// Signal shutdown and wait for the worker's report.
    pub async fn stop(self) -> party::WorkerReport {
        let _ = self.stop.send(());
        self.join.await.expect("worker task").expect("worker ran")
    }
}

/// Instantiate each listed `async fn name(backend)` once per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Sqlite).await
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;
