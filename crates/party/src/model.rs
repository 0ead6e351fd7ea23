//! The shared vocabulary: task states, run outcomes, what a task looks like when read back,
//! and what a caller gives to create one.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::serde_time;
use crate::recurrence::{Recurrence, Rule};
use crate::{TaskError, TaskId};

/// Attempts an occurrence gets when neither the handler nor the task says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The queue a task goes to unless told otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// Where a task is in its life. See `docs/state_machine.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its timestamp, or due now and waiting for a worker.
    Scheduled,
    /// Claimed by a worker that holds its lease.
    Running,
    /// A failed attempt; waits out its backoff, then runs again with `attempts + 1`.
    Retrying,
    /// Finished: the last occurrence succeeded and nothing more is scheduled.
    Done,
    /// Attempts exhausted (or a broken recurrence); waits for a person to `retry` it.
    Dead,
    /// Cancelled by a person; `retry` brings it back.
    Cancelled,
}

impl State {
    /// Whether [`crate::Party::retry`] applies to a task in this state (dead, cancelled,
    /// retrying, or scheduled: run it now), and a bulk retry whose filter names the state.
    pub fn can_retry(self) -> bool {
        crate::store::Steer::Retry.allowed().contains(&self)
    }

    /// Whether [`crate::Party::cancel`] applies to a task in this state (scheduled, retrying
    /// or dead at once; running through its worker).
    pub fn can_cancel(self) -> bool {
        self == State::Running || self.can_cancel_in_bulk()
    }

    /// Whether a bulk cancel ([`crate::Party::cancel_matching`]) takes tasks in this state.
    pub fn can_cancel_in_bulk(self) -> bool {
        crate::store::Steer::Cancel.allowed().contains(&self)
    }

    /// Every state, in lifecycle order.
    pub const ALL: [State; 6] = [
        State::Scheduled,
        State::Running,
        State::Retrying,
        State::Done,
        State::Dead,
        State::Cancelled,
    ];

    /// The lowercase name used in storage, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Done => "done",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<State, TaskError> {
        State::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            TaskError::invalid(format!(
                "unknown state {}: use one of scheduled, running, retrying, done, dead, cancelled",
                crate::validate::quote(s)
            ))
        })
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `run` (and `on_complete`) returned `Ok`.
    Succeeded,
    /// `run` returned an error or panicked.
    Failed,
    /// The attempt ran past the handler's timeout.
    TimedOut,
    /// The worker stopped renewing its lease (crashed, killed or frozen); the task was rescued.
    Lost,
    /// A person cancelled the task while this attempt ran; the task is cancelled.
    Cancelled,
}

impl Outcome {
    /// The snake_case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Lost => "lost",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::TimedOut,
            Outcome::Lost,
            Outcome::Cancelled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One attempt in a task's run history: the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The attempt number within its occurrence (1 for the first).
    pub attempt: u32,
    /// The occurrence this attempt ran for: the task's `timestamp` at the time.
    #[serde(with = "serde_time")]
    pub timestamp: Timestamp,
    /// When the worker started the attempt.
    #[serde(with = "serde_time")]
    pub started_at: Timestamp,
    /// When it ended (for a lost attempt: when it was rescued).
    #[serde(with = "serde_time")]
    pub finished_at: Timestamp,
    /// How it ended.
    pub outcome: Outcome,
    /// The error, for failed, timed-out and lost attempts.
    pub error: Option<String>,
    /// The id of the worker that ran it.
    pub worker: String,
}

