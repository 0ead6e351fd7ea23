//! `task_cancel` and `task_retry` in every state: what each allows, the refusal's message,
//! and exactly what a retry leaves behind (state, due time, attempts).

use party::store::{InsertTask, Next, SteerMany};
use party::{State, TaskError, TaskId};

use crate::harness::{
    Backend, Harness, failed, finish, on_every_backend, recurring, secs, t0, task,
};

async fn cancel_takes_scheduled_retrying_and_dead_tasks(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for state in [State::Scheduled, State::Retrying, State::Dead] {
        let handler = format!("h_{state}");
        let id = h.task_in(state, &handler).await;
        let before = h.get(id).await;
        let t = h.store.task_cancel(id, t0() + secs(7)).await.unwrap();
        assert_eq!(t.state, State::Cancelled, "from {state}");
        assert_eq!(t.runs, before.runs, "answered with its run history");
        assert_eq!(
            (t.attempts, t.timestamp, t.due_at),
            (before.attempts, before.timestamp, before.due_at),
            "cancelling a {state} task changes only its state"
        );
        assert_eq!(h.get(id).await, t);
        assert!(
            h.claim_for(&[handler.as_str()], &[], t0() + secs(3_600), 10)
                .await
                .is_empty(),
            "a cancelled task is not claimed"
        );
    }
}

async fn cancel_refuses_running_done_and_cancelled_tasks(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for state in [State::Running, State::Done, State::Cancelled] {
        let id = h.task_in(state, &format!("h_{state}")).await;
        let err = h.store.task_cancel(id, t0()).await.unwrap_err();
        assert_eq!(
            err,
            TaskError::Conflict(format!(
                "cannot cancel task {id}: it is {state}; only scheduled, running, retrying or \
                 dead tasks can be cancelled"
            ))
        );
        assert_eq!(h.get(id).await.state, state, "a refusal changes nothing");
    }
    let missing = TaskId::generate(t0());
    assert_eq!(
        h.store.task_cancel(missing, t0()).await.unwrap_err(),
        TaskError::NotFound(missing)
    );
}

/// A retry makes the task `scheduled`, due at the retry's `now`, on both backends; its
/// occurrence and attempts stay, and one more attempt is allowed if it had used them all.
async fn retry_makes_dead_cancelled_and_retrying_tasks_due_now(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let now = t0() + secs(45);
    for (state, attempts) in [
        (State::Dead, 1),
        (State::Cancelled, 0),
        (State::Retrying, 1),
    ] {
        let handler = format!("h_{state}");
        let id = h.task_in(state, &handler).await;
        let before = h.get(id).await;
        let t = h.store.task_retry(id, now).await.unwrap();
        assert_eq!(t.state, State::Scheduled, "from {state}");
        assert_eq!(t.due_at, now, "from {state}: due at the retry's now");
        assert_eq!(t.timestamp, before.timestamp, "the occurrence stays");
        assert_eq!(t.attempts, attempts, "attempts count on");
        assert_eq!(t.max_attempts, before.max_attempts, "attempts were left");
        assert_eq!(t.runs, before.runs);
        assert_eq!(h.get(id).await, t);
        assert!(
            h.claim_for(&[handler.as_str()], &[], now - secs(1), 10)
                .await
                .is_empty(),
            "from {state}: not claimable before the retry's now"
        );
        let c = h.claim_one(&handler, now).await;
        assert_eq!((c.id, c.attempts), (id, attempts + 1));
    }
}

async fn a_retry_of_a_task_out_of_attempts_allows_one_more(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    for attempt in 1..=3 {
        let c = h.claim(t0(), 1).await.remove(0);
        assert_eq!(c.attempts, attempt);
        let next = if attempt < 3 {
            Next::retry_at(t0())
        } else {
            Next::Dead
        };
        h.finish(failed(&c, t0(), "boom", next)).await;
    }
    let t = h.store.task_retry(id, t0() + secs(1)).await.unwrap();
    assert_eq!((t.attempts, t.max_attempts), (3, 4));
    let c = h.claim(t0() + secs(1), 1).await.remove(0);
    assert_eq!((c.attempts, c.max_attempts), (4, 4));
}

async fn retry_refuses_running_and_done_tasks(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for state in [State::Running, State::Done] {
        let id = h.task_in(state, &format!("h_{state}")).await;
        let before = h.get(id).await;
        let err = h.store.task_retry(id, t0() + secs(1)).await.unwrap_err();
        assert_eq!(
            err,
            TaskError::Conflict(format!(
                "cannot retry task {id}: it is {state}; only dead, cancelled, retrying or \
                 scheduled tasks can be retried"
            ))
        );
        assert_eq!(h.get(id).await, before, "a refusal changes nothing");
    }
    let missing = TaskId::generate(t0());
    assert_eq!(
        h.store.task_retry(missing, t0()).await.unwrap_err(),
        TaskError::NotFound(missing)
    );
}

