//! The seed's three examples: a sample task, a task every 30 minutes, a task every 30 days.

use std::sync::{Arc, Mutex};

use party::jiff::SignedDuration;
use party::{NewTask, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, Log, fixture, on_every_backend, seen, t0};

struct SampleTask(Log);

impl Task for SampleTask {
    const NAME: &'static str = "sample";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.lock().unwrap().push(seen(ctx));
        Ok(())
    }
}

struct RecurringTask(Log);

impl Task for RecurringTask {
    const NAME: &'static str = "recurring";
    const IS_RECURRING: bool = true;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.lock().unwrap().push(seen(ctx));
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.schedule_next_run_in_minutes(30)
    }
}

struct RecurringTask2(Log);

impl Task for RecurringTask2 {
    const NAME: &'static str = "recurring2";
    const IS_RECURRING: bool = true;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.lock().unwrap().push(seen(ctx));
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let next = ctx
            .timestamp()
            .checked_add(SignedDuration::from_hours(24 * 30))
            .unwrap();
        ctx.schedule_next_run_at(next)
    }
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

async fn sample_task_sees_its_data_attempt_id_and_timestamp(b: Backend) {
    let seen = log();
    let Some(f) = fixture(b, Registry::new().register(SampleTask(seen.clone()))).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("sample").data(party::serde_json::json!({"arg1": "hello"})))
        .await
        .unwrap();
    let report = f
        .party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].data["arg1"], "hello");
    assert_eq!(seen[0].attempts, 1);
    assert_eq!(seen[0].id, id.to_string());
    assert_eq!(seen[0].timestamp, t0());
    assert!(!seen[0].is_recurring);
    assert_eq!(seen[0].last_run_on, None);
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Done);
    assert_eq!(task.runs.len(), 1);
    assert_eq!(task.runs[0].outcome, party::Outcome::Succeeded);
}

async fn every_30_minutes_runs_at_t_t30_t60(b: Backend) {
    let seen = log();
    let Some(f) = fixture(b, Registry::new().register(RecurringTask(seen.clone()))).await else {
        return;
    };
    let id = f.party.add(NewTask::new("recurring")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    for _ in 0..4 {
        worker.run_until_idle().await.unwrap();
        // Nothing runs before its time.
        f.clock.advance(SignedDuration::from_mins(29));
        assert_eq!(worker.run_until_idle().await.unwrap().attempts, 0);
        f.clock.advance(SignedDuration::from_mins(1));
    }
    let seen = seen.lock().unwrap().clone();
    let stamps: Vec<_> = seen.iter().map(|s| s.timestamp).collect();
    let expected: Vec<_> = (0..4)
        .map(|k| t0() + SignedDuration::from_mins(30 * k))
        .collect();
    assert_eq!(stamps, expected);
    assert!(
        seen.iter()
            .all(|s| s.is_recurring && s.attempts == 1 && s.id == id.to_string())
    );
    assert_eq!(seen[0].last_run_on, None);
    for k in 1..4 {
        assert_eq!(
            seen[k].last_run_on,
            Some(seen[k - 1].now),
            "last_run_on is when the previous run ran"
        );
    }
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Scheduled);
    assert_eq!(task.timestamp, t0() + SignedDuration::from_mins(120));
    assert_eq!(task.runs.len(), 4);
}

async fn every_30_days_counts_from_the_timestamp_not_the_run(b: Backend) {
    let seen = log();
    let Some(f) = fixture(b, Registry::new().register(RecurringTask2(seen.clone()))).await else {
        return;
    };
    let id = f.party.add(NewTask::new("recurring2")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    for _ in 0..3 {
        worker.run_until_idle().await.unwrap();
        // Each run starts late: 30 days and 7 minutes later.
        f.clock
            .advance(SignedDuration::from_hours(24 * 30) + SignedDuration::from_mins(7));
    }
    let seen = seen.lock().unwrap().clone();
    let stamps: Vec<_> = seen.iter().map(|s| s.timestamp).collect();
    let t = t0();
    let day = SignedDuration::from_hours(24);
    assert_eq!(stamps, vec![t, t + day * 30, t + day * 60]);
    assert_eq!(seen[0].last_run_on, None);
    assert_eq!(seen[1].last_run_on, Some(seen[0].now));
    assert_eq!(seen[2].last_run_on, Some(seen[1].now));
    // The runs started late, yet the schedule did not drift.
    assert!(seen[2].now > seen[2].timestamp);
    assert_eq!(
        f.party.get(id).await.unwrap().timestamp,
        t + SignedDuration::from_hours(24 * 90)
    );
}

on_every_backend!(
    sample_task_sees_its_data_attempt_id_and_timestamp,
    every_30_minutes_runs_at_t_t30_t60,
    every_30_days_counts_from_the_timestamp_not_the_run,
);
