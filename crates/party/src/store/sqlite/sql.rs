//! The statements' text. The connection caches each prepared statement, keyed by this text.

/// The columns [`super::rows::task_from_row`] reads, in its order.
macro_rules! task_columns {
    () => {
        "id, handler, data, timestamp, last_run_on, attempts, is_recurring, \
         state, queue, priority, max_attempts, last_error, rule, due_at, created_at, worker, \
         unique_key, cancel_requested, NULL"
    };
}

/// The columns [`super::rows::task_from_row`] reads, from a history row (no worker).
macro_rules! history_columns {
    () => {
        "id, handler, data, timestamp, last_run_on, attempts, is_recurring, \
         state, queue, priority, max_attempts, last_error, rule, due_at, created_at, NULL, \
         unique_key, 0, finished_at"
    };
}

pub(super) const GET: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ?1");

pub(super) const GET_HISTORY: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM task_history WHERE id = ?1"
);

/// A data field filter ([`crate::DataMatch`]): the JSON path of the field (`$."customer"`)
/// in the first parameter, NULL for no filter, and the value's text in the second. The field's
/// value as text: a string's own text, a number as stored, `true` or `false`; anything else
/// is NULL and matches nothing.
macro_rules! data_match {
    ($path:literal, $value:literal) => {
        concat!(
            " AND (",
            $path,
            " IS NULL OR CASE json_type(data, ",
            $path,
            ") WHEN 'text' THEN json_extract(data, ",
            $path,
            ") WHEN 'integer' THEN data -> ",
            $path,
            " WHEN 'real' THEN data -> ",
            $path,
            " WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END = ",
            $value,
            ")"
        )
    };
}

/// A listing's filters: `$state` on ?1 (`?1 IS NULL` when the listing has no state, `state =
/// ?1` when it has one: written out, not as `?1 IS NULL OR state = ?1`, so SQLite can seek the
/// history's `(state, due_at, id)` index instead of reading the whole history for a state it
/// holds few or none of), ?2 handler, ?4 queue, ?7 and ?8 a data field ([`data_match`]), ?9
/// recurring or one-off, the keyset cursor (?5 due time, ?6 id) it continues after and the
/// place (?10 due time, ?11 id) it ends at. Both places bound the index walk itself (an absent
/// one is the lowest or highest place there is, not `?5 IS NULL OR …`, which SQLite checks row
/// by row): a page deep in the listing, or one ended early by `until`, reads only its own
/// part of the index.
macro_rules! list_filters {
    ($state:literal) => {
        concat!(
            " WHERE ",
            $state,
            " AND (?2 IS NULL OR handler = ?2) \
             AND (?4 IS NULL OR queue = ?4) \
             AND (due_at, id) > (COALESCE(?5, -9223372036854775807), COALESCE(?6, X'')) \
             AND (due_at, id) <= (COALESCE(?10, 9223372036854775807), \
               COALESCE(?11, X'FFFFFFFFFFFFFFFFFFFFFFFF')) \
             AND (?9 IS NULL OR is_recurring = ?9)",
            data_match!("?7", "?8"),
            " ORDER BY due_at, id LIMIT ?3"
        )
    };
}

/// A listing's place (due time, id) and size columns: the bytes of the data, last error, rule
/// and unique key as stored (`octet_length` reads a text's size, not the text).
macro_rules! size_columns {
    () => {
        "due_at, id, octet_length(data) + COALESCE(octet_length(last_error), 0) \
         + COALESCE(octet_length(rule), 0) + COALESCE(octet_length(unique_key), 0)"
    };
}

/// [`list`] with the place and size of each task ([`size_columns`]) instead of the task.
macro_rules! sizes {
    ($live:literal $(, $history:literal)+) => {
        concat!(
            "SELECT * FROM (SELECT * FROM (SELECT ",
            size_columns!(),
            " FROM tasks",
            list_filters!($live),
            ")",
            $(
                " UNION ALL SELECT * FROM (SELECT ",
                size_columns!(),
                " FROM task_history",
                list_filters!($history),
                ")",
            )+
            ") ORDER BY due_at, id LIMIT ?3"
        )
    };
}

/// Live and finished tasks, merged: the live tasks matching `$live`, and for each `$history`
/// condition the finished ones matching it, each part walked in list order through an index
/// of its own (the history's `(state, due_at, id)`, so every history condition names one
/// state).
macro_rules! list {
    ($live:literal $(, $history:literal)+) => {
        concat!(
            "SELECT * FROM (SELECT * FROM (SELECT ",
            task_columns!(),
            " FROM tasks",
            list_filters!($live),
            ")",
            $(
                " UNION ALL SELECT * FROM (SELECT ",
                history_columns!(),
                " FROM task_history",
                list_filters!($history),
                ")",
            )+
            ") ORDER BY due_at, id LIMIT ?3"
        )
    };
}

/// `$statement` (`list` or `reach`) without a state filter (?1 is NULL): every live task, and
/// the history's three states each walked apart.
macro_rules! every_state {
    ($statement:ident) => {
        $statement!(
            "?1 IS NULL",
            "state = 'done'",
            "state = 'dead'",
            "state = 'cancelled'"
        )
    };
}

