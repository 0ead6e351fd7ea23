//! The worker against interleavings and faults: its lease lost and the task claimed again by
//! itself, a result whose error text holds a NUL byte, a panic in a handler's backoff, and a
//! store that fails a write (`faulty`, a pass-through to the real store that fails the calls a
//! test names).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use party::jiff::SignedDuration;
use party::serde_json::json;
use party::{NewTask, Outcome, Registry, State, Task, TaskContext, TaskError, WorkerConfig};
use tokio::sync::mpsc;

use crate::common::{Backend, expire_and_rescue, fixture, on_every_backend, raw_sql, start};

/// Wait up to 5 s for `done`, looking every 20 ms: a condition reached by other tasks of the
/// runtime (heartbeats, the result writer), with no signal of its own. Whether it came is
/// for the caller's assertion.
async fn eventually(mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..250 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker whose lease is short in real time (heartbeats every 100 ms) and ends, by the
/// manual clock, only when a test moves it; and whose shutdown does not wait long.
fn short_lease() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::from_millis(300),
        shutdown_grace: Duration::from_millis(50),
        ..Default::default()
    }
}

/// Counts attempts in flight (started and not yet ended or dropped), and the most at once.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

struct InFlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs until dropped; reports each attempt's number as it starts.
struct Hold {
    started: mpsc::UnboundedSender<(String, u32)>,
    inflight: InFlight,
}

impl Task for Hold {
    const NAME: &'static str = "hold";
    const MAX_ATTEMPTS: u32 = 3;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _g = self.inflight.enter();
        let _ = self.started.send((ctx.id().to_string(), ctx.attempts()));
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// A worker whose lease on a task ran out (its clock stepped past the lease, it froze, or its
/// heartbeats failed) and whose task was rescued, then claimed again by the same worker before
/// its next heartbeat: the first attempt must be stopped, not run beside the second.
async fn a_task_reclaimed_by_the_worker_that_lost_it_never_runs_twice_at_once(b: Backend) {
    let (tx, mut started) = mpsc::unbounded_channel();
    let inflight = InFlight::default();
    let Some(f) = fixture(
        b,
        Registry::new().register(Hold {
            started: tx,
            inflight: inflight.clone(),
        }),
    )
    .await
    else {
        return;
    };
    let id = f.party.add(NewTask::new("hold")).await.unwrap();
    let worker = f.party.worker(WorkerConfig {
        concurrency: 2,
        ..short_lease()
    });
    let running = start(worker);
    let first = tokio::time::timeout(Duration::from_secs(5), started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.1, 1);
    // The clock steps past the lease and a rescue releases the task (any worker's rescue),
    // once: the worker claims it again at once, and a second rescue would take that claim.
    for step in 0.. {
        assert!(step < 50, "task {id} was never rescued");
        f.clock.advance(SignedDuration::from_secs(1));
        let rescue = party::maintenance::Rescuer::new(
            f.party.store().clone(),
            Arc::new(f.clock.clone()),
            Default::default(),
        );
        if rescue.run_once().await.unwrap().rescued > 0 {
            break;
        }
    }
    // The same worker claims it again.
    let second = tokio::time::timeout(Duration::from_secs(5), started.recv())
        .await
        .expect("claimed again")
        .unwrap();
    assert_eq!(second.1, 2);
    // The first attempt is stopped (at once, or by a heartbeat noticing its stale claim).
    eventually(async || inflight.now.load(Ordering::SeqCst) == 1).await;
    let at_once = inflight.now.load(Ordering::SeqCst);
    running.stop().await;
    assert_eq!(
        at_once, 1,
        "attempts of task {id} running at once in one worker: the lost attempt was never stopped"
    );
}

/// Hangs unless its data says how long to take.
struct Slow {
    started: mpsc::UnboundedSender<String>,
}

impl Task for Slow {
    const NAME: &'static str = "slow";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _ = self.started.send(ctx.id().to_string());
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// A task claimed ahead (prefetch) that never got an executor before shutdown is "released
/// without running" (Worker::interrupt's docs): it must not use up its only attempt and die.
async fn a_prefetched_task_released_at_shutdown_unrun_is_not_dead(b: Backend) {
    let (tx, mut started) = mpsc::unbounded_channel();
    let Some(f) = fixture(b, Registry::new().register(Slow { started: tx })).await else {
        return;
    };
    let a = f
        .party
        .add(NewTask::new("slow").data(json!({"n": 1})).max_attempts(1))
        .await
        .unwrap();
    let b2 = f
        .party
        .add(NewTask::new("slow").data(json!({"n": 2})).max_attempts(1))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        shutdown_grace: Duration::from_millis(50),
        ..Default::default()
    });
    let running = start(worker);
    let ran = tokio::time::timeout(Duration::from_secs(5), started.recv())
        .await
        .unwrap()
        .unwrap();
    // Both are claimed: one runs, the other waits for the executor.
    eventually(async || {
        let sa = f.party.get(a).await.unwrap().state;
        let sb = f.party.get(b2).await.unwrap().state;
        sa == State::Running && sb == State::Running
    })
    .await;
    running.stop().await;
    let unrun = if ran == a.to_string() { b2 } else { a };
    assert!(
        started.try_recv().is_err(),
        "the prefetched task never started"
    );
    let task = f.party.get(unrun).await.unwrap();
    assert_ne!(
        task.state,
        State::Dead,
        "task {unrun} never ran, yet shutdown made it dead: {:?}",
        task.runs
    );
    // Released as it was: waiting again with its one attempt unused, no run recorded.
    assert_eq!(
        (task.state, task.attempts),
        (State::Scheduled, 0),
        "{task:?}"
    );
    assert!(task.runs.is_empty(), "a run was recorded: {:?}", task.runs);
}

