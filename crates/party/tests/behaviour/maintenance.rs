//! Decisions above the storage seam, on every backend: the rescue service and its leadership,
//! worker liveness from each worker's own lease, undecodable tasks, typed outcomes, and the
//! worker's report counting only what was recorded.

use std::sync::Arc;
use std::time::Duration;

use party::jiff::SignedDuration;
use party::maintenance::{Maintenance, RescueConfig, Rescuer, Service};
use party::serde_json::json;
use party::store::{ClaimParams, ExpiredParams, FinishResult, HeartbeatParams, LeaderParams};
use party::{
    Clock, NewTask, Outcome, Registry, State, Task, TaskContext, TaskError, WorkerConfig,
    WorkerInfo, builtin,
};
use tokio::sync::Notify;

use crate::common::{Backend, Fixture, fixture, id_literal, on_every_backend, raw_sql, start, t0};

fn claim<'a>(
    worker: &'a str,
    handlers: &'a [String],
    queues: &'a [String],
    f: &Fixture,
) -> ClaimParams<'a> {
    let now = f.clock.now();
    ClaimParams {
        worker,
        handlers,
        queues,
        limit: 10,
        now,
        lease_until: now + SignedDuration::from_secs(30),
        promote_limit: party::policy::PROMOTE_BATCH,
        controlled: &[],
    }
}

fn default_queue() -> Vec<String> {
    vec!["default".to_string()]
}

/// Claim every due `noop` task for `worker`, as a worker that then dies would.
async fn claim_noops(worker: &str, f: &Fixture) -> Vec<party::store::ClaimedTask> {
    let (handlers, queues) = (vec!["noop".to_string()], default_queue());
    f.party
        .store()
        .task_claim(claim(worker, &handlers, &queues, f))
        .await
        .unwrap()
}

fn rescuer(f: &Fixture) -> Rescuer {
    Rescuer::new(
        f.party.store().clone(),
        Arc::new(f.clock.clone()),
        RescueConfig::default(),
    )
}

async fn the_rescuer_releases_expired_leases_as_lost_runs(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let once = f.party.add(NewTask::new("noop")).await.unwrap();
    let last = f
        .party
        .add(NewTask::new("noop").data(json!({"n": 2})).max_attempts(1))
        .await
        .unwrap();
    let now = f.clock.now();
    let claimed = claim_noops("gone", &f).await;
    assert_eq!(claimed.len(), 2);
    // Within the lease nothing is expired.
    f.clock.advance(SignedDuration::from_secs(29));
    assert_eq!(rescuer(&f).run_once().await.unwrap().rescued, 0);
    f.clock.advance(SignedDuration::from_secs(2));
    let report = rescuer(&f).run_once().await.unwrap();
    assert_eq!(report.rescued, 2);
    assert_eq!(report.dead, vec![last], "no attempts left: dead");
    let task = f.party.get(once).await.unwrap();
    assert_eq!(task.state, State::Retrying);
    assert_eq!(
        task.due_at,
        f.clock.now(),
        "a lost attempt is due again at once"
    );
    assert_eq!(task.runs.len(), 1);
    let run = &task.runs[0];
    assert_eq!(run.outcome, Outcome::Lost);
    assert_eq!(run.worker, "gone");
    assert_eq!(run.started_at, now);
    assert_eq!(run.finished_at, f.clock.now());
    let error = run.error.as_deref().unwrap();
    assert!(error.contains("worker gone lost its lease"), "{error}");
    assert_eq!(f.party.get(last).await.unwrap().state, State::Dead);
    // A second pass finds nothing.
    assert_eq!(rescuer(&f).run_once().await.unwrap(), Default::default());
}

