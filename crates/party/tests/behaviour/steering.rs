//! Bulk steering: cancelling and retrying every task matching a filter, in one statement, on
//! every backend.

use party::serde_json::json;
use party::{
    Clock, NewTask, Registry, State, SteerFilter, TaskError, TaskId, WorkerConfig, builtin,
};

use crate::common::{Backend, Fixture, fixture, on_every_backend, set_finished};

async fn set_state(f: &Fixture, id: TaskId, state: &str) {
    set_finished(f, id, state).await;
}

async fn states(f: &Fixture, ids: &[TaskId]) -> Vec<State> {
    let mut out = Vec::new();
    for id in ids {
        out.push(f.party.get(*id).await.unwrap().state);
    }
    out
}

async fn bulk_cancel_acts_on_every_match_and_nothing_else(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let add = |handler: &str, queue: &str, n: i64| {
        NewTask::new(handler).queue(queue).data(json!({ "n": n }))
    };
    let mail_a = f.party.add(add("noop", "mail", 1)).await.unwrap();
    let mail_b = f.party.add(add("log", "mail", 2)).await.unwrap();
    let mail_dead = f.party.add(add("noop", "mail", 3)).await.unwrap();
    let mail_done = f.party.add(add("noop", "mail", 4)).await.unwrap();
    let other = f.party.add(add("noop", "default", 5)).await.unwrap();
    set_state(&f, mail_dead, "dead").await;
    set_state(&f, mail_done, "done").await;

    // Only the scheduled ones of the queue.
    let n = f
        .party
        .cancel_matching(&SteerFilter {
            queue: Some("mail".into()),
            state: Some(State::Scheduled),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        states(&f, &[mail_a, mail_b, mail_dead, mail_done, other]).await,
        vec![
            State::Cancelled,
            State::Cancelled,
            State::Dead,
            State::Done,
            State::Scheduled
        ]
    );
    // Without a state: every cancellable one of the queue (the dead one); done stays done.
    let n = f
        .party
        .cancel_matching(&SteerFilter {
            queue: Some("mail".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        f.party.get(mail_dead).await.unwrap().state,
        State::Cancelled
    );
    assert_eq!(f.party.get(mail_done).await.unwrap().state, State::Done);
    assert_eq!(f.party.get(other).await.unwrap().state, State::Scheduled);
}

async fn bulk_retry_makes_matches_due_and_skips_a_taken_singleton(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let dead: Vec<TaskId> = f
        .party
        .add_many(
            (0..3)
                .map(|i| NewTask::new("noop").data(json!({ "i": i })))
                .collect(),
        )
        .await
        .unwrap();
    let log_dead = f.party.add(NewTask::new("log")).await.unwrap();
    for id in dead.iter().chain([&log_dead]) {
        set_state(&f, *id, "dead").await;
    }
    // A dead recurring task whose singleton a live copy holds now, and one whose does not.
    let every = party::jiff::SignedDuration::from_mins(5);
    let taken = f
        .party
        .add(NewTask::new("noop").every(every).data(json!({"r": 1})))
        .await
        .unwrap();
    set_state(&f, taken, "dead").await;
    let live = f
        .party
        .add(NewTask::new("noop").every(every).data(json!({"r": 1})))
        .await
        .unwrap();
    let free = f
        .party
        .add(NewTask::new("noop").every(every).data(json!({"r": 2})))
        .await
        .unwrap();
    set_state(&f, free, "dead").await;

    let n = f
        .party
        .retry_matching(&SteerFilter {
            state: Some(State::Dead),
            handler: Some("noop".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 4, "three one-off tasks and the free recurring one");
    assert_eq!(
        states(&f, &dead).await,
        vec![State::Scheduled, State::Scheduled, State::Scheduled]
    );
    assert_eq!(f.party.get(free).await.unwrap().state, State::Scheduled);
    assert_eq!(f.party.get(taken).await.unwrap().state, State::Dead);
    assert_eq!(f.party.get(live).await.unwrap().state, State::Scheduled);
    assert_eq!(f.party.get(log_dead).await.unwrap().state, State::Dead);
    for id in &dead {
        assert_eq!(f.party.get(*id).await.unwrap().due_at, f.clock.now());
    }
    // They run.
    let report = f
        .party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert!(report.succeeded >= 3, "{report:?}");
    assert_eq!(
        states(&f, &dead).await,
        vec![State::Done, State::Done, State::Done]
    );
}

async fn bulk_steering_refuses_no_filter_and_wrong_states(b: Backend) {
    let Some(f) = fixture(b, Registry::new()).await else {
        return;
    };
    let err = f
        .party
        .cancel_matching(&SteerFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TaskError::Invalid(m) if m.contains("refusing to cancel every task")),
        "{err:?}"
    );
    let err = f
        .party
        .retry_matching(&SteerFilter::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
    let err = f
        .party
        .cancel_matching(&SteerFilter {
            state: Some(State::Running),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TaskError::Invalid(m) if m.contains("cannot cancel running tasks")),
        "{err:?}"
    );
    let err = f
        .party
        .retry_matching(&SteerFilter {
            state: Some(State::Done),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
}

async fn the_library_checks_filters_and_worker_queues_as_the_cli_does(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let bad = "mail\u{1b}[2J".to_string();
    let err = f
        .party
        .cancel_matching(&SteerFilter {
            queue: Some(bad.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
    let err = f
        .party
        .list(&party::ListFilter {
            handler: Some("x".repeat(10_000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
    for queues in [vec![], vec![bad.clone()], vec![String::new()]] {
        let err = f
            .party
            .worker(WorkerConfig {
                queues: queues.clone(),
                ..Default::default()
            })
            .run_until_idle()
            .await
            .unwrap_err();
        assert!(matches!(err, TaskError::Invalid(_)), "{queues:?}: {err:?}");
    }
    assert!(
        f.party.stats().await.unwrap().workers.is_empty(),
        "no worker announced"
    );
}

/// A retry of a scheduled task runs it now (the dashboard's "Run now"); a bulk retry makes
/// scheduled tasks due only when its filter names their state, and a worker then runs them.
async fn a_retry_runs_a_scheduled_task_now(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let later = f.clock.now() + party::jiff::SignedDuration::from_hours(5);
    let add = |n: i64| {
        NewTask::new("noop")
            .queue("mail")
            .data(json!({ "n": n }))
            .at(later)
    };
    let one = f.party.add(add(1)).await.unwrap();
    let (a, b2) = (
        f.party.add(add(2)).await.unwrap(),
        f.party.add(add(3)).await.unwrap(),
    );
    let t = f.party.retry(one).await.unwrap();
    let due = f.clock.now();
    assert_eq!((t.state, t.due_at), (State::Scheduled, due));
    // Due already: a retry later leaves its place among the due tasks as it is.
    f.clock.advance(party::jiff::SignedDuration::from_mins(1));
    let t = f.party.retry(one).await.unwrap();
    assert_eq!((t.state, t.due_at), (State::Scheduled, due));
    let mail = |state: Option<State>| SteerFilter {
        queue: Some("mail".into()),
        state,
        ..SteerFilter::default()
    };
    // Without a state, a bulk retry leaves scheduled tasks to their time.
    assert_eq!(f.party.retry_matching(&mail(None)).await.unwrap(), 0);
    for id in [a, b2] {
        assert_eq!(f.party.get(id).await.unwrap().due_at, later);
    }
    let n = f
        .party
        .retry_matching(&mail(Some(State::Scheduled)))
        .await
        .unwrap();
    assert_eq!(
        n, 2,
        "the queue's scheduled tasks due later; the one due already stays"
    );
    let report = f
        .party
        .worker(WorkerConfig {
            queues: vec!["mail".into()],
            ..WorkerConfig::default()
        })
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 3);
    assert_eq!(states(&f, &[one, a, b2]).await, [State::Done; 3]);
}

on_every_backend!(
    a_retry_runs_a_scheduled_task_now,
    the_library_checks_filters_and_worker_queues_as_the_cli_does,
    bulk_cancel_acts_on_every_match_and_nothing_else,
    bulk_retry_makes_matches_due_and_skips_a_taken_singleton,
    bulk_steering_refuses_no_filter_and_wrong_states,
);