/// Fails with a message holding a NUL byte (as a program's stderr may).
struct NulError;

impl Task for NulError {
    const NAME: &'static str = "nul_error";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Err(TaskError::failed("before\0after"))
    }
}

/// A failed attempt whose error text holds a NUL byte is recorded like any other failure: the
/// worker goes on, and other tasks' results are written.
async fn an_error_with_a_nul_byte_is_recorded_and_the_worker_goes_on(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(NulError)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("nul_error")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    let report = tokio::time::timeout(Duration::from_secs(10), worker.run_until_idle())
        .await
        .expect("the worker recorded the failure within 10 s (it hangs retrying the write)")
        .unwrap();
    assert_eq!(report.failed, 1);
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Retrying);
    assert_eq!(task.runs[0].outcome, Outcome::Failed);
}

/// Fails with a 5 MB message.
struct HugeError;

impl Task for HugeError {
    const NAME: &'static str = "huge_error";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Err(TaskError::failed(format!(
            "start {} end",
            "x".repeat(5_000_000)
        )))
    }
}

/// A handler's error text is bounded where it is stored: its start and its end, the cut said
/// between them, never 5 MB on the task's row and its run.
async fn a_huge_error_is_stored_bounded_with_its_start_and_end(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(HugeError)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("huge_error")).await.unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    for error in [
        task.last_error.clone().unwrap(),
        task.runs[0].error.clone().unwrap(),
    ] {
        assert!(
            error.chars().count() <= party::policy::MAX_ERROR_CHARS + 60,
            "{} characters stored",
            error.chars().count()
        );
        assert!(
            error.starts_with("start ") && error.ends_with(" end"),
            "{}",
            &error[..40]
        );
        assert!(error.contains("characters left out"));
    }
}

/// The same through the built-in shell handler: a command that writes a NUL byte to stderr.
async fn a_shell_command_writing_a_nul_to_stderr_does_not_wedge_the_worker(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(party::builtin::Shell)).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("shell").data(json!({"cmd": "printf 'a\\000b' >&2; exit 3"})))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    let report = tokio::time::timeout(Duration::from_secs(10), worker.run_until_idle())
        .await
        .expect("the worker recorded the failure within 10 s (it hangs retrying the write)")
        .unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(f.party.get(id).await.unwrap().state, State::Retrying);
}

/// Fails; its backoff has a bug and panics (as `10 * 2i64.pow(n)` does on overflow in a debug
/// build).
struct BadBackoff;

