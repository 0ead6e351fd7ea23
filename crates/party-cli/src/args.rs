//! The command line's shape: every command, option and value parser, in clap's derive form.
//! Values are checked here, before any database is opened, so bad input writes nothing.

use clap::{Args, Parser, Subcommand};
use jiff::{SignedDuration, Timestamp};
use party::{State, TaskId};
use serde_json::Value;

use crate::parse;

/// party: a durable task scheduler.
#[derive(Debug, Parser)]
#[command(
    name = "party",
    version,
    arg_required_else_help = true,
    after_help = "Exit codes: 0 success, 2 bad usage or input, 3 duplicate recurring task or \
                  unique key, \
                  4 not found, 1 anything else.\nLog level: PARTY_LOG=off|error|warn|info|debug|trace \
                  (default info)."
)]
pub(crate) struct Cli {
    /// The database: a SQLite file path or a postgres:// URL
    /// [default: $PARTY_DATABASE_URL, else ./party.db]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) db: Option<String>,

    /// How logs are written to standard error: text for people, json (one object a line)
    /// for log shippers
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a task and print its id
    Add(AddArgs),
    /// List tasks, soonest first
    List(ListArgs),
    /// Show one task with its latest runs (--runs all: every run)
    Show(ShowArgs),
    /// Cancel a task (a running one is stopped by its worker), or every waiting or dead task
    /// matching --state/--handler/--queue
    Cancel(SteerArgs),
    /// Make a dead, cancelled, retrying or scheduled task due now, or every task matching the
    /// filters
    Retry(SteerArgs),
    /// Counts by state and handler, the oldest due task, throughput, and tasks no worker can run
    Stats(StatsArgs),
    /// Run tasks until stopped (Ctrl-C or SIGTERM stop it gracefully)
    Worker(WorkerArgs),
    /// Run the seed's examples end to end on a fresh SQLite file, showing what happens
    Demo(DemoArgs),
    /// The next occurrences of a task with a stored rule
    Next(NextArgs),
    /// Compare the occurrences a task's rule expected with the runs its history shows
    Gaps(GapsArgs),
    /// Measure enqueue, throughput, latency and load on scratch stores beside the database
    Bench(BenchArgs),
    /// Remove finished tasks and run rows past their retention now (workers do it every minute)
    Prune(PruneArgs),
    /// Pause, resume and limit queues across every worker, and list them
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Serve the HTTP API, the dashboard and metrics (Ctrl-C or SIGTERM stop it gracefully)
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// Copy every task and run of the --db store into another, empty store, and verify it
    Copy(CopyArgs),
}

/// `party copy`.
#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The target: a SQLite file path or a postgres:// URL, holding no tasks yet
    #[arg(long, value_name = "URL")]
    pub(crate) to: String,

    /// Rows read and written at once, per table (one transaction on the target each)
    #[arg(long, value_name = "N", default_value_t = party::policy::COPY_BATCH, value_parser = parse::copy_batch)]
    pub(crate) batch: u32,

    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party serve`.
#[cfg(feature = "serve")]
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,

    /// Read the token from this file (first line) instead of $PARTY_API_TOKEN; with neither, a
    /// random token is made and the dashboard's address with it printed once
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<std::path::PathBuf>,

    /// Hide these data fields from the API and the pages, e.g. data.card,data.token (besides
    /// the fields each handler declares in Task::REDACT)
    #[arg(long, value_name = "FIELDS", value_delimiter = ',')]
    pub(crate) redact: Vec<String>,

    /// Serve /metrics without a token
    #[arg(long)]
    pub(crate) metrics_public: bool,
}

/// `party queue ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Every queue with tasks or controls: tasks by state, due tasks, paused or not, limits
    List(QueueListArgs),
    /// Stop claiming a queue's tasks on every worker (running ones finish)
    Pause(QueueNameArgs),
    /// Claim a paused queue's tasks again
    Resume(QueueNameArgs),
    /// Set a queue's limits across every worker, replacing those it had (or --clear them)
    Limit(QueueLimitArgs),
}

/// `party queue list`.
#[derive(Debug, Args)]
pub(crate) struct QueueListArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party queue pause|resume`.
#[derive(Debug, Args)]
pub(crate) struct QueueNameArgs {
    /// The queue
    #[arg(value_parser = parse::queue)]
    pub(crate) queue: String,

    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party queue limit`.
#[derive(Debug, Args)]
pub(crate) struct QueueLimitArgs {
    /// The queue
    #[arg(value_parser = parse::queue)]
    pub(crate) queue: String,

