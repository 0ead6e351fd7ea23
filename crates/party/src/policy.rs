//! Decisions written once, above the storage seam.
//!
//! What an attempt's ending turns a task into (done, the next occurrence, a retry after which
//! backoff, dead), and every time window and limit the runtime and the client pass to a store.
//! The stores only apply what they are told: they never decide a state, pick a window or count
//! attempts against a maximum themselves.

use jiff::{SignedDuration, Timestamp};

use crate::model::{Outcome, State};
use crate::recurrence::format_duration;
use crate::store::{Fault, Next};

/// Attempts finished within this window count as the recent throughput in `stats`.
pub const THROUGHPUT_WINDOW: SignedDuration = SignedDuration::from_secs(60);

/// How often a worker with running tasks asks the store whether a person cancelled one: the
/// longest a cancel waits before the handler sees it.
pub const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a store's wake-up connection (PostgreSQL's `LISTEN` connection) may stay quiet,
/// nothing received and no statement answered, before it is probed with a cheap statement.
/// A connection that died silently (a firewall or a NAT dropped the flow, the server's host
/// vanished: no FIN, no RST) is otherwise noticed only when the kernel's TCP timers give up,
/// minutes to hours later; meanwhile the process hears no wake-ups, its own go nowhere, and
/// its workers find tasks only by polling. With [`WAKEUP_ANSWER`], this bounds how long
/// wake-ups can be lost unnoticed: 25 s, after which the connection is opened again.
pub const WAKEUP_PROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

/// How long every statement on the wake-up connection (a probe, a `NOTIFY`, the `LISTEN` of a
/// reconnect) may wait for its answer before the connection is taken as lost and opened
/// again. Generous, as a false alarm costs a reconnect that wakes every worker: a `NOTIFY`
/// can wait behind other sessions' commits for the server's notification lock.
pub const WAKEUP_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

/// Tasks a listing returns when the caller gives no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// Runs of a task read by the dashboard's task page, `GET /api/v1/tasks/{id}` and `party show`
/// (the latest ones, [`crate::Party::get_recent`]), and by a page of
/// `GET /api/v1/tasks/{id}/runs` when it names no limit: a task recurring every minute keeps
/// half a million runs for the billing audit, and each of those reads costs the same however
/// many it keeps. Older runs come a page at a time ([`crate::Party::runs_page`]); `party gaps`
/// and [`crate::Party::get`] still read every one.
pub const RECENT_RUNS: u32 = 100;

/// The most runs one page of a task's runs holds ([`crate::Party::runs_page`]):
/// `GET /api/v1/tasks/{id}/runs?limit=` takes 1 to this many.
pub const RUNS_PAGE_MAX: u32 = 1_000;

/// The most runs of a task counted for "N runs" beside its latest ones: past it a person is
/// told "more than 10000", and the count reads no more index entries than this.
pub const RUNS_COUNTED: u64 = 10_000;

/// The most expected occurrences the dashboard's task page compares with the latest runs
/// ([`crate::Party::recent_gaps`]): the latest ones, from the oldest run read. A schedule
/// that has not run for months expects many more; `party gaps` compares all of them.
pub const RECENT_OCCURRENCES_COMPARED: usize = 1_000;

/// The most tasks a count before a bulk action counts ([`crate::Party::count_cancellable`]):
/// past it a person is told "more than 1,000", and the count costs no more than this many.
pub const BULK_COUNTED: u64 = 1_000;

/// With a data filter, a count before a bulk action looks at no more than this many tasks in
/// the action's states (live and finished, each): no index covers task data, and past it the
/// count is a lower bound ("at least"). The action itself looks at every one.
pub const BULK_EXAMINED: u64 = 10_000;

/// The most tasks one page with a data-field filter examines ([`crate::Party::list_page`]).
/// No index covers task data, so a filter that matches few tasks would otherwise read the
/// whole history for one page; bounded, a page costs the same whatever the store holds, and
/// the next page goes on where it stopped.
pub const DATA_FILTER_SCAN: u32 = 5_000;

/// The most bytes of tasks one page of a listing holds ([`crate::Party::list_page`], which
/// the HTTP API's task list, the dashboard's and `party list` read): a page is built in
/// memory, and one task's data alone may take [`crate::validate::MAX_DATA_BYTES`], so a
/// thousand such tasks would take a gigabyte. A page ends before the task that would take it
/// past this budget (it holds one task at least, whatever its size), with fewer tasks than
/// its limit, and its cursor continues at that task. Each task counts as
/// [`listed_task_bytes`].
pub const PAGE_BYTES: u64 = 16 << 20;

/// What a task takes in a page, from the bytes its data, last error, rule and unique key take
/// as stored (`stored`): those and the rest of its fields, written as JSON.
pub fn listed_task_bytes(stored: u64) -> u64 {
    /// The other fields of a listed task as JSON (names, times, counts; each bounded).
    const FIXED: u64 = 1024;
    stored.saturating_add(FIXED)
}

