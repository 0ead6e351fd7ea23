//! The chaos test: worker processes run a few thousand tasks while the test kills them
//! (SIGKILL), freezes one past its lease (SIGSTOP, then SIGCONT) and, on PostgreSQL, stops the
//! database for a few seconds (adding a task meanwhile must fail promptly) and starts it
//! again. Then it checks that nothing was lost, that a task ran twice only where the history
//! shows a lost worker, that no two runs of a task overlapped unless the earlier one's lease
//! had expired, and that no recurring task ever had two live copies.
//!
//! `cargo test -p party-cli --test chaos -- --nocapture` runs the short version (CI).
//! `PARTY_CHAOS_TASKS=10000 PARTY_CHAOS_SECONDS=60 cargo test -p party-cli --test chaos -- --nocapture`
//! runs a longer one (see docs/RELIABILITY.md).

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use party::jiff::{SignedDuration, Timestamp};
use party::serde_json::json;
use party::{ListFilter, NewTask, Outcome, Party, State, TaskInfo};

mod support;
use support::{Cluster, Db, party_cmd};

const LEASE_SECS: u64 = 2;
const WORKERS: usize = 3;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Workers {
    url: String,
    procs: Vec<Child>,
    started: usize,
    /// Each started worker's standard error, in start order.
    logs: Vec<std::path::PathBuf>,
}

impl Workers {
    fn spawn_one(&mut self) -> Child {
        self.started += 1;
        let log = std::env::temp_dir().join(format!(
            "party-chaos-{}-{:016x}-{}.log",
            std::process::id(),
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), &self.url),
            self.started
        ));
        let file = std::fs::File::create(&log).expect("a worker log file");
        self.logs.push(log);
        party_cmd(&self.url)
            .args([
                "worker",
                "--concurrency",
                "16",
                "--lease",
                &format!("{LEASE_SECS}s"),
            ])
            .env("PARTY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn party worker")
    }

    fn signal(&self, i: usize, sig: i32) {
        let pid = self.procs[i].id() as i32;
        assert!(send_signal(pid, sig), "signal {sig} to worker {pid}");
    }
}

/// Send a signal with kill(1): the workspace forbids the unsafe code a direct call needs.
fn send_signal(pid: i32, sig: i32) -> bool {
    let name = match sig {
        libc::SIGKILL => "KILL",
        libc::SIGSTOP => "STOP",
        libc::SIGCONT => "CONT",
        libc::SIGTERM => "TERM",
        _ => unreachable!(),
    };
    std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success()
}

#[derive(Default)]
struct Events {
    /// When a worker was killed or frozen.
    kills: Vec<Timestamp>,
    stops: usize,
    db_restarts: usize,
}

/// Stop or start the server under test: the test's own cluster when it has one, else the
/// machine's.
fn pg_ctl(private: Option<&Cluster>, action: &str) {
    if let Some(c) = private {
        assert!(
            c.ctl(action),
            "pg_ctl {action} failed on the test's cluster"
        );
        return;
    }
    let versions = std::fs::read_dir("/etc/postgresql").expect("a local PostgreSQL cluster");
    let version = versions
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let ok = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("pg_ctlcluster")
        .success();
    assert!(ok, "pg_ctlcluster {action} failed");
}

/// Starts PostgreSQL again however the outage check ends.
struct Restart<'a>(Option<&'a Cluster>);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        pg_ctl(self.0, "start");
    }
}

