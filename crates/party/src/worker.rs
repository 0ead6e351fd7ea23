//! The worker runtime: claims due tasks in batches, runs them on tokio with bounded
//! concurrency, and records their results in batches (group commit).
//!
//! One claimer loop feeds executors; each executor holds a concurrency permit until its result
//! is durably written, so "no permits out" means nothing of ours is running or unrecorded.
//! A heartbeat loop renews leases and rescues tasks whose workers died.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use jiff::SignedDuration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::client::Party;
use crate::model::{DEFAULT_QUEUE, Outcome, WorkerInfo};
use crate::rules::{self, CatchUp};
use crate::store::{ClaimParams, ClaimedTask, Finish, FinishResult, HeartbeatParams, Next};
use crate::task::{Handler, TaskContext};
use crate::{TaskError, TaskId};

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
    /// this many more wait in the worker, already claimed, so the next claim overlaps the
    /// running ones and the writing of their results. It raises throughput for short tasks;
    /// for long tasks it keeps work waiting here that an idle worker elsewhere could run.
    pub prefetch: usize,
    /// Results are written in batches of at most this many (default 256).
    pub finish_batch: usize,
    /// How long a finished result may wait for others to share its write (default 1 ms).
    pub flush_delay: Duration,
    /// On shutdown, how long running tasks get to finish before they are interrupted and
    /// released (default 30 s).
    pub shutdown_grace: Duration,
    /// The worker's id; by default host name, process id and a random suffix.
    pub id: Option<String>,
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
        }
    }
}

/// What a worker did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Attempts run (any outcome).
    pub attempts: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed or timed out.
    pub failed: u64,
}

/// Runs tasks. Made by [`Party::worker`].
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    party: Party,
    config: WorkerConfig,
    id: String,
    handlers: Vec<String>,
    attempts: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Tasks this worker holds: their claim's fence, and a handle to stop the attempt if the
    /// lease is lost.
    held: std::sync::Mutex<std::collections::HashMap<TaskId, Held>>,
}

struct Held {
    fence: i64,
    abort: Option<tokio::task::AbortHandle>,
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

struct Executed {
    finish: Finish,
    _permit: OwnedSemaphorePermit,
}

impl Worker {
    pub(crate) fn new(party: Party, mut config: WorkerConfig) -> Worker {
        config.concurrency = config.concurrency.max(1);
        config.claim_batch = config.claim_batch.max(1);
        config.finish_batch = config.finish_batch.max(1);
        let id = config.id.clone().unwrap_or_else(default_worker_id);
        let handlers = party.registry().names();
        Worker {
            inner: Arc::new(Inner {
                party,
                config,
                id,
                handlers,
                attempts: AtomicU64::new(0),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                held: Default::default(),
            }),
        }
    }

    /// This worker's id, as recorded in run histories.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Run until nothing this worker can run is due and none of its tasks is running. Future
    /// tasks, retries waiting for their backoff and tasks of other handlers do not keep it.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the database fails.
    pub async fn run_until_idle(&self) -> Result<WorkerReport, TaskError> {
        self.run_inner(None).await
    }

    /// Run until `shutdown` completes; then stop claiming, give running tasks the grace period,
    /// interrupt and release the rest, and return.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the database fails.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, TaskError> {
        self.run_inner(Some(Box::pin(shutdown))).await
    }

    fn totals(&self) -> WorkerReport {
        WorkerReport {
            attempts: self.inner.attempts.load(Ordering::Relaxed),
            succeeded: self.inner.succeeded.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
        }
    }

