//! The worker runtime: exactly-once under concurrency, panics, unknown handlers, follow-ups,
//! wake-ups, priorities, typed data, fencing and rescue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use party::jiff::SignedDuration;
use party::serde_json::json;
use party::store::{ClaimParams, Finish, FinishResult, Next};
use party::{Clock, NewTask, Outcome, Registry, State, Task, TaskContext, TaskError, WorkerConfig};
use tokio::sync::mpsc;

use crate::common::{Backend, fixture, on_every_backend, start, t0};

struct Count(Arc<Mutex<HashMap<String, u32>>>);

impl Task for Count {
    const NAME: &'static str = "count";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        *self
            .0
            .lock()
            .unwrap()
            .entry(ctx.id().to_string())
            .or_default() += 1;
        tokio::task::yield_now().await;
        Ok(())
    }
}

async fn three_workers_run_2000_tasks_each_exactly_once(b: Backend) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let Some(f) = fixture(b, Registry::new().register(Count(counts.clone()))).await else {
        return;
    };
    let tasks: Vec<_> = (0..2000)
        .map(|i| NewTask::new("count").data(json!({ "i": i })))
        .collect();
    let ids = f.party.add_many(tasks).await.unwrap();
    let mut joins = Vec::new();
    for w in 0..3 {
        let worker = f.party.worker(WorkerConfig {
            concurrency: 8,
            claim_batch: 16,
            id: Some(format!("w{w}")),
            ..WorkerConfig::default()
        });
        joins.push(tokio::spawn(async move {
            worker.run_until_idle().await.unwrap()
        }));
    }
    let mut total = 0;
    for j in joins {
        total += j.await.unwrap().succeeded;
    }
    assert_eq!(total, 2000);
    {
        let counts = counts.lock().unwrap();
        assert_eq!(counts.len(), 2000);
        assert!(counts.values().all(|c| *c == 1), "no task ran twice");
        assert!(ids.iter().all(|id| counts.contains_key(&id.to_string())));
    }
    let filter = party::ListFilter {
        state: Some(State::Done),
        limit: Some(5000),
        ..Default::default()
    };
    assert_eq!(f.party.list(&filter).await.unwrap().len(), 2000);
}

struct Panics;

impl Task for Panics {
    const NAME: &'static str = "panics";
    const MAX_ATTEMPTS: u32 = 2;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        panic!("handler bug");
    }
}

async fn a_panicking_handler_is_a_failed_attempt_not_a_crashed_worker(b: Backend) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let Some(f) = fixture(
        b,
        Registry::new()
            .register(Panics)
            .register(Count(counts.clone())),
    )
    .await
    else {
        return;
    };
    let p = f.party.add(NewTask::new("panics")).await.unwrap();
    let c = f.party.add(NewTask::new("count")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    let report = worker.run_until_idle().await.unwrap();
    assert_eq!((report.succeeded, report.failed), (1, 1));
    f.clock.advance(SignedDuration::from_hours(1));
    worker.run_until_idle().await.unwrap();
    let task = f.party.get(p).await.unwrap();
    assert_eq!(task.state, State::Dead);
    assert_eq!(task.runs.len(), 2);
    assert!(
        task.runs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: handler bug")
    );
    assert_eq!(f.party.get(c).await.unwrap().state, State::Done);
}

async fn a_task_without_a_known_handler_waits_intact_and_stats_say_so(b: Backend) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let full = Registry::new()
        .register(Count(counts.clone()))
        .register(Panics);
    let Some(f) = fixture(b, full).await else {
        return;
    };
    let orphan = f.party.add(NewTask::new("panics")).await.unwrap();
    // A worker that only knows "count".
    let partial = party::Party::with_store(
        f.party.store().clone(),
        Registry::new().register(Count(counts)),
    )
    .with_clock(f.party.clock().clone());
    let worker = partial.worker(WorkerConfig::default());
    let running = start(worker);
    // Wait until the worker has announced itself (a few milliseconds; up to 30 s on a loaded
    // machine), then look at the stats while it runs.
    let mut stats = f.party.stats().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stats.workers.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        stats = f.party.stats().await.unwrap();
    }
    assert_eq!(running.stop().await.attempts, 0);
    let task = f.party.get(orphan).await.unwrap();
    assert_eq!((task.state, task.attempts), (State::Scheduled, 0));
    assert_eq!(stats.unhandled.len(), 1);
    assert_eq!(stats.unhandled[0].handler, "panics");
    assert_eq!(stats.unhandled[0].count, 1);
    assert_eq!(stats.workers.len(), 1);
    assert_eq!(stats.oldest_due, Some(t0()));
}

