//! The statements' text, built for one schema, and the set every pooled connection prepares
//! as it first runs each.

use super::conn::Stmt;

use crate::TaskError;

/// The schema and the names derived from it, already quoted for SQL.
#[derive(Debug, Clone)]
pub(super) struct Names {
    /// The schema as given.
    pub(super) schema: String,
    /// The schema quoted as an identifier.
    pub(super) quoted: String,
    /// The notification channel (as `pg_notify` takes it).
    pub(super) channel: String,
}

impl Names {
    pub(super) fn new(schema: &str) -> Result<Names, TaskError> {
        let ok = !schema.is_empty()
            && schema.len() <= 57
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(TaskError::invalid(format!(
                "bad PostgreSQL schema name '{schema}': use letters, digits and '_' (not \
                 starting with a digit), at most 57 characters, e.g. 'party'"
            )));
        }
        Ok(Names {
            schema: schema.to_string(),
            quoted: quote_ident(schema),
            channel: format!("party_{schema}"),
        })
    }
}

/// Results commit without waiting for the disk (`synchronous_commit = off`, for these
/// transactions only). A database crash can then lose the last few; their tasks are still
/// running under the claim's lease, so they are rescued and run again once it ends, and "at
/// least once" holds. Claims, inserts, cancels and retries keep the server's setting: a
/// returned id is durable, and so is a claim a worker acts on (were a claim lost while its
/// worker ran the task, another worker could claim it again at once, under the same fence).
///
/// Their prepared statements also run on the generic plan (`plan_cache_mode`): the plans do not
/// depend on the values (every claim walks its index in order from the front), but with a
/// million tasks waiting PostgreSQL judged the generic plan of the promotion (`due_at <= $1`,
/// a third of the table by its default estimate) dearer than a custom one and planned every
/// claim anew, reading the index's ends each time (docs/BENCHMARKS.md, "Claims on their
/// generic plans").
pub(super) const BEGIN_ASYNC_COMMIT: &str =
    "BEGIN; SET LOCAL synchronous_commit TO off; SET LOCAL plan_cache_mode TO force_generic_plan";

/// Opens a claim: the generic plans of [`BEGIN_ASYNC_COMMIT`], and a commit that waits for
/// the disk.
pub(super) const BEGIN_CLAIM: &str = "BEGIN; SET LOCAL plan_cache_mode TO force_generic_plan";

/// Opens a steer (cancel, retry, cancel request) and the read of its answer: one snapshot for
/// the statement that changes the task and the reads after it, so a refusal names the state
/// the steer saw. A row changed by another transaction since the snapshot fails the steer
/// with a serialization failure, and it is run again.
pub(super) const BEGIN_STEER: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

/// Opens a read-only transaction whose statements all read one snapshot.
pub(super) const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(super) const TASK_COLUMNS: &str = "id, handler, data, timestamp, last_run_on, attempts, is_recurring, \
    state, queue, priority, max_attempts, last_error, rule, due_at, created_at, worker, \
    unique_key, cancel_requested, NULL::timestamptz";

/// The columns [`super::rows::task_from_row`] reads, from a history row (no worker).
pub(super) const HISTORY_COLUMNS: &str = "id, handler, data, timestamp, last_run_on, attempts, \
    is_recurring, state, queue, priority, max_attempts, last_error, rule, due_at, created_at, \
    NULL::text, unique_key, false, finished_at";

/// A data field filter ([`crate::DataMatch`]) on the column `data` and the parameters `f` (the
/// field, NULL for no filter) and `v` (the value's text): the field's value as text (a
/// string's own text, a number as stored, `true` or `false`) equals it; null, objects and
/// arrays match nothing. Read as `json`, which keeps a number's text as stored (`jsonb` would
/// rewrite `1e-7` as `0.0000001`, and match other tasks than SQLite does).
fn data_match(data: &str, f: &str, v: &str) -> String {
    format!(
        "({f}::text IS NULL OR (json_typeof({data}::json -> {f}::text) IN \
         ('string','number','boolean') AND {data}::json ->> {f}::text = {v}::text))"
    )
}

/// A listing's filters: `state` on $1 (`$1::text IS NULL` for a listing without a state,
/// `state = $1` for one with: two statements rather than `$1 IS NULL OR state = $1`, so a plan
/// kept for the statement always seeks the history's `(state, due_at, id)` index when a state
/// is given), $2 handler, $4 queue, $7 and $8 a data field ([`data_match`]), $9 recurring or
/// one-off, the keyset cursor ($5 due time, $6 id) it continues after and the place ($10 due
/// time, $11 id) it ends at. Both places bound the index scan itself (an absent one is the
/// lowest or highest place there is, not `$5 IS NULL OR …`, which a generic plan checks row by
/// row): a page deep in the listing, or one ended early by `until`, reads only its own part
/// of the index.
fn list_filters(state: &str) -> String {
    format!(
        "WHERE {state} \
         AND ($2::text IS NULL OR handler = $2) AND ($4::text IS NULL OR queue = $4) \
         AND ($9::bool IS NULL OR is_recurring = $9) \
         AND (due_at, id) > (COALESCE($5::timestamptz, '-infinity'), COALESCE($6::bytea, '\\x')) \
         AND (due_at, id) <= (COALESCE($10::timestamptz, 'infinity'), \
           COALESCE($11::bytea, '\\xffffffffffffffffffffffff')) AND {} \
         ORDER BY due_at, id LIMIT $3",
        data_match("data", "$7", "$8")
    )
}

/// Live and finished tasks, each part walked in list order through an index; with
/// `by_state`, only those in the state $1. Two indexes leave tasks out so that the hot path
/// writes fewer entries (migration 8), and the parts follow them:
///
/// - the live tasks' `(due_at, id)` index leaves out running ones (a claim then adds no entry
///   to it), so they are read apart, through the lease index, and sorted: there are only as
///   many as the workers run at once;
/// - the history has no `(due_at, id)` index of its own (a finish adds one entry fewer), so a
///   listing of every state reads each finished state's range of `(state, due_at, id)`.
///
/// The parts are merged in list order. A live part is skipped whole when $1 names a state it
/// cannot hold (a condition on the parameter alone, which the plan checks once).
fn sql_list(s: &str, by_state: bool) -> String {
    sql_listing(s, by_state, TASK_COLUMNS, HISTORY_COLUMNS)
}

