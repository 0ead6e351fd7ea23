//! Test helpers for your own handlers: call a handler directly, or run a whole store on a
//! manual clock, as production would, in milliseconds.
//!
//! Two levels:
//!
//! - [`call`] runs one handler's `run` and then `on_complete` with a context you build with
//!   [`context`], and returns what the handler scheduled ([`Called`]): no store, no worker.
//! - [`TestParty`] is a real store in a temporary SQLite file, a [`ManualClock`] and your
//!   registry. [`TestParty::drain`] runs everything due now and returns what ran;
//!   [`TestParty::advance`] moves time forward step by step so recurring tasks fire as they
//!   would in production (thirty days of them in a test that takes milliseconds). The
//!   assertions ([`TestParty::assert_added`], [`TestParty::assert_scheduled`],
//!   [`TestParty::assert_nothing_added`]) say what they looked for and what they found.
//!
//! # Example
//! ```
//! use party::jiff::SignedDuration;
//! use party::testing::{TestParty, call, context};
//! use party::{NewTask, Registry, Task, TaskContext, TaskError, serde_json::json};
//!
//! struct Bill;
//!
//! impl Task for Bill {
//!     const NAME: &'static str = "bill";
//!     const IS_RECURRING: bool = true;
//!
//!     async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
//!         ctx.enqueue(NewTask::new("receipt").data(ctx.data().clone()));
//!         Ok(())
//!     }
//!
//!     async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
//!         ctx.schedule_next_run_at(ctx.timestamp() + SignedDuration::from_hours(30 * 24))
//!     }
//! }
//!
//! # struct Receipt;
//! # impl Task for Receipt {
//! #     const NAME: &'static str = "receipt";
//! #     async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), TaskError> {
//! // One call, no store:
//! let mut ctx = context("bill").data(json!({"customer": "acme"})).recurring(true).build();
//! let called = call(&Bill, &mut ctx).await?;
//! assert_eq!(called.next_run, Some(ctx.timestamp() + SignedDuration::from_hours(720)));
//! assert_eq!(called.enqueued[0].handler, "receipt");
//!
//! // A store on a manual clock: ninety days in three steps of thirty.
//! let t = TestParty::new(Registry::new().register(Bill).register(Receipt)).await?;
//! t.add(NewTask::new("bill").data(json!({"customer": "acme"}))).await?;
//! let ran = t.advance(SignedDuration::from_hours(90 * 24)).await?;
//! assert_eq!(ran.iter().filter(|r| r.handler == "bill").count(), 4);
//! t.assert_added("receipt", json!({"customer": "acme"})).await;
//! t.assert_scheduled("bill", 1).await;
//! # Ok(()) }
//! ```

#[cfg(feature = "sqlite")]
use std::path::PathBuf;
#[cfg(feature = "sqlite")]
use std::sync::Arc;

#[cfg(feature = "sqlite")]
use jiff::SignedDuration;
use jiff::Timestamp;
use serde_json::Value;

#[cfg(feature = "sqlite")]
use crate::Party;
#[cfg(feature = "sqlite")]
use crate::clock::ManualClock;
#[cfg(feature = "sqlite")]
use crate::model::{ListFilter, State, TaskInfo};
use crate::model::{NewTask, Outcome};
#[cfg(feature = "sqlite")]
use crate::task::Registry;
use crate::task::{Task, TaskContext};
#[cfg(feature = "sqlite")]
use crate::worker::WorkerConfig;
use crate::{TaskError, TaskId};

/// The instant a [`TestParty`] and a [`context`] start at unless told otherwise:
/// 2030-01-01T09:00:00Z.
pub fn start() -> Timestamp {
    Timestamp::from_second(1_893_488_400).expect("a valid instant")
}

/// Build a [`TaskContext`] for [`call`]: the handler name, then the attributes the task would
/// have (defaults: empty data, timestamp and now at [`start`], attempt 1, not recurring, never
/// run before).
pub fn context(handler: &str) -> ContextBuilder {
    ContextBuilder {
        ctx: TaskContext::for_test(handler, Value::Object(Default::default()), start()),
    }
}

