//! `party stats`: counts by state and handler, the oldest due task, throughput, live workers,
//! the tasks no live worker can run, and running tasks stuck under an expired lease.

use std::collections::BTreeMap;

use party::{HandlerCount, Party, State, TaskError, format_time};

use crate::args::StatsArgs;
use crate::output::{self, relative, table};

/// Print the counts.
pub(crate) async fn run(party: &Party, args: StatsArgs) -> Result<(), TaskError> {
    let stats = party.stats().await?;
    let mut by_handler: BTreeMap<&str, BTreeMap<State, u64>> = BTreeMap::new();
    for c in &stats.by_handler {
        *by_handler
            .entry(&c.handler)
            .or_default()
            .entry(c.state)
            .or_default() += c.count;
    }
    if args.json {
        return output::print_json(&stats.to_json());
    }

    let now = party.clock().now();
    let mut text = String::from("tasks by state:\n");
    for (state, n) in &stats.by_state {
        text.push_str(&format!("  {:<10} {n}\n", state.as_str()));
    }
    if !by_handler.is_empty() {
        text.push_str("\ntasks by handler:\n");
        let mut headers = vec!["HANDLER"];
        headers.extend(State::ALL.iter().map(|s| s.as_str()));
        let rows: Vec<Vec<String>> = by_handler
            .iter()
            .map(|(h, states)| {
                let mut row = vec![h.to_string()];
                row.extend(
                    State::ALL
                        .iter()
                        .map(|s| states.get(s).copied().unwrap_or(0).to_string()),
                );
                row
            })
            .collect();
        text.push_str(&indent(&table(&headers, &rows)));
    }
    text.push('\n');
    match stats.oldest_due {
        Some(t) => text.push_str(&format!(
            "oldest due task: {} (due {})\n",
            format_time(t),
            relative(t, now)
        )),
        None => text.push_str("oldest due task: none is due\n"),
    }
    text.push_str(&format!(
        "throughput: {} attempts finished in the last minute\n",
        stats.finished_last_minute
    ));
    if stats.workers.is_empty() {
        text.push_str("live workers: none (start one with `party worker`)\n");
    } else {
        text.push_str(&format!("live workers: {}\n", stats.workers.len()));
        for w in &stats.workers {
            text.push_str(&format!(
                "  {}: handlers {}; queues {}\n",
                w.id,
                w.handlers.join(", "),
                w.queues.join(", ")
            ));
        }
    }
    text.push_str(&unhandled(
        party,
        &stats.unhandled,
        !stats.workers.is_empty(),
    ));
    if stats.stuck_count > 0 {
        text.push_str(&format!(
            "running tasks whose lease ended without a heartbeat: {} (their worker stopped; any \
             running `party worker` releases them to run again)\n",
            stats.stuck_count
        ));
        for t in &stats.stuck {
            text.push_str(&format!(
                "  {}: held by {}, lease ended {}\n",
                t.id,
                t.worker,
                relative(t.lease_until, now)
            ));
        }
    }
    output::print(&text)
}

/// The plain statement about due tasks whose handler no live worker knows.
fn unhandled(party: &Party, counts: &[HandlerCount], workers_live: bool) -> String {
    if counts.is_empty() {
        return "every due task has a live worker that knows its handler\n".to_string();
    }
    let mut per_handler: BTreeMap<&str, u64> = BTreeMap::new();
    for c in counts {
        *per_handler.entry(&c.handler).or_default() += c.count;
    }
    let mut text = if workers_live {
        String::from("due tasks whose handler no live worker knows (they wait intact):\n")
    } else {
        String::from("due tasks waiting because no worker is running (they wait intact):\n")
    };
    for (handler, n) in per_handler {
        let hint = if handler == "shell" {
            "start `party worker --allow-shell`".to_string()
        } else if party.registry().contains(handler) {
            "start `party worker`".to_string()
        } else {
            format!("start a worker whose registry has '{handler}' (this binary does not know it)")
        };
        text.push_str(&format!("  {handler}: {n} due task(s); {hint}\n"));
    }
    text
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