/// A task as read back from the store, with its run history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// The registered handler name.
    pub handler: String,
    /// The JSON object given at creation.
    pub data: Value,
    /// The instant the current occurrence is scheduled for.
    #[serde(with = "serde_time")]
    pub timestamp: Timestamp,
    /// When the previous occurrence of a recurring task ran.
    #[serde(with = "serde_time::option")]
    pub last_run_on: Option<Timestamp>,
    /// Attempts made for the current occurrence (0 before the first).
    pub attempts: u32,
    /// Whether the task recurs (its handler says so, or it carries a rule).
    pub is_recurring: bool,
    /// The current state.
    pub state: State,
    /// The queue it waits in.
    pub queue: String,
    /// Lower runs first.
    pub priority: i32,
    /// Attempts allowed per occurrence.
    pub max_attempts: u32,
    /// The most recent error, if any.
    pub last_error: Option<String>,
    /// The recurrence rule stored with the task, as JSON, if it has one.
    pub rule: Option<Value>,
    /// When the task is next due to be claimed (its timestamp, or the end of a retry's backoff).
    #[serde(with = "serde_time")]
    pub due_at: Timestamp,
    /// When it was created.
    #[serde(with = "serde_time")]
    pub created_at: Timestamp,
    /// When it finished (done, dead or cancelled): its retention and unique window run from
    /// here. `None` while it is live.
    #[serde(default, with = "serde_time::option")]
    pub finished_at: Option<Timestamp>,
    /// The worker holding it while it runs.
    pub worker: Option<String>,
    /// The one-off task's unique key, if it has one (see [`NewTask::unique_key`]).
    #[serde(default)]
    pub unique_key: Option<String>,
    /// A person cancelled it while it runs: its worker is stopping it (see
    /// [`crate::TaskContext::is_cancelled`]).
    #[serde(default)]
    pub cancel_requested: bool,
    /// Every attempt so far, oldest first (empty in listings).
    pub runs: Vec<Run>,
}

/// What to create: a handler name, its data, and when and how it runs.
///
/// # Example
/// ```
/// use party::jiff::{SignedDuration, Timestamp};
/// use party::serde_json::json;
/// use party::NewTask;
///
/// // Due now, in the default queue, with the handler's own attempt limit.
/// let now = NewTask::new("send_receipt").data(json!({ "order": 42 }));
/// assert_eq!(now.queue, "default");
///
/// // At an exact instant, in a queue of its own, ahead of priority-0 tasks.
/// let at: Timestamp = "2027-01-31T09:00:00Z".parse().unwrap();
/// let later = NewTask::new("send_report")
///     .at(at)
///     .queue("reports")
///     .priority(-1)
///     .max_attempts(3);
/// assert_eq!(later.at, Some(at));
///
/// // Every 30 minutes, counted from each scheduled time (the handler must be recurring).
/// let recurring = NewTask::new("sync_prices").every(SignedDuration::from_mins(30));
/// assert!(recurring.recurrence.is_some());
/// ```
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Handler name; must be registered.
    pub handler: String,
    /// A JSON object.
    pub data: Value,
    /// When to run; `None` means now (or, for a rule, its first occurrence from now).
    pub at: Option<Timestamp>,
    /// Allowed attempts per occurrence; `None` takes the handler's.
    pub max_attempts: Option<u32>,
    /// Queue name.
    pub queue: String,
    /// Lower runs first; 0 by default.
    pub priority: i32,
    /// How it recurs, if it does by rule (see [`crate::recurrence`]).
    pub recurrence: Option<Recurrence>,
    /// A one-off task's key: while a task with the same handler and key is live, another is
    /// refused with [`TaskError::Duplicate`].
    pub unique_key: Option<String>,
    /// With a unique key: also refuse while such a task finished less than this long ago.
    pub unique_for: Option<SignedDuration>,
}

impl NewTask {
    /// A task for `handler` with empty data, due now.
    pub fn new(handler: impl Into<String>) -> NewTask {
        NewTask {
            handler: handler.into(),
            data: Value::Object(Default::default()),
            at: None,
            max_attempts: None,
            queue: DEFAULT_QUEUE.to_string(),
            priority: 0,
            recurrence: None,
            unique_key: None,
            unique_for: None,
        }
    }

    /// Set the data (must be a JSON object).
    pub fn data(mut self, data: Value) -> NewTask {
        self.data = data;
        self
    }

    /// Set typed data, serialized with serde (must serialize to a JSON object).
    pub fn data_from<T: Serialize>(self, data: &T) -> Result<NewTask, TaskError> {
        let v = serde_json::to_value(data).map_err(|e| {
            TaskError::invalid(format!("task data does not serialize to JSON: {e}"))
        })?;
        Ok(self.data(v))
    }

    /// Schedule it for exactly `t`. A time already past is due at once and keeps `t` as its
    /// timestamp (the CLI refuses past times as a likely mistake; the library allows them
    /// for work that belongs to an instant that has just gone by). A time before the year 1
    /// ([`crate::validate::MIN_TIME`]) is refused when the task is added.
    pub fn at(mut self, t: Timestamp) -> NewTask {
        self.at = Some(t);
        self
    }

    /// Allow `n` attempts per occurrence.
    pub fn max_attempts(mut self, n: u32) -> NewTask {
        self.max_attempts = Some(n);
        self
    }