/// A listing without a state filter (?1 is NULL): the history's three states merged.
pub(super) const LIST: &str = every_state!(list);

/// A listing of one state (?1).
pub(super) const LIST_STATE: &str = list!("state = ?1", "state = ?1");

/// [`LIST`]'s places and sizes ([`crate::store::Store::task_list_sizes`]).
pub(super) const SIZES: &str = every_state!(sizes);

/// [`LIST_STATE`]'s places and sizes.
pub(super) const SIZES_STATE: &str = sizes!("state = ?1", "state = ?1");

/// Where a listing's ?3-th task is ([`crate::store::Store::task_list_reach`]): the listing's
/// own statement, called with no data filter, its rows skipped to the ?3-th.
macro_rules! reach {
    ($($condition:literal),+) => {
        concat!(
            "SELECT due_at, id FROM (",
            list!($($condition),+),
            ") ORDER BY due_at, id LIMIT 1 OFFSET ?3 - 1"
        )
    };
}

/// [`LIST`]'s reach.
pub(super) const REACH: &str = every_state!(reach);

/// [`LIST_STATE`]'s reach.
pub(super) const REACH_STATE: &str = reach!("state = ?1", "state = ?1");

/// The history columns a finished task is written with, in the order the moves select them.
macro_rules! history_insert {
    () => {
        "INSERT INTO task_history (id, handler, data, timestamp, due_at, last_run_on, attempts, \
         max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, created_at, \
         finished_at, unique_key) "
    };
}

/// The history row of a task that finished for good: ?1..?15 the live row's columns as
/// [`move_read`] reads them, ?16 its last error (the finish's, else the task's), ?17 state,
/// ?18 now, then the attempt that ended it (all NULL when no attempt ran): ?19 attempt, ?20 its
/// occurrence, ?21 its start, ?22 its end, ?23 outcome, ?24 its error, ?25 worker.
/// [`move_insert`] repeats its `VALUES` for several rows.
const FINISH_INSERT: &str = "INSERT INTO task_history (id, handler, data, timestamp, \
    due_at, last_run_on, attempts, max_attempts, is_recurring, rule, queue, priority, fence, \
    created_at, unique_key, last_error, state, finished_at, run_attempt, run_timestamp, \
    run_started_at, run_finished_at, run_outcome, run_error, run_worker) VALUES (?1, ?2, ?3, ?4, \
    ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, \
    ?24, ?25)";

pub(super) const DELETE_LIVE: &str = "DELETE FROM tasks WHERE id = ?1";

/// The statement sizes a run of rows is written in (moves to the history in `apply_moves`,
/// new tasks in `insert_rows`): as many full statements of the first size as fit, then of the
/// next, down to one.
pub(super) const CHUNK_SIZES: [usize; 3] = [32, 8, 1];

/// `items` cut as [`CHUNK_SIZES`] says: full chunks of the first size while they fit, then of
/// the next, down to single items; every chunk's length is one of the sizes.
pub(super) fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = *CHUNK_SIZES.iter().find(|s| **s <= rest.len())?;
        let (chunk, later) = rest.split_at(size);
        rest = later;
        Some(chunk)
    })
}

/// The `INSERT` of `one_row` (whose `VALUES` row numbers its parameters from `?1` to
/// `?{per_row}`) repeated for `n` rows, row `r` taking its parameters from
/// `r * per_row + 1` on.
fn repeat_rows(one_row: &str, per_row: usize, n: usize) -> String {
    let (head, row) = one_row
        .split_once(" VALUES ")
        .expect("an INSERT with VALUES");
    let rows = (0..n)
        .map(|r| renumber(row, r * per_row))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{head} VALUES {rows}")
}

/// The number of values each row of [`move_insert`] takes: [`FINISH_INSERT`]'s.
pub(super) const MOVE_INSERT_VALUES: usize = 25;

/// The smallest size of [`CHUNK_SIZES`] that holds `n` ids (at most the largest).
pub(super) fn chunk_size_for(n: usize) -> usize {
    *CHUNK_SIZES
        .iter()
        .rev()
        .find(|s| **s >= n)
        .expect("at most the largest size")
}

/// Where `n` is in [`CHUNK_SIZES`], to pick its statement.
fn chunk_size_index(n: usize) -> usize {
    CHUNK_SIZES
        .iter()
        .position(|s| *s == n)
        .expect("a statement size of CHUNK_SIZES")
}

/// `n` statements built by `build`, one per size of [`CHUNK_SIZES`], made once.
fn by_chunk_size(
    cell: &'static std::sync::OnceLock<[String; 3]>,
    n: usize,
    build: fn(usize) -> String,
) -> &'static str {
    &cell.get_or_init(|| CHUNK_SIZES.map(build))[chunk_size_index(n)]
}

