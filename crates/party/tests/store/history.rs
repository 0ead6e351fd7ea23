//! Hot and cold storage at the trait: finished tasks move out of the live table and back on a
//! retry, their counts stay exact through every move and every prune, `task_prune` removes
//! exactly what is past its cutoff, and `table_sizes` reports each table.

use std::collections::BTreeMap;
use std::sync::Arc;

use party::maintenance::{PruneConfig, Pruner};
use party::store::{
    CopyRead, CopyRows, CopyTable, InsertTask, Next, PruneCounts, PruneParams, SteerMany,
};
use party::{Clock, ListFilter, ManualClock, State, policy};

use crate::harness::{Backend, Harness, failed, finish, on_every_backend, secs, t0, task};

/// Counts per handler and state, from the tasks themselves.
async fn listed_counts(h: &Harness) -> Vec<(String, State, u64)> {
    let all = h
        .store
        .task_list(&ListFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut counts: BTreeMap<(String, &'static str), (State, u64)> = BTreeMap::new();
    for t in all {
        counts
            .entry((t.handler.clone(), t.state.as_str()))
            .or_insert((t.state, 0))
            .1 += 1;
    }
    counts
        .into_iter()
        .map(|((handler, _), (state, n))| (handler, state, n))
        .collect()
}

async fn assert_counts_exact(h: &Harness, when: &str) {
    assert_eq!(
        h.stats(t0()).await.counts,
        listed_counts(h).await,
        "stats count every task, {when}"
    );
}

async fn stats_count_finished_tasks_exactly_through_every_move(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let dead_a = h.task_in(State::Dead, "noop").await;
    let dead_b = h.task_in(State::Dead, "noop").await;
    h.task_in(State::Done, "noop").await;
    h.task_in(State::Done, "other").await;
    h.task_in(State::Cancelled, "other").await;
    h.task_in(State::Retrying, "noop").await;
    assert_counts_exact(&h, "after finishes and a cancel").await;
    let n = |handler: &str, state: State, count: u64| (handler.to_string(), state, count);
    assert!(
        h.stats(t0())
            .await
            .counts
            .contains(&n("noop", State::Dead, 2))
    );

    // A dead task cancelled where it is; another retried back to the live tasks.
    h.store.task_cancel(dead_a, t0()).await.unwrap();
    assert_counts_exact(&h, "after cancelling a dead task").await;
    let retried = h.store.task_retry(dead_b, t0()).await.unwrap();
    assert_eq!(retried.state, State::Scheduled);
    assert_eq!(retried.runs.len(), 1, "its run history comes along");
    assert_counts_exact(&h, "after a retry").await;

    // The retried task runs again and dies again: its fence moved on with it.
    let c = h.claim_one("noop", t0()).await;
    assert_eq!(c.id, dead_b);
    assert!(c.fence > 1, "the fence counts on from before: {}", c.fence);
    h.finish(failed(&c, t0(), "boom", Next::Dead)).await;
    assert_eq!(h.get(dead_b).await.runs.len(), 2);
    assert_counts_exact(&h, "after it died again").await;

    // Bulk moves, both ways.
    let all = [State::Scheduled, State::Retrying, State::Dead];
    let cancelled = h
        .store
        .task_cancel_many(SteerMany {
            states: &all,
            handler: Some("noop"),
            queue: None,
            data: None,
            now: t0(),
        })
        .await
        .unwrap();
    assert_eq!(cancelled, 2, "the retrying task and the dead one");
    assert_counts_exact(&h, "after a bulk cancel").await;
    let retried = h
        .store
        .task_retry_many(SteerMany {
            states: &[State::Cancelled],
            handler: None,
            queue: None,
            data: None,
            now: t0(),
        })
        .await
        .unwrap();
    assert_eq!(retried, 4);
    assert_counts_exact(&h, "after a bulk retry").await;

    // Pruned tasks are no longer counted.
    for c in h.claim(t0(), 100).await {
        h.finish(finish(&c, t0(), Next::Done)).await;
    }
    let removed = h
        .store
        .task_prune(PruneParams {
            done_before: Some(t0() + secs(1)),
            dead_before: None,
            recurring_before: None,
            limit: 1_000,
            dry_run: false,
        })
        .await
        .unwrap();
    assert_eq!(removed.tasks, 6, "every done task");
    assert_counts_exact(&h, "after a prune").await;
    assert_eq!(h.stats(t0()).await.counts, Vec::new(), "nothing is left");
}

async fn prune_removes_finished_tasks_past_their_cutoff_with_their_runs(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let done_old = h.task_in(State::Done, "noop").await;
    let dead_old = h.task_in(State::Dead, "noop").await;
    // A task that fails at t0, is retried at `retry` and done at `done`: its first attempt
    // is a row of `runs`, its second stays on its history row.
    let failed_then_done = |retry: i64, done: i64| {
        let h = &h;
        async move {
            let id = h.insert(vec![task("noop")]).await[0];
            let c = h.claim_one("noop", t0()).await;
            assert_eq!(c.id, id);
            let due_at = t0() + secs(retry);
            h.finish(failed(&c, t0(), "boom", Next::retry_at(due_at)))
                .await;
            let c = h.claim_one("noop", due_at).await;
            h.finish(finish(&c, t0() + secs(done), Next::Done)).await;
            assert_eq!(h.get(id).await.runs.len(), 2);
            id
        }
    };
    // Done before the cutoff, after a failed attempt.
    let retried_old = failed_then_done(1, 2).await;
    // Finished later: kept by the same cutoffs.
    let live = failed_then_done(10, 20).await;

    let params = |dry_run| PruneParams {
        done_before: Some(t0() + secs(5)),
        dead_before: Some(t0() + secs(5)),
        recurring_before: None,
        limit: 1_000,
        dry_run,
    };
    let expected = PruneCounts {
        tasks: 3,
        task_runs: 4,
        recurring_runs: 0,
    };
    assert_eq!(h.store.task_prune(params(true)).await.unwrap(), expected);
    assert!(h.store.task_get(done_old).await.unwrap().is_some());
    assert_eq!(h.store.task_prune(params(false)).await.unwrap(), expected);
    assert_eq!(h.store.task_get(done_old).await.unwrap(), None);
    assert_eq!(h.store.task_get(dead_old).await.unwrap(), None);
    assert_eq!(h.store.task_get(retried_old).await.unwrap(), None);
    let CopyRows::Runs(runs) = h
        .store
        .copy_read(CopyRead {
            table: CopyTable::Runs,
            after: None,
            limit: 100,
        })
        .await
        .unwrap()
    else {
        panic!("run rows read as another table");
    };
    assert_eq!(
        runs.iter().map(|r| r.task_id).collect::<Vec<_>>(),
        vec![live],
        "only the kept task's failed attempt is left in `runs`"
    );
    let kept = h.get(live).await;
    assert_eq!(kept.state, State::Done);
    assert_eq!(
        kept.runs.len(),
        2,
        "a task finished after the cutoff keeps its runs"
    );
    assert_eq!(
        h.store.task_prune(params(false)).await.unwrap(),
        PruneCounts::default()
    );
}

async fn table_sizes_report_each_table_and_its_indexes(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let before = h.store.table_sizes().await.unwrap();
    let tasks: Vec<_> = (0..500).map(|_| task("noop")).collect();
    h.insert(tasks).await;
    let inserted = h.store.table_sizes().await.unwrap();
    assert!(
        inserted.live.table_bytes > before.live.table_bytes,
        "{before:?} {inserted:?}"
    );
    assert!(inserted.live.index_bytes > 0, "{inserted:?}");
    // Half finish for good: to the history, each keeping its run on its row. The other half
    // fail and wait for a retry: their runs go to `runs`.
    let claimed = h.claim(t0(), 1_000).await;
    let (done, failed) = claimed.split_at(250);
    for c in done {
        h.finish(finish(c, t0(), Next::Done)).await;
    }
    let finished = h.store.table_sizes().await.unwrap();
    assert!(
        finished.history.table_bytes > inserted.history.table_bytes,
        "{inserted:?} {finished:?}"
    );
    assert!(finished.history.index_bytes > 0, "{finished:?}");
    assert_eq!(
        finished.runs, inserted.runs,
        "a finished task's last run stays on its history row"
    );
    for c in failed {
        h.finish(finish(c, t0(), Next::retry_at(t0()))).await;
    }
    let retried = h.store.table_sizes().await.unwrap();
    assert!(
        retried.runs.table_bytes > finished.runs.table_bytes,
        "{finished:?} {retried:?}"
    );
    assert!(retried.runs.index_bytes > 0, "{retried:?}");
}

async fn vacuum_keeps_the_hot_table_the_size_of_its_live_tasks(b: Backend) {
    // A database of its own: the other tests' transactions (many, and concurrent) would hold
    // back what the vacuum may reclaim.
    let Some(h) = Harness::new_alone(b).await else {
        return;
    };
    // One round: 1,000 tasks in and out of the hot table; its size before and after the vacuum.
    let round = || async {
        let tasks: Vec<_> = (0..1_000).map(|_| task("noop")).collect();
        h.insert(tasks).await;
        for c in h.claim(t0(), 1_000).await {
            h.finish(finish(&c, t0(), Next::Done)).await;
        }
        let before = h.store.table_sizes().await.unwrap().live;
        h.store.task_vacuum().await.unwrap();
        (before, h.store.table_sizes().await.unwrap().live)
    };
    let (one_round, _) = round().await;
    // Rounds 2 to 6, then 7 to 12: the sizes after the sixth round's vacuum and the last's.
    let mut mid = None;
    for n in 2..=11 {
        let (_, after) = round().await;
        if n == 6 {
            mid = Some(after);
        }
    }
    let (_, last) = round().await;
    let mid = mid.unwrap();
    assert_eq!(h.stats(t0()).await.counts.len(), 1, "only done tasks");
    // Without the vacuum every round leaves its dead rows behind: the table and its indexes
    // grow with each (twelve rounds 7.5-10.8 times one round's indexes, measured; over the
    // last six alone, about four rounds' worth). With it the table stays within twice one
    // round (room for a round whose dead rows another session's open snapshot still holds
    // back on a shared server), and the indexes stop growing: over the last six rounds they
    // may add at most two rounds' worth, the pages a vacuum frees being reused only once
    // every transaction on the whole server (other tests, in other databases too) has moved
    // past them, which a busy server delays by a round or two. (The vacuumed size itself is
    // no yardstick: a vacuum that frees the table's end gives the pages back.)
    assert!(
        last.table_bytes <= one_round.table_bytes * 2,
        "the hot table grew to {last:?} over twelve rounds of 1,000 tasks, one round being {one_round:?}"
    );
    assert!(
        last.index_bytes <= mid.index_bytes + one_round.index_bytes * 2,
        "the hot table's indexes went on growing: {mid:?} after six rounds of 1,000 tasks, {last:?} after twelve, one round being {one_round:?}"
    );
}

/// Each attempt's run as read back: attempt, start, end, outcome, error.
async fn runs_of(h: &Harness, id: party::TaskId) -> Vec<(u32, i64, i64, String, Option<String>)> {
    h.store
        .task_get(id)
        .await
        .unwrap()
        .unwrap()
        .runs
        .into_iter()
        .map(|r| {
            (
                r.attempt,
                r.started_at.as_second(),
                r.finished_at.as_second(),
                r.outcome.as_str().to_string(),
                r.error,
            )
        })
        .collect()
}

/// A finished task keeps the attempt that finished it on its history row; reading its runs,
/// copying it, cancelling it when dead and retrying it (one by one or in bulk) keep every run,
/// in the order they were recorded, and a retried task's later runs follow them.
async fn the_last_run_stays_with_the_finished_task(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let ids = h.insert(vec![task("noop"), task("noop")]).await;
    // Attempt 1 fails and is retried; attempt 2 fails for good.
    for c in h.claim(t0(), 10).await {
        h.finish(failed(&c, t0() + secs(1), "first", Next::retry_at(t0())))
            .await;
    }
    for c in h.claim(t0() + secs(2), 10).await {
        h.finish(failed(&c, t0() + secs(3), "second", Next::Dead))
            .await;
    }
    let two = vec![
        (
            1,
            t0().as_second(),
            t0().as_second() + 1,
            "failed".into(),
            Some("first".into()),
        ),
        (
            2,
            t0().as_second() + 2,
            t0().as_second() + 3,
            "failed".into(),
            Some("second".into()),
        ),
    ];
    for id in &ids {
        assert_eq!(runs_of(&h, *id).await, two, "both runs, the kept one last");
    }
    // Cancelling a dead task changes when it finished, not when its run ended.
    h.store.task_cancel(ids[0], t0() + secs(9)).await.unwrap();
    assert_eq!(runs_of(&h, ids[0]).await, two);

    // Back to the live table: one by one, and in bulk; the kept run is a row of `runs` again.
    h.store.task_retry(ids[0], t0() + secs(10)).await.unwrap();
    let retried = h
        .store
        .task_retry_many(SteerMany {
            states: &[State::Dead],
            handler: Some("noop"),
            queue: None,
            data: None,
            now: t0() + secs(10),
        })
        .await
        .unwrap();
    assert_eq!(retried, 1);
    for id in &ids {
        assert_eq!(runs_of(&h, *id).await, two, "retried with its runs");
    }
    for c in h.claim(t0() + secs(11), 10).await {
        h.finish(finish(&c, t0() + secs(12), Next::Done)).await;
    }
    for id in &ids {
        let mut three = two.clone();
        three.push((
            3,
            t0().as_second() + 11,
            t0().as_second() + 12,
            "succeeded".into(),
            None,
        ));
        assert_eq!(
            runs_of(&h, *id).await,
            three,
            "the third run after the first two"
        );
    }
}

/// The pruner's pass rebuilds the hot table's indexes once tasks passing through have left
/// them several times the table's size (PostgreSQL: a vacuum makes their pages reusable but
/// keeps them); SQLite's b-trees give their pages back and are left alone. A task that waits
/// through the rebuild is still claimed.
async fn the_pruner_rebuilds_bloated_hot_indexes(b: Backend) {
    // Alone in its database, so the vacuum reclaims what the finishes left.
    let Some(h) = Harness::new_alone(b).await else {
        return;
    };
    let waiting = h
        .insert(vec![InsertTask {
            timestamp: t0() + secs(3_600),
            ..task("noop")
        }])
        .await[0];
    for _ in 0..10 {
        let tasks: Vec<_> = (0..1_000).map(|_| task("noop")).collect();
        h.insert(tasks).await;
        let claimed = h.claim(t0(), 1_000).await;
        assert_eq!(claimed.len(), 1_000);
        for c in &claimed {
            h.finish(finish(c, t0(), Next::Done)).await;
        }
    }
    h.store.task_vacuum().await.unwrap();
    let mut before = h.store.table_sizes().await.unwrap().live;
    // A vacuum cannot reclaim the versions a transaction begun before them might still read;
    // in a database of its own only the store's own connections could hold one, for moments.
    for _ in 0..200 {
        if b != Backend::Postgres || policy::hot_indexes_bloated(before) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        h.store.task_vacuum().await.unwrap();
        before = h.store.table_sizes().await.unwrap().live;
    }
    let pruner = Pruner::new(
        h.store.clone(),
        Arc::new(ManualClock::new(t0())),
        PruneConfig::default(),
    );
    let report = pruner.run_once().await.unwrap();
    let after = h.store.table_sizes().await.unwrap().live;
    match b {
        Backend::Postgres => {
            assert!(h.store.indexes_keep_freed_pages());
            assert!(policy::hot_indexes_bloated(before), "{before:?}");
            assert!(report.reindexed, "{report:?}");
            assert!(
                after.index_bytes * 4 < before.index_bytes,
                "{before:?} {after:?}"
            );
            assert!(!policy::hot_indexes_bloated(after), "{after:?}");
        }
        Backend::Sqlite => {
            assert!(!h.store.indexes_keep_freed_pages());
            assert!(!policy::hot_indexes_bloated(before), "{before:?}");
            assert!(!report.reindexed, "{report:?}");
            h.store.task_reindex().await.unwrap();
        }
    }
    let claimed = h.claim(t0() + secs(3_600), 10).await;
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![waiting]
    );
}

/// Pruning keeps the history the size of what retention holds, however many tasks pass
/// through it: the space of what a pass removed is taken by the next tasks that finish. On
/// PostgreSQL that needs the pass's vacuum of the history (the test server runs with
/// autovacuum off, as a server may; without it every round's rows stayed as dead versions);
/// SQLite reuses the pages on its free list.
async fn pruning_keeps_the_history_the_size_of_what_retention_holds(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let clock = ManualClock::new(t0());
    let pruner = Pruner::new(
        h.store.clone(),
        Arc::new(clock.clone()),
        PruneConfig::default(),
    );
    // One round: 1,000 tasks finish now, the history is measured, then the clock passes the
    // done tasks' retention (7 days) and a pass removes them.
    let round = || async {
        let now = clock.now();
        let tasks: Vec<_> = (0..1_000)
            .map(|_| InsertTask {
                timestamp: now,
                created_at: now,
                ..task("noop")
            })
            .collect();
        h.insert(tasks).await;
        for c in h.claim(now, 1_000).await {
            h.finish(finish(&c, now, Next::Done)).await;
        }
        let held = h.store.table_sizes().await.unwrap().history;
        clock.advance(secs(8 * 86_400));
        let report = pruner.run_once().await.unwrap();
        assert_eq!(report.tasks, 1_000, "{report:?}");
        held
    };
    // The first rounds settle (a vacuum makes an index page it emptied reusable only at a
    // later vacuum); from the fourth on each round's tasks fit in the room of those before.
    // Without the vacuum every round adds its own: ten rounds take 2.5 times four.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(round().await);
    }
    let (fourth, last) = (held[3], held[9]);
    assert!(
        last.table_bytes * 10 <= fourth.table_bytes * 16
            && last.index_bytes * 10 <= fourth.index_bytes * 16,
        "the history held one round's tasks in {fourth:?} after the fourth round and in \
         {last:?} after the tenth"
    );
}

