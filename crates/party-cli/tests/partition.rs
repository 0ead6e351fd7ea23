//! Many machines, really separated: three network namespaces stand for three hosts, each
//! joined to a PostgreSQL server of the test's own over a veth pair, each running a `party
//! worker` on a stream of tasks. One host is cut off (its link down) for longer than the
//! lease: its tasks must be rescued by the other two, its late finishes after the link returns
//! refused by fencing, and at the end nothing is lost, no task ran twice at overlapping times
//! (unless the earlier run was lost), and no recurring task doubled. A second run adds 200 ms
//! of latency to one host (tc netem): that must change nothing but its speed.
//!
//! Root only (namespaces, links and the server need it), with `ip` and `tc`; elsewhere it says
//! so and passes. `cargo test -p party-cli --test partition -- --nocapture` prints the figures
//! (see docs/RELIABILITY.md).
//!
//! An ignored test measures throughput on the same setup: one worker process per host draining
//! due no-op tasks, beside one and three processes on this host (see docs/SCALING.md).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use party::jiff::{SignedDuration, Timestamp};
use party::serde_json::json;
use party::{ListFilter, NewTask, Outcome, Party, State, TaskInfo};

mod support;
use support::{Cluster, PARTY, Setup, is_root};

const HOSTS: usize = 3;
const LEASE_SECS: u64 = 2;
const TASKS: usize = 600;

/// Three namespaces joined to this one by veth pairs: host `i` is `10.X.i.2`, and this side of
/// its link `10.X.i.1`. Removed (with their links) when dropped.
struct Hosts {
    tag: String,
    net: u8,
}

