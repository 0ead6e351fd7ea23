//! `party bench`: how fast party is on the database `--db` names, each figure beside the limit
//! the database itself allows.
//!
//! Every measurement runs on a fresh scratch store next to the named one (SQLite: a temporary
//! file in the same directory; PostgreSQL: a scratch schema, dropped afterwards), so the named
//! database is never touched. The plain-SQL limit is measured with hand-written batched SQL on
//! a scratch table of the same database: it is what a job queue could reach if it did nothing
//! but claim and complete rows, 500 a transaction.
//!
//! This module is the one place outside `party::store` that writes SQL: the limit has to be
//! measured with the database's own client, without party in between.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use party::jiff::{SignedDuration, Timestamp};
use party::store::Store;
use party::{NewTask, Party, TaskError, TaskId, WorkerConfig};
use serde::Serialize;

mod soak;

pub use soak::{Bytes, Soak};

/// Options for [`run`].
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Scale every workload down (about 50× fewer tasks) so the whole run takes seconds.
    pub quick: bool,
    /// How to start a separate worker process: program and arguments, where the argument
    /// `{db}` is replaced by the scratch database URL. Used for the worker's resident memory
    /// and, on PostgreSQL, for enqueue→start latency across processes. Empty: measured in
    /// this process instead.
    pub worker_command: Vec<String>,
    /// Also run the soak: a million tasks (20,000 with `quick`) through one store with
    /// retention at one minute.
    pub soak: bool,
}

/// A rate: how many in how long.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Items processed.
    pub count: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Items per second.
    pub per_second: f64,
}

impl Rate {
    fn new(count: u64, elapsed: Duration) -> Rate {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Rate {
            count,
            seconds,
            per_second: count as f64 / seconds,
        }
    }
}

/// No-op processing throughput at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Tasks run at the same time.
    pub concurrency: usize,
    /// Tasks drained and how fast.
    pub rate: Rate,
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples taken.
    pub samples: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Median time to the claim alone (the run's start), ms.
    pub claim_p50_ms: f64,
    /// 99th percentile time to the claim alone, ms.
    pub claim_p99_ms: f64,
    /// `in-process` or `cross-process`.
    pub worker: String,
}

/// Claim cost and worker memory with many future tasks in the table, against an empty one.
#[derive(Debug, Clone, Serialize)]
pub struct FutureLoad {
    /// Future tasks in the loaded table.
    pub future_tasks: u64,
    /// Inserting them.
    pub insert: Rate,
    /// Due tasks drained (concurrency 32) with no future tasks.
    pub drain_empty: Rate,
    /// The same with the future tasks present.
    pub drain_loaded: Rate,
    /// One claim that finds nothing due, empty table, microseconds (mean).
    pub idle_claim_empty_us: f64,
    /// The same with the future tasks present.
    pub idle_claim_loaded_us: f64,
    /// Per-task claim-and-finish time, loaded ÷ empty (1.0 = no cost).
    pub claim_cost_ratio: f64,
    /// Resident memory of an idle worker on the empty table, MB.
    pub worker_rss_empty_mb: f64,
    /// Resident memory of a worker idling over the future tasks, MB.
    pub worker_rss_loaded_mb: f64,
    /// `worker process` or `this process`.
    pub rss_of: String,
}

/// What the database allows with plain batched SQL (500 rows a transaction).
#[derive(Debug, Clone, Serialize)]
pub struct PlainSql {
    /// Rows inserted, 500 a transaction.
    pub insert: Rate,
    /// Rows claimed then completed, 500 a transaction each.
    pub claim_complete: Rate,
}

/// Everything `party bench` measures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Whether `--quick` scaled the workloads down.
    pub quick: bool,
    /// When the run started.
    pub started_at: String,
    /// Bulk enqueue (`Party::add_many`, 1000 a batch).
    pub bulk_enqueue: Rate,
    /// Single enqueue (`Party::add`, one transaction each, one after another).
    pub single_enqueue: Rate,
    /// No-op throughput by concurrency.
    pub throughput: Vec<Throughput>,
    /// Enqueue→start with an idle worker (measured to the end of the no-op handler).
    pub enqueue_to_start: Latency,
    /// Due→start lateness for tasks scheduled a few seconds ahead.
    pub due_to_start: Latency,
    /// Claim cost and memory with many future tasks.
    pub future_load: FutureLoad,
    /// The database's own limit.
    pub plain_sql: PlainSql,
    /// The soak, when asked for (`--soak`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
}

