//! Upgrades in place: a store written at schema version 3 (one table for every task, ids as
//! text) with tasks in every state, recurring rules, a held singleton, run rows, workers and a
//! leader is opened by this binary, which moves it to the current schema (live tasks in the
//! hot table, finished ones in the history, ids as bytes). Every column of every row is
//! compared before and after, on every backend, and the upgraded store then works as usual.

#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::sync::Arc;

use party::jiff::{SignedDuration, Timestamp};
use party::store::{Finish, FinishResult, Next, SCHEMA_VERSION, Store};
use party::{NewTask, Outcome, State, TaskError, TaskId, builtin};

const V1_SQLITE: &str = include_str!("../../src/store/sqlite/migrations/001_tasks.sql");
const V2_SQLITE: &str = include_str!("../../src/store/sqlite/migrations/002_liveness_leaders.sql");
const V3_SQLITE: &str = include_str!("../../src/store/sqlite/migrations/003_finished_index.sql");
const V1_POSTGRES: &str = include_str!("../../src/store/postgres/migrations/001_tasks.sql");
const V2_POSTGRES: &str =
    include_str!("../../src/store/postgres/migrations/002_liveness_leaders.sql");
const V3_POSTGRES: &str =
    include_str!("../../src/store/postgres/migrations/003_finished_index.sql");

/// An instant, in microseconds since the epoch, `s` seconds after the fixture's origin.
fn at(s: i64) -> i64 {
    1_800_000_000_000_000 + s * 1_000_000
}

/// A value of a version-3 row, written for either backend.
#[derive(Clone)]
enum V {
    Text(&'static str),
    Int(i64),
    Bool(bool),
    Time(i64),
    Null,
}

impl V {
    fn sqlite(&self) -> String {
        match self {
            V::Text(s) => format!("'{}'", s.replace('\'', "''")),
            V::Int(n) | V::Time(n) => n.to_string(),
            V::Bool(b) => i32::from(*b).to_string(),
            V::Null => "NULL".into(),
        }
    }

    fn postgres(&self) -> String {
        match self {
            V::Text(s) => format!("'{}'", s.replace('\'', "''")),
            V::Int(n) => n.to_string(),
            V::Bool(b) => b.to_string(),
            V::Time(n) => format!("('epoch'::timestamptz + {n} * interval '1 microsecond')"),
            V::Null => "NULL".into(),
        }
    }
}

const TASK_COLUMNS: &str = "id, handler, data, timestamp, due_at, ready, last_run_on, attempts, \
    max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, worker, \
    started_at, lease_until, created_at, updated_at";

const RULE: &str = r#"{"every":"1h","missed":"run_once"}"#;

const RECURRING_ID: &str = "6a0000000000000000000008";
const RUNNING_ID: &str = "6a0000000000000000000003";
const DEAD_COPY_ID: &str = "6a0000000000000000000010";

/// Tasks in every state, in [`TASK_COLUMNS`] order.
fn tasks() -> Vec<Vec<V>> {
    use V::*;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        &'static str,
        &'static str,
        &'static str,
        bool,
        &'static str,
        i64,
        i64,
        bool,
        i64,
    )> = vec![
        // id, handler, data, ready, state, attempts, fence, recurring, due offset
        (
            "6a0000000000000000000001",
            "noop",
            r#"{"n":1}"#,
            false,
            "scheduled",
            0,
            0,
            false,
            3_600,
        ),
        (
            "6a0000000000000000000002",
            "log",
            r#"{"n":2}"#,
            true,
            "scheduled",
            0,
            0,
            false,
            -5,
        ),
        (
            RUNNING_ID,
            "noop",
            r#"{"n":3}"#,
            false,
            "running",
            1,
            3,
            false,
            -60,
        ),
        (
            "6a0000000000000000000004",
            "noop",
            r#"{"n":4}"#,
            false,
            "retrying",
            2,
            2,
            false,
            90,
        ),
        (
            "6a0000000000000000000005",
            "noop",
            r#"{"n":5}"#,
            false,
            "done",
            1,
            1,
            false,
            -600,
        ),
        (
            "6a0000000000000000000006",
            "log",
            r#"{"n":6}"#,
            false,
            "dead",
            3,
            3,
            false,
            -700,
        ),
        (
            "6a0000000000000000000007",
            "noop",
            r#"{"n":7}"#,
            false,
            "cancelled",
            0,
            0,
            false,
            800,
        ),
        (
            RECURRING_ID,
            "noop",
            r#"{"r":1}"#,
            false,
            "scheduled",
            0,
            4,
            true,
            1_800,
        ),
        (
            "6a0000000000000000000009",
            "noop",
            r#"{"r":2}"#,
            false,
            "done",
            1,
            2,
            true,
            -900,
        ),
        (
            DEAD_COPY_ID,
            "noop",
            r#"{"r":1}"#,
            false,
            "dead",
            2,
            2,
            true,
            -1_000,
        ),
    ];
    rows.into_iter()
        .map(
            |(id, handler, data, ready, state, attempts, fence, recurring, due)| {
                let running = state == "running";
                let failed = matches!(state, "dead" | "retrying");
                vec![
                    Text(id),
                    Text(handler),
                    Text(data),
                    Time(at(due - 30)),
                    Time(at(due)),
                    Bool(ready),
                    if recurring { Time(at(-3_600)) } else { Null },
                    Int(attempts),
                    Int(if recurring { 5 } else { 3 }),
                    Bool(recurring),
                    if recurring { Text(RULE) } else { Null },
                    Text(state),
                    Text(if handler == "log" { "mail" } else { "default" }),
                    Int(if handler == "log" { 5 } else { 0 }),
                    if failed {
                        Text("boom: it's broken")
                    } else {
                        Null
                    },
                    Int(fence),
                    if running { Text("w1") } else { Null },
                    if running { Time(at(-50)) } else { Null },
                    if running { Time(at(-20)) } else { Null },
                    Time(at(-4_000)),
                    Time(at(-400 + fence)),
                ]
            },
        )
        .collect()
}