/// The `?1, ?2, ... ?n` list of parameters.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The live rows of the tasks ?1..?n (a size of [`CHUNK_SIZES`]; an id may be repeated to fill
/// the list) as a move reads them: the 15 columns the history row copies, then `last_error`,
/// `state` and `lease_until`, which the caller checks against each finish's fence and rescue
/// cutoff.
pub(super) fn move_read(n: usize) -> &'static str {
    static CELL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    by_chunk_size(&CELL, n, |n| {
        format!(
            "SELECT id, handler, data, timestamp, due_at, last_run_on, attempts, max_attempts, \
             is_recurring, rule, queue, priority, fence, created_at, unique_key, last_error, \
             state, lease_until FROM tasks WHERE id IN ({})",
            placeholders(n)
        )
    })
}

/// The number of columns [`move_read`] returns.
pub(super) const MOVE_READ_COLUMNS: usize = 18;

/// Where [`move_read`] returns the columns a move looks at: `handler` and `queue` (for the
/// finished-task counters), `fence`, `last_error`, `state` and `lease_until`. The columns before
/// `state` are the first values of a [`move_insert`] row, in its order.
pub(super) mod move_col {
    pub(in crate::store::sqlite) const HANDLER: usize = 1;
    pub(in crate::store::sqlite) const QUEUE: usize = 10;
    pub(in crate::store::sqlite) const FENCE: usize = 12;
    pub(in crate::store::sqlite) const LAST_ERROR: usize = 15;
    pub(in crate::store::sqlite) const STATE: usize = 16;
    pub(in crate::store::sqlite) const LEASE_UNTIL: usize = 17;
}

/// `n` history rows (a size of [`CHUNK_SIZES`]) in one statement, each of the
/// [`MOVE_INSERT_VALUES`] values [`FINISH_INSERT`] takes, in its order.
pub(super) fn move_insert(n: usize) -> &'static str {
    static CELL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    by_chunk_size(&CELL, n, |n| {
        repeat_rows(FINISH_INSERT, MOVE_INSERT_VALUES, n)
    })
}

/// Delete the live tasks ?1..?n (a size of [`CHUNK_SIZES`]; an id may be repeated).
pub(super) fn move_delete(n: usize) -> &'static str {
    static CELL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    by_chunk_size(&CELL, n, |n| {
        format!("DELETE FROM tasks WHERE id IN ({})", placeholders(n))
    })
}

/// ?4 tasks of handler ?1 and queue ?2 entered the history in state ?3 (see `Added`).
pub(super) const COUNT_ADDED: &str = "INSERT INTO task_counts (handler, queue, state, n) \
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (handler, queue, state) DO UPDATE SET n = n + excluded.n";

/// A live task that is not running moves to the history as cancelled: ?1 now, ?2 id.
pub(super) const CANCEL_MOVE: &str = concat!(
    history_insert!(),
    "SELECT id, handler, data, timestamp, due_at, last_run_on, attempts, max_attempts, \
     is_recurring, rule, 'cancelled', queue, priority, last_error, fence, created_at, ?1, \
     unique_key FROM tasks WHERE id = ?2 AND state IN ('scheduled','retrying') \
     RETURNING handler, queue"
);

/// A dead task is cancelled where it is: a one-off keeps the time it died as its finish (its
/// unique window and retention run from there); a recurring one, which owes what came due
/// while it was dead, finishes at the cancel (?1), where its schedule ends. ?2 id.
pub(super) const CANCEL_DEAD: &str = "UPDATE task_history SET state = 'cancelled', \
    finished_at = CASE WHEN is_recurring THEN ?1 ELSE finished_at END \
    WHERE id = ?2 AND state = 'dead'";

/// The live columns a retried task is written back with.
macro_rules! live_insert {
    () => {
        "INSERT INTO tasks (id, handler, data, timestamp, due_at, ready, last_run_on, attempts, \
         max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, \
         created_at, updated_at, unique_key) "
    };
}

/// A dead or cancelled task moves back to the live tasks, due now: ?1 now, ?2 id.
pub(super) const RETRY_MOVE: &str = concat!(
    live_insert!(),
    "SELECT id, handler, data, timestamp, ?1, 0, last_run_on, attempts, \
     MAX(max_attempts, attempts + 1), is_recurring, rule, 'scheduled', queue, priority, \
     last_error, fence, created_at, ?1, unique_key \
     FROM task_history WHERE id = ?2 AND state IN ('dead','cancelled')"
);

pub(super) const DELETE_HISTORY: &str =
    "DELETE FROM task_history WHERE id = ?1 RETURNING handler, queue, state";

/// The columns of a run row, in insert order.
macro_rules! run_insert {
    () => {
        "INSERT INTO runs (task_id, attempt, timestamp, started_at, finished_at, outcome, error, \
         worker) "
    };
}

/// The run a finished task keeps on its history row (see [`FINISH_INSERT`]), written back into
/// `runs` before the task leaves the history: ?1 id.
pub(super) const UNFOLD_RUN: &str = concat!(
    run_insert!(),
    "SELECT id, run_attempt, run_timestamp, run_started_at, run_finished_at, run_outcome, \
     run_error, run_worker FROM task_history WHERE id = ?1 AND run_worker IS NOT NULL"
);

