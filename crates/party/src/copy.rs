//! Copying every task from one store to another: SQLite to PostgreSQL when an application
//! outgrows one machine, and back for tests and local debugging.
//!
//! # How to use
//! ```no_run
//! use party::copy::{CopyConfig, copy};
//! use party::{Party, Registry};
//!
//! # async fn example() -> Result<(), party::TaskError> {
//! let from = Party::connect("party.db", Registry::new()).await?;
//! let to = Party::connect("postgres://party@db.internal/app", Registry::new()).await?;
//! let report = copy(&from, &to, CopyConfig::default()).await?;
//! report.verified()?; // every table's rows and checksum agree
//! # Ok(()) }
//! ```
//!
//! # What is copied
//! Every row of the live tasks (`tasks`), the finished tasks (`task_history`), the run rows
//! (`runs`) and the queue controls (`queues`: pauses and limits), with every column as
//! stored: ids, data, `timestamp`, `last_run_on`, attempts, rules, states, fences, unique keys,
//! a task's runs in their order. The finished-task counters follow from the rows on the
//! target. Workers and maintenance leaderships are not copied: they belong to the source's
//! processes. Nor is the start log of rate-limited queues, which covers only the current
//! rate window: for that one window after the move, a rate-limited queue may start up to
//! its rate again.
//!
//! A running task is copied as it is, worker and lease included: no worker of the source is
//! live (the copy refuses otherwise), so its attempt was lost, and the target's rescue
//! releases it once its lease has ended, exactly as it would have on the source.
//!
//! # Refusals
//! - A worker is live on the source or on the target (its liveness, `live_until`, has not
//!   ended): stop the workers first. Nothing is written.
//! - The target already holds tasks, run rows or queue controls: copy into an empty store.
//!   Nothing is written.
//!
//! # Batches and verification
//! Each table is read in key order (ids; run rows by task, then in their recorded order;
//! queues by name)
//! [`CopyConfig::batch`] rows at a time, and each batch is written to the target in one
//! transaction, so memory stays bounded whatever the store holds. At the end both stores are
//! read again, table by table, and each row's canonical text (a JSON array of its columns,
//! instants as microseconds) is hashed with SHA-256 in order; the same Rust code reads both
//! backends, so equal tables give equal checksums. [`CopyReport::verified`] names any table
//! whose counts or checksums differ: the source changed during the copy, or a write was lost.

use sha2::{Digest, Sha256};

use crate::store::{CopyRead, CopyRows, CopyTable, StatsParams, Store};
use crate::{Party, TaskError};

/// How a copy runs. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy)]
pub struct CopyConfig {
    /// Rows read and written at once, per table (default [`crate::policy::COPY_BATCH`]; 1 to
    /// [`crate::validate::MAX_COPY_BATCH`]).
    pub batch: u32,
}

impl Default for CopyConfig {
    fn default() -> CopyConfig {
        CopyConfig {
            batch: crate::policy::COPY_BATCH,
        }
    }
}

/// How many rows a table holds and the checksum of all of them, as read from one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// Rows.
    pub rows: u64,
    /// SHA-256 of the rows' canonical texts in key order, each followed by a newline, as 64
    /// hex characters.
    pub checksum: String,
}

/// One table of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: CopyTable,
    /// Rows written to the target.
    pub copied: u64,
    /// The source, read back at the end.
    pub source: TableSummary,
    /// The target, read back at the end.
    pub target: TableSummary,
}

impl TableReport {
    /// Whether both stores hold the same rows.
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// What a copy did and what its verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Every table, in copy order.
    pub tables: Vec<TableReport>,
    /// Batches written in all.
    pub batches: u64,
}