struct Sizes {
    bulk: usize,
    single: usize,
    drain: usize,
    latency: usize,
    lateness: usize,
    future: usize,
    future_drain: usize,
    plain: usize,
    soak: usize,
}

/// The worker's concurrency in the soak.
const SOAK_CONCURRENCY: usize = 32;

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                bulk: 20_000,
                single: 200,
                drain: 5_000,
                latency: 100,
                lateness: 100,
                future: 50_000,
                future_drain: 2_000,
                plain: 20_000,
                soak: 20_000,
            }
        } else {
            Sizes {
                bulk: 200_000,
                single: 2_000,
                drain: 100_000,
                latency: 500,
                lateness: 300,
                future: 1_000_000,
                future_drain: 20_000,
                plain: 200_000,
                soak: 1_000_000,
            }
        }
    }
}

/// The concurrencies the throughput is measured at.
pub const CONCURRENCIES: [usize; 4] = [1, 8, 32, 128];

fn registry() -> party::Registry {
    party::builtin::registry(false)
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A fresh store that disappears after the measurement.
struct Scratch {
    /// The URL party opens.
    url: String,
    /// The URL the plain-SQL limit connects with: the same place, for the database's own client.
    sql_url: String,
    kind: ScratchKind,
}

enum ScratchKind {
    Sqlite(PathBuf),
    Postgres { base: String, schema: String },
}

impl Scratch {
    async fn new(base: &str) -> Result<Scratch, TaskError> {
        let tag = format!("{}_{:08x}", std::process::id(), random_bits());
        if is_postgres(base) {
            let schema = format!("party_bench_{tag}");
            pg::execute(base, &format!("CREATE SCHEMA {schema}")).await?;
            let sep = if base.contains('?') { '&' } else { '?' };
            Ok(Scratch {
                url: format!("{base}{sep}schema={schema}"),
                sql_url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                kind: ScratchKind::Postgres {
                    base: base.to_string(),
                    schema,
                },
            })
        } else {
            let path = base
                .strip_prefix("sqlite://")
                .or_else(|| base.strip_prefix("sqlite:"))
                .unwrap_or(base);
            let dir = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let file = dir.join(format!(".party-bench-{tag}.db"));
            Ok(Scratch {
                url: file.display().to_string(),
                sql_url: file.display().to_string(),
                kind: ScratchKind::Sqlite(file),
            })
        }
    }

    async fn party(&self) -> Result<Party, TaskError> {
        Party::connect(&self.url, registry()).await
    }

    async fn remove(self) {
        match self.kind {
            ScratchKind::Sqlite(file) => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = file.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            ScratchKind::Postgres { base, schema } => {
                if let Err(e) = pg::execute(&base, &format!("DROP SCHEMA {schema} CASCADE")).await {
                    eprintln!("could not drop the scratch schema {schema}: {e}; drop it by hand");
                }
            }
        }
    }
}

/// Run `f` on a fresh scratch store, and remove the store afterwards, also when `f` fails.
async fn in_scratch<T>(
    url: &str,
    f: impl AsyncFnOnce(&Scratch, &Party) -> Result<T, TaskError>,
) -> Result<T, TaskError> {
    let scratch = Scratch::new(url).await?;
    let result = match scratch.party().await {
        Ok(party) => f(&scratch, &party).await,
        Err(e) => Err(e),
    };
    scratch.remove().await;
    result
}

fn random_bits() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn noop_tasks(n: usize, at: Option<Timestamp>) -> Vec<NewTask> {
    (0..n)
        .map(|_| {
            let t = NewTask::new("noop");
            match at {
                Some(at) => t.at(at),
                None => t,
            }
        })
        .collect()
}

async fn add_bulk(party: &Party, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, TaskError> {
    let mut ids = Vec::with_capacity(tasks.len());
    let mut tasks = tasks.into_iter().peekable();
    while tasks.peek().is_some() {
        let batch: Vec<NewTask> = tasks.by_ref().take(1000).collect();
        ids.extend(party.add_many(batch).await?);
    }
    Ok(ids)
}

fn step(what: &str) {
    eprintln!("bench: {what}");
}

/// Run every measurement on scratch stores next to the database `url` names.
///
/// # Errors
/// [`TaskError::Store`] when the database cannot be reached or a scratch store cannot be made.
pub async fn run(url: &str, options: &BenchOptions) -> Result<BenchReport, TaskError> {
    let sizes = Sizes::new(options.quick);
    let started_at = party::format_time(Timestamp::now());
    let backend = if is_postgres(url) {
        "postgres"
    } else {
        "sqlite"
    };

    step("plain SQL limit");
    let plain_sql = plain_sql(url, sizes.plain).await?;

    step("bulk and single enqueue");
    let (bulk_enqueue, single_enqueue) = in_scratch(url, async |_, party| {
        let t = Instant::now();
        add_bulk(party, noop_tasks(sizes.bulk, None)).await?;
        let bulk = Rate::new(sizes.bulk as u64, t.elapsed());
        let t = Instant::now();
        for _ in 0..sizes.single {
            party.add(NewTask::new("noop")).await?;
        }
        Ok((bulk, Rate::new(sizes.single as u64, t.elapsed())))
    })
    .await?;

    let mut throughput = Vec::new();
    for c in CONCURRENCIES {
        step(&format!("no-op throughput at concurrency {c}"));
        let n = if c == 1 {
            sizes.drain / 10
        } else {
            sizes.drain
        };
        let rate = in_scratch(url, async |_, party| drain(party, n, c).await).await?;
        throughput.push(Throughput {
            concurrency: c,
            rate,
        });
    }

    step("enqueue→start latency");
    let enqueue_to_start = enqueue_latency(url, sizes.latency, options).await?;
    step("due→start lateness");
    let due_to_start = lateness(url, sizes.lateness).await?;
    step(&format!("{} future tasks", sizes.future));
    let future_load = future_load(url, &sizes, options).await?;
    let soak = match options.soak {
        true => {
            step(&format!("soak: {} tasks", sizes.soak));
            Some(soak::soak(url, sizes.soak, SOAK_CONCURRENCY).await?)
        }
        false => None,
    };

    Ok(BenchReport {
        backend: backend.to_string(),
        quick: options.quick,
        started_at,
        bulk_enqueue,
        single_enqueue,
        throughput,
        enqueue_to_start,
        due_to_start,
        future_load,
        plain_sql,
        soak,
    })
}

/// How many alternating rounds `party bench --enqueue` runs.
pub const ENQUEUE_ROUNDS: usize = 3;

/// One round of bulk enqueue beside the plain-SQL batched insert.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueRound {
    /// `Party::add_many`, 1000 tasks a call, on a fresh scratch store.
    pub bulk_enqueue: Rate,
    /// The plain-SQL insert, 500 rows a transaction, on a fresh scratch store.
    pub plain_insert: Rate,
    /// Bulk enqueue over the plain insert.
    pub ratio: f64,
}

/// Bulk enqueue against the plain-SQL batched insert, the two alternating for
/// [`ENQUEUE_ROUNDS`] rounds so that each ratio compares measurements minutes apart at most.
///
/// # Errors
/// [`TaskError`] from the database.
pub async fn enqueue(url: &str, quick: bool) -> Result<Vec<EnqueueRound>, TaskError> {
    let sizes = Sizes::new(quick);
    let mut rounds = Vec::new();
    for round in 1..=ENQUEUE_ROUNDS {
        step(&format!("round {round}: plain SQL insert"));
        let plain_insert = plain_sql(url, sizes.plain).await?.insert;
        step(&format!("round {round}: bulk enqueue"));
        let bulk_enqueue = in_scratch(url, async |_, party| {
            let t = Instant::now();
            add_bulk(party, noop_tasks(sizes.bulk, None)).await?;
            Ok(Rate::new(sizes.bulk as u64, t.elapsed()))
        })
        .await?;
        rounds.push(EnqueueRound {
            ratio: bulk_enqueue.per_second / plain_insert.per_second.max(1e-9),
            bulk_enqueue,
            plain_insert,
        });
    }
    Ok(rounds)
}

/// The enqueue rounds as a table.
pub fn enqueue_table(rounds: &[EnqueueRound]) -> String {
    let mut text = String::from("bulk enqueue (1000 a call) against the plain-SQL insert\n");
    for (i, r) in rounds.iter().enumerate() {
        text.push_str(&format!(
            "  round {}  {:>10} tasks/s  plain {:>10} rows/s  {:.0}%\n",
            i + 1,
            format!("{:.0}", r.bulk_enqueue.per_second),
            format!("{:.0}", r.plain_insert.per_second),
            100.0 * r.ratio
        ));
    }
    text
}

/// The concurrency the cost of queue limits is measured at.
pub const LIMITS_CONCURRENCY: usize = 128;

/// No-op throughput of one queue with some controls, beside the same queue without.
#[derive(Debug, Clone, Serialize)]
pub struct LimitCost {
    /// What was set, as `party queue limit` takes it (`none` for the queue without limits).
    pub limits: String,
    /// Tasks drained and how fast.
    pub rate: Rate,
    /// Throughput against the queue without limits, measured in the same run.
    pub ratio: f64,
}

/// What a queue limit costs the claim: no-op throughput at concurrency
/// [`LIMITS_CONCURRENCY`] on a fresh scratch store per variant, without limits and with
/// limits that never bind (so only the cost of applying them is measured), in one run.
///
/// # Errors
/// [`TaskError`] from the database.
pub async fn limits(url: &str, quick: bool) -> Result<Vec<LimitCost>, TaskError> {
    let n = Sizes::new(quick).drain;
    let keys = 1000;
    let variants: [(&str, Option<party::QueueLimits>); 4] = [
        ("none", None),
        (
            "--concurrency 10000",
            Some(party::QueueLimits {
                concurrency: Some(10_000),
                ..party::QueueLimits::default()
            }),
        ),
        (
            "--concurrency 1 --per data.k (1000 keys)",
            Some(party::QueueLimits {
                concurrency: Some(1),
                per: Some("k".to_string()),
                ..party::QueueLimits::default()
            }),
        ),
        (
            "--rate 1000000/1s",
            Some(party::QueueLimits {
                rate: Some(party::Rate::parse("1000000/1s")?),
                ..party::QueueLimits::default()
            }),
        ),
    ];
    let mut out: Vec<LimitCost> = Vec::new();
    for (name, limits) in variants {
        step(&format!(
            "no-op throughput at concurrency {LIMITS_CONCURRENCY}, limits: {name}"
        ));
        let rate = in_scratch(url, async |_, party| {
            let tasks = (0..n)
                .map(|i| NewTask::new("noop").data(serde_json::json!({"k": i % keys})))
                .collect();
            add_bulk(party, tasks).await?;
            if let Some(l) = &limits {
                party.limit_queue(party::DEFAULT_QUEUE, l).await?;
            }
            let t = Instant::now();
            let report = party
                .worker(worker_config(LIMITS_CONCURRENCY))
                .run_until_idle()
                .await?;
            Ok(Rate::new(report.succeeded, t.elapsed()))
        })
        .await?;
        let base = out.first().map_or(rate.per_second, |b| b.rate.per_second);
        out.push(LimitCost {
            limits: name.to_string(),
            ratio: rate.per_second / base.max(1e-9),
            rate,
        });
    }
    Ok(out)
}

/// The limit costs as a table.
pub fn limits_table(costs: &[LimitCost]) -> String {
    let mut text =
        format!("no-op throughput at concurrency {LIMITS_CONCURRENCY} by queue limits\n");
    for c in costs {
        text.push_str(&format!(
            "  {:<42} {:>10} tasks/s  {:.2}x\n",
            c.limits,
            format!("{:.0}", c.rate.per_second),
            c.ratio
        ));
    }
    text
}

fn worker_config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        prefetch: concurrency,
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// Enqueue `n` no-op tasks (not timed), then time a worker draining them.
async fn drain(party: &Party, n: usize, concurrency: usize) -> Result<Rate, TaskError> {
    add_bulk(party, noop_tasks(n, None)).await?;
    let t = Instant::now();
    let report = party
        .worker(worker_config(concurrency))
        .run_until_idle()
        .await?;
    Ok(Rate::new(report.succeeded, t.elapsed()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The time from each task's scheduled instant to the end of its (no-op) first attempt.
async fn delays(party: &Party, ids: &[TaskId], worker: &str) -> Result<Latency, TaskError> {
    let mut ms = Vec::with_capacity(ids.len());
    let mut claim = Vec::with_capacity(ids.len());
    for id in ids {
        let task = party.get(*id).await?;
        if let Some(run) = task.runs.first() {
            let d = run.finished_at.duration_since(task.timestamp);
            ms.push(d.as_secs_f64() * 1000.0);
            let d = run.started_at.duration_since(task.timestamp);
            claim.push(d.as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(f64::total_cmp);
    claim.sort_by(f64::total_cmp);
    Ok(Latency {
        samples: ms.len(),
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        claim_p50_ms: percentile(&claim, 0.50),
        claim_p99_ms: percentile(&claim, 0.99),
        worker: worker.to_string(),
    })
}

/// Wait until every task has left `scheduled`/`running`, or `limit` passes.
async fn wait_done(party: &Party, ids: &[TaskId], limit: Duration) -> Result<(), TaskError> {
    let t = Instant::now();
    for id in ids {
        loop {
            if party.get(*id).await?.state == party::State::Done {
                break;
            }
            if t.elapsed() > limit {
                return Err(TaskError::store(format!(
                    "task {id} did not run within {limit:?}: is the worker running?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// A worker running beside the measurement: in this process, or a child process.
enum Running {
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        handle: tokio::task::JoinHandle<Result<party::WorkerReport, TaskError>>,
    },
    Child(tokio::process::Child),
}

impl Running {
    fn in_process(party: &Party, concurrency: usize) -> Running {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let worker = party.worker(worker_config(concurrency));
        let handle = tokio::spawn(async move {
            worker
                .run(async move {
                    let _ = rx.await;
                })
                .await
        });
        Running::InProcess { stop, handle }
    }

    fn child(command: &[String], url: &str) -> Result<Running, TaskError> {
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| a.replace("{db}", url))
            .collect();
        let child = tokio::process::Command::new(&command[0])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TaskError::store(format!("cannot start a worker process: {e}")))?;
        Ok(Running::Child(child))
    }

    fn rss_mb(&self) -> Option<f64> {
        match self {
            Running::InProcess { .. } => rss_mb("self"),
            Running::Child(c) => rss_mb(&c.id()?.to_string()),
        }
    }

    async fn stop(self) -> Result<(), TaskError> {
        match self {
            Running::InProcess { stop, handle } => {
                let _ = stop.send(());
                handle
                    .await
                    .map_err(|e| TaskError::store(format!("the worker panicked: {e}")))?
                    .map(drop)
            }
            Running::Child(mut c) => {
                if let Some(pid) = c.id() {
                    // SIGTERM asks the worker to stop gracefully; the kill below is the fallback.
                    let _ = std::process::Command::new("kill")
                        .arg("-TERM")
                        .arg(pid.to_string())
                        .status();
                }
                if tokio::time::timeout(Duration::from_secs(5), c.wait())
                    .await
                    .is_err()
                {
                    let _ = c.kill().await;
                }
                Ok(())
            }
        }
    }
}

fn rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn enqueue_latency(
    url: &str,
    samples: usize,
    options: &BenchOptions,
) -> Result<Latency, TaskError> {
    in_scratch(url, async |scratch, party| {
        let cross = is_postgres(url) && !options.worker_command.is_empty();
        let worker = if cross {
            Running::child(&options.worker_command, &scratch.url)?
        } else {
            Running::in_process(party, 8)
        };
        // Let the worker start and go idle; the first task also warms it up.
        let warm = party.add(NewTask::new("noop")).await?;
        wait_done(party, &[warm], Duration::from_secs(30)).await?;
        let mut ids = Vec::with_capacity(samples);
        for _ in 0..samples {
            let id = party.add(NewTask::new("noop")).await?;
            wait_done(party, &[id], Duration::from_secs(10)).await?;
            ids.push(id);
            // Idle again before the next one.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        worker.stop().await?;
        let mode = if cross { "cross-process" } else { "in-process" };
        delays(party, &ids, mode).await
    })
    .await
}

async fn lateness(url: &str, samples: usize) -> Result<Latency, TaskError> {
    in_scratch(url, async |_, party| {
        let worker = Running::in_process(party, 8);
        let start = Timestamp::now() + SignedDuration::from_secs(2);
        let mut ids = Vec::with_capacity(samples);
        for i in 0..samples {
            let at = start + SignedDuration::from_millis(7 * i as i64);
            ids.push(party.add(NewTask::new("noop").at(at)).await?);
        }
        wait_done(party, &ids, Duration::from_secs(60)).await?;
        worker.stop().await?;
        delays(party, &ids, "in-process").await
    })
    .await
}

/// Mean time of `n` claims that find nothing due.
async fn idle_claim_us(store: &Arc<dyn Store>, n: usize) -> Result<f64, TaskError> {
    let handlers = vec!["noop".to_string()];
    let queues = vec![party::DEFAULT_QUEUE.to_string()];
    let t = Instant::now();
    for _ in 0..n {
        let now = Timestamp::now();
        let got = store
            .task_claim(party::store::ClaimParams {
                worker: "bench",
                handlers: &handlers,
                queues: &queues,
                limit: 256,
                now,
                lease_until: now + SignedDuration::from_secs(30),
                promote_limit: party::policy::PROMOTE_BATCH,
                controlled: &[],
            })
            .await?;
        if !got.is_empty() {
            return Err(TaskError::store("a claim found due tasks in an idle table"));
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

async fn idle_rss(party: &Party, url: &str, options: &BenchOptions) -> Result<f64, TaskError> {
    let worker = if options.worker_command.is_empty() {
        Running::in_process(party, 10)
    } else {
        Running::child(&options.worker_command, url)?
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = worker.rss_mb().unwrap_or(0.0);
    worker.stop().await?;
    Ok(rss)
}

async fn future_load(
    url: &str,
    sizes: &Sizes,
    options: &BenchOptions,
) -> Result<FutureLoad, TaskError> {
    in_scratch(url, async |scratch, party| {
        let worker_rss_empty_mb = idle_rss(party, &scratch.url, options).await?;
        let idle_claim_empty_us = idle_claim_us(party.store(), 200).await?;
        let drain_empty = drain(party, sizes.future_drain, 32).await?;

        let far = Timestamp::now() + SignedDuration::from_hours(24);
        let t = Instant::now();
        let mut left = sizes.future;
        while left > 0 {
            let n = left.min(10_000);
            add_bulk(party, noop_tasks(n, Some(far))).await?;
            left -= n;
        }
        let insert = Rate::new(sizes.future as u64, t.elapsed());
        let worker_rss_loaded_mb = idle_rss(party, &scratch.url, options).await?;
        let idle_claim_loaded_us = idle_claim_us(party.store(), 200).await?;
        let drain_loaded = drain(party, sizes.future_drain, 32).await?;
        Ok(FutureLoad {
            future_tasks: sizes.future as u64,
            insert,
            claim_cost_ratio: drain_empty.per_second / drain_loaded.per_second.max(1e-9),
            drain_empty,
            drain_loaded,
            idle_claim_empty_us,
            idle_claim_loaded_us,
            worker_rss_empty_mb,
            worker_rss_loaded_mb,
            rss_of: if options.worker_command.is_empty() {
                "this process".to_string()
            } else {
                "worker process".to_string()
            },
        })
    })
    .await
}

const PLAIN_BATCH: usize = 500;

/// The plain-SQL limit on a scratch table next to the database `url` names: `rows` rows
/// inserted, then claimed and completed, 500 a transaction.
///
/// # Errors
/// [`TaskError::Store`] when the database fails.
pub async fn plain_sql(url: &str, rows: usize) -> Result<PlainSql, TaskError> {
    if is_postgres(url) {
        let scratch = Scratch::new(url).await?;
        let r = pg::plain(&scratch.sql_url, rows).await;
        scratch.remove().await;
        r
    } else {
        let scratch = Scratch::new(url).await?;
        let path = scratch.url.clone();
        let r = tokio::task::spawn_blocking(move || sqlite_plain(Path::new(&path), rows))
            .await
            .map_err(|e| TaskError::store(format!("the plain-SQL run panicked: {e}")))?;
        scratch.remove().await;
        r
    }
}

#[cfg(feature = "sqlite")]
fn sqlite_plain(path: &Path, rows: usize) -> Result<PlainSql, TaskError> {
    let e = TaskError::store;
    let mut conn = rusqlite::Connection::open(path).map_err(e)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
    conn.execute_batch(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload TEXT NOT NULL, \
           run_at INTEGER NOT NULL, state INTEGER NOT NULL, attempts INTEGER NOT NULL, \
           locked_by TEXT); \
         CREATE INDEX jobs_ready ON jobs (run_at) WHERE state = 0;",
    )
    .map_err(e)?;
    let t = Instant::now();
    let mut done = 0;
    while done < rows {
        let tx = conn.transaction().map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO jobs (name, payload, run_at, state, attempts) \
                     VALUES ('noop', '{}', ?1, 0, 0)",
                )
                .map_err(e)?;
            for i in done..(done + PLAIN_BATCH).min(rows) {
                stmt.execute([i as i64]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        done += PLAIN_BATCH;
    }
    let insert = Rate::new(rows as u64, t.elapsed());
    // Claims and completions are written as party writes them: safe from a crash of the
    // process, synced to disk with the next insert (see the SQLite store).
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(e)?;
    let t = Instant::now();
    let mut total = 0u64;
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 1, attempts = attempts + 1, locked_by = 'w' \
                     WHERE id IN (SELECT id FROM jobs WHERE state = 0 ORDER BY run_at LIMIT ?1) \
                     RETURNING id",
                )
                .map_err(e)?;
            stmt.query_map([PLAIN_BATCH as i64], |r| r.get(0))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?
        };
        tx.commit().map_err(e)?;
        if ids.is_empty() {
            break;
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE jobs SET state = 2, locked_by = NULL WHERE id = ?1")
                .map_err(e)?;
            for id in &ids {
                stmt.execute([id]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        total += ids.len() as u64;
    }
    Ok(PlainSql {
        insert,
        claim_complete: Rate::new(total, t.elapsed()),
    })
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_plain(_path: &Path, _rows: usize) -> Result<PlainSql, TaskError> {
    Err(missing("SQLite", "sqlite"))
}

/// The error for a database this build of the command line leaves out.
#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn missing(database: &str, feature: &str) -> TaskError {
    TaskError::invalid(format!(
        "this build of party has no {database} support: enable the `{feature}` feature of the \
         party-cli crate"
    ))
}

/// Without PostgreSQL support every call says so.
#[cfg(not(feature = "postgres"))]
mod pg {
    use party::TaskError;

    use super::PlainSql;

    pub(super) async fn execute(_url: &str, _sql: &str) -> Result<(), TaskError> {
        Err(super::missing("PostgreSQL", "postgres"))
    }

    pub(super) async fn plain(_url: &str, _rows: usize) -> Result<PlainSql, TaskError> {
        Err(super::missing("PostgreSQL", "postgres"))
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use std::time::Instant;

    use party::TaskError;

    use super::{PLAIN_BATCH, PlainSql, Rate};

    async fn connect(url: &str) -> Result<tokio_postgres::Client, TaskError> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                TaskError::store(format!(
                    "cannot connect to {}: {e}",
                    party::validate::redact_url(url)
                ))
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub(super) async fn execute(url: &str, sql: &str) -> Result<(), TaskError> {
        connect(url)
            .await?
            .batch_execute(sql)
            .await
            .map_err(TaskError::store)
    }

    pub(super) async fn plain(url: &str, rows: usize) -> Result<PlainSql, TaskError> {
        let e = TaskError::store;
        let mut client = connect(url).await?;
        client
            .batch_execute(
                "CREATE TABLE jobs (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, \
                   payload JSONB NOT NULL, run_at BIGINT NOT NULL, state SMALLINT NOT NULL, \
                   attempts INT NOT NULL, locked_by TEXT); \
                 CREATE INDEX jobs_ready ON jobs (run_at) WHERE state = 0;",
            )
            .await
            .map_err(e)?;
        let insert_stmt = client
            .prepare(
                "INSERT INTO jobs (name, payload, run_at, state, attempts) \
                 SELECT 'noop', '{}', r, 0, 0 FROM unnest($1::bigint[]) AS r",
            )
            .await
            .map_err(e)?;
        let t = Instant::now();
        let mut done = 0;
        while done < rows {
            let batch: Vec<i64> = (done..(done + PLAIN_BATCH).min(rows))
                .map(|i| i as i64)
                .collect();
            client.execute(&insert_stmt, &[&batch]).await.map_err(e)?;
            done += PLAIN_BATCH;
        }
        let insert = Rate::new(rows as u64, t.elapsed());
        let claim = client
            .prepare(
                "UPDATE jobs SET state = 1, attempts = attempts + 1, locked_by = 'w' \
                 WHERE id IN (SELECT id FROM jobs WHERE state = 0 ORDER BY run_at \
                   LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id",
            )
            .await
            .map_err(e)?;
        let complete = client
            .prepare("UPDATE jobs SET state = 2, locked_by = NULL WHERE id = ANY($1)")
            .await
            .map_err(e)?;
        let t = Instant::now();
        let mut total = 0u64;
        loop {
            let tx = client.transaction().await.map_err(e)?;
            let ids: Vec<i64> = tx
                .query(&claim, &[&(PLAIN_BATCH as i64)])
                .await
                .map_err(e)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.commit().await.map_err(e)?;
            if ids.is_empty() {
                break;
            }
            let tx = client.transaction().await.map_err(e)?;
            tx.execute(&complete, &[&ids]).await.map_err(e)?;
            tx.commit().await.map_err(e)?;
            total += ids.len() as u64;
        }
        Ok(PlainSql {
            insert,
            claim_complete: Rate::new(total, t.elapsed()),
        })
    }
}

fn rate(r: &Rate) -> String {
    format!("{:>10.0}/s", r.per_second)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.0}%", 100.0 * a / b)
    } else {
        "-".to_string()
    }
}

/// The report as a table for people.
pub fn table(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let limit = r.plain_sql.claim_complete.per_second;
    let _ = writeln!(
        s,
        "party bench on {}{}",
        r.backend,
        if r.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(
        s,
        "{:<52} {:>16} {:>18} {:>7}",
        "figure", "party", "limit or baseline", "ratio"
    );
    let mut row = |name: String, value: String, lim: String, rat: String| {
        let _ = writeln!(s, "{name:<52} {value:>16} {lim:>18} {rat:>7}");
    };
    row(
        format!(
            "bulk enqueue ({} tasks, 1000 a batch)",
            r.bulk_enqueue.count
        ),
        rate(&r.bulk_enqueue),
        rate(&r.plain_sql.insert),
        ratio(r.bulk_enqueue.per_second, r.plain_sql.insert.per_second),
    );
    row(
        format!("single enqueue ({} tasks)", r.single_enqueue.count),
        rate(&r.single_enqueue),
        String::new(),
        String::new(),
    );
    for t in &r.throughput {
        row(
            format!(
                "no-op throughput, concurrency {} ({} tasks)",
                t.concurrency, t.rate.count
            ),
            rate(&t.rate),
            format!("{limit:>10.0}/s"),
            ratio(t.rate.per_second, limit),
        );
    }
    for (name, l) in [
        ("enqueue→start", &r.enqueue_to_start),
        ("due→start lateness", &r.due_to_start),
    ] {
        row(
            format!("{name} p50 / p99 ({}, {})", l.worker, l.samples),
            format!("{:.2} / {:.2} ms", l.p50_ms, l.p99_ms),
            format!("claim {:.2} / {:.2}", l.claim_p50_ms, l.claim_p99_ms),
            String::new(),
        );
    }
    let f = &r.future_load;
    row(
        format!("drain with {} future tasks vs none", f.future_tasks),
        rate(&f.drain_loaded),
        rate(&f.drain_empty),
        format!("{:.2}×", f.claim_cost_ratio),
    );
    row(
        "idle claim, future tasks vs none".to_string(),
        format!("{:.0} µs", f.idle_claim_loaded_us),
        format!("{:.0} µs", f.idle_claim_empty_us),
        String::new(),
    );
    row(
        format!("worker RSS, future tasks vs none ({})", f.rss_of),
        format!("{:.1} MB", f.worker_rss_loaded_mb),
        format!("{:.1} MB", f.worker_rss_empty_mb),
        String::new(),
    );
    if let Some(soak) = &r.soak {
        let (first, last) = (&soak.tenths[0], &soak.tenths[soak.tenths.len() - 1]);
        row(
            format!(
                "soak: last tenth vs first ({} tasks, done kept {} s)",
                soak.tasks, soak.retain_done_seconds
            ),
            rate(last),
            rate(first),
            format!("{:.2}×", soak.last_vs_first_tenth),
        );
        let kb = |b: &Bytes| format!("{} + {} kB", b.table_bytes / 1024, b.index_bytes / 1024);
        row(
            "soak: hot table + indexes, end vs first tenth".to_string(),
            kb(&soak.hot_at_end),
            kb(&soak.hot_after_first_tenth),
            format!("{:.2}×", soak.hot_growth),
        );
        row(
            format!(
                "soak: history, then runs, at the end ({} pruned)",
                soak.pruned_tasks
            ),
            kb(&soak.history_at_end),
            kb(&soak.runs_at_end),
            String::new(),
        );
    }
    s
}
