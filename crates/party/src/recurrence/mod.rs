//! Calendar-true recurrence: the rules a recurring task carries, and when they fire.
//!
//! Everything here is pure: each function takes the times it needs as arguments and reads no
//! clock, so the worker runtime, the CLI and the tests all get the same answers.
//!
//! # Rules
//!
//! - [`Rule::Every`]: a fixed interval counted from the previous *scheduled* timestamp, so it
//!   never drifts (`--every 30m`). Days are 24 hours; the time zone plays no part.
//! - [`Rule::Cron`]: a cron expression, read as wall-clock time in the task's zone
//!   (`--cron "0 9 * * MON-FRI" --tz Europe/Berlin`).
//! - [`Rule::MonthlyOn`]: a day of every month at a wall time, anchored: day 31 runs on Jan 31,
//!   Feb 28 (29 in leap years), Mar 31, Apr 30, … (`--monthly-on 31 --at-time 09:00`).
//!
//! # Options and their defaults
//!
//! | option | values | default |
//! | --- | --- | --- |
//! | [`Recurrence::tz`] | an IANA zone name | `None`: UTC |
//! | [`Recurrence::missed`] | [`Missed::All`], [`Missed::Latest`], [`Missed::Skip`] | `All` |
//! | [`Recurrence::nonexistent`] | [`Nonexistent::Shift`], [`Nonexistent::Skip`] | `Shift` |
//! | [`Recurrence::repeated`] | [`Repeated::First`], [`Repeated::Second`] | `First` |
//!
//! `docs/RECURRENCE.md` explains the choices behind the defaults.
//!
//! # Cron syntax
//!
//! Five fields `minute hour day-of-month month day-of-week`, or six with `second` first. Each
//! field takes `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, and comma lists of
//! those. Months accept `JAN`–`DEC`, days of the week `SUN`–`SAT` (0 and 7 are both Sunday);
//! `?` means `*` in the two day fields. Macros: `@hourly`, `@daily` (`@midnight`), `@weekly`,
//! `@monthly`, `@yearly` (`@annually`). As in Vixie cron, when both day fields are restricted
//! (neither starts with `*`) a day matching either runs; otherwise a day must match both.
//!
//! # Example
//!
//! ```
//! use party::recurrence::Recurrence;
//! use jiff::Timestamp;
//!
//! let bill = Recurrence::monthly_on(31, "09:00", Some("Europe/Berlin")).unwrap();
//! let jan: Timestamp = "2027-01-31T08:00:00Z".parse().unwrap();
//! let next = bill.upcoming(jan, 3);
//! assert_eq!(next[0].to_string(), "2027-02-28T08:00:00Z");
//! assert_eq!(next[1].to_string(), "2027-03-31T07:00:00Z"); // summer time in Berlin
//! assert_eq!(next[2].to_string(), "2027-04-30T07:00:00Z");
//! ```

mod calendar;
mod cron;
mod duration;
#[cfg(test)]
mod tests;
mod wall;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::civil::Time;
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use calendar::{Calendar, Matcher};
use cron::CronSpec;

pub use duration::{format_duration, parse_duration};

/// At most this many passed-over occurrences are listed in a [`CatchUp`]; the earliest ones.
pub const MISSED_LISTED_MAX: usize = 1_000;

/// [`gaps`] compares at most this many expected occurrences, the earliest ones.
pub const GAPS_EXPECTED_MAX: usize = 1_000_000;

