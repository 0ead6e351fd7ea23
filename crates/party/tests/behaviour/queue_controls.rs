//! Queue controls as a worker meets them: a worker that claims ahead (`prefetch`) still
//! starts a rate-limited queue's handlers within the rate, and a pause reaches the tasks it
//! claimed ahead before they start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use party::jiff::{SignedDuration, Timestamp};
use party::{
    ListFilter, NewTask, QueueLimits, Rate, Registry, State, Task, TaskContext, TaskError,
    WorkerConfig,
};
use tokio::sync::Semaphore;

use crate::common::{Backend, Fixture, fixture, on_every_backend, start};

/// Records when each attempt started (by the worker's clock), then waits for the gate.
struct Gated {
    starts: Arc<Mutex<Vec<Timestamp>>>,
    gate: Arc<Semaphore>,
}

impl Task for Gated {
    const NAME: &'static str = "gated";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.starts.lock().unwrap().push(ctx.now());
        let _pass = self.gate.acquire().await.unwrap();
        Ok(())
    }
}

fn gated() -> (Registry, Arc<Mutex<Vec<Timestamp>>>, Arc<Semaphore>) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let registry = Registry::new().register(Gated {
        starts: starts.clone(),
        gate: gate.clone(),
    });
    (registry, starts, gate)
}

