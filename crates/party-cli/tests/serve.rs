//! `party serve` as a user starts it: the real binary on SQLite and PostgreSQL, its printed
//! address and token, the API's answers beside `party list --json` for the same tasks, and a
//! graceful stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{Db, party_cmd};

/// A running `party serve`; killed if the test ends early.
struct Serving {
    child: Child,
    addr: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `party serve` on a free port and read the first line it prints.
fn serve(db: &Db, env: &[(&str, &str)], args: &[&str]) -> (Serving, String) {
    let mut cmd = party_cmd(&db.url);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("PARTY_API_TOKEN")
        .env_remove("PARTY_API_READ_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn party serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("read the address");
    let addr = line
        .trim()
        .strip_prefix("dashboard: http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (Serving { child, addr }, line)
}

/// One HTTP request; returns the status and body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn serve_prints_a_token_answers_as_the_cli_does_and_stops_on_sigterm() {
    for db in Db::all("serve") {
        for handler in ["noop", "log"] {
            let out = party_cmd(&db.url)
                .args(["add", handler, "--in", "1h"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (mut serving, line) = serve(&db, &[], &[]);
        let token = line
            .trim()
            .split("token=")
            .nth(1)
            .unwrap_or_else(|| panic!("{}: no token printed: {line}", db.name))
            .to_string();
        assert_eq!(token.len(), 64);
        assert_eq!(get(&serving.addr, "/healthz", None).0, 200);
        assert_eq!(get(&serving.addr, "/api/v1/tasks", None).0, 401);
        let (status, body) = get(&serving.addr, "/api/v1/tasks", Some(&token));
        assert_eq!(status, 200, "{body}");
        let api: Value = serde_json::from_str(&body).unwrap();
        let cli = party_cmd(&db.url)
            .args(["list", "--json"])
            .output()
            .unwrap();
        let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
        assert_eq!(
            api["tasks"], cli,
            "{}: the API lists what `list --json` lists",
            db.name
        );
        let (_, stats) = get(&serving.addr, "/api/v1/stats", Some(&token));
        let cli_stats = party_cmd(&db.url)
            .args(["stats", "--json"])
            .output()
            .unwrap();
        let cli_stats: Value = serde_json::from_slice(&cli_stats.stdout).unwrap();
        let stats: Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["by_state"], cli_stats["by_state"]);
        assert_eq!(stats["by_handler"], cli_stats["by_handler"]);
        // SIGTERM: a graceful stop with exit code 0.
        sigterm(&serving.child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(status) = serving.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                Instant::now() < deadline,
                "party serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, Some(0));
    }
}

#[test]
fn serve_takes_its_token_from_the_environment_or_a_file_and_refuses_a_weak_one() {
    let db = Db::sqlite("serve-token");
    let token = "env-token-0123456789abcdef";
    let (serving, line) = serve(&db, &[("PARTY_API_TOKEN", token)], &[]);
    assert!(
        !line.contains(token),
        "a chosen token is never printed: {line}"
    );
    assert_eq!(get(&serving.addr, "/api/v1/stats", Some(token)).0, 200);
    drop(serving);
    let dir = std::env::temp_dir().join(format!("party-serve-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "file-token-0123456789abcdef\n").unwrap();
    let (serving, _) = serve(&db, &[], &["--token-file", file.to_str().unwrap()]);
    assert_eq!(
        get(
            &serving.addr,
            "/api/v1/stats",
            Some("file-token-0123456789abcdef")
        )
        .0,
        200
    );
    drop(serving);
    std::fs::write(&file, "weak-secret\n").unwrap();
    let out = party_cmd(&db.url)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bytes long"), "{err}");
    assert!(
        !err.contains("weak-secret"),
        "the token is never echoed: {err}"
    );
    let out = party_cmd(&db.url)
        .args(["serve", "--listen", "127.0.0.1:0", "--redact", "card"])
        .env("PARTY_API_TOKEN", token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data.card"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn worker_metrics_count_runs_and_json_logs_carry_the_attempts_span() {
    let db = Db::sqlite("worker-metrics");
    let add = |args: &[&str]| {
        let out = party_cmd(&db.url).arg("add").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    add(&["noop", "--queue", "mail"]);
    let failing = add(&[
        "shell",
        "--data",
        r#"{"cmd": "exit 3"}"#,
        "--max-attempts",
        "1",
    ]);
    // A free port for the worker's metrics.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = party_cmd(&db.url)
        .env("PARTY_LOG", "info")
        .args([
            "--log-format",
            "json",
            "worker",
            "--allow-shell",
            "--queue",
            "default",
        ])
        .args(["--queue", "mail", "--metrics", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        assert!(
            Instant::now() < deadline,
            "the worker's metrics never showed both runs"
        );
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            if text.contains("outcome=\"failed\"") && text.contains("outcome=\"succeeded\"") {
                break text;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains("party_runs_total{handler=\"noop\",queue=\"mail\",outcome=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("party_runs_total{handler=\"shell\",queue=\"default\",outcome=\"failed\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE party_run_duration_seconds histogram"));
    assert!(!text.contains(&failing), "no task id in the metrics");
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&out.stderr);
    let failed: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "attempt failed")
        .unwrap_or_else(|| panic!("no JSON line for the failed attempt in {logs}"));
    let span = &failed["span"];
    assert_eq!(span["name"], "attempt");
    assert_eq!(span["task"], failing.as_str());
    assert_eq!(span["handler"], "shell");
    assert_eq!(span["queue"], "default");
    assert_eq!(span["attempt"], 1);
}
