//! `party list` and `party show`: tasks as tables for people and as JSON for programs.

use jiff::Timestamp;
use party::recurrence::{Recurrence, Rule};
use party::{ListFilter, Party, RecentTask, RunCount, State, TaskError, TaskInfo, format_time};
use serde::Deserialize;

use crate::args::{ListArgs, RunsShown, ShowArgs};
use crate::output::{self, or_dash, relative, short_time, table, truncate};

/// List tasks, soonest first. The tasks are read a page at a time ([`Party::list_page`],
/// bounded by count and by bytes) and each page is written before the next is read, so a
/// long listing of large tasks never sits in memory whole.
pub(crate) async fn list(party: &Party, args: ListArgs) -> Result<(), TaskError> {
    let mut filter = ListFilter {
        state: args.state,
        handler: args.handler,
        queue: args.queue,
        data: args.data,
        ..ListFilter::default()
    };
    let now = party.clock().now();
    let mut shown: u32 = 0;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut json = output::JsonArray::default();
    loop {
        filter.limit = Some((args.limit - shown).min(party::validate::MAX_PAGE_LIMIT));
        let page = party.list_page(&filter).await?;
        shown += page.tasks.len() as u32;
        if args.json {
            // A listing does not read run histories: leave the field out rather than print
            // an empty one (`show --json` has it).
            json.print(page.tasks.iter().map(TaskInfo::listing_json))?;
        } else {
            rows.extend(page.tasks.iter().map(|t| row(t, now)));
        }
        match page.next {
            Some(cursor) if shown < args.limit => filter.cursor = Some(cursor),
            _ => break,
        }
    }
    if args.json {
        return json.end();
    }
    if rows.is_empty() {
        return output::print("no tasks; `party add HANDLER` creates one\n");
    }
    let mut text = table(
        &[
            "ID",
            "HANDLER",
            "STATE",
            "DUE",
            "TIMESTAMP",
            "ATTEMPTS",
            "RECURS",
            "QUEUE",
            "DATA",
        ],
        &rows,
    );
    if shown == args.limit {
        text.push_str(&format!(
            "(at most {} shown; there may be more: raise --limit)\n",
            args.limit
        ));
    }
    output::print(&text)
}

/// A task's row in `party list`'s table.
fn row(t: &TaskInfo, now: Timestamp) -> Vec<String> {
    vec![
        t.id.to_string(),
        t.handler.clone(),
        t.state.to_string(),
        due(t, now),
        short_time(t.timestamp),
        format!("{}/{}", t.attempts, t.max_attempts),
        recurs(t),
        t.queue.clone(),
        truncate(&t.data.to_string(), 40),
    ]
}

/// Show one task with its latest runs, or every run (`--runs all`).
pub(crate) async fn show(party: &Party, args: ShowArgs) -> Result<(), TaskError> {
    let recent = match args
        .runs
        .unwrap_or(RunsShown::Latest(party::policy::RECENT_RUNS))
    {
        RunsShown::Latest(n) => party.get_recent(args.id, n).await?,
        RunsShown::All => {
            let task = party.get(args.id).await?;
            RecentTask {
                total: RunCount::Exact(task.runs.len() as u64),
                task,
                older: None,
            }
        }
    };
    if args.json {
        return output::print_json(&recent.to_json());
    }
    let task = &recent.task;
    let now = party.clock().now();
    let state = match task.state {
        State::Scheduled | State::Retrying => format!("{} (due {})", task.state, due(task, now)),
        State::Running => format!("running on {}", or_dash(task.worker.clone())),
        _ => task.state.to_string(),
    };
    let fields = [
        ("id", task.id.to_string()),
        ("handler", task.handler.clone()),
        ("state", state),
        ("data", task.data.to_string()),
        ("timestamp", format_time(task.timestamp)),
        ("last_run_on", or_dash(task.last_run_on.map(format_time))),
        (
            "attempts",
            format!("{} of {}", task.attempts, task.max_attempts),
        ),
        ("recurring", recurs(task)),
        ("queue", task.queue.clone()),
        ("priority", task.priority.to_string()),
        ("created_at", format_time(task.created_at)),
        ("finished_at", or_dash(task.finished_at.map(format_time))),
        ("last_error", or_dash(task.last_error.clone())),
    ];
    let mut text = String::new();
    for (name, value) in fields {
        text.push_str(&format!("{name:<12} {}\n", output::field(&value)));
    }
    if task.runs.is_empty() {
        text.push_str("\nrun history: no attempts yet\n");
    } else {
        text.push_str("\nrun history, oldest first:\n");
        let rows: Vec<Vec<String>> = task
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.attempt.to_string(),
                    format_time(r.timestamp),
                    format_time(r.started_at),
                    format_time(r.finished_at),
                    r.outcome.as_str().to_string(),
                    r.worker.clone(),
                    or_dash(r.error.clone()),
                ]
            })
            .collect();
        text.push_str(&table(
            &[
                "ATTEMPT",
                "TIMESTAMP",
                "STARTED",
                "FINISHED",
                "OUTCOME",
                "WORKER",
                "ERROR",
            ],
            &rows,
        ));
    }
    if !recent.is_complete() {
        text.push_str(&format!(
            "\nshowing the latest {} of {} runs: `party show {} --runs all` lists every run, \
             `party gaps {}` compares them all with the schedule\n",
            task.runs.len(),
            recent.total,
            task.id,
            task.id
        ));
    }
    output::print(&text)
}

/// When a waiting task is due, relative to now; `-` for tasks that wait for nothing.
fn due(task: &TaskInfo, now: Timestamp) -> String {
    match task.state {
        State::Scheduled | State::Retrying => relative(task.due_at, now),
        _ => "-".to_string(),
    }
}

/// How a task recurs: its stored rule (`every 30m`, `cron "0 9 * * *" in Europe/Berlin`), `yes`
/// (the handler recurs) or `no`.
fn recurs(task: &TaskInfo) -> String {
    match &task.rule {
        Some(stored) => match Recurrence::deserialize(stored) {
            Ok(Recurrence {
                rule, tz: Some(tz), ..
            }) if !matches!(rule, Rule::Every { .. }) => {
                format!("{rule} in {tz}")
            }
            Ok(rec) => rec.rule.to_string(),
            Err(_) => stored.to_string(),
        },
        None if task.is_recurring => "yes".to_string(),
        None => "no".to_string(),
    }
}
