//! The peer workload on effectum: N no-op jobs enqueued in bulk (timed), then drained at
//! concurrency C (timed until the last job has run), on a fresh SQLite file each time.
//!
//! `party-peers-effectum [--dir DIR] [--jobs N] [--json FILE]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use effectum::{Job, JobRunner, Queue, RunningJob, Worker};

static DONE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Ctx;

async fn noop(_job: RunningJob, _ctx: Arc<Ctx>) -> Result<(), effectum::Error> {
    DONE.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The configurations tried: `max_concurrency` alone (fetching whenever a slot frees), and
/// with `min_concurrency` at half of it, so that the worker fetches in batches as its docs
/// describe.
fn settings(c: u16) -> Vec<(String, Option<u16>)> {
    let mut v = vec![(format!("max_concurrency {c}"), None)];
    if c >= 8 {
        v.push((
            format!("max_concurrency {c}, min_concurrency {}", c / 2),
            Some(c / 2),
        ));
    }
    v
}

async fn run(
    dir: &str,
    n: u64,
    c: u16,
    min: Option<u16>,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let path = PathBuf::from(format!(
        "{dir}/.peers-effectum-{}-{nanos:x}.db",
        std::process::id()
    ));
    let queue = Queue::new(&path).await?;
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let batch = (i..(i + 1000).min(n))
            .map(|_| Job::builder("noop").build())
            .collect();
        queue.add_jobs(batch).await?;
        i += 1000;
    }
    let enq = n as f64 / t.elapsed().as_secs_f64();
    DONE.store(0, Ordering::Relaxed);
    let t = Instant::now();
    let mut builder = Worker::builder(&queue, Arc::new(Ctx))
        .max_concurrency(c)
        .jobs([JobRunner::builder("noop", noop).build()]);
    if let Some(min) = min {
        builder = builder.min_concurrency(min);
    }
    let worker = builder.build().await?;
    while DONE.load(Ordering::Relaxed) < n {
        if t.elapsed() > Duration::from_secs(600) {
            return Err("effectum did not drain its jobs within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let drain = n as f64 / t.elapsed().as_secs_f64();
    worker.unregister(Some(Duration::from_secs(5))).await?;
    queue.close(Duration::from_secs(5)).await?;
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", path.display()));
    }
    Ok((enq, drain))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = std::env::temp_dir().display().to_string();
    let mut jobs: u64 = 20_000;
    let mut json: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().expect("--dir DIR"),
            "--jobs" => jobs = args.next().and_then(|s| s.parse().ok()).expect("--jobs N"),
            "--json" => json = args.next(),
            _ => {
                eprintln!("usage: party-peers-effectum [--dir DIR] [--jobs N] [--json FILE]");
                std::process::exit(2);
            }
        }
    }
    let mut rows = Vec::new();
    for c in [1u16, 8, 32, 128] {
        let n = if c == 1 { jobs / 10 } else { jobs };
        for (label, min) in settings(c) {
            let (enq, drain, note) = match run(&dir, n, c, min).await {
                Ok((e, d)) => (e, d, String::new()),
                Err(e) => (0.0, 0.0, e.to_string()),
            };
            println!(
                "effectum         sqlite    c={c:<4} n={n:<7} enqueue {enq:>9.0}/s  drain {drain:>9.0}/s  [{label}] {note}"
            );
            rows.push(serde_json::json!({
                "system": "effectum", "backend": "sqlite", "concurrency": c, "jobs": n,
                "settings": label, "enqueue_per_s": enq, "drain_per_s": drain, "note": note,
            }));
        }
    }
    if let Some(path) = json {
        let out = serde_json::json!({ "rows": rows });
        std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap())
            .expect("write the JSON file");
    }
}
