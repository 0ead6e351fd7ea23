//! Rules stored with a task, applied by the worker without handler code: every, cron in a time
//! zone, monthly anchors, and the missed-occurrence policies after downtime.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use party::jiff::{SignedDuration, Timestamp};
use party::recurrence::{Missed, Recurrence};
use party::{Clock, NewTask, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, Log, fixture, on_every_backend, seen, t0};

struct Record(Log);

impl Task for Record {
    const NAME: &'static str = "record";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.lock().unwrap().push(seen(ctx));
        Ok(())
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn every_rule_is_drift_free_and_needs_no_handler_code(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(Record(log.clone()))).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("record").every(SignedDuration::from_mins(30)))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    for _ in 0..3 {
        worker.run_until_idle().await.unwrap();
        // Each run starts 10 minutes late; the schedule does not move.
        f.clock.advance(SignedDuration::from_mins(40));
        worker.run_until_idle().await.unwrap();
        f.clock.advance(SignedDuration::from_mins(20));
    }
    let stamps: Vec<_> = log.lock().unwrap().iter().map(|s| s.timestamp).collect();
    let expected: Vec<_> = (0..6)
        .map(|k| t0() + SignedDuration::from_mins(30 * k))
        .collect();
    assert_eq!(stamps, expected);
    let task = f.party.get(id).await.unwrap();
    assert!(task.is_recurring);
    assert_eq!(task.rule.unwrap()["rule"]["kind"], "every");
}

async fn cron_in_berlin_stays_at_nine_local_across_dst(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(Record(log.clone()))).await else {
        return;
    };
    // t0 is 2027-01-31; walk the clock to just before the spring-forward week (2027-03-28).
    f.clock.set(ts("2027-03-25T00:00:00Z"));
    let rule = Recurrence::cron("0 9 * * *", Some("Europe/Berlin")).unwrap();
    f.party
        .add(NewTask::new("record").recurrence(rule))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    for _ in 0..6 {
        let due = f.party.list(&Default::default()).await.unwrap()[0].due_at;
        f.clock.set(due);
        worker.run_until_idle().await.unwrap();
    }
    let stamps: Vec<_> = log.lock().unwrap().iter().map(|s| s.timestamp).collect();
    // 09:00 CET is 08:00Z until the 28th; 09:00 CEST is 07:00Z from then on.
    let expected: Vec<_> = [
        "2027-03-25T08:00:00Z",
        "2027-03-26T08:00:00Z",
        "2027-03-27T08:00:00Z",
        "2027-03-28T07:00:00Z",
        "2027-03-29T07:00:00Z",
        "2027-03-30T07:00:00Z",
    ]
    .iter()
    .map(|s| ts(s))
    .collect();
    assert_eq!(stamps, expected);
}

async fn downtime(b: Backend, missed: Missed) -> Option<(Vec<Timestamp>, Timestamp)> {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let f = fixture(b, Registry::new().register(Record(log.clone()))).await?;
    let rule = Recurrence::every(SignedDuration::from_hours(1))
        .unwrap()
        .with_missed(missed);
    let id = f
        .party
        .add(NewTask::new("record").recurrence(rule))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    worker.run_until_idle().await.unwrap(); // runs T
    // No worker runs for five occurrences (T+1h … T+5h); it comes back at T+5h30m.
    f.clock.advance(SignedDuration::from_mins(5 * 60 + 30));
    worker.run_until_idle().await.unwrap();
    let stamps: Vec<Timestamp> = log.lock().unwrap().iter().map(|s| s.timestamp).collect();
    let next = f.party.get(id).await.unwrap();
    assert_eq!(next.state, State::Scheduled);
    // `gaps` tells which expected occurrences have no successful run.
    let gaps = f.party.gaps(id).await.unwrap();
    assert_eq!(
        gaps.expected, 6,
        "T … T+5h; the pending T+6h is not expected yet"
    );
    let ran: std::collections::BTreeSet<_> = stamps.iter().copied().collect();
    let expected_missing: Vec<_> = (0..6)
        .map(|k| t0() + SignedDuration::from_hours(k))
        .filter(|t| !ran.contains(t))
        .collect();
    assert_eq!(gaps.missing, expected_missing);
    assert!(gaps.doubled.is_empty());
    assert_eq!(
        f.party.next_occurrences(id, 3).await.unwrap(),
        vec![
            next.timestamp,
            next.timestamp + SignedDuration::from_hours(1),
            next.timestamp + SignedDuration::from_hours(2)
        ]
    );
    Some((stamps, next.timestamp))
}

