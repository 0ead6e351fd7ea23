//! Queue controls at the trait: `queue_pause`, `queue_limit`, `queue_controls`,
//! `queue_counts`, and the claim of paused and limited queues (a paused queue gives nothing; a
//! limited one no more than its concurrency, per key, and its rate in any window; a claim that
//! does not know a queue is controlled leaves its tasks alone).

use std::sync::Arc;

use jiff::Timestamp;
use party::store::{ClaimParams, ClaimedTask, InsertTask, Next, Store};
use party::{QueueControl, QueueLimits, Rate, State};

use crate::harness::{
    Backend, Harness, LEASE, claim_on, failed, finish, on_every_backend, secs, t0, task,
};

const Q: &str = "mail";

fn in_queue(queue: &str, data: &str) -> InsertTask {
    InsertTask {
        queue: queue.to_string(),
        data: data.to_string(),
        ..task("noop")
    }
}

fn limits(concurrency: Option<u32>, rate: Option<&str>, per: Option<&str>) -> QueueLimits {
    QueueLimits {
        concurrency,
        rate: rate.map(|r| Rate::parse(r).unwrap()),
        per: per.map(str::to_string),
    }
}

/// A claim by `worker` of `default` and [`Q`], knowing `controlled` to be controlled.
async fn claim(
    store: &dyn Store,
    worker: &str,
    now: Timestamp,
    limit: u32,
    controlled: &[&str],
) -> Vec<ClaimedTask> {
    let controlled: Vec<String> = controlled.iter().map(|s| s.to_string()).collect();
    store
        .task_claim(ClaimParams {
            worker,
            handlers: &["noop".to_string()],
            queues: &["default".to_string(), Q.to_string()],
            limit,
            now,
            lease_until: now + LEASE,
            promote_limit: party::policy::PROMOTE_BATCH,
            controlled: &controlled,
        })
        .await
        .expect("claim")
}

async fn controls(h: &Harness) -> Vec<QueueControl> {
    h.store.queue_controls(&[]).await.expect("controls")
}

async fn controls_are_kept_until_nothing_is_set(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    assert!(controls(&h).await.is_empty());
    h.store.queue_pause(Q, true, t0()).await.unwrap();
    let l = limits(Some(2), Some("10/1s"), Some("customer"));
    h.store.queue_limit(Q, &l, t0()).await.unwrap();
    h.store
        .queue_limit("other", &limits(Some(1), None, None), t0())
        .await
        .unwrap();
    let all = controls(&h).await;
    assert_eq!(
        all,
        vec![
            QueueControl {
                name: Q.into(),
                paused: true,
                limits: l.clone()
            },
            QueueControl {
                name: "other".into(),
                paused: false,
                limits: limits(Some(1), None, None)
            },
        ]
    );
    let only = h.store.queue_controls(&["other".into()]).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].name, "other");
    // Resuming keeps the limits; clearing them then removes the control.
    h.store.queue_pause(Q, false, t0()).await.unwrap();
    assert_eq!(controls(&h).await[0].limits, l);
    assert!(!controls(&h).await[0].paused);
    h.store
        .queue_limit(Q, &QueueLimits::default(), t0())
        .await
        .unwrap();
    h.store
        .queue_limit("other", &QueueLimits::default(), t0())
        .await
        .unwrap();
    assert!(controls(&h).await.is_empty());
    // Resuming a queue that was never paused leaves no control behind.
    h.store.queue_pause("never", false, t0()).await.unwrap();
    assert!(controls(&h).await.is_empty());
}

async fn a_paused_queue_gives_nothing_and_is_not_waited_for(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let paused = h.insert(vec![in_queue(Q, "{}")]).await[0];
    h.store.queue_pause(Q, true, t0()).await.unwrap();
    let queues = vec![Q.to_string()];
    let handlers = vec!["noop".to_string()];
    // Neither a claim that knows of the pause nor one that does not takes it.
    assert!(claim(&*h.store, "w", t0(), 10, &[]).await.is_empty());
    assert!(claim(&*h.store, "w", t0(), 10, &[Q]).await.is_empty());
    assert_eq!(
        h.store.task_next_due(&handlers, &queues).await.unwrap(),
        None,
        "a paused queue's tasks are not waited for"
    );
    // Other queues flow.
    let other = h.insert(vec![in_queue("default", "{}")]).await[0];
    let got = claim(&*h.store, "w", t0(), 10, &[Q]).await;
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![other]);
    h.store.queue_pause(Q, false, t0()).await.unwrap();
    assert_eq!(
        h.store.task_next_due(&handlers, &queues).await.unwrap(),
        Some(t0())
    );
    let got = claim(&*h.store, "w", t0(), 10, &[]).await;
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![paused]);
}