/// Stop PostgreSQL for a few seconds while the workers run; while it is down, adding a task
/// must fail promptly with a message that says the server cannot be reached.
fn postgres_outage(url: &str, private: Option<&Cluster>) {
    let _restart = Restart(private);
    pg_ctl(private, "stop");
    let started = Instant::now();
    let out = party_cmd(url).args(["add", "noop"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "adding while the database is down: {err}"
    );
    assert!(
        err.contains("PostgreSQL"),
        "the error names the database: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the add failed within its connect timeout"
    );
    std::thread::sleep(Duration::from_secs(2));
}

#[test]
fn chaos_loses_nothing_on_every_backend() {
    let tasks = env_num("PARTY_CHAOS_TASKS", 2000) as usize;
    let seconds = env_num("PARTY_CHAOS_SECONDS", 20);
    for db in Db::all("chaos") {
        if db.name == "postgres" {
            // Stopping the machine's server would fail every other test using it meanwhile:
            // stop a cluster of this test's own where one can be made.
            if let Some(cluster) = Cluster::start() {
                let own = cluster.db("chaos");
                run_chaos(&own, tasks, Duration::from_secs(seconds), Some(&cluster));
                continue;
            }
        }
        run_chaos(&db, tasks, Duration::from_secs(seconds), None);
    }
}

fn run_chaos(db: &Db, n: usize, chaos_for: Duration, private: Option<&Cluster>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let party = rt
        .block_on(Party::connect(&db.url, party::builtin::registry(false)))
        .unwrap();
    let now = Timestamp::now();
    // One-off tasks: most fast, some slow (longer than the lease is renewed over), due over
    // the first few seconds.
    let one_offs: Vec<NewTask> = (0..n)
        .map(|i| {
            let at = now + SignedDuration::from_millis((i as i64 * 7) % 5000);
            let t = if i % 10 == 0 {
                NewTask::new("sleep").data(json!({"ms": 500 + (i % 7) * 300, "i": i}))
            } else {
                NewTask::new("noop").data(json!({"i": i}))
            };
            t.at(at).max_attempts(20)
        })
        .collect();
    let ids = rt.block_on(party.add_many(one_offs)).unwrap();
    // Recurring tasks, every second.
    let recurring: Vec<_> = (0..5)
        .map(|r| {
            rt.block_on(
                party.add(
                    NewTask::new("noop")
                        .data(json!({"recurring": r}))
                        .every(SignedDuration::from_secs(1)),
                ),
            )
            .unwrap()
        })
        .collect();

    let mut workers = Workers {
        url: db.url.clone(),
        procs: Vec::new(),
        started: 0,
        logs: Vec::new(),
    };
    for _ in 0..WORKERS {
        let c = workers.spawn_one();
        workers.procs.push(c);
    }
    let mut events = Events::default();
    let start = Instant::now();
    let mut froze = false;
    let mut restarted = db.name != "postgres";
    let mut step = 0u64;
    while start.elapsed() < chaos_for {
        std::thread::sleep(Duration::from_millis(1500));
        step += 1;
        let victim = fastrand_usize(step, WORKERS);
        if !froze && start.elapsed() > chaos_for / 3 {
            froze = true;
            workers.signal(victim, libc::SIGSTOP);
            events.stops += 1;
            events.kills.push(Timestamp::now());
            std::thread::sleep(Duration::from_secs(LEASE_SECS * 2));
            workers.signal(victim, libc::SIGCONT);
        } else if !restarted && start.elapsed() > chaos_for / 2 {
            restarted = true;
            postgres_outage(&workers.url, private);
            events.db_restarts += 1;
        } else {
            workers.signal(victim, libc::SIGKILL);
            let _ = workers.procs[victim].wait();
            events.kills.push(Timestamp::now());
            workers.procs[victim] = workers.spawn_one();
        }
    }
    // Let the workers finish every one-off task.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = rt
            .block_on(party.list(&ListFilter {
                state: Some(State::Done),
                limit: Some(u32::MAX),
                ..Default::default()
            }))
            .unwrap()
            .len();
        if done >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: only {done} of {n} tasks done two minutes after the chaos",
            db.name
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Stop the recurring tasks, then the workers (gracefully).
    for id in &recurring {
        for _ in 0..200 {
            match rt.block_on(party.cancel(*id)) {
                Ok(_) => break,
                Err(party::TaskError::Conflict(_)) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("cancel {id}: {e}"),
            }
        }
    }
    // Every worker has started (a worker restarted by the last step of the chaos may still be
    // starting, and a process stopped before it has set up its signal handling dies of the
    // signal, as any program does): each has registered as live.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = rt.block_on(party.stats()).unwrap().workers;
        let waiting: Vec<u32> = workers
            .procs
            .iter()
            .map(|c| c.id())
            .filter(|pid| !live.iter().any(|w| w.id.contains(&format!("-{pid}-"))))
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: workers {waiting:?} never registered within 30 s",
            db.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..WORKERS {
        workers.signal(i, libc::SIGTERM);
    }
    for i in 0..WORKERS {
        let status = workers.procs[i].wait().unwrap();
        if !status.success() {
            let logs: Vec<String> = workers
                .logs
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    format!(
                        "{}:\n{}",
                        p.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!(
                "{}: worker {i} did not stop cleanly on SIGTERM ({status}); the workers' logs:\n{}",
                db.name,
                logs.join("\n")
            );
        }
    }
    for log in &workers.logs {
        let _ = std::fs::remove_file(log);
    }

    // The checks.
    let mut lost_runs = 0;
    let mut reran = 0;
    let mut rescue_delays = Vec::new();
    for id in &ids {
        let task = rt.block_on(party.get(*id)).unwrap();
        assert_eq!(task.state, State::Done, "{}: task {id} not done", db.name);
        let succeeded = task
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .count();
        assert_eq!(
            succeeded, 1,
            "{}: task {id} succeeded {succeeded} times: {:?}",
            db.name, task.runs
        );
        let lost = task
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Lost)
            .count();
        assert_eq!(
            task.runs.len(),
            1 + lost,
            "{}: every extra run of {id} is a lost one: {:?}",
            db.name,
            task.runs
        );
        if lost > 0 {
            reran += 1;
            lost_runs += lost;
        }
        check_no_overlap(db.name, &task);
        for r in task.runs.iter().filter(|r| r.outcome == Outcome::Lost) {
            if let Some(k) = events.kills.iter().filter(|k| **k <= r.finished_at).max() {
                rescue_delays.push(r.finished_at.duration_since(*k));
            }
        }
    }
    for id in &recurring {
        let task = rt.block_on(party.get(*id)).unwrap();
        let mut per_occurrence = BTreeMap::<Timestamp, usize>::new();
        for r in task.runs.iter().filter(|r| r.outcome == Outcome::Succeeded) {
            *per_occurrence.entry(r.timestamp).or_default() += 1;
        }
        assert!(
            per_occurrence.values().all(|c| *c == 1),
            "{}: an occurrence of recurring {id} succeeded twice",
            db.name
        );
        assert!(
            per_occurrence.len() >= 2,
            "{}: recurring {id} kept running",
            db.name
        );
        check_no_overlap(db.name, &task);
    }
    let all = rt
        .block_on(party.list(&ListFilter {
            limit: Some(u32::MAX),
            ..Default::default()
        }))
        .unwrap();
    let mut live = BTreeMap::<String, usize>::new();
    for t in all.iter().filter(|t| {
        t.is_recurring && matches!(t.state, State::Scheduled | State::Running | State::Retrying)
    }) {
        *live.entry(format!("{}{}", t.handler, t.data)).or_default() += 1;
    }
    assert!(
        live.values().all(|c| *c <= 1),
        "{}: two live copies of a recurring task",
        db.name
    );
    let integrity = db.integrity_check(&rt);
    assert_eq!(integrity, "ok", "{}: integrity check", db.name);
    let max_rescue = rescue_delays.iter().max().copied().unwrap_or_default();
    println!(
        "chaos {}: {n} one-off + {} recurring tasks, {} workers started, {} SIGKILLs, {} SIGSTOP, {} database restarts; \
         all done; {reran} tasks re-ran after {lost_runs} lost attempts (each explained by a lost run); \
         longest time from a kill or freeze to the rescue: {:.1}s (lease {LEASE_SECS}s); integrity: {integrity}",
        db.name,
        recurring.len(),
        workers.started,
        events.kills.len() - events.stops,
        events.stops,
        events.db_restarts,
        max_rescue.as_secs_f64(),
    );
}

/// No two runs of one task overlap in time unless the earlier one was lost (its lease expired).
fn check_no_overlap(db: &str, task: &TaskInfo) {
    let mut runs = task.runs.clone();
    runs.sort_by_key(|r| r.started_at);
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.started_at >= a.finished_at || a.outcome == Outcome::Lost,
            "{db}: runs of {} overlap: {a:?} and {b:?}",
            task.id
        );
    }
}

fn fastrand_usize(seed: u64, n: usize) -> usize {
    (seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33) as usize
        % n
}
