//! The storage seam. [`Store`] is the only way the runtime and the client reach a database;
//! each backend owns its SQL and its numbered migrations.
//!
//! Architecture invariant: only the modules below `store/` contain SQL.
//!
//! Every method takes the current time from its caller (`now` in the params), so tests can pin
//! time with a [`crate::ManualClock`].

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::Notify;

use crate::model::{
    ListCursor, ListFilter, Outcome, RunCount, RunCursor, RunPage, State, TaskInfo, WorkerInfo,
};
use crate::queues::{QueueControl, QueueLimits};
use crate::{TaskError, TaskId};

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The schema version this binary writes. Both backends number their migrations alike.
pub const SCHEMA_VERSION: i64 = 11;

/// A person's operation on a task; its state-conflict message is shared by the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Steer {
    Cancel,
    Retry,
}

impl Steer {
    /// The states the operation applies to. A retry of a scheduled task runs it now.
    pub(crate) fn allowed(self) -> &'static [State] {
        match self {
            Steer::Cancel => &[State::Scheduled, State::Retrying, State::Dead],
            Steer::Retry => &[
                State::Dead,
                State::Cancelled,
                State::Retrying,
                State::Scheduled,
            ],
        }
    }

    /// The states a bulk operation applies to when its filter names none: a bulk retry makes
    /// scheduled tasks due early only when asked for them by their state.
    pub(crate) fn by_default(self) -> &'static [State] {
        match self {
            Steer::Cancel => self.allowed(),
            Steer::Retry => &[State::Dead, State::Cancelled, State::Retrying],
        }
    }

    /// The verb, for messages.
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Steer::Cancel => "cancel",
            Steer::Retry => "retry",
        }
    }

    /// Whether `task` already is where the operation would put it at `now`, so the operation
    /// changes nothing and answers the task as it is: a retry of a scheduled task that is due
    /// (its place among the due tasks stays; a backend writes only scheduled tasks due later).
    pub(crate) fn settled(self, task: &crate::TaskInfo, now: Timestamp) -> bool {
        matches!(self, Steer::Retry) && task.state == State::Scheduled && task.due_at <= now
    }

    /// The refusal for a task in `state`, saying which states allow the operation.
    pub(crate) fn conflict(self, id: TaskId, state: crate::State) -> TaskError {
        let (verb, past, allowed) = match self {
            Steer::Cancel => (
                "cancel",
                "cancelled",
                "scheduled, running, retrying or dead",
            ),
            Steer::Retry => ("retry", "retried", "dead, cancelled, retrying or scheduled"),
        };
        TaskError::Conflict(format!(
            "cannot {verb} task {id}: it is {state}; only {allowed} tasks can be {past}"
        ))
    }
}

/// The refusal of a copied row whose task is already stored in `table` (`tasks`: live,
/// `task_history`: finished).
pub(crate) fn stored_elsewhere(id: TaskId, table: &str) -> TaskError {
    let as_what = if table == "tasks" { "live" } else { "finished" };
    TaskError::Conflict(format!(
        "task {id} is already stored as a {as_what} task: a task is live or finished, not both; \
         copy into an empty store"
    ))
}

/// What kind of failure a database error is, as a backend reads its own error codes. A
/// backend only names the kind; whether a worker waits it out or stops is decided above the
/// seam ([`crate::policy::fault_is_permanent`], [`crate::policy::database_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The database cannot be reached, or the connection to it broke.
    Unreachable,
    /// Another transaction holds a lock, or a transaction conflicted with another and must
    /// run again.
    Busy,
    /// The server is starting, shutting down or restarting, or cancelled the statement.
    Restarting,
    /// Out of disk space, memory or connections.
    Resources,
    /// The database refused a row as written: a constraint it holds, a value out of range or
    /// one it cannot store.
    Refused,
    /// The tables are not the ones this binary expects: a table, column or function is
    /// missing or changed.
    Schema,
    /// The database may not be written: a read-only file, server or transaction, or a user
    /// without the privilege.
    ReadOnly,
    /// The database is damaged, or is not a database.
    Damaged,
    /// Anything else.
    Other,
}

/// A task row ready to insert: validated and canonicalized by the client.
#[derive(Debug, Clone)]
pub struct InsertTask {
    /// New id.
    pub id: TaskId,
    /// Handler name.
    pub handler: String,
    /// Canonical JSON text of the data object (keys sorted, compact): the singleton key.
    pub data: String,
    /// The scheduled instant of the first occurrence; also when it is first due.
    pub timestamp: Timestamp,
    /// Whether the singleton rule applies.
    pub is_recurring: bool,
    /// The recurrence rule as JSON text.
    pub rule: Option<String>,
    /// Attempts per occurrence.
    pub max_attempts: u32,
    /// Queue.
    pub queue: String,
    /// Priority, lower first.
    pub priority: i32,
    /// Creation time.
    pub created_at: Timestamp,
    /// A one-off task's unique key: no two live tasks of a handler share one.
    pub unique_key: Option<String>,
    /// With a unique key: a task with the same handler and key that finished after this
    /// instant also refuses this one (decided above the seam from `unique_for`: it finished
    /// less than the window ago).
    pub unique_since: Option<Timestamp>,
}

