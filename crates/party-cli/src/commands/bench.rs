//! `party bench`: run the benchmark on scratch stores beside the database and print the report.

use party::TaskError;

use crate::args::BenchArgs;
use crate::bench::{self, BenchOptions};
use crate::output;

/// Measure, then print a table (or JSON with `--json`).
pub(crate) async fn run(db: &str, args: BenchArgs) -> Result<(), TaskError> {
    let exe = std::env::current_exe().map_err(|e| {
        TaskError::store(format!("cannot find this program to start a worker: {e}"))
    })?;
    let options = BenchOptions {
        quick: args.quick,
        soak: args.soak,
        worker_command: vec![
            exe.display().to_string(),
            "--db".into(),
            "{db}".into(),
            "worker".into(),
        ],
    };
    if args.limits {
        let costs = bench::limits(db, args.quick).await?;
        return if args.json {
            let json = serde_json::to_string_pretty(&costs).map_err(TaskError::store)?;
            output::print(&format!("{json}\n"))
        } else {
            output::print(&bench::limits_table(&costs))
        };
    }
    if args.enqueue {
        let rounds = bench::enqueue(db, args.quick).await?;
        return if args.json {
            let json = serde_json::to_string_pretty(&rounds).map_err(TaskError::store)?;
            output::print(&format!("{json}\n"))
        } else {
            output::print(&bench::enqueue_table(&rounds))
        };
    }
    let report = bench::run(db, &options).await?;
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(TaskError::store)?;
        output::print(&format!("{json}\n"))
    } else {
        output::print(&bench::table(&report))
    }
}