/// A listing's place (due time, id) and size columns: the bytes of the data, last error, rule
/// and unique key as stored (`octet_length` reads a text's size without reading the text).
const SIZE_COLUMNS: &str = "due_at, id, octet_length(data)::int8 \
    + COALESCE(octet_length(last_error), 0) + COALESCE(octet_length(rule), 0) \
    + COALESCE(octet_length(unique_key), 0)";

/// [`sql_list`] with the place and size of each task ([`SIZE_COLUMNS`]) instead of the task
/// ([`crate::store::Store::task_list_sizes`]).
fn sql_sizes(s: &str, by_state: bool) -> String {
    sql_listing(s, by_state, SIZE_COLUMNS, SIZE_COLUMNS)
}

/// [`sql_list`]'s statement, selecting `live` columns from live tasks and `finished_columns` from
/// finished ones.
fn sql_listing(s: &str, by_state: bool, live: &str, finished_columns: &str) -> String {
    let (state, not_running, running) = if by_state {
        (
            "state = $1::text",
            "$1::text <> 'running'",
            "$1::text = 'running'",
        )
    } else {
        ("$1::text IS NULL", "true", "true")
    };
    let finished: Vec<String> = if by_state {
        vec![list_filters(state)]
    } else {
        ["done", "dead", "cancelled"]
            .iter()
            .map(|st| list_filters(&format!("state = '{st}' AND {state}")))
            .collect()
    };
    let history: String = finished
        .iter()
        .map(|f| format!(" UNION ALL (SELECT {finished_columns} FROM {s}.task_history {f})"))
        .collect();
    format!(
        "SELECT * FROM ((SELECT {live} FROM {s}.tasks {waiting}) \
         UNION ALL (SELECT {live} FROM {s}.tasks {running}){history}) l \
         ORDER BY due_at, id LIMIT $3",
        waiting = list_filters(&format!("state <> 'running' AND {not_running} AND {state}")),
        running = list_filters(&format!(
            "lease_until IS NOT NULL AND state = 'running' AND {running} AND {state}"
        )),
    )
}

/// Where a listing's $3-th task is ([`crate::store::Store::task_list_reach`]): the listing's
/// own statement, called with no data filter, its rows skipped to the $3-th.
fn sql_reach(s: &str, by_state: bool) -> String {
    format!(
        "SELECT due_at, id FROM ({}) r ORDER BY due_at, id OFFSET $3 - 1 LIMIT 1",
        sql_list(s, by_state)
    )
}

/// The filters of a bulk operation: $2 states, $3 handler, $4 queue, $5 and $6 a data field,
/// on the table aliased `t`.
fn steer_filters() -> String {
    format!(
        "t.state = ANY($2::text[]) AND ($3::text IS NULL OR t.handler = $3) \
         AND ($4::text IS NULL OR t.queue = $4) AND {}",
        data_match("t.data", "$5", "$6")
    )
}

/// How many tasks a bulk cancel or retry would consider: of the first $8 live and the first
/// $8 finished tasks in the states $2 with the handler $3 and queue $4 ($1 is not read), those
/// whose data matches ($5, $6), each side counted to $7 at most; and whether both sides had
/// fewer than $8 tasks to look at (then none went unexamined).
pub(super) fn sql_count_many(s: &str) -> String {
    let f = "t.state = ANY($2::text[]) AND ($3::text IS NULL OR t.handler = $3) \
             AND ($4::text IS NULL OR t.queue = $4)";
    let m = data_match("e.data", "$5", "$6");
    format!(
        "WITH l AS (SELECT t.data FROM {s}.tasks t \
           WHERE {f} AND $1::timestamptz IS NOT NULL LIMIT $8), \
         h AS (SELECT t.data FROM {s}.task_history t WHERE {f} LIMIT $8) \
         SELECT (SELECT count(*) FROM (SELECT 1 FROM l e WHERE {m} LIMIT $7) a) \
           + (SELECT count(*) FROM (SELECT 1 FROM h e WHERE {m} LIMIT $7) b), \
           (SELECT count(*) FROM l) < $8 AND (SELECT count(*) FROM h) < $8"
    )
}

/// The history's columns, in the order the moves below select them.
pub(super) const HISTORY_INSERT: &str = "(id, handler, data, timestamp, due_at, last_run_on, \
    attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, \
    created_at, finished_at, unique_key)";

/// [`HISTORY_INSERT`] and the run a finished task keeps on its history row: the attempt that
/// finished it, instead of a row in `runs` (`run_worker` is set exactly when one is kept).
pub(super) const HISTORY_INSERT_WITH_RUN: &str = "(id, handler, data, timestamp, due_at, \
    last_run_on, attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, \
    fence, created_at, finished_at, unique_key, run_attempt, run_timestamp, run_started_at, \
    run_finished_at, run_outcome, run_error, run_worker)";

/// The run a history row keeps, written back into `runs` from the rows `m` took out of the
/// history (a retry), so the task's runs stay in the order they were recorded.
fn unfold_runs(s: &str) -> String {
    format!(
        "k AS (INSERT INTO {s}.runs (task_id, attempt, timestamp, started_at, finished_at, \
           outcome, error, worker) \
         SELECT id, run_attempt, run_timestamp, run_started_at, run_finished_at, run_outcome, \
           run_error, run_worker FROM m WHERE run_worker IS NOT NULL)"
    )
}

/// The live columns a retried task is written back with.
pub(super) const LIVE_INSERT: &str = "(id, handler, data, timestamp, due_at, ready, last_run_on, \
    attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, \
    created_at, updated_at, unique_key)";

pub(super) const LIVE: &str = "('scheduled','running','retrying')";
pub(super) const WAITING: &str = "('scheduled','retrying')";

/// The columns and source of a task insert from arrays: `$1..$11`. A task already due when it
/// is created (the common "run now") goes straight into the claim index, with no promotion.
pub(super) fn insert_from_arrays(s: &str) -> String {
    format!(
        "INSERT INTO {s}.tasks (id, handler, data, timestamp, due_at, ready, attempts, \
           max_attempts, is_recurring, rule, state, queue, priority, fence, created_at, updated_at, \
           unique_key) \
         SELECT id, handler, data, ts, ts, ts <= created_at, 0, max_attempts, is_recurring, rule, \
           'scheduled', queue, priority, 0, created_at, created_at, unique_key \
         FROM unnest($1::bytea[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[], \
           $6::bool[], $7::text[], $8::text[], $9::int4[], $10::timestamptz[], $11::text[]) \
           AS t(id, handler, data, ts, max_attempts, is_recurring, rule, queue, priority, created_at, \
             unique_key)"
    )
}

