//! party: a durable task scheduler.
//!
//! Write handlers (types implementing [`Task`]), register them in a [`Registry`], and add tasks
//! through a [`Party`] handle: due now, at an exact time, or again and again. Tasks are stored
//! durably in SQLite (one file, the default) or PostgreSQL (many workers on many machines), and
//! a [`Worker`] runs them: across restarts and crashes, never two at once, and never two live
//! copies of a recurring task with the same handler and data.
//!
//! ```no_run
//! use party::{NewTask, Party, Registry, Task, TaskContext, TaskError, WorkerConfig};
//!
//! struct RecurringTask;
//!
//! impl Task for RecurringTask {
//!     const NAME: &'static str = "recurring";
//!     const IS_RECURRING: bool = true;
//!
//!     async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
//!         Ok(())
//!     }
//!
//!     async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
//!         ctx.schedule_next_run_in_minutes(30)
//!     }
//! }
//!
//! # async fn example() -> Result<(), TaskError> {
//! let party = Party::connect("party.db", Registry::new().register(RecurringTask)).await?;
//! let id = party.add(NewTask::new("recurring")).await?;
//! party.worker(WorkerConfig::default()).run_until_idle().await?;
//! println!("{:?}", party.get(id).await?.state);
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `sqlite` (default): the SQLite backend, [`store::sqlite`]; compiles the bundled SQLite.
//! - `postgres` (default): the PostgreSQL backend, [`store::postgres`], and
//!   [`Party::add_in_transaction`].
//!
//! A service on PostgreSQL alone depends on `party` with `default-features = false, features =
//! ["postgres"]` and builds no SQLite; an embedded application takes `features = ["sqlite"]`
//! and builds no PostgreSQL client. [`open_store`] refuses a URL whose backend is left out with
//! an error naming the feature to enable.

// On docs.rs, each feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
// With neither backend the library still builds (a [`store::Store`] of one's own can be given
// to `Party::with_store`); the backends' shared helpers are then unused.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

pub mod builtin;
mod client;
pub mod clock;
pub mod copy;
mod error;
mod id;
pub mod maintenance;
pub mod metrics;
mod model;
pub mod policy;
mod prepare;
pub mod queues;
pub mod recurrence;
mod rules;
pub mod spec;
pub mod store;
mod task;
pub mod testing;
pub mod validate;
mod worker;

pub use client::{DEFAULT_DATABASE, Party, open_store};
pub use clock::{Clock, ManualClock, SystemClock, format_time};
pub use error::TaskError;
pub use id::TaskId;
pub use jiff;
pub use model::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, DataMatch, HandlerCount, ListCursor, ListFilter,
    MatchCount, NewTask, Outcome, RecentTask, Run, RunCount, RunCursor, RunPage, State, Stats,
    SteerFilter, StuckTask, TaskInfo, TaskPage, WorkerInfo,
};
pub use queues::{QueueControl, QueueInfo, QueueLimits, Rate};
pub use serde_json;
pub use task::{DEFAULT_TIMEOUT, Registry, Task, TaskContext, default_backoff};
pub use validate::check_data;
pub use worker::{Worker, WorkerConfig, WorkerReport};
