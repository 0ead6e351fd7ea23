//! The statements' text. The connection caches each prepared statement, keyed by this text.

/// The columns [`super::rows::task_from_row`] reads, in its order.
macro_rules! task_columns {
    () => {
        "id, handler, data, timestamp, last_run_on, attempts, is_recurring, \
         state, queue, priority, max_attempts, last_error, rule, due_at, created_at, worker"
    };
}

pub(super) const GET: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ?1");

pub(super) const LIST: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE (?1 IS NULL OR state = ?1) \
     AND (?2 IS NULL OR handler = ?2) AND (?4 IS NULL OR queue = ?4) \
     AND (?5 IS NULL OR (due_at, id) > (?5, ?6)) ORDER BY due_at, id LIMIT ?3"
);

pub(super) const EXISTING: &str = "SELECT id FROM tasks WHERE handler = ?1 AND data = ?2 AND is_recurring = 1 \
    AND state IN ('scheduled','running','retrying')";

pub(super) const INSERT_TASK: &str = "INSERT INTO tasks (id, handler, data, timestamp, due_at, ready, attempts, max_attempts, \
    is_recurring, rule, state, queue, priority, fence, created_at, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?4, ?4 <= ?10, 0, ?5, ?6, ?7, 'scheduled', ?8, ?9, 0, ?10, ?10)";

pub(super) const GET_RUNS: &str = "SELECT attempt, timestamp, started_at, finished_at, outcome, error, worker \
    FROM runs WHERE task_id = ?1 ORDER BY rowid";

pub(super) const INSERT_RUN: &str = "INSERT INTO runs (task_id, attempt, timestamp, started_at, finished_at, outcome, error, worker) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

pub(super) const FINISH: &str = "UPDATE tasks SET state = ?1, timestamp = COALESCE(?2, timestamp), \
    due_at = COALESCE(?3, due_at), last_run_on = COALESCE(?4, last_run_on), \
    attempts = CASE WHEN ?5 THEN 0 ELSE attempts END, \
    last_error = COALESCE(?6, last_error), ready = 0, worker = NULL, started_at = NULL, \
    lease_until = NULL, updated_at = ?7 \
    WHERE id = ?8 AND fence = ?9 AND state = 'running' AND (?10 IS NULL OR lease_until < ?10)";

pub(super) const PROMOTE: &str = "UPDATE tasks SET ready = 1 WHERE id IN (SELECT id FROM tasks \
    WHERE ready = 0 AND state IN ('scheduled','retrying') AND due_at <= ?1 \
    ORDER BY due_at LIMIT (?2 + 0))";

/// `LIMIT (?6 + 0)`, not `LIMIT ?6`: SQLite plans with a bare parameter's value and
/// re-prepares the statement whenever it changes, and the limit (the free slots) changes on
/// almost every claim.
///
/// Ready tasks are due, but one written ready by a process whose clock is a little ahead may
/// not be due yet by ours: the claim checks `due_at` as well, so nothing starts early.
/// `RETURNING` has no order: the priority and due time let the caller sort the batch.
pub(super) const CLAIM: &str = "UPDATE tasks SET state = 'running', ready = 0, attempts = attempts + 1, \
    fence = fence + 1, worker = ?1, started_at = ?2, lease_until = ?3, updated_at = ?2 \
    WHERE id IN (SELECT id FROM tasks WHERE ready = 1 \
    AND state IN ('scheduled','retrying') AND due_at <= ?2 \
    AND handler IN (SELECT value FROM json_each(?4)) \
    AND queue IN (SELECT value FROM json_each(?5)) \
    ORDER BY priority, due_at LIMIT (?6 + 0)) \
    RETURNING id, handler, data, timestamp, last_run_on, attempts, max_attempts, \
    is_recurring, rule, fence, priority, due_at";

pub(super) const HEARTBEAT_WORKER: &str = "INSERT INTO workers (id, handlers, queues, last_seen, live_until) \
    VALUES (?1, ?2, ?3, ?4, ?5) \
    ON CONFLICT (id) DO UPDATE SET handlers = ?2, queues = ?3, last_seen = ?4, live_until = ?5";

pub(super) const HEARTBEAT: &str =
    "UPDATE tasks SET lease_until = ?1 WHERE id = ?2 AND fence = ?3 AND state = 'running'";

pub(super) const EXPIRED: &str = "SELECT id, fence, attempts, max_attempts, timestamp, \
    COALESCE(worker, ''), started_at, lease_until \
    FROM tasks WHERE state = 'running' AND lease_until < ?1 ORDER BY lease_until LIMIT ?2";

pub(super) const EXPIRED_COUNT: &str =
    "SELECT count(*) FROM tasks WHERE state = 'running' AND lease_until < ?1";

pub(super) const NEXT_DUE: &str = "SELECT min(due_at) FROM ( \
    SELECT * FROM (SELECT due_at FROM tasks WHERE ready = 1 \
    AND state IN ('scheduled','retrying') \
    AND handler IN (SELECT value FROM json_each(?1)) \
    AND queue IN (SELECT value FROM json_each(?2)) LIMIT 1) \
    UNION ALL \
    SELECT * FROM (SELECT due_at FROM tasks WHERE ready = 0 \
    AND state IN ('scheduled','retrying') \
    AND handler IN (SELECT value FROM json_each(?1)) \
    AND queue IN (SELECT value FROM json_each(?2)) ORDER BY due_at LIMIT 1))";

pub(super) const CANCEL: &str = "UPDATE tasks SET state = 'cancelled', ready = 0, updated_at = ?1 \
    WHERE id = ?2 AND state IN ('scheduled','retrying','dead')";

