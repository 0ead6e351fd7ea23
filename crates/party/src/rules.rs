//! How the runtime and the client read the recurrence rule stored with a task. The rule's
//! logic lives in [`crate::recurrence`]; this is the narrow bridge, turning its messages into
//! [`TaskError`]s.

use jiff::Timestamp;

use crate::TaskError;
use crate::recurrence::{self, Recurrence};

/// What to do with an occurrence claimed at `now`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CatchUp {
    /// Run it for this timestamp.
    Run(Timestamp),
    /// Run nothing now; the next occurrence is at this timestamp (none: the rule is over).
    Skip(Option<Timestamp>),
}

/// Read a stored rule.
pub(crate) fn parse(stored: &str) -> Result<Recurrence, TaskError> {
    Recurrence::from_json(stored).map_err(|e| {
        TaskError::failed(format!(
            "the task's stored recurrence rule is unreadable: {e}"
        ))
    })
}

/// Check a rule before storing it.
pub(crate) fn validate(rule: &Recurrence) -> Result<(), TaskError> {
    rule.validate().map_err(TaskError::invalid)
}

/// The first occurrence at or after `now`, for a task created without an explicit time.
pub(crate) fn first(rule: &Recurrence, now: Timestamp) -> Result<Timestamp, TaskError> {
    rule.first_at_or_after(now).ok_or_else(|| {
        TaskError::invalid(format!(
            "the rule {} has no occurrence after now; check the rule",
            rule.rule
        ))
    })
}

/// Apply the rule's missed-occurrence policy to an occurrence scheduled for `scheduled` and
/// claimed at `now`.
pub(crate) fn catch_up(rule: &Recurrence, scheduled: Timestamp, now: Timestamp) -> CatchUp {
    match rule.catch_up(scheduled, now) {
        recurrence::CatchUp::Run { timestamp, .. } => CatchUp::Run(timestamp),
        recurrence::CatchUp::Skip { next, .. } => CatchUp::Skip(next),
    }
}
