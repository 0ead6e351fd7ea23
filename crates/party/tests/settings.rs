#![allow(missing_docs)]
//! What a service that depends on the crate hands it: worker settings, database URLs and
//! scheduling calls out of range are refused clearly or work, and never panic, hang or lose
//! tasks. SQLite only (the checks are above the storage seam).
#![cfg(feature = "sqlite")]

use std::sync::Arc;
use std::time::Duration;

use party::testing::context;
use party::{NewTask, Party, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

struct Noop;

impl Task for Noop {
    const NAME: &'static str = "noop";
    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

struct Slow;

impl Task for Slow {
    const NAME: &'static str = "slow";
    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

fn temp_db(tag: &str) -> String {
    std::env::temp_dir()
        .join(format!(
            "party-settings-{tag}-{}-{:x}.db",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
        .display()
        .to_string()
}

async fn party_on_system_clock(tag: &str) -> Party {
    Party::connect(&temp_db(tag), Registry::new().register(Noop).register(Slow))
        .await
        .unwrap()
}

/// Run `config` over one due task in a spawned task (so a panic is seen as such), bounded.
async fn run_one(
    tag: &str,
    handler: &str,
    config: WorkerConfig,
) -> Result<Result<State, TaskError>, String> {
    let party = party_on_system_clock(tag).await;
    let id = party.add(NewTask::new(handler)).await.unwrap();
    let p = party.clone();
    let joined = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::spawn(async move { p.worker(config).run_until_idle().await }),
    )
    .await
    .map_err(|_| "run_until_idle did not return within 20 s".to_string())?;
    match joined {
        Err(e) if e.is_panic() => Err(format!("the worker panicked: {e:?}")),
        Err(e) => Err(format!("{e:?}")),
        Ok(Err(e)) => Ok(Err(e)),
        Ok(Ok(_)) => Ok(Ok(party.get(id).await.unwrap().state)),
    }
}

fn refused_or_done(r: Result<Result<State, TaskError>, String>) {
    match r {
        Err(msg) => panic!("{msg}"),
        Ok(Err(TaskError::Invalid(_))) => {}
        Ok(Err(e)) => panic!("refused, but not as Invalid: {e:?}"),
        Ok(Ok(state)) => assert_eq!(state, State::Done),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_prefetch_is_refused_or_works_without_a_panic() {
    refused_or_done(
        run_one(
            "prefetch",
            "noop",
            WorkerConfig {
                prefetch: usize::MAX,
                ..WorkerConfig::default()
            },
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_lease_is_refused_or_works_without_a_panic() {
    refused_or_done(
        run_one(
            "lease-max",
            "noop",
            WorkerConfig {
                lease: Duration::MAX,
                ..WorkerConfig::default()
            },
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_lease_is_refused_or_works() {
    refused_or_done(
        run_one(
            "lease-zero",
            "slow",
            WorkerConfig {
                lease: Duration::ZERO,
                ..WorkerConfig::default()
            },
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_poll_interval_is_refused_or_works_without_a_panic() {
    let party = party_on_system_clock("poll-max").await;
    // A task due later keeps a `run` worker polling.
    party
        .add(NewTask::new("noop").at(party::jiff::Timestamp::now() + Duration::from_secs(3600)))
        .await
        .unwrap();
    let p = party.clone();
    let joined = tokio::spawn(async move {
        p.worker(WorkerConfig {
            poll_interval: Duration::MAX,
            ..WorkerConfig::default()
        })
        .run(tokio::time::sleep(Duration::from_millis(500)))
        .await
    })
    .await;
    match joined {
        Err(e) if e.is_panic() => panic!("the worker panicked: {e:?}"),
        Err(e) => panic!("{e:?}"),
        Ok(Ok(_)) | Ok(Err(TaskError::Invalid(_))) => {}
        Ok(Err(e)) => panic!("{e:?}"),
    }
}

#[test]
fn schedule_next_run_in_minutes_refuses_a_huge_delay_without_a_panic() {
    let mut ctx = context("bill").recurring(true).build();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.schedule_next_run_in_minutes(i64::MAX)
    }));
    match r {
        Err(_) => panic!(
            "schedule_next_run_in_minutes(i64::MAX) panicked instead of returning TaskError::Schedule"
        ),
        Ok(r) => assert!(matches!(r, Err(TaskError::Schedule(_))), "{r:?}"),
    }
}

/// A typical service keeps a `Party` in axum state and spawns workers and adds from handlers.
#[test]
fn the_api_is_usable_from_spawned_tasks() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync_static::<Party>();
    send_sync_static::<party::Worker>();
    send_sync_static::<TaskError>();
    send_sync_static::<party::TaskInfo>();
    let _ = |p: Party, w: Arc<party::Worker>| {
        let add = p.add(NewTask::new("x"));
        send(&add);
        let f = party::ListFilter::default();
        let get = p.list(&f);
        send(&get);
        let run = w.run(async {});
        send(&run);
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_flush_delay_is_refused_or_works_without_a_panic() {
    refused_or_done(
        run_one(
            "flush-max",
            "noop",
            WorkerConfig {
                flush_delay: Duration::MAX,
                ..WorkerConfig::default()
            },
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_finish_batch_is_refused_or_works_without_a_panic() {
    refused_or_done(
        run_one(
            "finish-max",
            "noop",
            WorkerConfig {
                finish_batch: usize::MAX,
                ..WorkerConfig::default()
            },
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_claim_batch_is_refused_or_works_without_a_panic() {
    refused_or_done(
        run_one(
            "claim-max",
            "noop",
            WorkerConfig {
                claim_batch: usize::MAX,
                ..WorkerConfig::default()
            },
        )
        .await,
    );
}

/// `sqlite:` or `sqlite://` with nothing after it (e.g. `sqlite://${DB_PATH}` with the variable
/// unset) names no file; SQLite reads an empty name as a private temporary database that is
/// deleted on close, so every task added would vanish with the process.
#[tokio::test]
async fn a_sqlite_url_without_a_path_is_refused() {
    for url in ["sqlite:", "sqlite://", "sqlite:  "] {
        match party::open_store(url).await {
            Err(TaskError::Invalid(_)) => {}
            Err(e) => panic!("{url:?}: refused, but not as Invalid: {e:?}"),
            Ok(store) => panic!(
                "{url:?} opened a {} store on no file: a durable scheduler on a temporary database",
                store.backend()
            ),
        }
    }
}

/// `?mode=rwc` and the like (sqlx's spelling) are not read as options: they become part of the
/// file name, so `sqlite:tasks.db?mode=rwc` and `tasks.db` are two different databases.
#[tokio::test]
async fn a_sqlite_url_with_query_options_does_not_become_a_file_name() {
    let dir = std::env::temp_dir().join(format!("party-settings-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/q.db?mode=rwc", dir.display());
    let opened = party::open_store(&url).await;
    let odd = dir.join("q.db?mode=rwc").exists();
    let _ = std::fs::remove_dir_all(&dir);
    match opened {
        Err(TaskError::Invalid(_)) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => assert!(!odd, "{url} created a file named 'q.db?mode=rwc'"),
    }
}

#[tokio::test]
async fn a_task_added_through_sqlite_colon_is_still_there_on_the_next_connect() {
    let reg = || Registry::new().register(Noop);
    let Ok(first) = Party::connect("sqlite:", reg()).await else {
        return; // refused: fine
    };
    let id = first.add(NewTask::new("noop")).await.unwrap();
    drop(first);
    let second = Party::connect("sqlite:", reg()).await.unwrap();
    assert!(
        second.get(id).await.is_ok(),
        "task {id} vanished: 'sqlite:' is a temporary database"
    );
}

/// Handler names, queue names and unique keys are checked (1 to 128 bytes, no control
/// characters); the worker id, written into every run row and the workers table, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_is_checked_like_the_other_names() {
    for id in [String::new(), "web\0-1".to_string(), "x".repeat(1 << 20)] {
        let r = run_one(
            "worker-id",
            "noop",
            WorkerConfig {
                id: Some(id.clone()),
                ..WorkerConfig::default()
            },
        )
        .await;
        assert!(
            matches!(r, Ok(Err(TaskError::Invalid(_)))),
            "worker id of {} bytes ({:?}…): {r:?}",
            id.len(),
            &id[..id.len().min(8)]
        );
    }
}