    async fn run_inner(
        &self,
        shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>>,
    ) -> Result<WorkerReport, TaskError> {
        let inner = &self.inner;
        let before = self.totals();
        let until_idle = shutdown.is_none();
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        // Claimed tasks hold a slot until their result is written; running ones also hold an
        // executor permit.
        let concurrency = inner.config.concurrency + inner.config.prefetch;
        let slots = Arc::new(Semaphore::new(concurrency));
        let executors = Arc::new(Semaphore::new(inner.config.concurrency));
        // Announce the worker first: if the database cannot be reached, fail before anything
        // runs in the background.
        inner.beat().await?;
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Executed>();
        let (abort_tx, abort_rx) = watch::channel(false);
        let completer = tokio::spawn(completer(inner.clone(), done_rx, slots.clone()));
        let heartbeat = tokio::spawn(heartbeat(inner.clone()));
        tracing::info!(worker = %inner.id, handlers = ?inner.handlers, queues = ?inner.config.queues, "worker started");

        let store = inner.party.store().clone();
        let clock = inner.party.clock().clone();
        let wakeups = store.wakeups();
        let result: Result<(), TaskError> = async {
            let mut outage = Duration::ZERO;
            loop {
                let notified = wakeups.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let free = slots.available_permits();
                // Sampled before the claim: if nothing of ours was running or unrecorded then,
                // an empty claim means idle. Sampled after, a result written in between (a
                // reschedule or follow-up now due) would be missed.
                let all_free = free == concurrency;
                if free == 0 {
                    tokio::select! {
                        p = slots.clone().acquire_owned() => drop(p),
                        _ = &mut shutdown => return Ok(()),
                    }
                    continue;
                }
                let limit = free.min(inner.config.claim_batch);
                let now = clock.now();
                let claimed = match store
                    .task_claim(ClaimParams {
                        worker: &inner.id,
                        handlers: &inner.handlers,
                        queues: &inner.config.queues,
                        limit: limit as u32,
                        now,
                        lease_until: now + inner.config.lease,
                    })
                    .await
                {
                    Ok(c) => {
                        outage = Duration::ZERO;
                        c
                    }
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
                    let permit = slots
                        .clone()
                        .try_acquire_owned()
                        .expect("a slot per claimed task");
                    let (id, fence) = (task.id, task.fence);
                    inner.held.lock().unwrap().insert(id, Held { fence, abort: None });
                    let handle = tokio::spawn(execute(
                        inner.clone(),
                        task,
                        permit,
                        executors.clone(),
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
                        return Ok(());
                    }
                    if got == 0 {
                        let all = slots.acquire_many(concurrency as u32).await.expect("open");
                        drop(all);
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
                let poll_until = clock.now() + inner.config.poll_interval;
                let wake_at = next_due.map_or(poll_until, |d| d.min(poll_until));
                tokio::select! {
                    _ = clock.sleep_until(wake_at) => {}
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
        let all = concurrency as u32;
        if tokio::time::timeout(inner.config.shutdown_grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(worker = %inner.id, "grace period over: interrupting running tasks and releasing them");
            let _ = abort_tx.send(true);
            let _ = slots.acquire_many(all).await;
        }
        drop(done_tx);
        heartbeat.abort();
        let _ = completer.await;
        let _ = inner.party.store().worker_remove(&inner.id).await;
        tracing::info!(worker = %inner.id, "worker stopped");
        let after = self.totals();
        result.map(|()| WorkerReport {
            attempts: after.attempts - before.attempts,
            succeeded: after.succeeded - before.succeeded,
            failed: after.failed - before.failed,
        })
    }
}

impl Inner {
    /// Renew the leases of the held tasks; returns the ones lost, with the fence presented.
    async fn beat(&self) -> Result<Vec<(TaskId, i64)>, TaskError> {
        let held: Vec<(TaskId, i64)> = self
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.fence))
            .collect();
        let now = self.party.clock().now();
        let info = WorkerInfo {
            id: self.id.clone(),
            handlers: self.handlers.clone(),
            queues: self.config.queues.clone(),
            last_seen: now,
        };
        let lost = self
            .party
            .store()
            .task_heartbeat(HeartbeatParams {
                worker: &info,
                tasks: &held,
                lease_until: now + self.config.lease,
                now,
            })
            .await?;
        Ok(held
            .into_iter()
            .filter(|(id, _)| lost.contains(id))
            .collect())
    }
}

async fn heartbeat(inner: Arc<Inner>) {
    let every = (inner.config.lease / 3).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match inner.beat().await {
            Ok(lost) => {
                for (id, fence) in lost {
                    // Only a task still held under the fence the heartbeat presented is lost;
                    // one whose result was written meanwhile (or claimed again) is not.
                    let held = {
                        let mut held = inner.held.lock().unwrap();
                        match held.get(&id) {
                            Some(h) if h.fence == fence => held.remove(&id),
                            _ => continue,
                        }
                    };
                    // Another worker owns the task now: stop our attempt; its result would be
                    // refused anyway.
                    if let Some(abort) = held.and_then(|h| h.abort) {
                        abort.abort();
                    }
                    tracing::warn!(worker = %inner.id, task = %id, "lease lost: the task was rescued by another worker; stopping our attempt");
                }
            }
            Err(e) => tracing::warn!(worker = %inner.id, error = %e, "heartbeat failed; retrying"),
        }
        match inner
            .party
            .store()
            .task_rescue(inner.party.clock().now())
            .await
        {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(
                    count = ids.len(),
                    "rescued tasks whose workers stopped renewing their leases"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescue failed; retrying"),
        }
    }
}

async fn completer(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Executed>,
    slots: Arc<Semaphore>,
) {
    let max = inner.config.finish_batch;
    let concurrency = inner.config.concurrency + inner.config.prefetch;
    let mut batch: Vec<Executed> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + inner.config.flush_delay;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Every task this worker holds is already in the batch: nothing else can
                    // join it, so waiting would only delay the write.
                    let held = concurrency - slots.available_permits();
                    if batch.len() >= held {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(e)) => batch.push(e),
                        _ => break,
                    }
                }
            }
        }
        flush(&inner, &mut batch).await;
    }
}