/// A bulk cancel or retry: every task in one of `states` matching the filters, in one
/// statement.
#[derive(Debug, Clone, Copy)]
pub struct SteerMany<'a> {
    /// Tasks in these states (decided above the seam: the states the operation applies to,
    /// narrowed by the caller's filter).
    pub states: &'a [State],
    /// Only this handler.
    pub handler: Option<&'a str>,
    /// Only this queue.
    pub queue: Option<&'a str>,
    /// Only tasks whose data field matches (see [`crate::DataMatch`] for what matches).
    pub data: Option<&'a crate::DataMatch>,
    /// Now: the time written as the change (and, for a retry, when the tasks are due).
    pub now: Timestamp,
}

/// The answer of [`Store::task_count_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManyCount {
    /// Matching tasks counted, at most the `at_most` asked for.
    pub matched: u64,
    /// Every task in the operation's states was looked at (fewer than `examine` on each
    /// side): no match was left uncounted below `at_most`.
    pub examined_all: bool,
}

/// What a worker asks for when it claims.
#[derive(Debug, Clone)]
pub struct ClaimParams<'a> {
    /// The claiming worker's id.
    pub worker: &'a str,
    /// Only tasks of these handlers.
    pub handlers: &'a [String],
    /// Only tasks in these queues.
    pub queues: &'a [String],
    /// At most this many.
    pub limit: u32,
    /// The current time: tasks due at or before it are claimable.
    pub now: Timestamp,
    /// The lease ends here unless renewed by a heartbeat.
    pub lease_until: Timestamp,
    /// At most this many due tasks are promoted to `ready` by this claim
    /// ([`crate::policy::PROMOTE_BATCH`]).
    pub promote_limit: u32,
    /// Of `queues`, those the caller last saw paused or limited ([`Store::queue_controls`]).
    /// The store claims their tasks one queue at a time under the queue's lock, as
    /// [`crate::queues::admit`] allows. Tasks of a queue controlled in the store but not
    /// named here are not claimed at all (the caller learns of the control at its next
    /// look), so a control never depends on the caller's view being fresh.
    pub controlled: &'a [String],
}

/// A task a worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    /// Id.
    pub id: TaskId,
    /// Handler name.
    pub handler: String,
    /// Canonical data JSON text.
    pub data: String,
    /// The occurrence's scheduled instant.
    pub timestamp: Timestamp,
    /// When the previous occurrence ran.
    pub last_run_on: Option<Timestamp>,
    /// This attempt's number (already counted).
    pub attempts: u32,
    /// Attempts allowed for the occurrence.
    pub max_attempts: u32,
    /// Whether it recurs.
    pub is_recurring: bool,
    /// Rule JSON text.
    pub rule: Option<String>,
    /// The fencing token of this claim: every later write must present it.
    pub fence: i64,
    /// When the claim was made.
    pub started_at: Timestamp,
    /// When it became due (its timestamp, or the end of a retry's backoff): the claim's wait
    /// is `started_at - due_at`.
    pub due_at: Timestamp,
    /// Its queue.
    pub queue: String,
    /// A person cancelled the task while an earlier attempt ran and it is still live: the
    /// worker cancels it without running it.
    pub cancel_requested: bool,
}

/// What becomes of a claimed task after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Finished for good.
    Done,
    /// Run again at `due_at` with the same timestamp and attempts + 1.
    Retry {
        /// When it is due again.
        due_at: Timestamp,
        /// The attempts the occurrence may use from now on, when raised (decided by
        /// [`crate::policy`]: an attempt its worker interrupted as it shut down, on the last
        /// attempt, gets one more); a store keeps the task's own when it is as high. `None`
        /// keeps it as it is.
        max_attempts: Option<u32>,
    },
    /// Attempts exhausted, or the occurrence cannot continue.
    Dead,
    /// Cancelled by a person while it ran.
    Cancelled,
    /// The next occurrence of a recurring task.
    Reschedule {
        /// The next occurrence's scheduled instant.
        timestamp: Timestamp,
        /// When it is due: its timestamp, or, for an occurrence taken in place of one passed
        /// over (`latest`), the passed-over one's due time, so it keeps that place among the
        /// due tasks.
        due_at: Timestamp,
        /// When this occurrence ran: becomes `last_run_on` (`None` keeps it, for an
        /// occurrence skipped without running).
        last_run_on: Option<Timestamp>,
    },
    /// Claimed but never started (its worker shut down first): waiting again, due at
    /// `due_at`, with the attempt its claim counted given back. Nothing ran, so no run row.
    Release {
        /// When it is due again.
        due_at: Timestamp,
        /// The state it waits in: [`State::Scheduled`] when no attempt of it has ended yet,
        /// else [`State::Retrying`].
        state: State,
    },
}

