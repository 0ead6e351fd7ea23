//! How long the dashboard's pages and the API's reads take on a store with many finished
//! tasks. Fills a fresh SQLite file with FINISHED done tasks (written straight into the
//! history table, as years of finished work would leave it) and a thousand live ones, serves
//! it, and times each page over HTTP.
//!
//! ```sh
//! cargo run --release -p party-serve --example page_bench -- 10000000 /tmp/pages.db
//! ```

use std::time::{Duration, Instant};

use party::{NewTask, Party, builtin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "bench-token-0123456789abcdef";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let finished: u64 = args
        .next()
        .map(|a| a.parse().expect("a count"))
        .unwrap_or(1_000_000);
    let path = args
        .next()
        .unwrap_or_else(|| "/tmp/party-page-bench.db".to_string());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let party = Party::connect(&path, builtin::registry(false))
        .await
        .expect("open");
    let live: Vec<NewTask> = (0..1000)
        .map(|i| NewTask::new("noop").data(serde_json::json!({ "i": i })))
        .collect();
    party.add_many(live).await.expect("live tasks");
    let t = Instant::now();
    {
        let conn = rusqlite::Connection::open(&path).expect("open for filling");
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
            .unwrap();
        // Ids are 12 bytes: a fixed prefix and the row number.
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO task_history (id, handler, data, timestamp, due_at, last_run_on, attempts, \
               max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, \
               created_at, finished_at) \
             SELECT unhex(printf('ff%022x', i)), CASE i % 3 WHEN 0 THEN 'noop' WHEN 1 THEN 'log' ELSE 'sleep' END, \
               '{\"n\":' || i || '}', 1700000000000000 + i * 1000, 1700000000000000 + i * 1000, NULL, 1, 5, 0, NULL, \
               CASE WHEN i % 100 = 0 THEN 'dead' ELSE 'done' END, 'default', 0, NULL, 1, \
               1700000000000000 + i * 1000, 1700000000000000 + i * 1000 + 500 FROM n",
            [finished as i64],
        )
        .expect("fill the history");
    }
    println!("filled {finished} finished tasks in {:.1?}", t.elapsed());
    let some_id = party.list(&Default::default()).await.unwrap()[0].id;
    let app = party_serve::router(party, party_serve::ServeConfig::new(TOKEN)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(party_serve::serve(app, listener, std::future::pending()));
    let pages = [
        "/".to_string(),
        "/tasks".to_string(),
        "/tasks?state=done".to_string(),
        "/tasks?state=dead&handler=noop".to_string(),
        format!("/tasks/{some_id}"),
        "/add".to_string(),
        "/metrics".to_string(),
        "/api/v1/stats".to_string(),
        "/api/v1/tasks?state=done&limit=100".to_string(),
    ];
    println!("| page | median | slowest of 20 |\n|---|---|---|");
    for page in &pages {
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let status = get(addr, page).await;
            times.push(t.elapsed());
            assert_eq!(status, 200, "{page}");
        }
        times.sort();
        println!(
            "| `{page}` | {:.1} ms | {:.1} ms |",
            times[10].as_secs_f64() * 1000.0,
            times[19].as_secs_f64() * 1000.0
        );
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
