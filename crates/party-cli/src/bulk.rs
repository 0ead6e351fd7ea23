//! Bulk enqueue from JSON Lines: `party add --from FILE.jsonl`.
//!
//! One task per line, in the shape of [`party::spec::TaskSpec`] (the HTTP API's too):
//! `{"handler": "...", "data": {...}, "at": "...", "queue": "...", "priority": 0,
//! "max_attempts": 3}`, and `in`, `every`, `cron`, `tz`, `monthly_on`, `at_time`, `missed`;
//! only `handler` is required. Blank lines are skipped.
//! Every line is checked before anything is written, and the tasks go in with
//! [`Party::add_many`]: one transaction for the whole file, so a file is added all or none. A
//! bad line is refused with its line number, and nothing is written.

use std::io::{BufRead, Read};

use party::jiff::Timestamp;
use party::spec::TaskSpec;
use party::validate;
use party::{NewTask, Party, TaskError, TaskId};

/// The longest line read: the largest task data and room for the other fields.
const MAX_LINE_BYTES: usize = validate::MAX_DATA_BYTES + 64 * 1024;

/// The tasks of a JSON Lines text, each with its line number (from 1).
///
/// # Errors
/// [`TaskError::Invalid`] naming the first bad line: not JSON, too long, an unknown field, a
/// missing handler, a value outside the limits of [`party::validate`], a time that is not RFC
/// 3339 or is before `now`.
pub fn parse(mut input: impl BufRead, now: Timestamp) -> Result<Vec<(usize, NewTask)>, TaskError> {
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
        // A byte order mark, as some editors write at the start of a UTF-8 file, is no text.
        let line = if number == 1 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        tasks.push((
            number,
            TaskSpec::from_json(line)
                .and_then(|spec| spec.new_task(now))
                .map_err(|e| TaskError::invalid(format!("line {number}: {e}")))?,
        ));
    }
    Ok(tasks)
}

/// Parse `input` and add every task in one transaction; returns the ids in line order.
///
/// # Errors
/// [`TaskError::Invalid`] naming the first bad line (nothing is written);
/// [`TaskError::Duplicate`] naming the line of a task that already exists (a recurring task
/// with the same handler and data, or a task with the same handler and unique key; nothing
/// is written); [`TaskError::Store`].
pub async fn add_from(party: &Party, input: impl BufRead) -> Result<Vec<TaskId>, TaskError> {
    let tasks = parse(input, party.clock().now())?;
    if tasks.is_empty() {
        return Err(TaskError::invalid(
            "the file has no tasks: give one JSON object per line",
        ));
    }
    let lines: Vec<usize> = tasks.iter().map(|(n, _)| *n).collect();
    let tasks: Vec<NewTask> = tasks.into_iter().map(|(_, t)| t).collect();
    party.add_many(tasks).await.map_err(|e| match e {
        // `add_many` names the task by its place in the batch; name the line instead.
        TaskError::Invalid(m) => TaskError::Invalid(relabel(&m, &lines)),
        TaskError::Duplicate {
            handler,
            existing,
            unique_key,
            place,
        } => TaskError::Duplicate {
            handler,
            existing,
            unique_key,
            place: place.map(|p| line_of(&p, &lines)),
        },
        e => e,
    })
}

/// A batch place (`task N`) as the line it was read from (`line L`).
fn line_of(place: &str, lines: &[usize]) -> String {
    place
        .strip_prefix("task ")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| lines.get(n.checked_sub(1)?))
        .map_or_else(|| place.to_string(), |line| format!("line {line}"))
}

fn relabel(message: &str, lines: &[usize]) -> String {
    let Some((n, rest)) = place(message, lines.len()) else {
        return message.to_string();
    };
    // A task that repeats an earlier one names it by its place too.
    let rest = match rest
        .strip_prefix("repeats ")
        .and_then(|r| place(r, lines.len()))
    {
        Some((m, why)) => format!("repeats line {}: {why}", lines[m - 1]),
        None => rest.to_string(),
    };
    format!("line {}: {rest}", lines[n - 1])
}

/// The task number a message starts with (`task N: ...`), if it is one of `count`, and the
/// rest of the message.
fn place(text: &str, count: usize) -> Option<(usize, &str)> {
    text.strip_prefix("task ")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
        .filter(|(n, _)| (1..=count).contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_tasks_and_blank_lines_are_skipped() {
        let text = "{\"handler\":\"noop\"}\n\n{\"handler\":\"log\",\"data\":{\"a\":1},\"queue\":\"q\",\"priority\":-1}\n";
        let tasks = parse(text.as_bytes(), Timestamp::UNIX_EPOCH).unwrap();
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
            let e = parse(text.as_bytes(), Timestamp::UNIX_EPOCH)
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 2:"), "{e}");
        }
    }

    #[test]
    fn batch_places_become_line_numbers() {
        assert_eq!(
            relabel("task 2: unknown handler 'x'", &[1, 5]),
            "line 5: unknown handler 'x'"
        );
        assert_eq!(
            relabel("task 2: repeats task 1: the same key", &[3, 5]),
            "line 5: repeats line 3: the same key"
        );
        assert_eq!(relabel("something else", &[1]), "something else");
        assert_eq!(line_of("task 2", &[3, 5]), "line 5");
        assert_eq!(line_of("task 3", &[3, 5]), "task 3");
    }
}
