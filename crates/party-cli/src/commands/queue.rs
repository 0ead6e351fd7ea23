//! `party queue list|pause|resume|limit`: the queue controls, held in the store so they hold
//! across every worker on every machine.

use party::{Party, QueueInfo, QueueLimits, State, TaskError};
use serde_json::json;

use crate::args::{QueueCommand, QueueLimitArgs};
use crate::output::{self, table};

/// Run one `party queue` command.
pub(crate) async fn run(party: &Party, command: QueueCommand) -> Result<(), TaskError> {
    match command {
        QueueCommand::List(args) => {
            let queues = party.queues().await?;
            if args.json {
                return output::print_json(&json!({ "queues": queues }));
            }
            output::print(&list_text(&queues))
        }
        QueueCommand::Pause(args) => {
            party.pause_queue(&args.queue).await?;
            changed(
                party,
                &args.queue,
                args.json,
                "paused: its tasks are not claimed until `party queue resume`",
            )
            .await
        }
        QueueCommand::Resume(args) => {
            party.resume_queue(&args.queue).await?;
            changed(party, &args.queue, args.json, "resumed").await
        }
        QueueCommand::Limit(args) => limit(party, args).await,
    }
}

async fn limit(party: &Party, args: QueueLimitArgs) -> Result<(), TaskError> {
    let limits = QueueLimits {
        concurrency: args.concurrency,
        rate: args.rate,
        per: args.per,
    };
    if !args.clear && limits.is_empty() {
        return Err(TaskError::invalid(
            "give the limits to set (--concurrency N, --rate COUNT/PERIOD, optionally --per \
             data.FIELD), or --clear to remove them",
        ));
    }
    party.limit_queue(&args.queue, &limits).await?;
    let what = if args.clear {
        "limits removed".to_string()
    } else {
        format!("limited to {limits}")
    };
    changed(party, &args.queue, args.json, &what).await
}

/// Print the queue as it is now.
async fn changed(party: &Party, queue: &str, json: bool, what: &str) -> Result<(), TaskError> {
    let info = party.queue(queue).await?;
    if json {
        return output::print_json(&info);
    }
    output::print(&format!("queue {}: {what}\n", output::field(queue)))
}

fn list_text(queues: &[QueueInfo]) -> String {
    if queues.is_empty() {
        return "no queues: none holds a task or a control\n".to_string();
    }
    let states = State::ALL;
    let mut headers = vec!["QUEUE", "STATUS", "LIMITS", "DUE"];
    headers.extend(states.iter().map(|s| s.as_str()));
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut row = vec![
                output::cell(&q.name),
                if q.paused { "paused" } else { "active" }.to_string(),
                if q.limits.is_empty() {
                    "-".to_string()
                } else {
                    q.limits.to_string()
                },
                q.due.to_string(),
            ];
            row.extend(states.iter().map(|s| {
                q.counts
                    .iter()
                    .find(|(st, _)| st == s)
                    .map_or(0, |(_, n)| *n)
                    .to_string()
            }));
            row
        })
        .collect();
    table(&headers, &rows)
}