/// How many of a listing's next tasks, whose stored sizes are `stored` (see
/// [`listed_task_bytes`]) in list order, go on one page of at most `limit` tasks: as many as
/// fit in [`PAGE_BYTES`] together, and one at least when there is one.
pub fn page_cut(stored: impl IntoIterator<Item = u64>, limit: u32) -> usize {
    let mut bytes = 0u64;
    let mut taken = 0;
    for size in stored.into_iter().take(limit as usize) {
        bytes = bytes.saturating_add(listed_task_bytes(size));
        if taken > 0 && bytes > PAGE_BYTES {
            break;
        }
        taken += 1;
    }
    taken
}

/// Expired leases a rescue pass handles at once; the rest wait for the next pass.
pub const RESCUE_BATCH: u32 = 1_000;

/// Due tasks a claim promotes to `ready` at once; the rest are promoted by the next claim.
pub const PROMOTE_BATCH: u32 = 5_000;

/// Stuck running tasks (lease over, not yet rescued) that `stats` names one by one.
pub const STUCK_LISTED: u32 = 10;

/// Rows a copy ([`crate::copy`]) reads and writes at once, per table: one transaction on the
/// target per batch, and no more than this many rows in memory.
pub const COPY_BATCH: u32 = 1_000;

/// The most live recurring tasks a page (the dashboard's recurring page) or a scrape (the
/// per-schedule metrics of `party serve`) reads in each live state; fewer when they pass
/// [`PAGE_BYTES`] as stored.
pub const RECURRING_LISTED: u32 = 1_000;

/// The trailing window of the per-schedule metrics of `party serve`
/// (`party_schedule_missed_occurrences`, [`crate::Party::schedule_health`]): the occurrences
/// of the last 7 days are compared with the successful runs recorded for them, so a weekly
/// schedule's last occurrence is always in it. Older ones are not: a scrape reads this window
/// of a task's runs, never its whole history (`party gaps` does, on request).
pub const MISSED_WINDOW: SignedDuration = SignedDuration::from_hours(7 * 24);

/// The most occurrences of one schedule the metrics compare within [`MISSED_WINDOW`]: the
/// latest before its pending one. A schedule every 10 minutes has 1,008 in the window, one
/// every minute 10,080, of which the last 1,000 (16 hours and 40 minutes) are compared; a
/// scrape reads at most this many successful runs of each schedule.
pub const MISSED_COMPARED_MAX: u32 = 1_000;

/// Done one-off tasks are kept this long after they finish, by default.
pub const RETAIN_DONE: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Dead and cancelled one-off tasks are kept this long after they finish, by default: long
/// enough for a person to notice them in `list --state dead` after a holiday.
pub const RETAIN_DEAD: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Run rows of recurring tasks, and finished recurring tasks, are kept this long by default:
/// a year of monthly occurrences plus a margin, for audits such as `gaps`.
pub const RETAIN_RECURRING: SignedDuration = SignedDuration::from_hours(400 * 24);

/// The shortest retention of done one-off tasks: a task just finished can still be looked up
/// by whoever added it.
pub const RETAIN_DONE_FLOOR: SignedDuration = SignedDuration::from_mins(1);

/// The shortest retention of dead and cancelled one-off tasks: a dead task must stay visible
/// long enough for a person to see it.
pub const RETAIN_DEAD_FLOOR: SignedDuration = SignedDuration::from_hours(24);

/// The shortest retention of recurring tasks' history: a finished recurring task may be dead,
/// and must stay visible as long as a dead one-off task at least.
pub const RETAIN_RECURRING_FLOOR: SignedDuration = RETAIN_DEAD_FLOOR;

/// What a worker makes of the distance between its clock and the database server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSkew {
    /// Close enough to say nothing.
    Fine,
    /// Worth a warning in the log: nothing is at risk yet, but the clocks are drifting apart.
    Warn,
    /// The worker refuses to start ([`crate::TaskError::Unusable`]).
    Refuse,
}

/// The most a worker's clock may be from the database server's for it to start: a quarter of
/// its lease. Leases, the rescuer's cutoff and leader terms are each read on the clock of the
/// process that writes or reads them. A worker renews its leases every third of the lease, so
/// a lease it holds always has at least two thirds left by its own clock; a rescuer on a clock
/// running ahead by more than that would take a task still running as lost, and another worker
/// would run it at the same time. A quarter against the server leaves room for the other
/// machine's own distance the other way.
pub fn clock_skew_limit(lease: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(lease / 4).unwrap_or(SignedDuration::MAX)
}

