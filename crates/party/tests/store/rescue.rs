//! Rescue of expired leases, as the store sees it: `task_expired` lists running tasks whose
//! lease ended (with what a rescue needs to decide), and a rescue's `task_finish` carries
//! `expired_before`, so it applies only while the lease is still over. The rescue service
//! itself (`party::maintenance::Rescuer`) runs over each backend here too.

use std::sync::Arc;

use party::maintenance::{RescueConfig, Rescuer};
use party::store::{
    ExpiredParams, ExpiredTask, Finish, FinishResult, HeartbeatParams, InsertTask, Next,
};
use party::{ManualClock, Outcome, State, WorkerInfo};

use crate::harness::{
    Backend, Harness, LEASE, WORKER, failed, finish, on_every_backend, secs, t0, task,
};

async fn expired_leases_are_listed_earliest_first_with_what_a_rescue_needs(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    // Three claims 5 s apart (leases end at +30, +35 and +40 s), one of them a second attempt.
    let first = InsertTask {
        max_attempts: 4,
        ..task("noop")
    };
    h.insert(vec![first.clone()]).await;
    let c = h.claim(t0(), 1).await.remove(0);
    h.finish(failed(&c, t0(), "boom", Next::retry_at(t0())))
        .await;
    let a = h.claim(t0(), 1).await.remove(0);
    h.insert(vec![task("noop")]).await;
    let b_claim = h.claim(t0() + secs(5), 1).await.remove(0);
    h.insert(vec![task("noop")]).await;
    let c_claim = h.claim(t0() + secs(10), 1).await.remove(0);
    let expired = |now, limit| {
        let store = h.store.clone();
        async move {
            store
                .task_expired(ExpiredParams { now, limit })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        expired(t0() + secs(30), 10).await,
        Vec::new(),
        "none ended before +30 s"
    );
    let listed = expired(t0() + secs(36), 10).await;
    assert_eq!(
        listed,
        vec![
            ExpiredTask {
                id: first.id,
                fence: a.fence,
                attempts: 2,
                max_attempts: 4,
                timestamp: t0(),
                worker: WORKER.into(),
                started_at: t0(),
                lease_until: t0() + LEASE,
                cancel_requested: false,
            },
            ExpiredTask {
                id: b_claim.id,
                fence: b_claim.fence,
                attempts: 1,
                max_attempts: 3,
                timestamp: t0(),
                worker: WORKER.into(),
                started_at: t0() + secs(5),
                lease_until: t0() + secs(5) + LEASE,
                cancel_requested: false,
            },
        ]
    );
    let ids: Vec<_> = expired(t0() + secs(60), 2)
        .await
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        ids,
        vec![first.id, b_claim.id],
        "at most the limit, earliest expiry first"
    );
    assert_eq!(expired(t0() + secs(60), 10).await.len(), 3);
    // Finished tasks are not listed, whatever their old lease.
    h.finish(finish(&c_claim, t0() + secs(11), Next::Done))
        .await;
    assert_eq!(expired(t0() + secs(60), 10).await.len(), 2);
}

/// The lost attempt's result, as a rescue at `now` writes it.
fn lost(t: &ExpiredTask, now: party::jiff::Timestamp, next: Next) -> Finish {
    Finish {
        id: t.id,
        fence: t.fence,
        attempt: t.attempts,
        timestamp: t.timestamp,
        started_at: t.started_at,
        finished_at: now,
        worker: t.worker.clone(),
        outcome: Outcome::Lost,
        error: Some("lost its lease".into()),
        next,
        follow_ups: Vec::new(),
        ran: true,
        expired_before: Some(now),
    }
}