struct Parent;

impl Task for Parent {
    const NAME: &'static str = "parent";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let n = ctx.data()["children"].as_u64().unwrap_or(0);
        for i in 0..n {
            ctx.enqueue(
                NewTask::new("count").data(json!({ "child": i, "of": ctx.id().to_string() })),
            );
        }
        Ok(())
    }
}

async fn on_complete_follow_ups_are_created_and_run(b: Backend) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let Some(f) = fixture(
        b,
        Registry::new()
            .register(Parent)
            .register(Count(counts.clone())),
    )
    .await
    else {
        return;
    };
    f.party
        .add(NewTask::new("parent").data(json!({"children": 3})))
        .await
        .unwrap();
    let report = f
        .party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 4, "the parent and its three children");
    assert_eq!(counts.lock().unwrap().len(), 3);
}

struct Notify(mpsc::UnboundedSender<String>);

impl Task for Notify {
    const NAME: &'static str = "notify";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _ = self.0.send(ctx.id().to_string());
        Ok(())
    }
}

async fn a_task_added_in_process_starts_at_once(b: Backend) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let Some(f) = fixture(b, Registry::new().register(Notify(tx))).await else {
        return;
    };
    // The real clock, and a poll interval far longer than the test may take.
    let party = f.party.clone().with_clock(Arc::new(party::SystemClock));
    let worker = party.worker(WorkerConfig {
        poll_interval: Duration::from_secs(600),
        ..Default::default()
    });
    let running = start(worker);
    tokio::time::sleep(Duration::from_millis(100)).await; // let it go idle
    let id = party.add(NewTask::new("notify")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("woken without polling");
    assert_eq!(got.unwrap(), id.to_string());
    running.stop().await;
}

async fn a_future_task_runs_when_the_clock_reaches_it(b: Backend) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let Some(f) = fixture(b, Registry::new().register(Notify(tx))).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("notify").at(t0() + SignedDuration::from_hours(6)))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        poll_interval: Duration::from_secs(600),
        ..Default::default()
    });
    let running = start(worker);
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.clock.advance(SignedDuration::from_hours(5));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "not before its time"
    );
    f.clock.advance(SignedDuration::from_hours(1));
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("ran when due");
    assert_eq!(got.unwrap(), id.to_string());
    running.stop().await;
}

struct Order(Arc<Mutex<Vec<i64>>>);

impl Task for Order {
    const NAME: &'static str = "order";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0
            .lock()
            .unwrap()
            .push(ctx.data()["n"].as_i64().unwrap());
        Ok(())
    }
}

async fn claims_take_priority_then_due_time(b: Backend) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(Order(order.clone()))).await else {
        return;
    };
    let m = |n: i64| SignedDuration::from_mins(n);
    let specs = [(1, 5, 0), (2, 1, 0), (3, 3, -1), (4, 2, 1), (5, 4, -1)];
    for (n, due_min, prio) in specs {
        f.party
            .add(
                NewTask::new("order")
                    .data(json!({"n": n}))
                    .at(t0() + m(due_min))
                    .priority(prio),
            )
            .await
            .unwrap();
    }
    f.clock.advance(m(10));
    let worker = f.party.worker(WorkerConfig {
        concurrency: 1,
        claim_batch: 1,
        ..Default::default()
    });
    worker.run_until_idle().await.unwrap();
    assert_eq!(*order.lock().unwrap(), vec![3, 5, 2, 1, 4]);
}

#[derive(serde::Deserialize)]
struct Invoice {
    account: u64,
    cents: i64,
}

struct Typed(Arc<Mutex<Vec<(u64, i64)>>>);

impl Task for Typed {
    const NAME: &'static str = "typed";
    const MAX_ATTEMPTS: u32 = 1;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let inv: Invoice = ctx.data_as()?;
        self.0.lock().unwrap().push((inv.account, inv.cents));
        Ok(())
    }
}

