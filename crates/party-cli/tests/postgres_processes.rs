//! Many processes, one PostgreSQL database: three `party worker` processes run 5,000 tasks
//! that this test process adds while they run, some due at once and some a moment later.
//! Every task must run exactly once, none before its time, and the run history must show the
//! work spread over the three workers.
//!
//! Needs `PARTY_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it the test says so and passes, except under `CI=true`, where it fails. It works in a fresh
//! schema, dropped at its end.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use party::store::postgres::tokio_postgres::{self, NoTls};
use party::{NewTask, Party, State};
use serde_json::json;

const PARTY: &str = env!("CARGO_BIN_EXE_party");
const TASKS: usize = 5_000;
const WORKERS: usize = 3;

fn database_url() -> Option<String> {
    match std::env::var("PARTY_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "PARTY_TEST_DATABASE_URL is not set, but CI=true: the multi-process \
                     PostgreSQL test must run in CI; start PostgreSQL and set it, e.g. \
                     postgres://postgres@127.0.0.1:5432/test"
                );
            }
            eprintln!(
                "PARTY_TEST_DATABASE_URL is not set: skipping the multi-process PostgreSQL test \
                 (set it to e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// Worker processes, stopped with SIGTERM (and reaped) however the test ends.
struct Workers(Vec<Child>);

impl Workers {
    fn stop(&mut self) {
        for child in &self.0 {
            // A graceful stop: the worker finishes what it runs, then exits.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for child in &mut self.0 {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_run_5000_tasks_each_exactly_once() {
    let Some(base) = database_url() else { return };
    let schema = format!("party_test_{:016x}", fastrand_u64());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");

    // The adder: this process, through the library (which also creates the schema).
    let party = Party::connect(&url, party::builtin::registry(false))
        .await
        .expect("connect");

    let mut workers = Workers(
        (0..WORKERS)
            .map(|_| {
                Command::new(PARTY)
                    .args(["--db", &url, "worker", "--concurrency", "8"])
                    .env("PARTY_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("start a worker")
            })
            .collect(),
    );
    let pids: Vec<u32> = workers.0.iter().map(Child::id).collect();

    // Wait until the three workers have announced themselves.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = party.stats().await.unwrap().workers.len();
        if live == WORKERS {
            break;
        }
        assert!(Instant::now() < deadline, "only {live} workers came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Add the tasks in batches while the workers run: a quarter due at once, the rest due
    // up to 1.5 s later.
    let mut added = 0;
    let mut batch_no = 0;
    while added < TASKS {
        let size = (50 + 37 * batch_no % 150).min(TASKS - added);
        let now = Timestamp::now();
        let batch = (added..added + size)
            .map(|i| {
                let task = NewTask::new("noop").data(json!({ "i": i }));
                match i % 4 {
                    0 => task,
                    k => task.at(now + SignedDuration::from_millis(500 * k as i64)),
                }
            })
            .collect();
        party.add_many(batch).await.expect("add a batch");
        added += size;
        batch_no += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Wait for every task to be done.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = party.stats().await.unwrap();
        let done = stats
            .by_state
            .iter()
            .find(|(s, _)| *s == State::Done)
            .map_or(0, |(_, n)| *n);
        if done == TASKS as u64 {
            break;
        }
        for (state, n) in &stats.by_state {
            assert!(
                matches!(state, State::Done | State::Scheduled | State::Running) || *n == 0,
                "no task should be {state}: {stats:?}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {TASKS} tasks done: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.stop();

    // Read the run history behind the library's back.
    let (client, connection) = tokio_postgres::connect(&base, NoTls).await.unwrap();
    tokio::spawn(connection);
    let s = format!("\"{schema}\"");
    let tasks: i64 = client
        .query_one(&format!("SELECT count(*) FROM {s}.tasks"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tasks, TASKS as i64);
    let bad: Vec<(String, i64)> = client
        .query(
            &format!(
                "SELECT t.id, count(r.task_id) FROM {s}.tasks t \
                 LEFT JOIN {s}.runs r ON r.task_id = t.id \
                 GROUP BY t.id HAVING count(r.task_id) <> 1 OR bool_or(r.outcome <> 'succeeded')"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(bad.is_empty(), "tasks not run exactly once: {bad:?}");
    let early: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {s}.runs r JOIN {s}.tasks t ON t.id = r.task_id \
                 WHERE r.started_at < t.timestamp"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(early, 0, "no task runs before its time");
    let per_worker: HashMap<String, i64> = client
        .query(
            &format!("SELECT worker, count(*) FROM {s}.runs GROUP BY worker"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    println!("runs per worker: {per_worker:?}");
    assert_eq!(per_worker.len(), WORKERS, "{per_worker:?}");
    for pid in pids {
        let (id, runs) = per_worker
            .iter()
            .find(|(id, _)| id.contains(&format!("-{pid}-")))
            .unwrap_or_else(|| panic!("worker process {pid} ran nothing: {per_worker:?}"));
        assert!(
            *runs >= (TASKS / 20) as i64,
            "worker {id} ran only {runs} of {TASKS}: {per_worker:?}"
        );
    }

    client
        .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
