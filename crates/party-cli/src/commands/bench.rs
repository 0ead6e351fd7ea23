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
        return print(args.json, costs.as_slice(), bench::limits_table);
    }
    if args.enqueue {
        let rounds = bench::enqueue(db, args.quick).await?;
        return print(args.json, rounds.as_slice(), bench::enqueue_table);
    }
    let report = bench::run(db, &options).await?;
    print(args.json, &report, bench::table)
}

/// Print `report` as JSON with `--json`, else as the table `table` makes of it.
fn print<T: serde::Serialize + ?Sized>(
    json: bool,
    report: &T,
    table: impl Fn(&T) -> String,
) -> Result<(), TaskError> {
    if json {
        let json = serde_json::to_string_pretty(report).map_err(TaskError::store)?;
        output::print(&format!("{json}\n"))
    } else {
        output::print(&table(report))
    }
}