async fn count(f: &Fixture, state: State) -> usize {
    f.party
        .list(&ListFilter {
            state: Some(state),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// Polls (real time, briefly) until `cond` holds; panics after 10 s.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// A rate counts each start at its claim. A worker that claimed a rate-limited queue's tasks
/// ahead would start them when an executor frees, all at once, whatever the rate: it claims
/// them only for executors free now, so every handler starts within the rate.
async fn a_rate_holds_for_handler_starts_on_a_worker_that_claims_ahead(b: Backend) {
    let (registry, starts, gate) = gated();
    let Some(f) = fixture(b, registry).await else {
        return;
    };
    let rate = QueueLimits {
        rate: Some(Rate::parse("2/1s").unwrap()),
        ..QueueLimits::default()
    };
    f.party.limit_queue("default", &rate).await.unwrap();
    for _ in 0..6 {
        f.party.add(NewTask::new("gated")).await.unwrap();
    }
    let running = start(f.party.worker(WorkerConfig {
        concurrency: 1,
        prefetch: 10,
        ..WorkerConfig::default()
    }));
    until("one started", async || starts.lock().unwrap().len() == 1).await;
    // Windows pass while the one executor is busy: nothing more is claimed for later.
    for _ in 0..2 {
        f.clock.advance(SignedDuration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count(&f, State::Running).await, 1, "claimed ahead");
    }
    // Every task may now end; the clock moves a second at a time until all are done, each
    // time once the worker has claimed what the rate allows at the current time: nothing is
    // running, twice, a quarter second apart (the worker looks again every tenth). A claim
    // made just before the clock moved would start just after it, a window later than it
    // was counted, as no real clock jumps.
    gate.add_permits(100);
    until("all done", async || {
        if count(&f, State::Done).await == 6 {
            return true;
        }
        if count(&f, State::Running).await == 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if count(&f, State::Running).await == 0 {
                f.clock.advance(SignedDuration::from_secs(1));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        false
    })
    .await;
    running.stop().await;
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 6);
    let window = SignedDuration::from_millis(1050);
    let worst = starts
        .iter()
        .map(|s| {
            starts
                .iter()
                .filter(|t| **t >= *s && **t < *s + window)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        worst <= 2,
        "{worst} handler starts within 1.05 s under a rate of 2/1s: {starts:?}"
    );
}

/// A task claimed ahead (before its queue was paused) that has not started when the pause
/// reaches the worker is released unrun, its attempt given back; it runs after a resume.
async fn a_pause_reaches_tasks_claimed_ahead_before_they_start(b: Backend) {
    let (registry, starts, gate) = gated();
    let Some(f) = fixture(b, registry).await else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(f.party.add(NewTask::new("gated")).await.unwrap());
    }
    let running = start(f.party.worker(WorkerConfig {
        concurrency: 1,
        prefetch: 2,
        ..WorkerConfig::default()
    }));
    until("one started, three claimed", async || {
        starts.lock().unwrap().len() == 1 && count(&f, State::Running).await == 3
    })
    .await;
    f.party.pause_queue("default").await.unwrap();
    // The worker re-reads the controls every half second (queues::CONTROLS_REFRESH).
    tokio::time::sleep(party::queues::CONTROLS_REFRESH + Duration::from_millis(100)).await;
    gate.add_permits(1);
    until("the first done, the others waiting again", async || {
        count(&f, State::Done).await == 1 && count(&f, State::Scheduled).await == 2
    })
    .await;
    assert_eq!(starts.lock().unwrap().len(), 1, "started after the pause");
    for id in &ids {
        let t = f.party.get(*id).await.unwrap();
        if t.state == State::Scheduled {
            assert_eq!(t.attempts, 0, "the attempt is given back: {t:?}");
            assert!(t.runs.is_empty(), "{:?}", t.runs);
        }
    }
    f.party.resume_queue("default").await.unwrap();
    gate.add_permits(2);
    until("all done", async || count(&f, State::Done).await == 3).await;
    running.stop().await;
    assert_eq!(starts.lock().unwrap().len(), 3);
}

/// Records the order its tasks start in, by handler, and takes `ms` milliseconds.
struct Ordered {
    name: &'static str,
    ms: u64,
    order: Arc<Mutex<Vec<&'static str>>>,
}

struct First(Ordered);
struct Second(Ordered);

impl Ordered {
    async fn run(&self) -> Result<(), TaskError> {
        self.order.lock().unwrap().push(self.name);
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

impl Task for First {
    const NAME: &'static str = "limited_task";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.run().await
    }
}

impl Task for Second {
    const NAME: &'static str = "backlog_task";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.run().await
    }
}

/// A worker that claims ahead and also serves a limited queue takes that queue's task among
/// the others' in due order, not after the whole backlog of an unlimited queue.
async fn a_limited_queue_is_not_left_behind_a_backlog_elsewhere(b: Backend) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let ordered = |name, ms| Ordered {
        name,
        ms,
        order: order.clone(),
    };
    let registry = Registry::new()
        .register(First(ordered("limited", 0)))
        .register(Second(ordered("backlog", 10)));
    let Some(f) = fixture(b, registry).await else {
        return;
    };
    let limits = QueueLimits {
        concurrency: Some(5),
        ..QueueLimits::default()
    };
    f.party.limit_queue("limited", &limits).await.unwrap();
    for _ in 0..100 {
        f.party.add(NewTask::new("backlog_task")).await.unwrap();
    }
    let running = start(f.party.worker(WorkerConfig {
        concurrency: 1,
        prefetch: 8,
        queues: vec!["default".into(), "limited".into()],
        ..WorkerConfig::default()
    }));
    until("ten started", async || order.lock().unwrap().len() >= 10).await;
    f.party
        .add(NewTask::new("limited_task").queue("limited"))
        .await
        .unwrap();
    until("all done", async || count(&f, State::Done).await == 101).await;
    running.stop().await;
    let order = order.lock().unwrap().clone();
    let at = order.iter().position(|n| *n == "limited").unwrap();
    assert!(
        at < 40,
        "the limited queue's task started after {at} of the other queue's tasks"
    );
}

/// `run_until_idle_or` (`party worker --until-idle` on a signal) stops when its shutdown
/// completes, also while a due task waits for its queue's rate: a worker run until idle waits
/// for such a task, and a SIGTERM must still stop it then, not once the rate allows the task.
async fn a_worker_run_until_idle_stops_on_its_shutdown_while_a_rate_holds_a_task_back(b: Backend) {
    let (registry, _starts, gate) = gated();
    gate.add_permits(100);
    let Some(f) = fixture(b, registry).await else {
        return;
    };
    let rate = QueueLimits {
        rate: Some(Rate::parse("1/1h").unwrap()),
        ..QueueLimits::default()
    };
    f.party.limit_queue("default", &rate).await.unwrap();
    for _ in 0..2 {
        f.party.add(NewTask::new("gated")).await.unwrap();
    }
    let worker = f.party.worker(WorkerConfig::default());
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        worker.run_until_idle_or(tokio::time::sleep(Duration::from_millis(500))),
    )
    .await;
    assert!(
        stopped.is_ok(),
        "the shutdown completed after 0.5 s and the worker was still running 10 s later"
    );
    assert_eq!(count(&f, State::Done).await, 1);
}

/// A task claimed ahead and cancelled by a person while it waits for an executor never
/// starts: when a pause then releases it unrun, it ends cancelled with a run saying the
/// handler was not run, as a cancel found at the claim does, not that an attempt ran, finished
/// and had what it scheduled dropped.
async fn a_task_cancelled_while_it_waited_ahead_is_not_recorded_as_an_attempt_that_ran(b: Backend) {
    let (registry, starts, gate) = gated();
    let Some(f) = fixture(b, registry).await else {
        return;
    };
    let first = f.party.add(NewTask::new("gated")).await.unwrap();
    let second = f.party.add(NewTask::new("gated")).await.unwrap();
    let running = start(f.party.worker(WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        ..WorkerConfig::default()
    }));
    until("one started, both claimed", async || {
        starts.lock().unwrap().len() == 1 && count(&f, State::Running).await == 2
    })
    .await;
    // Cancel both: the started one ends cancelled when its gate opens; the waiting one must
    // never start.
    assert!(f.party.cancel(first).await.unwrap().cancel_requested);
    assert!(f.party.cancel(second).await.unwrap().cancel_requested);
    // The worker looks for cancels every second (policy::CANCEL_CHECK).
    tokio::time::sleep(party::policy::CANCEL_CHECK * 2).await;
    f.party.pause_queue("default").await.unwrap();
    tokio::time::sleep(party::queues::CONTROLS_REFRESH + Duration::from_millis(100)).await;
    gate.add_permits(10);
    until("both cancelled", async || {
        count(&f, State::Cancelled).await == 2
    })
    .await;
    running.stop().await;
    assert_eq!(starts.lock().unwrap().len(), 1, "the waiting task started");
    let mut errors = Vec::new();
    for id in [first, second] {
        let t = f.party.get(id).await.unwrap();
        errors.push(
            t.runs
                .last()
                .and_then(|r| r.error.clone())
                .unwrap_or_default(),
        );
    }
    assert!(
        errors.iter().any(|e| e.contains("not run")),
        "the task that never started is recorded as an attempt that ran: {errors:?}"
    );
}

on_every_backend!(
    a_task_cancelled_while_it_waited_ahead_is_not_recorded_as_an_attempt_that_ran,
    a_worker_run_until_idle_stops_on_its_shutdown_while_a_rate_holds_a_task_back,
    a_rate_holds_for_handler_starts_on_a_worker_that_claims_ahead,
    a_limited_queue_is_not_left_behind_a_backlog_elsewhere,
    a_pause_reaches_tasks_claimed_ahead_before_they_start,
);