/// Builds a [`TaskContext`]; made by [`context`].
#[derive(Debug)]
pub struct ContextBuilder {
    ctx: TaskContext,
}

impl ContextBuilder {
    /// The task's data (a JSON object).
    pub fn data(mut self, data: Value) -> ContextBuilder {
        self.ctx.data = data;
        self
    }

    /// The occurrence's scheduled instant; `now` follows it unless set.
    pub fn timestamp(mut self, t: Timestamp) -> ContextBuilder {
        if self.ctx.now == self.ctx.timestamp {
            self.ctx.now = t;
        }
        self.ctx.timestamp = t;
        self
    }

    /// When the attempt starts (what `schedule_next_run_in_minutes` counts from).
    pub fn now(mut self, t: Timestamp) -> ContextBuilder {
        self.ctx.now = t;
        self
    }

    /// The attempt number (1 for the first).
    pub fn attempts(mut self, n: u32) -> ContextBuilder {
        self.ctx.attempts = n;
        self
    }

    /// When the previous occurrence ran.
    pub fn last_run_on(mut self, t: Timestamp) -> ContextBuilder {
        self.ctx.last_run_on = Some(t);
        self
    }

    /// Whether the task recurs (required for `schedule_next_run_*`).
    pub fn recurring(mut self, yes: bool) -> ContextBuilder {
        self.ctx.is_recurring = yes;
        self
    }

    /// The task was cancelled while it runs: [`TaskContext::is_cancelled`] is true and
    /// [`TaskContext::cancelled`] completes at once, so a test sees how the handler stops.
    pub fn cancelled(self) -> ContextBuilder {
        self.ctx.cancel.advance(crate::task::CancelStage::Requested);
        self
    }

    /// The context.
    pub fn build(self) -> TaskContext {
        self.ctx
    }
}

/// What one direct call of a handler scheduled.
#[derive(Debug, Clone)]
pub struct Called {
    /// The next run it scheduled in `run` or `on_complete`, if any.
    pub next_run: Option<Timestamp>,
    /// The follow-up tasks it enqueued.
    pub enqueued: Vec<NewTask>,
}

/// Run `task`'s `run` and, if it succeeds, its `on_complete`, with `ctx`; return what they
/// scheduled. The first error is returned as the handler returned it.
///
/// # Errors
/// The handler's own error from `run` or `on_complete`.
pub async fn call<T: Task>(task: &T, ctx: &mut TaskContext) -> Result<Called, TaskError> {
    task.run(ctx).await?;
    task.on_complete(ctx).await?;
    Ok(Called {
        next_run: ctx.next_run,
        enqueued: ctx.follow_ups.clone(),
    })
}

/// One attempt that ran during [`TestParty::drain`] or [`TestParty::advance`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// The task.
    pub id: TaskId,
    /// Its handler.
    pub handler: String,
    /// Its data.
    pub data: Value,
    /// The occurrence the attempt ran for.
    pub timestamp: Timestamp,
    /// The attempt number.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The error of a failed attempt.
    pub error: Option<String>,
}

/// A real store in a temporary SQLite file, on a [`ManualClock`], with your registry. Needs the
/// `sqlite` feature.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub struct TestParty {
    party: Party,
    clock: ManualClock,
    queues: Vec<String>,
    path: PathBuf,
}

#[cfg(feature = "sqlite")]
impl Drop for TestParty {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// Tasks listed at most, when the helpers look through a store.
#[cfg(feature = "sqlite")]
const LOOK_AT: u32 = 1_000_000;

#[cfg(feature = "sqlite")]
impl TestParty {
    /// A fresh store with `registry`, its clock at [`start`].
    ///
    /// # Errors
    /// [`TaskError::Store`] when the temporary file cannot be created.
    pub async fn new(registry: Registry) -> Result<TestParty, TaskError> {
        TestParty::starting_at(registry, start()).await
    }

