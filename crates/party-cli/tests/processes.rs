//! Several `party` processes on one database: the singleton rule and exactly-once execution
//! hold across processes, not only across threads.

use std::process::Stdio;

use party::{ListFilter, NewTask, Outcome, Party, State};

mod support;
use support::{Db, party_cmd};

#[test]
fn fifty_processes_adding_one_recurring_task_make_one() {
    for db in Db::all("singleton") {
        let children: Vec<_> = (0..50)
            .map(|i| {
                // Key order differs between processes; it does not matter.
                let data = if i % 2 == 0 {
                    r#"{"account":7,"plan":"gold"}"#
                } else {
                    r#"{"plan":"gold","account":7}"#
                };
                party_cmd(&db.url)
                    .args(["add", "noop", "--data", data, "--every", "1h"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn party add")
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let ok: Vec<_> = outputs
            .iter()
            .filter(|o| o.status.code() == Some(0))
            .collect();
        let dup: Vec<_> = outputs
            .iter()
            .filter(|o| o.status.code() == Some(3))
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "{}: exactly one process creates it; others: {:?}",
            db.name,
            outputs
                .iter()
                .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
                .collect::<Vec<_>>()
        );
        let others: Vec<String> = outputs
            .iter()
            .filter(|o| !matches!(o.status.code(), Some(0) | Some(3)))
            .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
            .collect();
        assert_eq!(dup.len(), 49, "{}: the others said {others:?}", db.name);
        let id = String::from_utf8_lossy(&ok[0].stdout).trim().to_string();
        assert_eq!(id.len(), 24);
        for d in dup {
            let err = String::from_utf8_lossy(&d.stderr);
            assert!(
                err.contains(&id),
                "{}: the refusal names the existing task: {err}",
                db.name
            );
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tasks = rt.block_on(async {
            let party = Party::connect(&db.url, party::builtin::registry(false))
                .await
                .unwrap();
            party.list(&ListFilter::default()).await.unwrap()
        });
        assert_eq!(tasks.len(), 1, "{}", db.name);
    }
}

#[test]
fn two_worker_processes_run_2000_tasks_exactly_once() {
    for db in Db::all("two-workers") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let party = rt
            .block_on(Party::connect(&db.url, party::builtin::registry(false)))
            .unwrap();
        let ids = rt
            .block_on(
                party.add_many(
                    (0..2000)
                        .map(|i| NewTask::new("noop").data(party::serde_json::json!({"i": i})))
                        .collect(),
                ),
            )
            .unwrap();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                party_cmd(&db.url)
                    .args(["worker", "--until-idle", "--concurrency", "8"])
                    .env("PARTY_LOG", "warn")
                    .spawn()
                    .expect("spawn party worker")
            })
            .collect();
        for mut w in workers {
            assert!(
                w.wait().unwrap().success(),
                "{}: worker exited cleanly",
                db.name
            );
        }
        let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
        for id in &ids {
            let task = rt.block_on(party.get(*id)).unwrap();
            assert_eq!(task.state, State::Done, "{}: {id}", db.name);
            assert_eq!(task.runs.len(), 1, "{}: {id} ran exactly once", db.name);
            assert_eq!(task.runs[0].outcome, Outcome::Succeeded);
            *by_worker.entry(task.runs[0].worker.clone()).or_default() += 1;
        }
        println!("{}: runs per worker process: {by_worker:?}", db.name);
    }
}

#[test]
fn adding_while_postgresql_is_unreachable_fails_fast_with_a_clear_message() {
    // Nothing listens on port 1: the connection is refused, and the command must say so
    // promptly instead of hanging.
    let started = std::time::Instant::now();
    let out = party_cmd("postgres://postgres@127.0.0.1:1/test")
        .args(["add", "noop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(err.contains("check that the server runs"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "bounded by the connect timeout"
    );
}

/// A SIGTERM that reaches a worker while it is still connecting (a server slow to answer, a
/// restart) is a stop, not the end of the process by the signal: the handlers are in place
/// before the connection is made.
#[test]
fn a_sigterm_while_the_worker_connects_does_not_kill_it() {
    use std::os::unix::process::ExitStatusExt;
    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in listener.incoming().take(4) {
            open.push(c);
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    });
    let mut worker = party_cmd(&format!(
        "postgres://postgres@127.0.0.1:{port}/test?connect_timeout=3"
    ))
    .arg("worker")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = worker.wait().unwrap();
    assert_eq!(
        status.signal(),
        None,
        "the worker was killed by the signal it should have handled: {status}"
    );
    drop(held);
}

#[test]
fn sigterm_during_a_busy_run_loses_nothing_and_releases_within_the_grace_period() {
    for db in Db::all("sigterm") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let party = rt
            .block_on(Party::connect(&db.url, party::builtin::registry(false)))
            .unwrap();
        // Half the tasks finish within the grace period, half do not.
        let tasks = (0..40)
            .map(|i| {
                NewTask::new("sleep").data(
                    party::serde_json::json!({"ms": if i % 2 == 0 { 100 } else { 20_000 }, "i": i}),
                )
            })
            .collect();
        let ids = rt.block_on(party.add_many(tasks)).unwrap();
        let mut worker = party_cmd(&db.url)
            .args(["worker", "--concurrency", "40", "--grace", "1s"])
            .spawn()
            .expect("spawn party worker");
        // Wait until it holds every task.
        wait_until_all_claimed(&rt, &party, db.name);
        let stopped = std::time::Instant::now();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &worker.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        assert!(
            worker.wait().unwrap().success(),
            "{}: clean exit on SIGTERM",
            db.name
        );
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(10),
            "{}: stopped within the grace period",
            db.name
        );
        let running = rt
            .block_on(party.list(&ListFilter {
                state: Some(State::Running),
                ..Default::default()
            }))
            .unwrap();
        assert!(
            running.is_empty(),
            "{}: nothing left claimed by the stopped worker: {running:?}",
            db.name
        );
        let mut released = 0;
        for id in &ids {
            let task = rt.block_on(party.get(*id)).unwrap();
            match task.state {
                State::Done => assert_eq!(task.runs.len(), 1),
                State::Retrying => {
                    released += 1;
                    assert_eq!(task.runs.len(), 1);
                    assert_eq!(task.runs[0].outcome, Outcome::Lost);
                }
                other => panic!("{}: task {id} is {other}", db.name),
            }
        }
        assert_eq!(
            released, 20,
            "{}: the long tasks were released, due now",
            db.name
        );
    }
}

