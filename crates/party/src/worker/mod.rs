//! The worker runtime: claims due tasks in batches, runs them on tokio with bounded
//! concurrency, and records their results in batches (group commit).
//!
//! One claimer loop (this module) feeds executors (`executor.rs`). A claimed task holds two
//! places: one in `ahead` (concurrency + prefetch) until its attempt ends, and one in
//! `unrecorded` (twice that) until the completer (`completer.rs`) has durably written its
//! result. The next claim therefore waits only for attempts to end, not for their results'
//! write, which overlaps it; and "every `unrecorded` place free" means nothing of ours is
//! running or unrecorded. The heartbeat (`heartbeat.rs`) renews
//! leases; the maintenance services (rescue of expired leases, pruning of old history) run
//! beside it, see [`crate::maintenance`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::clock::Clock;
use crate::maintenance::{Maintenance, PruneConfig, Pruner, RescueConfig, Rescuer};
use crate::metrics::WorkerMetrics;
use crate::model::DEFAULT_QUEUE;
use crate::policy::{self, Retention};
use crate::queues;
use crate::store::{ClaimParams, Finish, Store};
use crate::task::{Cancel, CancelStage, Registry};
use crate::{TaskError, TaskId};

mod completer;
mod executor;
mod heartbeat;

/// How a worker runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks run at the same time (default 10).
    pub concurrency: usize,
    /// Queues taken from (default `["default"]`).
    pub queues: Vec<String>,
    /// How long a claim holds without a heartbeat (default 30 s); renewed every third of it.
    pub lease: Duration,
    /// Longest sleep before looking for due tasks again when nothing wakes the worker
    /// (default 500 ms): a safety net. Inserts in this process wake it at once; commits by
    /// other processes wake it through PostgreSQL notifications, or on SQLite within about
    /// 20 ms through the file's change counter.
    pub poll_interval: Duration,
    /// At most this many tasks per claim (default 256).
    pub claim_batch: usize,
    /// Tasks claimed ahead of free executors (default 0): while `concurrency` tasks run, up to
    /// this many more wait in the worker, already claimed, like a local queue. While some
    /// wait, the worker claims again only once half of its places are free, so claims are few
    /// and large and overlap the running tasks and the writing of their results. It raises
    /// throughput for short tasks (try 500, as a local queue of 500); for long tasks it keeps
    /// work waiting here that an idle worker elsewhere could run.
    pub prefetch: usize,
    /// Results are written in batches of at most this many (default 256).
    pub finish_batch: usize,
    /// How long a finished result may wait for others to share its write (default 1 ms).
    pub flush_delay: Duration,
    /// On shutdown, how long running tasks get to finish before they are interrupted and
    /// released (default 30 s).
    pub shutdown_grace: Duration,
    /// The worker's id; by default host name, process id and a random suffix. No two live
    /// workers may share one: a worker whose id a live worker holds is refused at its start
    /// ([`TaskError::Invalid`]); the id of a worker that was killed is free once its
    /// liveness (its lease) ends.
    pub id: Option<String>,
    /// How long finished tasks and run rows are kept before the pruner, which every worker
    /// runs (one at a time across the store), removes them (default [`Retention::default`]:
    /// done tasks 7 days, dead and cancelled 30 days, recurring tasks' history 400 days).
    pub retention: Retention,
    /// Where the worker counts its runs, waits, claims, rescues and refused results (none by
    /// default); serve them with [`crate::metrics::WorkerMetrics::render`].
    pub metrics: Option<Arc<WorkerMetrics>>,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            concurrency: 10,
            queues: vec![DEFAULT_QUEUE.to_string()],
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            claim_batch: 256,
            prefetch: 0,
            finish_batch: 256,
            flush_delay: Duration::from_millis(1),
            shutdown_grace: Duration::from_secs(30),
            id: None,
            retention: Retention::default(),
            metrics: None,
        }
    }
}

