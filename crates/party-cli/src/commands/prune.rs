//! `party prune`: remove finished tasks and run rows past their retention now, or count them
//! with `--dry-run`.

use party::maintenance::{PruneConfig, PruneReport, Pruner};
use party::recurrence::format_duration;
use party::{Party, TaskError, builtin};
use serde_json::json;

use crate::args::PruneArgs;
use crate::output;

/// Prune (or count) with the retention the flags give; the retention is checked before the
/// database is opened.
pub(crate) async fn run(db: &str, args: PruneArgs) -> Result<(), TaskError> {
    let retention = args.retention.retention()?;
    let party = Party::connect(db, builtin::registry(false)).await?;
    let pruner = Pruner::new(
        party.store().clone(),
        party.clock().clone(),
        PruneConfig {
            retention,
            ..PruneConfig::default()
        },
    );
    let report = if args.dry_run {
        pruner.count().await?
    } else {
        // A pass stops after a bounded number of batches; by hand, go on until none is left.
        let mut total = PruneReport::default();
        loop {
            let r = pruner.run_once().await?;
            total.tasks += r.tasks;
            total.runs += r.runs;
            total.recurring_runs += r.recurring_runs;
            total.batches += r.batches;
            total.reindexed |= r.reindexed;
            total.workers += r.workers;
            if !r.more {
                break total;
            }
        }
    };
    let keep = |d: Option<party::jiff::SignedDuration>| {
        d.map_or_else(|| "forever".to_string(), format_duration)
    };
    if args.json {
        return output::print_json(&json!({
            "dry_run": args.dry_run,
            "tasks": report.tasks,
            "runs": report.runs,
            "recurring_runs": report.recurring_runs,
            "reindexed": report.reindexed,
            "workers": report.workers,
            "retention": {
                "done": keep(retention.done()),
                "dead": keep(retention.dead()),
                "recurring": keep(retention.recurring()),
            },
        }));
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let reindexed = if report.reindexed {
        "rebuilt the live tasks' indexes, which had outgrown their table\n"
    } else {
        ""
    };
    let workers = if report.workers > 0 {
        format!(
            "{} {} rows of workers gone for over {} (stopped without removing them)\n",
            if args.dry_run {
                "would forget"
            } else {
                "forgot"
            },
            report.workers,
            format_duration(party::policy::FORGET_WORKERS_AFTER),
        )
    } else {
        String::new()
    };
    output::print(&format!(
        "{verb} {} finished tasks and {} runs ({} of them old runs of live recurring tasks)\n\
         {reindexed}{workers}retention: done {}, dead and cancelled {}, recurring {}\n",
        report.tasks,
        report.runs,
        report.recurring_runs,
        keep(retention.done()),
        keep(retention.dead()),
        keep(retention.recurring()),
    ))
}