    /// Put it in queue `q`.
    pub fn queue(mut self, q: impl Into<String>) -> NewTask {
        self.queue = q.into();
        self
    }

    /// Set its priority (lower runs first).
    pub fn priority(mut self, p: i32) -> NewTask {
        self.priority = p;
        self
    }

    /// Make it recur every `every` (whole seconds), counted from each previous scheduled
    /// timestamp (drift-free). Checked when the task is added.
    pub fn every(mut self, every: SignedDuration) -> NewTask {
        self.recurrence = Some(Recurrence {
            rule: Rule::Every { every },
            tz: None,
            missed: Default::default(),
            nonexistent: Default::default(),
            repeated: Default::default(),
        });
        self
    }

    /// Make it recur by `rule`: cron, calendar steps, time zone and missed-run policy.
    pub fn recurrence(mut self, rule: Recurrence) -> NewTask {
        self.recurrence = Some(rule);
        self
    }

    /// Make this one-off task unique by `key` among its handler's tasks: while one with the
    /// same handler and key is scheduled, running or retrying, adding another is refused
    /// with [`TaskError::Duplicate`] naming it. The database enforces it, so of many adds at
    /// once on any number of machines exactly one succeeds. A recurring task is unique by its
    /// data already and takes no key.
    ///
    /// ```
    /// # use party::NewTask;
    /// # use party::jiff::SignedDuration;
    /// // One export per customer at a time, and none again within an hour of the last.
    /// let export = NewTask::new("export")
    ///     .unique_key("customer:42")
    ///     .unique_for(SignedDuration::from_hours(1));
    /// # assert_eq!(export.unique_key.as_deref(), Some("customer:42"));
    /// ```
    pub fn unique_key(mut self, key: impl Into<String>) -> NewTask {
        self.unique_key = Some(key.into());
        self
    }

    /// With [`NewTask::unique_key`]: refuse also while a task with the same handler and key
    /// finished (done, dead or cancelled) less than `window` ago. A finished task that the
    /// pruner has removed no longer counts, so keep finished tasks at least this long
    /// (`WorkerConfig::retention`).
    pub fn unique_for(mut self, window: SignedDuration) -> NewTask {
        self.unique_for = Some(window);
        self
    }
}

/// Which tasks [`crate::Party::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this state.
    pub state: Option<State>,
    /// Only this handler.
    pub handler: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only tasks whose data has this top-level field with this value.
    pub data: Option<DataMatch>,
    /// Only recurring tasks (`Some(true)`) or only one-off tasks (`Some(false)`).
    pub recurring: Option<bool>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
    /// Only tasks after this one in the listing's order (keyset pagination): pass the
    /// [`TaskInfo::cursor`] of the last task of the previous page.
    pub cursor: Option<ListCursor>,
    /// Only tasks up to and including this place in the listing's order (how a page with a
    /// data filter bounds the tasks it examines, see [`crate::Party::list_page`]).
    pub until: Option<ListCursor>,
}

/// One page of a listing ([`crate::Party::list_page`]): its tasks and where the next page
/// starts.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The page's tasks, soonest due first. A page may hold fewer than its limit and still
    /// have a next page: when the next task would take it past
    /// [`crate::policy::PAGE_BYTES`], and (even none) with a data filter, see
    /// [`TaskPage::examined_to`].
    pub tasks: Vec<TaskInfo>,
    /// Where the next page continues (pass it as [`ListFilter::cursor`]); `None` on the last.
    pub next: Option<ListCursor>,
    /// When the page stopped because it had examined as many tasks as a page with a data
    /// filter may ([`crate::policy::DATA_FILTER_SCAN`]): the last task examined. The tasks up
    /// to it that match are all on this page; the next page searches on after it.
    pub examined_to: Option<ListCursor>,
}

/// A place in a listing (soonest due first, then by id): the listing continues after it.
/// Written as text (`due-microseconds_id`) for APIs; parse it with [`crate::validate::list_cursor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    /// The due time of the last task seen.
    pub due_at: Timestamp,
    /// Its id.
    pub id: TaskId,
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.due_at.as_microsecond(), self.id)
    }
}

impl FromStr for ListCursor {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<ListCursor, TaskError> {
        crate::validate::list_cursor(s)
    }
}