/// Judge `apart`, at least how far this process's clock is from the database server's (either
/// way), for a worker of `lease`: [`ClockSkew::Refuse`] beyond [`clock_skew_limit`],
/// [`ClockSkew::Warn`] beyond half of it or one second, whichever is less.
pub fn judge_clock_skew(apart: SignedDuration, lease: std::time::Duration) -> ClockSkew {
    let apart = apart.abs();
    let limit = clock_skew_limit(lease);
    if apart > limit {
        ClockSkew::Refuse
    } else if apart > (limit / 2).min(SignedDuration::from_secs(1)) {
        ClockSkew::Warn
    } else {
        ClockSkew::Fine
    }
}

/// Whether a database error of this kind is permanent: no retry can make the same write pass
/// (a row the database refuses, tables not as this binary expects them, a store it may not
/// write, a damaged one), so a worker stops with it instead of retrying. Everything else (a
/// connection lost, a lock held, a server restarting, a full disk) is an outage a worker
/// waits out with backoff, holding its tasks under renewed leases.
pub fn fault_is_permanent(fault: Fault) -> bool {
    match fault {
        Fault::Refused | Fault::Schema | Fault::ReadOnly | Fault::Damaged => true,
        Fault::Unreachable | Fault::Busy | Fault::Restarting | Fault::Resources | Fault::Other => {
            false
        }
    }
}

/// The error for a database failure of kind `fault` described by `message` (the database's
/// own words, and for a permanent one what to do, see [`fault_advice`]):
/// [`TaskError::Unusable`](crate::TaskError::Unusable) when it is permanent
/// ([`fault_is_permanent`]), else [`TaskError::Store`](crate::TaskError::Store).
pub fn database_error(fault: Fault, message: impl std::fmt::Display) -> crate::TaskError {
    if fault_is_permanent(fault) {
        crate::TaskError::Unusable(message.to_string())
    } else {
        crate::TaskError::Store(message.to_string())
    }
}

/// What a person can do about a permanent fault, said after the database's own message;
/// empty for a transient one, which passes by itself.
pub fn fault_advice(fault: Fault) -> &'static str {
    match fault {
        Fault::Refused => {
            "the database refused a row party wrote: its tables hold a constraint or a type \
             party did not give them; undo that change to party's tables"
        }
        Fault::Schema => {
            "the database's tables are not the ones this party binary expects (a table or \
             column is missing or changed): run the party release that wrote them, or restore \
             the database from a backup"
        }
        Fault::ReadOnly => {
            "party may not write to the database: grant its user the right to write party's \
             tables, and connect to a server that takes writes (not a read-only standby)"
        }
        Fault::Damaged => "the database is damaged: restore it from a backup",
        Fault::Unreachable | Fault::Busy | Fault::Restarting | Fault::Resources | Fault::Other => {
            ""
        }
    }
}

/// How long the row of a worker that stopped beating is kept after its liveness ended. A
/// worker that stops cleanly removes its own row; one that was killed leaves it behind, and
/// the pruner removes it once it has been gone this long, whatever the retention of tasks, so
/// a fleet whose workers are replaced for years does not pile up rows. Nothing reads such a
/// row ([`crate::Party::stats`] lists live workers only), and a worker that comes back after
/// longer (frozen, or cut off) writes its row again at its next heartbeat.
pub const FORGET_WORKERS_AFTER: SignedDuration = SignedDuration::from_hours(1);

/// Finished tasks (and, separately, old run rows of live recurring tasks) one prune batch
/// removes at once.
pub const PRUNE_BATCH: u32 = 1_000;

/// Batches one prune pass runs at most; what remains waits for the next pass.
pub const PRUNE_ROUNDS: u32 = 100;

/// The hot table's indexes are rebuilt by the pruner's pass once they take more than this many
/// times the table's own space (after its vacuum) ...
pub const HOT_INDEX_BLOAT_RATIO: u64 = 4;

/// ... and more than this many bytes: an index holds a few dozen bytes per live task against
/// the row's hundreds, so a healthy index set is smaller than its table; several times the
/// table is mostly pages emptied by tasks that left (PostgreSQL's vacuum makes them reusable
/// but never gives them back, and how many stay half-used depends on where the vacuum falls).
pub const HOT_INDEX_BLOAT_FLOOR: u64 = 1 << 20;

/// Whether the hot table's indexes are bloated enough to rebuild ([`Store::task_reindex`],
/// run by the pruner's pass after [`Store::task_vacuum`]).
///
/// [`Store::task_reindex`]: crate::store::Store::task_reindex
/// [`Store::task_vacuum`]: crate::store::Store::task_vacuum
pub fn hot_indexes_bloated(live: crate::store::TableSize) -> bool {
    live.index_bytes > HOT_INDEX_BLOAT_FLOOR
        && live.index_bytes > live.table_bytes.saturating_mul(HOT_INDEX_BLOAT_RATIO)
}