async fn a_rescue_racing_a_renewed_lease_changes_nothing(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let store = f.party.store().clone();
    let id = f.party.add(NewTask::new("noop")).await.unwrap();
    let handlers = vec!["noop".to_string()];
    let queues = default_queue();
    let claimed = claim_noops("slow", &f).await;
    f.clock.advance(SignedDuration::from_secs(31));
    let now = f.clock.now();
    let expired = store
        .task_expired(ExpiredParams { now, limit: 10 })
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, id);
    assert_eq!(expired[0].fence, claimed[0].fence);
    assert_eq!(expired[0].worker, "slow");
    // The worker was only slow: its heartbeat renews the lease before the rescue writes.
    let info = WorkerInfo {
        id: "slow".into(),
        handlers: handlers.clone(),
        queues: queues.clone(),
        last_seen: now,
        live_until: now + SignedDuration::from_secs(30),
    };
    let lost = store
        .task_heartbeat(HeartbeatParams {
            worker: &info,
            tasks: &[(id, claimed[0].fence)],
            lease_until: now + SignedDuration::from_secs(30),
            now,
        })
        .await
        .unwrap()
        .lost;
    assert!(lost.is_empty());
    // The rescue pass that listed it before the renewal is refused.
    assert_eq!(rescuer(&f).run_once().await.unwrap().rescued, 0);
    let mut finish = party::store::Finish {
        id,
        fence: claimed[0].fence,
        attempt: 1,
        timestamp: t0(),
        started_at: t0(),
        finished_at: now,
        worker: "slow".into(),
        outcome: Outcome::Lost,
        error: Some("rescued".into()),
        next: party::store::Next::retry_at(now),
        follow_ups: vec![],
        ran: true,
        expired_before: Some(now),
    };
    assert_eq!(
        store.task_finish(vec![finish.clone()]).await.unwrap(),
        vec![FinishResult::Stale]
    );
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Running);
    assert!(task.runs.is_empty());
    // The worker's own result still applies.
    finish.expired_before = None;
    finish.outcome = Outcome::Succeeded;
    finish.error = None;
    finish.next = party::store::Next::Done;
    assert_eq!(
        store.task_finish(vec![finish]).await.unwrap(),
        vec![FinishResult::Applied]
    );
    assert_eq!(f.party.get(id).await.unwrap().state, State::Done);
}

async fn one_holder_leads_a_service_until_its_term_lapses_or_it_resigns(b: Backend) {
    let Some(f) = fixture(b, Registry::new()).await else {
        return;
    };
    let store = f.party.store().clone();
    let bid = |holder: &'static str, f: &Fixture| {
        let now = f.clock.now();
        let store = store.clone();
        async move {
            store
                .leader_elect(LeaderParams {
                    name: "rescue",
                    holder,
                    now,
                    until: now + SignedDuration::from_secs(3),
                })
                .await
                .unwrap()
        }
    };
    assert!(bid("a", &f).await, "nobody leads: a takes it");
    assert!(!bid("b", &f).await, "a leads: b is refused");
    f.clock.advance(SignedDuration::from_secs(2));
    assert!(bid("a", &f).await, "a renews its term");
    f.clock.advance(SignedDuration::from_secs(2));
    assert!(!bid("b", &f).await, "the renewed term still holds");
    f.clock.advance(SignedDuration::from_secs(2));
    assert!(bid("b", &f).await, "a's term lapsed: b takes over");
    assert!(!bid("a", &f).await);
    Maintenance::resign(&*store, "b").await.unwrap();
    assert!(bid("a", &f).await, "b resigned: a takes it at once");
    // Leadership is per service.
    let now = f.clock.now();
    assert!(
        store
            .leader_elect(LeaderParams {
                name: "prune",
                holder: "b",
                now,
                until: now + SignedDuration::from_secs(3),
            })
            .await
            .unwrap()
    );
    // The maintenance runner elects through the same rows.
    let m = Maintenance::new(store.clone(), Arc::new(f.clock.clone()), "c".into());
    assert!(
        !m.elect(&rescuer(&f)).await.unwrap(),
        "a still leads rescue"
    );
    assert_eq!(rescuer(&f).name(), "rescue");
}

