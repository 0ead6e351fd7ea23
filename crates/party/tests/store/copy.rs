//! Copying a store (`Store::copy_read`, `Store::copy_write` and `party::copy::copy`): every
//! row of every table carried with every column, between every pair of backends, in batches;
//! the copy behaves like the source (singletons, unique keys, rescues, counters, workers);
//! and the refusals (a live worker, a target that holds tasks) write nothing.

use std::sync::Arc;

use party::copy::{CopyConfig, copy};
use party::queues::{QueueLimits, Rate};
use party::store::{CopyRead, CopyRows, CopyTable, HeartbeatParams, InsertTask, Next, Store};
use party::{ListFilter, ManualClock, Party, State, TaskError, TaskId, WorkerConfig, WorkerInfo};

use crate::harness::{Backend, Harness, failed, finish, recurring, secs, t0, task};

/// What a source holds, by the ids a test checks.
struct Source {
    running: TaskId,
    recurring: TaskId,
    recurring_data: &'static str,
    unique_key: &'static str,
    /// Due `noop` tasks a worker on the target runs.
    due_noops: Vec<TaskId>,
}

/// A source with tasks in every state, a recurring task with two runs behind it, a unique
/// key held live and another by a finished task, and enough due tasks for several batches.
async fn fill(h: &Harness) -> Source {
    h.task_in(State::Scheduled, "h_scheduled").await;
    let running = h.task_in(State::Running, "h_running").await;
    h.task_in(State::Retrying, "h_retrying").await;
    h.task_in(State::Done, "h_done").await;
    h.task_in(State::Dead, "h_dead").await;
    h.task_in(State::Cancelled, "h_cancelled").await;

    let recurring_data = r#"{"customer":"acme"}"#;
    let recurring = h.insert(vec![recurring("tick", recurring_data)]).await[0];
    for hour in 0..2 {
        let at = t0() + secs(3600 * hour);
        let c = h.claim_one("tick", at).await;
        h.finish(finish(
            &c,
            at + secs(1),
            Next::Reschedule {
                timestamp: at + secs(3600),
                due_at: at + secs(3600),
                last_run_on: Some(at),
            },
        ))
        .await;
    }

    // A unique key held by a finished task (its window is the adder's), and one held live.
    let finished_key = h
        .insert(vec![InsertTask {
            unique_key: Some("invoice-6".to_string()),
            ..task("h_keyed")
        }])
        .await[0];
    let c = h.claim_one("h_keyed", t0()).await;
    assert_eq!(c.id, finished_key);
    h.finish(failed(&c, t0() + secs(2), "no paper", Next::Dead))
        .await;
    let mut noops = vec![InsertTask {
        unique_key: Some("invoice-7".to_string()),
        ..task("noop")
    }];
    noops.extend((0..24).map(|_| task("noop")));
    let due_noops = h.insert(noops).await;

    // Queue controls: one paused, one limited per customer.
    h.store.queue_pause("mail", true, t0()).await.unwrap();
    let limits = QueueLimits {
        concurrency: Some(2),
        rate: Some(Rate::parse("10/1m").unwrap()),
        per: Some("customer".to_string()),
    };
    h.store
        .queue_limit("reports", &limits, t0() + secs(1))
        .await
        .unwrap();
    Source {
        running,
        recurring,
        recurring_data,
        unique_key: "invoice-7",
        due_noops,
    }
}