impl Task for BadBackoff {
    const NAME: &'static str = "bad_backoff";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Err(TaskError::failed("failed"))
    }

    fn backoff(&self, _attempt: u32) -> SignedDuration {
        panic!("backoff bug")
    }
}

/// A panic in user code the executor calls outside its panic guard (the handler's backoff)
/// must not leave the task `running` under a lease the worker renews forever.
async fn a_panicking_backoff_does_not_leave_the_task_held_forever(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(BadBackoff)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("bad_backoff")).await.unwrap();
    let running = start(f.party.worker(short_lease()));
    // The attempt fails at once. Time moves on in steps shorter than the lease, as a live
    // worker's heartbeats see it: 3 s of the clock over 3.75 s of real time (the heartbeat
    // ticks every 100 ms of real time).
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        f.clock.advance(SignedDuration::from_millis(200));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let task = f.party.get(id).await.unwrap();
    running.stop().await;
    assert_ne!(
        task.state,
        State::Running,
        "task {id} stays running under a lease its worker keeps renewing, with no attempt \
         running and no result written: {:?}",
        task
    );
}

/// Panics when dropped before its work was done, as some guards do (or a runtime dropped
/// inside an async context): the handler's own code, run when its attempt is stopped.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropped before the work was finished");
        }
    }
}

/// Hangs past its timeout holding a [`PanicsWhenDropped`].
struct HangsWithGuard;

impl Task for HangsWithGuard {
    const NAME: &'static str = "hangs_with_guard";
    const TIMEOUT: Duration = Duration::from_millis(200);

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _guard = PanicsWhenDropped;
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// A handler whose future panics as the timeout drops it is a timed-out attempt like any
/// other ("a handler that panics or hangs is a failed or timed-out attempt"): recorded and
/// retried, not left `running` under a lease its worker renews while it lives.
async fn a_handler_panicking_as_its_timed_out_attempt_is_dropped_is_still_recorded(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(HangsWithGuard)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("hangs_with_guard")).await.unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        f.party.worker(WorkerConfig::default()).run_until_idle(),
    )
    .await
    .expect("run_until_idle returned")
    .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(
        (task.state, task.runs.len(), report.failed),
        (State::Retrying, 1, 1),
        "the timed-out attempt was never recorded and the task stays held: {task:?}, {report:?}"
    );
    assert_eq!(task.runs[0].outcome, Outcome::TimedOut);
}

/// Fails once; its backoff has a bug and comes out negative (a subtraction the wrong way
/// round, an overflow wrapped): a wait can only be zero or more.
struct NegativeBackoff;

impl Task for NegativeBackoff {
    const NAME: &'static str = "negative_backoff";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        if ctx.attempts() == 1 {
            return Err(TaskError::failed("first attempt fails"));
        }
        Ok(())
    }

    fn backoff(&self, _attempt: u32) -> SignedDuration {
        SignedDuration::MIN
    }
}

/// A negative backoff is read as no wait: the retry is due when the attempt failed, not
/// millennia before it (which PostgreSQL cannot even store: the result write would fail and
/// be retried forever, holding up every other result of the worker).
async fn a_negative_backoff_retries_at_once_and_is_recorded(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(NegativeBackoff)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("negative_backoff")).await.unwrap();
    let mut config = short_lease();
    config.concurrency = 1;
    let report = tokio::time::timeout(
        Duration::from_secs(15),
        f.party.worker(config).run_until_idle(),
    )
    .await
    .expect("the worker never finished: the failed attempt's result could not be written")
    .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!((task.state, report.attempts), (State::Done, 2), "{task:?}");
    let failed = task
        .runs
        .iter()
        .find(|r| r.outcome == Outcome::Failed)
        .expect("the failed run");
    assert!(
        task.runs
            .iter()
            .all(|r| r.started_at >= failed.finished_at || r.outcome == Outcome::Failed),
        "{:?}",
        task.runs
    );
}

mod faulty {
    //! A store that passes every call through, and fails the ones a test asks it to.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use party::jiff::Timestamp;
    use party::queues::{QueueControl, QueueLimits};
    use party::store::*;
    use party::{ListCursor, ListFilter, TaskInfo};
    use party::{TaskError, TaskId};
    use tokio::sync::Notify;

