//! Retention, on every backend: the pruner removes exactly the finished tasks and run rows past
//! their retention, never a live task, in batches; `forever` keeps everything and a dry run
//! removes nothing.

use std::sync::Arc;

use party::jiff::{SignedDuration, Timestamp};
use party::maintenance::{PruneConfig, PruneReport, Pruner};
use party::policy::Retention;
use party::store::{ClaimParams, Finish, Next};
use party::{Clock, NewTask, Outcome, State, TaskError, TaskId, builtin};

use crate::common::{Backend, Fixture, fixture, on_every_backend, raw_sql, start};

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn pruner(f: &Fixture, retention: Retention, batch: u32) -> Pruner {
    Pruner::new(
        f.party.store().clone(),
        Arc::new(f.clock.clone()),
        PruneConfig {
            retention,
            batch,
            ..PruneConfig::default()
        },
    )
}

/// Claim every due `noop` task (the test arranges that exactly `ids` are due) and finish each
/// with `next(id)`, an attempt ending now.
async fn settle(f: &Fixture, ids: &[TaskId], next: impl Fn(TaskId) -> Next) {
    let store = f.party.store();
    let now = f.clock.now();
    let (handlers, queues) = (vec!["noop".to_string()], vec!["default".to_string()]);
    let claimed = store
        .task_claim(ClaimParams {
            worker: "w",
            handlers: &handlers,
            queues: &queues,
            limit: 10_000,
            now,
            lease_until: now + SignedDuration::from_secs(30),
            promote_limit: 10_000,
            controlled: &[],
        })
        .await
        .unwrap();
    let mut got: Vec<TaskId> = claimed.iter().map(|c| c.id).collect();
    let mut want = ids.to_vec();
    got.sort_by_key(|id| id.to_string());
    want.sort_by_key(|id| id.to_string());
    assert_eq!(got, want, "exactly these tasks are due");
    let finishes = claimed
        .iter()
        .map(|c| {
            let next = next(c.id);
            Finish {
                id: c.id,
                fence: c.fence,
                attempt: c.attempts,
                timestamp: c.timestamp,
                started_at: now,
                finished_at: now,
                worker: "w".to_string(),
                outcome: if next == Next::Dead || matches!(next, Next::Retry { .. }) {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                },
                error: None,
                next,
                follow_ups: Vec::new(),
                ran: true,
                expired_before: None,
            }
        })
        .collect();
    store.task_finish(finishes).await.unwrap();
}

async fn add(f: &Fixture, n: i64, every: Option<SignedDuration>) -> TaskId {
    let task = NewTask::new("noop").data(party::serde_json::json!({ "n": n }));
    let task = match every {
        Some(every) => task.every(every),
        None => task,
    };
    f.party.add(task).await.unwrap()
}