/// The live task holding a handler's unique key: $1 handler, $2 key.
pub(super) fn sql_existing_unique(s: &str) -> String {
    format!("SELECT id FROM {s}.tasks WHERE handler = $1 AND unique_key = $2")
}

/// Of tasks being added ($1 handlers, $2 keys, $3 windows' starts), the first whose key a task
/// that finished within its window holds: handler, key and that task's id.
pub(super) fn sql_recent_unique(s: &str) -> String {
    format!(
        "SELECT c.handler, c.key, h.id FROM unnest($1::text[], $2::text[], $3::timestamptz[]) \
           AS c(handler, key, since) \
         CROSS JOIN LATERAL (SELECT id FROM {s}.task_history h WHERE h.handler = c.handler \
           AND h.unique_key = c.key AND h.finished_at > c.since \
           ORDER BY h.finished_at DESC LIMIT 1) h LIMIT 1"
    )
}

/// Insert all or none: a singleton collision fails the statement.
pub(super) fn sql_insert(s: &str) -> String {
    insert_from_arrays(s)
}

/// Insert, skipping rows that collide with a live recurring task or a live unique key;
/// returns the ids inserted and, if any were, notifies when the surrounding transaction
/// commits (this one is used inside transactions, where only the commit knows when the tasks
/// become visible).
pub(super) fn sql_insert_skipping(s: &str) -> String {
    format!(
        "WITH ins AS ({} ON CONFLICT DO NOTHING RETURNING id) \
         SELECT id, pg_notify($12, '') FROM ins",
        insert_from_arrays(s)
    )
}

pub(super) fn sql_existing(s: &str) -> String {
    format!(
        "SELECT id FROM {s}.tasks WHERE handler = $1 AND md5(data) = md5($2) AND data = $2 \
         AND is_recurring AND state IN {LIVE}"
    )
}

pub(super) fn sql_promote(s: &str) -> String {
    format!(
        "UPDATE {s}.tasks SET ready = true WHERE id = ANY(ARRAY( \
           SELECT id FROM {s}.tasks WHERE NOT ready AND state IN {WAITING} AND due_at <= $1 \
           ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
    )
}

/// The columns a claim returns, in the order the store reads them.
pub(super) const CLAIM_RETURNING: &str = "t.id, t.handler, t.data, t.timestamp, t.last_run_on, \
    t.attempts, t.max_attempts, t.is_recurring, t.rule, t.fence, t.priority, t.due_at, t.queue, \
    t.cancel_requested";

/// Ready tasks are due, but one written ready by a process whose clock is a little ahead may
/// not be due yet by ours: the claim checks `due_at` as well, so nothing starts early. Paused
/// and limited queues (those with a row in `queues`, read once per statement) are left to the
/// claim of a controlled queue. They are taken out of the queue list rather than filtered in a
/// condition of their own: with one more condition whose selectivity it cannot know, the
/// planner of the generic plan gives up the claim index for a sort of every due task (100×
/// slower on 100,000 due tasks).
pub(super) fn sql_claim(s: &str) -> String {
    format!(
        "UPDATE {s}.tasks t SET state = 'running', ready = false, attempts = t.attempts + 1, \
           fence = t.fence + 1, worker = $1, started_at = $2, lease_until = $3, updated_at = $2 \
         WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM {s}.tasks WHERE ready AND state IN {WAITING} \
           AND due_at <= $2 AND handler = ANY($4::text[]) \
           AND queue = ANY(ARRAY(SELECT unnest($5::text[]) EXCEPT SELECT name FROM {s}.queues)) \
           ORDER BY priority, due_at LIMIT $6 FOR UPDATE SKIP LOCKED)) \
         RETURNING {CLAIM_RETURNING}"
    )
}

/// Which of [`sql_finish`]'s parameters (numbered from 1) [`move_ctes`] takes, in its order:
/// [`sql_finish_moves`] takes these arrays, and only these, as its $1..$12.
pub(super) const MOVE_PARAMS: [usize; 12] = [1, 2, 3, 8, 9, 16, 10, 11, 12, 13, 14, 15];

/// The move of finished tasks (done, dead, cancelled) to the history, as the CTEs `d` (the
/// fenced delete, returning the history row) and `h` (its insert), on arrays named by `p`: ids,
/// fences, states, errors, finish times, rescue cutoffs, whether an attempt ran, and that
/// attempt's number, occurrence, start, worker and outcome. The attempt that ended a task
/// stays on its history row (`k`: empty when no attempt ran).
fn move_ctes(s: &str, p: [String; 12]) -> String {
    let [
        ids,
        fences,
        states,
        errors,
        finished,
        expired,
        ran,
        attempts,
        run_ts,
        started,
        workers,
        outcomes,
    ] = p;
    format!(
        "d AS (DELETE FROM {s}.tasks t \
           USING unnest({ids}::bytea[], {fences}::int8[], {states}::text[], {errors}::text[], \
             {finished}::timestamptz[], {expired}::timestamptz[], {ran}::bool[], \
             {attempts}::int4[], {run_ts}::timestamptz[], {started}::timestamptz[], \
             {workers}::text[], {outcomes}::text[]) \
             AS i(id, fence, state, error, finished_at, expired_before, ran, attempt, run_ts, \
               started_at, worker, outcome) \
             LEFT JOIN LATERAL (SELECT i.attempt, i.run_ts, i.started_at, i.finished_at, \
               i.outcome, i.error, i.worker WHERE i.ran) k ON true \
           WHERE t.id = i.id AND t.fence = i.fence AND t.state = 'running' \
             AND i.state IN ('done', 'dead', 'cancelled') \
             AND (i.expired_before IS NULL OR t.lease_until < i.expired_before) \
           RETURNING t.id, t.handler, t.data, t.timestamp, t.due_at, t.last_run_on, \
             t.attempts, t.max_attempts, t.is_recurring, t.rule, i.state, t.queue, \
             t.priority, COALESCE(i.error, t.last_error) AS last_error, t.fence, \
             t.created_at, i.finished_at, t.unique_key, k.*), \
         h AS (INSERT INTO {s}.task_history {HISTORY_INSERT_WITH_RUN} SELECT * FROM d)"
    )
}