#[test]
fn a_shell_task_stopped_at_shutdown_does_not_run_beside_its_retry() {
    for db in Db::all("shellgroup") {
        let dir = std::env::temp_dir().join(format!(
            "party-shellgroup-{}-{}",
            std::process::id(),
            db.name
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let marks = dir.join("m");
        // `sh -c` inside the command: the loop runs in a child of the task's `sh`.
        let inner = format!(
            "for i in 1 2 3 4 5; do echo a$PARTY_ATTEMPTS-\\$i >> '{}'; sleep 1; done",
            marks.display()
        );
        let cmd = format!("sh -c \"{inner}\"");
        let data = party::serde_json::json!({ "cmd": cmd }).to_string();
        let add = party_cmd(&db.url)
            .args(["add", "shell", "--data", &data])
            .output()
            .unwrap();
        assert!(add.status.success(), "{}: {add:?}", db.name);

        let mut worker = party_cmd(&db.url)
            .args(["worker", "--allow-shell", "--grace", "1s"])
            .spawn()
            .expect("spawn party worker");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_to_string(&marks)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: the shell task did not start",
                db.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &worker.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        assert!(worker.wait().unwrap().success(), "{}", db.name);

        let second = party_cmd(&db.url)
            .args(["worker", "--allow-shell", "--until-idle"])
            .output()
            .unwrap();
        assert!(second.status.success(), "{}: {second:?}", db.name);
        // Anything left of the first attempt would have written again by now.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let lines: Vec<String> = std::fs::read_to_string(&marks)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let first = lines.iter().take_while(|l| l.starts_with("a1-")).count();
        let expected: Vec<String> = (1..=first)
            .map(|i| format!("a1-{i}"))
            .chain((1..=5).map(|i| format!("a2-{i}")))
            .collect();
        assert!(first >= 1, "{}: {lines:?}", db.name);
        assert_eq!(
            lines, expected,
            "{}: the first attempt's processes ended at shutdown, before the retry began",
            db.name
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_second_sigterm_ends_the_grace_at_once_and_still_releases_the_tasks() {
    for db in Db::all("sigterm2") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let party = rt
            .block_on(Party::connect(&db.url, party::builtin::registry(false)))
            .unwrap();
        let tasks = (0..4)
            .map(|i| NewTask::new("sleep").data(party::serde_json::json!({"ms": 60_000, "i": i})))
            .collect();
        let ids = rt.block_on(party.add_many(tasks)).unwrap();
        // A long grace and a long lease: only the second signal can make it stop promptly, and
        // only the release on the way out can free the tasks before the lease ends.
        let mut worker = party_cmd(&db.url)
            .args([
                "worker",
                "--concurrency",
                "4",
                "--grace",
                "60s",
                "--lease",
                "10m",
            ])
            .spawn()
            .expect("spawn party worker");
        wait_until_all_claimed(&rt, &party, db.name);
        let term = || {
            assert!(
                std::process::Command::new("kill")
                    .args(["-TERM", &worker.id().to_string()])
                    .status()
                    .unwrap()
                    .success()
            )
        };
        let stopped = std::time::Instant::now();
        term();
        std::thread::sleep(std::time::Duration::from_millis(300));
        term();
        let status = worker.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{}: a forced stop exits 1", db.name);
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(10),
            "{}: the second signal ended the 60 s grace",
            db.name
        );
        for id in &ids {
            let task = rt.block_on(party.get(*id)).unwrap();
            assert_eq!(
                task.state,
                State::Retrying,
                "{}: released on the way out, not left running until its lease ends",
                db.name
            );
            assert_eq!(task.runs.len(), 1);
            assert_eq!(task.runs[0].outcome, Outcome::Lost);
        }
    }
}

/// Poll (the worker is another process) until no task is left `scheduled`, for up to 20 s.
fn wait_until_all_claimed(rt: &tokio::runtime::Runtime, party: &Party, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rt
        .block_on(party.stats())
        .unwrap()
        .by_state
        .iter()
        .any(|(s, n)| *s == State::Scheduled && *n > 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: the worker did not claim the tasks"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(tag: &str, size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("party-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs at {}", dir.display());
        Tmpfs(dir)
    }

    fn remount(&self, how: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_sqlite_file_on_a_read_only_filesystem_is_refused_with_a_clear_message() {
    if !support::is_root("a read-only filesystem") {
        return;
    }
    let fs = Tmpfs::mount("ro", "8m");
    let db = fs.0.join("tasks.db");
    let db_url = db.display().to_string();
    let added = party_cmd(&db_url).args(["add", "noop"]).output().unwrap();
    assert!(added.status.success(), "{added:?}");
    // A clean copy of the file, as a backup restored onto a read-only mount: no -wal, no -shm.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{db_url}{suffix}"));
    }
    fs.remount("ro");
    let out = party_cmd(&db_url).args(["add", "noop"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&db_url) && (err.contains("read-only") || err.contains("may not write")),
        "the refusal names the file and says it cannot be written: {err}"
    );
}

/// The size of `path` in bytes, 0 when it does not exist.
fn file_size(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn the_sqlite_wal_gives_its_space_back_after_a_long_reader_lets_go() {
    let Ok(sqlite3) = std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
    else {
        println!("the WAL test: skipped, the sqlite3 shell is not installed");
        return;
    };
    assert!(sqlite3.status.success());
    let db = Db::sqlite("wal");
    let wal = format!("{}-wal", db.url);
    let lines: String = (0..2000)
        .map(|_| {
            format!(
                "{{\"handler\":\"noop\",\"data\":{{\"pad\":\"{}\"}}}}\n",
                "x".repeat(300)
            )
        })
        .collect();
    let batch = std::env::temp_dir().join(format!("party-wal-{}.jsonl", std::process::id()));
    std::fs::write(&batch, lines).unwrap();
    let add_batch = || {
        let out = party_cmd(&db.url)
            .args(["add", "--from"])
            .arg(&batch)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    add_batch();
    let mut worker = party_cmd(&db.url)
        .args(["worker", "--concurrency", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Another program (a backup, a report) reads the file in one long transaction.
    let mut reader = std::process::Command::new("sqlite3")
        .arg(&db.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = reader.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN;\nSELECT count(*) FROM tasks;\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..3 {
        add_batch();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let peak = file_size(&wal);
    // The reader lets go; the flow goes on as before.
    drop(reader.stdin.take());
    reader.wait().unwrap();
    for _ in 0..4 {
        add_batch();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let after = file_size(&wal);
    std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    worker.wait().unwrap();
    let _ = std::fs::remove_file(&batch);
    let (db_size, left) = (file_size(&db.url), file_size(&wal));
    println!(
        "WAL: {peak} bytes at the reader's peak, {after} after, {left} after the worker stopped; database {db_size}"
    );
    assert!(
        peak > 32 << 20,
        "the reader held the WAL back: {peak} bytes"
    );
    assert!(
        after < peak / 4,
        "once the reader let go and the flow went on, the WAL file still holds {after} bytes \
         (its peak under the reader: {peak}) for a database of {db_size}"
    );
}
