//! The seed's three handlers as the demo runs them: the same shapes as in a user's `tasks/`
//! module (see `examples/billing`), with the intervals shortened and every run narrated.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use party::{Task, TaskContext, TaskError, format_time};

/// Demo minutes: 30 minutes become 2 seconds.
pub(crate) const MINUTES_FACTOR: i32 = 900;
/// Demo days: 30 days become 5 seconds.
pub(crate) const DAYS_FACTOR: i32 = 518_400;

/// The seed's intervals in demo time: shorter than a day is divided by [`MINUTES_FACTOR`],
/// longer by [`DAYS_FACTOR`].
pub(crate) fn shorten(real: SignedDuration) -> SignedDuration {
    if real < SignedDuration::from_hours(24) {
        real / MINUTES_FACTOR
    } else {
        real / DAYS_FACTOR
    }
}

/// Narrates what the handlers do, each line stamped with the seconds since the demo began.
#[derive(Debug, Clone)]
pub(crate) struct Narrator {
    start: Instant,
}

impl Narrator {
    pub(crate) fn new() -> Narrator {
        Narrator {
            start: Instant::now(),
        }
    }

    /// Print one line; a closed stdout is ignored (the demo goes on).
    pub(crate) fn say(&self, who: &str, text: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let _ = writeln!(std::io::stdout(), "[{secs:5.1}s] {who:<15} {text}");
    }
}

/// The time of day of `t` in UTC with microseconds, e.g. `04:03:11.123456`.
pub(crate) fn clock_time(t: Timestamp) -> String {
    let full = format_time(t);
    full[11..full.len() - 1].to_string()
}

/// The seed's `SampleTask`: prints its data and its attempt. Its first attempt fails on
/// purpose, so the retry shows attempts going 1 → 2 with the same timestamp.
pub(crate) struct SampleTask {
    pub(crate) narrator: Narrator,
}

impl Task for SampleTask {
    const NAME: &'static str = "sample_task";
    const MAX_ATTEMPTS: u32 = 3;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let say = |text: &str| self.narrator.say("SampleTask", text);
        say(&format!(
            "data arg1 = {}",
            ctx.data().get("arg1").cloned().unwrap_or_default()
        ));
        say(&format!(
            "Attempting run {} of task {} which was scheduled on {}.",
            ctx.attempts(),
            ctx.id(),
            format_time(ctx.timestamp())
        ));
        if ctx.attempts() == 1 {
            say("-> fails on purpose, to show a retry (next attempt in 1 s)");
            return Err(TaskError::failed(
                "the demo fails the first attempt on purpose",
            ));
        }
        say("-> succeeds: same timestamp, attempts now 2");
        Ok(())
    }

    fn backoff(&self, _attempt: u32) -> SignedDuration {
        SignedDuration::from_secs(1)
    }
}

/// The seed's `RecurringTask`: runs every 30 minutes, counted from when each run happens.
pub(crate) struct RecurringTask {
    pub(crate) narrator: Narrator,
    pub(crate) runs: Arc<AtomicU32>,
}

impl Task for RecurringTask {
    const NAME: &'static str = "recurring_task";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        // Perform something.
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        // schedule_next_run(minutes=30), in demo time.
        ctx.schedule_next_run_in(shorten(SignedDuration::from_mins(30)))?;
        narrate_run(
            &self.narrator,
            "RecurringTask",
            &self.runs,
            ctx,
            "now + 30 minutes",
        );
        Ok(())
    }
}

/// The seed's `RecurringTask2`: runs every 30 days, counted from its scheduled timestamp.
pub(crate) struct RecurringTask2 {
    pub(crate) narrator: Narrator,
    pub(crate) runs: Arc<AtomicU32>,
}

impl Task for RecurringTask2 {
    const NAME: &'static str = "recurring_task2";
    const IS_RECURRING: bool = true;

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        // Perform something.
        Ok(())
    }

    async fn on_complete(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        // schedule_next_run(timestamp=self.timestamp + timedelta(days=30)), in demo time.
        ctx.schedule_next_run_at(ctx.timestamp() + shorten(SignedDuration::from_hours(30 * 24)))?;
        narrate_run(
            &self.narrator,
            "RecurringTask2",
            &self.runs,
            ctx,
            "timestamp + 30 days",
        );
        Ok(())
    }
}

fn narrate_run(narrator: &Narrator, who: &str, runs: &AtomicU32, ctx: &TaskContext, rule: &str) {
    let n = runs.fetch_add(1, Ordering::Relaxed) + 1;
    narrator.say(
        who,
        &format!(
            "run {n}: timestamp {}  last_run_on {}  attempts {}  -> next {} ({rule})",
            clock_time(ctx.timestamp()),
            ctx.last_run_on()
                .map_or_else(|| format!("{:<15}", "-"), clock_time),
            ctx.attempts(),
            ctx.next_run().map_or_else(|| "-".to_string(), clock_time),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_intervals_shrink_to_seconds() {
        assert_eq!(
            shorten(SignedDuration::from_mins(30)),
            SignedDuration::from_secs(2)
        );
        assert_eq!(
            shorten(SignedDuration::from_hours(30 * 24)),
            SignedDuration::from_secs(5)
        );
    }

    #[test]
    fn clock_time_keeps_microseconds() {
        let t: Timestamp = "2027-01-31T09:05:07.123456Z".parse().unwrap();
        assert_eq!(clock_time(t), "09:05:07.123456");
    }
}
