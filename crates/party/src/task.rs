//! Handlers: the [`Task`] trait a user implements, the [`TaskContext`] each attempt gets, and
//! the [`Registry`] that maps stable names to handlers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::model::{DEFAULT_MAX_ATTEMPTS, NewTask};
use crate::{TaskError, TaskId, clock::format_time};

/// How long one attempt may run unless the handler says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A task handler. Implement `run`; override `on_complete` to schedule the next run of a
/// recurring task or follow-up tasks.
///
/// Write both as plain `async fn` in your `impl`; no macro is needed. The futures they return
/// must be `Send` (they run on a multi-threaded runtime), so do not hold a non-`Send` value,
/// such as an `Rc` or a `std::sync::MutexGuard`, across an `.await`.
///
/// # Example
/// ```
/// use party::{Task, TaskContext, TaskError};
///
/// struct SampleTask;
///
/// impl Task for SampleTask {
///     const NAME: &'static str = "sample";
///
///     async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
///         println!("{:?}", ctx.data().get("arg1"));
///         println!("attempt {} of {} scheduled for {}", ctx.attempts(), ctx.id(), ctx.timestamp());
///         Ok(())
///     }
/// }
/// ```
pub trait Task: Send + Sync + 'static {
    /// The stable name tasks are stored under. Renaming it orphans existing tasks.
    const NAME: &'static str;
    /// Whether tasks of this handler recur; recurring tasks obey the singleton rule.
    const IS_RECURRING: bool = false;
    /// Attempts per occurrence before the task is `dead` (a task may override it). Read as
    /// at least 1 and at most [`crate::validate::MAX_ATTEMPTS`].
    const MAX_ATTEMPTS: u32 = DEFAULT_MAX_ATTEMPTS;
    /// How long one attempt may run before it counts as timed out.
    const TIMEOUT: Duration = DEFAULT_TIMEOUT;
    /// Data fields that readers must not see: `party serve` shows `"[redacted]"` instead of
    /// their values in every API answer and dashboard page, as with its `--redact` option.
    /// Each is a field of the data, or `FIELD.INNER` for a field of a nested object (for
    /// example `&["card", "payment.token"]`). The handler still gets them; the store keeps
    /// them.
    const REDACT: &'static [&'static str] = &[];

    /// The work. An `Err` or a panic is a failed attempt. Implement it as
    /// `async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError>`.
    fn run(&self, ctx: &mut TaskContext) -> impl Future<Output = Result<(), TaskError>> + Send;

    /// Called after a successful `run`. A recurring task calls
    /// [`TaskContext::schedule_next_run_at`] or [`TaskContext::schedule_next_run_in_minutes`]
    /// here; one that schedules nothing is done. Implement it as
    /// `async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError>`.
    fn on_complete(
        &self,
        _ctx: &mut TaskContext,
    ) -> impl Future<Output = Result<(), TaskError>> + Send {
        async { Ok(()) }
    }

    /// The wait before attempt `attempt + 1` after attempt `attempt` failed. A negative wait
    /// is read as none.
    fn backoff(&self, attempt: u32) -> SignedDuration {
        default_backoff(attempt)
    }

    /// Check a new task's data (a JSON object) when the task is added, before anything is
    /// written: an `Err` refuses the task with [`TaskError::Invalid`] carrying its message, so
    /// bad data is caught by `add`, not by every attempt. Say which field is wrong and what it
    /// should be. The default accepts any object.
    ///
    /// # Example
    /// ```
    /// use party::serde_json::Value;
    /// use party::{Task, TaskContext, TaskError};
    ///
    /// struct Invoice;
    ///
    /// impl Task for Invoice {
    ///     const NAME: &'static str = "invoice";
    ///
    ///     async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
    ///         Ok(())
    ///     }
    ///
    ///     fn check(&self, data: &Value) -> Result<(), String> {
    ///         match data.get("customer") {
    ///             Some(Value::String(c)) if !c.is_empty() => Ok(()),
    ///             _ => Err("\"customer\" must be a non-empty string".to_string()),
    ///         }
    ///     }
    /// }
    /// ```
    fn check(&self, data: &Value) -> Result<(), String> {
        let _ = data;
        Ok(())
    }
}

/// Exponential backoff with jitter: about 2 s after the first failure, doubling each time,
/// capped at one hour, each wait randomly between 75% and 125% of its nominal value.
pub fn default_backoff(attempt: u32) -> SignedDuration {
    let nominal = 2f64 * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = nominal.min(3600.0);
    SignedDuration::from_secs_f64(capped * (0.75 + fastrand::f64() * 0.5))
}

