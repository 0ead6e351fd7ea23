//! `task_claim`: which tasks, in which order, how many, never early, never twice; each claim
//! fences the task anew and counts the attempt.

use std::collections::HashSet;
use std::sync::Arc;

use party::store::{ClaimParams, InsertTask, Next};
use party::{State, TaskId};

use crate::harness::{
    Backend, Harness, LEASE, WORKER, claim_on, failed, finish, on_every_backend, secs, t0, task,
    task_at,
};

async fn successive_claims_of_one_take_the_same_order(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let later = task_at("noop", t0() - secs(10));
    let low = InsertTask {
        priority: 5,
        ..task_at("noop", t0() - secs(100))
    };
    let earlier = task_at("noop", t0() - secs(20));
    let urgent = InsertTask {
        priority: -1,
        ..task_at("noop", t0())
    };
    h.insert(vec![
        later.clone(),
        low.clone(),
        earlier.clone(),
        urgent.clone(),
    ])
    .await;
    let mut order = Vec::new();
    for _ in 0..5 {
        order.extend(h.claim(t0(), 1).await.into_iter().map(|c| c.id));
    }
    assert_eq!(order, vec![urgent.id, earlier.id, later.id, low.id]);
}

async fn a_claim_takes_at_most_its_limit(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..5).map(|_| task("noop")).collect()).await;
    let sizes: Vec<usize> = {
        let mut sizes = Vec::new();
        for _ in 0..4 {
            sizes.push(h.claim(t0(), 2).await.len());
        }
        sizes
    };
    assert_eq!(sizes, vec![2, 2, 1, 0]);
    h.insert(vec![task("noop")]).await;
    assert!(h.claim(t0(), 0).await.is_empty(), "a limit of 0 takes none");
    assert_eq!(h.claim(t0(), 1).await.len(), 1);
}

async fn a_task_is_claimed_at_its_due_time_and_not_before(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task_at("noop", t0() + secs(10))]).await[0];
    assert!(h.claim(t0(), 10).await.is_empty());
    assert!(h.claim(t0() + secs(9), 10).await.is_empty());
    let got = h.claim(t0() + secs(10), 10).await;
    assert_eq!(
        got.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![id],
        "due exactly now is due"
    );
}

async fn claims_take_only_the_given_handlers_and_queues(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let noop = h.insert(vec![task("noop")]).await[0];
    let other = h.insert(vec![task("other")]).await[0];
    let billing = h
        .insert(vec![InsertTask {
            queue: "billing".into(),
            ..task("noop")
        }])
        .await[0];
    let mail = h
        .insert(vec![InsertTask {
            queue: "mail".into(),
            ..task("other")
        }])
        .await[0];
    let ids = |v: Vec<party::store::ClaimedTask>| -> HashSet<TaskId> {
        v.into_iter().map(|c| c.id).collect()
    };
    assert_eq!(
        ids(h
            .claim_for(&["unknown"], &["default", "billing", "mail"], t0(), 10)
            .await),
        HashSet::new()
    );
    assert_eq!(
        ids(h.claim_for(&["noop"], &["default"], t0(), 10).await),
        HashSet::from([noop])
    );
    assert_eq!(
        ids(h
            .claim_for(&["noop", "other"], &["billing", "mail"], t0(), 10)
            .await),
        HashSet::from([billing, mail])
    );
    assert_eq!(
        ids(h
            .claim_for(&["noop", "other"], &["default"], t0(), 10)
            .await),
        HashSet::from([other])
    );
}

async fn a_claim_runs_the_task_under_a_new_fence_and_counts_the_attempt(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let written = InsertTask {
        data: r#"{"k":"v"}"#.into(),
        max_attempts: 4,
        queue: "mail".into(),
        ..crate::harness::recurring("noop", "{}")
    };
    h.insert(vec![written.clone()]).await;
    let now = t0() + secs(3);
    let first = h.claim_for(&["noop"], &["mail"], now, 10).await.remove(0);
    assert_eq!(first.id, written.id);
    assert_eq!(first.queue, "mail");
    assert_eq!(first.due_at, t0(), "due at its timestamp");
    assert_eq!(first.handler, "noop");
    assert_eq!(first.data, r#"{"k":"v"}"#);
    assert_eq!(first.timestamp, t0());
    assert_eq!(first.last_run_on, None);
    assert_eq!(first.attempts, 1, "the attempt is counted by the claim");
    assert_eq!(first.max_attempts, 4);
    assert!(first.is_recurring);
    assert_eq!(first.rule, written.rule);
    assert_eq!(first.started_at, now);
    let running = h.get(written.id).await;
    assert_eq!(running.state, State::Running);
    assert_eq!(running.attempts, 1);
    assert_eq!(running.worker.as_deref(), Some(WORKER));

    // Retried and claimed again: a new fence, the next attempt.
    h.finish(failed(&first, now, "boom", Next::retry_at(now)))
        .await;
    let second = h
        .claim_for(&["noop"], &["mail"], now + secs(1), 10)
        .await
        .remove(0);
    assert!(second.fence > first.fence, "a new claim, a new fence");
    assert_eq!(second.due_at, now, "due when its backoff ended");
    assert_eq!(second.attempts, 2);
    assert_eq!(second.timestamp, t0(), "a retry keeps its occurrence");
    assert_eq!(second.started_at, now + secs(1));
}

async fn tasks_not_waiting_are_never_claimed(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for state in [State::Running, State::Done, State::Dead, State::Cancelled] {
        h.task_in(state, "noop").await;
    }
    assert!(
        h.claim(t0() + secs(3_600), 10).await.is_empty(),
        "running, done, dead and cancelled tasks are not claimable"
    );
    let retrying = h.task_in(State::Retrying, "other").await;
    let got = h.claim(t0() + secs(3_600), 10).await;
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![retrying]);
}

