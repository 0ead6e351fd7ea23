//! Queue controls: pausing a queue, limiting how many of its tasks run at once (for the whole
//! queue, or per value of a top-level data field), and limiting how often they start.
//!
//! Every control lives in the store, so it holds across all workers on all machines and
//! survives restarts. A queue nobody paused or limited has no control at all, and its tasks are
//! claimed as if this module did not exist. A claim of a controlled queue takes turns with the
//! other claims of that queue (the store locks the queue's row), reads what runs and what
//! started recently, and asks [`admit`] which candidates may start: the decision is written
//! once, here, and each backend only reads the figures and applies the answer.

use std::collections::HashMap;
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::TaskError;
use crate::model::State;
use crate::validate;

/// At most this many starts per [`Rate`] window.
pub const MAX_RATE_COUNT: u32 = 1_000_000;

/// The longest [`Rate`] window: one day.
pub const MAX_RATE_PERIOD: SignedDuration = SignedDuration::from_hours(24);

/// How many waiting tasks a claim of a queue limited per key looks at, at most, to find ones
/// whose key has room. Keys already at their limit are left out before looking, so a large
/// backlog of one key does not hide the others for more than a claim or two.
pub const PER_KEY_SCAN: u32 = 1000;

/// How long a worker waits before looking again when due tasks are held back by a limit
/// (a running task of another worker must end, or a rate window must pass).
pub const LIMITED_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a worker re-reads which of its queues are controlled. A newly limited queue's
/// tasks wait at most this long (claims of unlimited queues leave them alone at once); a
/// pause takes effect at once.
pub const CONTROLS_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// At most `count` starts in any window of `period`: `10/1s`, `100/1m`, `1000/1h`. Serialized
/// as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts allowed per window.
    pub count: u32,
    /// The window's length: whole milliseconds, at most [`MAX_RATE_PERIOD`].
    pub period: SignedDuration,
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A period as `1s`, `1m`, `1h` or its parts (`1m30s`, `250ms`).
fn format_period(d: SignedDuration) -> String {
    let ms = d.as_millis();
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

impl Rate {
    /// Reads `COUNT/PERIOD`, e.g. `10/1s`, `100/1m`, `5/1h` (a period of `s` alone means
    /// `1s`).
    ///
    /// # Errors
    /// [`TaskError::Invalid`] saying what is wrong.
    pub fn parse(s: &str) -> Result<Rate, TaskError> {
        validate::rate(s)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_period(self.period))
    }
}

/// A queue's limits. Empty (the default) means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueLimits {
    /// At most this many of the queue's tasks run at once across every worker (per key with
    /// `per`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most this many starts in any window (per key with `per`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// A top-level data field (its name, without `data.`): the limits hold per distinct value
    /// of it. Tasks without the field (or with `null` in it) share one key. Serialized as
    /// `data.FIELD`, as `--per` takes it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_per"
    )]
    pub per: Option<String>,
}

fn serialize_per<S: serde::Serializer>(per: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match per {
        Some(field) => s.collect_str(&format_args!("data.{field}")),
        None => s.serialize_none(),
    }
}

impl QueueLimits {
    /// No limit is set.
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }

    /// Checks the limits: a concurrency of at least 1, a rate in range, and `per` only with a
    /// limit it applies to, naming a top-level data field.
    ///
    /// # Errors
    /// [`TaskError::Invalid`].
    pub fn check(&self) -> Result<(), TaskError> {
        if let Some(n) = self.concurrency {
            validate::queue_concurrency(i64::from(n))?;
        }
        if let Some(r) = self.rate {
            validate::rate_parts(i64::from(r.count), r.period)?;
        }
        if let Some(field) = &self.per {
            validate::per_key_field(field)?;
            if self.is_empty() {
                return Err(TaskError::invalid(
                    "a per-key limit (per) needs a limit to apply per key: give a concurrency or \
                     a rate too (--concurrency N or --rate N/1s; \"concurrency\": N or \
                     \"rate\": \"N/1s\" over HTTP)",
                ));
            }
        }
        Ok(())
    }
}

