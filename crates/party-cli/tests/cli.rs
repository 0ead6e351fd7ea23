//! The `party` binary as a user drives it: every test spawns the real binary against its own
//! SQLite file. No test waits for a schedule: future tasks are only checked to stay untouched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const PARTY: &str = env!("CARGO_BIN_EXE_party");

mod support;
use support::Db;

/// A fresh directory with a database path in it; removed when dropped.
struct Store {
    dir: PathBuf,
    db: PathBuf,
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Store {
    fn new() -> Store {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "party-cli-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("party.db");
        Store { dir, db }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(PARTY);
        cmd.arg("--db")
            .arg(&self.db)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("PARTY_DATABASE_URL")
            .env("PARTY_LOG", "warn");
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        to_run(self.command(args).output().unwrap())
    }

    /// Run, expect exit code 0, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "party {args:?} failed: {run:?}");
        run.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    fn add(&self, args: &[&str]) -> String {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        let id = out.trim_end_matches('\n').to_string();
        assert_is_id(&id);
        id
    }

    fn show(&self, id: &str) -> Value {
        self.json(&["show", id, "--json"])
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// Everything a command could have written: all tasks with their fields.
    fn snapshot(&self) -> Value {
        self.json(&["list", "--json", "--limit", "10000"])
    }
}

fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn assert_is_id(id: &str) {
    assert_eq!(id.len(), 24, "not an id: {id:?}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "not an id: {id:?}"
    );
}

/// RFC 3339 in UTC with exactly six fraction digits.
fn assert_time(v: &Value) -> Timestamp {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert_eq!(s.len(), 27, "{s}");
    assert!(s.ends_with('Z'), "{s}");
    assert_eq!(&s[19..20], ".", "{s}");
    assert!(s[20..26].chars().all(|c| c.is_ascii_digit()), "{s}");
    s.parse().unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort();
    v
}

/// The SPEC's `--json` task fields, plus what `TaskInfo` adds (rule, due_at, created_at, worker).
const TASK_FIELDS: [&str; 20] = [
    "id",
    "handler",
    "data",
    "timestamp",
    "last_run_on",
    "attempts",
    "is_recurring",
    "state",
    "queue",
    "priority",
    "max_attempts",
    "last_error",
    "runs",
    "rule",
    "due_at",
    "created_at",
    "finished_at",
    "worker",
    "unique_key",
    "cancel_requested",
];

/// The SPEC's run fields, plus the occurrence's timestamp.
const RUN_FIELDS: [&str; 7] = [
    "attempt",
    "started_at",
    "finished_at",
    "outcome",
    "error",
    "worker",
    "timestamp",
];

#[test]
fn add_prints_the_id_alone_on_stdout() {
    let s = Store::new();
    let run = s.run(&["add", "noop"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.ends_with('\n') && run.stdout.lines().count() == 1);
    assert_is_id(run.stdout.trim_end());
    assert_eq!(run.stderr, "");
    let task = s.show(run.stdout.trim_end());
    assert_eq!(task["handler"], "noop");
    assert_eq!(task["state"], "scheduled");
    assert_eq!(task["data"], json!({}));
}

#[test]
fn list_json_uses_the_spec_field_names_soonest_first() {
    let s = Store::new();
    let later = s.add(&["log", "--in", "2h", "--data", r#"{"n": 2}"#]);
    let now = s.add(&[
        "log",
        "--data",
        r#"{"n": 1}"#,
        "--queue",
        "mail",
        "--priority",
        "-3",
        "--max-attempts",
        "7",
    ]);
    let at = s.add(&["noop", "--at", "2099-01-31T10:00:00+01:00"]);
    let list = s.json(&["list", "--json"]);
    let tasks = list.as_array().unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [now.as_str(), later.as_str(), at.as_str()]);
    // A listing leaves the run history out (no empty "runs" that would read as "none");
    // `show --json` has it.
    let listed: Vec<&str> = TASK_FIELDS.into_iter().filter(|f| *f != "runs").collect();
    for t in tasks {
        assert_eq!(keys(t), sorted(listed.clone()));
        assert_time(&t["timestamp"]);
        assert_time(&t["due_at"]);
        assert_time(&t["created_at"]);
        assert_eq!(t["last_run_on"], Value::Null);
        assert_eq!(t["finished_at"], Value::Null, "live: not finished");
        assert_eq!(t["attempts"], 0);
        assert_eq!(t["is_recurring"], false);
        assert_eq!(t["last_error"], Value::Null);
        assert!(t.get("runs").is_none(), "{t}");
    }
    let first = &tasks[0];
    assert_eq!(first["data"], json!({"n": 1}));
    assert_eq!(first["queue"], "mail");
    assert_eq!(first["priority"], -3);
    assert_eq!(first["max_attempts"], 7);
    assert_eq!(tasks[1]["queue"], "default");
    assert_eq!(tasks[1]["priority"], 0);
    assert_eq!(tasks[2]["timestamp"], "2099-01-31T09:00:00.000000Z");
    let in_2h =
        assert_time(&tasks[1]["timestamp"]).duration_since(assert_time(&tasks[1]["created_at"]));
    assert!(
        (in_2h - SignedDuration::from_hours(2)).abs() < SignedDuration::from_secs(1),
        "{in_2h:?}"
    );

    let table = s.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&now) && lines[2].starts_with(&later) && lines[3].starts_with(&at)
    );

    let filtered = s.json(&["list", "--json", "--handler", "noop"]);
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let limited = s.json(&["list", "--json", "--limit", "2"]);
    assert_eq!(limited.as_array().unwrap().len(), 2);
    let done = s.json(&["list", "--json", "--state", "done"]);
    assert_eq!(done, json!([]));
}

#[test]
fn show_json_has_the_run_history() {
    let s = Store::new();
    let id = s.add(&["log", "--data", r#"{"arg1": "hello"}"#]);
    let out = s.ok(&["worker", "--until-idle"]);
    assert!(
        out.contains(&id) && out.contains(r#"{"arg1":"hello"}"#),
        "{out}"
    );
    let task = s.show(&id);
    let mut shown = TASK_FIELDS.to_vec();
    shown.extend(["runs_total", "runs_total_exact", "runs_next_cursor"]);
    assert_eq!(keys(&task), sorted(shown));
    assert_eq!(task["runs_total"], 1);
    assert_eq!(task["runs_total_exact"], true);
    assert_eq!(task["runs_next_cursor"], Value::Null);
    assert_eq!(task["state"], "done");
    assert_eq!(task["attempts"], 1);
    let finished_at = assert_time(&task["finished_at"]);
    let runs = task["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(keys(run), sorted(RUN_FIELDS.to_vec()));
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["outcome"], "succeeded");
    assert_eq!(run["error"], Value::Null);
    assert!(!run["worker"].as_str().unwrap().is_empty());
    let started = assert_time(&run["started_at"]);
    let finished = assert_time(&run["finished_at"]);
    assert!(started <= finished);
    assert_eq!(
        finished_at, finished,
        "the task finished when its attempt did"
    );
    assert_eq!(run["timestamp"], task["timestamp"]);

    let text = s.ok(&["show", &id]);
    assert!(text.contains("state        done"), "{text}");
    assert!(text.contains("finished_at  20"), "{text}");
    assert!(
        text.contains("run history") && text.contains("succeeded"),
        "{text}"
    );
}

#[test]
fn worker_until_idle_runs_due_tasks_and_leaves_future_ones() {
    let s = Store::new();
    let due = s.add(&["log", "--data", r#"{"due": true}"#]);
    let in_1h = s.add(&["log", "--in", "1h"]);
    let at = s.add(&["log", "--at", "2099-01-01T00:00:00Z"]);
    let out = s.ok(&["worker", "--until-idle"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(&due));
    assert_eq!(s.show(&due)["state"], "done");
    for id in [&in_1h, &at] {
        let t = s.show(id);
        assert_eq!(t["state"], "scheduled");
        assert_eq!(t["attempts"], 0);
        assert_eq!(t["runs"], json!([]));
    }
}

#[test]
fn worker_takes_only_its_queues_and_lower_priority_first() {
    let s = Store::new();
    let other = s.add(&["log", "--queue", "reports"]);
    s.add(&["log", "--priority", "5", "--data", r#"{"n": "second"}"#]);
    s.add(&["log", "--priority", "-1", "--data", r#"{"n": "first"}"#]);
    // `list --queue` shows one queue's tasks, as the API's `queue=` does.
    let listed: Value =
        serde_json::from_str(&s.ok(&["list", "--queue", "reports", "--json"])).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![other.as_str()]);
    let out = s.ok(&["worker", "--until-idle", "--concurrency", "1"]);
    let first = out.find("first").expect("first ran");
    let second = out.find("second").expect("second ran");
    assert!(first < second, "{out}");
    assert_eq!(s.show(&other)["state"], "scheduled");
    s.ok(&[
        "worker",
        "--until-idle",
        "--queue",
        "reports",
        "--queue",
        "other",
    ]);
    assert_eq!(s.show(&other)["state"], "done");
}

#[test]
fn cancel_refuses_a_second_cancel_and_unknown_ids() {
    let s = Store::new();
    let id = s.add(&["noop", "--in", "1h"]);
    let out = s.ok(&["cancel", &id]);
    assert!(out.contains("cancelled") && out.contains(&id), "{out}");
    assert_eq!(s.show(&id)["state"], "cancelled");

    let again = s.run(&["cancel", &id]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("it is cancelled"), "{again:?}");

    // A cancelled task never runs; retry brings it back, due now.
    s.ok(&["worker", "--until-idle"]);
    assert_eq!(s.show(&id)["runs"], json!([]));
    s.ok(&["retry", &id]);
    let t = s.show(&id);
    assert_eq!(t["state"], "scheduled");
    s.ok(&["worker", "--until-idle"]);
    assert_eq!(s.show(&id)["state"], "done");
}

#[test]
fn cancel_and_retry_act_on_every_matching_task_and_refuse_without_a_filter() {
    let s = Store::new();
    let mail: Vec<String> = (0..3)
        .map(|i| {
            s.add(&[
                "noop",
                "--in",
                "1h",
                "--queue",
                "mail",
                "--data",
                &format!("{{\"i\": {i}}}"),
            ])
        })
        .collect();
    let other = s.add(&["noop", "--in", "1h"]);

    let none = s.run(&["cancel"]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(
        none.stderr.contains("give a task id, or filters"),
        "{none:?}"
    );
    let none = s.run(&["retry"]);
    assert_eq!(none.code, 2, "{none:?}");
    let both = s.run(&["cancel", &other, "--queue", "mail"]);
    assert_eq!(both.code, 2, "{both:?}");
    let running = s.run(&["cancel", "--state", "running"]);
    assert_eq!(running.code, 2, "{running:?}");
    assert!(
        running.stderr.contains("cannot cancel running tasks"),
        "{running:?}"
    );

    let out = s.ok(&["cancel", "--queue", "mail", "--state", "scheduled"]);
    assert_eq!(out, "cancelled 3 tasks\n");
    for id in &mail {
        assert_eq!(s.show(id)["state"], "cancelled");
    }
    assert_eq!(s.show(&other)["state"], "scheduled");

    let counted = s.json(&["retry", "--queue", "mail", "--json"]);
    assert_eq!(counted, json!({"retried": 3}));
    for id in &mail {
        assert_eq!(s.show(id)["state"], "scheduled");
    }
    assert_eq!(s.ok(&["retry", "--queue", "mail"]), "retried 0 tasks\n");
}

#[test]
fn list_cancel_and_retry_take_a_data_field() {
    let s = Store::new();
    let acme = s.add(&[
        "noop",
        "--in",
        "1h",
        "--data",
        r#"{"customer": "acme", "n": 7}"#,
    ]);
    let globex = s.add(&["noop", "--in", "1h", "--data", r#"{"customer": "globex"}"#]);
    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(s.json(&["list", "--json", "--data", "customer=acme"])),
        vec![acme.clone()]
    );
    assert_eq!(
        ids(s.json(&["list", "--json", "--data", "n=7"])),
        vec![acme.clone()]
    );
    assert_eq!(
        ids(s.json(&["list", "--json", "--data", "customer=nobody"])),
        Vec::<String>::new()
    );
    let bad = s.run(&["list", "--data", "customer"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("write FIELD=VALUE"), "{bad:?}");
    let bad = s.run(&["list", "--data", "a.b=c"]);
    assert!(bad.stderr.contains("one top-level field"), "{bad:?}");
    assert_eq!(
        s.ok(&["cancel", "--data", "customer=acme"]),
        "cancelled 1 task\n"
    );
    assert_eq!(s.show(&acme)["state"], "cancelled");
    assert_eq!(s.show(&globex)["state"], "scheduled");
    assert_eq!(
        s.ok(&["retry", "--data", "customer=acme"]),
        "retried 1 task\n"
    );
    assert_eq!(s.show(&acme)["state"], "scheduled");
}

#[test]
fn retry_brings_back_a_dead_task_with_its_timestamp() {
    let s = Store::new();
    let mark = s.path("failed-once");
    let cmd = format!("test -f '{mark}' || {{ touch '{mark}'; echo broken >&2; exit 1; }}");
    let data = json!({ "cmd": cmd }).to_string();
    let id = s.add(&["shell", "--data", &data, "--max-attempts", "1"]);
    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    let dead = s.show(&id);
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["last_error"].as_str().unwrap().contains("broken"),
        "{dead}"
    );
    assert_eq!(dead["runs"][0]["outcome"], "failed");

    let out = s.ok(&["retry", &id]);
    assert!(out.contains("attempt 2"), "{out}");
    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    let done = s.show(&id);
    assert_eq!(done["state"], "done");
    assert_eq!(done["attempts"], 2);
    let runs = done["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["attempt"], 2);
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(runs[0]["timestamp"], runs[1]["timestamp"]);
    assert_eq!(done["timestamp"], dead["timestamp"]);

    let not_dead = s.run(&["retry", &id]);
    assert_eq!(not_dead.code, 1, "{not_dead:?}");
    assert!(not_dead.stderr.contains("it is done"), "{not_dead:?}");
}

#[test]
fn shell_commands_get_the_task_as_party_variables() {
    let s = Store::new();
    let file = s.path("env.txt");
    let data = json!({ "cmd": format!("env | grep -E '^PARTY_(TASK_ID|TIMESTAMP|LAST_RUN_ON|ATTEMPTS|IS_RECURRING|DATA)=' | sort > '{file}'"), "k": 1 });
    let id = s.add(&["shell", "--data", &data.to_string()]);
    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    let task = s.show(&id);
    assert_eq!(task["state"], "done");
    let env = std::fs::read_to_string(&file).unwrap();
    let vars: Vec<&str> = env.lines().collect();
    let stored_data = task["data"].to_string();
    assert_eq!(
        vars,
        [
            "PARTY_ATTEMPTS=1".to_string(),
            format!("PARTY_DATA={stored_data}"),
            "PARTY_IS_RECURRING=false".to_string(),
            "PARTY_LAST_RUN_ON=".to_string(),
            format!("PARTY_TASK_ID={id}"),
            format!("PARTY_TIMESTAMP={}", task["timestamp"].as_str().unwrap()),
        ]
    );
}

#[test]
fn shell_commands_see_a_clean_environment_without_the_worker_secrets() {
    let s = Store::new();
    let file = s.path("env.txt");
    let data = json!({ "cmd": format!("env > '{file}'") });
    let id = s.add(&["shell", "--data", &data.to_string()]);
    let home = s.path("home");
    let out = s
        .command(&[
            "worker",
            "--until-idle",
            "--allow-shell",
            "--shell-env",
            "PARTY_TEST_ALLOWED",
        ])
        .env(
            "PARTY_DATABASE_URL",
            "postgres://app:S3cretPw@db.invalid/app",
        )
        .env("WORKER_SECRET", "hunter2")
        .env("PARTY_TEST_ALLOWED", "visible")
        .env("HOME", &home)
        .output()
        .unwrap();
    let out = to_run(out);
    assert_eq!(out.code, 2, "PARTY_* names are refused: {out:?}");
    assert!(out.stderr.contains("reserved"), "{out:?}");

    let out = s
        .command(&[
            "worker",
            "--until-idle",
            "--allow-shell",
            "--shell-env",
            "ALLOWED_ONE",
            "--shell-env",
            "NOT_SET_ANYWHERE",
        ])
        .env(
            "PARTY_DATABASE_URL",
            "postgres://app:S3cretPw@db.invalid/app",
        )
        .env("WORKER_SECRET", "hunter2")
        .env("ALLOWED_ONE", "visible")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.show(&id)["state"], "done");
    let env = std::fs::read_to_string(&file).unwrap();
    assert!(!env.contains("S3cretPw"), "{env}");
    assert!(!env.contains("hunter2"), "{env}");
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        // Set by sh itself.
        .filter(|k| !["PWD", "OLDPWD", "SHLVL", "_"].contains(k))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ALLOWED_ONE",
            "HOME",
            "PARTY_ATTEMPTS",
            "PARTY_DATA",
            "PARTY_IS_RECURRING",
            "PARTY_LAST_RUN_ON",
            "PARTY_TASK_ID",
            "PARTY_TIMESTAMP",
            "PATH",
        ],
        "{env}"
    );
    assert!(env.lines().any(|l| l == "ALLOWED_ONE=visible"), "{env}");
    assert!(env.lines().any(|l| l == format!("HOME={home}")), "{env}");
}

#[test]
fn shell_env_needs_allow_shell_and_a_variable_name() {
    let s = Store::new();
    for args in [
        &["worker", "--until-idle", "--shell-env", "LANG"][..],
        &[
            "worker",
            "--until-idle",
            "--allow-shell",
            "--shell-env",
            "A=B",
        ],
        &["worker", "--until-idle", "--allow-shell", "--shell-env", ""],
        &[
            "worker",
            "--until-idle",
            "--allow-shell",
            "--shell-env",
            "PARTY_DATABASE_URL",
        ],
    ] {
        let run = s.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("shell-env") || run.stderr.contains("allow-shell"),
            "{args:?}: {run:?}"
        );
    }
    assert!(!s.db.exists(), "nothing was opened");
}

#[test]
fn every_makes_a_drift_free_recurring_task() {
    let s = Store::new();
    let file = s.path("runs.txt");
    let data = json!({
        "cmd": format!("echo \"$PARTY_IS_RECURRING $PARTY_TIMESTAMP $PARTY_LAST_RUN_ON\" >> '{file}'")
    });
    let id = s.add(&["shell", "--data", &data.to_string(), "--every", "1h"]);
    let first = s.show(&id);
    assert_eq!(first["is_recurring"], true);
    assert_eq!(
        first["rule"]["rule"],
        json!({ "kind": "every", "every": "1h" })
    );
    let t0 = assert_time(&first["timestamp"]);

    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    let after = s.show(&id);
    assert_eq!(after["state"], "scheduled");
    assert_eq!(after["attempts"], 0);
    assert_eq!(
        assert_time(&after["timestamp"]),
        t0 + SignedDuration::from_hours(1),
        "the next occurrence counts from the scheduled time, not from the run"
    );
    assert_eq!(after["last_run_on"], after["runs"][0]["started_at"]);
    let lines = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        lines.trim_end(),
        format!("true {}", first["timestamp"].as_str().unwrap())
    );

    // The next occurrence is an hour away: a worker now leaves it alone.
    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    assert_eq!(s.show(&id)["runs"].as_array().unwrap().len(), 1);
    let list = s.ok(&["list"]);
    assert!(list.contains("every 1h"), "{list}");
}

#[test]
fn a_duplicate_recurring_task_exits_3_naming_the_existing_one() {
    let s = Store::new();
    let first = s.add(&["noop", "--every", "1d", "--data", r#"{"a": 1, "b": 2}"#]);
    let before = s.snapshot();
    let dup = s.run(&[
        "add",
        "noop",
        "--every",
        "1d",
        "--data",
        r#"{"b": 2, "a": 1}"#,
    ]);
    assert_eq!(dup.code, 3, "{dup:?}");
    assert_eq!(dup.stdout, "");
    assert!(dup.stderr.contains(&first), "{dup:?}");
    assert_eq!(s.snapshot(), before);
    // Other data is another task.
    s.add(&["noop", "--every", "1d", "--data", r#"{"a": 2}"#]);
}

#[test]
fn unknown_ids_exit_4() {
    let s = Store::new();
    s.add(&["noop"]);
    let missing = "0123456789abcdef01234567";
    for cmd in ["show", "cancel", "retry"] {
        let run = s.run(&[cmd, missing]);
        assert_eq!(run.code, 4, "{cmd}: {run:?}");
        assert!(
            run.stderr.contains(missing) && run.stderr.contains("party list"),
            "{run:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let s = Store::new();
    for args in [
        &[][..],
        &["frobnicate"],
        &["add"],
        &["add", "noop", "--colour", "red"],
        &["show"],
        &["worker", "--concurrency", "0"],
        &["list", "--limit", "many"],
    ] {
        let run = s.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
    let help = s.run(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("add") && help.stdout.contains("worker"));
    assert!(!s.db.exists(), "usage errors open no database");
}

/// `add --from` takes each task's fields from its line: an option given beside it would be
/// dropped without a word, so it is refused and nothing is written.
#[test]
fn add_from_refuses_the_options_its_lines_say_instead() {
    let s = Store::new();
    s.add(&["log"]);
    let before = s.snapshot();
    let file = s.path("one.jsonl");
    std::fs::write(&file, "{\"handler\": \"noop\"}\n").unwrap();
    for extra in [
        &["--queue", "mail"][..],
        &["--priority", "5"],
        &["--every", "1h"],
        &["--cron", "0 9 * * *"],
        &["--monthly-on", "1", "--at-time", "09:00"],
        &["--tz", "Europe/Berlin"],
        &["--missed", "skip"],
        &["--max-attempts", "2"],
        &["--unique-key", "k", "--unique-for", "1h"],
        &["--in", "1h"],
    ] {
        let mut args = vec!["add", "--from", file.as_str()];
        args.extend(extra);
        let run = s.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("cannot be used with"),
            "{args:?}: {run:?}"
        );
        assert_eq!(s.snapshot(), before, "{args:?} changed the database");
    }
    // A recurring task given twice in one file names both lines: neither exists yet.
    let twice = s.path("twice.jsonl");
    let line = "{\"handler\": \"log\", \"every\": \"1h\", \"data\": {\"a\": 1}}\n";
    std::fs::write(&twice, format!("{{\"handler\": \"noop\"}}\n{line}{line}")).unwrap();
    let run = s.run(&["add", "--from", &twice]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("line 3: repeats line 2:"), "{run:?}");
    assert_eq!(s.snapshot(), before);
    let run = s.run(&["add", "--from", &file]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_written() {
    let s = Store::new();
    s.add(&["log", "--data", r#"{"keep": true}"#]);
    s.add(&["noop", "--every", "1h"]);
    let before = s.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (&["add", "log", "--data", "{not json"], "not valid JSON"),
        (&["add", "log", "--data", "[1, 2]"], "must be a JSON object"),
        (&["add", "log", "--data", "42"], "not a number"),
        (
            &["add", "log", "--data", r#"{"note": "a\u0000b"}"#],
            "NUL character (U+0000)",
        ),
        (&["add", "nosuch"], "unknown handler 'nosuch'"),
        (
            &["add", "log", "--at", "2020-01-01T00:00:00Z"],
            "is in the past",
        ),
        (&["add", "log", "--at", "next tuesday"], "is not a time"),
        (
            &["add", "log", "--at", "2099-01-01T09:00:00"],
            "with Z or an offset",
        ),
        (&["add", "log", "--in", "5x"], "unknown unit \"x\""),
        (&["add", "log", "--in", "90"], "has no unit"),
        (
            &["add", "log", "--every", "soon"],
            "invalid duration \"soon\"",
        ),
        (&["add", "log", "--every", "0m"], "positive duration"),
        (
            &["add", "log", "--at", "2099-01-01T00:00:00Z", "--in", "1h"],
            "cannot be used with",
        ),
        (&["add", "log", "--max-attempts", "0"], "at least 1"),
        (
            &["add", "log", "--cron", "0 0 30 2 *"],
            "never occurs in February",
        ),
        (
            &["add", "log", "--cron", "61 * * * *"],
            "invalid cron expression",
        ),
        (
            &["add", "log", "--cron", "* * *"],
            "invalid cron expression",
        ),
        (
            &["add", "log", "--every", "1h", "--tz", "Mars/Olympus"],
            "unknown time zone \"Mars/Olympus\"",
        ),
        (
            &["add", "log", "--tz", "Europe/Berlin"],
            "required arguments",
        ),
        (
            &["add", "log", "--monthly-on", "32", "--at-time", "09:00"],
            "not a day of the month",
        ),
        (&["add", "log", "--monthly-on", "31"], "--at-time"),
        (
            &["add", "log", "--monthly-on", "31", "--at-time", "25:00"],
            "hour 25 is out of range",
        ),
        (
            &["add", "log", "--every", "1h", "--cron", "* * * * *"],
            "cannot be used with",
        ),
        (
            &["add", "log", "--every", "1h", "--missed", "some"],
            "use one of all, latest, skip",
        ),
        (&["next", "nope"], "24 hexadecimal characters"),
        (&["list", "--state", "sleeping"], "unknown state 'sleeping'"),
        (&["show", "12345"], "24 hexadecimal characters"),
        (
            &["cancel", "zzzzzzzzzzzzzzzzzzzzzzzz"],
            "24 hexadecimal characters",
        ),
        (
            &["retry", "0123456789abcdef0123456"],
            "24 hexadecimal characters",
        ),
    ];
    for (args, expected) in cases {
        let run = s.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {}",
            run.stderr
        );
        assert_eq!(s.snapshot(), before, "{args:?} changed the database");
    }
}

#[test]
fn built_in_handlers_check_their_data_when_a_task_is_added() {
    let s = Store::new();
    s.add(&["log", "--data", r#"{"keep": true}"#]);
    let before = s.snapshot();
    let long = format!(r#"{{"cmd": "{}"}}"#, "x".repeat(65_537));
    let cases: &[(&[&str], &str)] = &[
        (
            &["add", "shell", "--data", r#"{"cmd": 5}"#],
            "\"cmd\" must be a string",
        ),
        (&["add", "shell"], "\"cmd\" is missing"),
        (
            &["add", "shell", "--data", r#"{"cmd": "  "}"#],
            "\"cmd\" is empty",
        ),
        (
            &["add", "shell", "--data", &long],
            "over the limit of 65536",
        ),
        (
            &["add", "sleep", "--data", r#"{"ms": -5}"#],
            "\"ms\" must be a whole number of milliseconds (0 or more), not -5",
        ),
        (
            &["add", "sleep", "--data", r#"{"ms": "1s"}"#],
            "not a string",
        ),
    ];
    for (args, expected) in cases {
        let run = s.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.contains(expected) && run.stderr.contains("does not fit handler"),
            "{args:?}: expected {expected:?} in {}",
            run.stderr
        );
        assert!(
            run.stderr.len() < 1000,
            "the input is not echoed back: {}",
            run.stderr.len()
        );
        assert_eq!(s.snapshot(), before, "{args:?} changed the database");
    }

    // `add --from` runs the same checks, all or nothing, naming the line.
    let file = s.path("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"handler\": \"shell\", \"data\": {\"cmd\": \"true\"}}\n{\"handler\": \"shell\", \"data\": {\"cmd\": 5}}\n",
    )
    .unwrap();
    let run = s.run(&["add", "--from", &file]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("line 2"), "{run:?}");
    assert!(run.stderr.contains("\"cmd\" must be a string"), "{run:?}");
    assert_eq!(s.snapshot(), before);

    // Good data passes.
    s.add(&["shell", "--data", r#"{"cmd": "true"}"#]);
    s.add(&["sleep", "--data", r#"{"ms": 0}"#]);
    s.add(&["sleep"]);
}

#[test]
fn bad_input_on_a_new_path_creates_no_database() {
    let s = Store::new();
    for args in [
        &["add", "log", "--data", "{"][..],
        &["add", "log", "--in", "1y"],
        &["show", "nope"],
    ] {
        assert_eq!(s.run(args).code, 2, "{args:?}");
    }
    assert!(!s.db.exists());
}

#[test]
fn shell_tasks_wait_for_a_worker_that_allows_shell() {
    let s = Store::new();
    let file = s.path("ran");
    let data = json!({ "cmd": format!("touch '{file}'") }).to_string();
    let id = s.add(&["shell", "--data", &data]);
    s.ok(&["worker", "--until-idle"]);
    let t = s.show(&id);
    assert_eq!(t["state"], "scheduled");
    assert_eq!(t["attempts"], 0);
    assert!(!Path::new(&file).exists());

    let text = s.ok(&["stats"]);
    assert!(text.contains("no worker is running"), "{text}");
    assert!(
        text.contains("shell: 1 due task(s); start `party worker --allow-shell`"),
        "{text}"
    );
    let stats = s.json(&["stats", "--json"]);
    assert_eq!(
        stats["unhandled"],
        json!([{ "handler": "shell", "state": "scheduled", "count": 1 }])
    );

    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    assert_eq!(s.show(&id)["state"], "done");
    assert!(Path::new(&file).exists());
}

#[test]
fn stats_count_by_state_and_handler() {
    let s = Store::new();
    s.add(&["log"]);
    s.add(&["log"]);
    let later = s.add(&["noop", "--in", "1d"]);
    s.ok(&["cancel", &later]);
    s.add(&["noop", "--in", "1d"]);
    s.ok(&["worker", "--until-idle"]);
    let stats = s.json(&["stats", "--json"]);
    assert_eq!(
        stats["by_state"],
        json!({ "scheduled": 1, "running": 0, "retrying": 0, "done": 2, "dead": 0, "cancelled": 1 })
    );
    assert_eq!(
        stats["by_handler"],
        json!({ "log": { "done": 2 }, "noop": { "cancelled": 1, "scheduled": 1 } })
    );
    assert_eq!(stats["oldest_due"], Value::Null);
    assert_eq!(stats["finished_last_minute"], 2);
    assert_eq!(stats["unhandled"], json!([]));
    assert_eq!(stats["workers"], json!([]));
    let text = s.ok(&["stats"]);
    assert!(
        text.contains("throughput: 2 attempts finished in the last minute"),
        "{text}"
    );
    assert!(text.contains("oldest due task: none is due"), "{text}");
}

#[test]
fn the_database_comes_from_the_environment_unless_given() {
    let s = Store::new();
    let env_db = s.path("from-env.db");
    let out = Command::new(PARTY)
        .args(["add", "noop"])
        .current_dir(&s.dir)
        .env("PARTY_DATABASE_URL", &env_db)
        .env("PARTY_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(Path::new(&env_db).exists());
    let id = String::from_utf8(out.stdout).unwrap();
    // --db wins over the environment: the other database does not have it.
    assert_eq!(s.run(&["show", id.trim()]).code, 4);

    let out = Command::new(PARTY)
        .args(["add", "noop"])
        .current_dir(&s.dir)
        .env_remove("PARTY_DATABASE_URL")
        .env("PARTY_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(s.dir.join("party.db").exists(), "the default is ./party.db");
}

fn wait_for(path: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(path).exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the worker exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{path} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_stops_gracefully_on_sigterm_letting_its_task_finish() {
    let s = Store::new();
    let (started, finished) = (s.path("started"), s.path("finished"));
    let data =
        json!({ "cmd": format!("touch '{started}'; sleep 1; touch '{finished}'") }).to_string();
    let id = s.add(&["shell", "--data", &data]);
    let future = s.add(&["noop", "--in", "1h"]);
    let mut worker = s
        .command(&["worker", "--allow-shell"])
        .env("PARTY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started, &mut worker);
    assert_eq!(s.show(&id)["state"], "running");

    let kill = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = worker.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("stopping gracefully"), "{log}");
    assert!(
        Path::new(&finished).exists(),
        "the running task was allowed to finish"
    );
    let task = s.show(&id);
    assert_eq!(task["state"], "done");
    assert_eq!(task["runs"][0]["outcome"], "succeeded");
    assert_eq!(s.show(&future)["state"], "scheduled");
    assert_eq!(s.json(&["stats", "--json"])["workers"], json!([]));
}

#[test]
fn the_demo_runs_the_seed_examples_end_to_end() {
    let s = Store::new();
    let started = Instant::now();
    let out = s.ok(&["demo"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(19) && took < Duration::from_secs(60),
        "{took:?}"
    );
    for expected in [
        "30 minutes are 2 seconds and 30 days are 5 seconds",
        "SampleTask      data arg1 = \"hello from the seed\"",
        "Attempting run 1 of task",
        "fails on purpose",
        "Attempting run 2 of task",
        "RecurringTask   run 2: timestamp",
        "RecurringTask2  run 2: timestamp",
        "last_run_on",
        "timestamps exactly 5.000000 s apart",
        "refused: a recurring 'recurring_task2' task with the same data already exists",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // What the demo showed is what the store holds.
    let by_handler = |h: &str| {
        let list = s.json(&["list", "--json", "--handler", h]);
        assert_eq!(list.as_array().unwrap().len(), 1, "{h}: {list}");
        s.show(list[0]["id"].as_str().unwrap())
    };
    let sample = by_handler("sample_task");
    assert_eq!(sample["state"], "done");
    assert_eq!(sample["attempts"], 2);
    let runs = sample["runs"].as_array().unwrap();
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(runs[0]["timestamp"], runs[1]["timestamp"]);

    let every_30m = by_handler("recurring_task");
    assert!(
        every_30m["runs"].as_array().unwrap().len() >= 3,
        "{every_30m}"
    );
    assert_eq!(every_30m["is_recurring"], true);
    assert_time(&every_30m["last_run_on"]);

    let every_30d = by_handler("recurring_task2");
    let stamps: Vec<Timestamp> = every_30d["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| assert_time(&r["timestamp"]))
        .collect();
    assert!(stamps.len() >= 2, "{every_30d}");
    for pair in stamps.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]),
            SignedDuration::from_secs(5)
        );
    }
    assert_eq!(out.matches("refused").count(), 1);
    assert!(out.contains(every_30d["id"].as_str().unwrap()));

    // A second demo on the same database is refused: it needs an empty one.
    let again = s.run(&["demo"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again.stderr.contains("needs an empty database"),
        "{again:?}"
    );
}

#[test]
fn a_bad_log_level_is_refused() {
    let s = Store::new();
    let run = to_run(
        s.command(&["list"])
            .env("PARTY_LOG", "loud")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("PARTY_LOG='loud' is not a log level"),
        "{run:?}"
    );
    assert!(!s.db.exists());
}

#[test]
fn rules_from_flags_are_stored_and_next_lists_their_occurrences() {
    let s = Store::new();
    let id = s.add(&[
        "log",
        "--monthly-on",
        "31",
        "--at-time",
        "09:00",
        "--tz",
        "Europe/Berlin",
        "--missed",
        "latest",
        "--at",
        "2099-01-31T08:00:00Z",
    ]);
    let next = s.json(&["next", &id, "--count", "4", "--json"]);
    assert_eq!(
        next,
        json!([
            "2099-01-31T08:00:00.000000Z",
            "2099-02-28T08:00:00.000000Z",
            "2099-03-31T07:00:00.000000Z",
            "2099-04-30T07:00:00.000000Z"
        ])
    );
    let task = s.json(&["show", &id, "--json"]);
    assert_eq!(task["is_recurring"], true);
    assert_eq!(task["rule"]["rule"]["kind"], "monthly_on");
    assert_eq!(task["rule"]["tz"], "Europe/Berlin");
    assert_eq!(task["rule"]["missed"], "latest");
    let cron = s.add(&[
        "log",
        "--data",
        r#"{"weekday": true}"#,
        "--cron",
        "0 9 * * MON-FRI",
        "--tz",
        "America/New_York",
    ]);
    let text = s.ok(&["next", &cron, "--count", "3"]);
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        let t: Timestamp = line.parse().unwrap();
        let local = t.to_zoned(jiff::tz::TimeZone::get("America/New_York").unwrap());
        assert_eq!((local.hour(), local.minute()), (9, 0), "{line}");
        assert!(!matches!(
            local.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        ));
    }
    let gaps = s.json(&["gaps", &cron, "--json"]);
    assert_eq!(gaps["expected"], 0);
    let one_off = s.add(&["log"]);
    let run = s.run(&["next", &one_off]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("one-off task"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// Queue controls, on every backend available.

/// Concurrent `party add --unique-key` processes on one store: exactly one wins, the others
/// exit 3 naming it; the key shows in `show --json`, and a window without a key is refused.
#[test]
fn unique_adds_from_many_processes_make_one_task() {
    for db in Db::all("unique-adds") {
        let s = Store::new();
        let adders: Vec<Child> = (0..8)
            .map(|i| {
                support::party_cmd(&db.url)
                    .args(["add", "log", "--unique-key", "invoice:7", "--data"])
                    .arg(json!({ "n": i }).to_string())
                    .current_dir(&s.dir)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<Run> = adders
            .into_iter()
            .map(|c| to_run(c.wait_with_output().unwrap()))
            .collect();
        let won: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
        assert_eq!(won.len(), 1, "{}: {runs:?}", db.name);
        let id = won[0].stdout.trim();
        for r in runs.iter().filter(|r| r.code != 0) {
            assert_eq!(r.code, 3, "{}: {r:?}", db.name);
            assert!(r.stderr.contains(id), "{}: {r:?}", db.name);
            assert!(
                r.stderr.contains("unique key 'invoice:7'"),
                "{}: {r:?}",
                db.name
            );
        }
        let shown: Value =
            serde_json::from_str(&on_ok(&db, &s.dir, &["show", id, "--json"])).unwrap();
        assert_eq!(shown["unique_key"], "invoice:7", "{}", db.name);
        let run = on(&db, &s.dir, &["add", "log", "--unique-for", "1h"]);
        assert_eq!(run.code, 2, "{}: {run:?}", db.name);
        let run = on(
            &db,
            &s.dir,
            &["add", "log", "--unique-key", "k", "--unique-for", "400d"],
        );
        assert_eq!(run.code, 2, "{}: {run:?}", db.name);
        assert!(run.stderr.contains("366d"), "{}: {run:?}", db.name);
    }
}

/// `party cancel` of a running `shell` task: the worker, another process, stops it within its
/// grace (the command is killed), records the run as cancelled and goes on.
#[test]
fn cancel_stops_a_running_shell_task_within_the_grace() {
    for db in Db::all("cancel-running") {
        let s = Store::new();
        let (started, pid_file) = (s.path("started"), s.path("pid"));
        let data = json!({ "cmd": format!("echo $$ > '{pid_file}'; touch '{started}'; sleep 30") })
            .to_string();
        let id = on_ok(&db, &s.dir, &["add", "shell", "--data", &data])
            .trim()
            .to_string();
        let mut worker = support::party_cmd(&db.url)
            .args(["worker", "--allow-shell", "--grace", "1s"])
            .current_dir(&s.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&started, &mut worker);
        let asked = Instant::now();
        let out = on_ok(&db, &s.dir, &["cancel", &id]);
        assert!(out.starts_with("cancelling task"), "{}: {out}", db.name);
        let shown = loop {
            let shown: Value =
                serde_json::from_str(&on_ok(&db, &s.dir, &["show", &id, "--json"])).unwrap();
            if shown["state"] == "cancelled" {
                break shown;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(15),
                "{}: still {}",
                db.name,
                shown["state"]
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // A second for the worker to learn of it, a second of grace, then the command's
        // process group is ended.
        assert!(asked.elapsed() < Duration::from_secs(8), "{}", db.name);
        assert_eq!(shown["runs"][0]["outcome"], "cancelled", "{}", db.name);
        assert_eq!(shown["cancel_requested"], false, "{}", db.name);
        // The worker goes on: a new task runs.
        let next = on_ok(&db, &s.dir, &["add", "noop"]).trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let shown: Value =
                serde_json::from_str(&on_ok(&db, &s.dir, &["show", &next, "--json"])).unwrap();
            if shown["state"] == "done" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the worker stopped working",
                db.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status();
        assert!(worker.wait().unwrap().success(), "{}", db.name);
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "{}: the command was ended",
            db.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input: bounds, escapes and secrets, on every backend available.

/// `party --db URL ARGS` in `dir`.
fn on(db: &Db, dir: &Path, args: &[&str]) -> Run {
    to_run(
        support::party_cmd(&db.url)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap(),
    )
}

fn on_ok(db: &Db, dir: &Path, args: &[&str]) -> String {
    let run = on(db, dir, args);
    assert_eq!(run.code, 0, "{}: party {args:?}: {run:?}", db.name);
    run.stdout
}

/// Refused with exit 2, a short message containing `expected`, and nothing on stdout.
fn assert_refused(run: &Run, expected: &str, what: &str) {
    assert_eq!(run.code, 2, "{what}: {run:?}");
    assert_eq!(run.stdout, "", "{what}");
    assert!(
        run.stderr.contains(expected),
        "{what}: expected {expected:?} in {}",
        bounded(&run.stderr)
    );
    assert!(
        run.stderr.len() < 2_000,
        "{what}: the message echoes the input ({} bytes): {}",
        run.stderr.len(),
        bounded(&run.stderr)
    );
    assert!(!run.stderr.contains('\u{1b}'), "{what}: raw ESC on stderr");
}

fn bounded(s: &str) -> String {
    s.chars().take(500).collect()
}

#[test]
fn names_are_bounded_and_printable_on_every_backend() {
    let s = Store::new();
    for db in Db::all("names") {
        let before = on_ok(&db, &s.dir, &["list", "--json"]);
        let long = "q".repeat(65_536);
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["add", "log", "--queue", &long],
                "too long: at most 128 bytes",
            ),
            (vec!["add", "log", "--queue", "a\u{1b}[31mb"], "U+001B"),
            (vec!["add", "log", "--queue", ""], "the queue name is empty"),
            (vec!["add", &long], "too long: at most 128 bytes"),
            (vec!["add", "lo\u{7}g"], "U+0007"),
            (vec!["list", "--handler", &long], "too long"),
            (vec!["cancel", "--queue", &long], "too long"),
            (vec!["retry", "--handler", "a\u{1b}b"], "U+001B"),
            (
                vec!["worker", "--until-idle", "--queue", ""],
                "the queue name is empty",
            ),
            (vec!["worker", "--until-idle", "--queue", &long], "too long"),
        ];
        for (args, expected) in &cases {
            let what = format!("{}: {:?}", db.name, bounded(&args.join(" ")));
            assert_refused(&on(&db, &s.dir, args), expected, &what);
        }
        // NUL cannot travel in an argument; a file can carry it.
        let file = s.path(&format!("nul-{}.jsonl", db.name));
        std::fs::write(&file, "{\"handler\":\"log\",\"queue\":\"a\\u0000b\"}\n").unwrap();
        let run = on(&db, &s.dir, &["add", "--from", &file]);
        assert_refused(&run, "line 1: the queue name 'a\\u{0}b' contains", db.name);
        assert_eq!(
            on_ok(&db, &s.dir, &["list", "--json"]),
            before,
            "{}",
            db.name
        );
        // At the limit is fine.
        on_ok(&db, &s.dir, &["add", "log", "--queue", &"q".repeat(128)]);
    }
}

#[test]
fn list_survives_long_values_stored_before_the_bounds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = Store::new();
    for db in Db::all("long-values") {
        // A row written by an older party, without the bounds: straight into the store.
        rt.block_on(async {
            let store = party::open_store(&db.url).await.unwrap();
            let now = Timestamp::now();
            store
                .task_insert(vec![party::store::InsertTask {
                    id: party::TaskId::generate(now),
                    handler: "log".into(),
                    data: "{}".into(),
                    timestamp: now,
                    is_recurring: false,
                    rule: None,
                    max_attempts: 1,
                    queue: format!("{}\u{1b}[2J", "q".repeat(70_000)),
                    priority: 0,
                    created_at: now,
                    unique_key: None,
                    unique_since: None,
                }])
                .await
                .unwrap();
        });
        let run = on(&db, &s.dir, &["list"]);
        assert_eq!(run.code, 0, "{}: {}", db.name, bounded(&run.stderr));
        assert!(
            run.stdout.lines().all(|l| l.chars().count() < 400),
            "{}: a cell was not cut",
            db.name
        );
        assert!(
            !run.stdout.contains('\u{1b}'),
            "{}: raw ESC in list",
            db.name
        );
        // JSON output stays exact.
        let listed: Value = serde_json::from_str(&on_ok(&db, &s.dir, &["list", "--json"])).unwrap();
        assert_eq!(listed[0]["queue"].as_str().unwrap().len(), 70_000 + 4);
    }
}

#[test]
fn control_characters_in_stored_values_are_escaped_in_tables() {
    let s = Store::new();
    // C1 CSI (U+009B) passes through JSON text unescaped; ESC arrives in a shell's stderr.
    let data = s.add(&["log", "--data", r#"{"s": "\u009b2J"}"#]);
    let failing = s.add(&[
        "shell",
        "--max-attempts",
        "1",
        "--data",
        r#"{"cmd": "printf 'boom\\033[2J' >&2; exit 1"}"#,
    ]);
    s.ok(&["worker", "--until-idle", "--allow-shell"]);
    let list = s.ok(&["list"]);
    assert!(!list.contains('\u{9b}'), "{list}");
    assert!(list.contains("\\u{9b}2J"), "{list}");
    let shown = s.ok(&["show", &failing]);
    assert!(!shown.contains('\u{1b}'), "{shown}");
    assert!(shown.contains("boom\\u{1b}[2J"), "{shown}");
    assert!(!s.ok(&["show", &data]).contains('\u{9b}'));
    // JSON keeps the exact value.
    assert_eq!(s.show(&data)["data"]["s"], "\u{9b}2J");
    assert!(
        s.show(&failing)["last_error"]
            .as_str()
            .unwrap()
            .contains("boom\u{1b}[2J")
    );
}

#[test]
fn url_like_databases_that_are_not_supported_are_refused_without_the_password() {
    let s = Store::new();
    for url in [
        "postgres:app:S3cretPw@db/app",
        "postgress://app:S3cretPw@db/app",
        "mysql://app:S3cretPw@db/app",
        "mysql:app:S3cretPw@db",
        "POSTGRES://app:S3cretPw@db/app",
    ] {
        let run = to_run(
            Command::new(PARTY)
                .args(["--db", url, "add", "noop"])
                .current_dir(&s.dir)
                .env_remove("PARTY_DATABASE_URL")
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 2, "{url}: {run:?}");
        assert!(!run.stderr.contains("S3cretPw"), "{url}: {}", run.stderr);
        assert!(run.stderr.contains("***"), "{url}: {}", run.stderr);
        assert!(run.stderr.contains("postgres://"), "{url}: {}", run.stderr);
    }
    let left: Vec<_> = std::fs::read_dir(&s.dir).unwrap().collect();
    assert!(left.is_empty(), "files were created: {left:?}");
    // A file name with a colon is still a file, written so.
    let run = to_run(
        Command::new(PARTY)
            .args(["--db", "./my:party.db", "add", "noop"])
            .current_dir(&s.dir)
            .env_remove("PARTY_DATABASE_URL")
            .env("PARTY_LOG", "warn")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(s.dir.join("my:party.db").exists());
    // Nor does a PostgreSQL that cannot be reached show it, from the environment either.
    let run = to_run(
        Command::new(PARTY)
            .args(["stats"])
            .current_dir(&s.dir)
            .env(
                "PARTY_DATABASE_URL",
                "postgres://app:S3cretPw@127.0.0.1:1/app",
            )
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stderr.contains("S3cretPw"), "{}", run.stderr);
}

#[test]
fn both_backends_store_the_same_numbers() {
    let s = Store::new();
    for db in Db::all("numbers") {
        let what = db.name;
        let run = on(&db, &s.dir, &["add", "log", "--max-attempts", "4294967295"]);
        assert_refused(&run, "too large: the maximum is 2147483647", what);
        let id = on_ok(&db, &s.dir, &["add", "log", "--max-attempts", "2147483647"]);
        let shown: Value =
            serde_json::from_str(&on_ok(&db, &s.dir, &["show", id.trim(), "--json"])).unwrap();
        assert_eq!(shown["max_attempts"], 2_147_483_647u32, "{what}");
        // Equal numbers are equal data: one singleton.
        let first = on_ok(
            &db,
            &s.dir,
            &["add", "noop", "--every", "1h", "--data", r#"{"n": 1}"#],
        );
        let run = on(
            &db,
            &s.dir,
            &["add", "noop", "--every", "1h", "--data", r#"{"n": 1.0}"#],
        );
        assert_eq!(run.code, 3, "{what}: {run:?}");
        assert!(run.stderr.contains(first.trim()), "{what}: {}", run.stderr);
        let shown: Value =
            serde_json::from_str(&on_ok(&db, &s.dir, &["show", first.trim(), "--json"])).unwrap();
        assert_eq!(shown["data"], json!({"n": 1}), "{what}");
        // Integers beyond 64 bits would silently become floats: refused.
        let run = on(
            &db,
            &s.dir,
            &[
                "add",
                "log",
                "--data",
                r#"{"n": 123456789012345678901234567890}"#,
            ],
        );
        assert_refused(&run, "too large", what);
        let file = s.path(&format!("big-{what}.jsonl"));
        std::fs::write(
            &file,
            "{\"handler\":\"log\",\"data\":{\"n\":99999999999999999999}}\n",
        )
        .unwrap();
        assert_refused(&on(&db, &s.dir, &["add", "--from", &file]), "line 1:", what);
        let run = on(&db, &s.dir, &["add", "log", "--priority", "2147483648"]);
        assert_refused(&run, "too large: the maximum is 2147483647", what);
    }
}

#[test]
fn list_json_leaves_out_the_runs_it_does_not_read() {
    let s = Store::new();
    let id = s.add(&["noop"]);
    s.ok(&["worker", "--until-idle"]);
    let listed = s.json(&["list", "--json"]);
    assert!(listed[0].get("runs").is_none(), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(s.show(&id)["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn add_from_refuses_a_past_at_like_add_at() {
    let s = Store::new();
    for db in Db::all("past-at") {
        let before = on_ok(&db, &s.dir, &["list", "--json"]);
        let file = s.path(&format!("past-{}.jsonl", db.name));
        std::fs::write(
            &file,
            "{\"handler\":\"log\",\"at\":\"2099-01-01T00:00:00Z\"}\n\
             {\"handler\":\"log\",\"at\":\"2020-01-01T00:00:00Z\"}\n",
        )
        .unwrap();
        let from = on(&db, &s.dir, &["add", "--from", &file]);
        assert_refused(&from, "line 2: \"at\" 2020-01-01T00:00:00", db.name);
        assert!(from.stderr.contains("is in the past"), "{}", from.stderr);
        let at = on(&db, &s.dir, &["add", "log", "--at", "2020-01-01T00:00:00Z"]);
        assert_refused(&at, "is in the past", db.name);
        assert_eq!(
            on_ok(&db, &s.dir, &["list", "--json"]),
            before,
            "{}",
            db.name
        );
    }
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn list_json_of_many_large_tasks_is_written_a_page_at_a_time() {
    use std::io::Read;
    let s = Store::new();
    let count = 64;
    let pad = "x".repeat(1_000_000);
    let lines: String = (0..count)
        .map(|i| {
            format!(
                "{{\"handler\":\"log\",\"in\":\"{}m\",\"data\":{{\"n\":{i},\"pad\":\"{pad}\"}}}}\n",
                i + 1
            )
        })
        .collect();
    let file = s.path("large.jsonl");
    std::fs::write(&file, lines).unwrap();
    for db in Db::all("list-large") {
        let ids: Vec<String> = on_ok(&db, &s.dir, &["add", "--from", &file])
            .lines()
            .map(str::to_string)
            .collect();
        // Read the listing as it comes, noting how much memory the process has held: it
        // cannot end before its output is read, so its peak is seen.
        let mut child = support::party_cmd(&db.url)
            .args(["list", "--json", "--limit", "1000"])
            .current_dir(&s.dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let (mut out, mut buf, mut peak) = (Vec::new(), vec![0; 1 << 16], 0);
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            peak = peak.max(peak_memory(pid).unwrap_or(0));
        }
        assert!(child.wait().unwrap().success(), "{}", db.name);
        let listed: Value = serde_json::from_slice(&out).unwrap();
        let listed: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ids, "{}: every task once, soonest first", db.name);
        // 64 MB of data listed; a page holds at most 16 MiB of tasks.
        assert!(
            peak < 160 << 20,
            "{}: `list --json` held {} MiB listing {} MB",
            db.name,
            peak >> 20,
            out.len() / 1_000_000
        );
    }
}

#[test]
fn add_from_names_the_line_of_a_task_that_already_exists() {
    let s = Store::new();
    for db in Db::all("from-duplicate") {
        let keyed = on_ok(&db, &s.dir, &["add", "log", "--unique-key", "export:1"]);
        let recurring = on_ok(
            &db,
            &s.dir,
            &["add", "log", "--every", "1h", "--data", r#"{"a": 1}"#],
        );
        let before = on_ok(&db, &s.dir, &["list", "--json"]);
        let cases = [
            (
                "{\"handler\":\"log\"}\n\n{\"handler\":\"log\",\"unique_key\":\"export:1\"}\n",
                "error: line 3: a 'log' task with the unique key 'export:1' already exists",
                keyed.trim(),
            ),
            (
                "{\"handler\":\"log\",\"every\":\"1h\",\"data\":{\"a\":2}}\n\
                 {\"handler\":\"log\"}\n\
                 {\"handler\":\"log\",\"every\":\"1h\",\"data\":{\"a\":1.0}}\n",
                "error: line 3: a recurring 'log' task with the same data already exists",
                recurring.trim(),
            ),
        ];
        for (i, (lines, says, existing)) in cases.into_iter().enumerate() {
            let file = s.path(&format!("duplicate-{}-{i}.jsonl", db.name));
            std::fs::write(&file, lines).unwrap();
            let run = on(&db, &s.dir, &["add", "--from", &file]);
            assert_eq!(run.code, 3, "{}: {run:?}", db.name);
            assert_eq!(run.stdout, "", "{}", db.name);
            assert!(run.stderr.starts_with(says), "{}: {}", db.name, run.stderr);
            assert!(run.stderr.contains(existing), "{}: {}", db.name, run.stderr);
            assert_eq!(
                on_ok(&db, &s.dir, &["list", "--json"]),
                before,
                "{}: nothing of the file is written",
                db.name
            );
        }
    }
}

#[test]
fn at_takes_rfc_3339_alone_from_flags_and_files() {
    let s = Store::new();
    for db in Db::all("at-forms") {
        let before = on_ok(&db, &s.dir, &["list", "--json"]);
        for (i, form) in [
            "2099-01-31T09:00Z",
            "20990131T090000Z",
            "2099-01-31T09:00:00+0100",
            "2099-01-31T09:00:00+01",
            "+002099-01-31T09:00:00Z",
            "2099-01-31T09:00:00,5Z",
        ]
        .into_iter()
        .enumerate()
        {
            let what = format!("{}: {form}", db.name);
            let at = on(&db, &s.dir, &["add", "log", "--at", form]);
            assert_refused(&at, "e.g. 2027-01-31T09:00:00Z", &what);
            let file = s.path(&format!("at-{}-{i}.jsonl", db.name));
            std::fs::write(
                &file,
                format!("{{\"handler\":\"log\"}}\n{{\"handler\":\"log\",\"at\":\"{form}\"}}\n"),
            )
            .unwrap();
            let from = on(&db, &s.dir, &["add", "--from", &file]);
            assert_refused(&from, "line 2: \"at\"", &what);
            assert!(from.stderr.contains("e.g. 2027-01-31T09:00:00Z"), "{what}");
        }
        assert_eq!(
            on_ok(&db, &s.dir, &["list", "--json"]),
            before,
            "{}",
            db.name
        );
        // RFC 3339's own variants name the same instant.
        for form in [
            "2099-01-31T10:00:00+01:00",
            "2099-01-31t09:00:00z",
            "2099-01-31 09:00:00Z",
            "2099-01-31T09:00:00.000Z",
        ] {
            let id = on_ok(&db, &s.dir, &["add", "log", "--at", form]);
            let task: Value =
                serde_json::from_str(&on_ok(&db, &s.dir, &["show", id.trim(), "--json"])).unwrap();
            assert_eq!(task["timestamp"], "2099-01-31T09:00:00.000000Z", "{form}");
        }
    }
}

#[test]
fn long_input_is_not_echoed_whole() {
    let s = Store::new();
    let big = "x".repeat(100_000);
    let not_json = format!("{{{big}");
    let party_big = format!("PARTY_{big}");
    let line = s.path("long.jsonl");
    std::fs::write(&line, format!("{{\"handler\": \"{big}\"}}\n")).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["add", "log", "--data", &not_json], "not valid JSON"),
        (vec!["add", &big], "too long"),
        (vec!["add", "log", "--at", &big], "too long"),
        (vec!["add", "log", "--in", &big], "too long"),
        (
            vec!["add", "log", "--every", "1h", "--tz", &big],
            "too long",
        ),
        (vec!["add", "log", "--cron", &big], "too long"),
        (
            vec!["add", "log", "--max-attempts", &big],
            "not a whole number",
        ),
        (vec!["show", &big], "24 hexadecimal characters"),
        (vec!["list", "--state", &big], "too long"),
        (vec!["add", "--from", &line], "line 1:"),
        (vec!["list", &big], "unexpected argument"),
        (
            vec!["worker", "--allow-shell", "--shell-env", &party_big],
            "cannot be passed to shell commands",
        ),
    ];
    for (args, expected) in &cases {
        assert_refused(&s.run(args), expected, &bounded(&args.join(" ")));
    }
    let run = to_run(
        s.command(&["list"])
            .env("PARTY_LOG", &big)
            .output()
            .unwrap(),
    );
    assert_refused(&run, "is not a log level", "PARTY_LOG");
}

#[test]
fn times_numbers_and_durations_at_their_edges() {
    let s = Store::new();
    let before = s.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (
            &["add", "log", "--at", "2099-12-31T23:59:60Z"],
            "leap second",
        ),
        (
            &["add", "log", "--at", "2099-01-01T00:00:00+25:00"],
            "beyond ±23:59",
        ),
        (
            &["add", "log", "--at", "2099-01-01T00:00:00+24:00"],
            "beyond ±23:59",
        ),
        (
            &["add", "log", "--max-attempts", "99999999999999999999999"],
            "too large: the maximum is 2147483647",
        ),
        (
            &["list", "--limit", "4294967296"],
            "too large: the maximum is 1000000",
        ),
        (
            &["worker", "--until-idle", "--concurrency", "100000"],
            "too large: the maximum is 10000",
        ),
        (
            &[
                "worker",
                "--until-idle",
                "--prefetch",
                "18446744073709551615",
            ],
            "too large: the maximum is 10000",
        ),
        (&["worker", "--until-idle", "--grace", "2d"], "at most 24h"),
        (
            &["next", "0123456789abcdef01234567", "--count", "5000"],
            "too large: the maximum is 1000",
        ),
    ];
    for (args, expected) in cases {
        assert_refused(&s.run(args), expected, &args.join(" "));
    }
    assert_eq!(s.snapshot(), before);
    // A space between the parts of a duration is accepted, as documented.
    let id = s.add(&["log", "--in", "1h 30m"]);
    let task = s.show(&id);
    let d = assert_time(&task["timestamp"]).duration_since(assert_time(&task["created_at"]));
    assert!(
        (d - SignedDuration::from_mins(90)).abs() < SignedDuration::from_secs(2),
        "{d:?}"
    );
    // An offset at the edge is still a time.
    s.add(&["log", "--at", "2099-01-01T00:00:00-23:59"]);
}

#[test]
fn a_sqlite_file_with_a_schema_version_party_never_writes_is_refused() {
    let s = Store::new();
    s.add(&["noop"]);
    for version in [-1, i32::MIN] {
        let conn = rusqlite::Connection::open(&s.db).unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
        drop(conn);
        let run = s.run(&["list"]);
        assert_eq!(run.code, 1, "{version}: {run:?}");
        assert!(
            run.stderr.contains(&format!(
                "schema version {version}, which party never writes"
            )),
            "{}",
            run.stderr
        );
    }
}

/// `--db` naming another program's SQLite file (tables of its own, one named `tasks`, and no
/// party schema version) is refused with a message that says so, and the file is untouched.
#[test]
fn another_programs_sqlite_file_is_refused_and_left_as_it_was() {
    let s = Store::new();
    let db = s.path("other.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT); \
             INSERT INTO tasks (title) VALUES ('buy milk');",
        )
        .unwrap();
    }
    for args in [&["stats"][..], &["add", "noop"][..]] {
        let out = support::party_cmd(&db).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("another program's database")
                && stderr.contains("check that --db names the party database")
                && !stderr.contains("CREATE TABLE")
                && stderr.lines().count() <= 2,
            "{args:?}:\n{stderr}"
        );
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["tasks"], "the file was changed");
}

#[test]
fn a_damaged_database_stops_the_worker_with_the_database_error() {
    let s = Store::new();
    let lines: String = (0..300)
        .map(|i| {
            format!(
                "{{\"handler\":\"noop\",\"data\":{{\"i\":{i},\"pad\":\"{}\"}}}}\n",
                "x".repeat(60)
            )
        })
        .collect();
    let file = s.path("many.jsonl");
    std::fs::write(&file, lines).unwrap();
    s.ok(&["add", "--from", &file]);
    // Move everything into the main file, then damage every page but the first.
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&s.db).unwrap();
    assert!(bytes.len() > 3 * 4096, "{}", bytes.len());
    for page in (2 * 4096..bytes.len()).step_by(4096) {
        for b in &mut bytes[page + 8..page + 808] {
            *b = 0xde;
        }
    }
    std::fs::write(&s.db, bytes).unwrap();
    let mut child = s
        .command(&["worker", "--until-idle"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker kept retrying a damaged database for 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("malformed"), "{stderr}");
    assert!(stderr.contains("restore it from a backup"), "{stderr}");
}

/// Two done tasks and a dead one that finished ten days ago (written through the library with
/// a clock set back), and one done task that finishes now.
fn store_with_old_finished_tasks() -> (Store, String) {
    let s = Store::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = party::open_store(s.db.to_str().unwrap()).await.unwrap();
        let clock = party::ManualClock::new(Timestamp::now() - SignedDuration::from_hours(240));
        let p = party::Party::with_store(store, party::builtin::registry(true))
            .with_clock(std::sync::Arc::new(clock));
        for n in 0..2 {
            p.add(party::NewTask::new("noop").data(json!({ "n": n })))
                .await
                .unwrap();
        }
        p.add(
            party::NewTask::new("shell")
                .data(json!({ "cmd": "exit 3" }))
                .max_attempts(1),
        )
        .await
        .unwrap();
        p.worker(party::WorkerConfig::default())
            .run_until_idle()
            .await
            .unwrap();
    });
    let new = s.add(&["noop"]);
    // The worker prunes too: keep the old done tasks for the test.
    s.ok(&["worker", "--until-idle", "--retain-done", "forever"]);
    (s, new)
}

#[test]
fn prune_dry_run_counts_what_is_past_retention_and_removes_nothing() {
    let (s, new) = store_with_old_finished_tasks();
    let states = |s: &Store| -> Vec<String> {
        let mut v: Vec<String> = s
            .snapshot()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(states(&s), ["dead", "done", "done", "done"]);

    let text = s.ok(&["prune", "--dry-run"]);
    assert!(
        text.contains("would remove 2 finished tasks and 2 runs"),
        "{text}"
    );
    assert!(
        text.contains("retention: done 7d, dead and cancelled 30d, recurring 400d"),
        "{text}"
    );
    let dry = s.json(&["prune", "--dry-run", "--json", "--retain-dead", "1d"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["tasks"], 3, "{dry}");
    assert_eq!(dry["runs"], 3, "{dry}");
    assert_eq!(dry["retention"]["dead"], "1d");
    assert_eq!(states(&s).len(), 4, "a dry run removes nothing");

    let kept = s.json(&["prune", "--json", "--retain-done", "forever"]);
    assert_eq!(kept["tasks"], 0, "{kept}");
    assert_eq!(kept["retention"]["done"], "forever");

    let done = s.json(&["prune", "--json"]);
    assert_eq!(
        (done["tasks"].clone(), done["runs"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        states(&s),
        ["dead", "done"],
        "the dead task is younger than 30 days"
    );
    assert_eq!(s.show(&new)["state"], "done");
    assert_eq!(s.json(&["prune", "--dry-run", "--json"])["tasks"], 0);
}

#[test]
fn retention_flags_refuse_bad_values_with_exit_2() {
    let s = Store::new();
    for (args, says) in [
        (
            &["prune", "--retain-done", "soon"][..],
            "or write `forever`",
        ),
        (
            &["prune", "--retain-dead", "2h"],
            "--retain-dead: a retention of 2h",
        ),
        (&["prune", "--retain-dead", "0s"], "at least 1d"),
        (&["prune", "--retain-recurring", "1h"], "--retain-recurring"),
        (&["prune", "--retain-done", "30s"], "at least 1m"),
        (
            &["worker", "--until-idle", "--retain-dead", "1h"],
            "list --state dead",
        ),
        (&["worker", "--retain-done=-1d"], "--retain-done"),
    ] {
        let run = s.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert!(!s.db.exists(), "a refused retention opens no database");
    s.ok(&[
        "worker",
        "--until-idle",
        "--retain-done",
        "1d",
        "--retain-dead",
        "forever",
    ]);
}

/// `party show` of a task with a long run history prints its latest runs only and says how
/// many there are and how to see them all; `--runs all` prints every one, `--runs N` the latest
/// N. `--json` holds the same runs with the total and the cursor to the older ones.
#[test]
fn show_prints_the_latest_runs_of_a_long_history_and_every_run_when_asked() {
    use party::store::{CopyRows, RunRecord, RunRow};
    let s = Store::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n: i64 = 1_500;
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let at = |k: i64| start + SignedDuration::from_mins(k);
    for db in Db::all("long-history") {
        let id = on_ok(&db, &s.dir, &["add", "noop", "--every", "1m", "--in", "1h"]);
        let id = id.trim();
        // The runs of a schedule that has run every minute for a day, written as a copy does.
        rt.block_on(async {
            let store = party::open_store(&db.url).await.unwrap();
            let task_id: party::TaskId = id.parse().unwrap();
            let rows: Vec<RunRow> = (0..n)
                .map(|k| RunRow {
                    position: k,
                    task_id,
                    run: RunRecord {
                        attempt: 1,
                        timestamp: at(k),
                        started_at: at(k),
                        finished_at: at(k) + SignedDuration::from_secs(1),
                        outcome: "succeeded".to_string(),
                        error: None,
                        worker: "w1".to_string(),
                    },
                })
                .collect();
            for batch in rows.chunks(party::policy::COPY_BATCH as usize) {
                store
                    .copy_write(CopyRows::Runs(batch.to_vec()))
                    .await
                    .unwrap();
            }
        });
        let rows = |text: &str| text.lines().filter(|l| l.contains(" succeeded ")).count();
        let text = on_ok(&db, &s.dir, &["show", id]);
        assert_eq!(rows(&text), 100, "{}: {text}", db.name);
        assert!(
            text.contains(&format!(
                "showing the latest 100 of {n} runs: `party show {id} --runs all` lists every \
                 run, `party gaps {id}`"
            )),
            "{}: {text}",
            db.name
        );
        assert!(text.contains(&party::format_time(at(n - 1))), "{text}");
        assert!(!text.contains(&party::format_time(at(n - 101))), "{text}");
        let all = on_ok(&db, &s.dir, &["show", id, "--runs", "all"]);
        assert_eq!(rows(&all), n as usize, "{}", db.name);
        assert!(!all.contains("showing the latest"));
        let five = on_ok(&db, &s.dir, &["show", id, "--runs", "5"]);
        assert_eq!(rows(&five), 5);
        assert!(five.contains(&format!("showing the latest 5 of {n} runs")));

        let json: Value =
            serde_json::from_str(&on_ok(&db, &s.dir, &["show", id, "--json"])).unwrap();
        let runs = json["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 100);
        let first: Timestamp = runs[0]["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(first, at(n - 100), "the latest runs, oldest first");
        assert_eq!(json["runs_total"], json!(n));
        assert_eq!(json["runs_total_exact"], json!(true));
        assert!(json["runs_next_cursor"].is_string(), "{json}");
        let json: Value = serde_json::from_str(&on_ok(
            &db,
            &s.dir,
            &["show", id, "--json", "--runs", "all"],
        ))
        .unwrap();
        assert_eq!(json["runs"].as_array().unwrap().len(), n as usize);
        assert_eq!(json["runs_next_cursor"], Value::Null);
        for (runs, says) in [
            ("0", "at least 1"),
            ("lots", "--runs all"),
            ("1001", "1000"),
        ] {
            assert_refused(
                &on(&db, &s.dir, &["show", id, "--runs", runs]),
                says,
                &format!("{}: --runs {runs}", db.name),
            );
        }
    }
}

/// A number in data is matched by "its digits as stored" (`DataMatch`): the text `show --json`
/// prints. Both backends must pick the same tasks for one filter, or `cancel --data` cancels
/// different tasks after a move to PostgreSQL.
#[test]
fn a_data_filter_on_a_float_matches_the_same_tasks_on_every_backend() {
    let s = Store::new();
    for db in Db::all("float-filter") {
        let id = on_ok(
            &db,
            &s.dir,
            &["add", "noop", "--in", "1h", "--data", r#"{"x": 1e-7}"#],
        );
        let shown = on_ok(&db, &s.dir, &["show", id.trim(), "--json"]);
        assert!(
            shown.contains(r#""x": 1e-7"#),
            "{}: stored as {shown}",
            db.name
        );
        let listed: Value =
            serde_json::from_str(&on_ok(&db, &s.dir, &["list", "--json", "--data", "x=1e-7"]))
                .unwrap();
        assert_eq!(
            listed.as_array().unwrap().len(),
            1,
            "{}: `list --data x=1e-7` does not find the task whose data shows {{\"x\": 1e-7}}",
            db.name
        );
    }
}

/// README (`worker`): "on SIGTERM running tasks get the grace period". With `--until-idle`
/// (a worker run from cron or a CI job), SIGTERM abandons the running task instead: the
/// process exits 1 at once and the task is left `running` under its lease.
#[test]
fn a_worker_until_idle_stops_gracefully_on_sigterm_too() {
    let s = Store::new();
    let (started, finished) = (s.path("started"), s.path("finished"));
    let data =
        json!({ "cmd": format!("touch '{started}'; sleep 1; touch '{finished}'") }).to_string();
    let id = s.add(&["shell", "--data", &data]);
    let mut worker = s
        .command(&["worker", "--until-idle", "--allow-shell"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started, &mut worker);
    let kill = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = worker.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let task = s.show(&id);
    assert_eq!(
        (out.status.code(), task["state"].as_str()),
        (Some(0), Some("done")),
        "the running task was not given its grace period: {log}"
    );
    assert!(
        Path::new(&finished).exists(),
        "the command was allowed to finish"
    );
}

/// One input, one answer (`party::validate`): a rule's zone is stored in its canonical
/// spelling whether it comes from `add --tz` or from an `add --from` line. For `--every` the
/// flag's zone is canonical, but a line's `"tz"` is stored exactly as written (any case,
/// spaces around it), so the same task shows a different rule depending on how it was added.
#[test]
fn an_every_rules_zone_is_stored_the_same_from_flags_and_from_a_file() {
    let s = Store::new();
    let flag = s.add(&[
        "log",
        "--data",
        r#"{"n":1}"#,
        "--every",
        "1h",
        "--tz",
        " europe/berlin",
    ]);
    let file = s.path("tz.jsonl");
    std::fs::write(
        &file,
        "{\"handler\":\"log\",\"data\":{\"n\":2},\"every\":\"1h\",\"tz\":\" europe/berlin\"}\n",
    )
    .unwrap();
    let line = s.ok(&["add", "--from", &file]);
    let (flag, line) = (s.show(&flag), s.show(line.trim()));
    assert_eq!(flag["rule"]["tz"], "Europe/Berlin");
    assert_eq!(
        line["rule"]["tz"], flag["rule"]["tz"],
        "the zone of an `add --from` line is stored as written"
    );
}

/// README: "No message shows the URL's password." `party demo --db URL` prints the URL whole:
/// in its refusal of a database that holds tasks, and in its narration ("Database: ...",
/// "party --db ... list").
#[test]
fn the_demo_never_prints_the_databases_password() {
    let Some(pg) = Db::postgres("demo_secret") else {
        return;
    };
    // The same server and schema with a password in the user information (the test server
    // trusts its clients and never asks for it).
    let (scheme, rest) = pg.url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let url = format!("{scheme}://{user}:S3cretPw@{host}");
    let s = Store::new();
    // A fresh schema: the demo runs and narrates.
    let demo = || {
        to_run(
            support::party_cmd(&url)
                .args(["demo", "--for", "5s"])
                .current_dir(&s.dir)
                .output()
                .unwrap(),
        )
    };
    let run = demo();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.stdout.contains("S3cretPw") && !run.stderr.contains("S3cretPw"),
        "the demo printed the password:\n{}",
        run.stdout
            .lines()
            .chain(run.stderr.lines())
            .filter(|l| l.contains("S3cretPw"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Now it holds tasks: refused, exit 2, without the password.
    let run = demo();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stderr.contains("S3cretPw"), "{}", run.stderr);
}

/// A JSON Lines file saved with a UTF-8 byte order mark (Notepad, PowerShell's
/// `Out-File -Encoding utf8`) is refused with "line 1: expected value at line 1 column 1",
/// though line 1 is a valid task: the message does not say what is wrong.
#[test]
fn add_from_a_file_with_a_byte_order_mark_is_read_or_explained() {
    let s = Store::new();
    let file = s.path("bom.jsonl");
    std::fs::write(
        &file,
        "\u{feff}{\"handler\":\"noop\"}\n{\"handler\":\"noop\"}\n",
    )
    .unwrap();
    let run = s.run(&["add", "--from", &file]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 2, "{run:?}");
}

/// The refusal of a unique key on a recurring task carries a run of spaces from a broken
/// string continuation in the middle of its sentence.
#[test]
fn the_unique_key_refusal_of_a_recurring_task_reads_as_one_sentence() {
    let s = Store::new();
    let run = s.run(&["add", "log", "--every", "1h", "--unique-key", "k"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stderr.contains("   "), "{}", run.stderr);
}

/// `party cancel ID` on a running task marks it and its worker stops it (README; tested in
/// `cancel_stops_a_running_shell_task_within_the_grace`), but `--help` says the command
/// cancels "a task that is not running".
#[test]
fn cancel_help_does_not_say_running_tasks_cannot_be_cancelled() {
    let s = Store::new();
    for args in [&["--help"][..], &["cancel", "--help"]] {
        let help = s.ok(args);
        assert!(
            !help.contains("Cancel a task that is not running"),
            "{help}"
        );
    }
}
