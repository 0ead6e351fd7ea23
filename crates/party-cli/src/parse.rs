//! Parsers for the values the command line takes: durations, times, JSON data, ids, states,
//! names and numbers. The limits and checks themselves live in [`party::validate`], shared with
//! the library and `add --from`; these adapt them to clap. Each error says what was wrong and
//! what to write instead; clap adds which option it was.

use jiff::{SignedDuration, Timestamp};
use party::validate::{self, quote};
use party::{State, TaskError, TaskId};
use serde_json::Value;

/// A duration like `90s`, `30m`, `2h`, `7d`, `1w` or `1h30m` (`1h 30m` too): the same form
/// recurrence rules use ([`party::recurrence::parse_duration`]).
pub(crate) fn duration(s: &str) -> Result<SignedDuration, TaskError> {
    validate::duration(s)
}

/// A recurrence interval: a [`duration`] longer than zero.
pub(crate) fn interval(s: &str) -> Result<SignedDuration, TaskError> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(TaskError::invalid(format!(
            "{} is zero: a task cannot recur every 0 seconds; give a positive duration, e.g. 30m",
            quote(s)
        )));
    }
    Ok(d)
}

/// A cron expression, checked now so a bad one writes nothing.
pub(crate) fn cron(s: &str) -> Result<String, TaskError> {
    validate::short_text(s, "the cron expression")?;
    party::recurrence::Recurrence::cron(s, None)
        .map(|_| s.to_string())
        .map_err(TaskError::invalid)
}

/// A day of the month for `--monthly-on`: 1 to 31.
pub(crate) fn month_day(s: &str) -> Result<u8, TaskError> {
    match s.trim().parse::<u8>() {
        Ok(d @ 1..=31) => Ok(d),
        _ => Err(TaskError::invalid(format!(
            "{} is not a day of the month: give 1 to 31 (31 runs on the last day of shorter \
             months)",
            quote(s)
        ))),
    }
}

/// A wall time `HH:MM` for `--at-time`.
pub(crate) fn wall_time(s: &str) -> Result<String, TaskError> {
    validate::short_text(s, "the wall time")?;
    party::recurrence::Recurrence::monthly_on(1, s, None)
        .map(|_| s.to_string())
        .map_err(TaskError::invalid)
}

/// An IANA time zone name, looked up in the system's time zone database.
pub(crate) fn zone(s: &str) -> Result<String, TaskError> {
    validate::short_text(s, "the time zone")?;
    party::recurrence::Recurrence::cron("0 0 * * *", Some(s))
        .map(|r| r.tz.unwrap_or_else(|| s.to_string()))
        .map_err(TaskError::invalid)
}

/// `--missed all|latest|skip`.
pub(crate) fn missed(s: &str) -> Result<party::recurrence::Missed, TaskError> {
    validate::short_text(s, "the policy")?;
    s.parse().map_err(TaskError::invalid)
}

/// `--nonexistent shift|skip`.
pub(crate) fn nonexistent(s: &str) -> Result<party::recurrence::Nonexistent, TaskError> {
    validate::short_text(s, "the policy")?;
    s.parse().map_err(TaskError::invalid)
}

/// `--repeated first|second`.
pub(crate) fn repeated(s: &str) -> Result<party::recurrence::Repeated, TaskError> {
    validate::short_text(s, "the policy")?;
    s.parse().map_err(TaskError::invalid)
}

/// `party next --count`: 1 to 1000.
pub(crate) fn count(s: &str) -> Result<usize, TaskError> {
    validate::occurrence_count(s, "--count 5")
}

/// `party worker --lease`: 1 second to 1 hour.
pub(crate) fn lease(s: &str) -> Result<SignedDuration, TaskError> {
    let d = duration(s)?;
    if d < SignedDuration::from_secs(1) || d > SignedDuration::from_hours(1) {
        return Err(TaskError::invalid(format!(
            "{} is out of range: a lease is between 1s and 1h (default 30s)",
            quote(s)
        )));
    }
    Ok(d)
}