/// Every task of a store with its runs, in id order.
async fn every_task(store: &Arc<dyn Store>) -> Vec<party::TaskInfo> {
    let mut listed = store
        .task_list(&ListFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    listed.sort_by_key(|t| t.id);
    let mut out = Vec::new();
    for t in listed {
        out.push(store.task_get(t.id).await.unwrap().unwrap());
    }
    out
}

fn party_on(store: &Arc<dyn Store>, clock: &ManualClock) -> Party {
    Party::with_store(store.clone(), party::builtin::registry(false))
        .with_clock(Arc::new(clock.clone()))
}

async fn copy_carries_everything(from: Backend, to: Backend) {
    let (Some(src), Some(dst)) = (Harness::new(from).await, Harness::new(to).await) else {
        return;
    };
    let source = fill(&src).await;
    let clock = ManualClock::new(t0());
    let before = every_task(&src.store).await;

    // Batches of 2: every table but the queues takes several, and the keyset walks across them.
    let report = copy(
        &party_on(&src.store, &clock),
        &party_on(&dst.store, &clock),
        CopyConfig { batch: 2 },
    )
    .await
    .expect("copy");
    report.verified().expect("every table matches");
    let rows: Vec<(&str, u64, u64)> = report
        .tables
        .iter()
        .map(|t| (t.table.name(), t.copied, t.target.rows))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("tasks", 29, 29),
            ("task_history", 4, 4),
            ("runs", 3, 3),
            ("queues", 2, 2),
        ],
        "live: scheduled, running, retrying, tick and 25 noops; finished: done, dead, \
         cancelled and the keyed one; rows of runs: retrying and 2 of tick (the finished \
         tasks keep their last run on their history rows, the running task has none yet, the \
         cancelled one never ran); queues: mail and reports"
    );
    assert_eq!(report.batches, 15 + 2 + 2 + 1);

    // Every task reads back the same, runs and all, and the source is untouched.
    let after = every_task(&dst.store).await;
    assert_eq!(after.len(), 33);
    assert_eq!(after, before);
    assert_eq!(
        dst.stats(t0()).await.counts,
        src.stats(t0()).await.counts,
        "the target counts its finished tasks as the source does"
    );
    assert_eq!(every_task(&src.store).await, before);
    let tick = after.iter().find(|t| t.id == source.recurring).unwrap();
    assert_eq!(tick.runs.len(), 2);
    assert_eq!(tick.last_run_on, Some(t0() + secs(3600)));
    assert!(tick.rule.is_some());

    // The counters the schema keeps agree: stats are the same on both sides, and so are the
    // queues' counts and controls.
    assert_eq!(dst.stats(t0()).await, src.stats(t0()).await);
    assert_eq!(
        dst.store.queue_counts(t0()).await.unwrap(),
        src.store.queue_counts(t0()).await.unwrap()
    );
    let controls = dst.store.queue_controls(&[]).await.unwrap();
    assert_eq!(controls, src.store.queue_controls(&[]).await.unwrap());
    assert_eq!(controls.len(), 2);
    assert!(controls[0].paused && controls[0].name == "mail");
    assert_eq!(controls[1].limits.per.as_deref(), Some("customer"));
    assert_eq!(
        dst.stats(t0() + secs(7200)).await,
        src.stats(t0() + secs(7200)).await
    );

    // The singleton and the unique key hold on the target.
    let dup = dst
        .store
        .task_insert(vec![recurring("tick", source.recurring_data)])
        .await;
    assert!(
        matches!(&dup, Err(TaskError::Duplicate { existing, .. }) if *existing == source.recurring),
        "{dup:?}"
    );
    let dup = dst
        .store
        .task_insert(vec![InsertTask {
            unique_key: Some(source.unique_key.to_string()),
            ..task("noop")
        }])
        .await;
    assert!(matches!(dup, Err(TaskError::Duplicate { .. })), "{dup:?}");

    // The running task's lease ends on the target as it would have on the source.
    assert_eq!(dst.expired(t0() + secs(29)).await, Vec::<TaskId>::new());
    assert_eq!(dst.expired(t0() + secs(31)).await, vec![source.running]);

    // A worker on the target runs what is due.
    let report = party_on(&dst.store, &clock)
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .expect("worker");
    assert!(report.succeeded >= 25, "{report:?}");
    for id in &source.due_noops {
        assert_eq!(dst.get(*id).await.state, State::Done);
    }
}

/// Each table read back in key order, as a copy's verification reads it.
async fn read_all(store: &dyn Store, table: CopyTable, batch: u32) -> Vec<CopyRows> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let rows = store
            .copy_read(CopyRead {
                table,
                after,
                limit: batch,
            })
            .await
            .unwrap();
        if rows.is_empty() {
            return out;
        }
        after = rows.last_key();
        out.push(rows);
    }
}

async fn copy_read_walks_each_table_in_key_order(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    fill(&h).await;
    for table in CopyTable::ALL {
        let whole = read_all(h.store.as_ref(), table, 10_000).await;
        let batched = read_all(h.store.as_ref(), table, 3).await;
        assert!(batched.iter().all(|r| r.len() <= 3));
        let flat = |batches: Vec<CopyRows>| -> Vec<String> {
            batches
                .into_iter()
                .flat_map(|b| match b {
                    CopyRows::Live(r) => r.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
                    CopyRows::History(r) => r.iter().map(|r| r.id.to_string()).collect(),
                    CopyRows::Runs(r) => r
                        .iter()
                        .map(|r| format!("{}:{}", r.task_id, r.position))
                        .collect(),
                    CopyRows::Queues(r) => r.iter().map(|q| q.name.clone()).collect(),
                })
                .collect()
        };
        let (whole, batched) = (flat(whole), flat(batched));
        assert_eq!(
            whole,
            batched,
            "{}: batches continue where they ended",
            table.name()
        );
        let mut sorted = whole.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(whole.len(), sorted.len(), "{}: no row twice", table.name());
        if table != CopyTable::Runs {
            assert_eq!(whole, sorted, "{}: in id order", table.name());
        }
    }
}

