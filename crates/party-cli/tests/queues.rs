//! Queue controls across worker processes: several `party worker` processes on one store
//! against limited and paused queues, their run histories read back. Never more than N
//! overlapping runs per queue or per key, starts within the rate in every window, nothing
//! claimed while paused, and a pause and a resume reaching workers that are already running.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use party::jiff::{SignedDuration, Timestamp};
use party::serde_json::json;
use party::{ListFilter, NewTask, Party, QueueLimits, Rate, Run, State, TaskInfo};

mod support;
use support::{Db, party_cmd};

fn connect(rt: &tokio::runtime::Runtime, db: &Db) -> Party {
    rt.block_on(Party::connect(&db.url, party::builtin::registry(false)))
        .expect("connect")
}

fn cli(db: &Db, args: &[&str]) -> String {
    let out = party_cmd(&db.url).args(args).output().expect("run party");
    assert!(
        out.status.success(),
        "{}: party {args:?}: {}",
        db.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn workers(db: &Db, n: usize, queues: &[&str], until_idle: bool) -> Vec<Child> {
    (0..n)
        .map(|_| {
            let mut cmd: Command = party_cmd(&db.url);
            cmd.args(["worker", "--concurrency", "8"]);
            if until_idle {
                cmd.arg("--until-idle");
            }
            for q in queues {
                cmd.args(["--queue", q]);
            }
            cmd.env("PARTY_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn party worker")
        })
        .collect()
}

fn tasks_of(rt: &tokio::runtime::Runtime, party: &Party, queue: &str) -> Vec<TaskInfo> {
    let list = rt
        .block_on(party.list(&ListFilter {
            queue: Some(queue.to_string()),
            limit: Some(10_000),
            ..ListFilter::default()
        }))
        .unwrap();
    list.into_iter()
        .map(|t| rt.block_on(party.get(t.id)).unwrap())
        .collect()
}

/// The most runs that overlapped at any instant.
fn most_overlapping(runs: &[&Run]) -> usize {
    let mut edges: Vec<(Timestamp, i32)> = Vec::new();
    for r in runs {
        edges.push((r.started_at, 1));
        edges.push((r.finished_at, -1));
    }
    // At one instant an end comes before a start: a run that ends when another starts does
    // not overlap it.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// Every task of `queue` ran exactly once and succeeded; their runs.
fn runs_once<'a>(db: &Db, queue: &str, tasks: &'a [TaskInfo]) -> Vec<&'a Run> {
    for t in tasks {
        assert_eq!(
            t.state,
            State::Done,
            "{}: {queue} task {} is done",
            db.name,
            t.id
        );
        assert_eq!(
            t.runs.len(),
            1,
            "{}: {queue} task {} ran once",
            db.name,
            t.id
        );
    }
    tasks.iter().map(|t| &t.runs[0]).collect()
}

#[test]
fn limits_and_pauses_hold_across_worker_processes() {
    for db in Db::all("queue-limits") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let party = connect(&rt, &db);
        let add = |queue: &str, handler: &str, data: party::serde_json::Value, n: usize| {
            rt.block_on(
                party.add_many(
                    (0..n)
                        .map(|_| NewTask::new(handler).queue(queue).data(data.clone()))
                        .collect(),
                ),
            )
            .unwrap();
        };
        add("limited", "sleep", json!({"ms": 120}), 12);
        for customer in ["acme", "zeta", "umbrella"] {
            add(
                "per-key",
                "sleep",
                json!({"ms": 80, "customer": customer}),
                3,
            );
        }
        add("per-key", "sleep", json!({"ms": 80}), 3);
        add("rated", "noop", json!({}), 12);
        add("paused", "noop", json!({}), 5);
        cli(&db, &["queue", "limit", "limited", "--concurrency", "2"]);
        cli(
            &db,
            &[
                "queue",
                "limit",
                "per-key",
                "--concurrency",
                "1",
                "--per",
                "data.customer",
            ],
        );
        cli(&db, &["queue", "limit", "rated", "--rate", "4/1s"]);
        cli(&db, &["queue", "pause", "paused"]);

        let started = Instant::now();
        let procs = workers(&db, 3, &["limited", "per-key", "rated", "paused"], true);
        for mut w in procs {
            assert!(
                w.wait().unwrap().success(),
                "{}: worker exited cleanly",
                db.name
            );
        }
        let took = started.elapsed();

        let limited = tasks_of(&rt, &party, "limited");
        let runs = runs_once(&db, "limited", &limited);
        assert_eq!(runs.len(), 12);
        let most = most_overlapping(&runs);
        assert!(
            most <= 2,
            "{}: {most} limited runs overlapped (limit 2)",
            db.name
        );
        assert_eq!(most, 2, "{}: the limit was used, not undercut", db.name);

        let per_key = tasks_of(&rt, &party, "per-key");
        runs_once(&db, "per-key", &per_key);
        let mut by_key: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
        for t in &per_key {
            let key = t
                .data
                .get("customer")
                .map_or("none".into(), |v| v.to_string());
            by_key.entry(key).or_default().push(&t.runs[0]);
        }
        assert_eq!(
            by_key.len(),
            4,
            "{}: three customers and the none key",
            db.name
        );
        for (key, runs) in &by_key {
            assert_eq!(
                most_overlapping(runs),
                1,
                "{}: key {key} ran one at a time",
                db.name
            );
        }
        let all: Vec<&Run> = by_key.values().flatten().copied().collect();
        assert!(
            most_overlapping(&all) > 1,
            "{}: different keys ran side by side",
            db.name
        );

        let rated = tasks_of(&rt, &party, "rated");
        let mut starts: Vec<Timestamp> = runs_once(&db, "rated", &rated)
            .iter()
            .map(|r| r.started_at)
            .collect();
        starts.sort();
        // The limit holds for claims; a handler starts a moment after its claim, a moment the
        // window's 50 ms margin covers on a worker with cores to spare. On this shared 2-core
        // machine with three worker processes that moment can grow past the margin, so the
        // starts read back are checked in windows 200 ms shorter than the rate's: a limiter
        // that let a second batch through early would still put 8 starts in one.
        let window_len = SignedDuration::from_millis(800);
        for (i, s) in starts.iter().enumerate() {
            let window = starts[i..].iter().filter(|t| **t < *s + window_len).count();
            assert!(
                window <= 4,
                "{}: {window} starts in the 800 ms from {s} (rate 4/1s)",
                db.name
            );
        }
        let spread = starts[starts.len() - 1].duration_since(starts[0]);
        assert!(
            spread >= SignedDuration::from_secs(2),
            "{}: 12 starts at 4/1s take two seconds at least, took {spread:?}",
            db.name
        );

        for t in tasks_of(&rt, &party, "paused") {
            assert_eq!(t.state, State::Scheduled, "{}: paused tasks wait", db.name);
            assert!(
                t.runs.is_empty(),
                "{}: nothing claimed while paused",
                db.name
            );
        }
        println!(
            "{}: three workers drained the limited queues in {took:?}",
            db.name
        );

        // `queue list` shows what happened, as JSON.
        let listed: party::serde_json::Value =
            party::serde_json::from_str(&cli(&db, &["queue", "list", "--json"])).unwrap();
        let queues = listed["queues"].as_array().unwrap();
        let find = |name: &str| queues.iter().find(|q| q["name"] == name).unwrap().clone();
        assert_eq!(find("paused")["paused"], true);
        assert_eq!(find("paused")["counts"]["scheduled"], 5);
        assert_eq!(find("limited")["counts"]["done"], 12);
        assert_eq!(find("limited")["limits"]["concurrency"], 2);
        assert_eq!(find("rated")["limits"]["rate"], "4/1s");
        assert_eq!(find("per-key")["limits"]["per"], "data.customer");
    }
}

