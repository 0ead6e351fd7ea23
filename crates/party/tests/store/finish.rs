//! `task_finish`: every `Next`, the run row each attempt leaves, fencing, duplicates, and
//! follow-up tasks written with the finish.

use party::store::{Finish, FinishResult, InsertTask, Next};
use party::{Outcome, Run, State, TaskError};

use crate::harness::{
    Backend, Harness, LEASE, WORKER, failed, finish, on_every_backend, recurring, secs, t0, task,
};

async fn done_ends_the_task_and_records_the_run(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0() + secs(1), 1).await.remove(0);
    h.finish(finish(&c, t0() + secs(4), Next::Done)).await;
    let t = h.get(id).await;
    assert_eq!(t.state, State::Done);
    assert_eq!(t.attempts, 1, "attempts are kept");
    assert_eq!(t.timestamp, t0());
    assert_eq!(t.worker, None);
    assert_eq!(t.last_error, None);
    assert_eq!(
        t.runs,
        vec![Run {
            attempt: 1,
            timestamp: t0(),
            started_at: t0() + secs(1),
            finished_at: t0() + secs(4),
            outcome: Outcome::Succeeded,
            error: None,
            worker: WORKER.into(),
        }]
    );
}

async fn retry_waits_for_its_due_time_and_keeps_the_occurrence(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let due = t0() + secs(30);
    h.finish(failed(&c, t0() + secs(2), "boom", Next::retry_at(due)))
        .await;
    let t = h.get(id).await;
    assert_eq!(t.state, State::Retrying);
    assert_eq!((t.due_at, t.timestamp), (due, t0()));
    assert_eq!(t.attempts, 1);
    assert_eq!(t.last_error.as_deref(), Some("boom"));
    assert_eq!(t.worker, None);
    assert_eq!(t.runs.len(), 1);
    assert_eq!(t.runs[0].outcome, Outcome::Failed);
    assert_eq!(t.runs[0].error.as_deref(), Some("boom"));
    assert!(h.claim(due - secs(1), 1).await.is_empty());
    let again = h.claim(due, 1).await.remove(0);
    assert_eq!((again.id, again.attempts, again.timestamp), (id, 2, t0()));
    // A later success keeps the last error for the record.
    h.finish(finish(&again, due, Next::Done)).await;
    let t = h.get(id).await;
    assert_eq!((t.state, t.attempts), (State::Done, 2));
    assert_eq!(t.last_error.as_deref(), Some("boom"));
    let attempts: Vec<_> = t.runs.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(
        attempts,
        vec![(1, Outcome::Failed), (2, Outcome::Succeeded)],
        "runs oldest first"
    );
}

/// A task claimed but never started (its worker shut down first) waits again with the
/// attempt its claim counted given back: in `scheduled` when none of its attempts has ended,
/// in `retrying` after one that did, and with no run row either way.
async fn a_release_gives_the_claims_attempt_back(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    assert_eq!(c.attempts, 1);
    let mut released = finish(
        &c,
        t0() + secs(1),
        Next::Release {
            due_at: t0() + secs(1),
            state: State::Scheduled,
        },
    );
    released.ran = false;
    h.finish(released).await;
    let t = h.get(id).await;
    assert_eq!((t.state, t.attempts), (State::Scheduled, 0), "{t:?}");
    assert!(t.runs.is_empty(), "{:?}", t.runs);
    assert_eq!(t.worker, None);
    // Claimed again, it is attempt 1 once more; a failure then a second release.
    let c = h.claim(t0() + secs(1), 1).await.remove(0);
    assert_eq!((c.id, c.attempts), (id, 1));
    h.finish(failed(
        &c,
        t0() + secs(2),
        "boom",
        Next::retry_at(t0() + secs(2)),
    ))
    .await;
    let c = h.claim(t0() + secs(2), 1).await.remove(0);
    assert_eq!(c.attempts, 2);
    let mut released = finish(
        &c,
        t0() + secs(3),
        Next::Release {
            due_at: t0() + secs(3),
            state: State::Retrying,
        },
    );
    released.ran = false;
    h.finish(released).await;
    let t = h.get(id).await;
    assert_eq!((t.state, t.attempts), (State::Retrying, 1), "{t:?}");
    assert_eq!(t.last_error.as_deref(), Some("boom"), "the failure is kept");
    assert_eq!(t.runs.len(), 1, "only the failed attempt ran: {:?}", t.runs);
    assert_eq!(h.claim(t0() + secs(3), 1).await.remove(0).attempts, 2);
}

