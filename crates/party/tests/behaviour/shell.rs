//! The built-in `shell` handler: a command and every process it starts end together when the
//! attempt ends early (timeout, lost lease, shutdown past the grace period).

use std::path::{Path, PathBuf};
use std::time::Duration;

use party::builtin::{KILL_AFTER, MAX_SHELL_DATA_LEN, Shell, ShellTask};
use party::serde_json::json;
use party::testing::{call, context};
use party::{NewTask, Outcome, Registry, State, Task, TaskContext, TaskError, WorkerConfig};

use crate::common::{Backend, fixture, on_every_backend, start};

/// `shell` with a short timeout and no retries.
struct QuickShell;

impl Task for QuickShell {
    const NAME: &'static str = "quick_shell";
    const TIMEOUT: Duration = Duration::from_millis(1500);
    const MAX_ATTEMPTS: u32 = 1;

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        ShellTask::new().run(ctx).await
    }
}

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str, b: Backend) -> Scratch {
        use std::hash::{BuildHasher, RandomState};
        let dir = std::env::temp_dir().join(format!(
            "party-shell-{tag}-{}-{}-{:016x}",
            std::process::id(),
            b as u8,
            RandomState::new().hash_one(std::time::SystemTime::now())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A command that forks: a loop appending to `out` in the background, a long sleep in
    /// the background, and `sh` waiting for both. Every pid goes to `pids`.
    fn forking_cmd(&self) -> String {
        let (pids, out, started) = (self.file("pids"), self.file("out"), self.file("started"));
        format!(
            "echo $$ > '{p}'; \
             (while :; do echo x >> '{o}'; sleep 0.05; done) & echo $! >> '{p}'; \
             sleep 30 & echo $! >> '{p}'; \
             touch '{s}'; wait",
            p = pids.display(),
            o = out.display(),
            s = started.display()
        )
    }

    /// Wait until the command has started all its processes; returns their pids.
    async fn started(&self) -> Vec<u32> {
        for _ in 0..500 {
            if self.file("started").exists() {
                return std::fs::read_to_string(self.file("pids"))
                    .unwrap()
                    .lines()
                    .map(|l| l.trim().parse().unwrap())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the shell command did not start");
    }

    /// Every process the command started ends within `KILL_AFTER` and a margin, and the
    /// background loop writes no more.
    async fn assert_all_ended(&self, pids: &[u32]) {
        assert_eq!(pids.len(), 3, "sh, the loop and the sleep: {pids:?}");
        let deadline = std::time::Instant::now() + KILL_AFTER + Duration::from_secs(3);
        loop {
            let alive: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
            if alive.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "processes of the shell task still running after the attempt ended: {alive:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&self.file("out"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            size(&self.file("out")),
            before,
            "the background loop kept writing"
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `pid` is a running process (a zombie waiting to be reaped has ended).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    matches!(state, Some(s) if !s.starts_with('Z'))
}

async fn a_timed_out_shell_task_ends_every_process_it_started(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(QuickShell)).await else {
        return;
    };
    let scratch = Scratch::new("timeout", b);
    let id = f
        .party
        .add(NewTask::new("quick_shell").data(json!({ "cmd": scratch.forking_cmd() })))
        .await
        .unwrap();
    let worker = f.party.worker(WorkerConfig::default());
    let idle = tokio::spawn(async move { worker.run_until_idle().await });
    let pids = scratch.started().await;
    assert!(pids.iter().all(|p| running(*p)), "{pids:?}");
    let report = idle.await.unwrap().unwrap();
    assert_eq!(report.failed, 1);
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Dead);
    assert_eq!(task.runs[0].outcome, Outcome::TimedOut);
    scratch.assert_all_ended(&pids).await;
}

async fn a_shell_task_stopped_at_shutdown_ends_every_process_it_started(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(ShellTask::new())).await else {
        return;
    };
    let scratch = Scratch::new("shutdown", b);
    let id = f
        .party
        .add(NewTask::new("shell").data(json!({ "cmd": scratch.forking_cmd() })))
        .await
        .unwrap();
    let running_worker = start(f.party.worker(WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..Default::default()
    }));
    let pids = scratch.started().await;
    running_worker.stop().await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Retrying);
    assert_eq!(task.runs[0].outcome, Outcome::Lost);
    scratch.assert_all_ended(&pids).await;
}

async fn a_shell_task_whose_lease_is_lost_ends_every_process_it_started(b: Backend) {
    let Some(f) = fixture(b, Registry::new().register(ShellTask::new())).await else {
        return;
    };
    let scratch = Scratch::new("lease", b);
    let id = f
        .party
        .add(
            NewTask::new("shell")
                .data(json!({ "cmd": scratch.forking_cmd() }))
                .max_attempts(1),
        )
        .await
        .unwrap();
    let running_worker = start(f.party.worker(WorkerConfig {
        lease: Duration::from_millis(150),
        ..Default::default()
    }));
    let pids = scratch.started().await;
    // The lease expires by the clock and the task is rescued; the worker's next heartbeat
    // learns it lost the task and stops the attempt.
    crate::common::expire_and_rescue(&f, id).await;
    scratch.assert_all_ended(&pids).await;
    running_worker.stop().await;
    let task = f.party.get(id).await.unwrap();
    assert_eq!(task.state, State::Dead);
    assert_eq!(task.runs.len(), 1, "{:?}", task.runs);
}

on_every_backend!(
    a_timed_out_shell_task_ends_every_process_it_started,
    a_shell_task_stopped_at_shutdown_ends_every_process_it_started,
    a_shell_task_whose_lease_is_lost_ends_every_process_it_started,
);

/// A command that exits at once leaving a process it started running (which keeps standard
/// error open) ends its attempt when `sh` exits: the process is left alone, as the README
/// says, and the attempt does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_leaves_a_process_running_ends_when_sh_does() {
    let mut ctx = context("shell")
        .data(json!({ "cmd": "sleep 6 & exit 0" }))
        .build();
    let started = std::time::Instant::now();
    let ran = tokio::time::timeout(Duration::from_secs(3), call(&Shell, &mut ctx)).await;
    assert!(
        matches!(ran, Ok(Ok(_))),
        "sh exited 0 at once, but the attempt had not ended within 3 s ({:?}): {ran:?}",
        started.elapsed()
    );
    // A failing one too, with what it wrote last.
    let mut ctx = context("shell")
        .data(json!({ "cmd": "sleep 6 & echo last words >&2; exit 4" }))
        .build();
    let ran = tokio::time::timeout(Duration::from_secs(3), call(&Shell, &mut ctx)).await;
    let err = ran.expect("ended with sh").unwrap_err().to_string();
    assert!(err.contains("last words") && err.contains('4'), "{err}");
}

