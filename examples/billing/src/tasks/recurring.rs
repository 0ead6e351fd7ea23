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

#[cfg(test)]
mod tests {
    use party::jiff::SignedDuration;
    use party::testing::{TestParty, call, context};
    use party::{NewTask, Registry};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn the_bill_schedules_the_next_period_thirty_days_after_its_own() {
        let mut ctx = context("recurring_task2")
            .data(json!({"customer": "acme"}))
            .recurring(true)
            .build();
        let late = ctx.timestamp() + SignedDuration::from_hours(5);
        let called = call(&RecurringTask2, &mut ctx).await.unwrap();
        assert_eq!(
            called.next_run,
            Some(ctx.timestamp() + SignedDuration::from_hours(30 * 24))
        );
        assert!(called.enqueued.is_empty());
        // A run that starts late still counts from its scheduled time: no drift.
        let mut late_ctx = context("recurring_task2").recurring(true).now(late).build();
        let called = call(&RecurringTask2, &mut late_ctx).await.unwrap();
        assert_eq!(
            called.next_run,
            Some(late_ctx.timestamp() + SignedDuration::from_hours(30 * 24))
        );
    }

    #[tokio::test]
    async fn a_year_of_bills_runs_twelve_times_and_one_stays_scheduled() {
        let t = TestParty::new(Registry::new().register(RecurringTask2))
            .await
            .unwrap();
        let start = t.now();
        t.add(NewTask::new("recurring_task2").data(json!({"customer": "acme"})))
            .await
            .unwrap();
        let ran = t
            .advance(SignedDuration::from_hours(359 * 24))
            .await
            .unwrap();
        assert_eq!(ran.len(), 12, "days 0, 30, …, 330");
        for (i, r) in ran.iter().enumerate() {
            assert_eq!(
                r.timestamp,
                start + SignedDuration::from_hours(30 * 24 * i as i64)
            );
        }
        t.assert_scheduled("recurring_task2", 1).await;
        t.assert_added("recurring_task2", json!({"customer": "acme"}))
            .await;
    }

    #[tokio::test]
    async fn the_half_hourly_task_fires_every_thirty_minutes_of_a_day() {
        let t = TestParty::new(Registry::new().register(RecurringTask))
            .await
            .unwrap();
        t.assert_nothing_added().await;
        t.add(NewTask::new("recurring_task")).await.unwrap();
        let ran = t.advance(SignedDuration::from_hours(24)).await.unwrap();
        assert_eq!(ran.len(), 49, "at 0:00, 0:30, …, 24:00");
    }
}
