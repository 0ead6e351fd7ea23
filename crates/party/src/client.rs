//! [`Party`]: the handle an application holds to add, inspect and steer tasks, and to start
//! workers.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::model::{
    HandlerCount, ListFilter, MatchCount, NewTask, Outcome, RecentTask, RunCursor, RunPage, State,
    Stats, SteerFilter, StuckTask, TaskInfo, TaskPage,
};
use crate::queues::{QueueInfo, QueueLimits};
use crate::recurrence::{self, GapReport, Recurrence, ScheduleHealth};
use crate::store::{
    InsertTask, RunsParams, StatsParams, Steer, SteerMany, Store, StoreStats, SuccessParams,
    Successes,
};
use crate::task::Registry;
use crate::worker::{Worker, WorkerConfig};
use crate::{TaskError, TaskId, policy, prepare, rules, validate};
use jiff::Timestamp;

/// The database party uses when none is given: `./party.db`.
pub const DEFAULT_DATABASE: &str = "party.db";

/// A connection to a party database plus the handlers this process knows. Cheap to clone.
#[derive(Clone)]
pub struct Party {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: Registry,
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Party")
            .field("backend", &self.store.backend())
            .field("registry", &self.registry)
            .finish()
    }
}

/// Open the store a URL names: a `postgres://` or `postgresql://` URL, or a SQLite file path
/// (optionally prefixed `sqlite:` or `sqlite://`). The schema is created or upgraded. Text that
/// looks like another URL (`mysql://…`, a misspelt `postgress://…` or `postgres:…`) is refused
/// rather than taken for a file name (see [`validate::database_url`]); no message shows the
/// URL's password.
///
/// # Errors
/// [`TaskError::Store`] when the database cannot be reached or its schema is newer than this
/// binary; [`TaskError::Invalid`] for an empty or unsupported URL, and for a URL whose backend
/// this build leaves out (the `sqlite` and `postgres` features of the crate, both on by
/// default).
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, TaskError> {
    let url = url.trim();
    let opened = match validate::database_url(url)? {
        validate::DatabaseKind::Postgres => open_postgres(url).await,
        validate::DatabaseKind::Sqlite => open_sqlite(validate::sqlite_path(url)).await,
    };
    opened.map_err(|e| validate::scrub_error(e, url))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(path: &str) -> Result<Arc<dyn Store>, TaskError> {
    Ok(Arc::new(
        crate::store::sqlite::SqliteStore::open(path).await?,
    ))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_path: &str) -> Result<Arc<dyn Store>, TaskError> {
    Err(missing_backend("SQLite", "sqlite"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn Store>, TaskError> {
    Ok(Arc::new(
        crate::store::postgres::PgStore::connect(url).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Arc<dyn Store>, TaskError> {
    Err(missing_backend("PostgreSQL", "postgres"))
}

/// The error for a URL whose backend this build leaves out.
#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn missing_backend(database: &str, feature: &str) -> TaskError {
    TaskError::invalid(format!(
        "this build of party has no {database} support: enable the `{feature}` feature of the \
         party crate"
    ))
}

impl Party {
    /// Connect to the database `url` names (see [`open_store`]) with these handlers.
    ///
    /// # Errors
    /// As [`open_store`].
    pub async fn connect(url: &str, registry: Registry) -> Result<Party, TaskError> {
        Ok(Party::with_store(open_store(url).await?, registry))
    }

    /// Use an already opened store.
    pub fn with_store(store: Arc<dyn Store>, registry: Registry) -> Party {
        Party {
            store,
            clock: Arc::new(SystemClock),
            registry,
        }
    }

    /// Replace the clock (tests use a [`crate::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Party {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The handlers this process knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Check and canonicalize a new task against the registry, at time `now`.
    pub(crate) fn prepare(&self, task: NewTask, now: Timestamp) -> Result<InsertTask, TaskError> {
        prepare::prepare(&self.registry, task, now)
    }

    /// Create a task; returns its id once it is durably stored.
    ///
    /// # Example
    /// ```no_run
    /// # use party::{NewTask, Party, TaskError};
    /// # async fn example(party: &Party) -> Result<(), TaskError> {
    /// use party::serde_json::json;
    ///
    /// let task = NewTask::new("monthly_bill").data(json!({ "customer": "acme" }));
    /// match party.add(task).await {
    ///     Ok(id) => println!("added {id}"),
    ///     // A recurring handler keeps one live task per data: the singleton rule.
    ///     Err(TaskError::Duplicate { existing, .. }) => println!("already there: {existing}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for bad input (nothing is written), [`TaskError::Duplicate`] when
    /// a recurring task with the same handler and data exists, [`TaskError::Store`].
    pub async fn add(&self, task: NewTask) -> Result<TaskId, TaskError> {
        let row = self.prepare(task, self.clock.now())?;
        Ok(self.store.task_insert(vec![row]).await?[0])
    }

    /// Create many tasks in one transaction: all or none.
    ///
    /// # Example
    /// ```no_run
    /// # use party::{NewTask, Party, TaskError};
    /// # async fn example(party: &Party) -> Result<(), TaskError> {
    /// use party::serde_json::json;
    ///
    /// let receipts = (1..=100)
    ///     .map(|order| NewTask::new("send_receipt").data(json!({ "order": order })))
    ///     .collect();
    /// let ids = party.add_many(receipts).await?; // in the order given
    /// assert_eq!(ids.len(), 100);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Party::add`]; the first bad task fails the batch and nothing is written. A batch
    /// that gives one recurring task twice, or one unique key of a handler twice, is
    /// [`TaskError::Invalid`] naming both places (`task 3: repeats task 1: ...`). A task that
    /// collides with one already stored is [`TaskError::Duplicate`] with its place in the
    /// batch (`task 3`).
    pub async fn add_many(&self, tasks: Vec<NewTask>) -> Result<Vec<TaskId>, TaskError> {
        let now = self.clock.now();
        let rows = tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                self.prepare(t, now).map_err(|e| match e {
                    TaskError::Invalid(m) => TaskError::Invalid(format!("task {}: {m}", i + 1)),
                    e => e,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(e) = prepare::repeated_within(&rows) {
            return Err(e);
        }
        let keys: Vec<prepare::BatchKey> = rows.iter().map(prepare::BatchKey::of).collect();
        match self.store.task_insert(rows).await {
            Err(TaskError::Duplicate {
                handler,
                existing,
                unique_key,
                place: None,
            }) => {
                let at = self
                    .duplicate_place(&keys, &handler, existing, unique_key.as_deref())
                    .await;
                Err(TaskError::Duplicate {
                    handler,
                    existing,
                    unique_key,
                    place: at.map(|i| format!("task {}", i + 1)),
                })
            }
            done => done,
        }
    }

    /// Which task of a batch (from 0) the store refused as a duplicate of `existing`: the one
    /// with the handler and unique key, or the recurring one of the handler with the existing
    /// task's data. `None` when that cannot be told (the existing task is gone meanwhile).
    async fn duplicate_place(
        &self,
        batch: &[prepare::BatchKey],
        handler: &str,
        existing: TaskId,
        unique_key: Option<&str>,
    ) -> Option<usize> {
        if let Some(key) = unique_key {
            return batch.iter().position(|b| b.is_keyed(handler, key));
        }
        let mut recurring = batch
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_recurring(handler));
        let (first, _) = recurring.next()?;
        if recurring.next().is_none() {
            return Some(first);
        }
        // Several recurring tasks of the handler: the one with the existing task's data.
        let data = self.store.task_get(existing).await.ok()??.data;
        let (_, text) = validate::canonical_data(data).ok()?;
        let data = prepare::BatchKey::digest(&text);
        batch
            .iter()
            .position(|b| b.is_recurring(handler) && b.data == Some(data))
    }

    /// Create a task inside your own open PostgreSQL transaction: it exists if and only if
    /// that transaction commits, and no worker sees it before. Workers are woken when it
    /// commits. The transaction must be on the database this `Party` is connected to (the task
    /// goes into its schema); a duplicate recurring task is refused without aborting your
    /// transaction.
    ///
    /// Available with the `postgres` feature (on by default).
    ///
    /// # Example
    /// ```no_run
    /// use party::store::postgres::tokio_postgres::{self, NoTls};
    /// use party::{NewTask, Party, Registry, TaskError, serde_json::json};
    ///
    /// # async fn example(party: Party) -> Result<(), Box<dyn std::error::Error>> {
    /// let (mut client, connection) =
    ///     tokio_postgres::connect("postgres://app@localhost/app", NoTls).await?;
    /// tokio::spawn(connection);
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&42i64]).await?;
    /// party
    ///     .add_in_transaction(&tx, NewTask::new("send_receipt").data(json!({"order": 42})))
    ///     .await?;
    /// tx.commit().await?; // the order and its task, or neither
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for bad input, or when this `Party` is not on PostgreSQL;
    /// [`TaskError::Duplicate`] as for [`Party::add`]; [`TaskError::Store`] when the statement
    /// fails.
    #[cfg(feature = "postgres")]
    pub async fn add_in_transaction(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        task: NewTask,
    ) -> Result<TaskId, TaskError> {
        let Some(store) = self.store.as_postgres() else {
            return Err(TaskError::invalid(format!(
                "adding a task inside a transaction needs PostgreSQL, but this party uses {}; \
                 connect with a postgres:// URL, or use add()",
                self.store.backend()
            )));
        };
        let row = self.prepare(task, self.clock.now())?;
        Ok(store.task_insert_in(tx, vec![row]).await?[0])
    }

    /// One task with its whole run history: every attempt, oldest first. A task recurring
    /// every minute keeps half a million runs for as long as retention keeps them
    /// (docs/RETENTION.md), and this reads them all; to show a task, read its latest runs
    /// with [`Party::get_recent`] and older ones a page at a time with [`Party::runs_page`].
    ///
    /// # Errors
    /// [`TaskError::NotFound`] when no task has this id.
    pub async fn get(&self, id: TaskId) -> Result<TaskInfo, TaskError> {
        self.store
            .task_get(id)
            .await?
            .ok_or(TaskError::NotFound(id))
    }

    /// One task with its latest `n` runs only (oldest first in [`RecentTask::task`]`.runs`, as
    /// [`Party::get`] has them), how many runs it has (counted up to
    /// [`policy::RUNS_COUNTED`]), and where the older ones continue ([`Party::runs_page`]). A
    /// bounded read however long its history: what the dashboard's task page,
    /// `GET /api/v1/tasks/{id}` and `party show` read, with `n` = [`policy::RECENT_RUNS`].
    ///
    /// # Errors
    /// [`TaskError::NotFound`] when no task has this id.
    pub async fn get_recent(&self, id: TaskId, n: u32) -> Result<RecentTask, TaskError> {
        let (mut task, page) = self.read_runs(id, None, n).await?;
        let mut runs = page.runs;
        runs.reverse();
        task.runs = runs;
        Ok(RecentTask {
            task,
            total: page.total,
            older: page.older,
        })
    }

    /// One page of a task's runs, newest first: at most `limit` of them (1 to
    /// [`policy::RUNS_PAGE_MAX`]), from the latest, or recorded before `before` (the
    /// [`RunPage::older`] of the page before, or [`RecentTask::older`]). Paging on until
    /// `older` is `None` reads every run exactly once, even while new runs are recorded (they
    /// come after the first page). A bounded read however long its history.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a limit out of range; [`TaskError::NotFound`].
    pub async fn runs_page(
        &self,
        id: TaskId,
        before: Option<RunCursor>,
        limit: u32,
    ) -> Result<RunPage, TaskError> {
        if !(1..=policy::RUNS_PAGE_MAX).contains(&limit) {
            return Err(TaskError::invalid(format!(
                "a page of runs holds 1 to {} runs, not {limit}; read more a page at a time, \
                 each after the cursor of the one before",
                policy::RUNS_PAGE_MAX
            )));
        }
        Ok(self.read_runs(id, before, limit).await?.1)
    }

    /// The task (its `runs` empty) and a page of its runs.
    async fn read_runs(
        &self,
        id: TaskId,
        before: Option<RunCursor>,
        limit: u32,
    ) -> Result<(TaskInfo, RunPage), TaskError> {
        self.store
            .task_runs(RunsParams {
                id,
                before,
                limit,
                count_at_most: policy::RUNS_COUNTED,
            })
            .await?
            .ok_or(TaskError::NotFound(id))
    }

    /// Tasks, soonest due first (then by id); a [`ListFilter::cursor`] continues a listing
    /// after a task of an earlier page.
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<TaskInfo>, TaskError> {
        let mut filter = checked_listing(filter)?;
        filter.limit.get_or_insert(policy::DEFAULT_LIST_LIMIT);
        self.store.task_list(&filter).await
    }

    /// One page of a listing, as the HTTP API, the dashboard and `party list` read it: up to
    /// the filter's limit of tasks and where the next page starts.
    ///
    /// A page holds at most [`policy::PAGE_BYTES`] of tasks: it ends before the task that
    /// would pass them (one task always goes on a page), with fewer tasks than its limit, and
    /// [`TaskPage::next`] continues at that task. The page's size is decided from the sizes
    /// of its tasks as stored, before the tasks themselves are read.
    ///
    /// A page with a data filter examines at most [`policy::DATA_FILTER_SCAN`] tasks (no index
    /// covers task data): when it has examined that many before finding a page of matches, it
    /// ends there with fewer tasks, even none, and [`TaskPage::examined_to`] and
    /// [`TaskPage::next`] say where the search goes on. Its cost does not grow with the store.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a bad filter; [`TaskError::Store`].
    pub async fn list_page(&self, filter: &ListFilter) -> Result<TaskPage, TaskError> {
        let mut filter = checked_listing(filter)?;
        let limit = *filter.limit.get_or_insert(policy::DEFAULT_LIST_LIMIT);
        let mut examined_to = None;
        if filter.data.is_some() {
            examined_to = self
                .store
                .task_list_reach(&filter, policy::DATA_FILTER_SCAN)
                .await?;
            if examined_to.is_some() {
                filter.until = examined_to;
            }
        }
        // The sizes first, of one more than asked (which tells whether another page exists):
        // the page is cut by count and by bytes before a task is read.
        filter.limit = Some(limit.saturating_add(1));
        let sizes = self.store.task_list_sizes(&filter).await?;
        let taken = policy::page_cut(sizes.iter().map(|(_, bytes)| *bytes), limit);
        let Some(&(cut, _)) = taken.checked_sub(1).and_then(|last| sizes.get(last)) else {
            return Ok(TaskPage {
                tasks: Vec::new(),
                next: examined_to,
                examined_to,
            });
        };
        filter.until = Some(cut);
        filter.limit = Some(taken as u32);
        let tasks = self.store.task_list(&filter).await?;
        // Tasks added up to the cut since the sizes were read take the places of later ones:
        // the page then ends at its last task, and the next goes on from there.
        let last = tasks.last().map(TaskInfo::cursor);
        let page = if tasks.len() == taken && last != Some(cut) {
            TaskPage {
                tasks,
                next: last,
                examined_to: None,
            }
        } else if taken < sizes.len() {
            TaskPage {
                tasks,
                next: Some(cut),
                examined_to: None,
            }
        } else {
            TaskPage {
                tasks,
                next: examined_to,
                examined_to,
            }
        };
        Ok(page)
    }

    /// Cancel a task. A scheduled, retrying or dead task is cancelled at once. A running task
    /// is marked for cancellation and returned still `running` with `cancel_requested`: its
    /// worker learns of it within about a second, tells the handler
    /// ([`crate::TaskContext::is_cancelled`]), and drops the attempt after its grace period
    /// if the handler has not returned; the run is then recorded as `cancelled` and the task
    /// is cancelled, wherever the worker runs.
    ///
    /// # Errors
    /// [`TaskError::Conflict`] for a done or cancelled task; [`TaskError::NotFound`].
    pub async fn cancel(&self, id: TaskId) -> Result<TaskInfo, TaskError> {
        // The task may start or stop running between the two steps: each step only applies
        // to the state it names, so a few rounds settle it.
        for _ in 0..3 {
            match self.store.task_cancel(id, self.clock.now()).await {
                Err(TaskError::Conflict(_)) => {}
                done => return done,
            }
            if let Some(task) = self.store.task_cancel_request(id, self.clock.now()).await? {
                return Ok(task);
            }
        }
        self.store.task_cancel(id, self.clock.now()).await
    }

    /// Make a dead, cancelled, retrying or scheduled task due now (for a scheduled one: run it
    /// now, before its time; a recurring task's next occurrence still follows its rule from
    /// the occurrence run early).
    ///
    /// # Errors
    /// [`TaskError::Conflict`] for other states; [`TaskError::Duplicate`] when a recurring
    /// task's singleton is taken meanwhile; [`TaskError::NotFound`].
    pub async fn retry(&self, id: TaskId) -> Result<TaskInfo, TaskError> {
        self.store.task_retry(id, self.clock.now()).await
    }

    /// Cancel every task matching `filter` that can be cancelled (scheduled, retrying or
    /// dead), in one statement. Returns how many were cancelled.
    ///
    /// # Example
    /// ```no_run
    /// # use party::{Party, TaskError};
    /// # async fn example(party: &Party) -> Result<(), TaskError> {
    /// use party::{State, SteerFilter};
    ///
    /// // The mail queue's waiting tasks: the provider is gone for good.
    /// let filter = SteerFilter {
    ///     queue: Some("mail".to_string()),
    ///     state: Some(State::Scheduled),
    ///     ..SteerFilter::default()
    /// };
    /// let cancelled = party.cancel_matching(&filter).await?;
    /// println!("{cancelled} cancelled");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for an empty filter (it would cancel everything) or a state that
    /// cannot be cancelled; [`TaskError::Store`].
    pub async fn cancel_matching(&self, filter: &SteerFilter) -> Result<u64, TaskError> {
        let states = steer_states(Steer::Cancel, filter)?;
        self.store
            .task_cancel_many(steer_many(&states, filter, self.clock.now()))
            .await
    }

    /// Make every task matching `filter` that can be retried (dead, cancelled or retrying, and
    /// scheduled when the filter's state names it) due now, in one statement, as
    /// [`Party::retry`] does one. A recurring task whose
    /// singleton is held by a live copy is left as it is. Returns how many were retried.
    ///
    /// # Errors
    /// As [`Party::cancel_matching`].
    pub async fn retry_matching(&self, filter: &SteerFilter) -> Result<u64, TaskError> {
        let states = steer_states(Steer::Retry, filter)?;
        self.store
            .task_retry_many(steer_many(&states, filter, self.clock.now()))
            .await
    }

    /// How many tasks [`Party::cancel_matching`] would cancel with this filter, changing
    /// nothing: what to show a person before they confirm. Counted up to
    /// [`policy::BULK_COUNTED`], and with a data filter over the first
    /// [`policy::BULK_EXAMINED`] tasks in the action's states, so the count stays quick
    /// however large the store ([`MatchCount`] says when it is a bound).
    ///
    /// # Errors
    /// As [`Party::cancel_matching`].
    pub async fn count_cancellable(&self, filter: &SteerFilter) -> Result<MatchCount, TaskError> {
        let states = steer_states(Steer::Cancel, filter)?;
        self.count_matching(&states, filter).await
    }

    async fn count_matching(
        &self,
        states: &[State],
        filter: &SteerFilter,
    ) -> Result<MatchCount, TaskError> {
        let at_most = policy::BULK_COUNTED + 1;
        // Without a data filter every task looked at matches, so looking past the count's
        // limit would tell nothing more.
        let examine = if filter.data.is_some() {
            policy::BULK_EXAMINED
        } else {
            at_most
        };
        let n = self
            .store
            .task_count_many(
                steer_many(states, filter, self.clock.now()),
                at_most,
                examine,
            )
            .await?;
        let more = n.matched > policy::BULK_COUNTED;
        Ok(MatchCount {
            counted: n.matched.min(policy::BULK_COUNTED),
            more,
            partial: !more && !n.examined_all,
        })
    }

    /// How many tasks [`Party::retry_matching`] would consider with this filter, changing
    /// nothing. The retry may touch fewer: a recurring task whose singleton is held by a live
    /// copy is left as it is.
    ///
    /// # Errors
    /// As [`Party::retry_matching`].
    pub async fn count_retryable(&self, filter: &SteerFilter) -> Result<MatchCount, TaskError> {
        let states = steer_states(Steer::Retry, filter)?;
        self.count_matching(&states, filter).await
    }

    /// Counts and health.
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn stats(&self) -> Result<Stats, TaskError> {
        let now = self.clock.now();
        let raw = self
            .store
            .stats(StatsParams {
                now,
                finished_since: now - policy::THROUGHPUT_WINDOW,
                stuck_limit: policy::STUCK_LISTED,
            })
            .await?;
        Ok(fold_stats(raw))
    }

    /// Pause a queue: its tasks are not claimed by any worker until [`Party::resume_queue`];
    /// running ones finish. Workers run until idle do not wait for its tasks.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a bad queue name; [`TaskError::Store`].
    pub async fn pause_queue(&self, queue: &str) -> Result<(), TaskError> {
        crate::validate::queue_name(queue)?;
        self.store.queue_pause(queue, true, self.clock.now()).await
    }

    /// Resume a paused queue (a queue that is not paused is left as it is).
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a bad queue name; [`TaskError::Store`].
    pub async fn resume_queue(&self, queue: &str) -> Result<(), TaskError> {
        crate::validate::queue_name(queue)?;
        self.store.queue_pause(queue, false, self.clock.now()).await
    }

    /// Set a queue's limits across every worker, replacing any it had; empty limits remove
    /// them. A lowered limit holds for the claims after it: tasks already running finish.
    ///
    /// ```no_run
    /// # use party::{Party, QueueLimits, Rate, TaskError};
    /// # async fn example(party: &Party) -> Result<(), TaskError> {
    /// // One export per customer at a time, and at most 10 starts a second in all.
    /// party
    ///     .limit_queue(
    ///         "exports",
    ///         &QueueLimits {
    ///             concurrency: Some(1),
    ///             per: Some("customer".to_string()),
    ///             ..QueueLimits::default()
    ///         },
    ///     )
    ///     .await?;
    /// party
    ///     .limit_queue(
    ///         "emails",
    ///         &QueueLimits {
    ///             rate: Some(Rate::parse("10/1s")?),
    ///             ..QueueLimits::default()
    ///         },
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a bad queue name or limit; [`TaskError::Store`].
    pub async fn limit_queue(&self, queue: &str, limits: &QueueLimits) -> Result<(), TaskError> {
        crate::validate::queue_name(queue)?;
        limits.check()?;
        self.store
            .queue_limit(queue, limits, self.clock.now())
            .await
    }

    /// Every queue that has tasks or a control: its tasks by state, due tasks, and whether it
    /// is paused or limited, by name.
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, TaskError> {
        let now = self.clock.now();
        let counts = self.store.queue_counts(now).await?;
        let controls = self.store.queue_controls(&[]).await?;
        Ok(crate::queues::fold(counts, controls))
    }

    /// One queue as [`Party::queues`] lists it; a queue with neither tasks nor a control is
    /// shown empty, active and unlimited.
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn queue(&self, name: &str) -> Result<QueueInfo, TaskError> {
        Ok(self
            .queues()
            .await?
            .into_iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| QueueInfo {
                name: name.to_string(),
                paused: false,
                limits: QueueLimits::default(),
                counts: Vec::new(),
                due: 0,
            }))
    }

    /// The next `count` occurrences of a task with a stored rule: its pending occurrence first
    /// (when it is still live), then what the rule gives after it.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] when the task has no stored rule (its handler decides each next
    /// run in `on_complete`, so nothing beyond the pending occurrence is known);
    /// [`TaskError::NotFound`].
    pub async fn next_occurrences(
        &self,
        id: TaskId,
        count: usize,
    ) -> Result<Vec<Timestamp>, TaskError> {
        // The task alone: its runs are not needed.
        let task = self.get_recent(id, 0).await?.task;
        self.next_occurrences_of(&task, count)
    }

    /// [`Party::next_occurrences`] of a task already read (its runs are not needed), so a
    /// caller that also shows the task reads it once.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] when the task has no stored rule.
    pub fn next_occurrences_of(
        &self,
        task: &TaskInfo,
        count: usize,
    ) -> Result<Vec<Timestamp>, TaskError> {
        let rule = rule_of(task)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let live = matches!(
            task.state,
            State::Scheduled | State::Running | State::Retrying
        );
        Ok(if live {
            let mut out = vec![task.timestamp];
            out.extend(rule.upcoming(task.timestamp, count - 1));
            out
        } else {
            // Finished: the schedule's occurrences after now, on its own grid.
            rule.upcoming_after(task.timestamp, self.clock.now(), count)
        })
    }

    /// Compare the occurrences a task's rule expected, from its first known occurrence up to
    /// now (the pending one excluded; for a cancelled task, up to its cancel), with the
    /// occurrences its run history shows succeeded: missing, doubled and unexpected ones.
    ///
    /// # Errors
    /// As [`Party::next_occurrences`].
    pub async fn gaps(&self, id: TaskId) -> Result<GapReport, TaskError> {
        let task = self.get(id).await?;
        self.gaps_of(&task)
    }

    /// [`Party::gaps`] of a task already read with its run history ([`Party::get`]), so a
    /// caller that also reads its runs reads them once.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] when the task has no stored rule.
    pub fn gaps_of(&self, task: &TaskInfo) -> Result<GapReport, TaskError> {
        let rule = rule_of(task)?;
        let first = task
            .runs
            .iter()
            .map(|r| r.timestamp)
            .chain([task.timestamp])
            .min()
            .unwrap_or(task.timestamp);
        let (_, until) = self.compared_until(task);
        let ran_for: Vec<Timestamp> = task
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .map(|r| r.timestamp)
            .collect();
        Ok(recurrence::gaps(&rule, first, until, &ran_for))
    }

    /// Whether `task` is live, and the last instant its expected occurrences are compared up
    /// to. A live task: up to its pending occurrence. A cancelled one: up to its cancel (a
    /// person stopped the schedule; it expects nothing after). A dead or done one: up to now
    /// (a schedule that died still owes what came due since, until someone retries it).
    fn compared_until(&self, task: &TaskInfo) -> (bool, Timestamp) {
        let live = matches!(
            task.state,
            State::Scheduled | State::Running | State::Retrying
        );
        let until = match (live, task.state, task.finished_at) {
            (true, ..) => task.timestamp - jiff::SignedDuration::from_micros(1),
            (false, State::Cancelled, Some(at)) => at,
            _ => self.clock.now(),
        };
        (live, until)
    }

    /// [`Party::gaps`] within the runs a [`Party::get_recent`] read: the occurrences the
    /// task's rule expected from the oldest of those runs (from its first occurrence when
    /// they are all of its runs) up to where [`Party::gaps`] stops, at most
    /// [`policy::RECENT_OCCURRENCES_COMPARED`] of them (the latest; `truncated` then says
    /// older ones were left out), compared with those runs. Reads nothing: what the
    /// dashboard's task page shows beside the latest runs. An occurrence whose earlier runs are
    /// older than those read shows only the runs read; [`Party::gaps`] compares the whole
    /// history.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] when the task has no stored rule.
    pub fn recent_gaps(&self, recent: &RecentTask) -> Result<GapReport, TaskError> {
        let task = &recent.task;
        let rule = rule_of(task)?;
        let oldest_run = task.runs.iter().map(|r| r.timestamp).min();
        // All of its runs: from its first occurrence, as `gaps` counts it.
        let first = recent
            .is_complete()
            .then(|| oldest_run.map_or(task.timestamp, |r| r.min(task.timestamp)));
        let from = first.or(oldest_run).unwrap_or(task.timestamp);
        let (live, until) = self.compared_until(task);
        // The occurrences before the first one after `until`, on the schedule's own grid.
        let after = if live {
            Some(task.timestamp)
        } else {
            rule.upcoming_after(task.timestamp, until, 1)
                .first()
                .copied()
        };
        let cap = policy::RECENT_OCCURRENCES_COMPARED;
        let mut expected = match after {
            Some(after) => rule.occurrences_before(after, from, cap + 1),
            None => Vec::new(),
        };
        expected.retain(|t| *t <= until);
        // A first occurrence off the rule's grid (a task added `at` another time) counts, as in
        // `gaps`.
        if let Some(first) = first.filter(|f| *f <= until && !expected.contains(f)) {
            expected.insert(0, first);
        }
        let truncated = expected.len() > cap;
        if truncated {
            expected.drain(..expected.len() - cap);
        }
        let start = if truncated { expected[0] } else { from };
        let mut ran = recurrence::runs_for(
            task.runs
                .iter()
                .filter(|r| r.outcome == Outcome::Succeeded)
                .map(|r| r.timestamp)
                .filter(|t| (start..=until).contains(t)),
        );
        let mut report = GapReport {
            truncated,
            ..GapReport::default()
        };
        for ts in expected {
            report.check(ts, &mut ran);
        }
        report.unexpected(ran);
        Ok(report)
    }

    /// The recent health of live recurring tasks as listed ([`Party::list`]; their runs are
    /// not needed), in the same order: when each one's latest successful run finished, and the
    /// occurrences its stored rule expected within the trailing [`policy::MISSED_WINDOW`]
    /// (at most [`policy::MISSED_COMPARED_MAX`], the latest before its pending occurrence,
    /// none before its first successful run) that no run succeeded for. A task whose handler
    /// decides each next run has no rule and no expected occurrences.
    ///
    /// What the per-schedule metrics of `party serve` report on every scrape: the read is
    /// bounded per task ([`Store::task_successes`]) however long its history, where
    /// [`Party::gaps`] reads and compares all of it.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the store cannot be read.
    pub async fn schedule_health(
        &self,
        tasks: &[TaskInfo],
    ) -> Result<Vec<ScheduleHealth>, TaskError> {
        let from = self.clock.now() - policy::MISSED_WINDOW;
        let limit = policy::MISSED_COMPARED_MAX;
        let expected: Vec<Vec<Timestamp>> = tasks
            .iter()
            .map(|t| match rule_of(t) {
                Ok(rule) => rule.occurrences_before(t.timestamp, from, limit as usize),
                Err(_) => Vec::new(),
            })
            .collect();
        let asked: Vec<(TaskId, Timestamp)> = tasks
            .iter()
            .zip(&expected)
            .map(|(t, e)| (t.id, e.first().copied().unwrap_or(t.timestamp)))
            .collect();
        let read = self
            .store
            .task_successes(SuccessParams {
                tasks: &asked,
                limit,
            })
            .await?;
        Ok(expected
            .into_iter()
            .zip(&asked)
            .zip(read)
            .map(|((expected, (_, since)), s)| health(expected, *since, limit, s))
            .collect())
    }

    /// A worker that runs this registry's handlers.
    pub fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(
            self.store.clone(),
            self.clock.clone(),
            self.registry.clone(),
            config,
        )
    }
}

/// One task's [`ScheduleHealth`]: its `expected` occurrences (oldest first, from `since`)
/// against the successful runs read for them (at most `limit`).
fn health(expected: Vec<Timestamp>, since: Timestamp, limit: u32, s: Successes) -> ScheduleHealth {
    let earliest = s.since.iter().min().copied();
    // The schedule counts from its first successful run; and where the read stopped at its
    // limit, from the earliest run it read (what came before is not known).
    let mut lower = if s.before { Some(since) } else { earliest };
    if s.since.len() >= limit as usize {
        lower = lower.max(earliest);
    }
    let ran: std::collections::HashSet<Timestamp> = s.since.iter().copied().collect();
    let compared: Vec<Timestamp> = match lower {
        Some(lower) => expected.into_iter().filter(|e| *e >= lower).collect(),
        None => Vec::new(),
    };
    ScheduleHealth {
        last_success: s.last_finished_at,
        compared: compared.len(),
        missing: compared.into_iter().filter(|e| !ran.contains(e)).collect(),
    }
}

/// A task's stored rule, or why it has none.
fn rule_of(task: &TaskInfo) -> Result<Recurrence, TaskError> {
    let id = task.id;
    let Some(stored) = &task.rule else {
        return Err(TaskError::invalid(format!(
            "task {id} has no stored recurrence rule{}; only tasks added with --every, --cron \
             or --monthly-on (or NewTask::recurrence) have occurrences to list",
            if task.is_recurring {
                ": its handler schedules each next run in on_complete"
            } else {
                " (it is a one-off task)"
            }
        )));
    };
    let rule = rules::parse(&stored.to_string()).map_err(|e| TaskError::invalid(e.to_string()))?;
    Ok(rule)
}

/// The states a bulk operation acts on: those it applies to, narrowed by the filter's state.
fn steer_states(op: Steer, filter: &SteerFilter) -> Result<Vec<State>, TaskError> {
    check_filter(
        filter.handler.as_deref(),
        filter.queue.as_deref(),
        filter.data.as_ref(),
    )?;
    if filter.state.is_none()
        && filter.handler.is_none()
        && filter.queue.is_none()
        && filter.data.is_none()
    {
        return Err(TaskError::invalid(format!(
            "refusing to {} every task: narrow it with a state, a handler, a queue or a data field",
            op.verb()
        )));
    }
    match filter.state {
        None => Ok(op.by_default().to_vec()),
        Some(s) if op.allowed().contains(&s) => Ok(vec![s]),
        Some(s) => Err(TaskError::invalid(format!(
            "cannot {} {s} tasks: only {} tasks can be; pick one of those states",
            op.verb(),
            op.allowed()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn steer_many<'a>(states: &'a [State], filter: &'a SteerFilter, now: Timestamp) -> SteerMany<'a> {
    SteerMany {
        states,
        handler: filter.handler.as_deref(),
        queue: filter.queue.as_deref(),
        data: filter.data.as_ref(),
        now,
    }
}

/// Fold the store's raw figures into [`Stats`]: every state listed (zeros included), and the
/// due tasks whose handler no live worker has registered.
fn fold_stats(raw: StoreStats) -> Stats {
    let by_state = State::ALL
        .iter()
        .map(|s| {
            let n = raw.counts.iter().filter(|c| c.1 == *s).map(|c| c.2).sum();
            (*s, n)
        })
        .collect();
    let known = |h: &str| {
        raw.workers
            .iter()
            .any(|w| w.handlers.iter().any(|k| k == h))
    };
    let unhandled = raw
        .due
        .iter()
        .filter(|(h, _, _)| !known(h))
        .map(|(handler, state, count)| HandlerCount {
            handler: handler.clone(),
            state: *state,
            count: *count,
        })
        .collect();
    Stats {
        by_state,
        by_handler: raw
            .counts
            .into_iter()
            .map(|(handler, state, count)| HandlerCount {
                handler,
                state,
                count,
            })
            .collect(),
        oldest_due: raw.oldest_due,
        finished_last_minute: raw.finished_recently,
        unhandled,
        workers: raw.workers,
        stuck_count: raw.stuck_count,
        stuck: raw
            .stuck
            .into_iter()
            .map(|t| StuckTask {
                id: t.id,
                worker: t.worker,
                lease_until: t.lease_until,
            })
            .collect(),
    }
}

/// A listing's filter with its names and data filter checked.
fn checked_listing(filter: &ListFilter) -> Result<ListFilter, TaskError> {
    check_filter(
        filter.handler.as_deref(),
        filter.queue.as_deref(),
        filter.data.as_ref(),
    )?;
    Ok(filter.clone())
}

/// The names and the data match a listing or a bulk operation filters on, checked.
fn check_filter(
    handler: Option<&str>,
    queue: Option<&str>,
    data: Option<&crate::DataMatch>,
) -> Result<(), TaskError> {
    if let Some(handler) = handler {
        validate::handler_name(handler)?;
    }
    if let Some(queue) = queue {
        validate::queue_name(queue)?;
    }
    if let Some(m) = data {
        validate::data_filter(&m.field, &m.value)?;
    }
    Ok(())
}
