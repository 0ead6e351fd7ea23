//! The executor: runs one claimed task's attempt under a timeout, a panic guard and the
//! worker's interrupt, and turns its ending into a [`Finish`] through [`policy::decide`].

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use jiff::SignedDuration;
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument;

use super::{Executed, Inner};
use crate::policy::{self, Attempt, Ending};
use crate::rules::{self, CatchUp};
use crate::store::{ClaimedTask, Finish, Next};
use crate::task::{Cancel, CancelStage, Handler, TaskContext};
use crate::{TaskError, prepare};

/// Run one claimed task once an executor permit is free, and hand its result to the completer.
pub(super) async fn execute(
    inner: Arc<Inner>,
    task: ClaimedTask,
    (ahead, unrecorded): (OwnedSemaphorePermit, OwnedSemaphorePermit),
    (executors, started): (Arc<Semaphore>, Arc<Notify>),
    done: mpsc::UnboundedSender<Executed>,
    mut abort: watch::Receiver<bool>,
) {
    let mut task = task;
    let (running, waited) = match executors.clone().try_acquire_owned() {
        Ok(p) => (Some(p), false),
        Err(_) => {
            let running = tokio::select! {
                p = executors.acquire_owned() => Some(p.expect("never closed")),
                // Interrupted while waiting for an executor: release the task unstarted.
                _ = abort.wait_for(|a| *a) => None,
            };
            (running, true)
        }
    };
    started.notify_one();
    // Claimed ahead, it waited for its executor: a pause of its queue meanwhile (as the
    // worker's view of the controls says, at most half a second old) releases it unrun.
    let running = match running {
        Some(_) if waited && inner.paused(&task.queue).await => {
            tracing::info!(task = %task.id, queue = %task.queue, "released unrun: its queue was paused");
            None
        }
        running => running,
    };
    // The attempt starts now: after the claim has returned (and, claimed ahead, after an
    // executor came free), so the run history never shows it starting before the previous
    // attempt's result was written.
    task.started_at = inner.clock.now();
    let (handler, queue) = (task.handler.clone(), task.queue.clone());
    let metrics = inner.config.metrics.clone();
    if let (Some(m), Some(_)) = (&metrics, &running) {
        let secs = |since: jiff::Timestamp| task.started_at.duration_since(since).as_secs_f64();
        m.started(&handler, &queue, secs(task.due_at), secs(task.timestamp));
    }
    // Every attempt runs in a span naming the task, so any subscriber sees which one it was.
    let span = tracing::info_span!(
        "attempt",
        task = %task.id,
        handler = %task.handler,
        attempt = task.attempts,
        queue = %task.queue,
    );
    let cancel = inner.cancel_of(task.id, task.fence);
    let (attempts, max_attempts) = (task.attempts, task.max_attempts);
    // A person's cancel that came before the attempt started decides, whatever else would
    // have released the task unstarted (a pause, a shutdown).
    let cancelled_at_start = cancel.stage() >= CancelStage::Requested;
    let finish = match running {
        _ if cancelled_at_start => cancelled_unrun(&inner, &task),
        // Never started: released as it was, no run written.
        Some(_) if *abort.borrow() => released(&inner, &task),
        Some(_) => {
            run_one(&inner, task, &mut abort, &cancel)
                .instrument(span)
                .await
        }
        None => released(&inner, &task),
    };
    // A cancel that arrived while the attempt ran decides, whatever the attempt came to.
    let finish = match cancel.stage() {
        CancelStage::None => finish,
        _ if cancelled_at_start => finish,
        stage => cancelled(finish, stage, attempts, max_attempts),
    };
    drop(running);
    inner.mark_finishing(finish.id, finish.fence);
    // The attempt is over: the claimer may take another task while this result is written.
    // Not so for a task that moved to another occurrence without running (skipped, or passed
    // over for the latest, keeping its place among the due tasks): it keeps its place ahead
    // until the move is written, so a claim after it finds the task where it moved, not still
    // running, and does not take what is due after that place first.
    let moved = !finish.ran && matches!(finish.next, crate::store::Next::Reschedule { .. });
    let ahead = if moved {
        Some(ahead)
    } else {
        drop(ahead);
        None
    };
    let _ = done.send(Executed {
        finish,
        labels: (handler, queue),
        _permit: unrecorded,
        _ahead: ahead,
    });
}