/// Data the `shell` check accepts can be started: a command gets the data in one environment
/// variable, which Linux limits to 128 KiB, so larger data is refused when it is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_data_the_check_accepts_can_be_started() {
    // A cmd within its own limit whose JSON escaping doubles it past the variable's.
    let quotes = format!(": '{}'", "\"".repeat(65_530));
    let bulky = json!({ "cmd": "true", "payload": "x".repeat(200_000) });
    let fits = json!({ "cmd": "true", "payload": "x".repeat(MAX_SHELL_DATA_LEN - 40) });
    for data in [json!({ "cmd": quotes }), bulky, fits] {
        let accepted = Shell.check(&data).is_ok() && ShellTask::new().check(&data).is_ok();
        let mut ctx = context("shell").data(data.clone()).build();
        let ran = call(&Shell, &mut ctx).await;
        assert!(
            !accepted || ran.is_ok(),
            "the shell check accepted the data, but the command cannot start: {:?}",
            ran.err()
        );
        assert_eq!(
            accepted,
            data.to_string().len() <= MAX_SHELL_DATA_LEN,
            "{} bytes",
            data.to_string().len()
        );
    }
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Only the last 1,000 characters of standard error become the run's error, and only a tail
/// is kept while the command runs: a gigabyte written to standard error does not grow the
/// worker by a gigabyte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_error_kept_is_bounded() {
    let before = peak_rss_kib();
    let mut ctx = context("shell")
        .data(json!({ "cmd": "head -c 1000000000 /dev/zero | tr '\\0' e >&2; echo the-tail >&2; exit 3" }))
        .build();
    let err = call(&Shell, &mut ctx).await.unwrap_err().to_string();
    assert!(err.contains("the-tail"), "{err}");
    assert!(
        err.len() < 1200,
        "the error is the tail only: {} bytes",
        err.len()
    );
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(
        grown_mib < 256,
        "peak memory grew by {grown_mib} MiB while 1 GB went to standard error"
    );
}

/// A command that starts with `-` is run as a command, not read as an option of `sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_starting_with_a_dash_is_a_command() {
    let mut ctx = context("shell")
        .data(json!({ "cmd": "-party-no-such-command" }))
        .build();
    let err = call(&Shell, &mut ctx).await.unwrap_err().to_string();
    assert!(
        err.contains("-party-no-such-command") && err.contains("not found"),
        "{err}"
    );
}