async fn a_worker_with_a_long_lease_stays_live_in_stats(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let worker = f.party.worker(WorkerConfig {
        lease: Duration::from_secs(600),
        id: Some("patient".into()),
        ..Default::default()
    });
    let running = start(worker);
    // The worker announces itself before anything else.
    for _ in 0..200 {
        if !f.party.stats().await.unwrap().workers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Five minutes later, with no heartbeat in between (it beats every 200 s), it is live.
    f.clock.advance(SignedDuration::from_secs(300));
    let stats = f.party.stats().await.unwrap();
    assert_eq!(stats.workers.len(), 1, "{stats:?}");
    assert_eq!(stats.workers[0].id, "patient");
    assert_eq!(
        stats.workers[0].live_until,
        stats.workers[0].last_seen + SignedDuration::from_secs(600)
    );
    // A due task of a handler it knows is not reported as unhandled.
    f.party.add(NewTask::new("log")).await.unwrap();
    // Past its lease without a beat it is no longer live.
    f.clock.advance(SignedDuration::from_secs(301));
    let stats = f.party.stats().await.unwrap();
    assert!(stats.workers.is_empty(), "{stats:?}");
    running.stop().await;
}

async fn stats_name_running_tasks_stuck_under_an_expired_lease(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("noop")).await.unwrap();
    claim_noops("killed", &f).await;
    assert_eq!(f.party.stats().await.unwrap().stuck_count, 0);
    f.clock.advance(SignedDuration::from_secs(45));
    let stats = f.party.stats().await.unwrap();
    assert_eq!(stats.stuck_count, 1);
    assert_eq!(stats.stuck[0].id, id);
    assert_eq!(stats.stuck[0].worker, "killed");
    assert_eq!(
        stats.stuck[0].lease_until,
        t0() + SignedDuration::from_secs(30)
    );
}

async fn run_until_idle_rescues_a_task_stuck_under_an_expired_lease(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    let id = f.party.add(NewTask::new("noop")).await.unwrap();
    claim_noops("killed", &f).await;
    f.clock.advance(SignedDuration::from_secs(31));
    let report = f
        .party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Done);
    let outcomes: Vec<_> = task.runs.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Lost, Outcome::Succeeded]);
}

struct Echo;

impl Task for Echo {
    const NAME: &'static str = "echo";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        match ctx.data().get("fail").and_then(|v| v.as_str()) {
            Some(msg) => Err(TaskError::failed(msg)),
            None => Ok(()),
        }
    }
}

async fn an_undecodable_task_is_not_run_and_the_others_are(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Echo)).await else {
        return;
    };
    let good = f
        .party
        .add(NewTask::new("echo").data(json!({"n": 1})))
        .await
        .unwrap();
    let not_json = f
        .party
        .add(NewTask::new("echo").data(json!({"n": 2})))
        .await
        .unwrap();
    let not_object = f
        .party
        .add(NewTask::new("echo").data(json!({"n": 3})))
        .await
        .unwrap();
    raw_sql(
        &f,
        &format!(
            "UPDATE tasks SET data = '{{\"n\": 2' WHERE id = {}",
            id_literal(&f, not_json)
        ),
    )
    .await;
    raw_sql(
        &f,
        &format!(
            "UPDATE tasks SET data = '[1, 2]' WHERE id = {}",
            id_literal(&f, not_object)
        ),
    )
    .await;
    let report = f
        .party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(report.failed, 2);
    assert_eq!(f.party.get(good).await.unwrap().state, State::Done);
    for (id, what) in [
        (not_json, "not valid JSON"),
        (not_object, "not a JSON object"),
    ] {
        let task = f.party.get(id).await.unwrap();
        assert_eq!(task.state, State::Dead, "a person has to repair it");
        assert_eq!(task.attempts, 1, "no attempts burnt on it");
        assert_eq!(task.runs.len(), 1);
        assert_eq!(task.runs[0].outcome, Outcome::Failed);
        let error = task.runs[0].error.as_deref().unwrap();
        assert!(error.contains(&id.to_string()), "{error}");
        assert!(error.contains("'data'"), "{error}");
        assert!(error.contains(what), "{error}");
        assert_eq!(task.last_error.as_deref(), Some(error));
    }
    // The rows are kept as they were, for a person to look at.
    let rows = raw_sql(
        &f,
        &format!(
            "SELECT data FROM task_history WHERE id = {}",
            id_literal(&f, not_object)
        ),
    )
    .await;
    assert_eq!(rows, vec!["[1, 2]".to_string()]);
}

