//! How long the dashboard's pages and the API's reads take on a store with many finished
//! tasks. Fills a fresh store (a SQLite file, or a PostgreSQL schema) with FINISHED done tasks
//! (written straight into the history table, as years of finished work would leave them; one
//! in a hundred dead), a thousand live ones and ten live recurring ones, serves it, and times
//! each page over HTTP.
//!
//! ```sh
//! cargo run --release -p party-serve --example page_bench -- 10000000 /tmp/pages.db
//! cargo run --release -p party-serve --example page_bench -- 10000000 \
//!     'postgres://postgres@127.0.0.1:5432/test?schema=page_bench'
//! ```
//!
//! A third argument `--reuse` times the pages of a store an earlier run filled.

use std::time::{Duration, Instant};

use party::{NewTask, Party, builtin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "bench-token-0123456789abcdef";

/// The history's columns the fills write.
const HISTORY: &str = "task_history (id, handler, data, timestamp, due_at, last_run_on, \
    attempts, max_attempts, is_recurring, rule, state, queue, priority, last_error, fence, \
    created_at, finished_at)";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let finished: u64 = args
        .next()
        .map(|a| a.parse().expect("a count"))
        .unwrap_or(1_000_000);
    let target = args
        .next()
        .unwrap_or_else(|| "/tmp/party-page-bench.db".to_string());
    let reuse = args.next().as_deref() == Some("--reuse");
    let postgres = target.starts_with("postgres://") || target.starts_with("postgresql://");
    if !reuse {
        if postgres {
            postgres_sql(
                &target,
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", schema(&target)),
            )
            .await;
        } else {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{target}{suffix}"));
            }
        }
    }
    let party = Party::connect(&target, builtin::registry(false))
        .await
        .expect("open");
    if !reuse {
        let live: Vec<NewTask> = (0..1000)
            .map(|i| NewTask::new("noop").data(serde_json::json!({ "i": i })))
            .collect();
        party.add_many(live).await.expect("live tasks");
        let recurring: Vec<NewTask> = (0..10)
            .map(|i| {
                NewTask::new("log")
                    .data(serde_json::json!({ "schedule": i }))
                    .every(party::jiff::SignedDuration::from_hours(1))
            })
            .collect();
        party.add_many(recurring).await.expect("recurring tasks");
        let t = Instant::now();
        if postgres {
            fill_postgres(&target, finished).await;
        } else {
            fill_sqlite(&target, finished);
        }
        println!("filled {finished} finished tasks in {:.1?}", t.elapsed());
    }
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
        "/tasks?state=scheduled&handler=noop".to_string(),
        "/tasks?data=i%3D7".to_string(),
        "/tasks?state=scheduled&data=i%3D7".to_string(),
        "/api/v1/tasks?data.i=7&limit=100".to_string(),
        "/tasks/retry-matching?state=dead&handler=noop".to_string(),
        "/tasks/cancel-matching?state=scheduled&queue=default".to_string(),
        "/tasks/retry-matching?data=i%3D7".to_string(),
        "/tasks/cancel-matching?data=i%3D7".to_string(),
        format!("/tasks/{some_id}"),
        "/recurring".to_string(),
        "/add".to_string(),
        "/metrics".to_string(),
        "/api/v1/stats".to_string(),
        "/api/v1/tasks?state=done&limit=100".to_string(),
    ];
    println!("| page | median | slowest | runs |\n|---|---|---|---|");
    for page in &pages {
        // Twenty runs, or three of a page that takes over a second.
        let mut times = Vec::new();
        let mut runs = 20;
        while times.len() < runs {
            let t = Instant::now();
            let status = get(addr, page).await;
            times.push(t.elapsed());
            assert_eq!(status, 200, "{page}");
            if times[0] > Duration::from_secs(1) {
                runs = 3;
            }
        }
        times.sort();
        println!(
            "| `{page}` | {:.1} ms | {:.1} ms | {runs} |",
            times[runs / 2].as_secs_f64() * 1000.0,
            times[runs - 1].as_secs_f64() * 1000.0
        );
    }
}

fn fill_sqlite(path: &str, finished: u64) {
    let conn = rusqlite::Connection::open(path).expect("open for filling");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    // Ids are 12 bytes: a fixed prefix and the row number.
    conn.execute(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO {HISTORY} \
             SELECT unhex(printf('ff%022x', i)), CASE i % 3 WHEN 0 THEN 'noop' WHEN 1 THEN 'log' ELSE 'sleep' END, \
               '{{\"n\":' || i || '}}', 1700000000000000 + i * 1000, 1700000000000000 + i * 1000, NULL, 1, 5, 0, NULL, \
               CASE WHEN i % 100 = 0 THEN 'dead' ELSE 'done' END, 'default', 0, NULL, 1, \
               1700000000000000 + i * 1000, 1700000000000000 + i * 1000 + 500 FROM n"
        ),
        [finished as i64],
    )
    .expect("fill the history");
}

/// The schema a PostgreSQL URL names (`schema=`), `party` by default.
fn schema(url: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix("schema="))
        .unwrap_or("party")
        .to_string()
}

async fn postgres_sql(url: &str, sql: &str) {
    let plain = url.split('?').next().unwrap();
    let (client, conn) = tokio_postgres::connect(plain, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
}

async fn fill_postgres(url: &str, finished: u64) {
    let s = schema(url);
    // In steps of a million rows, then the statistics and visibility map autovacuum would
    // leave.
    let step = 1_000_000u64;
    let mut from = 1u64;
    while from <= finished {
        let to = (from + step - 1).min(finished);
        postgres_sql(
            url,
            &format!(
                "INSERT INTO {s}.{HISTORY} \
                 SELECT decode('ff' || lpad(to_hex(i), 22, '0'), 'hex'), \
                   CASE i % 3 WHEN 0 THEN 'noop' WHEN 1 THEN 'log' ELSE 'sleep' END, \
                   '{{\"n\":' || i || '}}', t, t, NULL, 1, 5, false, NULL, \
                   CASE WHEN i % 100 = 0 THEN 'dead' ELSE 'done' END, 'default', 0, NULL, 1, \
                   t, t + interval '500 microseconds' \
                 FROM generate_series({from}::bigint, {to}::bigint) i, \
                   LATERAL (SELECT timestamptz 'epoch' + (1700000000000000 + i * 1000) \
                     * interval '1 microsecond' AS t) x"
            ),
        )
        .await;
        from = to + 1;
    }
    postgres_sql(url, &format!("VACUUM ANALYZE {s}.task_history")).await;
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
