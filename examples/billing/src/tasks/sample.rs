//! A one-off task that prints its data and which attempt this is.

use party::{Task, TaskContext, TaskError, format_time};

/// Prints `data.arg1`, then the attempt, the id and the scheduled timestamp.
pub(crate) struct SampleTask;

impl Task for SampleTask {
    const NAME: &'static str = "sample_task";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        println!("{}", ctx.data().get("arg1").cloned().unwrap_or_default());
        println!(
            "Attempting run {} of task {} which was scheduled on {}.",
            ctx.attempts(),
            ctx.id(),
            format_time(ctx.timestamp())
        );
        Ok(())
    }
}