async fn copy_refuses_a_live_worker_and_a_filled_target(b: Backend) {
    let (Some(src), Some(dst)) = (Harness::new(b).await, Harness::new(b).await) else {
        return;
    };
    fill(&src).await;
    let clock = ManualClock::new(t0());
    let (from, to) = (party_on(&src.store, &clock), party_on(&dst.store, &clock));

    // A worker whose liveness has not ended, on the source.
    let worker = WorkerInfo {
        id: "host-1-worker".to_string(),
        handlers: vec!["noop".to_string()],
        queues: vec!["default".to_string()],
        last_seen: t0(),
        live_until: t0() + secs(30),
    };
    src.store
        .task_heartbeat(HeartbeatParams {
            worker: &worker,
            tasks: &[],
            lease_until: t0() + secs(30),
            now: t0(),
        })
        .await
        .unwrap();
    let refused = copy(&from, &to, CopyConfig::default()).await;
    match &refused {
        Err(TaskError::Conflict(m)) => assert!(
            m.contains("worker is live on the source") && m.contains("host-1-worker"),
            "{m}"
        ),
        other => panic!("refused: {other:?}"),
    }
    assert!(every_task(&dst.store).await.is_empty(), "nothing written");

    // Once its liveness ended (a killed worker), the copy goes ahead; the same copy again
    // finds the target filled and writes nothing more.
    clock.advance(secs(31));
    copy(&from, &to, CopyConfig::default())
        .await
        .expect("copy")
        .verified()
        .unwrap();
    let copied = every_task(&dst.store).await;
    let again = copy(&from, &to, CopyConfig::default()).await;
    match &again {
        Err(TaskError::Conflict(m)) => {
            assert!(m.contains("the target already holds live tasks"), "{m}")
        }
        other => panic!("refused: {other:?}"),
    }
    assert_eq!(every_task(&dst.store).await, copied);
    assert_eq!(
        read_all(dst.store.as_ref(), CopyTable::Runs, 1000)
            .await
            .iter()
            .map(CopyRows::len)
            .sum::<usize>(),
        3,
        "no run row twice"
    );
}

macro_rules! between {
    ($($name:ident: $from:ident -> $to:ident),* $(,)?) => {
        mod across {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    use crate::harness::Backend;
                    super::copy_carries_everything(Backend::$from, Backend::$to).await
                }
            )*
        }
    };
}

between!(
    sqlite_to_postgres: Sqlite -> Postgres,
    postgres_to_sqlite: Postgres -> Sqlite,
    sqlite_to_sqlite: Sqlite -> Sqlite,
    postgres_to_postgres: Postgres -> Postgres,
);

/// `copy_write` promises that "a row whose id is already stored fails the whole batch": a live
/// row whose id is a finished task's (in the history) is such a row, and must not go in beside
/// it, leaving one id both live and finished.
async fn copy_write_refuses_a_live_row_whose_id_is_a_finished_task(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let CopyRows::Live(live) = h
        .store
        .copy_read(CopyRead {
            table: CopyTable::Live,
            after: None,
            limit: 10,
        })
        .await
        .unwrap()
    else {
        panic!("live rows read as another table");
    };
    let c = h.claim_one("noop", t0()).await;
    h.finish(finish(&c, t0(), Next::Done)).await;
    assert_eq!(h.get(id).await.state, State::Done);
    let written = h.store.copy_write(CopyRows::Live(live)).await;
    let in_both = h
        .store
        .task_list(&ListFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|t| t.id == id)
        .count();
    assert!(
        written.is_err() && in_both == 1,
        "the live row of finished task {id} was written ({written:?}); it is listed {in_both} times"
    );
}

crate::harness::on_every_backend!(
    copy_write_refuses_a_live_row_whose_id_is_a_finished_task,
    copy_read_walks_each_table_in_key_order,
    copy_refuses_a_live_worker_and_a_filled_target,
);