async fn missed_occurrences_follow_the_task_policy(b: Backend) {
    let h = |n: i64| t0() + SignedDuration::from_hours(n);
    let Some((all, next)) = downtime(b, Missed::All).await else {
        return;
    };
    assert_eq!(
        all,
        vec![h(0), h(1), h(2), h(3), h(4), h(5)],
        "all: each missed one, in order"
    );
    assert_eq!(next, h(6));
    let (latest, next) = downtime(b, Missed::Latest).await.unwrap();
    assert_eq!(
        latest,
        vec![h(0), h(5)],
        "latest: once, for the most recent"
    );
    assert_eq!(next, h(6));
    let (skip, next) = downtime(b, Missed::Skip).await.unwrap();
    assert_eq!(skip, vec![h(0)], "skip: none of the missed ones");
    assert_eq!(next, h(6));
}

async fn monthly_on_the_31st_keeps_its_anchor(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(Record(log.clone()))).await else {
        return;
    };
    let rule = Recurrence::monthly_on(31, "09:00", None).unwrap();
    f.party
        .add(NewTask::new("record").recurrence(rule))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    for _ in 0..4 {
        let due = f.party.list(&Default::default()).await.unwrap()[0].due_at;
        f.clock.set(due.max(f.clock.now()));
        worker.run_until_idle().await.unwrap();
    }
    let stamps: Vec<_> = log.lock().unwrap().iter().map(|s| s.timestamp).collect();
    let expected: Vec<_> = [
        "2027-01-31T09:00:00Z",
        "2027-02-28T09:00:00Z",
        "2027-03-31T09:00:00Z",
        "2027-04-30T09:00:00Z",
    ]
    .iter()
    .map(|s| ts(s))
    .collect();
    assert_eq!(stamps, expected);
}

async fn occurrence_keys_are_stable_across_retries(b: Backend) {
    struct FailsOnce(Arc<Mutex<Vec<String>>>);
    impl Task for FailsOnce {
        const NAME: &'static str = "fails_once";
        async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
            self.0.lock().unwrap().push(ctx.occurrence_key());
            if ctx.attempts() == 1 {
                Err("first attempt fails".into())
            } else {
                Ok(())
            }
        }
    }
    let keys = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(FailsOnce(keys.clone()))).await else {
        return;
    };
    let id = f.party.add(NewTask::new("fails_once")).await.unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    worker.run_until_idle().await.unwrap();
    f.clock.advance(SignedDuration::from_mins(5));
    worker.run_until_idle().await.unwrap();
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], format!("{id}@2027-01-31T09:00:00.000000Z"));
    assert_eq!(f.clock.now(), t0() + SignedDuration::from_mins(5));
}

/// Fails its first `fail_first` calls, records every call.
struct Flaky {
    log: Log,
    calls: Arc<AtomicU32>,
    fail_first: u32,
}

impl Task for Flaky {
    const NAME: &'static str = "flaky";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.log.lock().unwrap().push(seen(ctx));
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            Err("fails".into())
        } else {
            Ok(())
        }
    }
}

/// An hourly task under `--missed latest` whose occurrence T fails once; the worker is down
/// until after T+1h, so the retry's claim runs the latest occurrence T+1h instead. That is a
/// new occurrence: the docs say its first attempt is attempt 1 and it gets `max_attempts`
/// attempts of its own ("attempts per occurrence"). It is run as attempt 2 of T's count, and
/// with max_attempts 2 a single failure of it kills the recurring task.
async fn latest_catch_up_of_a_retry_starts_the_new_occurrence_at_attempt_1(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let Some(f) = fixture(
        b,
        Registry::new().register(Flaky {
            log: log.clone(),
            calls: calls.clone(),
            fail_first: 2,
        }),
    )
    .await
    else {
        return;
    };
    let rule = Recurrence::every(SignedDuration::from_hours(1))
        .unwrap()
        .with_missed(Missed::Latest);
    let id = f
        .party
        .add(NewTask::new("flaky").recurrence(rule).max_attempts(2))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    worker.run_until_idle().await.unwrap(); // T, attempt 1: fails, retrying
    assert_eq!(f.party.get(id).await.unwrap().state, State::Retrying);
    // Downtime: the worker comes back at T+1h30m; T+1h is due, so T is missed.
    f.clock.advance(SignedDuration::from_mins(90));
    worker.run_until_idle().await.unwrap();
    let seen: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.timestamp, s.attempts))
        .collect();
    assert_eq!(seen[0], (t0(), 1));
    assert_eq!(
        seen[1].0,
        t0() + SignedDuration::from_hours(1),
        "latest ran"
    );
    let task = f.party.get(id).await.unwrap();
    assert_ne!(
        task.state,
        State::Dead,
        "occurrence T+1h failed once of its 2 attempts; the recurring task must not be dead \
         (T+1h ran as attempt {})",
        seen[1].1
    );
    assert_eq!(
        seen[1].1, 1,
        "the occurrence T+1h is new: its first attempt is attempt 1"
    );
}