async fn cancelling_a_recurring_task_frees_its_singleton_and_retrying_it_needs_it_back(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let data = r#"{"sync":"crm"}"#;
    let first = h.insert(vec![recurring("noop", data)]).await[0];
    h.store.task_cancel(first, t0()).await.unwrap();
    let second = h.insert(vec![recurring("noop", data)]).await[0];
    let err = h.store.task_retry(first, t0()).await.unwrap_err();
    assert_eq!(
        err,
        TaskError::Duplicate {
            handler: "noop".into(),
            existing: second,
            unique_key: None,
            place: None,
        }
    );
    assert_eq!(h.get(first).await.state, State::Cancelled, "left as it was");
    // Once the holder is gone, the retry goes through.
    let c = h.claim_one("noop", t0()).await;
    h.finish(finish(&c, t0(), Next::Done)).await;
    assert_eq!(
        h.store.task_retry(first, t0()).await.unwrap().state,
        State::Scheduled
    );
}

/// The bulk forms act on exactly the states and filters they are given, in one statement, and
/// a bulk retry leaves what a single retry leaves.
async fn bulk_cancel_and_retry_take_exactly_the_given_states_and_filters(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let mut ids = Vec::new();
    for state in State::ALL {
        ids.push((state, h.task_in(state, &format!("bulk_{state}")).await));
    }
    let other = h.task_in(State::Dead, "other").await;
    let now = t0() + secs(60);
    let n = h
        .store
        .task_cancel_many(SteerMany {
            states: &[State::Scheduled, State::Retrying],
            handler: None,
            queue: Some("default"),
            data: None,
            now,
        })
        .await
        .unwrap();
    assert_eq!(n, 2);
    for (state, id) in &ids {
        let expected = match state {
            State::Scheduled | State::Retrying => State::Cancelled,
            s => *s,
        };
        assert_eq!(h.get(*id).await.state, expected, "from {state}");
    }
    // Another queue matches nothing.
    let none = SteerMany {
        states: &[State::Cancelled],
        handler: None,
        queue: Some("elsewhere"),
        data: None,
        now,
    };
    assert_eq!(h.store.task_retry_many(none).await.unwrap(), 0);
    let dead = ids.iter().find(|(s, _)| *s == State::Dead).unwrap().1;
    let before = h.get(dead).await;
    let n = h
        .store
        .task_retry_many(SteerMany {
            states: &[State::Dead],
            handler: Some("bulk_dead"),
            queue: None,
            data: None,
            now,
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    let after = h.get(dead).await;
    assert_eq!(after.state, State::Scheduled);
    assert_eq!(after.due_at, now);
    assert_eq!(after.attempts, before.attempts);
    assert!(
        after.max_attempts > after.attempts,
        "one more attempt allowed"
    );
    assert_eq!(h.get(other).await.state, State::Dead, "another handler");
    assert_eq!(h.claim_one("bulk_dead", now).await.id, dead);
}

/// A running task is not cancelled by `task_cancel` (its worker must stop it): a cancel
/// request marks it, the claim that holds it sees the mark, a stale fence does not, and the
/// next claim of a task still marked carries it.
async fn a_cancel_request_marks_a_running_task_for_its_worker(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let scheduled = h.task_in(State::Scheduled, "waiting").await;
    assert_eq!(
        h.store.task_cancel_request(scheduled, t0()).await.unwrap(),
        None,
        "only a running task is marked"
    );
    assert!(!h.get(scheduled).await.cancel_requested);
    let id = h.insert(vec![task("busy")]).await[0];
    let c = h.claim_one("busy", t0()).await;
    assert!(!c.cancel_requested);
    assert_eq!(
        h.store
            .task_cancel_requested(&[(id, c.fence)])
            .await
            .unwrap(),
        Vec::<TaskId>::new()
    );
    let t = h
        .store
        .task_cancel_request(id, t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.state, t.cancel_requested), (State::Running, true));
    assert_eq!(h.get(id).await, t);
    assert_eq!(
        h.store
            .task_cancel_requested(&[(id, c.fence), (id, c.fence - 1), (scheduled, 0)])
            .await
            .unwrap(),
        vec![id],
        "only the current claim of a marked task"
    );
    // Its attempt ends as a retry before the worker looked: the mark stays, and the next
    // claim carries it.
    h.finish(failed(&c, t0(), "boom", Next::retry_at(t0())))
        .await;
    assert!(h.get(id).await.cancel_requested);
    let again = h.claim_one("busy", t0() + secs(1)).await;
    assert!(again.cancel_requested);
    // Cancelled for good, it leaves the live tasks.
    let mut done = finish(&again, t0() + secs(1), Next::Cancelled);
    done.outcome = party::Outcome::Cancelled;
    h.finish(done).await;
    let t = h.get(id).await;
    assert_eq!((t.state, t.cancel_requested), (State::Cancelled, false));
    assert_eq!(t.runs.last().unwrap().outcome, party::Outcome::Cancelled);
}

/// A data field filter narrows a bulk operation on both sides (live and finished), and the
/// count is what the operation then touches.
async fn bulk_operations_and_their_count_take_a_data_field(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let with = |data: &str| InsertTask {
        data: data.to_string(),
        ..task("bill")
    };
    let acme = h.insert(vec![with(r#"{"customer":"acme"}"#)]).await[0];
    let other = h.insert(vec![with(r#"{"customer":"globex"}"#)]).await[0];
    let dead = h.insert(vec![with(r#"{"customer":"acme","n":1}"#)]).await[0];
    let c = h.claim_for(&["bill"], &[], t0(), 3).await;
    assert_eq!(c.len(), 3);
    for claimed in &c {
        let next = if claimed.id == dead {
            Next::Dead
        } else {
            Next::retry_at(t0() + secs(600))
        };
        h.finish(failed(claimed, t0(), "boom", next)).await;
    }
    let m = party::validate::data_match("customer=acme").unwrap();
    let params = |states: &'static [State]| SteerMany {
        states,
        handler: None,
        queue: None,
        data: Some(&m),
        now: t0() + secs(5),
    };
    let both: &[State] = &[State::Retrying, State::Dead];
    assert_eq!(
        h.store
            .task_count_many(params(both), 100, 100)
            .await
            .unwrap()
            .matched,
        2
    );
    // Counting stops at its limit, one match live and one finished alike.
    assert_eq!(
        h.store
            .task_count_many(params(both), 1, 100)
            .await
            .unwrap()
            .matched,
        1
    );
    assert_eq!(
        h.store
            .task_count_many(params(both), 2, 100)
            .await
            .unwrap()
            .matched,
        2
    );
    // Looking at fewer tasks than the states hold: two live ones, one looked at.
    let some = h.store.task_count_many(params(both), 100, 1).await.unwrap();
    assert!(!some.examined_all);
    assert!((1..=2).contains(&some.matched), "{some:?}");
    let all = h.store.task_count_many(params(both), 100, 3).await.unwrap();
    assert!(all.examined_all);
    assert_eq!(all.matched, 2);
    assert_eq!(
        h.store
            .task_count_many(params(&[State::Dead]), 1, 100)
            .await
            .unwrap()
            .matched,
        1
    );
    assert_eq!(
        h.store
            .task_count_many(params(&[State::Scheduled]), 100, 100)
            .await
            .unwrap()
            .matched,
        0
    );
    assert_eq!(
        h.get(acme).await.state,
        State::Retrying,
        "a count changes nothing"
    );
    assert_eq!(h.store.task_cancel_many(params(both)).await.unwrap(), 2);
    assert_eq!(h.get(acme).await.state, State::Cancelled);
    assert_eq!(h.get(dead).await.state, State::Cancelled);
    assert_eq!(
        h.get(other).await.state,
        State::Retrying,
        "another customer"
    );
    let cancelled: &[State] = &[State::Cancelled];
    assert_eq!(
        h.store
            .task_count_many(params(cancelled), 100, 100)
            .await
            .unwrap()
            .matched,
        2
    );
    assert_eq!(h.store.task_retry_many(params(cancelled)).await.unwrap(), 2);
    assert_eq!(h.get(acme).await.state, State::Scheduled);
    assert_eq!(h.get(dead).await.state, State::Scheduled);
}

/// A person asks to cancel a running task; its attempt ends as a retry before its worker saw
/// the request, so the mark stays on the retrying task; the person then retries it, alone or
/// in bulk. The retry is the later word: the next claim runs the task, not cancels it unrun.
async fn a_retry_lifts_an_earlier_cancel_request(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    for bulk in [false, true] {
        let handler = if bulk { "bulk" } else { "single" };
        let id = h.insert(vec![task(handler)]).await[0];
        let c = h.claim_one(handler, t0()).await;
        assert!(
            h.store
                .task_cancel_request(id, t0())
                .await
                .unwrap()
                .is_some()
        );
        let later = Next::retry_at(t0() + secs(600));
        h.finish(failed(&c, t0(), "boom", later)).await;
        if bulk {
            let states = [State::Retrying];
            let n = h
                .store
                .task_retry_many(SteerMany {
                    states: &states,
                    handler: Some(handler),
                    queue: None,
                    data: None,
                    now: t0() + secs(1),
                })
                .await
                .unwrap();
            assert_eq!(n, 1);
        } else {
            let t = h.store.task_retry(id, t0() + secs(1)).await.unwrap();
            assert_eq!(t.state, State::Scheduled);
        }
        let again = h.claim_one(handler, t0() + secs(2)).await;
        assert!(
            !again.cancel_requested,
            "{handler} retry: the retried task is claimed to be cancelled unrun"
        );
    }
}

/// A cancel and a retry of one task from two processes, over and over: each answers with the
/// task as its own operation left it, and a refusal names a state the operation refuses.
async fn cancel_and_retry_answer_with_what_they_did(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let other = h.reopen().await.expect("a second store opens");
    let canceller = {
        let store = h.store.clone();
        tokio::spawn(async move {
            let mut wrong = Vec::new();
            for _ in 0..300 {
                match store.task_cancel(id, t0()).await {
                    Ok(t) if t.state != State::Cancelled => {
                        wrong.push(format!("[cancel answered] {}", t.state))
                    }
                    Ok(_) => {}
                    Err(TaskError::Conflict(m)) => {
                        if !m.contains("it is cancelled") {
                            wrong.push(format!("[cancel refused] {m}"))
                        }
                    }
                    Err(e) => wrong.push(format!("[cancel error] {e}")),
                }
            }
            wrong
        })
    };
    let retrier = tokio::spawn(async move {
        let mut wrong = Vec::new();
        for _ in 0..300 {
            match other.task_retry(id, t0()).await {
                Ok(t) if t.state != State::Scheduled => {
                    wrong.push(format!("[retry answered] {}", t.state))
                }
                Ok(_) => {}
                Err(TaskError::Conflict(m)) => {
                    if !m.contains("it is scheduled") {
                        wrong.push(format!("[retry refused] {m}"))
                    }
                }
                Err(e) => wrong.push(format!("[retry error] {e}")),
            }
        }
        wrong
    });
    let mut wrong = canceller.await.unwrap();
    wrong.extend(retrier.await.unwrap());
    let mut kinds = std::collections::BTreeMap::new();
    let mut example = std::collections::BTreeMap::new();
    for w in &wrong {
        let kind = &w[..w.find(']').map_or(0, |i| i + 1)];
        *kinds.entry(kind.to_string()).or_insert(0u32) += 1;
        example.entry(kind.to_string()).or_insert(w.clone());
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers of 600: {kinds:?}, e.g. {:?}",
        wrong.len(),
        example.values().collect::<Vec<_>>()
    );
}

/// A bulk retry leaves a recurring task whose singleton is taken as it is, even when another
/// process takes it (retrying another finished copy) while the bulk retry runs: the bulk
/// retry never fails for it.
async fn a_bulk_retry_leaves_a_singleton_taken_meanwhile(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let other = h.reopen().await.expect("a second store opens");
    let mut failures = Vec::new();
    let rounds = 100;
    for i in 0..rounds {
        let handler = format!("rec{i}");
        // A dead copy and a cancelled copy of one recurring task.
        let dead = h.insert(vec![recurring(&handler, "{}")]).await[0];
        let c = h.claim_for(&[&handler], &[], t0(), 10).await;
        assert_eq!(c.len(), 1);
        h.finish(failed(&c[0], t0(), "boom", Next::Dead)).await;
        let cancelled = h.insert(vec![recurring(&handler, "{}")]).await[0];
        h.store.task_cancel(cancelled, t0()).await.unwrap();
        assert_eq!(h.get(dead).await.state, State::Dead);
        let states = [State::Dead];
        let bulk = h.store.task_retry_many(SteerMany {
            states: &states,
            handler: Some(&handler),
            queue: None,
            data: None,
            now: t0(),
        });
        let single = other.task_retry(cancelled, t0());
        let (bulk, single) = tokio::join!(bulk, single);
        match (&bulk, &single) {
            (Ok(_), Ok(_) | Err(TaskError::Duplicate { .. })) => {}
            _ => failures.push(format!("bulk {bulk:?}, single {single:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

on_every_backend!(
    cancel_and_retry_answer_with_what_they_did,
    a_bulk_retry_leaves_a_singleton_taken_meanwhile,
    a_retry_lifts_an_earlier_cancel_request,
    bulk_operations_and_their_count_take_a_data_field,
    a_cancel_request_marks_a_running_task_for_its_worker,
    bulk_cancel_and_retry_take_exactly_the_given_states_and_filters,
    cancel_takes_scheduled_retrying_and_dead_tasks,
    cancel_refuses_running_done_and_cancelled_tasks,
    retry_makes_dead_cancelled_and_retrying_tasks_due_now,
    a_retry_of_a_task_out_of_attempts_allows_one_more,
    retry_refuses_running_and_done_tasks,
    cancelling_a_recurring_task_frees_its_singleton_and_retrying_it_needs_it_back,
);