/// How long finished tasks and run rows are kept before the pruner removes them. Each is a
/// time after the task finished (its last update); `None` keeps them forever. Built with
/// [`Retention::new`], which refuses a retention below its floor, so a `Retention` in hand is
/// always one the pruner may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    done: Option<SignedDuration>,
    dead: Option<SignedDuration>,
    recurring: Option<SignedDuration>,
}

impl Default for Retention {
    /// [`RETAIN_DONE`], [`RETAIN_DEAD`] and [`RETAIN_RECURRING`].
    fn default() -> Retention {
        Retention {
            done: Some(RETAIN_DONE),
            dead: Some(RETAIN_DEAD),
            recurring: Some(RETAIN_RECURRING),
        }
    }
}

/// The instants before which finished tasks and run rows go, for one prune pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Done one-off tasks that finished before this.
    pub done_before: Option<Timestamp>,
    /// Dead and cancelled one-off tasks that finished before this.
    pub dead_before: Option<Timestamp>,
    /// Finished recurring tasks that finished before this, and run rows of live recurring
    /// tasks that finished before this.
    pub recurring_before: Option<Timestamp>,
}

impl Retention {
    /// A retention for done one-off tasks, dead and cancelled one-off tasks, and recurring
    /// tasks' history (`None`: forever).
    ///
    /// # Errors
    /// [`TaskError::Invalid`](crate::TaskError::Invalid) when one is negative or below its
    /// floor ([`RETAIN_DONE_FLOOR`], [`RETAIN_DEAD_FLOOR`], [`RETAIN_RECURRING_FLOOR`]).
    pub fn new(
        done: Option<SignedDuration>,
        dead: Option<SignedDuration>,
        recurring: Option<SignedDuration>,
    ) -> Result<Retention, crate::TaskError> {
        check_floor(
            "done tasks",
            done,
            RETAIN_DONE_FLOOR,
            "a task just finished can still be looked up",
        )?;
        check_floor(
            "dead and cancelled tasks",
            dead,
            RETAIN_DEAD_FLOOR,
            "a dead task must stay visible in `list --state dead` long enough for a person to see it",
        )?;
        check_floor(
            "recurring tasks' history",
            recurring,
            RETAIN_RECURRING_FLOOR,
            "a finished recurring task may be dead, and a dead task must stay visible long enough for a person to see it",
        )?;
        Ok(Retention {
            done,
            dead,
            recurring,
        })
    }

    /// Keep everything.
    pub fn forever() -> Retention {
        Retention {
            done: None,
            dead: None,
            recurring: None,
        }
    }

    /// How long done one-off tasks are kept (`None`: forever).
    pub fn done(&self) -> Option<SignedDuration> {
        self.done
    }

    /// How long dead and cancelled one-off tasks are kept (`None`: forever).
    pub fn dead(&self) -> Option<SignedDuration> {
        self.dead
    }

    /// How long recurring tasks' run rows, and finished recurring tasks, are kept
    /// (`None`: forever).
    pub fn recurring(&self) -> Option<SignedDuration> {
        self.recurring
    }

    /// Whether nothing is ever removed.
    pub fn keeps_everything(&self) -> bool {
        self.done.is_none() && self.dead.is_none() && self.recurring.is_none()
    }

    /// The cutoffs at `now`.
    pub fn cutoffs(&self, now: Timestamp) -> Cutoffs {
        let before = |keep: Option<SignedDuration>| {
            // A retention longer than the calendar: a cutoff before anything finished.
            keep.map(|d| now.checked_sub(d).unwrap_or(Timestamp::MIN))
        };
        Cutoffs {
            done_before: before(self.done),
            dead_before: before(self.dead),
            recurring_before: before(self.recurring),
        }
    }
}

fn check_floor(
    what: &str,
    keep: Option<SignedDuration>,
    floor: SignedDuration,
    why: &str,
) -> Result<(), crate::TaskError> {
    match keep {
        Some(d) if d < floor => Err(crate::TaskError::invalid(format!(
            "a retention of {} for {what} is too short: it must be at least {}, because {why}; \
             give a longer duration, or `forever`",
            format_duration(d),
            format_duration(floor)
        ))),
        _ => Ok(()),
    }
}

