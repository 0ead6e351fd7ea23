//! `party add`: create a task and print its id.

use jiff::Timestamp;
use party::{NewTask, Party, TaskError};

use crate::args::{AddArgs, Recurrence, When};
use crate::output;

/// Create the task and print its id alone on stdout.
pub(crate) async fn run(party: &Party, args: AddArgs) -> Result<(), TaskError> {
    if let Some(path) = &args.from {
        return from_file(party, path).await;
    }
    let handler = args.handler.unwrap_or_default();
    let mut task = NewTask::new(handler)
        .queue(args.queue)
        .priority(args.priority);
    if let Some(data) = args.data {
        task = task.data(data);
    }
    if let Some(n) = args.max_attempts {
        task = task.max_attempts(n);
    }
    if let Some(key) = args.unique_key {
        task = task.unique_key(key);
    }
    if let Some(window) = args.unique_for {
        task = task.unique_for(window);
    }
    if let Some(at) = first_time(&args.when, party.clock().now())? {
        task = task.at(at);
    }
    let task = recurrence(task, &args.recurrence)?;
    let id = party.add(task).await?;
    output::print(&format!("{id}\n"))
}

/// `party add --from FILE`: every line a task, all in one transaction; prints the ids, one a line.
async fn from_file(party: &Party, path: &std::path::Path) -> Result<(), TaskError> {
    let file = std::fs::File::open(path).map_err(|e| {
        TaskError::invalid(format!(
            "cannot read {}: {e}; give a JSON Lines file, one task per line",
            path.display()
        ))
    })?;
    let ids = crate::bulk::add_from(party, std::io::BufReader::new(file)).await?;
    let mut out = String::with_capacity(ids.len() * 25);
    for id in ids {
        out.push_str(&id.to_string());
        out.push('\n');
    }
    output::print(&out)
}

/// The first occurrence's time from `--at` or `--in`; `None` means now.
fn first_time(when: &When, now: Timestamp) -> Result<Option<Timestamp>, TaskError> {
    match (when.at, when.in_) {
        (Some(at), _) => party::validate::not_past(at, now, "--at").map(|()| Some(at)),
        (None, Some(d)) if d.is_zero() => Ok(None),
        (None, Some(d)) => now.checked_add(d).map(Some).map_err(|_| {
            TaskError::invalid(format!(
                "--in {d:#} ends beyond the last time party can store; give a shorter duration"
            ))
        }),
        (None, None) => Ok(None),
    }
}

/// Attach the recurrence rule the options describe.
fn recurrence(task: NewTask, rec: &Recurrence) -> Result<NewTask, TaskError> {
    let tz = rec.tz.as_deref();
    let rule = if let Some(every) = rec.every {
        let mut r = party::recurrence::Recurrence::every(every).map_err(TaskError::invalid)?;
        r.tz = rec.tz.clone();
        r
    } else if let Some(expr) = &rec.cron {
        party::recurrence::Recurrence::cron(expr, tz).map_err(TaskError::invalid)?
    } else if let (Some(day), Some(at)) = (rec.monthly_on, &rec.at_time) {
        party::recurrence::Recurrence::monthly_on(day, at, tz).map_err(TaskError::invalid)?
    } else {
        return Ok(task);
    };
    let mut rule = rule;
    if let Some(m) = rec.missed {
        rule = rule.with_missed(m);
    }
    if let Some(n) = rec.nonexistent {
        rule = rule.with_nonexistent(n);
    }
    if let Some(r) = rec.repeated {
        rule = rule.with_repeated(r);
    }
    Ok(task.recurrence(rule))
}