/// Run rows: the finished tasks' attempts and two occurrences of the recurring task.
fn runs() -> Vec<Vec<V>> {
    use V::*;
    [
        ("6a0000000000000000000005", 1, "succeeded", Null),
        ("6a0000000000000000000006", 1, "failed", Text("boom")),
        (
            "6a0000000000000000000006",
            2,
            "failed",
            Text("boom: it's broken"),
        ),
        ("6a0000000000000000000004", 1, "timed_out", Null),
        (RECURRING_ID, 1, "succeeded", Null),
        (RECURRING_ID, 1, "succeeded", Null),
        ("6a0000000000000000000009", 1, "succeeded", Null),
        (DEAD_COPY_ID, 2, "lost", Null),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (id, attempt, outcome, error))| {
        let i = i as i64;
        vec![
            Text(id),
            Int(attempt),
            Time(at(-3_600 * i)),
            Time(at(-3_600 * i + 1)),
            Time(at(-3_600 * i + 2)),
            Text(outcome),
            error,
            Text("w0"),
        ]
    })
    .collect()
}

fn inserts(value: fn(&V) -> String, workers: &str, leaders: &str) -> String {
    let rows = |rows: Vec<Vec<V>>| {
        rows.iter()
            .map(|r| format!("({})", r.iter().map(value).collect::<Vec<_>>().join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "INSERT INTO tasks ({TASK_COLUMNS}) VALUES {}; \
         INSERT INTO runs (task_id, attempt, timestamp, started_at, finished_at, outcome, \
         error, worker) VALUES {}; {workers}; {leaders};",
        rows(tasks()),
        rows(runs())
    )
}

/// Every row of a version-3 SQLite store as text: tasks, runs, workers and leaders.
const SQLITE_BEFORE: [&str; 4] = [
    "SELECT quote(id), quote(handler), quote(data), quote(timestamp), quote(due_at), \
     quote(ready), quote(last_run_on), quote(attempts), quote(max_attempts), \
     quote(is_recurring), quote(rule), quote(state), quote(queue), quote(priority), \
     quote(last_error), quote(fence), quote(worker), quote(started_at), quote(lease_until), \
     quote(created_at), quote(updated_at) FROM tasks ORDER BY 1",
    "SELECT quote(task_id), quote(attempt), quote(timestamp), quote(started_at), \
     quote(finished_at), quote(outcome), quote(error), quote(worker) FROM runs ORDER BY rowid",
    "SELECT quote(id), quote(handlers), quote(queues), quote(last_seen), quote(live_until) \
     FROM workers ORDER BY id",
    "SELECT quote(name), quote(holder), quote(until) FROM leaders ORDER BY name",
];

/// The same rows read from the upgraded SQLite store. A finished task's live-only columns
/// were cleared when it finished, and its last update is when it finished.
const SQLITE_AFTER: [&str; 4] = [
    "SELECT quote(lower(hex(id))), quote(handler), quote(data), quote(timestamp), \
     quote(due_at), quote(ready), quote(last_run_on), quote(attempts), quote(max_attempts), \
     quote(is_recurring), quote(rule), quote(state), quote(queue), quote(priority), \
     quote(last_error), quote(fence), quote(worker), quote(started_at), quote(lease_until), \
     quote(created_at), quote(updated_at) FROM tasks \
     UNION ALL SELECT quote(lower(hex(id))), quote(handler), quote(data), quote(timestamp), \
     quote(due_at), quote(0), quote(last_run_on), quote(attempts), quote(max_attempts), \
     quote(is_recurring), quote(rule), quote(state), quote(queue), quote(priority), \
     quote(last_error), quote(fence), quote(NULL), quote(NULL), quote(NULL), \
     quote(created_at), quote(finished_at) FROM task_history ORDER BY 1",
    "SELECT quote(lower(hex(task_id))), quote(attempt), quote(timestamp), quote(started_at), \
     quote(finished_at), quote(outcome), quote(error), quote(worker) FROM runs ORDER BY rowid",
    SQLITE_BEFORE[2],
    SQLITE_BEFORE[3],
];

fn sqlite_rows(path: &std::path::Path, queries: &[&str]) -> Vec<Vec<Vec<String>>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    queries
        .iter()
        .map(|q| {
            let mut stmt = conn.prepare(q).unwrap();
            let n = stmt.column_count();
            stmt.query_map([], |r| (0..n).map(|i| r.get::<_, String>(i)).collect())
                .unwrap()
                .collect::<Result<Vec<Vec<String>>, _>>()
                .unwrap()
        })
        .collect()
}

/// Every row of a version-3 PostgreSQL schema as text.
const POSTGRES_BEFORE: [&str; 4] = [
    "SELECT id, handler, data, timestamp::text, due_at::text, ready::text, \
     last_run_on::text, attempts::text, max_attempts::text, is_recurring::text, rule, state, \
     queue, priority::text, last_error, fence::text, worker, started_at::text, \
     lease_until::text, created_at::text, updated_at::text FROM tasks ORDER BY 1",
    "SELECT task_id, attempt::text, timestamp::text, started_at::text, finished_at::text, \
     outcome, error, worker FROM runs ORDER BY seq",
    "SELECT id, handlers::text, queues::text, last_seen::text, live_until::text FROM workers \
     ORDER BY id",
    "SELECT name, holder, until::text FROM leaders ORDER BY name",
];

const POSTGRES_AFTER: [&str; 4] = [
    "SELECT encode(id, 'hex'), handler, data, timestamp::text, due_at::text, ready::text, \
     last_run_on::text, attempts::text, max_attempts::text, is_recurring::text, rule, state, \
     queue, priority::text, last_error, fence::text, worker, started_at::text, \
     lease_until::text, created_at::text, updated_at::text FROM tasks \
     UNION ALL SELECT encode(id, 'hex'), handler, data, timestamp::text, due_at::text, \
     'false', last_run_on::text, attempts::text, max_attempts::text, is_recurring::text, \
     rule, state, queue, priority::text, last_error, fence::text, NULL, NULL, NULL, \
     created_at::text, finished_at::text FROM task_history ORDER BY 1",
    "SELECT encode(task_id, 'hex'), attempt::text, timestamp::text, started_at::text, \
     finished_at::text, outcome, error, worker FROM runs ORDER BY seq",
    POSTGRES_BEFORE[2],
    POSTGRES_BEFORE[3],
];

async fn postgres_rows(
    client: &party::store::postgres::tokio_postgres::Client,
    queries: &[&str],
) -> Vec<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for q in queries {
        let rows = client.query(*q, &[]).await.unwrap();
        out.push(
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.get::<_, Option<String>>(i)
                                .unwrap_or_else(|| "NULL".into())
                        })
                        .collect()
                })
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_store_upgrades_in_place_keeping_every_row() {
    // SQLite: the file as version 3 left it.
    let db = crate::common::temp_db_path("v3");
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        for sql in [V1_SQLITE, V2_SQLITE, V3_SQLITE] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&inserts(
            V::sqlite,
            &format!(
                "INSERT INTO workers (id, handlers, queues, last_seen, live_until) VALUES \
                 ('w1', '[\"noop\"]', '[\"default\"]', {}, {})",
                at(-10),
                at(20)
            ),
            &format!(
                "INSERT INTO leaders (name, holder, until) VALUES ('rescue', 'w1', {})",
                at(20)
            ),
        ))
        .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
    }
    let before = sqlite_rows(&db.path, &SQLITE_BEFORE);
    assert_eq!(before[0].len(), 10, "the fixture holds every kind of task");
    let store = party::open_store(db.path.to_str().unwrap()).await.unwrap();
    let after = sqlite_rows(&db.path, &SQLITE_AFTER);
    assert_eq!(before, after, "every row is kept, column for column");
    let live: i64 = rusqlite::Connection::open(&db.path)
        .unwrap()
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(live, 5, "only live tasks stay in the hot table");
    check_upgraded(store).await;
    let version: i64 = rusqlite::Connection::open(&db.path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);

    // PostgreSQL: a schema as version 3 left it.
    let Some(url) = crate::common::postgres_url() else {
        return;
    };
    let schema = crate::common::TempSchema::new(&url);
    use party::store::postgres::tokio_postgres;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{n}\"; SET search_path TO \"{n}\"; {V1_POSTGRES}; {V2_POSTGRES}; \
             {V3_POSTGRES}; \
             CREATE TABLE schema_version (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO schema_version (version) VALUES (1), (2), (3); {inserts}",
            n = schema.name(),
            inserts = inserts(
                V::postgres,
                &format!(
                    "INSERT INTO workers (id, handlers, queues, last_seen, live_until) VALUES \
                     ('w1', ARRAY['noop'], ARRAY['default'], {}, {})",
                    V::Time(at(-10)).postgres(),
                    V::Time(at(20)).postgres()
                ),
                &format!(
                    "INSERT INTO leaders (name, holder, until) VALUES ('rescue', 'w1', {})",
                    V::Time(at(20)).postgres()
                ),
            )
        ))
        .await
        .unwrap();
    let before = postgres_rows(&client, &POSTGRES_BEFORE).await;
    assert_eq!(before[0].len(), 10);
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = party::open_store(&format!("{url}{sep}schema={}", schema.name()))
        .await
        .unwrap();
    let after = postgres_rows(&client, &POSTGRES_AFTER).await;
    assert_eq!(before, after, "every row is kept, column for column");
    let live: i64 = client
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 5, "only live tasks stay in the hot table");
    check_upgraded(store).await;
}