/// How an attempt ended, as the runtime saw it. Typed, so that nothing is inferred from the
/// text of an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `run` and `on_complete` returned `Ok`. `next` is the next occurrence (scheduled by the
    /// handler or given by the task's rule); `None` means nothing follows.
    Succeeded {
        /// The next occurrence's scheduled instant.
        next: Option<Timestamp>,
    },
    /// `run` returned an error or panicked.
    Failed,
    /// `run` ran past the handler's timeout.
    TimedOut,
    /// The attempt was stopped before it could end: its worker shut down, or stopped renewing
    /// its lease and the task was rescued. Nothing is known about how far it got.
    Lost,
    /// The work ran, but what follows it could not be recorded (`on_complete` failed, or it
    /// enqueued a task that cannot be stored). Running the work again could repeat its effects.
    Unfinishable,
    /// The stored task cannot be run as written: its data or its rule does not decode.
    /// Running it again changes nothing until a person repairs it.
    Undecodable,
    /// A person cancelled the task while the attempt ran (whatever the attempt itself came
    /// to: it stopped at the request, ran out of grace, or finished anyway).
    Cancelled,
    /// The worker stopped the attempt as it shut down (past its grace period, or at a second
    /// signal): the task did nothing wrong, so it is retried at once, also on its last
    /// attempt: a shutdown never makes a task dead.
    Interrupted,
    /// The task was claimed ahead but its worker shut down before the attempt started:
    /// nothing ran, so it is released as it was, due now, and its claim's attempt is given
    /// back.
    Released,
    /// The occurrence was skipped without running, by the rule's missed-occurrence policy.
    /// `next` is the occurrence to wait for (`None`: the rule has no more).
    Skipped {
        /// The next occurrence's scheduled instant.
        next: Option<Timestamp>,
    },
    /// The claimed occurrence was passed over for a newer one that is due (`latest`): the
    /// task takes the newer occurrence, with attempts of its own, and keeps the claimed
    /// one's place among the due tasks (`due_at`), so the next claim runs it ahead of tasks
    /// that became due after that place, as the policy promises.
    PassedOver {
        /// The occurrence to run.
        to: Timestamp,
        /// The passed-over occurrence's due time: the place kept.
        due_at: Timestamp,
    },
}

/// The most characters of a handler's error text a run keeps: the first
/// `MAX_ERROR_CHARS / 2` and the last as many, the cut said in between.
pub const MAX_ERROR_CHARS: usize = 8_000;

/// Make text from a handler (an error message, a command's output) storable on every
/// backend, and bounded: PostgreSQL's text cannot hold the NUL character, and a result
/// carrying one could never be written, so each NUL becomes U+FFFD; text over
/// [`MAX_ERROR_CHARS`] keeps its start and its end (where a message and a command's last
/// words are), so a handler's error never makes a task's row, or a page of tasks, huge.
pub(crate) fn storable_text(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
    // A character takes a byte at least: a short text is not counted.
    if text.len() <= MAX_ERROR_CHARS {
        return;
    }
    let chars = text.chars().count();
    if chars > MAX_ERROR_CHARS {
        let half = MAX_ERROR_CHARS / 2;
        let byte_at = |n: usize| text.char_indices().nth(n).map_or(text.len(), |(i, _)| i);
        let (head_end, tail_start) = (byte_at(half), byte_at(chars - half));
        *text = format!(
            "{} [… {} characters left out …] {}",
            &text[..head_end],
            chars - 2 * half,
            &text[tail_start..]
        );
    }
}

/// The facts about one attempt the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// This attempt's number within its occurrence (already counted by the claim).
    pub attempts: u32,
    /// Attempts the occurrence may use.
    pub max_attempts: u32,
    /// When the attempt started.
    pub started_at: Timestamp,
    /// When it ended (for a lost attempt: when that was noticed).
    pub finished_at: Timestamp,
}

/// What becomes of the task, and what the run history records.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The run row's outcome; `None` when nothing ran and no run row is written.
    pub outcome: Option<Outcome>,
    /// The task's next state.
    pub next: Next,
}