async fn flush(inner: &Inner, batch: &mut Vec<Executed>) {
    let finishes: Vec<Finish> = batch.iter().map(|e| e.finish.clone()).collect();
    let mut delay = Duration::from_millis(50);
    let results = loop {
        match inner.party.store().task_finish(finishes.clone()).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "recording results failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut retry_without_follow_ups = Vec::new();
    for (f, r) in finishes.into_iter().zip(results) {
        match r {
            FinishResult::Applied => {}
            FinishResult::Stale => tracing::warn!(
                task = %f.id, fence = f.fence,
                "result refused: the claim is stale (the task was rescued or changed meanwhile)"
            ),
            FinishResult::Duplicate(e) => {
                tracing::warn!(task = %f.id, error = %e, "a follow-up task was refused; recording the attempt without it");
                let mut f = f;
                f.follow_ups.clear();
                let msg = format!("on_complete follow-up refused: {e}");
                f.error = Some(f.error.map_or(msg.clone(), |old| format!("{old}; {msg}")));
                retry_without_follow_ups.push(f);
            }
        }
    }
    if !retry_without_follow_ups.is_empty() {
        if let Err(e) = inner
            .party
            .store()
            .task_finish(retry_without_follow_ups)
            .await
        {
            tracing::warn!(error = %e, "recording results failed; the leases will expire and the tasks be rescued");
        }
    }
    {
        let mut held = inner.held.lock().unwrap();
        for e in batch.iter() {
            if held.get(&e.finish.id).map(|h| h.fence) == Some(e.finish.fence) {
                held.remove(&e.finish.id);
            }
        }
    }
    batch.clear();
}

/// Catches a panic in the wrapped future, turning it into an error.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

enum Attempt {
    Ok,
    Failed(String),
    TimedOut(String),
    Interrupted,
}

async fn guarded(
    handler: &Arc<dyn Handler>,
    ctx: &mut TaskContext,
    complete: bool,
    abort: &mut watch::Receiver<bool>,
) -> Attempt {
    let timeout = handler.timeout();
    let fut = async {
        if complete {
            handler.on_complete(ctx).await
        } else {
            handler.run(ctx).await
        }
    };
    let guarded = tokio::time::timeout(timeout, CatchUnwind(Box::pin(fut)));
    tokio::select! {
        r = guarded => match r {
            Ok(Ok(Ok(()))) => Attempt::Ok,
            Ok(Ok(Err(e))) => Attempt::Failed(e.to_string()),
            Ok(Err(p)) => Attempt::Failed(format!("panicked: {}", panic_message(p.as_ref()))),
            Err(_) => Attempt::TimedOut(format!("timed out after {}", humantime(timeout))),
        },
        _ = abort.wait_for(|a| *a) => Attempt::Interrupted,
    }
}

fn humantime(d: Duration) -> String {
    format!(
        "{:#}",
        SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
    )
}

async fn execute(
    inner: Arc<Inner>,
    task: ClaimedTask,
    permit: OwnedSemaphorePermit,
    executors: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Executed>,
    mut abort: watch::Receiver<bool>,
) {
    let mut task = task;
    let running = executors.acquire_owned().await.expect("never closed");
    // The attempt starts now: after the claim has returned (and, claimed ahead, after an
    // executor came free), so the run history never shows it starting before the previous
    // attempt's result was written.
    task.started_at = inner.party.clock().now();
    let finish = run_one(&inner, task, &mut abort).await;
    drop(running);
    inner.attempts.fetch_add(1, Ordering::Relaxed);
    match finish.outcome {
        Outcome::Succeeded => inner.succeeded.fetch_add(1, Ordering::Relaxed),
        _ => inner.failed.fetch_add(1, Ordering::Relaxed),
    };
    let _ = done.send(Executed {
        finish,
        _permit: permit,
    });
}

async fn run_one(inner: &Inner, task: ClaimedTask, abort: &mut watch::Receiver<bool>) -> Finish {
    let clock = inner.party.clock();
    let handler = inner
        .party
        .registry()
        .get(&task.handler)
        .expect("claimed only registered handlers")
        .clone();
    let mut finish = Finish {
        id: task.id,
        fence: task.fence,
        attempt: task.attempts,
        timestamp: task.timestamp,
        started_at: task.started_at,
        finished_at: task.started_at,
        worker: inner.id.clone(),
        outcome: Outcome::Succeeded,
        error: None,
        next: Next::Done,
        follow_ups: Vec::new(),
        ran: true,
    };
    let rule = match task.rule.as_deref().map(rules::parse).transpose() {
        Ok(rule) => rule,
        Err(e) => {
            finish.error = Some(e.to_string());
            finish.next = Next::Dead;
            finish.ran = false;
            return finish;
        }
    };
    let mut timestamp = task.timestamp;
    if let Some(rule) = &rule {
        match rules::catch_up(rule, task.timestamp, clock.now()) {
            CatchUp::Run(t) => timestamp = t,
            CatchUp::Skip(next) => {
                tracing::info!(task = %task.id, "missed occurrences skipped by the task's policy");
                finish.ran = false;
                finish.next = match next {
                    Some(timestamp) => Next::Reschedule {
                        timestamp,
                        last_run_on: None,
                    },
                    None => Next::Done,
                };
                return finish;
            }
        }
    }
    finish.timestamp = timestamp;
    let data = serde_json::from_str(&task.data).unwrap_or(serde_json::Value::Null);
    let mut ctx = TaskContext {
        id: task.id,
        handler: task.handler.clone(),
        data,
        timestamp,
        last_run_on: task.last_run_on,
        attempts: task.attempts,
        is_recurring: task.is_recurring,
        now: task.started_at,
        worker: inner.id.clone(),
        next_run: None,
        follow_ups: Vec::new(),
    };
    let outcome = guarded(&handler, &mut ctx, false, abort).await;
    let outcome = match outcome {
        Attempt::Ok => match guarded(&handler, &mut ctx, true, abort).await {
            Attempt::Ok => Attempt::Ok,
            Attempt::Interrupted => Attempt::Interrupted,
            Attempt::Failed(m) | Attempt::TimedOut(m) => {
                // The work itself succeeded; re-running it could repeat its effects.
                finish.finished_at = clock.now();
                finish.error = Some(format!("on_complete failed: {m}"));
                finish.next = Next::Dead;
                tracing::warn!(task = %task.id, error = %m, "on_complete failed; the task is dead and needs a look");
                return finish;
            }
        },
        other => other,
    };
    finish.finished_at = clock.now();
    match outcome {
        Attempt::Ok => {
            let mut follow_ups = Vec::with_capacity(ctx.follow_ups.len());
            for t in ctx.follow_ups.drain(..) {
                match inner.party.prepare(t, finish.finished_at) {
                    Ok(row) => follow_ups.push(row),
                    Err(e) => {
                        finish.error = Some(format!("on_complete enqueued a bad follow-up: {e}"));
                        finish.next = Next::Dead;
                        return finish;
                    }
                }
            }
            finish.follow_ups = follow_ups;
            let next = match (ctx.next_run, &rule) {
                (Some(t), _) => Some(t),
                (None, Some(rule)) => rule.next_after(timestamp),
                (None, None) => None,
            };
            finish.next = match next {
                Some(t) => Next::Reschedule {
                    timestamp: t,
                    last_run_on: Some(task.started_at),
                },
                None => Next::Done,
            };
        }
        Attempt::Failed(msg) | Attempt::TimedOut(msg) => {
            let timed_out = msg.starts_with("timed out");
            finish.outcome = if timed_out {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            };
            tracing::info!(task = %task.id, handler = %task.handler, attempt = task.attempts, error = %msg, "attempt failed");
            finish.error = Some(msg);
            finish.next = if task.attempts >= task.max_attempts {
                Next::Dead
            } else {
                Next::Retry {
                    due_at: finish.finished_at + handler.backoff(task.attempts),
                }
            };
        }
        Attempt::Interrupted => {
            finish.outcome = Outcome::Lost;
            finish.error = Some(format!(
                "worker {} shut down before the attempt finished",
                inner.id
            ));
            finish.next = if task.attempts >= task.max_attempts {
                Next::Dead
            } else {
                Next::Retry {
                    due_at: finish.finished_at,
                }
            };
        }
    }
    finish
}
