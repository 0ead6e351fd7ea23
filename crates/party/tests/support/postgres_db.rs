//! A fresh PostgreSQL schema per test on the server `PARTY_TEST_DATABASE_URL` names, shared
//! by the PostgreSQL test binaries.

use party::Party;
use party::store::postgres::tokio_postgres::{self, NoTls};

/// A fresh schema on the test database.
pub(crate) struct TestDb {
    /// The server's URL, without a schema.
    pub(crate) base: String,
    /// This test's schema.
    pub(crate) schema: String,
}

impl TestDb {
    /// `None` (after saying why) when no test database is configured.
    pub(crate) fn new() -> Option<TestDb> {
        let base = match std::env::var("PARTY_TEST_DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!(
                        "PARTY_TEST_DATABASE_URL is not set, but CI=true: the PostgreSQL tests \
                         must run in CI; start PostgreSQL and set it, e.g. \
                         postgres://postgres@127.0.0.1:5432/test"
                    );
                }
                eprintln!(
                    "PARTY_TEST_DATABASE_URL is not set: skipping the PostgreSQL tests \
                     (set it to e.g. postgres://postgres@127.0.0.1:5432/test)"
                );
                return None;
            }
        };
        let schema = format!("party_test_{:016x}", fastrand::u64(..));
        Some(TestDb { base, schema })
    }

    /// The URL naming this test's schema.
    pub(crate) fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.base, self.schema)
    }

    /// A `Party` on this test's schema, with the built-in handlers.
    pub(crate) async fn party(&self) -> Party {
        Party::connect(&self.url(), party::builtin::registry(false))
            .await
            .expect("connect")
    }

    /// A plain client, for what the test does behind party's back.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.base, NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    }

    /// Drop this test's schema.
    pub(crate) async fn cleanup(self) {
        let client = self.client().await;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .expect("drop schema");
    }
}