/// Limits as JSON gives them (the HTTP API's body): `{"concurrency": 2, "rate": "10/1s",
/// "per": "data.customer"}`, every field optional, `{}` for none. Unknown fields are refused.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// As `--concurrency`: any JSON number with a whole value (`2.0` too), one out of range
    /// refused with the command line's message.
    #[serde(default, deserialize_with = "crate::spec::whole")]
    pub concurrency: Option<i64>,
    /// As `--rate`.
    pub rate: Option<String>,
    /// As `--per`.
    pub per: Option<String>,
}

impl LimitsSpec {
    /// The limits, each value checked as the command line checks it.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] saying which value is wrong.
    pub fn limits(&self) -> Result<QueueLimits, TaskError> {
        let limits = QueueLimits {
            concurrency: self
                .concurrency
                .map(validate::queue_concurrency)
                .transpose()?,
            rate: self.rate.as_deref().map(validate::rate).transpose()?,
            per: self.per.as_deref().map(validate::per_key).transpose()?,
        };
        limits.check()?;
        Ok(limits)
    }
}

/// In words, as `party queue list` and the dashboard show them: `concurrency 2, rate 10/1s,
/// per data.customer`, or `none`.
impl fmt::Display for QueueLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.concurrency {
            parts.push(format!("concurrency {n}"));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {r}"));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        if let Some(field) = &self.per {
            parts.push(format!("per data.{field}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A queue a person paused or limited, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueControl {
    /// The queue.
    pub name: String,
    /// Its tasks are not claimed.
    pub paused: bool,
    /// Its limits.
    pub limits: QueueLimits,
}

/// A queue as `party queue list` shows it: its tasks by state, and its controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    /// The queue.
    pub name: String,
    /// Its tasks are not claimed.
    pub paused: bool,
    /// Its limits.
    pub limits: QueueLimits,
    /// Tasks per state (states without tasks left out). Finished tasks are counted from the
    /// store's counters, live ones from the live tasks: both exact. Serialized as an object,
    /// `{"scheduled": 3, "done": 120}`.
    #[serde(serialize_with = "serialize_counts")]
    pub counts: Vec<(State, u64)>,
    /// Scheduled or retrying tasks due now.
    pub due: u64,
}

fn serialize_counts<S: serde::Serializer>(
    counts: &[(State, u64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(counts.len()))?;
    for (state, n) in counts {
        map.serialize_entry(state, n)?;
    }
    map.end()
}

/// A task's key under a per-key limit: the JSON text of its field's value, or `None` when the
/// task has no such field (or `null` in it). Without `per`, every task's key is `None`.
pub type Key = Option<String>;

/// What a claim of a limited queue reads under the queue's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLoad {
    /// Running tasks per key (every key with at least one).
    pub running: HashMap<Key, u32>,
    /// Starts per key within the rate's window ending now (only with a rate).
    pub started: HashMap<Key, u32>,
}

impl QueueLoad {
    /// How many more tasks under `key` may start now.
    fn room(&self, limits: &QueueLimits, key: &Key) -> u32 {
        let mut room = u32::MAX;
        if let Some(n) = limits.concurrency {
            let running = self.running.get(key).copied().unwrap_or(0);
            room = room.min(n.saturating_sub(running));
        }
        if let Some(r) = limits.rate {
            let started = self.started.get(key).copied().unwrap_or(0);
            room = room.min(r.count.saturating_sub(started));
        }
        room
    }

    /// Keys that have no room now, so a claim does not look at their tasks. `None` in the
    /// list stands for the shared key of tasks without the field.
    pub fn full_keys(&self, limits: &QueueLimits) -> Vec<Key> {
        let mut keys: Vec<&Key> = self.running.keys().chain(self.started.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.room(limits, k) == 0)
            .cloned()
            .collect()
    }

