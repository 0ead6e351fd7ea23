//! Unique one-off tasks: one live task per handler and unique key, enforced by the database,
//! and optionally none again within a window after one finished.

use std::sync::Arc;

use party::jiff::SignedDuration;
use party::serde_json::json;
use party::{NewTask, Registry, State, SteerFilter, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, fixture, on_every_backend};

struct Export;

impl Task for Export {
    const NAME: &'static str = "export";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

struct Bill;

impl Task for Bill {
    const NAME: &'static str = "bill";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

struct Doomed;

impl Task for Doomed {
    const NAME: &'static str = "doomed";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Err(TaskError::failed("always"))
    }
}

fn registry() -> Registry {
    Registry::new()
        .register(Export)
        .register(Bill)
        .register(Doomed)
}

fn export(key: &str) -> NewTask {
    NewTask::new("export").unique_key(key)
}

fn duplicate_of(existing: party::TaskId, key: &str) -> TaskError {
    TaskError::Duplicate {
        handler: "export".into(),
        existing,
        unique_key: Some(key.into()),
        place: None,
    }
}

async fn fifty_concurrent_adds_with_one_key_make_one_task(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let party = Arc::new(f.party.clone());
    let joins: Vec<_> = (0..50)
        .map(|i| {
            let party = party.clone();
            // Different data: the key alone decides.
            tokio::spawn(async move {
                party
                    .add(export("customer:42").data(json!({ "n": i })))
                    .await
            })
        })
        .collect();
    let (mut ok, mut dups) = (Vec::new(), Vec::new());
    for j in joins {
        match j.await.unwrap() {
            Ok(id) => ok.push(id),
            Err(TaskError::Duplicate {
                existing,
                unique_key,
                ..
            }) => {
                assert_eq!(unique_key.as_deref(), Some("customer:42"));
                dups.push(existing);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one add wins");
    assert!(dups.iter().all(|d| *d == ok[0]), "each refusal names it");
    let err = f.party.add(export("customer:42")).await.unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains(&ok[0].to_string()), "{err}");
    assert!(err.to_string().contains("'customer:42'"), "{err}");
    // Another key, or no key, is another task; the key is shown with the task.
    f.party.add(export("customer:43")).await.unwrap();
    f.party.add(NewTask::new("export")).await.unwrap();
    assert_eq!(
        f.party.get(ok[0]).await.unwrap().unique_key.as_deref(),
        Some("customer:42")
    );
    assert_eq!(f.party.list(&Default::default()).await.unwrap().len(), 3);
}

async fn a_finished_task_frees_its_key_unless_within_the_window(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let run_all = || async {
        f.party
            .worker(WorkerConfig::default())
            .run_until_idle()
            .await
            .unwrap()
    };
    let first = f.party.add(export("k")).await.unwrap();
    run_all().await;
    assert_eq!(f.party.get(first).await.unwrap().state, State::Done);
    // Done: without a window the key is free again.
    let second = f.party.add(export("k")).await.unwrap();
    run_all().await;
    let hour = SignedDuration::from_hours(1);
    // Within an hour of the last one finishing: refused, naming it.
    f.clock.advance(SignedDuration::from_mins(59));
    let err = f.party.add(export("k").unique_for(hour)).await.unwrap_err();
    assert_eq!(err, duplicate_of(second, "k"));
    // Without the window, or with a shorter one, it is accepted.
    let third = f
        .party
        .add(export("k").unique_for(SignedDuration::from_mins(30)))
        .await
        .unwrap();
    // A live one refuses whatever the window.
    let err = f.party.add(export("k").unique_for(hour)).await.unwrap_err();
    assert_eq!(err, duplicate_of(third, "k"));
    f.party.cancel(third).await.unwrap();
    // A cancelled one counts as finished when it was cancelled.
    f.clock.advance(SignedDuration::from_mins(2));
    let err = f.party.add(export("k").unique_for(hour)).await.unwrap_err();
    assert_eq!(err, duplicate_of(third, "k"));
    f.clock.advance(hour);
    f.party.add(export("k").unique_for(hour)).await.unwrap();
}

/// A bulk retry with a data filter retries the one matching task whose key is free, though
/// a task the filter leaves out (same key, cancelled later) would also hold it.
async fn a_filtered_bulk_retry_is_not_held_back_by_a_task_it_leaves_out(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let acme = f
        .party
        .add(export("k").data(json!({"customer": "acme"})))
        .await
        .unwrap();
    f.party.cancel(acme).await.unwrap();
    f.clock.advance(SignedDuration::from_secs(1));
    let other = f
        .party
        .add(export("k").data(json!({"customer": "other"})))
        .await
        .unwrap();
    f.party.cancel(other).await.unwrap();
    assert!(other > acme, "ids sort by creation");
    let filter = SteerFilter {
        handler: Some("export".into()),
        state: Some(State::Cancelled),
        data: Some(party::DataMatch {
            field: "customer".into(),
            value: "acme".into(),
        }),
        ..SteerFilter::default()
    };
    let retried = f.party.retry_matching(&filter).await.unwrap();
    let state = f.party.get(acme).await.unwrap().state;
    assert_eq!(
        (retried, state),
        (1, State::Scheduled),
        "the one matching task, whose key is free, was not retried"
    );
    assert_eq!(f.party.get(other).await.unwrap().state, State::Cancelled);
}

/// Enqueues two follow-up `export` tasks with one unique key from `on_complete`.
struct Twice;

impl Task for Twice {
    const NAME: &'static str = "twice";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.enqueue(export("k").data(json!({"n": 1})));
        ctx.enqueue(export("k").data(json!({"n": 2})));
        Ok(())
    }
}

/// Follow-ups that repeat a unique key are refused as a follow-up that meets a stored task
/// is: the attempt is recorded done without them, and the message names them by their
/// places, never by an id no task has.
async fn follow_ups_that_repeat_a_key_are_refused_by_their_places(b: Backend) {
    let Some(f) = fixture(b, registry().register(Twice)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("twice")).await.unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Done, "{task:?}");
    let error = task.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("follow-up refused") && error.contains("task 2: repeats task 1"),
        "{error}"
    );
    assert!(
        !error
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|w| w.len() == 24),
        "the message names an id: {error}"
    );
    let stored = f.party.list(&Default::default()).await.unwrap();
    assert_eq!(stored.len(), 1, "no follow-up is stored: {stored:?}");
}

