//! `task_runs`: one task with a page of its runs, newest first, and a bounded count of them.

use party::store::{CopyRows, KEPT_RUN_POSITION, Next, RunRecord, RunRow, RunsParams};
use party::{Run, RunCount, RunCursor, RunPage, TaskId, TaskInfo};

use crate::harness::{Backend, Harness, failed, finish, on_every_backend, recurring, secs, t0};

/// One page of `id`'s runs, which must exist.
async fn page(
    h: &Harness,
    id: TaskId,
    before: Option<RunCursor>,
    limit: u32,
    count_at_most: u64,
) -> (TaskInfo, RunPage) {
    h.store
        .task_runs(RunsParams {
            id,
            before,
            limit,
            count_at_most,
        })
        .await
        .expect("task_runs")
        .unwrap_or_else(|| panic!("task {id} exists"))
}

/// Every run of `id`, paging back `limit` at a time from the latest: newest first.
async fn paged(h: &Harness, id: TaskId, limit: u32) -> Vec<Run> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let (_, p) = page(h, id, before, limit, 10).await;
        assert!(p.runs.len() <= limit as usize, "{} > {limit}", p.runs.len());
        all.extend(p.runs);
        match p.older {
            Some(c) => before = Some(c),
            None => return all,
        }
    }
}

