//! Queue controls on PostgreSQL: the `queues` rows, the start log of rate-limited queues, and
//! the claim of a controlled queue. That claim locks the queue's row (`FOR UPDATE`), so the
//! claims of one controlled queue take turns across every worker on every machine: each
//! counts what runs and what started after the previous one committed. Claims of other queues
//! never wait for it.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::conn::{PgTransaction, Queries};
use super::error::db_err;
use super::rows::PgTime;
use crate::queues::{self, Key, QueueControl, QueueLimits, QueueLoad, Rate};
use crate::store::QueueCounts;
use crate::{State, TaskError};

/// The columns [`control_from_row`] reads.
pub(super) const CONTROL_COLUMNS: &str =
    "name, paused, concurrency, per_key, rate_count, rate_period_ms";

pub(super) fn control_from_row(r: &Row) -> QueueControl {
    let rate = match (r.get::<_, Option<i32>>(4), r.get::<_, Option<i64>>(5)) {
        (Some(count), Some(ms)) => Some(Rate {
            count: count.max(0) as u32,
            period: jiff::SignedDuration::from_millis(ms),
        }),
        _ => None,
    };
    QueueControl {
        name: r.get(0),
        paused: r.get(1),
        limits: QueueLimits {
            concurrency: r.get::<_, Option<i32>>(2).map(|n| n.max(0) as u32),
            rate,
            per: r.get(3),
        },
    }
}

/// The controls of `$1` (all when empty).
pub(super) fn sql_controls(s: &str) -> String {
    format!(
        "SELECT {CONTROL_COLUMNS} FROM {s}.queues \
         WHERE cardinality($1::text[]) = 0 OR name = ANY($1::text[]) ORDER BY name"
    )
}

/// Pause or resume `$1` ($2 paused, $3 now).
pub(super) fn sql_pause(s: &str) -> String {
    format!(
        "INSERT INTO {s}.queues (name, paused, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at"
    )
}

/// Set `$1`'s limits ($2 concurrency, $3 per key, $4 rate count, $5 rate period in ms, $6
/// now). The start log is kept while the queue keeps a rate and its `per` field, so the
/// starts already made in the window count against a rate set again or lowered; without a
/// rate, or counted per another field (its keys would mean something else), it starts afresh.
pub(super) fn sql_limit(s: &str) -> String {
    format!(
        "WITH log AS (DELETE FROM {s}.queue_starts WHERE queue = $1 AND ($4::int4 IS NULL \
           OR NOT EXISTS (SELECT 1 FROM {s}.queues WHERE name = $1 \
             AND per_key IS NOT DISTINCT FROM $3::text))) \
         INSERT INTO {s}.queues (name, concurrency, per_key, rate_count, rate_period_ms, \
           updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, \
           per_key = excluded.per_key, rate_count = excluded.rate_count, \
           rate_period_ms = excluded.rate_period_ms, updated_at = excluded.updated_at"
    )
}

/// Remove `$1`'s row once it holds neither a pause nor a limit (a statement of its own: one
/// statement cannot change a row and then delete it).
pub(super) fn sql_drop_if_empty(s: &str) -> String {
    format!(
        "DELETE FROM {s}.queues WHERE name = $1 AND NOT paused AND concurrency IS NULL \
         AND rate_count IS NULL"
    )
}

/// Tasks per queue and state: live ones counted, finished ones from their counters.
pub(super) fn sql_counts(s: &str) -> String {
    format!(
        "SELECT queue, state, count(*) FROM {s}.tasks GROUP BY queue, state \
         UNION ALL SELECT queue, state, sum(n)::int8 FROM {s}.task_counts \
         GROUP BY queue, state HAVING sum(n) > 0 ORDER BY 1, 2"
    )
}

/// Due tasks per queue at `$1`.
pub(super) fn sql_due(s: &str) -> String {
    format!(
        "SELECT queue, count(*) FROM {s}.tasks WHERE state IN ('scheduled','retrying') \
         AND due_at <= $1 GROUP BY queue ORDER BY queue"
    )
}

pub(super) fn counts_from_rows(counts: &[Row], due: &[Row]) -> Result<QueueCounts, TaskError> {
    let mut out = QueueCounts::default();
    for r in counts {
        let state: String = r.get(1);
        out.counts.push((
            r.get(0),
            state.parse::<State>()?,
            r.get::<_, i64>(2).max(0) as u64,
        ));
    }
    for r in due {
        out.due.push((r.get(0), r.get::<_, i64>(1).max(0) as u64));
    }
    Ok(out)
}

/// The key of a task under a per-key limit: the JSON text of the field's value, `NULL` when
/// it is missing or `null`. `param` is the field's parameter.
fn key_expr(param: &str) -> String {
    format!("NULLIF(data::jsonb -> {param}::text, 'null'::jsonb)::text")
}

/// What a claim of one controlled queue is given.
pub(super) struct LimitedClaim<'a> {
    pub(super) schema: &'a str,
    pub(super) queue: &'a str,
    pub(super) worker: &'a str,
    pub(super) handlers: &'a [&'a str],
    pub(super) now: PgTime,
    pub(super) lease: PgTime,
    pub(super) want: u32,
    /// The columns a claim returns, as the fixed claim statement returns them.
    pub(super) returning: &'a str,
}