/// Catches a panic in the wrapped future, turning it into an error; and a panic while the
/// future is dropped unfinished (a timeout, a cancel or an interrupt stops the attempt, and
/// the handler's own drop code runs then), which is logged: the attempt already has its
/// ending, and a panic escaping here would end the executor without a result, leaving the
/// task held under leases the heartbeat renews for as long as the worker lives.
struct CatchUnwind<F>(Option<Pin<Box<F>>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let fut = fut.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                self.0 = None;
                Poll::Ready(Ok(v))
            }
            // Not polled again; dropped (its drop guarded too) with this.
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

impl<F> Drop for CatchUnwind<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.0.take() {
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(fut))) {
                tracing::warn!(
                    panic = %panic_message(p.as_ref()),
                    "a handler panicked while its stopped attempt was dropped"
                );
            }
        }
    }
}

pub(super) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// How a guarded call of `run` or `on_complete` ended.
enum Call {
    Ok,
    Failed(String),
    TimedOut(String),
    Interrupted,
}

/// The finish of an attempt during which a person cancelled its task: the run is recorded as
/// cancelled, with how the attempt itself ended, and the task is cancelled (no retry, no next
/// occurrence, no follow-ups).
fn cancelled(mut finish: Finish, stage: CancelStage, attempts: u32, max_attempts: u32) -> Finish {
    let decision = policy::decide(
        Ending::Cancelled,
        Attempt {
            attempts,
            max_attempts,
            started_at: finish.started_at,
            finished_at: finish.finished_at,
        },
        |_| SignedDuration::ZERO,
    );
    let how = match (stage, &finish.error) {
        (CancelStage::Enforced, _) => {
            "the attempt was stopped when the worker's grace period ended".to_string()
        }
        (_, Some(error)) => format!("the attempt ended with: {error}"),
        (_, None) => {
            "the attempt finished before it stopped; what it scheduled is dropped".to_string()
        }
    };
    finish.error = Some(format!("cancelled while running; {how}"));
    finish.outcome = decision.outcome.unwrap_or(crate::Outcome::Cancelled);
    finish.next = decision.next;
    finish.ran = true;
    finish.follow_ups.clear();
    finish
}

async fn guarded(
    handler: &Arc<dyn Handler>,
    ctx: &mut TaskContext,
    complete: bool,
    abort: &mut watch::Receiver<bool>,
    cancel: &Cancel,
) -> Call {
    let timeout = handler.timeout();
    let fut = async {
        if complete {
            handler.on_complete(ctx).await
        } else {
            handler.run(ctx).await
        }
    };
    let guarded = tokio::time::timeout(timeout, CatchUnwind(Some(Box::pin(fut))));
    tokio::select! {
        r = guarded => match r {
            Ok(Ok(Ok(()))) => Call::Ok,
            Ok(Ok(Err(e))) => Call::Failed(e.to_string()),
            Ok(Err(p)) => Call::Failed(format!("panicked: {}", panic_message(p.as_ref()))),
            Err(_) => Call::TimedOut(format!("timed out after {}", humantime(timeout))),
        },
        _ = abort.wait_for(|a| *a) => Call::Interrupted,
        () = cancel.reached(CancelStage::Enforced) => Call::Interrupted,
    }
}

fn humantime(d: Duration) -> String {
    format!(
        "{:#}",
        SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
    )
}

/// The finish of an attempt, decided by the policy from how it ended.
fn finish(
    inner: &Inner,
    task: &ClaimedTask,
    ending: Ending,
    error: Option<String>,
    backoff: impl FnOnce(u32) -> SignedDuration,
) -> Finish {
    let finished_at = inner.clock.now().max(task.started_at);
    let decision = policy::decide(
        ending,
        Attempt {
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            started_at: task.started_at,
            finished_at,
        },
        backoff,
    );
    Finish {
        id: task.id,
        fence: task.fence,
        attempt: task.attempts,
        timestamp: task.timestamp,
        started_at: task.started_at,
        finished_at,
        worker: inner.id.clone(),
        ran: decision.outcome.is_some(),
        outcome: decision.outcome.unwrap_or(crate::Outcome::Succeeded),
        error,
        next: decision.next,
        follow_ups: Vec::new(),
        expired_before: None,
    }
}