/// A one-off task whose run takes `by` of the manual clock's time: the worker is busy with it.
struct Busy {
    clock: Arc<std::sync::OnceLock<party::ManualClock>>,
    by: SignedDuration,
}

impl Task for Busy {
    const NAME: &'static str = "busy";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.clock.get().unwrap().advance(self.by);
        Ok(())
    }
}

/// An hourly task under `--missed latest`; the worker comes back at T+2h, when T+1h is
/// pending and T+2h is due, with three one-off tasks waiting that were due since T+1h01m (a
/// backlog: each takes 61 minutes). The docs: latest "runs once, for the most recent due
/// occurrence", and after moving to it "the next claim, at once, runs that occurrence". The
/// worker claims the hourly task first (it is the oldest due), picks T+2h, and moves the task
/// there with due time T+2h, which puts it behind every task due earlier; when the backlog is
/// done T+5h is due, so T+2h is passed over in its turn and never runs. With a backlog that
/// stays older than one interval a `latest` task never runs at all.
async fn latest_runs_the_occurrence_it_picked_without_queueing_behind_older_tasks(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let cell = Arc::new(std::sync::OnceLock::new());
    let Some(f) = fixture(
        b,
        Registry::new()
            .register(Record(log.clone()))
            .register(Busy {
                clock: cell.clone(),
                by: SignedDuration::from_mins(61),
            }),
    )
    .await
    else {
        return;
    };
    cell.set(f.clock.clone()).unwrap();
    let h = |n: i64| t0() + SignedDuration::from_hours(n);
    let rule = Recurrence::every(SignedDuration::from_hours(1))
        .unwrap()
        .with_missed(Missed::Latest);
    f.party
        .add(NewTask::new("record").recurrence(rule))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig {
        concurrency: 1,
        lease: std::time::Duration::from_secs(86_400),
        ..WorkerConfig::default()
    });
    worker.run_until_idle().await.unwrap(); // runs T
    for k in 1..=3 {
        f.party
            .add(NewTask::new("busy").at(h(1) + SignedDuration::from_mins(k)))
            .await
            .unwrap();
    }
    f.clock.set(h(2));
    worker.run_until_idle().await.unwrap();
    let ran: Vec<(Timestamp, Timestamp)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.timestamp, s.now))
        .collect();
    // (timestamp, started) of each run. At T+2h the latest due occurrence is T+2h: the task
    // moves to it keeping its place (due T+1h, ahead of the backlog due after it), and the
    // worker claims again only once the move is written, so it runs at once, before the
    // backlog (before, it ran at T+5h03m, once the three busy tasks had run, every occurrence
    // in between passed over).
    assert_eq!(
        ran.iter().take(2).copied().collect::<Vec<_>>(),
        vec![(h(0), h(0)), (h(2), h(2))],
        "every run: {ran:?}"
    );
}

/// A cancelled schedule expects nothing after its cancel: `gaps` counts the occurrences up to
/// it, however long ago it was; the task says when it finished. A live task has no finish.
async fn gaps_of_a_cancelled_schedule_end_at_its_cancel(b: Backend) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let Some(f) = fixture(b, Registry::new().register(Record(log.clone()))).await else {
        return;
    };
    let rule = Recurrence::every(SignedDuration::from_hours(1)).unwrap();
    let id = f
        .party
        .add(NewTask::new("record").recurrence(rule))
        .await
        .unwrap();
    assert_eq!(f.party.get(id).await.unwrap().finished_at, None);
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap(); // runs T
    // No worker for T+1h and T+2h; cancelled at T+2h30m, looked at five hours later.
    f.clock.advance(SignedDuration::from_mins(150));
    let cancelled_at = f.clock.now();
    f.party.cancel(id).await.unwrap();
    f.clock.advance(SignedDuration::from_hours(5));
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Cancelled);
    assert_eq!(task.finished_at, Some(cancelled_at));
    let gaps = f.party.gaps(id).await.unwrap();
    let h = |n: i64| t0() + SignedDuration::from_hours(n);
    assert_eq!(gaps.expected, 3, "T, T+1h, T+2h: none after the cancel");
    assert_eq!(gaps.missing, vec![h(1), h(2)]);
}

/// Always fails.
struct Fails;

impl Task for Fails {
    const NAME: &'static str = "fails";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Err("fails".into())
    }
}

/// An hourly task (`--every 1h`, first at T) whose one attempt at T failed: dead at T.
async fn dead_hourly(b: Backend) -> Option<(crate::common::Fixture, party::TaskId)> {
    let f = fixture(b, Registry::new().register(Fails)).await?;
    let rule = Recurrence::every(SignedDuration::from_hours(1)).unwrap();
    let id = f
        .party
        .add(NewTask::new("fails").recurrence(rule).max_attempts(1))
        .await
        .unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(f.party.get(id).await.unwrap().state, State::Dead);
    Some((f, id))
}

