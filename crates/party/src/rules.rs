//! How the runtime reads the recurrence rule stored with a task. The rule's logic lives in
//! [`crate::recurrence`]; this is the narrow bridge the worker and the client use.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::TaskError;

/// What to do with an occurrence claimed at `now`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CatchUp {
    /// Run it for this timestamp.
    Run(Timestamp),
    /// Run nothing now; the next occurrence is at this timestamp.
    Skip(Timestamp),
}

/// The stored form of "every `d`".
pub(crate) fn every_json(d: SignedDuration) -> Value {
    serde_json::json!({ "every": d.as_secs() })
}

/// Check a rule before storing it.
pub(crate) fn validate(rule: &Value) -> Result<(), TaskError> {
    parse_every(rule).map(|_| ())
}

fn parse_every(rule: &Value) -> Result<SignedDuration, TaskError> {
    match rule.get("every").and_then(Value::as_i64) {
        Some(s) if s > 0 => Ok(SignedDuration::from_secs(s)),
        _ => Err(TaskError::invalid(format!("not a recurrence rule: {rule}"))),
    }
}

/// The first occurrence at or after `now`, for a task created without an explicit time.
pub(crate) fn first(_rule: &Value, now: Timestamp) -> Result<Timestamp, TaskError> {
    Ok(now)
}

/// The occurrence after `t`.
pub(crate) fn next_after(rule: &Value, t: Timestamp) -> Result<Option<Timestamp>, TaskError> {
    let every = parse_every(rule)?;
    Ok(t.checked_add(every).ok())
}

/// Apply the rule's missed-occurrence policy to an occurrence scheduled for `scheduled` and
/// claimed at `now`.
pub(crate) fn catch_up(
    _rule: &Value,
    scheduled: Timestamp,
    _now: Timestamp,
) -> Result<CatchUp, TaskError> {
    Ok(CatchUp::Run(scheduled))
}