    /// A fresh store with `registry`, its clock at `t`.
    ///
    /// # Errors
    /// As [`TestParty::new`].
    pub async fn starting_at(registry: Registry, t: Timestamp) -> Result<TestParty, TaskError> {
        use std::hash::{BuildHasher, RandomState};
        let path = std::env::temp_dir().join(format!(
            "party-testing-{}-{:016x}.db",
            std::process::id(),
            RandomState::new().hash_one(std::time::SystemTime::now())
        ));
        let store = crate::open_store(&path.display().to_string()).await?;
        let clock = ManualClock::new(t);
        let party = Party::with_store(store, registry).with_clock(Arc::new(clock.clone()));
        Ok(TestParty {
            party,
            clock,
            queues: vec![crate::DEFAULT_QUEUE.to_string()],
            path,
        })
    }

    /// Also run tasks of these queues (the default queue is always run).
    pub fn with_queues(mut self, queues: &[&str]) -> TestParty {
        self.queues.extend(queues.iter().map(|q| q.to_string()));
        self
    }

    /// The [`Party`] over the store, for anything the helpers do not cover.
    pub fn party(&self) -> &Party {
        &self.party
    }

    /// The clock the store and its workers read.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The current time by the manual clock.
    pub fn now(&self) -> Timestamp {
        crate::Clock::now(&self.clock)
    }

    /// Add a task.
    ///
    /// # Errors
    /// As [`Party::add`].
    pub async fn add(&self, task: NewTask) -> Result<TaskId, TaskError> {
        self.party.add(task).await
    }

    /// Every task, with its run history.
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn tasks(&self) -> Result<Vec<TaskInfo>, TaskError> {
        let listed = self
            .party
            .list(&ListFilter {
                limit: Some(LOOK_AT),
                ..Default::default()
            })
            .await?;
        let mut out = Vec::with_capacity(listed.len());
        for t in listed {
            out.push(self.party.get(t.id).await?);
        }
        Ok(out)
    }

    /// Run everything due now (and whatever that makes due now: follow-ups, retries without
    /// backoff) until nothing is; return the attempts that ran, in the order they finished.
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn drain(&self) -> Result<Vec<Ran>, TaskError> {
        let before = self.run_counts().await?;
        self.party
            .worker(WorkerConfig {
                queues: self.queues.clone(),
                concurrency: 1,
                id: Some("test-worker".into()),
                // A test's history stays however far its clock is moved.
                retention: crate::policy::Retention::forever(),
                ..Default::default()
            })
            .run_until_idle()
            .await?;
        let mut ran = Vec::new();
        for t in self.tasks().await? {
            let seen = before.iter().find(|(id, _)| *id == t.id).map_or(0, |b| b.1);
            for r in t.runs.iter().skip(seen) {
                ran.push((
                    r.finished_at,
                    Ran {
                        id: t.id,
                        handler: t.handler.clone(),
                        data: t.data.clone(),
                        timestamp: r.timestamp,
                        attempt: r.attempt,
                        outcome: r.outcome,
                        error: r.error.clone(),
                    },
                ));
            }
        }
        ran.sort_by_key(|(at, r)| (*at, r.id));
        Ok(ran.into_iter().map(|(_, r)| r).collect())
    }

    /// Move the clock forward by `by`, stopping at each instant a task falls due on the way
    /// and draining there, so each occurrence runs at its own time; ends at now + `by` with a
    /// last drain. Returns every attempt that ran, in order.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] for a negative duration; [`TaskError::Store`].
    pub async fn advance(&self, by: SignedDuration) -> Result<Vec<Ran>, TaskError> {
        if by.is_negative() {
            return Err(TaskError::invalid(
                "advance takes a positive duration: a manual clock does not go back",
            ));
        }
        let until = self.now().saturating_add(by).map_err(TaskError::invalid)?;
        let mut ran = self.drain().await?;
        loop {
            let handlers = self.party.registry().names();
            let next = self
                .party
                .store()
                .task_next_due(&handlers, &self.queues)
                .await?;
            let Some(t) = next.filter(|t| *t <= until) else {
                break;
            };
            if t > self.now() {
                self.clock.set(t);
            }
            let step = self.drain().await?;
            if step.is_empty() {
                // Due but nothing ran (e.g. its occurrence was skipped by its rule and the next
                // one is later): look again only if the next due time moved on.
                let again = self
                    .party
                    .store()
                    .task_next_due(&handlers, &self.queues)
                    .await?;
                if again == next {
                    break;
                }
            }
            ran.extend(step);
        }
        self.clock.set(until.max(self.now()));
        ran.extend(self.drain().await?);
        Ok(ran)
    }

