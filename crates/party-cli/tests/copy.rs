//! `party copy` as a user runs it: a SQLite store with tasks in every state a command line can
//! make is copied to PostgreSQL (when `PARTY_TEST_DATABASE_URL` is set; to another SQLite file
//! otherwise) and back to a new SQLite file; every task shows the same on each, `stats` agree,
//! the singleton and the unique key still refuse duplicates, and a worker on the copy runs
//! what is due. The refusals (a target that holds tasks, a live worker, bad input) write
//! nothing.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{Db, party_cmd};

fn run(db: &Db, args: &[&str]) -> Output {
    party_cmd(&db.url).args(args).output().unwrap()
}

fn ok(db: &Db, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(
        out.status.success(),
        "party {args:?} on {}: {}",
        db.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(db: &Db, args: &[&str]) -> Value {
    serde_json::from_str(&ok(db, args)).unwrap()
}

fn add(db: &Db, args: &[&str]) -> String {
    let mut all = vec!["add"];
    all.extend_from_slice(args);
    ok(db, &all).trim().to_string()
}

/// Every task's `show --json`, in id order.
fn shown(db: &Db) -> Vec<Value> {
    let listed = json(db, &["list", "--json", "--limit", "1000"]);
    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.iter()
        .map(|id| json(db, &["show", id, "--json"]))
        .collect()
}

fn state(db: &Db, id: &str) -> String {
    json(db, &["show", id, "--json"])["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `stats --json` without the one figure that moves with the wall clock.
/// `stats --json` without the figures that move with the wall clock: the attempts of the last
/// minute, and what is due now (the oldest due task, the due tasks no worker takes), as the
/// retrying task falls due about two seconds after its failed attempt, between one store's
/// stats and the next on a slow run.
fn stats(db: &Db) -> Value {
    let mut s = json(db, &["stats", "--json"]);
    let s_map = s.as_object_mut().unwrap();
    for moving in ["finished_last_minute", "oldest_due", "unhandled"] {
        s_map.remove(moving);
    }
    s
}

/// `queue list --json` without each queue's count of tasks due now, which moves with the wall
/// clock: the retrying task falls due about two seconds after its failed attempt, between
/// one store's listing and the next on a slow run.
fn queues(db: &Db) -> Value {
    let mut q = json(db, &["queue", "list", "--json"]);
    for queue in q["queues"].as_array_mut().unwrap() {
        queue.as_object_mut().unwrap().remove("due");
    }
    q
}

fn copy(from: &Db, to: &Db) -> Value {
    let report = json(from, &["copy", "--to", &to.url, "--batch", "3", "--json"]);
    assert_eq!(report["verified"], true, "{report}");
    report
}

#[test]
fn copy_to_postgres_and_back_keeps_every_task() {
    let source = Db::sqlite("copy-source");
    // Done, dead, retrying, a recurring task that ran once, each through a worker.
    let done = add(&source, &["log", "--data", r#"{"n":1}"#]);
    let dead = add(
        &source,
        &[
            "shell",
            "--data",
            r#"{"cmd":"exit 3"}"#,
            "--max-attempts",
            "1",
        ],
    );
    let retrying = add(
        &source,
        &[
            "shell",
            "--data",
            r#"{"cmd":"exit 4"}"#,
            "--max-attempts",
            "3",
        ],
    );
    let recurring_data = r#"{"report":"daily"}"#;
    let recurring = add(
        &source,
        &[
            "log",
            "--data",
            recurring_data,
            "--every",
            "30m",
            "--in",
            "0s",
        ],
    );
    ok(&source, &["worker", "--until-idle", "--allow-shell"]);
    // Scheduled, cancelled, a live unique key, and tasks due now for a worker on the copy.
    let scheduled = add(&source, &["noop", "--in", "1h"]);
    let cancelled = add(&source, &["noop", "--in", "2h"]);
    ok(&source, &["cancel", &cancelled]);
    add(
        &source,
        &["noop", "--in", "1h", "--unique-key", "invoice-7"],
    );
    ok(&source, &["queue", "pause", "mail"]);
    let due: Vec<String> = (0..4)
        .map(|i| add(&source, &["log", "--data", &format!(r#"{{"due":{i}}}"#)]))
        .collect();
    for (id, expected) in [
        (&done, "done"),
        (&dead, "dead"),
        (&retrying, "retrying"),
        (&recurring, "scheduled"),
        (&scheduled, "scheduled"),
        (&cancelled, "cancelled"),
    ] {
        assert_eq!(state(&source, id), expected, "{id}");
    }
    let before = shown(&source);
    assert_eq!(before.len(), 11);
    let recurring_runs = before
        .iter()
        .find(|t| t["id"] == recurring.as_str())
        .unwrap()["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(recurring_runs, 1);

    let middle = Db::postgres("copy-middle").unwrap_or_else(|| Db::sqlite("copy-middle"));
    let back = Db::sqlite("copy-back");
    let report = copy(&source, &middle);
    let tables: Vec<(&str, u64)> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["matches"], true, "{t}");
            assert_eq!(t["source"], t["target"], "{t}");
            (t["table"].as_str().unwrap(), t["copied"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        tables,
        vec![
            ("tasks", 8),
            ("task_history", 3),
            ("runs", 2),
            ("queues", 1)
        ],
        "live: retrying, recurring, scheduled, keyed, 4 due; finished: done, dead, cancelled; \
         rows of runs: retrying and recurring (done and dead keep theirs on their history \
         rows); queues: mail, paused"
    );
    copy(&middle, &back);

    // Every task is the same on each store, and so are the counts.
    assert_eq!(shown(&middle), before, "on {}", middle.name);
    assert_eq!(shown(&back), before, "back on SQLite");
    assert_eq!(stats(&middle), stats(&source));
    assert_eq!(stats(&back), stats(&source));
    let listed = queues(&source);
    assert_eq!(queues(&middle), listed);
    assert_eq!(queues(&back), listed);

    for copy in [&middle, &back] {
        // The singleton rule and the unique key hold on the copy: exit 3, as on the source.
        let dup = run(
            copy,
            &["add", "log", "--data", recurring_data, "--every", "30m"],
        );
        assert_eq!(dup.status.code(), Some(3), "{dup:?}");
        assert!(String::from_utf8_lossy(&dup.stderr).contains(&recurring));
        let dup = run(copy, &["add", "noop", "--unique-key", "invoice-7"]);
        assert_eq!(dup.status.code(), Some(3), "{dup:?}");

        // A worker on the copy runs what is due there.
        ok(copy, &["worker", "--until-idle"]);
        for id in &due {
            assert_eq!(state(copy, id), "done", "{id} on {}", copy.name);
        }
        assert_eq!(state(copy, &scheduled), "scheduled");
    }
}

#[test]
fn copy_refuses_a_filled_target_a_live_worker_and_bad_input() {
    let source = Db::sqlite("copy-refuse-source");
    let id = add(&source, &["noop", "--in", "1h"]);

    // A target that already holds a task: exit 1, it keeps only its own task.
    let filled = Db::sqlite("copy-refuse-filled");
    let own = add(&filled, &["noop", "--in", "1h"]);
    let out = run(&source, &["copy", "--to", &filled.url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the target already holds live tasks"), "{err}");
    let kept: Vec<Value> = shown(&filled);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["id"], own.as_str());

    // A live worker on the source: exit 1, nothing written.
    let target = Db::sqlite("copy-refuse-target");
    let mut worker = party_cmd(&source.url)
        .args(["worker"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while json(&source, &["stats", "--json"])["workers"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the worker announces itself");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(&source, &["copy", "--to", &target.url]);
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(worker.wait().unwrap().success(), "the worker stops cleanly");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker is live on the source"), "{err}");
    assert!(shown(&target).is_empty(), "nothing written");

    // Once it stopped, the copy goes ahead.
    let text = ok(&source, &["copy", "--to", &target.url]);
    assert!(text.contains("verified"), "{text}");
    assert_eq!(shown(&target), shown(&source));
    assert_eq!(state(&target, &id), "scheduled");

    // Bad input is refused before anything is opened, with exit 2; a password is not shown.
    let nowhere = std::env::temp_dir().join(format!("party-copy-never-{}.db", std::process::id()));
    let out = party_cmd(&nowhere.display().to_string())
        .args(["copy", "--to", "postgress://user:hunter2@host/db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("postgress") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(!nowhere.exists(), "no source was created");
    let out = run(&source, &["copy", "--to", &target.url, "--batch", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A password holding `#` unencoded is one to the PostgreSQL client (it reads the user
/// information up to the first `@`): `copy` never prints it, in its report or its errors.
#[test]
fn copy_never_prints_the_targets_password() {
    let Some(pg) = Db::postgres("copy_secret") else {
        return;
    };
    let from = Db::sqlite("copy_secret");
    add(&from, &["noop"]);
    // The same server and schema with a password in the user information (the test server
    // trusts its clients and never asks for it).
    let (scheme, rest) = pg.url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let to = format!("{scheme}://{user}:S3cr#t@{host}");
    let out = party_cmd(&from.url)
        .args(["copy", "--to", &to])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("copied"), "{stdout}");
    assert!(
        !stdout.contains("S3cr") && !stderr.contains("S3cr"),
        "the password is printed:\n{stdout}\n{stderr}"
    );
}