/// When a recurring task runs.
///
/// Stored as JSON inside [`Recurrence`]; the `kind` field names the variant:
/// `{"kind":"every","every":"30m"}`, `{"kind":"cron","expr":"0 9 * * MON-FRI"}`,
/// `{"kind":"monthly_on","day":31,"at":"09:00"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// A fixed interval, counted from the previous scheduled timestamp (drift-free).
    Every {
        /// The interval: at least one second, in whole seconds. Stored as text like `"1h30m"`
        /// (a number of seconds is accepted when reading).
        #[serde(with = "serde_duration")]
        every: SignedDuration,
    },
    /// A cron expression in the task's time zone.
    Cron {
        /// 5 fields (`min hour dom month dow`), 6 with seconds first, or a macro like `@daily`.
        expr: String,
    },
    /// A day of every month at a wall time; a day past the end of a month means its last day,
    /// and the next month goes back to the anchor day.
    MonthlyOn {
        /// Day of month, 1 to 31.
        day: u8,
        /// Wall-clock time on that day. Stored as `"HH:MM"` (or `"HH:MM:SS"`).
        #[serde(with = "serde_time")]
        at: Time,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Every { every } => write!(f, "every {}", format_duration(*every)),
            Rule::Cron { expr } => write!(f, "cron {expr:?}"),
            Rule::MonthlyOn { day, at } => {
                write!(f, "monthly on day {day} at {}", format_time(*at))
            }
        }
    }
}

/// What to do with occurrences that came due while no worker ran them (downtime).
///
/// An occurrence is *missed* when a later one is already due at the time a worker claims it.
/// The default is [`Missed::All`]: losing an occurrence cannot be undone (a bill not sent),
/// while running a late one can be recognised by the handler through its `timestamp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Run every missed occurrence, in order, each with its own timestamp (billing).
    #[default]
    All,
    /// Run once, for the most recent due occurrence; pass over the older ones (reminders).
    Latest,
    /// Run none of them; resume at the first occurrence after now.
    Skip,
}

/// What to do when a rule names a wall time that does not exist in the zone (the hour skipped
/// when clocks go forward).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonexistent {
    /// Run as far past the gap as the wall time was into it: 02:30 in a 02:00→03:00 gap runs at
    /// 03:30. The default: a daily job still runs that day.
    #[default]
    Shift,
    /// Do not run that day.
    Skip,
}

/// What to do when a rule names a wall time that happens twice (the hour repeated when clocks
/// go back). Either way it runs once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Repeated {
    /// Run at the first of the two instants (still on summer time). The default: not later
    /// than the wall clock promised.
    #[default]
    First,
    /// Run at the second of the two instants.
    Second,
}

macro_rules! policy_text {
    ($ty:ident, $what:literal, $($variant:ident = $name:literal),+) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $name),+ })
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.trim().eq_ignore_ascii_case($name) { return Ok($ty::$variant); })+
                Err(format!(
                    concat!("invalid ", $what, " policy {:?}: use one of {}"),
                    s,
                    [$($name),+].join(", ")
                ))
            }
        }
    };
}
policy_text!(
    Missed,
    "missed",
    All = "all",
    Latest = "latest",
    Skip = "skip"
);
policy_text!(
    Nonexistent,
    "nonexistent-time",
    Shift = "shift",
    Skip = "skip"
);
policy_text!(
    Repeated,
    "repeated-time",
    First = "first",
    Second = "second"
);

/// A recurring task's rule with its time zone and policies; stored with the task as JSON.
///
/// The JSON has every field, for example
/// `{"rule":{"kind":"cron","expr":"0 9 * * *"},"tz":"Europe/Berlin","missed":"all",
/// "nonexistent":"shift","repeated":"first"}`; when reading, all fields but `rule` may be
/// left out and take their defaults. Call [`Recurrence::validate`] (or use
/// [`Recurrence::from_json`]) after reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// When it fires.
    pub rule: Rule,
    /// IANA time zone the rule's wall times are read in; `None` means UTC. Ignored by
    /// [`Rule::Every`].
    #[serde(default)]
    pub tz: Option<String>,
    /// Policy for occurrences that came due during downtime.
    #[serde(default)]
    pub missed: Missed,
    /// Policy for wall times skipped by a DST change.
    #[serde(default)]
    pub nonexistent: Nonexistent,
    /// Policy for wall times repeated by a DST change.
    #[serde(default)]
    pub repeated: Repeated,
}

/// The rule compiled for computing: an interval, or wall-time matching in a zone.
enum Engine {
    Every(SignedDuration),
    Calendar(Calendar),
}