async fn a_rescue_applies_only_while_the_lease_is_still_over(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    let seen = h
        .store
        .task_expired(ExpiredParams {
            now: t0() + secs(31),
            limit: 10,
        })
        .await
        .unwrap()
        .remove(0);
    // Between the listing and the rescue's write, the worker renews its lease.
    let worker = WorkerInfo {
        id: WORKER.into(),
        handlers: vec!["noop".into()],
        queues: vec!["default".into()],
        last_seen: t0() + secs(31),
        live_until: t0() + secs(91),
    };
    h.store
        .task_heartbeat(HeartbeatParams {
            worker: &worker,
            tasks: &[(id, c.fence)],
            lease_until: t0() + secs(90),
            now: t0() + secs(31),
        })
        .await
        .unwrap();
    let late = lost(&seen, t0() + secs(31), Next::retry_at(t0() + secs(31)));
    assert_eq!(
        h.store.task_finish(vec![late]).await.unwrap(),
        vec![FinishResult::Stale],
        "the worker renewed its lease: it keeps the task"
    );
    let t = h.get(id).await;
    assert_eq!((t.state, t.runs.len()), (State::Running, 0));
    // Once the renewed lease is over too, the rescue applies: a lost run, retried now.
    let now = t0() + secs(91);
    h.finish(lost(&seen, now, Next::retry_at(now))).await;
    let t = h.get(id).await;
    assert_eq!((t.state, t.due_at, t.worker), (State::Retrying, now, None));
    assert_eq!(t.runs.len(), 1);
    assert_eq!(t.runs[0].outcome, Outcome::Lost);
    assert_eq!(t.runs[0].finished_at, now);
    assert_eq!(t.last_error.as_deref(), Some("lost its lease"));
    // A second rescue of the same claim (another process's) is stale.
    assert_eq!(
        h.store
            .task_finish(vec![lost(&seen, now, Next::retry_at(now))])
            .await
            .unwrap(),
        vec![FinishResult::Stale]
    );
}

async fn the_rescuer_releases_an_expired_lease_and_fences_off_the_old_claim(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let first = h.claim(t0(), 1).await.remove(0);
    let clock = ManualClock::new(t0() + secs(30));
    let rescuer = Rescuer::new(
        h.store.clone(),
        Arc::new(clock.clone()),
        RescueConfig::default(),
    );
    assert_eq!(
        rescuer.run_once().await.unwrap().rescued,
        0,
        "a lease ending exactly now has not expired"
    );
    let later = t0() + secs(60);
    clock.set(later);
    assert_eq!(rescuer.run_once().await.unwrap().rescued, 1);
    let t = h.get(id).await;
    assert_eq!(
        (t.state, t.due_at, t.worker.as_deref()),
        (State::Retrying, later, None)
    );
    let lost = &t.runs[0];
    assert_eq!((lost.attempt, lost.outcome), (1, Outcome::Lost));
    assert_eq!((lost.started_at, lost.finished_at), (t0(), later));
    assert_eq!(lost.worker, WORKER);
    assert_eq!(
        lost.error.as_deref(),
        Some(
            "worker worker-1 lost its lease (it expired at 2027-03-01T12:00:30.000000Z without \
             a heartbeat); the task was rescued"
        )
    );
    assert_eq!(t.last_error, lost.error);

    let second = h.claim(later, 1).await.remove(0);
    assert_eq!((second.id, second.attempts), (id, 2));
    assert!(second.fence > first.fence);
    let stale = h
        .store
        .task_finish(vec![finish(&first, later, Next::Done)])
        .await
        .unwrap();
    assert_eq!(stale, vec![FinishResult::Stale]);
    assert_eq!(h.get(id).await.state, State::Running);
    h.finish(finish(&second, later + secs(1), Next::Done)).await;
    let outcomes: Vec<_> = h
        .get(id)
        .await
        .runs
        .iter()
        .map(|r| (r.attempt, r.outcome))
        .collect();
    assert_eq!(outcomes, vec![(1, Outcome::Lost), (2, Outcome::Succeeded)]);
}

async fn the_rescuer_marks_a_task_out_of_attempts_dead(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h
        .insert(vec![InsertTask {
            max_attempts: 1,
            ..task("noop")
        }])
        .await[0];
    h.claim(t0(), 1).await;
    let clock = ManualClock::new(t0() + secs(31));
    let report = Rescuer::new(h.store.clone(), Arc::new(clock), RescueConfig::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!((report.rescued, report.dead), (1, vec![id]));
    let t = h.get(id).await;
    assert_eq!((t.state, t.runs[0].outcome), (State::Dead, Outcome::Lost));
    assert!(h.claim(t0() + secs(3_600), 1).await.is_empty());
}

on_every_backend!(
    expired_leases_are_listed_earliest_first_with_what_a_rescue_needs,
    a_rescue_applies_only_while_the_lease_is_still_over,
    the_rescuer_releases_an_expired_lease_and_fences_off_the_old_claim,
    the_rescuer_marks_a_task_out_of_attempts_dead,
);
