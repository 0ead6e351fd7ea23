//! `task_insert`: what is written reads back unchanged, batches are all or nothing, and the
//! singleton rule holds for live recurring tasks only.

use jiff::SignedDuration;
use party::serde_json::json;
use party::store::{InsertTask, Next};
use party::{State, TaskError};

use crate::harness::{
    Backend, Harness, finish, on_every_backend, recurring, secs, t0, task, task_at,
};

async fn an_inserted_task_reads_back_as_written(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let written = InsertTask {
        data: r#"{"account":7,"plan":"gold"}"#.to_string(),
        timestamp: t0() + secs(90),
        is_recurring: true,
        rule: Some(r#"{"every":"1h","tz":"Europe/Paris"}"#.to_string()),
        max_attempts: 7,
        queue: "billing".to_string(),
        priority: -3,
        created_at: t0() - secs(5),
        ..task("noop")
    };
    let ids = h.insert(vec![written.clone()]).await;
    assert_eq!(ids, vec![written.id]);
    let got = h.get(written.id).await;
    assert_eq!(got.id, written.id);
    assert_eq!(got.handler, "noop");
    assert_eq!(got.data, json!({ "account": 7, "plan": "gold" }));
    assert_eq!(got.timestamp, t0() + secs(90));
    assert_eq!(got.due_at, t0() + secs(90), "first due at its timestamp");
    assert_eq!(got.last_run_on, None);
    assert_eq!(got.attempts, 0);
    assert!(got.is_recurring);
    assert_eq!(got.state, State::Scheduled);
    assert_eq!(got.queue, "billing");
    assert_eq!(got.priority, -3);
    assert_eq!(got.max_attempts, 7);
    assert_eq!(got.last_error, None);
    assert_eq!(
        got.rule,
        Some(json!({ "every": "1h", "tz": "Europe/Paris" }))
    );
    assert_eq!(got.created_at, t0() - secs(5));
    assert_eq!(got.worker, None);
    assert!(got.runs.is_empty());
}

async fn instants_keep_their_microseconds(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let at = t0() + party::jiff::SignedDuration::from_micros(123_456);
    let id = h.insert(vec![task_at("noop", at)]).await[0];
    let got = h.get(id).await;
    assert_eq!((got.timestamp, got.due_at), (at, at));
}

async fn a_batch_goes_in_whole_and_answers_ids_in_order(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let tasks: Vec<InsertTask> = (0..50)
        .map(|i| InsertTask {
            data: format!(r#"{{"i":{i}}}"#),
            ..task("noop")
        })
        .collect();
    let expected: Vec<_> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(h.insert(tasks).await, expected);
    for id in expected {
        assert_eq!(h.get(id).await.state, State::Scheduled);
    }
    assert_eq!(h.insert(Vec::new()).await, Vec::new(), "an empty batch");
}

async fn a_duplicate_recurring_task_fails_the_whole_batch(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let holder = h.insert(vec![recurring("noop", r#"{"s":1}"#)]).await[0];
    let fresh = task("noop");
    let err = h
        .store
        .task_insert(vec![fresh.clone(), recurring("noop", r#"{"s":1}"#)])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TaskError::Duplicate {
            handler: "noop".into(),
            existing: holder,
            unique_key: None,
            place: None,
        }
    );
    assert_eq!(
        h.store.task_get(fresh.id).await.unwrap(),
        None,
        "nothing of a refused batch is written"
    );
}

async fn two_equal_recurring_tasks_in_one_batch_are_refused(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let first = recurring("noop", r#"{"s":2}"#);
    let second = recurring("noop", r#"{"s":2}"#);
    let err = h
        .store
        .task_insert(vec![first.clone(), second.clone()])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TaskError::Duplicate {
            handler: "noop".into(),
            existing: first.id,
            unique_key: None,
            place: None,
        },
        "the later one is a duplicate of the earlier"
    );
    assert_eq!(h.store.task_get(first.id).await.unwrap(), None);
    assert_eq!(h.store.task_get(second.id).await.unwrap(), None);
}

async fn the_singleton_binds_only_live_recurring_tasks_of_one_handler_and_data(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let data = r#"{"s":3}"#;
    let holder = h.insert(vec![recurring("noop", data)]).await[0];
    // One-off tasks with the same data, and recurring ones of another handler or other data
    // (due later, so that the claim below takes the holder).
    let later = t0() + secs(600);
    h.insert(vec![
        InsertTask {
            data: data.into(),
            ..task_at("noop", later)
        },
        InsertTask {
            data: data.into(),
            ..task_at("noop", later)
        },
        InsertTask {
            timestamp: later,
            ..recurring("other", data)
        },
        InsertTask {
            timestamp: later,
            ..recurring("noop", r#"{"s":4}"#)
        },
    ])
    .await;
    // While the holder runs it still holds the singleton.
    let c = h.claim_one("noop", t0()).await;
    assert_eq!(c.id, holder);
    let err = h
        .store
        .task_insert(vec![recurring("noop", data)])
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Duplicate { existing, .. } if existing == holder));
    // Once it is done, the singleton is free again.
    h.finish(finish(&c, t0(), Next::Done)).await;
    let again = recurring("noop", data);
    assert_eq!(h.insert(vec![again.clone()]).await, vec![again.id]);
}

async fn retrying_and_finished_recurring_tasks_hold_the_singleton_as_their_state_says(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for (state, holds) in [
        (State::Retrying, true),
        (State::Dead, false),
        (State::Cancelled, false),
    ] {
        let data = format!(r#"{{"state":"{state}"}}"#);
        let holder = recurring("noop", &data);
        h.insert(vec![holder.clone()]).await;
        match state {
            State::Cancelled => {
                h.store.task_cancel(holder.id, t0()).await.unwrap();
            }
            _ => {
                let c = h.claim_one("noop", t0()).await;
                let next = if state == State::Dead {
                    Next::Dead
                } else {
                    Next::retry_at(t0() + secs(60))
                };
                h.finish(crate::harness::failed(&c, t0(), "boom", next))
                    .await;
            }
        }
        assert_eq!(h.get(holder.id).await.state, state);
        let r = h.store.task_insert(vec![recurring("noop", &data)]).await;
        assert_eq!(r.is_err(), holds, "a {state} recurring task: {r:?}");
    }
}

/// A unique key binds live tasks of one handler; with `unique_since`, tasks that finished
/// after it bind too. A refused batch writes nothing.
async fn a_unique_key_binds_live_tasks_and_recently_finished_ones(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let keyed = |handler: &str, key: &str| InsertTask {
        unique_key: Some(key.to_string()),
        ..task(handler)
    };
    let first = keyed("export", "k");
    assert_eq!(h.insert(vec![first.clone()]).await, vec![first.id]);
    assert_eq!(h.get(first.id).await.unique_key.as_deref(), Some("k"));
    let dup = keyed("export", "k");
    let other = keyed("export", "j");
    let err = h
        .store
        .task_insert(vec![other.clone(), dup])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TaskError::Duplicate {
            handler: "export".into(),
            existing: first.id,
            unique_key: Some("k".into()),
            place: None,
        }
    );
    assert!(
        h.store.task_get(other.id).await.unwrap().is_none(),
        "all or none"
    );
    // Another handler with the same key is another task.
    h.insert(vec![keyed("import", "k")]).await;
    // Finished at t0 + 10s: free without a window; within one that starts before it,
    // refused, naming the finished task; one that starts at it no longer holds it.
    let c = h.claim_one("export", t0()).await;
    h.finish(finish(&c, t0() + secs(10), Next::Done)).await;
    let windowed = |since| InsertTask {
        unique_since: Some(since),
        ..keyed("export", "k")
    };
    let err = h
        .store
        .task_insert(vec![windowed(
            t0() + secs(10) - SignedDuration::from_micros(1),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(err, TaskError::Duplicate { existing, .. } if existing == first.id),
        "{err:?}"
    );
    let later = windowed(t0() + secs(10));
    assert_eq!(h.insert(vec![later.clone()]).await, vec![later.id]);
}

/// Every row of a large batch (SQLite writes one a chunk of rows at a time) reads back as
/// written: no value lands in another row's or another column's place.
async fn every_row_of_a_large_batch_reads_back_as_written(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let tasks: Vec<InsertTask> = (0..75i64)
        .map(|i| InsertTask {
            data: format!(r#"{{"i":{i}}}"#),
            timestamp: t0() + secs(i * 7 - 200),
            is_recurring: i % 3 == 0,
            rule: (i % 3 == 0).then(|| format!(r#"{{"every":"{}h"}}"#, i + 1)),
            max_attempts: 1 + i as u32,
            queue: format!("q{}", i % 5),
            priority: 40 - i as i32,
            created_at: t0() - secs(i),
            unique_key: (i % 4 == 1).then(|| format!("k{i}")),
            ..task(if i % 2 == 0 { "noop" } else { "other" })
        })
        .collect();
    let expected: Vec<_> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(h.insert(tasks.clone()).await, expected);
    for t in &tasks {
        let got = h.get(t.id).await;
        let want_data: party::serde_json::Value = party::serde_json::from_str(&t.data).unwrap();
        let want_rule = t
            .rule
            .as_deref()
            .map(|r| party::serde_json::from_str::<party::serde_json::Value>(r).unwrap());
        assert_eq!(
            (
                &got.handler,
                &got.data,
                got.timestamp,
                got.due_at,
                got.is_recurring,
                &got.rule,
            ),
            (
                &t.handler,
                &want_data,
                t.timestamp,
                t.timestamp,
                t.is_recurring,
                &want_rule,
            ),
            "task {}",
            t.data
        );
        assert_eq!(
            (
                got.max_attempts,
                &got.queue,
                got.priority,
                got.created_at,
                got.unique_key.as_ref(),
                got.state,
            ),
            (
                t.max_attempts,
                &t.queue,
                t.priority,
                t.created_at,
                t.unique_key.as_ref(),
                State::Scheduled,
            ),
            "task {}",
            t.data
        );
    }
}

/// A collision anywhere in a large batch, with a live task or with another task of the batch,
/// refuses the whole batch and names the task it collided with.
async fn a_collision_deep_in_a_large_batch_refuses_it_whole(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let held = recurring("noop", r#"{"s":"held"}"#);
    let keyed = InsertTask {
        unique_key: Some("kept".to_string()),
        ..task("export")
    };
    h.insert(vec![held.clone(), keyed.clone()]).await;
    let batch = |bad: &[(usize, InsertTask)]| -> Vec<InsertTask> {
        (0..75)
            .map(|i| match bad.iter().find(|(at, _)| *at == i) {
                Some((_, t)) => t.clone(),
                None => InsertTask {
                    data: format!(r#"{{"i":{i}}}"#),
                    ..task("noop")
                },
            })
            .collect()
    };
    let twin = recurring("noop", r#"{"s":"twin"}"#);
    let key = |k: &str| Some(k.to_string());
    // 75 tasks: two chunks of 32, one of 8 and three single rows on SQLite.
    let cases = [
        (
            vec![(20, recurring("noop", r#"{"s":"held"}"#))],
            held.id,
            None,
        ),
        (
            vec![(
                70,
                InsertTask {
                    unique_key: key("kept"),
                    ..task("export")
                },
            )],
            keyed.id,
            key("kept"),
        ),
        (
            vec![
                (35, twin.clone()),
                (60, recurring("noop", r#"{"s":"twin"}"#)),
            ],
            twin.id,
            None,
        ),
        (
            vec![(74, recurring("noop", r#"{"s":"held"}"#))],
            held.id,
            None,
        ),
    ];
    for (bad, existing, unique_key) in cases {
        let tasks = batch(&bad);
        let at: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        let handler = bad[0].1.handler.clone();
        let err = h.store.task_insert(tasks.clone()).await.unwrap_err();
        assert_eq!(
            err,
            TaskError::Duplicate {
                handler,
                existing,
                unique_key,
                place: None,
            },
            "a collision at {at:?}"
        );
        for t in &tasks {
            assert_eq!(
                h.store.task_get(t.id).await.unwrap(),
                None,
                "a task of a batch refused at {at:?} was written"
            );
        }
    }
    assert_eq!(h.get(held.id).await.state, State::Scheduled);
    assert_eq!(h.get(keyed.id).await.state, State::Scheduled);
}

on_every_backend!(
    every_row_of_a_large_batch_reads_back_as_written,
    a_collision_deep_in_a_large_batch_refuses_it_whole,
    a_unique_key_binds_live_tasks_and_recently_finished_ones,
    an_inserted_task_reads_back_as_written,
    instants_keep_their_microseconds,
    a_batch_goes_in_whole_and_answers_ids_in_order,
    a_duplicate_recurring_task_fails_the_whole_batch,
    two_equal_recurring_tasks_in_one_batch_are_refused,
    the_singleton_binds_only_live_recurring_tasks_of_one_handler_and_data,
    retrying_and_finished_recurring_tasks_hold_the_singleton_as_their_state_says,
);

/// A SQLite store on a tmpfs of 8 MB with about 1 MB left free, holding one task (root only:
/// it mounts the tmpfs). Dropped, it frees the space and unmounts.
struct FullDisk {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    filler: std::path::PathBuf,
    store: std::sync::Arc<dyn party::store::Store>,
}

impl FullDisk {
    async fn new() -> Option<FullDisk> {
        let uid = std::process::Command::new("id").arg("-u").output();
        if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
            println!("a full disk: skipped, the test does not run as root");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("party-full-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success());
        let path = dir.join("tasks.db");
        let store: std::sync::Arc<dyn party::store::Store> = std::sync::Arc::new(
            party::store::sqlite::SqliteStore::open(&path)
                .await
                .unwrap(),
        );
        store.task_insert(vec![task("noop")]).await.unwrap();
        // Leave about 1 MB free.
        let filler = dir.join("filler");
        let mut left = 8 << 20;
        while std::fs::write(&filler, vec![0u8; left]).is_err() {
            left -= 64 << 10;
        }
        std::fs::write(&filler, vec![0u8; left - (1 << 20)]).unwrap();
        Some(FullDisk {
            dir,
            path,
            filler,
            store,
        })
    }

    /// 4 MB in one call: more than the page cache holds and than the disk has left.
    fn too_big() -> Vec<InsertTask> {
        (0..40)
            .map(|_| InsertTask {
                data: format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000)),
                ..task("noop")
            })
            .collect()
    }

    /// Make room again, so the store can be read.
    fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        self.free();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// SQLite's group commit: calls that queue up while the writer waits share one transaction.
/// When one of them fills the disk, SQLite rolls that whole transaction back; the calls after
/// it in the group must not then commit on their own while every one is answered with an
/// error (or be answered Ok while rolled back): each answer says whether its tasks were
/// written. (Root only: the full disk is a small tmpfs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_group_commit_cut_short_by_a_full_disk_answers_what_it_wrote() {
    use std::time::Duration;

    let Some(disk) = FullDisk::new().await else {
        return;
    };
    let store = disk.store.clone();

    // Another process holds the write lock, so the calls below queue up behind the first.
    let other = rusqlite::Connection::open(&disk.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = {
        let s = store.clone();
        tokio::spawn(async move { s.task_insert(vec![task("noop")]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut calls = Vec::new();
    let big = FullDisk::too_big();
    let small: Vec<InsertTask> = (0..5).map(|_| task("noop")).collect();
    for batch in std::iter::once(big).chain(small.into_iter().map(|t| vec![t])) {
        let s = store.clone();
        let id = batch[0].id;
        calls.push((id, tokio::spawn(async move { s.task_insert(batch).await })));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    other.execute_batch("COMMIT").unwrap();
    first.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for (id, call) in calls {
        answers.push((id, call.await.unwrap()));
    }
    disk.free();
    let mut wrong = Vec::new();
    for (id, answer) in &answers {
        let stored = store.task_get(*id).await.unwrap().is_some();
        if answer.is_ok() != stored {
            wrong.push(format!("{id}: answered {answer:?}, stored: {stored}"));
        }
    }
    drop((store, other, disk));
    assert!(
        wrong.is_empty(),
        "each answer says whether its task was written:\n{}",
        wrong.join("\n")
    );
}

/// As above, with a call that writes outside a transaction of its own (the pruner's
/// forgetting of killed workers) queued behind the call that fills the disk: SQLite rolled
/// the group's transaction back, so the call runs on its own and commits, and it must then not
/// be answered with the group's failure (the pruner would report it failed while the rows are
/// gone), or it must be refused before it writes, as the calls through a transaction are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_call_after_a_group_commit_was_cut_short_is_answered_what_it_wrote() {
    use std::time::Duration;

    let Some(disk) = FullDisk::new().await else {
        return;
    };
    let store = disk.store.clone();

    let other = rusqlite::Connection::open(&disk.path).unwrap();
    // A killed worker's row, gone for long.
    other
        .execute(
            "INSERT INTO workers (id, handlers, queues, last_seen, live_until) \
             VALUES ('killed', '[]', '[]', 0, 0)",
            [],
        )
        .unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = {
        let s = store.clone();
        tokio::spawn(async move { s.task_insert(vec![task("noop")]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let big = FullDisk::too_big();
    let inserted = {
        let s = store.clone();
        tokio::spawn(async move { s.task_insert(big).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let forgot = {
        let s = store.clone();
        tokio::spawn(async move {
            s.workers_forget(jiff::Timestamp::from_second(1_000).unwrap(), false)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    other.execute_batch("COMMIT").unwrap();
    first.await.unwrap().unwrap();
    let inserted = inserted.await.unwrap();
    let forgot = forgot.await.unwrap();
    disk.free();
    let left: i64 = other
        .query_row(
            "SELECT count(*) FROM workers WHERE id = 'killed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop((store, other, disk));
    assert!(inserted.is_err(), "the disk was not filled: {inserted:?}");
    assert_eq!(
        forgot.is_ok(),
        left == 0,
        "answered {forgot:?}, and the killed worker's row is {}",
        if left == 0 { "gone" } else { "kept" }
    );
}