async fn handlers_read_data_as_typed_structs(b: Backend) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(Typed(got.clone()))).await else {
        return;
    };
    f.party
        .add(NewTask::new("typed").data(json!({"account": 7, "cents": 1250})))
        .await
        .unwrap();
    let bad = f
        .party
        .add(NewTask::new("typed").data(json!({"account": "seven"})))
        .await
        .unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(*got.lock().unwrap(), vec![(7, 1250)]);
    let task = f.party.get(bad).await.unwrap();
    assert_eq!(task.state, State::Dead);
    assert!(
        task.last_error
            .unwrap()
            .contains("does not fit the handler's type")
    );
}

async fn stale_fences_are_refused_and_expired_leases_are_rescued(b: Backend) {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let Some(f) = fixture(b, Registry::new().register(Count(counts))).await else {
        return;
    };
    let store = f.party.store().clone();
    let id = f.party.add(NewTask::new("count")).await.unwrap();
    let handlers = vec!["count".to_string()];
    let queues = vec!["default".to_string()];
    let claim = |worker: &'static str, now| ClaimParams {
        worker,
        handlers: &handlers,
        queues: &queues,
        limit: 10,
        now,
        lease_until: now + SignedDuration::from_secs(30),
        promote_limit: party::policy::PROMOTE_BATCH,
        controlled: &[],
    };
    let first = store.task_claim(claim("old", f.clock.now())).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .task_claim(claim("other", f.clock.now()))
            .await
            .unwrap()
            .is_empty(),
        "never claimed twice"
    );
    // The old worker freezes past its lease; the task is rescued and claimed again.
    f.clock.advance(SignedDuration::from_secs(31));
    let rescued = party::maintenance::Rescuer::new(
        store.clone(),
        Arc::new(f.clock.clone()),
        Default::default(),
    )
    .run_once()
    .await
    .unwrap();
    assert_eq!(rescued.rescued, 1);
    let second = store.task_claim(claim("new", f.clock.now())).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    assert!(second[0].fence > first[0].fence);
    let finish = |fence, worker: &str| Finish {
        id,
        fence,
        attempt: 1,
        timestamp: t0(),
        started_at: t0(),
        finished_at: f.clock.now(),
        worker: worker.to_string(),
        outcome: Outcome::Succeeded,
        error: None,
        next: Next::Done,
        follow_ups: vec![],
        ran: true,
        expired_before: None,
    };
    // The old worker wakes and reports: refused, nothing changes.
    let r = store
        .task_finish(vec![finish(first[0].fence, "old")])
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Stale]);
    assert_eq!(f.party.get(id).await.unwrap().state, State::Running);
    let r = store
        .task_finish(vec![finish(second[0].fence, "new")])
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Applied]);
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Done);
    let outcomes: Vec<_> = task
        .runs
        .iter()
        .map(|r| (r.outcome, r.worker.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![(Outcome::Lost, "old"), (Outcome::Succeeded, "new")]
    );
}

/// Sets its flag when dropped: shows that an attempt's future was stopped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Hangs {
    started: mpsc::UnboundedSender<u32>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl Task for Hangs {
    const NAME: &'static str = "hangs";
    const MAX_ATTEMPTS: u32 = 2;
    const TIMEOUT: Duration = Duration::from_millis(300);

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _guard = DropFlag(self.dropped.clone());
        let _ = self.started.send(ctx.attempts());
        if ctx.data()["finish"].as_bool() == Some(true) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn hangs() -> (
    Hangs,
    mpsc::UnboundedReceiver<u32>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (
        Hangs {
            started: tx,
            dropped: dropped.clone(),
        },
        rx,
        dropped,
    )
}

async fn a_timed_out_attempt_is_dropped_recorded_and_retried(b: Backend) {
    let (h, _rx, dropped) = hangs();
    let Some(f) = fixture(b, Registry::new().register(h)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("hangs")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    let report = worker.run_until_idle().await.unwrap();
    assert_eq!(report.failed, 1);
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the handler's future was dropped"
    );
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Retrying);
    assert_eq!(task.runs[0].outcome, Outcome::TimedOut);
    assert!(
        task.runs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out after")
    );
}