impl Engine {
    fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Engine::Every(d) => t.checked_add(*d).ok(),
            Engine::Calendar(c) => c.next_after(t),
        }
    }

    fn first_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Engine::Every(_) => Some(t),
            Engine::Calendar(c) => c.next_after(t.checked_sub(SignedDuration::from_nanos(1)).ok()?),
        }
    }

    /// The last occurrence in `[floor, now]`, looking back over windows that double in size.
    fn latest_at_or_before(&self, floor: Timestamp, now: Timestamp) -> Option<Timestamp> {
        if now < floor {
            return None;
        }
        if let Engine::Every(d) = self {
            // Whole intervals from the floor (not negative: `now` is at or after it).
            let steps = now.duration_since(floor).as_nanos() / d.as_nanos();
            return Timestamp::from_nanosecond(floor.as_nanosecond() + steps * d.as_nanos()).ok();
        }
        let mut window = SignedDuration::from_mins(1);
        loop {
            let from = now.checked_sub(window).map_or(floor, |x| x.max(floor));
            let mut cur = self.first_at_or_after(from)?;
            if cur <= now {
                while let Some(next) = self.next_after(cur).filter(|n| *n <= now) {
                    cur = next;
                }
                return Some(cur);
            }
            if from == floor {
                return None;
            }
            window = window.checked_mul(2).unwrap_or(SignedDuration::MAX);
        }
    }
}

/// A time zone's name in its canonical spelling (`europe/berlin` becomes `Europe/Berlin`), as
/// every rule stores it.
///
/// # Errors
/// The zone is unknown.
pub(crate) fn canonical_zone(name: &str) -> Result<String, String> {
    Ok(lookup_zone(name)?
        .iana_name()
        .unwrap_or(name.trim())
        .to_string())
}

impl Recurrence {
    /// Every `d`, counted from the previous scheduled timestamp.
    ///
    /// # Errors
    ///
    /// `d` is under one second, over 100 years, or not a whole number of seconds.
    pub fn every(d: SignedDuration) -> Result<Self, String> {
        Recurrence::from_rule(Rule::Every { every: d }, None)
    }

    /// A cron expression, read in `tz` (an IANA name; `None` for UTC).
    ///
    /// # Errors
    ///
    /// The expression does not parse or can never fire (`0 0 30 2 *`), or the zone is unknown;
    /// the message says which and what is accepted.
    pub fn cron(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
        Recurrence::from_rule(Rule::Cron { expr }, tz)
    }

    /// Day `day` of every month at `at` (`"HH:MM"` or `"HH:MM:SS"`, 24-hour) in `tz`.
    ///
    /// # Errors
    ///
    /// `day` is not 1 to 31, `at` is not a valid time of day, or the zone is unknown.
    pub fn monthly_on(day: u8, at: &str, tz: Option<&str>) -> Result<Self, String> {
        let at = parse_time(at)?;
        Recurrence::from_rule(Rule::MonthlyOn { day, at }, tz)
    }

    /// A recurrence with the default policies, after checking the rule and zone. The zone name
    /// is stored in its canonical spelling (`europe/berlin` becomes `Europe/Berlin`).
    fn from_rule(rule: Rule, tz: Option<&str>) -> Result<Self, String> {
        let tz = tz.map(canonical_zone).transpose()?;
        let rec = Recurrence {
            rule,
            tz,
            missed: Missed::default(),
            nonexistent: Nonexistent::default(),
            repeated: Repeated::default(),
        };
        rec.validate()?;
        Ok(rec)
    }

    /// The same recurrence with another missed-occurrence policy.
    pub fn with_missed(self, missed: Missed) -> Self {
        Recurrence { missed, ..self }
    }

    /// The same recurrence with another policy for wall times skipped by DST.
    pub fn with_nonexistent(self, nonexistent: Nonexistent) -> Self {
        Recurrence {
            nonexistent,
            ..self
        }
    }

    /// The same recurrence with another policy for wall times repeated by DST.
    pub fn with_repeated(self, repeated: Repeated) -> Self {
        Recurrence { repeated, ..self }
    }

