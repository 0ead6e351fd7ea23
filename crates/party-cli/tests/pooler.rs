//! party through PgBouncer in transaction mode: the test starts Debian's pgbouncer on a port
//! of its own in front of the test database, with two server connections for every client to
//! share, so consecutive transactions of one client land on different server sessions. With
//! `pooler=transaction` party relies on no session state (no named prepared statement outlives
//! its transaction, no LISTEN through the pooler): worker processes run every task exactly
//! once, even when other clients left prepared statements on the server sessions, and
//! wake-ups come over the direct connection `listen_url` names.
//!
//! Needs root (pgbouncer runs as the `postgres` user), pgbouncer, and
//! `PARTY_TEST_DATABASE_URL`; elsewhere it says so and passes (under `CI=true` a missing
//! database fails, as everywhere).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use party::serde_json::json;
use party::store::postgres::tokio_postgres::{self, NoTls};
use party::{ListFilter, NewTask, Outcome, Party, State};

mod support;
use support::{Bouncer, Db, party_cmd};

const TASKS: usize = 1_000;

/// The bouncer in front of the test database, and the database URL through it; `None` (after
/// saying why) where either cannot be had.
fn bouncer(tag: &str) -> Option<(Db, Bouncer, String)> {
    let db = Db::postgres(tag)?;
    let direct: &str = &db.url;
    let upstream = direct
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next())
        .and_then(|hostport| hostport.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432);
    let bouncer = Bouncer::start(upstream, "transaction", 2)?;
    let through = direct.replacen(&format!(":{upstream}/"), &format!(":{}/", bouncer.port), 1);
    assert_ne!(&through, direct, "the test URL names its port");
    Some((db, bouncer, format!("{through}&pooler=transaction")))
}

/// `url` percent-encoded, to be a parameter's value.
fn encoded(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Worker processes, stopped (and reaped) however the test ends.
struct Workers(Vec<Child>);

impl Workers {
    /// SIGTERM each and return what each wrote to stderr.
    fn stop(&mut self) -> Vec<String> {
        for c in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        self.0
            .drain(..)
            .map(|c| {
                let out = c.wait_with_output().expect("worker output");
                assert!(out.status.success(), "a worker did not stop cleanly");
                String::from_utf8_lossy(&out.stderr).into_owned()
            })
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_through_pgbouncer_in_transaction_mode_run_every_task_once() {
    let Some((db, bouncer, through)) = bouncer("pooler") else {
        return;
    };
    // Leave prepared statements named as tokio-postgres names its own (s0, s1, …) on both
    // server sessions, as other clients of a pooler may: a client that prepared statements
    // through the pooler would collide with them.
    let poison = |_| async {
        let (mut client, connection) =
            tokio_postgres::connect(through.split('?').next().unwrap(), NoTls)
                .await
                .expect("a plain client through pgbouncer");
        tokio::spawn(connection);
        let tx = client.transaction().await.unwrap();
        let prepare: String = (0..64)
            .map(|i| format!("PREPARE s{i} AS SELECT 1;"))
            .collect();
        tx.batch_execute(&prepare).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.commit().await.unwrap();
    };
    tokio::join!(poison(0), poison(1));

    // The adder goes through the pooler too (and creates the schema through it).
    let party = Party::connect(&through, party::builtin::registry(false))
        .await
        .expect("connect through pgbouncer");
    let listen = format!("{through}&listen_url={}", encoded(&db.url));
    let mut workers = Workers(
        [&through, &through, &listen]
            .into_iter()
            .map(|url| {
                party_cmd(url)
                    .args(["worker", "--concurrency", "8"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start a worker")
            })
            .collect(),
    );
    let ids = party
        .add_many(
            (0..TASKS)
                .map(|i| NewTask::new("noop").data(json!({ "i": i })))
                .collect(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = party
            .list(&ListFilter {
                state: Some(State::Done),
                limit: Some(u32::MAX),
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        if done == TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {TASKS} tasks done through pgbouncer: {}",
            bouncer.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = workers.stop();
    for log in &logs {
        assert!(
            !log.contains("prepared statement") && !log.contains("ERROR"),
            "a worker hit session state through the pooler: {log}"
        );
    }
    let mut per_worker = std::collections::BTreeMap::<String, usize>::new();
    for id in ids {
        let task = party.get(id).await.unwrap();
        assert_eq!(task.runs.len(), 1, "{id} ran {} times", task.runs.len());
        assert_eq!(task.runs[0].outcome, Outcome::Succeeded);
        *per_worker.entry(task.runs[0].worker.clone()).or_default() += 1;
    }
    assert!(
        per_worker.len() >= 2,
        "one worker did everything: {per_worker:?}"
    );
    // Steering and the reads of one snapshot (stats, queue counts) are transactions sent as
    // text with their statements pipelined: they work through the pooler as well.
    let later = party::jiff::Timestamp::now() + party::jiff::SignedDuration::from_hours(1);
    let id = party.add(NewTask::new("noop").at(later)).await.unwrap();
    assert_eq!(party.cancel(id).await.unwrap().state, State::Cancelled);
    assert_eq!(party.retry(id).await.unwrap().state, State::Scheduled);
    let stats = party.stats().await.unwrap();
    assert!(
        stats.by_state.contains(&(State::Done, TASKS as u64)),
        "{stats:?}"
    );
    assert!(stats.by_state.contains(&(State::Scheduled, 1)), "{stats:?}");
    let queues = party.queues().await.unwrap();
    assert_eq!(queues.len(), 1, "{queues:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_transaction_pooler_wake_ups_come_over_listen_url() {
    let Some((db, _bouncer, through)) = bouncer("pooler_listen") else {
        return;
    };
    let listener = party::store::postgres::PgStore::connect(&format!(
        "{through}&listen_url={}",
        encoded(&db.url)
    ))
    .await
    .expect("connect with listen_url");
    let other = Party::connect(&through, party::builtin::registry(false))
        .await
        .unwrap();
    let wakeups = party::store::Store::wakeups(&listener);
    let notified = wakeups.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    other.add(NewTask::new("noop")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("an insert through the pooler wakes a store listening over listen_url");

    // A listen_url that is itself behind a transaction pooler is refused.
    let err = party::store::postgres::PgStore::connect(&format!(
        "{through}&listen_url={}",
        encoded(&through)
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("direct connection"), "{err}");
}