async fn a_worker_that_loses_its_lease_stops_the_attempt_and_writes_nothing(b: Backend) {
    let (h, mut started, dropped) = hangs();
    let Some(f) = fixture(b, Registry::new().register(h)).await else {
        return;
    };
    // One attempt allowed, so the rescued task is dead and nobody claims it again.
    let id = f
        .party
        .add(NewTask::new("hangs").max_attempts(1))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        lease: Duration::from_millis(150),
        id: Some("frozen".into()),
        ..Default::default()
    });
    let running = start(worker);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .unwrap(),
        Some(1)
    );
    // The lease expires by the clock; a rescue (ours here, or any worker's) releases the task.
    crate::common::expire_and_rescue(&f, id).await;
    // The old worker's next heartbeat learns it lost the task and stops the attempt.
    for _ in 0..100 {
        if dropped.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the lost attempt was stopped"
    );
    running.stop().await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Dead);
    assert_eq!(
        task.runs.len(),
        1,
        "the stopped attempt wrote nothing after the lost run"
    );
    assert_eq!(
        (task.runs[0].outcome, task.runs[0].worker.as_str()),
        (Outcome::Lost, "frozen")
    );
}

async fn shutdown_lets_running_tasks_finish_within_the_grace_period(b: Backend) {
    let (h, mut started, _dropped) = hangs();
    let Some(f) = fixture(b, Registry::new().register(h)).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("hangs").data(json!({"finish": true})))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    });
    let running = start(worker);
    started.recv().await.unwrap();
    let report = running.stop().await;
    assert_eq!(report.succeeded, 1);
    assert_eq!(f.party.get(id).await.unwrap().state, State::Done);
}

async fn shutdown_past_the_grace_period_releases_the_task_for_others(b: Backend) {
    let (h, mut started, dropped) = hangs();
    let Some(f) = fixture(b, Registry::new().register(h)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("hangs")).await.unwrap();
    let worker = f.party.worker(WorkerConfig {
        shutdown_grace: Duration::from_millis(50),
        ..Default::default()
    });
    let running = start(worker);
    started.recv().await.unwrap();
    running.stop().await;
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    let task = f.party.get(id).await.unwrap();
    assert_eq!(
        task.state,
        State::Retrying,
        "released at once, not held until its lease ends"
    );
    assert_eq!(task.due_at, f.clock.now());
    assert_eq!(task.runs[0].outcome, Outcome::Lost);
    assert_eq!(task.worker, None, "no longer held by the stopped worker");
}

/// Interrupted at shutdown, a task on its last attempt is released to run again, as the
/// state machine says ("shutdown interruption: a `lost` run, then `retrying`") and
/// `Worker::interrupt` promises ("released to run again"): it did nothing wrong, and a deploy
/// must not kill it.
async fn shutdown_past_the_grace_period_does_not_make_a_task_on_its_last_attempt_dead(b: Backend) {
    let (h, mut started, dropped) = hangs();
    let Some(f) = fixture(b, Registry::new().register(h)).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("hangs").max_attempts(1))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        shutdown_grace: Duration::from_millis(50),
        ..Default::default()
    });
    let running = start(worker);
    started.recv().await.unwrap();
    running.stop().await;
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs[0].outcome, Outcome::Lost);
    assert_eq!(
        task.state,
        State::Retrying,
        "released to run again, not made dead by the shutdown: {task:?}"
    );
    // One more attempt is allowed, so the next one is within the maximum: `party show` says
    // "attempt 2 of 2", never "2 of 1".
    assert_eq!((task.attempts, task.max_attempts), (1, 2), "{task:?}");
    let report = f
        .party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(2));
    assert_eq!(report.failed, 1, "the second attempt timed out: {report:?}");
    let task = f.party.get(id).await.unwrap();
    assert_eq!(
        (
            task.state,
            task.attempts,
            task.max_attempts,
            task.runs[1].attempt
        ),
        (State::Dead, 2, 2, 2),
        "{task:?}"
    );
}

/// An interrupt with no shutdown before it stops the worker too: the running attempt is
/// released as lost, and the worker returns instead of claiming and releasing tasks unrun,
/// round after round.
async fn an_interrupt_alone_stops_the_worker(b: Backend) {
    let (h, mut started, dropped) = hangs();
    let Some(f) = fixture(b, Registry::new().register(h)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("hangs")).await.unwrap();
    let worker = Arc::new(f.party.worker(WorkerConfig::default()));
    let interrupter = worker.clone();
    let join = tokio::spawn(async move { worker.run(std::future::pending()).await });
    started.recv().await.unwrap();
    interrupter.interrupt();
    let report = tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .expect("the interrupted worker returned")
        .unwrap()
        .unwrap();
    assert_eq!(report.attempts, 1, "{report:?}");
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs.len(), 1, "{task:?}");
    assert_eq!(task.runs[0].outcome, Outcome::Lost);
    assert_eq!(task.state, State::Retrying);
}