impl Next {
    /// [`Next::Retry`] at `due_at`, keeping the task's `max_attempts`.
    pub fn retry_at(due_at: Timestamp) -> Next {
        Next::Retry {
            due_at,
            max_attempts: None,
        }
    }
}

/// The result of one attempt, written in a batch with others.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Task id.
    pub id: TaskId,
    /// The claim's fencing token; a stale one makes the write a no-op.
    pub fence: i64,
    /// Attempt number.
    pub attempt: u32,
    /// The occurrence this attempt ran for.
    pub timestamp: Timestamp,
    /// Start of the attempt.
    pub started_at: Timestamp,
    /// End of the attempt.
    pub finished_at: Timestamp,
    /// Worker id.
    pub worker: String,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// Error text for a failed attempt (also stored as the task's `last_error`).
    pub error: Option<String>,
    /// The new state.
    pub next: Next,
    /// Follow-up tasks created by `on_complete`, inserted in the same transaction.
    pub follow_ups: Vec<InsertTask>,
    /// Whether an attempt ran and gets a run row (false for occurrences skipped by policy).
    pub ran: bool,
    /// For a rescue: apply only while the claim's lease ended before this instant, so a worker
    /// that renewed its lease meanwhile keeps the task. `None` for a worker's own result.
    pub expired_before: Option<Timestamp>,
}

/// The outcome of one [`Finish`] in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishResult {
    /// Written.
    Applied,
    /// Refused: the claim's fence is stale (the task was rescued and claimed again, or cancelled).
    Stale,
    /// Refused: the reschedule or a follow-up collided with an existing recurring singleton.
    Duplicate(TaskError),
}

/// Which expired leases to list.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredParams {
    /// Leases that ended before this instant.
    pub now: Timestamp,
    /// At most this many, earliest expiry first.
    pub limit: u32,
}

/// A running task whose lease ended without a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredTask {
    /// Id.
    pub id: TaskId,
    /// The fence of the claim that lost its lease.
    pub fence: i64,
    /// The lost attempt's number.
    pub attempts: u32,
    /// Attempts allowed for the occurrence.
    pub max_attempts: u32,
    /// The occurrence's scheduled instant.
    pub timestamp: Timestamp,
    /// The worker that held it.
    pub worker: String,
    /// When the lost attempt started.
    pub started_at: Timestamp,
    /// When its lease ended.
    pub lease_until: Timestamp,
    /// A person asked to cancel it while it ran: the rescue cancels it instead of retrying.
    pub cancel_requested: bool,
}

/// What one prune batch removes: finished tasks past their cutoff (by when they finished, their
/// last update) with all their run rows, and old run rows of live recurring tasks. The cutoffs
/// are decided above the seam ([`crate::policy::Retention`]); `None` keeps that kind forever.
#[derive(Debug, Clone, Copy)]
pub struct PruneParams {
    /// Done one-off tasks that finished before this instant.
    pub done_before: Option<Timestamp>,
    /// Dead and cancelled one-off tasks that finished before this instant.
    pub dead_before: Option<Timestamp>,
    /// Finished recurring tasks (done, dead or cancelled) that finished before this instant,
    /// and run rows of live recurring tasks that finished before it. A live task is never
    /// removed.
    pub recurring_before: Option<Timestamp>,
    /// At most this many finished tasks, and at most this many run rows of live recurring
    /// tasks.
    pub limit: u32,
    /// Count what would be removed, and remove nothing.
    pub dry_run: bool,
}

/// What one prune batch removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Finished tasks.
    pub tasks: u64,
    /// Run rows of those tasks.
    pub task_runs: u64,
    /// Old run rows of live recurring tasks.
    pub recurring_runs: u64,
}

/// A bid to lead a maintenance service until `until`.
#[derive(Debug, Clone, Copy)]
pub struct LeaderParams<'a> {
    /// The service.
    pub name: &'a str,
    /// Who bids (a worker id).
    pub holder: &'a str,
    /// Now: a leadership that ended before it may be taken over.
    pub now: Timestamp,
    /// The end of the term if the bid wins.
    pub until: Timestamp,
}

/// What [`Store::task_successes`] reads: for each task, the successful runs of its latest
/// occurrences.
#[derive(Debug, Clone, Copy)]
pub struct SuccessParams<'a> {
    /// The tasks, each with `since`: the earliest occurrence whose successful runs are read.
    pub tasks: &'a [(TaskId, Timestamp)],
    /// At most this many successful runs read per task (the latest occurrences'): decided
    /// above the seam ([`crate::policy::MISSED_COMPARED_MAX`] for the metrics).
    pub limit: u32,
}

/// One task's successful runs as [`Store::task_successes`] reads them: a bounded read however
/// many runs the task has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Successes {
    /// When the successful run of the latest occurrence that succeeded finished (`None`: no
    /// run of the task succeeded).
    pub last_finished_at: Option<Timestamp>,
    /// The occurrences at or after the task's `since` that a run succeeded for, latest first,
    /// one entry per successful run (an occurrence that succeeded twice is there twice), at
    /// most the `limit` asked for.
    pub since: Vec<Timestamp>,
    /// Whether a run for an occurrence before `since` succeeded.
    pub before: bool,
}