impl Hosts {
    fn make() -> Option<Hosts> {
        if !is_root("the partition test") {
            return None;
        }
        for tool in ["ip", "tc"] {
            if Command::new(tool).arg("-V").output().is_err() {
                println!("the partition test: skipped, `{tool}` is not installed (iproute2)");
                return None;
            }
        }
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        let hosts = Hosts {
            tag: format!("{:x}{n}", pid % 0xffff),
            net: 100 + ((pid + n * 37) % 100) as u8,
        };
        for i in 1..=HOSTS {
            let (ns, outer, inner) = (hosts.ns(i), hosts.outer(i), hosts.inner(i));
            let ok = ip(&["netns", "add", &ns])
                && ip(&[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ])
                && ip(&["link", "set", &inner, "netns", &ns])
                && ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", hosts.gateway(i)),
                    "dev",
                    &outer,
                ])
                && ip(&["link", "set", &outer, "up"])
                && ip(&[
                    "netns",
                    "exec",
                    &ns,
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", hosts.address(i)),
                    "dev",
                    &inner,
                ])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if !ok {
                let why = "the partition test: the namespaces could not be made here";
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                println!("{why}; skipped");
                return None;
            }
        }
        Some(hosts)
    }

    fn ns(&self, i: usize) -> String {
        format!("party-{}-h{i}", self.tag)
    }
    /// This side of host `i`'s link (interface names hold at most 15 bytes).
    fn outer(&self, i: usize) -> String {
        format!("pv{}h{i}", self.tag)
    }
    fn inner(&self, i: usize) -> String {
        format!("pn{}h{i}", self.tag)
    }
    fn gateway(&self, i: usize) -> String {
        format!("10.{}.{i}.1", self.net)
    }
    fn address(&self, i: usize) -> String {
        format!("10.{}.{i}.2", self.net)
    }
    fn network(&self) -> String {
        format!("10.{}.0.0/16", self.net)
    }

    fn link(&self, i: usize, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.outer(i),
            if up { "up" } else { "down" }
        ]));
    }

    /// `program` run on host `i` (inside its namespace).
    fn on(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i), program]);
        cmd
    }

    /// `party worker` on host `i`, reaching the server through its link.
    fn worker(&self, i: usize, url: &str) -> Child {
        self.on(i, PARTY)
            .args(["--db", url])
            .args([
                "worker",
                "--concurrency",
                "8",
                "--lease",
                &format!("{LEASE_SECS}s"),
            ])
            .env_remove("PARTY_DATABASE_URL")
            .env("PARTY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a worker in a namespace")
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 1..=HOSTS {
            let _ = ip(&["link", "del", &self.outer(i)]);
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Worker processes, stopped however the test ends; their logs kept.
struct Workers {
    procs: Vec<Child>,
}

impl Workers {
    /// SIGTERM each, wait, and return each one's log.
    fn stop(&mut self) -> Vec<String> {
        for c in &self.procs {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let mut logs = Vec::new();
        for c in self.procs.drain(..) {
            let out = c.wait_with_output().expect("worker output");
            logs.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        logs
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What one run of the stream showed.
#[derive(Debug, Default)]
struct Figures {
    seconds: f64,
    succeeded_per_host: [usize; HOSTS],
    lost_runs: usize,
    rescued_from_cut_host: usize,
    refused_late_finishes: usize,
    longest_rescue: f64,
    /// Each host's worker log (warnings and errors).
    logs: Vec<String>,
}

/// One stream at a time: the figures are for three hosts, not six sharing two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn hosts_and_cluster() -> Option<(Hosts, Cluster)> {
    let hosts = Hosts::make()?;
    let listen = std::iter::once("127.0.0.1".to_string())
        .chain((1..=HOSTS).map(|i| hosts.gateway(i)))
        .collect::<Vec<_>>()
        .join(",");
    let cluster = Cluster::start_with(Setup {
        listen_addresses: Some(listen),
        trust_network: Some(hosts.network()),
        ..Setup::default()
    })?;
    Some((hosts, cluster))
}

/// Run the stream with the three hosts; `during` acts on the network once the workers run,
/// and an error it returns fails the test with the workers' logs.
fn run(
    hosts: &Hosts,
    cluster: &Cluster,
    schema: &str,
    during: impl FnOnce(&Hosts, &dyn Fn(usize) -> usize) -> Result<(), String>,
) -> (Figures, Vec<TaskInfo>, Vec<TaskInfo>) {
    let ports = vec![cluster.port; HOSTS];
    run_on(hosts, cluster, &ports, schema, 5, during)
}

/// As [`run`], host `i` reaching the server at its gateway's port `ports[i - 1]`, every
/// `sleep_every`th task sleeping 300 to 900 ms (the others are no-ops).
fn run_on(
    hosts: &Hosts,
    cluster: &Cluster,
    ports: &[u16],
    schema: &str,
    sleep_every: usize,
    during: impl FnOnce(&Hosts, &dyn Fn(usize) -> usize) -> Result<(), String>,
) -> (Figures, Vec<TaskInfo>, Vec<TaskInfo>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let local = format!("{}?schema={schema}", cluster.url());
    let party = rt
        .block_on(Party::connect(&local, party::builtin::registry(false)))
        .unwrap();
    let mut workers = Workers {
        procs: (1..=HOSTS)
            .map(|i| {
                let url = format!(
                    "postgres://postgres@{}:{}/postgres?schema={schema}&connect_timeout=2",
                    hosts.gateway(i),
                    ports[i - 1]
                );
                hosts.worker(i, &url)
            })
            .collect(),
    };
    // What a worker id holds of the process that runs it: host `i`'s worker ids contain
    // `marks[i - 1]`.
    let marks: Vec<String> = workers
        .procs
        .iter()
        .map(|c| format!("-{}-", c.id()))
        .collect();
    // The stream starts once every host's worker has registered through its own link, so a
    // host slow to start does not miss the tasks the others take meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = rt.block_on(party.stats()).unwrap().workers;
        let missing: Vec<usize> = (1..=HOSTS)
            .filter(|i| !live.iter().any(|w| w.id.contains(&marks[i - 1])))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let logs = workers.stop();
            panic!("hosts {missing:?} never registered a worker within 30 s; logs: {logs:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = Timestamp::now();
    let one_offs: Vec<NewTask> = (0..TASKS)
        .map(|i| {
            let at = now + SignedDuration::from_millis((i as i64 * 13) % 8000);
            let t = if i % sleep_every == 0 {
                NewTask::new("sleep").data(json!({"ms": 300 + (i % 7) * 100, "i": i}))
            } else {
                NewTask::new("noop").data(json!({"i": i}))
            };
            t.at(at).max_attempts(20)
        })
        .collect();
    let ids = rt.block_on(party.add_many(one_offs)).unwrap();
    let recurring: Vec<_> = (0..3)
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
    let started = Instant::now();
    // How many `sleep` tasks (300 to 900 ms each) host `i` is running now: tasks that are
    // still running a moment later, when a cut lands (a no-op's result may be written first).
    let holding = |i: usize| {
        let running = rt
            .block_on(party.list(&ListFilter {
                state: Some(State::Running),
                limit: Some(u32::MAX),
                ..Default::default()
            }))
            .unwrap();
        running
            .iter()
            .filter(|t| t.handler == "sleep")
            .filter(|t| {
                t.worker
                    .as_deref()
                    .is_some_and(|w| w.contains(&marks[i - 1]))
            })
            .count()
    };
    if let Err(why) = during(hosts, &holding) {
        let logs = workers.stop();
        panic!("{why}; the workers' logs: {logs:#?}");
    }

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
        if done >= TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {TASKS} tasks done after two minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    for id in &recurring {
        for _ in 0..200 {
            match rt.block_on(party.cancel(*id)) {
                Ok(_) => break,
                Err(party::TaskError::Conflict(_)) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("cancel {id}: {e}"),
            }
        }
    }
    let logs = workers.stop();

    let host_of = |worker: &str| marks.iter().position(|m| worker.contains(m.as_str()));
    let mut figures = Figures {
        seconds,
        logs,
        ..Figures::default()
    };
    figures.refused_late_finishes = figures.logs[0].matches("the claim is stale").count();
    let tasks: Vec<TaskInfo> = ids
        .iter()
        .map(|id| rt.block_on(party.get(*id)).unwrap())
        .collect();
    for task in &tasks {
        assert_eq!(task.state, State::Done, "task {} not done", task.id);
        let ok: Vec<_> = task
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "task {} succeeded {} times: {:?}",
            task.id,
            ok.len(),
            task.runs
        );
        let lost = task
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Lost)
            .count();
        assert_eq!(
            task.runs.len(),
            1 + lost,
            "every extra run of {} is a lost one: {:?}",
            task.id,
            task.runs
        );
        if let Some(h) = host_of(&ok[0].worker) {
            figures.succeeded_per_host[h] += 1;
        }
        figures.lost_runs += lost;
        if task
            .runs
            .iter()
            .any(|r| r.outcome == Outcome::Lost && host_of(&r.worker) == Some(0))
        {
            figures.rescued_from_cut_host += 1;
        }
        check_no_overlap(task);
    }
    let recurring: Vec<TaskInfo> = recurring
        .iter()
        .map(|id| rt.block_on(party.get(*id)).unwrap())
        .collect();
    for task in &recurring {
        let mut per_occurrence = BTreeMap::<Timestamp, usize>::new();
        for r in task.runs.iter().filter(|r| r.outcome == Outcome::Succeeded) {
            *per_occurrence.entry(r.timestamp).or_default() += 1;
        }
        assert!(
            per_occurrence.values().all(|c| *c == 1),
            "an occurrence of recurring {} succeeded twice",
            task.id
        );
        assert!(
            per_occurrence.len() >= 2,
            "recurring {} kept running",
            task.id
        );
        check_no_overlap(task);
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
        "two live copies of a recurring task"
    );
    (figures, tasks, recurring)
}

/// No two runs of one task overlap in time unless the earlier one was lost.
fn check_no_overlap(task: &TaskInfo) {
    let mut runs = task.runs.clone();
    runs.sort_by_key(|r| r.started_at);
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.started_at >= a.finished_at || a.outcome == Outcome::Lost,
            "runs of {} overlap: {a:?} and {b:?}",
            task.id
        );
    }
}

#[test]
fn a_host_cut_off_longer_than_the_lease_loses_its_tasks_to_the_others_and_nothing_else() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((hosts, cluster)) = hosts_and_cluster() else {
        return;
    };
    let cut_for = Duration::from_secs(LEASE_SECS * 3);
    let mut cut_at = None;
    let (figures, tasks, _) = run(&hosts, &cluster, "partition", |hosts, holding| {
        // Cut host 1 off while it holds tasks that run for a while: two `sleep` tasks at
        // once if that comes within 5 s, else one (enough for a rescue to be owed: its
        // claim, and any claimed ahead, outlive the lease while the link is down). Sleep
        // tasks are due over the stream's first 8 s; which host takes them is a race.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        let want = || {
            if started.elapsed() < Duration::from_secs(5) {
                2
            } else {
                1
            }
        };
        while holding(1) < want() {
            if Instant::now() >= deadline {
                return Err("host 1 never ran a sleep task within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cut_at = Some(Timestamp::now());
        hosts.link(1, false);
        std::thread::sleep(cut_for);
        hosts.link(1, true);
        Ok(())
    });
    let cut_at = cut_at.unwrap();
    let mut figures = figures;
    figures.longest_rescue = tasks
        .iter()
        .flat_map(|t| &t.runs)
        .filter(|r| r.outcome == Outcome::Lost && r.finished_at >= cut_at)
        .map(|r| r.finished_at.duration_since(cut_at).as_secs_f64())
        .fold(0.0, f64::max);
    println!(
        "partition: {TASKS} one-off + 3 recurring tasks on {HOSTS} hosts; host 1 cut off for \
         {}s (lease {LEASE_SECS}s); done in {:.1}s; succeeded per host {:?}; {} tasks rescued \
         from host 1 ({} lost runs in all), the last {:.1}s after the cut; {} late finishes \
         of host 1 refused",
        cut_for.as_secs(),
        figures.seconds,
        figures.succeeded_per_host,
        figures.rescued_from_cut_host,
        figures.lost_runs,
        figures.longest_rescue,
        figures.refused_late_finishes,
    );
    assert!(
        figures.rescued_from_cut_host > 0,
        "nothing of host 1 was rescued: {figures:?}"
    );
    assert!(
        figures.succeeded_per_host[1] > 0 && figures.succeeded_per_host[2] > 0,
        "{figures:?}"
    );
}

/// Forwards TCP connections from `listen` to `upstream`, holding every chunk back `delay` in
/// each direction: added latency on one host's path to the server, for kernels without
/// `sch_netem`. Stops accepting when dropped.
struct Relay {
    listen: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(listen: &str, upstream: std::net::SocketAddr, delay: Duration) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind(listen).expect("bind the relay");
        let listen = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                delayed_copy(client, server, delay);
                delayed_copy(s2, c2, delay);
            }
        });
        Relay { listen, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.listen);
    }
}

