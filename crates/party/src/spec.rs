//! A task described as JSON, the way programs hand one over: `party add --from` (one a line)
//! and the HTTP API's `POST /api/v1/tasks` read the same shape with the same checks.
//!
//! ```json
//! {"handler": "send_invoice", "data": {"customer": "acme"}, "cron": "0 9 * * MON",
//!  "tz": "Europe/Berlin", "queue": "billing", "priority": 0, "max_attempts": 3}
//! ```
//!
//! Only `handler` is required. `at` (RFC 3339) or `in` (a duration) sets the first run; one of
//! `every`, `cron` or `monthly_on` with `at_time` makes it recur (`tz`, `missed`,
//! `nonexistent` and `repeated` refine the rule). Unknown fields are refused.

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::recurrence::Recurrence;
use crate::{NewTask, TaskError, validate};

/// One task as JSON. Deserialize it (unknown fields are refused), then turn it into a
/// [`NewTask`] with [`TaskSpec::new_task`], which applies every check of [`crate::validate`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Handler name.
    pub handler: String,
    /// A JSON object (empty when left out).
    #[serde(default)]
    pub data: Option<Value>,
    /// The first run, RFC 3339; not in the past.
    #[serde(default)]
    pub at: Option<String>,
    /// The first run as a delay from now, e.g. `90s`, `2h`.
    #[serde(default, rename = "in")]
    pub in_: Option<String>,
    /// Recur at this interval.
    #[serde(default)]
    pub every: Option<String>,
    /// Recur by this cron expression.
    #[serde(default)]
    pub cron: Option<String>,
    /// The rule's time zone (IANA name).
    #[serde(default)]
    pub tz: Option<String>,
    /// Recur monthly on this day (1-31) at `at_time`.
    #[serde(default, deserialize_with = "whole")]
    pub monthly_on: Option<i64>,
    /// The wall time `HH:MM` for `monthly_on`.
    #[serde(default)]
    pub at_time: Option<String>,
    /// After downtime: `all`, `latest` or `skip`.
    #[serde(default)]
    pub missed: Option<String>,
    /// A wall time that does not exist (DST gap): `shift` or `skip`.
    #[serde(default)]
    pub nonexistent: Option<String>,
    /// A wall time that happens twice (DST overlap): `first` or `second`.
    #[serde(default)]
    pub repeated: Option<String>,
    /// Attempts per occurrence.
    #[serde(default, deserialize_with = "whole")]
    pub max_attempts: Option<i64>,
    /// Queue name.
    #[serde(default)]
    pub queue: Option<String>,
    /// Priority, lower first.
    #[serde(default, deserialize_with = "whole")]
    pub priority: Option<i64>,
    /// A one-off task's unique key (see [`NewTask::unique_key`]).
    #[serde(default)]
    pub unique_key: Option<String>,
    /// With `unique_key`: also refused while such a task finished this long ago, e.g. `1h`.
    #[serde(default)]
    pub unique_for: Option<String>,
}

/// `monthly_on`'s day: 1 to 31.
fn month_day(day: i64) -> Result<u8, TaskError> {
    u8::try_from(day)
        .ok()
        .filter(|d| (1..=31).contains(d))
        .ok_or_else(|| {
            TaskError::invalid(format!(
                "\"monthly_on\": {day} is not a day of the month: give 1 to 31 (31 runs on the \
                 last day of shorter months)"
            ))
        })
}

/// A whole-number field read from any JSON number, so that one out of range is refused by
/// [`crate::validate`] with the message the command line gives: a number beyond 64 bits
/// (which JSON parsing makes a float) saturates, and is then out of range.
pub(crate) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match n.as_f64() {
        // `as` saturates at the ends of i64.
        Some(f) if f.fract() == 0.0 => Ok(Some(f as i64)),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number"
        ))),
    }
}

