//! The same workload on party and on other Rust job queues, on the same databases.
//!
//! Workload: N no-op jobs enqueued in bulk (timed), then drained by one worker at concurrency C
//! (timed until the last job has run). Every system gets a fresh scratch store: a temporary
//! SQLite file, or a scratch PostgreSQL database dropped afterwards. Each system runs in
//! several configurations (its defaults and what its own docs recommend for throughput); the
//! table shows each system's best per backend and concurrency, the JSON file every run.
//!
//! `party-peers [--pg URL] [--dir DIR] [--jobs N] [--json FILE]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The allocator the `party` binary uses. Every system here runs in this one process, so each
/// gets it alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCIES: [usize; 4] = [1, 8, 32, 128];

static DONE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize)]
struct Row {
    system: String,
    backend: String,
    concurrency: usize,
    jobs: u64,
    /// The configuration this row ran with.
    settings: String,
    enqueue_per_s: f64,
    drain_per_s: f64,
    note: String,
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn wait_for(n: u64, limit: Duration) -> Res<Duration> {
    let t = Instant::now();
    while DONE.load(Ordering::Relaxed) < n {
        if t.elapsed() > limit {
            return Err(format!(
                "only {} of {n} jobs ran within {limit:?}",
                DONE.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(t.elapsed())
}

fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{nanos:x}", std::process::id())
}

/// A scratch PostgreSQL database: created, handed out as a URL, dropped.
struct PgScratch {
    admin: String,
    name: String,
    url: String,
}

impl PgScratch {
    async fn new(admin: &str) -> Res<PgScratch> {
        let name = format!("party_peers_{}", tag());
        exec(admin, &format!("CREATE DATABASE {name}")).await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
        Ok(PgScratch {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop(self) {
        let _ = exec(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

async fn exec(url: &str, sql: &str) -> Res<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.batch_execute(sql).await?;
    Ok(())
}

fn sqlite_file(dir: &str, system: &str) -> String {
    format!("{dir}/.peers-{system}-{}.db", tag())
}

fn remove_sqlite(path: &str) {
    for s in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{path}{s}"));
    }
}

mod party_run {
    use super::*;
    use party::{NewTask, Party, WorkerConfig};

    /// party's settings for short tasks (README "Throughput"): `prefetch`, tasks claimed
    /// ahead of free executors, as a local queue. Tried at the concurrency, at 100 and, as
    /// graphile_worker's largest local queue, at 500.
    pub(super) fn settings(c: usize) -> Vec<(String, usize)> {
        let mut v = vec![(format!("prefetch {c}"), c)];
        if c < 100 {
            v.push(("prefetch 100".into(), 100));
        }
        v.push(("prefetch 500".into(), 500));
        v
    }

    pub(super) async fn run(url: &str, n: u64, c: usize, prefetch: usize) -> Res<(f64, f64)> {
        let party = Party::connect(url, party::builtin::registry(false)).await?;
        let t = Instant::now();
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            party
                .add_many((0..k).map(|_| NewTask::new("noop")).collect())
                .await?;
            left -= k;
        }
        let enq = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let report = party
            .worker(WorkerConfig {
                concurrency: c,
                prefetch,
                ..WorkerConfig::default()
            })
            .run_until_idle()
            .await?;
        let drain = report.succeeded as f64 / t.elapsed().as_secs_f64();
        Ok((enq, drain))
    }
}

mod graphile {
    use super::*;
    use graphile_worker::{
        IntoTaskHandlerResult, JobSpec, LocalQueueConfig, TaskHandler, WorkerContext, WorkerOptions,
    };
    use serde::Deserialize;

    #[derive(Clone, Serialize, Deserialize)]
    struct Noop {
        n: u64,
    }

    impl TaskHandler for Noop {
        const IDENTIFIER: &'static str = "noop";

        async fn run(self, _ctx: WorkerContext) -> impl IntoTaskHandlerResult {
            DONE.fetch_add(1, Ordering::Relaxed);
            Ok::<(), String>(())
        }
    }

    /// One configuration of graphile_worker.
    #[derive(Clone)]
    pub(super) struct Settings {
        pub(super) label: String,
        pool: u32,
        local_queue: Option<(usize, usize)>,
        batch_delay: Option<Duration>,
    }

    /// The configurations tried: what its docs recommend for many small jobs (a pool sized to
    /// the concurrency, the local queue of 100 jobs, completions batched every 5 ms, a 500 ms
    /// poll), with a larger local queue of 500, and from concurrency 8 with several local
    /// queues. The pool
    /// is capped at 40: the server allows 100 connections in all. (Without a local queue, its
    /// default, it ran about 2 jobs a second at concurrency 1 here: each fetch waits for the
    /// poll, so that configuration is left out.)
    pub(super) fn settings(c: usize) -> Vec<Settings> {
        let pool = (c as u32).clamp(10, 40);
        let mut v = vec![Settings {
            label: format!("pool {pool}, local queue 100, batch 5 ms"),
            pool,
            local_queue: Some((100, 1)),
            batch_delay: Some(Duration::from_millis(5)),
        }];
        v.push(Settings {
            label: format!("pool {pool}, local queue 500, batch 5 ms"),
            pool,
            local_queue: Some((500, 1)),
            batch_delay: Some(Duration::from_millis(5)),
        });
        if c >= 8 {
            v.push(Settings {
                label: format!("pool {pool}, 4 local queues of 100, batch 5 ms"),
                pool,
                local_queue: Some((100, 4)),
                batch_delay: Some(Duration::from_millis(5)),
            });
        }
        v
    }

    pub(super) async fn run(url: &str, n: u64, c: usize, s: &Settings) -> Res<(f64, f64)> {
        let mut options = WorkerOptions::default()
            .database_url(url)
            .max_pg_conn(s.pool)
            .concurrency(c)
            .schema("graphile_worker")
            .poll_interval(Duration::from_millis(500))
            .listen_os_shutdown_signals(false)
            .define_job::<Noop>();
        if let Some((size, queues)) = s.local_queue {
            options = options.local_queue(
                LocalQueueConfig::default()
                    .with_size(size)
                    .with_queue_count(queues),
            );
        }
        if let Some(delay) = s.batch_delay {
            options = options.complete_job_batch_delay(delay);
        }
        let worker = options.init().await?;
        let utils = worker.create_utils();
        let spec = JobSpec::default();
        let t = Instant::now();
        let mut i = 0;
        while i < n {
            let batch: Vec<(Noop, &JobSpec)> = (i..(i + 1000).min(n))
                .map(|n| (Noop { n }, &spec))
                .collect();
            utils.add_jobs::<Noop>(&batch).await?;
            i += 1000;
        }
        let enq = n as f64 / t.elapsed().as_secs_f64();
        DONE.store(0, Ordering::Relaxed);
        let worker = std::sync::Arc::new(worker);
        let running = {
            let worker = worker.clone();
            tokio::spawn(async move { worker.run().await })
        };
        let took = wait_for(n, Duration::from_secs(600)).await?;
        worker.request_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
        Ok((enq, n as f64 / took.as_secs_f64()))
    }
}

mod apalis_run {
    use super::*;
    use apalis::prelude::*;
    use futures::stream;

    async fn noop(_item: u64) -> Result<(), BoxDynError> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn stop_when_done(n: u64) -> Result<(), std::io::Error> {
        wait_for(n, Duration::from_secs(600))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(())
    }

    /// The configurations tried: its defaults (fetch batches of 10, a pool of 10), then the
    /// larger fetch batch its docs suggest for throughput with a pool sized to the concurrency
    /// (capped at 40: the server allows 100 connections in all).
    pub(super) fn settings(c: usize) -> Vec<(String, usize, u32)> {
        let pool = (c as u32).clamp(10, 40);
        vec![
            ("defaults (batch 10, pool 10)".into(), 10, 10),
            (format!("batch 100, pool {pool}"), 100, pool),
        ]
    }

    pub(super) async fn postgres(
        url: &str,
        n: u64,
        c: usize,
        (_, batch, pool_size): &(String, usize, u32),
    ) -> Res<(f64, f64)> {
        use apalis_postgres::PostgresStorage;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(*pool_size)
            .connect(url)
            .await?;
        PostgresStorage::setup(&pool).await?;
        let config = apalis_postgres::Config::default()
            .queue(std::any::type_name::<u64>())
            .batch_size(*batch);
        let mut backend = PostgresStorage::new(&pool).with_config(config);
        let t = Instant::now();
        let mut items = stream::iter((0..n).map(|i| TaskBuilder::new(i).build()));
        backend.push_all(&mut items).await?;
        let enq = n as f64 / t.elapsed().as_secs_f64();
        DONE.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let worker = WorkerBuilder::new("peers")
            .backend(backend)
            .concurrency(c)
            .build(noop);
        worker.run_until(stop_when_done(n)).await?;
        let took = t.elapsed();
        pool.close().await;
        Ok((enq, n as f64 / took.as_secs_f64()))
    }

    pub(super) async fn sqlite(
        path: &str,
        n: u64,
        c: usize,
        (_, batch, _): &(String, usize, u32),
    ) -> Res<(f64, f64)> {
        use apalis_sqlite::{SqlitePool, SqliteStorage};
        let pool = SqlitePool::connect(&format!("sqlite://{path}?mode=rwc")).await?;
        SqliteStorage::setup(&pool).await?;
        let config = apalis_sqlite::Config::default()
            .queue(std::any::type_name::<u64>())
            .batch_size(*batch);
        let mut backend = SqliteStorage::new(&pool).with_config(config);
        let t = Instant::now();
        let mut items = stream::iter((0..n).map(|i| TaskBuilder::new(i).build()));
        backend.push_all(&mut items).await?;
        let enq = n as f64 / t.elapsed().as_secs_f64();
        DONE.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let worker = WorkerBuilder::new("peers")
            .backend(backend)
            .concurrency(c)
            .build(noop);
        worker.run_until(stop_when_done(n)).await?;
        let took = t.elapsed();
        pool.close().await;
        Ok((enq, n as f64 / took.as_secs_f64()))
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut pg: Option<String> = None;
    let mut dir = std::env::temp_dir().display().to_string();
    let mut jobs: u64 = 20_000;
    // At concurrency 1 a tenth of the jobs by default, which keeps slow configurations short;
    // a run that short is mostly every system's start and stop.
    let mut jobs_at_1: Option<u64> = None;
    let mut json: Option<String> = None;
    let mut only: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pg" => pg = args.next(),
            "--dir" => dir = args.next().expect("--dir DIR"),
            "--jobs" => jobs = args.next().and_then(|s| s.parse().ok()).expect("--jobs N"),
            "--jobs-at-1" => {
                jobs_at_1 = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--jobs-at-1 N"),
                )
            }
            "--json" => json = args.next(),
            "--only" => only = args.next(),
            _ => {
                eprintln!(
                    "usage: party-peers [--pg URL] [--dir DIR] [--jobs N] [--jobs-at-1 N] [--json FILE] [--only SYSTEM,...]"
                );
                std::process::exit(2);
            }
        }
    }
    let wants = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|o| o == s));
    let mut rows: Vec<Row> = Vec::new();
    let mut limits: Vec<(String, f64, f64)> = Vec::new();

    // The plain-SQL limit on each backend.
    let plain_rows = (jobs as usize * 5).max(50_000);
    match party_cli::bench::plain_sql(&format!("{dir}/limit.db"), plain_rows).await {
        Ok(p) => limits.push((
            "sqlite".into(),
            p.insert.per_second,
            p.claim_complete.per_second,
        )),
        Err(e) => eprintln!("plain SQL on SQLite failed: {e}"),
    }
    if let Some(pg) = &pg {
        match party_cli::bench::plain_sql(pg, plain_rows).await {
            Ok(p) => limits.push((
                "postgres".into(),
                p.insert.per_second,
                p.claim_complete.per_second,
            )),
            Err(e) => eprintln!("plain SQL on PostgreSQL failed: {e}"),
        }
    }

    for c in CONCURRENCIES {
        let n = if c == 1 {
            jobs_at_1.unwrap_or(jobs / 10)
        } else {
            jobs
        };
        let mut record = |system: &str,
                          backend: &str,
                          n: u64,
                          settings: &str,
                          r: Res<(f64, f64)>| {
            let (enq, drain, note) = match r {
                Ok((e, d)) => (e, d, String::new()),
                Err(e) => (0.0, 0.0, e.to_string()),
            };
            eprintln!(
                "{system:<16} {backend:<9} c={c:<4} n={n:<7} enqueue {enq:>9.0}/s  drain {drain:>9.0}/s  [{settings}] {note}"
            );
            rows.push(Row {
                system: system.into(),
                backend: backend.into(),
                concurrency: c,
                jobs: n,
                settings: settings.into(),
                enqueue_per_s: enq,
                drain_per_s: drain,
                note,
            });
        };
        if wants("party") {
            for (label, prefetch) in party_run::settings(c) {
                let f = sqlite_file(&dir, "party");
                record(
                    "party",
                    "sqlite",
                    n,
                    &label,
                    party_run::run(&f, n, c, prefetch).await,
                );
                remove_sqlite(&f);
            }
        }
        if wants("apalis") {
            for s in apalis_run::settings(c) {
                let f = sqlite_file(&dir, "apalis");
                // apalis on SQLite is slow: a tenth of the jobs keeps the run short.
                let m = (n / 10).max(100);
                let r = apalis_run::sqlite(&f, m, c, &s).await;
                record("apalis", "sqlite", m, &s.0, r);
                remove_sqlite(&f);
            }
        }
        if let Some(pg) = &pg {
            if wants("party") {
                for (label, prefetch) in party_run::settings(c) {
                    let s = PgScratch::new(pg).await.expect("scratch database");
                    let r = party_run::run(&s.url, n, c, prefetch).await;
                    record("party", "postgres", n, &label, r);
                    s.drop().await;
                }
            }
            if wants("graphile_worker") {
                for settings in graphile::settings(c) {
                    let s = PgScratch::new(pg).await.expect("scratch database");
                    let r = graphile::run(&s.url, n, c, &settings).await;
                    record("graphile_worker", "postgres", n, &settings.label, r);
                    s.drop().await;
                }
            }
            if wants("apalis") {
                for settings in apalis_run::settings(c) {
                    let s = PgScratch::new(pg).await.expect("scratch database");
                    let r = apalis_run::postgres(&s.url, n, c, &settings).await;
                    record("apalis", "postgres", n, &settings.0, r);
                    s.drop().await;
                }
            }
        }
    }

    // Each system at its best: the fastest of its configurations per backend and concurrency.
    let best: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            !rows.iter().any(|o| {
                o.system == r.system
                    && o.backend == r.backend
                    && o.concurrency == r.concurrency
                    && o.drain_per_s > r.drain_per_s
            })
        })
        .collect();

    println!(
        "{:<16} {:<9} {:>5} {:>8} {:>12} {:>12} {:>10} {:>10}",
        "system", "backend", "conc", "jobs", "enqueue/s", "drain/s", "vs party", "vs limit"
    );
    for r in &best {
        let party = best
            .iter()
            .find(|p| {
                p.system == "party" && p.backend == r.backend && p.concurrency == r.concurrency
            })
            .map(|p| p.drain_per_s)
            .unwrap_or(0.0);
        let limit = limits
            .iter()
            .find(|l| l.0 == r.backend)
            .map(|l| l.2)
            .unwrap_or(0.0);
        let pct = |a: f64, b: f64| {
            if b > 0.0 && a > 0.0 {
                format!("{:.2}×", a / b)
            } else {
                "-".into()
            }
        };
        println!(
            "{:<16} {:<9} {:>5} {:>8} {:>12.0} {:>12.0} {:>10} {:>10}  {} {}",
            r.system,
            r.backend,
            r.concurrency,
            r.jobs,
            r.enqueue_per_s,
            r.drain_per_s,
            pct(r.drain_per_s, party),
            pct(r.drain_per_s, limit),
            r.settings,
            r.note
        );
    }
    for (backend, insert, cc) in &limits {
        println!(
            "{:<16} {:<9} {:>5} {:>8} {:>12.0} {:>12.0}",
            "plain SQL", backend, "-", plain_rows, insert, cc
        );
    }
    if let Some(path) = json {
        let out = serde_json::json!({ "rows": rows, "best": best, "limits": limits.iter().map(|(b, i, c)| serde_json::json!({"backend": b, "insert_per_s": i, "claim_complete_per_s": c})).collect::<Vec<_>>() });
        std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap())
            .expect("write the JSON file");
    }
}