impl Successes {
    /// Add the run a finished task's history row keeps (its last one, kept beside the rows of
    /// `runs`; see [`RunRecord`]) when it succeeded: `(timestamp, finished_at)`.
    pub(crate) fn with_kept(
        mut self,
        kept: Option<(Timestamp, Timestamp)>,
        since: Timestamp,
        limit: u32,
    ) -> Successes {
        let Some((timestamp, finished_at)) = kept else {
            return self;
        };
        // The kept run is the task's last: it finished after every row of `runs`.
        self.last_finished_at = Some(finished_at);
        if timestamp < since {
            self.before = true;
        } else {
            self.since.push(timestamp);
            self.since.sort_by(|a, b| b.cmp(a));
            self.since.truncate(limit as usize);
        }
        self
    }
}

/// What [`Store::task_runs`] reads: one page of a task's runs, newest first.
#[derive(Debug, Clone, Copy)]
pub struct RunsParams {
    /// The task.
    pub id: TaskId,
    /// Only runs recorded before this one (`None`: from the latest).
    pub before: Option<RunCursor>,
    /// At most this many runs (decided above the seam: [`crate::policy::RECENT_RUNS`], or a
    /// page's limit up to [`crate::policy::RUNS_PAGE_MAX`]); 0 reads none, and the page
    /// then has no `older` cursor.
    pub limit: u32,
    /// Count the task's runs up to this many, reading no more index entries than one past
    /// it ([`crate::policy::RUNS_COUNTED`]).
    pub count_at_most: u64,
}

impl RunsParams {
    /// The page from the runs a store read, newest first, each with its position: at most
    /// `limit + 1` of them (one more than asked says an older page exists; none when `limit` is
    /// 0), and `counted` runs
    /// of the task, at most `count_at_most + 1`.
    pub(crate) fn page(&self, mut read: Vec<(i64, crate::Run)>, counted: u64) -> RunPage {
        let more = read.len() > self.limit as usize;
        read.truncate(self.limit as usize);
        let older = match (more, read.last()) {
            (true, Some((position, _))) => Some(RunCursor {
                position: *position,
            }),
            _ => None,
        };
        RunPage {
            runs: read.into_iter().map(|(_, r)| r).collect(),
            older,
            total: RunCount::of(counted, self.count_at_most),
        }
    }
}

/// The position a finished task's kept run (on its history row, see [`RunRecord`]) takes among
/// its runs: after every row of `runs`. A page that starts before it reads rows of `runs` only.
pub const KEPT_RUN_POSITION: i64 = i64::MAX;

/// What `stats` asks the store to count.
#[derive(Debug, Clone, Copy)]
pub struct StatsParams {
    /// Now: due tasks, live workers and expired leases are judged against it.
    pub now: Timestamp,
    /// Count attempts finished after this instant ([`crate::policy::THROUGHPUT_WINDOW`]).
    pub finished_since: Timestamp,
    /// Name at most this many stuck tasks ([`crate::policy::STUCK_LISTED`]).
    pub stuck_limit: u32,
}

/// The raw figures behind [`crate::Stats`]; the client folds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Tasks per handler and state (non-zero only).
    pub counts: Vec<(String, State, u64)>,
    /// Due tasks (scheduled or retrying, due at or before now) per handler and state.
    pub due: Vec<(String, State, u64)>,
    /// The earliest due time among due tasks.
    pub oldest_due: Option<Timestamp>,
    /// Attempts finished after `finished_since`.
    pub finished_recently: u64,
    /// Workers whose own lease (`live_until`) has not ended.
    pub workers: Vec<WorkerInfo>,
    /// Running tasks whose lease has ended (not yet rescued): how many, and the first few.
    pub stuck_count: u64,
    /// The first `stuck_limit` of them, earliest expiry first.
    pub stuck: Vec<ExpiredTask>,
}

/// Space one table takes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSize {
    /// The table's own pages (on PostgreSQL with its TOAST data), in bytes.
    pub table_bytes: u64,
    /// All of its indexes together, in bytes.
    pub index_bytes: u64,
}

/// Space the store's tables take on disk: the hot table workers claim from, and the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// `tasks`: live tasks only.
    pub live: TableSize,
    /// `task_history`: finished tasks.
    pub history: TableSize,
    /// `runs`: one row per attempt, but for the attempt that finished a task, which its
    /// history row keeps.
    pub runs: TableSize,
}

/// A lease renewal for the tasks a worker holds.
#[derive(Debug, Clone)]
pub struct HeartbeatParams<'a> {
    /// The worker.
    pub worker: &'a WorkerInfo,
    /// The held tasks and their fences.
    pub tasks: &'a [(TaskId, i64)],
    /// New end of the leases.
    pub lease_until: Timestamp,
    /// Now.
    pub now: Timestamp,
}