/// A retention longer than the calendar reaches back before the year 1
/// (`Retention::cutoffs` gives `Timestamp::MIN` when the subtraction overflows): every backend
/// prunes nothing then, and fails nowhere. PostgreSQL's `timestamptz` starts in 4713 BC, so a
/// cutoff sent as is is refused there as out of range, and the pruner fails every pass.
async fn a_retention_longer_than_the_calendar_prunes_nothing_and_fails_nowhere(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let done = h.task_in(State::Done, "noop").await;
    // Accepted by `Retention::new` (no ceiling), and by `party prune --retain-done`.
    let huge = policy::Retention::new(
        Some(party::jiff::SignedDuration::MAX),
        Some(party::jiff::SignedDuration::from_hours(24 * 365 * 8_000)),
        None,
    )
    .expect("a long retention is accepted");
    let cutoffs = huge.cutoffs(t0());
    for dry_run in [true, false] {
        let counts = h
            .store
            .task_prune(PruneParams {
                done_before: cutoffs.done_before,
                dead_before: cutoffs.dead_before,
                recurring_before: cutoffs.recurring_before,
                limit: 1_000,
                dry_run,
            })
            .await
            .unwrap_or_else(|e| panic!("prune (dry run: {dry_run}) failed: {e}"));
        assert_eq!(counts, PruneCounts::default());
    }
    assert!(h.store.task_get(done).await.unwrap().is_some());
}

on_every_backend!(
    a_retention_longer_than_the_calendar_prunes_nothing_and_fails_nowhere,
    the_pruner_rebuilds_bloated_hot_indexes,
    pruning_keeps_the_history_the_size_of_what_retention_holds,
    the_last_run_stays_with_the_finished_task,
    vacuum_keeps_the_hot_table_the_size_of_its_live_tasks,
    stats_count_finished_tasks_exactly_through_every_move,
    prune_removes_finished_tasks_past_their_cutoff_with_their_runs,
    table_sizes_report_each_table_and_its_indexes,
);