/// Claim up to `want` tasks of a controlled queue in `tx`, as its limits allow; a paused
/// queue, or one whose control was removed meanwhile, gives none. Returns the claim's rows.
pub(super) async fn claim_limited(
    tx: &PgTransaction<'_>,
    c: &LimitedClaim<'_>,
) -> Result<Vec<Row>, TaskError> {
    let s = c.schema;
    let control = tx
        .query_opt(
            &format!("SELECT {CONTROL_COLUMNS} FROM {s}.queues WHERE name = $1 FOR UPDATE"),
            &[&c.queue],
        )
        .await
        .map_err(db_err)?
        .map(|r| control_from_row(&r));
    let Some(control) = control.filter(|q| !q.paused) else {
        return Ok(Vec::new());
    };
    let limits = &control.limits;
    let per = limits.per.as_deref();
    let mut load = QueueLoad::default();
    let running = match per {
        Some(field) => {
            let sql = format!(
                "SELECT {key}, count(*) FROM {s}.tasks WHERE lease_until IS NOT NULL \
                 AND state = 'running' AND queue = $1 GROUP BY 1",
                key = key_expr("$2")
            );
            tx.query(&sql, &[&c.queue, &field]).await
        }
        None => {
            let sql = format!(
                "SELECT NULL::text, count(*) FROM {s}.tasks WHERE lease_until IS NOT NULL \
                 AND state = 'running' AND queue = $1"
            );
            tx.query(&sql, &[&c.queue]).await
        }
    }
    .map_err(db_err)?;
    for r in &running {
        let n = r.get::<_, i64>(1).max(0) as u32;
        if n > 0 {
            load.running.insert(r.get::<_, Key>(0), n);
        }
    }
    if let Some(rate) = limits.rate {
        let start = queues::window_start(rate, c.now.time());
        let (since, pruned) = (PgTime::of(start), PgTime::of(start - queues::LOG_SLACK));
        let sql = format!(
            "WITH gone AS (DELETE FROM {s}.queue_starts WHERE queue = $1 AND started_at <= $3) \
             SELECT key, count(*) FROM {s}.queue_starts WHERE queue = $1 AND started_at > $2 \
             GROUP BY key"
        );
        for r in tx
            .query(&sql, &[&c.queue, &since, &pruned])
            .await
            .map_err(db_err)?
        {
            let k: String = r.get(0);
            let k = if k.is_empty() { None } else { Some(k) };
            load.started.insert(k, r.get::<_, i64>(1).max(0) as u32);
        }
    }
    // Candidates in claim order, with their keys: without `per` exactly as many as have room;
    // with it, tasks of keys that still have room.
    let candidates = match per {
        None => {
            let room = load.queue_room(limits, c.want);
            if room == 0 {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT id, NULL::text FROM {s}.tasks WHERE ready \
                 AND state IN ('scheduled','retrying') AND due_at <= $2 AND queue = $1 \
                 AND handler = ANY($3::text[]) ORDER BY priority, due_at LIMIT $4 \
                 FOR UPDATE SKIP LOCKED"
            );
            tx.query(&sql, &[&c.queue, &c.now, &c.handlers, &i64::from(room)])
                .await
        }
        Some(field) => {
            let full: Vec<String> = load
                .full_keys(limits)
                .into_iter()
                .map(|k| k.unwrap_or_default())
                .collect();
            let key = key_expr("$5");
            let sql = format!(
                "SELECT id, {key} FROM {s}.tasks WHERE ready \
                 AND state IN ('scheduled','retrying') AND due_at <= $2 AND queue = $1 \
                 AND handler = ANY($3::text[]) AND COALESCE({key}, '') <> ALL($4::text[]) \
                 ORDER BY priority, due_at LIMIT $6 FOR UPDATE SKIP LOCKED"
            );
            let params: [&(dyn ToSql + Sync); 6] = [
                &c.queue,
                &c.now,
                &c.handlers,
                &full,
                &field,
                &i64::from(queues::PER_KEY_SCAN),
            ];
            tx.query(&sql, &params).await
        }
    }
    .map_err(db_err)?;
    let keys: Vec<Key> = candidates.iter().map(|r| r.get(1)).collect();
    let chosen = queues::admit(limits, &load, &keys, c.want);
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Vec<u8>> = chosen.iter().map(|&i| candidates[i].get(0)).collect();
    let sql = format!(
        "UPDATE {s}.tasks t SET state = 'running', ready = false, attempts = t.attempts + 1, \
           fence = t.fence + 1, worker = $1, started_at = $2, lease_until = $3, updated_at = $2 \
         WHERE t.id = ANY($4::bytea[]) AND t.state IN ('scheduled','retrying') \
         RETURNING {}",
        c.returning
    );
    let rows = tx
        .query(&sql, &[&c.worker, &c.now, &c.lease, &ids])
        .await
        .map_err(db_err)?;
    if limits.rate.is_some() {
        let started: Vec<String> = chosen
            .iter()
            .map(|&i| keys[i].clone().unwrap_or_default())
            .collect();
        let sql = format!(
            "INSERT INTO {s}.queue_starts (queue, key, started_at) \
             SELECT $1, k, $2 FROM unnest($3::text[]) AS k"
        );
        tx.execute(&sql, &[&c.queue, &c.now, &started])
            .await
            .map_err(db_err)?;
    }
    Ok(rows)
}
