//! Migrations: a fresh store is at the binary's schema version, opening it again changes
//! nothing, and a store written by a newer binary is refused with a message that says what to do.

use party::TaskError;
use party::store::SCHEMA_VERSION;

use crate::harness::{Backend, Harness, on_every_backend, t0, task};

async fn a_fresh_store_is_at_the_schema_version(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    assert_eq!(h.schema_version().await, SCHEMA_VERSION);
    assert_eq!(
        h.store.backend(),
        match b {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
}

async fn opening_a_current_store_again_keeps_its_tasks(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    let id = h.insert(vec![task("noop")]).await[0];
    let again = h.reopen().await.expect("a current store opens again");
    assert_eq!(h.schema_version().await, SCHEMA_VERSION);
    let t = again.task_get(id).await.unwrap().expect("the task is kept");
    assert_eq!(t.timestamp, t0());
}

async fn a_store_newer_than_the_binary_is_refused(b: Backend) {
    let Some(h) = Harness::new(b).await else {
        return;
    };
    h.record_schema_version(SCHEMA_VERSION + 1).await;
    let err = match h.reopen().await {
        Ok(_) => panic!("a store at version {} opened", SCHEMA_VERSION + 1),
        Err(e) => e,
    };
    assert!(matches!(err, TaskError::Store(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "has schema version {}, newer than this party binary knows ({SCHEMA_VERSION})",
            SCHEMA_VERSION + 1
        )),
        "{msg}"
    );
    assert!(msg.contains("upgrade party"), "{msg}");
    assert_eq!(
        h.schema_version().await,
        SCHEMA_VERSION + 1,
        "the refusal wrote nothing"
    );
}

on_every_backend!(
    a_fresh_store_is_at_the_schema_version,
    opening_a_current_store_again_keeps_its_tasks,
    a_store_newer_than_the_binary_is_refused,
);