/// A batch of fenced finishes and their run rows: one statement. A task that goes on
/// (retrying, or its next occurrence) is updated in place and its attempt becomes a row of
/// `runs`; one that finished for good (done, dead, cancelled) moves to the history
/// ([`move_ctes`]). Returns the applied ids, their new states and the fences they were
/// applied under (a batch may hold a stale finish and a current one of the same task: each
/// is told apart by its fence, and only the applied one writes a run row).
pub(super) fn sql_finish(s: &str) -> String {
    // The arrays are unnested where they are joined (no shared CTE), so the planner drives
    // each join from the batch through the primary key.
    format!(
        "WITH u AS (UPDATE {s}.tasks t SET state = i.state, \
           timestamp = COALESCE(i.ts, t.timestamp), due_at = COALESCE(i.due_at, t.due_at), \
           last_run_on = COALESCE(i.last_run_on, t.last_run_on), \
           attempts = COALESCE(t.attempts + i.attempts_by, 0), \
           max_attempts = GREATEST(t.max_attempts, i.max_attempts), \
           last_error = COALESCE(i.error, t.last_error), \
           ready = COALESCE(i.due_at <= i.finished_at, false), worker = NULL, \
           started_at = NULL, lease_until = NULL, updated_at = i.finished_at \
           FROM unnest($1::bytea[], $2::int8[], $3::text[], $4::timestamptz[], \
             $5::timestamptz[], $6::timestamptz[], $7::int4[], $8::text[], $9::timestamptz[], \
             $16::timestamptz[], $17::int4[]) \
             AS i(id, fence, state, ts, due_at, last_run_on, attempts_by, error, finished_at, \
               expired_before, max_attempts) \
           WHERE t.id = i.id AND t.fence = i.fence AND t.state = 'running' \
             AND i.state IN {WAITING} \
             AND (i.expired_before IS NULL OR t.lease_until < i.expired_before) \
           RETURNING t.id, t.state, t.fence), \
         {moves}, \
         a AS (SELECT id, state, fence FROM u UNION ALL SELECT id, state, fence FROM d), \
         r AS (INSERT INTO {s}.runs (task_id, attempt, timestamp, started_at, finished_at, \
           outcome, error, worker) \
           SELECT i.id, i.attempt, i.run_ts, i.started_at, i.finished_at, i.outcome, i.error, \
             i.worker \
           FROM unnest($1::bytea[], $2::int8[], $8::text[], $9::timestamptz[], $10::bool[], \
             $11::int4[], $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[]) \
             AS i(id, fence, error, finished_at, ran, attempt, run_ts, started_at, worker, \
               outcome) \
           JOIN u ON u.id = i.id AND u.fence = i.fence WHERE i.ran) \
         SELECT a.id, a.state, a.fence FROM a",
        moves = move_ctes(s, MOVE_PARAMS.map(|n| format!("${n}"))),
    )
}

/// [`sql_finish`] for a batch whose every finish moves its task to the history (the common
/// case: tasks done on their first attempt), without the update in place and the run rows that
/// take none of its rows; PostgreSQL still unnests their arrays, a tenth of the statement's
/// time. $1..$12 are the arrays [`move_ctes`] names, in its order.
pub(super) fn sql_finish_moves(s: &str) -> String {
    let p = std::array::from_fn(|i| format!("${}", i + 1));
    format!("WITH {} SELECT id, state, fence FROM d", move_ctes(s, p))
}

/// Renew the leases of the claims the worker still holds and return those claims, each with
/// whether its lease was renewed. Rows another transaction has locked (the worker's own
/// finish of them, a rescue, a steer) are skipped, not waited for: a heartbeat that waited
/// could deadlock with a finish batch locking the same rows in another order. A skipped row
/// still counts as held when the statement's snapshot shows it running under the claim's
/// fence, but unrenewed: the worker keeps its lease as last renewed, and the next heartbeat
/// renews it if it is still running then.
pub(super) fn sql_heartbeat(s: &str) -> String {
    format!(
        "WITH w AS (INSERT INTO {s}.workers (id, handlers, queues, last_seen, live_until) \
           VALUES ($1, $2, $3, $4, $8) ON CONFLICT (id) DO UPDATE SET \
           handlers = excluded.handlers, queues = excluded.queues, \
           last_seen = excluded.last_seen, live_until = excluded.live_until), \
         held AS (SELECT t.id, t.fence FROM {s}.tasks t \
           JOIN unnest($6::bytea[], $7::int8[]) AS h(id, fence) \
             ON t.id = h.id AND t.fence = h.fence \
           WHERE t.state = 'running'), \
         renew AS (SELECT t.id FROM {s}.tasks t WHERE (t.id, t.fence) IN (SELECT * FROM held) \
           AND t.state = 'running' FOR UPDATE SKIP LOCKED), \
         u AS (UPDATE {s}.tasks t SET lease_until = $5 FROM renew WHERE t.id = renew.id) \
         SELECT h.id, h.fence, EXISTS (SELECT 1 FROM renew r WHERE r.id = h.id) FROM held h"
    )
}

/// Running tasks whose lease ended, earliest first. `lease_until IS NOT NULL` matches the
/// lease index's predicate.
pub(super) fn sql_expired(s: &str) -> String {
    format!(
        "SELECT id, fence, attempts, max_attempts, timestamp, COALESCE(worker, ''), \
           COALESCE(started_at, lease_until), lease_until, cancel_requested FROM {s}.tasks \
         WHERE lease_until IS NOT NULL AND lease_until < $1 AND state = 'running' \
         ORDER BY lease_until LIMIT $2"
    )
}

/// Bulk retry, live side: matching retrying tasks (and, when asked for, scheduled ones due
/// later) are made due now, and a cancel asked while one ran no longer stands (the retry is
/// the later word).
pub(super) fn sql_retry_many_live(s: &str) -> String {
    format!(
        "UPDATE {s}.tasks t SET state = 'scheduled', due_at = $1, ready = true, \
           max_attempts = GREATEST(t.max_attempts, t.attempts + 1), updated_at = $1, \
           cancel_requested = false \
           WHERE (t.state = 'retrying' OR (t.state = 'scheduled' AND t.due_at > $1)) AND {}",
        steer_filters()
    )
}