/// `party worker --grace`: 0s to 24h.
pub(crate) fn grace(s: &str) -> Result<SignedDuration, TaskError> {
    validate::grace(s)
}

/// How long `party demo` runs: 5 seconds to 10 minutes.
pub(crate) fn demo_length(s: &str) -> Result<SignedDuration, TaskError> {
    let d = duration(s)?;
    if d < SignedDuration::from_secs(5) || d > SignedDuration::from_mins(10) {
        return Err(TaskError::invalid(format!(
            "{} is out of range: the demo runs between 5s and 10m (default 20s)",
            quote(s)
        )));
    }
    Ok(d)
}

/// An instant in RFC 3339 with `Z` or an offset (see [`validate::time`]).
pub(crate) fn time(s: &str) -> Result<Timestamp, TaskError> {
    validate::time(s)
}

/// Task data: a JSON object (see [`validate::data_text`]).
pub(crate) fn data(s: &str) -> Result<Value, TaskError> {
    validate::data_text(s, "--data '{\"arg1\": \"hello\"}' (in single quotes)")
}

/// A handler name for `add` and `list --handler`.
pub(crate) fn handler(s: &str) -> Result<String, TaskError> {
    validate::handler_name(s).map(|()| s.to_string())
}

/// `list --data`, `cancel --data`, `retry --data`: `FIELD=VALUE`, as [`validate::data_match`].
pub(crate) fn data_match(s: &str) -> Result<party::DataMatch, TaskError> {
    validate::data_match(s)
}

/// A queue name for `add --queue` and `worker --queue`.
pub(crate) fn queue(s: &str) -> Result<String, TaskError> {
    validate::queue_name(s).map(|()| s.to_string())
}

/// `--unique-key`: as [`validate::unique_key`].
pub(crate) fn unique_key(s: &str) -> Result<String, TaskError> {
    validate::unique_key(s).map(|()| s.to_string())
}

/// `--unique-for`: a [`duration`] within [`validate::unique_for`].
pub(crate) fn unique_for(s: &str) -> Result<SignedDuration, TaskError> {
    let d = duration(s)?;
    validate::unique_for(d).map(|()| d)
}

/// `--max-attempts`: 1 to [`validate::MAX_ATTEMPTS`].
pub(crate) fn max_attempts(s: &str) -> Result<u32, TaskError> {
    let n = validate::whole_number(
        s,
        "max attempts",
        1,
        validate::MAX_ATTEMPTS.into(),
        "--max-attempts 3 (1 means no retries)",
    )?;
    validate::max_attempts(n)
}

/// `--priority`: any 32-bit integer; lower runs first.
pub(crate) fn priority(s: &str) -> Result<i32, TaskError> {
    let n = validate::whole_number(
        s,
        "the priority",
        i32::MIN.into(),
        i32::MAX.into(),
        "--priority -10 (lower runs first)",
    )?;
    validate::priority(n)
}

/// `party copy --batch`: 1 to [`validate::MAX_COPY_BATCH`].
pub(crate) fn copy_batch(s: &str) -> Result<u32, TaskError> {
    validate::copy_batch(s, "--batch 1000")
}

/// `party show --runs`: `all`, or the latest N runs.
pub(crate) fn runs_shown(s: &str) -> Result<crate::args::RunsShown, TaskError> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(crate::args::RunsShown::All);
    }
    validate::runs_limit(s, "--runs 20, or --runs all for every run")
        .map(crate::args::RunsShown::Latest)
}

/// `--limit`: 1 to [`validate::MAX_LIST_LIMIT`].
pub(crate) fn limit(s: &str) -> Result<u32, TaskError> {
    validate::list_limit(s, "--limit 20")
}

