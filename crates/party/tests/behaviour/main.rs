#![allow(unreachable_pub, missing_docs)]
//! The behaviour suite: every test runs on every backend, each on a fresh store, with a
//! manual clock wherever time matters.

mod cancel;
mod checks;
mod common;
mod lifecycle;
mod listing;
mod maintenance;
mod queue_controls;
mod recurring;
mod retention;
mod runtime;
mod seed;
mod shell;
mod singleton;
mod steering;
mod unique;
mod upgrade;
mod worker_races;