/// A recurring task's runs come a page at a time, newest first, the run its history row keeps
/// (it finished) first; paging back reads each run once, in `task_get`'s order reversed, and
/// none of another task's. The count stops at `count_at_most`.
async fn runs_come_a_page_at_a_time_newest_first_with_a_bounded_count(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let hour = secs(3600);
    let ended = recurring("noop", "{}");
    let live = recurring("other", "{}");
    h.insert(vec![ended.clone(), live.clone()]).await;
    let next = |n: i32| Next::Reschedule {
        timestamp: t0() + hour * n,
        due_at: t0() + hour * n,
        last_run_on: None,
    };
    // Interleaved: `ended` runs four times (failed once), the last finishing it; `live` twice.
    for n in 0..3 {
        let c = h.claim_one("noop", t0() + hour * n).await;
        if n == 1 {
            h.finish(failed(&c, t0() + hour * n + secs(5), "boom", next(n + 1)))
                .await;
        } else {
            h.finish(finish(&c, t0() + hour * n + secs(5), next(n + 1)))
                .await;
        }
        if n < 2 {
            let c = h.claim_one("other", t0() + hour * n).await;
            h.finish(finish(&c, t0() + hour * n + secs(7), next(n + 1)))
                .await;
        }
    }
    let c = h.claim_one("noop", t0() + hour * 3).await;
    h.finish(finish(&c, t0() + hour * 3 + secs(5), Next::Done))
        .await;

    let full = h.get(ended.id).await;
    assert_eq!(full.runs.len(), 4);
    let newest_first: Vec<Run> = full.runs.iter().rev().cloned().collect();
    // The first page: the kept run, then the latest row of `runs`; an older page exists.
    let (task, first) = page(&h, ended.id, None, 2, 10).await;
    assert_eq!(
        task,
        TaskInfo {
            runs: Vec::new(),
            ..full.clone()
        }
    );
    assert_eq!(first.runs, newest_first[..2]);
    assert_eq!(first.total, RunCount::Exact(4));
    let older = first.older.expect("an older page");
    let (_, second) = page(&h, ended.id, Some(older), 2, 10).await;
    assert_eq!(second.runs, newest_first[2..]);
    assert_eq!(second.older, None, "the oldest run is on this page");
    // A page holding the kept run alone continues with the rows of `runs`.
    let (_, one) = page(&h, ended.id, None, 1, 10).await;
    assert_eq!(one.runs, newest_first[..1]);
    assert_eq!(
        one.older,
        Some(RunCursor {
            position: KEPT_RUN_POSITION
        })
    );
    for limit in [1, 3, 4, 100] {
        assert_eq!(paged(&h, ended.id, limit).await, newest_first, "{limit}");
    }
    let live_full = h.get(live.id).await;
    let live_newest: Vec<Run> = live_full.runs.iter().rev().cloned().collect();
    assert_eq!(paged(&h, live.id, 1).await, live_newest);
    // The count: exact up to its cap, then "more than".
    for (at_most, total) in [
        (2, RunCount::MoreThan(2)),
        (3, RunCount::MoreThan(3)),
        (4, RunCount::Exact(4)),
        (10_000, RunCount::Exact(4)),
    ] {
        assert_eq!(page(&h, ended.id, None, 1, at_most).await.1.total, total);
    }
    // No runs asked for: the task and the count only.
    let (task, none) = page(&h, live.id, None, 0, 10).await;
    assert_eq!(task.id, live.id);
    assert!(task.runs.is_empty() && none.runs.is_empty());
    assert_eq!(none.total, RunCount::Exact(2));
    // An unknown task.
    let unknown = h
        .store
        .task_runs(RunsParams {
            id: TaskId::generate(t0()),
            before: None,
            limit: 10,
            count_at_most: 10,
        })
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

/// A task with thousands of run rows (written as a copy writes them), another task's rows
/// between them: pages of a thousand reach the oldest run, each run exactly once, newest first,
/// and the count says exactly how many up to its cap and "more than" past it.
async fn thousands_of_runs_page_back_to_the_oldest_exactly_once(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let task = recurring("noop", "{}");
    let other = recurring("other", "{}");
    h.insert(vec![task.clone(), other.clone()]).await;
    let n: i64 = 2_500;
    let row = |id: TaskId, k: i64| RunRow {
        position: k,
        task_id: id,
        run: RunRecord {
            attempt: 1,
            timestamp: t0() + secs(60) * (k as i32),
            started_at: t0() + secs(60) * (k as i32) + secs(1),
            finished_at: t0() + secs(60) * (k as i32) + secs(2),
            outcome: "succeeded".to_string(),
            error: None,
            worker: "w1".to_string(),
        },
    };
    // Written task by task, in the order a copy writes them: `other`'s rows come first and
    // last in the table, around `task`'s.
    for rows in [
        (0..10).map(|k| row(other.id, k)).collect::<Vec<_>>(),
        (0..n).map(|k| row(task.id, k)).collect(),
    ] {
        for batch in rows.chunks(party::policy::COPY_BATCH as usize) {
            h.store
                .copy_write(CopyRows::Runs(batch.to_vec()))
                .await
                .unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let (_, p) = page(&h, task.id, before, 1_000, 10_000).await;
        pages += 1;
        assert_eq!(p.total, RunCount::Exact(n as u64));
        seen.extend(p.runs.iter().map(|r| r.timestamp));
        match p.older {
            Some(c) => before = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<_> = (0..n).rev().map(|k| t0() + secs(60) * (k as i32)).collect();
    assert_eq!(seen, expected, "every run once, newest first");
    assert_eq!(
        page(&h, task.id, None, 1, 1_000).await.1.total,
        RunCount::MoreThan(1_000)
    );
    assert_eq!(page(&h, other.id, None, 100, 10_000).await.1.runs.len(), 10);
}

/// A page of a task's latest runs is one backward range of the runs' index by task, in the
/// order the runs were recorded: no sort of all of the task's runs, however many it has (on
/// SQLite `runs_task (task_id)` ends with the rowid; on PostgreSQL `runs_task (task_id, seq)`,
/// since schema version 11).
async fn a_page_of_runs_reads_the_task_index_backwards_without_sorting(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![recurring("noop", "{}")]).await[0];
    let hex = id.to_string();
    let plan = h
        .plan(
            &format!(
                "SELECT attempt FROM runs WHERE task_id = x'{hex}' AND rowid < 1000 \
                 ORDER BY rowid DESC LIMIT 101"
            ),
            &format!(
                "SELECT attempt FROM {{s}}.runs WHERE task_id = '\\x{hex}'::bytea \
                 AND seq < 1000 ORDER BY seq DESC LIMIT 101"
            ),
        )
        .await;
    assert!(plan.contains("runs_task"), "{plan}");
    assert!(
        !plan.contains("Sort") && !plan.contains("B-TREE"),
        "a page sorts the task's runs: {plan}"
    );
}

on_every_backend!(
    runs_come_a_page_at_a_time_newest_first_with_a_bounded_count,
    thousands_of_runs_page_back_to_the_oldest_exactly_once,
    a_page_of_runs_reads_the_task_index_backwards_without_sorting,
);