/// Copy `from` to `to`, each chunk written `delay` after it was read, in order.
fn delayed_copy(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (at, chunk) in rx {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn two_hundred_ms_of_latency_on_one_host_changes_nothing_but_speed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((hosts, cluster)) = hosts_and_cluster() else {
        return;
    };
    // 200 ms more round trip for host 2: tc netem on its link where the kernel has it, else
    // a relay that holds every chunk back 100 ms each way.
    let netem = ip(&[
        "netns",
        "exec",
        &hosts.ns(2),
        "tc",
        "qdisc",
        "add",
        "dev",
        &hosts.inner(2),
        "root",
        "netem",
        "delay",
        "200ms",
    ]);
    let relay = (!netem).then(|| {
        Relay::start(
            &format!("{}:0", hosts.gateway(2)),
            format!("127.0.0.1:{}", cluster.port).parse().unwrap(),
            Duration::from_millis(100),
        )
    });
    let how = if netem {
        "tc netem"
    } else {
        "a delaying relay (no sch_netem here)"
    };
    let ports: Vec<u16> = (1..=HOSTS)
        .map(|i| match (&relay, i) {
            (Some(r), 2) => r.listen.port(),
            _ => cluster.port,
        })
        .collect();
    // Every task sleeps, so the two near hosts cannot take them all: the far one must help.
    let (figures, _, _) = run_on(&hosts, &cluster, &ports, "latency", 1, |_, _| Ok(()));
    println!(
        "latency: {TASKS} one-off + 3 recurring tasks on {HOSTS} hosts, host 2 with 200 ms \
         more round trip ({how}); done in {:.1}s; succeeded per host {:?}; {} lost runs",
        figures.seconds, figures.succeeded_per_host, figures.lost_runs,
    );
    assert_eq!(
        figures.lost_runs, 0,
        "latency alone lost a run: {figures:?}"
    );
    assert_eq!(figures.refused_late_finishes, 0, "{figures:?}");
    assert!(
        figures.succeeded_per_host.iter().all(|n| *n > 0),
        "{figures:?}"
    );
    drop(relay);
}

/// Tasks each setup of the throughput measurement drains (`PARTY_TASKS` overrides).
const THROUGHPUT_TASKS: usize = 20_000;
/// `--concurrency` and `--prefetch` of each worker process in the throughput measurement.
const THROUGHPUT_CONCURRENCY: usize = 32;

/// What one setup of the throughput measurement showed.
struct Throughput {
    setup: String,
    tasks: usize,
    seconds: f64,
    /// Each process's peak connections (its pool's and its wake-up connection).
    peak_connections: Vec<usize>,
    /// The 1-minute load average before and after the drain.
    load: (String, String),
}

/// The `party` binary the measurement runs: `PARTY` (a release build) or the test's own.
fn measured_party() -> String {
    match std::env::var("PARTY") {
        Ok(p) if !p.trim().is_empty() => std::fs::canonicalize(p.trim())
            .unwrap_or_else(|e| {
                panic!("PARTY={p}: {e}; build it with `cargo build --release -p party-cli`")
            })
            .display()
            .to_string(),
        _ => PARTY.to_string(),
    }
}

/// The 1-minute load average (`uptime`'s first figure).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Samples `pg_stat_activity` every 100 ms until stopped: the peak connection count of each
/// application name starting with `prefix` (a process's `"<name> signal"` wake-up connection
/// counted under `<name>`).
struct ConnectionSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, usize>>,
}