async fn an_error_that_says_timed_out_is_a_failure_not_a_timeout(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(Echo)).await else {
        return;
    };
    let id = f
        .party
        .add(
            NewTask::new("echo")
                .data(json!({"fail": "timed out waiting for the bank"}))
                .max_attempts(1),
        )
        .await
        .unwrap();
    f.party
        .worker(WorkerConfig::default())
        .run_until_idle()
        .await
        .unwrap();
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.runs[0].outcome, Outcome::Failed);
    assert_eq!(
        task.runs[0].error.as_deref(),
        Some("timed out waiting for the bank")
    );
}

/// Waits for the test's signal before it returns.
struct Gate(Arc<Notify>, Arc<Notify>);

impl Task for Gate {
    const NAME: &'static str = "gate";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.0.notify_one();
        self.1.notified().await;
        Ok(())
    }
}

async fn a_result_refused_as_stale_is_not_counted_as_succeeded(b: Backend) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let Some(f) = fixture(
        b,
        Registry::new().register(Gate(started.clone(), release.clone())),
    )
    .await
    else {
        return;
    };
    let id = f
        .party
        .add(NewTask::new("gate").max_attempts(1))
        .await
        .unwrap();
    // The worker's clock lags the rescuer's: the worker still holds its lease by its own
    // clock when the rescue releases the task. (Sharing the rescuer's clock, it would give
    // the attempt up itself once the lease ended, and no result would come back.)
    let lagging = party::Party::with_store(
        f.party.store().clone(),
        Registry::new().register(Gate(started.clone(), release.clone())),
    )
    .with_clock(Arc::new(party::ManualClock::new(t0())));
    let running = start(lagging.worker(WorkerConfig {
        lease: Duration::from_secs(30),
        ..Default::default()
    }));
    started.notified().await;
    // The worker looks dead from outside: its lease ends and a rescue pass releases it.
    f.clock.advance(SignedDuration::from_secs(31));
    rescuer(&f).run_once().await.unwrap();
    assert_eq!(f.party.get(id).await.unwrap().state, State::Dead);
    // Its attempts are used up, so nobody claims it again; the old attempt then returns.
    release.notify_one();
    let report = running.stop().await;
    assert_eq!(report.succeeded, 0, "{report:?}");
    assert_eq!(report.stale, 1, "{report:?}");
    assert_eq!(report.attempts, 0, "{report:?}");
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Dead);
    assert_eq!(task.runs.len(), 1, "only the lost run");
    assert_eq!(task.runs[0].outcome, Outcome::Lost);
}

/// The worker's metrics agree with its report: an attempt whose result the store refused
/// (its claim was rescued meanwhile) is a fence refusal, not also a succeeded run; the store
/// recorded that attempt as lost.
async fn a_result_refused_as_stale_is_not_a_succeeded_run_in_the_metrics(b: Backend) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let Some(f) = fixture(
        b,
        Registry::new().register(Gate(started.clone(), release.clone())),
    )
    .await
    else {
        return;
    };
    f.party
        .add(NewTask::new("gate").max_attempts(1))
        .await
        .unwrap();
    let lagging = party::Party::with_store(
        f.party.store().clone(),
        Registry::new().register(Gate(started.clone(), release.clone())),
    )
    .with_clock(Arc::new(party::ManualClock::new(t0())));
    let metrics = Arc::new(party::metrics::WorkerMetrics::new());
    let running = start(lagging.worker(WorkerConfig {
        lease: Duration::from_secs(30),
        metrics: Some(metrics.clone()),
        ..Default::default()
    }));
    started.notified().await;
    f.clock.advance(SignedDuration::from_secs(31));
    assert_eq!(rescuer(&f).run_once().await.unwrap().rescued, 1);
    release.notify_one();
    let report = running.stop().await;
    assert_eq!((report.succeeded, report.stale), (0, 1), "{report:?}");
    let text = metrics.render();
    assert!(text.contains("party_fence_refusals_total 1\n"), "{text}");
    assert_eq!(
        metrics.runs("gate", "default", Outcome::Succeeded),
        report.succeeded,
        "the metrics count a succeeded run the store refused: {text}"
    );
}