async fn a_concurrency_limit_counts_what_runs(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..5).map(|_| in_queue(Q, "{}")).collect()).await;
    h.store
        .queue_limit(Q, &limits(Some(2), None, None), t0())
        .await
        .unwrap();
    // A claim that does not yet know of the limit leaves the queue alone.
    assert!(claim(&*h.store, "w1", t0(), 10, &[]).await.is_empty());
    let first = claim(&*h.store, "w1", t0(), 10, &[Q]).await;
    assert_eq!(first.len(), 2);
    assert!(claim(&*h.store, "w2", t0(), 10, &[Q]).await.is_empty());
    h.finish(finish(&first[0], t0() + secs(1), Next::Done))
        .await;
    let next = claim(&*h.store, "w2", t0() + secs(1), 10, &[Q]).await;
    assert_eq!(next.len(), 1, "one place came free");
    // A raised limit takes effect at the next claim.
    h.store
        .queue_limit(Q, &limits(Some(4), None, None), t0())
        .await
        .unwrap();
    assert_eq!(
        claim(&*h.store, "w2", t0() + secs(1), 10, &[Q]).await.len(),
        2
    );
}

async fn a_per_key_limit_lets_other_keys_flow(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let a: Vec<_> = h
        .insert((0..3).map(|_| in_queue(Q, r#"{"customer":"a"}"#)).collect())
        .await;
    h.insert((0..2).map(|_| in_queue(Q, r#"{"customer":"b"}"#)).collect())
        .await;
    h.insert(vec![in_queue(Q, r#"{"customer":7}"#)]).await;
    // Without the field, or with null in it: one shared key.
    h.insert(vec![in_queue(Q, "{}"), in_queue(Q, r#"{"customer":null}"#)])
        .await;
    h.store
        .queue_limit(Q, &limits(Some(1), None, Some("customer")), t0())
        .await
        .unwrap();
    let got = claim(&*h.store, "w1", t0(), 10, &[Q]).await;
    let mut keys: Vec<String> = got.iter().map(|c| c.data.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            r#"{"customer":"a"}"#.to_string(),
            r#"{"customer":"b"}"#.to_string(),
            r#"{"customer":7}"#.to_string(),
            "{}".to_string(),
        ],
        "one per key, the none key once"
    );
    assert!(claim(&*h.store, "w2", t0(), 10, &[Q]).await.is_empty());
    let running_a = got.iter().find(|c| c.data.contains("\"a\"")).unwrap();
    assert_eq!(running_a.id, a[0], "claim order within a key");
    h.finish(finish(running_a, t0() + secs(1), Next::Done))
        .await;
    let next = claim(&*h.store, "w2", t0() + secs(1), 10, &[Q]).await;
    assert_eq!(next.iter().map(|c| c.id).collect::<Vec<_>>(), vec![a[1]]);
}

async fn a_rate_limit_holds_in_every_window(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..8).map(|_| in_queue(Q, "{}")).collect()).await;
    h.store
        .queue_limit(Q, &limits(None, Some("3/1m"), None), t0())
        .await
        .unwrap();
    let mut starts: Vec<Timestamp> = Vec::new();
    // Claims every 10 seconds for four minutes; each claimed task finishes at once.
    for step in 0..24 {
        let now = t0() + secs(10 * step);
        for c in claim(&*h.store, "w", now, 10, &[Q]).await {
            starts.push(now);
            h.finish(finish(&c, now, Next::Done)).await;
        }
    }
    assert_eq!(starts.len(), 8, "every task started in the end: {starts:?}");
    for (i, s) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().filter(|t| **t < *s + secs(60)).count();
        assert!(in_window <= 3, "{in_window} starts in the minute from {s}");
    }
    // Three at t0, three once the minute and its margin (50 ms) have passed (at the next
    // claim, 70 s), two a minute after that: starts as soon as allowed.
    assert_eq!(starts[0], t0());
    assert_eq!(starts[3], t0() + secs(70));
    assert_eq!(starts[6], t0() + secs(140));
}

async fn a_per_key_rate_limits_each_key(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..3).map(|_| in_queue(Q, r#"{"to":"x"}"#)).collect())
        .await;
    h.insert((0..3).map(|_| in_queue(Q, r#"{"to":"y"}"#)).collect())
        .await;
    h.store
        .queue_limit(Q, &limits(None, Some("2/1s"), Some("to")), t0())
        .await
        .unwrap();
    let got = claim(&*h.store, "w", t0(), 10, &[Q]).await;
    assert_eq!(got.len(), 4, "two of each key");
    // The window is the second widened by its margin, a twentieth of it: 1.05 s. A start at
    // t0 counts until a claim at t0 + 1.05 s no longer sees it.
    let ms = jiff::SignedDuration::from_millis;
    assert!(
        claim(&*h.store, "w", t0() + ms(1049), 10, &[Q])
            .await
            .is_empty()
    );
    assert_eq!(
        claim(&*h.store, "w", t0() + ms(1050), 10, &[Q]).await.len(),
        2
    );
}

async fn concurrent_claims_of_a_limited_queue_never_exceed_it(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..60).map(|_| in_queue(Q, "{}")).collect()).await;
    h.store
        .queue_limit(Q, &limits(Some(3), None, None), t0())
        .await
        .unwrap();
    let store: Arc<dyn Store> = h.store.clone();
    let mut claimers = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..5 {
                got += claim(&*store, &format!("w{w}"), t0(), 10, &[Q]).await.len();
            }
            got
        }));
    }
    let mut total = 0;
    for c in claimers {
        total += c.await.unwrap();
    }
    assert_eq!(total, 3, "six claimers at once took exactly the limit");
    let running = h
        .stats(t0())
        .await
        .counts
        .iter()
        .filter(|(_, s, _)| *s == State::Running)
        .map(|(_, _, n)| *n)
        .sum::<u64>();
    assert_eq!(running, 3);
}

async fn queue_counts_cover_live_and_finished_tasks(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert(vec![in_queue(Q, "{}"), in_queue(Q, "{}")]).await;
    h.insert(vec![InsertTask {
        timestamp: t0() + secs(60),
        ..in_queue("default", "{}")
    }])
    .await;
    let c = claim(&*h.store, "w", t0(), 1, &[]).await;
    h.finish(finish(&c[0], t0(), Next::Done)).await;
    let counts = h.store.queue_counts(t0()).await.unwrap();
    let mut rows = counts.counts.clone();
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        rows,
        vec![
            ("default".to_string(), State::Scheduled, 1),
            (Q.to_string(), State::Scheduled, 1),
            (Q.to_string(), State::Done, 1),
        ]
    );
    assert_eq!(counts.due, vec![(Q.to_string(), 1)]);
}

/// `queue_counts` answers with counts of one moment: a queue's due tasks are among its waiting
/// ones while another process claims its one task and releases it as a retry.
async fn queue_counts_agree_while_a_task_is_claimed_and_released(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert(vec![task("noop")]).await;
    // Control: at rest, running and then due, the counts agree.
    let c = h.claim_one("noop", t0()).await;
    let q = h.store.queue_counts(t0() + secs(3600)).await.unwrap();
    assert_eq!((q.counts.len(), q.due.len()), (1, 0), "{q:?}");
    h.finish(failed(&c, t0(), "boom", Next::retry_at(t0())))
        .await;
    let q = h.store.queue_counts(t0() + secs(3600)).await.unwrap();
    assert_eq!(q.counts, vec![("default".to_string(), State::Retrying, 1)]);
    assert_eq!(q.due, vec![("default".to_string(), 1)]);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (h.store.clone(), done.clone());
        tokio::spawn(async move {
            let (mut reads, mut torn) = (0u32, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads < 100 {
                let q = store.queue_counts(t0() + secs(3600)).await.expect("counts");
                reads += 1;
                let waiting: u64 = q
                    .counts
                    .iter()
                    .filter(|c| matches!(c.1, State::Scheduled | State::Retrying))
                    .map(|c| c.2)
                    .sum();
                let due: u64 = q.due.iter().map(|c| c.1).sum();
                if due > waiting {
                    torn.push(format!("{:?} / due {:?}", q.counts, q.due));
                }
            }
            (reads, torn)
        })
    };
    let mover = h.reopen().await.expect("a second store opens");
    for _ in 0..300 {
        let c = claim_on(mover.as_ref(), &[], &[], t0(), 10).await;
        assert_eq!(c.len(), 1);
        mover
            .task_finish(vec![failed(&c[0], t0(), "boom", Next::retry_at(t0()))])
            .await
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, torn) = reader.await.unwrap();
    assert!(
        torn.is_empty(),
        "{} of {reads} queue counts disagreed with themselves, e.g. {:?}",
        torn.len(),
        &torn[..torn.len().min(5)]
    );
}

/// A rate set again (the same, by a deploy script) or lowered keeps counting the starts
/// already made in its window: the queue never gets a whole new allowance at once. A rate
/// taken away and given anew, or counted per another field, starts a fresh log.
async fn a_rate_set_again_keeps_counting_the_starts_in_its_window(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.insert((0..20).map(|_| in_queue(Q, "{}")).collect()).await;
    let set = |rate: Option<&'static str>, at| {
        let store = h.store.clone();
        async move {
            store
                .queue_limit(Q, &limits(None, rate, None), at)
                .await
                .unwrap()
        }
    };
    set(Some("3/1m"), t0()).await;
    assert_eq!(claim(&*h.store, "w", t0(), 10, &[Q]).await.len(), 3);
    set(Some("3/1m"), t0() + secs(10)).await;
    let again = claim(&*h.store, "w", t0() + secs(20), 10, &[Q]).await.len();
    set(Some("2/1m"), t0() + secs(30)).await;
    let lowered = claim(&*h.store, "w", t0() + secs(40), 10, &[Q]).await.len();
    assert_eq!(
        (again, lowered),
        (0, 0),
        "three starts in the minute, then {again} more after the same rate was set again and \
         {lowered} more after it was lowered to 2/1m"
    );
    // The window moves on: the lowered rate's allowance, and no more.
    assert_eq!(
        claim(&*h.store, "w", t0() + secs(61), 10, &[Q]).await.len(),
        2
    );
    // Taken away (a concurrency limit alone) and given anew: a fresh log.
    h.store
        .queue_limit(Q, &limits(Some(100), None, None), t0() + secs(62))
        .await
        .unwrap();
    set(Some("1/1m"), t0() + secs(63)).await;
    assert_eq!(
        claim(&*h.store, "w", t0() + secs(64), 10, &[Q]).await.len(),
        1
    );
    // Counted per a field from now on: the keys mean something else, a fresh log. Set again
    // per the same field: the same log. Per another field: a fresh one again.
    let per = |field: &'static str, at| {
        let store = h.store.clone();
        async move {
            store
                .queue_limit(Q, &limits(None, Some("1/1m"), Some(field)), at)
                .await
                .unwrap()
        }
    };
    let claimed = async |at| claim(&*h.store, "w", at, 10, &[Q]).await.len();
    per("customer", t0() + secs(65)).await;
    assert_eq!(claimed(t0() + secs(66)).await, 1);
    per("customer", t0() + secs(67)).await;
    assert_eq!(
        claimed(t0() + secs(68)).await,
        0,
        "set again per the same field"
    );
    per("region", t0() + secs(69)).await;
    assert_eq!(claimed(t0() + secs(70)).await, 1, "per another field");
}

on_every_backend!(
    queue_counts_agree_while_a_task_is_claimed_and_released,
    controls_are_kept_until_nothing_is_set,
    a_paused_queue_gives_nothing_and_is_not_waited_for,
    a_concurrency_limit_counts_what_runs,
    a_per_key_limit_lets_other_keys_flow,
    a_rate_limit_holds_in_every_window,
    a_rate_set_again_keeps_counting_the_starts_in_its_window,
    a_per_key_rate_limits_each_key,
    concurrent_claims_of_a_limited_queue_never_exceed_it,
    queue_counts_cover_live_and_finished_tasks,
);