pub(super) const EXISTING: &str = "SELECT id FROM tasks WHERE handler = ?1 AND data = ?2 AND is_recurring = 1 \
    AND state IN ('scheduled','running','retrying')";

pub(super) const INSERT_TASK: &str = "INSERT INTO tasks (id, handler, data, timestamp, due_at, ready, attempts, max_attempts, \
    is_recurring, rule, state, queue, priority, fence, created_at, updated_at, unique_key) \
    VALUES (?1, ?2, ?3, ?4, ?4, ?4 <= ?10, 0, ?5, ?6, ?7, 'scheduled', ?8, ?9, 0, ?10, ?10, ?11)";

/// The number of parameters each row of [`INSERT_TASK`] (and of [`insert_tasks`]) takes.
pub(super) const INSERT_TASK_VALUES: usize = 11;

/// `n` new tasks (a size of [`CHUNK_SIZES`]) in one statement: [`INSERT_TASK`]'s row `n`
/// times, row `r` taking its parameters from `r * INSERT_TASK_VALUES + 1` on.
pub(super) fn insert_tasks(n: usize) -> &'static str {
    static CELL: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    by_chunk_size(&CELL, n, |n| {
        repeat_rows(INSERT_TASK, INSERT_TASK_VALUES, n)
    })
}

