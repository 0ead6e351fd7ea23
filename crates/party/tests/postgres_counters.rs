//! The finished-task counters on PostgreSQL stay small however long a store runs.
//!
//! Alone in its own test binary: a vacuum cannot reclaim a row version that a transaction
//! begun before its deletion might still read, and the other PostgreSQL tests hold such
//! transactions on the same database while they run.

use std::sync::Arc;

use party::jiff::Timestamp;
use party::maintenance::{PruneConfig, Pruner};
use party::policy::Retention;
use party::{ManualClock, NewTask, State, WorkerConfig};

#[path = "support/postgres_db.rs"]
mod postgres_db;

use postgres_db::TestDb;

/// Every finish appends a delta row to `task_counts` and every `stats` folds them into one
/// row per handler, queue and state, deleting the rest: a dead row version each, which only a
/// vacuum reclaims. The pruner's pass vacuums the counters with the hot table, so on a server
/// whose autovacuum is off (or behind) they stay a page or two however long the store runs
/// and however often a dashboard asks for `stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_stay_small_however_many_finishes_and_stats_fold_them() {
    let Some(db) = TestDb::new() else { return };
    let party = db.party().await;
    let client = db.client().await;
    let table = format!("\"{}\".task_counts", db.schema);
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        ))
        .await
        .unwrap();
    let size = || async {
        let row = client
            .query_one("SELECT pg_table_size($1::text::regclass)", &[&table])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    // A pass keeping everything still reclaims what the flow left behind.
    let pruner = Pruner::new(
        party.store().clone(),
        Arc::new(ManualClock::new(Timestamp::now())),
        PruneConfig {
            retention: Retention::forever(),
            ..PruneConfig::default()
        },
    );
    let worker = WorkerConfig {
        concurrency: 5,
        ..WorkerConfig::default()
    };
    let mut after_ten = 0;
    for round in 0..50 {
        party
            .add_many((0..50).map(|_| NewTask::new("noop")).collect())
            .await
            .unwrap();
        // Finishes in several batches, each appending its deltas; folded by a `stats`.
        party.worker(worker.clone()).run_until_idle().await.unwrap();
        party.stats().await.unwrap();
        pruner.run_once().await.unwrap();
        if round == 9 {
            after_ten = size().await;
        }
    }
    let after_fifty = size().await;
    let stats = party.stats().await.unwrap();
    db.cleanup().await;
    assert!(stats.by_state.contains(&(State::Done, 2500)), "{stats:?}");
    // Without the vacuum the table grows with every round (tens of kilobytes here).
    assert!(
        after_fifty <= after_ten.max(16 * 1024),
        "{after_ten} bytes after 10 rounds, {after_fifty} after 50"
    );
}