/// `--concurrency`: 1 to [`validate::MAX_CONCURRENCY`].
pub(crate) fn concurrency(s: &str) -> Result<usize, TaskError> {
    validate::whole_number(
        s,
        "the concurrency",
        1,
        validate::MAX_CONCURRENCY as i64,
        "--concurrency 4",
    )
    .map(|n| n as usize)
}

/// `--prefetch`: 0 to [`validate::MAX_PREFETCH`].
pub(crate) fn prefetch(s: &str) -> Result<usize, TaskError> {
    validate::whole_number(
        s,
        "the prefetch",
        0,
        validate::MAX_PREFETCH as i64,
        "--prefetch 16",
    )
    .map(|n| n as usize)
}

/// `queue limit --concurrency`: 1 to [`validate::MAX_CONCURRENCY`].
pub(crate) fn queue_concurrency(s: &str) -> Result<u32, TaskError> {
    let n = validate::whole_number(
        s,
        "the queue's concurrency",
        1,
        validate::MAX_CONCURRENCY as i64,
        "--concurrency 5",
    )?;
    validate::queue_concurrency(n)
}

/// `queue limit --rate`: `10/1s`, `100/1m`, `1000/1h`.
pub(crate) fn rate(s: &str) -> Result<party::Rate, TaskError> {
    validate::rate(s)
}

/// `queue limit --per`: `data.FIELD`.
pub(crate) fn per_key(s: &str) -> Result<String, TaskError> {
    validate::per_key(s)
}

/// A task state name.
pub(crate) fn state(s: &str) -> Result<State, TaskError> {
    validate::short_text(s, "the state")?;
    s.parse::<State>()
}

/// A task id: 24 hex characters.
pub(crate) fn id(s: &str) -> Result<TaskId, TaskError> {
    s.parse::<TaskId>()
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
            "{} is not an environment variable name: use letters, digits and _, e.g. AWS_PROFILE",
            quote(s)
        ));
    }
    if s.starts_with("PARTY_") {
        return Err(format!(
            "{} cannot be passed to shell commands: PARTY_* names are reserved for the task's \
             attributes, and the worker's own settings (such as its database URL) stay with it",
            quote(s)
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
        assert!(
            duration("5x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(interval("0m").unwrap_err().to_string().contains("positive"));
        assert!(
            demo_length("1s")
                .unwrap_err()
                .to_string()
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
                .to_string()
                .contains("RFC 3339")
        );
        assert!(
            time("tomorrow")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn data_must_be_a_json_object() {
        assert!(data(r#"{"a": 1}"#).is_ok());
        assert!(
            data("{a: 1}")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        assert!(
            data("[1, 2]")
                .unwrap_err()
                .to_string()
                .contains("not an array")
        );
        assert!(
            data("\"x\"")
                .unwrap_err()
                .to_string()
                .contains("not a string")
        );
    }

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(max_attempts("3").unwrap(), 3);
        assert!(
            max_attempts("0")
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
        assert!(
            max_attempts("-1")
                .unwrap_err()
                .to_string()
                .contains("too small: it must be at least 1")
        );
        assert!(
            max_attempts("4294967295")
                .unwrap_err()
                .to_string()
                .contains("too large: the maximum is 2147483647")
        );
        assert!(
            limit("x")
                .unwrap_err()
                .to_string()
                .contains("not a whole number")
        );
        assert!(
            priority("2147483648")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }
}

/// `--retain-done`, `--retain-dead`, `--retain-recurring`: a duration, or `forever` to keep
/// that kind of history without end. Each kind's floor is checked by
/// [`party::policy::Retention::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retain(pub(crate) Option<SignedDuration>);

/// A [`duration`] or `forever`.
pub(crate) fn duration_or_forever(s: &str) -> Result<Retain, String> {
    if s.trim().eq_ignore_ascii_case("forever") {
        return Ok(Retain(None));
    }
    duration(s)
        .map(|d| Retain(Some(d)))
        .map_err(|e| format!("{e}; or write `forever` to keep it without end"))
}
