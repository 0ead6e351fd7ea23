//! The built-in `shell` handler: a command and every process it starts end together when the
//! attempt ends early (timeout, lost lease, shutdown past the grace period).

use std::path::{Path, PathBuf};
use std::time::Duration;

use party::builtin::{KILL_AFTER, ShellTask};
use party::serde_json::json;
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
