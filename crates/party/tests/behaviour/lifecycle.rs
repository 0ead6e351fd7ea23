//! Failures, retries, dead tasks, the recursion guard, cancel and retry.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use party::jiff::SignedDuration;
use party::{Clock, NewTask, Outcome, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, Log, fixture, on_every_backend, seen, t0};

struct AlwaysFails(Log);

impl Task for AlwaysFails {
    const NAME: &'static str = "fails";
    const MAX_ATTEMPTS: u32 = 3;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.lock().unwrap().push(seen(ctx));
        Err(TaskError::failed(format!(
            "boom on attempt {}",
            ctx.attempts()
        )))
    }
}

async fn failing_task_keeps_timestamp_backs_off_and_ends_dead(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(AlwaysFails(log.clone()))).await else {
        return;
    };
    let id = f.party.add(NewTask::new("fails")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    let mut backoffs = Vec::new();
    for attempt in 1..=3u32 {
        let report = worker.run_until_idle().await.unwrap();
        assert_eq!(report.failed, 1, "attempt {attempt} ran once");
        let task = f.party.get(id).await.unwrap();
        assert_eq!(task.attempts, attempt);
        assert_eq!(
            task.last_error.as_deref(),
            Some(format!("boom on attempt {attempt}").as_str())
        );
        if attempt < 3 {
            assert_eq!(task.state, State::Retrying);
            let wait = task.due_at.duration_since(f.clock.now());
            assert!(wait.is_positive(), "a retry waits out its backoff");
            backoffs.push(wait);
            // Not before its backoff ends.
            assert_eq!(worker.run_until_idle().await.unwrap().attempts, 0);
            f.clock.set(task.due_at);
        } else {
            assert_eq!(task.state, State::Dead);
        }
    }
    // Exponential: the second wait is longer than the first despite jitter (2 s ±25% vs 4 s ±25%).
    assert!(backoffs[1] > backoffs[0], "{backoffs:?}");
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.attempts).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        seen.iter().all(|s| s.timestamp == t0()),
        "timestamp unchanged across retries"
    );
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs.len(), 3);
    assert!(
        task.runs
            .iter()
            .all(|r| r.outcome == Outcome::Failed && r.timestamp == t0())
    );
    assert_eq!(
        task.runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // A dead task stays dead until a person retries it; then it runs with attempts counting on.
    f.clock.advance(SignedDuration::from_hours(1));
    assert_eq!(worker.run_until_idle().await.unwrap().attempts, 0);
    let retried = f.party.retry(id).await.unwrap();
    assert_eq!(retried.state, State::Scheduled);
    assert_eq!(retried.max_attempts, 4, "one more attempt allowed");
    assert_eq!(worker.run_until_idle().await.unwrap().attempts, 1);
    assert_eq!(log.lock().unwrap().last().unwrap().attempts, 4);
    assert_eq!(f.party.get(id).await.unwrap().state, State::Dead);
}

struct StopsRecurring(Arc<AtomicU32>);

impl Task for StopsRecurring {
    const NAME: &'static str = "stops";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct SchedulesSameTime(Arc<AtomicU32>);

impl Task for SchedulesSameTime {
    const NAME: &'static str = "loops";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let t = ctx.timestamp();
        ctx.schedule_next_run_at(t)
    }
}

async fn recursion_guard_no_next_run_is_done_and_same_time_is_refused(b: Backend) {
    let (stops, loops) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let reg = Registry::new()
        .register(StopsRecurring(stops.clone()))
        .register(SchedulesSameTime(loops.clone()));
    let Some(f) = fixture(b, reg).await else {
        return;
    };
    let a = f.party.add(NewTask::new("stops")).await.unwrap();
    let l = f.party.add(NewTask::new("loops")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    worker.run_until_idle().await.unwrap();
    for _ in 0..3 {
        f.clock.advance(SignedDuration::from_hours(24));
        assert_eq!(
            worker.run_until_idle().await.unwrap().attempts,
            0,
            "nothing loops"
        );
    }
    assert_eq!(stops.load(Ordering::SeqCst), 1);
    assert_eq!(loops.load(Ordering::SeqCst), 1);
    assert_eq!(f.party.get(a).await.unwrap().state, State::Done);
    let looping = f.party.get(l).await.unwrap();
    assert_eq!(looping.state, State::Dead);
    let err = looping.last_error.unwrap();
    assert!(err.contains("not after the current timestamp"), "{err}");
}

async fn schedule_next_run_refuses_past_and_non_recurring(_b: Backend) {
    let mut ctx = TaskContext::for_test("x", party::serde_json::json!({}), t0());
    let err = ctx.schedule_next_run_in_minutes(30).unwrap_err();
    assert!(matches!(err, TaskError::Schedule(_)));
    assert!(err.to_string().contains("not recurring"), "{err}");
}

async fn cancel_and_retry_follow_the_state_rules(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(AlwaysFails(log.clone()))).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("fails").at(t0() + SignedDuration::from_hours(1)))
        .await
        .unwrap();
    let cancelled = f.party.cancel(id).await.unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    let again = f.party.cancel(id).await.unwrap_err();
    assert!(matches!(again, TaskError::Conflict(_)), "{again:?}");
    assert!(again.to_string().contains("it is cancelled"), "{again}");
    // Cancelled tasks do not run.
    f.clock.advance(SignedDuration::from_hours(2));
    assert_eq!(
        f.party
            .worker(WorkerConfig::default())
            .run_until_idle()
            .await
            .unwrap()
            .attempts,
        0
    );
    // Retry makes it due now.
    let retried = f.party.retry(id).await.unwrap();
    assert_eq!(
        (retried.state, retried.due_at),
        (State::Scheduled, f.clock.now())
    );
    // Scheduled and due: a retry answers it as it is.
    let again = f.party.retry(id).await.unwrap();
    assert_eq!(
        (again.state, again.due_at),
        (State::Scheduled, f.clock.now())
    );
    let missing: party::TaskId = "0123456789abcdef01234567".parse().unwrap();
    assert_eq!(
        f.party.cancel(missing).await.unwrap_err(),
        TaskError::NotFound(missing)
    );
    assert_eq!(f.party.retry(missing).await.unwrap_err().exit_code(), 4);
}

