//! A standalone worker: runs this application's handlers until SIGTERM or Ctrl-C, then stops
//! taking tasks and gives the running ones `PARTY_WORKER_GRACE` to finish. A second signal
//! interrupts them at once; they are released and run again elsewhere. Settings come from the
//! environment, the way a systemd unit gives them (docs/SYSTEMD.md):
//!
//! | variable | default |
//! | --- | --- |
//! | `PARTY_DATABASE_URL` | `party.db` |
//! | `PARTY_WORKER_CONCURRENCY` | `10` |
//! | `PARTY_WORKER_GRACE` | `30s` |

use std::process::ExitCode;

use party::{Party, TaskError, WorkerConfig, validate};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), TaskError> {
    let config = config_from_env()?;
    // Listen before anything else, so an early SIGTERM is not lost.
    let signals = count_signals()?;
    let url = std::env::var("PARTY_DATABASE_URL").unwrap_or_else(|_| "party.db".to_string());
    let party = Party::connect(&url, party_example_worker::registry()).await?;
    let worker = party.worker(config);

    let run = worker.run(signalled(signals.clone(), 1));
    tokio::pin!(run);
    let (report, forced) = tokio::select! {
        report = &mut run => (report?, false),
        () = signalled(signals, 2) => {
            tracing::warn!("second signal: interrupting running tasks");
            worker.interrupt();
            (run.await?, true)
        }
    };
    tracing::info!(
        attempts = report.attempts,
        succeeded = report.succeeded,
        failed = report.failed,
        cancelled = report.cancelled,
        "tasks run before the stop"
    );
    if forced {
        // Not a clean stop: exit non-zero, as `party worker` does, so a supervisor sees it.
        return Err(TaskError::failed(
            "stopped by a second signal: the running tasks were interrupted and released",
        ));
    }
    Ok(())
}

/// The worker's settings from `PARTY_WORKER_*`, checked by the same rules as `party worker`.
fn config_from_env() -> Result<WorkerConfig, TaskError> {
    let mut config = WorkerConfig::default();
    if let Ok(n) = std::env::var("PARTY_WORKER_CONCURRENCY") {
        let n = validate::whole_number(
            &n,
            "PARTY_WORKER_CONCURRENCY",
            1,
            validate::MAX_CONCURRENCY as i64,
            "16",
        )?;
        config.concurrency = n as usize;
    }
    if let Ok(grace) = std::env::var("PARTY_WORKER_GRACE") {
        config.shutdown_grace = validate::grace(&grace)?.unsigned_abs();
    }
    Ok(config)
}

/// Counts SIGTERM and SIGINT as they arrive.
fn count_signals() -> Result<watch::Receiver<u32>, TaskError> {
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| TaskError::failed(format!("cannot listen for {name}: {e}")))
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

/// Completes once `n` signals have arrived.
async fn signalled(mut signals: watch::Receiver<u32>, n: u32) {
    if signals.wait_for(|seen| *seen >= n).await.is_err() {
        std::future::pending::<()>().await;
    }
}
