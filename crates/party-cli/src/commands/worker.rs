//! `party worker`: run tasks until stopped, or until idle with `--until-idle`.

use party::builtin::{self, ShellTask};
use party::{Party, Registry, TaskError, WorkerConfig};

use crate::args::WorkerArgs;
use crate::signals::Signals;

/// Run a worker with the user's handlers and the built-ins (`shell` only with `--allow-shell`,
/// its commands seeing the variables `--shell-env` names).
pub(crate) async fn run(db: &str, registry: Registry, args: WorkerArgs) -> Result<(), TaskError> {
    // Before anything that may take a while (connecting, migrating): a SIGTERM that arrives
    // meanwhile is then a graceful stop once the worker starts, not the end of the process.
    let mut signals = Signals::install()?;
    let retention = args.retention.retention()?;
    let mut builtins = builtin::registry(false);
    if args.allow_shell {
        let shell = args
            .shell_env
            .iter()
            .fold(ShellTask::new(), |shell, name| shell.allow_env(name));
        builtins = builtins.register(shell);
    }
    let registry = builtins.merge(registry);
    let party = Party::connect(db, registry).await?;
    #[cfg(feature = "serve")]
    let metrics = match args.metrics {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    #[cfg(not(feature = "serve"))]
    let metrics = None;
    let worker = party.worker(WorkerConfig {
        concurrency: args.concurrency,
        queues: args.queues,
        lease: args.lease.unsigned_abs(),
        shutdown_grace: args.grace.unsigned_abs(),
        prefetch: args.prefetch,
        retention,
        metrics,
        ..WorkerConfig::default()
    });
    // The first signal stops claiming and gives running tasks the grace period; a second one
    // ends the grace at once: running attempts are interrupted and released, recorded as lost,
    // before the process exits. The same with `--until-idle`, which otherwise ends once idle.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let forced = std::sync::atomic::AtomicBool::new(false);
    let stopper = async {
        signals.recv().await;
        tracing::info!(
            "stopping gracefully: running tasks may finish; press Ctrl-C again to stop them now"
        );
        let _ = first_tx.send(());
        signals.recv().await;
        forced.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("stopping now: interrupting running tasks and releasing them");
        worker.interrupt();
        std::future::pending::<()>().await
    };
    let shutdown = async {
        let _ = first_rx.await;
    };
    let report = tokio::select! {
        r = async {
            if args.until_idle {
                worker.run_until_idle_or(shutdown).await
            } else {
                worker.run(shutdown).await
            }
        } => r?,
        () = stopper => unreachable!("the stopper never completes"),
    };
    let forced = forced.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        attempts = report.attempts,
        succeeded = report.succeeded,
        failed = report.failed,
        cancelled = report.cancelled,
        refused = report.stale,
        "worker done"
    );
    if forced {
        return Err(TaskError::failed(
            "stopped by a second signal: the tasks that were running were interrupted, recorded \
             as lost and released to run again",
        ));
    }
    Ok(())
}

/// Serve the worker's metrics on `addr` (`GET /metrics`) for as long as the process runs.
#[cfg(feature = "serve")]
async fn serve_metrics(
    addr: std::net::SocketAddr,
) -> Result<std::sync::Arc<party::metrics::WorkerMetrics>, TaskError> {
    let metrics = std::sync::Arc::new(party::metrics::WorkerMetrics::new());
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        TaskError::invalid(format!(
            "cannot listen on {addr} for --metrics: {e}; give another address"
        ))
    })?;
    let app = party_serve::worker_metrics_router(metrics.clone());
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving worker metrics");
    tokio::spawn(party_serve::serve(app, listener, std::future::pending()));
    Ok(metrics)
}