/// A worker that stops resigns every leadership it held, so another process leads at once
/// (`Maintenance::resign`), not three intervals later: nothing its maintenance had in flight
/// may take a leadership back after the resignation.
async fn a_stopped_worker_holds_no_leadership(b: Backend) {
    let Some(f) = fixture(b, builtin::registry(false)).await else {
        return;
    };
    for i in 0..100 {
        let id = format!("stopped-{i}");
        f.party
            .worker(WorkerConfig {
                id: Some(id.clone()),
                ..Default::default()
            })
            .run_until_idle()
            .await
            .unwrap();
        // Whatever the stopped worker still had on its way to the store has landed by now.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held = raw_sql(
            &f,
            &format!("SELECT name FROM leaders WHERE holder = '{id}' ORDER BY name"),
        )
        .await;
        assert!(
            held.is_empty(),
            "stop {i}: worker {id} stopped but still leads {held:?}"
        );
    }
}

/// A maintenance service whose pass takes `steps` of its interval, time flowing on the
/// manual clock meanwhile; it counts how many passes run at once.
struct LongPass {
    clock: party::ManualClock,
    steps: u32,
    running: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    started: Arc<Notify>,
}

const LONG_PASS_INTERVAL: Duration = Duration::from_millis(20);

impl Service for LongPass {
    fn name(&self) -> &'static str {
        "long-pass"
    }

    fn interval(&self) -> Duration {
        LONG_PASS_INTERVAL
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, TaskError>> + Send + '_>>
    {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            self.started.notify_one();
            for _ in 0..self.steps {
                tokio::time::sleep(LONG_PASS_INTERVAL).await;
                self.clock
                    .advance(SignedDuration::try_from(LONG_PASS_INTERVAL).unwrap());
            }
            self.running.fetch_sub(1, SeqCst);
            Ok(0)
        })
    }
}

/// Only the leader runs a service (see `maintenance`): a leader whose pass lasts longer than
/// its term still leads while it runs it, so no other process starts the same pass beside it.
async fn a_pass_longer_than_the_term_keeps_one_leader(b: Backend) {
    let Some(f) = fixture(b, Registry::new()).await else {
        return;
    };
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let maintenance = |holder: &str| {
        Maintenance::new(
            f.party.store().clone(),
            Arc::new(f.clock.clone()),
            holder.to_string(),
        )
        .with(LongPass {
            clock: f.clock.clone(),
            // Ten intervals: over three terms.
            steps: 10,
            running: running.clone(),
            most: most.clone(),
            started: started.clone(),
        })
        .run()
    };
    let first = tokio::spawn(maintenance("first"));
    started.notified().await;
    let second = tokio::spawn(maintenance("second"));
    tokio::time::sleep(LONG_PASS_INTERVAL * 12).await;
    first.abort();
    second.abort();
    assert_eq!(
        most.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "two processes ran the service's pass at once"
    );
}

on_every_backend!(
    a_pass_longer_than_the_term_keeps_one_leader,
    a_stopped_worker_holds_no_leadership,
    the_rescuer_releases_expired_leases_as_lost_runs,
    a_rescue_racing_a_renewed_lease_changes_nothing,
    one_holder_leads_a_service_until_its_term_lapses_or_it_resigns,
    a_worker_with_a_long_lease_stays_live_in_stats,
    stats_name_running_tasks_stuck_under_an_expired_lease,
    run_until_idle_rescues_a_task_stuck_under_an_expired_lease,
    an_undecodable_task_is_not_run_and_the_others_are,
    an_error_that_says_timed_out_is_a_failure_not_a_timeout,
    a_result_refused_as_stale_is_not_counted_as_succeeded,
    a_result_refused_as_stale_is_not_a_succeeded_run_in_the_metrics,
);

