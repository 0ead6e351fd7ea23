//! Queue controls on SQLite: the `queues` rows, the start log of rate-limited queues, and the
//! claim of a controlled queue. The claim runs inside the writer's transaction, which already
//! keeps every other writer of the file out, so it needs no lock of its own.

use rusqlite::{Connection, OptionalExtension, params};

use super::error::db_err;
use super::rows::json_list;
use crate::clock::{from_micros, to_micros};
use crate::queues::{self, Key, QueueControl, QueueLimits, QueueLoad, Rate};
use crate::store::ClaimedTask;
use crate::{State, TaskError};

const CONTROL: &str = "SELECT name, paused, concurrency, per_key, rate_count, rate_period_ms \
    FROM queues";

/// The columns a claim returns, as [`super::sql::CLAIM`] returns them.
const CLAIM_ONE: &str = "UPDATE tasks SET state = 'running', ready = 0, \
    attempts = attempts + 1, fence = fence + 1, worker = ?1, started_at = ?2, lease_until = ?3, \
    updated_at = ?2 WHERE id = ?4 AND state IN ('scheduled','retrying') \
    RETURNING id, handler, data, timestamp, last_run_on, attempts, max_attempts, \
    is_recurring, rule, fence, priority, due_at, queue, cancel_requested";

fn control_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueueControl> {
    let rate = match (r.get::<_, Option<i64>>(4)?, r.get::<_, Option<i64>>(5)?) {
        (Some(count), Some(ms)) => Some(Rate {
            count: count.clamp(0, i64::from(u32::MAX)) as u32,
            period: jiff::SignedDuration::from_millis(ms),
        }),
        _ => None,
    };
    Ok(QueueControl {
        name: r.get(0)?,
        paused: r.get(1)?,
        limits: QueueLimits {
            concurrency: r
                .get::<_, Option<i64>>(2)?
                .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32),
            rate,
            per: r.get(3)?,
        },
    })
}

/// The controls of `queues` (all when empty), by name.
pub(super) fn controls(
    conn: &Connection,
    queues: &[String],
) -> Result<Vec<QueueControl>, TaskError> {
    let sql = format!(
        "{CONTROL} WHERE ?1 = '[]' OR name IN (SELECT value FROM json_each(?1)) ORDER BY name"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map([json_list(queues)], control_from_row)
        .map_err(db_err)?;
    rows.collect::<Result<_, _>>().map_err(db_err)
}

/// Remove a queue's row once it holds neither a pause nor a limit.
fn drop_if_empty(conn: &Connection, queue: &str) -> Result<(), TaskError> {
    conn.prepare_cached(
        "DELETE FROM queues WHERE name = ?1 AND paused = 0 AND concurrency IS NULL \
         AND rate_count IS NULL",
    )
    .map_err(db_err)?
    .execute([queue])
    .map_err(db_err)?;
    Ok(())
}

pub(super) fn pause(
    conn: &Connection,
    queue: &str,
    paused: bool,
    now: jiff::Timestamp,
) -> Result<(), TaskError> {
    conn.prepare_cached(
        "INSERT INTO queues (name, paused, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET paused = ?2, updated_at = ?3",
    )
    .map_err(db_err)?
    .execute(params![queue, paused, to_micros(now)])
    .map_err(db_err)?;
    drop_if_empty(conn, queue)
}

pub(super) fn limit(
    conn: &Connection,
    queue: &str,
    limits: &QueueLimits,
    now: jiff::Timestamp,
) -> Result<(), TaskError> {
    let rate_count = limits.rate.map(|r| i64::from(r.count));
    let rate_ms = limits.rate.map(|r| r.period.as_millis() as i64);
    // The start log is kept while the queue keeps a rate and its `per` field: the starts
    // already made in the window count against a rate set again or lowered. Without a rate,
    // or counted per another field (its keys would mean something else), it starts afresh.
    conn.prepare_cached(
        "DELETE FROM queue_starts WHERE queue = ?1 AND (?2 IS NULL OR NOT EXISTS \
         (SELECT 1 FROM queues WHERE name = ?1 AND per_key IS ?3))",
    )
    .map_err(db_err)?
    .execute(params![queue, rate_count, limits.per])
    .map_err(db_err)?;
    conn.prepare_cached(
        "INSERT INTO queues (name, concurrency, per_key, rate_count, rate_period_ms, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO UPDATE SET concurrency = ?2, \
         per_key = ?3, rate_count = ?4, rate_period_ms = ?5, updated_at = ?6",
    )
    .map_err(db_err)?
    .execute(params![
        queue,
        limits.concurrency.map(i64::from),
        limits.per,
        rate_count,
        rate_ms,
        to_micros(now)
    ])
    .map_err(db_err)?;
    drop_if_empty(conn, queue)
}

/// Tasks per queue and state, and due tasks per queue.
pub(super) fn counts(
    conn: &Connection,
    now: jiff::Timestamp,
) -> Result<crate::store::QueueCounts, TaskError> {
    let mut out = crate::store::QueueCounts::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT queue, state, count(*) FROM tasks GROUP BY queue, state \
             UNION ALL SELECT queue, state, sum(n) FROM task_counts GROUP BY queue, state \
             HAVING sum(n) > 0 ORDER BY 1, 2",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (queue, state, n) = row.map_err(db_err)?;
        out.counts.push((queue, state.parse::<State>()?, n));
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT queue, count(*) FROM tasks WHERE state IN ('scheduled','retrying') \
             AND due_at <= ?1 GROUP BY queue ORDER BY queue",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([to_micros(now)], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err)?;
    out.due = rows.collect::<Result<_, _>>().map_err(db_err)?;
    Ok(out)
}

/// What a claim of one controlled queue is given.
pub(super) struct LimitedClaim<'a> {
    pub(super) queue: &'a str,
    pub(super) worker: &'a str,
    pub(super) handlers: &'a str,
    pub(super) now: i64,
    pub(super) lease: i64,
    pub(super) want: u32,
}