/// A task claimed ahead whose attempt never started before the worker shut down.
fn released(inner: &Inner, task: &ClaimedTask) -> Finish {
    finish(inner, task, Ending::Released, None, |_| {
        SignedDuration::ZERO
    })
}

/// An attempt stopped by the worker's interrupt (shutdown past its grace, or a second signal).
fn interrupted(inner: &Inner, task: &ClaimedTask) -> Finish {
    finish(
        inner,
        task,
        Ending::Interrupted,
        Some(format!(
            "worker {} shut down before the attempt finished",
            inner.id
        )),
        |_| SignedDuration::ZERO,
    )
}

/// A task a person cancelled before its attempt started (found at its claim, or while it
/// waited for an executor): the handler is not called; [`cancelled`] records it.
fn cancelled_unrun(inner: &Inner, task: &ClaimedTask) -> Finish {
    finish(
        inner,
        task,
        Ending::Cancelled,
        Some("cancelled before this attempt started; the handler was not run".to_string()),
        |_| SignedDuration::ZERO,
    )
}

/// Decode a claimed task's data: a JSON object, as it was stored. Anything else is an error
/// naming the task and the field, and the handler is not called.
fn decode_data(task: &ClaimedTask) -> Result<Value, TaskError> {
    match serde_json::from_str::<Value>(&task.data) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(TaskError::failed(format!(
            "task {} cannot run: its stored field 'data' is not a JSON object; the task is kept \
             as it is: repair its data in the database, then retry it",
            task.id
        ))),
        Err(e) => Err(TaskError::failed(format!(
            "task {} cannot run: its stored field 'data' is not valid JSON ({e}); the task is \
             kept as it is: repair its data in the database, then retry it",
            task.id
        ))),
    }
}

