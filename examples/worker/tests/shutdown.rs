//! The worker binary under the signals systemd sends: SIGTERM lets a running task finish within
//! the grace period; a task longer than the grace is released to run again, not lost.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use party::serde_json::json;
use party::{NewTask, Party, State, TaskId};

/// A fresh SQLite file, removed at the end.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> TempDb {
        TempDb(std::env::temp_dir().join(format!(
            "party-example-worker-{tag}-{}.db",
            std::process::id()
        )))
    }
    fn url(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn start_worker(db: &TempDb, grace: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("PARTY_DATABASE_URL", db.url())
        .env("PARTY_WORKER_GRACE", grace)
        .spawn()
        .expect("the worker binary starts")
}

async fn wait_for_state(party: &Party, id: TaskId, state: State) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while party.get(id).await.unwrap().state != state {
        assert!(Instant::now() < deadline, "the task never became {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, sent with kill(1): the workspace forbids the unsafe code a direct call needs.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_a_running_task_finish() {
    let db = TempDb::new("finish");
    let party = Party::connect(db.url(), party_example_worker::registry())
        .await
        .unwrap();
    let id = party
        .add(NewTask::new("send_welcome_email").data(json!({"email": "a@example.com", "ms": 1500})))
        .await
        .unwrap();
    let mut worker = start_worker(&db, "30s");
    wait_for_state(&party, id, State::Running).await;
    sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let task = party.get(id).await.unwrap();
    assert_eq!(task.state, State::Done);
    assert_eq!(task.runs.len(), 1);
    assert_eq!(task.runs[0].outcome.as_str(), "succeeded");
}

/// A fresh store holding one welcome email that takes ten minutes to send.
async fn with_a_ten_minute_task(tag: &str, email: &str) -> (TempDb, Party, party::TaskId) {
    let db = TempDb::new(tag);
    let party = Party::connect(db.url(), party_example_worker::registry())
        .await
        .unwrap();
    let id = party
        .add(NewTask::new("send_welcome_email").data(json!({"email": email, "ms": 600_000})))
        .await
        .unwrap();
    (db, party, id)
}

#[tokio::test]
async fn a_task_longer_than_the_grace_is_released_to_run_again() {
    let (db, party, id) = with_a_ten_minute_task("grace", "b@example.com").await;
    let mut worker = start_worker(&db, "1s");
    wait_for_state(&party, id, State::Running).await;
    let signalled = Instant::now();
    sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "the grace was given"
    );
    let task = party.get(id).await.unwrap();
    assert!(
        matches!(task.state, State::Scheduled | State::Retrying),
        "released to run again: {:?}",
        task.state
    );
    assert_eq!(task.runs.len(), 1);
    assert_eq!(task.runs[0].outcome.as_str(), "lost");
}

#[test]
fn bad_settings_are_refused_with_the_variable_named() {
    let db = TempDb::new("bad");
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("PARTY_DATABASE_URL", db.url())
        .env("PARTY_WORKER_CONCURRENCY", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PARTY_WORKER_CONCURRENCY"), "{stderr}");
    assert!(!db.0.exists(), "nothing was written");
}

/// docs/SYSTEMD.md: "A worker that exits non-zero (the database refused it, a bad setting, a
/// second signal) is started again" under `Restart=on-failure`, and `party worker` exits 1 on a
/// second signal. This binary, the unit's `ExecStart`, must exit non-zero too.
#[tokio::test]
async fn a_second_sigterm_interrupts_and_exits_non_zero() {
    let (db, party, id) = with_a_ten_minute_task("second", "c@example.com").await;
    let mut worker = start_worker(&db, "30s");
    wait_for_state(&party, id, State::Running).await;
    sigterm(&worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(20)).await;
    let task = party.get(id).await.unwrap();
    assert_eq!(task.runs.len(), 1);
    assert_eq!(
        task.runs[0].outcome.as_str(),
        "lost",
        "interrupted and released"
    );
    assert!(
        !status.success(),
        "a second signal must exit non-zero, as docs/SYSTEMD.md says: {status}"
    );
}