/// The key of a task under a per-key limit: the JSON text of the field's value, `NULL` when
/// it is missing or `null`. `?K` is the field's parameter.
fn key_expr(param: &str) -> String {
    format!("NULLIF(data -> ('$.\"' || {param} || '\"'), 'null')")
}

/// Claim up to `want` tasks of a controlled queue, as its limits allow; a paused queue, or
/// one whose control was removed meanwhile, gives none.
pub(super) fn claim_limited(
    conn: &Connection,
    c: &LimitedClaim<'_>,
    claimed: &mut Vec<((i32, i64), ClaimedTask)>,
    row_to_claimed: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<((i32, i64), ClaimedTask)>,
) -> Result<(), TaskError> {
    let control = conn
        .prepare_cached(&format!("{CONTROL} WHERE name = ?1"))
        .map_err(db_err)?
        .query_row([c.queue], control_from_row)
        .optional()
        .map_err(db_err)?;
    let Some(control) = control.filter(|q| !q.paused) else {
        return Ok(());
    };
    let limits = &control.limits;
    let per = limits.per.clone();
    let mut load = QueueLoad::default();
    {
        let sql = format!(
            "SELECT {}, count(*) FROM tasks WHERE state = 'running' AND queue = ?1 GROUP BY 1",
            if per.is_some() {
                key_expr("?2")
            } else {
                "NULL".to_string()
            }
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = if per.is_some() {
            stmt.query(params![c.queue, per])
        } else {
            stmt.query(params![c.queue])
        }
        .map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let k: Key = r.get(0).map_err(db_err)?;
            load.running.insert(k, r.get(1).map_err(db_err)?);
        }
    }
    if let Some(rate) = limits.rate {
        let start = queues::window_start(rate, from_micros(c.now));
        let (since, pruned) = (to_micros(start), to_micros(start - queues::LOG_SLACK));
        conn.prepare_cached("DELETE FROM queue_starts WHERE queue = ?1 AND started_at <= ?2")
            .map_err(db_err)?
            .execute(params![c.queue, pruned])
            .map_err(db_err)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, count(*) FROM queue_starts WHERE queue = ?1 AND started_at > ?2 \
                 GROUP BY key",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query(params![c.queue, since]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let k: String = r.get(0).map_err(db_err)?;
            load.started
                .insert(stored_key(k), r.get(1).map_err(db_err)?);
        }
    }
    // Candidates in claim order, with their keys: without `per` exactly as many as have room;
    // with it, tasks of keys that still have room.
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut read = |mut rows: rusqlite::Rows<'_>| -> Result<(), TaskError> {
        while let Some(r) = rows.next().map_err(db_err)? {
            ids.push(r.get(0).map_err(db_err)?);
            keys.push(r.get(1).map_err(db_err)?);
        }
        Ok(())
    };
    match &per {
        None => {
            let room = load.queue_room(limits, c.want);
            if room == 0 {
                return Ok(());
            }
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, NULL FROM tasks WHERE ready = 1 \
                     AND state IN ('scheduled','retrying') AND due_at <= ?2 AND queue = ?1 \
                     AND handler IN (SELECT value FROM json_each(?3)) \
                     ORDER BY priority, due_at LIMIT (?4 + 0)",
                )
                .map_err(db_err)?;
            read(
                stmt.query(params![c.queue, c.now, c.handlers, room])
                    .map_err(db_err)?,
            )?;
        }
        Some(field) => {
            let full: Vec<String> = load
                .full_keys(limits)
                .into_iter()
                .map(|k| k.unwrap_or_default())
                .collect();
            let key = key_expr("?5");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT id, {key} FROM tasks WHERE ready = 1 \
                     AND state IN ('scheduled','retrying') AND due_at <= ?2 AND queue = ?1 \
                     AND handler IN (SELECT value FROM json_each(?3)) \
                     AND COALESCE({key}, '') NOT IN (SELECT value FROM json_each(?4)) \
                     ORDER BY priority, due_at LIMIT (?6 + 0)"
                ))
                .map_err(db_err)?;
            read(
                stmt.query(params![
                    c.queue,
                    c.now,
                    c.handlers,
                    json_list(&full),
                    field,
                    queues::PER_KEY_SCAN
                ])
                .map_err(db_err)?,
            )?;
        }
    }
    let chosen = queues::admit(limits, &load, &keys, c.want);
    let mut claim = conn.prepare_cached(CLAIM_ONE).map_err(db_err)?;
    let mut log = conn
        .prepare_cached("INSERT INTO queue_starts (queue, key, started_at) VALUES (?1, ?2, ?3)")
        .map_err(db_err)?;
    for i in chosen {
        let mut rows = claim
            .query(params![c.worker, c.now, c.lease, ids[i]])
            .map_err(db_err)?;
        if let Some(r) = rows.next().map_err(db_err)? {
            claimed.push(row_to_claimed(r).map_err(db_err)?);
            if limits.rate.is_some() {
                let k = keys[i].clone().unwrap_or_default();
                log.execute(params![c.queue, k, c.now]).map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// A key as the start log holds it: `''` for tasks without the field.
fn stored_key(k: String) -> Key {
    if k.is_empty() { None } else { Some(k) }
}