    /// Checks the rule and zone, for example after reading one from storage.
    ///
    /// # Errors
    ///
    /// What is wrong and what is accepted.
    pub fn validate(&self) -> Result<(), String> {
        self.engine().map(|_| ())
    }

    /// Serializes to the stored JSON form.
    pub fn to_json(&self) -> String {
        // Serializing this type cannot fail: every field is a string, number or enum.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the stored JSON form and validates it.
    ///
    /// # Errors
    ///
    /// Malformed JSON, or a rule or zone that [`Recurrence::validate`] refuses.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let rec: Recurrence =
            serde_json::from_str(json).map_err(|e| format!("invalid recurrence JSON: {e}"))?;
        rec.validate()?;
        Ok(rec)
    }

    fn engine(&self) -> Result<Engine, String> {
        let matcher = match &self.rule {
            Rule::Every { every } => {
                if *every < SignedDuration::from_secs(1)
                    || every.subsec_nanos() != 0
                    || every.as_secs() > duration::MAX_SECONDS
                {
                    return Err(format!(
                        "invalid interval {}: it must be at least 1s and at most 100 years, in \
                         whole seconds, like 30m or 1h30m",
                        format_duration(*every)
                    ));
                }
                if let Some(name) = &self.tz {
                    lookup_zone(name)?;
                }
                return Ok(Engine::Every(*every));
            }
            Rule::Cron { expr } => Matcher::Cron(CronSpec::parse(expr)?),
            Rule::MonthlyOn { day, at } => {
                if !(1..=31).contains(day) {
                    return Err(format!(
                        "invalid day of month {day}: use 1 to 31; a day past the end of a \
                         shorter month runs on its last day, so 31 means the last day of every \
                         month"
                    ));
                }
                if at.subsec_nanosecond() != 0 {
                    return Err(format!("invalid time {at}: use whole seconds, like 09:00"));
                }
                Matcher::Monthly { day: *day, at: *at }
            }
        };
        let tz = match &self.tz {
            None => TimeZone::UTC,
            Some(name) => lookup_zone(name)?,
        };
        Ok(Engine::Calendar(Calendar {
            matcher,
            tz,
            nonexistent: self.nonexistent,
            repeated: self.repeated,
        }))
    }