async fn an_interrupted_shell_task_kills_its_child_process(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(party::builtin::Shell)).await else {
        return;
    };
    let pidfile = std::env::temp_dir().join(format!(
        "party-shell-pid-{}-{}",
        std::process::id(),
        b as u8
    ));
    let _ = std::fs::remove_file(&pidfile);
    let cmd = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    f.party
        .add(NewTask::new("shell").data(json!({ "cmd": cmd })))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..Default::default()
    });
    let running = start(worker);
    let mut pid = None;
    for _ in 0..250 {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            pid = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = pid.expect("the shell command started");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Past the grace period the attempt's future is dropped, as on a timeout: the child dies.
    running.stop().await;
    let mut gone = false;
    for _ in 0..100 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting to be reaped: either way no longer running.
        if status.is_empty() || status.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&pidfile);
    assert!(gone, "the shell command's process {pid} was killed");
}

/// A SQLite-only behaviour: it runs once, on SQLite, rather than passing on PostgreSQL
/// without doing anything.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_makes_the_worker_wait_not_lose_tasks() {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let db = crate::common::temp_db_path("locked");
    let store = party::open_store(db.path.to_str().unwrap()).await.unwrap();
    let party = party::Party::with_store(store, Registry::new().register(Count(counts.clone())));
    let ids = party
        .add_many(
            (0..20)
                .map(|i| NewTask::new("count").data(json!({ "i": i })))
                .collect(),
        )
        .await
        .unwrap();
    // Another process-like connection holds the write lock for a while.
    let path = db.path.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let report = party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    holder.join().unwrap();
    assert_eq!(report.succeeded, 20);
    for id in ids {
        let task = party.get(id).await.unwrap();
        assert_eq!((task.state, task.runs.len()), (State::Done, 1));
    }
}

struct Exclusive {
    running: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    ran: Arc<Mutex<Vec<i64>>>,
}

impl Task for Exclusive {
    const NAME: &'static str = "exclusive";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.ran
            .lock()
            .unwrap()
            .push(ctx.data()["n"].as_i64().unwrap());
        self.running.fetch_sub(1, SeqCst);
        Ok(())
    }
}

async fn prefetched_tasks_wait_for_an_executor_and_run_once_in_order(b: Backend) {
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let handler = Exclusive {
        running: Arc::default(),
        most: most.clone(),
        ran: ran.clone(),
    };
    let Some(f) = fixture(b, Registry::new().register(handler)).await else {
        return;
    };
    let m = |n: i64| SignedDuration::from_millis(n);
    for n in 0..30 {
        f.party
            .add(
                NewTask::new("exclusive")
                    .data(json!({ "n": n }))
                    .at(t0() + m(n)),
            )
            .await
            .unwrap();
    }
    f.clock.advance(m(100));
    let worker = f.party.worker(WorkerConfig {
        concurrency: 2,
        prefetch: 6,
        ..Default::default()
    });
    let report = worker.run_until_idle().await.unwrap();
    assert_eq!(report.succeeded, 30);
    assert!(
        most.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "never more than `concurrency` at once"
    );
    let mut ran = ran.lock().unwrap().clone();
    assert_eq!(ran.len(), 30);
    ran.sort();
    assert_eq!(ran, (0..30).collect::<Vec<_>>(), "each exactly once");
}

/// Says it started, then holds its executor until the test lets one attempt go.
#[cfg(all(feature = "sqlite", target_os = "linux"))]
struct Gate {
    started: mpsc::UnboundedSender<()>,
    go: Arc<tokio::sync::Semaphore>,
}

#[cfg(all(feature = "sqlite", target_os = "linux"))]
impl Task for Gate {
    const NAME: &'static str = "gate";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _ = self.started.send(());
        self.go.acquire().await.expect("open").forget();
        Ok(())
    }
}

/// The CPU time this thread has used, from `/proc/thread-self/stat` (user and system time,
/// in the kernel's clock ticks of 10 ms).
#[cfg(all(feature = "sqlite", target_os = "linux"))]
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command's closing parenthesis; utime and stime are the 14th and
    // 15th of the line, the 12th and 13th after it.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|t| t.parse::<u64>().unwrap())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// A worker whose executors are all busy, with tasks claimed ahead waiting for them and a