/// Decide what an attempt's ending turns its task into. `backoff` gives the wait after a
/// failed attempt number `n` (the handler's `Task::backoff`).
///
/// - A success moves a recurring task to its next occurrence (`last_run_on` becomes the
///   attempt's start) and finishes anything else.
/// - A failure or a timeout retries after the backoff while attempts remain, else it is dead.
/// - A lost attempt retries at once (the task did nothing wrong) while attempts remain.
/// - An attempt the worker interrupted as it shut down retries at once, attempts left or not:
///   on the last attempt the occurrence's `max_attempts` is raised by one, so the retry is
///   within it. A deploy must not kill the tasks it happens to stop.
/// - A released task (claimed ahead, never started) is due again at once and writes no run;
///   the attempt its claim counted is given back, so it never dies of it and keeps every
///   attempt it had. It waits as `scheduled` if no attempt of it has ended, else `retrying`.
/// - An unfinishable or undecodable attempt is dead at once: retrying could repeat effects, or
///   could not help; a person decides.
/// - A skipped occurrence moves to the next one without touching `last_run_on`.
/// - A cancelled attempt cancels the task: no retry, no next occurrence.
pub(crate) fn decide(
    ending: Ending,
    attempt: Attempt,
    backoff: impl FnOnce(u32) -> SignedDuration,
) -> Decision {
    let exhausted = attempt.attempts >= attempt.max_attempts;
    // A handler's backoff below zero is read as zero: a retry never jumps ahead of tasks due
    // before it failed, nor lands before the year 1 (which PostgreSQL cannot store).
    let due_after = |wait: SignedDuration| {
        attempt
            .finished_at
            .saturating_add(wait.max(SignedDuration::ZERO))
            .unwrap_or(Timestamp::MAX)
    };
    let retry_after = |wait: SignedDuration| {
        if exhausted {
            Next::Dead
        } else {
            Next::retry_at(due_after(wait))
        }
    };
    match ending {
        Ending::Succeeded { next } => Decision {
            outcome: Some(Outcome::Succeeded),
            next: match next {
                Some(timestamp) => Next::Reschedule {
                    timestamp,
                    due_at: timestamp,
                    last_run_on: Some(attempt.started_at),
                },
                None => Next::Done,
            },
        },
        Ending::Failed => Decision {
            outcome: Some(Outcome::Failed),
            next: retry_after(backoff(attempt.attempts)),
        },
        Ending::TimedOut => Decision {
            outcome: Some(Outcome::TimedOut),
            next: retry_after(backoff(attempt.attempts)),
        },
        Ending::Lost => Decision {
            outcome: Some(Outcome::Lost),
            next: retry_after(SignedDuration::ZERO),
        },
        // The attempt counts like a lost one (its run row is `lost`), but on the last attempt
        // one more is allowed, so the next is "attempt n+1 of n+1", never "of n".
        Ending::Interrupted => Decision {
            outcome: Some(Outcome::Lost),
            next: Next::Retry {
                due_at: due_after(SignedDuration::ZERO),
                max_attempts: exhausted.then(|| attempt.attempts.saturating_add(1)),
            },
        },
        Ending::Unfinishable => Decision {
            outcome: Some(Outcome::Succeeded),
            next: Next::Dead,
        },
        Ending::Undecodable => Decision {
            outcome: Some(Outcome::Failed),
            next: Next::Dead,
        },
        Ending::Cancelled => Decision {
            outcome: Some(Outcome::Cancelled),
            next: Next::Cancelled,
        },
        Ending::Released => Decision {
            outcome: None,
            next: Next::Release {
                due_at: attempt.finished_at,
                state: if attempt.attempts > 1 {
                    State::Retrying
                } else {
                    State::Scheduled
                },
            },
        },
        Ending::PassedOver { to, due_at } => Decision {
            outcome: None,
            next: Next::Reschedule {
                timestamp: to,
                due_at: due_at.min(to),
                last_run_on: None,
            },
        },
        Ending::Skipped { next } => Decision {
            outcome: None,
            next: match next {
                Some(timestamp) => Next::Reschedule {
                    timestamp,
                    due_at: timestamp,
                    last_run_on: None,
                },
                None => Next::Done,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stops_before_the_task_that_would_pass_its_bytes() {
        let mib = 1u64 << 20;
        assert_eq!(page_cut([], 10), 0);
        assert_eq!(page_cut([1, 1, 1], 2), 2, "the limit first");
        assert_eq!(page_cut([mib; 40], 1000), 15);
        // One task goes on a page whatever its size.
        assert_eq!(page_cut([PAGE_BYTES * 2, 1], 10), 1);
        let exact = PAGE_BYTES / 2 - listed_task_bytes(0);
        assert_eq!(page_cut([exact, exact, 0], 10), 2);
    }

    #[test]
    fn clocks_apart_by_a_quarter_of_the_lease_stop_a_worker() {
        use std::time::Duration;
        let ms = SignedDuration::from_millis;
        let lease = Duration::from_secs(30);
        assert_eq!(clock_skew_limit(lease), ms(7_500));
        assert_eq!(judge_clock_skew(ms(900), lease), ClockSkew::Fine);
        assert_eq!(judge_clock_skew(ms(-1_001), lease), ClockSkew::Warn);
        assert_eq!(judge_clock_skew(ms(7_500), lease), ClockSkew::Warn);
        assert_eq!(judge_clock_skew(ms(-7_501), lease), ClockSkew::Refuse);
        // A short lease warns at half its limit, below a second.
        let short = Duration::from_secs(2);
        assert_eq!(judge_clock_skew(ms(250), short), ClockSkew::Fine);
        assert_eq!(judge_clock_skew(ms(251), short), ClockSkew::Warn);
        assert_eq!(judge_clock_skew(ms(501), short), ClockSkew::Refuse);
    }

    #[test]
    fn hot_indexes_are_bloated_past_both_the_ratio_and_the_floor() {
        use crate::store::TableSize;
        let size = |table_bytes, index_bytes| TableSize {
            table_bytes,
            index_bytes,
        };
        let floor = HOT_INDEX_BLOAT_FLOOR;
        // Past the floor: bloated only above the ratio.
        assert!(hot_indexes_bloated(size(floor / 8, floor + 1)));
        assert!(!hot_indexes_bloated(size(floor, floor + 1)));
        let table = floor / HOT_INDEX_BLOAT_RATIO + 1;
        assert!(!hot_indexes_bloated(size(
            table,
            table * HOT_INDEX_BLOAT_RATIO
        )));
        assert!(hot_indexes_bloated(size(
            table,
            table * HOT_INDEX_BLOAT_RATIO + 1
        )));
        // Under the floor never, however small the table.
        assert!(!hot_indexes_bloated(size(0, floor)));
        assert!(hot_indexes_bloated(size(0, floor + 1)));
        assert!(!hot_indexes_bloated(size(u64::MAX, u64::MAX)));
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn attempt(attempts: u32, max_attempts: u32) -> Attempt {
        Attempt {
            attempts,
            max_attempts,
            started_at: t(0),
            finished_at: t(5),
        }
    }

    fn wait(n: u32) -> SignedDuration {
        SignedDuration::from_secs(i64::from(n) * 10)
    }

    #[test]
    fn success_without_next_is_done() {
        let d = decide(Ending::Succeeded { next: None }, attempt(1, 5), wait);
        assert_eq!(d.outcome, Some(Outcome::Succeeded));
        assert_eq!(d.next, Next::Done);
    }

    #[test]
    fn success_with_next_reschedules_and_records_the_start() {
        let d = decide(
            Ending::Succeeded {
                next: Some(t(3600)),
            },
            attempt(5, 5),
            wait,
        );
        assert_eq!(d.outcome, Some(Outcome::Succeeded));
        assert_eq!(
            d.next,
            Next::Reschedule {
                timestamp: t(3600),
                due_at: t(3600),
                last_run_on: Some(t(0)),
            }
        );
    }

    #[test]
    fn failure_retries_after_the_backoff_of_this_attempt() {
        let d = decide(Ending::Failed, attempt(2, 5), wait);
        assert_eq!(d.outcome, Some(Outcome::Failed));
        assert_eq!(d.next, Next::retry_at(t(25)));
    }

    #[test]
    fn the_last_attempt_failing_is_dead() {
        assert_eq!(decide(Ending::Failed, attempt(5, 5), wait).next, Next::Dead);
        assert_eq!(decide(Ending::Failed, attempt(6, 5), wait).next, Next::Dead);
        assert_eq!(
            decide(Ending::Failed, attempt(4, 5), wait).next,
            Next::retry_at(t(45))
        );
    }

    #[test]
    fn a_timeout_is_its_own_outcome_and_retries_like_a_failure() {
        let d = decide(Ending::TimedOut, attempt(1, 3), wait);
        assert_eq!(d.outcome, Some(Outcome::TimedOut));
        assert_eq!(d.next, Next::retry_at(t(15)));
        assert_eq!(
            decide(Ending::TimedOut, attempt(3, 3), wait).next,
            Next::Dead
        );
    }

    #[test]
    fn a_lost_attempt_retries_at_once_without_backoff() {
        let d = decide(Ending::Lost, attempt(1, 3), |_| unreachable!());
        assert_eq!(d.outcome, Some(Outcome::Lost));
        assert_eq!(d.next, Next::retry_at(t(5)));
        assert_eq!(
            decide(Ending::Lost, attempt(3, 3), |_| unreachable!()).next,
            Next::Dead
        );
    }

    #[test]
    fn an_interrupted_attempt_is_lost_and_retried_even_on_the_last_attempt() {
        // With attempts left, within them; on the last, with one more allowed, so the next
        // attempt is never past the maximum ("4 of 3").
        for (n, max_attempts) in [(1, None), (2, None), (3, Some(4))] {
            let d = decide(Ending::Interrupted, attempt(n, 3), |_| unreachable!());
            assert_eq!(d.outcome, Some(Outcome::Lost));
            assert_eq!(
                d.next,
                Next::Retry {
                    due_at: t(5),
                    max_attempts
                }
            );
        }
    }

    #[test]
    fn only_faults_no_retry_can_fix_are_permanent() {
        use crate::TaskError;
        for fault in [
            Fault::Refused,
            Fault::Schema,
            Fault::ReadOnly,
            Fault::Damaged,
        ] {
            assert!(fault_is_permanent(fault), "{fault:?}");
            assert!(!fault_advice(fault).is_empty(), "{fault:?}");
            assert!(matches!(database_error(fault, "x"), TaskError::Unusable(_)));
        }
        for fault in [
            Fault::Unreachable,
            Fault::Busy,
            Fault::Restarting,
            Fault::Resources,
            Fault::Other,
        ] {
            assert!(!fault_is_permanent(fault), "{fault:?}");
            assert!(matches!(database_error(fault, "x"), TaskError::Store(_)));
        }
    }

    #[test]
    fn a_negative_backoff_is_read_as_none() {
        let d = decide(Ending::Failed, attempt(1, 3), |_| SignedDuration::MIN);
        assert_eq!(d.next, Next::retry_at(t(5)));
    }

    #[test]
    fn a_release_waits_again_with_no_run_and_never_dies() {
        for (n, state) in [
            (1, State::Scheduled),
            (2, State::Retrying),
            (3, State::Retrying),
        ] {
            let d = decide(Ending::Released, attempt(n, 3), |_| unreachable!());
            assert_eq!(d.outcome, None);
            assert_eq!(
                d.next,
                Next::Release {
                    due_at: t(5),
                    state
                }
            );
        }
    }

    #[test]
    fn unfinishable_and_undecodable_are_dead_with_attempts_left() {
        let d = decide(Ending::Unfinishable, attempt(1, 5), wait);
        assert_eq!(d.outcome, Some(Outcome::Succeeded));
        assert_eq!(d.next, Next::Dead);
        let d = decide(Ending::Undecodable, attempt(1, 5), wait);
        assert_eq!(d.outcome, Some(Outcome::Failed));
        assert_eq!(d.next, Next::Dead);
    }

    #[test]
    fn a_cancelled_attempt_cancels_the_task_with_attempts_left() {
        let d = decide(Ending::Cancelled, attempt(1, 5), |_| unreachable!());
        assert_eq!(d.outcome, Some(Outcome::Cancelled));
        assert_eq!(d.next, Next::Cancelled);
    }

    #[test]
    fn a_skipped_occurrence_writes_no_run_and_keeps_last_run_on() {
        let d = decide(
            Ending::Skipped {
                next: Some(t(7200)),
            },
            attempt(1, 5),
            wait,
        );
        assert_eq!(d.outcome, None);
        assert_eq!(
            d.next,
            Next::Reschedule {
                timestamp: t(7200),
                due_at: t(7200),
                last_run_on: None,
            }
        );
        let d = decide(Ending::Skipped { next: None }, attempt(1, 5), wait);
        assert_eq!(d.next, Next::Done);
    }

    #[test]
    fn retention_defaults_and_cutoffs() {
        let r = Retention::default();
        assert_eq!(r.done(), Some(SignedDuration::from_hours(7 * 24)));
        assert_eq!(r.dead(), Some(SignedDuration::from_hours(30 * 24)));
        assert_eq!(r.recurring(), Some(SignedDuration::from_hours(400 * 24)));
        let c = r.cutoffs(t(0));
        assert_eq!(c.done_before, Some(t(-7 * 86_400)));
        assert_eq!(c.dead_before, Some(t(-30 * 86_400)));
        assert_eq!(c.recurring_before, Some(t(-400 * 86_400)));
        let forever = Retention::forever();
        assert!(forever.keeps_everything());
        assert_eq!(forever.cutoffs(t(0)).done_before, None);
        let huge = Retention::new(Some(SignedDuration::MAX), None, None).unwrap();
        assert_eq!(huge.cutoffs(t(0)).done_before, Some(Timestamp::MIN));
    }

    #[test]
    fn retention_below_its_floor_is_refused() {
        let day = SignedDuration::from_hours(24);
        let err = Retention::new(None, Some(day - SignedDuration::from_secs(1)), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dead and cancelled tasks"), "{err}");
        assert!(err.contains("at least 1d"), "{err}");
        assert!(err.contains("list --state dead"), "{err}");
        assert!(Retention::new(None, Some(day), None).is_ok());
        let err = Retention::new(Some(SignedDuration::from_secs(59)), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1m"), "{err}");
        assert!(Retention::new(Some(SignedDuration::from_mins(1)), None, None).is_ok());
        assert!(Retention::new(None, None, Some(SignedDuration::from_hours(23))).is_err());
        assert!(Retention::new(Some(-day), None, None).is_err());
    }

    #[test]
    fn a_backoff_past_the_end_of_time_is_clamped() {
        let d = decide(Ending::Failed, attempt(1, 5), |_| SignedDuration::MAX);
        assert_eq!(d.next, Next::retry_at(Timestamp::MAX));
    }

    #[test]
    fn only_a_retention_without_any_limit_keeps_everything() {
        let week = Some(SignedDuration::from_hours(7 * 24));
        assert!(Retention::new(None, None, None).unwrap().keeps_everything());
        assert!(!Retention::default().keeps_everything());
        for (done, dead, recurring) in [(week, None, None), (None, week, None), (None, None, week)]
        {
            let r = Retention::new(done, dead, recurring).unwrap();
            assert!(!r.keeps_everything(), "{r:?} removes some tasks");
        }
    }
}