    /// The first occurrence strictly after `t`.
    ///
    /// For [`Rule::Every`] that is `t + every`: pass the previous *scheduled* timestamp, not the
    /// time the run finished, and the schedule never drifts. `None` when the rule is invalid
    /// (see [`Recurrence::validate`]) or has no later occurrence within 400 years.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.engine().ok()?.next_after(t)
    }

    /// The first occurrence at or after `t`: where a new task's first run goes when no time was
    /// given. For [`Rule::Every`] that is `t` itself.
    pub fn first_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.engine().ok()?.first_at_or_after(t)
    }

    /// The next `count` occurrences strictly after `t`, fewer if the rule runs out.
    pub fn upcoming(&self, t: Timestamp, count: usize) -> Vec<Timestamp> {
        let Ok(engine) = self.engine() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(count.min(1024));
        let mut cur = t;
        while out.len() < count {
            let Some(next) = engine.next_after(cur) else {
                break;
            };
            out.push(next);
            cur = next;
        }
        out
    }

    /// At most `count` occurrences after `now` of the schedule that has an occurrence at
    /// `anchor` (after `anchor` when `now` is before it): for an interval, on its grid
    /// `anchor + k·every`, not `now + k·every`.
    pub(crate) fn upcoming_after(
        &self,
        anchor: Timestamp,
        now: Timestamp,
        count: usize,
    ) -> Vec<Timestamp> {
        let Ok(engine) = self.engine() else {
            return Vec::new();
        };
        let from = engine.latest_at_or_before(anchor, now).unwrap_or(anchor);
        self.upcoming(from.max(anchor), count)
    }

    /// At most `count` occurrences before `anchor` and at or after `from`, the latest, oldest
    /// first, of the schedule that has an occurrence at `anchor`: for an interval, on its grid
    /// `anchor − k·every`. Nothing when the rule is invalid. Costs `count` steps at most,
    /// however far back `from` lies.
    pub fn occurrences_before(
        &self,
        anchor: Timestamp,
        from: Timestamp,
        count: usize,
    ) -> Vec<Timestamp> {
        let Ok(engine) = self.engine() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut cur = anchor;
        while out.len() < count {
            let prev = match &engine {
                Engine::Every(d) => cur.checked_sub(*d).ok(),
                Engine::Calendar(_) => cur
                    .checked_sub(SignedDuration::from_nanos(1))
                    .ok()
                    .and_then(|t| engine.latest_at_or_before(from, t)),
            };
            match prev.filter(|p| *p >= from && *p < cur) {
                Some(p) => {
                    out.push(p);
                    cur = p;
                }
                None => break,
            }
        }
        out.reverse();
        out
    }

    /// Decides what a worker runs when it claims the occurrence scheduled for `scheduled` at
    /// time `now`, possibly late after downtime.
    ///
    /// The occurrence is missed when a later one is already due (`next_after(scheduled) <=
    /// now`). If none is missed, or the policy is [`Missed::All`], the answer is
    /// `Run { timestamp: scheduled, missed: [] }`; the runtime then schedules
    /// `next_after(scheduled)`, so under `All` each missed occurrence runs in order with its
    /// own timestamp. Under [`Missed::Latest`] it runs the latest occurrence due by `now` and
    /// lists the older ones as missed; under [`Missed::Skip`] it runs nothing, lists every due
    /// occurrence as missed and gives the first occurrence after `now` — for [`Rule::Every`],
    /// the next one on the grid `scheduled + k·every` (`None`: there is none, the task is done). Lists hold at most [`MISSED_LISTED_MAX`] timestamps, the earliest.
    /// An invalid rule runs `scheduled`.
    pub fn catch_up(&self, scheduled: Timestamp, now: Timestamp) -> CatchUp {
        let run_scheduled = CatchUp::Run {
            timestamp: scheduled,
            missed: Vec::new(),
        };
        let Ok(engine) = self.engine() else {
            return run_scheduled;
        };
        let Some(second) = engine.next_after(scheduled).filter(|n| *n <= now) else {
            return run_scheduled;
        };
        if self.missed == Missed::All {
            return run_scheduled;
        }
        // Due occurrences from `scheduled` on, listed up to the cap.
        let mut due = vec![scheduled, second];
        let mut latest = None;
        while due.len() <= MISSED_LISTED_MAX {
            let last = due[due.len() - 1];
            match engine.next_after(last) {
                Some(n) if n <= now => due.push(n),
                _ => {
                    latest = Some(last);
                    break;
                }
            }
        }
        let latest = latest
            .or_else(|| engine.latest_at_or_before(due[due.len() - 1], now))
            .unwrap_or(due[due.len() - 1]);
        match self.missed {
            Missed::Latest => {
                due.retain(|ts| *ts < latest);
                due.truncate(MISSED_LISTED_MAX);
                CatchUp::Run {
                    timestamp: latest,
                    missed: due,
                }
            }
            _ => {
                due.truncate(MISSED_LISTED_MAX);
                CatchUp::Skip {
                    next: engine.next_after(latest),
                    missed: due,
                }
            }
        }
    }
}

/// A worker's decision for a claimed occurrence; see [`Recurrence::catch_up`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Run the occurrence for `timestamp` now.
    Run {
        /// The occurrence to run: the handler sees it as the task's `timestamp`.
        timestamp: Timestamp,
        /// Older due occurrences that will not run (for the log and for gap reports).
        missed: Vec<Timestamp>,
    },
    /// Run nothing now; move the task to `next`.
    Skip {
        /// The first occurrence after now; `None` if the rule has no further occurrence.
        next: Option<Timestamp>,
        /// The due occurrences that will not run.
        missed: Vec<Timestamp>,
    },
}

