//! Cancelling a running task: the handler is told, the worker drops the attempt after its
//! grace, the run is recorded as cancelled and the task is cancelled, not retried or
//! rescheduled; a task whose worker died meanwhile is cancelled by the rescue.

use std::time::{Duration, Instant};

use party::jiff::SignedDuration;
use party::store::{ClaimParams, Finish, FinishResult, Next};
use party::{
    NewTask, Outcome, Party, Registry, State, Task, TaskContext, TaskError, TaskId, WorkerConfig,
};

use party::Clock;

use crate::common::{Backend, expire_and_rescue, fixture, on_every_backend, start};

/// Waits for a cancel, then stops with an error (a handler that cooperates).
struct Polite;

impl Task for Polite {
    const NAME: &'static str = "polite";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        tokio::select! {
            () = ctx.cancelled() => {
                assert!(ctx.is_cancelled());
                Err(TaskError::failed("stopped at the cancel"))
            }
            () = tokio::time::sleep(Duration::from_secs(600)) => Ok(()),
        }
    }
}

/// Ignores cancels: only the grace ends it.
struct Stubborn;

impl Task for Stubborn {
    const NAME: &'static str = "stubborn";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Ok(())
    }
}

/// A recurring task that returns Ok when cancelled and schedules its next run.
struct Every;

impl Task for Every {
    const NAME: &'static str = "every";
    const IS_RECURRING: bool = true;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.cancelled().await;
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.schedule_next_run_at(ctx.timestamp() + SignedDuration::from_hours(1))
    }
}

fn registry() -> Registry {
    Registry::new()
        .register(Polite)
        .register(Stubborn)
        .register(Every)
}

async fn wait_for(party: &Party, id: TaskId, state: State, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let task = party.get(id).await.unwrap();
        if task.state == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} is {:?}, not {state:?}, after {within:?}",
            task.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quick_grace(grace: Duration) -> WorkerConfig {
    WorkerConfig {
        shutdown_grace: grace,
        ..WorkerConfig::default()
    }
}

async fn a_handler_sees_the_cancel_and_the_task_is_cancelled(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("polite")).await.unwrap();
    let metrics = std::sync::Arc::new(party::metrics::WorkerMetrics::new());
    let worker = start(f.party.worker(WorkerConfig {
        metrics: Some(metrics.clone()),
        ..quick_grace(Duration::from_secs(600))
    }));
    wait_for(&f.party, id, State::Running, Duration::from_secs(10)).await;
    let asked = Instant::now();
    let task = f.party.cancel(id).await.unwrap();
    assert_eq!(task.state, State::Running);
    assert!(task.cancel_requested);
    // Learned within a second (plus scheduling slack), long before the grace.
    wait_for(&f.party, id, State::Cancelled, Duration::from_secs(5)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs.len(), 1);
    assert_eq!(task.runs[0].outcome, Outcome::Cancelled);
    let error = task.runs[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("cancelled while running"), "{error}");
    assert!(error.contains("stopped at the cancel"), "{error}");
    // The worker goes on with other work.
    let next = f.party.add(NewTask::new("polite")).await.unwrap();
    wait_for(&f.party, next, State::Running, Duration::from_secs(10)).await;
    f.party.cancel(next).await.unwrap();
    wait_for(&f.party, next, State::Cancelled, Duration::from_secs(5)).await;
    // Counted as cancelled, apart from failures, in the report as in the metrics.
    let report = worker.stop().await;
    assert_eq!(
        (
            report.attempts,
            report.succeeded,
            report.failed,
            report.cancelled
        ),
        (2, 0, 0, 2),
        "{report:?}"
    );
    assert_eq!(metrics.runs("polite", "default", Outcome::Cancelled), 2);
    assert_eq!(metrics.runs("polite", "default", Outcome::Failed), 0);
}

async fn a_handler_that_ignores_the_cancel_is_stopped_after_the_grace(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("stubborn")).await.unwrap();
    let worker = start(f.party.worker(quick_grace(Duration::from_secs(1))));
    wait_for(&f.party, id, State::Running, Duration::from_secs(10)).await;
    f.party.cancel(id).await.unwrap();
    wait_for(&f.party, id, State::Cancelled, Duration::from_secs(6)).await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs[0].outcome, Outcome::Cancelled);
    let error = task.runs[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("grace period"), "{error}");
    worker.stop().await;
}

async fn a_cancelled_recurring_task_is_not_rescheduled(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("every")).await.unwrap();
    let worker = start(f.party.worker(quick_grace(Duration::from_secs(600))));
    wait_for(&f.party, id, State::Running, Duration::from_secs(10)).await;
    f.party.cancel(id).await.unwrap();
    wait_for(&f.party, id, State::Cancelled, Duration::from_secs(5)).await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs[0].outcome, Outcome::Cancelled);
    assert_eq!(task.last_run_on, None, "no next occurrence was written");
    let error = task.runs[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("what it scheduled is dropped"), "{error}");
    worker.stop().await;
    // A person can bring it back.
    assert_eq!(f.party.retry(id).await.unwrap().state, State::Scheduled);
}