async fn concurrent_claims_never_hand_out_a_task_twice(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let total = 400;
    h.insert((0..total).map(|_| task("noop")).collect()).await;
    let h = Arc::new(h);
    let mut claimers = Vec::new();
    for n in 0..8 {
        let h = h.clone();
        claimers.push(tokio::spawn(async move {
            let worker = format!("worker-{n}");
            let handlers = vec!["noop".to_string()];
            let queues = vec!["default".to_string()];
            let mut mine = Vec::new();
            loop {
                let got = h
                    .store
                    .task_claim(ClaimParams {
                        worker: &worker,
                        handlers: &handlers,
                        queues: &queues,
                        limit: fastrand::u32(1..=7),
                        now: t0(),
                        lease_until: t0() + LEASE,
                        promote_limit: party::policy::PROMOTE_BATCH,
                        controlled: &[],
                    })
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                let finishes = got.iter().map(|c| finish(c, t0(), Next::Done)).collect();
                h.store.task_finish(finishes).await.unwrap();
                mine.extend(got.into_iter().map(|c| c.id));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await.unwrap() {
            assert!(seen.insert(id), "task {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), total, "every task claimed once");
}

async fn claims_take_priority_then_due_time(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    // Inserted in an order that matches neither priority nor due time, so ids (which sort by
    // creation) cannot stand in for either.
    let later = task_at("noop", t0() - secs(10));
    let low = InsertTask {
        priority: 5,
        ..task_at("noop", t0() - secs(100))
    };
    let earlier = task_at("noop", t0() - secs(20));
    let urgent = InsertTask {
        priority: -1,
        ..task_at("noop", t0())
    };
    let future = InsertTask {
        priority: -9,
        ..task_at("noop", t0() + secs(600))
    };
    h.insert(vec![
        later.clone(),
        low.clone(),
        earlier.clone(),
        urgent.clone(),
        future,
    ])
    .await;
    let batch: Vec<TaskId> = h.claim(t0(), 10).await.iter().map(|c| c.id).collect();
    assert_eq!(
        batch,
        vec![urgent.id, earlier.id, later.id, low.id],
        "one batch comes in claim order: priority, then due time; future tasks wait"
    );
}

/// A task written by a process whose clock is ahead of ours is already due by the writer's
/// clock; by ours it is not, and a claim must not start it early.
async fn a_task_written_due_by_a_clock_ahead_is_not_claimed_early(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let ahead = InsertTask {
        created_at: t0() + secs(60),
        ..task_at("noop", t0() + secs(30))
    };
    h.insert(vec![ahead.clone()]).await;
    assert!(
        h.claim(t0(), 10).await.is_empty(),
        "due at +30 s: not claimable at +0 s"
    );
    assert_eq!(
        h.store
            .task_next_due(&["noop".into()], &["default".into()])
            .await
            .unwrap(),
        Some(t0() + secs(30))
    );
    assert_eq!(h.claim(t0() + secs(30), 10).await[0].id, ahead.id);

    // The same for a retry whose backoff ends before the writer's clock but after ours.
    let c = h.claim(t0() + secs(30), 10).await;
    assert!(c.is_empty());
    let again = h.insert(vec![task("other")]).await[0];
    let c = h.claim_one("other", t0()).await;
    h.finish(failed(
        &c,
        t0() + secs(120),
        "boom",
        Next::retry_at(t0() + secs(100)),
    ))
    .await;
    assert!(
        h.claim_for(&["other"], &[], t0() + secs(50), 10)
            .await
            .is_empty()
    );
    assert_eq!(h.claim_one("other", t0() + secs(100)).await.id, again);
}

/// The first claim of a newly opened store takes the task its own promotion made ready. On
/// PostgreSQL the promotion and the claim are pipelined in one transaction; while their
/// statements were still to be prepared on the new connection, both went after its `COMMIT`,
/// in whichever order their preparations ended, and about one such claim in six came back
/// empty. A hundred stores make a pass by luck unlikely.
async fn a_new_stores_first_claim_takes_what_its_promotion_made_ready(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for round in 0..100 {
        let store = h.reopen().await.expect("the store opens again");
        let due = t0() + secs(60 + round);
        let id = h.insert(vec![task_at("noop", due)]).await[0];
        let got: Vec<TaskId> = claim_on(store.as_ref(), &[], &[], due, 10)
            .await
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            got,
            vec![id],
            "round {round}: the first claim of a new store"
        );
    }
}

on_every_backend!(
    a_new_stores_first_claim_takes_what_its_promotion_made_ready,
    a_task_written_due_by_a_clock_ahead_is_not_claimed_early,
    claims_take_priority_then_due_time,
    successive_claims_of_one_take_the_same_order,
    a_claim_takes_at_most_its_limit,
    a_task_is_claimed_at_its_due_time_and_not_before,
    claims_take_only_the_given_handlers_and_queues,
    a_claim_runs_the_task_under_a_new_fence_and_counts_the_attempt,
    tasks_not_waiting_are_never_claimed,
    concurrent_claims_never_hand_out_a_task_twice,
);