impl TaskInfo {
    /// The task as a listing shows it in JSON (`party list --json`, the HTTP API's task list):
    /// every field but `runs`, which a listing does not read.
    pub fn listing_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("runs");
        }
        v
    }

    /// Where a listing that ends with this task continues ([`ListFilter::cursor`]).
    pub fn cursor(&self) -> ListCursor {
        ListCursor {
            due_at: self.due_at,
            id: self.id,
        }
    }
}

/// Where a page of a task's runs continues: with the runs recorded before this one (pages go
/// newest first). Written as text (a whole number: the run's place in its store) for APIs;
/// parse it with [`crate::validate::run_cursor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCursor {
    /// The last run seen: its position among the store's runs (SQLite's rowid, PostgreSQL's
    /// `seq`; the run a finished task's history row keeps comes after every row).
    pub position: i64,
}

impl fmt::Display for RunCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.position)
    }
}

impl FromStr for RunCursor {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<RunCursor, TaskError> {
        crate::validate::run_cursor(s)
    }
}

/// How many runs a task has, counted up to [`crate::policy::RUNS_COUNTED`]: a task recurring
/// every minute keeps half a million, and a count of them all would read them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunCount {
    /// Exactly this many.
    Exact(u64),
    /// More than this many ([`crate::policy::RUNS_COUNTED`]).
    MoreThan(u64),
}

impl RunCount {
    /// The count of `counted` runs, where a store counted at most `at_most + 1`.
    pub fn of(counted: u64, at_most: u64) -> RunCount {
        if counted > at_most {
            RunCount::MoreThan(at_most)
        } else {
            RunCount::Exact(counted)
        }
    }

    /// The number: every run, or the count's cap.
    pub fn number(self) -> u64 {
        match self {
            RunCount::Exact(n) | RunCount::MoreThan(n) => n,
        }
    }

    /// Whether the number is every run.
    pub fn is_exact(self) -> bool {
        matches!(self, RunCount::Exact(_))
    }
}

impl fmt::Display for RunCount {
    /// `3840` or `more than 10000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunCount::Exact(n) => write!(f, "{n}"),
            RunCount::MoreThan(n) => write!(f, "more than {n}"),
        }
    }
}

/// One page of a task's runs ([`crate::Party::runs_page`]): a bounded read however long its
/// history.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<Run>,
    /// Where the next (older) page continues; `None` when the oldest run is on this page.
    pub older: Option<RunCursor>,
    /// How many runs the task has in all.
    pub total: RunCount,
}

/// A task with its latest runs only ([`crate::Party::get_recent`]): what the dashboard's task
/// page, `GET /api/v1/tasks/{id}` and `party show` read, a bounded read however long its
/// history.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentTask {
    /// The task; its `runs` are the latest ones only, oldest first.
    pub task: TaskInfo,
    /// How many runs the task has in all.
    pub total: RunCount,
    /// Where the runs older than those in `task.runs` continue ([`crate::Party::runs_page`]);
    /// `None` when `task.runs` holds every run.
    pub older: Option<RunCursor>,
}

impl RecentTask {
    /// Whether `task.runs` holds every run of the task.
    pub fn is_complete(&self) -> bool {
        self.older.is_none()
    }

    /// The task as JSON: [`TaskInfo`]'s fields (its `runs` the latest only, oldest first),
    /// with `runs_total` (every run, or the count's cap), `runs_total_exact` (false: more than
    /// `runs_total`) and `runs_next_cursor` (where the older runs continue, or null).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.task).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("runs_total".into(), self.total.number().into());
            o.insert("runs_total_exact".into(), self.total.is_exact().into());
            o.insert(
                "runs_next_cursor".into(),
                self.older.map(|c| c.to_string()).into(),
            );
        }
        v
    }
}

/// Which tasks a bulk cancel or retry acts on ([`crate::Party::cancel_matching`],
/// [`crate::Party::retry_matching`]). At least one field must be set: acting on every task is
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SteerFilter {
    /// Only tasks in this state (it must be one the operation applies to).
    pub state: Option<State>,
    /// Only tasks of this handler.
    pub handler: Option<String>,
    /// Only tasks in this queue.
    pub queue: Option<String>,
    /// Only tasks whose data has this top-level field with this value.
    pub data: Option<DataMatch>,
}

/// How many tasks a bulk action would touch, counted up to [`crate::policy::BULK_COUNTED`]
/// ([`crate::Party::count_cancellable`], [`crate::Party::count_retryable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchCount {
    /// The tasks counted: every match, or [`crate::policy::BULK_COUNTED`] when `more` is set.
    pub counted: u64,
    /// More tasks match than were counted.
    pub more: bool,
    /// A data filter was checked on only the first [`crate::policy::BULK_EXAMINED`] tasks in
    /// the action's states: `counted` is a lower bound, and the action may touch more.
    pub partial: bool,
}