async fn a_cancel_whose_worker_died_is_applied_by_the_rescue(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("stubborn")).await.unwrap();
    // Claimed by a worker that then dies: nobody runs it, nobody heartbeats.
    let now = f.clock.now();
    let claimed = f
        .party
        .store()
        .task_claim(ClaimParams {
            worker: "gone",
            handlers: &["stubborn".to_string()],
            queues: &["default".to_string()],
            limit: 1,
            now,
            lease_until: now + SignedDuration::from_secs(30),
            promote_limit: 10,
            controlled: &[],
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(f.party.cancel(id).await.unwrap().cancel_requested);
    f.clock.advance(SignedDuration::from_secs(30));
    expire_and_rescue(&f, id).await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Cancelled);
    assert_eq!(task.runs[0].outcome, Outcome::Cancelled);
}

async fn a_cancel_seen_only_after_the_attempt_ended_is_applied_at_the_next_claim(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("stubborn")).await.unwrap();
    let now = f.clock.now();
    let claimed = f
        .party
        .store()
        .task_claim(ClaimParams {
            worker: "w",
            handlers: &["stubborn".to_string()],
            queues: &["default".to_string()],
            limit: 1,
            now,
            lease_until: now + SignedDuration::from_secs(30),
            promote_limit: 10,
            controlled: &[],
        })
        .await
        .unwrap();
    let c = &claimed[0];
    assert!(f.party.cancel(id).await.unwrap().cancel_requested);
    // The attempt failed before its worker looked: the task waits for its retry, and the
    // cancel stays with it.
    let finished = f
        .party
        .store()
        .task_finish(vec![Finish {
            id,
            fence: c.fence,
            attempt: c.attempts,
            timestamp: c.timestamp,
            started_at: now,
            finished_at: now,
            worker: "w".into(),
            ran: true,
            outcome: Outcome::Failed,
            error: Some("failed before it saw the cancel".into()),
            next: Next::retry_at(now),
            follow_ups: Vec::new(),
            expired_before: None,
        }])
        .await
        .unwrap();
    assert_eq!(finished, vec![FinishResult::Applied]);
    let task = f.party.get(id).await.unwrap();
    assert_eq!((task.state, task.cancel_requested), (State::Retrying, true));
    // The next claim sees it and cancels the task without running it (the handler would
    // sleep for ten minutes).
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        f.party.worker(WorkerConfig::default()).run_until_idle(),
    )
    .await
    .expect("the handler did not run")
    .unwrap();
    assert_eq!(report.attempts, 1);
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Cancelled);
    assert_eq!(task.runs.len(), 2);
    assert_eq!(task.runs[1].outcome, Outcome::Cancelled);
}

/// A task whose cancel is found at its claim is cancelled without running; its run row says
/// so, not that the worker shut down (it did not: the worker goes on running tasks).
async fn a_cancel_found_at_the_claim_is_not_recorded_as_a_shutdown(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("stubborn")).await.unwrap();
    let now = f.clock.now();
    let claimed = f
        .party
        .store()
        .task_claim(ClaimParams {
            worker: "w",
            handlers: &["stubborn".to_string()],
            queues: &["default".to_string()],
            limit: 1,
            now,
            lease_until: now + SignedDuration::from_secs(30),
            promote_limit: 10,
            controlled: &[],
        })
        .await
        .unwrap();
    let c = &claimed[0];
    assert!(f.party.cancel(id).await.unwrap().cancel_requested);
    let finished = f
        .party
        .store()
        .task_finish(vec![Finish {
            id,
            fence: c.fence,
            attempt: c.attempts,
            timestamp: c.timestamp,
            started_at: now,
            finished_at: now,
            worker: "w".into(),
            ran: true,
            outcome: Outcome::Failed,
            error: Some("failed before it saw the cancel".into()),
            next: Next::retry_at(now),
            follow_ups: Vec::new(),
            expired_before: None,
        }])
        .await
        .unwrap();
    assert_eq!(finished, vec![FinishResult::Applied]);
    let worker = f.party.worker(WorkerConfig {
        id: Some("w2".into()),
        ..WorkerConfig::default()
    });
    tokio::time::timeout(Duration::from_secs(20), worker.run_until_idle())
        .await
        .expect("the handler did not run")
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Cancelled);
    let error = task.runs[1].error.as_deref().unwrap_or_default();
    assert!(
        !error.contains("shut down"),
        "the run of a task cancelled at its claim blames a shutdown that never happened: {error}"
    );
}

async fn a_finished_task_cannot_be_cancelled(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f.party.add(NewTask::new("stubborn")).await.unwrap();
    f.party.cancel(id).await.unwrap();
    let err = f.party.cancel(id).await.unwrap_err();
    assert_eq!(
        err,
        TaskError::Conflict(format!(
            "cannot cancel task {id}: it is cancelled; only scheduled, running, retrying or dead \
             tasks can be cancelled"
        ))
    );
}

on_every_backend!(
    a_handler_sees_the_cancel_and_the_task_is_cancelled,
    a_handler_that_ignores_the_cancel_is_stopped_after_the_grace,
    a_cancelled_recurring_task_is_not_rescheduled,
    a_cancel_whose_worker_died_is_applied_by_the_rescue,
    a_cancel_seen_only_after_the_attempt_ended_is_applied_at_the_next_claim,
    a_finished_task_cannot_be_cancelled,
    a_cancel_found_at_the_claim_is_not_recorded_as_a_shutdown,
);