    /// Without `per`: how many tasks of the queue may start now (at most `want`).
    pub fn queue_room(&self, limits: &QueueLimits, want: u32) -> u32 {
        self.room(limits, &None).min(want)
    }
}

/// Which of `candidates` (in claim order: priority, then due time; each with its key) start
/// now: at most `want`, and under each key no more than its room. Returns their positions.
pub fn admit(limits: &QueueLimits, load: &QueueLoad, candidates: &[Key], want: u32) -> Vec<usize> {
    let mut taken: HashMap<&Key, u32> = HashMap::new();
    let mut out = Vec::new();
    for (i, key) in candidates.iter().enumerate() {
        if out.len() as u32 >= want {
            break;
        }
        let used = taken.entry(key).or_insert(0);
        if *used < load.room(limits, key) {
            *used += 1;
            out.push(i);
        }
    }
    out
}

/// Every queue with tasks or a control, by name: counts and controls side by side.
pub(crate) fn fold(
    counts: crate::store::QueueCounts,
    controls: Vec<QueueControl>,
) -> Vec<QueueInfo> {
    let mut out: std::collections::BTreeMap<String, QueueInfo> = Default::default();
    fn info<'a>(
        out: &'a mut std::collections::BTreeMap<String, QueueInfo>,
        name: &str,
    ) -> &'a mut QueueInfo {
        out.entry(name.to_string()).or_insert_with(|| QueueInfo {
            name: name.to_string(),
            paused: false,
            limits: QueueLimits::default(),
            counts: Vec::new(),
            due: 0,
        })
    }
    for (queue, state, n) in counts.counts {
        let q = info(&mut out, &queue);
        match q.counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, total)) => *total += n,
            None => q.counts.push((state, n)),
        }
    }
    for (queue, n) in counts.due {
        info(&mut out, &queue).due = n;
    }
    for control in controls {
        let q = info(&mut out, &control.name);
        q.paused = control.paused;
        q.limits = control.limits;
    }
    let mut all: Vec<QueueInfo> = out.into_values().collect();
    for q in &mut all {
        q.counts.sort_by_key(|(s, _)| *s);
    }
    all
}

/// How much longer than its window a start stays in a rate-limited queue's log: claims of
/// several workers read their clocks before they wait for the queue's lock, so one may count
/// after another with a later clock has pruned; pruning only what is this much older than
/// any window keeps every start a claim may count.
pub const LOG_SLACK: SignedDuration = SignedDuration::from_secs(10);

/// The longest margin a rate window is widened by: see [`window_start`].
pub const RATE_MARGIN: SignedDuration = SignedDuration::from_millis(50);