impl ConnectionSampler {
    fn start(url: String, prefix: String) -> ConnectionSampler {
        use party::store::postgres::tokio_postgres::{self, NoTls};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .expect("the sampler connects");
                tokio::spawn(conn);
                let mut peak = BTreeMap::<String, usize>::new();
                while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    let rows = client
                        .query(
                            "SELECT application_name, count(*) FROM pg_stat_activity \
                             GROUP BY application_name",
                            &[],
                        )
                        .await
                        .expect("the sampler reads pg_stat_activity");
                    let mut now = BTreeMap::<String, usize>::new();
                    for row in rows {
                        let name: String = row.get(0);
                        let count: i64 = row.get(1);
                        if name.starts_with(&prefix) {
                            *now.entry(name.trim_end_matches(" signal").to_string())
                                .or_default() += count as usize;
                        }
                    }
                    for (name, count) in now {
                        let p = peak.entry(name).or_default();
                        *p = (*p).max(count);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                peak
            })
        });
        ConnectionSampler { stop, thread }
    }

    fn stop(self) -> BTreeMap<String, usize> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the sampler")
    }
}

/// Add `tasks` due no-op tasks to a fresh schema, start `processes` `party worker
/// --until-idle` at once (on hosts 1, 2, … when `hosts` is given, else on this one over
/// 127.0.0.1), time them until the last exits, and check every task is done after one attempt.
fn drain(
    cluster: &Cluster,
    hosts: Option<&Hosts>,
    processes: usize,
    tasks: usize,
    binary: &str,
    schema: &str,
    setup: &str,
) -> Throughput {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let local = format!("{}?schema={schema}", cluster.url());
    let party = rt
        .block_on(Party::connect(&local, party::builtin::registry(false)))
        .unwrap();
    let due: Vec<NewTask> = (0..tasks)
        .map(|i| NewTask::new("noop").data(json!({ "i": i })))
        .collect();
    for chunk in due.chunks(5_000) {
        rt.block_on(party.add_many(chunk.to_vec())).unwrap();
    }
    let app = |k: usize| format!("party_throughput_{schema}_{k}");
    let sampler = ConnectionSampler::start(cluster.url(), format!("party_throughput_{schema}_"));
    let load_before = load_average();
    let concurrency = THROUGHPUT_CONCURRENCY.to_string();
    let started = Instant::now();
    let mut workers = Workers {
        procs: (1..=processes)
            .map(|k| {
                let (mut cmd, server) = match hosts {
                    Some(h) => (h.on(k, binary), h.gateway(k)),
                    None => (Command::new(binary), "127.0.0.1".to_string()),
                };
                let url = format!(
                    "postgres://postgres@{server}:{}/postgres?schema={schema}&application_name={}",
                    cluster.port,
                    app(k)
                );
                cmd.args(["--db", &url, "worker", "--until-idle"])
                    .args(["--concurrency", &concurrency, "--prefetch", &concurrency])
                    .env_remove("PARTY_DATABASE_URL")
                    .env("PARTY_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start a worker")
            })
            .collect(),
    };
    let mut failed = Vec::new();
    for (k, c) in workers.procs.drain(..).enumerate() {
        let out = c.wait_with_output().expect("worker output");
        if !out.status.success() {
            failed.push(format!(
                "process {} ({}): {}",
                k + 1,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let load_after = load_average();
    let peak = sampler.stop();
    assert!(failed.is_empty(), "{setup}: {}", failed.join("; "));

    let all = rt
        .block_on(party.list(&ListFilter {
            limit: Some(u32::MAX),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(all.len(), tasks, "{setup}: tasks in the store");
    for task in &all {
        assert_eq!(
            task.state,
            State::Done,
            "{setup}: task {} not done",
            task.id
        );
        // A claim counts an attempt, so a task run twice (lost and rescued) would show 2.
        assert_eq!(
            task.attempts, 1,
            "{setup}: task {} ran {} times",
            task.id, task.attempts
        );
    }
    Throughput {
        setup: setup.to_string(),
        tasks,
        seconds,
        peak_connections: (1..=processes)
            .map(|k| peak.get(&app(k)).copied().unwrap_or(0))
            .collect(),
        load: (load_before, load_after),
    }
}

/// A whole number from the environment variable `name`, from 1 to `max`, or `default`.
fn env_count(name: &str, default: usize, max: usize) -> usize {
    match std::env::var(name) {
        Ok(n) => n
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .unwrap_or_else(|| panic!("{name}={n}: give a whole number from 1 to {max}")),
        Err(_) => default,
    }
}

/// A measurement, not a check: the throughput of three hosts (one worker process in each of
/// three network namespaces, over their veth links) beside one and three worker processes on
/// this host over 127.0.0.1, against the same PostgreSQL cluster in the same run. Each round
/// drains all three setups, each round starting with the next setup, so a change in the
/// machine's load falls on each in turn. Run by hand as root with a release build
/// (docs/SCALING.md, "Three hosts"):
///
/// ```sh
/// cargo build --release -p party-cli
/// PARTY=target/release/party cargo test -p party-cli --test partition -- --ignored --nocapture
/// ```
///
/// `PARTY_TASKS` (default 20,000) and `PARTY_ROUNDS` (default 3) change the size.
#[test]
#[ignore = "a measurement: run by hand with --ignored --nocapture (docs/SCALING.md)"]
fn throughput_of_three_hosts_beside_one_and_three_processes_on_one_host() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tasks = env_count("PARTY_TASKS", THROUGHPUT_TASKS, 1_000_000);
    let rounds = env_count("PARTY_ROUNDS", 3, 20);
    let binary = measured_party();
    let Some((hosts, cluster)) = hosts_and_cluster() else {
        return;
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "throughput: {tasks} due no-op tasks per setup and round, {rounds} rounds, each process \
         `party worker --until-idle --concurrency {THROUGHPUT_CONCURRENCY} --prefetch \
         {THROUGHPUT_CONCURRENCY}`; {binary}; {cores} cores; PostgreSQL cluster of the test's \
         own on port {} (fsync off)",
        cluster.port
    );
    let setups: [(Option<&Hosts>, usize, &str, &str); 3] = [
        (
            Some(&hosts),
            HOSTS,
            "hosts3",
            "3 hosts (namespaces), 1 process each",
        ),
        (None, 1, "local1", "this host, 1 process"),
        (None, 3, "local3", "this host, 3 processes"),
    ];
    println!(
        "{:<6} {:<38} {:>8} {:>8} {:>9} {:>22} {:>13}",
        "round",
        "setup",
        "tasks",
        "seconds",
        "tasks/s",
        "peak connections/proc",
        "load before→after"
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 0..rounds {
        for turn in 0..setups.len() {
            let which = (round + turn) % setups.len();
            let (on, processes, tag, setup) = setups[which];
            let r = drain(
                &cluster,
                on,
                processes,
                tasks,
                &binary,
                &format!("{tag}_r{round}"),
                setup,
            );
            let rate = r.tasks as f64 / r.seconds;
            rates[which].push(rate);
            let peaks = r
                .peak_connections
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" / ");
            println!(
                "{:<6} {:<38} {:>8} {:>8.2} {:>9.0} {:>22} {:>13}",
                round + 1,
                r.setup,
                r.tasks,
                r.seconds,
                rate,
                peaks,
                format!("{}→{}", r.load.0, r.load.1)
            );
        }
    }
    for ((_, _, _, setup), mut r) in setups.iter().zip(rates) {
        r.sort_by(f64::total_cmp);
        println!(
            "median of {rounds}: {setup:<38} {:>9.0} tasks/s (lowest {:.0}, highest {:.0})",
            (r[(r.len() - 1) / 2] + r[r.len() / 2]) / 2.0,
            r[0],
            r[r.len() - 1]
        );
    }
}