pub(super) const RETRY: &str = "UPDATE tasks SET state = 'scheduled', due_at = ?1, ready = 0, \
    max_attempts = MAX(max_attempts, attempts + 1), updated_at = ?1 \
    WHERE id = ?2 AND state IN ('dead','cancelled','retrying')";

pub(super) const STATS_COUNTS: &str =
    "SELECT handler, state, count(*) FROM tasks GROUP BY handler, state ORDER BY handler, state";

pub(super) const STATS_OLDEST: &str =
    "SELECT min(due_at) FROM tasks WHERE state IN ('scheduled','retrying') AND due_at <= ?1";

pub(super) const STATS_FINISHED: &str = "SELECT count(*) FROM runs WHERE finished_at > ?1";

pub(super) const STATS_WORKERS: &str = "SELECT id, handlers, queues, last_seen, live_until \
    FROM workers WHERE live_until > ?1 ORDER BY id";

pub(super) const STATS_DUE: &str = "SELECT handler, state, count(*) FROM tasks \
    WHERE state IN ('scheduled','retrying') AND due_at <= ?1 \
    GROUP BY handler, state ORDER BY handler, state";

/// Take the leadership when nobody holds it, renew it for its holder, or take it over once
/// the term ended; the row changes only in those cases.
pub(super) const LEADER_ELECT: &str = "INSERT INTO leaders (name, holder, until) VALUES (?1, ?2, ?4) \
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
    WHERE leaders.holder = excluded.holder OR leaders.until < ?3";

pub(super) const LEADER_RESIGN: &str = "DELETE FROM leaders WHERE holder = ?1";

pub(super) const WORKER_REMOVE: &str = "DELETE FROM workers WHERE id = ?1";

pub(super) const CANCEL_MANY: &str = "UPDATE tasks SET state = 'cancelled', ready = 0, updated_at = ?1 \
    WHERE state IN (SELECT value FROM json_each(?2)) AND (?3 IS NULL OR handler = ?3) \
    AND (?4 IS NULL OR queue = ?4)";

/// A dead or cancelled recurring task is retried only when no live copy holds its singleton
/// and no other matching copy with a greater id is retried by the same statement.
pub(super) const RETRY_MANY: &str = "UPDATE tasks SET state = 'scheduled', due_at = ?1, ready = 0, \
    max_attempts = MAX(max_attempts, attempts + 1), updated_at = ?1 \
    WHERE state IN (SELECT value FROM json_each(?2)) AND (?3 IS NULL OR handler = ?3) \
    AND (?4 IS NULL OR queue = ?4) \
    AND (is_recurring = 0 OR state = 'retrying' OR NOT EXISTS (SELECT 1 FROM tasks o \
      WHERE o.handler = tasks.handler AND o.data = tasks.data AND o.is_recurring = 1 \
      AND o.id <> tasks.id AND (o.state IN ('scheduled','running','retrying') \
        OR (o.state IN ('dead','cancelled') AND o.state IN (SELECT value FROM json_each(?2)) \
          AND (?4 IS NULL OR o.queue = ?4) AND o.id > tasks.id))))";

/// Finished one-off done tasks past their cutoff. Every prune query names the finished-tasks
/// index's predicate word for word, so SQLite may use that partial index.
macro_rules! prune_done {
    () => {
        "SELECT id FROM tasks \
         WHERE state IN ('done', 'dead', 'cancelled') AND is_recurring = 0 AND state = 'done' \
         AND updated_at < ?1 LIMIT (?2 + 0)"
    };
}

/// Finished one-off dead and cancelled tasks past their cutoff.
macro_rules! prune_dead {
    () => {
        "SELECT id FROM tasks \
         WHERE state IN ('done', 'dead', 'cancelled') AND is_recurring = 0 \
         AND state IN ('dead', 'cancelled') AND updated_at < ?1 LIMIT (?2 + 0)"
    };
}

/// Finished recurring tasks past their cutoff.
macro_rules! prune_recurring {
    () => {
        "SELECT id FROM tasks \
         WHERE state IN ('done', 'dead', 'cancelled') AND is_recurring = 1 \
         AND updated_at < ?1 LIMIT (?2 + 0)"
    };
}

/// A kind's candidates and their run rows, counted.
macro_rules! prune_count {
    ($kind:ident) => {
        concat!(
            "SELECT count(*), (SELECT count(*) FROM runs WHERE task_id IN (",
            $kind!(),
            ")) FROM (",
            $kind!(),
            ")"
        )
    };
}

pub(super) const PRUNE_DONE: &str = prune_done!();
pub(super) const PRUNE_DEAD: &str = prune_dead!();
pub(super) const PRUNE_RECURRING: &str = prune_recurring!();
pub(super) const PRUNE_DONE_COUNT: &str = prune_count!(prune_done);
pub(super) const PRUNE_DEAD_COUNT: &str = prune_count!(prune_dead);
pub(super) const PRUNE_RECURRING_COUNT: &str = prune_count!(prune_recurring);

pub(super) const PRUNE_DELETE_RUNS: &str = "DELETE FROM runs WHERE task_id = ?1";

pub(super) const PRUNE_DELETE_TASK: &str = "DELETE FROM tasks WHERE id = ?1";

/// Run rows of live recurring tasks that finished before ?1.
macro_rules! old_recurring_runs {
    () => {
        "SELECT r.rowid FROM runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.finished_at < ?1 AND t.is_recurring = 1 \
         AND t.state IN ('scheduled', 'running', 'retrying') LIMIT (?2 + 0)"
    };
}

pub(super) const PRUNE_COUNT_OLD_RUNS: &str =
    concat!("SELECT count(*) FROM (", old_recurring_runs!(), ")");

pub(super) const PRUNE_DELETE_OLD_RUNS: &str = concat!(
    "DELETE FROM runs WHERE rowid IN (",
    old_recurring_runs!(),
    ")"
);
