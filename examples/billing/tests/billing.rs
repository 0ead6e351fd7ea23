//! The example application's binary: its own handlers next to the built-in ones, through every
//! CLI command. Recurring tasks are checked by their next scheduled time, never by waiting.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use party::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

struct App {
    dir: PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl App {
    fn new() -> App {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "party-billing-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        App { dir }
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_billing"))
            .arg("--db")
            .arg(self.dir.join("billing.db"))
            .args(args)
            .env_remove("PARTY_DATABASE_URL")
            .env("PARTY_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    }

    fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["show", id, "--json"])).unwrap()
    }
}

fn time(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn the_sample_task_prints_its_data_and_attempt() {
    let app = App::new();
    let id = app.ok(&["add", "sample_task", "--data", r#"{"arg1": "hello"}"#]);
    let id = id.trim();
    let out = app.ok(&["worker", "--until-idle"]);
    let task = app.show(id);
    assert_eq!(task["state"], "done");
    assert_eq!(
        out,
        format!(
            "\"hello\"\nAttempting run 1 of task {id} which was scheduled on {}.\n",
            task["timestamp"].as_str().unwrap()
        )
    );
}

#[test]
fn the_recurring_task_comes_back_30_minutes_after_its_run() {
    let app = App::new();
    let id = app.ok(&["add", "recurring_task"]);
    let id = id.trim();
    app.ok(&["worker", "--until-idle"]);
    let task = app.show(id);
    assert_eq!(task["state"], "scheduled");
    assert_eq!(task["is_recurring"], true);
    // 30 minutes from when `on_complete` asked: after the run started, by the time it ended.
    let started = time(&task["runs"][0]["started_at"]);
    let finished = time(&task["runs"][0]["finished_at"]);
    let next = time(&task["timestamp"]);
    let half_hour = SignedDuration::from_mins(30);
    assert!(
        started + half_hour <= next && next <= finished + half_hour,
        "next run {next}, the run from {started} to {finished}"
    );
    assert_eq!(time(&task["last_run_on"]), started);

    // The singleton rule: the same handler and data cannot be added twice.
    let (code, _, stderr) = app.run(&["add", "recurring_task"]);
    assert_eq!(code, 3);
    assert!(stderr.contains(id), "{stderr}");
}

#[test]
fn the_30_day_task_counts_from_its_timestamp() {
    let app = App::new();
    let id = app.ok(&[
        "add",
        "recurring_task2",
        "--data",
        r#"{"customer": "acme"}"#,
    ]);
    let id = id.trim();
    let t0 = time(&app.show(id)["timestamp"]);
    let out = app.ok(&["worker", "--until-idle"]);
    assert!(
        out.contains("billing acme for the period starting"),
        "{out}"
    );
    assert!(out.contains("(last run never)"), "{out}");
    let task = app.show(id);
    assert_eq!(task["state"], "scheduled");
    assert_eq!(
        time(&task["timestamp"]),
        t0 + SignedDuration::from_hours(30 * 24)
    );
    assert_eq!(task["last_run_on"], task["runs"][0]["started_at"]);
}

#[test]
fn the_built_in_handlers_are_there_too() {
    let app = App::new();
    let id = app.ok(&["add", "log", "--data", r#"{"from": "billing"}"#]);
    let out = app.ok(&["worker", "--until-idle"]);
    assert!(out.contains(id.trim()) && out.contains("billing"), "{out}");
    let (code, _, stderr) = app.run(&["add", "no_such_task"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("recurring_task2") && stderr.contains("sample_task"),
        "the error lists the handlers: {stderr}"
    );
}
