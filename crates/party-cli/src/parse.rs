//! Parsers for the values the command line takes: durations, times, JSON data, ids, states.
//! Each error says what was wrong and what to write instead; clap adds which option it was.

use jiff::{SignedDuration, Timestamp};
use party::{State, TaskId};
use serde_json::Value;

/// A duration like `90s`, `30m`, `2h`, `7d`, `1w` or `1h30m`: the same form recurrence rules
/// use ([`party::recurrence::parse_duration`]).
pub(crate) fn duration(s: &str) -> Result<SignedDuration, String> {
    party::recurrence::parse_duration(s)
}

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

/// A cron expression, checked now so a bad one writes nothing.
pub(crate) fn cron(s: &str) -> Result<String, String> {
    party::recurrence::Recurrence::cron(s, None).map(|_| s.to_string())
}

/// A day of the month for `--monthly-on`: 1 to 31.
pub(crate) fn month_day(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(d @ 1..=31) => Ok(d),
        _ => Err(format!(
            "'{s}' is not a day of the month: give 1 to 31 (31 runs on the last day of shorter months)"
        )),
    }
}

/// A wall time `HH:MM` for `--at-time`.
pub(crate) fn wall_time(s: &str) -> Result<String, String> {
    party::recurrence::Recurrence::monthly_on(1, s, None).map(|_| s.to_string())
}

/// An IANA time zone name, looked up in the system's time zone database.
pub(crate) fn zone(s: &str) -> Result<String, String> {
    party::recurrence::Recurrence::cron("0 0 * * *", Some(s))
        .map(|r| r.tz.unwrap_or_else(|| s.to_string()))
}

/// `--missed all|latest|skip`.
pub(crate) fn missed(s: &str) -> Result<party::recurrence::Missed, String> {
    s.parse().map_err(|e: String| e)
}

/// `--nonexistent shift|skip`.
pub(crate) fn nonexistent(s: &str) -> Result<party::recurrence::Nonexistent, String> {
    s.parse().map_err(|e: String| e)
}

/// `--repeated first|second`.
pub(crate) fn repeated(s: &str) -> Result<party::recurrence::Repeated, String> {
    s.parse().map_err(|e: String| e)
}

/// `party next --count`: 1 to 1000.
pub(crate) fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=1000) => Ok(n),
        _ => Err(format!("'{s}' is not a count from 1 to 1000")),
    }
}

/// `party worker --lease`: 1 second to 1 hour.
pub(crate) fn lease(s: &str) -> Result<SignedDuration, String> {
    let d = duration(s)?;
    if d < SignedDuration::from_secs(1) || d > SignedDuration::from_hours(1) {
        return Err(format!(
            "'{s}' is out of range: a lease is between 1s and 1h (default 30s)"
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
    party::check_data(&value).map_err(|e| e.to_string())?;
    Ok(value)
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

/// A variable name for `worker --shell-env`: letters, digits and `_`, not starting with a digit,
/// and not `PARTY_*` (those carry the task's attributes; the worker's own, such as the database
/// URL, are never passed on).
pub(crate) fn env_name(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'{}' is not an environment variable name: use letters, digits and _, e.g. AWS_PROFILE",
            s.chars().take(100).collect::<String>()
        ));
    }
    if s.starts_with("PARTY_") {
        return Err(format!(
            "'{s}' cannot be passed to shell commands: PARTY_* names are reserved for the task's \
             attributes, and the worker's own settings (such as its database URL) stay with it"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_shared_form() {
        assert_eq!(duration("90s").unwrap(), SignedDuration::from_secs(90));
        assert_eq!(duration("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(duration("1w").unwrap(), SignedDuration::from_hours(7 * 24));
        assert_eq!(duration("0s").unwrap(), SignedDuration::ZERO);
        assert!(duration("5x").unwrap_err().contains("unknown unit"));
        assert!(interval("0m").unwrap_err().contains("positive"));
        assert!(
            demo_length("1s")
                .unwrap_err()
                .contains("between 5s and 10m")
        );
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
