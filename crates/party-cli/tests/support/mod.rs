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

/// A PostgreSQL server of a test's own: a fresh cluster in a temporary directory on a free
/// port, so a test may stop and start it without touching the machine's server (which other
/// tests use at the same time). Needs root (it runs the server as the `postgres` user) and
/// Debian's PostgreSQL binaries; [`Cluster::start`] says why not and returns `None` otherwise.
pub struct Cluster {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl Cluster {
    /// Create and start a cluster, or say why one cannot be made here.
    pub fn start() -> Option<Cluster> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            println!("no private PostgreSQL cluster: the test does not run as root");
            return None;
        }
        let mut bins: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        bins.sort();
        let Some(bin) = bins.pop() else {
            println!("no private PostgreSQL cluster: no initdb under /usr/lib/postgresql");
            return None;
        };
        let dir =
            std::env::temp_dir().join(format!("party-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).ok()?;
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .ok()?
            .success();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let cluster = Cluster { bin, dir, port };
        let made = owned
            && cluster
                .as_postgres("initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(cluster.dir.join("data"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        if !made || !cluster.ctl("start") {
            println!(
                "no private PostgreSQL cluster: initdb or pg_ctl failed in {}",
                cluster.dir.display()
            );
            return None;
        }
        Some(cluster)
    }

    fn as_postgres(&self, tool: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
        cmd
    }

    /// `pg_ctl start` or `stop` (fast), waiting until it is done; whether it worked.
    pub fn ctl(&self, action: &str) -> bool {
        let mut cmd = self.as_postgres("pg_ctl");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-m", "fast", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .arg(action);
        cmd.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh schema on it, as [`Db::postgres`] makes one on the shared server.
    pub fn db(&self, tag: &str) -> Db {
        let base = self.url();
        let schema = format!("party_{tag}_{}", unique()).replace('-', "_");
        Db {
            name: "postgres",
            url: format!("{base}?schema={schema}"),
            file: None,
            schema: Some((base, schema)),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
