//! `party bench --soak`: a million no-op tasks flowing through one store whose done tasks are
//! kept one minute, to show that the hot table stays the size of the live tasks and that
//! throughput does not sink as the history is written and pruned.
//!
//! The soak runs on a manual clock so that retention acts at once: each chunk of tasks (a
//! hundredth of the total) moves the clock on 6 s, so every tenth of the soak is one simulated
//! minute, and the pruner runs a pass at the end of each (removing what is past retention,
//! then reclaiming the hot table's dead row versions), beside the next tenth's work, as a
//! worker's pruner does once a minute. The sizes are taken after the first tenth's pass and
//! after the last. A chunk is enqueued in batches of 1,000 and drained by a
//! worker; a tenth's throughput counts both.

use std::sync::Arc;
use std::time::Instant;

use party::jiff::{SignedDuration, Timestamp};
use party::maintenance::{PruneConfig, PruneReport, Pruner};
use party::policy::Retention;
use party::store::TableSize;
use party::{ManualClock, Party, TaskError};
use serde::Serialize;

use super::{Rate, add_bulk, in_scratch, noop_tasks, registry, step, worker_config};

/// The simulated time each chunk (a hundredth of the soak) takes.
const CHUNK_SECONDS: i64 = 6;

/// How long done tasks are kept during the soak: the shortest retention party allows.
const RETAIN_DONE: SignedDuration = party::policy::RETAIN_DONE_FLOOR;

/// Space on disk, in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bytes {
    /// The table.
    pub table_bytes: u64,
    /// Its indexes.
    pub index_bytes: u64,
}

impl From<TableSize> for Bytes {
    fn from(s: TableSize) -> Bytes {
        Bytes {
            table_bytes: s.table_bytes,
            index_bytes: s.index_bytes,
        }
    }
}

impl Bytes {
    fn total(&self) -> u64 {
        self.table_bytes + self.index_bytes
    }
}

/// What the soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    /// Tasks that flowed through the store.
    pub tasks: u64,
    /// The worker's concurrency.
    pub concurrency: usize,
    /// How long done tasks were kept, in (simulated) seconds.
    pub retain_done_seconds: i64,
    /// Each tenth of the soak: its tasks enqueued and run, and the wall time that took.
    pub tenths: Vec<Rate>,
    /// The last tenth's throughput over the first's.
    pub last_vs_first_tenth: f64,
    /// The hot table (live tasks) after the first tenth.
    pub hot_after_first_tenth: Bytes,
    /// The hot table at the end.
    pub hot_at_end: Bytes,
    /// The hot table and its indexes at the end over after the first tenth.
    pub hot_growth: f64,
    /// The history of finished tasks at the end (at most about two tenths are kept).
    pub history_at_end: Bytes,
    /// The run rows at the end.
    pub runs_at_end: Bytes,
    /// Finished tasks the pruner removed.
    pub pruned_tasks: u64,
    /// Run rows the pruner removed.
    pub pruned_runs: u64,
    /// Each prune pass's wall time in seconds, in order: the first ran alone after the first
    /// tenth, each other beside the next tenth's work (the last after the last tenth).
    pub prune_pass_seconds: Vec<f64>,
}

/// Run `total` tasks through a fresh scratch store beside `url`.
pub(super) async fn soak(url: &str, total: usize, concurrency: usize) -> Result<Soak, TaskError> {
    in_scratch(url, async |_, scratch| {
        let clock = ManualClock::new(Timestamp::now());
        let store = scratch.store().clone();
        let party =
            Party::with_store(store.clone(), registry()).with_clock(Arc::new(clock.clone()));
        let pruner = Pruner::new(
            store.clone(),
            Arc::new(clock.clone()),
            PruneConfig {
                retention: Retention::new(Some(RETAIN_DONE), None, None)?,
                ..PruneConfig::default()
            },
        );
        let config = party::WorkerConfig {
            // The soak's own pruner removes what is past retention; the worker keeps all.
            retention: Retention::forever(),
            ..worker_config(concurrency)
        };
        let chunk = (total / 100).max(1);
        let mut tenths = Vec::new();
        let mut first = None;
        let mut pruned = PruneReport::default();
        let mut pruning: Option<Pass> = None;
        let mut pass_seconds = Vec::new();
        for tenth in 0..10 {
            step(&format!("soak: tenth {} of 10", tenth + 1));
            let started = Instant::now();
            let mut ran = 0;
            for _ in 0..10 {
                clock.advance(SignedDuration::from_secs(CHUNK_SECONDS));
                add_bulk(&party, noop_tasks(chunk, None)).await?;
                ran += party
                    .worker(config.clone())
                    .run_until_idle()
                    .await?
                    .succeeded;
            }
            // A simulated minute has passed: the pruner's turn, beside the next tenth.
            if let Some(pass) = pruning.take() {
                add_report(&mut pruned, join(pass, &mut pass_seconds).await?);
            }
            tenths.push(Rate::new(ran, started.elapsed()));
            let pass = pruner.clone();
            let pass = tokio::spawn(async move {
                let t = Instant::now();
                let report = pass.run_once().await;
                (report, t.elapsed().as_secs_f64())
            });
            if first.is_none() {
                // Measured as the end is: after the pass.
                add_report(&mut pruned, join(pass, &mut pass_seconds).await?);
                first = Some(store.table_sizes().await?);
            } else {
                pruning = Some(pass);
            }
        }
        if let Some(pass) = pruning.take() {
            add_report(&mut pruned, join(pass, &mut pass_seconds).await?);
        }
        let first = first.expect("ten tenths ran");
        let end = store.table_sizes().await?;
        let (hot_first, hot_end) = (Bytes::from(first.live), Bytes::from(end.live));
        Ok(Soak {
            tasks: tenths.iter().map(|t| t.count).sum(),
            concurrency,
            retain_done_seconds: RETAIN_DONE.as_secs(),
            last_vs_first_tenth: tenths[9].per_second / tenths[0].per_second.max(1e-9),
            tenths,
            hot_growth: hot_end.total() as f64 / hot_first.total().max(1) as f64,
            hot_after_first_tenth: hot_first,
            hot_at_end: hot_end,
            history_at_end: end.history.into(),
            runs_at_end: end.runs.into(),
            pruned_tasks: pruned.tasks,
            pruned_runs: pruned.runs,
            prune_pass_seconds: pass_seconds,
        })
    })
    .await
}

/// A prune pass running beside the soak: its report and how long it took.
type Pass = tokio::task::JoinHandle<(Result<PruneReport, TaskError>, f64)>;

async fn join(pass: Pass, seconds: &mut Vec<f64>) -> Result<PruneReport, TaskError> {
    let (report, took) = pass
        .await
        .map_err(|e| TaskError::store(format!("the soak's prune pass stopped: {e}")))?;
    seconds.push(took);
    report
}

fn add_report(total: &mut PruneReport, r: PruneReport) {
    total.tasks += r.tasks;
    total.runs += r.runs;
    total.recurring_runs += r.recurring_runs;
    total.batches += r.batches;
    total.more |= r.more;
}