    /// At most N of the queue's tasks run at once across every worker (per key with --per)
    #[arg(long, value_name = "N", value_parser = parse::queue_concurrency)]
    pub(crate) concurrency: Option<u32>,

    /// At most COUNT starts in any window of PERIOD, e.g. 10/1s, 100/1m, 1000/1h (per key
    /// with --per); tasks over it wait, using no attempt
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = parse::rate)]
    pub(crate) rate: Option<party::Rate>,

    /// Apply the limits per distinct value of a top-level data field, e.g. data.customer
    /// (tasks without it share one key)
    #[arg(long, value_name = "data.FIELD", value_parser = parse::per_key)]
    pub(crate) per: Option<String>,

    /// Remove the queue's limits
    #[arg(long, conflicts_with_all = ["concurrency", "rate", "per"])]
    pub(crate) clear: bool,

    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// How long finished tasks and run rows are kept: `party worker` and `party prune`.
#[derive(Debug, Args)]
pub(crate) struct RetentionArgs {
    /// Keep done one-off tasks this long after they finish (default 7d; `forever` keeps them;
    /// at least 1m)
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_or_forever)]
    pub(crate) retain_done: Option<parse::Retain>,

    /// Keep dead and cancelled one-off tasks this long after they finish (default 30d;
    /// `forever` keeps them; at least 1d, so a person can see them in `list --state dead`)
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_or_forever)]
    pub(crate) retain_dead: Option<parse::Retain>,

    /// Keep run rows of recurring tasks, and finished recurring tasks, this long (default
    /// 400d; `forever` keeps them; at least 1d)
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_or_forever)]
    pub(crate) retain_recurring: Option<parse::Retain>,
}

impl RetentionArgs {
    /// The retention these flags give, the defaults filling in the rest. A value below its
    /// floor is refused naming the flag.
    pub(crate) fn retention(&self) -> Result<party::policy::Retention, party::TaskError> {
        use party::policy::Retention;
        let d = Retention::default();
        let (done, dead, recurring) = (
            self.retain_done.map_or(d.done(), |r| r.0),
            self.retain_dead.map_or(d.dead(), |r| r.0),
            self.retain_recurring.map_or(d.recurring(), |r| r.0),
        );
        // Each flag alone beside the defaults (which are valid), so a refusal names its flag.
        let alone = [
            (
                "--retain-done",
                Retention::new(done, d.dead(), d.recurring()),
            ),
            (
                "--retain-dead",
                Retention::new(d.done(), dead, d.recurring()),
            ),
            (
                "--retain-recurring",
                Retention::new(d.done(), d.dead(), recurring),
            ),
        ];
        for (flag, checked) in alone {
            checked.map_err(|e| party::TaskError::invalid(format!("{flag}: {e}")))?;
        }
        Retention::new(done, dead, recurring)
    }
}

/// `party prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Count what would be removed, and remove nothing
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
}

/// `party next`.
#[derive(Debug, Args)]
pub(crate) struct NextArgs {
    /// The task's id (24 hex characters)
    #[arg(value_parser = parse::id)]
    pub(crate) id: TaskId,

    /// How many occurrences
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = parse::count)]
    pub(crate) count: usize,

    /// Print a JSON array instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The handler's registered name (built in: noop, log, sleep, shell)
    #[arg(required_unless_present = "from", value_parser = parse::handler)]
    pub(crate) handler: Option<String>,

    /// Add every task in a JSON Lines file instead, one task per line: {"handler": "noop",
    /// "data": {}, "at": TIME, "queue": Q, "priority": P, "max_attempts": N}; all or none.
    /// Each line says everything about its task: no other option goes with it
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "handler", "data", "at", "in_", "every", "cron", "monthly_on", "at_time", "tz",
            "missed", "nonexistent", "repeated", "max_attempts", "queue", "priority",
            "unique_key", "unique_for",
        ]
    )]
    pub(crate) from: Option<std::path::PathBuf>,

    /// The task's data: a JSON object, e.g. '{"arg1": "hello"}'
    #[arg(long, value_name = "JSON", value_parser = parse::data)]
    pub(crate) data: Option<Value>,

    #[command(flatten)]
    pub(crate) when: When,

    #[command(flatten)]
    pub(crate) recurrence: Recurrence,

    /// Attempts allowed per occurrence (1 means no retries) [default: the handler's]
    #[arg(long, value_name = "N", value_parser = parse::max_attempts)]
    pub(crate) max_attempts: Option<u32>,

    /// The queue it waits in
    #[arg(long, value_name = "Q", default_value = party::DEFAULT_QUEUE, value_parser = parse::queue)]
    pub(crate) queue: String,

    /// Lower runs first
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = parse::priority
    )]
    pub(crate) priority: i32,

    /// Refuse this one-off task (exit 3, naming the other) while a task of the same handler
    /// with this key is scheduled, running or retrying
    #[arg(long, value_name = "KEY", value_parser = parse::unique_key)]
    pub(crate) unique_key: Option<String>,

    /// With --unique-key: refuse it also while such a task finished less than DURATION ago
    #[arg(long, value_name = "DURATION", requires = "unique_key", value_parser = parse::unique_for)]
    pub(crate) unique_for: Option<SignedDuration>,
}