/// The start of the rate window a claim at `now` counts: starts at or before it no longer
/// count. The window is the rate's period widened by a margin (a twentieth of the period, at
/// most [`RATE_MARGIN`]), because the start a claim logs is its own clock reading, taken
/// before it waits for the queue's lock, while a handler starts a moment after the claim
/// returns: without the margin, handler starts measured in the run history could exceed the
/// rate by those moments. A rate of 10/1s therefore allows 10 starts per 1.05 s.
pub fn window_start(rate: Rate, now: Timestamp) -> Timestamp {
    let margin = (rate.period / 20).min(RATE_MARGIN);
    now - rate.period - margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Some(format!("\"{s}\""))
    }

    fn limits(concurrency: Option<u32>, rate: Option<&str>, per: bool) -> QueueLimits {
        QueueLimits {
            concurrency,
            rate: rate.map(|r| Rate::parse(r).unwrap()),
            per: per.then(|| "customer".to_string()),
        }
    }

    #[test]
    fn rates_are_read_and_written_alike() {
        for (text, count, ms, shown) in [
            ("10/1s", 10, 1000, "10/1s"),
            ("10/s", 10, 1000, "10/1s"),
            ("100/1m", 100, 60_000, "100/1m"),
            ("5/1h", 5, 3_600_000, "5/1h"),
            ("3/90s", 3, 90_000, "3/1m30s"),
            ("1/250ms", 1, 250, "1/250ms"),
            ("2/1h30m15s", 2, 5_415_000, "2/1h30m15s"),
        ] {
            let r = Rate::parse(text).unwrap();
            assert_eq!((r.count, r.period.as_millis()), (count, ms), "{text}");
            assert_eq!(r.to_string(), shown);
            assert_eq!(Rate::parse(shown).unwrap(), r);
        }
        for bad in [
            "",
            "10",
            "0/1s",
            "-1/1s",
            "10/0s",
            "10/2d",
            "x/1s",
            "10/1x",
            "1/1.5ms",
            "10/1s1h",
            "10/1m1m",
            "10/500ms1s",
        ] {
            let e = Rate::parse(bad).unwrap_err().to_string();
            assert!(e.contains("10/1s"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_queue_wide_concurrency_limit_leaves_room_for_what_does_not_run() {
        let l = limits(Some(3), None, false);
        let mut load = QueueLoad::default();
        assert_eq!(load.queue_room(&l, 10), 3);
        load.running.insert(None, 2);
        assert_eq!(load.queue_room(&l, 10), 1);
        load.running.insert(None, 5);
        assert_eq!(load.queue_room(&l, 10), 0);
        assert_eq!(load.queue_room(&limits(None, None, false), 7), 7);
    }

    #[test]
    fn a_rate_counts_starts_in_the_window_and_the_lower_limit_wins() {
        let l = limits(Some(10), Some("4/1s"), false);
        let mut load = QueueLoad::default();
        load.started.insert(None, 3);
        assert_eq!(load.queue_room(&l, 10), 1);
        load.running.insert(None, 10);
        assert_eq!(load.queue_room(&l, 10), 0);
        load.running.clear();
        load.started.insert(None, 4);
        assert_eq!(load.queue_room(&l, 10), 0);
    }

    #[test]
    fn per_key_limits_admit_each_key_up_to_its_room_in_claim_order() {
        let l = limits(Some(1), None, true);
        let mut load = QueueLoad::default();
        load.running.insert(key("acme"), 1);
        let candidates = vec![
            key("acme"),
            key("zeta"),
            key("zeta"),
            None,
            key("beta"),
            None,
        ];
        // acme is full, zeta and the shared none key get one each, beta one.
        assert_eq!(admit(&l, &load, &candidates, 10), vec![1, 3, 4]);
        assert_eq!(admit(&l, &load, &candidates, 2), vec![1, 3]);
        assert_eq!(load.full_keys(&l), vec![key("acme")]);
    }

    #[test]
    fn per_key_rates_and_concurrency_combine() {
        let l = limits(Some(2), Some("3/1m"), true);
        let mut load = QueueLoad::default();
        load.started.insert(key("a"), 2);
        load.running.insert(key("b"), 2);
        load.started.insert(None, 3);
        let candidates = vec![
            key("a"),
            key("a"),
            key("b"),
            None,
            key("c"),
            key("c"),
            key("c"),
        ];
        assert_eq!(admit(&l, &load, &candidates, 10), vec![0, 4, 5]);
        let mut full = load.full_keys(&l);
        full.sort();
        assert_eq!(full, vec![None, key("b")]);
    }

    #[test]
    fn limits_are_checked() {
        assert!(limits(Some(1), None, true).check().is_ok());
        let e = limits(None, None, true).check().unwrap_err().to_string();
        assert!(
            e.contains("(per) needs a limit") && e.contains("--concurrency N"),
            "{e}"
        );
        let e = limits(Some(0), None, false)
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("concurrency"), "{e}");
        let mut l = limits(Some(1), None, true);
        l.per = Some("a.b".into());
        let e = l.check().unwrap_err().to_string();
        assert!(e.contains("top-level"), "{e}");
    }

    #[test]
    fn limits_serialize_as_the_cli_shows_them() {
        let l = limits(Some(2), Some("10/1s"), true);
        assert_eq!(
            l.to_string(),
            "concurrency 2, rate 10/1s, per data.customer"
        );
        assert_eq!(QueueLimits::default().to_string(), "none");
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({"concurrency": 2, "rate": "10/1s", "per": "data.customer"})
        );
    }

    #[test]
    fn limits_given_as_json_are_checked_as_the_command_line_checks_them() {
        use serde_json::json;
        let spec: LimitsSpec = serde_json::from_value(
            json!({"concurrency": 2, "rate": "10/1s", "per": "data.customer"}),
        )
        .unwrap();
        assert_eq!(spec.limits().unwrap(), limits(Some(2), Some("10/1s"), true));
        let spec: LimitsSpec = serde_json::from_value(json!({"rate": "5/1h"})).unwrap();
        assert_eq!(spec.limits().unwrap(), limits(None, Some("5/1h"), false));
        let none: LimitsSpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(none.limits().unwrap(), QueueLimits::default());
        for bad in [
            json!({"concurrency": 0}),
            json!({"rate": "10"}),
            json!({"concurrency": 1, "per": "customer"}),
            json!({"per": "data.customer"}),
        ] {
            let spec: LimitsSpec = serde_json::from_value(bad.clone()).unwrap();
            assert!(spec.limits().is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<LimitsSpec>(json!({"burst": 1})).is_err());
        // Numbers are read as a task's are: a whole float is whole, and one beyond 64 bits
        // gets the command line's message, not the parser's.
        let spec: LimitsSpec = serde_json::from_str(r#"{"concurrency": 2.0}"#).unwrap();
        assert_eq!(spec.limits().unwrap(), limits(Some(2), None, false));
        let spec: LimitsSpec =
            serde_json::from_str(r#"{"concurrency": 99999999999999999999}"#).unwrap();
        let err = spec.limits().unwrap_err().to_string();
        assert!(
            err.contains("concurrency") && err.contains("10000"),
            "{err}"
        );
        assert!(serde_json::from_str::<LimitsSpec>(r#"{"concurrency": 2.5}"#).is_err());
    }

    #[test]
    fn a_rate_window_is_its_period_widened_by_a_twentieth_up_to_the_margin() {
        let now: Timestamp = "2030-01-01T00:00:10Z".parse().unwrap();
        let window = |rate: &str| now.duration_since(window_start(Rate::parse(rate).unwrap(), now));
        assert_eq!(window("10/1s"), SignedDuration::from_millis(1050));
        assert_eq!(window("1/250ms"), SignedDuration::from_micros(262_500));
        assert_eq!(window("1/100ms"), SignedDuration::from_millis(105));
        assert_eq!(window("5/1h"), SignedDuration::from_hours(1) + RATE_MARGIN);
    }

    #[test]
    fn the_queue_list_gives_each_queue_its_counts_due_tasks_and_controls() {
        let counts = crate::store::QueueCounts {
            counts: vec![
                ("mail".into(), State::Done, 3),
                ("mail".into(), State::Scheduled, 2),
                ("bills".into(), State::Dead, 1),
                ("mail".into(), State::Done, 4),
            ],
            due: vec![("mail".into(), 2)],
        };
        let controls = vec![
            QueueControl {
                name: "paused".into(),
                paused: true,
                limits: QueueLimits::default(),
            },
            QueueControl {
                name: "mail".into(),
                paused: false,
                limits: limits(Some(2), None, false),
            },
        ];
        let info = |name: &str, paused, limits, counts, due| QueueInfo {
            name: name.into(),
            paused,
            limits,
            counts,
            due,
        };
        assert_eq!(
            fold(counts, controls),
            vec![
                info(
                    "bills",
                    false,
                    QueueLimits::default(),
                    vec![(State::Dead, 1)],
                    0
                ),
                info(
                    "mail",
                    false,
                    limits(Some(2), None, false),
                    vec![(State::Scheduled, 2), (State::Done, 7)],
                    2
                ),
                info("paused", true, QueueLimits::default(), vec![], 0),
            ]
        );
    }
}
