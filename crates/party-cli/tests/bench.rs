//! `party bench --quick` still works and reports every figure, and `party add --from` adds a
//! JSON Lines file all or nothing. No timing is asserted: only that each figure is there and
//! positive.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const PARTY: &str = env!("CARGO_BIN_EXE_party");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("party-bench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn party(d: &Dir, args: &[&str]) -> std::process::Output {
    Command::new(PARTY)
        .arg("--db")
        .arg(d.0.join("party.db"))
        .args(args)
        .current_dir(&d.0)
        .env_remove("PARTY_DATABASE_URL")
        .env("PARTY_LOG", "warn")
        .output()
        .unwrap()
}

fn positive(report: &Value, path: &str) {
    let v = report
        .pointer(path)
        .unwrap_or_else(|| panic!("the report has no {path}: {report:#}"));
    let n = v
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {v}"));
    assert!(n > 0.0, "{path} is {n}, expected a positive number");
}

/// The scratch stores are gone and the named database was never created.
fn nothing_left_in(d: &Dir) {
    let left: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn quick_bench_reports_every_figure() {
    let d = dir("quick");
    let out = party(&d, &["bench", "--quick", "--soak", "--json"]);
    assert!(
        out.status.success(),
        "party bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["backend"], "sqlite");
    for path in [
        "/bulk_enqueue/per_second",
        "/single_enqueue/per_second",
        "/enqueue_to_start/p50_ms",
        "/enqueue_to_start/p99_ms",
        "/due_to_start/p50_ms",
        "/due_to_start/p99_ms",
        "/future_load/future_tasks",
        "/future_load/drain_empty/per_second",
        "/future_load/drain_loaded/per_second",
        "/future_load/idle_claim_empty_us",
        "/future_load/idle_claim_loaded_us",
        "/future_load/claim_cost_ratio",
        "/future_load/worker_rss_empty_mb",
        "/future_load/worker_rss_loaded_mb",
        "/plain_sql/insert/per_second",
        "/plain_sql/claim_complete/per_second",
    ] {
        positive(&r, path);
    }
    let throughput = r["throughput"].as_array().unwrap();
    let concurrencies: Vec<u64> = throughput
        .iter()
        .map(|t| t["concurrency"].as_u64().unwrap())
        .collect();
    assert_eq!(concurrencies, [1, 8, 32, 128]);
    for t in throughput {
        assert!(t["rate"]["per_second"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["rate"]["count"].as_u64().unwrap() > 0, "{t}");
    }
    // The soak: every task ran, tenth by tenth, and retention removed the old ones.
    let soak = &r["soak"];
    assert_eq!(soak["tasks"], 20_000, "{soak:#}");
    assert_eq!(soak["retain_done_seconds"], 60, "{soak:#}");
    let tenths = soak["tenths"].as_array().unwrap();
    assert_eq!(tenths.len(), 10, "{soak:#}");
    for t in tenths {
        assert_eq!(t["count"], 2_000, "{t}");
        assert!(t["per_second"].as_f64().unwrap() > 0.0, "{t}");
    }
    for path in [
        "/soak/last_vs_first_tenth",
        "/soak/hot_growth",
        "/soak/hot_after_first_tenth/table_bytes",
        "/soak/hot_at_end/table_bytes",
        "/soak/history_at_end/table_bytes",
        "/soak/runs_at_end/table_bytes",
    ] {
        positive(&r, path);
    }
    // A pass at the end of each tenth (a simulated minute) removes what finished more than a
    // minute before it: by the last pass, the first 89 of the 100 chunks.
    assert_eq!(soak["pruned_tasks"], 17_800, "{soak:#}");
    assert_eq!(soak["pruned_runs"], 17_800, "{soak:#}");
    // One pass after each tenth, each timed.
    let passes = soak["prune_pass_seconds"].as_array().unwrap();
    assert_eq!(passes.len(), 10, "{soak:#}");
    for (i, p) in passes.iter().enumerate() {
        let secs = p.as_f64().unwrap();
        assert!(
            (0.0..600.0).contains(&secs),
            "pass {i} took {secs} s: {soak:#}"
        );
    }
    nothing_left_in(&d);
}

#[test]
fn enqueue_bench_reports_its_rounds_beside_the_plain_insert() {
    let d = dir("enqueue");
    let out = party(&d, &["bench", "--enqueue", "--quick", "--json"]);
    assert!(
        out.status.success(),
        "party bench --enqueue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rounds: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rounds = rounds.as_array().expect("a list of rounds");
    assert_eq!(rounds.len(), 3, "{rounds:#?}");
    for r in rounds {
        assert_eq!(r["bulk_enqueue"]["count"], 20_000, "{r}");
        assert_eq!(r["plain_insert"]["count"], 20_000, "{r}");
        let bulk = r["bulk_enqueue"]["per_second"].as_f64().unwrap();
        let plain = r["plain_insert"]["per_second"].as_f64().unwrap();
        assert!(bulk > 0.0 && plain > 0.0, "{r}");
        let ratio = r["ratio"].as_f64().unwrap();
        assert!(
            (ratio - bulk / plain).abs() < 1e-9,
            "the ratio is bulk over plain: {r}"
        );
    }
    nothing_left_in(&d);
}

#[test]
fn add_from_a_file_adds_every_line_or_none() {
    let d = dir("from");
    let good = d.0.join("good.jsonl");
    std::fs::write(
        &good,
        "{\"handler\": \"noop\"}\n\n{\"handler\": \"log\", \"data\": {\"a\": 1}, \"queue\": \"q\", \"priority\": 2}\n\
         {\"handler\": \"noop\", \"at\": \"2999-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let out = party(&d, &["add", "--from", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    let bad = d.0.join("bad.jsonl");
    std::fs::write(&bad, "{\"handler\": \"noop\"}\n{\"handler\": \"nope\"}\n").unwrap();
    let out = party(&d, &["add", "--from", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    let bad = d.0.join("bad2.jsonl");
    std::fs::write(
        &bad,
        "{\"handler\": \"noop\"}\n{\"handler\": \"noop\", \"data\": 3}\n",
    )
    .unwrap();
    let out = party(&d, &["add", "--from", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    // Only the good file's three tasks exist.
    let out = party(&d, &["list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
}

/// README: "No message shows the URL's password." When `party bench` cannot reach a
/// PostgreSQL server, its error repeats the URL whole, password included.
#[test]
fn bench_never_prints_the_databases_password() {
    let d = dir("secret");
    let out = Command::new(PARTY)
        .args([
            "--db",
            "postgres://party:S3cretPw@127.0.0.1:1/app",
            "bench",
            "--quick",
            "--enqueue",
        ])
        .current_dir(&d.0)
        .env_remove("PARTY_DATABASE_URL")
        .env("PARTY_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stdout.contains("S3cretPw") && !stderr.contains("S3cretPw"),
        "the password is printed:\n{stdout}{stderr}"
    );
}