impl WorkerConfig {
    /// Check every setting against its bounds ([`crate::validate`]'s `MAX_*` and
    /// `*_WORKER_*` constants), as a worker does before it starts: a value out of range is
    /// refused, never wrapped, clamped silently or left to panic deep in the runtime.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] naming the setting and its range.
    pub fn check(&self) -> Result<(), TaskError> {
        use crate::validate::{self as v, in_range};
        let whole = |n: usize, what: &str, lo: usize, hi: usize, example: &str| {
            in_range(n as i128, what, lo as i64, hi as i64, example).map(|_| ())
        };
        whole(
            self.concurrency,
            "the worker's concurrency",
            1,
            v::MAX_CONCURRENCY,
            "16",
        )?;
        whole(
            self.prefetch,
            "the worker's prefetch",
            0,
            v::MAX_PREFETCH,
            "100",
        )?;
        whole(
            self.claim_batch,
            "the worker's claim batch",
            1,
            v::MAX_WORKER_BATCH,
            "256",
        )?;
        whole(
            self.finish_batch,
            "the worker's finish batch",
            1,
            v::MAX_WORKER_BATCH,
            "256",
        )?;
        let between = |d: Duration, what: &str, lo: Duration, hi: Duration| {
            let shown = |d: Duration| {
                let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
                format!("{d:#}")
            };
            if d < lo || d > hi {
                return Err(TaskError::invalid(format!(
                    "{what} of {} is out of range: give {} to {}",
                    shown(d),
                    shown(lo),
                    shown(hi)
                )));
            }
            Ok(())
        };
        between(
            self.lease,
            "the worker's lease",
            v::MIN_WORKER_LEASE,
            v::MAX_WORKER_LEASE,
        )?;
        between(
            self.shutdown_grace,
            "the worker's shutdown grace",
            Duration::ZERO,
            v::MAX_GRACE.unsigned_abs(),
        )?;
        between(
            self.poll_interval,
            "the worker's poll interval",
            Duration::from_millis(1),
            v::MAX_POLL_INTERVAL,
        )?;
        between(
            self.flush_delay,
            "the worker's flush delay",
            Duration::ZERO,
            v::MAX_FLUSH_DELAY,
        )?;
        if let Some(id) = &self.id {
            v::worker_id(id)?;
        }
        Ok(())
    }
}

/// What a worker did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Attempts run (any outcome): `succeeded + failed + cancelled`.
    pub attempts: u64,
    /// Attempts that succeeded (outcome `succeeded`).
    pub succeeded: u64,
    /// Attempts that failed, timed out or were lost (outcomes `failed`, `timed_out`, `lost`):
    /// the task's fault or its worker's, retried while attempts remain.
    pub failed: u64,
    /// Attempts ended because a person cancelled their task (outcome `cancelled`), whatever
    /// the attempt itself came to. Not counted as failed: nothing went wrong.
    pub cancelled: u64,
    /// Results the store refused because the claim was stale: the task had been rescued (or
    /// cancelled) meanwhile, so what this worker did was not recorded. Not counted above.
    pub stale: u64,
}

/// Runs tasks. Made by [`crate::Party::worker`].
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: Registry,
    config: WorkerConfig,
    id: String,
    handlers: Vec<String>,
    attempts: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    stale: AtomicU64,
    /// Set to interrupt every attempt at once (the grace period is over, or `interrupt`).
    abort: watch::Sender<bool>,
    /// Tasks this worker holds: their claim's fence, and a handle to stop the attempt if the
    /// lease is lost.
    held: std::sync::Mutex<std::collections::HashMap<TaskId, Held>>,
    /// Which of the worker's queues are paused or limited, as last read from the store.
    controls: tokio::sync::Mutex<Controls>,
    /// Why the worker stopped on its own (its result writer can write no more), if it did.
    halted: std::sync::Mutex<Option<TaskError>>,
}

struct Held {
    fence: i64,
    /// Until when the store holds the claim for us, as far as this worker knows: the claim's
    /// lease, moved on by each heartbeat that renewed it.
    lease_until: jiff::Timestamp,
    abort: Option<tokio::task::AbortHandle>,
    /// A person's request to cancel the task while it runs, shared with its attempt.
    cancel: Cancel,
    /// The attempt has ended and its result is on its way to the store.
    finishing: bool,
}