    pub struct Faulty {
        pub inner: Arc<dyn Store>,
        /// Heartbeats fail while set.
        pub fail_heartbeats: AtomicBool,
        /// `task_finish` calls counted; the one numbered `fail_finish_call` (from 1) fails.
        pub finish_calls: AtomicUsize,
        pub fail_finish_call: AtomicUsize,
        /// `task_finish` panics while set.
        pub panic_finish: AtomicBool,
    }

    impl Faulty {
        pub fn new(inner: Arc<dyn Store>) -> Arc<Faulty> {
            Arc::new(Faulty {
                inner,
                fail_heartbeats: AtomicBool::new(false),
                finish_calls: AtomicUsize::new(0),
                fail_finish_call: AtomicUsize::new(0),
                panic_finish: AtomicBool::new(false),
            })
        }
    }

    fn outage() -> TaskError {
        TaskError::Store("connection reset (injected)".into())
    }

    #[async_trait]
    impl Store for Faulty {
        fn backend(&self) -> &'static str {
            self.inner.backend()
        }
        fn wakeups(&self) -> Arc<Notify> {
            self.inner.wakeups()
        }
        async fn task_insert(&self, t: Vec<InsertTask>) -> Result<Vec<TaskId>, TaskError> {
            self.inner.task_insert(t).await
        }
        async fn task_claim(&self, p: ClaimParams<'_>) -> Result<Vec<ClaimedTask>, TaskError> {
            self.inner.task_claim(p).await
        }
        async fn task_finish(&self, b: Vec<Finish>) -> Result<Vec<FinishResult>, TaskError> {
            if self.panic_finish.load(Ordering::SeqCst) {
                panic!("task_finish failed (injected)");
            }
            let n = self.finish_calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.fail_finish_call.load(Ordering::SeqCst) {
                return Err(outage());
            }
            self.inner.task_finish(b).await
        }
        async fn task_heartbeat(
            &self,
            p: HeartbeatParams<'_>,
        ) -> Result<party::store::Heartbeat, TaskError> {
            if self.fail_heartbeats.load(Ordering::SeqCst) {
                return Err(outage());
            }
            self.inner.task_heartbeat(p).await
        }
        async fn task_expired(&self, p: ExpiredParams) -> Result<Vec<ExpiredTask>, TaskError> {
            self.inner.task_expired(p).await
        }
        async fn task_next_due(
            &self,
            h: &[String],
            q: &[String],
        ) -> Result<Option<Timestamp>, TaskError> {
            self.inner.task_next_due(h, q).await
        }
        async fn task_get(&self, id: TaskId) -> Result<Option<TaskInfo>, TaskError> {
            self.inner.task_get(id).await
        }
        async fn task_runs(
            &self,
            p: party::store::RunsParams,
        ) -> Result<Option<(TaskInfo, party::RunPage)>, TaskError> {
            self.inner.task_runs(p).await
        }
        async fn task_list(&self, f: &ListFilter) -> Result<Vec<TaskInfo>, TaskError> {
            self.inner.task_list(f).await
        }
        async fn task_list_sizes(
            &self,
            f: &ListFilter,
        ) -> Result<Vec<(ListCursor, u64)>, TaskError> {
            self.inner.task_list_sizes(f).await
        }
        async fn task_list_reach(
            &self,
            f: &ListFilter,
            n: u32,
        ) -> Result<Option<ListCursor>, TaskError> {
            self.inner.task_list_reach(f, n).await
        }
        async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
            self.inner.task_cancel(id, now).await
        }
        async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError> {
            self.inner.task_retry(id, now).await
        }
        async fn task_cancel_request(
            &self,
            id: TaskId,
            now: Timestamp,
        ) -> Result<Option<TaskInfo>, TaskError> {
            self.inner.task_cancel_request(id, now).await
        }
        async fn task_cancel_requested(
            &self,
            c: &[(TaskId, i64)],
        ) -> Result<Vec<TaskId>, TaskError> {
            self.inner.task_cancel_requested(c).await
        }
        async fn task_cancel_many(&self, p: SteerMany<'_>) -> Result<u64, TaskError> {
            self.inner.task_cancel_many(p).await
        }
        async fn task_retry_many(&self, p: SteerMany<'_>) -> Result<u64, TaskError> {
            self.inner.task_retry_many(p).await
        }
        async fn task_count_many(
            &self,
            p: SteerMany<'_>,
            a: u64,
            e: u64,
        ) -> Result<ManyCount, TaskError> {
            self.inner.task_count_many(p, a, e).await
        }
        async fn task_successes(
            &self,
            p: party::store::SuccessParams<'_>,
        ) -> Result<Vec<party::store::Successes>, TaskError> {
            self.inner.task_successes(p).await
        }
        async fn stats(&self, p: StatsParams) -> Result<StoreStats, TaskError> {
            self.inner.stats(p).await
        }
        async fn task_vacuum(&self) -> Result<(), TaskError> {
            self.inner.task_vacuum().await
        }
        async fn history_vacuum(&self) -> Result<(), TaskError> {
            self.inner.history_vacuum().await
        }
        async fn task_reindex(&self) -> Result<(), TaskError> {
            self.inner.task_reindex().await
        }
        fn indexes_keep_freed_pages(&self) -> bool {
            self.inner.indexes_keep_freed_pages()
        }
        async fn table_sizes(&self) -> Result<TableSizes, TaskError> {
            self.inner.table_sizes().await
        }
        async fn copy_read(&self, p: CopyRead) -> Result<CopyRows, TaskError> {
            self.inner.copy_read(p).await
        }
        async fn copy_write(&self, r: CopyRows) -> Result<(), TaskError> {
            self.inner.copy_write(r).await
        }
        async fn server_time(&self) -> Result<Option<Timestamp>, TaskError> {
            self.inner.server_time().await
        }
        async fn worker_register(
            &self,
            w: &party::WorkerInfo,
            now: Timestamp,
        ) -> Result<Option<Timestamp>, TaskError> {
            self.inner.worker_register(w, now).await
        }
        async fn worker_remove(&self, id: &str) -> Result<(), TaskError> {
            self.inner.worker_remove(id).await
        }
        async fn task_prune(&self, p: PruneParams) -> Result<PruneCounts, TaskError> {
            self.inner.task_prune(p).await
        }
        async fn workers_forget(&self, before: Timestamp, dry_run: bool) -> Result<u64, TaskError> {
            self.inner.workers_forget(before, dry_run).await
        }
        async fn leader_elect(&self, p: LeaderParams<'_>) -> Result<bool, TaskError> {
            self.inner.leader_elect(p).await
        }
        async fn leader_resign(&self, h: &str) -> Result<(), TaskError> {
            self.inner.leader_resign(h).await
        }
        async fn queue_controls(&self, q: &[String]) -> Result<Vec<QueueControl>, TaskError> {
            self.inner.queue_controls(q).await
        }
        async fn queue_pause(&self, q: &str, p: bool, now: Timestamp) -> Result<(), TaskError> {
            self.inner.queue_pause(q, p, now).await
        }
        async fn queue_limit(
            &self,
            q: &str,
            l: &QueueLimits,
            now: Timestamp,
        ) -> Result<(), TaskError> {
            self.inner.queue_limit(q, l, now).await
        }
        async fn queue_counts(&self, now: Timestamp) -> Result<QueueCounts, TaskError> {
            self.inner.queue_counts(now).await
        }
    }
}