impl TaskSpec {
    /// Parse one JSON object, with a message that shows the expected shape when it is not one.
    ///
    /// # Errors
    /// [`TaskError::Invalid`]: not JSON, an unknown field, a missing handler, integers beyond
    /// 64 bits.
    pub fn from_json(text: &str) -> Result<TaskSpec, TaskError> {
        let spec: TaskSpec = serde_json::from_str(text).map_err(|e| {
            TaskError::invalid(format!(
                "{e}; a task is one JSON object like \
                 {{\"handler\": \"noop\", \"data\": {{}}, \"at\": \"2027-01-31T09:00:00Z\"}}"
            ))
        })?;
        // Its own numbers first, with their own messages: any other integer beyond 64 bits is
        // in the data.
        if let Some(p) = spec.priority {
            validate::priority(p)?;
        }
        if let Some(n) = spec.max_attempts {
            validate::max_attempts(n)?;
        }
        if let Some(day) = spec.monthly_on {
            month_day(day)?;
        }
        validate::integers_fit(text)?;
        Ok(spec)
    }

    /// The task it describes, checked with the rules of [`crate::validate`]; `now` judges `at`
    /// (not in the past) and `in`.
    ///
    /// # Errors
    /// [`TaskError::Invalid`] saying which field was wrong and what to write instead.
    pub fn new_task(self, now: Timestamp) -> Result<NewTask, TaskError> {
        validate::handler_name(&self.handler)?;
        let mut t = NewTask::new(self.handler);
        t = t.data(match self.data {
            None => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => validate::canonical_data(v)?.0,
            Some(_) => {
                return Err(TaskError::invalid(
                    "\"data\" must be a JSON object like {\"key\": \"value\"}",
                ));
            }
        });
        match (self.at, self.in_) {
            (Some(_), Some(_)) => {
                return Err(TaskError::invalid(
                    "give \"at\" or \"in\", not both: one first run time",
                ));
            }
            (Some(at), None) => {
                let at = validate::time(&at).map_err(field("at"))?;
                validate::not_past(at, now, "\"at\"")?;
                t = t.at(at);
            }
            (None, Some(d)) => {
                let d = validate::duration(&d).map_err(field("in"))?;
                if !d.is_zero() {
                    let at = now.checked_add(d).map_err(|_| {
                        TaskError::invalid(format!(
                            "\"in\": {d:#} ends beyond the last time party can store; give a \
                             shorter duration"
                        ))
                    })?;
                    t = t.at(at);
                }
            }
            (None, None) => {}
        }
        if let Some(q) = self.queue {
            validate::queue_name(&q)?;
            t = t.queue(q);
        }
        if let Some(p) = self.priority {
            t = t.priority(validate::priority(p)?);
        }
        if let Some(n) = self.max_attempts {
            t = t.max_attempts(validate::max_attempts(n)?);
        }
        if let Some(key) = self.unique_key {
            validate::unique_key(&key).map_err(field("unique_key"))?;
            t = t.unique_key(key);
        }
        if let Some(window) = self.unique_for {
            let d = validate::duration(&window).map_err(field("unique_for"))?;
            validate::unique_for(d).map_err(field("unique_for"))?;
            t = t.unique_for(d);
        }
        let rule = recurrence(
            self.every,
            self.cron,
            self.tz,
            self.monthly_on,
            self.at_time,
        )?;
        let refinements = [
            ("missed", self.missed.is_some()),
            ("nonexistent", self.nonexistent.is_some()),
            ("repeated", self.repeated.is_some()),
        ];
        let Some(mut rule) = rule else {
            if let Some((name, _)) = refinements.iter().find(|(_, set)| *set) {
                return Err(TaskError::invalid(format!(
                    "\"{name}\" refines a rule: give \"every\", \"cron\" or \"monthly_on\" too"
                )));
            }
            return Ok(t);
        };
        if let Some(m) = self.missed {
            validate::short_text(&m, "the policy")?;
            rule = rule.with_missed(
                m.parse()
                    .map_err(|e: String| field("missed")(TaskError::invalid(e)))?,
            );
        }
        if let Some(n) = self.nonexistent {
            validate::short_text(&n, "the policy")?;
            rule = rule.with_nonexistent(
                n.parse()
                    .map_err(|e: String| field("nonexistent")(TaskError::invalid(e)))?,
            );
        }
        if let Some(r) = self.repeated {
            validate::short_text(&r, "the policy")?;
            rule = rule.with_repeated(
                r.parse()
                    .map_err(|e: String| field("repeated")(TaskError::invalid(e)))?,
            );
        }
        Ok(t.recurrence(rule))
    }
}

