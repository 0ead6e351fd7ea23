//! Bulk enqueue from JSON Lines: `party add --from FILE.jsonl`.
//!
//! One task per line: `{"handler": "...", "data": {...}, "at": "...", "queue": "...",
//! "priority": 0, "max_attempts": 3}`; only `handler` is required. Blank lines are skipped.
//! Every line is checked before anything is written, and the tasks go in with
//! [`Party::add_many`]: one transaction for the whole file, so a file is added all or none. A
//! bad line is refused with its line number, and nothing is written.

use std::io::{BufRead, Read};

use party::jiff::Timestamp;
use party::serde_json::{Map, Value};
use party::validate;
use party::{NewTask, Party, TaskError, TaskId};
use serde::Deserialize;

/// The longest line read: the largest task data and room for the other fields.
const MAX_LINE_BYTES: usize = validate::MAX_DATA_BYTES + 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    handler: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    max_attempts: Option<i64>,
}

/// The tasks of a JSON Lines text, each with its line number (from 1).
///
/// # Errors
/// [`TaskError::Invalid`] naming the first bad line: not JSON, too long, an unknown field, a
/// missing handler, a value outside the limits of [`party::validate`], a time that is not RFC
/// 3339.
pub fn parse(mut input: impl BufRead) -> Result<Vec<(usize, NewTask)>, TaskError> {
    let mut tasks = Vec::new();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| TaskError::invalid(format!("line {}: {e}", number + 1)))?;
        if read == 0 {
            break;
        }
        number += 1;
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            return Err(TaskError::invalid(format!(
                "line {number} is too long: at most {MAX_LINE_BYTES} bytes (task data is at most \
                 {} bytes)",
                validate::MAX_DATA_BYTES
            )));
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|_| TaskError::invalid(format!("line {number} is not UTF-8 text")))?;
        if line.trim().is_empty() {
            continue;
        }
        tasks.push((
            number,
            task(line).map_err(|e| TaskError::invalid(format!("line {number}: {e}")))?,
        ));
    }
    Ok(tasks)
}

fn task(line: &str) -> Result<NewTask, TaskError> {
    let l: Line = party::serde_json::from_str(line).map_err(|e| {
        TaskError::invalid(format!(
            "{e}; each line must be one JSON object like \
             {{\"handler\": \"noop\", \"data\": {{}}, \"at\": \"2027-01-31T09:00:00Z\"}}"
        ))
    })?;
    validate::integers_fit(line)?;
    validate::handler_name(&l.handler)?;
    let mut t = NewTask::new(l.handler);
    t = t.data(match l.data {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => validate::canonical_data(v)?.0,
        Some(_) => {
            return Err(TaskError::invalid(
                "\"data\" must be a JSON object like {\"key\": \"value\"}",
            ));
        }
    });
    if let Some(at) = l.at {
        let at: Timestamp =
            validate::time(&at).map_err(|e| TaskError::invalid(format!("\"at\": {e}")))?;
        t = t.at(at);
    }
    if let Some(q) = l.queue {
        validate::queue_name(&q)?;
        t = t.queue(q);
    }
    if let Some(p) = l.priority {
        t = t.priority(validate::priority(p)?);
    }
    if let Some(n) = l.max_attempts {
        t = t.max_attempts(validate::max_attempts(n)?);
    }
    Ok(t)
}

/// Parse `input` and add every task in one transaction; returns the ids in line order.
///
/// # Errors
/// [`TaskError::Invalid`] naming the first bad line (nothing is written);
/// [`TaskError::Duplicate`] for a recurring task that already exists; [`TaskError::Store`].
pub async fn add_from(party: &Party, input: impl BufRead) -> Result<Vec<TaskId>, TaskError> {
    let tasks = parse(input)?;
    if tasks.is_empty() {
        return Err(TaskError::invalid(
            "the file has no tasks: give one JSON object per line",
        ));
    }
    // The rule `add --at` applies: an explicit time must not be past.
    let now = party.clock().now();
    for (number, task) in &tasks {
        if let Some(at) = task.at {
            validate::not_past(at, now, "\"at\"")
                .map_err(|e| TaskError::invalid(format!("line {number}: {e}")))?;
        }
    }
    let lines: Vec<usize> = tasks.iter().map(|(n, _)| *n).collect();
    let tasks: Vec<NewTask> = tasks.into_iter().map(|(_, t)| t).collect();
    party.add_many(tasks).await.map_err(|e| match e {
        // `add_many` names the task by its place in the batch; name the line instead.
        TaskError::Invalid(m) => TaskError::Invalid(relabel(&m, &lines)),
        e => e,
    })
}

fn relabel(message: &str, lines: &[usize]) -> String {
    let place = message
        .strip_prefix("task ")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
    match place {
        Some((n, rest)) if (1..=lines.len()).contains(&n) => {
            format!("line {}: {rest}", lines[n - 1])
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_tasks_and_blank_lines_are_skipped() {
        let text = "{\"handler\":\"noop\"}\n\n{\"handler\":\"log\",\"data\":{\"a\":1},\"queue\":\"q\",\"priority\":-1}\n";
        let tasks = parse(text.as_bytes()).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].0, 3);
        assert_eq!(tasks[1].1.queue, "q");
        assert_eq!(tasks[1].1.priority, -1);
    }

    #[test]
    fn a_bad_line_is_named() {
        for bad in [
            "{\"handler\":\"noop\",\"data\":[1]}",
            "not json",
            "{\"handler\":\"noop\",\"at\":\"tomorrow\"}",
            "{\"handler\":\"noop\",\"colour\":\"red\"}",
            "{\"data\":{}}",
        ] {
            let text = format!("{{\"handler\":\"noop\"}}\n{bad}\n");
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("line 2:"), "{e}");
        }
    }

    #[test]
    fn batch_places_become_line_numbers() {
        assert_eq!(
            relabel("task 2: unknown handler 'x'", &[1, 5]),
            "line 5: unknown handler 'x'"
        );
        assert_eq!(relabel("something else", &[1]), "something else");
    }
}
