//! Preparing a new task for the store: checked against the registry and the rules for task
//! input, canonicalized, and given an id. Shared by the client (`add`) and the runtime
//! (follow-up tasks from `on_complete`), so both apply the same checks.

use jiff::Timestamp;

use crate::model::NewTask;
use crate::store::InsertTask;
use crate::task::Registry;
use crate::{TaskError, TaskId, rules, validate};

/// Check and canonicalize a new task against the registry, at time `now`.
pub(crate) fn prepare(
    registry: &Registry,
    task: NewTask,
    now: Timestamp,
) -> Result<InsertTask, TaskError> {
    validate::handler_name(&task.handler)?;
    let Some(handler_recurs) = registry.is_recurring(&task.handler) else {
        let names = registry.names();
        return Err(TaskError::invalid(format!(
            "unknown handler '{}': the registered handlers are {}; register it in the \
             registry, or check the spelling",
            task.handler,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let unique_since = unique(&task, registry, now)?;
    let (value, data) = validate::canonical_data(task.data)?;
    registry.check(&task.handler, &value)?;
    if let Some(rule) = &task.recurrence {
        rules::validate(rule)?;
    }
    let timestamp = match (task.at, &task.recurrence) {
        (Some(at), _) => {
            validate::task_time(at)?;
            at
        }
        (None, Some(rule)) => rules::first(rule, now)?,
        (None, None) => now,
    };
    let max_attempts = match task.max_attempts {
        Some(n) => validate::max_attempts(n.into())?,
        None => registry
            .get(&task.handler)
            .map(|h| h.max_attempts().clamp(1, validate::MAX_ATTEMPTS))
            .unwrap_or(1),
    };
    validate::queue_name(&task.queue)?;
    let is_recurring = handler_recurs || task.recurrence.is_some();
    Ok(InsertTask {
        id: TaskId::generate(now),
        handler: task.handler,
        data,
        timestamp,
        is_recurring,
        rule: task.recurrence.as_ref().map(|r| r.to_json()),
        max_attempts,
        queue: task.queue,
        priority: task.priority,
        created_at: now,
        unique_key: task.unique_key,
        unique_since,
    })
}

/// Checks a task's unique key and window; returns the earliest finish that still refuses
/// another task with the key (`None`: only live tasks do).
fn unique(
    task: &NewTask,
    registry: &Registry,
    now: Timestamp,
) -> Result<Option<Timestamp>, TaskError> {
    let is_recurring =
        registry.is_recurring(&task.handler).unwrap_or(false) || task.recurrence.is_some();
    let Some(key) = &task.unique_key else {
        if task.unique_for.is_some() {
            return Err(TaskError::invalid(
                "a unique window needs a unique key: give --unique-key too (unique_key in Rust)",
            ));
        }
        return Ok(None);
    };
    validate::unique_key(key)?;
    if is_recurring {
        return Err(TaskError::invalid(format!(
            "'{}' is recurring, and a recurring task is already unique by its handler and data: \
             leave out the unique key",
            task.handler
        )));
    }
    let Some(window) = task.unique_for else {
        return Ok(None);
    };
    validate::unique_for(window)?;
    Ok(Some(now.checked_sub(window).unwrap_or(Timestamp::MIN)))
}

/// A batch holding one recurring task twice (same handler and data), or two tasks of a handler
/// with one unique key, cannot go in whole: the second is refused as bad input naming the
/// first by its place (their ids exist nowhere yet, so naming one would send a person
/// looking for a task that is not there).
pub(crate) fn repeated_within(rows: &[InsertTask]) -> Option<TaskError> {
    let mut recurring: std::collections::HashMap<(&str, &str), usize> = Default::default();
    let mut keyed: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for (i, t) in rows.iter().enumerate() {
        if t.is_recurring {
            if let Some(first) = recurring.insert((&t.handler, &t.data), i) {
                return Some(TaskError::Invalid(format!(
                    "task {}: repeats task {}: the same recurring '{}' task (handler and \
                     data); only one may exist, so give it once",
                    i + 1,
                    first + 1,
                    t.handler
                )));
            }
        }
        if let Some(key) = t.unique_key.as_deref() {
            if let Some(first) = keyed.insert((&t.handler, key), i) {
                return Some(TaskError::Invalid(format!(
                    "task {}: repeats task {}: the same unique key {} for '{}'; give each key \
                     once",
                    i + 1,
                    first + 1,
                    crate::validate::quote(key),
                    t.handler
                )));
            }
        }
    }
    None
}

/// What tells a task of a batch apart when the store refuses it as a duplicate: its handler,
/// its unique key, and for a recurring task a digest of its data (not the data itself, which
/// may be large).
pub(crate) struct BatchKey {
    handler: String,
    unique_key: Option<String>,
    /// For a recurring task, [`BatchKey::digest`] of its canonical data.
    pub(crate) data: Option<u64>,
}

impl BatchKey {
    /// The key of a task about to be inserted.
    pub(crate) fn of(row: &InsertTask) -> BatchKey {
        BatchKey {
            handler: row.handler.clone(),
            unique_key: row.unique_key.clone(),
            data: row.is_recurring.then(|| BatchKey::digest(&row.data)),
        }
    }

    /// A digest of canonical data text.
    pub(crate) fn digest(data: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        data.hash(&mut h);
        h.finish()
    }

    /// Whether this is a task of `handler` with the unique key `key`.
    pub(crate) fn is_keyed(&self, handler: &str, key: &str) -> bool {
        self.handler == handler && self.unique_key.as_deref() == Some(key)
    }

    /// Whether this is a recurring task of `handler`.
    pub(crate) fn is_recurring(&self, handler: &str) -> bool {
        self.handler == handler && self.data.is_some()
    }
}
