//! `party worker`: run tasks until stopped, or until idle with `--until-idle`.

use party::builtin::{self, ShellTask};
use party::{Party, Registry, TaskError, WorkerConfig};

use crate::args::WorkerArgs;
use crate::signals::Signals;

/// Run a worker with the user's handlers and the built-ins (`shell` only with `--allow-shell`,
/// its commands seeing the variables `--shell-env` names).
pub(crate) async fn run(db: &str, registry: Registry, args: WorkerArgs) -> Result<(), TaskError> {
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
    let worker = party.worker(WorkerConfig {
        concurrency: args.concurrency,
        queues: args.queues,
        lease: args.lease.unsigned_abs(),
        shutdown_grace: args.grace.unsigned_abs(),
        prefetch: args.prefetch,
        ..WorkerConfig::default()
    });
    let mut signals = Signals::install()?;
    let report = if args.until_idle {
        tokio::select! {
            report = worker.run_until_idle() => report?,
            () = signals.recv() => {
                return Err(TaskError::failed(
                    "interrupted before the worker was idle; the tasks it was running are \
                     released to other workers when their leases end",
                ));
            }
        }
    } else {
        worker.run(signals.graceful()).await?
    };
    tracing::info!(
        attempts = report.attempts,
        succeeded = report.succeeded,
        failed = report.failed,
        "worker done"
    );
    Ok(())
}