impl Inner {
    /// Whether `queue` is paused, by a view of the controls at most
    /// [`queues::CONTROLS_REFRESH`] old (read again here if it is older).
    async fn paused(&self, queue: &str) -> bool {
        let mut controls = self.controls.lock().await;
        controls.refresh(&*self.store, &self.config.queues).await;
        controls.paused.iter().any(|q| q == queue)
    }

    /// The cancellation of the attempt of `id` under `fence` (a fresh one if it is not held).
    fn cancel_of(&self, id: TaskId, fence: i64) -> Cancel {
        match self.held.lock().unwrap().get(&id) {
            Some(h) if h.fence == fence => h.cancel.clone(),
            _ => Cancel::default(),
        }
    }

    /// Stop the worker at once because of `error`: no more claims, and every attempt is
    /// interrupted (its result could not be written); `run` returns `error`. The first
    /// cause is kept.
    fn halt(&self, error: TaskError) {
        tracing::error!(worker = %self.id, error = %error, "stopping at once: no new claims; running tasks are interrupted");
        self.halted.lock().unwrap().get_or_insert(error);
        self.abort.send_replace(true);
    }

    /// The attempt of `id` under `fence` has ended; its result goes to the completer.
    fn mark_finishing(&self, id: TaskId, fence: i64) {
        if let Some(h) = self.held.lock().unwrap().get_mut(&id) {
            if h.fence == fence {
                h.finishing = true;
            }
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.id)
            .finish()
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// The worker's view of which of its queues are paused or limited, re-read every
/// [`queues::CONTROLS_REFRESH`]. The store never relies on it being fresh: a queue controlled
/// since the last look is not claimed until the next. A task claimed ahead checks it before
/// it starts: one whose queue was paused meanwhile is released unrun.
#[derive(Default)]
struct Controls {
    names: Vec<String>,
    paused: Vec<String>,
    /// One of them is limited and not paused: the worker claims nothing ahead.
    limited: bool,
    read_at: Option<std::time::Instant>,
}

impl Controls {
    async fn refresh(&mut self, store: &dyn Store, queues: &[String]) {
        if self
            .read_at
            .is_some_and(|t| t.elapsed() < queues::CONTROLS_REFRESH)
        {
            return;
        }
        match store.queue_controls(queues).await {
            Ok(controls) => {
                self.paused = controls
                    .iter()
                    .filter(|c| c.paused)
                    .map(|c| c.name.clone())
                    .collect();
                // A queue has controls only when it is paused or limited.
                self.limited = controls.iter().any(|c| !c.paused);
                self.names = controls.into_iter().map(|c| c.name).collect();
            }
            // The last view stands until the next look: an unreachable store is not asked
            // again before every start.
            Err(e) => tracing::warn!(error = %e, "reading the queues' controls failed"),
        }
        self.read_at = Some(std::time::Instant::now());
    }
}

struct Executed {
    finish: Finish,
    /// The task's handler and queue: the labels of its run in the metrics, counted once the
    /// store has recorded it.
    labels: (String, String),
    /// The task's place in `unrecorded`, given back once the result is written.
    _permit: OwnedSemaphorePermit,
    /// Its place in `ahead`, kept until the result is written for a task that moved to
    /// another occurrence without running (see `executor::execute`).
    _ahead: Option<OwnedSemaphorePermit>,
}

/// How long a stopping worker waits for a heartbeat already sent before it removes its row.
const HEARTBEAT_STOP: Duration = Duration::from_secs(5);

/// Places for claimed tasks whose results are not yet written: twice what may be claimed
/// ahead, so a full set of attempts can end while the previous set's results are written.
fn unrecorded_places(config: &WorkerConfig) -> usize {
    2 * (config.concurrency + config.prefetch)
}

impl Worker {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        registry: Registry,
        mut config: WorkerConfig,
    ) -> Worker {
        config.concurrency = config.concurrency.max(1);
        config.claim_batch = config.claim_batch.max(1);
        config.finish_batch = config.finish_batch.max(1);
        let id = config.id.clone().unwrap_or_else(default_worker_id);
        let handlers = registry.names();
        Worker {
            inner: Arc::new(Inner {
                store,
                clock,
                registry,
                config,
                id,
                handlers,
                attempts: AtomicU64::new(0),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                stale: AtomicU64::new(0),
                abort: watch::channel(false).0,
                held: Default::default(),
                controls: Default::default(),
                halted: Default::default(),
            }),
        }
    }

    /// Interrupt every running attempt now, without waiting for the grace period: each is
    /// stopped, recorded as `lost` and released to run again (a `shell` child's whole process
    /// group is ended). Tasks claimed ahead and not started are released without running. A
    /// worker that is stopping returns once those results are written; one that is not stops
    /// too (no new claims, no grace period). For a second Ctrl-C.
    pub fn interrupt(&self) {
        self.inner.abort.send_replace(true);
    }

    /// The rescue service this worker runs (see [`crate::maintenance`]), for its settings.
    fn rescuer(&self) -> Rescuer {
        Rescuer::new(
            self.inner.store.clone(),
            self.inner.clock.clone(),
            RescueConfig::for_lease(self.inner.config.lease),
        )
        .with_metrics(self.inner.config.metrics.clone())
    }

    /// This worker's id, as recorded in run histories.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Run until nothing this worker can run is due and none of its tasks is running. Future
    /// tasks, retries waiting for their backoff and tasks of other handlers do not keep it.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the database fails; [`TaskError::Unusable`] when it cannot
    /// be used and no retry can help (the worker stops at once, see
    /// [`TaskError::is_permanent`]); [`TaskError::Failed`] when its result writer stopped
    /// unexpectedly (it stops at once too). Tasks whose results were not written run again
    /// once their leases end.
    pub async fn run_until_idle(&self) -> Result<WorkerReport, TaskError> {
        self.run_inner(true, None).await
    }

    /// As [`Worker::run_until_idle`], but stop as [`Worker::run`] does if `shutdown` completes
    /// first: no new claims, running tasks get the grace period, the rest are interrupted
    /// and released. `party worker --until-idle` stops this way on a signal.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the database fails; [`TaskError::Unusable`] when it cannot
    /// be used and no retry can help (the worker stops at once, see
    /// [`TaskError::is_permanent`]); [`TaskError::Failed`] when its result writer stopped
    /// unexpectedly (it stops at once too). Tasks whose results were not written run again
    /// once their leases end.
    pub async fn run_until_idle_or(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, TaskError> {
        self.run_inner(true, Some(Box::pin(shutdown))).await
    }

    /// Run until `shutdown` completes; then stop claiming, give running tasks the grace period,
    /// interrupt and release the rest, and return.
    ///
    /// # Example
    /// ```no_run
    /// # use party::{Party, TaskError, WorkerConfig};
    /// # async fn example(party: &Party) -> Result<(), TaskError> {
    /// use std::time::Duration;
    ///
    /// let worker = party.worker(WorkerConfig {
    ///     concurrency: 16,
    ///     queues: vec!["default".to_string(), "mail".to_string()],
    ///     shutdown_grace: Duration::from_secs(20),
    ///     ..WorkerConfig::default()
    /// });
    /// // Until Ctrl-C; examples/worker also stops on SIGTERM and interrupts on a second signal.
    /// let report = worker
    ///     .run(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// println!("{} attempts, {} succeeded", report.attempts, report.succeeded);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TaskError::Store`] when the database fails; [`TaskError::Unusable`] when it cannot
    /// be used and no retry can help (the worker stops at once, see
    /// [`TaskError::is_permanent`]); [`TaskError::Failed`] when its result writer stopped
    /// unexpectedly (it stops at once too). Tasks whose results were not written run again
    /// once their leases end.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, TaskError> {
        self.run_inner(false, Some(Box::pin(shutdown))).await
    }

    fn totals(&self) -> WorkerReport {
        WorkerReport {
            attempts: self.inner.attempts.load(Ordering::Relaxed),
            succeeded: self.inner.succeeded.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            cancelled: self.inner.cancelled.load(Ordering::Relaxed),
            stale: self.inner.stale.load(Ordering::Relaxed),
        }
    }

    async fn run_inner(
        &self,
        until_idle: bool,
        shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>>,
    ) -> Result<WorkerReport, TaskError> {
        let inner = &self.inner;
        // Before any setting is used: an out-of-range one could overflow what is sized by it.
        inner.config.check()?;
        let before = self.totals();
        let external = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        // Claimed tasks hold a place in `ahead` until their attempt ends and one in
        // `unrecorded` until their result is written; running ones also hold an executor permit.
        let concurrency = inner.config.concurrency + inner.config.prefetch;
        let ahead = Arc::new(Semaphore::new(concurrency));
        let unrecorded_places = unrecorded_places(&inner.config);
        let unrecorded = Arc::new(Semaphore::new(unrecorded_places));
        let executors = Arc::new(Semaphore::new(inner.config.concurrency));
        // Told each time a claimed task takes an executor.
        let started = Arc::new(Notify::new());
        if inner.config.queues.is_empty() {
            return Err(TaskError::invalid(
                "a worker needs at least one queue to take tasks from, e.g. 'default'",
            ));
        }
        for queue in &inner.config.queues {
            crate::validate::queue_name(queue)?;
        }
        // Announce the worker first: if the database cannot be reached, or its clock is too far
        // from ours for leases to mean the same to both, fail before anything runs in the
        // background.
        check_clock(inner).await?;
        inner.register().await?;
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Executed>();
        inner.abort.send_replace(false);
        *inner.halted.lock().unwrap() = None;
        let abort_rx = inner.abort.subscribe();
        // The worker stops on its shutdown, or on an interrupt (which, before a shutdown,
        // stops it too: it would otherwise claim and release tasks unrun, round after round).
        let mut interrupt_rx = inner.abort.subscribe();
        let mut shutdown: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(async move {
            tokio::select! {
                () = external => {}
                _ = interrupt_rx.wait_for(|a| *a) => {}
            }
        });
        // The result writer, watched: if it ends before the worker stops (a write no retry
        // can fix, or a panic), the worker stops at once rather than claim tasks whose
        // results it cannot write.
        let completer = {
            let writer = tokio::spawn(completer::completer(
                inner.clone(),
                done_rx,
                unrecorded.clone(),
            ));
            let inner = inner.clone();
            tokio::spawn(async move {
                let error = match writer.await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e,
                    Err(e) if e.is_panic() => TaskError::failed(format!(
                        "the worker's result writer stopped unexpectedly ({}): the worker \
                         stopped, and the tasks whose results were not written run again \
                         once their leases end",
                        executor::panic_message(e.into_panic().as_ref())
                    )),
                    Err(_) => return,
                };
                inner.halt(error);
            })
        };
        let (stop_beating, beating) = watch::channel(false);
        let mut heartbeat = tokio::spawn(heartbeat::heartbeat(inner.clone(), beating));
        let cancellations = tokio::spawn(heartbeat::cancellations(inner.clone()));
        let give_up = tokio::spawn(heartbeat::give_up(inner.clone()));
        let rescuer = self.rescuer();
        let (stop_maintenance, maintenance_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut maintenance = tokio::spawn(
            Maintenance::new(inner.store.clone(), inner.clock.clone(), inner.id.clone())
                .with(rescuer.clone())
                .with(Pruner::new(
                    inner.store.clone(),
                    inner.clock.clone(),
                    PruneConfig {
                        retention: inner.config.retention,
                        ..PruneConfig::default()
                    },
                ))
                .run_until(async {
                    let _ = maintenance_stopped.await;
                }),
        );
        tracing::info!(worker = %inner.id, handlers = ?inner.handlers, queues = ?inner.config.queues, "worker started");

        let store = inner.store.clone();
        let clock = inner.clock.clone();
        let wakeups = store.wakeups();
        let result: Result<(), TaskError> = async {
            let mut outage = Duration::ZERO;
            loop {
                if *inner.abort.borrow() {
                    return Ok(());
                }
                // Which of our queues are paused or limited, as last read from the store.
                let (controls, limited) = {
                    let mut controls = inner.controls.lock().await;
                    controls.refresh(&*store, &inner.config.queues).await;
                    (controls.names.clone(), controls.limited)
                };
                let notified = wakeups.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let free = ahead.available_permits().min(unrecorded.available_permits());
                // Sampled before the claim: if nothing of ours was running or unrecorded then,
                // an empty claim means idle. Sampled after, a result written in between (a
                // reschedule or follow-up now due) would be missed.
                let all_free = unrecorded.available_permits() == unrecorded_places;
                // Claim in batches, as a local queue refills: while tasks claimed ahead still
                // wait for an executor, wait until half the places are free, so claims are few
                // and large and the next one overlaps the waiting tasks' runs. With nothing
                // waiting (no prefetch, or the queue ran dry) claim at once.
                let claimed_ahead = concurrency - ahead.available_permits();
                let running = inner.config.concurrency - executors.available_permits();
                let waiting = claimed_ahead.saturating_sub(running);
                let batch_at = (concurrency.min(inner.config.claim_batch) / 2).max(1);
                if free == 0 || (waiting > 0 && free < batch_at) {
                    // Sleep until that changes: an attempt ends (one place more is free than
                    // now) or a waiting task takes an executor. Waiting for a single free
                    // place would return at once while one is free, and spin.
                    let more = free as u32 + 1;
                    tokio::select! {
                        p = async {
                            let a = ahead.acquire_many(more).await;
                            let b = unrecorded.acquire_many(more).await;
                            (a, b)
                        } => drop(p),
                        _ = started.notified(), if free > 0 => {}
                        _ = &mut shutdown => return Ok(()),
                    }
                    continue;
                }
                // While one of its queues is limited, the worker claims only for executors free
                // now, never ahead, whatever its prefetch: a rate counts each start at its
                // claim, and a limit counts a task claimed ahead as running while it waits.
                // Claiming the other queues ahead meanwhile would leave the limited queue's
                // tasks behind their whole backlog; without claims ahead, each claim takes the
                // queues' tasks in priority and due-time order, as a worker without prefetch
                // does. A paused queue gives nothing to a claim and changes nothing here.
                let executors_free = executors.available_permits().saturating_sub(waiting);
                if limited && executors_free == 0 {
                    tokio::select! {
                        // An executor is free once the tasks waiting for one have theirs.
                        p = executors.acquire() => drop(p),
                        _ = &mut shutdown => return Ok(()),
                    }
                    continue;
                }
                let mut limit = free.min(inner.config.claim_batch);
                if limited {
                    limit = limit.min(executors_free);
                }
                let controlled: &[String] = &controls;
                let now = clock.now();
                let claimed = match store
                    .task_claim(ClaimParams {
                        worker: &inner.id,
                        handlers: &inner.handlers,
                        queues: &inner.config.queues,
                        limit: limit as u32,
                        now,
                        lease_until: now + inner.config.lease,
                        promote_limit: policy::PROMOTE_BATCH,
                        controlled,
                    })
                    .await
                {
                    Ok(c) => {
                        outage = Duration::ZERO;
                        if let Some(m) = &inner.config.metrics {
                            m.claimed(c.len());
                        }
                        c
                    }
                    // No retry will help (damaged, not writable, tables changed): stop.
                    Err(e) if e.is_permanent() => return Err(e),
                    Err(e) => {
                        // The database is down or busy: say so, back off, and carry on.
                        outage = (outage * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                        tracing::warn!(worker = %inner.id, error = %e, retry_in = ?outage, "claiming failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(outage) => {}
                            _ = &mut shutdown => return Ok(()),
                        }
                        continue;
                    }
                };
                let got = claimed.len();
                for task in claimed {
                    let permit = ahead
                        .clone()
                        .try_acquire_owned()
                        .expect("a place ahead per claimed task");
                    let recording = unrecorded
                        .clone()
                        .try_acquire_owned()
                        .expect("an unrecorded place per claimed task");
                    let (id, fence) = (task.id, task.fence);
                    // Cancelled while an earlier attempt ran: it ends as cancelled, unrun.
                    let cancel = Cancel::default();
                    if task.cancel_requested {
                        cancel.advance(CancelStage::Requested);
                    }
                    let lease_until = now + inner.config.lease;
                    let earlier = inner.held.lock().unwrap().insert(id, Held { fence, lease_until, abort: None, cancel, finishing: false });
                    // This worker claimed the task again: its earlier claim lost its lease (the
                    // task was rescued meanwhile) before a heartbeat said so. That attempt's
                    // result would be refused; stop it, as a heartbeat would have, so the task
                    // never runs twice at once.
                    if let Some(abort) = earlier.and_then(|h| h.abort) {
                        abort.abort();
                    }
                    let handle = tokio::spawn(executor::execute(
                        inner.clone(),
                        task,
                        (permit, recording),
                        (executors.clone(), started.clone()),
                        done_tx.clone(),
                        abort_rx.clone(),
                    ));
                    if let Some(h) = inner.held.lock().unwrap().get_mut(&id).filter(|h| h.fence == fence) {
                        h.abort = Some(handle.abort_handle());
                    }
                }
                if got == limit {
                    continue;
                }
                if until_idle {
                    // Wait for everything of ours to finish and be recorded, then look again:
                    // follow-ups may be due now.
                    if got == 0 && all_free {
                        // Nothing claimable: a task stuck in `running` under an expired lease
                        // would never become so unless rescued, so rescue before calling it idle.
                        if rescuer.run_once().await?.rescued > 0 {
                            continue;
                        }
                        // Another rescue pass (this worker's own maintenance, or another
                        // process) may have released a task since the claim: look once more.
                        let due = store
                            .task_next_due(&inner.handlers, &inner.config.queues)
                            .await?;
                        if due.is_some_and(|d| d <= clock.now()) {
                            // Due but not claimed: another claim took it meanwhile, or a
                            // queue's limit holds it back until a running task ends.
                            // Either way, a shutdown ends the wait.
                            if controls.is_empty() {
                                tokio::select! {
                                    biased;
                                    _ = &mut shutdown => return Ok(()),
                                    () = tokio::task::yield_now() => {}
                                }
                            } else {
                                tokio::select! {
                                    _ = &mut shutdown => return Ok(()),
                                    () = tokio::time::sleep(queues::LIMITED_RECHECK) => {}
                                }
                            }
                            continue;
                        }
                        return Ok(());
                    }
                    if got == 0 {
                        tokio::select! {
                            all = unrecorded.acquire_many(unrecorded_places as u32) => drop(all),
                            _ = &mut shutdown => return Ok(()),
                        }
                    }
                    continue;
                }
                if got > 0 {
                    continue;
                }
                let next_due = store
                    .task_next_due(&inner.handlers, &inner.config.queues)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(worker = %inner.id, error = %e, "looking for the next due task failed");
                        None
                    });
                let now = clock.now();
                let poll_until = now + inner.config.poll_interval;
                let wake_at = next_due.map_or(poll_until, |d| d.min(poll_until));
                // Due tasks left unclaimed are held back by a queue's limit: look again soon
                // (a running task may end, a rate window pass), not at once.
                let held_back = !controls.is_empty() && wake_at <= now;
                tokio::select! {
                    _ = clock.sleep_until(wake_at), if !held_back => {}
                    _ = tokio::time::sleep(queues::LIMITED_RECHECK), if held_back => {}
                    _ = &mut notified => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
        }
        .await;

        // Stop: give running tasks the grace period, then interrupt the rest.
        if !until_idle {
            tracing::info!(worker = %inner.id, "stopping: no new claims; waiting for running tasks");
        }
        let all = unrecorded_places as u32;
        let mut interrupted = inner.abort.subscribe();
        let finished_in_grace = tokio::select! {
            r = tokio::time::timeout(inner.config.shutdown_grace, unrecorded.acquire_many(all)) => r.is_ok(),
            // Interrupted (a second signal): no more grace.
            _ = interrupted.wait_for(|a| *a) => false,
        };
        if !finished_in_grace {
            if inner.halted.lock().unwrap().is_none() {
                tracing::warn!(worker = %inner.id, "grace period over: interrupting running tasks and releasing them");
            }
            inner.abort.send_replace(true);
            let _ = unrecorded.acquire_many(all).await;
        }
        drop(done_tx);
        // The heartbeat stops between beats: a beat already sent is waited for (a few
        // seconds at most), or it could write the worker's row back after its removal below.
        stop_beating.send_replace(true);
        if tokio::time::timeout(HEARTBEAT_STOP, &mut heartbeat)
            .await
            .is_err()
        {
            heartbeat.abort();
        }
        cancellations.abort();
        give_up.abort();
        // Maintenance ends between elections (a few seconds at most), so that the
        // resignation below is the last word on its leaderships.
        let _ = stop_maintenance.send(());
        if tokio::time::timeout(HEARTBEAT_STOP, &mut maintenance)
            .await
            .is_err()
        {
            maintenance.abort();
        }
        // The result writer ends once every executor has; one that stopped early (a write no
        // retry can fix, or a panic) wrote nothing more, and the worker must not report
        // success over results it lost.
        let _ = completer.await;
        let _ = Maintenance::resign(&*inner.store, &inner.id).await;
        let _ = inner.store.worker_remove(&inner.id).await;
        tracing::info!(worker = %inner.id, "worker stopped");
        let after = self.totals();
        let result = match inner.halted.lock().unwrap().take() {
            Some(e) => result.and(Err(e)),
            None => result,
        };
        result.map(|()| WorkerReport {
            attempts: after.attempts - before.attempts,
            succeeded: after.succeeded - before.succeeded,
            failed: after.failed - before.failed,
            cancelled: after.cancelled - before.cancelled,
            stale: after.stale - before.stale,
        })
    }
}

/// Compare the worker's clock with the database server's, when the store has a clock of its
/// own and the worker's follows real time: refuse to start when they are further apart than
/// [`policy::clock_skew_limit`], and warn when they are drifting apart.
async fn check_clock(inner: &Inner) -> Result<(), TaskError> {
    if !inner.clock.is_real() {
        return Ok(());
    }
    let before = inner.clock.now();
    let Some(server) = inner.store.server_time().await? else {
        return Ok(());
    };
    let half_trip = inner.clock.now().duration_since(before) / 2;
    // The server read its clock somewhere within the round trip: at least this far apart.
    let apart = server.duration_since(before + half_trip);
    let at_least = (apart.abs() - half_trip).max(jiff::SignedDuration::ZERO);
    let lease = inner.config.lease;
    // To the millisecond: finer would only show the noise of the round trip.
    let shown = |d: jiff::SignedDuration| {
        crate::recurrence::format_duration(jiff::SignedDuration::from_millis(
            d.as_millis()
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        ))
    };
    let how = || {
        format!(
            "this machine's clock is {} {} the database server's",
            shown(at_least),
            if apart.is_positive() {
                "behind"
            } else {
                "ahead of"
            },
        )
    };
    match policy::judge_clock_skew(at_least, lease) {
        policy::ClockSkew::Fine => Ok(()),
        policy::ClockSkew::Warn => {
            tracing::warn!(worker = %inner.id, "{}; leases are read on each machine's own clock: keep the clocks in step (NTP)", how());
            Ok(())
        }
        policy::ClockSkew::Refuse => Err(TaskError::Unusable(format!(
            "{}; a worker with a lease of {} needs the two within {} of each other, because \
             leases are read on each machine's own clock: set this machine's clock right \
             (NTP: chrony or systemd-timesyncd) or give the worker a longer lease (--lease)",
            how(),
            shown(jiff::SignedDuration::try_from(lease).unwrap_or(jiff::SignedDuration::MAX)),
            shown(policy::clock_skew_limit(lease)),
        ))),
    }
}