async fn bad_input_is_refused_and_nothing_is_written(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(AlwaysFails(log))).await else {
        return;
    };
    let cases = vec![
        (NewTask::new("nope"), "unknown handler 'nope'"),
        (
            NewTask::new("fails").data(party::serde_json::json!([1, 2])),
            "must be a JSON object",
        ),
        (NewTask::new("fails").max_attempts(0), "at least 1"),
    ];
    for (task, msg) in cases {
        let err = f.party.add(task).await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(msg), "{err}");
    }
    // A batch with one bad task writes nothing.
    let err = f
        .party
        .add_many(vec![NewTask::new("fails"), NewTask::new("nope")])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("task 2:"), "{err}");
    assert!(f.party.list(&Default::default()).await.unwrap().is_empty());
}

async fn a_time_just_past_is_due_at_once_and_keeps_its_timestamp(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(AlwaysFails(log.clone()))).await else {
        return;
    };
    let at = t0() - SignedDuration::from_secs(90);
    let id = f.party.add(NewTask::new("fails").at(at)).await.unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(
        (task.timestamp, task.due_at, task.state),
        (at, at, State::Scheduled)
    );
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(log.lock().unwrap()[0].timestamp, at);
}

/// A handler whose `MAX_ATTEMPTS` is 0 allows no attempt at all.
struct NoAttempts;

impl Task for NoAttempts {
    const NAME: &'static str = "no_attempts";
    const MAX_ATTEMPTS: u32 = 0;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A handler's `MAX_ATTEMPTS` of 0 is read as 1, the least any front end stores: the task
/// runs once, never stored with `max_attempts` 0 (which `--max-attempts 0` and the HTTP API
/// refuse).
async fn a_handlers_max_attempts_of_zero_is_read_as_one(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(NoAttempts)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("no_attempts")).await.unwrap();
    assert_eq!(f.party.get(id).await.unwrap().max_attempts, 1);
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!((task.state, task.runs.len()), (State::Done, 1), "{task:?}");
}

/// A time every backend stores gets one answer everywhere: the first instant of the year 1
/// is stored and read back; one before it is refused as bad input, on SQLite and on
/// PostgreSQL (whose `timestamptz` starts in 4713 BC) alike.
async fn the_earliest_time_gets_one_answer_on_every_backend(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(NoAttempts)).await else {
        return;
    };
    let earliest = party::validate::MIN_TIME;
    assert_eq!(earliest.to_string(), "0001-01-01T00:00:00Z");
    let id = f
        .party
        .add(NewTask::new("no_attempts").at(earliest))
        .await
        .unwrap();
    assert_eq!(f.party.get(id).await.unwrap().timestamp, earliest);
    for at in [
        earliest - SignedDuration::from_micros(1),
        party::jiff::Timestamp::MIN,
    ] {
        let err = f
            .party
            .add(NewTask::new("no_attempts").at(at))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TaskError::Invalid(m) if m.contains("before the year 1")),
            "{err:?}"
        );
    }
}

on_every_backend!(
    a_time_just_past_is_due_at_once_and_keeps_its_timestamp,
    a_handlers_max_attempts_of_zero_is_read_as_one,
    the_earliest_time_gets_one_answer_on_every_backend,
    failing_task_keeps_timestamp_backs_off_and_ends_dead,
    recursion_guard_no_next_run_is_done_and_same_time_is_refused,
    schedule_next_run_refuses_past_and_non_recurring,
    cancel_and_retry_follow_the_state_rules,
    bad_input_is_refused_and_nothing_is_written,
);