/// What a heartbeat found, in the order of [`HeartbeatParams::tasks`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Tasks the worker no longer holds (stale fence): it abandons them.
    pub lost: Vec<TaskId>,
    /// Tasks the worker still holds whose lease was not renewed this time (another
    /// transaction had the row locked): the lease stands as last renewed, and the worker must
    /// not count on more.
    pub unrenewed: Vec<TaskId>,
}

/// A table [`crate::copy`] carries from one store to another, in the order it copies them.
/// Workers and maintenance leaderships are not carried: they belong to the processes of the
/// source, and a copy refuses while any of its workers is live. Nor is the start log of
/// rate-limited queues, which only covers the current rate window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyTable {
    /// `tasks`: live tasks (scheduled, running, retrying), keyed by id.
    Live,
    /// `task_history`: finished tasks (done, dead, cancelled), keyed by id.
    History,
    /// `runs`: one row per attempt, keyed by its task and then its position in the table
    /// (a task's runs in the order they were recorded).
    Runs,
    /// `queues`: the pause and limits of each controlled queue, keyed by name (byte order).
    Queues,
}

impl CopyTable {
    /// Every table, in copy order.
    pub const ALL: [CopyTable; 4] = [
        CopyTable::Live,
        CopyTable::History,
        CopyTable::Runs,
        CopyTable::Queues,
    ];

    /// The table's name in both schemas.
    pub fn name(self) -> &'static str {
        match self {
            CopyTable::Live => "tasks",
            CopyTable::History => "task_history",
            CopyTable::Runs => "runs",
            CopyTable::Queues => "queues",
        }
    }
}

/// Where a batch of [`Store::copy_read`] continues: after this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyKey {
    /// A task's id (live and finished tasks, in byte order, which is hex order).
    Id(TaskId),
    /// A run row: its task, and its position ([`RunRow::position`]).
    Run(TaskId, i64),
    /// A queue's name.
    Name(String),
}

/// One batch to read for a copy.
#[derive(Debug, Clone)]
pub struct CopyRead {
    /// The table.
    pub table: CopyTable,
    /// Continue after this row (`None`: from the first).
    pub after: Option<CopyKey>,
    /// At most this many rows ([`crate::policy::COPY_BATCH`]).
    pub limit: u32,
}

/// A live task's row with every column, exactly as stored: what a copy reads and writes.
/// Instants are microseconds since the Unix epoch on both backends.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRow {
    /// Id.
    pub id: TaskId,
    /// Handler name.
    pub handler: String,
    /// Canonical data JSON text.
    pub data: String,
    /// The occurrence's scheduled instant.
    pub timestamp: Timestamp,
    /// When it may next be claimed.
    pub due_at: Timestamp,
    /// Promoted for claims (its due time has passed).
    pub ready: bool,
    /// When the previous occurrence ran.
    pub last_run_on: Option<Timestamp>,
    /// Attempts of this occurrence so far.
    pub attempts: i32,
    /// Attempts allowed per occurrence.
    pub max_attempts: i32,
    /// Whether the singleton rule applies.
    pub is_recurring: bool,
    /// Rule JSON text.
    pub rule: Option<String>,
    /// `scheduled`, `running` or `retrying`.
    pub state: String,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// Fencing token.
    pub fence: i64,
    /// The worker holding it (running tasks).
    pub worker: Option<String>,
    /// When the running attempt started.
    pub started_at: Option<Timestamp>,
    /// When the running attempt's lease ends.
    pub lease_until: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// A one-off task's unique key.
    pub unique_key: Option<String>,
    /// A person asked to cancel it while it runs.
    pub cancel_requested: bool,
}

/// A finished task's row with every column, exactly as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Id.
    pub id: TaskId,
    /// Handler name.
    pub handler: String,
    /// Canonical data JSON text.
    pub data: String,
    /// The last occurrence's scheduled instant.
    pub timestamp: Timestamp,
    /// When it was last due.
    pub due_at: Timestamp,
    /// When the previous occurrence ran.
    pub last_run_on: Option<Timestamp>,
    /// Attempts of the last occurrence.
    pub attempts: i32,
    /// Attempts allowed per occurrence.
    pub max_attempts: i32,
    /// Whether the singleton rule applied.
    pub is_recurring: bool,
    /// Rule JSON text.
    pub rule: Option<String>,
    /// `done`, `dead` or `cancelled`.
    pub state: String,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// Fencing token, kept for a retry.
    pub fence: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// A one-off task's unique key.
    pub unique_key: Option<String>,
    /// The attempt that finished it, kept on this row instead of in `runs` (`None` for a task
    /// that finished without one, and for tasks finished before schema version 7).
    pub run: Option<RunRecord>,
}

/// One attempt exactly as stored: the columns of a row of `runs`, or the `run_*` columns of a
/// history row, which keeps the attempt that finished its task (the task's last run, after its
/// rows in `runs`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Attempt number.
    pub attempt: i32,
    /// The occurrence it ran for.
    pub timestamp: Timestamp,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Outcome text.
    pub outcome: String,
    /// Error text.
    pub error: Option<String>,
    /// Worker id.
    pub worker: String,
}

