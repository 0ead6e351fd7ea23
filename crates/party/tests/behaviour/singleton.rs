//! The singleton rule: one live recurring task per handler and data, enforced by the database.

use std::sync::Arc;

use party::serde_json::json;
use party::{NewTask, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, fixture, on_every_backend};

struct Bill;

impl Task for Bill {
    const NAME: &'static str = "bill";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

async fn fifty_concurrent_inserts_make_one_task(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Bill)).await else {
        return;
    };
    let party = Arc::new(f.party.clone());
    let mut joins = Vec::new();
    for i in 0..50 {
        let party = party.clone();
        // Half the inserts write the keys in the other order: key order does not matter.
        let data = if i % 2 == 0 {
            json!({"account": 7, "plan": "gold"})
        } else {
            party::serde_json::from_str(r#"{"plan":"gold","account":7}"#).unwrap()
        };
        joins.push(tokio::spawn(async move {
            party.add(NewTask::new("bill").data(data)).await
        }));
    }
    let mut ok = Vec::new();
    let mut dups = Vec::new();
    for j in joins {
        match j.await.unwrap() {
            Ok(id) => ok.push(id),
            Err(TaskError::Duplicate {
                existing, handler, ..
            }) => {
                assert_eq!(handler, "bill");
                dups.push(existing)
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one insert succeeds");
    assert_eq!(dups.len(), 49);
    assert!(
        dups.iter().all(|d| *d == ok[0]),
        "every duplicate names the existing task"
    );
    assert_eq!(f.party.list(&Default::default()).await.unwrap().len(), 1);
    let err = f
        .party
        .add(NewTask::new("bill").data(json!({"account": 7, "plan": "gold"})))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains(&ok[0].to_string()), "{err}");
}

async fn different_data_does_not_collide_and_finished_tasks_free_the_slot(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Bill)).await else {
        return;
    };
    let a = f
        .party
        .add(NewTask::new("bill").data(json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    f.party
        .add(NewTask::new("bill").data(json!({"a": 1, "b": 3})))
        .await
        .unwrap();
    f.party
        .add(NewTask::new("bill").data(json!({"a": {"x": 1, "y": 2}})))
        .await
        .unwrap();
    let nested = f
        .party
        .add(
            NewTask::new("bill")
                .data(party::serde_json::from_str(r#"{"a":{"y":2,"x":1}}"#).unwrap()),
        )
        .await;
    assert!(
        matches!(nested, Err(TaskError::Duplicate { .. })),
        "nested key order does not matter either"
    );
    let dup = f
        .party
        .add(NewTask::new("bill").data(json!({"b": 2, "a": 1})))
        .await
        .unwrap_err();
    assert_eq!(
        dup,
        TaskError::Duplicate {
            handler: "bill".into(),
            existing: a,
            unique_key: None,
            place: None,
        }
    );
    // The task runs and, scheduling nothing, is done: the slot is free again.
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(f.party.get(a).await.unwrap().state, State::Done);
    let again = f
        .party
        .add(NewTask::new("bill").data(json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_ne!(again, a);
    // A cancelled one frees it too, and retrying the cancelled one then collides.
    f.party.cancel(again).await.unwrap();
    let third = f
        .party
        .add(NewTask::new("bill").data(json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    let err = f.party.retry(again).await.unwrap_err();
    assert_eq!(
        err,
        TaskError::Duplicate {
            handler: "bill".into(),
            existing: third,
            unique_key: None,
            place: None,
        }
    );
}

async fn inserts_from_many_threads_make_one_task(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Bill)).await else {
        return;
    };
    // Separate OS threads, each with its own runtime and its own connection to the store.
    let party = f.party.clone();
    let handle = tokio::runtime::Handle::current();
    let results: Vec<Result<party::TaskId, TaskError>> = std::thread::scope(|s| {
        let joins: Vec<_> = (0..8)
            .map(|_| {
                let party = party.clone();
                let handle = handle.clone();
                s.spawn(move || {
                    handle.block_on(party.add(NewTask::new("bill").data(json!({"thread": true}))))
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Err(TaskError::Duplicate { .. })))
            .count(),
        7
    );
}

async fn concurrent_adds_each_return_an_id_that_was_committed(b: Backend) {
    // Many adds at once share commits on SQLite; every id returned must exist, and a
    // duplicate among them must not undo the others.
    let Some(f) = fixture(b, Registry::new().register(Bill)).await else {
        return;
    };
    let party = Arc::new(f.party.clone());
    let joins: Vec<_> = (0..100)
        .map(|i| {
            let party = party.clone();
            // Tasks 0 and 1 share their data: one of them is a duplicate.
            let key = if i < 2 { 0 } else { i };
            tokio::spawn(async move {
                party
                    .add(NewTask::new("bill").data(json!({ "key": key })))
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut dups = 0;
    for j in joins {
        match j.await.unwrap() {
            Ok(id) => ids.push(id),
            Err(TaskError::Duplicate { .. }) => dups += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ids.len(), dups), (99, 1));
    for id in ids {
        assert_eq!(f.party.get(id).await.unwrap().state, State::Scheduled);
    }
    assert_eq!(f.party.list(&Default::default()).await.unwrap().len(), 99);
}

on_every_backend!(
    concurrent_adds_each_return_an_id_that_was_committed,
    fifty_concurrent_inserts_make_one_task,
    different_data_does_not_collide_and_finished_tasks_free_the_slot,
    inserts_from_many_threads_make_one_task,
);
