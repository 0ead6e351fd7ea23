//! `task_heartbeat` and `worker_remove`: leases are renewed for the claims a worker still
//! holds, the others are reported, and the worker is recorded as live for its own lease until
//! it leaves.

use party::WorkerInfo;
use party::jiff::Timestamp;
use party::store::{HeartbeatParams, Next};

use crate::harness::{Backend, Harness, WORKER, failed, finish, on_every_backend, secs, t0, task};

/// This worker as it announces itself at `at`, live for a minute.
fn me(at: Timestamp) -> WorkerInfo {
    WorkerInfo {
        id: WORKER.into(),
        handlers: vec!["noop".into(), "other".into()],
        queues: vec!["default".into()],
        last_seen: at,
        live_until: at + secs(60),
    }
}

async fn a_heartbeat_renews_the_leases_it_still_holds(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let c = h.claim(t0(), 1).await.remove(0);
    assert_eq!(
        h.expired(t0() + secs(31)).await,
        vec![id],
        "the claim's lease: +30 s"
    );
    // A heartbeat at +20 s moves it to +80 s.
    let lost = h
        .store
        .task_heartbeat(HeartbeatParams {
            worker: &me(t0() + secs(20)),
            tasks: &[(id, c.fence)],
            lease_until: t0() + secs(80),
            now: t0() + secs(20),
        })
        .await
        .unwrap()
        .lost;
    assert_eq!(lost, Vec::new());
    assert_eq!(h.expired(t0() + secs(60)).await, Vec::new());
    assert_eq!(
        h.expired(t0() + secs(80)).await,
        Vec::new(),
        "a lease ending exactly now has not expired"
    );
    assert_eq!(h.expired(t0() + secs(81)).await, vec![id]);
    assert_eq!(h.get(id).await.state, party::State::Running);
}

async fn a_heartbeat_reports_the_claims_no_longer_held(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert(vec![task("noop"), task("noop"), task("noop")])
        .await;
    let claimed = h.claim(t0(), 3).await;
    let (held, finished, reclaimed) = (&claimed[0], &claimed[1], &claimed[2]);
    h.finish(finish(finished, t0(), Next::Done)).await;
    h.finish(failed(reclaimed, t0(), "boom", Next::retry_at(t0())))
        .await;
    let again = h.claim(t0() + secs(10), 1).await.remove(0);
    assert_eq!(again.id, reclaimed.id);
    let unknown = party::TaskId::generate(t0());
    let lost = h
        .store
        .task_heartbeat(HeartbeatParams {
            worker: &me(t0()),
            tasks: &[
                (held.id, held.fence),
                (finished.id, finished.fence),
                (reclaimed.id, reclaimed.fence),
                (unknown, 1),
            ],
            lease_until: t0() + secs(60),
            now: t0(),
        })
        .await
        .unwrap()
        .lost;
    assert_eq!(
        lost,
        vec![finished.id, reclaimed.id, unknown],
        "finished, claimed again under a newer fence, and unknown: in the order asked"
    );
    // The newer claim's lease (+40 s) was not touched by the stale fence; the held one was.
    assert_eq!(h.expired(t0() + secs(41)).await, vec![again.id]);
}

async fn a_heartbeat_records_the_worker_live_for_its_own_lease_until_it_leaves(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let beat = |w: WorkerInfo| {
        let store = h.store.clone();
        async move {
            store
                .task_heartbeat(HeartbeatParams {
                    worker: &w,
                    tasks: &[],
                    lease_until: w.live_until,
                    now: w.last_seen,
                })
                .await
                .unwrap()
                .lost
        }
    };
    beat(me(t0())).await;
    // A worker with a ten-minute lease heartbeats rarely and stays live between beats.
    let slow = WorkerInfo {
        id: "worker-2".into(),
        handlers: vec!["mail".into()],
        queues: vec!["mail".into(), "default".into()],
        last_seen: t0(),
        live_until: t0() + secs(600),
    };
    beat(slow.clone()).await;
    assert_eq!(
        h.stats(t0() + secs(1)).await.workers,
        vec![me(t0()), slow.clone()],
        "by id"
    );
    assert_eq!(
        h.stats(t0() + secs(300)).await.workers,
        vec![slow.clone()],
        "each worker is live until its own lease ends"
    );
    assert_eq!(h.stats(t0() + secs(600)).await.workers, Vec::new());
    // A later heartbeat updates what the worker announces.
    let mut changed = me(t0() + secs(5));
    changed.handlers = vec!["noop".into()];
    beat(changed.clone()).await;
    assert_eq!(h.stats(t0() + secs(6)).await.workers[0], changed);
    h.store.worker_remove(WORKER).await.unwrap();
    h.store.worker_remove("never-seen").await.unwrap();
    assert_eq!(h.stats(t0() + secs(6)).await.workers, vec![slow]);
}

async fn a_stale_claim_listed_beside_the_current_one_is_reported(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let old = h.claim(t0(), 1).await.remove(0);
    h.finish(failed(&old, t0(), "boom", Next::retry_at(t0())))
        .await;
    let current = h.claim(t0(), 1).await.remove(0);
    assert_eq!(current.id, id);
    // One worker still holds the old attempt beside the new one: only the old one is lost.
    let lost = h
        .store
        .task_heartbeat(HeartbeatParams {
            worker: &me(t0()),
            tasks: &[(id, old.fence), (id, current.fence)],
            lease_until: t0() + secs(60),
            now: t0(),
        })
        .await
        .unwrap()
        .lost;
    assert_eq!(lost, vec![id], "the stale entry is reported, once");
    assert_eq!(
        h.expired(t0() + secs(31)).await,
        Vec::new(),
        "the current claim's lease was renewed"
    );
}

on_every_backend!(
    a_stale_claim_listed_beside_the_current_one_is_reported,
    a_heartbeat_renews_the_leases_it_still_holds,
    a_heartbeat_reports_the_claims_no_longer_held,
    a_heartbeat_records_the_worker_live_for_its_own_lease_until_it_leaves,
);
