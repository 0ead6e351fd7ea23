//! Parsers for the values the command line takes: durations, times, JSON data, ids, states.
//! Each error says what was wrong and what to write instead; clap adds which option it was.

use jiff::{SignedDuration, Timestamp};
use party::{State, TaskId};
use serde_json::Value;

const DURATION_HELP: &str =
    "write a number and a unit (s, m, h, d), e.g. 90s, 30m, 2h, 7d, or combined like 1h30m";

/// A duration like `90s`, `30m`, `2h`, `7d` or `1h30m`: numbers with units, largest unit first,
/// each unit at most once. A day is 24 hours.
pub(crate) fn duration(s: &str) -> Result<SignedDuration, String> {
    if s.is_empty() {
        return Err(format!("the duration is empty: {DURATION_HELP}"));
    }
    let mut total: i64 = 0;
    let mut last_unit: Option<(char, i64)> = None;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "'{s}' is not a duration: expected a number at '{rest}'; {DURATION_HELP}"
            ));
        }
        let number: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("'{s}' is not a duration: the number is too large"))?;
        rest = &rest[digits..];
        let Some(unit) = rest.chars().next() else {
            return Err(format!(
                "'{s}' is not a duration: the number {number} has no unit; {DURATION_HELP}"
            ));
        };
        let seconds = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            other => {
                return Err(format!(
                    "'{s}' is not a duration: '{other}' is not a unit; {DURATION_HELP}"
                ));
            }
        };
        if let Some((prev, prev_seconds)) = last_unit {
            if seconds >= prev_seconds {
                return Err(format!(
                    "'{s}' is not a duration: '{unit}' comes after '{prev}'; give each unit once, \
                     largest first, e.g. 1d12h or 1h30m"
                ));
            }
        }
        last_unit = Some((unit, seconds));
        rest = &rest[unit.len_utf8()..];
        total = number
            .checked_mul(seconds)
            .and_then(|n| total.checked_add(n))
            .filter(|n| *n <= MAX_SECONDS)
            .ok_or_else(|| {
                format!("'{s}' is too long: a duration may be at most 100 years (36500d)")
            })?;
    }
    Ok(SignedDuration::from_secs(total))
}

/// 100 years of days, far beyond any schedule and well inside jiff's range.
const MAX_SECONDS: i64 = 36_500 * 86_400;

/// A recurrence interval: a [`duration`] longer than zero.
pub(crate) fn interval(s: &str) -> Result<SignedDuration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "'{s}' is zero: a task cannot recur every 0 seconds; give a positive duration, e.g. 30m"
        ));
    }
    Ok(d)
}

/// How long `party demo` runs: 5 seconds to 10 minutes.
pub(crate) fn demo_length(s: &str) -> Result<SignedDuration, String> {
    let d = duration(s)?;
    if d < SignedDuration::from_secs(5) || d > SignedDuration::from_mins(10) {
        return Err(format!(
            "'{s}' is out of range: the demo runs between 5s and 10m (default 20s)"
        ));
    }
    Ok(d)
}

/// An instant in RFC 3339 with `Z` or an offset.
pub(crate) fn time(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>().map_err(|e| {
        format!(
            "'{s}' is not a time ({e}); write RFC 3339 with Z or an offset, e.g. \
             2027-01-31T09:00:00Z or 2027-01-31T10:00:00+01:00"
        )
    })
}

/// Task data: a JSON object.
pub(crate) fn data(s: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(s).map_err(|e| {
        format!(
            "not valid JSON ({e}); give a JSON object in single quotes, e.g. --data '{{\"arg1\": \"hello\"}}'"
        )
    })?;
    if !value.is_object() {
        return Err(format!(
            "task data must be a JSON object like '{{\"arg1\": \"hello\"}}', not {}",
            kind(&value)
        ));
    }
    Ok(value)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    s: &str,
    what: &str,
    example: &str,
) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err(format!("{what} must be at least 1, e.g. {example}")),
        Err(_) => Err(format!(
            "'{s}' is not a whole number: {what} is a whole number of at least 1, e.g. {example}"
        )),
    }
}

/// `--max-attempts`: at least 1.
pub(crate) fn max_attempts(s: &str) -> Result<u32, String> {
    positive(s, "max attempts", "--max-attempts 3 (1 means no retries)")
}

/// `--limit`: at least 1.
pub(crate) fn limit(s: &str) -> Result<u32, String> {
    positive(s, "the limit", "--limit 20")
}

/// `--concurrency`: at least 1.
pub(crate) fn concurrency(s: &str) -> Result<usize, String> {
    let n: u32 = positive(s, "the concurrency", "--concurrency 4")?;
    Ok(n as usize)
}

/// A task state name.
pub(crate) fn state(s: &str) -> Result<State, String> {
    s.parse::<State>().map_err(|e| e.to_string())
}

/// A task id: 24 hex characters.
pub(crate) fn id(s: &str) -> Result<TaskId, String> {
    s.parse::<TaskId>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_of_every_unit_and_combined() {
        assert_eq!(duration("90s").unwrap(), SignedDuration::from_secs(90));
        assert_eq!(duration("30m").unwrap(), SignedDuration::from_mins(30));
        assert_eq!(duration("2h").unwrap(), SignedDuration::from_hours(2));
        assert_eq!(duration("7d").unwrap(), SignedDuration::from_hours(7 * 24));
        assert_eq!(duration("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(
            duration("1d2h3m4s").unwrap(),
            SignedDuration::from_secs(86_400 + 7200 + 180 + 4)
        );
        assert_eq!(duration("0s").unwrap(), SignedDuration::ZERO);
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("5", "has no unit"),
            ("5x", "'x' is not a unit"),
            ("m", "expected a number at 'm'"),
            ("-5m", "expected a number"),
            ("1 h", "' ' is not a unit"),
            ("30m1h", "largest first"),
            ("1h1h", "largest first"),
            ("99999999999999999999s", "too large"),
            ("36501d", "at most 100 years"),
        ];
        for (input, expected) in cases {
            let err = duration(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
        assert!(interval("0m").unwrap_err().contains("positive"));
    }

    #[test]
    fn times_need_a_zone() {
        assert_eq!(
            time("2027-01-31T10:00:00+01:00").unwrap(),
            time("2027-01-31T09:00:00Z").unwrap()
        );
        assert!(
            time("2027-01-31T09:00:00")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(time("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn data_must_be_a_json_object() {
        assert!(data(r#"{"a": 1}"#).is_ok());
        assert!(data("{a: 1}").unwrap_err().contains("not valid JSON"));
        assert!(data("[1, 2]").unwrap_err().contains("not an array"));
        assert!(data("\"x\"").unwrap_err().contains("not a string"));
    }

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(max_attempts("3").unwrap(), 3);
        assert!(max_attempts("0").unwrap_err().contains("at least 1"));
        assert!(
            max_attempts("-1")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(limit("x").unwrap_err().contains("not a whole number"));
    }
}