/// Bulk retry, history side: matching dead and cancelled tasks move back to the live tasks.
/// A recurring one moves only when no live copy holds its singleton and no other matching
/// copy with a greater id moves in the same statement; a task with a unique key likewise.
pub(super) fn sql_retry_many_move(s: &str) -> String {
    let f = steer_filters();
    format!(
        "WITH m AS (DELETE FROM {s}.task_history t \
           WHERE t.state IN ('dead','cancelled') AND {f} \
             AND (NOT t.is_recurring OR (NOT EXISTS (SELECT 1 FROM {s}.tasks o \
               WHERE o.handler = t.handler AND md5(o.data) = md5(t.data) \
               AND o.data = t.data AND o.is_recurring AND o.state IN {LIVE}) \
             AND NOT EXISTS (SELECT 1 FROM {s}.task_history o \
               WHERE o.handler = t.handler AND o.data = t.data AND o.is_recurring \
               AND o.id > t.id AND o.state IN ('dead','cancelled') \
               AND o.state = ANY($2::text[]) AND ($4::text IS NULL OR o.queue = $4)))) \
             AND (t.unique_key IS NULL OR (NOT EXISTS (SELECT 1 FROM {s}.tasks o \
               WHERE o.handler = t.handler AND o.unique_key = t.unique_key) \
             AND NOT EXISTS (SELECT 1 FROM {s}.task_history o \
               WHERE o.handler = t.handler AND o.unique_key = t.unique_key \
               AND o.id > t.id AND o.state IN ('dead','cancelled') \
               AND o.state = ANY($2::text[]) AND ($4::text IS NULL OR o.queue = $4) \
               AND {o_data}))) \
           RETURNING t.*), {k} \
         INSERT INTO {s}.tasks {LIVE_INSERT} \
         SELECT id, handler, data, timestamp, $1, true, last_run_on, attempts, \
           GREATEST(max_attempts, attempts + 1), is_recurring, rule, 'scheduled', queue, \
           priority, last_error, fence, created_at, $1, unique_key FROM m",
        k = unfold_runs(s),
        // A copy the data filter leaves out does not move, so it keeps no key from this one.
        o_data = data_match("o.data", "$5", "$6"),
    )
}

/// One dead or cancelled task moves back to the live tasks, due now: $1 now, $2 id.
pub(super) fn sql_retry_move(s: &str) -> String {
    format!(
        "WITH m AS (DELETE FROM {s}.task_history WHERE id = $2 \
           AND state IN ('dead','cancelled') RETURNING *), {k} \
         INSERT INTO {s}.tasks {LIVE_INSERT} \
         SELECT id, handler, data, timestamp, $1, true, last_run_on, attempts, \
           GREATEST(max_attempts, attempts + 1), is_recurring, rule, 'scheduled', queue, \
           priority, last_error, fence, created_at, $1, unique_key FROM m",
        k = unfold_runs(s),
    )
}

/// Live tasks that are not running move to the history as cancelled: $1 now, $2 states,
/// $3 handler, $4 queue; and matching dead ones are cancelled where they are, as
/// [`sql_cancel`] cancels one. Returns how many changed.
pub(super) fn sql_cancel_many(s: &str) -> String {
    let f = steer_filters();
    format!(
        "WITH m AS (DELETE FROM {s}.tasks t WHERE t.state IN {WAITING} AND {f} RETURNING t.*), \
         h AS (INSERT INTO {s}.task_history {HISTORY_INSERT} \
           SELECT id, handler, data, timestamp, due_at, last_run_on, attempts, max_attempts, \
             is_recurring, rule, 'cancelled', queue, priority, last_error, fence, created_at, $1, \
             unique_key FROM m RETURNING 1), \
         dead AS (UPDATE {s}.task_history t SET state = 'cancelled', \
           finished_at = CASE WHEN t.is_recurring THEN $1 ELSE t.finished_at END \
           WHERE t.state = 'dead' AND {f} RETURNING 1) \
         SELECT (SELECT count(*) FROM h) + (SELECT count(*) FROM dead)"
    )
}

/// One task cancelled: moved from the live tasks when scheduled or retrying, or cancelled in
/// the history when dead (a one-off keeping the time it died as its finish, a recurring one
/// finishing at the cancel: see the SQLite store's `CANCEL_DEAD`). $1 now, $2 id; a row comes
/// back when it was cancelled.
pub(super) fn sql_cancel(s: &str) -> String {
    format!(
        "WITH m AS (DELETE FROM {s}.tasks WHERE id = $2 AND state IN {WAITING} RETURNING *), \
         h AS (INSERT INTO {s}.task_history {HISTORY_INSERT} \
           SELECT id, handler, data, timestamp, due_at, last_run_on, attempts, max_attempts, \
             is_recurring, rule, 'cancelled', queue, priority, last_error, fence, created_at, $1, \
             unique_key FROM m RETURNING id), \
         dead AS (UPDATE {s}.task_history SET state = 'cancelled', \
           finished_at = CASE WHEN is_recurring THEN $1 ELSE finished_at END \
           WHERE id = $2 AND state = 'dead' RETURNING id) \
         SELECT id FROM h UNION ALL SELECT id FROM dead"
    )
}

/// Take the leadership when nobody holds it, renew it for its holder, or take it over once
/// the term ended; a row comes back only in those cases.
pub(super) fn sql_leader_elect(s: &str) -> String {
    format!(
        "INSERT INTO {s}.leaders AS l (name, holder, until) VALUES ($1, $2, $4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE l.holder = excluded.holder OR l.until < $3 RETURNING l.holder"
    )
}

/// Tasks of paused queues do not count: a worker run until idle does not wait for them.
pub(super) fn sql_next_due(s: &str) -> String {
    format!(
        "SELECT min(due_at) FROM ( \
           (SELECT due_at FROM {s}.tasks WHERE ready AND state IN {WAITING} \
             AND handler = ANY($1::text[]) AND queue = ANY(ARRAY(SELECT unnest($2::text[]) \
               EXCEPT SELECT name FROM {s}.queues WHERE paused)) LIMIT 1) \
           UNION ALL \
           (SELECT due_at FROM {s}.tasks WHERE NOT ready AND state IN {WAITING} \
             AND handler = ANY($1::text[]) AND queue = ANY(ARRAY(SELECT unnest($2::text[]) \
               EXCEPT SELECT name FROM {s}.queues WHERE paused)) ORDER BY due_at LIMIT 1) \
         ) d"
    )
}

/// Finished tasks past their cutoff ($1 done, $2 dead and cancelled, $3 recurring; NULL keeps
/// that kind), at most $4, oldest first. One branch per kind and state, each an ordered range
/// of the history's finished index, so a batch reads only the rows it removes.
fn prune_candidates(s: &str) -> String {
    let branches = [
        ("NOT is_recurring", "done", "$1"),
        ("NOT is_recurring", "dead", "$2"),
        ("NOT is_recurring", "cancelled", "$2"),
        ("is_recurring", "done", "$3"),
        ("is_recurring", "dead", "$3"),
        ("is_recurring", "cancelled", "$3"),
    ]
    .map(|(recurring, state, before)| {
        format!(
            "(SELECT id, ctid FROM {s}.task_history WHERE {recurring} AND state = '{state}' \
             AND finished_at < {before} ORDER BY finished_at LIMIT $4)"
        )
    });
    format!("candidates AS ({} LIMIT $4)", branches.join(" UNION ALL "))
}