/// The upgraded store answers as the old one would, and works on.
async fn check_upgraded(store: Arc<dyn Store>) {
    let now = Timestamp::from_microsecond(at(0)).unwrap();
    let clock = party::ManualClock::new(now);
    let party = party::Party::with_store(store.clone(), builtin::registry(false))
        .with_clock(Arc::new(clock.clone()));
    let id = |s: &str| s.parse::<TaskId>().unwrap();

    // Reads: every state, the runs in order, the rule.
    let stats = party.stats().await.unwrap();
    let count = |state: State| {
        stats
            .by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(
        [
            count(State::Scheduled),
            count(State::Running),
            count(State::Retrying),
            count(State::Done),
            count(State::Dead),
            count(State::Cancelled)
        ],
        [3, 1, 1, 2, 2, 1],
        "{stats:?}"
    );
    let dead = party.get(id("6a0000000000000000000006")).await.unwrap();
    assert_eq!(dead.state, State::Dead);
    assert_eq!(dead.runs.len(), 2);
    assert_eq!(dead.runs[1].error.as_deref(), Some("boom: it's broken"));
    let recurring = party.get(id(RECURRING_ID)).await.unwrap();
    assert_eq!(recurring.runs.len(), 2, "the occurrences' runs are kept");
    assert!(recurring.rule.is_some());
    assert_eq!(
        party
            .list(&party::ListFilter::default())
            .await
            .unwrap()
            .len(),
        10
    );

    // The singleton still holds: a copy is refused, naming the live one, and the dead copy
    // cannot be retried while it lives.
    let copy = party
        .add(
            NewTask::new("noop")
                .every(SignedDuration::from_hours(1))
                .data(party::serde_json::json!({"r": 1})),
        )
        .await;
    assert!(
        matches!(copy, Err(TaskError::Duplicate { existing, .. }) if existing == id(RECURRING_ID)),
        "{copy:?}"
    );
    let retried = party.retry(id(DEAD_COPY_ID)).await;
    assert!(
        matches!(retried, Err(TaskError::Duplicate { existing, .. }) if existing == id(RECURRING_ID)),
        "{retried:?}"
    );

    // The running task's claim still holds: its fenced finish applies and moves it to the
    // history; a stale fence does not.
    let finish = |fence: i64| Finish {
        id: id(RUNNING_ID),
        fence,
        attempt: 1,
        timestamp: now,
        started_at: now,
        finished_at: now,
        worker: "w1".into(),
        outcome: Outcome::Succeeded,
        error: None,
        next: Next::Done,
        follow_ups: Vec::new(),
        ran: true,
        expired_before: None,
    };
    assert_eq!(
        store.task_finish(vec![finish(2)]).await.unwrap(),
        vec![FinishResult::Stale]
    );
    assert_eq!(
        store.task_finish(vec![finish(3)]).await.unwrap(),
        vec![FinishResult::Applied]
    );
    let done = party.get(id(RUNNING_ID)).await.unwrap();
    assert_eq!(done.state, State::Done);
    assert_eq!(done.runs.len(), 1);

    // A dead one-off task is retried back into the hot table and runs.
    party.retry(id("6a0000000000000000000006")).await.unwrap();
    let report = party
        .worker(party::WorkerConfig {
            queues: vec!["default".into(), "mail".into()],
            ..Default::default()
        })
        .run_until_idle()
        .await
        .unwrap();
    assert!(report.succeeded >= 2, "{report:?}");
    assert_eq!(
        party
            .get(id("6a0000000000000000000006"))
            .await
            .unwrap()
            .state,
        State::Done
    );
}