fn recurrence(
    every: Option<String>,
    cron: Option<String>,
    tz: Option<String>,
    monthly_on: Option<i64>,
    at_time: Option<String>,
) -> Result<Option<Recurrence>, TaskError> {
    let given = [every.is_some(), cron.is_some(), monthly_on.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given > 1 {
        return Err(TaskError::invalid(
            "give one rule: \"every\", \"cron\" or \"monthly_on\", not several",
        ));
    }
    if at_time.is_some() && monthly_on.is_none() {
        return Err(TaskError::invalid(
            "\"at_time\" goes with \"monthly_on\": give both, e.g. \"monthly_on\": 31, \"at_time\": \"09:00\"",
        ));
    }
    if let Some(tz) = &tz {
        validate::short_text(tz, "the time zone")?;
    }
    let tz = tz.as_deref();
    let rule = if let Some(every) = every {
        let d = validate::duration(&every)
            .map_err(|e| TaskError::invalid(format!("\"every\": {e}")))?;
        if d.is_zero() {
            return Err(TaskError::invalid(
                "\"every\" is zero: a task cannot recur every 0 seconds; give a positive duration, e.g. 30m",
            ));
        }
        let mut r = Recurrence::every(d).map_err(TaskError::invalid)?;
        r.tz = tz
            .map(crate::recurrence::canonical_zone)
            .transpose()
            .map_err(TaskError::invalid)?;
        r
    } else if let Some(expr) = cron {
        validate::short_text(&expr, "the cron expression")?;
        Recurrence::cron(&expr, tz).map_err(TaskError::invalid)?
    } else if let Some(day) = monthly_on {
        let Some(at) = at_time else {
            return Err(TaskError::invalid(
                "\"monthly_on\" needs \"at_time\" (HH:MM), e.g. \"at_time\": \"09:00\"",
            ));
        };
        let day = month_day(day)?;
        validate::short_text(&at, "the wall time")?;
        Recurrence::monthly_on(day, &at, tz).map_err(TaskError::invalid)?
    } else {
        if tz.is_some() {
            return Err(TaskError::invalid(
                "\"tz\" is the time zone of a rule: give \"every\", \"cron\" or \"monthly_on\" too",
            ));
        }
        return Ok(None);
    };
    Ok(Some(rule))
}

/// An error about one field, prefixed with its name.
fn field(name: &'static str) -> impl Fn(TaskError) -> TaskError {
    move |e| TaskError::invalid(format!("\"{name}\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn task(text: &str) -> Result<NewTask, String> {
        TaskSpec::from_json(text)
            .and_then(|s| s.new_task(now()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_reaches_the_task() {
        let t = task(
            r#"{"handler":"noop","data":{"a":1},"in":"1h","cron":"0 9 * * *","tz":"Europe/Berlin",
                "missed":"skip","queue":"q","priority":-2,"max_attempts":7}"#,
        )
        .unwrap();
        assert_eq!(t.at, Some(now() + jiff::SignedDuration::from_hours(1)));
        assert_eq!(t.queue, "q");
        assert_eq!(t.priority, -2);
        assert_eq!(t.max_attempts, Some(7));
        let r = t.recurrence.unwrap();
        assert_eq!(r.tz.as_deref(), Some("Europe/Berlin"));
        assert_eq!(r.missed, crate::recurrence::Missed::Skip);
        let m = task(r#"{"handler":"noop","monthly_on":31,"at_time":"09:00"}"#).unwrap();
        assert!(m.recurrence.is_some());
        let e = task(r#"{"handler":"noop","every":"30m"}"#).unwrap();
        assert!(e.recurrence.is_some());
    }

    /// docs/RECURRENCE.md: zone names are "stored in their canonical spelling". A cron or a
    /// monthly rule's zone is; an `every` rule's zone is stored as typed, unchecked for
    /// spelling and untrimmed.
    #[test]
    fn the_zone_of_every_rule_is_stored_in_its_canonical_spelling() {
        for rule in [
            r#""cron":"0 9 * * *""#,
            r#""monthly_on":1,"at_time":"09:00""#,
            r#""every":"1h""#,
        ] {
            let t = task(&format!(
                r#"{{"handler":"noop",{rule},"tz":" europe/berlin "}}"#
            ))
            .unwrap();
            assert_eq!(
                t.recurrence.unwrap().tz.as_deref(),
                Some("Europe/Berlin"),
                "{rule}"
            );
        }
    }

    #[test]
    fn unique_fields_reach_the_task_and_are_checked() {
        let t =
            task(r#"{"handler":"export","unique_key":"customer:42","unique_for":"1h"}"#).unwrap();
        assert_eq!(t.unique_key.as_deref(), Some("customer:42"));
        assert_eq!(t.unique_for, Some(jiff::SignedDuration::from_hours(1)));
        let e = task(r#"{"handler":"export","unique_key":""}"#).unwrap_err();
        assert!(
            e.starts_with("\"unique_key\": the unique key is empty"),
            "{e}"
        );
        let e = task(r#"{"handler":"export","unique_key":"k","unique_for":"500d"}"#).unwrap_err();
        assert!(e.starts_with("\"unique_for\": "), "{e}");
        assert!(e.contains("366d"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, says) in [
            (r#"{"handler":"noop","colour":"red"}"#, "unknown field"),
            (r#"{"data":{}}"#, "missing field"),
            (
                r#"{"handler":"noop","data":[1]}"#,
                "\"data\" must be a JSON object",
            ),
            (r#"{"handler":"noop","at":"tomorrow"}"#, "\"at\""),
            (r#"{"handler":"noop","at":"2020-01-01T00:00:00Z"}"#, "past"),
            (
                r#"{"handler":"noop","at":"2031-01-01T00:00:00Z","in":"1h"}"#,
                "not both",
            ),
            (r#"{"handler":"noop","every":"0s"}"#, "zero"),
            (
                r#"{"handler":"noop","every":"1h","cron":"* * * * *"}"#,
                "one rule",
            ),
            (r#"{"handler":"noop","missed":"skip"}"#, "refines a rule"),
            (
                r#"{"handler":"noop","tz":"Europe/Berlin"}"#,
                "time zone of a rule",
            ),
            (
                r#"{"handler":"noop","monthly_on":32,"at_time":"09:00"}"#,
                "day of the month",
            ),
            (r#"{"handler":"noop","monthly_on":3}"#, "at_time"),
            (r#"{"handler":"noop","cron":"nope"}"#, "cron"),
            (r#"{"handler":"noop","max_attempts":0}"#, "attempts"),
            (r#"{"handler":"","data":{}}"#, "handler"),
            // Out-of-range numbers get the command line's message, even beyond 64 bits.
            (
                r#"{"handler":"noop","priority":99999999999999999999}"#,
                "the priority is too large: the maximum is 2147483647",
            ),
            (
                r#"{"handler":"noop","priority":-99999999999999999999}"#,
                "the priority is too small",
            ),
            (
                r#"{"handler":"noop","max_attempts":18446744073709551615}"#,
                "max attempts is too large",
            ),
            (r#"{"handler":"noop","priority":1.5}"#, "not a whole number"),
            (
                r#"{"handler":"noop","monthly_on":99999999999999999999,"at_time":"09:00"}"#,
                "not a day of the month",
            ),
        ] {
            let e = task(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
