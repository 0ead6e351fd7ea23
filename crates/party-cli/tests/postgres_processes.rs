//! Many processes, one PostgreSQL database: three `party worker` processes run 5,000 tasks
//! that this test process adds while they run, some due at once and some a moment later.
//! Every task must run exactly once, none before its time, and the run history must show the
//! work spread over the three workers.
//!
//! Needs `PARTY_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it the test says so and passes, except under `CI=true`, where it fails. It works in a fresh
//! schema, dropped at its end.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use party::{ListFilter, NewTask, Outcome, Party, State};
use serde_json::json;

mod support;
use support::{Db, party_cmd};

const TASKS: usize = 5_000;
const WORKERS: usize = 3;

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
    let Some(db) = Db::postgres("processes") else {
        return;
    };
    let url = db.url.clone();

    // The adder: this process, through the library (which also creates the schema).
    let party = Party::connect(&url, party::builtin::registry(false))
        .await
        .expect("connect");

    let mut workers = Workers(
        (0..WORKERS)
            .map(|_| {
                party_cmd(&url)
                    .args(["worker", "--concurrency", "8"])
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

    // Every task ran exactly once, not before its time, and the work was shared.
    let tasks = party
        .list(&ListFilter {
            limit: Some(2 * TASKS as u32),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), TASKS);
    let mut per_worker = BTreeMap::<String, usize>::new();
    for t in tasks {
        let task = party.get(t.id).await.unwrap();
        assert_eq!(task.state, State::Done, "{}", task.id);
        assert_eq!(
            task.runs.len(),
            1,
            "{} ran exactly once: {:?}",
            task.id,
            task.runs
        );
        let run = &task.runs[0];
        assert_eq!(run.outcome, Outcome::Succeeded);
        assert!(
            run.started_at >= task.timestamp,
            "{} started at {} before its time {}",
            task.id,
            run.started_at,
            task.timestamp
        );
        *per_worker.entry(run.worker.clone()).or_default() += 1;
    }
    println!("runs per worker process: {per_worker:?}");
    assert_eq!(per_worker.len(), WORKERS, "{per_worker:?}");
    for pid in pids {
        let (id, runs) = per_worker
            .iter()
            .find(|(id, _)| id.contains(&format!("-{pid}-")))
            .unwrap_or_else(|| panic!("worker process {pid} ran nothing: {per_worker:?}"));
        assert!(
            *runs >= TASKS / 20,
            "worker {id} ran only {runs} of {TASKS}: {per_worker:?}"
        );
    }
}