/// An hourly task (`--every 1h`, first at T) dies at T. Its rule's occurrences are exactly
/// T + k x 1h (docs/RECURRENCE.md: "Its occurrences are exactly `first + k x every`"), and a
/// retry runs on that grid. `next` of the dead task at T+2h17m lists now + 1h, now + 2h instead:
/// 12:17 and 13:17, times that are no occurrence of the task under any policy.
async fn next_of_a_dead_interval_task_stays_on_its_grid(b: Backend) {
    let Some((f, id)) = dead_hourly(b).await else {
        return;
    };
    f.clock.advance(SignedDuration::from_mins(2 * 60 + 17));
    let next = f.party.next_occurrences(id, 2).await.unwrap();
    let h = |n: i64| t0() + SignedDuration::from_hours(n);
    assert_eq!(
        next,
        vec![h(3), h(4)],
        "the next occurrences after now on the task's grid T + k x 1h"
    );
}

/// A schedule that died owes what came due while it was dead ("a dead one still owes what
/// came due since, until it is retried"); a person who cancels it later stops it from then
/// on. The occurrences due between its death and the cancel were still owed: `gaps` counts
/// them as missing (a dead recurring task finishes at its cancel).
async fn gaps_of_a_dead_schedule_cancelled_later_count_what_came_due_while_it_was_dead(b: Backend) {
    let Some((f, id)) = dead_hourly(b).await else {
        return;
    };
    let h = |n: i64| t0() + SignedDuration::from_hours(n);
    f.clock.advance(SignedDuration::from_mins(150));
    let before = f.party.gaps(id).await.unwrap();
    assert_eq!(before.missing, vec![h(0), h(1), h(2)], "dead: {before:?}");
    // Cancelled at T+2h30m, looked at an hour later.
    f.party.cancel(id).await.unwrap();
    f.clock.advance(SignedDuration::from_hours(1));
    let after = f.party.gaps(id).await.unwrap();
    assert_eq!(
        (after.expected, after.missing.clone()),
        (3, vec![h(0), h(1), h(2)]),
        "T, T+1h and T+2h came due before the cancel and never ran: {after:?}"
    );
}

/// Takes 20 minutes (by the clock), then asks for its next run 30 minutes from now.
struct SlowEveryThirty(Arc<std::sync::OnceLock<party::ManualClock>>);

impl Task for SlowEveryThirty {
    const NAME: &'static str = "slow_every_thirty";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.get().unwrap().advance(SignedDuration::from_mins(20));
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.schedule_next_run_in_minutes(30)
    }
}

/// SPEC: `schedule_next_run(minutes=N)` "reschedules this recurring task N minutes from now",
/// i.e. from when `on_complete` asks, not from when the attempt started.
async fn schedule_next_run_in_minutes_counts_from_now(b: Backend) {
    let clock = Arc::new(std::sync::OnceLock::new());
    let Some(f) = fixture(b, Registry::new().register(SlowEveryThirty(clock.clone()))).await else {
        return;
    };
    clock.set(f.clock.clone()).unwrap();
    let id = f
        .party
        .add(NewTask::new("slow_every_thirty"))
        .await
        .unwrap();
    // A lease longer than the run's 20 minutes of manual time, or the attempt would be given
    // up as lost under it and run again.
    f.party
        .worker(WorkerConfig {
            lease: std::time::Duration::from_secs(3600),
            ..WorkerConfig::default()
        })
        .run_until_idle()
        .await
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Scheduled);
    assert_eq!(task.runs.len(), 1, "{task:?}");
    // The run ended at t0 + 20 min; 30 minutes from then is t0 + 50 min.
    assert_eq!(task.due_at, t0() + SignedDuration::from_mins(50));
}

on_every_backend!(
    schedule_next_run_in_minutes_counts_from_now,
    gaps_of_a_dead_schedule_cancelled_later_count_what_came_due_while_it_was_dead,
    gaps_of_a_cancelled_schedule_end_at_its_cancel,
    next_of_a_dead_interval_task_stays_on_its_grid,
    latest_runs_the_occurrence_it_picked_without_queueing_behind_older_tasks,
    latest_catch_up_of_a_retry_starts_the_new_occurrence_at_attempt_1,
    every_rule_is_drift_free_and_needs_no_handler_code,
    cron_in_berlin_stays_at_nine_local_across_dst,
    missed_occurrences_follow_the_task_policy,
    monthly_on_the_31st_keeps_its_anchor,
    occurrence_keys_are_stable_across_retries,
);