/// A store written at schema version 1 (as the first release wrote it) upgrades on first use:
/// its tasks and runs are kept, and its workers get a liveness matching the old 30 s window.
#[cfg(all(feature = "sqlite", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_store_upgrades_in_place() {
    const V1_SQLITE: &str = include_str!("../../src/store/sqlite/migrations/001_tasks.sql");
    const V1_POSTGRES: &str = include_str!("../../src/store/postgres/migrations/001_tasks.sql");
    let seen = 1_800_000_000_000_000i64;
    let insert_v1 = format!(
        "INSERT INTO workers (id, handlers, queues, last_seen) VALUES ('old', '[\"noop\"]', \
         '[\"default\"]', {seen}); \
         INSERT INTO tasks (id, handler, data, timestamp, due_at, ready, attempts, max_attempts, \
         is_recurring, state, queue, priority, fence, created_at, updated_at) VALUES \
         ('6a0000000000000000000001', 'noop', '{{}}', {seen}, {seen}, 0, 1, 5, 0, 'dead', \
         'default', 0, 1, {seen}, {seen}); \
         INSERT INTO runs (task_id, attempt, timestamp, started_at, finished_at, outcome, error, \
         worker) VALUES ('6a0000000000000000000001', 1, {seen}, {seen}, {seen}, 'failed', 'x', \
         'old');"
    );
    // SQLite: the file as version 1 left it.
    let db = crate::common::temp_db_path("v1");
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute_batch(V1_SQLITE).unwrap();
        conn.execute_batch(&insert_v1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = party::open_store(db.path.to_str().unwrap()).await.unwrap();
    check_upgraded(store, seen).await;
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, party::store::SCHEMA_VERSION);

    // PostgreSQL: a schema as version 1 left it.
    let Some(url) = crate::common::postgres_url() else {
        return;
    };
    let schema = crate::common::TempSchema::new(&url);
    use party::store::postgres::tokio_postgres;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let pg_v1 = insert_v1
        .replace("'[\"noop\"]'", "ARRAY['noop']")
        .replace("'[\"default\"]'", "ARRAY['default']")
        .replace(&format!("{seen}"), &format!("to_timestamp({seen} / 1e6)"))
        .replace(", 0, 1, 5, 0, 'dead'", ", false, 1, 5, false, 'dead'");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{n}\"; SET search_path TO \"{n}\"; {V1_POSTGRES}; \
             CREATE TABLE schema_version (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO schema_version (version) VALUES (1); {pg_v1}",
            n = schema.name()
        ))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = party::open_store(&format!("{url}{sep}schema={}", schema.name()))
        .await
        .unwrap();
    check_upgraded(store, seen).await;
}

#[cfg(all(feature = "sqlite", feature = "postgres"))]
async fn check_upgraded(store: Arc<dyn party::store::Store>, seen: i64) {
    let clock = party::ManualClock::new(party::jiff::Timestamp::from_microsecond(seen).unwrap());
    let party = party::Party::with_store(store, builtin::registry(false))
        .with_clock(Arc::new(clock.clone()));
    let task = party
        .get("6a0000000000000000000001".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(task.state, State::Dead);
    assert_eq!(task.runs.len(), 1);
    assert_eq!(task.runs[0].error.as_deref(), Some("x"));
    // The old worker row is live for the 30 s the old window gave it, and no longer.
    clock.advance(SignedDuration::from_secs(29));
    let stats = party.stats().await.unwrap();
    assert_eq!(stats.workers.len(), 1);
    assert_eq!(
        stats.workers[0].live_until,
        stats.workers[0].last_seen + SignedDuration::from_secs(30)
    );
    clock.advance(SignedDuration::from_secs(2));
    assert!(party.stats().await.unwrap().workers.is_empty());
    // Leadership works on the upgraded store.
    let now = clock.now();
    assert!(
        party
            .store()
            .leader_elect(LeaderParams {
                name: "rescue",
                holder: "new",
                now,
                until: now + SignedDuration::from_secs(3),
            })
            .await
            .unwrap()
    );
}
