//! `party copy --to URL`: every task and run of the `--db` store into another, empty store,
//! in batches, verified table by table at the end ([`party::copy`]).

use party::copy::{CopyConfig, copy};
use party::validate::redact_url;
use party::{Party, TaskError, builtin};

use crate::args::CopyArgs;
use crate::output;

/// Copy, print the verification (text or JSON), and fail when a table differs.
pub(crate) async fn run(db: &str, args: CopyArgs) -> Result<(), TaskError> {
    // Checked before either store is opened, so a misspelt target creates nothing.
    party::validate::database_url(&args.to)?;
    let from = Party::connect(db, builtin::registry(false)).await?;
    let to = Party::connect(&args.to, builtin::registry(false)).await?;
    let report = copy(&from, &to, CopyConfig { batch: args.batch }).await?;
    if args.json {
        output::print_json(&report.to_json())?;
        return report.verified();
    }
    let rows: Vec<Vec<String>> = report
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.name().to_string(),
                t.copied.to_string(),
                t.source.rows.to_string(),
                t.target.rows.to_string(),
                t.source.checksum.clone(),
                if t.matches() {
                    "yes".to_string()
                } else {
                    format!("NO (target {})", t.target.checksum)
                },
            ]
        })
        .collect();
    let verdict = if report.tables.iter().all(|t| t.matches()) {
        "verified: every table holds the same rows on both sides"
    } else {
        "NOT verified: see the tables marked NO"
    };
    output::print(&format!(
        "copied {} to {} in {} batches\n{}{verdict}\n",
        redact_url(db),
        redact_url(&args.to),
        report.batches,
        output::table(
            &[
                "TABLE",
                "COPIED",
                "SOURCE ROWS",
                "TARGET ROWS",
                "SHA-256 (SOURCE)",
                "MATCHES"
            ],
            &rows
        ),
    ))?;
    report.verified()
}