/// When the first occurrence is due; neither means now.
#[derive(Debug, Args)]
pub(crate) struct When {
    /// Run at this time: RFC 3339, e.g. 2027-01-31T09:00:00Z or 2027-01-31T10:00:00+01:00
    #[arg(long, value_name = "TIME", value_parser = parse::time, conflicts_with = "in_")]
    pub(crate) at: Option<Timestamp>,

    /// Run after this long, e.g. 90s, 30m, 2h, 7d, 1h30m
    #[arg(long = "in", id = "in_", value_name = "DURATION", value_parser = parse::duration)]
    pub(crate) in_: Option<SignedDuration>,
}

/// How the task recurs; none of these makes a one-off task (unless its handler recurs).
#[derive(Debug, Args)]
pub(crate) struct Recurrence {
    /// Recur every DURATION, counted from each scheduled time (no drift), e.g. 30m, 7d
    #[arg(long, value_name = "DURATION", value_parser = parse::interval, group = "rule")]
    pub(crate) every: Option<SignedDuration>,

    /// Recur by a cron expression: 5 fields (minute hour day month weekday) or 6 with seconds
    /// first, e.g. "0 9 * * MON-FRI"; read in --tz
    #[arg(long, value_name = "EXPR", value_parser = parse::cron, group = "rule")]
    pub(crate) cron: Option<String>,

    /// Recur monthly on this day (1-31) at --at-time; a day past a month's end runs on its last
    /// day, and the next month returns to DAY
    #[arg(long, value_name = "DAY", value_parser = parse::month_day, group = "rule", requires = "at_time")]
    pub(crate) monthly_on: Option<u8>,

    /// The wall time for --monthly-on, HH:MM (24-hour) in --tz
    #[arg(long, value_name = "HH:MM", value_parser = parse::wall_time, requires = "monthly_on")]
    pub(crate) at_time: Option<String>,

    /// The IANA time zone the rule's wall times are in, e.g. Europe/Berlin [default: UTC]
    #[arg(long, value_name = "ZONE", value_parser = parse::zone, requires = "rule")]
    pub(crate) tz: Option<String>,

    /// After downtime: run all missed occurrences in order, only the latest, or skip them
    #[arg(long, value_name = "POLICY", value_parser = parse::missed, requires = "rule")]
    pub(crate) missed: Option<party::recurrence::Missed>,

    /// A wall time that does not exist (spring forward): shift past the gap, or skip that day
    /// [default: shift]
    #[arg(long, value_name = "shift|skip", value_parser = parse::nonexistent, requires = "rule")]
    pub(crate) nonexistent: Option<party::recurrence::Nonexistent>,

    /// A wall time that happens twice (fall back): run once, at the first or the second
    /// [default: first]
    #[arg(long, value_name = "first|second", value_parser = parse::repeated, requires = "rule")]
    pub(crate) repeated: Option<party::recurrence::Repeated>,
}

/// `party list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only tasks in this state: scheduled, running, retrying, done, dead, cancelled
    #[arg(long, value_name = "S", value_parser = parse::state)]
    pub(crate) state: Option<State>,

    /// Only tasks of this handler
    #[arg(long, value_name = "H", value_parser = parse::handler)]
    pub(crate) handler: Option<String>,

    /// Only tasks in this queue
    #[arg(long, value_name = "Q", value_parser = parse::queue)]
    pub(crate) queue: Option<String>,

    /// Only tasks whose data has this top-level field with this value (a string's text, a
    /// number, true or false), e.g. --data customer=acme
    #[arg(long, value_name = "FIELD=VALUE", value_parser = parse::data_match)]
    pub(crate) data: Option<party::DataMatch>,

    /// At most this many
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = parse::limit)]
    pub(crate) limit: u32,

    /// Print a JSON array instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The task's id (24 hex characters)
    #[arg(value_parser = parse::id)]
    pub(crate) id: TaskId,

    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,

    /// The runs to show: the latest N (1 to 1000; 100 unless told otherwise), or `all` for
    /// every run (a task recurring every minute keeps half a million)
    #[arg(long, value_name = "N|all", value_parser = parse::runs_shown)]
    pub(crate) runs: Option<RunsShown>,
}

