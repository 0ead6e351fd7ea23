//! Handlers that ship with party, so the binary is useful on its own: `noop`, `log`, `sleep`,
//! `shell`.

use std::process::Stdio;

use crate::TaskError;
use crate::clock::format_time;
use crate::task::{Registry, Task, TaskContext};

/// Does nothing and succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

impl Task for Noop {
    const NAME: &'static str = "noop";

    async fn run(&self, _ctx: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Prints its data, with the task's id, timestamp and attempt, to standard output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log;

impl Task for Log {
    const NAME: &'static str = "log";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        println!(
            "[log] task {} (attempt {}, scheduled for {}): {}",
            ctx.id(),
            ctx.attempts(),
            format_time(ctx.timestamp()),
            ctx.data()
        );
        Ok(())
    }
}

/// Waits `data.ms` milliseconds (default 100), then succeeds: a stand-in for slow work when
/// trying out concurrency, timeouts and shutdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

impl Task for Sleep {
    const NAME: &'static str = "sleep";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let ms = match ctx.data().get("ms") {
            None => 100,
            Some(v) => v.as_u64().ok_or_else(|| {
                TaskError::failed(format!(
                    "sleep task data \"ms\" must be a whole number of milliseconds, not {v}"
                ))
            })?,
        };
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(())
    }
}

/// Runs `data.cmd` with `sh -c`; a non-zero exit is a failed attempt. The task's attributes
/// reach the command as `PARTY_TASK_ID`, `PARTY_TIMESTAMP`, `PARTY_LAST_RUN_ON`,
/// `PARTY_ATTEMPTS`, `PARTY_IS_RECURRING` and `PARTY_DATA`. The child is killed if the attempt
/// times out or is interrupted. Register it only where running shell commands from the
/// database is acceptable (the CLI's worker requires `--allow-shell`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

impl Task for Shell {
    const NAME: &'static str = "shell";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let cmd = ctx
            .data()
            .get("cmd")
            .and_then(|c| c.as_str())
            .ok_or_else(|| {
                TaskError::failed(
                    "shell task data needs a \"cmd\" string, e.g. {\"cmd\": \"echo hi\"}",
                )
            })?;
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("PARTY_TASK_ID", ctx.id().to_string())
            .env("PARTY_TIMESTAMP", format_time(ctx.timestamp()))
            .env(
                "PARTY_LAST_RUN_ON",
                ctx.last_run_on().map(format_time).unwrap_or_default(),
            )
            .env("PARTY_ATTEMPTS", ctx.attempts().to_string())
            .env(
                "PARTY_IS_RECURRING",
                if ctx.is_recurring() { "true" } else { "false" },
            )
            .env("PARTY_DATA", ctx.data().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // `spawn` keeps the stdout set above; `output()` would capture and drop it.
            .spawn()
            .map_err(|e| TaskError::failed(format!("cannot start sh: {e}")))?
            .wait_with_output()
            .await
            .map_err(|e| TaskError::failed(format!("sh failed: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(1000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(TaskError::failed(format!(
            "command exited with {}: {}",
            output.status,
            tail.trim()
        )))
    }
}

/// The built-in handlers; `shell` only when `allow_shell` is set.
pub fn registry(allow_shell: bool) -> Registry {
    let r = Registry::new().register(Noop).register(Log).register(Sleep);
    if allow_shell { r.register(Shell) } else { r }
}
