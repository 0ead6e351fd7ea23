//! Handlers that ship with party, so the binary is useful on its own: `noop`, `log`, `sleep`,
//! `shell`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

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
        let ms =
            sleep_ms(ctx.data()).map_err(|e| TaskError::failed(format!("sleep task data: {e}")))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    }

    fn check(&self, data: &Value) -> Result<(), String> {
        sleep_ms(data).map(|_| ())
    }
}

/// `data.ms` of a `sleep` task: a whole number of milliseconds, 100 when absent.
fn sleep_ms(data: &Value) -> Result<u64, String> {
    match data.get("ms") {
        None => Ok(100),
        Some(v) => v.as_u64().ok_or_else(|| {
            format!(
                "\"ms\" must be a whole number of milliseconds (0 or more), not {}",
                describe(v)
            )
        }),
    }
}

/// A short description of a JSON value for a message: numbers as written, other kinds by name
/// (a long string is not echoed back).
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Runs `data.cmd` with `sh -c`; a non-zero exit is a failed attempt. The same as
/// [`ShellTask::new()`]: the command sees only `PATH`, `HOME` and the task's `PARTY_*`
/// variables (see [`ShellTask`]). Register it only where running shell commands from the
/// database is acceptable (the CLI's worker requires `--allow-shell`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

impl Task for Shell {
    const NAME: &'static str = "shell";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        run_shell(ctx, &[]).await
    }

    fn check(&self, data: &Value) -> Result<(), String> {
        shell_cmd(data).map(|_| ())
    }
}

/// The `shell` handler with settings: which variables of the worker's environment its commands
/// may see.
///
/// Each command runs as `sh -c CMD` in a process group of its own, with a clean environment:
///
/// - `PATH` (the worker's, or `/usr/local/bin:/usr/bin:/bin` when it has none) and `HOME`
///   (when the worker has one);
/// - the task's attributes: `PARTY_TASK_ID`, `PARTY_TIMESTAMP`, `PARTY_LAST_RUN_ON`,
///   `PARTY_ATTEMPTS`, `PARTY_IS_RECURRING` and `PARTY_DATA`;
/// - the variables named with [`ShellTask::allow_env`], with the worker's values, when set.
///
/// Nothing else of the worker's environment reaches the command: not the database URL
/// (`PARTY_DATABASE_URL`), not a token. Names starting with `PARTY_` are reserved for the
/// task's attributes and never taken from the worker's environment.
///
/// When an attempt ends before the command does (it timed out, the worker lost the lease or
/// shut down after its grace period, or the attempt was cancelled), the whole process group is
/// ended: `SIGTERM` at once, `SIGKILL` [`KILL_AFTER`] later for whatever is left, so no process
/// the command started keeps running beside the next attempt. A command that exits on its own
/// is not touched further.
///
/// # Example
/// ```
/// use party::Registry;
/// use party::builtin::ShellTask;
///
/// // Commands may read AWS_PROFILE and LANG from the worker's environment, and nothing else.
/// let registry = Registry::new().register(ShellTask::new().allow_env("AWS_PROFILE").allow_env("LANG"));
/// assert!(registry.contains("shell"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShellTask {
    allowed_env: Vec<String>,
}

impl ShellTask {
    /// A shell handler whose commands see no variable of the worker's environment beyond
    /// `PATH` and `HOME`.
    pub fn new() -> ShellTask {
        ShellTask::default()
    }

    /// Also pass the worker's `name` variable, when it is set, to every command.
    pub fn allow_env(mut self, name: impl Into<String>) -> ShellTask {
        let name = name.into();
        if !self.allowed_env.contains(&name) {
            self.allowed_env.push(name);
        }
        self
    }

    /// The variables of the worker's environment passed on, as given to
    /// [`ShellTask::allow_env`].
    pub fn allowed_env(&self) -> &[String] {
        &self.allowed_env
    }
}

impl Task for ShellTask {
    const NAME: &'static str = "shell";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        run_shell(ctx, &self.allowed_env).await
    }

    fn check(&self, data: &Value) -> Result<(), String> {
        shell_cmd(data).map(|_| ())
    }
}

/// How long a shell task's process group has, after `SIGTERM`, before `SIGKILL` ends what is
/// left of it.
pub const KILL_AFTER: Duration = Duration::from_secs(2);

/// The longest command a `shell` task takes, in bytes.
pub const MAX_SHELL_CMD_LEN: usize = 65_536;

/// The longest task data a `shell` task takes, in bytes of its JSON text: the command gets it
/// in one environment variable, `PARTY_DATA`, and Linux starts no program with a variable
/// (`NAME=value` and its NUL) over 128 KiB.
pub const MAX_SHELL_DATA_LEN: usize = 128 * 1024 - "PARTY_DATA=".len() - 1;