/// `sql` with every numbered parameter `?k` written `?{k + by}`.
fn renumber(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('?') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let k: usize = rest[..digits].parse().expect("a numbered parameter");
        out.push_str(&(k + by).to_string());
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The live task holding a handler's unique key: ?1 handler, ?2 key.
pub(super) const EXISTING_UNIQUE: &str =
    "SELECT id FROM tasks WHERE handler = ?1 AND unique_key = ?2";

/// The latest task with a handler's unique key that finished after ?3.
pub(super) const RECENT_UNIQUE: &str = "SELECT id FROM task_history \
    WHERE handler = ?1 AND unique_key = ?2 AND finished_at > ?3 \
    ORDER BY finished_at DESC LIMIT 1";

/// Ask the worker running a task to stop it: ?1 id.
pub(super) const CANCEL_REQUEST: &str =
    "UPDATE tasks SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'";

/// Whether a claim (?1 id, ?2 fence) is still running and cancelled by a person.
pub(super) const CANCEL_REQUESTED: &str = "SELECT 1 FROM tasks \
    WHERE id = ?1 AND fence = ?2 AND state = 'running' AND cancel_requested = 1";

/// A task's runs in the order they were recorded: its rows in `runs`, then the one its history
/// row keeps (the attempt that finished it).
pub(super) const GET_RUNS: &str = "SELECT attempt, timestamp, started_at, finished_at, outcome, \
    error, worker FROM (SELECT rowid AS pos, attempt, timestamp, started_at, finished_at, \
      outcome, error, worker FROM runs WHERE task_id = ?1 \
    UNION ALL SELECT 9223372036854775807, run_attempt, run_timestamp, run_started_at, \
      run_finished_at, run_outcome, run_error, run_worker FROM task_history \
      WHERE id = ?1 AND run_worker IS NOT NULL) ORDER BY pos";

/// The run task ?1's history row keeps (the attempt that finished it), in `GET_RUNS`' columns.
pub(super) const RUNS_KEPT: &str = "SELECT run_attempt, run_timestamp, run_started_at, \
    run_finished_at, run_outcome, run_error, run_worker FROM task_history \
    WHERE id = ?1 AND run_worker IS NOT NULL";

/// Task ?1's rows of `runs` recorded before row ?2, newest first, at most ?3: one backward range
/// of `runs_task (task_id)`, whose entries end with their rowid. The rowid comes last.
pub(super) const RUNS_PAGE: &str = "SELECT attempt, timestamp, started_at, finished_at, outcome, \
    error, worker, rowid FROM runs WHERE task_id = ?1 AND rowid < ?2 ORDER BY rowid DESC \
    LIMIT ?3";

/// How many rows of `runs` task ?1 has, counted up to ?2: that many entries of `runs_task` at
/// most.
pub(super) const RUNS_COUNT: &str =
    "SELECT count(*) FROM (SELECT 1 FROM runs WHERE task_id = ?1 LIMIT ?2)";

/// When task ?1's latest successful run finished: the last entry of `runs_succeeded`.
pub(super) const SUCCESS_LAST: &str = "SELECT finished_at FROM runs \
    WHERE task_id = ?1 AND outcome = 'succeeded' ORDER BY timestamp DESC, finished_at DESC \
    LIMIT 1";

/// The occurrences at or after ?2 that task ?1's runs succeeded for, latest first, at most ?3:
/// one range of `runs_succeeded`.
pub(super) const SUCCESS_SINCE: &str = "SELECT timestamp FROM runs \
    WHERE task_id = ?1 AND outcome = 'succeeded' AND timestamp >= ?2 \
    ORDER BY timestamp DESC LIMIT (?3 + 0)";

/// Whether a run of task ?1 succeeded for an occurrence before ?2: one entry of
/// `runs_succeeded` at most.
pub(super) const SUCCESS_BEFORE: &str = "SELECT EXISTS (SELECT 1 FROM runs \
    WHERE task_id = ?1 AND outcome = 'succeeded' AND timestamp < ?2)";

/// The run task ?1's history row keeps, when it succeeded: its occurrence and finish.
pub(super) const SUCCESS_KEPT: &str = "SELECT run_timestamp, run_finished_at FROM task_history \
    WHERE id = ?1 AND run_worker IS NOT NULL AND run_outcome = 'succeeded'";

pub(super) const INSERT_RUN: &str =
    concat!(run_insert!(), "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");

/// A fenced finish of a task that goes on. `?5` changes its attempts: by 0, by -1 (a task
/// released unrun gives its claim's attempt back), or NULL: reset to 0 for a new occurrence.
/// `?11` raises its `max_attempts` to at least that many (NULL keeps it).
pub(super) const FINISH: &str = "UPDATE tasks SET state = ?1, timestamp = COALESCE(?2, timestamp), \
    due_at = COALESCE(?3, due_at), last_run_on = COALESCE(?4, last_run_on), \
    attempts = CASE WHEN ?5 IS NULL THEN 0 ELSE attempts + ?5 END, \
    max_attempts = MAX(max_attempts, COALESCE(?11, 0)), \
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
/// Paused and limited queues (those with a row in `queues`) are left to the claim of a
/// controlled queue.
pub(super) const CLAIM: &str = "UPDATE tasks SET state = 'running', ready = 0, attempts = attempts + 1, \
    fence = fence + 1, worker = ?1, started_at = ?2, lease_until = ?3, updated_at = ?2 \
    WHERE id IN (SELECT id FROM tasks WHERE ready = 1 \
    AND state IN ('scheduled','retrying') AND due_at <= ?2 \
    AND handler IN (SELECT value FROM json_each(?4)) \
    AND queue IN (SELECT value FROM json_each(?5) WHERE value NOT IN (SELECT name FROM queues)) \
    ORDER BY priority, due_at LIMIT (?6 + 0)) \
    RETURNING id, handler, data, timestamp, last_run_on, attempts, max_attempts, \
    is_recurring, rule, fence, priority, due_at, queue, cancel_requested";

pub(super) const HEARTBEAT_WORKER: &str = "INSERT INTO workers (id, handlers, queues, last_seen, live_until) \
    VALUES (?1, ?2, ?3, ?4, ?5) \
    ON CONFLICT (id) DO UPDATE SET handlers = ?2, queues = ?3, last_seen = ?4, live_until = ?5";

pub(super) const HEARTBEAT: &str =
    "UPDATE tasks SET lease_until = ?1 WHERE id = ?2 AND fence = ?3 AND state = 'running'";

pub(super) const EXPIRED: &str = "SELECT id, fence, attempts, max_attempts, timestamp, \
    COALESCE(worker, ''), started_at, lease_until, cancel_requested \
    FROM tasks WHERE state = 'running' AND lease_until < ?1 ORDER BY lease_until LIMIT ?2";

pub(super) const EXPIRED_COUNT: &str =
    "SELECT count(*) FROM tasks WHERE state = 'running' AND lease_until < ?1";

/// Tasks of paused queues do not count: a worker run until idle does not wait for them.
pub(super) const NEXT_DUE: &str = "SELECT min(due_at) FROM ( \
    SELECT * FROM (SELECT due_at FROM tasks WHERE ready = 1 \
    AND state IN ('scheduled','retrying') \
    AND handler IN (SELECT value FROM json_each(?1)) \
    AND queue IN (SELECT value FROM json_each(?2) \
      WHERE value NOT IN (SELECT name FROM queues WHERE paused = 1)) LIMIT 1) \
    UNION ALL \
    SELECT * FROM (SELECT due_at FROM tasks WHERE ready = 0 \
    AND state IN ('scheduled','retrying') \
    AND handler IN (SELECT value FROM json_each(?1)) \
    AND queue IN (SELECT value FROM json_each(?2) \
      WHERE value NOT IN (SELECT name FROM queues WHERE paused = 1)) ORDER BY due_at LIMIT 1))";

/// A retrying task, or a scheduled one due later, is made due now where it is; a cancel asked
/// while it ran no longer stands (the retry is the later word).
pub(super) const RETRY: &str = "UPDATE tasks SET state = 'scheduled', due_at = ?1, ready = 0, \
    max_attempts = MAX(max_attempts, attempts + 1), updated_at = ?1, cancel_requested = 0 \
    WHERE id = ?2 AND (state = 'retrying' OR (state = 'scheduled' AND due_at > ?1))";

/// Live tasks counted (the hot table holds only them); finished ones from their counters.
pub(super) const STATS_COUNTS: &str = "SELECT handler, state, count(*) FROM tasks \
    GROUP BY handler, state \
    UNION ALL SELECT handler, state, sum(n) FROM task_counts GROUP BY handler, state \
    HAVING sum(n) > 0 ORDER BY 1, 2";

pub(super) const STATS_OLDEST: &str =
    "SELECT min(due_at) FROM tasks WHERE state IN ('scheduled','retrying') AND due_at <= ?1";

/// Pages of every table and index, by the table they belong to.
pub(super) const TABLE_SIZES: &str = "SELECT s.tbl_name, s.type = 'index', sum(d.pgsize) \
    FROM dbstat d JOIN sqlite_schema s ON s.name = d.name \
    WHERE s.tbl_name IN ('tasks', 'task_history', 'runs') GROUP BY 1, 2";

/// Attempts that ended after ?1: rows of `runs`, and runs kept on history rows (a kept run
/// ended no later than its task finished, so the history's finished index narrows the search).
pub(super) const STATS_FINISHED: &str = "SELECT (SELECT count(*) FROM runs WHERE finished_at > ?1) \
    + (SELECT count(*) FROM task_history WHERE is_recurring IN (0, 1) \
      AND state IN ('done', 'dead', 'cancelled') AND finished_at > ?1 AND run_finished_at > ?1)";

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

/// A starting worker's row, written unless a worker with its id is live at ?6.
pub(super) const WORKER_REGISTER: &str = "INSERT INTO workers (id, handlers, queues, last_seen, live_until) \
    VALUES (?1, ?2, ?3, ?4, ?5) \
    ON CONFLICT (id) DO UPDATE SET handlers = ?2, queues = ?3, last_seen = ?4, live_until = ?5 \
    WHERE live_until <= ?6";

pub(super) const WORKER_LIVE_UNTIL: &str = "SELECT live_until FROM workers WHERE id = ?1";

/// Rows of workers whose liveness ended before ?1.
pub(super) const WORKERS_FORGET: &str = "DELETE FROM workers WHERE live_until < ?1";
pub(super) const WORKERS_FORGET_COUNT: &str = "SELECT count(*) FROM workers WHERE live_until < ?1";

/// Bulk cancel, live side: matching scheduled and retrying tasks move to the history.
/// ?1 now, ?2 states (JSON list), ?3 handler, ?4 queue.
pub(super) const CANCEL_MANY_MOVE: &str = concat!(
    history_insert!(),
    "SELECT id, handler, data, timestamp, due_at, last_run_on, attempts, max_attempts, \
     is_recurring, rule, 'cancelled', queue, priority, last_error, fence, created_at, ?1, \
     unique_key FROM tasks WHERE state IN ('scheduled','retrying') \
     AND state IN (SELECT value FROM json_each(?2)) AND (?3 IS NULL OR handler = ?3) \
     AND (?4 IS NULL OR queue = ?4)",
    data_match!("?5", "?6"),
    " RETURNING handler, queue"
);

/// The live rows [`CANCEL_MANY_MOVE`] copied (same transaction, same writer).
pub(super) const CANCEL_MANY_DELETE: &str = concat!(
    "DELETE FROM tasks WHERE state IN ('scheduled','retrying') \
     AND state IN (SELECT value FROM json_each(?2)) AND (?3 IS NULL OR handler = ?3) \
     AND (?4 IS NULL OR queue = ?4) AND ?1 IS NOT NULL",
    data_match!("?5", "?6")
);

/// Bulk cancel, history side: matching dead tasks are cancelled where they are, as
/// [`CANCEL_DEAD`] cancels one (?1 now).
pub(super) const CANCEL_MANY_DEAD: &str = concat!(
    "UPDATE task_history SET state = 'cancelled', \
     finished_at = CASE WHEN is_recurring THEN ?1 ELSE finished_at END \
     WHERE state = 'dead' AND 'dead' IN (SELECT value FROM json_each(?2)) \
     AND (?3 IS NULL OR handler = ?3) AND (?4 IS NULL OR queue = ?4)",
    data_match!("?5", "?6")
);

/// Bulk retry, live side: matching retrying tasks (and, when asked for, scheduled ones due
/// later) are made due now, and a cancel asked while one ran no longer stands.
pub(super) const RETRY_MANY_LIVE: &str = concat!(
    "UPDATE tasks SET state = 'scheduled', due_at = ?1, ready = 0, \
     max_attempts = MAX(max_attempts, attempts + 1), updated_at = ?1, cancel_requested = 0 \
     WHERE (state = 'retrying' OR (state = 'scheduled' AND due_at > ?1)) \
     AND state IN (SELECT value FROM json_each(?2)) \
     AND (?3 IS NULL OR handler = ?3) AND (?4 IS NULL OR queue = ?4)",
    data_match!("?5", "?6")
);

/// Bulk retry, history side: matching dead and cancelled tasks move back to the live tasks.
/// A recurring one moves only when no live copy holds its singleton and no other matching
/// copy with a greater id moves in the same statement; a task with a unique key likewise.
pub(super) const RETRY_MANY_MOVE: &str = concat!(
    live_insert!(),
    "SELECT id, handler, data, timestamp, ?1, 0, last_run_on, attempts, \
     MAX(max_attempts, attempts + 1), is_recurring, rule, 'scheduled', queue, priority, \
     last_error, fence, created_at, ?1, unique_key \
     FROM task_history h WHERE state IN ('dead','cancelled') \
     AND state IN (SELECT value FROM json_each(?2)) AND (?3 IS NULL OR handler = ?3) \
     AND (?4 IS NULL OR queue = ?4)",
    data_match!("?5", "?6"),
    " AND (is_recurring = 0 OR (NOT EXISTS (SELECT 1 FROM tasks o \
       WHERE o.handler = h.handler AND o.data = h.data AND o.is_recurring = 1 \
       AND o.state IN ('scheduled','running','retrying')) \
     AND NOT EXISTS (SELECT 1 FROM task_history o \
       WHERE o.handler = h.handler AND o.data = h.data AND o.is_recurring = 1 \
       AND o.id > h.id AND o.state IN ('dead','cancelled') \
       AND o.state IN (SELECT value FROM json_each(?2)) AND (?4 IS NULL OR o.queue = ?4)))) \
     AND (unique_key IS NULL OR (NOT EXISTS (SELECT 1 FROM tasks o \
       WHERE o.handler = h.handler AND o.unique_key = h.unique_key) \
     AND NOT EXISTS (SELECT 1 FROM task_history o \
       WHERE o.handler = h.handler AND o.unique_key = h.unique_key \
       AND o.id > h.id AND o.state IN ('dead','cancelled') \
       AND o.state IN (SELECT value FROM json_each(?2)) AND (?4 IS NULL OR o.queue = ?4)",
    // The other copy's data filter (`data` is `o`'s here): a copy the filter leaves out does
    // not move, so it keeps no key from this one.
    data_match!("?5", "?6"),
    ")))"
);

/// The runs kept on the history rows [`RETRY_MANY_MOVE`] copied back, written into `runs`
/// (see [`UNFOLD_RUN`]).
pub(super) const RETRY_MANY_UNFOLD: &str = concat!(
    run_insert!(),
    "SELECT id, run_attempt, run_timestamp, run_started_at, run_finished_at, run_outcome, \
     run_error, run_worker FROM task_history \
     WHERE run_worker IS NOT NULL \
     AND state IN ('dead','cancelled') AND state IN (SELECT value FROM json_each(?2)) \
     AND (?3 IS NULL OR handler = ?3) AND (?4 IS NULL OR queue = ?4) \
     AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_history.id) AND ?1 IS NOT NULL",
    data_match!("?5", "?6")
);

/// The history rows [`RETRY_MANY_MOVE`] copied back: matching, and now live; returns what
/// each was counted under.
pub(super) const RETRY_MANY_DELETE: &str = concat!(
    "DELETE FROM task_history \
     WHERE state IN ('dead','cancelled') AND state IN (SELECT value FROM json_each(?2)) \
     AND (?3 IS NULL OR handler = ?3) AND (?4 IS NULL OR queue = ?4) \
     AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_history.id) AND ?1 IS NOT NULL",
    data_match!("?5", "?6"),
    " RETURNING handler, queue, state"
);

/// How many tasks a bulk cancel or retry would consider: matching live and finished tasks in
/// the states ?2, with the parameters of the statements above (?1 is not read).
pub(super) const COUNT_MANY: &str = concat!(
    "WITH l AS (SELECT data FROM tasks WHERE state IN (SELECT value FROM json_each(?2)) \
     AND (?3 IS NULL OR handler = ?3) AND (?4 IS NULL OR queue = ?4) AND ?1 IS NOT NULL \
     LIMIT ?8), \
     h AS (SELECT data FROM task_history WHERE state IN (SELECT value FROM json_each(?2)) \
     AND (?3 IS NULL OR handler = ?3) AND (?4 IS NULL OR queue = ?4) LIMIT ?8) \
     SELECT (SELECT count(*) FROM (SELECT 1 FROM l WHERE 1",
    data_match!("?5", "?6"),
    " LIMIT ?7)) + (SELECT count(*) FROM (SELECT 1 FROM h WHERE 1",
    data_match!("?5", "?6"),
    " LIMIT ?7)), (SELECT count(*) FROM l) < ?8 AND (SELECT count(*) FROM h) < ?8"
);

/// Finished one-off done tasks past their cutoff. Every prune query names the history's
/// finished index columns in order, so SQLite walks that index.
macro_rules! prune_done {
    () => {
        "SELECT id FROM task_history \
         WHERE is_recurring = 0 AND state = 'done' AND finished_at < ?1 LIMIT (?2 + 0)"
    };
}

/// Finished one-off dead and cancelled tasks past their cutoff.
macro_rules! prune_dead {
    () => {
        "SELECT id FROM task_history \
         WHERE is_recurring = 0 AND state IN ('dead', 'cancelled') AND finished_at < ?1 \
         LIMIT (?2 + 0)"
    };
}

/// Finished recurring tasks past their cutoff.
macro_rules! prune_recurring {
    () => {
        "SELECT id FROM task_history \
         WHERE is_recurring = 1 AND state IN ('done', 'dead', 'cancelled') AND finished_at < ?1 \
         LIMIT (?2 + 0)"
    };
}

/// A kind's candidates and their run rows, counted.
macro_rules! prune_count {
    ($kind:ident) => {
        concat!(
            "SELECT count(*), (SELECT count(*) FROM runs WHERE task_id IN (",
            $kind!(),
            ")) + (SELECT count(*) FROM task_history WHERE run_worker IS NOT NULL AND id IN (",
            $kind!(),
            ")) FROM (",
            $kind!(),
            ")"
        )
    };
}

/// A kind's candidates removed from the history in one statement (`?1` cutoff, `?2` limit).
/// Each removed row says whether it kept its final run on itself (one more run removed),
/// whether run rows of it may be in `runs` (a one-off task whose only attempt is on its row
/// has none: every earlier attempt is a run row, and each attempt is counted in `attempts`),
/// and the handler, queue and state it is counted under.
macro_rules! prune_delete {
    ($kind:ident) => {
        concat!(
            "DELETE FROM task_history WHERE id IN (",
            $kind!(),
            ") RETURNING id, run_worker IS NOT NULL, \
             is_recurring OR attempts > 1 OR run_worker IS NULL, handler, queue, state"
        )
    };
}

pub(super) const PRUNE_DONE: &str = prune_delete!(prune_done);
pub(super) const PRUNE_DEAD: &str = prune_delete!(prune_dead);
pub(super) const PRUNE_RECURRING: &str = prune_delete!(prune_recurring);
pub(super) const PRUNE_DONE_COUNT: &str = prune_count!(prune_done);
pub(super) const PRUNE_DEAD_COUNT: &str = prune_count!(prune_dead);
pub(super) const PRUNE_RECURRING_COUNT: &str = prune_count!(prune_recurring);

/// The run rows of one removed task.
pub(super) const PRUNE_DELETE_RUNS: &str = "DELETE FROM runs WHERE task_id = ?1";

/// Run rows of live recurring tasks that finished before ?1.
macro_rules! old_recurring_runs {
    () => {
        "SELECT r.rowid FROM runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.finished_at < ?1 AND t.is_recurring = 1 LIMIT (?2 + 0)"
    };
}

pub(super) const PRUNE_COUNT_OLD_RUNS: &str =
    concat!("SELECT count(*) FROM (", old_recurring_runs!(), ")");

pub(super) const PRUNE_DELETE_OLD_RUNS: &str = concat!(
    "DELETE FROM runs WHERE rowid IN (",
    old_recurring_runs!(),
    ")"
);

/// Every column of a live task, in the order `copy_read` reads and `copy_write` writes them.
macro_rules! copy_live_columns {
    () => {
        "id, handler, data, timestamp, due_at, ready, last_run_on, attempts, max_attempts, \
         is_recurring, rule, state, queue, priority, last_error, fence, worker, started_at, \
         lease_until, created_at, updated_at, unique_key, cancel_requested"
    };
}

/// Every column of a finished task, in copy order.
macro_rules! copy_history_columns {
    () => {
        "id, handler, data, timestamp, due_at, last_run_on, attempts, max_attempts, \
         is_recurring, rule, state, queue, priority, last_error, fence, created_at, \
         finished_at, unique_key, run_attempt, run_timestamp, run_started_at, run_finished_at, \
         run_outcome, run_error, run_worker"
    };
}

/// A batch of live tasks after id ?1 (an empty blob: from the first), at most ?2.
pub(super) const COPY_READ_LIVE: &str = concat!(
    "SELECT ",
    copy_live_columns!(),
    " FROM tasks WHERE id > ?1 ORDER BY id LIMIT ?2"
);

/// A batch of finished tasks after id ?1, at most ?2.
pub(super) const COPY_READ_HISTORY: &str = concat!(
    "SELECT ",
    copy_history_columns!(),
    " FROM task_history WHERE id > ?1 ORDER BY id LIMIT ?2"
);

/// A batch of run rows after task ?1's row ?2, by task and then in recorded order (the
/// `runs_task` index holds both), at most ?3.
pub(super) const COPY_READ_RUNS: &str = "SELECT rowid, task_id, attempt, timestamp, started_at, \
    finished_at, outcome, error, worker FROM runs \
    WHERE task_id >= ?1 AND (task_id > ?1 OR rowid > ?2) ORDER BY task_id, rowid LIMIT ?3";

pub(super) const COPY_WRITE_LIVE: &str = concat!(
    "INSERT INTO tasks (",
    copy_live_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23)"
);

pub(super) const COPY_WRITE_HISTORY: &str = concat!(
    "INSERT INTO task_history (",
    copy_history_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25)"
);

/// A batch of queue controls after name ?1 (an empty name: from the first), at most ?2.
pub(super) const COPY_READ_QUEUES: &str = "SELECT name, paused, concurrency, per_key, \
    rate_count, rate_period_ms, updated_at FROM queues WHERE name > ?1 ORDER BY name LIMIT ?2";

pub(super) const COPY_WRITE_QUEUE: &str = "INSERT INTO queues (name, paused, concurrency, \
    per_key, rate_count, rate_period_ms, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
