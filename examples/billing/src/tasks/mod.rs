//! The application's task handlers, one file per handler, and the registry that names them.
//!
//! To add a handler: write a type implementing [`party::Task`] in a new file here, declare the
//! file below, and register the type in [`registry`]. Its `NAME` is what `add` takes and what
//! the database stores, so keep it stable once tasks exist.

mod recurring;
mod sample;

use party::Registry;

pub(crate) use recurring::{RecurringTask, RecurringTask2};
pub(crate) use sample::SampleTask;

/// Every handler of this application under its stable name.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .register(SampleTask)
        .register(RecurringTask)
        .register(RecurringTask2)
}