/// `data.cmd` of a `shell` task: a non-empty string of at most [`MAX_SHELL_CMD_LEN`] bytes
/// without NUL characters, in data of at most [`MAX_SHELL_DATA_LEN`] bytes. Checked when the
/// task is added and again before it runs.
fn shell_cmd(data: &Value) -> Result<&str, String> {
    const EXAMPLE: &str = "e.g. {\"cmd\": \"echo hi\"}";
    let len = data.to_string().len();
    if len > MAX_SHELL_DATA_LEN {
        return Err(format!(
            "the data is {len} bytes as JSON, over the {MAX_SHELL_DATA_LEN} a command's \
             environment can carry (PARTY_DATA): keep large data elsewhere (a file, a table) \
             and give the command its name"
        ));
    }
    match data.get("cmd") {
        None => Err(format!(
            "\"cmd\" is missing: give the command to run, {EXAMPLE}"
        )),
        Some(Value::String(c)) if c.trim().is_empty() => Err(format!(
            "\"cmd\" is empty: give the command to run, {EXAMPLE}"
        )),
        Some(Value::String(c)) if c.len() > MAX_SHELL_CMD_LEN => Err(format!(
            "\"cmd\" is {} bytes long, over the limit of {MAX_SHELL_CMD_LEN}: put a long \
             script in a file and run that file",
            c.len()
        )),
        Some(Value::String(c)) if c.contains('\0') => {
            Err("\"cmd\" contains a NUL character, which a command line cannot carry".to_string())
        }
        Some(Value::String(c)) => Ok(c),
        Some(other) => Err(format!(
            "\"cmd\" must be a string with the command to run, {EXAMPLE}, not {}",
            describe(other)
        )),
    }
}

/// The `PATH` a shell command gets when the worker has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The prefix of the variables that carry the task's attributes.
const RESERVED_PREFIX: &str = "PARTY_";

async fn run_shell(ctx: &TaskContext, allowed_env: &[String]) -> Result<(), TaskError> {
    let cmd =
        shell_cmd(ctx.data()).map_err(|e| TaskError::failed(format!("shell task data: {e}")))?;
    let mut command = tokio::process::Command::new("sh");
    // `--` ends sh's options: a command that starts with `-` is a command, not an option.
    command.arg("-c").arg("--").arg(cmd).env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    if let Some(home) = std::env::var_os("HOME") {
        command.env("HOME", home);
    }
    for name in allowed_env {
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
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
        .stderr(Stdio::piped());
    // Its own process group, so the command and everything it starts can be ended together,
    // and a Ctrl-C at the worker's terminal reaches the worker alone (it decides what stops).
    #[cfg(unix)]
    command.process_group(0);
    // `spawn` keeps the stdout set above; `output()` would capture and drop it.
    let mut child = command
        .spawn()
        .map_err(|e| TaskError::failed(format!("cannot start sh: {e}")))?;
    // Ends the group if this future is dropped before the command is done (timeout, lost
    // lease, shutdown, cancellation). tokio reaps `sh` itself once it has exited.
    let mut group = GroupGuard(child.id());
    // Standard error is read as it comes, keeping only its tail, by a task of its own: a
    // process the command left running (`server &`) may hold the pipe open long after `sh`
    // exits, and the attempt ends with `sh`, not with the pipe.
    let tail = Arc::new(Mutex::new(StderrTail::default()));
    let reader = child.stderr.take().map(|mut pipe| {
        let tail = tail.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                tail.lock().unwrap().push(&buf[..n]);
            }
        })
    });
    let status = child
        .wait()
        .await
        .map_err(|e| TaskError::failed(format!("sh failed: {e}")))?;
    group.disarm();
    if status.success() {
        return Ok(());
    }
    // What `sh` wrote last may still be in the pipe: read it while the pipe has more, for a
    // moment at most (a process left running keeps the pipe open; it is left alone, its
    // output read and dropped).
    if let Some(reader) = reader {
        let _ = tokio::time::timeout(STDERR_AFTER_EXIT, reader).await;
    }
    let stderr = tail.lock().unwrap().text();
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
        status,
        tail.trim()
    )))
}

/// How long a failed command's standard error is still read after `sh` exits.
const STDERR_AFTER_EXIT: Duration = Duration::from_millis(200);

/// The last bytes of a command's standard error: enough for the 1,000 characters a run's
/// error keeps (4 bytes a character at most), whatever the command writes.
#[derive(Default)]
struct StderrTail(Vec<u8>);

impl StderrTail {
    const KEEP: usize = 4 * 1000;

    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * Self::KEEP {
            let cut = self.0.len() - Self::KEEP;
            self.0.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let start = self.0.len().saturating_sub(Self::KEEP);
        String::from_utf8_lossy(&self.0[start..]).into_owned()
    }
}