async fn dead_keeps_the_task_and_its_error_for_a_person(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let mut f = failed(&c, t0() + secs(1), "timed out after 1s", Next::Dead);
    f.outcome = Outcome::TimedOut;
    h.finish(f).await;
    let t = h.get(id).await;
    assert_eq!(t.state, State::Dead);
    assert_eq!(t.last_error.as_deref(), Some("timed out after 1s"));
    assert_eq!(t.runs[0].outcome, Outcome::TimedOut);
    assert!(h.claim(t0() + secs(3_600), 10).await.is_empty());
}

async fn reschedule_moves_to_the_next_occurrence(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![recurring("noop", "{}")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let next = t0() + secs(3_600);
    h.finish(finish(
        &c,
        t0() + secs(1),
        Next::Reschedule {
            timestamp: next,
            due_at: next,
            last_run_on: Some(t0()),
        },
    ))
    .await;
    let t = h.get(id).await;
    assert_eq!(t.state, State::Scheduled);
    assert_eq!((t.timestamp, t.due_at), (next, next));
    assert_eq!(t.last_run_on, Some(t0()));
    assert_eq!(t.attempts, 0, "a new occurrence starts its attempts afresh");
    assert_eq!(t.runs.len(), 1);
    assert_eq!(
        t.runs[0].timestamp,
        t0(),
        "the run belongs to the occurrence that ran"
    );
    assert!(h.claim(next - secs(1), 1).await.is_empty());
    let again = h.claim(next, 1).await.remove(0);
    assert_eq!(again.timestamp, next);
    assert_eq!(again.last_run_on, Some(t0()));
    assert_eq!(again.attempts, 1);
}

async fn a_skipped_occurrence_keeps_last_run_on_and_writes_no_run(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![recurring("noop", "{}")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let second = t0() + secs(3_600);
    h.finish(finish(
        &c,
        t0(),
        Next::Reschedule {
            timestamp: second,
            due_at: second,
            last_run_on: Some(t0()),
        },
    ))
    .await;
    // The next occurrence is skipped by policy: no attempt ran.
    let c = h.claim(second, 1).await.remove(0);
    let third = t0() + secs(7_200);
    let skip = Finish {
        ran: false,
        ..finish(
            &c,
            second,
            Next::Reschedule {
                timestamp: third,
                due_at: third,
                last_run_on: None,
            },
        )
    };
    h.finish(skip).await;
    let t = h.get(id).await;
    assert_eq!((t.state, t.timestamp), (State::Scheduled, third));
    assert_eq!(
        t.last_run_on,
        Some(t0()),
        "None keeps the previous last_run_on"
    );
    assert_eq!(
        t.runs.len(),
        1,
        "an occurrence that did not run has no run row"
    );
}

async fn a_second_finish_of_one_claim_is_stale(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    h.finish(finish(&c, t0(), Next::Done)).await;
    let again = h
        .store
        .task_finish(vec![failed(&c, t0() + secs(1), "late", Next::Dead)])
        .await
        .unwrap();
    assert_eq!(again, vec![FinishResult::Stale]);
    let t = h.get(id).await;
    assert_eq!((t.state, t.runs.len()), (State::Done, 1));
    assert_eq!(t.last_error, None);
}

async fn a_finish_of_an_unknown_task_is_stale(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert(vec![task("noop")]).await;
    let mut c = h.claim(t0(), 1).await.remove(0);
    c.id = party::TaskId::generate(t0());
    let r = h
        .store
        .task_finish(vec![finish(&c, t0(), Next::Done)])
        .await
        .unwrap();
    assert_eq!(r, vec![FinishResult::Stale]);
    assert_eq!(h.store.task_finish(Vec::new()).await.unwrap(), Vec::new());
}

async fn follow_ups_are_written_with_the_finish(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let soon = InsertTask {
        data: r#"{"step":2}"#.into(),
        ..task("other")
    };
    let later = InsertTask {
        timestamp: t0() + secs(60),
        ..recurring("other", r#"{"step":3}"#)
    };
    let mut f = finish(&c, t0(), Next::Done);
    f.follow_ups = vec![soon.clone(), later.clone()];
    h.finish(f).await;
    assert_eq!(h.get(id).await.state, State::Done);
    let s = h.get(soon.id).await;
    assert_eq!((s.state, s.handler.as_str()), (State::Scheduled, "other"));
    let l = h.get(later.id).await;
    assert_eq!(
        (l.state, l.due_at, l.is_recurring),
        (State::Scheduled, t0() + secs(60), true)
    );
    let claimed: Vec<_> = h.claim(t0(), 10).await.iter().map(|c| c.id).collect();
    assert_eq!(claimed, vec![soon.id], "follow-ups are claimable when due");
}

async fn a_duplicate_follow_up_fails_only_its_own_finish(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let holder = h
        .insert(vec![InsertTask {
            timestamp: t0() + secs(3_600),
            ..recurring("noop", r#"{"s":1}"#)
        }])
        .await[0];
    let a = h.insert(vec![task("noop")]).await[0];
    let b_id = h.insert(vec![task("other")]).await[0];
    let ca = h.claim_one("noop", t0()).await;
    let cb = h.claim_one("other", t0()).await;
    assert_eq!((ca.id, cb.id), (a, b_id));
    let kept = task("other");
    let mut fa = finish(&ca, t0(), Next::Done);
    fa.follow_ups = vec![task("other"), recurring("noop", r#"{"s":1}"#)];
    let refused_ok = fa.follow_ups[0].id;
    let mut fb = finish(&cb, t0(), Next::Done);
    fb.follow_ups = vec![kept.clone()];
    let results = h.store.task_finish(vec![fa, fb]).await.unwrap();
    assert_eq!(
        results,
        vec![
            FinishResult::Duplicate(TaskError::Duplicate {
                handler: "noop".into(),
                existing: holder,
                unique_key: None,
                place: None,
            }),
            FinishResult::Applied
        ]
    );
    // The refused finish left no trace, not even its other follow-up; the task still runs
    // under its claim. The other finish was written with its follow-up.
    let ta = h.get(a).await;
    assert_eq!((ta.state, ta.runs.len()), (State::Running, 0));
    assert_eq!(h.store.task_get(refused_ok).await.unwrap(), None);
    let tb = h.get(b_id).await;
    assert_eq!((tb.state, tb.runs.len()), (State::Done, 1));
    assert_eq!(h.get(kept.id).await.state, State::Scheduled);
    // The refused claim can still be finished another way.
    h.finish(finish(&ca, t0(), Next::Done)).await;
    assert_eq!(h.get(a).await.state, State::Done);
}

async fn the_same_finish_twice_in_one_batch_is_applied_once(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let f = finish(&c, t0(), Next::Done);
    let results = h.store.task_finish(vec![f.clone(), f]).await.unwrap();
    assert_eq!(results, vec![FinishResult::Applied, FinishResult::Stale]);
    assert_eq!(h.get(id).await.runs.len(), 1, "one attempt, one run row");
}

async fn a_stale_fence_is_refused_and_writes_nothing(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let first = h.claim(t0(), 1).await.remove(0);
    h.finish(failed(&first, t0(), "boom", Next::retry_at(t0())))
        .await;
    let second = h.claim(t0(), 1).await.remove(0);
    assert!(second.fence > first.fence);
    // The first claim's holder answers late, with a follow-up: nothing of it is written.
    let mut late = finish(&first, t0() + secs(5), Next::Done);
    let follow_up = task("other");
    late.follow_ups = vec![follow_up.clone()];
    let mixed = h
        .store
        .task_finish(vec![late, finish(&second, t0() + secs(6), Next::Done)])
        .await
        .unwrap();
    assert_eq!(mixed, vec![FinishResult::Stale, FinishResult::Applied]);
    let t = h.get(id).await;
    assert_eq!(t.state, State::Done);
    let runs: Vec<_> = t.runs.iter().map(|r| (r.attempt, r.outcome)).collect();
    assert_eq!(runs, vec![(1, Outcome::Failed), (2, Outcome::Succeeded)]);
    assert_eq!(h.store.task_get(follow_up.id).await.unwrap(), None);
}

/// What a finish does to one task in [`large_batch`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Done,
    Dead,
    Retry,
    StaleFence,
    LeaseNotEnded,
    RescuedDead,
}

async fn a_large_mixed_batch_is_applied_as_one_by_one(b: Backend) {
    large_batch(b, true).await;
}

/// A batch of moves to the history only (no update in place), which PostgreSQL writes with a
/// statement of its own.
async fn a_large_batch_of_moves_is_applied_as_one_by_one(b: Backend) {
    large_batch(b, false).await;
}

/// More tasks than one statement of moves holds, finished in one batch in every way a batch
/// can mix: moves to the history among updates in place (`retries`: some tasks retry), stale
/// fences, rescues whose cutoff the lease has or has not passed, a repeat and an unknown task.
async fn large_batch(b: Backend, retries: bool) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let n = 75;
    let ids = h.insert((0..n).map(|_| task("noop")).collect()).await;
    let claimed = h.claim(t0(), 100).await;
    assert_eq!(claimed.len(), n);
    let lease_until = t0() + LEASE;
    let kind = |i: usize| match i % 10 {
        3 => Kind::StaleFence,
        5 if retries => Kind::Retry,
        7 => Kind::Dead,
        8 if i % 20 == 8 => Kind::LeaseNotEnded,
        8 => Kind::RescuedDead,
        _ => Kind::Done,
    };
    let at = t0() + secs(2);
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        let (f, applied) = match kind(i) {
            Kind::Done => (finish(c, at, Next::Done), true),
            Kind::Dead => (failed(c, at, &format!("boom {i}"), Next::Dead), true),
            Kind::Retry => (
                failed(c, at, &format!("again {i}"), Next::retry_at(at + secs(60))),
                true,
            ),
            Kind::StaleFence => {
                let mut f = finish(c, at, Next::Done);
                f.fence -= 1;
                (f, false)
            }
            Kind::LeaseNotEnded => {
                let mut f = failed(c, at, "lost", Next::Dead);
                f.expired_before = Some(lease_until - secs(1));
                (f, false)
            }
            Kind::RescuedDead => {
                let mut f = failed(c, at, &format!("lost {i}"), Next::Dead);
                f.expired_before = Some(lease_until + secs(1));
                (f, true)
            }
        };
        batch.push(f);
        expected.push(if applied {
            FinishResult::Applied
        } else {
            FinishResult::Stale
        });
        if i == 40 {
            // The first finish again, and a task that does not exist.
            batch.push(batch[0].clone());
            expected.push(FinishResult::Stale);
            let mut unknown = finish(c, at, Next::Done);
            unknown.id = party::TaskId::generate(t0());
            batch.push(unknown);
            expected.push(FinishResult::Stale);
        }
    }
    let results = h.store.task_finish(batch).await.unwrap();
    assert_eq!(results, expected);
    let mut finished = [0u64; 2];
    for (i, (id, c)) in ids.iter().zip(&claimed).enumerate() {
        assert_eq!(*id, c.id, "claimed in insert order");
        let t = h.get(*id).await;
        let (state, error, runs) = match kind(i) {
            Kind::Done => (State::Done, None, 1),
            Kind::Dead => (State::Dead, Some(format!("boom {i}")), 1),
            Kind::RescuedDead => (State::Dead, Some(format!("lost {i}")), 1),
            Kind::Retry => (State::Retrying, Some(format!("again {i}")), 1),
            Kind::StaleFence | Kind::LeaseNotEnded => (State::Running, None, 0),
        };
        assert_eq!(
            (t.state, t.last_error.clone(), t.runs.len()),
            (state, error, runs),
            "task {i} ({:?})",
            kind(i)
        );
        match state {
            State::Done => finished[0] += 1,
            State::Dead => finished[1] += 1,
            _ => {}
        }
        if runs == 1 {
            let run = &t.runs[0];
            assert_eq!(
                (run.attempt, run.finished_at, run.worker.as_str()),
                (1, at, WORKER)
            );
            assert_eq!(run.error, t.last_error, "task {i}: the run keeps its error");
        }
        if state == State::Done || state == State::Dead {
            assert_eq!(
                (t.handler.as_str(), t.attempts, t.timestamp, t.due_at),
                ("noop", 1, t0(), t0()),
                "task {i} keeps its columns in the history"
            );
        }
    }
    let counts = h.stats(at).await.counts;
    let count = |state| {
        counts
            .iter()
            .find(|(handler, s, _)| handler == "noop" && *s == state)
            .map_or(0, |c| c.2)
    };
    assert_eq!(
        [count(State::Done), count(State::Dead)],
        finished,
        "the finished counters add each move once"
    );
}

on_every_backend!(
    a_large_mixed_batch_is_applied_as_one_by_one,
    a_large_batch_of_moves_is_applied_as_one_by_one,
    a_stale_fence_is_refused_and_writes_nothing,
    the_same_finish_twice_in_one_batch_is_applied_once,
    done_ends_the_task_and_records_the_run,
    retry_waits_for_its_due_time_and_keeps_the_occurrence,
    a_release_gives_the_claims_attempt_back,
    dead_keeps_the_task_and_its_error_for_a_person,
    reschedule_moves_to_the_next_occurrence,
    a_skipped_occurrence_keeps_last_run_on_and_writes_no_run,
    a_second_finish_of_one_claim_is_stale,
    a_finish_of_an_unknown_task_is_stale,
    follow_ups_are_written_with_the_finish,
    a_duplicate_follow_up_fails_only_its_own_finish,
);