/// One attempt's row, exactly as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Its position in the source's table (SQLite's rowid, PostgreSQL's `seq`), which orders
    /// a task's runs. Not written: the target numbers the rows anew, in the order given.
    pub position: i64,
    /// The task.
    pub task_id: TaskId,
    /// The attempt.
    pub run: RunRecord,
}

/// A queue's controls, exactly as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    /// The queue.
    pub name: String,
    /// Paused.
    pub paused: bool,
    /// At most this many running at once.
    pub concurrency: Option<i32>,
    /// The data field the limits apply per value of.
    pub per_key: Option<String>,
    /// At most this many starts ...
    pub rate_count: Option<i32>,
    /// ... in any window this long (milliseconds).
    pub rate_period_ms: Option<i64>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A batch of rows of one table, as [`Store::copy_read`] returns and [`Store::copy_write`]
/// takes them.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyRows {
    /// Live tasks.
    Live(Vec<LiveRow>),
    /// Finished tasks.
    History(Vec<HistoryRow>),
    /// Run rows.
    Runs(Vec<RunRow>),
    /// Queue controls.
    Queues(Vec<QueueRow>),
}

impl CopyRows {
    /// The table the rows belong to.
    pub fn table(&self) -> CopyTable {
        match self {
            CopyRows::Live(_) => CopyTable::Live,
            CopyRows::History(_) => CopyTable::History,
            CopyRows::Runs(_) => CopyTable::Runs,
            CopyRows::Queues(_) => CopyTable::Queues,
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            CopyRows::Live(r) => r.len(),
            CopyRows::History(r) => r.len(),
            CopyRows::Runs(r) => r.len(),
            CopyRows::Queues(r) => r.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of the last row: where the next batch continues.
    pub fn last_key(&self) -> Option<CopyKey> {
        match self {
            CopyRows::Live(r) => r.last().map(|r| CopyKey::Id(r.id)),
            CopyRows::History(r) => r.last().map(|r| CopyKey::Id(r.id)),
            CopyRows::Runs(r) => r.last().map(|r| CopyKey::Run(r.task_id, r.position)),
            CopyRows::Queues(r) => r.last().map(|r| CopyKey::Name(r.name.clone())),
        }
    }
}

/// The storage seam: one implementation per database. Object-safe, so the runtime holds an
/// `Arc<dyn Store>` and users never see store generics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Notified whenever a task may have become due sooner than a sleeping worker expects:
    /// inserts, retries and reschedules in this process, and (where the backend can) in others.
    fn wakeups(&self) -> Arc<Notify>;

    /// The PostgreSQL store behind this handle, if it is one: adding a task inside a caller's
    /// own transaction ([`crate::Party::add_in_transaction`]) needs its schema.
    #[cfg(feature = "postgres")]
    fn as_postgres(&self) -> Option<&postgres::PgStore> {
        None
    }

    /// Insert tasks atomically: all or none. A recurring task that collides with an existing
    /// one fails the whole batch with [`TaskError::Duplicate`] naming the existing id.
    async fn task_insert(&self, tasks: Vec<InsertTask>) -> Result<Vec<TaskId>, TaskError>;

    /// Claim up to `limit` due tasks (priority, then due time), mark them running with a new
    /// fence and lease, and count the attempt. No task is ever handed to two claims.
    async fn task_claim(&self, params: ClaimParams<'_>) -> Result<Vec<ClaimedTask>, TaskError>;

    /// Record attempts and move tasks to their next state, in one transaction; each write is
    /// fenced (and, for a rescue, applies only while the lease is still over) and appends one
    /// run row when the attempt ran.
    async fn task_finish(&self, batch: Vec<Finish>) -> Result<Vec<FinishResult>, TaskError>;

    /// Renew the leases of held tasks and record the worker as live until its
    /// [`WorkerInfo::live_until`]. Says which tasks the worker no longer holds (stale fence),
    /// which it should abandon, and which it holds but whose lease this renewal left as it
    /// was.
    async fn task_heartbeat(&self, params: HeartbeatParams<'_>) -> Result<Heartbeat, TaskError>;

    /// Running tasks whose lease ended before `now`, earliest expiry first. Releasing them is
    /// decided above the seam and written with [`Store::task_finish`].
    async fn task_expired(&self, params: ExpiredParams) -> Result<Vec<ExpiredTask>, TaskError>;

    /// The earliest `due_at` among claimable tasks of these handlers and queues.
    async fn task_next_due(
        &self,
        handlers: &[String],
        queues: &[String],
    ) -> Result<Option<Timestamp>, TaskError>;

    /// One task with its run history.
    async fn task_get(&self, id: TaskId) -> Result<Option<TaskInfo>, TaskError>;

    /// One task (its `runs` left empty) with one page of its runs, newest first: at most
    /// `limit` of them recorded before `before` (the run its history row keeps comes first,
    /// at [`KEPT_RUN_POSITION`]), and how many runs it has, counted up to `count_at_most`. One
    /// snapshot. Reads the index entries of the page and of the count only, however many runs
    /// the task has. `None` when no task has this id.
    async fn task_runs(&self, params: RunsParams)
    -> Result<Option<(TaskInfo, RunPage)>, TaskError>;

    /// Tasks soonest-due first, without run histories. A data filter matches as
    /// [`crate::DataMatch`] says.
    async fn task_list(&self, filter: &ListFilter) -> Result<Vec<TaskInfo>, TaskError>;

    /// The place of each task of the listing `filter` describes, in its order and up to its
    /// limit, with the bytes its data, last error, rule and unique key take as stored: what a
    /// page is cut by ([`crate::policy::page_cut`]) before its tasks are read. Reads no more
    /// of a task than its size.
    async fn task_list_sizes(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<(ListCursor, u64)>, TaskError>;

    /// The place of the `n`-th task (from 1) of the listing `filter` describes, its data filter
    /// and limit left out: `None` when the listing holds fewer than `n`. Reads `n` index
    /// entries at most, whatever the store holds.
    async fn task_list_reach(
        &self,
        filter: &ListFilter,
        n: u32,
    ) -> Result<Option<ListCursor>, TaskError>;

    /// Cancel a task that is scheduled, retrying or dead. A running task is refused with
    /// [`TaskError::Conflict`]; done and cancelled tasks too.
    async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError>;

    /// Make a dead, cancelled, retrying or scheduled task due now, its attempts counting on
    /// (one more allowed if it had used them all). Others are refused with
    /// [`TaskError::Conflict`].
    async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<TaskInfo, TaskError>;

    /// Ask the worker running `id` to stop it: marks the running task as cancel-requested
    /// (the worker's next [`Store::task_cancel_requested`] sees it). Returns the task, or
    /// `None` when it is not running (any more), so the caller cancels it as it is now.
    async fn task_cancel_request(
        &self,
        id: TaskId,
        now: Timestamp,
    ) -> Result<Option<TaskInfo>, TaskError>;

    /// Of these claims (id and fence, as a heartbeat presents them), the ones still running
    /// under that fence whose cancellation a person asked for.
    async fn task_cancel_requested(
        &self,
        claims: &[(TaskId, i64)],
    ) -> Result<Vec<TaskId>, TaskError>;

    /// Cancel every matching task (see [`SteerMany`]) in one statement; returns how many.
    async fn task_cancel_many(&self, params: SteerMany<'_>) -> Result<u64, TaskError>;

    /// Retry every matching task in one statement, as [`Store::task_retry`] does one; a
    /// recurring task whose singleton is held by a live copy (or by another matching copy) is
    /// left as it is. Returns how many were retried.
    async fn task_retry_many(&self, params: SteerMany<'_>) -> Result<u64, TaskError>;

    /// How many tasks match a bulk operation's filters in its states (live and finished
    /// alike), changing nothing: what a person is shown before confirming one. A retry may
    /// then touch fewer (recurring tasks whose singleton is held are left as they are).
    /// Counting stops at `at_most` matches, and looks at no more than `examine` tasks of each
    /// side (live, finished) in the operation's states before the data filter, so a count
    /// costs the same on any store.
    async fn task_count_many(
        &self,
        params: SteerMany<'_>,
        at_most: u64,
        examine: u64,
    ) -> Result<ManyCount, TaskError>;

    /// For each task in `params` (answers in the same order), its latest successful run and
    /// the successful runs of its occurrences at or after its `since` (at most `limit`, the
    /// latest): the run rows of `runs`, and the run a finished task's history row keeps.
    /// Reads the `runs_succeeded` index only (successful runs by task and occurrence), at
    /// most `limit` + 2 entries of it per task, however long the task's history: what the
    /// per-schedule metrics read on every scrape.
    async fn task_successes(&self, params: SuccessParams<'_>) -> Result<Vec<Successes>, TaskError>;

    /// The raw figures behind `stats`.
    async fn stats(&self, params: StatsParams) -> Result<StoreStats, TaskError>;

    /// Make the space of dead row versions in the hot table reusable, so it stays the size of
    /// the live tasks however many pass through it. PostgreSQL: `VACUUM` of the hot table
    /// (claims, finishes and moves to the history leave a dead version per change, which
    /// autovacuum, waking once a minute and throttled, reaches too late under a steady flow)
    /// and of the finished-task counters (every finish appends a delta that the next fold
    /// deletes; `stats` reads them all). SQLite frees a b-tree's pages as rows leave it and
    /// does nothing here.
    async fn task_vacuum(&self) -> Result<(), TaskError>;

    /// Make the space of the rows a prune removed from the history and `runs` reusable, after
    /// a pass that removed some. PostgreSQL: `VACUUM (SKIP_LOCKED)` of both, so pruning keeps
    /// them the size of what retention holds on any server: where autovacuum is off or behind,
    /// every pruned row stayed as a dead version and its index entries, and each prune walked
    /// past all those of the passes before (a million-task soak slowed to 0.44× of its first
    /// tenth). A table autovacuum is working on is skipped, not waited for. SQLite puts the
    /// pages rows leave on its free list, where the next inserts take them, and does nothing.
    async fn history_vacuum(&self) -> Result<(), TaskError>;

    /// Rebuild the hot table's indexes, without stopping claims or finishes: when to is
    /// decided above the seam ([`crate::policy::hot_indexes_bloated`]). PostgreSQL: `REINDEX
    /// TABLE CONCURRENTLY` (writes go on while it builds the new indexes; it waits for
    /// transactions that began before it). SQLite: `REINDEX` of the hot table, on the writer.
    async fn task_reindex(&self) -> Result<(), TaskError>;

    /// Whether the hot table's indexes keep the pages tasks leave behind, so they can outgrow
    /// the table and the pruner measures them ([`Store::table_sizes`]) to decide on a rebuild.
    /// PostgreSQL: yes (a vacuum makes the pages reusable, never returns them). SQLite: no, a
    /// b-tree gives its pages back as rows leave it; measuring would read every page of the
    /// file (`dbstat`) once a minute for nothing.
    fn indexes_keep_freed_pages(&self) -> bool;

    /// Space the tables take on disk, as the database reports it (SQLite: the pages of each
    /// b-tree, `dbstat`; PostgreSQL: `pg_table_size` and `pg_indexes_size`).
    async fn table_sizes(&self) -> Result<TableSizes, TaskError>;

    /// Up to `limit` rows of one table exactly as stored, in key order after `after` (task
    /// ids in byte order; run rows by task id, then in the order they were recorded; queues
    /// by name, in byte order): what
    /// [`crate::copy`] reads, batch by batch, without holding a whole table in memory.
    async fn copy_read(&self, params: CopyRead) -> Result<CopyRows, TaskError>;

    /// Insert rows read from another store, every column as given, in one durable
    /// transaction; run rows are appended in the order given. The finished-task counters
    /// follow, as for any change to the history. A row whose id is already stored fails the
    /// whole batch.
    async fn copy_write(&self, rows: CopyRows) -> Result<(), TaskError>;

    /// Record a starting worker as live until its [`WorkerInfo::live_until`], unless a worker
    /// with the same id is live at `now` (its row's `live_until` is later than `now`): then
    /// nothing is written and that row's `live_until` is returned. A row whose liveness has
    /// ended (its worker was killed, or stopped without removing it) is taken over.
    async fn worker_register(
        &self,
        worker: &WorkerInfo,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, TaskError>;

    /// Forget a worker that stopped cleanly.
    async fn worker_remove(&self, id: &str) -> Result<(), TaskError>;

    /// The database server's clock, read now, for a worker to compare with its own before it
    /// starts ([`crate::policy::judge_clock_skew`]); `None` when the store is on this machine
    /// (a SQLite file: every process that opens it reads the same clock).
    async fn server_time(&self) -> Result<Option<Timestamp>, TaskError>;

    /// Remove (or, in a dry run, count) the rows of workers whose liveness ended before
    /// `before`: workers that were killed and never removed their own row. When is decided
    /// above the seam ([`crate::policy::FORGET_WORKERS_AFTER`]).
    async fn workers_forget(&self, before: Timestamp, dry_run: bool) -> Result<u64, TaskError>;

    /// Remove (or, in a dry run, count) up to `limit` finished tasks past their cutoff with
    /// all their run rows, and up to `limit` run rows of live recurring tasks past the
    /// recurring cutoff, in one transaction. Live tasks are never removed.
    async fn task_prune(&self, params: PruneParams) -> Result<PruneCounts, TaskError>;

    /// Take or renew the leadership of a maintenance service: succeeds when nobody holds it,
    /// `holder` already does, or the current term ended before `now`. Returns whether
    /// `holder` leads it now.
    async fn leader_elect(&self, params: LeaderParams<'_>) -> Result<bool, TaskError>;

    /// Give up every leadership `holder` has.
    async fn leader_resign(&self, holder: &str) -> Result<(), TaskError>;

    /// The controls of these queues (all controlled queues when `queues` is empty), by name.
    async fn queue_controls(&self, queues: &[String]) -> Result<Vec<QueueControl>, TaskError>;

    /// Pause or resume a queue. A queue left with neither a pause nor a limit has no control.
    /// Wakes sleeping workers.
    async fn queue_pause(&self, queue: &str, paused: bool, now: Timestamp)
    -> Result<(), TaskError>;

    /// Set a queue's limits (empty limits remove them), keeping its pause. Wakes sleeping
    /// workers.
    async fn queue_limit(
        &self,
        queue: &str,
        limits: &QueueLimits,
        now: Timestamp,
    ) -> Result<(), TaskError>;

    /// Tasks per queue and state (live ones counted, finished ones from their counters), and
    /// per queue the scheduled or retrying tasks due at or before `now`.
    async fn queue_counts(&self, now: Timestamp) -> Result<QueueCounts, TaskError>;
}

/// The figures behind `party queue list`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueCounts {
    /// Tasks per queue and state (non-zero only).
    pub counts: Vec<(String, State, u64)>,
    /// Due tasks per queue (non-zero only).
    pub due: Vec<(String, u64)>,
}
