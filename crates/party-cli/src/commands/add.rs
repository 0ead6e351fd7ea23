//! `party add`: create a task and print its id.

use jiff::Timestamp;
use party::{NewTask, Party, TaskError};

use crate::args::{AddArgs, Recurrence, When};
use crate::output;

/// Create the task and print its id alone on stdout.
pub(crate) async fn run(party: &Party, args: AddArgs) -> Result<(), TaskError> {
    let mut task = NewTask::new(args.handler)
        .queue(args.queue)
        .priority(args.priority);
    if let Some(data) = args.data {
        task = task.data(data);
    }
    if let Some(n) = args.max_attempts {
        task = task.max_attempts(n);
    }
    if let Some(at) = first_time(&args.when, party.clock().now())? {
        task = task.at(at);
    }
    let task = recurrence(task, &args.recurrence);
    let id = party.add(task).await?;
    output::print(&format!("{id}\n"))
}

/// The first occurrence's time from `--at` or `--in`; `None` means now.
fn first_time(when: &When, now: Timestamp) -> Result<Option<Timestamp>, TaskError> {
    match (when.at, when.in_) {
        (Some(at), _) => Ok(Some(at)),
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
fn recurrence(task: NewTask, rec: &Recurrence) -> NewTask {
    match rec.every {
        Some(every) => task.every(every),
        None => task,
    }
}