/// The process group of a running shell command (its id is the id of `sh`, the group's
/// leader). Dropped while armed, it ends the group.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    /// The command is done: leave the group alone.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            end_group(pgid);
        }
    }
}

/// Send `SIGTERM` to the process group `pgid`, then `SIGKILL` after [`KILL_AFTER`] if any of
/// it is left.
///
/// Signalling is done by a small `sh` process of its own (the `kill` builtin takes a negative
/// id for a group), so the library needs no unsafe code, and the `SIGKILL` still comes when
/// the worker exits right after dropping the attempt (as it does at the end of its grace
/// period). The group's id cannot be taken by a new process while any member of the group is
/// alive, and the loop stops as soon as none is.
fn end_group(pgid: u32) {
    const SCRIPT: &str = r#"kill -TERM -"$1" 2>/dev/null || exit 0
n=0
while kill -0 -"$1" 2>/dev/null; do
  if [ "$n" -ge "$2" ]; then kill -KILL -"$1" 2>/dev/null; exit 0; fi
  n=$((n + 1))
  sleep 0.05
done"#;
    let polls = (KILL_AFTER.as_millis() / 50).max(1).to_string();
    let spawned = std::process::Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("sh")
        .arg(pgid.to_string())
        .arg(polls)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        // Reap it without blocking the caller; if the worker exits first, it runs on alone.
        Ok(mut reaper) => {
            let _ = std::thread::Builder::new()
                .name("party-shell-reaper".into())
                .spawn(move || reaper.wait());
        }
        Err(e) => tracing::warn!(
            process_group = pgid,
            error = %e,
            "cannot start sh to end a shell task's processes; they may keep running"
        ),
    }
}

/// The built-in handlers; `shell` only when `allow_shell` is set.
pub fn registry(allow_shell: bool) -> Registry {
    let r = Registry::new().register(Noop).register(Log).register(Sleep);
    if allow_shell { r.register(Shell) } else { r }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shell_data_needs_a_non_empty_bounded_cmd_string() {
        assert_eq!(shell_cmd(&json!({ "cmd": "echo hi" })), Ok("echo hi"));
        let at_limit = "x".repeat(MAX_SHELL_CMD_LEN);
        assert_eq!(
            shell_cmd(&json!({ "cmd": at_limit })),
            Ok(at_limit.as_str())
        );
        for (data, expected) in [
            (json!({}), "\"cmd\" is missing"),
            (json!({ "cmd": "" }), "\"cmd\" is empty"),
            (json!({ "cmd": " \n" }), "\"cmd\" is empty"),
            (json!({ "cmd": 5 }), "\"cmd\" must be a string"),
            (json!({ "cmd": null }), "not null"),
            (json!({ "cmd": ["ls"] }), "not an array"),
            (json!({ "cmd": "a\u{0}b" }), "NUL"),
            (
                json!({ "cmd": "x".repeat(MAX_SHELL_CMD_LEN + 1) }),
                "65537 bytes long, over the limit of 65536",
            ),
        ] {
            let err = shell_cmd(&data).unwrap_err();
            assert!(err.contains(expected), "{data}: {err}");
            assert_eq!(Shell.check(&data), Err(err.clone()));
            assert_eq!(ShellTask::new().check(&data), Err(err));
        }
        assert_eq!(Shell.check(&json!({ "cmd": "true" })), Ok(()));
    }

    #[test]
    fn sleep_data_takes_whole_milliseconds() {
        assert_eq!(sleep_ms(&json!({})), Ok(100));
        assert_eq!(sleep_ms(&json!({ "ms": 0 })), Ok(0));
        assert_eq!(sleep_ms(&json!({ "ms": 2500 })), Ok(2500));
        for (data, expected) in [
            (json!({ "ms": -1 }), "not -1"),
            (json!({ "ms": 1.5 }), "not 1.5"),
            (json!({ "ms": "1s" }), "not a string"),
            (json!({ "ms": true }), "not a boolean"),
            (json!({ "ms": {} }), "not an object"),
        ] {
            let err = sleep_ms(&data).unwrap_err();
            assert!(err.contains(expected), "{data}: {err}");
            assert_eq!(Sleep.check(&data), Err(err));
        }
        assert_eq!(Noop.check(&json!({ "anything": 1 })), Ok(()));
        assert_eq!(Log.check(&json!({ "cmd": 5 })), Ok(()));
    }

    #[test]
    fn shell_task_allows_each_name_once() {
        let shell = ShellTask::new()
            .allow_env("A")
            .allow_env("B")
            .allow_env("A");
        assert_eq!(shell.allowed_env(), ["A", "B"]);
    }
}