#[test]
fn a_pause_and_a_resume_reach_running_workers() {
    for db in Db::all("queue-pause") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let party = connect(&rt, &db);
        let mut procs = workers(&db, 2, &["mail"], false);
        // The workers are up once they beat.
        let deadline = Instant::now() + Duration::from_secs(20);
        while rt.block_on(party.stats()).unwrap().workers.len() < 2 {
            assert!(Instant::now() < deadline, "{}: workers started", db.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        rt.block_on(party.pause_queue("mail")).unwrap();
        let ids = rt
            .block_on(party.add_many((0..5).map(|_| NewTask::new("noop").queue("mail")).collect()))
            .unwrap();
        // A pause holds at once: for longer than the workers take to re-read their controls,
        // nothing is claimed.
        std::thread::sleep(Duration::from_millis(1500));
        for id in &ids {
            let t = rt.block_on(party.get(*id)).unwrap();
            assert_eq!(t.state, State::Scheduled, "{}: paused, {id} waits", db.name);
        }
        let resumed = Instant::now();
        rt.block_on(party.resume_queue("mail")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = ids
                .iter()
                .filter(|id| rt.block_on(party.get(**id)).unwrap().state == State::Done)
                .count();
            if done == ids.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {done} of 5 ran after resume",
                db.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "{}: resumed tasks all ran {:?} after the resume",
            db.name,
            resumed.elapsed()
        );
        // A limit set while the workers run holds at once: the ordinary claim leaves a
        // controlled queue alone before a worker has re-read its controls.
        rt.block_on(party.limit_queue(
            "mail",
            &QueueLimits {
                rate: Some(Rate::parse("2/1s").unwrap()),
                ..QueueLimits::default()
            },
        ))
        .unwrap();
        let more = rt
            .block_on(party.add_many((0..6).map(|_| NewTask::new("noop").queue("mail")).collect()))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let tasks = loop {
            let tasks: Vec<TaskInfo> = more
                .iter()
                .map(|id| rt.block_on(party.get(*id)).unwrap())
                .collect();
            if tasks.iter().all(|t| t.state == State::Done) {
                break tasks;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the limited tasks ran",
                db.name
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut starts: Vec<Timestamp> = runs_once(&db, "mail", &tasks)
            .iter()
            .map(|r| r.started_at)
            .collect();
        starts.sort();
        let spread = starts[5].duration_since(starts[0]);
        assert!(
            spread >= SignedDuration::from_secs(2),
            "{}: six starts at 2/1s take three windows, took {spread:?}",
            db.name
        );
        for w in &mut procs {
            let _ = Command::new("kill")
                .args(["-TERM", &w.id().to_string()])
                .status();
        }
        for mut w in procs {
            assert!(
                w.wait().unwrap().success(),
                "{}: worker stopped cleanly",
                db.name
            );
        }
    }
}