/// A worker whose heartbeats fail (its link to the database is cut) keeps running its attempt
/// past its lease, while the rescued task runs again on another worker: two attempts of one
/// task at once. RELIABILITY.md says a worker "no longer able to renew its lease, gave it up".
async fn a_worker_that_cannot_renew_its_lease_gives_up_its_attempt(b: Backend) {
    let (tx, mut started) = mpsc::unbounded_channel();
    let inflight = InFlight::default();
    let registry = || {
        Registry::new().register(Hold {
            started: tx.clone(),
            inflight: inflight.clone(),
        })
    };
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let faulty = faulty::Faulty::new(f.party.store().clone());
    let cut_off =
        party::Party::with_store(faulty.clone(), registry()).with_clock(Arc::new(f.clock.clone()));
    let id = f.party.add(NewTask::new("hold")).await.unwrap();
    let w1 = start(cut_off.worker(WorkerConfig {
        concurrency: 1,
        id: Some("cut-off".into()),
        ..short_lease()
    }));
    let first = tokio::time::timeout(Duration::from_secs(5), started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.1, 1);
    // The link goes down: heartbeats fail from now on. The clock passes the lease, and the
    // task is rescued.
    faulty.fail_heartbeats.store(true, Ordering::SeqCst);
    expire_and_rescue(&f, id).await;
    // Another worker takes the rescued task.
    let w2 = start(f.party.worker(WorkerConfig {
        concurrency: 1,
        id: Some("other".into()),
        ..short_lease()
    }));
    let second = tokio::time::timeout(Duration::from_secs(5), started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.1, 2);
    // The cut-off worker gives its attempt up once it sees the lease ended.
    eventually(async || inflight.now.load(Ordering::SeqCst) == 1).await;
    let at_once = inflight.now.load(Ordering::SeqCst);
    w2.stop().await;
    faulty.fail_heartbeats.store(false, Ordering::SeqCst);
    w1.stop().await;
    assert_eq!(
        at_once, 1,
        "two attempts of task {id} ran at once: the cut-off worker kept its attempt long after \
         its lease ended and the task was rescued"
    );
}