/// A stable key for one occurrence of a task: `"<task id>@<timestamp>"`, the timestamp in
/// RFC 3339 UTC with microseconds, like `65a1f0c2e4b0a1b2c3d4e5f6@2027-01-31T08:00:00.000000Z`.
///
/// Every attempt of an occurrence gets the same key, and no other occurrence does: handlers
/// pass it on as an idempotency key (to a payment provider, say).
pub fn occurrence_key(task_id: &str, timestamp: Timestamp) -> String {
    format!("{task_id}@{}", rfc3339_micros(timestamp))
}

/// The comparison of expected occurrences with the runs that happened; see [`gaps`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GapReport {
    /// How many occurrences the rule expected from the first timestamp up to now.
    pub expected: usize,
    /// Expected occurrences with no successful run, in order.
    pub missing: Vec<Timestamp>,
    /// Expected occurrences that succeeded more than once, with the number of runs.
    pub doubled: Vec<(Timestamp, usize)>,
    /// Successful runs for timestamps the rule did not expect (one entry per run, in order),
    /// for example after a handler moved its next run by hand.
    pub unexpected: Vec<Timestamp>,
    /// More than [`GAPS_EXPECTED_MAX`] occurrences were expected; only the earliest were
    /// compared.
    pub truncated: bool,
}

/// Successful runs, counted per occurrence they ran for: what [`GapReport::check`] takes
/// each expected occurrence's runs out of.
pub(crate) type RunsFor = BTreeMap<Timestamp, usize>;

/// [`RunsFor`] of these runs' occurrences (one entry per run).
pub(crate) fn runs_for(ran_for: impl IntoIterator<Item = Timestamp>) -> RunsFor {
    let mut runs = RunsFor::new();
    for ts in ran_for {
        *runs.entry(ts).or_default() += 1;
    }
    runs
}

impl GapReport {
    /// Count `ts` as expected and take its runs out of `runs`: missing with none, doubled
    /// with more than one.
    pub(crate) fn check(&mut self, ts: Timestamp, runs: &mut RunsFor) {
        self.expected += 1;
        match runs.remove(&ts) {
            None => self.missing.push(ts),
            Some(1) => {}
            Some(n) => self.doubled.push((ts, n)),
        }
    }

    /// Count the runs `left` for no expected occurrence as unexpected, in order.
    pub(crate) fn unexpected(&mut self, left: impl IntoIterator<Item = (Timestamp, usize)>) {
        for (ts, n) in left {
            self.unexpected.extend(std::iter::repeat_n(ts, n));
        }
    }
}

impl Serialize for GapReport {
    /// `{"expected":N,"missing":[TIME..],"doubled":[{"timestamp":TIME,"runs":N}..],
    /// "unexpected":[TIME..],"truncated":BOOL}`, times in RFC 3339 UTC with microseconds.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let times = |v: &[Timestamp]| v.iter().map(|t| rfc3339_micros(*t)).collect::<Vec<_>>();
        #[derive(Serialize)]
        struct Doubled {
            timestamp: String,
            runs: usize,
        }
        let doubled: Vec<Doubled> = self
            .doubled
            .iter()
            .map(|(t, n)| Doubled {
                timestamp: rfc3339_micros(*t),
                runs: *n,
            })
            .collect();
        let mut st = s.serialize_struct("GapReport", 5)?;
        st.serialize_field("expected", &self.expected)?;
        st.serialize_field("missing", &times(&self.missing))?;
        st.serialize_field("doubled", &doubled)?;
        st.serialize_field("unexpected", &times(&self.unexpected))?;
        st.serialize_field("truncated", &self.truncated)?;
        st.end()
    }
}

/// A live recurring task's recent health, from a bounded read of its runs; see
/// [`crate::Party::schedule_health`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleHealth {
    /// When its latest successful run finished (`None`: none of its runs succeeded).
    pub last_success: Option<Timestamp>,
    /// How many occurrences its rule expected within the window that were compared with its
    /// runs: at most [`crate::policy::MISSED_COMPARED_MAX`], the latest before its pending
    /// one, none before its first successful run.
    pub compared: usize,
    /// Of those, the occurrences no run succeeded for, in order.
    pub missing: Vec<Timestamp>,
}