/// Sent before a prune batch, in its transaction: the candidates are read only through the
/// history's finished index, in its order, whatever the table's statistics say. A history
/// that was never analyzed (a server with autovacuum off, or a burst autovacuum has not
/// reached yet) otherwise plans each batch as a scan of every finished task of the state and
/// a sort: 40 ms a batch of 1,000 at 100,000 finished tasks instead of 4, and growing with
/// the history. The paths turned off stay in the plan at a cost of ten billion each, which
/// is over every threshold of PostgreSQL's just-in-time compiler: `jit` is turned off too, or
/// each batch would spend 400 ms compiling the statement.
pub(super) const PRUNE_BY_FINISHED_INDEX: &str = "SET LOCAL enable_seqscan = off; \
    SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off; SET LOCAL jit = off";

/// Run rows of live recurring tasks that finished before $3, at most $4. The live recurring
/// tasks are found through the singleton index, whose condition this repeats (every row of
/// the hot table is live): a plain `is_recurring` read the whole hot table for each batch,
/// 30 ms at 200,000 waiting tasks.
fn prune_old_runs(s: &str, column: &str) -> String {
    format!(
        "SELECT r.{column} FROM {s}.runs r JOIN {s}.tasks t ON t.id = r.task_id \
         WHERE r.finished_at < $3 AND t.is_recurring AND t.state IN {LIVE} LIMIT $4"
    )
}

/// Fold the finished-task counters: one row per handler, queue and state.
pub(super) fn sql_fold_counts(s: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM {s}.task_counts RETURNING handler, queue, state, n) \
         INSERT INTO {s}.task_counts (handler, queue, state, n) \
         SELECT handler, queue, state, sum(n) FROM gone GROUP BY handler, queue, state \
         HAVING sum(n) <> 0"
    )
}

/// One prune batch in one statement: the candidates are deleted by their row's place (read
/// in the same snapshot) only while still past their cutoff (a task retried meanwhile has
/// left the history), then their runs, then old runs of live recurring tasks (by `ctid`: run
/// rows are never updated). Only tasks that can have earlier attempts in `runs` are looked
/// up there: a one-off task whose only attempt is on its history row has none (every
/// attempt is counted in `attempts`, and all but the last are run rows). Returns the three
/// counts.
pub(super) fn sql_prune(s: &str) -> String {
    format!(
        "WITH {candidates}, \
         gone AS (DELETE FROM {s}.task_history t \
           WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM candidates)) \
           AND CASE WHEN t.is_recurring THEN t.finished_at < $3 \
                    WHEN t.state = 'done' THEN t.finished_at < $1 \
                    ELSE t.finished_at < $2 END \
           RETURNING t.id, t.run_worker IS NOT NULL AS kept_run, \
             t.is_recurring OR t.attempts > 1 OR t.run_worker IS NULL AS may_have_runs), \
         gone_runs AS (DELETE FROM {s}.runs \
           WHERE task_id = ANY(ARRAY(SELECT id FROM gone WHERE may_have_runs)) RETURNING 1), \
         old AS (DELETE FROM {s}.runs WHERE ctid = ANY(ARRAY({old})) RETURNING 1) \
         SELECT (SELECT count(*) FROM gone), \
           (SELECT count(*) FROM gone_runs) + (SELECT count(*) FROM gone WHERE kept_run), \
           (SELECT count(*) FROM old)",
        candidates = prune_candidates(s),
        old = prune_old_runs(s, "ctid"),
    )
}

/// [`sql_prune`]'s counts, removing nothing.
pub(super) fn sql_prune_count(s: &str) -> String {
    format!(
        "WITH {candidates} \
         SELECT (SELECT count(*) FROM candidates), \
           (SELECT count(*) FROM {s}.runs WHERE task_id = ANY(ARRAY(SELECT id FROM candidates))) \
           + (SELECT count(*) FROM {s}.task_history \
             WHERE id = ANY(ARRAY(SELECT id FROM candidates)) AND run_worker IS NOT NULL), \
           (SELECT count(*) FROM ({old}) o)",
        candidates = prune_candidates(s),
        old = prune_old_runs(s, "ctid"),
    )
}

/// For each task of $1 with its `since` in $2 (in that order): when its latest successful run
/// finished, the occurrences at or after `since` its runs succeeded for (latest first, at most
/// $3), whether one before `since` succeeded, and the run its history row keeps when that
/// succeeded. Each subquery reads one range of `runs_succeeded (task_id, timestamp,
/// finished_at) WHERE outcome = 'succeeded'`.
fn sql_successes(s: &str) -> String {
    format!(
        "SELECT (SELECT r.finished_at FROM {s}.runs r \
           WHERE r.task_id = q.id AND r.outcome = 'succeeded' \
           ORDER BY r.timestamp DESC, r.finished_at DESC LIMIT 1), \
         ARRAY(SELECT r.timestamp FROM {s}.runs r \
           WHERE r.task_id = q.id AND r.outcome = 'succeeded' AND r.timestamp >= q.since \
           ORDER BY r.timestamp DESC LIMIT $3), \
         EXISTS (SELECT 1 FROM {s}.runs r \
           WHERE r.task_id = q.id AND r.outcome = 'succeeded' AND r.timestamp < q.since), \
         h.run_timestamp, h.run_finished_at \
         FROM unnest($1::bytea[], $2::timestamptz[]) WITH ORDINALITY AS q(id, since, n) \
         LEFT JOIN {s}.task_history h ON h.id = q.id AND h.run_worker IS NOT NULL \
           AND h.run_outcome = 'succeeded' \
         ORDER BY q.n"
    )
}

