//! `party cancel` and `party retry`: one task by id, or every task matching filters in one
//! statement.

use party::{Party, SteerFilter, TaskError};
use serde_json::json;

use crate::args::SteerArgs;
use crate::output;

/// Cancel a task (a running one is stopped by its worker), or every matching task.
pub(crate) async fn cancel(party: &Party, args: SteerArgs) -> Result<(), TaskError> {
    let Some(id) = args.id else {
        let n = party.cancel_matching(&filter(&args, "cancel")?).await?;
        return report(args.json, "cancelled", n);
    };
    let task = party.cancel(id).await?;
    if args.json {
        return output::print_json(&task);
    }
    if task.cancel_requested {
        return output::print(&format!(
            "cancelling task {} ('{}'): worker {} stops it within its grace period; \
             `party show {}` tells when it is cancelled\n",
            task.id,
            task.handler,
            task.worker.as_deref().unwrap_or("?"),
            task.id
        ));
    }
    output::print(&format!(
        "cancelled task {} ('{}'); `party retry {}` brings it back\n",
        task.id, task.handler, task.id
    ))
}

/// Make a dead, cancelled, retrying or scheduled task due now, or every matching one.
pub(crate) async fn retry(party: &Party, args: SteerArgs) -> Result<(), TaskError> {
    let Some(id) = args.id else {
        let n = party.retry_matching(&filter(&args, "retry")?).await?;
        return report(args.json, "retried", n);
    };
    let task = party.retry(id).await?;
    if args.json {
        return output::print_json(&task);
    }
    output::print(&format!(
        "task {} ('{}') is due now: attempt {} of {} comes next\n",
        task.id,
        task.handler,
        task.attempts + 1,
        task.max_attempts
    ))
}

fn filter(args: &SteerArgs, verb: &str) -> Result<SteerFilter, TaskError> {
    if args.state.is_none() && args.handler.is_none() && args.queue.is_none() && args.data.is_none()
    {
        return Err(TaskError::invalid(format!(
            "give a task id, or filters (--state, --handler, --queue, --data) to {verb} every task \
             matching them; `party {verb} --help` shows both"
        )));
    }
    Ok(SteerFilter {
        state: args.state,
        handler: args.handler.clone(),
        queue: args.queue.clone(),
        data: args.data.clone(),
    })
}

fn report(json: bool, done: &str, n: u64) -> Result<(), TaskError> {
    if json {
        return output::print_json(&json!({ done: n }));
    }
    output::print(&format!(
        "{done} {n} task{}\n",
        if n == 1 { "" } else { "s" }
    ))
}
