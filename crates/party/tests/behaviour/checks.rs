//! Handlers check a new task's data when it is added: a refused task writes nothing, in `add`,
//! `add_many` and follow-ups alike.

use party::serde_json::{Value, json};
use party::{ListFilter, NewTask, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, fixture, on_every_backend};

/// Needs a non-empty `customer` string; enqueues a follow-up with the data it is told to.
struct Invoice;

impl Task for Invoice {
    const NAME: &'static str = "invoice";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        if let Some(next) = ctx.data().get("follow_up").cloned() {
            ctx.enqueue(NewTask::new("invoice").data(next));
        }
        Ok(())
    }

    fn check(&self, data: &Value) -> Result<(), String> {
        match data.get("customer") {
            Some(Value::String(c)) if !c.is_empty() => Ok(()),
            _ => Err("\"customer\" must be a non-empty string".to_string()),
        }
    }
}

fn registry() -> Registry {
    party::builtin::registry(true).register(Invoice)
}

async fn all_tasks(party: &party::Party) -> usize {
    party
        .list(&ListFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

async fn a_handler_check_refuses_bad_data_and_writes_nothing(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let err = f
        .party
        .add(NewTask::new("invoice").data(json!({ "customer": 7 })))
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the data does not fit handler 'invoice': \"customer\" must be a non-empty string"
    );
    let err = f
        .party
        .add(NewTask::new("shell").data(json!({ "cmd": 5 })))
        .await
        .unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("\"cmd\" must be a string"),
        "{err}"
    );
    let err = f
        .party
        .add(NewTask::new("sleep").data(json!({ "ms": 1.5 })))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"ms\" must be a whole number"),
        "{err}"
    );

    // All or nothing: the second task's data is refused, so the first is not written either.
    let err = f
        .party
        .add_many(vec![
            NewTask::new("invoice").data(json!({ "customer": "acme" })),
            NewTask::new("invoice").data(json!({})),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("task 2: "), "{err}");
    assert_eq!(all_tasks(&f.party).await, 0);

    f.party
        .add(NewTask::new("invoice").data(json!({ "customer": "acme" })))
        .await
        .unwrap();
    f.party
        .add(NewTask::new("shell").data(json!({ "cmd": "true" })))
        .await
        .unwrap();
    assert_eq!(all_tasks(&f.party).await, 2);
}

async fn a_follow_up_with_bad_data_is_refused_by_its_handler_check(b: Backend) {
    let Some(f) = fixture(b, registry()).await else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("invoice").data(json!({
            "customer": "acme",
            "follow_up": { "customer": "" }
        })))
        .await
        .unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Dead);
    let error = task.last_error.unwrap_or_default();
    assert!(
        error.contains("bad follow-up") && error.contains("\"customer\""),
        "{error}"
    );
    assert_eq!(
        all_tasks(&f.party).await,
        1,
        "the follow-up was not written"
    );
}

on_every_backend!(
    a_handler_check_refuses_bad_data_and_writes_nothing,
    a_follow_up_with_bad_data_is_refused_by_its_handler_check,
);
