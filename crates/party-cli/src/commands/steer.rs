//! `party cancel` and `party retry`.

use party::{Party, TaskError, TaskId};

use crate::output;

/// Cancel a task that is not running.
pub(crate) async fn cancel(party: &Party, id: TaskId) -> Result<(), TaskError> {
    let task = party.cancel(id).await?;
    output::print(&format!(
        "cancelled task {} ('{}'); `party retry {}` brings it back\n",
        task.id, task.handler, task.id
    ))
}

/// Make a dead, cancelled or retrying task due now.
pub(crate) async fn retry(party: &Party, id: TaskId) -> Result<(), TaskError> {
    let task = party.retry(id).await?;
    output::print(&format!(
        "task {} ('{}') is due now: attempt {} of {} comes next\n",
        task.id,
        task.handler,
        task.attempts + 1,
        task.max_attempts
    ))
}