async fn a_retry_does_not_take_a_key_another_task_holds(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let first = f.party.add(export("k")).await.unwrap();
    f.party.cancel(first).await.unwrap();
    let second = f.party.add(export("k")).await.unwrap();
    let err = f.party.retry(first).await.unwrap_err();
    assert_eq!(err, duplicate_of(second, "k"));
    assert_eq!(f.party.get(first).await.unwrap().state, State::Cancelled);
    // In bulk, it is left cancelled; once the key is free, it comes back.
    let filter = SteerFilter {
        handler: Some("export".into()),
        state: Some(State::Cancelled),
        ..SteerFilter::default()
    };
    assert_eq!(f.party.retry_matching(&filter).await.unwrap(), 0);
    f.party.cancel(second).await.unwrap();
    // Both cancelled with the same key: only one of them comes back.
    assert_eq!(f.party.retry_matching(&filter).await.unwrap(), 1);
    let live = f
        .party
        .list(&party::ListFilter {
            state: Some(State::Scheduled),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
}

async fn unique_keys_are_checked_when_added(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let invalid = |r: Result<party::TaskId, TaskError>| match r {
        Err(TaskError::Invalid(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let m = invalid(f.party.add(NewTask::new("bill").unique_key("k")).await);
    assert!(m.contains("recurring"), "{m}");
    let m = invalid(
        f.party
            .add(NewTask::new("export").unique_for(SignedDuration::from_hours(1)))
            .await,
    );
    assert!(m.contains("unique key"), "{m}");
    let m = invalid(f.party.add(export("")).await);
    assert!(m.contains("unique key is empty"), "{m}");
    let m = invalid(f.party.add(export("a\u{7}b")).await);
    assert!(m.contains("unique key"), "{m}");
    let m = invalid(
        f.party
            .add(export("k").unique_for(SignedDuration::from_hours(24 * 400)))
            .await,
    );
    assert!(m.contains("366d"), "{m}");
    assert!(f.party.list(&Default::default()).await.unwrap().is_empty());
}

async fn a_batch_with_one_key_twice_is_refused_whole(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let err = f
        .party
        .add_many(vec![export("k"), export("j"), export("k")])
        .await
        .unwrap_err();
    // Refused as bad input naming both places: the first task's id exists nowhere, so a
    // duplicate naming it would send a person looking for nothing.
    let TaskError::Invalid(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.starts_with("task 3: repeats task 1:"), "{m}");
    assert!(m.contains("unique key 'k'"), "{m}");
    // The same for one recurring task given twice.
    let bill = || NewTask::new("bill").every(SignedDuration::from_hours(1));
    let err = f
        .party
        .add_many(vec![bill(), export("x"), bill()])
        .await
        .unwrap_err();
    let TaskError::Invalid(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.starts_with("task 3: repeats task 1:"), "{m}");
    assert!(m.contains("recurring 'bill'"), "{m}");
    assert!(f.party.list(&Default::default()).await.unwrap().is_empty());
}

/// `--unique-for 1h` refuses while such a task finished less than an hour ago: a task that
/// finished exactly an hour ago no longer does.
async fn the_window_ends_exactly_when_it_says(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let hour = SignedDuration::from_hours(1);
    let first = f.party.add(export("k")).await.unwrap();
    f.party.cancel(first).await.unwrap();
    f.clock.advance(hour - SignedDuration::from_micros(1));
    let err = f.party.add(export("k").unique_for(hour)).await.unwrap_err();
    assert!(matches!(err, TaskError::Duplicate { .. }), "{err:?}");
    f.clock.advance(SignedDuration::from_micros(1));
    let added = f.party.add(export("k").unique_for(hour)).await;
    assert!(
        added.is_ok(),
        "finished exactly 1h ago, refused by a 1h window: {added:?}"
    );
}

/// A dead task finished when it died: a person cancelling it later, one at a time or in bulk,
/// does not hold its key for another window from the cancel.
async fn cancelling_a_dead_task_keeps_the_time_it_died(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let hour = SignedDuration::from_hours(1);
    let doomed = |key: &str| NewTask::new("doomed").unique_key(key).max_attempts(1);
    let one = f.party.add(doomed("one")).await.unwrap();
    let many = f.party.add(doomed("many")).await.unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    for id in [one, many] {
        assert_eq!(f.party.get(id).await.unwrap().state, State::Dead);
    }
    f.clock.advance(2 * hour);
    f.party.cancel(one).await.unwrap();
    let filter = SteerFilter {
        handler: Some("doomed".into()),
        state: Some(State::Dead),
        ..SteerFilter::default()
    };
    assert_eq!(f.party.cancel_matching(&filter).await.unwrap(), 1);
    for id in [one, many] {
        assert_eq!(f.party.get(id).await.unwrap().state, State::Cancelled);
    }
    // Both died two hours ago: a one-hour window is long over.
    for key in ["one", "many"] {
        let added = f.party.add(doomed(key).unique_for(hour)).await;
        assert!(added.is_ok(), "{key}: {added:?}");
    }
}

on_every_backend!(
    cancelling_a_dead_task_keeps_the_time_it_died,
    fifty_concurrent_adds_with_one_key_make_one_task,
    a_finished_task_frees_its_key_unless_within_the_window,
    the_window_ends_exactly_when_it_says,
    a_retry_does_not_take_a_key_another_task_holds,
    follow_ups_that_repeat_a_key_are_refused_by_their_places,
    a_filtered_bulk_retry_is_not_held_back_by_a_task_it_leaves_out,
    unique_keys_are_checked_when_added,
    a_batch_with_one_key_twice_is_refused_whole,
);