/// What one attempt knows about its task, and the way to schedule what comes next.
#[derive(Debug)]
pub struct TaskContext {
    pub(crate) id: TaskId,
    pub(crate) handler: String,
    pub(crate) data: Value,
    pub(crate) timestamp: Timestamp,
    pub(crate) last_run_on: Option<Timestamp>,
    pub(crate) attempts: u32,
    pub(crate) is_recurring: bool,
    pub(crate) now: Timestamp,
    pub(crate) worker: String,
    pub(crate) next_run: Option<Timestamp>,
    pub(crate) follow_ups: Vec<NewTask>,
    pub(crate) cancel: Cancel,
}

/// A running attempt's cancellation, shared by the worker and the attempt's [`TaskContext`]:
/// first requested (the handler may stop on its own), then, after the worker's grace,
/// enforced (the attempt is dropped).
#[derive(Debug, Clone)]
pub(crate) struct Cancel(Arc<watch::Sender<CancelStage>>);

/// How far a cancellation has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CancelStage {
    /// Nobody asked.
    None,
    /// A person asked; the handler sees it.
    Requested,
    /// The grace is over: the attempt is dropped.
    Enforced,
}

impl Default for Cancel {
    fn default() -> Cancel {
        Cancel(Arc::new(watch::channel(CancelStage::None).0))
    }
}

impl Cancel {
    /// Move to `stage` (never back).
    pub(crate) fn advance(&self, stage: CancelStage) {
        self.0.send_if_modified(|s| {
            let moved = stage > *s;
            if moved {
                *s = stage;
            }
            moved
        });
    }

    /// How far it has gone.
    pub(crate) fn stage(&self) -> CancelStage {
        *self.0.borrow()
    }

    /// Completes once the cancellation reaches `stage`.
    pub(crate) async fn reached(&self, stage: CancelStage) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|s| *s >= stage).await;
    }
}

impl TaskContext {
    /// A context for calling a handler directly, e.g. in a unit test of the handler.
    pub fn for_test(handler: &str, data: Value, timestamp: Timestamp) -> TaskContext {
        TaskContext {
            id: TaskId::generate(timestamp),
            handler: handler.to_string(),
            data,
            timestamp,
            last_run_on: None,
            attempts: 1,
            is_recurring: false,
            now: timestamp,
            worker: "test".to_string(),
            next_run: None,
            follow_ups: Vec::new(),
            cancel: Cancel::default(),
        }
    }

    /// The task's id (24 hex characters).
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The handler name.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The instant this occurrence was scheduled for: unchanged across retries and late starts.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// When the previous occurrence ran; `Some` only for recurring tasks that ran before.
    pub fn last_run_on(&self) -> Option<Timestamp> {
        self.last_run_on
    }

    /// 1 on the first execution of this occurrence, +1 after each failed attempt.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the task recurs.
    pub fn is_recurring(&self) -> bool {
        self.is_recurring
    }

