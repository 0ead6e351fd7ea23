//! Recurring tasks: each schedules its own next run in `on_complete`. A recurring task is a
//! singleton per data: adding a second one with the same data is refused.

use party::jiff::SignedDuration;
use party::{Task, TaskContext, TaskError, format_time};
use serde::Deserialize;

/// Runs every 30 minutes, counted from when each run happens.
pub(crate) struct RecurringTask;

impl Task for RecurringTask {
    const NAME: &'static str = "recurring_task";
    const IS_RECURRING: bool = true;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        println!(
            "recurring_task: run scheduled for {}",
            format_time(ctx.timestamp())
        );
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.schedule_next_run_in_minutes(30)
    }
}

/// What a monthly bill needs to know; read from the task's data.
#[derive(Debug, Deserialize)]
struct Bill {
    /// Who is billed.
    customer: Option<String>,
}

/// Runs every 30 days, counted from its scheduled timestamp, so the billing periods never
/// drift however late a run starts.
pub(crate) struct RecurringTask2;

impl Task for RecurringTask2 {
    const NAME: &'static str = "recurring_task2";
    const IS_RECURRING: bool = true;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let bill: Bill = ctx.data_as()?;
        println!(
            "recurring_task2: billing {} for the period starting {} (last run {})",
            bill.customer.as_deref().unwrap_or("nobody"),
            format_time(ctx.timestamp()),
            ctx.last_run_on()
                .map_or_else(|| "never".to_string(), format_time)
        );
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ctx.schedule_next_run_at(ctx.timestamp() + SignedDuration::from_hours(30 * 24))
    }
}