impl fmt::Display for MatchCount {
    /// `12`, `at least 3` or `more than 1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.more {
            write!(f, "more than {}", self.counted)
        } else if self.partial {
            write!(f, "at least {}", self.counted)
        } else {
            write!(f, "{}", self.counted)
        }
    }
}

/// A filter on one top-level field of a task's data (`data.customer=acme`): a task matches
/// when its data has the field and the field's value, written as text, is `value` exactly. A
/// string field is its text without quotes (`acme`); a number is its digits as stored (`42`,
/// `2.5`); a boolean is `true` or `false`. A field holding null, an object or an array never
/// matches. Build one with [`crate::validate::data_match`] (from `FIELD=VALUE`) or
/// [`crate::validate::data_filter`], which check both parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMatch {
    /// The field's name: letters, digits, `_` and `-`, at most
    /// [`crate::validate::MAX_NAME_BYTES`] bytes.
    pub field: String,
    /// The value's text, at most [`crate::validate::MAX_TEXT_BYTES`] bytes.
    pub value: String,
}

impl fmt::Display for DataMatch {
    /// `data.FIELD=VALUE`, as the HTTP API's query takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data.{}={}", self.field, self.value)
    }
}

/// Counts and health figures, as shown by `party stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Tasks per state (every state listed, zeros included).
    pub by_state: Vec<(State, u64)>,
    /// Tasks per handler and state (non-zero only).
    pub by_handler: Vec<HandlerCount>,
    /// The due task that has waited longest, if any is due.
    #[serde(with = "serde_time::option")]
    pub oldest_due: Option<Timestamp>,
    /// Attempts finished in the last [`crate::policy::THROUGHPUT_WINDOW`] (60 s).
    pub finished_last_minute: u64,
    /// Due tasks whose handler no live worker has registered: they wait intact until one does.
    pub unhandled: Vec<HandlerCount>,
    /// Live workers: each within its own lease of its last heartbeat.
    pub workers: Vec<WorkerInfo>,
    /// Running tasks whose lease has ended without a rescue: how many.
    pub stuck_count: u64,
    /// The first few of them, earliest expiry first.
    pub stuck: Vec<StuckTask>,
}

impl Stats {
    /// The figures as `party stats --json` and the HTTP API write them: counts by state and
    /// by handler as objects keyed by state name.
    pub fn to_json(&self) -> Value {
        use std::collections::BTreeMap;
        let mut by_handler: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for c in &self.by_handler {
            *by_handler
                .entry(&c.handler)
                .or_default()
                .entry(c.state.as_str())
                .or_default() += c.count;
        }
        serde_json::json!({
            "by_state": self.by_state.iter().map(|(s, n)| (s.as_str(), *n)).collect::<BTreeMap<_, _>>(),
            "by_handler": by_handler,
            "oldest_due": self.oldest_due.map(crate::format_time),
            "finished_last_minute": self.finished_last_minute,
            "unhandled": self.unhandled,
            "workers": self.workers,
            "stuck_count": self.stuck_count,
            "stuck": self.stuck,
        })
    }
}

/// A count of tasks for one handler (and state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerCount {
    /// Handler name.
    pub handler: String,
    /// The state counted.
    pub state: State,
    /// How many.
    pub count: u64,
}

/// A live worker as it announces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Worker id (host, process and a random suffix).
    pub id: String,
    /// Handlers it can run.
    pub handlers: Vec<String>,
    /// Queues it takes from.
    pub queues: Vec<String>,
    /// Its last heartbeat.
    #[serde(with = "serde_time")]
    pub last_seen: Timestamp,
    /// It counts as live until here: its last heartbeat plus its own lease. A worker with a
    /// ten-minute lease heartbeats rarely and stays live between beats.
    #[serde(with = "serde_time")]
    pub live_until: Timestamp,
}

/// A running task whose lease ended and that no rescue has released yet: its worker died or
/// froze, and no other worker is running rescue passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckTask {
    /// The task.
    pub id: TaskId,
    /// The worker that held it.
    pub worker: String,
    /// When its lease ended.
    #[serde(with = "serde_time")]
    pub lease_until: Timestamp,
}