/// Every statement a pooled connection runs, each prepared there once, on first use.
pub(super) struct Statements {
    pub(super) insert: Stmt,
    pub(super) insert_skipping: Stmt,
    pub(super) existing: Stmt,
    pub(super) promote: Stmt,
    pub(super) claim: Stmt,
    pub(super) finish: Stmt,
    pub(super) finish_moves: Stmt,
    pub(super) heartbeat: Stmt,
    pub(super) expired: Stmt,
    pub(super) next_due: Stmt,
    pub(super) get: Stmt,
    pub(super) get_history: Stmt,
    pub(super) runs: Stmt,
    pub(super) list: Stmt,
    pub(super) cancel: Stmt,
    pub(super) retry: Stmt,
    pub(super) retry_move: Stmt,
    pub(super) stats_counts: Stmt,
    pub(super) stats_oldest: Stmt,
    pub(super) stats_finished: Stmt,
    pub(super) stats_workers: Stmt,
    pub(super) stats_due: Stmt,
    pub(super) stats_stuck: Stmt,
    pub(super) worker_remove: Stmt,
    pub(super) leader_elect: Stmt,
    pub(super) leader_resign: Stmt,
    pub(super) cancel_many: Stmt,
    pub(super) retry_many: Stmt,
    pub(super) retry_many_move: Stmt,
    pub(super) fold_counts: Stmt,
    pub(super) existing_unique: Stmt,
    pub(super) recent_unique: Stmt,
    pub(super) cancel_request: Stmt,
    pub(super) cancel_requested: Stmt,
    pub(super) count_many: Stmt,
    pub(super) list_state: Stmt,
    pub(super) reach: Stmt,
    pub(super) reach_state: Stmt,
    pub(super) successes: Stmt,
    pub(super) sizes: Stmt,
    pub(super) sizes_state: Stmt,
    pub(super) runs_kept: Stmt,
    pub(super) runs_page: Stmt,
    pub(super) runs_count: Stmt,
}

impl Statements {
    /// The SQL of every statement, in field order.
    pub(super) fn sql(s: &str) -> Vec<String> {
        vec![
            sql_insert(s),
            sql_insert_skipping(s),
            sql_existing(s),
            sql_promote(s),
            sql_claim(s),
            sql_finish(s),
            sql_finish_moves(s),
            sql_heartbeat(s),
            sql_expired(s),
            sql_next_due(s),
            format!("SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE id = $1"),
            format!("SELECT {HISTORY_COLUMNS} FROM {s}.task_history WHERE id = $1"),
            // The rows in `runs`, then the run the history row keeps (the last one).
            format!(
                "SELECT attempt, timestamp, started_at, finished_at, outcome, error, worker \
                 FROM (SELECT seq, attempt, timestamp, started_at, finished_at, outcome, error, \
                   worker FROM {s}.runs WHERE task_id = $1 \
                 UNION ALL SELECT 9223372036854775807, run_attempt, run_timestamp, \
                   run_started_at, run_finished_at, run_outcome, run_error, run_worker \
                 FROM {s}.task_history WHERE id = $1 AND run_worker IS NOT NULL) r ORDER BY seq"
            ),
            sql_list(s, false),
            sql_cancel(s),
            format!(
                "UPDATE {s}.tasks SET state = 'scheduled', due_at = $1, ready = true, \
                 max_attempts = GREATEST(max_attempts, attempts + 1), updated_at = $1, \
                 cancel_requested = false WHERE id = $2 \
                 AND (state = 'retrying' OR (state = 'scheduled' AND due_at > $1))"
            ),
            sql_retry_move(s),
            // Live tasks counted (the hot table holds only them); finished ones from their
            // counters.
            format!(
                "SELECT handler, state, count(*) FROM {s}.tasks GROUP BY handler, state \
                 UNION ALL SELECT handler, state, sum(n)::int8 FROM {s}.task_counts \
                 GROUP BY handler, state HAVING sum(n) > 0 ORDER BY 1, 2"
            ),
            format!("SELECT min(due_at) FROM {s}.tasks WHERE state IN {WAITING} AND due_at <= $1"),
            // Attempts that ended after $1: rows of `runs`, and runs kept on history rows (one
            // ended no later than its task finished: the finished index narrows the search).
            format!(
                "SELECT (SELECT count(*) FROM {s}.runs WHERE finished_at > $1) \
                 + (SELECT count(*) FROM {s}.task_history WHERE is_recurring IN (false, true) \
                   AND state IN ('done', 'dead', 'cancelled') AND finished_at > $1 \
                   AND run_finished_at > $1)"
            ),
            format!(
                "SELECT id, handlers, queues, last_seen, live_until FROM {s}.workers \
                 WHERE live_until > $1 ORDER BY id"
            ),
            format!(
                "SELECT handler, state, count(*) FROM {s}.tasks WHERE state IN {WAITING} \
                 AND due_at <= $1 GROUP BY handler, state ORDER BY handler, state"
            ),
            format!(
                "SELECT count(*) FROM {s}.tasks \
                 WHERE lease_until IS NOT NULL AND lease_until < $1 AND state = 'running'"
            ),
            format!("DELETE FROM {s}.workers WHERE id = $1"),
            sql_leader_elect(s),
            format!("DELETE FROM {s}.leaders WHERE holder = $1"),
            sql_cancel_many(s),
            sql_retry_many_live(s),
            sql_retry_many_move(s),
            sql_fold_counts(s),
            sql_existing_unique(s),
            sql_recent_unique(s),
            format!(
                "UPDATE {s}.tasks SET cancel_requested = true WHERE id = $1 AND state = 'running'"
            ),
            format!(
                "SELECT t.id FROM {s}.tasks t \
                 JOIN unnest($1::bytea[], $2::int8[]) AS c(id, fence) \
                   ON t.id = c.id AND t.fence = c.fence \
                 WHERE t.state = 'running' AND t.cancel_requested"
            ),
            sql_count_many(s),
            sql_list(s, true),
            sql_reach(s, false),
            sql_reach(s, true),
            sql_successes(s),
            sql_sizes(s, false),
            sql_sizes(s, true),
            // The run task $1's history row keeps (the attempt that finished it).
            format!(
                "SELECT run_attempt, run_timestamp, run_started_at, run_finished_at, \
                 run_outcome, run_error, run_worker FROM {s}.task_history \
                 WHERE id = $1 AND run_worker IS NOT NULL"
            ),
            // Task $1's rows of `runs` recorded before row $2, newest first, at most $3: one
            // backward range of `runs_task (task_id, seq)`. `seq` comes last.
            format!(
                "SELECT attempt, timestamp, started_at, finished_at, outcome, error, worker, seq \
                 FROM {s}.runs WHERE task_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
            ),
            // How many rows of `runs` task $1 has, counted up to $2: that many entries of
            // `runs_task` at most.
            format!("SELECT count(*) FROM (SELECT 1 FROM {s}.runs WHERE task_id = $1 LIMIT $2) c"),
        ]
    }