impl CopyReport {
    /// `Ok` when every table matches.
    ///
    /// # Errors
    /// [`TaskError::Conflict`] naming each table whose rows or checksums differ.
    pub fn verified(&self) -> Result<(), TaskError> {
        let differ: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !t.matches())
            .map(|t| {
                format!(
                    "{} differs (source {} rows, checksum {}; target {} rows, checksum {})",
                    t.table.name(),
                    t.source.rows,
                    t.source.checksum,
                    t.target.rows,
                    t.target.checksum
                )
            })
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TaskError::Conflict(format!(
            "the copy does not match its source: {}; the source changed during the copy (a \
             worker, an add, a cancel) or a write was lost: empty the target and copy again \
             with every worker and writer of the source stopped",
            differ.join("; ")
        )))
    }

    /// The report as the CLI's `--json` writes it.
    pub fn to_json(&self) -> serde_json::Value {
        let summary =
            |s: &TableSummary| serde_json::json!({"rows": s.rows, "checksum": s.checksum});
        serde_json::json!({
            "verified": self.tables.iter().all(TableReport::matches),
            "batches": self.batches,
            "tables": self.tables.iter().map(|t| serde_json::json!({
                "table": t.table.name(),
                "copied": t.copied,
                "source": summary(&t.source),
                "target": summary(&t.target),
                "matches": t.matches(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Copy every task, finished task, run row and queue control of `from`'s store into `to`'s,
/// batch by batch,
/// then read both back and compare them table by table. See the [module docs](self).
///
/// A report whose tables differ is returned as `Ok`: check it with
/// [`CopyReport::verified`] (the CLI prints it, then fails).
///
/// # Errors
/// [`TaskError::Invalid`] for a batch size out of range; [`TaskError::Conflict`] when a
/// worker is live on either store or the target is not empty (nothing is written then);
/// [`TaskError::Store`] when a read or write fails (batches written before stay written:
/// empty the target before trying again).
pub async fn copy(from: &Party, to: &Party, config: CopyConfig) -> Result<CopyReport, TaskError> {
    crate::validate::copy_batch(&config.batch.to_string(), "1000")?;
    refuse_live_workers(from, "source").await?;
    refuse_live_workers(to, "target").await?;
    refuse_filled(to.store().as_ref()).await?;

    let (source, target) = (from.store().as_ref(), to.store().as_ref());
    let mut copied = Vec::new();
    let mut batches = 0;
    for table in CopyTable::ALL {
        let mut rows = 0;
        let mut after = None;
        loop {
            let batch = source
                .copy_read(CopyRead {
                    table,
                    after,
                    limit: config.batch,
                })
                .await?;
            let n = batch.len() as u64;
            if n == 0 {
                break;
            }
            after = batch.last_key();
            target.copy_write(batch).await?;
            rows += n;
            batches += 1;
            if n < u64::from(config.batch) {
                break;
            }
        }
        copied.push((table, rows));
    }

    let mut tables = Vec::new();
    for (table, copied) in copied {
        tables.push(TableReport {
            table,
            copied,
            source: summarize(source, table, config.batch).await?,
            target: summarize(target, table, config.batch).await?,
        });
    }
    Ok(CopyReport { tables, batches })
}

/// Read one table of `store` batch by batch and return its row count and checksum (see the
/// [module docs](self)). Two stores whose tables hold the same rows give the same summary,
/// whichever backends they are.
///
/// # Errors
/// [`TaskError::Store`] when a read fails.
pub async fn summarize(
    store: &dyn Store,
    table: CopyTable,
    batch: u32,
) -> Result<TableSummary, TaskError> {
    let batch = batch.max(1);
    let mut hash = Sha256::new();
    let mut rows = 0;
    let mut after = None;
    loop {
        let read = store
            .copy_read(CopyRead {
                table,
                after,
                limit: batch,
            })
            .await?;
        let n = read.len() as u64;
        for line in canonical(&read) {
            hash.update(line.as_bytes());
            hash.update(b"\n");
        }
        rows += n;
        after = read.last_key();
        if n < u64::from(batch) {
            break;
        }
    }
    let checksum = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(TableSummary { rows, checksum })
}

/// An attempt's columns in schema order, for [`canonical`].
fn run_fields(r: &crate::store::RunRecord) -> [serde_json::Value; 7] {
    use crate::clock::to_micros;
    use serde_json::json;
    [
        json!(r.attempt),
        json!(to_micros(r.timestamp)),
        json!(to_micros(r.started_at)),
        json!(to_micros(r.finished_at)),
        json!(r.outcome),
        json!(r.error),
        json!(r.worker),
    ]
}

/// Each row's canonical text: a JSON array of its columns in schema order, ids as hex,
/// instants as microseconds since the Unix epoch, absent values as `null`; a history row ends
/// with the attempt it keeps, as an array or `null`. A run row's position, which each store
/// numbers itself, is left out.
fn canonical(rows: &CopyRows) -> Vec<String> {
    use crate::clock::to_micros;
    use serde_json::json;
    let opt = |t: Option<jiff::Timestamp>| t.map(to_micros);
    match rows {
        CopyRows::Live(rows) => rows
            .iter()
            .map(|r| {
                json!([
                    r.id.to_string(),
                    r.handler,
                    r.data,
                    to_micros(r.timestamp),
                    to_micros(r.due_at),
                    r.ready,
                    opt(r.last_run_on),
                    r.attempts,
                    r.max_attempts,
                    r.is_recurring,
                    r.rule,
                    r.state,
                    r.queue,
                    r.priority,
                    r.last_error,
                    r.fence,
                    r.worker,
                    opt(r.started_at),
                    opt(r.lease_until),
                    to_micros(r.created_at),
                    to_micros(r.updated_at),
                    r.unique_key,
                    r.cancel_requested,
                ])
                .to_string()
            })
            .collect(),
        CopyRows::History(rows) => rows
            .iter()
            .map(|r| {
                json!([
                    r.id.to_string(),
                    r.handler,
                    r.data,
                    to_micros(r.timestamp),
                    to_micros(r.due_at),
                    opt(r.last_run_on),
                    r.attempts,
                    r.max_attempts,
                    r.is_recurring,
                    r.rule,
                    r.state,
                    r.queue,
                    r.priority,
                    r.last_error,
                    r.fence,
                    to_micros(r.created_at),
                    to_micros(r.finished_at),
                    r.unique_key,
                    r.run.as_ref().map(|run| run_fields(run).to_vec()),
                ])
                .to_string()
            })
            .collect(),
        CopyRows::Queues(rows) => rows
            .iter()
            .map(|q| {
                json!([
                    q.name,
                    q.paused,
                    q.concurrency,
                    q.per_key,
                    q.rate_count,
                    q.rate_period_ms,
                    to_micros(q.updated_at),
                ])
                .to_string()
            })
            .collect(),
        CopyRows::Runs(rows) => rows
            .iter()
            .map(|r| {
                let mut row = vec![json!(r.task_id.to_string())];
                row.extend(run_fields(&r.run));
                json!(row).to_string()
            })
            .collect(),
    }
}

/// Refuse while a worker of `party`'s store is live.
async fn refuse_live_workers(party: &Party, which: &str) -> Result<(), TaskError> {
    let now = party.clock().now();
    let stats = party
        .store()
        .stats(StatsParams {
            now,
            finished_since: now,
            stuck_limit: 0,
        })
        .await?;
    let Some(first) = stats.workers.first() else {
        return Ok(());
    };
    Err(TaskError::Conflict(format!(
        "cannot copy while a worker is live on the {which}: {} worker(s), e.g. {} (live until \
         {}); stop every worker of the {which} first (a worker that was killed counts as live \
         until then)",
        stats.workers.len(),
        crate::validate::quote(&first.id),
        crate::format_time(first.live_until),
    )))
}

/// Refuse a target that holds any task, run row or queue control.
async fn refuse_filled(target: &dyn Store) -> Result<(), TaskError> {
    for table in CopyTable::ALL {
        let found = target
            .copy_read(CopyRead {
                table,
                after: None,
                limit: 1,
            })
            .await?;
        if !found.is_empty() {
            let what = match table {
                CopyTable::Live => "live tasks",
                CopyTable::History => "finished tasks",
                CopyTable::Runs => "run rows",
                CopyTable::Queues => "queue controls",
            };
            return Err(TaskError::Conflict(format!(
                "the target already holds {what}: copy into an empty store (a new SQLite file, \
                 or a new PostgreSQL schema with ?schema=NAME in the URL)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: u64, checksum: &str) -> TableSummary {
        TableSummary {
            rows,
            checksum: checksum.to_string(),
        }
    }

    #[test]
    fn a_table_that_differs_is_named_with_both_sides() {
        let same = TableReport {
            table: CopyTable::Live,
            copied: 2,
            source: summary(2, "aa"),
            target: summary(2, "aa"),
        };
        let differs = TableReport {
            table: CopyTable::Runs,
            copied: 5,
            source: summary(5, "bb"),
            target: summary(4, "cc"),
        };
        let ok = CopyReport {
            tables: vec![same.clone()],
            batches: 1,
        };
        assert_eq!(ok.verified(), Ok(()));
        assert_eq!(ok.to_json()["verified"], true);
        let bad = CopyReport {
            tables: vec![same, differs],
            batches: 2,
        };
        let Err(TaskError::Conflict(m)) = bad.verified() else {
            panic!("a mismatch is an error");
        };
        assert!(
            m.contains("runs differs (source 5 rows, checksum bb; target 4 rows, checksum cc)"),
            "{m}"
        );
        assert!(!m.contains("tasks differs"), "{m}");
        assert_eq!(bad.to_json()["verified"], false);
        assert_eq!(bad.to_json()["tables"][1]["matches"], false);
    }

    fn record() -> crate::store::RunRecord {
        crate::store::RunRecord {
            attempt: 1,
            timestamp: jiff::Timestamp::from_microsecond(1_000_001).unwrap(),
            started_at: jiff::Timestamp::from_microsecond(2).unwrap(),
            finished_at: jiff::Timestamp::from_microsecond(3).unwrap(),
            outcome: "failed".to_string(),
            error: Some("line\nbreak".to_string()),
            worker: "w".to_string(),
        }
    }

    #[test]
    fn canonical_text_of_a_history_row_holds_the_attempt_it_keeps() {
        let t = jiff::Timestamp::from_microsecond(5).unwrap();
        let row = |run| crate::store::HistoryRow {
            id: crate::TaskId::from_bytes([7; 12]),
            handler: "noop".to_string(),
            data: "{}".to_string(),
            timestamp: t,
            due_at: t,
            last_run_on: None,
            attempts: 1,
            max_attempts: 3,
            is_recurring: false,
            rule: None,
            state: "dead".to_string(),
            queue: "default".to_string(),
            priority: 0,
            last_error: None,
            fence: 1,
            created_at: t,
            finished_at: t,
            unique_key: None,
            run,
        };
        let kept = canonical(&CopyRows::History(vec![row(Some(record()))]));
        assert_ne!(kept, canonical(&CopyRows::History(vec![row(None)])));
        let other = crate::store::RunRecord {
            worker: "v".to_string(),
            ..record()
        };
        assert_ne!(kept, canonical(&CopyRows::History(vec![row(Some(other))])));
        assert!(
            kept[0].ends_with(r#"[1,1000001,2,3,"failed","line\nbreak","w"]]"#),
            "{kept:?}"
        );
    }

    #[test]
    fn canonical_text_leaves_out_the_position_each_store_numbers_itself() {
        let run = |position| crate::store::RunRow {
            position,
            task_id: crate::TaskId::from_bytes([7; 12]),
            run: record(),
        };
        let a = canonical(&CopyRows::Runs(vec![run(1)]));
        assert_eq!(a, canonical(&CopyRows::Runs(vec![run(900)])));
        assert_eq!(
            a,
            vec![r#"["070707070707070707070707",1,1000001,2,3,"failed","line\nbreak","w"]"#]
        );
    }
}