    async fn run_counts(&self) -> Result<Vec<(TaskId, usize)>, TaskError> {
        Ok(self
            .tasks()
            .await?
            .into_iter()
            .map(|t| (t.id, t.runs.len()))
            .collect())
    }

    /// Tasks of `handler` whose data contains every field of `subset` (recursively; arrays
    /// and other values compare equal).
    ///
    /// # Errors
    /// [`TaskError::Store`].
    pub async fn find(&self, handler: &str, subset: &Value) -> Result<Vec<TaskInfo>, TaskError> {
        Ok(self
            .tasks()
            .await?
            .into_iter()
            .filter(|t| t.handler == handler && contains(&t.data, subset))
            .collect())
    }

    /// Panic unless a task of `handler` whose data contains `subset` exists (in any state).
    pub async fn assert_added(&self, handler: &str, subset: Value) {
        let found = self
            .find(handler, &subset)
            .await
            .expect("reading the store");
        if found.is_empty() {
            let all = self.tasks().await.expect("reading the store");
            let of_handler: Vec<&Value> = all
                .iter()
                .filter(|t| t.handler == handler)
                .map(|t| &t.data)
                .collect();
            panic!(
                "expected a '{handler}' task with data containing {subset}; \
                 the '{handler}' tasks have data {of_handler:?}"
            );
        }
    }

    /// Panic unless exactly `n` tasks of `handler` are waiting to run (scheduled or retrying).
    pub async fn assert_scheduled(&self, handler: &str, n: usize) {
        let all = self.tasks().await.expect("reading the store");
        let waiting: Vec<&TaskInfo> = all
            .iter()
            .filter(|t| {
                t.handler == handler && matches!(t.state, State::Scheduled | State::Retrying)
            })
            .collect();
        assert_eq!(
            waiting.len(),
            n,
            "expected {n} scheduled '{handler}' task(s), found {}: {:?}",
            waiting.len(),
            waiting
                .iter()
                .map(|t| (t.id, crate::format_time(t.timestamp)))
                .collect::<Vec<_>>()
        );
    }

    /// Panic if the store holds any task at all.
    pub async fn assert_nothing_added(&self) {
        let all = self.tasks().await.expect("reading the store");
        assert!(
            all.is_empty(),
            "expected no tasks, found {}: {:?}",
            all.len(),
            all.iter()
                .map(|t| (t.handler.as_str(), &t.data))
                .collect::<Vec<_>>()
        );
    }
}

/// Whether `data` contains every field of `subset`.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
fn contains(data: &Value, subset: &Value) -> bool {
    match (data, subset) {
        (Value::Object(d), Value::Object(s)) => s
            .iter()
            .all(|(k, v)| d.get(k).is_some_and(|dv| contains(dv, v))),
        (d, s) => d == s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contains_matches_nested_subsets_only() {
        let data = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        assert!(contains(&data, &json!({})));
        assert!(contains(&data, &json!({"a": 1})));
        assert!(contains(&data, &json!({"b": {"c": 2}})));
        assert!(contains(&data, &json!({"e": [1, 2]})));
        assert!(!contains(&data, &json!({"a": 2})));
        assert!(!contains(&data, &json!({"b": {"c": 3}})));
        assert!(!contains(&data, &json!({"e": [1]})));
        assert!(!contains(&data, &json!({"z": null})));
    }
}