/// Succeeds, counting its runs, and enqueues a recurring follow-up that collides with a live
/// one (a singleton refusal: the completer writes the attempt again without it).
struct Effects {
    runs: Arc<AtomicUsize>,
}

impl Task for Effects {
    const NAME: &'static str = "effects";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.enqueue(NewTask::new("tick").every(SignedDuration::from_mins(60)));
        Ok(())
    }
}

struct Tick;

impl Task for Tick {
    const NAME: &'static str = "tick";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The completer writes a batch whose follow-up collided again without the follow-up. If that
/// second write meets a transient error, the result is dropped: the task's lease is no longer
/// renewed, it is rescued as `lost`, and work that succeeded (and ran on_complete) runs again.
async fn a_transient_error_rewriting_a_refused_follow_up_does_not_run_the_work_again(b: Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let registry = || {
        Registry::new()
            .register(Effects { runs: runs.clone() })
            .register(Tick)
    };
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    // The live recurring task the follow-up collides with, due far ahead.
    f.party
        .add(
            NewTask::new("tick")
                .every(SignedDuration::from_mins(60))
                .at(crate::common::t0() + SignedDuration::from_hours(24)),
        )
        .await
        .unwrap();
    let id = f.party.add(NewTask::new("effects")).await.unwrap();
    let faulty = faulty::Faulty::new(f.party.store().clone());
    // The first result write reports the duplicate; the second (without it) fails once.
    faulty.fail_finish_call.store(2, Ordering::SeqCst);
    let party =
        party::Party::with_store(faulty.clone(), registry()).with_clock(Arc::new(f.clock.clone()));
    let w = start(party.worker(short_lease()));
    // The result is written in the end; dropped, it would leave the task running until its
    // lease ended and a rescue released it to run again.
    eventually(async || f.party.get(id).await.unwrap().state == State::Done).await;
    w.stop().await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(
        task.state,
        State::Done,
        "the result was never written: {task:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the work ran again after it succeeded: {:?}",
        task.runs
    );
}

/// Reports each attempt's number as it starts, then finishes once the test opens its gate
/// (one permit per attempt).
struct Gate {
    started: mpsc::UnboundedSender<u32>,
    open: Arc<tokio::sync::Semaphore>,
}

impl Task for Gate {
    const NAME: &'static str = "gate";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let _ = self.started.send(ctx.attempts());
        self.open.acquire().await.expect("never closed").forget();
        Ok(())
    }
}

fn gate() -> (
    Gate,
    mpsc::UnboundedReceiver<u32>,
    Arc<tokio::sync::Semaphore>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    (
        Gate {
            started: tx,
            open: open.clone(),
        },
        rx,
        open,
    )
}