/// few places free (fewer than it claims at once), waits for an attempt to end; it used to
/// wake again at once, for as long as that lasted, and hold a core. The whole worker runs on
/// this test's one thread, whose CPU time over a third of a second of waiting must stay small.
#[cfg(all(feature = "sqlite", target_os = "linux"))]
#[test]
fn a_worker_waiting_for_its_executors_sleeps_instead_of_spinning() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut started) = mpsc::unbounded_channel();
        let go = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = Gate {
            started: tx,
            go: go.clone(),
        };
        let f = fixture(Backend::Sqlite, Registry::new().register(gate))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|n| NewTask::new("gate").data(json!({ "n": n })))
            .collect();
        f.party.add_many(tasks).await.unwrap();
        // Six claimed at once (two executors, four ahead), two left in the store.
        let worker = f.party.worker(WorkerConfig {
            concurrency: 2,
            prefetch: 4,
            ..Default::default()
        });
        let run = tokio::spawn(async move { worker.run_until_idle().await });
        for _ in 0..2 {
            started.recv().await.unwrap();
        }
        // One attempt ends and a task claimed ahead takes its executor: two running, three
        // waiting, one place free, and the worker claims again only at three.
        go.add_permits(1);
        started.recv().await.unwrap();
        let before = thread_cpu();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let used = thread_cpu() - before;
        go.add_permits(100);
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.succeeded, 8);
        assert!(
            used < Duration::from_millis(60),
            "the worker used {used:?} of CPU in 300 ms of waiting for an attempt to end"
        );
    });
}

/// Fails when its data says so.
struct Flaky;

impl Task for Flaky {
    const NAME: &'static str = "flaky";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        if ctx.data()["fail"] == json!(true) {
            return Err(TaskError::failed("asked to fail"));
        }
        Ok(())
    }
}

