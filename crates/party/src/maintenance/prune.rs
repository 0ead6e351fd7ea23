//! The pruner: removes finished tasks and old run rows once they are past their retention
//! ([`Retention`]), in small batches, so the store does not grow without end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::Service;
use crate::TaskError;
use crate::clock::Clock;
use crate::policy::{self, Retention};
use crate::store::{PruneCounts, PruneParams, Store};

/// How the pruner runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneConfig {
    /// How long finished tasks and run rows are kept (default [`Retention::default`]).
    pub retention: Retention,
    /// Time between passes (default 1 min).
    pub interval: Duration,
    /// Finished tasks (and, separately, run rows of live recurring tasks) removed per batch
    /// (default [`policy::PRUNE_BATCH`]); a pass runs batches until less than one remains, at
    /// most [`policy::PRUNE_ROUNDS`] of them.
    pub batch: u32,
}

impl Default for PruneConfig {
    fn default() -> PruneConfig {
        PruneConfig {
            retention: Retention::default(),
            interval: Duration::from_secs(60),
            batch: policy::PRUNE_BATCH,
        }
    }
}

/// What one prune pass removed (or, for [`Pruner::count`], would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Finished tasks.
    pub tasks: u64,
    /// Run rows: those of the removed tasks and old ones of live recurring tasks.
    pub runs: u64,
    /// Of `runs`, the old run rows of live recurring tasks.
    pub recurring_runs: u64,
    /// Batches the pass ran.
    pub batches: u32,
    /// Whether the pass stopped at [`policy::PRUNE_ROUNDS`] batches with more left to remove.
    pub more: bool,
    /// Whether the pass rebuilt the hot table's indexes ([`policy::hot_indexes_bloated`]).
    pub reindexed: bool,
    /// Rows of workers gone for longer than [`policy::FORGET_WORKERS_AFTER`] (killed, so
    /// they never removed their own).
    pub workers: u64,
}

impl PruneReport {
    fn add(&mut self, c: PruneCounts) {
        self.tasks += c.tasks;
        self.runs += c.task_runs + c.recurring_runs;
        self.recurring_runs += c.recurring_runs;
        self.batches += 1;
    }
}

/// Removes finished tasks past their retention with all their run rows, and run rows of live
/// recurring tasks past the recurring retention. A live task is never removed. Each pass also
/// forgets workers gone for longer than [`policy::FORGET_WORKERS_AFTER`], whatever the
/// retention. Every cutoff is
/// measured from when a task finished (its last update) and decided here, from the clock and
/// the [`Retention`]; the store only applies them.
#[derive(Clone)]
pub struct Pruner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: PruneConfig,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner")
            .field("config", &self.config)
            .finish()
    }
}

impl Pruner {
    /// A pruner over `store`, reading time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: PruneConfig) -> Pruner {
        Pruner {
            store,
            clock,
            config,
        }
    }

    fn params(&self, limit: u32, dry_run: bool) -> PruneParams {
        let cutoffs = self.config.retention.cutoffs(self.clock.now());
        PruneParams {
            done_before: cutoffs.done_before,
            dead_before: cutoffs.dead_before,
            recurring_before: cutoffs.recurring_before,
            limit,
            dry_run,
        }
    }

    /// One pass: remove batches of `batch` until less than a batch remains, or
    /// [`policy::PRUNE_ROUNDS`] batches ran (the rest waits for the next pass); forget the
    /// workers gone for longer than [`policy::FORGET_WORKERS_AFTER`]; then reclaim
    /// the space of what it removed ([`Store::history_vacuum`]), the hot table's dead row
    /// versions ([`Store::task_vacuum`]), whatever the retention, and rebuild the hot table's
    /// indexes when they are bloated ([`policy::hot_indexes_bloated`]).
    ///
    /// # Errors
    /// [`TaskError::Store`] when the store fails; each batch is one transaction, so what the
    /// batches before it removed stays removed and nothing is half-removed.
    pub async fn run_once(&self) -> Result<PruneReport, TaskError> {
        let mut report = self.remove().await?;
        report.workers = self
            .store
            .workers_forget(self.workers_gone_before(), false)
            .await?;
        // What the pass removed leaves room in the history and `runs` that only a vacuum
        // makes reusable on PostgreSQL; a pass that removed nothing leaves none.
        if report.tasks + report.runs > 0 {
            self.store.history_vacuum().await?;
        }
        self.store.task_vacuum().await?;
        if self.store.indexes_keep_freed_pages()
            && policy::hot_indexes_bloated(self.store.table_sizes().await?.live)
        {
            self.store.task_reindex().await?;
            report.reindexed = true;
        }
        Ok(report)
    }

    async fn remove(&self) -> Result<PruneReport, TaskError> {
        let mut report = PruneReport::default();
        if self.config.retention.keeps_everything() {
            return Ok(report);
        }
        let batch = self.config.batch.max(1);
        for _ in 0..policy::PRUNE_ROUNDS {
            let counts = self.store.task_prune(self.params(batch, false)).await?;
            report.add(counts);
            if counts.tasks < u64::from(batch) && counts.recurring_runs < u64::from(batch) {
                return Ok(report);
            }
        }
        report.more = true;
        Ok(report)
    }

    /// Count what a pass would remove now, without removing anything (all of it, not one
    /// batch).
    ///
    /// # Errors
    /// [`TaskError::Store`] when the store fails.
    pub async fn count(&self) -> Result<PruneReport, TaskError> {
        let mut report = PruneReport {
            workers: self
                .store
                .workers_forget(self.workers_gone_before(), true)
                .await?,
            ..PruneReport::default()
        };
        if self.config.retention.keeps_everything() {
            return Ok(report);
        }
        report.add(self.store.task_prune(self.params(u32::MAX, true)).await?);
        Ok(report)
    }

    fn workers_gone_before(&self) -> jiff::Timestamp {
        self.clock.now() - policy::FORGET_WORKERS_AFTER
    }
}

impl Service for Pruner {
    fn name(&self) -> &'static str {
        "prune"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn pass(&self) -> Pin<Box<dyn Future<Output = Result<u64, TaskError>> + Send + '_>> {
        Box::pin(async move {
            let r = self.run_once().await?;
            Ok(r.tasks + r.runs + r.workers)
        })
    }
}