/// Compares the occurrences `rec` expected from `first` (the task's first timestamp, counted as
/// an occurrence) up to `now` inclusive with `ran_for`: the timestamps that successful runs
/// recorded. Reports expected occurrences with no run, those with several, and runs the rule
/// did not expect. Under [`Missed::Latest`] and [`Missed::Skip`] passed-over occurrences show
/// as missing: that is what happened. An invalid rule expects only `first`.
pub fn gaps(
    rec: &Recurrence,
    first: Timestamp,
    now: Timestamp,
    ran_for: &[Timestamp],
) -> GapReport {
    let mut runs = runs_for(ran_for.iter().copied());
    let engine = rec.engine().ok();
    let mut report = GapReport::default();
    let mut cur = Some(first).filter(|t| *t <= now);
    let mut last_checked = None;
    while let Some(ts) = cur {
        if report.expected == GAPS_EXPECTED_MAX {
            report.truncated = true;
            break;
        }
        report.check(ts, &mut runs);
        last_checked = Some(ts);
        cur = engine
            .as_ref()
            .and_then(|e| e.next_after(ts))
            .filter(|t| *t <= now);
    }
    // Truncated, the runs after the last occurrence checked are not known to be unexpected.
    let known_until = last_checked.filter(|_| report.truncated);
    report.unexpected(
        runs.into_iter()
            .take_while(|(ts, _)| known_until.is_none_or(|last| *ts <= last)),
    );
    report
}

/// Looks up an IANA zone, with a message that says what to do when it is unknown.
fn lookup_zone(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    // UTC needs no database.
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| {
        if jiff::tz::db().is_definitively_empty() {
            return format!(
                "cannot look up time zone {name:?}: no time zone database was found; install the \
                 system's tzdata package (it provides /usr/share/zoneinfo) or point TZDIR at one"
            );
        }
        format!(
            "unknown time zone {name:?}: use an IANA zone name like Europe/Berlin, \
             America/New_York or UTC (the names under /usr/share/zoneinfo), or leave the zone \
             out for UTC"
        )
    })
}

/// Reads `HH:MM` or `HH:MM:SS` (24-hour).
fn parse_time(s: &str) -> Result<Time, String> {
    let fail = |what: String| {
        Err(format!(
            "invalid time {s:?}: {what}; use HH:MM in 24-hour form, like 09:00 or 17:30"
        ))
    };
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return fail("expected hours and minutes separated by a colon".into());
    }
    let mut nums = [0i8; 3];
    let names = ["hour", "minute", "second"];
    let limits = [23, 59, 59];
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return fail(format!(
                "the {} {part:?} is not a one- or two-digit number",
                names[i]
            ));
        }
        let n: i8 = part.parse().map_err(|_| format!("invalid time {s:?}"))?;
        if n > limits[i] {
            return fail(format!("{} {n} is out of range 0-{}", names[i], limits[i]));
        }
        nums[i] = n;
    }
    Time::new(nums[0], nums[1], nums[2], 0).or_else(|e| fail(e.to_string()))
}

/// `HH:MM`, or `HH:MM:SS` when there are seconds.
fn format_time(t: Time) -> String {
    if t.second() == 0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

/// RFC 3339 in UTC with exactly six fractional digits: `2027-01-31T08:00:00.000000Z`.
fn rfc3339_micros(ts: Timestamp) -> String {
    let dt = Offset::UTC.to_datetime(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000
    )
}

/// `every` as text like `"1h30m"`; reads text or a number of seconds.
mod serde_duration {
    use jiff::SignedDuration;
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SignedDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration like \"30m\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SignedDuration, E> {
                super::parse_duration(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SignedDuration, E> {
                i64::try_from(v)
                    .map(SignedDuration::from_secs)
                    .map_err(|_| E::custom("too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SignedDuration, E> {
                Ok(SignedDuration::from_secs(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `at` as `"HH:MM"` or `"HH:MM:SS"`.
mod serde_time {
    use jiff::civil::Time;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_time(&s).map_err(de::Error::custom)
    }
}