    /// The data object given at creation.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// The data read as a typed struct.
    ///
    /// # Errors
    /// [`TaskError::Failed`] naming the mismatch when the data does not fit `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        T::deserialize(&self.data).map_err(|e| {
            TaskError::failed(format!(
                "data of task {} does not fit the handler's type: {e}",
                self.id
            ))
        })
    }

    /// The id of the worker running this attempt.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// When this attempt started, by the worker's clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Whether a person cancelled this task while it runs (`party cancel ID`, or
    /// [`crate::Party::cancel`]). A handler doing long work checks it between steps and
    /// returns early; the worker drops the attempt anyway once its grace period (`--grace`,
    /// [`crate::WorkerConfig::shutdown_grace`]) has passed. Either way the run is recorded as
    /// `cancelled` and the task is cancelled: it is not retried, and a recurring task is not
    /// rescheduled. The worker learns of a cancellation within about a second.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.stage() >= CancelStage::Requested
    }

    /// Completes when this task is cancelled while it runs (see
    /// [`TaskContext::is_cancelled`]); never, if it is not.
    ///
    /// ```no_run
    /// # use party::{TaskContext, TaskError};
    /// # async fn export_rows(_ctx: &TaskContext) -> Result<(), TaskError> { Ok(()) }
    /// # async fn run(ctx: &mut TaskContext) -> Result<(), TaskError> {
    /// tokio::select! {
    ///     done = export_rows(ctx) => done,
    ///     () = ctx.cancelled() => {
    ///         // Clean up what the export left half done, then end the attempt.
    ///         Err(TaskError::failed("cancelled"))
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.reached(CancelStage::Requested).await;
    }

    /// A key unique to this occurrence (task id + scheduled timestamp), stable across retries:
    /// pass it to payment providers and the like as an idempotency key.
    pub fn occurrence_key(&self) -> String {
        format!("{}@{}", self.id, format_time(self.timestamp))
    }

    /// Schedule the next run at exactly `t`, e.g. `ctx.timestamp() + 30 days`: drift-free.
    ///
    /// # Errors
    /// [`TaskError::Schedule`] when `t` is not strictly later than [`TaskContext::timestamp`]
    /// (that would loop), or when the task is not recurring. Nothing is scheduled then.
    pub fn schedule_next_run_at(&mut self, t: Timestamp) -> Result<(), TaskError> {
        if !self.is_recurring {
            return Err(TaskError::Schedule(format!(
                "task {} ('{}') is not recurring, so it cannot schedule a next run; \
                 set IS_RECURRING = true on the handler, or enqueue a new task instead",
                self.id, self.handler
            )));
        }
        if t <= self.timestamp {
            return Err(TaskError::Schedule(format!(
                "schedule_next_run refused for task {} ('{}'): the next run {} is not after the \
                 current timestamp {}; it would run the same occurrence again. Pass a later time",
                self.id,
                self.handler,
                format_time(t),
                format_time(self.timestamp)
            )));
        }
        self.next_run = Some(t);
        Ok(())
    }

    /// Schedule the next run `minutes` minutes from now (the seed's `schedule_next_run(minutes=N)`).
    ///
    /// # Errors
    /// As [`TaskContext::schedule_next_run_at`]; `minutes` must be positive.
    pub fn schedule_next_run_in_minutes(&mut self, minutes: i64) -> Result<(), TaskError> {
        let after = SignedDuration::try_from_mins(minutes).ok_or_else(|| {
            TaskError::Schedule(format!(
                "{minutes} minutes from now is beyond any time party can store"
            ))
        })?;
        self.schedule_next_run_in(after)
    }

    /// Schedule the next run `after` from now.
    ///
    /// # Errors
    /// As [`TaskContext::schedule_next_run_at`]; `after` must be positive.
    pub fn schedule_next_run_in(&mut self, after: SignedDuration) -> Result<(), TaskError> {
        if !after.is_positive() {
            return Err(TaskError::Schedule(format!(
                "schedule_next_run refused for task {}: the delay {after:#} is not positive",
                self.id
            )));
        }
        let t = self
            .now
            .checked_add(after)
            .map_err(|e| TaskError::Schedule(format!("next run out of range: {e}")))?;
        self.schedule_next_run_at(t)
    }

    /// The follow-up tasks enqueued so far in this attempt.
    pub fn enqueued(&self) -> &[NewTask] {
        &self.follow_ups
    }

    /// The next run scheduled so far in this attempt, if any.
    pub fn next_run(&self) -> Option<Timestamp> {
        self.next_run
    }

    /// Create a follow-up task; it is inserted together with this attempt's completion, so it
    /// exists if and only if the completion is recorded.
    pub fn enqueue(&mut self, task: NewTask) {
        self.follow_ups.push(task);
    }
}

/// A boxed future borrowing the handler and the context: how the erased [`Handler`] returns
/// what a [`Task`]'s `async fn` returns.
pub(crate) type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send + 'a>>;

/// The object-safe face of a [`Task`], used by the registry and the runtime.
pub(crate) trait Handler: Send + Sync {
    fn is_recurring(&self) -> bool;
    fn max_attempts(&self) -> u32;
    fn timeout(&self) -> Duration;
    fn redact(&self) -> &'static [&'static str];
    fn backoff(&self, attempt: u32) -> SignedDuration;
    fn check(&self, data: &Value) -> Result<(), String>;
    fn run<'a>(&'a self, ctx: &'a mut TaskContext) -> HandlerFuture<'a>;
    fn on_complete<'a>(&'a self, ctx: &'a mut TaskContext) -> HandlerFuture<'a>;
}

struct Erased<T>(T);

