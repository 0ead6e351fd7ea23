#![allow(unreachable_pub, missing_docs)]
//! The store conformance suite: every method of the `Store` trait, tested at the trait, from
//! one source on every backend (SQLite on a fresh file, PostgreSQL on a fresh schema per test).
//! A behaviour the backends must share is pinned here, so they cannot drift apart.
//!
//! Run it with `cargo test -p party --test store`; set `PARTY_TEST_DATABASE_URL` to run the
//! PostgreSQL half too (with `CI=true`, a missing database is a failure, not a skip).

mod harness;

mod claim;
mod copy;
mod finish;
mod heartbeat;
mod history;
mod insert;
mod leader;
mod migrations;
mod queues;
mod read;
mod rescue;
mod runs;
mod steer;