async fn a_workers_metrics_count_its_runs_waits_and_claims(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Flaky)).await else {
        return;
    };
    // Due half a minute ago in queue mail; and one that fails its only attempt.
    f.party
        .add(
            NewTask::new("flaky")
                .queue("mail")
                .at(t0() - SignedDuration::from_secs(30)),
        )
        .await
        .unwrap();
    f.party
        .add(
            NewTask::new("flaky")
                .data(json!({"fail": true}))
                .max_attempts(1),
        )
        .await
        .unwrap();
    let metrics = Arc::new(party::metrics::WorkerMetrics::new());
    let worker = f.party.worker(WorkerConfig {
        queues: vec!["default".into(), "mail".into()],
        metrics: Some(metrics.clone()),
        ..WorkerConfig::default()
    });
    let report = worker.run_until_idle().await.unwrap();
    assert_eq!(report.attempts, 2);
    assert_eq!(metrics.runs("flaky", "mail", Outcome::Succeeded), 1);
    assert_eq!(metrics.runs("flaky", "default", Outcome::Failed), 1);
    assert_eq!(metrics.runs("flaky", "mail", Outcome::Failed), 0);
    let text = metrics.render();
    // Started at t0 (the manual clock): 30 s after its timestamp, and as long after it was due.
    for name in ["party_schedule_lag_seconds", "party_queue_wait_seconds"] {
        assert!(
            text.contains(&format!(
                "{name}_bucket{{handler=\"flaky\",queue=\"mail\",le=\"10\"}} 0\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "{name}_bucket{{handler=\"flaky\",queue=\"mail\",le=\"60\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "{name}_bucket{{handler=\"flaky\",queue=\"default\",le=\"0.001\"}} 1\n"
        )));
    }
    assert!(text.contains("party_claimed_tasks_total 2\n"), "{text}");
    assert!(text.contains("party_fence_refusals_total 0\n"));
    assert!(
        !text.contains(
            &f.party.list(&Default::default()).await.unwrap()[0]
                .id
                .to_string()
        )
    );
}

/// A deep local queue: claims refill it in batches while earlier results are still being
/// written; every task still runs once, never more than `concurrency` at a time, and
/// `run_until_idle` returns only once every result is recorded.
async fn a_deep_local_queue_runs_each_task_once_and_idle_means_all_recorded(b: Backend) {
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let handler = Exclusive {
        running: Arc::default(),
        most: most.clone(),
        ran: ran.clone(),
    };
    let Some(f) = fixture(b, Registry::new().register(handler)).await else {
        return;
    };
    let tasks = (0..300)
        .map(|n| NewTask::new("exclusive").data(json!({ "n": n })))
        .collect();
    f.party.add_many(tasks).await.unwrap();
    let worker = f.party.worker(WorkerConfig {
        concurrency: 3,
        prefetch: 100,
        ..Default::default()
    });
    let report = worker.run_until_idle().await.unwrap();
    assert_eq!(report.succeeded, 300);
    assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 3);
    let mut ran = ran.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, (0..300).collect::<Vec<_>>(), "each exactly once");
    let stats = f.party.stats().await.unwrap();
    let count = |state| {
        stats
            .by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(State::Done), 300, "every result recorded");
    assert_eq!(count(State::Running), 0);
}

/// Two workers with one id would share one row of `workers` (the first to stop removes the
/// other's liveness from `stats`) and one leadership of the maintenance services (both would
/// run them at once, and the first to stop would resign the other's). A second live worker
/// with the id is refused at its start, and the first goes on; the id is free again once the
/// first stopped, or, for a worker that was killed, once its liveness ended.
async fn a_second_live_worker_with_the_same_id_is_refused(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Count(Arc::default()))).await else {
        return;
    };
    let config = || WorkerConfig {
        id: Some("web-1".into()),
        ..WorkerConfig::default()
    };
    let live = async || {
        f.party
            .stats()
            .await
            .unwrap()
            .workers
            .iter()
            .any(|w| w.id == "web-1")
    };
    let first = start(f.party.worker(config()));
    for _ in 0..250 {
        if live().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(live().await, "the first worker recorded itself as live");
    let refused = |r: Result<party::WorkerReport, TaskError>| match r {
        Err(TaskError::Invalid(m)) => {
            assert!(m.contains("'web-1'") && m.contains("its own id"), "{m}");
        }
        other => panic!("a second worker with a live worker's id started: {other:?}"),
    };
    refused(f.party.worker(config()).run_until_idle().await);
    assert!(
        live().await,
        "the refused worker removed the first one's liveness"
    );
    first.stop().await;
    assert!(!live().await);
    f.party.worker(config()).run_until_idle().await.unwrap();
    // A worker killed leaves its row, live until its lease ends; then its id may be taken.
    let now = f.clock.now();
    let killed = party::WorkerInfo {
        id: "web-1".into(),
        handlers: vec!["count".into()],
        queues: vec!["default".into()],
        last_seen: now,
        live_until: now + SignedDuration::from_secs(30),
    };
    assert_eq!(
        f.party.store().worker_register(&killed, now).await.unwrap(),
        None
    );
    refused(f.party.worker(config()).run_until_idle().await);
    f.clock.advance(SignedDuration::from_secs(30));
    f.party.worker(config()).run_until_idle().await.unwrap();
}

on_every_backend!(
    a_second_live_worker_with_the_same_id_is_refused,
    a_workers_metrics_count_its_runs_waits_and_claims,
    three_workers_run_2000_tasks_each_exactly_once,
    a_panicking_handler_is_a_failed_attempt_not_a_crashed_worker,
    a_task_without_a_known_handler_waits_intact_and_stats_say_so,
    on_complete_follow_ups_are_created_and_run,
    a_task_added_in_process_starts_at_once,
    a_future_task_runs_when_the_clock_reaches_it,
    claims_take_priority_then_due_time,
    handlers_read_data_as_typed_structs,
    stale_fences_are_refused_and_expired_leases_are_rescued,
    a_timed_out_attempt_is_dropped_recorded_and_retried,
    a_worker_that_loses_its_lease_stops_the_attempt_and_writes_nothing,
    shutdown_lets_running_tasks_finish_within_the_grace_period,
    shutdown_past_the_grace_period_releases_the_task_for_others,
    shutdown_past_the_grace_period_does_not_make_a_task_on_its_last_attempt_dead,
    an_interrupt_alone_stops_the_worker,
    an_interrupted_shell_task_kills_its_child_process,
    prefetched_tasks_wait_for_an_executor_and_run_once_in_order,
    a_deep_local_queue_runs_each_task_once_and_idle_means_all_recorded,
);