/// Which runs `party show` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunsShown {
    /// The latest this many.
    Latest(u32),
    /// Every run.
    All,
}

/// `party gaps`.
#[derive(Debug, Args)]
pub(crate) struct GapsArgs {
    /// The task's id (24 hex characters)
    #[arg(value_parser = parse::id)]
    pub(crate) id: TaskId,

    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party cancel` and `party retry`: one task by id, or every task matching the filters.
#[derive(Debug, Args)]
pub(crate) struct SteerArgs {
    /// The task's id (24 hex characters); leave it out to act on every task matching the filters
    #[arg(value_parser = parse::id, conflicts_with_all = ["state", "handler", "queue", "data"])]
    pub(crate) id: Option<TaskId>,

    /// Every task in this state (cancel: scheduled, retrying or dead; retry: dead, cancelled,
    /// retrying, or scheduled to run them now; without it, retry takes the first three)
    #[arg(long, value_name = "S", value_parser = parse::state)]
    pub(crate) state: Option<State>,

    /// Every task of this handler
    #[arg(long, value_name = "H", value_parser = parse::handler)]
    pub(crate) handler: Option<String>,

    /// Every task in this queue
    #[arg(long, value_name = "Q", value_parser = parse::queue)]
    pub(crate) queue: Option<String>,

    /// Every task whose data has this top-level field with this value, e.g. --data customer=acme
    #[arg(long, value_name = "FIELD=VALUE", value_parser = parse::data_match)]
    pub(crate) data: Option<party::DataMatch>,

    /// Print JSON instead of text (for the filtered form: the count)
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `party worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Tasks run at the same time
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse::concurrency)]
    pub(crate) concurrency: usize,

    /// Take tasks from this queue (repeat for several)
    #[arg(long = "queue", value_name = "Q", default_value = party::DEFAULT_QUEUE, value_parser = parse::queue)]
    pub(crate) queues: Vec<String>,

    /// Exit once nothing this worker can run is due and none of its tasks is running
    #[arg(long)]
    pub(crate) until_idle: bool,

    /// Claim up to N tasks ahead of free executors, so claims overlap running tasks: faster
    /// for short tasks; for long ones it holds work another worker could run
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse::prefetch)]
    pub(crate) prefetch: usize,

    /// How long a claim holds without a heartbeat; a worker that dies or freezes loses its
    /// tasks to others this long after its last heartbeat (renewed every third of it)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse::lease)]
    pub(crate) lease: SignedDuration,

    /// On SIGINT/SIGTERM, how long running tasks get to finish before they are interrupted and
    /// released to other workers
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse::grace)]
    pub(crate) grace: SignedDuration,

    /// Run `shell` tasks: commands stored in the database, run with sh -c
    #[arg(long)]
    pub(crate) allow_shell: bool,

    /// Pass this variable of the worker's environment to `shell` commands (repeat for
    /// several); they get only PATH, HOME and the task's PARTY_* variables otherwise
    #[arg(long = "shell-env", value_name = "NAME", requires = "allow_shell", value_parser = parse::env_name)]
    pub(crate) shell_env: Vec<String>,

    /// Serve this worker's counters and histograms as Prometheus text on
    /// http://ADDR/metrics (runs, durations, waits, claims, rescues)
    #[cfg(feature = "serve")]
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub(crate) retention: RetentionArgs,
}

/// `party bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub(crate) json: bool,

    /// Scale the workloads down to finish in seconds (for CI)
    #[arg(long)]
    pub(crate) quick: bool,

    /// Also run the soak: 1,000,000 tasks (20,000 with --quick) through one store with done
    /// tasks kept one minute; reports the hot table's size and the throughput, tenth by tenth
    #[arg(long)]
    pub(crate) soak: bool,

    /// Measure only what queue limits cost the claim: no-op throughput at concurrency 128
    /// without limits and with limits that never bind
    #[arg(long, conflicts_with = "soak")]
    pub(crate) limits: bool,

    /// Measure only bulk enqueue against the plain-SQL batched insert, in three alternating
    /// rounds on fresh scratch stores
    #[arg(long, conflicts_with_all = ["soak", "limits"])]
    pub(crate) enqueue: bool,
}

/// `party demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long the workers run before the summary
    #[arg(long = "for", value_name = "DURATION", default_value = "20s", value_parser = parse::demo_length)]
    pub(crate) run_for: SignedDuration,
}
