//! Databases for tests that run `party` processes: a SQLite file, and a fresh PostgreSQL
//! schema when `PARTY_TEST_DATABASE_URL` is set (required when `CI=true`).

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// The `party` binary under test.
pub const PARTY: &str = env!("CARGO_BIN_EXE_party");

/// One database a test runs against; cleaned up when dropped.
pub struct Db {
    /// `sqlite` or `postgres`.
    pub name: &'static str,
    /// What `--db` gets.
    pub url: String,
    file: Option<std::path::PathBuf>,
    schema: Option<(String, String)>,
}

fn unique() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

impl Db {
    /// A fresh SQLite file.
    pub fn sqlite(tag: &str) -> Db {
        let file = std::env::temp_dir().join(format!(
            "party-{tag}-{}-{}.db",
            std::process::id(),
            unique()
        ));
        Db {
            name: "sqlite",
            url: file.display().to_string(),
            file: Some(file),
            schema: None,
        }
    }

    /// A fresh PostgreSQL schema, or `None` (with a printed line) when no server is configured.
    pub fn postgres(tag: &str) -> Option<Db> {
        let Some(base) = std::env::var("PARTY_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but PARTY_TEST_DATABASE_URL is not set: the PostgreSQL process tests must run in CI"
                );
            }
            println!(
                "skipped on PostgreSQL: set PARTY_TEST_DATABASE_URL=postgres://... to run these tests there too"
            );
            return None;
        };
        let base = base.trim().to_string();
        let schema = format!("party_{tag}_{}", unique()).replace('-', "_");
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(Db {
            name: "postgres",
            url: format!("{base}{sep}schema={schema}"),
            file: None,
            schema: Some((base, schema)),
        })
    }

    /// Every backend available here.
    pub fn all(tag: &str) -> Vec<Db> {
        let mut dbs = vec![Db::sqlite(tag)];
        dbs.extend(Db::postgres(tag));
        dbs
    }

    /// `PRAGMA integrity_check` on SQLite; "ok" on PostgreSQL, which has no such check.
    pub fn integrity_check(&self, rt: &tokio::runtime::Runtime) -> String {
        match &self.file {
            Some(path) => rt.block_on(async {
                let store = party::store::sqlite::SqliteStore::open(path).await.unwrap();
                store.integrity_check().await.unwrap()
            }),
            None => "ok".to_string(),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if let Some((base, schema)) = self.schema.clone() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    use party::store::postgres::tokio_postgres;
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// `party --db URL` with quiet logs.
pub fn party_cmd(url: &str) -> Command {
    let mut cmd = Command::new(PARTY);
    cmd.arg("--db")
        .arg(url)
        .env_remove("PARTY_DATABASE_URL")
        .env("PARTY_LOG", "warn");
    cmd
}
