//! The one error type of party: what handlers return and what every API call reports.

use std::fmt;

use crate::TaskId;

/// Everything that can go wrong in party, from a handler's failed attempt to a duplicate
/// recurring task. The CLI maps each kind to an exit code (see [`TaskError::exit_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// A handler's attempt failed; the message is recorded in the run history.
    Failed(String),
    /// Bad input: malformed JSON, an unknown handler, a bad time or duration. Nothing was written.
    Invalid(String),
    /// A recurring task with the same handler and data already exists (the singleton rule),
    /// or a task with the same handler and unique key (see [`crate::NewTask::unique_key`]).
    Duplicate {
        /// The handler name.
        handler: String,
        /// The id of the task that already holds the singleton or the key.
        existing: TaskId,
        /// The unique key, when that is what collided; `None` for the singleton rule.
        unique_key: Option<String>,
        /// Where the refused task was given in a batch, as the batch's caller names it (`task
        /// 3` for [`crate::Party::add_many`] and the HTTP API's bulk add, `line 7` for `party
        /// add --from`); the message starts with it. `None` for a task added alone.
        place: Option<String>,
    },
    /// No task has this id.
    NotFound(TaskId),
    /// The task is in a state that does not allow the operation (e.g. cancelling a running task).
    Conflict(String),
    /// `schedule_next_run` was refused: the next run must be strictly later than the current timestamp.
    Schedule(String),
    /// The database failed or could not be reached.
    Store(String),
    /// The database is there but cannot be used as it is, and retrying will not change that: a
    /// damaged file, a file that is not a database, a store party may not write, tables not as
    /// this binary expects them, a row the database refuses (see
    /// [`crate::policy::fault_is_permanent`]). A worker stops with this error instead of
    /// retrying; the message says what to do.
    Unusable(String),
}

impl TaskError {
    /// A failed attempt with this message.
    pub fn failed(msg: impl fmt::Display) -> TaskError {
        TaskError::Failed(msg.to_string())
    }

    /// Bad input with this message.
    pub fn invalid(msg: impl fmt::Display) -> TaskError {
        TaskError::Invalid(msg.to_string())
    }

    /// A store failure with this message.
    pub fn store(msg: impl fmt::Display) -> TaskError {
        TaskError::Store(msg.to_string())
    }

    /// Whether retrying cannot help: the store is unusable as it is
    /// ([`TaskError::Unusable`]). A worker stops on such an error, and retries any other
    /// store error with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, TaskError::Unusable(_))
    }

    /// The CLI exit code for this error: 2 bad input, 3 duplicate, 4 not found, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            TaskError::Invalid(_) => 2,
            TaskError::Duplicate { .. } => 3,
            TaskError::NotFound(_) => 4,
            _ => 1,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed(m) => write!(f, "{m}"),
            TaskError::Invalid(m) => write!(f, "{m}"),
            TaskError::Duplicate {
                handler,
                existing,
                unique_key: None,
                place,
            } => write!(
                f,
                "{}a recurring '{handler}' task with the same data already exists: {existing}; \
                 only one may exist per handler and data (cancel it first, or change the data)",
                Place(place)
            ),
            TaskError::Duplicate {
                handler,
                existing,
                unique_key: Some(key),
                place,
            } => write!(
                f,
                "{}a '{handler}' task with the unique key {} already exists: {existing}; only one \
                 may be live per handler and key, or finished within the unique window (wait \
                 for it, cancel it, or use another key)",
                Place(place),
                crate::validate::quote(key)
            ),
            TaskError::NotFound(id) => {
                write!(
                    f,
                    "no task with id {id}; `party list` shows the ids that exist"
                )
            }
            TaskError::Conflict(m) => write!(f, "{m}"),
            TaskError::Schedule(m) => write!(f, "{m}"),
            TaskError::Store(m) | TaskError::Unusable(m) => write!(f, "database error: {m}"),
        }
    }
}

/// A batch place at the start of a message: `task 3: `, or nothing.
struct Place<'a>(&'a Option<String>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(place) => write!(f, "{place}: "),
            None => Ok(()),
        }
    }
}

impl std::error::Error for TaskError {}

impl From<String> for TaskError {
    fn from(s: String) -> TaskError {
        TaskError::Failed(s)
    }
}

impl From<&str> for TaskError {
    fn from(s: &str) -> TaskError {
        TaskError::Failed(s.to_string())
    }
}

impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> TaskError {
        TaskError::Failed(e.to_string())
    }
}

impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> TaskError {
        TaskError::Failed(format!("bad task data: {e}"))
    }
}
