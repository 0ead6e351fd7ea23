//! `party demo`: the seed's three examples end to end, on a fresh SQLite file, with two real
//! workers. Intervals are shortened (and the screen says so); the demo stops by itself and
//! reads the run history back from the store for its summary.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use jiff::SignedDuration;
use party::{ListFilter, NewTask, Party, TaskError, TaskInfo, WorkerConfig, builtin};
use serde_json::json;
use tokio::sync::watch;

use crate::args::DemoArgs;
use crate::signals::Signals;

mod tasks;

use tasks::{Narrator, RecurringTask, RecurringTask2, SampleTask, clock_time, shorten};

fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Run the demo on `db`, or on a new file in the temporary directory.
pub(crate) async fn run(db: Option<String>, args: DemoArgs) -> Result<(), TaskError> {
    let db = match db {
        Some(db) => db,
        None => fresh_database()?,
    };
    let narrator = Narrator::new();
    let runs = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let registry = builtin::registry(false)
        .register(SampleTask {
            narrator: narrator.clone(),
        })
        .register(RecurringTask {
            narrator: narrator.clone(),
            runs: runs.0.clone(),
        })
        .register(RecurringTask2 {
            narrator: narrator.clone(),
            runs: runs.1.clone(),
        });
    let party = Party::connect(&db, registry).await?;
    // As shown: never with its password.
    let shown = party::validate::redact_url(&db);
    let existing = party
        .list(&ListFilter {
            limit: Some(1),
            ..ListFilter::default()
        })
        .await?;
    if !existing.is_empty() {
        return Err(TaskError::invalid(format!(
            "the demo needs an empty database, and {shown} already has tasks; give a new file with \
             --db, or leave --db out to use a fresh temporary one"
        )));
    }

    let minutes = shorten(SignedDuration::from_mins(30));
    let days = shorten(SignedDuration::from_hours(30 * 24));
    say("party demo: the seed's three examples, on a real SQLite store with two real workers.");
    say(&format!("Database: {shown}"));
    say(&format!(
        "Time is shortened in this demo: 30 minutes are {} seconds and 30 days are {} seconds.",
        minutes.as_secs(),
        days.as_secs()
    ));
    say(&format!(
        "The workers stop after {} seconds; times below are UTC time of day.\n",
        args.run_for.as_secs()
    ));

    let sample = party
        .add(NewTask::new("sample_task").data(json!({ "arg1": "hello from the seed" })))
        .await?;
    let recurring = party.add(NewTask::new("recurring_task")).await?;
    let billing = json!({ "customer": "acme", "plan": "monthly" });
    let recurring2 = party
        .add(NewTask::new("recurring_task2").data(billing.clone()))
        .await?;
    say("Added three tasks, all due now:");
    say(&format!(
        "  SampleTask      {sample}  data {{\"arg1\": \"hello from the seed\"}}"
    ));
    say(&format!(
        "  RecurringTask   {recurring}  every 30 minutes: schedule_next_run_in_minutes(30) in on_complete"
    ));
    say(&format!(
        "  RecurringTask2  {recurring2}  every 30 days: schedule_next_run_at(timestamp + 30 days) in on_complete"
    ));
    say("");

    let mut signals = Signals::install()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let run_for = args.run_for.unsigned_abs();
    let timer = tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(run_for) => {}
            () = signals.recv() => say("\n(interrupted: stopping the workers early)"),
        }
        let _ = stop_tx.send(true);
    });
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await.is_ok();
    };
    let workers: Vec<_> = (1..=2)
        .map(|n| {
            party.worker(WorkerConfig {
                concurrency: 2,
                id: Some(format!("demo-worker-{n}")),
                shutdown_grace: std::time::Duration::from_secs(5),
                ..WorkerConfig::default()
            })
        })
        .collect();
    let (a, b) = tokio::join!(
        workers[0].run(stop(stop_rx.clone())),
        workers[1].run(stop(stop_rx))
    );
    let _ = timer.await;
    a?;
    b?;

    say("\nSummary, read back from the store's run history:");
    let sample = party.get(sample).await?;
    say(&format!(
        "  SampleTask      {}: {} attempts ({}), all for timestamp {}",
        sample.state,
        sample.runs.len(),
        sample
            .runs
            .iter()
            .map(|r| format!("attempt {} {}", r.attempt, r.outcome.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        clock_time(sample.timestamp)
    ));
    let recurring = party.get(recurring).await?;
    say(&format!(
        "  RecurringTask   {}",
        describe_recurring(
            &recurring,
            "counted from each run (now + 30 minutes), so they drift"
        )
    ));
    let recurring2 = party.get(recurring2).await?;
    say(&format!(
        "  RecurringTask2  {}",
        describe_recurring(
            &recurring2,
            "counted from the previous timestamp (timestamp + 30 days), so no drift"
        )
    ));

    say("\nSingleton: only one recurring task may exist per handler and data.");
    say("Adding RecurringTask2 again with the same data, keys in another order:");
    let reordered: serde_json::Value =
        serde_json::from_str(r#"{"plan": "monthly", "customer": "acme"}"#).expect("valid JSON");
    match party
        .add(NewTask::new("recurring_task2").data(reordered))
        .await
    {
        Err(e @ TaskError::Duplicate { .. }) => {
            say(&format!("  refused: {e}"));
            say("  (`party add` exits with code 3 here)");
        }
        Err(e) => return Err(e),
        Ok(id) => {
            return Err(TaskError::failed(format!(
                "the duplicate recurring task was accepted as {id}; the singleton rule is broken"
            )));
        }
    }

    say(&format!(
        "\nThe recurring tasks stay scheduled: they never end by themselves. Look around with\n  \
         party --db {shown} list\n  party --db {shown} show {}",
        recurring2.id
    ));
    Ok(())
}

/// Runs of a recurring task and how far apart their timestamps were.
fn describe_recurring(task: &TaskInfo, why: &str) -> String {
    let mut timestamps: Vec<_> = task.runs.iter().map(|r| r.timestamp).collect();
    timestamps.dedup();
    let gaps: Vec<SignedDuration> = timestamps
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .collect();
    let spacing = match (gaps.iter().min(), gaps.iter().max()) {
        (Some(min), Some(max)) if min == max => {
            format!("timestamps exactly {:.6} s apart, {why}", min.as_secs_f64())
        }
        (Some(min), Some(max)) => format!(
            "timestamps {:.6} to {:.6} s apart, {why}",
            min.as_secs_f64(),
            max.as_secs_f64()
        ),
        _ => "too few runs to compare timestamps".to_string(),
    };
    format!(
        "{}: {} runs, next at {}; {spacing}",
        task.state,
        task.runs.len(),
        clock_time(task.timestamp)
    )
}

/// A new SQLite file in a new directory under the system's temporary directory.
fn fresh_database() -> Result<String, TaskError> {
    let stamp = jiff::Timestamp::now().as_millisecond();
    let dir = std::env::temp_dir().join(format!("party-demo-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        TaskError::failed(format!(
            "cannot create {} for the demo database ({e}); give a file with --db",
            dir.display()
        ))
    })?;
    let path = dir.join("party-demo.db");
    path.to_str().map(str::to_string).ok_or_else(|| {
        TaskError::failed(format!(
            "the temporary directory {} is not valid UTF-8; give a file with --db",
            dir.display()
        ))
    })
}