    /// The set for one connection, none of it prepared yet: each statement is prepared on
    /// the connection when it first runs there.
    pub(super) fn new(s: &str) -> Statements {
        Statements::from_stmts(Statements::sql(s).iter().map(|sql| Stmt::new(sql)))
    }

    /// The statements in field order.
    fn from_stmts(stmts: impl Iterator<Item = Stmt>) -> Statements {
        let mut it = stmts;
        let mut next = || it.next().expect("one statement per field");
        Statements {
            insert: next(),
            insert_skipping: next(),
            existing: next(),
            promote: next(),
            claim: next(),
            finish: next(),
            finish_moves: next(),
            heartbeat: next(),
            expired: next(),
            next_due: next(),
            get: next(),
            get_history: next(),
            runs: next(),
            list: next(),
            cancel: next(),
            retry: next(),
            retry_move: next(),
            stats_counts: next(),
            stats_oldest: next(),
            stats_finished: next(),
            stats_workers: next(),
            stats_due: next(),
            stats_stuck: next(),
            worker_remove: next(),
            leader_elect: next(),
            leader_resign: next(),
            cancel_many: next(),
            retry_many: next(),
            retry_many_move: next(),
            fold_counts: next(),
            existing_unique: next(),
            recent_unique: next(),
            cancel_request: next(),
            cancel_requested: next(),
            count_many: next(),
            list_state: next(),
            reach: next(),
            reach_state: next(),
            successes: next(),
            sizes: next(),
            sizes_state: next(),
            runs_kept: next(),
            runs_page: next(),
            runs_count: next(),
        }
    }
}

/// Every column of a live task, in the order `copy_read` reads and `copy_write` writes them.
const COPY_LIVE_COLUMNS: &str = "id, handler, data, timestamp, due_at, ready, last_run_on, \
    attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, \
    worker, started_at, lease_until, created_at, updated_at, unique_key, cancel_requested";

/// Every column of a finished task, in copy order.
const COPY_HISTORY_COLUMNS: &str = "id, handler, data, timestamp, due_at, last_run_on, attempts, \
    max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, created_at, \
    finished_at, unique_key, run_attempt, run_timestamp, run_started_at, run_finished_at, \
    run_outcome, run_error, run_worker";

/// A batch of live tasks after id $1 (an empty `bytea`: from the first), at most $2.
pub(super) fn sql_copy_read_live(s: &str) -> String {
    format!("SELECT {COPY_LIVE_COLUMNS} FROM {s}.tasks WHERE id > $1 ORDER BY id LIMIT $2")
}

/// A batch of finished tasks after id $1, at most $2.
pub(super) fn sql_copy_read_history(s: &str) -> String {
    format!(
        "SELECT {COPY_HISTORY_COLUMNS} FROM {s}.task_history WHERE id > $1 ORDER BY id LIMIT $2"
    )
}

/// A batch of run rows after task $1's row $2, by task (the `runs_task` index) and then in
/// recorded order, at most $3.
pub(super) fn sql_copy_read_runs(s: &str) -> String {
    format!(
        "SELECT seq, task_id, attempt, timestamp, started_at, finished_at, outcome, error, \
           worker FROM {s}.runs WHERE task_id >= $1 AND (task_id > $1 OR seq > $2) \
         ORDER BY task_id, seq LIMIT $3"
    )
}

/// Live tasks from arrays, one per column in copy order.
pub(super) fn sql_copy_write_live(s: &str) -> String {
    format!(
        "INSERT INTO {s}.tasks ({COPY_LIVE_COLUMNS}) SELECT * FROM unnest($1::bytea[], \
           $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bool[], \
           $7::timestamptz[], $8::int4[], $9::int4[], $10::bool[], $11::text[], $12::text[], \
           $13::text[], $14::int4[], $15::text[], $16::int8[], $17::text[], $18::timestamptz[], \
           $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::text[], $23::bool[])"
    )
}

/// Finished tasks from arrays, one per column in copy order.
pub(super) fn sql_copy_write_history(s: &str) -> String {
    format!(
        "INSERT INTO {s}.task_history ({COPY_HISTORY_COLUMNS}) SELECT * FROM unnest( \
           $1::bytea[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], \
           $6::timestamptz[], $7::int4[], $8::int4[], $9::bool[], $10::text[], $11::text[], \
           $12::text[], $13::int4[], $14::text[], $15::int8[], $16::timestamptz[], \
           $17::timestamptz[], $18::text[], $19::int4[], $20::timestamptz[], \
           $21::timestamptz[], $22::timestamptz[], $23::text[], $24::text[], $25::text[])"
    )
}

/// Run rows from arrays, appended in the arrays' order (so `seq` keeps it).
pub(super) fn sql_copy_write_runs(s: &str) -> String {
    format!(
        "INSERT INTO {s}.runs (task_id, attempt, timestamp, started_at, finished_at, outcome, \
           error, worker) \
         SELECT task_id, attempt, ts, started_at, finished_at, outcome, error, worker \
         FROM unnest($1::bytea[], $2::int4[], $3::timestamptz[], $4::timestamptz[], \
           $5::timestamptz[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY \
           AS r(task_id, attempt, ts, started_at, finished_at, outcome, error, worker, ord) \
         ORDER BY ord"
    )
}

/// A batch of queue controls after name $1 (an empty name: from the first), at most $2, in
/// byte order whatever the database's collation, as SQLite orders them.
pub(super) fn sql_copy_read_queues(s: &str) -> String {
    format!(
        "SELECT name, paused, concurrency, per_key, rate_count, rate_period_ms, updated_at \
         FROM {s}.queues WHERE name COLLATE \"C\" > $1 ORDER BY name COLLATE \"C\" LIMIT $2"
    )
}

/// Queue controls from arrays, one per column in copy order.
pub(super) fn sql_copy_write_queues(s: &str) -> String {
    format!(
        "INSERT INTO {s}.queues (name, paused, concurrency, per_key, rate_count, \
           rate_period_ms, updated_at) SELECT * FROM unnest($1::text[], $2::bool[], \
           $3::int4[], $4::text[], $5::int4[], $6::int8[], $7::timestamptz[])"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn schema_names_are_checked() {
        assert!(Names::new("party").is_ok());
        assert!(Names::new("party_test_0af3").is_ok());
        for bad in ["", "1party", "a-b", "a\"b", &"x".repeat(58)] {
            assert!(
                matches!(Names::new(bad), Err(TaskError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(Names::new("p").unwrap().channel, "party_p");
    }
}