impl<T: Task> Handler for Erased<T> {
    fn is_recurring(&self) -> bool {
        T::IS_RECURRING
    }
    fn max_attempts(&self) -> u32 {
        T::MAX_ATTEMPTS
    }
    fn timeout(&self) -> Duration {
        T::TIMEOUT
    }
    fn redact(&self) -> &'static [&'static str] {
        T::REDACT
    }
    fn backoff(&self, attempt: u32) -> SignedDuration {
        self.0.backoff(attempt)
    }
    fn check(&self, data: &Value) -> Result<(), String> {
        self.0.check(data)
    }
    fn run<'a>(&'a self, ctx: &'a mut TaskContext) -> HandlerFuture<'a> {
        Box::pin(self.0.run(ctx))
    }
    fn on_complete<'a>(&'a self, ctx: &'a mut TaskContext) -> HandlerFuture<'a> {
        Box::pin(self.0.on_complete(ctx))
    }
}

/// Maps stable handler names to handlers. Cloning is cheap (shared).
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Register `task` under `T::NAME`, replacing any handler of that name.
    pub fn register<T: Task>(mut self, task: T) -> Registry {
        self.handlers
            .insert(T::NAME.to_string(), Arc::new(Erased(task)));
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Whether the handler `name` is registered as recurring.
    pub fn is_recurring(&self, name: &str) -> Option<bool> {
        self.handlers.get(name).map(|h| h.is_recurring())
    }

    /// The data fields each handler hides from readers ([`Task::REDACT`]), for handlers that
    /// declare any, by name.
    pub fn redactions(&self) -> Vec<(String, &'static [&'static str])> {
        self.handlers
            .iter()
            .map(|(name, h)| (name.clone(), h.redact()))
            .filter(|(_, fields)| !fields.is_empty())
            .collect()
    }

    /// Run the check the handler `name` declares ([`Task::check`]) on a new task's data; an
    /// unknown handler has nothing to check.
    pub(crate) fn check(&self, name: &str, data: &Value) -> Result<(), TaskError> {
        match self.handlers.get(name).map(|h| h.check(data)) {
            Some(Err(why)) => Err(TaskError::invalid(format!(
                "the data does not fit handler '{name}': {why}"
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(name)
    }

    /// Merge another registry's handlers into this one (theirs win on equal names).
    pub fn merge(mut self, other: Registry) -> Registry {
        self.handlers.extend(other.handlers);
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Plain;

    impl Task for Plain {
        const NAME: &'static str = "plain";

        async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
            Ok(())
        }
    }

    struct Other;

    impl Task for Other {
        const NAME: &'static str = "other";
        const IS_RECURRING: bool = true;
        const MAX_ATTEMPTS: u32 = 2;
        const TIMEOUT: Duration = Duration::from_secs(7);

        async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
            Err(TaskError::failed("other"))
        }
    }

    fn t0() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn each_wait_of_the_default_backoff_is_within_a_quarter_of_its_nominal_value() {
        // Nominal: 2 s after the first failure, doubling, at most one hour.
        let nominal = |attempt: u32| -> f64 {
            match attempt {
                0 | 1 => 2.0,
                n => (2.0 * 2f64.powi((n - 1).min(30) as i32)).min(3600.0),
            }
        };
        assert_eq!(
            (1..=13).map(nominal).collect::<Vec<_>>(),
            [
                2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 3600.0,
                3600.0
            ]
        );
        for attempt in [0, 1, 2, 3, 4, 5, 8, 11, 12, 13, 21, 22, 40, u32::MAX] {
            let n = nominal(attempt);
            let (mut lo, mut hi) = (f64::MAX, f64::MIN);
            for _ in 0..2000 {
                let wait = default_backoff(attempt).as_secs_f64();
                assert!(
                    wait >= 0.75 * n - 1e-6 && wait <= 1.25 * n + 1e-6,
                    "attempt {attempt}: {wait} s is outside 75%..125% of {n} s"
                );
                lo = lo.min(wait);
                hi = hi.max(wait);
            }
            // The jitter spreads over the whole band, both sides of the nominal value.
            assert!(lo < 0.8 * n, "attempt {attempt}: lowest {lo} of {n}");
            assert!(hi > 1.2 * n, "attempt {attempt}: highest {hi} of {n}");
        }
        // The trait's default is this function.
        let waits: Vec<f64> = (0..200).map(|_| Plain.backoff(3).as_secs_f64()).collect();
        assert!(waits.iter().all(|w| (6.0..=10.0).contains(w)), "{waits:?}");
    }

    #[test]
    fn handler_defaults_and_overrides_reach_the_registry() {
        assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(30 * 60));
        let r = Registry::new().register(Plain).register(Other);
        let plain = r.get("plain").unwrap();
        assert_eq!(plain.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(plain.max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert!(!plain.is_recurring());
        assert_eq!(plain.check(&json!({ "any": "thing" })), Ok(()));
        let other = r.get("other").unwrap();
        assert_eq!(other.timeout(), Duration::from_secs(7));
        assert_eq!(other.max_attempts(), 2);
        assert!(other.is_recurring());
        assert_eq!(r.is_recurring("other"), Some(true));
        assert_eq!(r.is_recurring("plain"), Some(false));
        assert_eq!(r.is_recurring("nope"), None);
    }

    #[test]
    fn the_registry_runs_the_handlers_data_check() {
        struct Picky;
        impl Task for Picky {
            const NAME: &'static str = "picky";
            async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
                Ok(())
            }
            fn check(&self, data: &Value) -> Result<(), String> {
                match data.get("n") {
                    Some(n) if n.is_u64() => Ok(()),
                    _ => Err("\"n\" must be a whole number".to_string()),
                }
            }
        }
        let r = Registry::new().register(Picky).register(Plain);
        assert!(r.check("picky", &json!({ "n": 1 })).is_ok());
        let err = r.check("picky", &json!({ "n": "1" })).unwrap_err();
        assert!(matches!(err, TaskError::Invalid(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the data does not fit handler 'picky': \"n\" must be a whole number"
        );
        assert!(r.check("plain", &json!({ "n": "1" })).is_ok());
        assert!(r.check("unknown", &json!({})).is_ok(), "nothing to check");
    }

    #[test]
    fn the_registry_knows_its_names_and_merges_with_theirs_winning() {
        let mine = Registry::new().register(Plain);
        assert!(mine.contains("plain"));
        assert!(!mine.contains("other"));
        assert!(!mine.contains(""));
        assert_eq!(mine.names(), ["plain"]);
        assert_eq!(format!("{mine:?}"), "[\"plain\"]");

        let merged = mine.merge(Registry::new().register(Other));
        assert_eq!(merged.names(), ["other", "plain"]);
        assert!(merged.contains("other") && merged.contains("plain"));

        // On equal names the merged-in registry wins.
        struct PlainRecurring;
        impl Task for PlainRecurring {
            const NAME: &'static str = "plain";
            const IS_RECURRING: bool = true;
            async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
                Ok(())
            }
        }
        let theirs = Registry::new().register(PlainRecurring);
        assert_eq!(
            merged.clone().merge(theirs).is_recurring("plain"),
            Some(true)
        );
        assert_eq!(
            Registry::new()
                .register(PlainRecurring)
                .merge(merged)
                .is_recurring("plain"),
            Some(false)
        );
    }

    #[tokio::test]
    async fn the_erased_handler_runs_the_tasks_own_methods() {
        let r = Registry::new().register(Plain).register(Other);
        let mut ctx = TaskContext::for_test("plain", json!({}), t0());
        r.get("plain").unwrap().run(&mut ctx).await.unwrap();
        r.get("plain").unwrap().on_complete(&mut ctx).await.unwrap();
        let err = r.get("other").unwrap().run(&mut ctx).await.unwrap_err();
        assert_eq!(err.to_string(), "other");
    }

    #[test]
    fn the_context_reports_what_it_was_given() {
        let data = json!({ "n": 1 });
        let mut ctx = TaskContext::for_test("plain", data.clone(), t0());
        assert_eq!(ctx.handler(), "plain");
        assert_eq!(ctx.worker(), "test");
        assert_eq!(ctx.data(), &data);
        assert_eq!(ctx.timestamp(), t0());
        assert_eq!(ctx.now(), t0());
        assert_eq!(ctx.attempts(), 1);
        assert_eq!(ctx.last_run_on(), None);
        assert!(!ctx.is_recurring());
        assert_eq!(ctx.id().created_second(), t0().as_second());
        assert_eq!(
            ctx.occurrence_key(),
            format!("{}@2030-01-01T00:00:00.000000Z", ctx.id())
        );
        assert_eq!(ctx.next_run(), None);
        assert!(
            ctx.schedule_next_run_in_minutes(5).is_err(),
            "not recurring"
        );
        assert_eq!(ctx.next_run(), None);

        ctx.is_recurring = true;
        let later = t0() + SignedDuration::from_hours(1);
        ctx.schedule_next_run_at(later).unwrap();
        assert_eq!(ctx.next_run(), Some(later));
        assert!(
            ctx.schedule_next_run_at(t0()).is_err(),
            "not after the timestamp"
        );
        assert_eq!(
            ctx.next_run(),
            Some(later),
            "a refused schedule changes nothing"
        );
        ctx.schedule_next_run_in_minutes(30).unwrap();
        assert_eq!(ctx.next_run(), Some(t0() + SignedDuration::from_mins(30)));
        assert!(ctx.schedule_next_run_in(SignedDuration::ZERO).is_err());
        assert!(ctx.schedule_next_run_in_minutes(-1).is_err());
        assert_eq!(ctx.next_run(), Some(t0() + SignedDuration::from_mins(30)));
    }

    /// Whether the future completes at its first poll.
    fn ready_at_once<F: Future>(f: F) -> bool {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_cancellation_only_moves_forward_and_the_handler_sees_it() {
        let ctx = TaskContext::for_test("plain", json!({}), t0());
        assert!(!ctx.is_cancelled());
        assert!(!ready_at_once(ctx.cancelled()), "nobody asked");
        assert!(!ready_at_once(ctx.cancel.reached(CancelStage::Requested)));

        ctx.cancel.advance(CancelStage::Requested);
        assert_eq!(ctx.cancel.stage(), CancelStage::Requested);
        assert!(ctx.is_cancelled());
        assert!(ready_at_once(ctx.cancelled()));
        assert!(ready_at_once(ctx.cancel.reached(CancelStage::Requested)));
        assert!(!ready_at_once(ctx.cancel.reached(CancelStage::Enforced)));

        ctx.cancel.advance(CancelStage::Enforced);
        assert_eq!(ctx.cancel.stage(), CancelStage::Enforced);
        assert!(ctx.is_cancelled());
        assert!(ready_at_once(ctx.cancel.reached(CancelStage::Enforced)));
        ctx.cancel.advance(CancelStage::Requested);
        assert_eq!(ctx.cancel.stage(), CancelStage::Enforced, "never back");
        ctx.cancel.advance(CancelStage::None);
        assert_eq!(ctx.cancel.stage(), CancelStage::Enforced, "never back");
    }

    #[test]
    fn a_waiting_handler_wakes_when_the_task_is_cancelled() {
        let ctx = TaskContext::for_test("plain", json!({}), t0());
        let mut waiting = std::pin::pin!(ctx.cancelled());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        ctx.cancel.advance(CancelStage::Requested);
        assert!(waiting.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn the_context_reports_what_the_worker_gave_it_and_collects_follow_ups() {
        let mut ctx = TaskContext::for_test("plain", json!({}), t0());
        let before = t0() - SignedDuration::from_hours(24);
        ctx.last_run_on = Some(before);
        ctx.attempts = 3;
        ctx.is_recurring = true;
        ctx.worker = "host-1".to_string();
        assert_eq!(ctx.last_run_on(), Some(before));
        assert_eq!(ctx.attempts(), 3);
        assert!(ctx.is_recurring());
        assert_eq!(ctx.worker(), "host-1");

        assert!(ctx.enqueued().is_empty());
        ctx.enqueue(NewTask::new("plain"));
        ctx.enqueue(NewTask::new("other").data(json!({ "n": 2 })));
        let handlers: Vec<&str> = ctx.enqueued().iter().map(|t| t.handler.as_str()).collect();
        assert_eq!(handlers, ["plain", "other"]);
        assert_eq!(ctx.enqueued()[1].data, json!({ "n": 2 }));
    }

    #[test]
    fn the_registry_hands_out_each_handlers_redactions_and_backoff() {
        struct Secretive;
        impl Task for Secretive {
            const NAME: &'static str = "secretive";
            const REDACT: &'static [&'static str] = &["card", "payment.token"];
            async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
                Ok(())
            }
            fn backoff(&self, attempt: u32) -> SignedDuration {
                SignedDuration::from_secs(i64::from(attempt) * 7)
            }
        }
        let r = Registry::new()
            .register(Plain)
            .register(Secretive)
            .register(Other);
        let secretive = r.get("secretive").unwrap();
        assert_eq!(secretive.redact(), ["card", "payment.token"]);
        assert_eq!(secretive.backoff(3), SignedDuration::from_secs(21));
        assert!(r.get("plain").unwrap().redact().is_empty());
        // Only handlers that hide something are listed.
        assert_eq!(
            r.redactions(),
            vec![("secretive".to_string(), &["card", "payment.token"][..])]
        );
        assert!(Registry::new().register(Plain).redactions().is_empty());
    }
}
