//! A live server for tests: `party serve`'s router on a real TCP port over a fresh SQLite file
//! or PostgreSQL schema, and a small HTTP/1.1 client that shows status, headers and body.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use party::{Party, Registry, builtin};
use party_serve::ServeConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const READ_TOKEN: &str = "read-token-0123456789abcdef";

/// A handler that hides two of its data fields from readers.
pub struct Pay;

impl party::Task for Pay {
    const NAME: &'static str = "pay";
    const REDACT: &'static [&'static str] = &["card", "bank.iban"];

    async fn run(&self, _ctx: &mut party::TaskContext) -> Result<(), party::TaskError> {
        Ok(())
    }
}

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn unique() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

/// A database for one test, removed when dropped.
pub struct Db {
    pub url: String,
    file: Option<std::path::PathBuf>,
    schema: Option<(String, String)>,
}

impl Db {
    pub fn new(backend: Backend) -> Option<Db> {
        match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!(
                    "party-serve-{}-{}.db",
                    std::process::id(),
                    unique()
                ));
                Some(Db {
                    url: file.display().to_string(),
                    file: Some(file),
                    schema: None,
                })
            }
            Backend::Postgres => {
                let Some(base) = std::env::var("PARTY_TEST_DATABASE_URL")
                    .ok()
                    .filter(|u| !u.trim().is_empty())
                else {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("CI=true but PARTY_TEST_DATABASE_URL is not set");
                    }
                    println!("skipped on PostgreSQL: set PARTY_TEST_DATABASE_URL to run it");
                    return None;
                };
                let base = base.trim().to_string();
                let schema = format!("party_serve_{}", unique());
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(Db {
                    url: format!("{base}{sep}schema={schema}"),
                    file: None,
                    schema: Some((base, schema)),
                })
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
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
                    let Ok((client, conn)) =
                        tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                    else {
                        return;
                    };
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                });
            })
            .join();
        }
    }
}

/// A server on a free port; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub party: Party,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: Db,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    pub async fn start(backend: Backend) -> Option<Server> {
        Server::start_with(backend, |c| c).await
    }

    pub async fn start_with(
        backend: Backend,
        config: impl FnOnce(ServeConfig) -> ServeConfig,
    ) -> Option<Server> {
        Server::start_full(backend, config, None).await
    }

    /// A server whose `Party` (and its workers) read time from `clock`.
    pub async fn start_clocked(
        backend: Backend,
        clock: std::sync::Arc<dyn party::Clock>,
    ) -> Option<Server> {
        Server::start_full(backend, |c| c, Some(clock)).await
    }

    async fn start_full(
        backend: Backend,
        config: impl FnOnce(ServeConfig) -> ServeConfig,
        clock: Option<std::sync::Arc<dyn party::Clock>>,
    ) -> Option<Server> {
        let db = Db::new(backend)?;
        let registry = builtin::registry(true).merge(Registry::new().register(Pay));
        let mut party = Party::connect(&db.url, registry)
            .await
            .expect("open the store");
        if let Some(clock) = clock {
            party = party.with_clock(clock);
        }
        let config = config(ServeConfig {
            read_token: Some(READ_TOKEN.to_string()),
            ..ServeConfig::new(TOKEN)
        });
        let app = party_serve::router(party.clone(), config).expect("router");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(party_serve::serve(app, listener, async move {
            let _ = rx.await;
        }));
        Some(Server {
            addr,
            party,
            stop: Some(tx),
            _db: db,
        })
    }

    /// A request with the full token.
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        request(self.addr, method, path, &[("Authorization", &auth)], body).await
    }

    /// A request with these headers only.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        request(self.addr, method, path, headers, body).await
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // Read the head, then the body by its length (or chunks, or to the end): some servers
    // keep the connection open after answering.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the answer's head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut rest = raw[head_end + 4..].to_vec();
    let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        rest.truncate(len);
    } else if chunked {
        while !rest.windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
    } else {
        stream.read_to_end(&mut rest).await.unwrap();
    }
    let rest = String::from_utf8_lossy(&rest).to_string();
    let body = if chunked { dechunk(&rest) } else { rest };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Run a test on SQLite and on PostgreSQL.
#[allow(unused_macros)]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Backend::Postgres).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_backend;

/// Run rows of `task`, one per occurrence `start + k·every` for each `k` with an outcome,
/// written through the store's copy path a batch at a time: a long history in moments.
pub async fn write_runs(
    s: &Server,
    task: party::TaskId,
    start: party::jiff::Timestamp,
    every: party::jiff::SignedDuration,
    outcomes: impl Iterator<Item = (i64, party::Outcome)>,
) {
    use party::store::{CopyRows, RunRecord, RunRow};
    let rows: Vec<RunRow> = outcomes
        .map(|(k, outcome)| {
            let timestamp = start + every * (k as i32);
            RunRow {
                position: k,
                task_id: task,
                run: RunRecord {
                    attempt: 1,
                    timestamp,
                    started_at: timestamp + party::jiff::SignedDuration::from_secs(1),
                    finished_at: timestamp + party::jiff::SignedDuration::from_secs(30),
                    outcome: outcome.as_str().to_string(),
                    error: (outcome != party::Outcome::Succeeded).then(|| "boom".to_string()),
                    worker: "w1".to_string(),
                },
            }
        })
        .collect();
    for batch in rows.chunks(party::policy::COPY_BATCH as usize) {
        s.party
            .store()
            .copy_write(CopyRows::Runs(batch.to_vec()))
            .await
            .unwrap();
    }
}