pub(super) async fn run_one(
    inner: &Inner,
    task: ClaimedTask,
    abort: &mut watch::Receiver<bool>,
    cancel: &Cancel,
) -> Finish {
    let Some(handler) = inner.registry.get(&task.handler).cloned() else {
        // Claims name only this worker's handlers, so this cannot happen; stay safe anyway.
        return finish(
            inner,
            &task,
            Ending::Lost,
            Some(format!(
                "worker {} has no handler '{}'",
                inner.id, task.handler
            )),
            |_| SignedDuration::ZERO,
        );
    };
    let rule = match task.rule.as_deref().map(rules::parse).transpose() {
        Ok(rule) => rule,
        Err(e) => {
            let msg = format!(
                "task {} cannot run: its stored field 'rule' {e}; the task is kept as it is",
                task.id
            );
            tracing::warn!(task = %task.id, error = %msg, "undecodable task");
            return finish(inner, &task, Ending::Undecodable, Some(msg), |_| {
                SignedDuration::ZERO
            });
        }
    };
    if let Some(rule) = &rule {
        match rules::catch_up(rule, task.timestamp, inner.clock.now()) {
            // A newer occurrence than the claimed one is to run (`latest`): it is an
            // occurrence of its own, with attempts of its own. The task moves to it, keeping
            // the claimed one's place among the due tasks, and the next claim (at once: it is
            // due, ahead of what became due later) runs it as its first attempt; run here, it
            // would carry the passed-over occurrence's attempts (a retry could make it dead
            // after one failure) and leave that occurrence as the stored one.
            CatchUp::Run(t) if t != task.timestamp => {
                tracing::info!(task = %task.id, "missed occurrences passed over by the task's policy");
                return finish(
                    inner,
                    &task,
                    Ending::PassedOver {
                        to: t,
                        due_at: task.due_at,
                    },
                    None,
                    |_| SignedDuration::ZERO,
                );
            }
            CatchUp::Run(_) => {}
            CatchUp::Skip(next) => {
                tracing::info!(task = %task.id, "missed occurrences skipped by the task's policy");
                return finish(inner, &task, Ending::Skipped { next }, None, |_| {
                    SignedDuration::ZERO
                });
            }
        }
    }
    let data = match decode_data(&task) {
        Ok(data) => data,
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "undecodable task");
            return finish(
                inner,
                &task,
                Ending::Undecodable,
                Some(e.to_string()),
                |_| SignedDuration::ZERO,
            );
        }
    };
    let mut ctx = TaskContext {
        id: task.id,
        handler: task.handler.clone(),
        data,
        timestamp: task.timestamp,
        last_run_on: task.last_run_on,
        attempts: task.attempts,
        is_recurring: task.is_recurring,
        now: task.started_at,
        worker: inner.id.clone(),
        next_run: None,
        follow_ups: Vec::new(),
        cancel: cancel.clone(),
    };
    // The handler's own code, so guarded too: a panic here would end this attempt's task
    // with nothing recorded, and the worker would hold the task under its lease for good.
    let backoff = |n| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.backoff(n)))
            .unwrap_or_else(|_| {
                tracing::warn!(task = %task.id, handler = %task.handler, "the handler's backoff panicked; using the default backoff");
                crate::task::default_backoff(n)
            })
    };
    match guarded(&handler, &mut ctx, false, abort, cancel).await {
        Call::Ok => {}
        Call::Failed(msg) => {
            tracing::info!(task = %task.id, handler = %task.handler, attempt = task.attempts, error = %msg, "attempt failed");
            return finish(inner, &task, Ending::Failed, Some(msg), backoff);
        }
        Call::TimedOut(msg) => {
            tracing::info!(task = %task.id, handler = %task.handler, attempt = task.attempts, error = %msg, "attempt timed out");
            return finish(inner, &task, Ending::TimedOut, Some(msg), backoff);
        }
        Call::Interrupted => return interrupted(inner, &task),
    }
    // "N minutes from now" in `on_complete` counts from when it runs, not from the start of
    // an attempt that may have taken a while.
    ctx.now = inner.clock.now().max(ctx.now);
    match guarded(&handler, &mut ctx, true, abort, cancel).await {
        Call::Ok => {}
        Call::Interrupted => return interrupted(inner, &task),
        Call::Failed(m) | Call::TimedOut(m) => {
            // The work itself succeeded; re-running it could repeat its effects.
            tracing::warn!(task = %task.id, error = %m, "on_complete failed; the task is dead and needs a look");
            let msg = format!("on_complete failed: {m}");
            return finish(inner, &task, Ending::Unfinishable, Some(msg), backoff);
        }
    }
    let now = inner.clock.now();
    let mut follow_ups = Vec::with_capacity(ctx.follow_ups.len());
    for t in ctx.follow_ups.drain(..) {
        // A handler's `check` runs here: guarded like the rest of its code.
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prepare::prepare(&inner.registry, t, now)
        }));
        match prepared {
            Ok(Ok(row)) => follow_ups.push(row),
            Ok(Err(e)) => {
                let msg = format!("on_complete enqueued a bad follow-up: {e}");
                return finish(inner, &task, Ending::Unfinishable, Some(msg), backoff);
            }
            Err(_) => {
                let msg = "on_complete enqueued a follow-up whose check panicked".to_string();
                return finish(inner, &task, Ending::Unfinishable, Some(msg), backoff);
            }
        }
    }
    let next = match (ctx.next_run, &rule) {
        (Some(t), _) => Some(t),
        (None, Some(rule)) => rule.next_after(task.timestamp),
        (None, None) => None,
    };
    let mut done = finish(inner, &task, Ending::Succeeded { next }, None, backoff);
    match prepare::repeated_within(&follow_ups) {
        // Two follow-ups that cannot both be stored (one recurring task twice, one unique key
        // twice): refused as a follow-up that meets a stored task is (the completer), the
        // attempt recorded without its follow-ups, naming them by their places: their ids
        // exist nowhere.
        Some(e) => {
            tracing::warn!(task = %task.id, error = %e, "a follow-up task was refused; recording the attempt without it");
            done.error = Some(format!("on_complete follow-up refused: follow-up {e}"));
        }
        None => done.follow_ups = follow_ups,
    }
    debug_assert!(!matches!(done.next, Next::Retry { .. }));
    done
}