/// A result the store refuses for good (here its tables changed under the worker: a column
/// the write needs was renamed) stops the worker with the store's own error, instead of
/// retrying the write for ever while it goes on claiming. The task, whose result was not
/// written, stays running under its claim and is rescued when its lease ends: it runs again.
async fn a_result_the_store_refuses_for_good_stops_the_worker_with_the_cause(b: Backend) {
    let (handler, mut started, open) = gate();
    let Some(f) = fixture(b, Registry::new().register(handler)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("gate")).await.unwrap();
    let worker = f.party.worker(WorkerConfig {
        concurrency: 1,
        ..short_lease()
    });
    let join = tokio::spawn(async move { worker.run(std::future::pending()).await });
    let first = tokio::time::timeout(Duration::from_secs(5), started.recv()).await;
    assert_eq!(first.unwrap(), Some(1));
    raw_sql(
        &f,
        "ALTER TABLE tasks RENAME COLUMN last_error TO last_error_elsewhere",
    )
    .await;
    open.add_permits(1);
    let stopped = tokio::time::timeout(Duration::from_secs(10), join).await;
    raw_sql(
        &f,
        "ALTER TABLE tasks RENAME COLUMN last_error_elsewhere TO last_error",
    )
    .await;
    let err = stopped
        .expect("the worker went on retrying a write no retry can pass")
        .unwrap()
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("last_error") && message.contains("recording results failed"),
        "the error names its cause: {message}"
    );
    assert_eq!(f.party.get(id).await.unwrap().state, State::Running);
    expire_and_rescue(&f, id).await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Retrying, "{task:?}");
    assert_eq!(task.runs[0].outcome, Outcome::Lost);
    open.add_permits(1);
    let report = f
        .party
        .worker(short_lease())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(f.party.get(id).await.unwrap().state, State::Done);
}

/// A worker whose result writer panicked stops at once and says so, instead of claiming (and
/// running) tasks whose results nobody will write until it is told to stop. The task whose
/// result was lost stays running under its claim, for the rescue.
async fn a_worker_whose_result_writer_panicked_stops_claiming_at_once(b: Backend) {
    let (handler, mut started, open) = gate();
    let registry = Registry::new().register(handler);
    let Some(f) = fixture(b, Registry::new()).await else {
        return;
    };
    let faulty = faulty::Faulty::new(f.party.store().clone());
    faulty.panic_finish.store(true, Ordering::SeqCst);
    let party =
        party::Party::with_store(faulty.clone(), registry).with_clock(Arc::new(f.clock.clone()));
    let first = party.add(NewTask::new("gate")).await.unwrap();
    open.add_permits(1);
    let worker = party.worker(WorkerConfig {
        concurrency: 1,
        ..short_lease()
    });
    let join = tokio::spawn(async move { worker.run(std::future::pending()).await });
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .unwrap(),
        Some(1)
    );
    let err = tokio::time::timeout(Duration::from_secs(10), join)
        .await
        .expect("the worker went on claiming after its result writer panicked")
        .unwrap()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("result writer stopped unexpectedly")
            && message.contains("task_finish failed (injected)"),
        "{message}"
    );
    assert_eq!(party.get(first).await.unwrap().state, State::Running);
    assert!(started.try_recv().is_err(), "nothing else started");
}

on_every_backend!(
    a_prefetched_task_released_at_shutdown_unrun_is_not_dead,
    a_worker_that_cannot_renew_its_lease_gives_up_its_attempt,
    a_task_reclaimed_by_the_worker_that_lost_it_never_runs_twice_at_once,
    an_error_with_a_nul_byte_is_recorded_and_the_worker_goes_on,
    a_huge_error_is_stored_bounded_with_its_start_and_end,
    a_shell_command_writing_a_nul_to_stderr_does_not_wedge_the_worker,
    a_panicking_backoff_does_not_leave_the_task_held_forever,
    a_handler_panicking_as_its_timed_out_attempt_is_dropped_is_still_recorded,
    a_negative_backoff_retries_at_once_and_is_recorded,
    a_transient_error_rewriting_a_refused_follow_up_does_not_run_the_work_again,
    a_result_the_store_refuses_for_good_stops_the_worker_with_the_cause,
    a_worker_whose_result_writer_panicked_stops_claiming_at_once,
);