async fn exists(f: &Fixture, id: TaskId) -> bool {
    match f.party.get(id).await {
        Ok(_) => true,
        Err(TaskError::NotFound(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

/// Runs recorded: rows of `runs`, and the last runs finished tasks keep on their history rows.
async fn run_rows(f: &Fixture) -> usize {
    let sql = "SELECT CAST((SELECT count(*) FROM runs) + (SELECT count(*) FROM task_history \
               WHERE run_worker IS NOT NULL) AS TEXT)";
    raw_sql(f, sql).await[0].parse().unwrap()
}

/// Rows of the `runs` table alone.
async fn runs_table_rows(f: &Fixture) -> usize {
    raw_sql(f, "SELECT CAST(count(*) AS TEXT) FROM runs").await[0]
        .parse()
        .unwrap()
}

async fn the_pruner_removes_exactly_what_is_past_retention(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let t0: Timestamp = f.clock.now();
    let far = t0 + days(10_000);
    // Day 0: one task of every kind, each with one run row where it ran.
    let done_old = add(&f, 1, None).await;
    let dead_old = add(&f, 2, None).await;
    let live_one_off = add(&f, 3, None).await;
    let rec_live = add(&f, 4, Some(days(1))).await;
    let rec_done = add(&f, 5, Some(days(1))).await;
    settle(
        &f,
        &[done_old, dead_old, live_one_off, rec_live, rec_done],
        |id| {
            if id == done_old || id == rec_done {
                Next::Done
            } else if id == dead_old {
                Next::Dead
            } else if id == live_one_off {
                Next::retry_at(far)
            } else {
                Next::Reschedule {
                    timestamp: t0 + days(420),
                    due_at: t0 + days(420),
                    last_run_on: Some(t0),
                }
            }
        },
    )
    .await;
    let cancelled_old = f
        .party
        .add(
            NewTask::new("noop")
                .data(party::serde_json::json!({"n": 6}))
                .at(far),
        )
        .await
        .unwrap();
    f.party.cancel(cancelled_old).await.unwrap();
    // Day 400: a dead task 25 days old by the end, younger than its 30 days.
    f.clock.set(t0 + days(400));
    let dead_new = add(&f, 7, None).await;
    settle(&f, &[dead_new], |_| Next::Dead).await;
    // Day 420: the live recurring task runs again; a done task finishes.
    f.clock.set(t0 + days(420));
    let done_new = add(&f, 8, None).await;
    settle(&f, &[rec_live, done_new], |id| {
        if id == done_new {
            Next::Done
        } else {
            Next::Reschedule {
                timestamp: far,
                due_at: far,
                last_run_on: Some(t0 + days(420)),
            }
        }
    })
    .await;
    // Day 425: done cutoff day 418, dead day 395, recurring day 25.
    f.clock.set(t0 + days(425));
    assert_eq!(run_rows(&f).await, 8);
    assert_eq!(
        runs_table_rows(&f).await,
        3,
        "the live tasks' runs are rows of `runs`; each finished task keeps its one run on its \
         history row"
    );

    let expected = PruneReport {
        tasks: 4,
        runs: 4,
        recurring_runs: 1,
        batches: 1,
        more: false,
        reindexed: false,
        workers: 0,
    };
    let p = pruner(&f, Retention::default(), 1_000);
    assert_eq!(p.count().await.unwrap(), expected, "dry run");
    assert_eq!(run_rows(&f).await, 8, "a dry run removes nothing");
    for id in [done_old, dead_old, cancelled_old, rec_done] {
        assert!(exists(&f, id).await, "a dry run removes nothing");
    }

    assert_eq!(p.run_once().await.unwrap(), expected);
    for id in [done_old, dead_old, cancelled_old, rec_done] {
        assert!(!exists(&f, id).await, "{id} is past its retention");
    }
    for id in [done_new, dead_new, live_one_off, rec_live] {
        assert!(exists(&f, id).await, "{id} is kept");
    }
    let live = f.party.get(live_one_off).await.unwrap();
    assert_eq!(live.state, State::Retrying);
    assert_eq!(live.runs.len(), 1, "a live one-off task keeps its runs");
    let rec = f.party.get(rec_live).await.unwrap();
    assert_eq!(rec.state, State::Scheduled);
    assert_eq!(rec.runs.len(), 1, "only the recurring task's old run goes");
    assert_eq!(rec.runs[0].finished_at, t0 + days(420));
    assert_eq!(run_rows(&f).await, 4);
    // Nothing more is past retention.
    assert_eq!(p.run_once().await.unwrap().tasks, 0);
    assert_eq!(p.count().await.unwrap().runs, 0);

    // Later, the rest ages out too; the live tasks stay whatever their age.
    f.clock.set(t0 + days(2_000));
    let r = p.run_once().await.unwrap();
    assert_eq!((r.tasks, r.runs, r.recurring_runs), (2, 3, 1));
    assert!(exists(&f, live_one_off).await);
    assert!(exists(&f, rec_live).await);
}

async fn forever_keeps_everything(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let t0 = f.clock.now();
    let done = add(&f, 1, None).await;
    let dead = add(&f, 2, None).await;
    let rec = add(&f, 3, Some(days(1))).await;
    settle(&f, &[done, dead, rec], |id| match id {
        id if id == done => Next::Done,
        id if id == dead => Next::Dead,
        _ => Next::Reschedule {
            timestamp: t0 + days(100_000),
            due_at: t0 + days(100_000),
            last_run_on: Some(t0),
        },
    })
    .await;
    f.clock.set(t0 + days(5_000));
    let forever = Retention::new(None, None, None).unwrap();
    assert_eq!(forever, Retention::forever());
    let p = pruner(&f, forever, 1_000);
    assert_eq!(p.count().await.unwrap(), PruneReport::default());
    assert_eq!(p.run_once().await.unwrap(), PruneReport::default());
    assert_eq!(run_rows(&f).await, 3);
    // Forever for one kind keeps only that kind.
    let keep_done = Retention::new(None, Some(days(30)), Some(days(400))).unwrap();
    let r = pruner(&f, keep_done, 1_000).run_once().await.unwrap();
    assert_eq!((r.tasks, r.runs, r.recurring_runs), (1, 2, 1));
    assert!(exists(&f, done).await);
    assert!(!exists(&f, dead).await);
}

async fn a_dead_task_is_kept_until_its_retention_ends(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let dead = add(&f, 1, None).await;
    settle(&f, &[dead], |_| Next::Dead).await;
    let p = pruner(&f, Retention::default(), 1_000);
    f.clock.advance(days(30) - SignedDuration::from_secs(1));
    assert_eq!(p.run_once().await.unwrap().tasks, 0);
    let listed = f
        .party
        .list(&party::ListFilter {
            state: Some(State::Dead),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "still listed as dead");
    f.clock.advance(SignedDuration::from_secs(2));
    assert_eq!(p.run_once().await.unwrap().tasks, 1);
    assert!(!exists(&f, dead).await);
}

async fn a_backlog_larger_than_a_batch_takes_several_rounds(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let t0 = f.clock.now();
    let tasks: Vec<NewTask> = (0..25)
        .map(|n| NewTask::new("noop").data(party::serde_json::json!({ "n": n })))
        .collect();
    let ids = f.party.add_many(tasks).await.unwrap();
    settle(&f, &ids, |_| Next::Done).await;
    // A live recurring task with 12 run rows, all old by the end.
    let rec = add(&f, 100, Some(days(1))).await;
    for _ in 0..12 {
        settle(&f, &[rec], |_| Next::Reschedule {
            timestamp: f.clock.now(),
            due_at: f.clock.now(),
            last_run_on: Some(f.clock.now()),
        })
        .await;
    }
    f.clock.set(t0 + days(500));
    let p = pruner(&f, Retention::default(), 10);
    let count = p.count().await.unwrap();
    assert_eq!(
        (count.tasks, count.runs, count.recurring_runs),
        (25, 37, 12)
    );
    let r = p.run_once().await.unwrap();
    assert_eq!((r.tasks, r.runs, r.recurring_runs), (25, 37, 12));
    assert_eq!(r.batches, 3, "10 + 10 + 5");
    assert!(!r.more);
    assert_eq!(run_rows(&f).await, 0);
    assert_eq!(f.party.get(rec).await.unwrap().state, State::Scheduled);
}

async fn every_worker_runs_the_pruner(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let done = add(&f, 1, None).await;
    settle(&f, &[done], |_| Next::Done).await;
    f.clock.advance(days(2));
    let worker = |retention| {
        f.party.worker(party::WorkerConfig {
            retention,
            ..Default::default()
        })
    };
    // The default keeps a 2-day-old done task; one day of retention does not.
    worker(Retention::default()).run_until_idle().await.unwrap();
    assert!(exists(&f, done).await);
    let one_day = Retention::new(Some(days(1)), None, None).unwrap();
    // The first worker resigned as it stopped: the second leads the pruner at once.
    let running = start(worker(one_day));
    for _ in 0..400 {
        if !exists(&f, done).await {
            running.stop().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the worker's pruner never removed the done task");
}

/// A killed worker never removes its own row; the pruner forgets it an hour after its
/// liveness ended, whatever the retention of tasks, and a dry run only counts it. A worker
/// still live, or gone for less than the hour, keeps its row.
async fn the_pruner_forgets_workers_gone_for_an_hour(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let store = f.party.store();
    let t0 = f.clock.now();
    // Each beats once, at its own time, with a lease of 30 s: live until 30 s later.
    for (id, beat) in [
        ("killed-long-ago", t0 - SignedDuration::from_hours(3)),
        (
            "killed-just-over-an-hour-ago",
            t0 - SignedDuration::from_secs(3_631),
        ),
        ("killed-recently", t0 - SignedDuration::from_mins(50)),
        ("live", t0),
    ] {
        let info = party::WorkerInfo {
            id: id.into(),
            handlers: vec!["noop".into()],
            queues: vec!["default".into()],
            last_seen: beat,
            live_until: beat + SignedDuration::from_secs(30),
        };
        store
            .task_heartbeat(party::store::HeartbeatParams {
                worker: &info,
                tasks: &[],
                lease_until: beat + SignedDuration::from_secs(30),
                now: beat,
            })
            .await
            .unwrap();
    }
    let rows = async || {
        let mut ids = raw_sql(&f, "SELECT id FROM workers").await;
        ids.sort();
        ids
    };
    assert_eq!(rows().await.len(), 4);
    let p = pruner(&f, Retention::forever(), 1_000);
    assert_eq!(p.count().await.unwrap().workers, 2, "a dry run counts them");
    assert_eq!(rows().await.len(), 4, "a dry run removes nothing");
    let r = p.run_once().await.unwrap();
    assert_eq!(r.workers, 2);
    assert_eq!(rows().await, ["killed-recently", "live"]);
    let live: Vec<String> = f
        .party
        .stats()
        .await
        .unwrap()
        .workers
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(live, ["live"]);
    // The next pass has nothing more to forget until the hour of the next one ends.
    assert_eq!(p.run_once().await.unwrap().workers, 0);
    f.clock.set(t0 + SignedDuration::from_mins(11));
    assert_eq!(p.run_once().await.unwrap().workers, 1);
    assert_eq!(rows().await, ["live"]);
}

on_every_backend!(
    the_pruner_forgets_workers_gone_for_an_hour,
    the_pruner_removes_exactly_what_is_past_retention,
    forever_keeps_everything,
    a_dead_task_is_kept_until_its_retention_ends,
    a_backlog_larger_than_a_batch_takes_several_rounds,
    every_worker_runs_the_pruner,
);
