//! A crash of the PostgreSQL server's processes (the machine stays up) loses no claim a
//! worker was told of: were one lost while its worker ran the task, another worker could claim
//! the task again at once, under the same fence, and both would run it.

use std::time::Duration;

use party::store::ClaimParams;
use party::{NewTask, Party, Registry, State, Task, TaskContext, TaskError};

mod support;
use support::{Cluster, Setup};

struct Noop;

impl Task for Noop {
    const NAME: &'static str = "noop";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

fn claim<'a>(worker: &'a str, handlers: &'a [String], queues: &'a [String]) -> ClaimParams<'a> {
    let now = party::jiff::Timestamp::now();
    ClaimParams {
        worker,
        handlers,
        queues,
        limit: 10,
        now,
        lease_until: now + Duration::from_secs(600),
        promote_limit: party::policy::PROMOTE_BATCH,
        controlled: &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_outlives_a_crash_of_the_server() {
    // The WAL writer writes committed WAL out only every 10 s here, so a commit that does not
    // wait for the disk stays in the server's memory, and an immediate stop loses it.
    let Some(cluster) = Cluster::start_with(Setup {
        options: Some("-c wal_writer_delay=10000".to_string()),
        ..Setup::default()
    }) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no private PostgreSQL cluster could be started"
        );
        return;
    };
    let db = cluster.db("crash");
    let store = party::open_store(&db.url).await.unwrap();
    let party = Party::with_store(store.clone(), Registry::new().register(Noop));
    let id = party.add(NewTask::new("noop")).await.unwrap();
    let (handlers, queues) = (vec!["noop".to_string()], vec!["default".to_string()]);
    let claimed = store
        .task_claim(claim("first", &handlers, &queues))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let fence = claimed[0].fence;
    // The worker that claimed it runs it now; the server crashes meanwhile.
    assert!(cluster.crash_and_restart(), "{}", cluster.log());
    let store = party::open_store(&db.url).await.unwrap();
    let party = Party::with_store(store.clone(), Registry::new().register(Noop));
    let task = party.get(id).await.unwrap();
    assert_eq!(
        (task.state, task.worker.as_deref()),
        (State::Running, Some("first")),
        "the claim was lost: {task:?}"
    );
    let again = store
        .task_claim(claim("second", &handlers, &queues))
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "claimed again under fence {} (the first claim's was {fence})",
        again.first().map_or(0, |c| c.fence)
    );
}
